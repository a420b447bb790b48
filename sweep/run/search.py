"""Search mode: a spec's `search:` block as Tune's searcher, ASHA scheduler and trials, and its summary.

    search:
      objective: {metric: motion_fidelity, penalty: {appearance_leakage: 0.5}}
      space: {inversion.lr: {loguniform: [0.002, 0.05]}, inversion.steps: [200, 300, 400], qk: [1d, 2d]}
      algorithm: random            # or optuna (pip install 'motion-sweep[search]')
      scheduler: {asha: {rungs: [100, 200, 300, 400]}}
      samples: 32
      eval: {prompts: 2, seeds: 1}

A sample is planned like a grid point (`sample_spec` → `sweep.run.plan.make_plan`, so its keys are the grid's and
results are shared through the store) over the eval set: the first `prompts` prompts of every video ×
`seeds` generation seeds, one inversion per video, all advancing together in one Tune trial. Its checkpoint
steps are the rungs (≤ its steps) and its last step; at each the eval set is generated, scored, written to
`samples` (column `search` = the Tune trial id) and the objective is reported; ASHA stops the weaker samples.

The summary (`write_search_summary`) goes to `<sweep>/search.parquet` (one row per sample, `SEARCH_SCHEMA`) and
`<sweep>/search.json` (best sample and step, compute saved by early stopping).

Importing this module pulls in neither torch nor ray (the ray imports are inside the functions).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa

from vocabulary import DESIGN_AXES, SAMPLE_METRICS, objective_formula, objective_value

from ..results.schemas import SEARCH_SCHEMA
from ..results.store import Store
from ..results.tables import code_version, error_line, load
from ..spec import LIST_SETTINGS, Spec
from .plan import DDIMInversion, Trial, content_key, make_plan
from .trial import row_summary


class SearchError(ValueError):
    """A search that cannot run as asked (e.g. its algorithm's package is not installed)."""




# --------------------------------------------------------------------------------------------------
# The space, the searcher, the scheduler.

def tune_space(spec: Spec) -> dict:
    """The searched settings as Tune domains (randint bounds are inclusive in the spec)."""
    from ray import tune

    out = {}
    for key, domain in spec.search.space.items():
        kind, values = next(iter(domain.items()))
        if kind == "choice":
            out[key] = tune.choice(values)
        elif kind == "loguniform":
            out[key] = tune.loguniform(*values)
        elif kind == "uniform":
            out[key] = tune.uniform(*values)
        else:
            out[key] = tune.randint(values[0], values[1] + 1)  # Tune's upper bound is exclusive
    return out


def base_point(spec: Spec) -> dict:
    """Every setting a sample has, before the searched ones are drawn: the first value of each axis, the
    spec's inversion:/generation: blocks. Flat keys (`qk`, `inversion.lr`), what Tune's table shows."""
    axes = spec.axis_values()
    point: dict[str, Any] = {k: axes[k][0] for k in DESIGN_AXES}
    for stage, block in (("inversion", spec.inversion), ("generation", spec.generation)):
        for name, value in block.model_dump().items():
            key = f"{stage}.{name}"
            if name in ("checkpoints", "fps") or value is None and key not in axes:
                continue  # checkpoints are the rungs; fps changes no sample
            point[key] = axes.get(key, [value])[0]
    return point


def param_space(spec: Spec) -> dict:
    return {**base_point(spec), **tune_space(spec)}


def make_searcher(spec: Spec):
    """`random`: Tune's BasicVariantGenerator; `optuna`: OptunaSearch (the optional extra `search`)."""
    import importlib.util

    search = spec.search
    if search.algorithm == "optuna":
        if importlib.util.find_spec("optuna") is None:
            raise SearchError("search.algorithm optuna needs the optuna package: pip install 'motion-sweep[search]' "
                              "(or pip install optuna), or use algorithm: random")
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=search.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=search.seed)


def asha_plan(spec: Spec) -> Optional[dict]:
    """How ASHA's geometric rungs land on the spec's rungs: {time_attr, grace_period, max_t, reduction_factor,
    times: {step: ASHA time}}; None without a scheduler.

    Rungs r0·f^k with an integer ratio f: ASHA's clock is the inversion step itself. Any other rungs: each
    rung k reports `asha_time = f^k` (f = reduction_factor, default 2) and ASHA runs on that clock, so its
    milestones are exactly the given steps whatever their spacing (ASHA has no milestone list of its own).
    """
    if not spec.search.rungs:
        return None
    rungs = spec.search.rungs
    asked = spec.search.scheduler.asha.reduction_factor
    ratio = rungs[1] / rungs[0] if len(rungs) > 1 else None
    geometric = ratio is not None and ratio.is_integer() and all(
        rungs[k] == rungs[0] * int(ratio) ** k for k in range(len(rungs)))
    factor = float(asked or (ratio if geometric else 2.0))
    if geometric and factor == ratio:
        plan = {"time_attr": "inversion_step", "grace_period": rungs[0], "max_t": rungs[-1],
                "times": {r: float(r) for r in rungs}}
    else:
        plan = {"time_attr": "asha_time", "grace_period": 1, "max_t": factor ** (len(rungs) - 1),
                "times": {r: factor ** k for k, r in enumerate(rungs)}}
    return {**plan, "reduction_factor": factor}


def make_scheduler(spec: Spec):
    """ASHA (one bracket) on the objective, or None (every sample runs to its end)."""
    plan = asha_plan(spec)
    if plan is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # max_t a hair above the last rung: ASHA counts its rungs with a float log; the top rung must be one of them
    return ASHAScheduler(time_attr=plan["time_attr"], grace_period=plan["grace_period"],
                         max_t=plan["max_t"] * (1 + 1e-9), reduction_factor=plan["reduction_factor"], brackets=1)


# --------------------------------------------------------------------------------------------------
# One sample → trials (planned like a grid point).

def eval_steps(spec: Spec, steps: int) -> list[int]:
    """The checkpoint steps a sample of `steps` steps is scored at: its rungs and its last step (without a
    scheduler, the spec's checkpoints)."""
    rungs = spec.search.rungs
    if not rungs:
        return spec.checkpoints_for(steps)
    return sorted({r for r in rungs if r <= steps} | {steps})


def sample_spec(spec: Spec, config: dict) -> Spec:
    """A one-point spec for a sample: the searched values as single-value axes (so variant ids name them and
    rows carry `<axis>_applied`), the other settings in the blocks, the eval set as data, the rungs as
    checkpoints. Planned with `make_plan` it gives the same content keys as that point of a grid."""
    search = spec.search
    searched = set(search.space)
    raw = spec.model_dump(mode="json", exclude={"search", "axes", "tune", "tracking"})
    for key, value in config.items():
        stage, dot, name = key.partition(".")
        if dot and stage in ("inversion", "generation") and key not in searched and name not in LIST_SETTINGS:
            raw[stage][name] = value
    axes: dict[str, list] = {k: [config[k]] for k in DESIGN_AXES}
    axes.update({k: [config[k]] for k in searched if "." in k})
    steps = int(config.get("inversion.steps", raw["inversion"]["steps"]))
    raw["inversion"]["steps"] = steps
    raw["inversion"]["checkpoints"] = eval_steps(spec, steps)
    raw["data"] = [{**item, "prompts": item["prompts"][:search.eval.prompts]} for item in raw["data"]]
    if search.eval.seeds > 1:  # generation seeds beside the sample's own (whose keys the grid shares)
        first = spec.generation.seed if spec.generation.seed is not None else config["seed"]
        axes["generation.seed"] = [first + i for i in range(search.eval.seeds)]
    raw["axes"] = axes
    return Spec.model_validate(raw, context={"check_files": False})


def sample_trials(spec: Spec, config: dict, fingerprints: dict[str, str]
                  ) -> tuple[list[Trial], dict[str, DDIMInversion]]:
    """The trials (one per video) and DDIM inversions of one sample."""
    plan = make_plan(sample_spec(spec, config), fingerprints)
    return plan.trials, {d.ddim_key: d for d in plan.ddim_inversions}


def search_fingerprint(spec: Spec) -> str:
    """What a search's results depend on (not where they go or how Tune runs it): a restored or finished
    search is reused only when this matches."""
    return content_key(spec.model_dump(mode="json", exclude={"storage", "resources", "tracking", "tune"}))


# --------------------------------------------------------------------------------------------------
# The summary.

def write_search_summary(spec: Spec, store: Store, results, experiment: str, experiment_path: str,
                         seconds: float) -> dict:
    """Write `<sweep>/search.parquet` and `<sweep>/search.json` from the ResultGrid and the samples rows;
    returns the JSON summary."""
    name = spec.name
    objective = spec.search.objective.model_dump()
    better = max if objective["mode"] == "max" else min
    by_search: dict[str, dict[int, list[dict]]] = {}
    try:
        samples = load(store.uri_of(name), "samples")
    except FileNotFoundError:
        samples = None
    if samples is not None and "search" in samples.column_names:
        cols = ["search", "checkpoint_step_applied", "status", "inversion_key", *SAMPLE_METRICS]
        for row in samples.select([c for c in cols if c in samples.column_names]).to_pylist():
            if row.get("search"):
                by_search.setdefault(row["search"], {}).setdefault(row["checkpoint_step_applied"], []).append(row)

    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(str(result.path)).name
        config = result.config or {}
        steps_max = int(config.get("inversion.steps", spec.inversion.steps))
        evaluated = by_search.get(trial_id, {})
        rungs, objectives = [], []
        for step in sorted(evaluated):
            rungs.append(int(step))
            objectives.append(objective_value(row_summary(evaluated[step]), objective))
        steps_run = int(metrics.get("inversion_step") or (max(rungs) if rungs else 0))
        keys = sorted({r["inversion_key"] for step_rows in evaluated.values() for r in step_rows
                       if r.get("inversion_key")})
        # ties go to the earlier step (the cheaper embeddings)
        best = better(zip(objectives, rungs), key=lambda p: (p[0], -p[1] if objective["mode"] == "max" else p[1])
                      ) if objectives else (None, None)
        searched = {k: config.get(k) for k in spec.search.space}
        rows.append({
            "sweep": name, "search": trial_id, "experiment": experiment, "config": json.dumps(searched),
            "status": "error" if result.error is not None else "ok",
            "error": error_line(result.error) if result.error is not None else None,
            "steps_max": steps_max, "steps_run": steps_run,
            "stopped_early": result.error is None and steps_run < steps_max,
            "rungs": rungs, "objectives": objectives, "best_step": best[1], "best_objective": best[0],
            "is_best": False, "videos": len(spec.data), "inversion_keys": keys,
            "seconds": float(metrics.get("time_total_s") or 0.0), "code_version": code_version(),
            "created_at": dt.datetime.now(dt.timezone.utc), **searched})
    rows.sort(key=lambda r: r["search"])
    scored = [r for r in rows if r["best_objective"] is not None and math.isfinite(r["best_objective"])]
    winner = better(scored, key=lambda r: r["best_objective"]) if scored else None
    if winner is not None:
        winner["is_best"] = True

    videos = len(spec.data)
    run_steps = sum(r["steps_run"] for r in rows) * videos
    full_steps = sum(r["steps_max"] for r in rows) * videos
    summary = {
        "sweep": name, "experiment": experiment, "experiment_path": experiment_path,
        "algorithm": spec.search.algorithm, "objective": objective, "space": spec.search.space,
        "scheduler": {"asha": {k: v for k, v in (asha_plan(spec) or {}).items() if k != "times"}
                      | {"rungs": spec.search.rungs}} if spec.search.rungs else None,
        "samples": spec.search.samples, "trials": len(rows),
        "stopped_early": sum(r["stopped_early"] for r in rows), "errors": sum(r["status"] == "error" for r in rows),
        "best": None if winner is None else {
            "search": winner["search"], "config": json.loads(winner["config"]), "step": winner["best_step"],
            "objective": winner["best_objective"], "inversion_keys": winner["inversion_keys"],
            "embeddings": [store.uri_of(store.inversion_step_path(k, winner["best_step"]))
                           for k in winner["inversion_keys"]]},
        "compute": {"inversion_steps_run": run_steps, "inversion_steps_to_end": full_steps,
                    "fraction_run": run_steps / full_steps if full_steps else None, "seconds": seconds},
    }
    store.write_parquet(f"{name}/search.parquet", search_table(rows))
    store.write_json(f"{name}/search.json", summary)
    return summary


def search_table(rows: list[dict], schema: pa.Schema = SEARCH_SCHEMA) -> pa.Table:
    """The search table of summary rows: the schema's columns first (typed), then the searched settings' columns
    (types inferred)."""
    arrays = [pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema]
    fields = list(schema)
    for key in [k for k in (rows[0] if rows else {}) if k not in schema.names]:
        arr = pa.array([r.get(key) for r in rows])
        arrays.append(arr)
        fields.append(pa.field(key, arr.type, metadata={"doc": "searched setting: the sampled value"}))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def format_search(summary: dict) -> str:
    """The lines `motion-sweep run` / `demo --search` print."""
    lines = [f"search {summary['experiment']}: {summary['trials']} samples ({summary['algorithm']}), "
             f"{summary['stopped_early']} stopped early, {summary['errors']} failed; objective "
             f"{objective_formula(summary['objective'])}"]
    best = summary.get("best")
    if best:
        lines.append(f"  best: {best['config']} at step {best['step']}: objective {best['objective']:.4f} "
                     f"(trial {best['search']})")
    c = summary["compute"]
    if c.get("fraction_run") is not None:
        lines.append(f"  compute: {c['inversion_steps_run']} inversion steps of {c['inversion_steps_to_end']} "
                     f"without early stopping ({c['fraction_run']:.0%}), {c['seconds']:.1f} s")
    return "\n".join(lines)
