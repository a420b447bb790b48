"""Motion fidelity (DMT score): the formula on hand-built tracks, and LK tracks of synthetic clips."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from evaluation import EvaluationError, dmt_score, dmt_similarity, dmt_two_way, motion_fidelity
from evaluation import motion as m
from videoio import moving_shape_video


def tracks(*paths):
    """[T, N, 2] from N lists of (x, y) positions."""
    return np.stack([np.asarray(p, np.float64) for p in paths], axis=1)


# ----------------------------------------------------------------------------------- the formula
GEN = tracks([(0, 0), (1, 0), (2, 0)],      # steps (1,0), (1,0)
             [(0, 0), (0, 1), (0, 1)])      # steps (0,1), (0,0): static second step
REF = tracks([(5, 5), (6, 5), (6, 6)],      # steps (1,0), (0,1)
             [(0, 0), (-2, 0), (-2, -3)])   # steps (-1,0), (0,-1) after normalising


def test_similarity_matrix_by_hand():
    # S[i, j] = mean_t cos(gen_i step t, ref_j step t); a zero step contributes 0
    expected = np.array([[(1 + 0) / 2, (-1 + 0) / 2],
                         [(0 + 0) / 2, (0 + 0) / 2]])
    np.testing.assert_allclose(dmt_similarity(GEN, REF), expected, atol=1e-12)


def test_published_score_by_hand():
    # S - I = [[-0.5, -0.5], [0, -1]] -> row max [-0.5, 0] -> mean -0.25
    assert dmt_score(dmt_similarity(GEN, REF)) == pytest.approx(-0.25, abs=1e-12)


def test_two_way_score_by_hand():
    # rows of S: max [0.5, 0] -> 0.25; columns: max [0.5, 0] -> 0.25; mean 0.25 (no identity trick)
    assert dmt_two_way(dmt_similarity(GEN, REF)) == pytest.approx(0.25, abs=1e-12)


def test_matches_upstream_formula_on_moving_tracks():
    """Where upstream DMT code gives a number (no zero steps), ours is the same number."""
    rng = np.random.default_rng(0)
    gen = np.cumsum(rng.normal(0, 2, (9, 30, 2)), axis=0)
    ref = np.cumsum(rng.normal(0, 2, (9, 30, 2)), axis=0)
    # upstream: tracklets [N, T, 2]; normalise displacements; einsum; (S - eye).max(1).mean()
    t1, t2 = torch.from_numpy(gen).permute(1, 0, 2), torch.from_numpy(ref).permute(1, 0, 2)
    d1 = t1[:, 1:] - t1[:, :-1]
    d1 = d1 / d1.norm(dim=-1, keepdim=True)
    d2 = t2[:, 1:] - t2[:, :-1]
    d2 = d2 / d2.norm(dim=-1, keepdim=True)
    s_up = torch.einsum("ntc, mtc -> nmt", d1, d2).mean(dim=-1)
    score_up = (s_up - torch.eye(s_up.shape[0], dtype=s_up.dtype)).max(dim=1)[0].mean().item()
    s = dmt_similarity(gen, ref)
    np.testing.assert_allclose(s, s_up.numpy(), atol=1e-12)
    assert dmt_score(s) == pytest.approx(score_up, abs=1e-12)


def test_static_tracks_give_zero_not_nan():
    still = np.zeros((5, 3, 2))
    s = dmt_similarity(still, still)
    assert np.isfinite(s).all() and (s == 0).all()
    res = motion_fidelity(still, still)
    assert res.score == 0.0 and res.two_way == 0.0


def test_identity_trick_follows_grid_index_after_filtering():
    s = np.array([[0.9, 0.2], [0.3, 0.8]])
    # rows are grid points 4 and 7, columns grid points 7 and 9: only (row 7, col 7) is "identity"
    assert dmt_score(s, gen_index=np.array([4, 7]), ref_index=np.array([7, 9])) == pytest.approx((0.9 + 0.8) / 2)
    assert dmt_score(s, gen_index=np.array([7, 4]), ref_index=np.array([7, 9])) == pytest.approx((0.2 + 0.8) / 2)


def test_mismatched_track_lengths_raise():
    with pytest.raises(EvaluationError, match="resample the reference"):
        dmt_similarity(np.zeros((5, 4, 2)), np.zeros((6, 4, 2)))
    with pytest.raises(EvaluationError, match=r"\[T, N, 2\]"):
        dmt_similarity(np.zeros((5, 4)), np.zeros((5, 4, 2)))
    with pytest.raises(EvaluationError, match="NaN"):
        dmt_similarity(np.full((5, 4, 2), np.nan), np.zeros((5, 4, 2)))


def test_foreground_filter_and_static_reference():
    moving = np.cumsum(np.ones((6, 2, 2)), axis=0)
    still = np.zeros((6, 2, 2))
    both = np.concatenate([moving, still], axis=1)
    res = motion_fidelity(both, both, min_motion=0.5)
    assert (res.tracks_generated, res.tracks_reference) == (2, 2)
    assert res.score == pytest.approx(1.0) and res.two_way == pytest.approx(1.0)
    assert motion_fidelity(still, both, min_motion=0.5).score == 0.0  # nothing moves: nothing agrees
    with pytest.raises(EvaluationError, match="no reference track moves"):
        motion_fidelity(both, still, min_motion=0.5)


def test_resample_tracks_keeps_span_and_direction():
    t = np.cumsum(np.ones((5, 1, 2)), axis=0)
    r = m.resample_tracks(t, 9)
    assert r.shape == (9, 1, 2)
    np.testing.assert_allclose(r[[0, -1]], t[[0, -1]])
    assert (np.diff(r, axis=0) > 0).all()
    np.testing.assert_allclose(r[:, 0, 0], np.linspace(1, 5, 9), atol=1e-6)
    np.testing.assert_allclose(m.resample_tracks(r, 5), t, atol=1e-6)


def test_grid_is_clipped_to_the_frame():
    assert m.effective_grid_size(55, 64, 64) == 16
    assert m.effective_grid_size(55, 320, 576) == 55
    pts = m.grid_points(16, 64, 64)
    assert pts.shape == (256, 2) and pts.min() >= 0 and pts.max() <= 63


# ------------------------------------------------------------------------------ synthetic clips
T, H = 16, 64
DIRECTIONS = {"same": (1.0, 0.0), "diagonal": (2 ** -0.5, 2 ** -0.5), "up": (0.0, -1.0), "opposite": (-1.0, 0.0)}


def lk_tracks(video):
    return m.track_lk(video, m.grid_points(m.effective_grid_size(55, H, H), H, H))


@pytest.fixture(scope="module")
def reference_tracks():
    return lk_tracks(moving_shape_video(T, H, H, direction=(1, 0)))


def generated(name, noise=0.0, seed=0):
    # another shape, colour, background and texture: only the motion is shared with the reference
    video = moving_shape_video(T, H, H, direction=DIRECTIONS[name], shape="circle", color=(40, 200, 60),
                               background=(90, 70, 20), texture_seed=3)
    if noise:
        video = np.clip(video + np.random.default_rng(seed).normal(0, noise, video.shape), 0, 255).astype(np.uint8)
    return video


@pytest.mark.parametrize("noise", [0.0, 15.0])
def test_motion_fidelity_of_synthetic_motions(reference_tracks, noise):
    res = {k: motion_fidelity(lk_tracks(generated(k, noise)), reference_tracks, min_motion=0.5)
           for k in DIRECTIONS}
    for r in res.values():
        assert r.tracks_generated > 10 and r.tracks_reference > 10
    assert res["same"].score >= 0.9 and res["same"].two_way >= 0.9
    assert 0.5 < res["diagonal"].score < 0.9            # cos 45° = 0.71
    assert abs(res["up"].score) < 0.25 and abs(res["up"].two_way) < 0.25
    assert res["opposite"].score < -0.6 and res["opposite"].two_way < -0.6
    order = [res[k].score for k in ("same", "diagonal", "up", "opposite")]
    assert order == sorted(order, reverse=True)
    order2 = [res[k].two_way for k in ("same", "diagonal", "up", "opposite")]
    assert order2 == sorted(order2, reverse=True)


def test_unfiltered_score_is_finite_and_bounded(reference_tracks):
    for k in DIRECTIONS:
        r = motion_fidelity(lk_tracks(generated(k)), reference_tracks)
        assert -1.0 <= r.score <= 1.0 and -1.0 <= r.two_way <= 1.0
        assert r.tracks_generated == r.tracks_reference == 256
