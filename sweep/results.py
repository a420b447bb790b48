"""Result tables (Arrow/Parquet) and their summaries.

Tables under a sweep folder `<storage>/<sweep>/`:

* `samples/part-<trial>.parquet`: one row per **canonical** sample (a generated clip at one checkpoint,
  scored once). Design columns hold canonical values (qk/v "off" when removed, debias "-" without MV,
  checkpoint_step 0 for the base model). Error rows have status "error", the message, and null metrics.
* `inversions/part-<inversion_key>.parquet`: one row per inversion (loss curve, steps, seconds).
* `grid.parquet` (written by `sweep.plan.save_plan`): one row per *requested* grid point × checkpoint with the
  requested axis values and the `sample_key` that answers it.

Requested points are answered by a join, not by duplicated rows: `load(path, table="points")` gives one
row per requested grid point × checkpoint with the requested axis values and the canonical sample's
metrics. Summaries use the samples table, so an experiment that answers five grid points counts once.

    from sweep.results import load, summarize
    table = load("results/paper-ablation")          # or the storage root: every sweep, told apart by `sweep`
    print(summarize(table, reference_variant="qk=off v=off").to_pandas())
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import json
import math
import os
import re
import subprocess
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .store import STORE_DIR, Store

METRICS = ("text_similarity", "temporal_consistency", "motion_fidelity", "motion_fidelity_two_way",
           "appearance_leakage")
TABLES = ("samples", "inversions", "grid", "points")
BASE_VARIANT = "qk=off v=off"  # the plain base model's variant id (sweep.plan builds ids this way)

_timestamp = pa.timestamp("us", tz="UTC")

SAMPLES_SCHEMA = pa.schema([
    # identity
    ("sweep", pa.string()), ("trial_id", pa.string()), ("sample_key", pa.string()),
    ("generation_key", pa.string()), ("inversion_key", pa.string()), ("ddim_key", pa.string()),
    ("variant", pa.string()), ("variant_key", pa.string()),
    # canonical design and seeds
    ("qk", pa.string()), ("v", pa.string()), ("remove", pa.string()), ("debias", pa.string()),
    ("seed", pa.int64()), ("generation_seed", pa.int64()), ("checkpoint_step", pa.int64()),
    # data
    ("video", pa.string()), ("source_video", pa.string()), ("source_prompt", pa.string()), ("prompt", pa.string()),
    ("preset", pa.string()), ("base_model", pa.string()), ("config", pa.string()),
    # metrics (null on error rows)
    ("text_similarity", pa.float64()), ("temporal_consistency", pa.float64()), ("motion_fidelity", pa.float64()),
    ("motion_fidelity_two_way", pa.float64()), ("appearance_leakage", pa.float64()),
    ("fid_features", pa.list_(pa.list_(pa.float32()))),  # one feature vector per sampled frame
    ("unavailable", pa.string()),  # "metric: reason; ..." for metrics that could not be computed
    # which backbones produced the numbers (evaluation.Scorer.describe())
    ("clip_backbone", pa.string()), ("clip_pretrained", pa.bool_()), ("tracker", pa.string()),
    ("tracker_checkpoint", pa.string()), ("grid_size", pa.int64()), ("motion_filter", pa.string()),
    ("fid_backbone", pa.string()), ("fid_frames", pa.int64()), ("pretrained_metrics", pa.bool_()),
    ("evaluation_version", pa.string()),
    ("motion_grid", pa.int64()), ("motion_tracks", pa.int64()), ("motion_tracks_reference", pa.int64()),
    # outputs and bookkeeping
    ("video_path", pa.string()), ("status", pa.string()), ("error", pa.string()), ("device", pa.string()),
    ("invert_seconds", pa.float64()), ("generate_seconds", pa.float64()), ("score_seconds", pa.float64()),
    ("seconds_clip", pa.float64()), ("seconds_motion", pa.float64()), ("seconds_fid", pa.float64()),
    ("inversion_cached", pa.bool_()), ("code_version", pa.string()), ("created_at", _timestamp),
])
# Swept hyperparameter axes are extra columns named like the axis ("inversion.lr"), typed from their values.

INVERSIONS_SCHEMA = pa.schema([
    ("sweep", pa.string()), ("trial_id", pa.string()), ("inversion_key", pa.string()), ("ddim_key", pa.string()),
    ("video", pa.string()), ("source_video", pa.string()), ("source_prompt", pa.string()),
    ("qk", pa.string()), ("v", pa.string()), ("preset", pa.string()), ("base_model", pa.string()),
    ("seed", pa.int64()), ("steps", pa.int64()), ("checkpoints", pa.list_(pa.int64())),
    ("config", pa.string()), ("loss_curve", pa.list_(pa.float32())), ("seconds", pa.float64()),
    ("ddim_seconds", pa.float64()), ("cached", pa.bool_()), ("device", pa.string()), ("status", pa.string()),
    ("error", pa.string()), ("code_version", pa.string()), ("created_at", _timestamp),
])

SCHEMAS = {"samples": SAMPLES_SCHEMA, "inversions": INVERSIONS_SCHEMA}
_NULL_ON_ERROR = {"samples": (*METRICS, "fid_features"), "inversions": ("loss_curve",)}
_PART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------------------------------
# Writing.

@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit (and '.dirty') when running from a checkout."""
    try:
        from importlib.metadata import version

        ver = version("motion-sweep")
    except Exception:  # noqa: BLE001 - not installed as a package
        ver = "0+unknown"
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        if sha:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            ver += f"+g{sha}" + (".dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return ver


def sample_row(columns: dict, metrics: Optional[dict] = None, *, error: Optional[str] = None, **fields: Any) -> dict:
    """A samples row: the planner's `Generation.columns` + metrics + timings etc. `error` makes it an error row."""
    row = {**columns, **(metrics or {}), **fields}
    row["status"] = "error" if error else "ok"
    row["error"] = error
    row.setdefault("code_version", code_version())
    row.setdefault("created_at", _dt.datetime.now(_dt.timezone.utc))
    return row


def cached_sample_row(store: Store, sample_key: str, columns: dict) -> Optional[dict]:
    """A scored row from the store's cache (any sweep), re-labelled with this sweep's `columns`
    (sweep, trial_id, variant, axis columns...); None unless an ok row is cached."""
    row = store.get_sample(sample_key)
    if not row or row.get("status") != "ok":
        return None
    return {**row, **columns}


def rows_to_table(rows: Sequence[dict], schema: pa.Schema = SAMPLES_SCHEMA) -> pa.Table:
    """Rows -> a table with `schema`'s columns first (missing keys = null), then any extra keys.

    NaN becomes null (one way to say "no value"); error rows get null metrics whatever they carried.
    """
    table_name = "inversions" if schema.equals(INVERSIONS_SCHEMA) else "samples"
    clean = []
    for row in rows:
        row = dict(row)
        if row.get("status") is None:
            row["status"] = "error" if row.get("error") else "ok"
        if row["status"] not in ("ok", "error"):
            raise ValueError(f"status must be 'ok' or 'error', got {row['status']!r}")
        if row["status"] == "error":
            for name in _NULL_ON_ERROR[table_name]:
                row[name] = None
        clean.append(row)
    extras: list[str] = []
    for row in clean:
        extras.extend(k for k in row if k not in schema.names and k not in extras)
    arrays, fields = [], []
    for f in schema:
        arrays.append(_array([r.get(f.name) for r in clean], f.type, f.name))
        fields.append(f)
    for name in extras:
        # all-null extras keep the null type: concatenation with other parts promotes it to theirs
        arr = pa.array([_plain(r.get(name)) for r in clean], from_pandas=True)
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_part(store: Store | str, sweep: str, part: str, rows: Sequence[dict], table: str = "samples") -> str:
    """Write rows as `<sweep>/<table>/part-<part>.parquet`, atomically (whole or not at all).

    `sweep` and `trial_id` default to the arguments when rows lack them. Returns the store-relative path.
    Writing the same part again replaces it (a re-run trial rewrites its part).
    """
    if table not in SCHEMAS:
        raise ValueError(f"table must be one of {list(SCHEMAS)}, got {table!r}")
    if not _PART_NAME.match(part) or not _PART_NAME.match(sweep):
        raise ValueError(f"sweep and part names must match {_PART_NAME.pattern}: {sweep!r}, {part!r}")
    store = store if isinstance(store, Store) else Store(store)
    rows = [{"sweep": sweep, "trial_id": part, **r} for r in rows]
    for r in rows:  # a None from the row must not hide the defaults
        r["sweep"] = r.get("sweep") or sweep
        r["trial_id"] = r.get("trial_id") or part
    data = rows_to_table(rows, SCHEMAS[table])
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink)
    return store.write_bytes_atomic(store.part_path(sweep, table, part), sink.getvalue().to_pybytes())


def _plain(value: Any) -> Any:
    """numpy -> Python, so pyarrow infers types the same way for every row."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _array(values: list, typ: pa.DataType, name: str) -> pa.Array:
    values = [_plain(v) for v in values]
    if pa.types.is_timestamp(typ):
        values = [_dt.datetime.fromisoformat(v) if isinstance(v, str) else v for v in values]
    if pa.types.is_list(typ) and pa.types.is_list(typ.value_type):
        values = [_matrix(v, name) for v in values]
    try:
        return pa.array(values, type=typ, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise ValueError(f"column {name!r} ({typ}): {exc}") from None


def _matrix(value: Any, name: str) -> Any:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]  # one vector
    if arr.ndim != 2:
        raise ValueError(f"column {name!r}: expected [frames, dim] features, got shape {arr.shape}")
    return arr.tolist()


# --------------------------------------------------------------------------------------------------
# Loading.

def load(path: str | os.PathLike, table: str = "samples", *, sweeps: Optional[Sequence[str]] = None,
         strict: bool = False) -> pa.Table:
    """Read a sweep folder, or a storage root (every sweep in it; the `sweep` column tells them apart).

    table: "samples" | "inversions" | "grid" (requested points) | "points" (grid joined with samples).
    Only complete `part-*.parquet` files are read; temp files never match, and a part that cannot be read
    (torn/corrupt) is skipped with a warning (strict=True raises instead).
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    found = _sweep_stores(path)
    if sweeps is not None:
        found = [(name, s) for name, s in found if name in set(sweeps)]
    if table == "points":
        return join_grid(load(path, "grid", sweeps=sweeps, strict=strict),
                         load(path, "samples", sweeps=sweeps, strict=strict))
    pieces: list[pa.Table] = []
    for name, store in found:
        if table == "grid":
            files = ["grid.parquet"] if store.exists("grid.parquet") else []
        else:
            files = [f"{table}/{n}" for n in store.list_names(table, "part-", ".parquet")]
        for rel in files:
            piece = _read_part(store, rel, strict)
            if piece is None:
                continue
            if "sweep" not in piece.column_names:
                piece = piece.append_column("sweep", pa.array([name] * piece.num_rows, pa.string()))
            pieces.append(piece)
    schema = SCHEMAS.get(table)
    if not pieces:
        return schema.empty_table() if schema is not None else pa.table({})
    out = pa.concat_tables([_conform(p, schema) for p in pieces], promote_options="permissive")
    return _conform(out, schema)


def _sweep_stores(path: str | os.PathLike) -> list[tuple[str, Store]]:
    root = Store(path)
    if root.is_local and not Path(root.uri).is_dir():
        raise FileNotFoundError(f"no results at {root.uri} (give a sweep folder or a storage root)")
    if _is_sweep(root):
        return [(root.uri.rstrip("/").rsplit("/", 1)[-1], root)]
    out = []
    for name in root.list_dirs():
        if name == STORE_DIR:
            continue
        sub = Store(root.uri_of(name))
        if _is_sweep(sub):
            out.append((name, sub))
    return out


def _is_sweep(store: Store) -> bool:
    return (store.exists("plan.json") or store.exists("grid.parquet")
            or bool(store.list_names("samples", "part-", ".parquet"))
            or bool(store.list_names("inversions", "part-", ".parquet")))


def _read_part(store: Store, rel: str, strict: bool) -> Optional[pa.Table]:
    try:
        if store.is_local:
            return pq.read_table(str(store.local_path(rel)))
        return pq.read_table(store.abspath(rel), filesystem=store.fs)
    except (pa.ArrowInvalid, OSError) as exc:  # torn/corrupt parquet: no footer, bad magic, truncated...
        if strict:
            raise
        warnings.warn(f"skipping unreadable part file {store.uri_of(rel)}: {exc}", stacklevel=3)
        return None


def _conform(table: pa.Table, schema: Optional[pa.Schema]) -> pa.Table:
    """Known columns in schema order and type (missing = null), then the extra columns."""
    if schema is None:
        return table
    arrays, fields = [], []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            if not col.type.equals(f.type):
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass  # keep what was written rather than fail to load
            arrays.append(col)
            fields.append(pa.field(f.name, col.type))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
            fields.append(f)
    for name in table.column_names:
        if name not in schema.names:
            arrays.append(table[name])
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def join_grid(grid: pa.Table, samples: pa.Table) -> pa.Table:
    """One row per requested grid point × checkpoint: the grid's requested values plus the sample's
    other columns (null where the sample is not there yet). Joined on (sweep, sample_key)."""
    index: dict[tuple, int] = {}
    for i, key in enumerate(zip(samples["sweep"].to_pylist(), samples["sample_key"].to_pylist())):
        index[key] = i  # last wins: a re-written sample replaces an older one
    if grid.num_rows == 0:
        return grid
    take = pa.array([index.get(k) for k in zip(grid["sweep"].to_pylist(), grid["sample_key"].to_pylist())],
                    pa.int64())
    matched = samples.take(take)
    out = grid
    for name in matched.column_names:
        if name not in out.column_names:
            out = out.append_column(name, matched[name])
    return out


# --------------------------------------------------------------------------------------------------
# Summaries.

def summarize(table: pa.Table, by: Optional[Sequence[str]] = None, metrics: Sequence[str] = METRICS, *,
              reference_variant: Optional[str] = None, reference_features: Optional[np.ndarray] = None,
              n_boot: int = 1000, seed: int = 0, confidence: float = 0.95,
              fid_functions: Optional[tuple[Callable, Callable]] = None) -> pa.Table:
    """Per variant × checkpoint: counts, mean and bootstrap CI over videos, FID/KID, paired deltas.

    * n_samples / n_ok / n_errors / n_videos; error rows never enter a mean, they are counted.
    * `<metric>_mean`: mean over videos of the per-video mean (over prompts and seeds) of ok rows with a
      value; `<metric>_low/_high`: percentile bootstrap CI resampling videos; `<metric>_n`: how many
      samples had a value (fewer than n_ok means the metric is missing for some).
    * fid / kid: the group's pooled `fid_features` against `reference_features` ([N, D]); when None,
      against the base model's samples (variant "qk=off v=off", same sweep) if the table has them.
    * reference_variant: `delta_<metric>` (+ low/high) = mean over videos of (variant - reference) on
      pairs matched on (sweep, video, prompt, generation_seed, checkpoint_step); the checkpoint is
      dropped from the match when the reference has a single one (e.g. the base model's 0).
    fid_functions: (fid, kid), each (a [N, D], b [M, D]) -> float; default: `evaluation`'s when importable
      (torchmetrics' formulas; importing torchmetrics takes seconds), else the numpy closed forms here.
    Notes (e.g. why FID is missing) are in `summary.schema.metadata[b"notes"]` (`summary_notes()`).
    """
    n = table.num_rows
    if by is None:
        by = ("variant", "checkpoint_step")
        if "sweep" in table.column_names and len(set(table["sweep"].to_pylist())) > 1:
            by = ("sweep", *by)
    by = tuple(by)
    missing = [c for c in (*by, "video", "status") if c not in table.column_names]
    if missing:
        raise ValueError(f"table lacks column(s) {missing}")
    notes: list[str] = []
    keys = list(zip(*(table[c].to_pylist() for c in by))) if by else [()] * n
    status = np.array(table["status"].to_pylist(), dtype=object)
    ok = status == "ok"
    videos = np.array(table["video"].to_pylist(), dtype=object)
    values = {m: _floats(table, m) for m in metrics}
    absent = [m for m in metrics if m not in table.column_names]
    if absent:
        notes.append(f"no column(s) {absent} in the table")

    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    order = sorted(groups, key=lambda k: tuple((v is None, v if v is not None else 0) for v in k))

    fid_fn, kid_fn = fid_functions or _fid_kid_functions()
    has_features = "fid_features" in table.column_names and table["fid_features"].null_count < n
    sweep_col = table["sweep"].to_pylist() if "sweep" in table.column_names else [None] * n
    variant_col = table["variant"].to_pylist() if "variant" in table.column_names else [None] * n
    base_rows = [i for i in range(n) if ok[i] and variant_col[i] == BASE_VARIANT]
    if has_features and reference_features is None and not base_rows:
        notes.append("FID/KID omitted: pass reference_features= or include the base model (remove: [both])")

    pair_keys = _pair_keys(table) if reference_variant else []
    pairs_ref = _reference_index(variant_col, pair_keys, reference_variant, ok) if reference_variant else None
    if reference_variant and pairs_ref is None:
        notes.append(f"reference variant {reference_variant!r} has no ok rows: no paired deltas")

    out: dict[str, list] = defaultdict(list)
    for k in order:
        idx = np.array(groups[k], dtype=np.int64)
        for c, v in zip(by, k):
            out[c].append(v)
        gok = idx[ok[idx]]
        out["n_samples"].append(len(idx))
        out["n_ok"].append(len(gok))
        out["n_errors"].append(int((status[idx] == "error").sum()))
        out["n_videos"].append(len(set(videos[gok])))
        for m in metrics:
            vals = values[m][gok]
            finite = np.isfinite(vals)
            mean, lo, hi = _video_bootstrap(vals[finite], videos[gok][finite], n_boot, seed, confidence)
            out[f"{m}_mean"].append(mean)
            out[f"{m}_low"].append(lo)
            out[f"{m}_high"].append(hi)
            out[f"{m}_n"].append(int(finite.sum()))
        if has_features:
            fid = kid = None
            feats = _features(table, gok)
            if reference_features is not None:
                ref = np.asarray(reference_features, dtype=np.float64)
            else:
                sw = k[by.index("sweep")] if "sweep" in by else None
                rows = [i for i in base_rows if sw is None or sweep_col[i] == sw]
                ref = _features(table, np.array(rows, dtype=np.int64)) if rows else None
            if feats is not None and ref is not None and len(feats) >= 2 and len(ref) >= 2:
                if feats.shape[1] != ref.shape[1]:
                    notes.append(f"{k}: feature sizes differ ({feats.shape[1]} vs {ref.shape[1]}): no FID")
                else:
                    try:
                        fid, kid = float(fid_fn(feats, ref)), float(kid_fn(feats, ref))
                    except ValueError as exc:  # evaluation.EvaluationError: degenerate features
                        notes.append(f"{k}: no FID/KID: {exc}")
            out["fid"].append(fid)
            out["kid"].append(kid)
            out["fid_n_frames"].append(0 if feats is None else int(len(feats)))
        if pairs_ref is not None:
            ref_keys, single_cp = pairs_ref
            matched = []  # (row in group, row in reference)
            for i in gok:
                pk = pair_keys[i][:-1] if single_cp else pair_keys[i]
                if pk in ref_keys:
                    matched.append((i, ref_keys[pk]))
            out["n_pairs"].append(len(matched))
            for m in metrics:
                if matched:
                    a = np.array([values[m][i] for i, _ in matched])
                    b = np.array([values[m][j] for _, j in matched])
                    vids = np.array([videos[i] for i, _ in matched], dtype=object)
                    d = a - b
                    finite = np.isfinite(d)
                    mean, lo, hi = _video_bootstrap(d[finite], vids[finite], n_boot, seed, confidence)
                else:
                    mean = lo = hi = None
                out[f"delta_{m}"].append(mean)
                out[f"delta_{m}_low"].append(lo)
                out[f"delta_{m}_high"].append(hi)

    columns: dict[str, pa.Array] = {}
    for c in by:
        columns[c] = pa.array(out[c], type=table.schema.field(c).type)
    for name, vals in out.items():
        if name in by:
            continue
        typ = pa.int64() if name.startswith("n_") or name.endswith("_n") or name == "fid_n_frames" else pa.float64()
        columns[name] = pa.array(vals, type=typ, from_pandas=True)
    summary = pa.table(columns) if columns else pa.table({})
    meta = {b"notes": json.dumps(notes).encode(), b"confidence": str(confidence).encode(),
            b"n_boot": str(n_boot).encode()}
    if reference_variant:
        meta[b"reference_variant"] = reference_variant.encode()
    return summary.replace_schema_metadata(meta)


def summary_notes(summary: pa.Table) -> list[str]:
    meta = summary.schema.metadata or {}
    return json.loads(meta.get(b"notes", b"[]"))


def _floats(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table[name]
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise ValueError(f"metric column {name!r} is {col.type}, not numeric")
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN


def _video_bootstrap(vals: np.ndarray, vids: np.ndarray, n_boot: int, seed: int,
                     confidence: float) -> tuple[Optional[float], Optional[float], Optional[float]]:
    """Mean of per-video means, and a percentile bootstrap CI resampling videos (None when undefined)."""
    if len(vals) == 0:
        return None, None, None
    per_video: dict[Any, list[float]] = defaultdict(list)
    for v, x in zip(vids, vals):
        per_video[v].append(float(x))
    means = np.array([np.mean(x) for x in per_video.values()])
    mean = float(means.mean())
    if len(means) < 2 or n_boot <= 0:
        return mean, None, None  # one video: no spread to resample
    rng = np.random.default_rng(seed)  # same seed per group: results do not depend on group order
    boots = means[rng.integers(0, len(means), size=(n_boot, len(means)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(boots, [alpha, 1.0 - alpha])
    return mean, float(lo), float(hi)


def _features(table: pa.Table, idx: np.ndarray) -> Optional[np.ndarray]:
    """Pooled [frames, dim] features of the given rows (rows without features are skipped)."""
    if len(idx) == 0:
        return None
    col = table["fid_features"].take(pa.array(idx, pa.int64())).combine_chunks()
    col = col.filter(col.is_valid())
    if len(col) == 0:
        return None
    vectors = col.flatten()  # list<float32> per frame
    lengths = set(vectors.value_lengths().to_pylist())
    if len(lengths) != 1:
        raise ValueError(f"fid_features have mixed sizes {sorted(lengths)}")
    dim = lengths.pop()
    return vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, dim)


def _pair_keys(table: pa.Table) -> list[tuple]:
    """(sweep, video, prompt, generation_seed, checkpoint_step) per row; the last item is dropped when the
    reference has a single checkpoint."""
    cols = ("sweep", "video", "prompt", "generation_seed", "checkpoint_step")
    lists = [table[c].to_pylist() if c in table.column_names else [None] * table.num_rows for c in cols]
    return list(zip(*lists))


def _reference_index(variants: list, pair_keys: list[tuple], variant: str, ok: np.ndarray):
    rows = [i for i, v in enumerate(variants) if v == variant and ok[i]]
    if not rows:
        return None
    single_cp = len({pair_keys[i][-1] for i in rows}) == 1
    return {(pair_keys[i][:-1] if single_cp else pair_keys[i]): i for i in rows}, single_cp


def _fid_kid_functions() -> tuple[Callable, Callable]:
    """The evaluation package's FID/KID (torchmetrics' formulas) when importable, else the closed forms
    below (same formulas in numpy). Both return floats; evaluation's KID (mean, std) gives its mean."""
    try:
        from evaluation import fid_from_features, kid_from_features  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - evaluation or torch missing: numpy closed forms
        return frechet_distance, kernel_inception_distance

    def kid(a: np.ndarray, b: np.ndarray) -> float:
        value = kid_from_features(a, b)
        return float(value[0] if isinstance(value, tuple) else value)

    return fid_from_features, kid


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets [N, D]: |mu_a - mu_b|^2 + tr(Sa + Sb - 2 (Sa Sb)^1/2).

    tr((Sa Sb)^1/2) is the nuclear norm of Xa Xb^T / sqrt((na-1)(nb-1)) (X centred): exact, and cheap when
    N < D (a few thousand frames of 2048-d Inception features); eigenvalues of Sa Sb otherwise.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    xa, xb = a - mu_a, b - mu_b
    na, nb, d = len(a), len(b), a.shape[1]
    tr_a = float((xa * xa).sum() / (na - 1))
    tr_b = float((xb * xb).sum() / (nb - 1))
    if min(na, nb) <= d:
        tr_sqrt = float(np.linalg.svd(xa @ xb.T, compute_uv=False).sum() / math.sqrt((na - 1) * (nb - 1)))
    else:
        eig = np.linalg.eigvals(np.cov(a, rowvar=False) @ np.cov(b, rowvar=False))
        tr_sqrt = float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + tr_a + tr_b - 2.0 * tr_sqrt)


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, max_samples: int = 2000, seed: int = 0) -> float:
    """KID: unbiased MMD^2 with the cubic polynomial kernel (x.y/D + 1)^3 (at most `max_samples` per set)."""
    rng = np.random.default_rng(seed)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) > max_samples:
        a = a[rng.choice(len(a), max_samples, replace=False)]
    if len(b) > max_samples:
        b = b[rng.choice(len(b), max_samples, replace=False)]
    d = a.shape[1]
    kxx = (a @ a.T / d + 1.0) ** 3
    kyy = (b @ b.T / d + 1.0) ** 3
    kxy = (a @ b.T / d + 1.0) ** 3
    m, n = len(a), len(b)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


# --------------------------------------------------------------------------------------------------
# Report.

def report(path: str | os.PathLike, out_dir: Optional[str | os.PathLike] = None, *,
           reference_variant: Optional[str] = None, reference_features: Optional[np.ndarray] = None,
           metrics: Sequence[str] = METRICS, n_boot: int = 1000, seed: int = 0, echo: bool = True,
           fid_functions: Optional[tuple[Callable, Callable]] = None) -> pa.Table:
    """Summarize the samples under `path`, print a table, write summary.md and summary.csv to `out_dir`
    (default: `path` when it is a local folder, else the current directory). Returns the summary."""
    table = load(path)
    summary = summarize(table, metrics=metrics, reference_variant=reference_variant,
                        reference_features=reference_features, n_boot=n_boot, seed=seed,
                        fid_functions=fid_functions)
    if out_dir is None:
        out_dir = path if "://" not in str(path) else "."
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header, rows = format_summary(summary, metrics)
    notes = summary_notes(summary)
    title = f"{table.num_rows} samples from {path}"
    confidence = float((summary.schema.metadata or {}).get(b"confidence", b"0.95"))
    (out_dir / "summary.md").write_text(_markdown(title, header, rows, notes, confidence))
    with open(out_dir / "summary.csv", "w", newline="") as f:  # an export: the Parquet parts are the record
        writer = csv.writer(f)
        writer.writerow(summary.column_names)
        for rec in summary.to_pylist():
            writer.writerow(["" if rec[c] is None else rec[c] for c in summary.column_names])
    if echo:
        print(title)
        print(_text_table(header, rows))
        for note in notes:
            print(f"note: {note}")
        print(f"wrote {out_dir / 'summary.md'} and {out_dir / 'summary.csv'}")
    return summary


def format_summary(summary: pa.Table, metrics: Sequence[str] = METRICS) -> tuple[list[str], list[list[str]]]:
    """Header and string cells: group columns, counts, "mean [low, high]" per metric, FID/KID, deltas."""
    cols = summary.column_names
    group_cols = [c for c in cols if not (c.startswith(("n_", "delta_", "fid", "kid")) or
                                          any(c.startswith(f"{m}_") for m in metrics))]
    header = [*group_cols, "n", "videos", "errors"]
    present = [m for m in metrics if f"{m}_mean" in cols]
    header += present
    if "fid" in cols:
        header += ["FID", "KID"]
    deltas = [m for m in present if f"delta_{m}" in cols]
    header += [f"Δ {m}" for m in deltas]
    rows = []
    for rec in summary.to_pylist():
        row = [_cell(rec[c]) for c in group_cols]
        row += [str(rec["n_samples"]), str(rec["n_videos"]), str(rec["n_errors"])]
        row += [_ci(rec[f"{m}_mean"], rec[f"{m}_low"], rec[f"{m}_high"]) for m in present]
        if "fid" in cols:
            row += [_num(rec["fid"], 2), _num(rec["kid"], 4)]
        row += [_ci(rec[f"delta_{m}"], rec[f"delta_{m}_low"], rec[f"delta_{m}_high"]) for m in deltas]
        rows.append(row)
    return header, rows


def _cell(v: Any) -> str:
    return "" if v is None else str(v)


def _num(v: Optional[float], digits: int = 4) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _ci(mean: Optional[float], lo: Optional[float], hi: Optional[float]) -> str:
    if mean is None:
        return "–"
    return _num(mean) if lo is None else f"{_num(mean)} [{_num(lo)}, {_num(hi)}]"


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _markdown(title: str, header: list[str], rows: list[list[str]], notes: list[str], confidence: float) -> str:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["# Summary", "", title, "",
             f"Mean over videos with a {confidence:.0%} bootstrap CI (resampling videos).", "",
             "| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    if notes:
        lines += [""] + [f"- note: {n}" for n in notes]
    return "\n".join(lines) + "\n"
