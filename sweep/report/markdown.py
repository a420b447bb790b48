"""The report as markdown (summary.md, and printed as is), and the paper's Table 1 as data for both pages:
heading, the Table 1 layout, the per-variant summary, the paired comparisons, the factorial effects, notes.
"""

from __future__ import annotations

from typing import Optional, Sequence

import pyarrow as pa

from vocabulary import METRICS, PAPER_COLUMNS, SAMPLE_METRICS

from .compare import design_limits
from .format import N_TOO_SMALL, difference_ci, digits_of, mean_ci, num, stars
from .effects import EFFECTS_TEST
from .effects import term_order
from .stats import CI_METHOD, PAIRED_CI_METHOD, STEP, TEST, best_rows, column
from .summary import summary_confidence, summary_min_videos


def render(title: str, table: pa.Table, summary: pa.Table, comparisons: pa.Table, notes: Sequence[str],
           metrics: Sequence[str] = SAMPLE_METRICS, baseline_line: str = "", *,
           effects: Optional[pa.Table] = None) -> str:
    """The report as markdown: heading (saying so when metric backbones had random weights), the paper-style
    table, the per-variant summary, the paired comparisons, the factorial effects (`sweep.report.effects`), notes."""
    status = column(table, "status")
    heading = _heading(title, table)
    n_ok, n_err = status.count("ok"), status.count("error")
    confidence = summary_confidence(summary)
    min_videos = summary_min_videos(summary)
    refs = sorted({r for r in column(summary, "fid_reference") if r})
    lines = [heading, "", f"{table.num_rows} samples ({n_ok} ok, {n_err} error{'' if n_err == 1 else 's'}; error rows never enter a "
             "statistic). "
             + baseline_line, ""]
    if refs:
        lines += [f"FID/KID reference: {'; '.join(refs)}.", ""]
    header, legend = paper_table(summary, comparisons)
    lines += ["## Table 1 layout", "", *header, "", *legend, "",
              "## Per variant", "",
              f"Mean over videos of the per-video mean, {confidence:.0%} {CI_METHOD} (none under {min_videos} videos: "
              "n too small). FID/KID: pooled frames of the variant against the reference frames; frames gen/ref and "
              "the feature dimension are shown, † marks an unreliable FID (frames < dim).", "",
              *_summary_section(summary, metrics), ""]
    if comparisons.num_rows:
        lines += ["## Paired differences against the baseline", "",
                  f"Units: (video, prompt, generation seed) at one checkpoint, present on both sides (unmatched ones "
                  f"dropped); differences averaged within each video, then over videos. CI: {confidence:.0%} "
                  f"{PAIRED_CI_METHOD}. p: {TEST}; p_holm: Holm over every comparison of the metric.", "",
                  *_comparisons_section(comparisons), "", *(f"{line}\n" for line in design_limits(comparisons).values())]
    if effects is not None and effects.num_rows:
        lines += ["## Factorial effects", "",
                  "Which design factor matters, by how much, per metric (columns) and checkpoint. A main effect is "
                  "\"level − the paper's level\" averaged over the other factors; an interaction is a difference of "
                  "differences; each factor is fitted where it exists (subset). Estimate: mean over videos of the "
                  f"per-video contrast; p: {EFFECTS_TEST}; \\* / \\*\\* p_holm < 0.05 / 0.01 (Holm over every "
                  "term of the metric); removals: the paired comparisons above. Variance shares: a linear mixed "
                  "model (random intercept per video, prompt within video). CIs, the mixed model's Wald numbers "
                  "and notes: `load(path, \"effects\")` and the HTML report.", "",
                  *_effects_section(effects), ""]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


def render_brief(title: str, table: pa.Table, summary: pa.Table, comparisons: pa.Table) -> str:
    """The answer in a few lines, for the end of `motion-sweep run`/`demo`: the heading (with its warning) and the
    paper-style table with its legend; summary.md holds the rest."""
    header, legend = paper_table(summary, comparisons)
    return "\n".join([_heading(title, table), "", *header, "", *legend])


def _heading(title: str, table: pa.Table) -> str:
    """The report's first line, saying so when the numbers come from random-weight backbones or the toy world."""
    warning = backbone_warning(table)
    return f"# Summary: {title}" + (f" — {warning}" if warning else "")


def backbone_warning(table: pa.Table) -> Optional[str]:
    """What the report's first line says about where the numbers come from, when it is not a real model with
    trained metric backbones: random-weight metric backbones (plumbing only), or the toy world (the method in
    miniature); None otherwise."""
    status = column(table, "status")
    pretrained = [p for p, s in zip(column(table, "pretrained_metrics"), status) if s == "ok" and p is not None]
    if pretrained and not all(pretrained):
        return (f"RANDOM-WEIGHT METRIC BACKBONES ({pretrained.count(False)} of {len(pretrained)} rows): "
                "these numbers test the plumbing, not the method")
    presets = {p for p, s in zip(column(table, "preset"), status) if s == "ok"}
    if "toy" in presets:
        return ("TOY-WORLD NUMBERS: a tiny text-to-video model and CLIP trained on moving shapes (preset toy); "
                "they show the method's effects in miniature, not ZeroScope's")
    return None


def paper_table(summary: pa.Table, comparisons: Optional[pa.Table] = None) -> tuple[list[str], list[str]]:
    """The paper's Table 1 layout: a row per variant (× checkpoint), vocabulary.PAPER_COLUMNS that have values,
    the best value per column in bold (direction-aware), * / ** where the Holm-adjusted paired test against
    the baseline gives p < 0.05 / 0.01 (FID has no paired test), † on FIDs from fewer frames than dimensions.
    Returns (markdown lines, legend lines)."""
    header, labels, values, legend = paper_cells(summary, comparisons)
    cells = [[*label, *(("**{}**" if c["best"] else "{}").format(c["text"] + ("†" if c["dagger"] else ""))
                        + _markdown_stars(c["p_holm"]) for c in row)] for label, row in zip(labels, values)]
    return _md_table(header, cells), legend


def paper_cells(summary: pa.Table, comparisons: Optional[pa.Table] = None
                ) -> tuple[list[str], list[list[str]], list[list[dict]], list[str]]:
    """The paper's Table 1 as data (what `paper_table` prints and the HTML report shows): (header, label cells of
    each row, value cells of each row, legend). A value cell is {"metric", "value", "text", "best", "dagger",
    "p_holm"}: `text` the number as shown, `best` the column's best (direction-aware), `dagger` an FID from fewer
    frames than dimensions, `p_holm` the Holm-adjusted paired p against the baseline behind the * / ** marks
    (None: no paired test, e.g. FID)."""
    recs = summary.to_pylist()
    group_cols = [c for c in ("sweep", "variant", STEP) if c in summary.column_names]
    columns = [m for m in PAPER_COLUMNS
               if any(_paper_value(r, m) is not None for r in recs)]
    # comparisons are per sweep; a summary without a sweep column holds one sweep
    sweep_of = (lambda s: s) if "sweep" in group_cols else (lambda s: None)  # noqa: E731
    marks: dict[tuple, float] = {}
    baselines: set = set()
    for r in (comparisons.to_pylist() if comparisons is not None else []):
        if r["p_holm"] is not None:  # several comparisons of one row (baselines, or the base model against
            # each checkpoint): marked only when significant in each
            step = r["variant_checkpoint"] if r["variant_checkpoint"] is not None else r["checkpoint"]
            key = (sweep_of(r["sweep"]), r["variant"], r["metric"], step)
            marks[key] = max(marks.get(key, 0.0), r["p_holm"])
        baselines.add((sweep_of(r["sweep"]), r["baseline"]))
    header = [*_header_of(group_cols), *(f"{METRICS[m].display} {METRICS[m].arrow}" for m in columns)]
    labels = [_group_label(r, group_cols) for r in recs]
    for i, r in enumerate(recs):
        if (r.get("sweep"), r["variant"]) in baselines:
            labels[i][group_cols.index("variant")] += " (baseline)"
    values: list[list[dict]] = [[] for _ in recs]
    unreliable = False
    for m in columns:
        vals = [_paper_value(r, m) for r in recs]
        best = best_rows(vals, m, digits_of(m))
        for i, (r, v) in enumerate(zip(recs, vals)):
            dagger = m == "fid" and v is not None and r.get("fid_reliable") is False
            unreliable |= dagger
            values[i].append({"metric": m, "value": v, "text": num(v, digits_of(m)), "best": i in best,
                              "dagger": dagger, "p_holm": marks.get((r.get("sweep"), r["variant"], m, r.get(STEP)))})
    legend = [r"Best value per column in bold (↑ higher is better, ↓ lower). \* p_holm < 0.05, \*\* p_holm < 0.01 "
              f"against the baseline ({TEST}; Holm over every comparison of the metric); FID has no paired test."]
    if unreliable:
        legend.append("† FID from fewer frames than feature dimensions (singular covariance): unreliable, read KID.")
    if "user_preference" in columns:
        legend.append("User preference: the Bradley–Terry probability of beating a variant drawn at random from the "
                      "others compared (0.5 on average; not the paper's share of votes), rater-clustered 95% CI in "
                      "summary.csv.")
    elif "user_preference" in summary.column_names:  # votes, but no common scale for these rows
        legend.append("User preference: the studies' comparisons form unconnected groups of variants, so there is "
                      "no common scale; `motion-sweep study results` gives each group's.")
    else:
        legend.append("User preference: no votes yet.")
    return header, labels, values, legend


def _summary_section(summary: pa.Table, metrics: Sequence[str]) -> list[str]:
    recs = summary.to_pylist()
    cols = summary.column_names
    group_cols = [c for c in cols if not (c.startswith(("n_", "fid", "kid", "user_preference"))
                                          or any(c.startswith(f"{m}_") for m in metrics))]
    present = [m for m in metrics if f"{m}_mean" in cols and summary[f"{m}_mean"].null_count < summary.num_rows]
    header = [*_header_of(group_cols), "n", "videos", "errors", *(f"{m} {METRICS[m].arrow}" if m in METRICS else m
                                                                   for m in present)]
    has_fid = "fid" in cols
    if has_fid:
        header += ["FID ↓", "KID ↓", "frames gen/ref", "dim"]
    rows = [[*_group_label(r, group_cols), str(r["n_samples"]), str(r["n_videos"]), str(r["n_errors"])] for r in recs]
    min_videos = summary_min_videos(summary)
    for m in present:
        best = best_rows([r[f"{m}_mean"] for r in recs], m) if m in METRICS else set()
        for i, r in enumerate(recs):
            ci = mean_ci(r, m, min_videos)
            text = num(r[f"{m}_mean"]) + (f" ({ci})" if ci == N_TOO_SMALL else f" {ci}" if ci else "")
            rows[i].append(f"**{text}**" if i in best else text)
    if has_fid:
        best_fid, best_kid = best_rows([r["fid"] for r in recs], "fid", 2), best_rows([r["kid"] for r in recs], "kid")
        for i, r in enumerate(recs):
            fid = num(r["fid"], 2) + ("†" if r["fid_reliable"] is False else "")
            ref = "–" if r["fid_n_reference_frames"] is None else str(r["fid_n_reference_frames"])
            rows[i] += [f"**{fid}**" if i in best_fid else fid,
                        f"**{num(r['kid'])}**" if i in best_kid else num(r["kid"]),
                        f"{r['fid_n_frames']}/{ref}", "–" if r["fid_dim"] is None else str(r["fid_dim"])]
    return _md_table(header, rows)


def _comparisons_section(comparisons: pa.Table) -> list[str]:
    header = ["variant", "step", "baseline", "metric", "units (unmatched)", "videos", "Δ mean", "95% CI", "p",
              "p_holm"]
    if len({r for r in comparisons["baseline"].to_pylist()}) == 1:
        header.remove("baseline")
    rows = []
    for r in sorted(comparisons.to_pylist(), key=lambda r: (r["sweep"], r["metric"], r["variant"], r["checkpoint"])):
        row = [r["variant"], str(r["checkpoint"]), r["baseline"], r["metric"], f"{r['n_units']} ({r['n_unmatched']})",
               str(r["n_videos"]), num(r["mean_difference"], sign=True), difference_ci(r), num(r["p"]),
               num(r["p_holm"]) + _markdown_stars(r["p_holm"])]
        if "baseline" not in header:
            row.pop(2)
        rows.append(row)
    return _md_table(header, rows)


def _effects_section(effects: pa.Table) -> list[str]:
    """The effects as one table per sweep × setting × checkpoint: a row per subset × term, a column per metric."""
    recs = effects.to_pylist()
    metrics = list(dict.fromkeys(r["metric"] for r in recs))
    out = []
    for key in sorted({(r["sweep"], r["setting"] or "", r["checkpoint"]) for r in recs}, key=str):
        mine = [r for r in recs if (r["sweep"], r["setting"] or "", r["checkpoint"]) == key]
        terms = list(dict.fromkeys((r["subset"], r["term"]) for r in sorted(mine, key=term_order)))
        cell = {(r["subset"], r["term"], r["metric"]): r for r in mine}
        rows = []
        for subset, term in terms:
            found = [cell[(subset, term, m)] for m in metrics if (subset, term, m) in cell]
            n = sorted({(r["n_videos"], r["n_units"]) for r in found})
            rows.append([subset, term, " / ".join(f"{v} ({u})" for v, u in n),
                         *(_effect_text(cell.get((subset, term, m))) for m in metrics)])
        sweep, setting, step = key
        out += [f"{sweep}{f', {setting}' if setting else ''}, step {step}:", "",
                *_md_table(["subset", "term", "videos (units)",
                            *(f"{METRICS[m].display} {METRICS[m].arrow}" if m in METRICS else m for m in metrics)],
                           rows), ""]
    return out[:-1]


def _effect_text(r: Optional[dict]) -> str:
    """An effects row's estimate as the markdown table shows it: a share in percent, else signed with its stars."""
    if r is None:
        return "–"
    if r["kind"] == "variance":
        return "–" if r["estimate"] is None else f"{r['estimate']:.0%}"
    return num(r["estimate"], sign=True) + _markdown_stars(r["p_holm"])


def _markdown_stars(p: Optional[float]) -> str:
    """`format.stars`, escaped so markdown shows asterisks (not emphasis)."""
    return stars(p).replace("*", r"\*")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table with padded cells (readable printed, valid markdown)."""
    esc = [[c.replace("|", "\\|") for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in esc) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return [line(esc[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in esc[1:])]


def _group_label(rec: dict, group_cols: Sequence[str]) -> list[str]:
    return ["" if rec[c] is None else str(rec[c]) for c in group_cols]


def _header_of(group_cols: Sequence[str]) -> list[str]:
    return ["step" if c == STEP else c for c in group_cols]


def _paper_value(rec: dict, metric: str) -> Optional[float]:
    """A summary row's value of a paper column: FID pooled, user preference per variant, else the mean."""
    return rec.get(metric if metric in ("fid", "user_preference") else f"{metric}_mean")
