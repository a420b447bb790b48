"""What a trial computes once and stores for every other (sweep/run/artefacts.py): FID features of real frames,
the sweep's own reference videos and the spec's reference set, stored once and pooled by the report."""

import os

import videoio
from evaluation import ScorerConfig, get_scorer
from sweep.report import reference_frames
from sweep.results.store import Store
from sweep.results.tables import load
from sweep.run.artefacts import ensure_reference_features, ensure_reference_set, reference_set_part
from sweep.run.plan import DDIMInversion
from sweep.spec import Spec


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
