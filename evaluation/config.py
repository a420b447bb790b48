"""Scorer configuration (backbones by name) and the one error type of `evaluation`.

Cheap to import: nothing heavy (torch, open_clip) is loaded here, so a sweep spec can be validated
before any model is.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from vocabulary import FID_FEATURES, TRACKERS

_RANDOM_TAGS = ("", "none", "random")


class EvaluationError(ValueError):
    """Input or configuration that cannot be scored; the message names the problem and the fix."""


def offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: a missing weight must fail at once."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@lru_cache(maxsize=1)
def known_clip_models() -> tuple[str, ...]:
    """open_clip's built-in architecture names, read from its config folder without importing it."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise EvaluationError("open_clip is not installed (pip install open_clip_torch)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model_configs"
    return tuple(sorted(p.stem for p in folder.glob("*.json")))


@dataclass(frozen=True)
class ScorerConfig:
    """Which backbones score a video, by name. Hashable: `get_scorer` caches one scorer per config.

    clip:               open_clip architecture ("ViT-S-32", "ViT-B-32", "ViT-B-32-quickgelu", ...) or an
                        "hf-hub:org/repo" / "local-dir:/path" model.
    clip_pretrained:    None = seeded random weights (plumbing only: results say pretrained=False); an
                        open_clip tag ("laion2b_s34b_b79k", "openai") or a path to a checkpoint file.
    tracker:            "lk" (OpenCV Lucas–Kanade, no weights; the offline default) or "cotracker3".
    tracker_checkpoint: CoTracker3 checkpoint file; None = torch.hub (cached or downloaded).
    grid_size:          points per side of the frame-0 grid (DMT: 55), clipped to what fits the frame.
    min_motion:         px/frame, the step length of motion_fidelity's moving-track rule: > 0 replaces the
                        size-relative default (0.1 % of the frame diagonal, at least 0.25 px); a moving
                        track has at least half of its visible steps this long (evaluation/motion.py).
                        motion_fidelity_dmt (the published score) never filters.
    fid_features:       "inception" (torchmetrics/torch-fidelity Inception-v3 pool features, 2048-d),
                        "clip" (this scorer's normalised CLIP image embeddings) or "auto" (Inception when
                        its package and weights are present locally, else CLIP).
    fid_checkpoint:     path to torch-fidelity's Inception weights (weights-inception-2015-12-05-*.pth).
    fid_frames:         frames per clip whose features are kept for FID/KID, evenly spaced (repeated when
                        the clip is shorter); 0 = every frame of the clip (the default: FID needs many frames,
                        and a set with fewer frames than feature dimensions gives an unreliable FID).
    device, seed:       torch device of the learned backbones; seed of the random CLIP weights.
    """

    clip: str = "ViT-S-32"
    clip_pretrained: str | None = None
    tracker: str = "lk"
    tracker_checkpoint: str | None = None
    grid_size: int = 55
    min_motion: float = 0.0
    fid_features: str = "auto"
    fid_checkpoint: str | None = None
    fid_frames: int = 0
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.clip, str) or not self.clip.strip():
            raise EvaluationError("clip backbone name is empty; e.g. clip='ViT-B-32'")
        if not self.clip.startswith(("hf-hub:", "local-dir:")) and self.clip not in known_clip_models():
            close = [m for m in known_clip_models() if m.lower().startswith(self.clip.lower()[:5])][:8]
            raise EvaluationError(
                f"unknown CLIP backbone {self.clip!r}; open_clip knows e.g. {close or known_clip_models()[:8]} "
                "(or give 'hf-hub:org/repo' / 'local-dir:/path')")
        if self.clip_pretrained is not None and str(self.clip_pretrained).strip().lower() in _RANDOM_TAGS:
            object.__setattr__(self, "clip_pretrained", None)
        if self.tracker not in TRACKERS:
            raise EvaluationError(f"unknown tracker {self.tracker!r}; use one of {', '.join(TRACKERS)}")
        if self.tracker == "lk" and self.tracker_checkpoint:
            raise EvaluationError("tracker 'lk' takes no checkpoint; tracker_checkpoint is for 'cotracker3'")
        if self.fid_features not in FID_FEATURES:
            raise EvaluationError(
                f"unknown FID feature extractor {self.fid_features!r}; use one of {', '.join(FID_FEATURES)}")
        if int(self.grid_size) < 2:
            raise EvaluationError(f"grid_size must be at least 2, got {self.grid_size}")
        if not float(self.min_motion) >= 0:  # also rejects NaN
            raise EvaluationError(f"min_motion must be >= 0 px/frame, got {self.min_motion}")
        if int(self.fid_frames) < 0:
            raise EvaluationError(f"fid_frames must be >= 0 (0: every frame), got {self.fid_frames}")
        object.__setattr__(self, "grid_size", int(self.grid_size))
        object.__setattr__(self, "min_motion", float(self.min_motion))
        object.__setattr__(self, "fid_frames", int(self.fid_frames))
        object.__setattr__(self, "seed", int(self.seed))

    @classmethod
    def from_names(cls, clip: str | None = None, tracker: str | None = None, fid: str | None = None,
                   **kwargs: Any) -> "ScorerConfig":
        """Build from the "model/tag" strings a sweep spec writes.

        clip:    "ViT-B-32/laion2b_s34b_b79k", "ViT-B-32-quickgelu/openai", "ViT-B-32//path/to/ckpt.pt",
                 "ViT-S-32" or "ViT-S-32/random" (seeded random weights), "hf-hub:org/repo".
        tracker: "lk", "cotracker3" or "cotracker3//path/to/scaled_offline.pth".
        fid:     "auto", "clip", "inception" or "inception//path/to/weights.pth".
        Other keyword arguments are ScorerConfig fields.
        """
        if clip is not None:
            model, tag = _split(clip, keep_whole=clip.startswith(("hf-hub:", "local-dir:")))
            kwargs.setdefault("clip", model)
            kwargs.setdefault("clip_pretrained", tag)
        if tracker is not None:
            name, ckpt = _split(tracker)
            kwargs.setdefault("tracker", name)
            kwargs.setdefault("tracker_checkpoint", ckpt)
        if fid is not None:
            name, ckpt = _split(fid)
            kwargs.setdefault("fid_features", name)
            kwargs.setdefault("fid_checkpoint", ckpt)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split(name: str, keep_whole: bool = False) -> tuple[str, str | None]:
    if not isinstance(name, str) or not name.strip():
        raise EvaluationError(f"empty backbone name {name!r}")
    name = name.strip()
    if keep_whole or "/" not in name:
        return name, None
    head, tail = name.split("/", 1)
    return head, (tail or None)
