"""FID/KID: the closed form against torchmetrics' public metrics, fid_frames, reference sets, KID of small sets as one
whole-set estimate."""

import json
import warnings

import numpy as np
import pytest
import torch

import videoio
from evaluation import EvaluationError, ScorerConfig, fid_from_features, get_scorer, kid_from_features
from evaluation.scorer import reference_set_features, reference_videos


class Features(torch.nn.Module):
    """torchmetrics' `feature=` extractor that returns its input: precomputed features go in as they are."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim  # FrechetInceptionDistance reads it (else it probes with a dummy image)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize("na, nb, dim", [(60, 45, 8), (10, 12, 32), (40, 40, 40)])  # N > D, N < D, N = D
def test_fid_and_kid_match_torchmetrics(na, nb, dim):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(dim)
    a = rng.normal(size=(na, dim))
    b = rng.normal(size=(nb, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + 0.2
    fid = FrechetInceptionDistance(feature=Features(dim))
    fid.update(torch.from_numpy(a), real=True)
    fid.update(torch.from_numpy(b), real=False)
    assert fid_from_features(a, b) == pytest.approx(float(fid.compute()), rel=1e-6)
    # KID: with subsets as large as the sets, torchmetrics' subsets are all the whole set; ours is one estimate of it
    n = min(na, nb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer"
        kid = KernelInceptionDistance(feature=Features(dim), subsets=2, subset_size=n)
    kid.update(torch.from_numpy(a[:n]), real=True)
    kid.update(torch.from_numpy(b[:n]), real=False)
    assert kid_from_features(a[:n], b[:n], subset_size=n, subsets=2) == (pytest.approx(float(kid.compute()[0]),
                                                                                         rel=1e-9), None)


def test_fid_is_exact_with_fewer_frames_than_dimensions():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 384))
    assert fid_from_features(a, a[::-1].copy()) == pytest.approx(0.0, abs=1e-9)  # same frames, other order
    # a pure mean shift c in every dimension adds exactly D·c², also when the covariance is singular
    assert fid_from_features(a, a + 0.1) == pytest.approx(384 * 0.01, rel=1e-9)


# ------------------------------------------------------------------------------------------ fid_frames
def test_fid_frames_default_is_every_frame():
    clip = videoio.moving_shape_video(10, 64, 64)
    assert get_scorer(ScorerConfig()).fid_features(clip).shape == (10, 384)
    assert ScorerConfig().fid_frames == 0
    three = get_scorer(ScorerConfig(fid_frames=3))
    assert three.fid_features(clip).shape == (3, 384)
    assert three.fid_features(clip, all_frames=True).shape == (10, 384)
    with pytest.raises(EvaluationError, match="fid_frames must be >= 0"):
        ScorerConfig(fid_frames=-1)


# -------------------------------------------------------------------------------------- reference sets
def test_reference_videos_folder_and_manifests(reference_set, tmp_path):
    assert [vid for vid, _ in reference_videos(reference_set)] == ["clip0", "clip1", "clip2"]
    (tmp_path / "set.txt").write_text("davis/clip2.mp4\n# a comment\ndavis/clip0.mp4\n")
    assert reference_videos(tmp_path / "set.txt") == [("clip2", reference_set / "clip2.mp4"),
                                                       ("clip0", reference_set / "clip0.mp4")]
    (tmp_path / "set.jsonl").write_text(json.dumps({"video": "davis/clip1.mp4", "id": "one"}) + "\n")
    assert reference_videos(tmp_path / "set.jsonl") == [("one", reference_set / "clip1.mp4")]
    (tmp_path / "set.csv").write_text("video,id\ndavis/clip0.mp4,a\ndavis/clip1.mp4,a\n")
    with pytest.raises(EvaluationError, match="id 'a' names two videos"):
        reference_videos(tmp_path / "set.csv")
    videoio.write_video(reference_set / "clip0.gif", videoio.moving_shape_video(6, 64, 64))
    with pytest.raises(EvaluationError, match="id 'clip0' names two videos"):
        reference_videos(reference_set)


def test_a_reference_set_with_one_clip_twice_is_refused(reference_set):
    (reference_set / "copy.mp4").write_bytes((reference_set / "clip1.mp4").read_bytes())
    with pytest.raises(EvaluationError, match="'copy' and 'clip1' hold the same frames"):
        reference_set_features(reference_set, ScorerConfig())


# ----------------------------------------------------------------------------------------- FID/KID
def test_fid_is_zero_on_itself_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16))
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    # a pure mean shift c in every dimension adds exactly D·c² (covariances unchanged)
    assert fid_from_features(a, a + 0.5) == pytest.approx(16 * 0.25, rel=1e-6)
    values = [fid_from_features(a, a + s) for s in (0.1, 0.5, 1.0)]
    assert values == sorted(values)
    b = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16)) * 0.5
    assert fid_from_features(a, b) < fid_from_features(a, b + 0.5)


def test_fid_matches_the_sqrtm_closed_form():
    from scipy import linalg

    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 8))
    b = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + 0.3
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    # two samples of one distribution; (a set against itself is biased negative when random subsets
    # overlap: the unbiased estimator drops k(x, x) within a set but not across sets)
    same, std = kid_from_features(a, b, subset_size=100, subsets=50)
    shifted = [kid_from_features(a, b + s, subset_size=100, subsets=50)[0] for s in (0.3, 0.6, 1.0)]
    assert abs(same) < 0.2 * shifted[0] and std >= 0
    assert shifted == sorted(shifted)
    assert kid_from_features(a, b + 0.3, subset_size=100, subsets=50) == \
        kid_from_features(a, b + 0.3, subset_size=100, subsets=50)  # seeded


def test_kid_of_sets_no_larger_than_a_subset_is_one_unbiased_whole_set_estimate(monkeypatch):
    """Issue 25, point 6: with <= subset_size frames in each set, random subsets could only repeat the whole sets
    (std 0 for 100 times the work): one whole-set estimate, std None. Unbiased also for sets of unequal sizes: over
    300 seeded pairs (20 vs 50 frames) of one distribution its mean is 0 within 3 standard errors."""
    import evaluation.fid as fid

    calls = []
    real = fid._poly_mmd
    monkeypatch.setattr(fid, "_poly_mmd", lambda x, y: calls.append((len(x), len(y))) or real(x, y))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 4)), rng.normal(size=(50, 4)) + 0.5
    assert kid_from_features(a, b, subset_size=50) == kid_from_features(a, b, subset_size=50, subsets=7, seed=3)
    assert kid_from_features(a, b)[1] is None and calls == [(20, 50)] * 3  # once per call, every frame
    calls.clear()
    _, std = kid_from_features(a, b, subset_size=30, subsets=10)  # 50 > 30: subsets of min(30, 20) frames
    assert calls == [(20, 20)] * 10 and std > 0
    same = np.array([kid_from_features(rng.normal(size=(20, 4)), rng.normal(size=(50, 4)))[0] for _ in range(300)])
    assert abs(same.mean()) < 3 * same.std() / np.sqrt(len(same))
    assert kid_from_features(a, b)[0] > 10 * same.std() / np.sqrt(len(same))


@pytest.mark.parametrize("a, b, match", [
    (np.zeros((1, 4)), np.zeros((5, 4)), "at least 2 samples"),
    (np.zeros((5, 4)), np.zeros((5, 3)), "feature sizes differ"),
    (np.full((5, 4), np.nan), np.zeros((5, 4)), "NaN"),
    (np.zeros(5), np.zeros((5, 4)), "2-D"),
])
def test_bad_features_raise(a, b, match):
    with pytest.raises(EvaluationError, match=match):
        fid_from_features(a, b)
    with pytest.raises(EvaluationError, match=match):
        kid_from_features(a, b)
