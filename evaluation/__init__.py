"""Scoring generated videos: text similarity, temporal consistency, appearance leakage, motion
fidelity (DMT), and per-sample features for FID/KID.

Takes frames (uint8 [T, H, W, 3]) or video files and prompts; knows nothing of `model`, `sweep` or Ray.

    from evaluation import ScorerConfig, get_scorer
    scorer = get_scorer(ScorerConfig.from_names(clip="ViT-B-32/laion2b_s34b_b79k", tracker="cotracker3"))
    row = scorer.score(generated_frames, "a car drives on a road", reference=reference_frames)
    row.update(scorer.describe())

Offline defaults (ViT-S-32 with seeded random weights, Lucas–Kanade tracks, CLIP FID features) test the
plumbing; every result says which backbones made it and whether they were pretrained.
"""

from .config import EvaluationError, ScorerConfig
from .fid import fid_from_features, kid_from_features
from .motion import dmt_score, dmt_similarity, dmt_two_way, motion_fidelity
from .scorer import EVALUATION_VERSION, Scorer, get_scorer, reference_features, score_files

__all__ = [
    "EVALUATION_VERSION", "EvaluationError", "Scorer", "ScorerConfig", "dmt_score", "dmt_similarity", "dmt_two_way",
    "fid_from_features", "get_scorer", "kid_from_features", "motion_fidelity", "reference_features",
    "score_files",
]
