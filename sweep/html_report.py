"""The browsable report of a sweep: `<out>/report/index.html`, written by `sweep.report.report` (and so by
`motion-sweep report` and the demo). It opens from disk with no server and works offline (no CDN, no network).

    report/index.html              the page; replaced atomically, after everything it refers to is in place
    report/build-<id>/             what that page refers to: report.css, report.js, gallery.js (the gallery's
                                   index, JSON), plots/*.svg. The previous build is kept for a page still open.
    report/previews/<hash>.webp    small looping previews of the clips (animated WebP, at most 128 px tall), one
                                   per source file identity (path, size, mtime): a re-run only makes new ones

What the page shows, top to bottom:
* a warning when the rows were scored with random-weight metric backbones (as summary.md's heading says);
* Summary: the paper-style table (`report.paper_cells`: means, best in bold, Holm-adjusted paired marks), the
  per-variant means with their CIs and the paired differences against the baseline, exactly as
  `sweep.report` computed them (this module formats, it computes no statistic), the sizes of the sweep;
* Search, per sweep that ran one (`<sweep>/search.json` and `search.parquet`, written by
  `sweep.search.summarize`): the objective, algorithm and rungs, the objective of every sample against the
  inversion step, the samples best first (failed ones with their error), and the compute early stopping saved;
* How the numbers were made: backbones, tracker, presets, code versions (the samples columns), the sweep's
  spec (plan.json), and compute: device-hours spent (measured timings of the rows) and an *estimate* of what
  planning saved (plan.json's naive/planned step counts × the measured time per step);
* Plots (matplotlib, Agg canvas, SVG): each metric per variant with 95% CIs; each metric against the
  checkpoint step; inversion loss curves; motion fidelity against appearance leakage;
* User preference, when the sweep has votes (`sweep.study.study_results`);
* Gallery: per (video, prompt, generation seed) the reference clip next to each variant's clip, with its
  applied axis values and metrics; filters, pages of `page_size` groups, lazily loaded images; error rows
  are cards with their message;
* Errors: every error row with its message.

All text from the tables (prompts, errors, paths) is escaped: Jinja2 autoescaping in the page, `textContent`
in report.js. matplotlib, Pillow and PyAV are imported only here, and this module only by `report()`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa

from vocabulary import APPLIED, METRICS, SAMPLE_METRICS, applied

from .report import (CI_METHOD, MIN_VIDEOS, STEP, TEST, _column, _num, best_rows, paper_cells,
                     backbone_warning)
from .search import objective_formula
from .store import Store
from .tables import describe_tables, load, _sweep_stores

PAGE_SIZE = 20             #: gallery groups per page
PREVIEW_HEIGHT = 128       #: previews are at most this tall (px); smaller clips keep their size
PREVIEW_FRAMES = 24        #: at most this many frames per preview (evenly spaced; duration kept)
PREVIEW_VERSION = 1        #: part of every preview's key: bump it when previews are made differently
MAX_ERROR_ROWS = 500       #: the errors table lists at most this many (the tables hold them all)
KEEP_BUILDS = 2            #: builds kept: the current one and the one a page opened before may still use
ASSETS = ("report.css", "report.js")
HEAVY = ("fid_features",)  #: list columns the page never shows ([frames][dim] floats per row)
#: Columns that say how the numbers were made (the samples table's own docs describe them).
PROVENANCE = ("preset", "base_model", "clip_backbone", "clip_pretrained", "tracker", "tracker_checkpoint",
              "fid_backbone", "pretrained_metrics", "evaluation_version", "motion_filter", "code_version", "device")


def write_html_report(path: str | os.PathLike, out: str | os.PathLike, *, table: pa.Table, summary: pa.Table,
                      comparisons: pa.Table, notes: Sequence[str] = (), baseline_line: str = "",
                      metrics: Sequence[str] = SAMPLE_METRICS, page_size: Optional[int] = None,
                      preview_height: int = PREVIEW_HEIGHT, generated_at: Optional[dt.datetime] = None) -> Path:
    """Write the report of the sweep(s) under `path` into the folder `out` (usually `<sweep>/report`) from the
    tables `report()` loaded and computed; returns the path of index.html. page_size: gallery groups per page
    (default PAGE_SIZE)."""
    out = Path(out).resolve()
    (out / "previews").mkdir(parents=True, exist_ok=True)
    table = table.drop_columns([c for c in HEAVY if c in table.column_names])  # rows become Python dicts below
    sweeps = _sweep_stores(path)
    plans = {name: store.read_json("plan.json") for name, store in sweeps}
    inversions = load(path, "inversions")
    present = [m for m in metrics if f"{m}_mean" in summary.column_names
               and summary[f"{m}_mean"].null_count < summary.num_rows]

    _prune_temp(out)
    build_name = f"build-{time.time_ns():x}"
    build = out / f".tmp-{build_name}"
    (build / "plots").mkdir(parents=True)
    try:
        plots = make_plots(summary, inversions, present, build / "plots")
        searches = [{**s, "plot": search_plot(s, build / "plots")} for s in search_sections(path, sweeps)]
        gallery, previews_used = gallery_index(table, path, out / "previews", present, preview_height)
        data = json.dumps(gallery, ensure_ascii=False, separators=(",", ":"))
        (build / "gallery.js").write_text(f"window.REPORT_GALLERY = {data};\n", encoding="utf-8")
        (build / "previews.json").write_text(json.dumps(sorted(previews_used)))
        for name in ASSETS:
            (build / name).write_bytes(resources.files("sweep").joinpath("report_assets", name).read_bytes())
        page = render_page(
            build=build_name, plots=plots, page_size=page_size or PAGE_SIZE, table=table, summary=summary,
            comparisons=comparisons, notes=notes, baseline_line=baseline_line, metrics=present, plans=plans,
            inversions=inversions, study=study_sections(sweeps), searches=searches,
            generated_at=generated_at or dt.datetime.now(dt.timezone.utc))
        os.replace(build, out / build_name)  # a new name: no page refers to it yet
    finally:
        shutil.rmtree(build, ignore_errors=True)
    index = out / "index.html"
    Store(str(index.parent)).write_bytes_atomic(index.name, page.encode())
    _prune_builds(out, build_name)
    return index


# --------------------------------------------------------------------------------------------------
# Facts about the sweep: sizes, provenance, compute.

def sizes(table: pa.Table, plans: dict[str, Optional[dict]], inversions: pa.Table) -> list[tuple[str, str]]:
    """(label, value) pairs: rows (ok, errors, of how many planned), variants, checkpoints, videos, prompts, seeds."""
    status = _column(table, "status")
    planned = [p["summary"].get("samples") for p in plans.values() if p and p.get("summary")]

    def distinct(name: str) -> int:
        return len({v for v in _column(table, name) if v is not None})

    rows = f"{table.num_rows:,}" + (f" of {sum(planned):,} planned" if planned and len(planned) == len(plans) else "")
    return [("samples (rows)", rows), ("ok", f"{status.count('ok'):,}"), ("errors", f"{status.count('error'):,}"),
            ("variants", str(distinct("variant"))), ("checkpoints", ", ".join(
                str(s) for s in sorted({s for s in _column(table, STEP) if s is not None})) or "–"),
            ("videos", str(distinct("video"))), ("prompts", str(distinct("prompt"))),
            ("generation seeds", str(distinct("generation_seed"))),
            ("optimisation seeds", str(distinct(applied("seed")))),
            ("inversions", f"{inversions.num_rows:,}")]


def provenance(table: pa.Table) -> list[dict]:
    """How the numbers were made: each provenance column's distinct values with their row counts (ok rows)."""
    docs = describe_tables()["samples"]
    ok = [s == "ok" for s in _column(table, "status")]
    out = []
    for name in PROVENANCE:
        if name not in table.column_names:
            continue
        counts = Counter(v for v, good in zip(_column(table, name), ok) if good)
        if counts:
            out.append({"column": name, "doc": docs.get(name, ""),
                        "values": [("–" if v is None else str(v).lower() if isinstance(v, bool) else str(v), n)
                                   for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]})
    return out


def _device_kind(device: Optional[str]) -> str:
    return "GPU" if str(device or "").startswith("cuda") else "CPU"


def compute(table: pa.Table, inversions: pa.Table, plans: dict[str, Optional[dict]]) -> dict:
    """Device-hours spent (measured wall times of the rows, by device) and, per sweep with a plan.json, the
    *estimated* hours a naive sweep (one trial per grid point) would have taken: its optimisation and denoising
    step counts × the time per step measured here."""
    spent: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    reused = {t for t, c in zip(_column(table, "trial_id"), _column(table, "inversion_cached")) if c}
    inv = [r for r in inversions.to_pylist()  # embeddings taken from the store were not optimised by this sweep
           if r.get("cached") is not True and r.get("trial_id") not in reused]
    for r in inv:
        spent[r.get("device") or "unknown"]["optimisation"] += r.get("seconds") or 0.0
        spent[r.get("device") or "unknown"]["DDIM inversion"] += r.get("ddim_seconds") or 0.0
    cols = {c: _column(table, c) for c in ("sweep", "device", "generate_seconds", "score_seconds", "trial_id",
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
    import yaml

    return {sweep: yaml.safe_dump(plan["spec"], sort_keys=False, allow_unicode=True)
            for sweep, plan in sorted(plans.items()) if plan and "spec" in plan}


def study_sections(sweeps: list[tuple[str, Store]]) -> list[dict]:
    """Per sweep with votes: `sweep.study.study_results` (win rates with Wilson intervals, Bradley–Terry)."""
    out = []
    for name, store in sweeps:
        if not store.list_names("votes", "part-", ".parquet"):
            continue
        from .study import study_results

        res = study_results(store.uri)
        out.append({"sweep": name, **{k: res[k].to_pylist() for k in ("pairs", "bradley_terry", "user_preference")},
                    "n_votes": res["votes"].num_rows})
    return out


# --------------------------------------------------------------------------------------------------
# The search (`sweep.search.summarize`'s search.json and search.parquet), formatted for the page.

def _setting_text(v: Any) -> str:
    """A sampled setting's value: floats to 4 significant digits (a learning rate, not 17 digits of it)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _percent(x: Optional[float]) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.1%}" if 0 < abs(x) < 0.01 else f"{x:.0%}"  # "0%" would hide a small but real share


def _duration(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 \
        else f"{seconds / 3600:.2f} h"


def _finite(v: Optional[float]) -> bool:
    return v is not None and math.isfinite(v)


def search_sections(path: str | os.PathLike, sweeps: list[tuple[str, Store]]) -> list[dict]:
    """Per sweep with a search.json: the search's summary and its samples (search.parquet, via `load`), best
    first, ready for the template and `search_plot`. Failed samples are kept, with their error."""
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
                "objective_text": _num(best_objective),
                "trace": " · ".join(f"{step}: {_num(v)}" for step, v in zip(r.get("rungs") or [],
                                                                             r.get("objectives") or [])),
                "seconds": _duration(r.get("seconds"))})
        # best first, then by objective in the mode's direction; samples without one (failed early) last
        samples.sort(key=lambda x: (not x["is_best"], not _finite(x["best_objective"]),
                                    -sign * x["best_objective"] if _finite(x["best_objective"]) else 0.0,
                                    str(x["search"])))
        best = summary.get("best")
        if best:
            best = {**best, "config_text": ", ".join(f"{k}={_setting_text(v)}"
                                                     for k, v in (best.get("config") or {}).items()),
                    "objective_text": _num(best.get("objective"))}
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


# --------------------------------------------------------------------------------------------------
# Plots: matplotlib on an Agg canvas (no pyplot, no global backend switch), saved as small SVGs.

PLOT_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "motion-sweep", "font.size": 8, "axes.titlesize": 9,
              "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
              "legend.fontsize": 7, "legend.frameon": False, "axes.formatter.useoffset": False}


def _save_svg(fig, file: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(file, format="svg", bbox_inches="tight", metadata={"Date": None})  # no date: same plot, same bytes

def _row_labels(recs: list[dict]) -> list[str]:
    several_steps = len({r.get(STEP) for r in recs}) > 1
    several_sweeps = len({r.get("sweep") for r in recs}) > 1
    return [(f"{r['sweep']}: " if several_sweeps else "") + str(r["variant"])
            + (f" @ {r.get(STEP)}" if several_steps else "") for r in recs]


def make_plots(summary: pa.Table, inversions: pa.Table, metrics: Sequence[str], folder: Path) -> list[dict]:
    """Write the plots into `folder`; returns [{file, title, caption}] (file relative to the build folder)."""
    import matplotlib
    from matplotlib.figure import Figure

    recs = summary.to_pylist()
    labels = _row_labels(recs)
    variants = list(dict.fromkeys((r.get("sweep"), r["variant"]) for r in recs))
    colours = matplotlib.colormaps["tab20" if len(variants) > 10 else "tab10"]
    colour = {v: colours(i % colours.N) for i, v in enumerate(variants)}
    several_sweeps = len({s for s, _ in variants}) > 1
    legend_label = {(s, v): (f"{s}: " if several_sweeps else "") + str(v) for s, v in variants}
    plots: list[dict] = []

    def save(fig, name: str, title: str, caption: str) -> None:
        _save_svg(fig, folder / name)
        plots.append({"file": f"plots/{name}", "title": title, "caption": caption})

    def ci(r: dict, m: str) -> tuple[Optional[float], Optional[float], Optional[float]]:
        return r.get(f"{m}_mean"), r.get(f"{m}_low"), r.get(f"{m}_high")

    with matplotlib.rc_context(PLOT_STYLE):
        for m in metrics:  # each metric per variant, 95% CI
            info = METRICS.get(m)
            name = info.display if info else m
            rows = [(i, *ci(r, m)) for i, r in enumerate(recs) if r.get(f"{m}_mean") is not None]
            fig = Figure(figsize=(6.4, 0.8 + 0.24 * len(rows)))
            ax = fig.add_subplot()
            # one collection per kind of mark (not an errorbar per row): small SVGs
            with_ci = [(y, mean, lo, hi, colour[(recs[i].get("sweep"), recs[i]["variant"])])
                       for y, (i, mean, lo, hi) in enumerate(rows) if lo is not None and hi is not None]
            without = [(y, mean, colour[(recs[i].get("sweep"), recs[i]["variant"])])
                       for y, (i, mean, lo, hi) in enumerate(rows) if lo is None or hi is None]
            if with_ci:
                y, mean, lo, hi, c = zip(*with_ci)
                ax.hlines(y, lo, hi, colors=c, lw=1.2)
                ax.scatter(lo + hi, y + y, marker="|", c=c + c, s=40, lw=1.2)
                ax.scatter(mean, y, c=c, s=18, zorder=3)
            if without:
                y, mean, c = zip(*without)
                ax.scatter(mean, y, facecolors="white", edgecolors=c, s=18, zorder=3)
                for yi, mi in zip(y, mean):
                    ax.annotate("n too small", (mi, yi), xytext=(6, -3), textcoords="offset points", fontsize=6,
                                color="0.4")
            ax.set_yticks(range(len(rows)), [labels[i] for i, *_ in rows])
            ax.invert_yaxis()
            ax.set_xlabel(f"{name} {info.arrow if info else ''} (mean over videos, 95% CI)")
            ax.set_title(name)
            save(fig, f"ci-{m}.svg", f"{name} per variant",
                 f"Mean over videos of the per-video mean; bars: 95% {CI_METHOD} (none under the minimum number "
                 "of videos: n too small). " + (f"{'Higher' if info.higher_is_better else 'Lower'} is better."
                                               if info else ""))

        steps_of = defaultdict(list)
        for r in recs:
            steps_of[(r.get("sweep"), r["variant"])].append(r)
        if any(len({r.get(STEP) for r in rs}) > 1 for rs in steps_of.values()):
            xs = sorted({r.get(STEP) for r in recs if r.get(STEP)})
            for m in metrics:  # each metric against the checkpoint step
                info = METRICS.get(m)
                name = info.display if info else m
                fig = Figure(figsize=(6.4, 3.4))
                ax = fig.add_subplot()
                for key, rs in steps_of.items():
                    rs = sorted((r for r in rs if r.get(f"{m}_mean") is not None), key=lambda r: r.get(STEP) or 0)
                    if not rs:
                        continue
                    label = legend_label[key]
                    if [r.get(STEP) for r in rs] == [0]:  # the base model: one value for every step
                        ax.axhline(rs[0][f"{m}_mean"], color=colour[key], ls="--", lw=1, label=f"{label} (step 0)")
                        continue
                    x = np.array([r.get(STEP) for r in rs], float)
                    y = np.array([r[f"{m}_mean"] for r in rs], float)
                    lo = np.array([r.get(f"{m}_low") if r.get(f"{m}_low") is not None else np.nan for r in rs])
                    hi = np.array([r.get(f"{m}_high") if r.get(f"{m}_high") is not None else np.nan for r in rs])
                    ax.plot(x, y, "o-", color=colour[key], lw=1.2, ms=3.5, label=label)
                    if np.isfinite(lo).any():
                        ax.fill_between(x, lo, hi, color=colour[key], alpha=0.12, lw=0)
                ax.set_xticks(xs)
                ax.set_xlabel("checkpoint step (inversion steps of the embeddings)")
                ax.set_ylabel(f"{name} {info.arrow if info else ''}")
                ax.set_title(f"{name} against the checkpoint step")
                ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
                save(fig, f"steps-{m}.svg", f"{name} against the checkpoint step",
                     "Per variant, mean over videos at each checkpoint step (band: 95% CI where there is one); "
                     "dashed: the base model (nothing optimised). Appearance leaks in as the inversion runs longer.")

        curves = loss_curves(inversions)
        if curves:
            fig = Figure(figsize=(6.4, 3.4))
            ax = fig.add_subplot()
            for i, (label, x, mean, lo, hi, n) in enumerate(curves):
                c = colours(i % colours.N)
                ax.plot(x, mean, color=c, lw=1.2, label=f"{label} ({n} inversion{'' if n == 1 else 's'})")
                if lo is not None:
                    ax.fill_between(x, lo, hi, color=c, alpha=0.12, lw=0)
            ax.set_xlabel("optimisation step")
            ax.set_ylabel("training loss (moving average)")
            ax.set_title("Inversion loss")
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
            save(fig, "loss.svg", "Inversion loss curves",
                 "Mean training loss of the inversions of each design, a moving average over about 1/40 of the "
                 "run (each step draws a random timestep, so the raw loss is noisy); band: 10–90% of inversions.")

        if {"motion_fidelity", "appearance_leakage"} <= set(metrics):
            fig = Figure(figsize=(6.4, 4.0))
            ax = fig.add_subplot()
            for key, rs in steps_of.items():
                rs = sorted((r for r in rs if r.get("motion_fidelity_mean") is not None
                             and r.get("appearance_leakage_mean") is not None), key=lambda r: r.get(STEP) or 0)
                if not rs:
                    continue
                x = [r["appearance_leakage_mean"] for r in rs]
                y = [r["motion_fidelity_mean"] for r in rs]
                ax.plot(x, y, "o-" if len(rs) > 1 else "s", color=colour[key], lw=0.8, ms=4, label=legend_label[key])
                for r, xi, yi in zip(rs, x, y):
                    xerr = _err(r, "appearance_leakage")
                    yerr = _err(r, "motion_fidelity")
                    if xerr is not None or yerr is not None:
                        ax.errorbar([xi], [yi], xerr=xerr, yerr=yerr, fmt="none", ecolor=colour[key], alpha=0.5,
                                    lw=0.8)
                    if len(rs) > 1:
                        ax.annotate(str(r.get(STEP)), (xi, yi), xytext=(3, 3), textcoords="offset points",
                                    fontsize=6, color="0.3")
            ax.set_xlabel("Appearance leakage ↓")
            ax.set_ylabel("Motion fidelity ↑")
            ax.set_title("Motion fidelity against appearance leakage")
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
            save(fig, "tradeoff.svg", "Motion fidelity against appearance leakage",
                 "Each variant at each checkpoint step (numbers: the step; lines join a variant's steps), with 95% "
                 "CIs where there are. Up and to the left is better: the motion without the reference's look.")
    return plots


def search_plot(search: dict, folder: Path) -> Optional[dict]:
    """The objective of each search sample against the inversion step (a `search_sections` entry), saved as
    `folder/search-<sweep>.svg`; {file, title, caption}, or None when no sample has a finite objective yet.
    Samples ran to their end are solid, stopped early grey and dashed, failed red and dotted; the best one is
    drawn last, thick, with a star at its best step."""
    import matplotlib
    from matplotlib.figure import Figure

    kinds = {  # label, colour, line style, marker, width, z-order
        "ran": ("ran to its end", "#1f77b4", "-", "o", 1.0, 2),
        "stopped": ("stopped early", "0.6", "--", "o", 0.9, 1),
        "failed": ("failed", "#a32020", ":", "x", 0.9, 2),
        "best": ("best", "#ff7f0e", "-", "o", 2.2, 4)}
    with matplotlib.rc_context(PLOT_STYLE):
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        for r in search["rungs"]:  # where the scheduler compares samples
            ax.axvline(r, color="0.85", lw=0.8, zorder=0)
        labelled, steps, drawn = set(), set(search["rungs"]), 0
        for x in reversed(search["samples"]):  # the list is best first: draw the best last, on top
            points = [(s, v) for s, v in zip(x["rungs"], x["objectives"]) if _finite(v)]
            if not points:
                continue
            kind = "best" if x["is_best"] else "failed" if x["status"] == "error" else \
                "stopped" if x["stopped_early"] else "ran"
            label, colour, ls, marker, lw, z = kinds[kind]
            xs, ys = zip(*points)
            if kind == "best":
                label = f"best ({x['search']})"
            ax.plot(xs, ys, ls=ls, marker=marker, color=colour, lw=lw, ms=3.5 if kind != "best" else 5, zorder=z,
                    label=None if kind in labelled else label)
            labelled.add(kind)
            steps.update(xs)
            drawn += 1
            if kind == "best" and _finite(x["best_objective"]) and x["best_step"] is not None:
                ax.scatter([x["best_step"]], [x["best_objective"]], marker="*", s=160, color=colour,
                           edgecolors="black", linewidths=0.6, zorder=5)
                ax.annotate(f"best: step {x['best_step']}", (x["best_step"], x["best_objective"]), xytext=(6, 6),
                            textcoords="offset points", fontsize=7)
        if not drawn:
            return None
        ax.set_xticks(sorted(steps))
        ax.set_xlabel("inversion step")
        ax.set_ylabel(f"objective ({search['objective'].get('mode', 'max')})")
        ax.set_title(f"{search['sweep']}: {search['formula']}")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
        name = f"search-{search['sweep']}.svg"
        _save_svg(fig, folder / name)
    return {"file": f"plots/{name}", "title": f"Objective against the inversion step ({search['sweep']})",
            "caption": "Each search sample's objective at the steps it was scored (its rungs and last step; grey "
                       "vertical lines: the scheduler's rungs). Grey dashed: stopped early by the scheduler; red "
                       "dotted: failed; thick: the best sample, its star at its best step."}


def _err(r: dict, m: str) -> Optional[list[list[float]]]:
    mean, lo, hi = r.get(f"{m}_mean"), r.get(f"{m}_low"), r.get(f"{m}_high")
    # (a BCa interval need not contain the mean to the last digit: bars never point inwards)
    return None if lo is None or hi is None else [[max(0.0, mean - lo)], [max(0.0, hi - mean)]]


def loss_curves(inversions: pa.Table, max_points: int = 100) -> list[tuple]:
    """[(label, steps, mean, p10 | None, p90 | None, n)] per inversion design (MQK/MV design and the inversion
    settings that differ between inversions), smoothed and thinned to at most `max_points` points."""
    groups: dict[tuple, list[np.ndarray]] = defaultdict(list)
    for r in inversions.to_pylist():
        curve = r.get("loss_curve")
        if r.get("status") == "error" or not curve or r.get("steps") == 0:  # the base model optimises nothing
            continue
        groups[(r.get(applied("qk")), r.get(applied("v")), r.get("config") or "{}")].append(np.asarray(curve, float))
    configs = {k[2]: json.loads(k[2]) for k in groups}
    differ = sorted({name for c in configs.values() for name in c
                     if len({json.dumps(o.get(name), sort_keys=True) for o in configs.values()}) > 1})
    out = []
    for (qk, v, config), cs in sorted(groups.items(), key=str):
        length = max(len(c) for c in cs)
        stack = np.full((len(cs), length), np.nan)
        for i, c in enumerate(cs):
            stack[i, :len(c)] = c
        window = max(1, length // 40)
        kernel = np.ones(window) / window

        def smooth(y: np.ndarray) -> np.ndarray:
            if window == 1:
                return y
            filled = np.where(np.isfinite(y), y, 0.0)
            weight = np.convolve(np.isfinite(y).astype(float), kernel, mode="same")
            return np.convolve(filled, kernel, mode="same") / np.where(weight > 0, weight, np.nan)

        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns past the end of shorter curves
            mean = smooth(np.nanmean(stack, axis=0))
            lo = smooth(np.nanpercentile(stack, 10, axis=0)) if len(cs) >= 3 else None
            hi = smooth(np.nanpercentile(stack, 90, axis=0)) if len(cs) >= 3 else None
        keep = np.unique(np.linspace(0, length - 1, min(length, max_points)).round().astype(int))
        label = f"qk={qk} v={v}" + "".join(f" {k}={configs[config].get(k)}" for k in differ)
        out.append((label, keep + 1, mean[keep], None if lo is None else lo[keep], None if hi is None else hi[keep],
                    len(cs)))
    return out


# --------------------------------------------------------------------------------------------------
# Previews: each clip once, as a small animated WebP named after its source file's identity.

def _locate(source: str, roots: Sequence[str]) -> tuple[Optional[str], Optional[str]]:
    """(local path or URI, None) of a clip path from the tables, or (None, why): relative paths are tried
    under the storage root, the sweep folder and the current folder."""
    if "://" in source and not source.startswith("file://"):
        return source, None
    p = Path(source[len("file://"):] if source.startswith("file://") else source).expanduser()
    if p.is_absolute():
        candidates = [str(p)]
    else:
        candidates = [(f"{r.rstrip('/')}/{source}" if "://" in r else str(Path(r) / p)) for r in roots]
        candidates.append(str(Path.cwd() / p))
    for c in candidates:
        if "://" in c or Path(c).exists():
            return c, None
    return None, f"clip not found: {source}"


def _remote(uri: str) -> tuple[Store, str]:
    parent, name = uri.rsplit("/", 1)
    return Store(parent), name


def _identity(location: str) -> str:
    """What names a preview: the file's location, size and modification time (a rewritten file is new)."""
    if "://" in location:
        import pyarrow.fs as pafs

        store, name = _remote(location)
        info = store.fs.get_file_info(store.abspath(name))
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"clip not found: {location}")
        return f"{location}|{info.size}|{info.mtime_ns}"
    st = os.stat(location)
    return f"{os.path.abspath(location)}|{st.st_size}|{st.st_mtime_ns}"


def _decode(local: Path) -> tuple[list, float]:
    """The frames of a clip as PIL images, and its frame rate (8 when the file does not say)."""
    from PIL import Image

    if local.is_dir() or local.suffix.lower() == ".gif":
        from videoio import read_video

        return [Image.fromarray(f) for f in read_video(local)], 8.0
    import av

    with av.open(str(local)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else 8.0
        return [f.to_image() for f in container.decode(stream)], fps


def _render_preview(location: str, dest: Path, height: int) -> tuple[int, int]:
    """Decode the clip at `location`, write its preview to `dest` (atomically); returns (width, height)."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(location)
        if "://" in location:
            store, name = _remote(location)
            local = store.download(name, Path(tmp) / name)
        frames, fps = _decode(local)
    if not frames:
        raise ValueError("no frames")
    every = max(1, math.ceil(len(frames) / PREVIEW_FRAMES))
    frames = frames[::every]
    w, h = frames[0].size
    if h > height:
        w, h = max(2, round(w * height / h)), height
        frames = [f.convert("RGB").resize((w, h), Image.Resampling.BILINEAR) for f in frames]
    else:
        frames = [f.convert("RGB") for f in frames]
    tmp = dest.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{dest.name}")
    try:
        # kmin=kmax=0: only the first frame is a key frame, the others code what changed (less than half the
        # bytes of the default key frame spacing on a clip with a static background; a loop needs no seeking)
        frames[0].save(tmp, format="WEBP", save_all=True, append_images=frames[1:], loop=0, quality=60, method=3,
                       kmin=0, kmax=0, duration=max(20, round(1000 * every / fps)))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return w, h


def make_previews(sources: Sequence[str], folder: Path, roots: Sequence[str], height: int = PREVIEW_HEIGHT,
                  workers: Optional[int] = None) -> dict[str, dict]:
    """{source: {"file": "previews/<hash>.webp", "w", "h"} or {"note": why there is none}} for clip paths from the
    tables; previews already in `folder` (same source identity) are reused, the others made in a thread pool."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}
    todo: dict[Path, tuple[str, list[str]]] = {}  # preview to make -> (where its clip is, the sources naming it)
    for source in dict.fromkeys(s for s in sources if s):
        location, why = _locate(source, roots)
        try:
            if location is None:
                raise FileNotFoundError(why)
            key = hashlib.sha256(f"v{PREVIEW_VERSION}|h{height}|{_identity(location)}".encode()).hexdigest()[:24]
        except OSError as exc:
            out[source] = {"note": str(exc) if isinstance(exc, FileNotFoundError) else f"clip unreadable: {exc}"}
            continue
        dest = folder / f"{key}.webp"
        if dest in todo:
            todo[dest][1].append(source)
            continue
        if dest.exists():
            try:
                with Image.open(dest) as im:
                    out[source] = {"file": f"previews/{dest.name}", "w": im.size[0], "h": im.size[1]}
                continue
            except OSError:  # a damaged preview: make it again
                pass
        todo[dest] = (location, [source])

    def make(item: tuple[Path, tuple[str, list[str]]]) -> list[tuple[str, dict]]:
        dest, (location, names) = item
        try:
            w, h = _render_preview(location, dest, height)
            info = {"file": f"previews/{dest.name}", "w": w, "h": h}
        except Exception as exc:  # noqa: BLE001 - any decoder failure: the card says so, the report goes on
            info = {"note": f"no preview: {type(exc).__name__}: {exc}"}
        return [(name, info) for name in names]

    if todo:
        with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            for done in pool.map(make, todo.items()):
                out.update(done)
    return out


# --------------------------------------------------------------------------------------------------
# The gallery's index (gallery.js): groups of (video, prompt, generation seed), each with its reference clip
# and one card per sample row; report.js draws the current page from it and filters it.

def _axis_columns(table: pa.Table) -> list[str]:
    """The applied-value columns that tell variants apart (design axes, swept hyperparameters), then the step."""
    design = [applied(a) for a in ("qk", "v", "remove", "debias", "seed")]
    hyper = sorted(c for c in table.column_names if c.endswith(APPLIED) and "." in c)
    return [c for c in (*design, *hyper) if c in table.column_names]


def _value(v: Any) -> Optional[str]:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return str(v).lower() if isinstance(v, bool) else str(v)


def _storage_roots(path: str | os.PathLike) -> list[str]:
    """Where relative clip paths are resolved: the storage root, then the folder given."""
    root = Store(path)
    sweeps = _sweep_stores(path)
    folder = root.uri
    if len(sweeps) == 1 and sweeps[0][1].uri == root.uri:  # a sweep folder: its storage root is the parent
        return [folder.rsplit("/", 1)[0] if "://" in folder else str(Path(folder).parent), folder]
    return [folder]


def _file_url(location: Optional[str]) -> Optional[str]:
    return Path(location).resolve().as_uri() if location and "://" not in location else None


def gallery_index(table: pa.Table, path: str | os.PathLike, previews_folder: Path, metrics: Sequence[str],
                  preview_height: int = PREVIEW_HEIGHT) -> tuple[dict, set[str]]:
    """The gallery's data (see report.js) and the preview files it uses."""
    recs = table.to_pylist()
    roots = _storage_roots(path)
    previews = make_previews([r.get("source_video") for r in recs] + [r.get("video_path") for r in recs
                                                                      if r.get("status") == "ok"],
                             previews_folder, roots, preview_height)
    axis_cols = _axis_columns(table)
    variants = sorted({(r.get("sweep"), r.get("variant")) for r in recs}, key=lambda k: (str(k[0]), str(k[1])))
    vi = {k: i for i, k in enumerate(variants)}
    first = {}
    for r in recs:
        first.setdefault((r.get("sweep"), r.get("variant")), r)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in recs:
        groups[(r.get("sweep"), r.get("video"), r.get("prompt"), r.get("generation_seed"))].append(r)

    def clip(source: Optional[str]) -> dict:
        if not source:
            return {"note": "no clip path in the row"}
        info = dict(previews.get(source, {"note": f"clip not found: {source}"}))
        location, _ = _locate(source, roots)
        if _file_url(location):
            info["url"] = _file_url(location)  # a local clip: the card links to it
        else:
            info["src"] = source
        return info

    out_groups = []
    order = sorted(groups, key=lambda k: (str(k[0]), str(k[1]), str(k[2]), -1 if k[3] is None else k[3]))
    for sweep, video, prompt, seed in order:
        rs = groups[(sweep, video, prompt, seed)]
        rs.sort(key=lambda r: (vi[(r.get("sweep"), r.get("variant"))], r.get(STEP) or 0, str(r.get("created_at"))))
        cards = []
        for r in rs:
            card = {"v": vi[(r.get("sweep"), r.get("variant"))], "s": r.get(STEP),
                    "m": [None if r.get(m) is None or not math.isfinite(r[m]) else round(float(r[m]), 4)
                          for m in metrics]}
            if r.get("status") == "error":
                card["e"] = r.get("error") or "error (no message)"
            else:
                card.update(clip(r.get("video_path")))
            cards.append(card)
        source = next((r.get("source_video") for r in rs if r.get("source_video")), None)
        out_groups.append({"sweep": sweep, "video": video, "prompt": prompt, "seed": seed, "ref": clip(source),
                           "c": cards})

    axes = []
    for col in [*axis_cols, STEP]:
        values = sorted({_value(r.get(col)) for r in recs} - {None}, key=_natural)
        if len(values) > 1 or (col == STEP and values):
            axes.append({"key": col, "label": "step" if col == STEP else col[:-len(APPLIED)], "values": values})
    data = {
        "axes": axes,
        "metrics": [{"key": m, "label": METRICS[m].display if m in METRICS else m,
                     "arrow": METRICS[m].arrow if m in METRICS else ""} for m in metrics],
        "variants": [{"id": v, "sweep": s, "axes": {a["key"]: _value(first[(s, v)].get(a["key"]))
                                                      for a in axes if a["key"] != STEP}} for s, v in variants],
        "groups": out_groups,
        "filters": {name: sorted({_value(g[name]) for g in out_groups} - {None}, key=_natural)
                    for name in ("sweep", "video", "prompt", "seed")},
    }
    used = {info["file"].split("/", 1)[1] for info in previews.values() if "file" in info}
    return data, used


def _natural(value: str) -> tuple:
    """Numbers in numeric order, then text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# --------------------------------------------------------------------------------------------------
# The page: one Jinja2 template (autoescaped), written atomically.

def _errors(table: pa.Table, inversions: pa.Table) -> tuple[list[dict], int]:
    """Error rows of both tables (at most MAX_ERROR_ROWS) and how many there are."""
    rows = [{"table": "samples", "variant": r.get("variant"), "step": r.get(STEP), "video": r.get("video"),
             "prompt": r.get("prompt"), "seed": r.get("generation_seed"), "error": r.get("error"),
             "trial": r.get("trial_id")} for r in table.to_pylist() if r.get("status") == "error"]
    rows += [{"table": "inversions", "variant": f"qk={r.get(applied('qk'))} v={r.get(applied('v'))}", "step": None,
              "video": r.get("video"), "prompt": None, "seed": None, "error": r.get("error"),
              "trial": r.get("trial_id")}
             for r in inversions.to_pylist() if r.get("status") == "error"]
    return rows[:MAX_ERROR_ROWS], len(rows)


def _summary_rows(summary: pa.Table, metrics: Sequence[str]) -> tuple[list[str], list[dict]]:
    """The per-variant table: labels, counts, each metric's mean with its CI (or why there is none)."""
    recs = summary.to_pylist()
    min_videos = int((summary.schema.metadata or {}).get(b"min_videos", str(MIN_VIDEOS).encode()))
    best = {m: best_rows([r.get(f"{m}_mean") for r in recs], m) if m in METRICS else set() for m in metrics}
    has_fid = "fid" in summary.column_names and summary["fid"].null_count < summary.num_rows
    if has_fid:
        best["fid"] = best_rows([r.get("fid") for r in recs], "fid", 2)
        best["kid"] = best_rows([r.get("kid") for r in recs], "kid")
    rows = []
    for i, (r, label) in enumerate(zip(recs, _row_labels(recs))):
        cells = []
        for m in metrics:
            mean, lo, hi = r.get(f"{m}_mean"), r.get(f"{m}_low"), r.get(f"{m}_high")
            ci = (f"[{_num(lo)}, {_num(hi)}]" if lo is not None else
                  "n too small" if mean is not None and r["n_videos"] < min_videos else "")
            cells.append({"text": _num(mean), "ci": ci, "best": i in best[m]})
        if has_fid:
            cells.append({"text": _num(r.get("fid"), 2) + ("†" if r.get("fid_reliable") is False else ""),
                          "ci": f"{r.get('fid_n_frames')}/{r.get('fid_n_reference_frames') or '–'} frames",
                          "best": i in best["fid"]})
            cells.append({"text": _num(r.get("kid")), "ci": "", "best": i in best["kid"]})
        rows.append({"label": label, "n": r["n_samples"], "videos": r["n_videos"], "errors": r["n_errors"],
                     "cells": cells})
    header = [f"{METRICS[m].display} {METRICS[m].arrow}" if m in METRICS else m for m in metrics]
    if has_fid:
        header += ["FID ↓", "KID ↓"]
    return header, rows


def _stars(p: Optional[float]) -> str:
    """The significance marks of a Holm-adjusted p (report.py's markdown escapes the same marks)."""
    return "" if p is None else "**" if p < 0.01 else "*" if p < 0.05 else ""


def _comparison_rows(comparisons: pa.Table) -> list[dict]:
    rows = []
    for r in sorted(comparisons.to_pylist(), key=lambda r: (r["sweep"], r["metric"], r["variant"], r["checkpoint"])):
        ci = (f"[{_num(r['ci_low'], sign=True)}, {_num(r['ci_high'], sign=True)}]" if r["ci_low"] is not None
              else "n too small" if (r["ci_note"] or "").startswith("n too small") else r["ci_note"] or "–")
        p = r["p_holm"]
        rows.append({**r, "metric_label": METRICS[r["metric"]].display if r["metric"] in METRICS else r["metric"],
                     "diff": _num(r["mean_difference"], sign=True), "ci": ci, "p_text": _num(r["p"]),
                     "p_holm_text": _num(p), "stars": _stars(p)})
    return rows


def render_page(*, build: str, plots: list[dict], page_size: int, table: pa.Table, summary: pa.Table,
                comparisons: pa.Table, notes: Sequence[str], baseline_line: str, metrics: Sequence[str],
                plans: dict, inversions: pa.Table, study: list[dict], generated_at: dt.datetime,
                searches: Sequence[dict] = ()) -> str:
    import jinja2

    header, labels, values, legend = paper_cells(summary, comparisons)
    sweeps = sorted({s for s in _column(table, "sweep") if s}) or sorted(plans)
    summary_header, summary_rows = _summary_rows(summary, metrics)
    errors, n_errors = _errors(table, inversions)
    confidence = float((summary.schema.metadata or {}).get(b"confidence", b"0.95"))
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.filters["stars"] = _stars
    env.filters["hours"] = lambda h: "–" if h is None else f"{h:,.2f}" if h >= 0.1 else f"{h * 60:,.1f} min"
    return env.from_string(TEMPLATE).render(
        title=", ".join(sweeps) or "empty sweep", build=build, warning=backbone_warning(table),
        baseline_line=baseline_line.replace("`", ""), sizes=sizes(table, plans, inversions),
        paper={"header": header, "rows": list(zip(labels, values)),
               "legend": [line.replace("\\*", "*") for line in legend]},
        summary_header=summary_header, summary_rows=summary_rows, confidence=confidence, ci_method=CI_METHOD,
        comparisons=_comparison_rows(comparisons), several_baselines=len(set(_column(comparisons, "baseline"))) > 1,
        test=TEST, notes=notes, provenance=provenance(table), specs=spec_text(plans), plan_counts=plan_counts(plans),
        compute=compute(table, inversions, plans), plots=plots, study=study, searches=searches, errors=errors,
        n_errors=n_errors,
        page_size=page_size, n_samples=table.num_rows, generated_at=generated_at.strftime("%Y-%m-%d %H:%M UTC"),
        code_versions=sorted({v for v in _column(table, "code_version") if v}))


def _prune_temp(out: Path, older_than: float = 3600) -> None:
    """Remove temp files/folders of reports that died mid-way (old enough not to be another report's, running)."""
    now = time.time()
    for p in [*out.glob(".tmp-*"), *(out / "previews").glob(".tmp-*")]:
        if now - p.stat().st_mtime > older_than:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _prune_builds(out: Path, current: str) -> None:
    """Keep the newest KEEP_BUILDS builds and the previews they use; remove the rest."""
    builds = sorted((p for p in out.glob("build-*") if p.is_dir()), key=lambda p: (len(p.name), p.name), reverse=True)
    keep = [p for p in builds if p.name == current] + [p for p in builds if p.name != current][:KEEP_BUILDS - 1]
    for p in builds:
        if p not in keep:
            shutil.rmtree(p, ignore_errors=True)
    used: set[str] = set()
    for p in keep:
        try:
            used.update(json.loads((p / "previews.json").read_text()))
        except (OSError, ValueError):
            return  # a build whose list cannot be read: remove no preview
    for p in (out / "previews").glob("*.webp"):
        if p.name not in used:
            p.unlink(missing_ok=True)


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'">
<title>Sweep report: {{ title }}</title>
<link rel="stylesheet" href="{{ build }}/report.css">
</head>
<body>
<header class="top">
  <h1>Sweep report: {{ title }}</h1>
  <nav>
    <a href="#summary">Summary</a> {% if searches %}<a href="#search">Search</a> {% endif %}<a href="#provenance">How the numbers were made</a>
    <a href="#plots">Plots</a>
    {% if study %}<a href="#preference">User preference</a> {% endif %}<a href="#gallery">Gallery</a>
    <a href="#errors">Errors ({{ n_errors }})</a>
  </nav>
</header>
<main>
{% if warning %}
<p class="warning" id="random-weights" role="alert">{{ warning }}</p>
{% endif %}

<section id="summary">
<h2>Summary</h2>
<dl class="sizes">
{% for label, value in sizes %}<div><dt>{{ label }}</dt><dd>{{ value }}</dd></div>
{% endfor %}
</dl>
{% if baseline_line %}<p>{{ baseline_line }}</p>{% endif %}

<h3>Table 1 layout</h3>
{% if paper.rows %}
<div class="scroll"><table class="paper" id="paper-table">
<thead><tr>{% for h in paper.header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for label, cells in paper.rows %}
<tr>{% for l in label %}<th scope="row">{{ l }}</th>{% endfor %}
{% for c in cells %}<td class="num">{% if c.best %}<strong>{{ c.text }}</strong>{% else %}{{ c.text }}{% endif %}{% if c.dagger %}†{% endif %}{% if c.p_holm|stars %}<sup class="sig">{{ c.p_holm|stars }}</sup>{% endif %}</td>{% endfor %}</tr>
{% endfor %}
</tbody></table></div>
{% for line in paper.legend %}<p class="legend">{{ line }}</p>{% endfor %}
{% else %}
<p>No samples yet.</p>
{% endif %}

<h3>Per variant</h3>
<p class="legend">Mean over videos of the per-video mean, {{ "%.0f"|format(confidence * 100) }}% {{ ci_method }} below
each mean (none under the minimum number of videos: n too small). Error rows never enter a mean.</p>
<div class="scroll"><table id="variant-table">
<thead><tr><th>variant</th><th>n</th><th>videos</th><th>errors</th>{% for h in summary_header %}<th>{{ h }}</th>{% endfor %}</tr></thead>
<tbody>
{% for r in summary_rows %}
<tr><th scope="row">{{ r.label }}</th><td class="num">{{ r.n }}</td><td class="num">{{ r.videos }}</td>
<td class="num{% if r.errors %} bad{% endif %}">{{ r.errors }}</td>
{% for c in r.cells %}<td class="num">{% if c.best %}<strong>{{ c.text }}</strong>{% else %}{{ c.text }}{% endif %}{% if c.ci %}<br><small>{{ c.ci }}</small>{% endif %}</td>{% endfor %}</tr>
{% endfor %}
</tbody></table></div>

{% if comparisons %}
<details class="block" id="comparisons"{% if comparisons|length <= 60 %} open{% endif %}>
<summary><h3>Paired differences against the baseline ({{ comparisons|length }})</h3></summary>
<p class="legend">Units: (video, prompt, generation seed) at one checkpoint, present on both sides; differences
averaged within each video, then over videos. CI: {{ "%.0f"|format(confidence * 100) }}% {{ ci_method }}.
p: {{ test }}; p_holm: Holm over every comparison of the metric. * p_holm &lt; 0.05, ** p_holm &lt; 0.01.</p>
<div class="scroll"><table>
<thead><tr><th>variant</th><th>step</th>{% if several_baselines %}<th>baseline</th>{% endif %}<th>metric</th>
<th>units (unmatched)</th><th>videos</th><th>Δ mean</th><th>95% CI</th><th>p</th><th>p_holm</th></tr></thead>
<tbody>
{% for r in comparisons %}
<tr><th scope="row">{{ r.variant }}</th><td class="num">{{ r.checkpoint }}</td>{% if several_baselines %}<td>{{ r.baseline }}</td>{% endif %}
<td>{{ r.metric_label }}</td><td class="num">{{ r.n_units }} ({{ r.n_unmatched }})</td><td class="num">{{ r.n_videos }}</td>
<td class="num">{{ r.diff }}</td><td class="num">{{ r.ci }}</td><td class="num">{{ r.p_text }}</td>
<td class="num">{{ r.p_holm_text }}{% if r.stars %}<sup class="sig">{{ r.stars }}</sup>{% endif %}</td></tr>
{% endfor %}
</tbody></table></div>
</details>
{% endif %}
{% if notes %}
<h3>Notes</h3>
<ul>{% for n in notes %}<li>{{ n }}</li>{% endfor %}</ul>
{% endif %}
</section>

{% if searches %}
<section id="search">
<h2>Search</h2>
{% for s in searches %}
<h3 id="search-{{ s.sweep }}">{{ s.sweep }}{% if s.experiment %} <small>(Tune experiment {{ s.experiment }})</small>{% endif %}</h3>
<dl class="sizes">
<div><dt>objective</dt><dd>{{ s.formula }}</dd></div>
<div><dt>algorithm</dt><dd>{{ s.algorithm }}</dd></div>
<div><dt>scheduler</dt><dd>{{ s.scheduler }}</dd></div>
<div><dt>search samples</dt><dd>{{ s.trials }}{% if s.requested is not none %} of {{ s.requested }} requested{% endif %}</dd></div>
<div><dt>stopped early</dt><dd>{{ s.stopped_early }}</dd></div>
<div><dt>failed</dt><dd>{{ s.errors }}</dd></div>
</dl>
{% if s.best %}
<p id="search-best-{{ s.sweep }}"><strong>Best:</strong> {{ s.best.config_text }} at inversion step
<strong>{{ s.best.step }}</strong>: objective <strong>{{ s.best.objective_text }}</strong> (sample <code>{{ s.best.search }}</code>).</p>
{% if s.best.get("embeddings") %}
<details class="block"><summary>Its embeddings at step {{ s.best.step }} ({{ s.best.embeddings|length }})</summary>
<ul>{% for e in s.best.embeddings %}<li><code>{{ e }}</code></li>{% endfor %}</ul></details>
{% endif %}
{% else %}
<p id="search-best-{{ s.sweep }}">No best sample: none was scored.</p>
{% endif %}
{% if s.compute.known %}
<p class="estimate" id="search-compute-{{ s.sweep }}"><strong>Compute:</strong> {{ s.compute.run }} of
{{ s.compute.to_end }} inversion steps run ({{ s.compute.fraction }}), against running every sample to its end;
early stopping saved <strong>{{ s.compute.saved }} steps ({{ s.compute.saved_fraction }})</strong>. Wall time of the
search: {{ s.compute.seconds }}.</p>
{% else %}
<p class="estimate" id="search-compute-{{ s.sweep }}"><strong>Compute:</strong> the inversion steps run are not
recorded. Wall time of the search: {{ s.compute.seconds }}.</p>
{% endif %}
{% if s.plot %}
<div class="plots"><figure class="plot"><a href="{{ build }}/{{ s.plot.file }}"><img src="{{ build }}/{{ s.plot.file }}" alt="{{ s.plot.title }}"></a>
<figcaption><strong>{{ s.plot.title }}.</strong> {{ s.plot.caption }}</figcaption></figure></div>
{% endif %}
{% if s.samples %}
<p class="legend">The samples, best first (then by best objective). Steps: the last inversion step reached of the
sample's steps; objective at each step it was scored (its rungs and last step).</p>
<div class="scroll"><table id="search-table-{{ s.sweep }}">
<thead><tr><th></th><th>sample</th>{% for k in s.settings %}<th>{{ k }}</th>{% endfor %}<th>steps run / max</th>
<th>stopped early</th><th>best step</th><th>best objective</th><th>objective at each step</th><th>time</th><th>status</th></tr></thead>
<tbody>
{% for x in s.samples %}
<tr><td>{% if x.is_best %}<strong>★ best</strong>{% endif %}</td><td><code>{{ x.search }}</code></td>
{% for v in x.settings %}<td class="num">{{ v }}</td>{% endfor %}
<td class="num">{{ "{:,}".format(x.steps_run) }} / {{ "{:,}".format(x.steps_max) }}</td>
<td>{% if x.stopped_early %}yes, at step {{ x.steps_run }}{% elif x.status == "error" %}–{% else %}no{% endif %}</td>
<td class="num">{{ "–" if x.best_step is none else x.best_step }}</td>
<td class="num">{% if x.is_best %}<strong>{{ x.objective_text }}</strong>{% else %}{{ x.objective_text }}{% endif %}</td>
<td><small>{{ x.trace or "–" }}</small></td><td class="num">{{ x.seconds }}</td>
{% if x.status == "error" %}<td class="error-message">error: {{ x.error or "(no message)" }}</td>{% else %}<td>ok</td>{% endif %}</tr>
{% endfor %}
</tbody></table></div>
{% else %}
<p>No samples recorded (search.parquet is missing or empty).</p>
{% endif %}
{% endfor %}
</section>
{% endif %}

<section id="provenance">
<h2>How the numbers were made</h2>
{% if provenance %}
<div class="scroll"><table id="provenance-table">
<thead><tr><th>column</th><th>values (ok rows)</th><th>what it says</th></tr></thead>
<tbody>
{% for p in provenance %}
<tr><th scope="row"><code>{{ p.column }}</code></th>
<td>{% for v, n in p["values"] %}<span class="value">{{ v }}</span> <small>×{{ n }}</small>{% if not loop.last %}<br>{% endif %}{% endfor %}</td>
<td class="doc">{{ p.doc }}</td></tr>
{% endfor %}
</tbody></table></div>
{% endif %}

<h3 id="compute">Compute</h3>
{% if compute.spent %}
<div class="scroll"><table id="compute-table">
<thead><tr><th>device</th>{% for s in compute.stages %}<th>{{ s }}</th>{% endfor %}<th>total</th></tr></thead>
<tbody>
{% for r in compute.spent %}
<tr><th scope="row">{{ r.device }} <small>({{ r.kind }}-hours)</small></th>{% for s in compute.stages %}<td class="num">{{ r[s]|hours }}</td>{% endfor %}
<td class="num"><strong>{{ r.total|hours }}</strong></td></tr>
{% endfor %}
</tbody></table></div>
<p class="legend">Measured wall time recorded in the rows (hours; minutes when short): embedding optimisation and DDIM
inversion from the inversions table (embeddings taken from the store are not counted), generation and scoring from
the samples table.</p>
{% endif %}
{% for s in compute.saved %}
{% if s.get("note") %}
<p class="estimate">{{ s.sweep }}: no estimate of the compute saved by planning ({{ s.note }}).</p>
{% else %}
<p class="estimate" id="saved-{{ s.sweep }}"><strong>Estimate</strong> for {{ s.sweep }}: planning runs
{{ s.planned_text }} where one trial per grid point would run {{ s.naive_text }} (plan.json). At the time per step
measured on {{ s.devices|join(", ") }} ({{ s.per_step_text }}), that is about <strong>{{ s.naive_h|hours }}</strong>
naive against {{ s.planned_h|hours }} planned ({{ s.kind }}-hours): <strong>{{ s.saved_h|hours }} saved</strong>
{%- if s.ratio %} (×{{ "%.1f"|format(s.ratio) }}){% endif %}. An estimate: it assumes every step costs the measured
mean, and leaves out DDIM inversion and scoring.</p>
{% endif %}
{% endfor %}
{% for p in plan_counts %}
<details class="block"><summary>Work of {{ p.sweep }}: planned against naive (plan.json)</summary>
<table><thead><tr><th></th><th>planned</th><th>naive</th></tr></thead><tbody>
{% for label, planned, naive in p.rows %}<tr><th scope="row">{{ label }}</th><td class="num">{{ "{:,}".format(planned) }}</td><td class="num">{{ "–" if naive is none else "{:,}".format(naive) }}</td></tr>
{% endfor %}
</tbody></table></details>
{% endfor %}
{% for sweep, text in specs.items() %}
<details class="block"><summary>Spec of {{ sweep }} (plan.json)</summary><pre class="spec">{{ text }}</pre></details>
{% endfor %}
</section>

<section id="plots">
<h2>Plots</h2>
{% if plots %}
<div class="plots">
{% for p in plots %}
<figure class="plot"><a href="{{ build }}/{{ p.file }}"><img src="{{ build }}/{{ p.file }}" alt="{{ p.title }}"></a>
<figcaption><strong>{{ p.title }}.</strong> {{ p.caption }}</figcaption></figure>
{% endfor %}
</div>
{% else %}
<p>No metric values to plot yet.</p>
{% endif %}
</section>

{% if study %}
<section id="preference">
<h2>User preference</h2>
{% for s in study %}
<h3>{{ s.sweep }}: {{ s.n_votes }} votes</h3>
<p class="legend">First presentations only (repeats measure rater consistency). Win rate of the first variant of each
pair with a Wilson 95% interval and a two-sided exact binomial p; Bradley–Terry log-strengths θ (mean 0) with 95%
bootstrap intervals over raters. `motion-sweep study results` prints the same tables.</p>
<div class="scroll"><table class="pairs">
<thead><tr><th>study</th><th>question</th><th>pair</th><th>votes</th><th>win rate of the first [95% CI]</th><th>p</th></tr></thead>
<tbody>
{% for r in s.pairs %}
<tr><td>{{ r.study }}</td><td>{{ r.question }}</td><td>{{ r.variant_a }} <em>vs</em> {{ r.variant_b }}</td><td class="num">{{ r.n_votes }}</td>
<td class="num">{{ r.win_rate_a|num(3) }} [{{ r.ci_low|num(3) }}, {{ r.ci_high|num(3) }}]</td><td class="num">{{ r.p|num(3) }}</td></tr>
{% endfor %}
</tbody></table></div>
<div class="scroll"><table class="bradley-terry">
<thead><tr><th>study</th><th>question</th><th>variant</th><th>θ [95% CI]</th><th>strength</th><th>wins / votes</th></tr></thead>
<tbody>
{% for r in s.bradley_terry %}
<tr><td>{{ r.study }}</td><td>{{ r.question }}</td><td>{{ r.variant }}</td>
<td class="num">{{ r.log_strength|num(3, True) }}{% if r.ci_low is not none %} [{{ r.ci_low|num(3, True) }}, {{ r.ci_high|num(3, True) }}]{% endif %}</td>
<td class="num">{{ r.strength|num(3) }}</td><td class="num">{{ r.n_wins }} / {{ r.n_votes }}</td></tr>
{% endfor %}
</tbody></table></div>
<div class="scroll"><table class="user-preference">
<thead><tr><th>variant</th><th>user preference [Wilson 95% CI]</th><th>wins / votes</th><th>raters</th><th>questions</th></tr></thead>
<tbody>
{% for r in s.user_preference %}
<tr><td>{{ r.variant }}</td><td class="num">{{ r.user_preference|num(3) }} [{{ r.ci_low|num(3) }}, {{ r.ci_high|num(3) }}]</td>
<td class="num">{{ r.n_wins }} / {{ r.n_votes }}</td><td class="num">{{ r.n_raters }}</td><td>{{ r.questions }}</td></tr>
{% endfor %}
</tbody></table></div>
{% endfor %}
</section>
{% endif %}

<section id="gallery" data-page-size="{{ page_size }}">
<h2>Gallery</h2>
<p class="legend">Each group: the reference clip, then every variant's clip for one video, prompt and generation seed,
labelled with the axis values that ran (applied) and the clip's metrics. Previews are small looping copies; a
local clip opens at full size when clicked. Error rows are shown with their message.</p>
<form class="filters" id="filters"></form>
<p id="gallery-count" aria-live="polite">{{ n_samples }} samples</p>
<div id="gallery-groups"></div>
<nav class="pager" aria-label="gallery pages">
  <button type="button" id="page-prev">← previous</button>
  <span id="page-info"></span>
  <button type="button" id="page-next">next →</button>
</nav>
<noscript><p>The gallery needs JavaScript.</p></noscript>
</section>

<section id="errors">
<h2>Errors ({{ n_errors }})</h2>
{% if errors %}
<div class="scroll"><table id="errors-table">
<thead><tr><th>table</th><th>variant</th><th>step</th><th>video</th><th>prompt</th><th>seed</th><th>error</th><th>trial</th></tr></thead>
<tbody>
{% for r in errors %}
<tr><td>{{ r.table }}</td><td>{{ r.variant }}</td><td class="num">{{ "" if r.step is none else r.step }}</td>
<td>{{ r.video }}</td><td>{{ r.prompt or "" }}</td><td class="num">{{ "" if r.seed is none else r.seed }}</td>
<td class="error-message">{{ r.error }}</td><td><code>{{ r.trial or "" }}</code></td></tr>
{% endfor %}
</tbody></table></div>
{% if n_errors > errors|length %}<p>… and {{ n_errors - errors|length }} more (in the samples and inversions tables).</p>{% endif %}
{% else %}
<p>None.</p>
{% endif %}
</section>
</main>
<footer>Generated {{ generated_at }} by motion-sweep{% if code_versions %}; rows written by {{ code_versions|join(", ") }}{% endif %}.
The tables under the sweep folder are the record (<code>from sweep import load</code>).</footer>
<script src="{{ build }}/gallery.js"></script>
<script src="{{ build }}/report.js"></script>
</body>
</html>
"""
