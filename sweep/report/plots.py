"""The report's plots: matplotlib on an Agg canvas (no pyplot, no global backend switch), saved as small SVGs
(same plot, same bytes): each metric per variant with its CIs, each metric against the checkpoint step, the
inversion loss curves, motion fidelity against appearance leakage, each search's objective against the step, and
the factorial effects (each term's estimate with its CI per metric, and the variance shares).
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import numpy as np
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vocabulary import METRICS, applied

from .effects import term_order
from .format import row_labels
from .stats import CI_METHOD, STEP, finite

PLOT_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "motion-sweep", "font.size": 8, "axes.titlesize": 9,
              "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
              "legend.fontsize": 7, "legend.frameon": False, "axes.formatter.useoffset": False}


def make_plots(summary: pa.Table, inversions: pa.Table, metrics: Sequence[str], folder: Path) -> list[dict]:
    """Write the plots into `folder`; returns [{file, title, caption}] (file relative to the build folder)."""
    recs = summary.to_pylist()
    labels = row_labels(recs)
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


def make_effect_plots(effects: pa.Table, folder: Path) -> list[dict]:
    """The factorial effects (`sweep.report.effects`): per metric, each term's estimate with its CI over videos, a
    colour per checkpoint (`effects-<metric>.svg`); and the mixed model's variance shares (`effects-variance.svg`).
    Returns [{file, title, caption}]."""
    recs = effects.to_pylist()
    several = len({(r["sweep"], r["setting"] or "") for r in recs}) > 1
    steps = sorted({r["checkpoint"] for r in recs if r["checkpoint"] is not None})
    colours = matplotlib.colormaps["tab10"]
    colour = {c: colours(i % colours.N) for i, c in enumerate(steps)}
    offset = {c: (i - (len(steps) - 1) / 2) * 0.18 for i, c in enumerate(steps)}  # checkpoints side by side

    def label(r: dict) -> str:
        where = f"{r['sweep']}{', ' + r['setting'] if r['setting'] else ''}: " if several else ""
        return f"{where}{r['subset']} | {r['term']}"

    plots: list[dict] = []
    with matplotlib.rc_context(PLOT_STYLE):
        for m in dict.fromkeys(r["metric"] for r in recs):
            mine = [r for r in recs if r["metric"] == m and r["kind"] != "variance" and finite(r["estimate"])]
            if not mine:
                continue
            info = METRICS.get(m)
            name = info.display if info else m
            terms = list(dict.fromkeys(label(r) for r in sorted(mine, key=lambda r: (str(r["sweep"]),
                                                                                      str(r["setting"] or ""),
                                                                                      *term_order(r)))))
            fig = Figure(figsize=(6.4, 0.9 + 0.26 * len(terms)))
            ax = fig.add_subplot()
            ax.axvline(0.0, color="0.5", lw=0.8)
            for c in steps:
                at = [r for r in mine if r["checkpoint"] == c]
                y = np.array([terms.index(label(r)) + offset[c] for r in at])
                est = np.array([r["estimate"] for r in at])
                has_ci = np.array([r["ci_low"] is not None and r["ci_high"] is not None for r in at], bool)
                if has_ci.any():
                    ax.hlines(y[has_ci], [r["ci_low"] for r, k in zip(at, has_ci) if k],
                              [r["ci_high"] for r, k in zip(at, has_ci) if k], colors=[colour[c]], lw=1.2)
                    ax.scatter(est[has_ci], y[has_ci], color=colour[c], s=18, zorder=3, label=f"step {c}")
                if (~has_ci).any():  # no CI (too few videos): a hollow mark
                    ax.scatter(est[~has_ci], y[~has_ci], facecolors="white", edgecolors=[colour[c]], s=18, zorder=3,
                               label=f"step {c}" + ("" if has_ci.any() else " (no CI: n too small)"))
            ax.set_yticks(range(len(terms)), terms)
            ax.invert_yaxis()
            ax.set_xlabel(f"difference in {name} {info.arrow if info else ''} (mean over videos, 95% CI)")
            ax.set_title(f"Effects on {name}")
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
            _save_svg(fig, folder / f"effects-{m}.svg")
            plots.append({"file": f"plots/effects-{m}.svg", "title": f"Effects on {name}",
                          "caption": "Each term's estimate, the mean over videos of the per-video contrast (main "
                                     "effect: level − the paper's level, averaged over the other factors; interaction: "
                                     "a difference of differences; removal: the paired difference against the paper's "
                                     f"method), with its 95% {CI_METHOD}; hollow: no CI (too few videos). "
                                     + (f"{'Higher' if info.higher_is_better else 'Lower'} is better."
                                        if info else "")})
        shares = [r for r in recs if r["kind"] == "variance" and finite(r["estimate"])]
        if shares:
            fits = list(dict.fromkeys((r["sweep"], r["setting"] or "", r["metric"], r["checkpoint"], r["subset"])
                                      for r in shares))
            components = list(dict.fromkeys(r["factor"] for r in shares))
            share = {(r["sweep"], r["setting"] or "", r["metric"], r["checkpoint"], r["subset"], r["factor"]):
                     r["estimate"] for r in shares}
            fig = Figure(figsize=(6.4, 0.9 + 0.22 * len(fits)))
            ax = fig.add_subplot()
            left = np.zeros(len(fits))
            for k, comp in enumerate(components):
                widths = np.array([share.get((*f, comp), 0.0) for f in fits])
                ax.barh(range(len(fits)), widths, left=left, color=colours(k % colours.N), label=comp, height=0.7)
                left += widths
            names = [(f"{f[0]}{', ' + f[1] if f[1] else ''}: " if several else "")
                     + f"{METRICS[f[2]].display if f[2] in METRICS else f[2]} @ {f[3]} | {f[4]}" for f in fits]
            ax.set_yticks(range(len(fits)), names)
            ax.invert_yaxis()
            ax.set_xlim(0, 1)
            ax.set_xlabel("share of the variance (REML)")
            ax.set_title("Where the variance is")
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
            _save_svg(fig, folder / "effects-variance.svg")
            plots.append({"file": "plots/effects-variance.svg", "title": "Variance shares",
                          "caption": "The linear mixed model's variance components as shares of their sum, per metric, "
                                     "checkpoint and subset: video, prompt within video (where videos have several), "
                                     "generation seed within prompt (where prompts have several), and the residual "
                                     "(what differs between the variants' generations of one unit beyond the fixed "
                                     "effects). With few videos the video share is a rough estimate."})
    return plots


def _err(r: dict, m: str) -> Optional[list[list[float]]]:
    mean, lo, hi = r.get(f"{m}_mean"), r.get(f"{m}_low"), r.get(f"{m}_high")
    # (an interval need not contain the mean to the last digit: bars never point inwards)
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


def search_plot(search: dict, folder: Path) -> Optional[dict]:
    """The objective of each search sample against the inversion step (a `search_sections` entry), saved as
    `folder/search-<sweep>.svg`; {file, title, caption}, or None when no sample has a finite objective yet.
    Samples ran to their end are solid, stopped early grey and dashed, failed red and dotted; the best one is
    drawn last, thick, with a star at its best step."""
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
            points = [(s, v) for s, v in zip(x["rungs"], x["objectives"]) if finite(v)]
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
            if kind == "best" and finite(x["best_objective"]) and x["best_step"] is not None:
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


def _save_svg(fig: Figure, file: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(file, format="svg", bbox_inches="tight", metadata={"Date": None})  # no date: same plot, same bytes
