"""Paired comparisons of every variant against a baseline: the `comparisons` table.

    from sweep.report import compare
    comparisons = compare(load(path))       # every variant against the paper's full method, paired

Comparisons pair a variant's samples with the baseline's on shared units (video, prompt, generation seed,
checkpoint; the base model's single checkpoint 0 matches every checkpoint), average the differences within each
video, then test the mean per-video difference over videos (`stats.paired_test`): p is the larger of an exact
sign-flip permutation test and a bootstrap-t test, and the CI is the differences neither rejects, so the CI
excludes 0 exactly when p < 1 − confidence. p is Holm-adjusted over every comparison of one metric; the Wilcoxon
signed-rank p stands beside it. `min_p` / `min_p_holm` say the smallest p and p_holm the design allows (2/2^n
with n videos, times the Holm family), and `design_limits` says it in a sentence per sweep.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from sweep.results.schemas import COMPARISONS_SCHEMA
from sweep.results.tables import code_version
from vocabulary import APPLIED, METRICS, NON_VARIANT_AXES, PAPER_METHOD, PRESET_AXIS, SAMPLE_METRICS, applied

from .stats import (MIN_VIDEOS, PAIRED_CI_METHOD, STEP, TEST, column, float_column, holm, mean_over_videos,
                    paired_test, per_video, signed_rank_p, smallest_p, smallest_p_holm)


class BaselineError(ValueError):
    """No usable baseline variant (absent, or ambiguous); the message lists the candidates."""


def compare(table: pa.Table, baseline: Optional[str] = None, metrics: Sequence[str] = SAMPLE_METRICS, *,
            n_boot: int = 9999, seed: int = 0, confidence: float = 0.95,
            min_videos: int = MIN_VIDEOS) -> pa.Table:
    """Every variant against the baseline, paired: the `comparisons` table (schemas.COMPARISONS_SCHEMA).

    One row per sweep × variant × metric × checkpoint. Units are (video, prompt, generation seed) at one
    checkpoint; the side with only checkpoint 0 (the base model) matches each checkpoint of the other. Only
    ok rows with a finite value enter; a unit on one side only is dropped (counted in n_unmatched).
    Differences are averaged within each video; the mean, its CI and p are over videos (`stats.paired_test`:
    p the larger of an exact sign-flip test and a bootstrap-t test, the CI the differences neither rejects,
    null under `min_videos` videos or when unbounded, ci_note says why), beside the Wilcoxon signed-rank p;
    p_holm adjusts p over every row of one metric in one sweep, and min_p / min_p_holm are the smallest
    values this number of videos and this family allow. baseline: a variant id; default: the paper's full
    method (BaselineError when the sweep has none).
    """
    status = column(table, "status")
    ok_rows = [i for i, s in enumerate(status) if s == "ok"]
    cols = {c: column(table, c) for c in ("sweep", "variant", "video", "prompt", "generation_seed", STEP)}
    values = {m: float_column(table, m) for m in metrics}
    values = {m: x for m, x in values.items() if np.isfinite(x).any()}  # a metric never computed: no rows
    cells: dict[tuple, list[int]] = defaultdict(list)  # (sweep, variant, checkpoint) -> rows
    for i in ok_rows:
        cells[(cols["sweep"][i], cols["variant"][i], cols[STEP][i])].append(i)

    def units(key: tuple, m: str) -> dict[tuple, float]:
        found: dict[tuple, list[float]] = defaultdict(list)
        for i in cells.get(key, []):
            if np.isfinite(values[m][i]):
                found[(cols["video"][i], cols["prompt"][i], cols["generation_seed"][i])].append(values[m][i])
        return {u: float(np.mean(x)) for u, x in found.items()}  # a unit scored twice counts once

    rows: list[dict] = []
    now = dt.datetime.now(dt.timezone.utc)
    for sweep in sorted({cols["sweep"][i] for i in ok_rows}, key=str):
        settings = variant_settings(table, [i for i in ok_rows if cols["sweep"][i] == sweep])
        steps = defaultdict(set)
        for (s, v, c) in cells:
            if s == sweep:
                steps[v].add(c)
        for variant, bases in sorted(_baselines(settings, baseline, sweep).items()):
            for base in bases:
                sv, sb = sorted(steps[variant]), sorted(steps[base])
                if sv == [0] and sb != [0]:
                    pairs = [(0, c, c) for c in sb]
                elif sb == [0]:
                    pairs = [(c, 0, c) for c in sv]
                else:
                    pairs = [(c, c, c) for c in sv]
                for cv, cb, label in pairs:
                    for m in values:
                        a, b = units((sweep, variant, cv), m), units((sweep, base, cb), m)
                        shared = sorted(a.keys() & b.keys(), key=str)
                        dv = per_video({u: a[u] - b[u] for u in shared})
                        d = np.array(list(dv.values()))
                        tested = paired_test(d, n_boot, seed, confidence, min_videos)
                        rows.append({
                            "sweep": sweep, "baseline": base, "variant": variant, "metric": m,
                            "higher_is_better": METRICS[m].higher_is_better if m in METRICS else None,
                            "checkpoint": label, "variant_checkpoint": cv, "baseline_checkpoint": cb,
                            "n_units": len(shared),
                            "n_unmatched": len(a.keys() ^ b.keys()), "n_videos": len(dv),
                            "baseline_mean": mean_over_videos(per_video({u: b[u] for u in shared})),
                            "variant_mean": mean_over_videos(per_video({u: a[u] for u in shared})),
                            "mean_difference": float(d.mean()) if len(d) else None,
                            "ci_low": tested.low, "ci_high": tested.high, "ci_method": PAIRED_CI_METHOD,
                            "ci_note": tested.note, "confidence": confidence, "n_boot": n_boot, "test": TEST,
                            "p": tested.p, "p_sign_flip": tested.p_sign_flip, "p_bootstrap": tested.p_bootstrap,
                            "p_wilcoxon": signed_rank_p(d), "min_p": smallest_p(len(d), n_boot),
                            "code_version": code_version(), "created_at": now})
    for sweep, m in {(r["sweep"], r["metric"]) for r in rows}:
        family = [r for r in rows if r["sweep"] == sweep and r["metric"] == m]
        family_size = sum(x["p"] is not None for x in family)
        for r, adjusted in zip(family, holm([r["p"] for r in family])):
            r["p_holm"] = adjusted
            r["family_size"] = family_size
            r["min_p_holm"] = None if adjusted is None else smallest_p_holm(r["n_videos"], family_size, n_boot)
    return pa.Table.from_pylist(rows, schema=COMPARISONS_SCHEMA)


def design_limits(comparisons: pa.Table) -> dict[str, str]:
    """{sweep: a sentence}: the smallest p_holm its comparisons can reach (its most videos, its Holm family), so
    a reader knows when a missing star is the design's limit rather than an absent effect (named by its sweep
    when there are several). Sweeps whose rows lack min_p_holm (a table written before it existed) say nothing."""
    rows = [r for r in comparisons.to_pylist() if r.get("min_p_holm") is not None]
    sweeps = sorted({r["sweep"] for r in rows}, key=str)
    lines = {}
    for sweep in sweeps:
        best = min((r for r in rows if r["sweep"] == sweep), key=lambda r: r["min_p_holm"])
        floor = best["min_p_holm"]
        line = (f"With {best['n_videos']} videos and {best['family_size']} comparisons per metric, p_holm cannot go "
                f"below {floor:.3g}")
        if floor >= 0.05:
            line += ": no comparison can be marked *, so a missing star is the design's limit, not an absent effect"
        elif floor >= 0.01:
            line += ": ** (p_holm < 0.01) is out of reach, so a missing ** is the design's limit"
        lines[sweep] = (f"{sweep}: " if len(sweeps) > 1 else "") + line + "."
    return lines


def variant_settings(table: pa.Table, rows: Sequence[int]) -> dict[str, dict]:
    """{variant: {"method": (qk, v, debias) applied, "hyper": {axis: value}}} from the rows' applied columns.

    The preset counts as a setting where the rows hold more than one (a preset axis): each variant then meets the
    baseline of its own base model."""
    hyper_axes = [c[: -len(APPLIED)] for c in table.column_names if c.endswith(APPLIED) and "." in c
                  and c[: -len(APPLIED)] not in NON_VARIANT_AXES]
    cols = {c: column(table, c) for c in ("variant", applied("qk"), applied("v"), applied("debias"))}
    hyper_cols = {a: column(table, applied(a)) for a in hyper_axes}
    if PRESET_AXIS in table.column_names:
        presets = column(table, PRESET_AXIS)
        if len({presets[i] for i in rows}) > 1:
            hyper_cols = {PRESET_AXIS: presets, **hyper_cols}
    out: dict[str, dict] = {}
    for i in rows:
        info = out.setdefault(cols["variant"][i], {"method": (cols[applied("qk")][i], cols[applied("v")][i],
                                                               cols[applied("debias")][i]), "hyper": {}})
        for a, col in hyper_cols.items():
            if col[i] is not None:
                info["hyper"][a] = col[i]
    return out


def paper_method_variants(settings: dict[str, dict]) -> list[str]:
    """Variants whose applied designs are the paper's full method (vocabulary.PAPER_METHOD)."""
    method = (PAPER_METHOD["qk"], PAPER_METHOD["v"], PAPER_METHOD["debias"])
    return sorted(v for v, info in settings.items() if info["method"] == method)


def _baselines(settings: dict[str, dict], baseline: Optional[str], sweep: str) -> dict[str, list[str]]:
    """{variant: the baseline(s) it is compared with}. Default: the paper's full method; with hyperparameter
    axes there is one per setting, and each variant meets the one(s) agreeing on every hyperparameter both
    have (the base model, which has none, meets each)."""
    if baseline is not None:
        if baseline not in settings:
            raise BaselineError(f"baseline {baseline!r} has no ok samples in sweep {sweep!r}; variants: "
                                + "; ".join(sorted(settings)))
        return {v: [baseline] for v in settings if v != baseline}
    candidates = paper_method_variants(settings)
    if not candidates:
        raise BaselineError(f"sweep {sweep!r} has no variant with the paper's method ({PAPER_METHOD}); pass "
                            "--baseline VARIANT, one of: " + "; ".join(sorted(settings)))
    out = {}
    for v, info in settings.items():
        if v not in candidates:  # candidates are baselines (of their hyperparameter setting), not compared
            out[v] = [c for c in candidates if all(settings[c]["hyper"].get(a) in (None, value)
                                                   for a, value in info["hyper"].items())]
    if any(not b for b in out.values()):
        raise BaselineError(f"sweep {sweep!r}: no paper-method variant shares the hyperparameters of "
                            f"{[v for v, b in out.items() if not b]}; pass --baseline VARIANT")
    return out
