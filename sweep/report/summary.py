"""Summaries: per variant × checkpoint (× sweep when several), counts, means with CIs over videos, and FID/KID.

    from sweep.results.tables import load
    from sweep.report import summarize
    summary = summarize(load(path), references=load(path, "references"))

FID/KID: `evaluation.fid` (the one implementation) of a group's pooled frame features against real frames
(`references.reference_frames`). Why a number is missing is said in the summary's notes (`summary_notes`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

from evaluation.fid import fid_from_features, kid_from_features
from vocabulary import SAMPLE_METRICS

from .references import pooled_features, reference_frames
from .stats import MIN_VIDEOS, STEP, column, fewest_videos, float_column, video_ci, video_means


def summarize(table: pa.Table, by: Optional[Sequence[str]] = None, metrics: Sequence[str] = SAMPLE_METRICS, *,
              references: Optional[pa.Table] = None, reference_features: Optional[np.ndarray] = None,
              n_boot: int = 9999, seed: int = 0, confidence: float = 0.95, min_videos: int = MIN_VIDEOS,
              fid_functions: Optional[tuple[Callable, Callable]] = None) -> pa.Table:
    """Per variant × checkpoint (× sweep when several): counts, means with CIs over videos, FID/KID.

    * n_samples / n_ok / n_errors / n_videos; error rows never enter a mean, they are counted.
    * `<metric>_mean`: mean over videos of the per-video mean (over prompts and seeds) of ok rows with a
      value; `<metric>_low/_high`: the CI of that mean over videos (`stats.video_ci`: the values neither an
      exact sign-flip test nor a bootstrap-t test rejects, chosen by measured coverage), null under
      `min_videos` videos (or the more a high confidence needs);
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
    values = {m: float_column(table, m) for m in metrics}
    absent = [m for m in metrics if m not in table.column_names]
    if absent:
        notes.append(f"no column(s) {absent} in the table")

    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, k in enumerate(zip(*(table[c].to_pylist() for c in by))):
        groups[k].append(i)
    order = sorted(groups, key=lambda k: tuple((v is None, v if v is not None else 0) for v in k))

    fid_fn, kid_fn = fid_functions or (fid_from_features, _kid_mean)
    has_features = "fid_features" in table.column_names and table["fid_features"].null_count < n
    sweep_col, backbone_col = column(table, "sweep"), column(table, "fid_backbone")
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
            means = video_means(videos[gok][finite], vals[finite])
            lo, hi, _ = video_ci(means, n_boot, seed, confidence, min_videos)
            out[f"{m}_mean"].append(float(means.mean()) if len(means) else None)
            out[f"{m}_low"].append(lo)
            out[f"{m}_high"].append(hi)
            out[f"{m}_n"].append(int(finite.sum()))
        if not has_features:
            continue
        feats = pooled_features(table["fid_features"].take(pa.array(gok, pa.int64()))) if len(gok) else None
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
            b"n_boot": str(n_boot).encode(),  # the fewest videos given a CI (more than min_videos at a high level)
            b"min_videos": str(max(min_videos, fewest_videos(confidence))).encode()}
    return pa.table(columns).replace_schema_metadata(meta)


def _kid_mean(a: np.ndarray, b: np.ndarray) -> float:
    """KID's estimate (`kid_from_features` gives (mean, std over subsets, or None for one whole-set estimate))."""
    return kid_from_features(a, b)[0]


def summary_notes(summary: pa.Table) -> list[str]:
    """What `summarize` noted (why a number is missing), in order."""
    meta = summary.schema.metadata or {}
    return json.loads(meta.get(b"notes", b"[]"))


def summary_confidence(summary: pa.Table) -> float:
    """The confidence level of the summary's CIs."""
    return float((summary.schema.metadata or {}).get(b"confidence", b"0.95"))


def summary_min_videos(summary: pa.Table) -> int:
    """The fewest videos the summary gave a CI for."""
    return int((summary.schema.metadata or {}).get(b"min_videos", str(MIN_VIDEOS).encode()))
