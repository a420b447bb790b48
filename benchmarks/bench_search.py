"""Search with ASHA: the compute early stopping saves, against the same samples run to the end.

    HF_HUB_OFFLINE=1 python benchmarks/bench_search.py                 # 16 samples, rungs 4 8 16 32
    HF_HUB_OFFLINE=1 python benchmarks/bench_search.py --samples 8 --rungs 4 8 16 --json

The same search twice on a local Ray (tiny preset, one synthetic video, eval set 1 prompt × 1 seed, random
search over the learning rate and the MQK design with a fixed seed, so both runs draw the same samples):

1. with ASHA at the rungs (the scheduler stops the weaker samples);
2. without a scheduler: every sample runs to the last rung, scored at the same checkpoint steps.

Each run has its own storage (an empty store: nothing is reused between them). Reported: inversion steps run
(what the trials reached, from search.json), the Tune phase's wall time, and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def run_search(storage: Path, samples: int, rungs: list[int], asha: bool) -> dict:
    from sweep.demo import demo_search_spec
    from sweep.run.runner import run_sweep

    spec = demo_search_spec(storage, name="bench-search", samples=samples, rungs=tuple(rungs))
    data = spec.model_dump(mode="json")
    data["inversion"]["checkpoints"] = list(rungs)  # without a scheduler: scored at the same steps
    if not asha:
        data["search"]["scheduler"] = None
    spec = type(spec).model_validate(data)
    t0 = time.perf_counter()
    summary = run_sweep(spec, verbose=0)
    wall = time.perf_counter() - t0
    if summary.failed:
        raise SystemExit(f"search failed: {summary.failed}")
    found = summary.search
    return {"inversion_steps": found["compute"]["inversion_steps_run"], "fit_s": round(summary.fit_seconds, 1),
            "wall_s": round(wall, 1), "stopped_early": found["stopped_early"],
            "best": {"config": found["best"]["config"], "step": found["best"]["step"],
                     "objective": round(found["best"]["objective"], 5)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--rungs", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import ray

    from sweep.run.preflight import init_ray

    init_ray("local", num_cpus=args.num_cpus)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with_asha = run_search(Path(tmp) / "asha", args.samples, args.rungs, asha=True)
            to_end = run_search(Path(tmp) / "to-end", args.samples, args.rungs, asha=False)
    finally:
        ray.shutdown()
    out = {"samples": args.samples, "rungs": args.rungs, "asha": with_asha, "to_end": to_end,
           "steps_ratio": round(with_asha["inversion_steps"] / to_end["inversion_steps"], 3),
           "fit_time_ratio": round(with_asha["fit_s"] / to_end["fit_s"], 3)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.samples} samples, rungs {args.rungs}, {args.num_cpus} CPUs")
    print(f"{'':<22}{'ASHA':>10}{'to the end':>12}{'ratio':>8}")
    print(f"{'inversion steps':<22}{with_asha['inversion_steps']:>10}{to_end['inversion_steps']:>12}"
          f"{out['steps_ratio']:>8.2f}")
    print(f"{'Tune phase (s)':<22}{with_asha['fit_s']:>10}{to_end['fit_s']:>12}{out['fit_time_ratio']:>8.2f}")
    print(f"{'stopped early':<22}{with_asha['stopped_early']:>10}{to_end['stopped_early']:>12}")
    print(f"best with ASHA: {with_asha['best']}; to the end: {to_end['best']}")


if __name__ == "__main__":
    main()
