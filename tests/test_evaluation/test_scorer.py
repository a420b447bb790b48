"""evaluation/scorer.py and clip.py: the scorer (cached backbones, what it describes), the CLIP metrics, any
size and length, bad inputs, reference features of a folder. Offline: seeded random CLIP weights and the LK tracker."""

import json

import imageio.v3 as iio
import numpy as np
import pytest

import videoio
from evaluation import EvaluationError, ScorerConfig, fid_from_features, get_scorer, reference_features, score_files
from evaluation import clip as clipm
from vocabulary import SAMPLE_METRICS as METRICS


def test_scorer_is_cached_and_backbones_load_once(scorer):
    misses = clipm.load_clip.cache_info().misses
    assert get_scorer(ScorerConfig(min_motion=0.5)) is scorer
    other = get_scorer(ScorerConfig(min_motion=0.0))  # another config, same CLIP
    assert other is not scorer and other.clip is scorer.clip
    assert clipm.load_clip.cache_info().misses == misses


def test_describe_is_flat_and_says_weights_are_random(scorer):
    d = scorer.describe()
    json.dumps(d)
    assert all(isinstance(v, (str, float, int, bool)) for v in d.values())
    assert d["clip_backbone"] == "ViT-S-32/random-seed0" and d["tracker"] == "lk"
    assert d["pretrained_metrics"] is False and d["clip_pretrained"] is False
    assert d["fid_backbone"].startswith("clip:") and "px/frame" in d["motion_filter"]


# -------------------------------------------------------------------------------------- CLIP metrics
def test_clip_metrics_deterministic_for_seeded_weights(scorer, clips):
    _, gen = clips
    fresh = clipm.load_clip.__wrapped__("ViT-S-32", None, "cpu", 0)  # a second, independent build
    a = clipm.encode_frames(scorer.clip, gen)
    b = clipm.encode_frames(fresh, gen)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(clipm.encode_text(scorer.clip, "a cat"), clipm.encode_text(fresh, "a cat"), atol=1e-5)
    other_seed = clipm.load_clip.__wrapped__("ViT-S-32", None, "cpu", 1)
    assert not np.allclose(clipm.encode_frames(other_seed, gen[:2]), a[:2], atol=1e-3)


def test_constant_video_is_temporally_consistent(scorer):
    frame = videoio.moving_shape_video(1, 64, 64)
    video = np.repeat(frame, 6, axis=0)
    emb = scorer.embed(video)
    assert clipm.temporal_consistency(emb) == pytest.approx(1.0, abs=1e-5)
    assert clipm.appearance_leakage(emb, emb) == pytest.approx(1.0, abs=1e-5)


def test_score_returns_every_metric_in_range(scorer, clips):
    ref, gen = clips
    r1 = scorer.score(gen, "a green circle moving right", reference=ref)
    for k in METRICS:
        assert isinstance(r1[k], float) and -1.0 <= r1[k] <= 1.0, k
    assert r1["unavailable"] == ""
    assert r1["motion_fidelity"] >= 0.9  # same motion, other shape and colour
    assert r1["motion_grid"] == 16 and r1["motion_tracks"] > 0
    assert r1["fid_features"].shape == (8, 384) and r1["fid_features"].dtype == np.float32
    assert all(r1[k] >= 0 for k in ("seconds_clip", "seconds_motion", "seconds_fid"))
    assert r1["clip_backbone"] == "ViT-S-32/random-seed0" and r1["pretrained_metrics"] is False


def test_score_without_reference_marks_what_is_missing(scorer, clips):
    _, gen = clips
    r = scorer.score(gen, "a cat")
    assert r["appearance_leakage"] is None and r["motion_fidelity"] is None and r["motion_fidelity_two_way"] is None
    assert "motion_fidelity: no reference video given" in r["unavailable"]
    assert isinstance(r["text_similarity"], float)


def test_static_reference_falls_back_to_every_track_and_says_so(scorer, clips):
    """Nothing moves in the reference: no motion to agree with, so 0 (not NaN), and the fallback is flagged."""
    _, gen = clips
    still = np.repeat(gen[:1], len(gen), axis=0)
    r = scorer.score(gen, "a cat", reference=still)
    assert r["motion_mask_fallback"] is True
    assert r["motion_fidelity"] == pytest.approx(0.0, abs=1e-9) == r["motion_fidelity_dmt"]
    assert isinstance(r["appearance_leakage"], float)


def test_any_size_and_length_is_resampled(scorer):
    ref = videoio.moving_shape_video(16, 80, 112, direction=(1, 0), speed=2)
    gen = videoio.moving_shape_video(8, 48, 64, direction=(1, 0), shape="circle", color=(40, 200, 60))
    r = scorer.score(gen, "a circle", reference=ref)
    assert r["motion_fidelity"] is not None and r["motion_fidelity"] > 0.5
    short = videoio.moving_shape_video(5, 48, 64, direction=(1, 0))
    assert scorer.score(gen, "a circle", reference=short)["motion_fidelity"] is not None
    with pytest.raises(EvaluationError, match="resample_reference=True"):
        scorer.score(gen, "a circle", reference=ref, resample_reference=False)


# --------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("frames, match", [
    (np.zeros((1, 64, 64, 3), np.uint8), "single frame"),
    (np.zeros((4, 64, 64, 3), np.float32), "uint8"),
    (np.zeros((4, 3, 64, 64), np.uint8), "channels first"),
    (np.zeros((4, 8, 8, 3), np.uint8), "at least 16 px"),
])
def test_bad_frames_raise(scorer, frames, match):
    with pytest.raises(EvaluationError, match=match):
        scorer.score(frames, "a cat")


def test_torch_frames_are_accepted():
    import torch

    from evaluation.scorer import as_frames

    x = torch.zeros((3, 32, 32, 3), dtype=torch.uint8)
    assert as_frames(x).shape == (3, 32, 32, 3) and as_frames(x).dtype == np.uint8


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_empty_prompt_raises(scorer, clips, prompt):
    with pytest.raises(EvaluationError, match="prompt is empty"):
        scorer.score(clips[1], prompt)


def test_bad_files_raise(tmp_path, clips):
    ref, gen = clips
    good = videoio.write_video(tmp_path / "ref.mp4", ref)
    bad = tmp_path / "gen.mp4"
    bad.write_bytes(b"not a video" * 20)
    with pytest.raises(EvaluationError, match="generated video: cannot decode"):
        score_files(good, bad, "a cat", ScorerConfig(min_motion=0.5))
    one = videoio.write_video(tmp_path / "one.mp4", gen[:1])
    with pytest.raises(EvaluationError, match="single frame"):
        score_files(good, one, "a cat", ScorerConfig(min_motion=0.5))
    with pytest.raises(EvaluationError, match="reference video: video not found"):
        score_files(tmp_path / "missing.mp4", good, "a cat", ScorerConfig(min_motion=0.5))


def test_reference_features_from_a_folder(tmp_path, clips):
    ref, gen = clips
    videoio.write_video(tmp_path / "a.mp4", ref)
    videoio.write_video(tmp_path / "b.gif", gen)
    frames = tmp_path / "c"
    frames.mkdir()
    for i, f in enumerate(ref[:4]):
        iio.imwrite(frames / f"{i:05d}.png", f)
    (tmp_path / "notes.txt").write_text("ignored")
    cfg = ScorerConfig(min_motion=0.5)
    feats = reference_features(tmp_path, cfg, frames_per_video=3, size=(64, 64))
    assert feats.shape == (9, 384) and feats.dtype == np.float32 and np.isfinite(feats).all()
    gen_feats = get_scorer(cfg).score(gen, "a cat")["fid_features"]
    assert np.isfinite(fid_from_features(gen_feats, feats))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvaluationError, match="holds no videos"):
        reference_features(empty, cfg)
