"""evaluation/config.py: backbones by name, bad names named, missing weights fail at once offline."""

import time

import pytest

from evaluation import EvaluationError, ScorerConfig, get_scorer


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
