"""The browsable report of a sweep: `<out>/report/index.html`, written by `report()` (and so by `motion-sweep
report` and the demo). It opens from disk with no server and works offline (no CDN, no network).

    report/index.html              the page; replaced atomically, after everything it refers to is in place
    report/build-<id>/             what that page refers to: report.css, report.js, gallery.js (the gallery's
                                   index, JSON), plots/*.svg. The previous build is kept for a page still open.
    report/previews/<hash>.webp    small looping previews of the clips (`gallery`)

The page is templates/report.html (Jinja2, autoescaped: all text from the tables is escaped) filled with the
facts of `page`, the plots of `plots` and the gallery of `gallery`; assets/ holds its CSS and JS (report.js draws
the gallery with `textContent`). What it shows, top to bottom: a warning when the rows were scored with
random-weight metric backbones (as summary.md's heading says); the summary (the paper-style table, per-variant
means with their CIs, paired differences, the factorial effects with their plots, exactly as computed by
`summary`/`compare`/`effects`: nothing here computes a statistic); the search, per sweep that ran one; how the
numbers were made (provenance, compute, plan, spec); the plots; user preference, when the sweep has votes; the
gallery; the errors.

This module, and with it Jinja2, matplotlib and Pillow, loads only when a page is written (`report()` imports it).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import jinja2
import pyarrow as pa

from sweep.results.store import Store
from sweep.results.tables import load, sweep_stores
from vocabulary import SAMPLE_METRICS

from .format import num, stars
from .gallery import PREVIEW_HEIGHT, gallery_index
from .markdown import backbone_warning, paper_cells
from .effects import EFFECTS_TEST
from .page import (comparison_rows, compute, effect_rows, error_rows, plan_counts, provenance, search_sections, sizes,
                   spec_text, study_sections, variant_rows)
from .plots import make_effect_plots, make_plots, search_plot
from .stats import CI_METHOD, TEST, column
from .summary import summary_confidence

PAGE_SIZE = 20             #: gallery groups per page
KEEP_BUILDS = 2            #: builds kept: the current one and the one a page opened before may still use
ASSETS = ("report.css", "report.js")
HEAVY = ("fid_features",)  #: list columns the page never shows ([frames][dim] floats per row)


def write_html_report(path: str | os.PathLike, out: str | os.PathLike, *, table: pa.Table, summary: pa.Table,
                      comparisons: pa.Table, notes: Sequence[str] = (), baseline_line: str = "",
                      metrics: Sequence[str] = SAMPLE_METRICS, page_size: Optional[int] = None,
                      preview_height: int = PREVIEW_HEIGHT, generated_at: Optional[dt.datetime] = None,
                      effects: Optional[pa.Table] = None) -> Path:
    """Write the report of the sweep(s) under `path` into the folder `out` (usually `<sweep>/report`) from the
    tables `report()` loaded and computed; returns the path of index.html. page_size: gallery groups per page
    (default PAGE_SIZE)."""
    out = Path(out).resolve()
    (out / "previews").mkdir(parents=True, exist_ok=True)
    table = table.drop_columns([c for c in HEAVY if c in table.column_names])  # rows become Python dicts below
    sweeps = sweep_stores(path)
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
        effect_plots = make_effect_plots(effects, build / "plots") if effects is not None else []
        searches = [{**s, "plot": search_plot(s, build / "plots")} for s in search_sections(path, sweeps)]
        gallery, previews_used = gallery_index(table, path, out / "previews", present, preview_height)
        data = json.dumps(gallery, ensure_ascii=False, separators=(",", ":"))
        (build / "gallery.js").write_text(f"window.REPORT_GALLERY = {data};\n", encoding="utf-8")
        (build / "previews.json").write_text(json.dumps(sorted(previews_used)))
        for name in ASSETS:
            (build / name).write_bytes(resources.files(__package__).joinpath("assets", name).read_bytes())
        page = render_page(
            build=build_name, plots=plots, page_size=page_size or PAGE_SIZE, table=table, summary=summary,
            comparisons=comparisons, notes=notes, baseline_line=baseline_line, metrics=present, plans=plans,
            inversions=inversions, study=study_sections(sweeps), searches=searches,
            generated_at=generated_at or dt.datetime.now(dt.timezone.utc), effects=effects, effect_plots=effect_plots)
        os.replace(build, out / build_name)  # a new name: no page refers to it yet
    finally:
        shutil.rmtree(build, ignore_errors=True)
    index = out / "index.html"
    Store(str(index.parent)).write_bytes_atomic(index.name, page.encode())
    _prune_builds(out, build_name)
    return index


def render_page(*, build: str, plots: list[dict], page_size: int, table: pa.Table, summary: pa.Table,
                comparisons: pa.Table, notes: Sequence[str], baseline_line: str, metrics: Sequence[str],
                plans: dict, inversions: pa.Table, study: list[dict], generated_at: dt.datetime,
                searches: Sequence[dict] = (), effects: Optional[pa.Table] = None,
                effect_plots: Sequence[dict] = ()) -> str:
    """The page (templates/report.html) of the tables, the plots and the sections already made."""
    header, labels, values, legend = paper_cells(summary, comparisons)
    sweeps = sorted({s for s in column(table, "sweep") if s}) or sorted(plans)
    summary_header, summary_rows = variant_rows(summary, metrics)
    errors, n_errors = error_rows(table, inversions)
    confidence = summary_confidence(summary)
    return _template().render(
        title=", ".join(sweeps) or "empty sweep", build=build, warning=backbone_warning(table),
        baseline_line=baseline_line.replace("`", ""), sizes=sizes(table, plans, inversions),
        paper={"header": header, "rows": list(zip(labels, values)),
               "legend": [line.replace("\\*", "*") for line in legend]},
        summary_header=summary_header, summary_rows=summary_rows, confidence=confidence, ci_method=CI_METHOD,
        comparisons=comparison_rows(comparisons), several_baselines=len(set(column(comparisons, "baseline"))) > 1,
        effects=effect_rows(effects), effect_plots=list(effect_plots), effects_test=EFFECTS_TEST,
        test=TEST, notes=notes, provenance=provenance(table), specs=spec_text(plans), plan_counts=plan_counts(plans),
        compute=compute(table, inversions, plans), plots=plots, study=study, searches=searches, errors=errors,
        n_errors=n_errors,
        page_size=page_size, n_samples=table.num_rows, generated_at=generated_at.strftime("%Y-%m-%d %H:%M UTC"),
        code_versions=sorted({v for v in column(table, "code_version") if v}))


def _template() -> jinja2.Template:
    """templates/report.html, autoescaped; an undefined name is an error, not an empty string."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = num
    env.filters["stars"] = stars
    env.filters["hours"] = _hours
    text = resources.files(__package__).joinpath("templates", "report.html").read_text(encoding="utf-8")
    return env.from_string(text)


def _hours(h: Optional[float]) -> str:
    """Device-hours as the compute table shows them: hours, or minutes when under 0.1 h."""
    return "–" if h is None else f"{h:,.2f}" if h >= 0.1 else f"{h * 60:,.1f} min"


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
