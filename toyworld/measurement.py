"""A built toy world measured as users load it: through `load_pipeline` and the toy CLIP's `local-dir:` name.

The end of every build and `python -m toyworld eval`: the toy CLIP's zero-shot accuracy, prompt following of the
base model, and whether the method transfers motion.
"""

from __future__ import annotations

import time
from pathlib import Path

from .architecture import CLIP_DIR, PIPELINE_DIR
from .data import held_out_frames
from .judge import ToyJudge, evaluate_samples, zero_shot
from .transfer import transfer_check

#: measure() runs at the build seed + FINAL_SEED_OFFSET, its transfer check at that + TRANSFER_SEED_OFFSET (the
#: build's sample checks reuse those references, so their transfer numbers and the final one are one curve)
FINAL_SEED_OFFSET, TRANSFER_SEED_OFFSET = 500, 400


def toy_scorer(clip_dir: Path):
    """The project's scorer on a built toy CLIP folder (its `local-dir:` name) with Lucas–Kanade tracks."""
    from evaluation import ScorerConfig, get_scorer

    return get_scorer(ScorerConfig.from_names(clip=f"local-dir:{Path(clip_dir).resolve()}", tracker="lk", fid="clip"))


def measure(pipeline_dir: Path = PIPELINE_DIR, clip_dir: Path = CLIP_DIR, seed: int = FINAL_SEED_OFFSET,
            n: int = 24,
            settings: tuple[tuple[int, float], ...] = ((30, 12.0), (30, 7.5)), transfer: int = 4) -> dict:
    """Load the saved world as users do and measure it: toy-CLIP zero-shot accuracy on held-out frames,
    prompt following (shape, colour, direction) of `n` generations per (DDIM steps, guidance) setting, and
    whether the method transfers motion (`transfer_check` over `transfer` references; 0 skips it)."""
    from model.presets import get_preset, load_pipeline

    t0 = time.perf_counter()
    pipe = load_pipeline(get_preset("toy", model=pipeline_dir), device="cpu")
    scorer = toy_scorer(clip_dir)
    judge = ToyJudge(scorer.clip)  # one toy CLIP for the judge and the transfer check, as the tests have it
    out: dict = {"load_seconds": time.perf_counter() - t0}
    out["clip_zero_shot"] = zero_shot(judge, *held_out_frames(seed + 1))
    out["samples"] = []
    for steps, guidance in settings:
        res, _ = evaluate_samples(pipe, judge, n, seed, steps, guidance)
        out["samples"].append(res)
    if transfer:
        t1 = time.perf_counter()
        out["transfer"] = transfer_check(pipe, scorer, transfer, seed=seed + TRANSFER_SEED_OFFSET) | {
            "seconds": time.perf_counter() - t1}
    return out
