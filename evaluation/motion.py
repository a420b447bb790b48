"""Motion fidelity: point tracks and the DMT score.

The score is the one of "Diffusion Motion Transfer" (Yatim et al., 2024), used by Motion Inversion's
Table 1: track a grid of points placed on frame 0 through the reference and the generated clip, build
S[i, j] = mean over time of cos(displacement of generated track i, displacement of reference track j),
subtract the identity, take the row-wise max and average. Upstream code
(diffusion-motion-transfer, ``motion_fidelity_score.py``) does exactly::

    d = tracks[:, 1:] - tracks[:, :-1]; d = d / d.norm(dim=-1, keepdim=True)
    S = einsum("ntc,mtc->nmt", d_gen, d_ref).mean(-1); score = (S - I).max(1).mean()

Two things the upstream code leaves undefined are decided here (and documented where they happen):
zero-length displacements (upstream: 0/0 = NaN) and dropping tracks that barely move (upstream: an
optional first-frame mask). Trackers: CoTracker3 (the paper's) and an OpenCV Lucas–Kanade tracker that
needs no weights (the offline default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .config import EvaluationError, offline

#: A step shorter than this (pixels) is "no motion": its direction is undefined, so its unit vector is
#: taken as the zero vector and it contributes cosine 0 to every pair (never NaN). Far below any
#: tracker's precision (CoTracker jitter on static points is ~1e-2 px), so wherever upstream returns a
#: number, ours is the same number.
STATIC_EPS = 1e-3

#: The grid is clipped so neighbouring points are at least this many pixels apart (55×55 as in DMT fits
#: any frame of about 230 px or more; a 64×64 clip gets 16×16).
MIN_GRID_SPACING = 4.0

#: CoTracker runs at this resolution and places its grid there; the LK tracker uses the same points.
COTRACKER_INTERP_SHAPE = (384, 512)

#: Foreground filter: a track is "moving" when it moves faster than min_motion px/frame in at least
#: this fraction of its steps.
MOVING_FRACTION = 0.75

#: Lucas–Kanade forward–backward check: a point whose backward track misses its start by more than this
#: many pixels is lost from that frame on.
LK_FB_THRESHOLD = 1.0


# --------------------------------------------------------------------------------------------- grid
def effective_grid_size(grid_size: int, height: int, width: int) -> int:
    """The grid side actually used: `grid_size`, clipped so points stay MIN_GRID_SPACING px apart.

    DMT's 55×55 grid would put points closer than a pixel apart on a 64×64 clip, where every track
    would then see the same window; clipping keeps the tracks distinct. At least 2×2.
    """
    pts = grid_points(2, height, width)
    span = min(pts[:, 0].max() - pts[:, 0].min(), pts[:, 1].max() - pts[:, 1].min())
    fits = int(math.floor(span / MIN_GRID_SPACING)) + 1
    return max(2, min(int(grid_size), fits))


def grid_points(size: int, height: int, width: int) -> np.ndarray:
    """`size`×`size` points (x, y) in pixel coordinates, row-major, where CoTracker puts its grid.

    CoTracker's ``grid_size=`` query places points in its 384×512 working resolution with a margin of
    512/64 px and scales them back by (W-1)/511, (H-1)/383; the LK tracker uses the same points so the
    two trackers score the same grid.
    """
    ih, iw = COTRACKER_INTERP_SHAPE
    margin = iw / 64
    ys = np.linspace(margin, ih - margin, size)
    xs = np.linspace(margin, iw - margin, size)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    pts = np.stack([gx.ravel() * (width - 1) / (iw - 1), gy.ravel() * (height - 1) / (ih - 1)], -1)
    return pts.astype(np.float32)


# ------------------------------------------------------------------------------------------ trackers
def track_lk(frames: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Track `points` [N, 2] (x, y on frame 0) through uint8 frames [T, H, W, 3] → tracks [T, N, 2].

    Pyramidal Lucas–Kanade from each frame to the next, with a forward–backward check: a point whose
    backward flow misses its start by more than LK_FB_THRESHOLD px (or that LK flags, or that leaves
    the frame) is lost and stays where it was last tracked reliably, so from then on it counts as
    static (zero displacement) rather than as a wrong direction.
    """
    import cv2

    t, h, w, _ = frames.shape
    side = min(h, w)
    win = 9 if side < 192 else 15 if side < 480 else 21  # small windows drag less at occlusion edges
    lk = dict(winSize=(win, win), maxLevel=2 if side < 128 else 3 if side < 480 else 4,
              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01))
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    cur = np.ascontiguousarray(points, np.float32).reshape(-1, 1, 2)
    alive = np.ones(len(cur), bool)
    out = np.empty((t, len(cur), 2), np.float32)
    out[0] = cur[:, 0]
    for i in range(1, t):
        nxt, st, _ = cv2.calcOpticalFlowPyrLK(gray[i - 1], gray[i], cur, None, **lk)
        back, st_back, _ = cv2.calcOpticalFlowPyrLK(gray[i], gray[i - 1], nxt, None, **lk)
        fb = np.linalg.norm(back[:, 0] - cur[:, 0], axis=-1)
        inside = ((nxt[:, 0, 0] >= 0) & (nxt[:, 0, 0] <= w - 1) & (nxt[:, 0, 1] >= 0)
                  & (nxt[:, 0, 1] <= h - 1))
        ok = (st[:, 0] == 1) & (st_back[:, 0] == 1) & (fb <= LK_FB_THRESHOLD) & inside & np.isfinite(fb)
        alive &= ok
        cur = np.where(alive[:, None, None], nxt, cur).astype(np.float32)
        out[i] = cur[:, 0]
    return out


@lru_cache(maxsize=None)
def load_cotracker(checkpoint: str | None, device: str):
    """CoTracker3 (offline variant, the DMT/paper tracker) from a local checkpoint or torch.hub.

    `checkpoint`: path to ``scaled_offline.pth`` (needs the ``cotracker`` package), or None for
    ``torch.hub.load("facebookresearch/co-tracker", "cotracker3_offline")`` (downloads the code and the
    weights once; cached under ``torch.hub.get_dir()``). Offline with nothing cached fails at once.
    """
    import torch

    how = ("give tracker_checkpoint=/path/to/scaled_offline.pth (from "
           "https://huggingface.co/facebook/cotracker3, with `pip install "
           "git+https://github.com/facebookresearch/co-tracker`), or run once with internet: "
           "python -c \"import torch; torch.hub.load('facebookresearch/co-tracker', 'cotracker3_offline')\", "
           "or use tracker='lk' (no weights needed)")
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise EvaluationError(f"CoTracker checkpoint not found: {path}; {how}")
        try:
            from cotracker.predictor import CoTrackerPredictor
        except ImportError:
            raise EvaluationError(
                "tracker 'cotracker3' with a local checkpoint needs the cotracker package: "
                "pip install git+https://github.com/facebookresearch/co-tracker") from None
        try:
            model = CoTrackerPredictor(checkpoint=str(path), offline=True, v2=False, window_len=60)
        except Exception as exc:  # noqa: BLE001 - a bad file is the user's to fix
            raise EvaluationError(f"cannot load CoTracker3 checkpoint {path}: {exc}") from None
    else:
        hub = Path(torch.hub.get_dir())
        cached = (hub / "facebookresearch_co-tracker_main").is_dir() and \
            (hub / "checkpoints" / "scaled_offline.pth").is_file()
        if offline() and not cached:
            raise EvaluationError(f"CoTracker3 is not in the torch hub cache ({hub}) and HF_HUB_OFFLINE is "
                                  f"set, so it cannot be downloaded; {how}")
        try:
            model = torch.hub.load("facebookresearch/co-tracker", "cotracker3_offline",
                                   skip_validation=True, trust_repo=True)
        except Exception as exc:  # noqa: BLE001
            raise EvaluationError(f"cannot load CoTracker3 from torch.hub ({type(exc).__name__}: {exc}); "
                                  f"{how}") from None
    return model.to(device).eval()


def track_cotracker(model, frames: np.ndarray, grid_size: int, device: str) -> np.ndarray:
    """CoTracker3 tracks of a `grid_size`² grid on frame 0, exactly as DMT calls it → [T, N, 2]."""
    import torch

    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None].float().to(device)
    with torch.no_grad():
        tracks, _visibility = model(video, grid_size=grid_size)
    return tracks[0].float().cpu().numpy()


def resample_tracks(tracks: np.ndarray, num_frames: int) -> np.ndarray:
    """Linearly interpolate tracks [T, N, 2] to `num_frames` evenly spaced times over the same span.

    The reference may have another frame count than the generated clip; it is assumed to cover the
    same span of time (trim it first if the generation used only part of it). Resampling the tracks
    rather than the frames keeps every step a real displacement: repeating frames to stretch a short
    reference would insert zero steps, which count as "no motion".
    """
    t = tracks.shape[0]
    if t == num_frames:
        return tracks
    pos = np.linspace(0.0, t - 1, num_frames)          # fractional source frame of each output frame
    lo = np.minimum(np.floor(pos).astype(int), t - 2)
    w = (pos - lo)[:, None, None]
    tracks = np.asarray(tracks, np.float64)
    return ((1 - w) * tracks[lo] + w * tracks[lo + 1]).astype(np.float32)


# --------------------------------------------------------------------------------------- DMT score
def unit_displacements(tracks: np.ndarray) -> np.ndarray:
    """Per-step unit displacement vectors of tracks [T, N, 2] → [N, T-1, 2].

    A step shorter than STATIC_EPS px has no direction: its unit vector is the zero vector, so it adds
    cosine 0 (neither agreement nor disagreement) to every pair, and a track that never moves has a
    row/column of zeros in S. Upstream divides by the norm and gets NaN here.
    """
    d = np.diff(np.asarray(tracks, np.float64), axis=0).transpose(1, 0, 2)
    norm = np.linalg.norm(d, axis=-1, keepdims=True)
    return np.where(norm > STATIC_EPS, d / np.maximum(norm, STATIC_EPS), 0.0)


def dmt_similarity(gen_tracks: np.ndarray, ref_tracks: np.ndarray) -> np.ndarray:
    """S [N_gen, N_ref]: mean over time of the cosine between unit displacements of each track pair.

    Tracks are [T, N, 2] (x, y) with the same T; the reference must be resampled to the generated clip
    first (see resample_tracks). Mismatched lengths are an EvaluationError, not a broadcast.
    """
    gen_tracks, ref_tracks = np.asarray(gen_tracks), np.asarray(ref_tracks)
    for name, tr in (("generated", gen_tracks), ("reference", ref_tracks)):
        if tr.ndim != 3 or tr.shape[-1] != 2:
            raise EvaluationError(f"{name} tracks must be [T, N, 2] (x, y), got {tuple(tr.shape)}")
        if tr.shape[0] < 2:
            raise EvaluationError(f"{name} tracks have {tr.shape[0]} frame(s); motion needs at least 2")
        if not np.isfinite(tr).all():
            raise EvaluationError(f"{name} tracks contain NaN/inf positions; the tracker failed")
    if gen_tracks.shape[0] != ref_tracks.shape[0]:
        raise EvaluationError(
            f"generated tracks have {gen_tracks.shape[0]} frames but reference tracks "
            f"{ref_tracks.shape[0]}; resample the reference to the generated length first")
    u_gen, u_ref = unit_displacements(gen_tracks), unit_displacements(ref_tracks)
    steps = u_gen.shape[1]
    # einsum("ntc,mtc->nm") / steps, as one matmul
    return u_gen.reshape(len(u_gen), -1) @ u_ref.reshape(len(u_ref), -1).T / steps


def dmt_score(similarity: np.ndarray, gen_index: np.ndarray | None = None,
              ref_index: np.ndarray | None = None) -> float:
    """The published DMT score: (S − I).max(axis=1).mean().

    "I" pairs a generated track with the reference track started at the same grid point; when tracks
    were filtered, `gen_index`/`ref_index` give each row's/column's grid index and 1 is subtracted where
    they are equal (for an unfiltered square S this is exactly S − I).
    """
    s = np.array(similarity, np.float64)
    if s.size == 0:
        raise EvaluationError("motion similarity matrix is empty (no tracks on one side)")
    gi = np.arange(s.shape[0]) if gen_index is None else np.asarray(gen_index)
    ri = np.arange(s.shape[1]) if ref_index is None else np.asarray(ref_index)
    s -= (gi[:, None] == ri[None, :])
    return float(s.max(axis=1).mean())


def dmt_two_way(similarity: np.ndarray) -> float:
    """Two-way variant: mean of the row-wise (generated→reference) and column-wise
    (reference→generated) best-match means of S, with no identity subtraction. The column side checks
    that every reference motion is reproduced, which the published one-way score does not."""
    s = np.asarray(similarity, np.float64)
    if s.size == 0:
        raise EvaluationError("motion similarity matrix is empty (no tracks on one side)")
    return float(0.5 * (s.max(axis=1).mean() + s.max(axis=0).mean()))


@dataclass(frozen=True)
class MotionResult:
    """Motion fidelity of one pair: the published score, the two-way variant, and how many tracks
    (generated, reference) entered S after the foreground filter."""
    score: float
    two_way: float
    tracks_generated: int
    tracks_reference: int


def moving(tracks: np.ndarray, min_motion: float) -> np.ndarray:
    """Which tracks [T, N, 2] are foreground: they move more than `min_motion` px per frame in at
    least MOVING_FRACTION of their steps → bool [N].

    Per-step speed rather than total distance, so a background point that the subject drags along or
    covers for a few frames (a tracker artefact, and one upstream DMT's mask avoids by construction)
    does not count as a moving track.
    """
    steps = np.linalg.norm(np.diff(np.asarray(tracks, np.float64), axis=0), axis=-1)
    return (steps > min_motion).mean(axis=0) >= MOVING_FRACTION


def motion_fidelity(gen_tracks: np.ndarray, ref_tracks: np.ndarray, min_motion: float = 0.0) -> MotionResult:
    """DMT motion fidelity of generated vs reference tracks (both [T, N, 2], same T).

    Foreground filter (`min_motion` > 0, px per frame of the scored clip): a track that is not `moving`
    (faster than `min_motion` px/frame in MOVING_FRACTION of its steps) is dropped — generated tracks by
    their own motion (rows), reference tracks by theirs (columns). Filtering each side by itself, rather than with one mask for
    both as DMT's first-frame mask does, keeps the score about motion when the edit changes the
    subject's shape or place. With a static background, unfiltered static tracks each add 0 and pull
    the score toward the fraction of moving points; the filter removes that dilution.
    If the reference has no moving track the score is undefined (EvaluationError, said by the caller);
    if the generated clip has none, nothing in it agrees with the reference: both scores are 0.0.
    """
    s = dmt_similarity(gen_tracks, ref_tracks)
    gen_idx = np.arange(s.shape[0])
    ref_idx = np.arange(s.shape[1])
    if min_motion > 0:
        ref_idx = np.flatnonzero(moving(ref_tracks, min_motion))
        gen_idx = np.flatnonzero(moving(gen_tracks, min_motion))
        if len(ref_idx) == 0:
            raise EvaluationError(
                f"no reference track moves faster than min_motion={min_motion:g} px/frame in "
                f"{MOVING_FRACTION:.0%} of its steps, so there is no motion to compare with; lower min_motion "
                "(0 keeps every track)")
        if len(gen_idx) == 0:
            return MotionResult(0.0, 0.0, 0, int(len(ref_idx)))
        s = s[np.ix_(gen_idx, ref_idx)]
    return MotionResult(dmt_score(s, gen_idx, ref_idx), dmt_two_way(s), int(len(gen_idx)), int(len(ref_idx)))
