"""FID/KID: the closed form against torchmetrics' public metrics, fid_frames, reference sets and their storage."""

import json
import os
import warnings

import numpy as np
import pytest
import torch

import videoio
from evaluation import EvaluationError, ScorerConfig, fid_from_features, get_scorer, kid_from_features
from evaluation.scorer import reference_set_features, reference_videos
from sweep.plan import DDIMInversion
from sweep.report import reference_frames
from sweep.spec import Spec, SpecError
from sweep.store import Store
from sweep.tables import load
from sweep.trainable import ensure_reference_features, ensure_reference_set, reference_set_part


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
    # KID: with subsets as large as the sets, every subset is the whole set, so both are deterministic
    n = min(na, nb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features in buffer"
        kid = KernelInceptionDistance(feature=Features(dim), subsets=2, subset_size=n)
    kid.update(torch.from_numpy(a[:n]), real=True)
    kid.update(torch.from_numpy(b[:n]), real=False)
    assert kid_from_features(a[:n], b[:n], subset_size=n, subsets=2)[0] == pytest.approx(float(kid.compute()[0]),
                                                                                        rel=1e-9)


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
@pytest.fixture
def reference_set(tmp_path):
    folder = tmp_path / "davis"
    folder.mkdir()
    for i, direction in enumerate([(1, 0), (0, 1), (-1, 0)]):
        videoio.write_video(folder / f"clip{i}.mp4", videoio.moving_shape_video(6, 64, 64, direction=direction,
                                                                                  texture_seed=i))
    (folder / "notes.txt").write_text("ignored")
    return folder


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


def test_reference_features_are_stored_once_and_pooled_by_the_report(reference_set, tmp_path):
    store = Store(tmp_path / "results")
    metrics = Spec.model_validate({"name": "s", "preset": "tiny", "data": [
        {"video": "v.mp4", "source_prompt": "a", "prompts": ["b"]}]}, context={"check_files": False}
    ).metrics.model_dump()
    scorer = get_scorer(ScorerConfig(clip=metrics["clip"]))  # what the trainable's get_scorer(metrics) builds
    backbone = scorer.describe()["fid_backbone"]
    # the sweep's own reference videos, as the trials store them
    frames = videoio.moving_shape_video(8, 64, 64)
    ddim = DDIMInversion("k0", "v0", "/videos/v0.mp4", "f" * 64, "tiny", "", {})
    part = ensure_reference_features(store, "s", ddim, frames, scorer)
    path = tmp_path / "results" / "s" / "references" / f"part-{part}.parquet"
    stamp = path.stat().st_mtime_ns
    assert ensure_reference_features(store, "s", ddim, frames, scorer) == part and path.stat().st_mtime_ns == stamp
    feats, what = reference_frames(load(tmp_path / "results" / "s", "references"), ["s"], backbone)
    assert feats.shape == (8, 384) and "own reference videos: 1 video, 8 frames" in what
    # the spec's reference set: every frame, resized to the clips' size; it wins over the sweep's videos
    set_part = reference_set_part(str(reference_set), metrics, (64, 64))
    assert ensure_reference_set(store, "s", str(reference_set), metrics, (64, 64), set_part) is None
    refs = load(tmp_path / "results" / "s", "references")
    assert sorted(refs["video"].to_pylist()) == ["clip0", "clip1", "clip2", "v0"]
    feats, what = reference_frames(refs, ["s"], backbone)
    assert feats.shape == (18, 384) and what == f"reference set {reference_set}: 3 videos, 18 frames"
    # an edited set is another part; a failing one says why
    videoio.write_video(reference_set / "clip3.mp4", videoio.moving_shape_video(4, 64, 64, texture_seed=9))
    assert reference_set_part(str(reference_set), metrics, (64, 64)) != set_part
    os.remove(reference_set / "clip3.mp4")
    (reference_set / "broken.mp4").write_bytes(b"not a video")
    error = ensure_reference_set(store, "s", str(reference_set), metrics, (64, 64), "set-broken")
    assert error and "broken.mp4" in error
    assert "broken.mp4" in reference_frames(load(tmp_path / "results" / "s", "references"), ["s"], backbone)[1]


def test_spec_reference_set_and_fid_frames(reference_set, tmp_path):
    base = {"name": "s", "preset": "tiny", "data": [{"video": "v.mp4", "source_prompt": "a", "prompts": ["b"]}]}
    ctx = {"check_files": False, "base_dir": str(tmp_path)}
    spec = Spec.model_validate({**base, "reference_set": "davis", "metrics": {"fid_frames": 4}}, context=ctx)
    assert spec.reference_set == str(reference_set) and spec.metrics.fid_frames == 4
    assert Spec.model_validate(base, context=ctx).metrics.fid_frames == 0  # every frame
    with pytest.raises(SpecError, match="reference set not found"):
        Spec.model_validate({**base, "reference_set": "nowhere"}, context={"base_dir": str(tmp_path)})
    with pytest.raises(SpecError, match="not a URI"):
        Spec.model_validate({**base, "reference_set": "s3://bucket/davis"}, context=ctx)
    with pytest.raises(SpecError, match="fid_frames"):
        Spec.model_validate({**base, "metrics": {"fid_frames": -1}}, context=ctx)
