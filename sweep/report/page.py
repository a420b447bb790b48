"""The facts the HTML page shows, as plain data for its template: the sweep's sizes, how the numbers were made
(provenance, compute spent and what planning saved, plan counts, the spec), the preference study's tables, the
search (`<sweep>/search.json` and search.parquet), the errors, and the rows of the summary, comparison and effects
tables formatted as `format` writes them. Nothing here computes a statistic.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from typing import Any, Optional, Sequence

import pyarrow as pa
import yaml

from sweep.results.schemas import describe_tables
from sweep.results.store import Store
from sweep.results.tables import load
from sweep.study import study_results
from vocabulary import METRICS, applied, objective_formula

from .compare import design_limits
from .effects import term_order
from .format import difference_ci, mean_ci, num, row_labels, stars
from .stats import STEP, best_rows, column, finite
from .summary import summary_min_videos

MAX_ERROR_ROWS = 500       #: the errors table lists at most this many (the tables hold them all)
#: Columns that say how the numbers were made (the samples table's own docs describe them).
PROVENANCE = ("preset", "base_model", "clip_backbone", "clip_pretrained", "tracker", "tracker_checkpoint",
              "fid_backbone", "pretrained_metrics", "evaluation_version", "motion_filter", "code_version", "device")


# --------------------------------------------------------------------------------------------------
# Facts about the sweep: sizes, provenance, compute, plan, spec, study.

def sizes(table: pa.Table, plans: dict[str, Optional[dict]], inversions: pa.Table) -> list[tuple[str, str]]:
    """(label, value) pairs: rows (ok, errors, of how many planned), variants, checkpoints, videos, prompts, seeds."""
    status = column(table, "status")
    planned = [p["summary"].get("samples") for p in plans.values() if p and p.get("summary")]

    def distinct(name: str) -> int:
        return len({v for v in column(table, name) if v is not None})

    rows = f"{table.num_rows:,}" + (f" of {sum(planned):,} planned" if planned and len(planned) == len(plans) else "")
    return [("samples (rows)", rows), ("ok", f"{status.count('ok'):,}"), ("errors", f"{status.count('error'):,}"),
            ("variants", str(distinct("variant"))), ("checkpoints", ", ".join(
                str(s) for s in sorted({s for s in column(table, STEP) if s is not None})) or "–"),
            ("videos", str(distinct("video"))), ("prompts", str(distinct("prompt"))),
            ("generation seeds", str(distinct("generation_seed"))),
            ("optimisation seeds", str(distinct(applied("seed")))),
            ("inversions", f"{inversions.num_rows:,}")]


def provenance(table: pa.Table) -> list[dict]:
    """How the numbers were made: each provenance column's distinct values with their row counts (ok rows)."""
    docs = describe_tables()["samples"]
    ok = [s == "ok" for s in column(table, "status")]
    out = []
    for name in PROVENANCE:
        if name not in table.column_names:
            continue
        counts = Counter(v for v, good in zip(column(table, name), ok) if good)
        if counts:
            out.append({"column": name, "doc": docs.get(name, ""),
                        "values": [("–" if v is None else str(v).lower() if isinstance(v, bool) else str(v), n)
                                   for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]})
    return out


def compute(table: pa.Table, inversions: pa.Table, plans: dict[str, Optional[dict]]) -> dict:
    """Device-hours spent (measured wall times of the rows, by device) and, per sweep with a plan.json, the
    *estimated* hours a naive sweep (one trial per grid point) would have taken: its optimisation and denoising
    step counts × the time per step measured here."""
    spent: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    reused = {t for t, c in zip(column(table, "trial_id"), column(table, "inversion_cached")) if c}
    inv = [r for r in inversions.to_pylist()  # embeddings taken from the store were not optimised by this sweep
           if r.get("cached") is not True and r.get("trial_id") not in reused]
    for r in inv:
        spent[r.get("device") or "unknown"]["optimisation"] += r.get("seconds") or 0.0
        spent[r.get("device") or "unknown"]["DDIM inversion"] += r.get("ddim_seconds") or 0.0
    cols = {c: column(table, c) for c in ("sweep", "device", "generate_seconds", "score_seconds", "trial_id",
                                          "invert_seconds")}
    for dev, g, s in zip(cols["device"], cols["generate_seconds"], cols["score_seconds"]):
        spent[dev or "unknown"]["generation"] += g or 0.0
        spent[dev or "unknown"]["scoring"] += s or 0.0
    if inversions.num_rows == 0:  # no inversions table: each trial's optimisation time is on its sample rows
        per_trial = {(t, d): x for t, d, x in zip(cols["trial_id"], cols["device"], cols["invert_seconds"])
                     if x and t not in reused}
        for (_, dev), secs in per_trial.items():
            spent[dev or "unknown"]["optimisation"] += secs
    stages = ("optimisation", "DDIM inversion", "generation", "scoring")
    spent_rows = [{"device": dev, "kind": _device_kind(dev), **{s: by[s] / 3600 for s in stages},
                   "total": sum(by.values()) / 3600} for dev, by in sorted(spent.items())]

    saved = []
    for sweep, plan in sorted(plans.items()):
        if not plan or "summary" not in plan:
            saved.append({"sweep": sweep, "note": "no plan.json: the work a naive sweep would do is unknown"})
            continue
        work = plan["summary"]["work"]
        opt = [r for r in inv if r.get("sweep") == sweep and (r.get("steps") or 0) > 0 and (r.get("seconds") or 0) > 0]
        gen = [(g, d) for sw, g, d in zip(cols["sweep"], cols["generate_seconds"], cols["device"])
               if sw == sweep and g]
        per_generation = work["planned"]["denoising_steps"] / max(work["planned"]["generations"], 1)
        per_step = {  # seconds per step, measured
            "optimisation_steps": sum(r["seconds"] for r in opt) / sum(r["steps"] for r in opt) if opt else None,
            "denoising_steps": sum(g for g, _ in gen) / (len(gen) * per_generation) if gen and per_generation else None}
        measured = [k for k, v in per_step.items() if v is not None]
        if not measured:
            saved.append({"sweep": sweep, "note": "no timed optimisation or generation rows yet"})
            continue
        hours = {side: sum(work[side][k] * per_step[k] for k in measured) / 3600 for side in ("planned", "naive")}
        devices = sorted({r.get("device") or "unknown" for r in opt} | {d or "unknown" for _, d in gen})
        names = {"optimisation_steps": "optimisation", "denoising_steps": "denoising"}
        kinds = {_device_kind(d) for d in devices}
        saved.append({"sweep": sweep, "steps": {k: (work["planned"][k], work["naive"][k]) for k in per_step},
                      "per_step": per_step, "measured": measured, "devices": devices,
                      "kind": kinds.pop() if len(kinds) == 1 else "device",
                      "planned_text": " and ".join(f"{work['planned'][k]:,} {names[k]} steps" for k in measured),
                      "naive_text": " and ".join(f"{work['naive'][k]:,}" for k in measured),
                      "per_step_text": ", ".join(f"{per_step[k]:.3g} s per {names[k]} step" for k in measured),
                      "planned_h": hours["planned"], "naive_h": hours["naive"],
                      "saved_h": hours["naive"] - hours["planned"],
                      "ratio": hours["naive"] / hours["planned"] if hours["planned"] else None})
    return {"spent": spent_rows, "stages": stages, "saved": saved}


def _device_kind(device: Optional[str]) -> str:
    return "GPU" if str(device or "").startswith("cuda") else "CPU"


def plan_counts(plans: dict[str, Optional[dict]]) -> list[dict]:
    """plan.json's counts, planned against naive, per sweep."""
    out = []
    for sweep, plan in sorted(plans.items()):
        if plan and "summary" in plan:
            s = plan["summary"]
            out.append({"sweep": sweep, "rows": [
                ("grid points", s["grid_points"], None), ("canonical samples", s["samples"], None),
                ("Tune trials", s["trials"], None),
                ("DDIM inversions", s["ddim_inversions"], s["naive_ddim_inversions"]),
                ("embedding optimisations", s["inversions"], s["naive_inversions"]),
                ("generations", s["generations"], s["naive_generations"]),
                *((f"{k.replace('_', ' ')}", s["work"]["planned"][k], s["work"]["naive"][k])
                  for k in ("ddim_steps", "optimisation_steps", "denoising_steps"))]})
    return out


def spec_text(plans: dict[str, Optional[dict]]) -> dict[str, str]:
    """Each sweep's spec as YAML (plan.json's copy of it)."""
    return {sweep: yaml.safe_dump(plan["spec"], sort_keys=False, allow_unicode=True)
            for sweep, plan in sorted(plans.items()) if plan and "spec" in plan}


def study_sections(sweeps: list[tuple[str, Store]]) -> list[dict]:
    """Per sweep with votes: `sweep.study.study_results` (win rates and Bradley–Terry, raters as the unit)."""
    out = []
    for name, store in sweeps:
        if not store.list_names("votes", "part-", ".parquet"):
            continue
        res = study_results(store.uri)
        out.append({"sweep": name, **{k: res[k].to_pylist() for k in ("pairs", "bradley_terry", "user_preference")},
                    "n_votes": res["votes"].num_rows})
    return out


# --------------------------------------------------------------------------------------------------
# The search (search.json and search.parquet, as the search writes them).

def search_sections(path: str | os.PathLike, sweeps: list[tuple[str, Store]]) -> list[dict]:
    """Per sweep with a search.json: the search's summary and its samples (search.parquet, via `load`), best
    first, ready for the template and `plots.search_plot`. Failed samples are kept, with their error."""
    out = []
    for name, store in sweeps:
        summary = store.read_json("search.json")
        if not summary:
            continue
        objective = summary.get("objective") or {"metric": "?", "mode": "max"}
        sign = 1.0 if objective.get("mode", "max") == "max" else -1.0
        recs = load(path, "search", sweeps=[name]).to_pylist()
        configs = [json.loads(r["config"]) if r.get("config") else {} for r in recs]
        settings = list(dict.fromkeys([*(summary.get("space") or {}), *(k for c in configs for k in c)]))
        samples = []
        for r, config in zip(recs, configs):
            best_objective = r.get("best_objective")
            samples.append({
                "search": r.get("search"), "settings": [_setting_text(config.get(k)) for k in settings],
                "status": r.get("status") or "ok", "error": r.get("error"),
                "steps_run": r.get("steps_run") or 0, "steps_max": r.get("steps_max") or 0,
                "stopped_early": bool(r.get("stopped_early")), "is_best": bool(r.get("is_best")),
                "rungs": list(r.get("rungs") or []), "objectives": list(r.get("objectives") or []),
                "best_step": r.get("best_step"), "best_objective": best_objective,
                "objective_text": num(best_objective),
                "trace": " · ".join(f"{step}: {num(v)}" for step, v in zip(r.get("rungs") or [],
                                                                            r.get("objectives") or [])),
                "seconds": _duration(r.get("seconds"))})
        # best first, then by objective in the mode's direction; samples without one (failed early) last
        samples.sort(key=lambda x: (not x["is_best"], not finite(x["best_objective"]),
                                    -sign * x["best_objective"] if finite(x["best_objective"]) else 0.0,
                                    str(x["search"])))
        best = summary.get("best")
        if best:
            best = {**best, "config_text": ", ".join(f"{k}={_setting_text(v)}"
                                                     for k, v in (best.get("config") or {}).items()),
                    "objective_text": num(best.get("objective"))}
        out.append({"sweep": name, "experiment": summary.get("experiment"), "objective": objective,
                    "formula": objective_formula(objective), "algorithm": summary.get("algorithm") or "–",
                    "scheduler": _scheduler_text(summary.get("scheduler")),
                    "rungs": list(((summary.get("scheduler") or {}).get("asha") or {}).get("rungs") or []),
                    "requested": summary.get("samples"), "trials": summary.get("trials", len(samples)),
                    "stopped_early": summary.get("stopped_early", sum(x["stopped_early"] for x in samples)),
                    "errors": summary.get("errors", sum(x["status"] == "error" for x in samples)),
                    "best": best, "settings": settings, "samples": samples,
                    "compute": _search_compute(summary.get("compute") or {})})
    return out


def _setting_text(v: Any) -> str:
    """A sampled setting's value: floats to 4 significant digits (a learning rate, not 17 digits of it)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _scheduler_text(scheduler: Optional[dict]) -> str:
    asha = (scheduler or {}).get("asha")
    if not asha:
        return "none: every sample runs to its end"
    rungs = ", ".join(f"{r:,}" for r in asha.get("rungs") or [])
    factor = asha.get("reduction_factor")
    return f"ASHA, rungs at inversion steps {rungs}" + (f" (reduction factor {factor:g})" if factor else "")


def _search_compute(c: dict) -> dict:
    """search.json's compute, and what early stopping saved: the inversion steps not run."""
    run, end = c.get("inversion_steps_run"), c.get("inversion_steps_to_end")
    if run is None or not end:
        return {"known": False, "seconds": _duration(c.get("seconds"))}
    fraction = c.get("fraction_run")
    fraction = run / end if fraction is None else fraction
    return {"known": True, "run": f"{run:,}", "to_end": f"{end:,}", "fraction": _percent(fraction),
            "saved": f"{end - run:,}", "saved_fraction": _percent((end - run) / end),
            "seconds": _duration(c.get("seconds"))}


def _percent(x: Optional[float]) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.1%}" if 0 < abs(x) < 0.01 else f"{x:.0%}"  # "0%" would hide a small but real share


def _duration(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 \
        else f"{seconds / 3600:.2f} h"


# --------------------------------------------------------------------------------------------------
# The tables of the summary section, and the errors.

def variant_rows(summary: pa.Table, metrics: Sequence[str]) -> tuple[list[str], list[dict]]:
    """The per-variant table: labels, counts, each metric's mean with its CI (or why there is none)."""
    recs = summary.to_pylist()
    min_videos = summary_min_videos(summary)
    best = {m: best_rows([r.get(f"{m}_mean") for r in recs], m) if m in METRICS else set() for m in metrics}
    has_fid = "fid" in summary.column_names and summary["fid"].null_count < summary.num_rows
    if has_fid:
        best["fid"] = best_rows([r.get("fid") for r in recs], "fid", 2)
        best["kid"] = best_rows([r.get("kid") for r in recs], "kid")
    rows = []
    for i, (r, label) in enumerate(zip(recs, row_labels(recs))):
        cells = [{"text": num(r.get(f"{m}_mean")), "ci": mean_ci(r, m, min_videos), "best": i in best[m]}
                 for m in metrics]
        if has_fid:
            cells.append({"text": num(r.get("fid"), 2) + ("†" if r.get("fid_reliable") is False else ""),
                          "ci": f"{r.get('fid_n_frames')}/{r.get('fid_n_reference_frames') or '–'} frames",
                          "best": i in best["fid"]})
            cells.append({"text": num(r.get("kid")), "ci": "", "best": i in best["kid"]})
        rows.append({"label": label, "n": r["n_samples"], "videos": r["n_videos"], "errors": r["n_errors"],
                     "cells": cells})
    header = [f"{METRICS[m].display} {METRICS[m].arrow}" if m in METRICS else m for m in metrics]
    if has_fid:
        header += ["FID ↓", "KID ↓"]
    return header, rows


def comparison_rows(comparisons: pa.Table) -> list[dict]:
    """The paired differences, sorted, with their numbers as shown, each with its sweep's design limit (the
    smallest p_holm it allows, `compare.design_limits`; "" when unknown)."""
    rows = []
    limits = design_limits(comparisons)
    for r in sorted(comparisons.to_pylist(), key=lambda r: (r["sweep"], r["metric"], r["variant"], r["checkpoint"])):
        p = r["p_holm"]
        rows.append({**r, "metric_label": METRICS[r["metric"]].display if r["metric"] in METRICS else r["metric"],
                     "diff": num(r["mean_difference"], sign=True), "ci": difference_ci(r), "p_text": num(r["p"]),
                     "p_holm_text": num(p), "stars": stars(p), "design_limit": limits.get(r["sweep"], "")})
    return rows


def effect_rows(effects: Optional[pa.Table]) -> list[dict]:
    """The factorial effects (`sweep.report.effects`), in the report's order, with their numbers as shown: a
    variance share in percent, a contrast signed with its CIs (over videos, and the mixed model's Wald)."""
    if effects is None:
        return []
    def order(r: dict) -> tuple:
        return str(r["sweep"]), str(r["setting"] or ""), str(r["metric"]), r["checkpoint"] or 0, *term_order(r)

    rows = []
    for r in sorted(effects.to_pylist(), key=order):
        share = r["kind"] == "variance"
        rows.append({**r, "metric_label": METRICS[r["metric"]].display if r["metric"] in METRICS else r["metric"],
                     "estimate_text": ("–" if r["estimate"] is None else f"{r['estimate']:.1%}") if share
                     else num(r["estimate"], sign=True),
                     "ci": "" if share else difference_ci(r),
                     "p_text": num(r["p"]), "p_holm_text": num(r["p_holm"]), "stars": stars(r["p_holm"]),
                     "wald": (f"variance {num(r['variance'])}" if share else
                              "–" if r["mixed_estimate"] is None else
                              f"{num(r['mixed_estimate'], sign=True)} "
                              f"[{num(r['wald_low'], sign=True)}, {num(r['wald_high'], sign=True)}]"),
                     "p_wald_text": num(r["p_wald"])})
    return rows


def error_rows(table: pa.Table, inversions: pa.Table) -> tuple[list[dict], int]:
    """Error rows of both tables (at most MAX_ERROR_ROWS) and how many there are."""
    rows = [{"table": "samples", "variant": r.get("variant"), "step": r.get(STEP), "video": r.get("video"),
             "prompt": r.get("prompt"), "seed": r.get("generation_seed"), "error": r.get("error"),
             "trial": r.get("trial_id")} for r in table.to_pylist() if r.get("status") == "error"]
    rows += [{"table": "inversions", "variant": f"qk={r.get(applied('qk'))} v={r.get(applied('v'))}", "step": None,
              "video": r.get("video"), "prompt": None, "seed": None, "error": r.get("error"),
              "trial": r.get("trial_id")}
             for r in inversions.to_pylist() if r.get("status") == "error"]
    return rows[:MAX_ERROR_ROWS], len(rows)
