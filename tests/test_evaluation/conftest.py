"""Shared fixtures of the evaluation tests: one offline scorer (seeded random CLIP weights, LK tracks) and two
rendered clips (a reference and a generated clip of another shape, length and colour)."""

import pytest

import videoio
from evaluation import ScorerConfig, get_scorer


@pytest.fixture(scope="module")
def scorer():
    return get_scorer(ScorerConfig(min_motion=0.5))


@pytest.fixture(scope="module")
def clips():
    ref = videoio.moving_shape_video(10, 64, 64, direction=(1, 0))
    gen = videoio.moving_shape_video(8, 64, 64, direction=(1, 0), shape="circle", color=(40, 200, 60),
                                     texture_seed=2)
    return ref, gen
