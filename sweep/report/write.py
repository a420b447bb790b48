"""The report of a sweep, written: load the tables once, summarize, compare, fit the factorial effects, then print
and save summary.md, summary.csv, each sweep's comparisons.parquet and effects.parquet and (with `html`) the
browsable page.

    from sweep.report import report
    report("results/paper-ablation")   # prints; writes summary.md/.csv, <sweep>/comparisons.parquet and
                                       # <sweep>/effects.parquet, report/index.html
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

from sweep.results.schemas import COMPARISONS_SCHEMA
from sweep.results.tables import load, write_comparisons, write_effects
from vocabulary import SAMPLE_METRICS

from .compare import BaselineError, compare
from .effects import effects as factorial_effects
from .markdown import render, render_brief
from .preference import with_user_preference
from .stats import MIN_VIDEOS, column
from .summary import summarize, summary_notes


def report(path: str | os.PathLike, out_dir: Optional[str | os.PathLike] = None, *, baseline: Optional[str] = None,
           reference_features: Optional[np.ndarray] = None, metrics: Sequence[str] = SAMPLE_METRICS,
           n_boot: int = 9999, seed: int = 0, confidence: float = 0.95, min_videos: int = MIN_VIDEOS,
           echo: bool = True, brief: bool = False, fid_functions: Optional[tuple[Callable, Callable]] = None,
           html: bool = True) -> pa.Table:
    """Summarize and compare the samples under `path` (a sweep folder or a storage root), print the report,
    write summary.md and summary.csv to `out_dir` (default: `path` when local, else the current directory),
    each sweep's comparisons as `<sweep>/comparisons.parquet` (`load(path, "comparisons")`), its factorial effects
    as `<sweep>/effects.parquet` (`load(path, "effects")`, `sweep.report.effects`) and, with `html`,
    the browsable report `<out_dir>/report/index.html` (`sweep.report.html`; `html_report_path`). With `echo` it
    prints the whole markdown, or with `brief` only the heading and the paper-style table, then where the files are.

    baseline: variant id every variant is compared with (default: the paper's full method; BaselineError
    when it is given and absent). Returns the summary table.
    """
    table = load(path)
    summary = summarize(table, metrics=metrics, references=load(path, "references"),
                        reference_features=reference_features, n_boot=n_boot, seed=seed, confidence=confidence,
                        min_videos=min_videos, fid_functions=fid_functions)
    notes = summary_notes(summary)
    summary = with_user_preference(summary, path)
    try:
        comparisons = compare(table, baseline, metrics, n_boot=n_boot, seed=seed, confidence=confidence,
                              min_videos=min_videos)
    except BaselineError as exc:
        if baseline is not None:
            raise
        notes.append(f"no paired comparisons: {exc}")
        comparisons = COMPARISONS_SCHEMA.empty_table()
    sweeps = sorted({s for s in column(table, "sweep") if s})
    written = write_comparisons(path, comparisons, sweeps)  # also when empty: no stale file from an older report
    found = factorial_effects(table, comparisons, metrics, n_boot=n_boot, seed=seed, confidence=confidence,
                              min_videos=min_videos)
    notes += found.notes
    written += write_effects(path, found.table, sweeps)
    used = sorted(set(comparisons["baseline"].to_pylist()))
    baseline_line = (f"Baseline: {', '.join(f'`{b}`' for b in used)}"
                     + (" (given)." if baseline else " (the paper's full method).") if used else "")
    title = ", ".join(sweeps) or str(path)
    text = render(title, table, summary, comparisons, notes, metrics, baseline_line, effects=found.table)

    out_dir = _out_dir(path, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(text)
    with open(out_dir / "summary.csv", "w", newline="") as f:  # an export: the Parquet tables are the record
        writer = csv.writer(f)
        writer.writerow(summary.column_names)
        for rec in summary.to_pylist():
            writer.writerow(["" if rec[c] is None else rec[c] for c in summary.column_names])
    if html:
        from .html import write_html_report  # (loads on first use: the page's libraries are not needed before)

        written.append(str(write_html_report(
            path, html_report_path(path, out_dir).parent, table=table, summary=summary, comparisons=comparisons,
            notes=notes, baseline_line=baseline_line, metrics=metrics, effects=found.table)))
    if echo:
        print(render_brief(title, table, summary, comparisons) if brief else text)
        print(f"wrote {out_dir / 'summary.md'}, {out_dir / 'summary.csv'}"
              + "".join(f", {w}" for w in written))
    return summary


def html_report_path(path: str | os.PathLike, out_dir: Optional[str | os.PathLike] = None) -> Path:
    """The index.html that `report(path, out_dir)` writes (absolute)."""
    return (_out_dir(path, out_dir) / "report" / "index.html").resolve()


def _out_dir(path: str | os.PathLike, out_dir: Optional[str | os.PathLike]) -> Path:
    """Where `report` writes: `out_dir`, else the sweep folder (or storage root) when local, else the current folder."""
    return Path(out_dir if out_dir is not None else path if "://" not in str(path) else ".")
