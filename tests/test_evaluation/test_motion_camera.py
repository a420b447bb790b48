"""Motion fidelity under a moving camera (issue 25): the camera is found, scored point by point of the frame and
removed before the moving tracks are scored, so a clip against its own time reversal drops by at least 0.3 (it did
not when every track took its best match among all reference tracks), while a clip against itself still scores
about 1, the opposite motion negative, a static clip 0, and a moved or resized subject as well as the original."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import functools

import numpy as np
import pytest

from evaluation import motion_fidelity
from evaluation import motion as m
from helpers.camera_clips import camera_clip

# ------------------------------------------------------------------------------------ the camera, by hand
FRAME = (96, 128)  # (H, W) of the hand-built tracks


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.radians(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def scene_and_subject(t: int = 9):
    """Tracks of a 12×12 grid: points in the middle third belong to a subject that moves 2 px/frame right on top
    of the camera's motion; the rest is the scene, carried by a roll of 0.5°, a zoom of 0.4 % and a pan of
    (-1.5, 0.7) px per step."""
    h, w = FRAME
    pts = m.grid_points(12, h, w).astype(np.float64)
    subject = (np.abs(pts[:, 0] - w / 2) < w / 6) & (np.abs(pts[:, 1] - h / 2) < h / 6)
    step = similarity(0.5, 1.004, (-1.5, 0.7))
    xy = [pts]
    for _ in range(t - 1):
        nxt = xy[-1] @ step[:, :2].T + step[:, 2]
        nxt[subject] += [2.0, 0.0]
        xy.append(nxt)
    return m.Tracks.all_visible(np.stack(xy), h, w), subject, step


def test_fit_camera_recovers_the_scene_motion_not_the_subject():
    tracks, subject, step = scene_and_subject()
    camera = m.fit_camera(tracks)
    assert camera is not None and camera.fitted.all()
    np.testing.assert_allclose(camera.transforms, np.broadcast_to(step, camera.transforms.shape), atol=1e-4)
    relative = m.remove_camera(tracks, camera)
    # the scene stands still once the camera is removed; the subject keeps its own 2 px/frame to the right
    np.testing.assert_allclose(np.diff(relative.xy[:, ~subject], axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.diff(relative.xy[:, subject], axis=0),
                               np.broadcast_to([2.0, 0.0], (8, subject.sum(), 2)), atol=1e-3)


def test_camera_tracks_are_the_camera_flow_at_fixed_points():
    tracks, _, step = scene_and_subject()
    ct = m.camera_tracks(m.fit_camera(tracks), tracks)
    grid = m.grid_points(m.CAMERA_GRID, *FRAME)
    assert ct.xy.shape == (9, m.CAMERA_GRID ** 2, 2) and ct.visible.all()
    flow = grid @ step[:, :2].T + step[:, 2] - grid  # the same similarity every step: the same flow at each point
    np.testing.assert_allclose(np.diff(ct.xy, axis=0), np.broadcast_to(flow, (8, *flow.shape)), atol=1e-3)
    still = m.camera_tracks(None, tracks)  # no camera: the points stay put
    np.testing.assert_allclose(still.xy, np.broadcast_to(grid, still.xy.shape), atol=1e-6)


def test_a_step_without_a_fit_takes_the_nearest_fitted_step():
    tracks, _, step = scene_and_subject()
    vis = np.ones(tracks.visible.shape, bool)
    vis[6:, 3:] = False                     # all but three points lost after frame 5: too few to fit steps 5..7
    camera = m.fit_camera(m.Tracks(tracks.xy, vis, *FRAME))
    np.testing.assert_array_equal(camera.fitted, [True] * 5 + [False] * 3)
    np.testing.assert_allclose(camera.transforms[5:], np.broadcast_to(step, (3, 2, 3)), atol=1e-4)


def test_a_camera_fitted_on_half_the_steps_or_fewer_is_none():
    """A clip whose scene is tracked for the first steps only (a generated clip's faint background) has no
    camera: one fitted step stretched over the clip would be a pan that is not there."""
    tracks, _, _ = scene_and_subject()
    vis = np.ones(tracks.visible.shape, bool)
    vis[5:, 3:] = False                     # steps 0..3 fitted, 4..7 not: 4 of 8 is not more than half
    assert m.fit_camera(m.Tracks(tracks.xy, vis, *FRAME)) is None


def test_a_motion_in_one_corner_is_no_camera():
    """A small object's tracks near an edge agree on one motion, but it spans less than CAMERA_MIN_SPAN of the
    frame: that is the object, not the scene (a toy clip on a plain background tracks only its shape)."""
    h, w = FRAME
    ys, xs = np.mgrid[2:20:3, 2:20:3]
    pts = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)        # 36 points in the top-left corner
    xy = pts[None] + np.arange(9)[:, None, None] * np.array([1.0, 0.5])
    assert m.fit_camera(m.Tracks.all_visible(xy, h, w)) is None
    res = motion_fidelity(xy, xy, frame_size=FRAME)
    assert np.isnan(res.camera) and res.score == pytest.approx(1.0)


def test_score_is_the_mean_of_camera_and_objects():
    tracks, _, _ = scene_and_subject()
    res = motion_fidelity(tracks, tracks)
    assert res.camera == pytest.approx(1.0) and res.camera_steps_reference == 8
    assert res.score == pytest.approx((res.camera + res.objects) / 2)
    assert res.two_way == pytest.approx(1.0) and "camera motion (in both clips) removed" in res.mask
    # the published column is untouched by the camera: the same number as without it
    assert res.dmt == motion_fidelity(tracks, tracks, camera=False).dmt


def test_reversed_tracks_score_minus_one_only_with_the_camera():
    """Reversed in time, the scene flows the other way and the subject too; without the camera a reversed scene
    track finds the subject's (also reversed) tracks among the reference's and vice versa... with the camera
    both the camera and the subject's own motion are opposite."""
    tracks, _, _ = scene_and_subject()
    rev = m.Tracks.all_visible(tracks.xy[::-1].copy(), *FRAME)
    res = motion_fidelity(rev, tracks)
    assert res.camera < -0.95 and res.objects < -0.95 and res.score < -0.95


# ------------------------------------------------------------------------------------ clips, tracked by LK
#: name → camera_clip arguments: a pan with the subject moving against it (the issue's test clip), a diagonal
#: pan, a turning path with roll (a camera following a car round a roundabout), a roll, a zoom.
SCENES = {
    "pan": dict(pan_deg=0, pan=0.3, subject_speed=0.3),
    "diagonal": dict(pan_deg=210, pan=0.25, subject_speed=0.35),
    "roundabout": dict(pan_deg=0, pan=0.3, turn_deg=120, roll_deg=60, subject_speed=0.2),
    "roll": dict(pan=0.0, roll_deg=30, subject_deg=0),
    "zoom": dict(pan=0.0, zoom=0.4, subject_deg=90),
}
#: (H, W, frames, seed): the first is what the camera constants were chosen on; the other two (another length,
#: aspect, size and seeds) were not looked at while choosing them.
CASES = [pytest.param((64, 64, 16, 0), id="64px"), pytest.param((64, 64, 24, 5), id="64px-24f-untuned"),
         pytest.param((96, 160, 24, 6), id="96x160-untuned")]


def opposite(kw: dict) -> dict:
    """Every step of every motion reversed: the flow and the subject turned by 180°, the roll and zoom undone."""
    out = dict(kw, pan_deg=kw.get("pan_deg", 0) + 180, roll_deg=-kw.get("roll_deg", 0.0),
               zoom=1 / (1 + kw.get("zoom", 0.0)) - 1)
    out["subject_deg"] = kw.get("subject_deg", kw.get("pan_deg", 0) + 180) + 180
    return out


def track(video):
    _, h, w, _ = video.shape
    return m.track_lk(video, m.grid_points(m.effective_grid_size(55, h, w), h, w))


@functools.lru_cache(maxsize=None)
def results(scene: str, h: int, w: int, frames: int, seed: int) -> dict:
    """MotionResult of each candidate against the clip, with and without the camera (`<name> v2`): the clip itself,
    its time reversal, the same motion in another scene with another subject (a disc, larger, elsewhere in the
    frame, with noise), the opposite motion, and a static clip (its first frame repeated)."""
    kw = SCENES[scene]
    ref = camera_clip(frames, h, w, seed, **kw)
    cands = {"self": ref, "reversed": ref[::-1].copy(), "static": np.repeat(ref[:1], frames, axis=0),
             "other": camera_clip(frames, h, w, seed + 100, **kw, shape="disc", subject_size=0.4,
                                  subject_offset=(0.1, -0.05), noise=6),
             "opposite": camera_clip(frames, h, w, seed + 200, **opposite(kw))}
    ref_tracks = track(ref)
    out = {}
    for name, video in cands.items():
        tracks = ref_tracks if name == "self" else track(video)
        out[name] = motion_fidelity(tracks, ref_tracks)
        out[f"{name} v2"] = motion_fidelity(tracks, ref_tracks, camera=False)
    return out


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scene", SCENES)
def test_clip_against_its_reversal_drops_by_at_least_0_3(scene, case):
    r = results(scene, *case)
    assert r["self"].score >= 0.95 and r["self"].camera_steps_reference > 0
    assert r["reversed"].score <= r["self"].score - 0.3, (r["self"].score, r["reversed"].score)


@pytest.mark.parametrize("case", CASES)
def test_without_the_camera_a_reversed_pan_scores_as_itself(case):
    """The issue's failure on these clips (why the camera is removed): every reversed track finds a match."""
    r = results("pan", *case)
    assert r["reversed v2"].score >= r["self v2"].score - 0.1


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scene", SCENES)
def test_same_motion_with_another_scene_and_subject(scene, case):
    """Motion, not layout: another texture, a disc 0.4 of the frame instead of a square 0.3, off-centre, noise."""
    assert results(scene, *case)["other"].score >= 0.85


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scene", SCENES)
def test_opposite_motion_scores_negative(scene, case):
    r = results(scene, *case)["opposite"]
    assert r.score <= -0.5 and r.camera <= -0.5


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("scene", SCENES)
def test_static_clip_scores_zero(scene, case):
    r = results(scene, *case)["static"]
    assert abs(r.score) <= 0.05 and r.camera_steps_generated == 0 and not r.fallback


def test_camera_in_the_generated_clip_only_counts_as_no_camera_motion():
    """A generation that pans where the reference's camera stood still: the camera scores 0 (cosine with no
    motion), the subject's own motion is still compared, and the score is their mean."""
    ref = camera_clip(16, 64, 64, 0, pan=0.0, subject_deg=0, subject_speed=0.4)
    # the scene flows down 0.3 of the frame and the subject goes right 0.4 relative to it: 0.5 at 36.87° in the frame
    gen = camera_clip(16, 64, 64, 100, pan=0.3, pan_deg=90, subject_deg=np.degrees(np.arctan2(0.3, 0.4)),
                      subject_speed=0.5)
    res = motion_fidelity(track(gen), track(ref))
    assert res.camera_steps_reference == 0 and res.camera_steps_generated > 0
    assert res.camera == pytest.approx(0.0) and res.objects >= 0.9
    assert res.score == pytest.approx(res.objects / 2) and "generated clip only" in res.mask
