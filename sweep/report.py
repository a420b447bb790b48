"""Summaries, paired comparisons against a baseline, and the report that prints and saves them.

    from sweep.tables import load
    from sweep.report import compare, report, summarize
    path = "results/paper-ablation"
    summary = summarize(load(path), references=load(path, "references"))  # per variant × checkpoint
    comparisons = compare(load(path))       # every variant against the paper's full method, paired
    report(path)                            # prints; writes summary.md/.csv and <sweep>/comparisons.parquet

Statistics, in one place:
* a metric of a group is the mean over videos of the per-video mean (prompts of one video are not
  independent); its CI is a BCa bootstrap resampling videos (`scipy.stats.bootstrap`), withheld ("n too
  small") under MIN_VIDEOS videos;
* comparisons pair a variant's samples with the baseline's on shared units (video, prompt, generation seed,
  checkpoint; the base model's single checkpoint 0 matches every checkpoint), average the differences
  within each video, then bootstrap and test over videos: Wilcoxon signed-rank p, Holm-adjusted over every
  comparison of one metric;
* FID/KID: `evaluation.fid` (the one implementation) of a group's pooled frame features against real
  frames stored in the `references` table: the spec's `reference_set` when it has one, else every frame of
  the sweep's own reference videos. Never against generated clips.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from vocabulary import METRICS, PAPER_COLUMNS, PAPER_METHOD, SAMPLE_METRICS, applied

from .spec import NON_VARIANT_AXES
from .tables import COMPARISONS_SCHEMA, code_version, load, write_comparisons

MIN_VIDEOS = 5  #: fewer videos than this: no CI (printed "n too small"), the bootstrap would be meaningless
TEST = "Wilcoxon signed-rank over per-video mean differences"
CI_METHOD = "BCa bootstrap resampling videos"
STEP = applied("checkpoint_step")


class BaselineError(ValueError):
    """No usable baseline variant (absent, or ambiguous); the message lists the candidates."""


# --------------------------------------------------------------------------------------------------
# Small statistics.

def video_ci(values: np.ndarray, n_boot: int = 9999, seed: int = 0, confidence: float = 0.95,
             min_videos: int = MIN_VIDEOS) -> tuple[Optional[float], Optional[float], Optional[str]]:
    """CI of the mean of per-video values (BCa bootstrap over videos): (low, high, None), or
    (None, None, why) when it is withheld (fewer than `min_videos` videos, or n_boot=0)."""
    values = np.asarray(values, np.float64)
    n = len(values)
    if n < min_videos:
        return None, None, f"n too small: {n} video{'' if n == 1 else 's'} < {min_videos}"
    if n_boot <= 0:
        return None, None, "no bootstrap (n_boot=0)"
    if np.ptp(values) == 0:  # every video agrees: no spread to resample (BCa would divide by zero)
        return float(values[0]), float(values[0]), None
    from scipy.stats import bootstrap

    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by the percentile fallback below
        res = bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="BCa", rng=rng)
        lo, hi = res.confidence_interval
        if not (np.isfinite(lo) and np.isfinite(hi)):
            res = bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=confidence,
                            method="percentile", rng=np.random.default_rng(seed))
            lo, hi = res.confidence_interval
    return float(lo), float(hi), None


def signed_rank_p(differences: np.ndarray) -> Optional[float]:
    """Two-sided Wilcoxon signed-rank p of per-video differences (exact for small n); 1 when all are 0."""
    d = np.asarray(differences, np.float64)
    if len(d) == 0:
        return None
    if not np.any(d):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(d).pvalue)


def holm(p_values: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjustment: the k-th smallest of m p-values becomes max_{j<=k} min(1, (m-j+1) p_(j)).
    None entries are not tests: they stay None and do not count in m."""
    order = sorted((i for i, p in enumerate(p_values) if p is not None), key=lambda i: p_values[i])
    out: list[Optional[float]] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[i]))
        out[i] = running
    return out


def best_rows(values: Sequence[Optional[float]], metric: str, digits: int = 4) -> set[int]:
    """Indices of the best value(s) of a column (ties at the shown precision all count), respecting the
    metric's direction (higher is better except FID, KID, appearance leakage...)."""
    shown = [(i, round(v, digits)) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if not shown:
        return set()
    pick = max if METRICS[metric].higher_is_better else min
    best = pick(v for _, v in shown)
    return {i for i, v in shown if v == best}


def _video_means(videos: Sequence, values: Sequence[float]) -> np.ndarray:
    """The mean of each video's values (videos in first-seen order)."""
    by_video: dict[Any, list[float]] = defaultdict(list)
    for v, x in zip(videos, values):
        by_video[v].append(float(x))
    return np.array([np.mean(x) for x in by_video.values()])


def _per_video(units: dict[tuple, float]) -> dict[Any, float]:
    """{video: mean over its units}, units keyed (video, ...)."""
    by_video: dict[Any, list[float]] = defaultdict(list)
    for unit, value in units.items():
        by_video[unit[0]].append(value)
    return {v: float(np.mean(x)) for v, x in by_video.items()}


def _floats(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table[name]
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
        raise ValueError(f"metric column {name!r} is {col.type}, not numeric")
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN


def _column(table: pa.Table, name: str) -> list:
    return table[name].to_pylist() if name in table.column_names else [None] * table.num_rows


# --------------------------------------------------------------------------------------------------
# FID/KID reference frames.

def _matrix_rows(col: pa.ChunkedArray | pa.Array) -> Optional[np.ndarray]:
    """Pooled [frames, dim] float64 features of a list<list<float>> column (null rows skipped)."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    col = col.filter(col.is_valid())
    if len(col) == 0:
        return None
    vectors = col.flatten()
    dims = set(vectors.value_lengths().to_pylist())
    if len(dims) != 1:
        raise ValueError(f"fid_features have mixed sizes {sorted(dims)} (rows scored with different FID "
                         "backbones?); summarize each backbone separately")
    dim = dims.pop()
    return vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, dim)


def reference_frames(references: pa.Table, sweeps: Sequence[str], backbone: Optional[str]
                     ) -> tuple[Optional[np.ndarray], str]:
    """Pooled real-frame features for samples of `sweeps` scored with FID `backbone`, and what they are.

    The spec's reference set (its latest features) when the sweep has one, else every frame of the sweep's
    own reference videos, each clip once (rows are unique per reference_key). Returns (None, why) when there
    is none. Raises ValueError when one key holds two different contents, one content appears under two
    keys, or feature sizes are mixed.
    """
    rows = [r for r in references.to_pylist() if r.get("sweep") in set(sweeps)
            and (backbone is None or r.get("fid_backbone") == backbone)]
    chosen = [r for r in rows if r.get("source") == "reference_set"]
    if chosen:
        parts = defaultdict(list)
        for r in chosen:
            parts[r["reference_key"].split("/")[0]].append(r)
        # an edited set was computed again under another key: the latest one is the spec's
        chosen = max(parts.values(), key=lambda rs: max(r["created_at"].timestamp() if r.get("created_at") else 0.0
                                                         for r in rs))
        failed = [r["error"] for r in chosen if r.get("status") == "error"]
        if failed:
            return None, f"the reference set's features failed ({failed[0]})"
        what = f"reference set {chosen[0].get('reference_set')}"
    else:
        chosen = [r for r in rows if r.get("status") == "ok"]
        what = "every frame of the sweep's own reference videos"
    if not chosen:
        return None, (f"no reference frames with FID backbone {backbone!r} stored for {', '.join(sweeps)} "
                      "(re-run the sweep to store them, or pass reference_features=)")
    unique: dict[str, dict] = {}
    owner: dict[str, str] = {}
    for r in chosen:
        key, content = r["reference_key"], r.get("content_hash")
        if key in unique:
            if unique[key].get("content_hash") != content:
                raise ValueError(f"reference key {key!r} holds two different clips ({unique[key].get('source_video')}"
                                 f", {r.get('source_video')}); remove one or give them distinct ids")
            continue
        unique[key] = r
        if r.get("source") == "reference_set" and content is not None:
            if content in owner:
                raise ValueError(f"reference videos {owner[content]!r} and {r.get('video')!r} hold the same "
                                 "frames; a clip counted twice weighs double in FID")
            owner[content] = r.get("video")
    dims = {r["dim"] for r in unique.values()}
    if len(dims) != 1:
        raise ValueError(f"reference features have mixed sizes {sorted(dims)} for backbone {backbone!r}")
    feats = np.concatenate([np.asarray(r["fid_features"], np.float64) for r in unique.values()])
    videos = sorted({str(r.get("video")) for r in unique.values()})
    return feats, f"{what}: {len(videos)} video{'' if len(videos) == 1 else 's'}, {len(feats)} frames"


def _fid_kid_functions() -> tuple[Callable, Callable]:
    """evaluation's FID/KID (the one implementation); KID's (mean, std) gives its mean."""
    from evaluation.fid import fid_from_features, kid_from_features

    return fid_from_features, lambda a, b: kid_from_features(a, b)[0]


# --------------------------------------------------------------------------------------------------
# Summaries.

def summarize(table: pa.Table, by: Optional[Sequence[str]] = None, metrics: Sequence[str] = SAMPLE_METRICS, *,
              references: Optional[pa.Table] = None, reference_features: Optional[np.ndarray] = None,
              n_boot: int = 9999, seed: int = 0, confidence: float = 0.95, min_videos: int = MIN_VIDEOS,
              fid_functions: Optional[tuple[Callable, Callable]] = None) -> pa.Table:
    """Per variant × checkpoint (× sweep when several): counts, means with CIs over videos, FID/KID.

    * n_samples / n_ok / n_errors / n_videos; error rows never enter a mean, they are counted.
    * `<metric>_mean`: mean over videos of the per-video mean (over prompts and seeds) of ok rows with a
      value; `<metric>_low/_high`: BCa bootstrap CI resampling videos, null under `min_videos` videos;
      `<metric>_n`: how many samples had a value (fewer than n_ok means the metric is missing for some).
    * fid / kid of the group's pooled `fid_features` against real frames: `reference_features` ([N, D],
      for every group) or the `references` table (see `reference_frames`); `fid_n_frames` /
      `fid_n_reference_frames` / `fid_dim`, and `fid_reliable` false when either set has fewer frames
      than dimensions (singular covariances: read KID).
    fid_functions: (fid, kid), each (a [N, D], b [M, D]) -> float; default: `evaluation.fid`'s.
    Notes (e.g. why FID is missing) are in `summary.schema.metadata[b"notes"]` (`summary_notes()`).
    """
    n = table.num_rows
    if by is None:
        by = ("variant", STEP)
        if "sweep" in table.column_names and len(set(table["sweep"].to_pylist())) > 1:
            by = ("sweep", *by)
    by = tuple(by)
    missing = [c for c in (*by, "video", "status") if c not in table.column_names]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}")
    notes: list[str] = []
    ok = np.array(table["status"].to_pylist(), dtype=object) == "ok"
    errors = np.array(table["status"].to_pylist(), dtype=object) == "error"
    videos = np.array(table["video"].to_pylist(), dtype=object)
    values = {m: _floats(table, m) for m in metrics}
    absent = [m for m in metrics if m not in table.column_names]
    if absent:
        notes.append(f"no column(s) {absent} in the table")

    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, k in enumerate(zip(*(table[c].to_pylist() for c in by))):
        groups[k].append(i)
    order = sorted(groups, key=lambda k: tuple((v is None, v if v is not None else 0) for v in k))

    fid_fn, kid_fn = fid_functions or _fid_kid_functions()
    has_features = "fid_features" in table.column_names and table["fid_features"].null_count < n
    sweep_col, backbone_col = _column(table, "sweep"), _column(table, "fid_backbone")
    references = references if references is not None else pa.table({"sweep": pa.array([], pa.string())})
    reference_cache: dict[tuple, tuple[Optional[np.ndarray], str]] = {}
    if reference_features is not None:
        reference_features = np.asarray(reference_features, np.float64)
        if reference_features.ndim != 2:
            raise ValueError(f"reference_features must be [frames, dim], got shape {reference_features.shape}")

    out: dict[str, list] = defaultdict(list)
    for k in order:
        idx = np.array(groups[k], dtype=np.int64)
        gok = idx[ok[idx]]
        for c, v in zip(by, k):
            out[c].append(v)
        out["n_samples"].append(len(idx))
        out["n_ok"].append(len(gok))
        out["n_errors"].append(int(errors[idx].sum()))
        out["n_videos"].append(len(set(videos[gok])))
        for m in metrics:
            vals = values[m][gok]
            finite = np.isfinite(vals)
            means = _video_means(videos[gok][finite], vals[finite])
            lo, hi, _ = video_ci(means, n_boot, seed, confidence, min_videos)
            out[f"{m}_mean"].append(float(means.mean()) if len(means) else None)
            out[f"{m}_low"].append(lo)
            out[f"{m}_high"].append(hi)
            out[f"{m}_n"].append(int(finite.sum()))
        if not has_features:
            continue
        feats = _matrix_rows(table["fid_features"].take(pa.array(gok, pa.int64()))) if len(gok) else None
        ref, what = reference_features, "reference_features given"
        if ref is None and feats is not None:
            backbones = sorted({str(backbone_col[i]) for i in gok if backbone_col[i] is not None})
            if len(backbones) > 1:
                raise ValueError(f"group {k} mixes FID backbones {backbones}; group by sweep")
            key = (tuple(sorted({sweep_col[i] for i in gok})), backbones[0] if backbones else None)
            if key not in reference_cache:
                reference_cache[key] = reference_frames(references, *key)
            ref, what = reference_cache[key]
            if ref is None and what not in notes:
                notes.append(f"FID/KID omitted: {what}")
        fid = kid = None
        if feats is not None and ref is not None:
            if feats.shape[1] != ref.shape[1]:
                raise ValueError(f"group {k}: generated features are {feats.shape[1]}-d but the reference frames' "
                                 f"are {ref.shape[1]}-d ({what}); they must come from the same FID backbone")
            try:
                fid, kid = float(fid_fn(feats, ref)), float(kid_fn(feats, ref))
            except ValueError as exc:  # evaluation.EvaluationError: too few frames, degenerate features
                notes.append(f"{k}: no FID/KID: {exc}")
        out["fid"].append(fid)
        out["kid"].append(kid)
        out["fid_n_frames"].append(0 if feats is None else len(feats))
        out["fid_n_reference_frames"].append(None if ref is None else len(ref))
        dim = feats.shape[1] if feats is not None else None
        out["fid_dim"].append(dim)
        out["fid_reliable"].append(None if fid is None else bool(min(len(feats), len(ref)) >= dim))
        out["fid_reference"].append(what if ref is not None else None)

    columns: dict[str, pa.Array] = {c: pa.array(out[c], type=table.schema.field(c).type) for c in by}
    for name, vals in out.items():
        if name in by:
            continue
        if name == "fid_reliable":
            typ = pa.bool_()
        elif name == "fid_reference":
            typ = pa.string()
        elif name.startswith(("n_", "fid_n_")) or name.endswith("_n") or name == "fid_dim":
            typ = pa.int64()
        else:
            typ = pa.float64()
        columns[name] = pa.array(vals, type=typ, from_pandas=True)
    meta = {b"notes": json.dumps(notes).encode(), b"confidence": str(confidence).encode(),
            b"n_boot": str(n_boot).encode(), b"min_videos": str(min_videos).encode()}
    return pa.table(columns).replace_schema_metadata(meta)


def summary_notes(summary: pa.Table) -> list[str]:
    meta = summary.schema.metadata or {}
    return json.loads(meta.get(b"notes", b"[]"))


# --------------------------------------------------------------------------------------------------
# Paired comparisons against a baseline.

def _variant_settings(table: pa.Table, rows: Sequence[int]) -> dict[str, dict]:
    """{variant: {"method": (qk, v, debias) applied, "hyper": {axis: value}}} from the rows' applied columns."""
    hyper_axes = [c[: -len("_applied")] for c in table.column_names if c.endswith("_applied") and "." in c
                  and c[: -len("_applied")] not in NON_VARIANT_AXES]
    cols = {c: _column(table, c) for c in ("variant", applied("qk"), applied("v"), applied("debias"))}
    hyper_cols = {a: _column(table, applied(a)) for a in hyper_axes}
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


def compare(table: pa.Table, baseline: Optional[str] = None, metrics: Sequence[str] = SAMPLE_METRICS, *,
            n_boot: int = 9999, seed: int = 0, confidence: float = 0.95,
            min_videos: int = MIN_VIDEOS) -> pa.Table:
    """Every variant against the baseline, paired: the `comparisons` table (tables.COMPARISONS_SCHEMA).

    One row per sweep × variant × metric × checkpoint. Units are (video, prompt, generation seed) at one
    checkpoint; the side with only checkpoint 0 (the base model) matches each checkpoint of the other. Only
    ok rows with a finite value enter; a unit on one side only is dropped (counted in n_unmatched).
    Differences are averaged within each video; mean, CI (BCa over videos, null under `min_videos` videos,
    ci_note says why) and the Wilcoxon signed-rank p are over videos; p_holm adjusts p over every row of
    one metric in one sweep. baseline: a variant id; default: the paper's full method (BaselineError when
    the sweep has none).
    """
    status = _column(table, "status")
    ok_rows = [i for i, s in enumerate(status) if s == "ok"]
    cols = {c: _column(table, c) for c in ("sweep", "variant", "video", "prompt", "generation_seed", STEP)}
    values = {m: _floats(table, m) for m in metrics}
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
        settings = _variant_settings(table, [i for i in ok_rows if cols["sweep"][i] == sweep])
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
                        dv = _per_video({u: a[u] - b[u] for u in shared})
                        d = np.array(list(dv.values()))
                        lo, hi, why = video_ci(d, n_boot, seed, confidence, min_videos)
                        rows.append({
                            "sweep": sweep, "baseline": base, "variant": variant, "metric": m,
                            "higher_is_better": METRICS[m].higher_is_better if m in METRICS else None,
                            "checkpoint": label, "variant_checkpoint": cv, "baseline_checkpoint": cb, "n_units": len(shared),
                            "n_unmatched": len(a.keys() ^ b.keys()), "n_videos": len(dv),
                            "baseline_mean": _mean(_per_video({u: b[u] for u in shared})),
                            "variant_mean": _mean(_per_video({u: a[u] for u in shared})),
                            "mean_difference": float(d.mean()) if len(d) else None,
                            "ci_low": lo, "ci_high": hi, "ci_method": CI_METHOD,
                            "ci_note": why if len(d) else "no matched units",
                            "confidence": confidence, "n_boot": n_boot, "test": TEST, "p": signed_rank_p(d),
                            "code_version": code_version(), "created_at": now})
    for sweep, m in {(r["sweep"], r["metric"]) for r in rows}:
        family = [r for r in rows if r["sweep"] == sweep and r["metric"] == m]
        for r, adjusted in zip(family, holm([r["p"] for r in family])):
            r["p_holm"] = adjusted
            r["family_size"] = sum(x["p"] is not None for x in family)
    return pa.Table.from_pylist(rows, schema=COMPARISONS_SCHEMA)


def _mean(per_video: dict) -> Optional[float]:
    return float(np.mean(list(per_video.values()))) if per_video else None


# --------------------------------------------------------------------------------------------------
# Rendering (markdown: summary.md, and printed as is).

def _num(v: Optional[float], digits: int = 4, sign: bool = False) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _digits(metric: str) -> int:
    return 2 if metric == "fid" else 4


def _stars(p: Optional[float]) -> str:
    """Significance marks, escaped so markdown shows them as asterisks (not emphasis)."""
    return "" if p is None else r"\*\*" if p < 0.01 else r"\*" if p < 0.05 else ""


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


def with_user_preference(summary: pa.Table, path: str | os.PathLike) -> pa.Table:
    """The summary with a `user_preference` column (share of forced-choice votes won, `sweep.study.user_preference`)
    when `path` (a sweep folder or a storage root) holds votes; unchanged otherwise.

    Joined on variant *and* checkpoint (and sweep, when the summary has several): a study shows each variant's
    clips at one step (study.json items' `checkpoints`; the base model's 0), so its votes say nothing about the
    variant's other checkpoints, whose rows stay null. Votes of several studies at one step are pooled (wins over
    votes, as `user_preference` pools questions)."""
    from .study import list_studies, load_study, load_votes, user_preference
    from .tables import _sweep_stores

    votes = load_votes(path)
    if votes.num_rows == 0:
        return summary
    shown_at: dict[tuple, dict] = {}  # (sweep, study) -> {variant: step its clips were shown at}
    for name, store in _sweep_stores(path):
        for study in list_studies(store):
            steps = shown_at.setdefault((name, study), {})
            for item in load_study(store, study)["items"]:
                steps.update({v: int(c) for v, c in (item.get("checkpoints") or {}).items()})
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])  # (sweep, variant, step or None) -> [wins, votes]
    keys = sorted({(r["sweep"], r["study"]) for r in votes.select(["sweep", "study"]).to_pylist()}, key=str)
    for sweep, study in keys:
        mask = pa.compute.and_(pa.compute.equal(votes["sweep"], sweep), pa.compute.equal(votes["study"], study))
        for r in user_preference(votes.filter(mask)).to_pylist():
            step = shown_at.get((sweep, study), {}).get(r["variant"])  # None: no definition, any step
            counts[(sweep, r["variant"], step)][0] += r["n_wins"]
            counts[(sweep, r["variant"], step)][1] += r["n_votes"]
    several = "sweep" in summary.column_names
    pooled: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for (sweep, variant, step), (wins, n) in counts.items():
        pooled[(sweep if several else None, variant, step)][0] += wins
        pooled[(sweep if several else None, variant, step)][1] += n
    sweeps = _column(summary, "sweep") if several else [None] * summary.num_rows
    steps = _column(summary, STEP)
    values = []
    for sweep, variant, step in zip(sweeps, summary["variant"].to_pylist(), steps):
        wins, n = pooled.get((sweep, variant, step), pooled.get((sweep, variant, None), [0, 0]))
        values.append(wins / n if n else None)
    return summary.append_column("user_preference", pa.array(values, pa.float64()))


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
        best = best_rows(vals, m, _digits(m))
        for i, (r, v) in enumerate(zip(recs, vals)):
            dagger = m == "fid" and v is not None and r.get("fid_reliable") is False
            unreliable |= dagger
            values[i].append({"metric": m, "value": v, "text": _num(v, _digits(m)), "best": i in best,
                              "dagger": dagger, "p_holm": marks.get((r.get("sweep"), r["variant"], m, r.get(STEP)))})
    legend = [r"Best value per column in bold (↑ higher is better, ↓ lower). \* p_holm < 0.05, \*\* p_holm < 0.01 "
              f"against the baseline ({TEST}; Holm over every comparison of the metric); FID has no paired test."]
    if unreliable:
        legend.append("† FID from fewer frames than feature dimensions (singular covariance): unreliable, read KID.")
    if "user_preference" not in columns:
        legend.append("User preference: no votes yet.")
    return header, labels, values, legend


def paper_table(summary: pa.Table, comparisons: Optional[pa.Table] = None) -> tuple[list[str], list[str]]:
    """The paper's Table 1 layout: a row per variant (× checkpoint), vocabulary.PAPER_COLUMNS that have values,
    the best value per column in bold (direction-aware), * / ** where the Holm-adjusted paired test against
    the baseline gives p < 0.05 / 0.01 (FID has no paired test), † on FIDs from fewer frames than dimensions.
    Returns (markdown lines, legend lines)."""
    header, labels, values, legend = paper_cells(summary, comparisons)
    cells = [[*label, *(("**{}**" if c["best"] else "{}").format(c["text"] + ("†" if c["dagger"] else ""))
                        + _stars(c["p_holm"]) for c in row)] for label, row in zip(labels, values)]
    return _md_table(header, cells), legend


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
    min_videos = int((summary.schema.metadata or {}).get(b"min_videos", b"5"))
    for m in present:
        best = best_rows([r[f"{m}_mean"] for r in recs], m) if m in METRICS else set()
        for i, r in enumerate(recs):
            text = _num(r[f"{m}_mean"])
            if r[f"{m}_low"] is not None:
                text += f" [{_num(r[f'{m}_low'])}, {_num(r[f'{m}_high'])}]"
            elif r[f"{m}_mean"] is not None and r["n_videos"] < min_videos:
                text += " (n too small)"
            rows[i].append(f"**{text}**" if i in best else text)
    if has_fid:
        best_fid, best_kid = best_rows([r["fid"] for r in recs], "fid", 2), best_rows([r["kid"] for r in recs], "kid")
        for i, r in enumerate(recs):
            fid = _num(r["fid"], 2) + ("†" if r["fid_reliable"] is False else "")
            ref = "–" if r["fid_n_reference_frames"] is None else str(r["fid_n_reference_frames"])
            rows[i] += [f"**{fid}**" if i in best_fid else fid,
                        f"**{_num(r['kid'])}**" if i in best_kid else _num(r["kid"]),
                        f"{r['fid_n_frames']}/{ref}", "–" if r["fid_dim"] is None else str(r["fid_dim"])]
    return _md_table(header, rows)


def _comparisons_section(comparisons: pa.Table) -> list[str]:
    header = ["variant", "step", "baseline", "metric", "units (unmatched)", "videos", "Δ mean", "95% CI", "p",
              "p_holm"]
    if len({r for r in comparisons["baseline"].to_pylist()}) == 1:
        header.remove("baseline")
    rows = []
    for r in sorted(comparisons.to_pylist(), key=lambda r: (r["sweep"], r["metric"], r["variant"], r["checkpoint"])):
        ci = (f"[{_num(r['ci_low'], sign=True)}, {_num(r['ci_high'], sign=True)}]" if r["ci_low"] is not None
              else "n too small" if (r["ci_note"] or "").startswith("n too small") else r["ci_note"] or "–")
        row = [r["variant"], str(r["checkpoint"]), r["baseline"], r["metric"], f"{r['n_units']} ({r['n_unmatched']})",
               str(r["n_videos"]), _num(r["mean_difference"], sign=True), ci, _num(r["p"]),
               _num(r["p_holm"]) + _stars(r["p_holm"])]
        if "baseline" not in header:
            row.pop(2)
        rows.append(row)
    return _md_table(header, rows)


def backbone_warning(table: pa.Table) -> Optional[str]:
    """What the report's first line says about where the numbers come from, when it is not a real model with
    trained metric backbones: random-weight metric backbones (plumbing only), or the toy world (the method in
    miniature); None otherwise."""
    status = _column(table, "status")
    pretrained = [p for p, s in zip(_column(table, "pretrained_metrics"), status) if s == "ok" and p is not None]
    if pretrained and not all(pretrained):
        return (f"RANDOM-WEIGHT METRIC BACKBONES ({pretrained.count(False)} of {len(pretrained)} rows): "
                "these numbers test the plumbing, not the method")
    presets = {p for p, s in zip(_column(table, "preset"), status) if s == "ok"}
    if "toy" in presets:
        return ("TOY-WORLD NUMBERS: a tiny text-to-video model and CLIP trained on moving shapes (preset toy); "
                "they show the method's effects in miniature, not ZeroScope's")
    return None


def render(title: str, table: pa.Table, summary: pa.Table, comparisons: pa.Table, notes: Sequence[str],
           metrics: Sequence[str] = SAMPLE_METRICS, baseline_line: str = "") -> str:
    """The report as markdown: heading (saying so when metric backbones had random weights), the paper-style
    table, the per-variant summary, the paired comparisons, notes."""
    status = _column(table, "status")
    heading = f"# Summary: {title}"
    warning = backbone_warning(table)
    if warning:
        heading += f" — {warning}"
    n_ok, n_err = status.count("ok"), status.count("error")
    confidence = float((summary.schema.metadata or {}).get(b"confidence", b"0.95"))
    min_videos = int((summary.schema.metadata or {}).get(b"min_videos", b"5"))
    refs = sorted({r for r in _column(summary, "fid_reference") if r})
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
                  f"{CI_METHOD}. p: {TEST}; p_holm: Holm over every comparison of the metric.", "",
                  *_comparisons_section(comparisons), ""]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Report.

def report(path: str | os.PathLike, out_dir: Optional[str | os.PathLike] = None, *, baseline: Optional[str] = None,
           reference_features: Optional[np.ndarray] = None, metrics: Sequence[str] = SAMPLE_METRICS,
           n_boot: int = 9999, seed: int = 0, confidence: float = 0.95, min_videos: int = MIN_VIDEOS,
           echo: bool = True, fid_functions: Optional[tuple[Callable, Callable]] = None, html: bool = True
           ) -> pa.Table:
    """Summarize and compare the samples under `path` (a sweep folder or a storage root), print the report,
    write summary.md and summary.csv to `out_dir` (default: `path` when local, else the current directory),
    each sweep's comparisons as `<sweep>/comparisons.parquet` (`load(path, "comparisons")`) and, with `html`,
    the browsable report `<out_dir>/report/index.html` (`sweep.html_report`; `html_report_path`).

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
    sweeps = sorted({s for s in _column(table, "sweep") if s})
    written = write_comparisons(path, comparisons, sweeps)  # also when empty: no stale file from an older report
    used = sorted(set(comparisons["baseline"].to_pylist()))
    baseline_line = (f"Baseline: {', '.join(f'`{b}`' for b in used)}"
                     + (" (given)." if baseline else " (the paper's full method).") if used else "")
    text = render(", ".join(sweeps) or str(path), table, summary, comparisons, notes, metrics, baseline_line)

    out_dir = _out_dir(path, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.md").write_text(text)
    with open(out_dir / "summary.csv", "w", newline="") as f:  # an export: the Parquet tables are the record
        writer = csv.writer(f)
        writer.writerow(summary.column_names)
        for rec in summary.to_pylist():
            writer.writerow(["" if rec[c] is None else rec[c] for c in summary.column_names])
    if html:
        from .html_report import write_html_report

        written.append(str(write_html_report(
            path, html_report_path(path, out_dir).parent, table=table, summary=summary, comparisons=comparisons,
            notes=notes, baseline_line=baseline_line, metrics=metrics)))
    if echo:
        print(text)
        print(f"wrote {out_dir / 'summary.md'}, {out_dir / 'summary.csv'}"
              + "".join(f", {w}" for w in written))
    return summary


def _out_dir(path: str | os.PathLike, out_dir: Optional[str | os.PathLike]) -> Path:
    """Where `report` writes: `out_dir`, else the sweep folder (or storage root) when local, else the current folder."""
    return Path(out_dir if out_dir is not None else path if "://" not in str(path) else ".")


def html_report_path(path: str | os.PathLike, out_dir: Optional[str | os.PathLike] = None) -> Path:
    """The index.html that `report(path, out_dir)` writes (absolute)."""
    return (_out_dir(path, out_dir) / "report" / "index.html").resolve()


__all__ = ["backbone_warning", "BaselineError", "MIN_VIDEOS", "best_rows", "compare", "holm", "html_report_path", "paper_cells",
           "paper_method_variants", "paper_table", "reference_frames", "render", "report",
           "signed_rank_p", "summarize", "summary_notes", "video_ci", "with_user_preference"]
