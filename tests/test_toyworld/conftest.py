"""Fixtures of the toy-world tests: the shipped toy pipeline, the project's scorer on the shipped toy CLIP, and a
judge on that CLIP (session-scoped: loaded once for all the toy-world modules; no test changes them)."""

import pytest

from vocabulary import PRESETS


@pytest.fixture(scope="session")
def toy_pipe():
    from model import load_pipeline

    return load_pipeline("toy", device="cpu")


@pytest.fixture(scope="session")
def scorer():
    from evaluation import ScorerConfig, get_scorer

    return get_scorer(ScorerConfig.from_names(clip=PRESETS["toy"].clip, tracker="lk", fid="clip"))


@pytest.fixture(scope="session")
def judge(scorer):
    from toyworld.judge import ToyJudge

    return ToyJudge(scorer.clip)
