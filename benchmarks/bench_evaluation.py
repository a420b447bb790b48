"""Seconds to score one generated clip on CPU with the offline defaults, split by metric.

    HF_HUB_OFFLINE=1 python benchmarks/bench_evaluation.py [--frames 24] [--size 256] [--repeats 3]
                                                          [--threads N] [--json]

Clip: `videoio.moving_shape_video` (24 frames, 256×256 by default) scored against a reference of the
same size and length. Each stage is timed on its own `--repeats` times after one warm-up (backbone
loading is reported separately, once); the table shows the median and the minimum.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import videoio  # noqa: E402
from evaluation import ScorerConfig, get_scorer  # noqa: E402
from evaluation import clip as clipm  # noqa: E402
from evaluation import motion as motionm  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--min-motion", type=float, default=0.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t, s = args.frames, args.size
    ref = videoio.moving_shape_video(t, s, s, direction=(1, 0), speed=4, size=s // 4)
    gen = videoio.moving_shape_video(t, s, s, direction=(1, 0), speed=4, size=s // 4, shape="circle",
                                     color=(40, 200, 60), texture_seed=3)
    prompt = "a green ball rolling across a table"

    t0 = time.perf_counter()
    scorer = get_scorer(ScorerConfig(min_motion=args.min_motion))
    load = time.perf_counter() - t0

    rows: list[tuple[str, float, float]] = []

    def stage(name, fn):
        med, best, out = timed(fn, args.repeats)
        rows.append((name, med, best))
        return out

    gen_emb = stage("CLIP image embeddings, generated (text similarity + temporal consistency)",
                    lambda: scorer.embed(gen))
    text_emb = stage("CLIP text embedding (text similarity; cached per prompt in score())",
                     lambda: clipm.encode_text(scorer.clip, prompt))
    stage("text similarity + temporal consistency from embeddings",
          lambda: (clipm.text_similarity(gen_emb, text_emb), clipm.temporal_consistency(gen_emb)))
    ref_emb = stage("CLIP image embeddings, reference (appearance leakage)", lambda: scorer.embed(ref))
    stage("appearance leakage from embeddings", lambda: clipm.appearance_leakage(gen_emb, ref_emb))
    gen_tracks, grid = stage("tracking, generated (LK, motion fidelity)", lambda: scorer.track(gen))
    ref_tracks, _ = stage("tracking, reference (LK, motion fidelity)", lambda: scorer.track(ref))
    res = stage(f"DMT matrix + both scores ({grid}×{grid} = {grid * grid} tracks each)",
                lambda: motionm.motion_fidelity(gen_tracks, ref_tracks, args.min_motion))
    stage("FID features (CLIP, reuses embeddings)", lambda: scorer.fid_features(gen, gen_emb))

    def cold():
        scorer._reference_cache.clear()  # nothing reused: the cost of one clip scored alone
        scorer._text_cache.clear()
        return scorer.score(gen, prompt, ref)

    full = stage("whole Scorer.score(generated, prompt, reference), nothing cached", cold)
    stage("whole Scorer.score, reference tracks/embeddings + prompt cached (a sweep's later clips)",
          lambda: scorer.score(gen, prompt, ref))

    info = {
        "clip": f"{t} frames {s}x{s}", "device": "cpu", "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "backbones": scorer.describe(), "load_seconds": load, "motion_fidelity": res.score,
        "score_split": {k: full[k] for k in ("seconds_clip", "seconds_motion", "seconds_fid")},
        "stages": [{"stage": n, "median_s": m, "min_s": b} for n, m, b in rows],
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"# evaluation benchmark: {info['clip']}, CPU, torch threads {info['torch_threads']} "
          f"of {info['cpu_count']} cores, median/min of {args.repeats}")
    print(f"backbones: {scorer.describe()['clip_backbone']}, tracker lk, grid {grid}², "
          f"filter {scorer.describe()['motion_filter']}; first get_scorer() {load:.2f} s (import + build)")
    print()
    print("| stage | median s | min s |")
    print("|---|---:|---:|")
    for n, m, b in rows:
        print(f"| {n} | {m:.3f} | {b:.3f} |")
    print()
    print("score() split of the last uncached run: " + ", ".join(f"{k} {v:.3f}" for k, v in info["score_split"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
