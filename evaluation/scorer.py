"""The scorer: one object per backbone configuration that turns a generated clip into a result row.

Inputs are frames (uint8 [T, H, W, 3], numpy or torch) and prompts, or video files read with the
project's `videoio`. Any size and length is accepted; how the reference is matched to the generated
clip is documented on `Scorer.score`.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

import videoio
from vocabulary import SAMPLE_METRICS

from . import clip as clipm
from . import inception
from . import motion as motionm
from .config import EvaluationError, ScorerConfig

#: Bump when a metric's definition or preprocessing changes, so stored numbers can be told apart.
EVALUATION_VERSION = "3"  # 2: tracks carry visibility; motion_fidelity over moving tracks; 3: and the camera


MIN_SIDE = 16


def as_frames(frames: Any, name: str = "video") -> np.ndarray:
    """Check and convert frames to a uint8 numpy array [T, H, W, 3] (RGB), T >= 2."""
    try:
        import torch
        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    x = np.asarray(frames)
    if x.dtype != np.uint8:
        raise EvaluationError(f"{name} frames must be uint8 0–255, got dtype {x.dtype} "
                              "(convert with (x * 255).round().clip(0, 255).astype(np.uint8))")
    if x.ndim != 4 or x.shape[-1] != 3:
        hint = " (channels first? use x.permute(0, 2, 3, 1))" if x.ndim == 4 and x.shape[1] == 3 else ""
        raise EvaluationError(f"{name} frames must be shaped [T, H, W, 3], got {tuple(x.shape)}{hint}")
    if x.shape[0] < 2:
        raise EvaluationError(f"{name} has a single frame; temporal metrics need at least 2 frames")
    if min(x.shape[1:3]) < MIN_SIDE:
        raise EvaluationError(f"{name} frames are {x.shape[1]}×{x.shape[2]}; at least {MIN_SIDE} px per side needed")
    return x


def even_indices(length: int, count: int) -> np.ndarray:
    """`count` evenly spaced frame indices over 0..length-1 (nearest frame; repeats when count > length)."""
    return np.round(np.linspace(0, length - 1, count)).astype(int)


class Scorer:
    """Scores generated clips with the backbones of one ScorerConfig, loaded once (use `get_scorer`)."""

    def __init__(self, config: ScorerConfig) -> None:
        self.config = config
        self.clip = clipm.load_clip(config.clip, config.clip_pretrained, config.device, config.seed)
        self.cotracker = (motionm.load_cotracker(config.tracker_checkpoint, config.device)
                          if config.tracker == "cotracker3" else None)
        # "auto" takes Inception when it can run here without a download (or weights were named)
        use_inception = config.fid_features == "inception" or (
            config.fid_features == "auto" and (bool(config.fid_checkpoint) or inception.inception_available()))
        self.inception = inception.load_inception(config.fid_checkpoint, config.device) if use_inception else None
        self._text_cache: dict[str, np.ndarray] = {}
        # a sweep scores many clips against one reference: its embeddings and tracks are kept (by content)
        self._reference_cache: OrderedDict[tuple, Any] = OrderedDict()

    # ------------------------------------------------------------------------------------ describe
    def describe(self) -> dict[str, Any]:
        """How results of this scorer were made: flat and JSON-able, to be stored with every row.

        `pretrained_metrics` is True only when every learned backbone in use has trained weights (the
        LK tracker has none to have); False means the numbers test plumbing, not the method.
        """
        c = self.config
        fid_pretrained = self.inception is not None or self.clip.pretrained
        m = motionm  # the track-selection rule of motion_fidelity, in words (motion.py's doc)
        step = (f"{c.min_motion:g} px/frame" if c.min_motion > 0 else
                f"max({m.MOVING_SPEED:.1%} of the diagonal, {m.MOVING_SPEED_MIN_PX:g} px)/frame")
        rule = (f"camera (similarity per step, RANSAC, found within {m.CAMERA_BORDER:.0%} of the frame's edges) "
                "scored point by point and removed, then moving tracks on each side: visible in "
                f">{m.MIN_VISIBLE_FRACTION:.0%} of steps, peak displacement >= {m.MOVING_DISPLACEMENT:.0%} of the "
                f"frame diagonal, >= {m.MOVING_STEPS:.0%} of visible steps >= {step}; motion_fidelity = mean of "
                "the camera and the moving tracks; every visible track when nothing moves in the reference; S over "
                "steps visible in both")
        return {
            "clip_backbone": self.clip.name,
            "clip_pretrained": self.clip.pretrained,
            "tracker": c.tracker,
            # DMT used CoTracker v1; "cotracker3" is CoTracker3 offline, from torch.hub at a pinned commit
            "tracker_checkpoint": c.tracker_checkpoint or (f"torch.hub:{motionm.COTRACKER_HUB}"
                                                           if c.tracker == "cotracker3" else ""),
            "grid_size": c.grid_size,
            "motion_filter": rule,
            "min_motion": c.min_motion,
            "fid_backbone": "inception-v3-compat" if self.inception is not None else f"clip:{self.clip.name}",
            "fid_frames": c.fid_frames,
            "pretrained_metrics": bool(self.clip.pretrained and fid_pretrained),
            "evaluation_version": EVALUATION_VERSION,
        }

    # ------------------------------------------------------------------------------- building blocks
    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Normalised CLIP image embeddings [T, D] of uint8 frames [T, H, W, 3]."""
        return clipm.encode_frames(self.clip, frames)

    def embed_text(self, prompt: str) -> np.ndarray:
        """Normalised CLIP text embedding [D], cached per prompt (a sweep scores many clips per prompt)."""
        if prompt not in self._text_cache:
            if len(self._text_cache) > 1024:
                self._text_cache.clear()
            self._text_cache[prompt] = clipm.encode_text(self.clip, prompt)
        return self._text_cache[prompt]

    def track(self, frames: np.ndarray) -> tuple[motionm.Tracks, int]:
        """Tracks (positions [T, N, 2] and visibility [T, N]) of the frame-0 grid, and the grid side used
        (clipped to fit the frame)."""
        _, h, w, _ = frames.shape
        g = motionm.effective_grid_size(self.config.grid_size, h, w)
        if self.cotracker is not None:
            return motionm.track_cotracker(self.cotracker, frames, g, self.config.device), g
        return motionm.track_lk(frames, motionm.grid_points(g, h, w)), g

    def fid_features(self, frames: np.ndarray, embeddings: np.ndarray | None = None, *,
                     all_frames: bool = False) -> np.ndarray:
        """float32 [frames, D] FID/KID features: of every frame when `all_frames` or config.fid_frames is 0
        (the default), else of `fid_frames` evenly spaced frames (repeated when the clip is shorter).
        `embeddings`: CLIP embeddings of all `frames`, reused when the FID backbone is CLIP."""
        k = self.config.fid_frames
        idx = np.arange(len(frames)) if all_frames or not k else even_indices(len(frames), k)
        if self.inception is not None:
            feats = inception.inception_features(self.inception, frames[idx], self.config.device)
        elif embeddings is not None:
            feats = embeddings[idx]
        else:
            uniq, inverse = np.unique(idx, return_inverse=True)
            feats = self.embed(frames[uniq])[inverse]
        return np.asarray(feats, np.float32)

    # ----------------------------------------------------------------------------------------- score
    def score(self, generated: Any, prompt: str, reference: Any = None,
              resample_reference: bool = True) -> dict[str, Any]:
        """Score one generated clip against its edit prompt and (optionally) the reference video.

        Returns a flat dict: the five metrics (float, or None when not computable), `unavailable`
        ("" or "metric: reason; ..."), `motion_grid` (grid side used), `motion_tracks` /
        `motion_tracks_reference` (tracks that entered S after the foreground filter), `motion_camera` /
        `motion_objects` (motion_fidelity's two terms, None where one does not apply), `seconds_clip` /
        `seconds_motion` / `seconds_fid`, the describe() entries (backbones, filter,
        pretrained_metrics), and `fid_features` (float32 [fid_frames, D]).
        Without a reference, appearance_leakage and both motion metrics are None with the reason.

        Matching the reference to the generated clip (any size, any length):
        space — resize to cover the generated H×W keeping the aspect ratio, then centre crop (as frames
        are prepared for inversion); time — the reference is taken to span the same time as the clip:
        a longer one is subsampled to the clip's frame count (nearest frames, evenly spaced) before
        tracking, a shorter one is tracked whole and its tracks are linearly interpolated to the clip's
        frame count. With `resample_reference=False`, any mismatch is an EvaluationError instead.
        The metrics never hold NaN: a non-finite value becomes None with its reason.
        """
        gen = as_frames(generated, "generated video")
        if not isinstance(prompt, str) or not prompt.strip():
            raise EvaluationError(f"the edit prompt is empty ({prompt!r}); give the text the clip was generated from")
        ref = None if reference is None else self._match_reference(as_frames(reference, "reference video"),
                                                                    gen, resample_reference)
        out: dict[str, Any] = {k: None for k in SAMPLE_METRICS}
        why: dict[str, str] = {}

        t0 = time.perf_counter()
        gen_emb = self.embed(gen)
        text_emb = self.embed_text(prompt.strip())
        self._put(out, why, "text_similarity", lambda: clipm.text_similarity(gen_emb, text_emb))
        self._put(out, why, "temporal_consistency", lambda: clipm.temporal_consistency(gen_emb))
        if ref is not None:
            ref_idx = np.unique(even_indices(len(ref), min(len(ref), len(gen))))
            ref_emb = self._cached("embed", ref[ref_idx], self.embed)
            self._put(out, why, "appearance_leakage", lambda: clipm.appearance_leakage(gen_emb, ref_emb))
        t1 = time.perf_counter()

        out.update(motion_grid=None, motion_tracks=None, motion_tracks_reference=None, motion_mask=None,
                   motion_mask_fallback=None, motion_camera=None, motion_objects=None)
        if ref is not None:
            self._motion(gen, ref, out, why)
        else:
            for k in ("appearance_leakage", "motion_fidelity", "motion_fidelity_dmt", "motion_fidelity_two_way"):
                why[k] = "no reference video given"
        t2 = time.perf_counter()
        features = self.fid_features(gen, gen_emb)
        if not np.isfinite(features).all():
            raise EvaluationError("FID features of the generated clip are not finite (backbone failure)")
        t3 = time.perf_counter()

        out["unavailable"] = "; ".join(f"{k}: {v}" for k, v in why.items())
        out.update(seconds_clip=t1 - t0, seconds_motion=t2 - t1, seconds_fid=t3 - t2)
        out.update(self.describe())  # every result says which backbones made it and if they were trained
        out["fid_features"] = features
        return out

    @staticmethod
    def _put(out: dict, why: dict, key: str, compute) -> None:
        try:
            value = float(compute())
        except EvaluationError as exc:
            why[key] = str(exc)
            return
        if np.isfinite(value):
            out[key] = value
        else:
            why[key] = f"came out {value} (non-finite)"

    def _cached(self, kind: str, frames: np.ndarray, compute) -> Any:
        """`compute(frames)`, remembered for the last few distinct reference clips (keyed by content)."""
        frames = np.ascontiguousarray(frames)
        key = (kind, frames.shape, hashlib.blake2b(frames.data, digest_size=16).hexdigest())
        if key in self._reference_cache:
            self._reference_cache.move_to_end(key)
            return self._reference_cache[key]
        value = self._reference_cache[key] = compute(frames)
        while len(self._reference_cache) > 16:
            self._reference_cache.popitem(last=False)
        return value

    def _match_reference(self, ref: np.ndarray, gen: np.ndarray, resample: bool) -> np.ndarray:
        t, h, w = gen.shape[:3]
        if not resample and ref.shape[:3] != (t, h, w):
            raise EvaluationError(
                f"reference has {ref.shape[0]} frames of {ref.shape[1]}×{ref.shape[2]} but the generated clip "
                f"{t} frames of {h}×{w}; mismatched lengths/sizes need resample_reference=True")
        if ref.shape[1:3] != (h, w):
            ref = videoio.resize_center_crop(ref, h, w)
        return ref

    def _motion(self, gen: np.ndarray, ref: np.ndarray, out: dict, why: dict) -> None:
        """motion_fidelity (camera and moving tracks), motion_fidelity_dmt (published, every track) and
        motion_fidelity_two_way into `out`, with the tracks used, the mask applied and motion_fidelity's two
        terms, `motion_camera` and `motion_objects` (motion.py's doc)."""
        t = len(gen)
        ref_frames = ref[even_indices(len(ref), t)] if len(ref) > t else ref
        gen_tracks, g = self.track(gen)
        ref_tracks, _ = self._cached("track", ref_frames, self.track)
        ref_tracks = motionm.resample_tracks(ref_tracks, t)
        out.update(motion_grid=g, motion_mask=None, motion_mask_fallback=None)
        try:
            res = motionm.motion_fidelity(gen_tracks, ref_tracks, self.config.min_motion)
        except EvaluationError as exc:
            for key in ("motion_fidelity", "motion_fidelity_dmt", "motion_fidelity_two_way"):
                why[key] = str(exc)
            return
        out.update(motion_tracks=res.tracks_generated, motion_tracks_reference=res.tracks_reference,
                   motion_mask=res.mask, motion_mask_fallback=res.fallback,
                   # motion_fidelity's two terms (None where a term does not apply: motion.py's doc)
                   motion_camera=None if np.isnan(res.camera) else res.camera,
                   motion_objects=None if np.isnan(res.objects) else res.objects)
        self._put(out, why, "motion_fidelity", lambda: res.score)
        self._put(out, why, "motion_fidelity_dmt", lambda: res.dmt)
        self._put(out, why, "motion_fidelity_two_way", lambda: res.two_way)


_SCORERS: dict[ScorerConfig, Scorer] = {}
_LOCK = threading.Lock()


def get_scorer(config: ScorerConfig | None = None) -> Scorer:
    """The process-wide scorer for `config` (default: offline defaults); backbones load on first use
    and are reused by every later call with an equal config. Missing weights fail here, at once."""
    config = config or ScorerConfig()
    if not isinstance(config, ScorerConfig):
        raise EvaluationError(f"expected a ScorerConfig, got {type(config).__name__}")
    with _LOCK:
        scorer = _SCORERS.get(config)
        if scorer is None:
            scorer = _SCORERS[config] = Scorer(config)
    return scorer


def _read(path: str | os.PathLike, role: str) -> np.ndarray:
    try:
        return videoio.read_video(path)
    except videoio.VideoError as exc:
        raise EvaluationError(f"{role} video: {exc}") from None


def score_files(reference_path: str | os.PathLike, generated_path: str | os.PathLike, prompt: str,
                cfg: ScorerConfig | None = None) -> dict[str, Any]:
    """Score a generated video file against a reference video file: metrics + describe() + inputs.

    This is what `motion-sweep score` prints; any size and length is accepted (see Scorer.score).
    """
    scorer = get_scorer(cfg)
    gen = _read(generated_path, "generated")
    ref = _read(reference_path, "reference")
    result = scorer.score(gen, prompt, ref)
    result.update(generated=str(generated_path), reference=str(reference_path), prompt=prompt,
                  generated_shape=f"{gen.shape[0]}x{gen.shape[1]}x{gen.shape[2]}",
                  reference_shape=f"{ref.shape[0]}x{ref.shape[1]}x{ref.shape[2]}")
    return result


def reference_videos(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """(id, path) of every video of a reference set, in order.

    `path` is a folder (its video files and sub-folders of frame images, DAVIS' JPEGImages/480p/<name>/
    layout, in name order; id = file stem or folder name) or a manifest: .txt (one path per line), .jsonl
    ({"video": ..., "id": ...} per line) or .csv (header video[,id]); relative paths resolve against the
    manifest's folder. Two videos with one id are an error, never an overwrite.
    """
    import csv
    import json

    path = Path(path).expanduser()
    if path.is_dir():
        entries = sorted(p for p in path.iterdir()
                         if (p.is_file() and p.suffix.lower() in videoio.VIDEO_SUFFIXES)
                         or (p.is_dir() and any(q.suffix.lower() in videoio.IMAGE_SUFFIXES for q in p.iterdir())))
        items = [(p.stem if p.is_file() else p.name, p) for p in entries]
    elif path.is_file() and path.suffix.lower() in (".txt", ".jsonl", ".csv"):
        with open(path, newline="") as f:
            if path.suffix.lower() == ".csv":
                rows = list(csv.DictReader(f))
            elif path.suffix.lower() == ".jsonl":
                rows = [json.loads(line) for line in f if line.strip()]
            else:
                rows = [{"video": line.strip()} for line in f if line.strip() and not line.startswith("#")]
        items = []
        for i, row in enumerate(rows):
            if not row.get("video"):
                raise EvaluationError(f"{path}: entry {i + 1} has no `video`")
            video = Path(row["video"]).expanduser()
            video = video if video.is_absolute() else path.parent / video
            items.append((row.get("id") or (video.stem if video.suffix else video.name), video))
    else:
        raise EvaluationError(f"reference set not found: {path} (give a folder of videos or a .txt/.jsonl/.csv "
                              "manifest)")
    if not items:
        raise EvaluationError(f"{path} holds no videos ({', '.join(videoio.VIDEO_SUFFIXES)} files or folders "
                              "of frames)")
    seen: dict[str, Path] = {}
    for vid, video in items:
        if vid in seen:
            raise EvaluationError(f"reference set {path}: id {vid!r} names two videos ({seen[vid]} and {video}); "
                                  "give each video its own id")
        seen[vid] = video
    return items


def reference_set_features(path: str | os.PathLike, cfg: ScorerConfig | None = None,
                           frames_per_video: int | None = None,
                           size: tuple[int, int] | None = None) -> dict[str, tuple[np.ndarray, str]]:
    """{video id: (float32 features [frames, D], content hash of its frames)} of a reference set.

    Videos as `reference_videos(path)`. `frames_per_video`: evenly spaced frames per video (None or 0: every
    frame, whatever cfg.fid_frames says of generated clips). `size` (H, W) resizes/centre-crops frames to the
    generated clips' size first, so both sets see the same framing. Two videos with the same frames are an
    error.
    """
    scorer = get_scorer(cfg)
    k = frames_per_video
    out: dict[str, tuple[np.ndarray, str]] = {}
    owner: dict[str, str] = {}
    for vid, video in reference_videos(path):
        frames = _read(video, "reference set")
        digest = hashlib.blake2b(np.ascontiguousarray(frames).data, digest_size=16).hexdigest()
        if digest in owner:
            raise EvaluationError(f"reference set {path}: {vid!r} and {owner[digest]!r} hold the same frames; "
                                  "a video counted twice would weigh double in FID")
        owner[digest] = vid
        if k:
            frames = frames[np.unique(even_indices(len(frames), min(k, len(frames))))]
        if size is not None:
            frames = videoio.resize_center_crop(frames, int(size[0]), int(size[1]))
        out[vid] = (scorer.fid_features(frames, all_frames=True), digest)
    return out


def reference_features(folder: str | os.PathLike, cfg: ScorerConfig | None = None,
                       frames_per_video: int | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """FID/KID features [N, D] of a reference frame set: `reference_set_features`, pooled in video order."""
    per_video = reference_set_features(folder, cfg, frames_per_video, size)
    return np.concatenate([feats for feats, _ in per_video.values()]).astype(np.float32)
