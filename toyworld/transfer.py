"""Does the method transfer motion in the toy world? The positive control of the whole pipeline, in small.

`transfer_trial` inverts one reference clip and generates another subject with the embeddings and with the plain
base model from the same seed, scored against the reference; `transfer_check` runs it over a few references for a
build's log.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from model.config import ReferenceConfig

from . import data as td
from .architecture import GENERATION_DEFAULTS, INVERSION_DEFAULTS


def transfer_trial(pipe, scorer, reference: np.ndarray, source_prompt: str, prompt: str, seed: int = 0,
                   inversion: dict | None = None, generation: dict | None = None,
                   debias: tuple[str, ...] = ("difference",), base_noise: tuple[str, ...] = ("blend",),
                   ddim_steps: int = ReferenceConfig.ddim_steps) -> dict:
    """Invert `reference` (described by `source_prompt`; its noise by DDIM inversion in `ddim_steps`), generate
    `prompt` with the embeddings (one clip per debias mode) and with the plain base model (same prompt, seed and
    initial noise; `base_noise` "blend" is BlendInit from the reference's inverted noise as the method uses,
    "random" pure noise), and score every clip against the reference → {"method:<debias>" | "base:<noise>":
    scores, ..., "clips": {...}, "seconds_inversion": s, "seconds_generation": s per clip}."""
    from model.config import GenerationConfig, InversionConfig
    from model.generation import generate
    from model.inversion import prepare_reference, train_embeddings

    inv = InversionConfig(**{"checkpoints": (), **INVERSION_DEFAULTS, **(inversion or {}), "seed": seed})
    gen = GenerationConfig(**{k: v for k, v in {**GENERATION_DEFAULTS, **(generation or {})}.items()})
    t0 = time.perf_counter()
    ref = prepare_reference(pipe, reference, len(reference), reference.shape[1], reference.shape[2],
                            ddim_steps=ddim_steps)
    trained = train_embeddings(pipe, ref.latents, source_prompt, inv)
    out: dict = {"seconds_inversion": time.perf_counter() - t0, "losses": trained.losses, "clips": {}}
    t1 = time.perf_counter()
    runs = [(f"method:{d}", trained.embeddings, d, gen) for d in debias]
    runs += [(f"base:{n}", None, "none", dataclasses.replace(gen, noise_init=n)) for n in base_noise]
    for name, emb, d, g in runs:
        clip = generate(pipe, ref.inverted_noise, [prompt], [seed], emb, d, g)[0]
        out["clips"][name] = clip
        out[name] = scorer.score(clip, prompt, reference)
    out["seconds_generation"] = (time.perf_counter() - t1) / len(runs)
    return out


def transfer_check(pipe, scorer, n: int = 4, seed: int = 900, inversion: dict | None = None,
                   generation: dict | None = None, ddim_steps: int = ReferenceConfig.ddim_steps) -> dict:
    """The method's positive control in small, for a build's log: invert `n` references (shape A, a straight
    motion each, source prompt without motion words) and generate shape B with no motion word, with the
    embeddings (debias `difference`) and with the plain base model from the same seed → the mean motion fidelity
    of each and in how many references the method is higher. A base model that follows its prompts can still
    fail here (builds 8 and 9 in toyworld/NOTES.md: their embeddings carried the motion only under the source
    prompt, if at all); the paired test over 12 references is tests/test_toyworld/test_world.py's."""
    if n < 1:
        raise ValueError(f"transfer_check needs at least 1 reference, got n={n}")
    rows = []
    for k in range(n):
        motion = td.STRAIGHT[(3 * k) % len(td.STRAIGHT)]  # right, down, down_right, left: both axes, a diagonal
        a, b = td.SHAPES[k % len(td.SHAPES)], td.SHAPES[(k + 1) % len(td.SHAPES)]
        color, background = list(td.COLORS)[k % len(td.COLORS)], list(td.BACKGROUNDS)[k % len(td.BACKGROUNDS)]
        ref, _ = td.reference_clip(motion, a, color, background, seed=seed + k)
        prompt = td.caption(b, list(td.COLORS)[(k + 2) % len(td.COLORS)], background)
        res = transfer_trial(pipe, scorer, ref, td.caption(a, color, background), prompt, seed=seed + k,
                             inversion=inversion, generation=generation, base_noise=("random",), ddim_steps=ddim_steps)
        rows.append((motion, res["method:difference"]["motion_fidelity"], res["base:random"]["motion_fidelity"]))
    method, base = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    return dict(n=n, motions=[r[0] for r in rows], method=float(method.mean()), base=float(base.mean()),
                method_higher=int((method > base).sum()), method_per_reference=method.tolist(),
                base_per_reference=base.tolist())
