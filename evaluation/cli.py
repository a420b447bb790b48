"""`motion-sweep score` (also `python -m evaluation score`): score a generated video file.

    motion-sweep score --reference REF.mp4 --generated GEN.mp4 --prompt "edit prompt" [--json]

Prints every metric and the backbones that made it. `add_score_arguments` / `run_score` let another
CLI mount the same command.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vocabulary import SAMPLE_METRICS

from .config import EvaluationError, ScorerConfig


def add_score_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--reference", required=True, help="reference video (mp4/gif/webm/... or a folder of frames)")
    p.add_argument("--generated", required=True, help="generated video to score (any size and length)")
    p.add_argument("--prompt", required=True, help="the edit prompt the video was generated from")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--clip", default="ViT-S-32",
                   help="open_clip backbone as model[/tag-or-path], e.g. ViT-B-32/laion2b_s34b_b79k; "
                        "no tag = seeded random weights (default: %(default)s)")
    p.add_argument("--tracker", default="lk", help="lk | cotracker3[/checkpoint] (default: %(default)s)")
    p.add_argument("--fid", default="auto", help="auto | clip | inception[/weights] (default: %(default)s)")
    p.add_argument("--grid-size", type=int, default=55, help="tracking grid side, clipped to fit (default: 55)")
    p.add_argument("--min-motion", type=float, default=0.0,
                   help="foreground filter: keep tracks moving faster than this many px/frame in 75%% of steps "
                        "(default: 0, keep all = the published score)")
    p.add_argument("--fid-frames", type=int, default=0,
                   help="frames whose FID features are kept, evenly spaced (default: 0 = every frame)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of random CLIP weights")
    return p


def format_result(result: dict[str, Any]) -> str:
    """A human-readable table of a score_files() result."""
    lines = []
    terms = [(name, result.get(f"motion_{name}")) for name in ("camera", "objects")]
    for key in SAMPLE_METRICS:
        v = result.get(key)
        lines.append(f"{key:<26}{'n/a' if v is None else f'{v:.4f}'}")
        if key == "motion_fidelity" and any(t is not None for _, t in terms):  # the mean of the terms that apply
            lines.append(f"{'  its terms':<26}" + ", ".join(f"{name} {'n/a' if t is None else f'{t:.4f}'}"
                                                           for name, t in terms))
    if result.get("unavailable"):
        lines.append(f"{'not computed':<26}{result['unavailable']}")
    feats = result.get("fid_features")
    if feats is not None:
        lines.append(f"{'fid_features':<26}{feats.shape[0]}×{feats.shape[1]} (FID/KID need a group of clips)")
    lines.append("")
    lines.append(f"clip       {result['clip_backbone']} ({'pretrained' if result['clip_pretrained'] else 'random weights'})")
    lines.append(f"tracker    {result['tracker']} {result.get('tracker_checkpoint') or ''}".rstrip()
                 + f", grid {result.get('motion_grid') or '-'}² of {result['grid_size']}², filter {result['motion_filter']}"
                 + (f", tracks {result['motion_tracks']}/{result['motion_tracks_reference']} (gen/ref)"
                    if result.get("motion_tracks") is not None else ""))
    lines.append(f"fid        {result['fid_backbone']}")
    lines.append(f"inputs     generated {result['generated_shape']}, reference {result['reference_shape']} (T×H×W)")
    if not result["pretrained_metrics"]:
        lines.append("NOTE       random/untrained backbone weights: these numbers test plumbing, not quality")
    return "\n".join(lines)


def run_score(args: argparse.Namespace) -> int:
    from .scorer import score_files

    try:
        cfg = ScorerConfig.from_names(clip=args.clip, tracker=args.tracker, fid=args.fid, grid_size=args.grid_size,
                                      min_motion=args.min_motion, fid_frames=args.fid_frames, device=args.device,
                                      seed=args.seed)
        result = score_files(args.reference, args.generated, args.prompt, cfg)
    except EvaluationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        feats = result.pop("fid_features")
        result["fid_features_shape"] = list(feats.shape)
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description="Score generated videos.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_score_arguments(sub.add_parser("score", help="score one generated video against its reference"))
    args = parser.parse_args(argv)
    return run_score(args)
