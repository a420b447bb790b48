"""What a toy-world clip shows, and whether a model follows its prompts.

`ToyJudge` classifies frames zero-shot with the toy CLIP (shape, colour, background); Lucas–Kanade tracks give a
clip's motion and whether it goes the prompted way; `motion_text_dependence` asks whether motion words change the
generated motion at all; `evaluate_samples` measures a batch of prompted generations with all of these.
"""

from __future__ import annotations

import time

import numpy as np

from . import data as td
from .architecture import CLIP_MODEL_CONFIG, CLIP_PREPROCESS


def clip_captions() -> tuple[list[str], list[tuple[str, str, str]]]:
    """The zero-shot classes of the toy CLIP: every (shape, colour, background) caption without motion."""
    rows = td.all_captions(with_motion=False)
    return [r[4] for r in rows], [(r[0], r[1], r[2]) for r in rows]


class ToyJudge:
    """Zero-shot shape/colour classification with the toy CLIP and motion direction with LK tracks."""

    def __init__(self, backbone):
        from evaluation import clip as clipm

        self.backbone = backbone
        self.captions, self.classes = clip_captions()
        self.text = np.stack([clipm.encode_text(backbone, c) for c in self.captions])

    @classmethod
    def from_model(cls, model):
        """A judge for an in-memory open_clip model (during the build)."""
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2

        from evaluation.clip import ClipBackbone

        pp = image_transform_v2(PreprocessCfg(size=CLIP_MODEL_CONFIG["vision_cfg"]["image_size"],
                                              **CLIP_PREPROCESS), is_train=False)
        tok = open_clip.get_tokenizer("ViT-B-32", context_length=CLIP_MODEL_CONFIG["text_cfg"]["context_length"])
        return cls(ClipBackbone(model, pp, tok, "toy-clip (in training)", True, "cpu"))

    def classify(self, frames: np.ndarray) -> list[tuple[str, str, str]]:
        """(shape, colour, background) of each uint8 frame [N, H, W, 3]."""
        from evaluation import clip as clipm

        emb = clipm.encode_frames(self.backbone, frames)
        return [self.classes[i] for i in (emb @ self.text.T).argmax(1)]

    def clip_class(self, clip: np.ndarray) -> tuple[str, str, str]:
        """The majority (shape, colour, background) over a clip's frames."""
        from collections import Counter

        votes = self.classify(clip)
        return tuple(Counter(v[k] for v in votes).most_common(1)[0][0] for k in range(3))

    def accuracy(self, clips: np.ndarray, specs: list[tuple[str, str]]) -> dict:
        """Shape / colour / both accuracy of clips [N, F, H, W, 3] against (shape, colour) targets."""
        got = [self.clip_class(c) for c in clips]
        shape = np.mean([g[0] == s[0] for g, s in zip(got, specs)])
        color = np.mean([g[1] == s[1] for g, s in zip(got, specs)])
        both = np.mean([g[0] == s[0] and g[1] == s[1] for g, s in zip(got, specs)])
        return dict(shape=float(shape), color=float(color), both=float(both), n=len(specs))


def zero_shot(judge: ToyJudge, frames: np.ndarray, labels: list[tuple[str, str, str]]) -> dict:
    """The judge's accuracy on labelled frames (`data.held_out_frames`): shape, colour and background."""
    got = judge.classify(frames)
    return {k: float(np.mean([g[i] == l[i] for g, l in zip(got, labels)]))
            for i, k in enumerate(("shape", "color", "background"))} | {"n": len(labels)}


# --------------------------------------------------------------------------------------------- motion
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1), "up_right": (1, -1),
              "up_left": (-1, -1), "down_right": (1, 1), "down_left": (-1, 1)}


def mean_motion(frames: np.ndarray, min_travel: float = 3.0) -> np.ndarray:
    """Mean displacement per frame (x, y) of the LK grid tracks that travel at least `min_travel` px from
    the first to the last frame (and, where the tracker says, stay visible); 0 when nothing moves."""
    from evaluation import motion as mm

    _, h, w, _ = frames.shape
    g = mm.effective_grid_size(55, h, w)
    tracks = mm.track_lk(frames, mm.grid_points(g, h, w))
    xy = np.asarray(getattr(tracks, "xy", tracks), np.float64)  # [T, N, 2]
    visible = np.asarray(getattr(tracks, "visible", np.ones(xy.shape[:2], bool)))
    travel = xy[-1] - xy[0]
    keep = (np.linalg.norm(travel, axis=-1) >= min_travel) & visible.all(0)
    if not keep.any():
        return np.zeros(2)
    return travel[keep].mean(0) / (len(frames) - 1)


def direction_cosine(frames: np.ndarray, motion: str) -> float | None:
    """Cosine between the clip's mean motion and the straight `motion`; None when the clip does not move
    (under 0.3 px per frame)."""
    d = mean_motion(frames)
    n = float(np.linalg.norm(d))
    if n <= 0.3:
        return None
    v = np.asarray(DIRECTIONS[motion], np.float64)
    return float(d @ v) / (n * float(np.linalg.norm(v)))


def direction_correct(frames: np.ndarray, motion: str) -> bool:
    """Does the clip's moving content go the way `motion` (a straight motion) says (cosine > 0.8: closer to it
    than to a neighbouring direction)?"""
    cos = direction_cosine(frames, motion)
    return cos is not None and cos > 0.8


FOUR_WAYS = ("right", "left", "up", "down")


def motion_text_dependence(pipe, seeds: tuple[int, ...] = (0, 1, 2, 3), steps: int = 20, guidance: float = 9.0,
                           shape: str = "square", color: str = "red", background: str = "grey") -> dict:
    """Do motion words change the generated motion? Per seed, one initial latent is generated under the four
    prompts "a red square moves right / left / up / down on a grey background"; the score is the mean cosine
    between each clip's mean motion (`mean_motion`) and its prompted direction, 0 for a clip that does not move.
    1: the motion follows the words; 0: it ignores them (e.g. the initial noise alone decides it); −1: reversed.
    A rate of `direction_correct` cannot tell "ignores the words" from "follows them badly": a model whose
    motion comes from the noise alone still scores chance (1/8) on it."""
    import torch

    from model.generation import frames_uint8

    prompts = [td.caption(shape, color, background, m) for m in FOUR_WAYS]
    h, w = td.HEIGHT // pipe.vae_scale_factor, td.WIDTH // pipe.vae_scale_factor
    cosines, moving = [], []
    for seed in seeds:
        g = torch.Generator("cpu").manual_seed(seed)
        latent = torch.randn((1, pipe.unet.config.in_channels, td.FRAMES, h, w), generator=g)
        out = pipe(prompt=prompts, latents=latent.repeat(len(prompts), 1, 1, 1, 1), num_frames=td.FRAMES,
                   height=td.HEIGHT, width=td.WIDTH, num_inference_steps=steps, guidance_scale=guidance,
                   output_type="np")
        for m, clip in zip(FOUR_WAYS, frames_uint8(out.frames)):
            cos = direction_cosine(clip, m)
            moving.append(cos is not None)
            cosines.append(cos or 0.0)
    return dict(motion_follows_words=float(np.mean(cosines)), moving=float(np.mean(moving)), n=len(cosines))


# ----------------------------------------------------------------------------------- prompt following
def evaluate_samples(pipe, judge: ToyJudge, n: int, seed: int, steps: int,
                     guidance: float) -> tuple[dict, np.ndarray]:
    """Generate `n` prompted clips (shape, colour, background and a straight motion) and measure them
    → (the measures, the clips)."""
    import torch

    from model.generation import frames_uint8

    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(n):
        s = td.SHAPES[i % len(td.SHAPES)]
        c = list(td.COLORS)[(i // len(td.SHAPES)) % len(td.COLORS)]
        b = list(td.BACKGROUNDS)[rng.integers(len(td.BACKGROUNDS))]
        m = td.STRAIGHT[rng.integers(len(td.STRAIGHT))]
        jobs.append((s, c, b, m))
    prompts = [td.caption(*j) for j in jobs]
    t0 = time.perf_counter()
    clips = []
    for i in range(0, n, 8):
        g = torch.Generator("cpu").manual_seed(seed + i)
        out = pipe(prompt=prompts[i:i + 8], num_frames=td.FRAMES, height=td.HEIGHT, width=td.WIDTH,
                   num_inference_steps=steps, guidance_scale=guidance, generator=g, output_type="np")
        clips.append(frames_uint8(out.frames))
    clips = np.concatenate(clips)
    seconds = time.perf_counter() - t0
    acc = judge.accuracy(clips, [(j[0], j[1]) for j in jobs])
    acc["direction"] = float(np.mean([direction_correct(c, j[3]) for c, j in zip(clips, jobs)]))
    acc["seconds_per_clip"] = seconds / n
    dependence = motion_text_dependence(pipe, steps=steps, guidance=guidance)
    acc.update(motion_follows_words=dependence["motion_follows_words"], moving=dependence["moving"],
               ddim_steps=steps, guidance=guidance)
    return acc, clips
