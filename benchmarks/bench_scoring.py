"""Seconds to score one generated clip on CPU with the offline tracker (LK), split by metric, per clip size.

    HF_HUB_OFFLINE=1 python benchmarks/bench_scoring.py [--frames 24] [--sizes 256x256 320x576]
                                                       [--repeats 3] [--threads N] [--json]

Sizes are HxW (320x576 is the paper's ZeroScope size). Clips: `videoio.moving_shape_video`, a textured
square moving across a textured background (the reference) and a circle of another colour and texture
on the same path (the generated clip), same size and length. Each stage is timed `--repeats` times after
one warm-up; the table shows the median and the minimum wall time and the median CPU time (all threads;
on a shared machine CPU time is the steadier figure). Backbones: `ScorerConfig()` (open_clip ViT-S-32 with
seeded random weights, LK on the DMT 55×55 grid clipped to the frame, CLIP features for FID).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

import videoio
from evaluation import ScorerConfig, get_scorer
from evaluation import clip as clipm
from evaluation import motion as motionm

PROMPT = "a green ball rolling across a table"


def timed(fn, repeats: int) -> tuple[dict, object]:
    out = fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"median_s": statistics.median(wall), "min_s": min(wall), "cpu_s": statistics.median(cpu)}, out


def clips(frames: int, h: int, w: int):
    side = min(h, w)
    speed = 0.5 * w / (frames - 1)  # the object crosses half the frame, whatever its size
    ref = videoio.moving_shape_video(frames, h, w, direction=(1, 0), speed=speed, size=side // 4)
    gen = videoio.moving_shape_video(frames, h, w, direction=(1, 0), speed=speed, size=side // 4, shape="circle",
                                     color=(40, 200, 60), texture_seed=3)
    return ref, gen


def bench_size(scorer, frames: int, h: int, w: int, repeats: int) -> dict:
    ref, gen = clips(frames, h, w)
    stages: list[tuple[str, str, dict]] = []

    def stage(name, metric, fn):
        t, out = timed(fn, repeats)
        stages.append((name, metric, t))
        return out

    gen_emb = stage(f"CLIP image embeddings, generated ({frames} frames)",
                    "text similarity, temporal consistency, FID features", lambda: scorer.embed(gen))
    text_emb = stage("CLIP text embedding (cached per prompt in score())", "text similarity",
                     lambda: clipm.encode_text(scorer.clip, PROMPT))
    ref_emb = stage(f"CLIP image embeddings, reference ({frames} frames; cached per reference)",
                    "appearance leakage", lambda: scorer.embed(ref))
    stage("cosines from the embeddings", "text similarity, temporal consistency, appearance leakage",
          lambda: (clipm.text_similarity(gen_emb, text_emb), clipm.temporal_consistency(gen_emb),
                   clipm.appearance_leakage(gen_emb, ref_emb)))
    gen_tracks, grid = stage("LK tracks, generated", "motion fidelity (all three)", lambda: scorer.track(gen))
    ref_tracks, _ = stage("LK tracks, reference (cached per reference)", "motion fidelity (all three)",
                          lambda: scorer.track(ref))
    res = stage(f"similarity matrix + masks + the three scores ({grid}² grid)", "motion fidelity (all three)",
                lambda: motionm.motion_fidelity(gen_tracks, ref_tracks))
    feats = stage("FID features (CLIP: reuse the embeddings)", "FID/KID", lambda: scorer.fid_features(gen, gen_emb))

    def cold():
        scorer._reference_cache.clear()  # nothing reused: the cost of one clip scored alone
        scorer._text_cache.clear()
        return scorer.score(gen, PROMPT, ref)

    full = stage("whole Scorer.score, nothing cached", "all", cold)
    stage("whole Scorer.score, reference + prompt cached (a sweep's later clips)", "all",
          lambda: scorer.score(gen, PROMPT, ref))
    return {
        "clip": f"{frames} frames {h}x{w}", "grid": grid, "tracks_visible": (res.visible_generated, res.visible_reference),
        "tracks_scored": (res.tracks_generated, res.tracks_reference), "motion_fidelity": res.score,
        "motion_fidelity_dmt": res.dmt, "fid_features_shape": list(feats.shape),
        "score_split": {k: full[k] for k in ("seconds_clip", "seconds_motion", "seconds_fid")},
        "stages": [{"stage": n, "metric": mt, **t} for n, mt, t in stages],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--sizes", nargs="+", default=["256x256", "320x576"], help="HxW")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    scorer = get_scorer(ScorerConfig())
    load = time.perf_counter() - t0
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    runs = [bench_size(scorer, args.frames, h, w, args.repeats) for h, w in sizes]
    info = {"device": "cpu", "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "load_average": os.getloadavg(),
            "backbones": scorer.describe(), "load_seconds": load, "runs": runs}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"# scoring benchmark: CPU, torch threads {info['torch_threads']} of {info['cpu_count']} cores, "
          f"load average {info['load_average'][0]:.1f}; median/min wall and median CPU of {args.repeats}")
    print(f"backbones: {info['backbones']['clip_backbone']}, tracker lk; first get_scorer() {load:.2f} s")
    for run in runs:
        print(f"\n## {run['clip']}: grid {run['grid']}², visible tracks gen/ref {run['tracks_visible']}, "
              f"moving {run['tracks_scored']}, motion_fidelity {run['motion_fidelity']:.3f} "
              f"(dmt {run['motion_fidelity_dmt']:.3f})\n")
        print("| stage | metric(s) | median s | min s | CPU s |")
        print("|---|---|---:|---:|---:|")
        for s in run["stages"]:
            print(f"| {s['stage']} | {s['metric']} | {s['median_s']:.3f} | {s['min_s']:.3f} | {s['cpu_s']:.3f} |")
        print("\nscore() split of the last uncached run: "
              + ", ".join(f"{k} {v:.3f}" for k, v in run["score_split"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
