"""Planned vs naive GPU work for the paper's setting (no GPU needed: this counts, it does not run).

Setting: ZeroScope preset, 22 reference videos × 3 edit prompts (the paper's 66 pairs), the seed ablation
grid (qk 1d/2d × v 2d/1d × remove none/qk/v × debias difference/normalize/none × seed 0 = 36 points per
pair), checkpoints [250, 400] of a 400-step inversion, 50 DDIM inversion steps, 30 denoising steps.

"Naive" is one Tune trial per grid point: each point DDIM-inverts its video, optimises its own
embeddings for 400 steps and generates once per checkpoint. "Planned" is what `sweep.run.plan` schedules:
one DDIM inversion per video, one optimisation per distinct inversion key, one generation per distinct
canonical sample.

    python benchmarks/bench_plan.py            # table
    python benchmarks/bench_plan.py --json     # the numbers as JSON
    python benchmarks/bench_plan.py --full     # also remove=both and debias=drop (the complete ablation)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sweep.demo import paper_scale_spec
from sweep.run.plan import make_plan, plan_summary
from vocabulary import DEBIAS_MODES, REMOVE, SEED_GRID

FULL_GRID = {**SEED_GRID, "remove": list(REMOVE), "debias": list(DEBIAS_MODES)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--full", action="store_true", help="add remove=both and debias=drop to the grid")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        spec = paper_scale_spec(Path(tmp), FULL_GRID if args.full else SEED_GRID)
        start = time.perf_counter()
        plan = make_plan(spec)
        plan_seconds = time.perf_counter() - start
        summary = plan_summary(plan)
    planned, naive = summary["work"]["planned"], summary["work"]["naive"]
    result = {"grid": "full" if args.full else "seed", "plan_seconds": round(plan_seconds, 3),
              **{k: summary[k] for k in ("grid_points", "canonical_variants", "variants", "trials")},
              "planned": planned, "naive": naive,
              "saving": {k: round(naive[k] / planned[k], 2) for k in planned if planned[k]}}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"paper setting, {result['grid']} grid: 22 videos × 3 prompts, {summary['axis_points']} grid points per pair,"
          f" checkpoints [250, 400]")
    print(f"grid points {summary['grid_points']}, canonical (variant, video, prompt) {summary['canonical_variants']}"
          f" ({summary['variants']} variants), Tune trials {summary['trials']}; planned in {plan_seconds:.2f} s")
    print(f"{'':<28}{'planned':>12}{'naive':>12}{'naive/planned':>15}")
    for key, label in (("ddim_inversions", "DDIM inversions"), ("ddim_steps", "  DDIM inversion steps"),
                       ("inversions", "embedding optimisations"), ("optimisation_steps", "  optimisation steps"),
                       ("generations", "generations"), ("denoising_steps", "  denoising steps")):
        ratio = f"{naive[key] / planned[key]:.1f}×" if planned[key] else "–"
        print(f"{label:<28}{planned[key]:>12,}{naive[key]:>12,}{ratio:>15}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
