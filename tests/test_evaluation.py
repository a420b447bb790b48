"""evaluation/: configs and backbones, CLIP metrics, FID/KID, the scorer, the CLI, and bad inputs.

Offline: seeded random CLIP weights and the LK tracker (HF_HUB_OFFLINE=1, no downloads).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import time

import imageio.v3 as iio
import numpy as np
import pytest

import videoio
from evaluation import (EvaluationError, ScorerConfig, fid_from_features, get_scorer, kid_from_features,
                        reference_features, score_files)
from evaluation import clip as clipm
from evaluation.cli import main as cli_main

from vocabulary import SAMPLE_METRICS as METRICS


@pytest.fixture(scope="module")
def scorer():
    return get_scorer(ScorerConfig(min_motion=0.5))


@pytest.fixture(scope="module")
def clips():
    ref = videoio.moving_shape_video(10, 64, 64, direction=(1, 0))
    gen = videoio.moving_shape_video(8, 64, 64, direction=(1, 0), shape="circle", color=(40, 200, 60),
                                     texture_seed=2)
    return ref, gen


# ------------------------------------------------------------------------------------ configuration
def test_config_from_names_parses_model_and_tag():
    cfg = ScorerConfig.from_names(clip="ViT-B-32/laion2b_s34b_b79k", tracker="cotracker3", min_motion=1.0)
    assert (cfg.clip, cfg.clip_pretrained, cfg.tracker, cfg.tracker_checkpoint) == \
        ("ViT-B-32", "laion2b_s34b_b79k", "cotracker3", None)
    cfg = ScorerConfig.from_names(clip="ViT-B-32//ckpts/clip.bin", tracker="cotracker3//ckpts/scaled_offline.pth",
                                  fid="inception")
    assert cfg.clip_pretrained == "/ckpts/clip.bin" and cfg.tracker_checkpoint == "/ckpts/scaled_offline.pth"
    assert ScorerConfig.from_names(clip="ViT-S-32/random").clip_pretrained is None
    assert ScorerConfig.from_names(clip="hf-hub:org/repo").clip == "hf-hub:org/repo"
    assert hash(ScorerConfig()) == hash(ScorerConfig())  # usable as a cache key


@pytest.mark.parametrize("kwargs, match", [
    (dict(clip="ViT-Q-99"), "unknown CLIP backbone 'ViT-Q-99'"),
    (dict(tracker="raft"), "unknown tracker 'raft'"),
    (dict(fid_features="swav"), "unknown FID feature extractor 'swav'"),
    (dict(tracker="lk", tracker_checkpoint="x.pth"), "takes no checkpoint"),
    (dict(grid_size=1), "grid_size"),
    (dict(min_motion=-1), "min_motion"),
    (dict(fid_frames=-1), "fid_frames"),  # 0 is valid: every frame
])
def test_bad_config_names_the_problem(kwargs, match):
    with pytest.raises(EvaluationError, match=match):
        ScorerConfig(**kwargs)


def test_missing_pretrained_weights_fail_at_once_offline():
    t0 = time.perf_counter()
    with pytest.raises(EvaluationError, match="HF_HUB_OFFLINE") as info:
        get_scorer(ScorerConfig.from_names(clip="ViT-B-32/laion2b_s34b_b79k"))
    assert "clip_pretrained=/path" in str(info.value)  # says how to provide it
    with pytest.raises(EvaluationError, match="neither an open_clip tag"):
        get_scorer(ScorerConfig(clip_pretrained="no-such-tag"))
    with pytest.raises(EvaluationError, match="CoTracker3 is not in the torch hub cache"):
        get_scorer(ScorerConfig(tracker="cotracker3"))
    with pytest.raises(EvaluationError, match="CoTracker checkpoint not found"):
        get_scorer(ScorerConfig(tracker="cotracker3", tracker_checkpoint="/nonexistent/scaled_offline.pth"))
    with pytest.raises(EvaluationError, match="Inception"):
        get_scorer(ScorerConfig(fid_features="inception"))
    assert time.perf_counter() - t0 < 30


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


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_prints_metrics_and_backbones(tmp_path, clips, capsys):
    ref, gen = clips
    r = videoio.write_video(tmp_path / "ref.mp4", ref)
    g = videoio.write_video(tmp_path / "gen.mp4", gen[:6, :48])  # other length and size
    assert cli_main(["score", "--reference", str(r), "--generated", str(g), "--prompt", "a green circle",
                     "--json", "--min-motion", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in METRICS:
        assert isinstance(out[k], float)
    assert out["clip_backbone"] == "ViT-S-32/random-seed0" and out["pretrained_metrics"] is False
    assert out["fid_features_shape"] == [6, 384] and out["generated_shape"] == "6x48x64"  # every frame
    assert cli_main(["score", "--reference", str(r), "--generated", str(g), "--prompt", "a green circle"]) == 0
    text = capsys.readouterr().out
    assert "motion_fidelity_two_way" in text and "random weights" in text and "plumbing" in text
    assert cli_main(["score", "--reference", str(r), "--generated", str(g), "--prompt", " "]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert cli_main(["score", "--reference", str(r), "--generated", str(g), "--prompt", "x",
                     "--clip", "ViT-Q-99"]) == 2
    assert "unknown CLIP backbone" in capsys.readouterr().err
