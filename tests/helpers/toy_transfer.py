"""The toy world's transfer positive control (tests/test_toyworld/test_world.py), one reference per task, run in
two processes at once.

Each process computes with the same number of torch threads as the test process (tests/conftest.py), so every
reference's numbers are bit-for-bit those of a serial run: the float path of a CPU kernel depends on its thread
count, not on where it runs (at one thread per process the clips differ, and the control's Wilcoxon p moved from
0.0034 to 0.0081). Two processes of two threads on two cores is oversubscribed on purpose: the toy model's ops
are too small for two threads to speed one up much (86 ms a step against 103 ms at one thread), so two at once
finish a step every 67 ms. That needs `OMP_WAIT_POLICY=PASSIVE` in the workers: with OpenMP's default spinning,
two such processes took 9.6 s a step (benchmarks/README.md, "Tests").
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from unittest import mock

from toyworld import data as td

#: The references: every motion the toy world has, plus two more straight ones (other shapes, colours and
#: places): 12 pairs.
TRANSFER_MOTIONS = (*td.MOTIONS, "right", "up")
COLUMNS = ("method:difference", "method:none", "base:random", "base:blend")

_LOADED: dict = {}


def _load(threads: int) -> None:
    """A worker's toy pipeline, scorer and judge (as tests/test_toyworld/conftest.py loads them)."""
    import torch

    from evaluation import ScorerConfig, get_scorer
    from model import load_pipeline
    from toyworld.judge import ToyJudge
    from vocabulary import PRESETS

    torch.set_num_threads(threads)
    scorer = get_scorer(ScorerConfig.from_names(clip=PRESETS["toy"].clip, tracker="lk", fid="clip"))
    _LOADED.update(pipe=load_pipeline("toy", device="cpu"), scorer=scorer, judge=ToyJudge(scorer.clip))


def transfer_row(k: int) -> dict:
    """Reference k (shape A with motion TRANSFER_MOTIONS[k], source prompt without motion words), inverted, then
    shape B generated with the embeddings (debias difference and none) and with the plain base model (random and
    BlendInit noise), every clip scored against the reference; and which shape the method's clip shows."""
    from toyworld.transfer import transfer_trial

    pipe, scorer, judge = _LOADED["pipe"], _LOADED["scorer"], _LOADED["judge"]
    motion = TRANSFER_MOTIONS[k]
    a, b = td.SHAPES[k % 3], td.SHAPES[(k + 1) % 3]
    color, background = list(td.COLORS)[k % 4], list(td.BACKGROUNDS)[k % 3]
    ref, _ = td.reference_clip(motion, a, color, background, seed=300 + k)
    prompt = td.caption(b, list(td.COLORS)[(k + 2) % 4], background)
    res = transfer_trial(pipe, scorer, ref, td.caption(a, color, background), prompt, seed=k,
                         debias=("difference", "none"), base_noise=("random", "blend"))
    shown = judge.clip_class(res["clips"]["method:difference"])[0]
    return {"motion": motion, **{f"{name}:{m}": res[name][m] for name in COLUMNS
                                 for m in ("motion_fidelity", "appearance_leakage")},
            "shows_b": shown == b, "shows_a": shown == a}


def transfer_rows(threads: int, processes: int = 2) -> list[dict]:
    """Every reference's row, in order, from `processes` spawned workers of `threads` torch threads each."""
    # read by each worker's OpenMP runtime when it starts
    with mock.patch.dict(os.environ, {"OMP_WAIT_POLICY": "PASSIVE"}), \
            ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"), initializer=_load,
                                initargs=(threads,)) as pool:
        return list(pool.map(transfer_row, range(len(TRANSFER_MOTIONS))))
