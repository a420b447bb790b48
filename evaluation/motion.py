"""Motion fidelity: point tracks with visibility, the camera's motion, and the DMT score over the moving tracks.

The score is the one of "Diffusion Motion Transfer" (DMT, Yatim et al., 2024), used by Motion Inversion's
Table 1: track a grid of points placed on frame 0 through the reference and the generated clip, build
S[i, j] = mean over time of cos(displacement of generated track i, displacement of reference track j),
subtract the identity, take the row-wise max and average. Upstream code
(diffusion-motion-transfer, ``motion_fidelity_score.py``) does exactly::

    d = tracks[:, 1:] - tracks[:, :-1]; d = d / d.norm(dim=-1, keepdim=True)
    S = einsum("ntc,mtc->nmt", d_gen, d_ref).mean(-1); score = (S - I).max(1).mean()

Trackers. DMT tracked with CoTracker (the first release, v1). This project's cluster tracker is CoTracker3
(offline, ``cotracker3_offline``), loaded from torch.hub pinned to one commit of
facebookresearch/co-tracker (COTRACKER_HUB) or from a local checkpoint; results record it as tracker
"cotracker3" with tracker_checkpoint "torch.hub:facebookresearch/co-tracker:<commit>". The offline
default, "lk", is OpenCV's pyramidal Lucas–Kanade (no weights; for tests and CPU runs).

What upstream leaves undefined is decided here:

* Zero-length steps (upstream: 0/0 = NaN): a step shorter than STATIC_EPS px has no direction; its unit
  vector is zero, so it adds cosine 0 to every pair.
* Visibility. A point the tracker loses (occluded, out of the frame, or failing the tracker's checks) is
  not a static point: both trackers return a visibility mask [T, N] with the tracks (CoTracker3 predicts
  it; LK marks a point lost from the frame where its status, forward–backward or patch check fails or it
  leaves the frame, and never finds it again). A step is visible when the track is visible at both of
  its frames. S[i, j] is the mean cosine over the steps visible in both tracks; a pair that shares no
  visible step has no S (NaN) and is left out of every max (a row with no defined entry is left out of
  the mean). A track visible in at most MIN_VISIBLE_FRACTION (half) of the steps is dropped; any two
  tracks kept share at least one visible step, so S is defined everywhere among them. With every track
  visible throughout, S and the scores are exactly the published formula.
* Static background dilutes the published score: a static reference column has cosine 0 with every row,
  so every row maximum is floored at 0 (an opposite motion scores about 0, not -1), and static generated
  rows each add about 0. Hence the moving-track rule below.
* A moving camera defeats a best match (evaluation version 3; issue 25). With the camera moving, a clip
  holds at least two motions: the scene flowing one way and a subject moving against it (or a roll or a
  zoom, whose flow points every way). Reversed in time, each reverses, and a best match over all
  reference tracks finds each reversed motion in the other group (a reversed scene track matches a
  subject track, and vice versa): a real roundabout clip with the camera following the car scored 0.996
  against itself and 0.715 against its reversal, a pan with a subject moving against it 1.00 and 1.00.
  A one-to-one assignment of tracks instead of the best match fails too: a roll or a zoom has every
  direction in both the clip and its reversal (measured 0.78–0.97 against the reversal, 0.99 against
  itself), and as the objects' score below it cut the same motion in another look on the roundabout of
  benchmarks/motion_reversal.py from 0.95–0.99 to 0.17–0.62 (which of the scene's parts are tracked
  changes with the look). So the camera is scored on its own, point by point of the frame, and removed
  before the tracks are scored:

  - The camera (`fit_camera`): per step a similarity transform (pan/tilt, roll, zoom), fitted by RANSAC
    first to the tracks near the frame's edges (CAMERA_BORDER: a subject fills the middle of a frame far
    more often than its edges) and then followed on the tracks that keep moving with it, so a large or
    lingering subject does not become the camera. A clip has no camera when its first fit does not span
    half the frame (a toy clip on a plain background tracks only its shape), when at most half of its
    steps have a fit, or when none of the camera's points moves by the moving-track rule (a still camera).
  - ``camera``: each clip's camera flow at a fixed CAMERA_GRID² grid of the frame (`camera_tracks`),
    compared point by point and step by step (S[p, p], not a best match: a pan left is not a pan right
    seen elsewhere), averaged over the points that move in either clip. A clip without camera motion
    has zero flow, so a camera in one clip only scores 0.
  - ``objects``: each clip's tracks with its camera removed (x[t+1] − A_t(x[t]), `remove_camera`): the
    DMT formula over the moving tracks (rule below). Columns are the reference's moving tracks. Rows are
    the generated clip's, judged by the same rule on its own tracks (not the reference's grid points: an
    edit may change the subject's shape or place, and the score is about motion, not layout).

  Limits: a subject covering most of the frame's edges is taken for the scene; with parallax (a near
  layer moving faster than the far one) one layer is the camera and the other counts as motion relative
  to it; two groups moving against each other relative to the scene (two cars passing) still defeat
  ``objects`` alone, as they defeat the DMT formula with a still camera (whenever the camera moves,
  ``camera`` carries a reversal's drop).

Three columns:

  - ``motion_fidelity`` (what summaries rank by): the mean of ``camera`` and ``objects`` where each is
    defined (they count alike, whatever share of the frame each covers: an edit may resize the subject).
    ``camera`` is defined when either clip's camera moves; ``objects`` when a reference track moves
    relative to the scene. With no camera motion in either clip it is ``objects`` alone, exactly the
    version-2 score (`motion_fidelity(..., camera=False)` computes that score on any clip).
    "Moving" (see `moving`): visible in more than half of the steps, a peak displacement from its first
    visible position of at least MOVING_DISPLACEMENT (2 %) of the frame diagonal, and at least
    MOVING_STEPS (half) of its visible steps at least MOVING_SPEED (0.1 %) of the diagonal long, and never
    less than MOVING_SPEED_MIN_PX (0.25 px, about a tracker's precision) — or `min_motion` px/frame when
    that is set. The displacement rule ignores tracker jitter; the step rule ignores points dragged along
    by a passing object for a few frames (a tracker artefact), whose mostly-zero steps would again pull
    every maximum toward 0.
    If nothing moves in the reference (no camera motion, no moving track), both sides fall back to every
    visible track (``motion_mask_fallback`` is True and the score equals ``motion_fidelity_dmt``). If no
    generated track moves, nothing in the generated clip agrees with the reference's motion: ``objects``
    is 0.0 (a static clip scores 0, not NaN). The identity subtraction is the published one, by grid
    index (`dmt_score`): a row whose only column is its own grid point's track scores S − 1, so with very
    few moving tracks a score can pass -1.
  - ``motion_fidelity_dmt``: the published score over every visible grid track (no motion mask, no camera).
  - ``motion_fidelity_two_way``: as ``motion_fidelity``, with the mean of the row-wise and column-wise best
    matches of the objects' S (no identity subtraction) in place of ``objects``: the column side asks that
    every reference motion be found.
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

#: torch.hub source of CoTracker3, pinned to a commit whose hubconf.py has ``cotracker3_offline``
#: (torch.hub accepts "owner/repo:ref"; its cache folder is then ``facebookresearch_co-tracker_<ref>``).
COTRACKER_HUB_REPO = "facebookresearch/co-tracker"
COTRACKER_HUB_COMMIT = "20d1b6cced2f98ab68be5ad211d1cb4a5fad25f2"
COTRACKER_HUB = f"{COTRACKER_HUB_REPO}:{COTRACKER_HUB_COMMIT}"

#: A track enters S only when visible in more than this fraction of its steps (so any two such tracks
#: share a visible step).
MIN_VISIBLE_FRACTION = 0.5

#: Moving-track rule (see the module doc): peak displacement ≥ MOVING_DISPLACEMENT × frame diagonal, and
#: ≥ MOVING_STEPS of the visible steps at least max(MOVING_SPEED × diagonal, MOVING_SPEED_MIN_PX) long
#: (or `min_motion` px when given). At 256×256: 7.2 px and 0.36 px/frame; at 576×320: 13.2 px and
#: 0.66 px/frame; at 64×64: 1.8 px and 0.25 px/frame.
MOVING_DISPLACEMENT = 0.02
MOVING_SPEED = 0.001
MOVING_SPEED_MIN_PX = 0.25
MOVING_STEPS = 0.5

#: Lucas–Kanade checks: a point is lost from the frame where its backward track misses its start by more
#: than LK_FB_THRESHOLD px, or where the LK_NCC_PATCH² patch around it correlates (normalised
#: cross-correlation) less than LK_NCC_THRESHOLD with the patch in the previous frame: it was covered, or
#: the window slid onto another surface (a background point dragged by a passing object).
LK_FB_THRESHOLD = 1.0
LK_NCC_PATCH = 7
LK_NCC_THRESHOLD = 0.9


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


# ------------------------------------------------------------------------------------------- tracks
@dataclass(frozen=True, eq=False)  # eq=False: no element-wise array comparison hiding in ==
class Tracks:
    """Point tracks of one clip: positions `xy` [T, N, 2] (x, y in pixels), `visible` [T, N] bool, and
    the frame size they were tracked in (the moving-track thresholds are relative to it)."""

    xy: np.ndarray
    visible: np.ndarray
    height: int
    width: int

    def __post_init__(self) -> None:
        xy, vis = np.asarray(self.xy), np.asarray(self.visible, bool)
        if xy.ndim != 3 or xy.shape[-1] != 2:
            raise EvaluationError(f"tracks must be [T, N, 2] (x, y), got {tuple(xy.shape)}")
        if vis.shape != xy.shape[:2]:
            raise EvaluationError(f"visibility must be [T, N] = {tuple(xy.shape[:2])}, got {tuple(vis.shape)}")
        object.__setattr__(self, "xy", xy)
        object.__setattr__(self, "visible", vis)

    @classmethod
    def all_visible(cls, xy: np.ndarray, height: int, width: int) -> "Tracks":
        xy = np.asarray(xy)
        return cls(xy, np.ones(xy.shape[:2], bool), int(height), int(width))

    @property
    def diagonal(self) -> float:
        return math.hypot(self.height, self.width)

    def step_visible(self) -> np.ndarray:
        """[T-1, N]: the track is visible at both frames of the step."""
        return self.visible[1:] & self.visible[:-1]


def as_tracks(tracks, frame_size: tuple[int, int] | None = None) -> Tracks:
    """`tracks` itself, or an array [T, N, 2] taken as visible throughout in a frame of `frame_size`
    (H, W), which the moving-track rule needs."""
    if isinstance(tracks, Tracks):
        return tracks
    if frame_size is None:
        raise EvaluationError("tracks given as a bare array need frame_size=(height, width): the moving-track "
                              "thresholds are relative to the frame")
    return Tracks.all_visible(tracks, *frame_size)


# ------------------------------------------------------------------------------------------ trackers
def _patch_ncc(prev: np.ndarray, p_prev: np.ndarray, cur: np.ndarray, p_cur: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of the LK_NCC_PATCH² patches around p_prev in `prev` and p_cur in
    `cur` (float32 images, points [N, 2]), sampled bilinearly → [N]; a flat patch correlates 0."""
    r = (LK_NCC_PATCH - 1) / 2
    offs = np.linspace(-r, r, LK_NCC_PATCH, dtype=np.float32)
    ox, oy = (o.ravel()[None] for o in np.meshgrid(offs, offs))

    def patches(img, p):
        import cv2
        return cv2.remap(img, (p[:, :1] + ox).astype(np.float32), (p[:, 1:] + oy).astype(np.float32),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float64)

    a, b = patches(prev, p_prev), patches(cur, p_cur)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    return (a * b).sum(1) / (np.sqrt((a * a).sum(1) * (b * b).sum(1)) + 1e-6)


def track_lk(frames: np.ndarray, points: np.ndarray) -> Tracks:
    """Track `points` [N, 2] (x, y on frame 0) through uint8 frames [T, H, W, 3] → Tracks.

    Pyramidal Lucas–Kanade from each frame to the next. A point is lost (invisible from that frame on;
    its position is held, but no step touching it counts) when LK flags it, when its backward flow misses
    its start by more than LK_FB_THRESHOLD px, when its patch no longer matches the previous frame's
    (LK_NCC_THRESHOLD), or when it leaves the frame.
    """
    import cv2

    t, h, w, _ = frames.shape
    side = min(h, w)
    # small windows drag less at occlusion edges; the pyramid handles the large displacements
    win = 7 if side < 480 else 11
    lk = dict(winSize=(win, win), maxLevel=2 if side < 128 else 3 if side < 480 else 4,
              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01))
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    grayf = [g.astype(np.float32) for g in gray]  # for the patch check
    pos = np.array(points, np.float32).reshape(-1, 2)  # a copy: updated in place below
    alive = np.ones(len(pos), bool)
    xy = np.empty((t, len(pos), 2), np.float32)
    visible = np.zeros((t, len(pos)), bool)
    xy[0], visible[0] = pos, True
    for i in range(1, t):
        idx = np.flatnonzero(alive)  # a lost point is never found again: track only the others
        if idx.size:
            cur = np.ascontiguousarray(pos[idx]).reshape(-1, 1, 2)
            nxt, st, _ = cv2.calcOpticalFlowPyrLK(gray[i - 1], gray[i], cur, None, **lk)
            back, st_back, _ = cv2.calcOpticalFlowPyrLK(gray[i], gray[i - 1], nxt, None, **lk)
            cur, nxt, back = cur[:, 0], nxt[:, 0], back[:, 0]
            fb = np.linalg.norm(back - cur, axis=-1)
            inside = (nxt[:, 0] >= 0) & (nxt[:, 0] <= w - 1) & (nxt[:, 1] >= 0) & (nxt[:, 1] <= h - 1)
            ok = (st[:, 0] == 1) & (st_back[:, 0] == 1) & (fb <= LK_FB_THRESHOLD) & inside & np.isfinite(fb)
            if ok.any():  # the patch check only where the cheaper ones passed
                ncc = _patch_ncc(grayf[i - 1], cur[ok], grayf[i], nxt[ok])
                ok[np.flatnonzero(ok)[ncc < LK_NCC_THRESHOLD]] = False
            alive[idx[~ok]] = False
            pos[idx[ok]] = nxt[ok]
        xy[i], visible[i] = pos, alive  # a lost point keeps its last reliable position, invisible
    return Tracks(xy, visible, h, w)


@lru_cache(maxsize=None)
def load_cotracker(checkpoint: str | None, device: str):
    """CoTracker3 (offline variant) from a local checkpoint or torch.hub pinned to COTRACKER_HUB.

    `checkpoint`: path to ``scaled_offline.pth`` (needs the ``cotracker`` package), or None for
    ``torch.hub.load(COTRACKER_HUB, "cotracker3_offline")`` (downloads the code at that commit and the
    weights once; cached under ``torch.hub.get_dir()``). Offline with nothing cached fails at once.
    """
    import torch

    how = ("give tracker_checkpoint=/path/to/scaled_offline.pth (from "
           "https://huggingface.co/facebook/cotracker3, with `pip install "
           f"git+https://github.com/{COTRACKER_HUB_REPO}@{COTRACKER_HUB_COMMIT}`), or run once with internet: "
           f"python -c \"import torch; torch.hub.load('{COTRACKER_HUB}', 'cotracker3_offline', "
           "trust_repo=True, skip_validation=True)\", or use tracker='lk' (no weights needed)")
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise EvaluationError(f"CoTracker checkpoint not found: {path}; {how}")
        try:
            from cotracker.predictor import CoTrackerPredictor
        except ImportError:
            raise EvaluationError(
                "tracker 'cotracker3' with a local checkpoint needs the cotracker package: "
                f"pip install git+https://github.com/{COTRACKER_HUB_REPO}@{COTRACKER_HUB_COMMIT}") from None
        try:
            model = CoTrackerPredictor(checkpoint=str(path), offline=True, v2=False, window_len=60)
        except Exception as exc:  # noqa: BLE001 - a bad file is the user's to fix
            raise EvaluationError(f"cannot load CoTracker3 checkpoint {path}: {exc}") from None
    else:
        hub = Path(torch.hub.get_dir())
        code = hub / "_".join([*COTRACKER_HUB_REPO.split("/"), COTRACKER_HUB_COMMIT.replace("/", "_")])
        cached = code.is_dir() and (hub / "checkpoints" / "scaled_offline.pth").is_file()
        if offline() and not cached:
            raise EvaluationError(f"CoTracker3 is not in the torch hub cache ({code}) and HF_HUB_OFFLINE is "
                                  f"set, so it cannot be downloaded; {how}")
        try:
            model = torch.hub.load(COTRACKER_HUB, "cotracker3_offline", skip_validation=True, trust_repo=True)
        except Exception as exc:  # noqa: BLE001
            raise EvaluationError(f"cannot load CoTracker3 from torch.hub ({type(exc).__name__}: {exc}); "
                                  f"{how}") from None
    return model.to(device).eval()


def track_cotracker(model, frames: np.ndarray, grid_size: int, device: str) -> Tracks:
    """CoTracker3 tracks of a `grid_size`² grid on frame 0, called as DMT calls it, with the visibility
    CoTracker3 predicts (True/False per frame and point) → Tracks."""
    import torch

    t, h, w, _ = frames.shape
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None].float().to(device)
    with torch.no_grad():
        tracks, visibility = model(video, grid_size=grid_size)
    vis = visibility[0]
    vis = vis if vis.dtype == torch.bool else vis > 0.5  # the predictor thresholds already; be safe
    return Tracks(tracks[0].float().cpu().numpy(), vis.cpu().numpy(), h, w)


def resample_tracks(tracks, num_frames: int):
    """Linearly interpolate tracks to `num_frames` evenly spaced times over the same span → same type
    (Tracks, or an array [T, N, 2]). An interpolated position is visible when both frames it is
    interpolated from are.

    The reference may have another frame count than the generated clip; it is assumed to cover the
    same span of time (trim it first if the generation used only part of it). Resampling the tracks
    rather than the frames keeps every step a real displacement: repeating frames to stretch a short
    reference would insert zero steps, which count as "no motion".
    """
    if isinstance(tracks, Tracks):
        xy, vis = tracks.xy, tracks.visible
    else:
        xy, vis = np.asarray(tracks), None
    t = xy.shape[0]
    if t == num_frames:
        return tracks
    pos = np.linspace(0.0, t - 1, num_frames)          # fractional source frame of each output frame
    lo = np.minimum(np.floor(pos).astype(int), t - 2)
    w = (pos - lo)[:, None, None]
    out = ((1 - w) * np.asarray(xy, np.float64)[lo] + w * np.asarray(xy, np.float64)[lo + 1]).astype(np.float32)
    if vis is None:
        return out
    wv = w[:, :, 0]
    vis_out = (vis[lo] | (wv >= 1)) & (vis[lo + 1] | (wv <= 0))
    return Tracks(out, vis_out, tracks.height, tracks.width)


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


def dmt_similarity(gen_tracks: np.ndarray, ref_tracks: np.ndarray, gen_visible: np.ndarray | None = None,
                   ref_visible: np.ndarray | None = None) -> np.ndarray:
    """S [N_gen, N_ref]: mean cosine between the unit displacements of each track pair, over the steps
    visible in both (NaN where a pair shares none).

    Tracks are [T, N, 2] (x, y) with the same T; the reference must be resampled to the generated clip
    first (see resample_tracks). Visibility: bool [T, N] per side, None = visible throughout (then S is
    exactly the published mean over all steps). Mismatched lengths are an EvaluationError, not a
    broadcast.
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
    n, m, steps = len(u_gen), len(u_ref), u_gen.shape[1]
    if n == 0 or m == 0:
        return np.zeros((n, m))
    if gen_visible is None and ref_visible is None:
        # einsum("ntc,mtc->nm") / steps, as one matmul: the published formula
        return u_gen.reshape(n, -1) @ u_ref.reshape(m, -1).T / steps
    sv_gen = _step_weights(gen_visible, gen_tracks.shape[:2], "generated")  # [N, T-1] 0/1
    sv_ref = _step_weights(ref_visible, ref_tracks.shape[:2], "reference")
    total = (u_gen * sv_gen[..., None]).reshape(n, -1) @ (u_ref * sv_ref[..., None]).reshape(m, -1).T
    shared = sv_gen @ sv_ref.T  # steps visible in both tracks of each pair
    if shared.min(initial=1) > 0:  # the usual case: divide in place (S is large at the DMT grid)
        return np.divide(total, shared, out=total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(shared > 0, total / np.maximum(shared, 1), np.nan)


def _step_weights(visible: np.ndarray | None, shape: tuple[int, int], name: str) -> np.ndarray:
    if visible is None:
        return np.ones((shape[1], shape[0] - 1))
    vis = np.asarray(visible, bool)
    if vis.shape != shape:
        raise EvaluationError(f"{name} visibility must be [T, N] = {shape}, got {tuple(vis.shape)}")
    return (vis[1:] & vis[:-1]).T.astype(np.float64)


def _row_max(s: np.ndarray) -> np.ndarray:
    """Max of each row over its defined (non-NaN) entries; rows with none are left out."""
    defined = ~np.isnan(s)
    if defined.all():  # the usual case: every pair shares a visible step
        return s.max(axis=1)
    return np.where(defined, s, -np.inf).max(axis=1)[defined.any(axis=1)]


def dmt_score(similarity: np.ndarray, gen_index: np.ndarray | None = None,
              ref_index: np.ndarray | None = None) -> float:
    """The published DMT score: (S − I).max(axis=1).mean(), NaN entries (pairs that share no visible
    step) left out of the max.

    "I" pairs a generated track with the reference track started at the same grid point; when tracks
    were filtered, `gen_index`/`ref_index` give each row's/column's grid index and 1 is subtracted where
    they are equal (for an unfiltered square S this is exactly S − I).
    """
    s = np.array(similarity, np.float64)
    if s.size == 0:
        raise EvaluationError("motion similarity matrix is empty (no tracks on one side)")
    gi = np.arange(s.shape[0]) if gen_index is None else np.asarray(gen_index)
    ri = np.arange(s.shape[1]) if ref_index is None else np.asarray(ref_index)
    _, rows, cols = np.intersect1d(gi, ri, assume_unique=True, return_indices=True)
    s[rows, cols] -= 1.0
    best = _row_max(s)
    if best.size == 0:
        raise EvaluationError("no generated and reference track share a visible step")
    return float(best.mean())


def dmt_two_way(similarity: np.ndarray) -> float:
    """Two-way variant: mean of the row-wise (generated→reference) and column-wise
    (reference→generated) best-match means of S, with no identity subtraction (NaN entries left out).
    The column side checks that every reference motion is reproduced, which the published one-way
    score does not."""
    s = np.asarray(similarity, np.float64)
    if s.size == 0:
        raise EvaluationError("motion similarity matrix is empty (no tracks on one side)")
    rows, cols = _row_max(s), _row_max(s.T)
    if rows.size == 0:
        raise EvaluationError("no generated and reference track share a visible step")
    return float(0.5 * (rows.mean() + cols.mean()))


# ------------------------------------------------------------------------------------ moving tracks
def visible_enough(tracks: Tracks) -> np.ndarray:
    """bool [N]: visible in more than MIN_VISIBLE_FRACTION of the steps (the tracks that enter S)."""
    return tracks.step_visible().mean(axis=0) > MIN_VISIBLE_FRACTION


def moving_thresholds(tracks: Tracks, min_motion: float = 0.0) -> tuple[float, float]:
    """(peak displacement px, step length px/frame) of the moving-track rule at this frame size."""
    step = float(min_motion) if min_motion > 0 else max(MOVING_SPEED * tracks.diagonal, MOVING_SPEED_MIN_PX)
    return MOVING_DISPLACEMENT * tracks.diagonal, step


def moving(tracks: Tracks, min_motion: float = 0.0) -> np.ndarray:
    """Which tracks move → bool [N]: visible enough (`visible_enough`), a peak displacement from the first
    visible position of at least MOVING_DISPLACEMENT × frame diagonal, and at least MOVING_STEPS of the
    visible steps no shorter than max(MOVING_SPEED × diagonal, MOVING_SPEED_MIN_PX), or `min_motion` px
    when that is > 0. Only visible frames and steps count.
    """
    peak_px, step_px = moving_thresholds(tracks, min_motion)
    xy, vis = np.asarray(tracks.xy, np.float64), tracks.visible
    n = xy.shape[1]
    first = xy[np.argmax(vis, axis=0), np.arange(n)]   # position at the first visible frame
    dist = np.where(vis, np.linalg.norm(xy - first[None], axis=-1), 0.0)
    step_vis = tracks.step_visible()
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=-1)
    moving_steps = ((steps >= step_px) & step_vis).sum(axis=0)
    sustained = moving_steps >= MOVING_STEPS * np.maximum(step_vis.sum(axis=0), 1)
    return visible_enough(tracks) & (dist.max(axis=0) >= peak_px) & sustained


# ------------------------------------------------------------------------------------ camera motion
#: The camera's motion between two frames is a similarity transform (pan/tilt: translation, roll:
#: rotation, zoom: scale), fitted by RANSAC. It is first looked for in the tracks near the frame's edges:
#: within CAMERA_BORDER of the width (left, right) or height (top, bottom) of an edge at the step's first
#: frame. A subject fills the middle of a frame far more often than its edges, so the edges show the scene
#: (the camera) even when the subject covers most of the frame. A point within max(CAMERA_INLIER_PX,
#: CAMERA_INLIER × diagonal) px of where the transform puts it moved with the camera.
CAMERA_BORDER = 0.1
CAMERA_INLIER = 0.004
CAMERA_INLIER_PX = 0.5
#: A step's fit is kept when its inliers are at least CAMERA_MIN_POINTS and at least CAMERA_MAJORITY of the
#: tracks it was fitted to (the scene's motion, not one of several); the first fit must also span at least
#: CAMERA_MIN_SPAN of the frame's width or height: a motion found in one corner is one object's (a toy clip
#: on a plain background tracks only its shape), not the scene's.
CAMERA_MIN_POINTS = 8
CAMERA_MAJORITY = 0.5
CAMERA_MIN_SPAN = 0.5
#: A clip has a camera when more than this share of its steps have their own fit (as a track enters S when
#: visible in more than half of its steps): one fitted step, the rest lost, is no camera motion to speak of
#: (a generated toy clip's faint background is tracked for a frame or two).
CAMERA_MIN_FITTED = 0.5
#: Two clips' camera flows are compared at a CAMERA_GRID² grid of fixed points of the frame.
CAMERA_GRID = 8


@dataclass(frozen=True, eq=False)
class Camera:
    """The camera motion of one clip: `transforms` [T-1, 2, 3], the similarity transform taking frame t's
    pixel coordinates to frame t+1's (a step without its own fit takes the nearest fitted step's), and
    `fitted` [T-1], which steps had their own fit."""

    transforms: np.ndarray
    fitted: np.ndarray


def fit_camera(tracks: Tracks) -> Camera | None:
    """The scene's motion, step by step (see the constants above) → Camera, or None when at most
    CAMERA_MIN_FITTED of the steps have a fit.

    The scene is found at the frame's edges: the first fit is made on the tracks near them and must span
    CAMERA_MIN_SPAN of the frame. It is then followed: each later step is fitted to the tracks that moved
    with the camera at every fitted step before it, wherever they are now, so a subject that stays in view
    while the scene's tracks leave the frame never takes the camera's place.
    """
    import cv2

    xy = np.asarray(tracks.xy, np.float64)
    n_steps = xy.shape[0] - 1
    threshold = max(CAMERA_INLIER_PX, CAMERA_INLIER * tracks.diagonal)
    size = np.array([tracks.width - 1, tracks.height - 1], np.float64)
    step_visible = tracks.step_visible()
    transforms = np.tile(np.eye(2, 3), (n_steps, 1, 1))
    fitted = np.zeros(n_steps, bool)
    scene = np.ones(xy.shape[1], bool)  # the tracks that have moved with the camera so far
    for t in range(n_steps):
        use = scene & step_visible[t]
        if not fitted.any():  # not found yet: look at the edges
            use &= ((xy[t] < CAMERA_BORDER * size) | (xy[t] > (1 - CAMERA_BORDER) * size)).any(axis=1)
        if use.sum() < CAMERA_MIN_POINTS:
            continue
        src, dst = xy[t, use].astype(np.float32), xy[t + 1, use].astype(np.float32)
        a, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                             maxIters=2000, confidence=0.99, refineIters=10)
        if a is None or inl.sum() < max(CAMERA_MIN_POINTS, CAMERA_MAJORITY * use.sum()):
            continue
        inside = src[inl[:, 0].astype(bool)]
        if not fitted.any() and not ((inside.max(axis=0) - inside.min(axis=0)) >= CAMERA_MIN_SPAN * size).any():
            continue  # one object's motion in a corner, not the scene's
        transforms[t], fitted[t] = a, True
        err = np.linalg.norm(xy[t + 1] - _apply(a, xy[t]), axis=-1)
        scene &= ~step_visible[t] | (err <= threshold)  # a track seen leaving the camera's motion is not the scene
    if fitted.mean() <= CAMERA_MIN_FITTED:
        return None
    # a step without its own fit (too few scene tracks left, no majority) takes the nearest fitted step's motion
    idx = np.flatnonzero(fitted)
    nearest = idx[np.abs(np.arange(n_steps)[:, None] - idx[None]).argmin(axis=1)]
    return Camera(transforms[nearest], fitted)


def _apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """2×3 transform(s) applied to points [..., N, 2]."""
    return points @ np.swapaxes(transform[..., :2], -1, -2) + transform[..., None, :, 2]


def camera_tracks(camera: Camera | None, tracks: Tracks) -> Tracks:
    """The camera's motion at fixed points of the frame (a CAMERA_GRID² grid), as tracks: step t of track p
    is the displacement the camera gives a scene point at p from frame t to t+1 (A_t(p) − p), accumulated
    from p (visible throughout; with no camera they stay put). Fixed points, not points carried along: the
    flow of two cameras is compared at the same place of the frame at every step, so one that does
    every step in reverse scores −1 (carried points would drift apart and meet other parts of a roll or
    a zoom)."""
    grid = grid_points(CAMERA_GRID, tracks.height, tracks.width).astype(np.float64)
    n_steps = tracks.xy.shape[0] - 1
    steps = np.zeros((n_steps, *grid.shape)) if camera is None else _apply(camera.transforms, grid) - grid
    return Tracks.all_visible(np.concatenate([grid[None], grid + np.cumsum(steps, axis=0)]), tracks.height,
                              tracks.width)


def remove_camera(tracks: Tracks, camera: Camera) -> Tracks:
    """The tracks' motion relative to the scene: each visible step minus the camera's motion of where the
    point was (x[t+1] − A_t(x[t])), accumulated from the first position; invisible steps add nothing."""
    xy = np.asarray(tracks.xy, np.float64)
    step = (xy[1:] - _apply(camera.transforms, xy[:-1])) * tracks.step_visible()[..., None]
    return Tracks(np.concatenate([xy[:1], xy[:1] + np.cumsum(step, axis=0)]), tracks.visible,
                  tracks.height, tracks.width)


def moving_camera(tracks: Tracks, min_motion: float = 0.0) -> tuple[Camera | None, Tracks]:
    """The clip's camera (`fit_camera`) and its tracks (`camera_tracks`); the camera is None when there is
    none or none of its tracks moves by the moving-track rule (a still camera has no motion to compare)."""
    camera = fit_camera(tracks)
    ct = camera_tracks(camera, tracks)
    if camera is not None and not moving(ct, min_motion).any():
        camera, ct = None, camera_tracks(None, tracks)
    return camera, ct


@dataclass(frozen=True)
class MotionResult:
    """Motion fidelity of one pair (see the module doc).

    score:            `motion_fidelity`: the mean of `camera` and `objects` where defined (only `objects`
                      when neither clip's camera moves); two_way: `motion_fidelity_two_way`, the same with
                      the two-way score of the objects.
    camera:           the camera's motion of the generated clip against the reference's, point by point of
                      the frame (NaN when neither camera moves).
    objects:          the DMT formula over the tracks that move relative to the scene (rows: generated,
                      columns: reference); NaN when no reference track does (or in the fallback).
    tracks_generated / tracks_reference: rows / columns of that matrix.
    dmt:              `motion_fidelity_dmt`, the published score over every visible track.
    fallback:         nothing moves in the reference, so score and two_way use every visible track.
    mask:             the rules that chose the rows and columns, in pixels at this frame size.
    visible_generated / visible_reference: tracks visible in more than half of the steps.
    camera_steps_generated / camera_steps_reference: steps where that clip's camera was fitted (0: no
                      camera, or a still one).
    """
    score: float
    two_way: float
    tracks_generated: int
    tracks_reference: int
    dmt: float = float("nan")
    fallback: bool = False
    mask: str = ""
    visible_generated: int = 0
    visible_reference: int = 0
    camera: float = float("nan")
    objects: float = float("nan")
    camera_steps_generated: int = 0
    camera_steps_reference: int = 0


def motion_fidelity(gen_tracks, ref_tracks, min_motion: float = 0.0, *,
                    frame_size: tuple[int, int] | None = None, camera: bool = True) -> MotionResult:
    """Motion fidelity of generated vs reference tracks (Tracks, or arrays [T, N, 2] visible throughout
    with `frame_size` (H, W)); both with the same T (resample the reference first).

    `min_motion` (px per frame of the scored clip): 0 = the size-relative step rule; > 0 replaces it
    (a moving track has at least MOVING_STEPS of its visible steps this long). `camera=False` scores the
    tracks as they are, with no camera found or removed (evaluation version 2's motion_fidelity, which a
    reversed clip with a moving camera can pass: see the module doc). If the tracker lost every reference
    point the score is undefined (EvaluationError, said by the caller); the rest is in the module doc.
    """
    gen, ref = as_tracks(gen_tracks, frame_size), as_tracks(ref_tracks, frame_size)
    gen_ok, ref_ok = np.flatnonzero(visible_enough(gen)), np.flatnonzero(visible_enough(ref))
    if len(ref_ok) == 0:
        raise EvaluationError("the tracker lost every reference point (none is visible in more than half of the "
                              "steps), so there is no motion to compare with")
    # the published score: S among the tracks visible enough (every pair there shares a visible step)
    s = dmt_similarity(gen.xy[:, gen_ok], ref.xy[:, ref_ok], gen.visible[:, gen_ok], ref.visible[:, ref_ok])
    dmt = dmt_score(s, gen_ok, ref_ok) if len(gen_ok) else 0.0
    peak_px, step_px = moving_thresholds(ref, min_motion)
    rule = f"peak displacement >= {peak_px:.3g} px, >= {MOVING_STEPS:.0%} of visible steps >= {step_px:.3g} px/frame"
    common = dict(dmt=dmt, visible_generated=int(len(gen_ok)), visible_reference=int(len(ref_ok)))

    no_camera = (None, camera_tracks(None, ref))
    cam_ref, ct_ref = moving_camera(ref, min_motion) if camera else no_camera
    if cam_ref is None and not moving(ref, min_motion).any():  # nothing moves in the reference: every visible track
        mask = f"every visible track (fallback: no camera motion and no reference track moves: {rule})"
        score, two_way = (dmt, dmt_two_way(s)) if len(gen_ok) else (0.0, 0.0)
        return MotionResult(score, two_way, int(len(gen_ok)), int(len(ref_ok)), fallback=True, mask=mask, **common)
    cam_gen, ct_gen = moving_camera(gen, min_motion) if camera else no_camera
    camera_score = float("nan")
    if cam_gen is not None or cam_ref is not None:
        # point by point of the frame, not best match: a pan left is not a pan right seen elsewhere; over the
        # points that move on either side (a still camera's points add cosine 0)
        points = moving(ct_gen, min_motion) | moving(ct_ref, min_motion)
        camera_score = float(np.diag(dmt_similarity(ct_gen.xy, ct_ref.xy))[points].mean())
        gen = remove_camera(gen, cam_gen) if cam_gen is not None else gen
        ref = remove_camera(ref, cam_ref) if cam_ref is not None else ref
    common.update(camera=camera_score, camera_steps_generated=0 if cam_gen is None else int(cam_gen.fitted.sum()),
                  camera_steps_reference=0 if cam_ref is None else int(cam_ref.fitted.sum()))

    cols, rows = np.flatnonzero(moving(ref, min_motion)), np.flatnonzero(moving(gen, min_motion))
    objects = objects_two_way = float("nan")  # no reference track moves relative to the scene: the camera alone
    if len(cols) and len(rows) == 0:  # nothing moves (or can be followed) in the generated clip: nothing agrees
        objects = objects_two_way = 0.0
    elif len(cols):
        if np.isnan(camera_score):  # the tracks as they are: their rows and columns of S (moving implies visible)
            masked = s if (len(rows), len(cols)) == s.shape else \
                s[np.ix_(np.searchsorted(gen_ok, rows), np.searchsorted(ref_ok, cols))]
        else:
            masked = dmt_similarity(gen.xy[:, rows], ref.xy[:, cols], gen.visible[:, rows], ref.visible[:, cols])
        objects, objects_two_way = dmt_score(masked, rows, cols), dmt_two_way(masked)
    # the camera and the objects count alike, whatever share of the frame each covers (an edit may resize
    # the subject)
    score, two_way = (float(np.nanmean([camera_score, x])) for x in (objects, objects_two_way))
    mask = f"moving tracks: {rule}"
    if not np.isnan(camera_score):
        moved = "both clips" if cam_gen is not None and cam_ref is not None else \
            "the reference only" if cam_ref is not None else "the generated clip only"
        mask = f"camera motion (in {moved}) removed, then moving tracks: {rule}"
    return MotionResult(score, two_way, int(len(rows)), int(len(cols)), mask=mask, objects=objects, **common)
