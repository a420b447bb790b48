"""The sweep on this machine: demo wall time (cold) against its compute, and how well a tiny sweep keeps the Ray
slots busy.

    python benchmarks/bench_sweep.py            # both
    python benchmarks/bench_sweep.py --skip-demo

1. `motion-sweep demo` in a fresh process with an empty model cache and storage (cold: Ray start, worker imports,
   model loads, the report, everything), timed from outside, beside its summed in-trial compute / slots.
2. A 3-video demo grid (24 Tune trials, 60 generations) on a local Ray with 2 one-CPU slots: the ratio of the
   summed in-trial compute (what each trial reports as trial_seconds) to the Tune phase's wall time × slots.
   1.0 would mean no scheduling, start-up or I/O overhead at all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def demo_cold(slots: int = 2) -> dict:
    """`motion-sweep demo` cold, timed from outside, beside its compute: the summed in-trial seconds (each trial's
    last result in Tune's files) over the slots. What is left is the overhead the project controls."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MOTION_SWEEP_CACHE": str(Path(tmp) / "cache")}
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "sweep.cli", "demo", "--storage", str(Path(tmp) / "out"),
                            "--num-cpus", str(slots)], cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"demo failed:\n{r.stderr[-3000:]}")
        compute = 0.0
        for result in Path(tmp, "out", "demo", "tune", "demo").glob("*/result.json"):
            last = json.loads(result.read_text().strip().splitlines()[-1])
            compute += last.get("trial_seconds", 0.0)
        run_line = next(line for line in r.stderr.splitlines() if line.startswith("demo: "))
    per_slot = compute / slots
    return {"demo_cold_wall_s": round(wall, 1), "demo_summed_trial_s": round(compute, 1), "slots": slots,
            "demo_compute_per_slot_s": round(per_slot, 1), "demo_overhead_s": round(wall - per_slot, 1),
            "demo_wall_over_compute": round(wall / per_slot, 2), "demo_run_line": run_line}


def utilisation(slots: int = 2) -> dict:
    import videoio
    from sweep.demo import demo_spec
    from sweep.run.preflight import init_ray
    from sweep.run.runner import run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        spec = demo_spec(tmp, name="bench", preset="tiny")
        extra = videoio.write_video(Path(tmp) / "demo-videos" / "square-diagonal.mp4",
                                    videoio.moving_shape_video(12, 64, 64, direction=(1.0, 1.0), texture_seed=7))
        data = spec.model_dump(mode="json")
        data["data"].append({"video": str(extra), "source_prompt": "a red square slides down and right",
                             "prompts": ["a toy car drives down a slope"]})
        spec = type(spec).model_validate(data)
        init_ray("local", num_cpus=slots)
        summary = run_sweep(spec, verbose=0)
        import ray

        ray.shutdown()
    busy = sum(summary.trial_seconds.values())
    return {"trials": summary.ran, "failed": len(summary.failed), "slots": slots,
            "tune_wall_s": round(summary.fit_seconds, 1), "summed_trial_s": round(busy, 1),
            "utilisation": round(busy / (summary.fit_seconds * slots), 3), "total_wall_s": round(summary.seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-utilisation", action="store_true")
    args = parser.parse_args()
    out = {}
    if not args.skip_demo:
        out.update(demo_cold())
    if not args.skip_utilisation:
        out.update(utilisation())
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
