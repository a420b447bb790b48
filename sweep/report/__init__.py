"""The report of a sweep: statistics, summaries, paired comparisons, summary.md and the browsable HTML page.

    from sweep.results.tables import load
    from sweep.report import compare, effects, report, summarize
    path = "results/paper-ablation"
    summary = summarize(load(path), references=load(path, "references"))  # per variant × checkpoint
    comparisons = compare(load(path))         # every variant against the paper's full method, paired
    found = effects(load(path), comparisons)  # the design factors' effects, interactions, variance shares
    report(path)                              # prints; writes summary.md/.csv, <sweep>/comparisons.parquet and
                                              # <sweep>/effects.parquet, the page

Modules, in the order the report uses them:
    stats.py        CIs over videos, the signed-rank test, Holm, best values, per-video means, column readers
    references.py   the real frames FID/KID compare against, and the pooling of frame features
    summary.py      summarize: counts, means with CIs, FID/KID per variant × checkpoint; its notes
    compare.py      compare: every variant against the baseline, paired; BaselineError
    effects.py      effects: the factorial effects of MQK design × MV design × debias (contrasts tested over videos
                    as compare tests differences, a linear mixed model's Wald numbers and variance shares)
    preference.py   with_user_preference: the study's votes joined onto the summary
    format.py       numbers, significance marks, CI texts and row labels, for summary.md and the page alike
    markdown.py     summary.md: the paper's Table 1 (paper_cells, paper_table), the sections, render
    write.py        report(): load once, summarize, compare, fit the effects, write the files; html_report_path
    html.py         write_html_report: the page's build folder swapped in atomically, render_page
    page.py         the page's facts: sizes, provenance, compute, plan, spec, study, search, table rows
    plots.py        the page's matplotlib plots (SVG)
    gallery.py      the page's gallery index and the clips' WebP previews
    templates/report.html, assets/report.css, assets/report.js   the page's template, style and script

`write_html_report` (and with it Jinja2, matplotlib and Pillow) loads on first use; statsmodels with the first
mixed-model fit.
"""

from __future__ import annotations

from typing import Any

from .compare import BaselineError, compare, paper_method_variants
from .effects import Effects, effects
from .markdown import backbone_warning, paper_cells, paper_table, render
from .preference import with_user_preference
from .references import reference_frames
from .stats import MIN_VIDEOS, best_rows, holm, signed_rank_p, video_ci
from .summary import summarize, summary_notes
from .write import html_report_path, report

__all__ = ["BaselineError", "Effects", "MIN_VIDEOS", "backbone_warning", "best_rows", "compare", "effects", "holm",
           "html_report_path", "paper_cells", "paper_method_variants", "paper_table", "reference_frames", "render",
           "report", "signed_rank_p", "summarize", "summary_notes", "video_ci", "with_user_preference",
           "write_html_report"]


def __getattr__(name: str) -> Any:
    if name == "write_html_report":
        from .html import write_html_report

        return write_html_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
