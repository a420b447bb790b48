"""Result tables (Arrow/Parquet): rows in, tables out. Writing a trial's rows as one part, reading a sweep's
table (or every sweep's under a storage root), and the joins the tables are made for.

    from sweep import load
    samples = load("results/paper-ablation")          # or the storage root: every sweep, told apart by `sweep`

What each table and column holds: `sweep.results.schemas`. How a table is kept as files: `sweep.results.parts`.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import re
import traceback
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vocabulary import SAMPLE_METRICS

from .parts import compact_table, read_part_table
from .schemas import ALL_SCHEMAS, COMPARISONS_SCHEMA, EFFECTS_SCHEMA, SAMPLES_SCHEMA, SCHEMAS, TABLES
from .store import STORE_DIR, Store

_NULL_ON_ERROR = {"samples": (*SAMPLE_METRICS, "fid_features"), "inversions": ("loss_curve",),
                  "references": ("fid_features",)}
_PART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The installed package's version (setuptools-scm: the release, or the commit it was built from)."""
    try:
        return version("motion-sweep")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def sample_row(columns: dict, metrics: Optional[dict] = None, *, error: Optional[str] = None, **fields: Any) -> dict:
    """A samples row: the planner's `Generation.columns` + metrics + timings etc. `error` makes it an error row."""
    row = {**columns, **(metrics or {}), **fields}
    row["status"] = "error" if error else "ok"
    row["error"] = error
    row.setdefault("code_version", code_version())
    row.setdefault("created_at", _dt.datetime.now(_dt.timezone.utc))
    return row


def error_text(stage: str) -> str:
    """The `error` of a row that failed while this exception is handled: "<stage>: <its last line>"."""
    lines = traceback.format_exc().strip().splitlines()
    return f"{stage}: {lines[-1]}"


def error_line(error: BaseException) -> str:
    """A failed Tune trial's error, in one line (its last; at most 500 characters)."""
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:500]


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
    table_name = next((name for name, known in SCHEMAS.items() if schema.equals(known)), "samples")
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

    `sweep` and `trial_id` (tables that have it) default to the arguments when rows lack them. Returns the
    store-relative path. Writing the same part again replaces it (a re-run trial rewrites its part).
    """
    if table not in SCHEMAS:
        raise ValueError(f"table must be one of {list(SCHEMAS)}, got {table!r}")
    if not _PART_NAME.match(part) or not _PART_NAME.match(sweep):
        raise ValueError(f"sweep and part names must match {_PART_NAME.pattern}: {sweep!r}, {part!r}")
    store = store if isinstance(store, Store) else Store(store)
    has_trial = "trial_id" in SCHEMAS[table].names
    rows = [dict(r) for r in rows]
    for r in rows:  # a None from the row must not hide the defaults
        r["sweep"] = r.get("sweep") or sweep
        if has_trial:
            r["trial_id"] = r.get("trial_id") or part
    data = rows_to_table(rows, SCHEMAS[table])
    return store.write_parquet(store.part_path(sweep, table, part), data)


def write_comparisons(path: str | os.PathLike, comparisons: pa.Table, sweeps: Optional[Sequence[str]] = None
                      ) -> list[str]:
    """Write each sweep's rows of `comparisons` as `<sweep>/comparisons.parquet` under `path` (a sweep folder or
    a storage root), atomically, replacing the previous report's; `sweeps` also get a file when they have no
    rows (default: the sweeps in `comparisons`). Returns the URIs written."""
    return _write_per_sweep(path, "comparisons.parquet", comparisons, COMPARISONS_SCHEMA, sweeps)


def write_effects(path: str | os.PathLike, effects: pa.Table, sweeps: Optional[Sequence[str]] = None) -> list[str]:
    """Write each sweep's rows of `effects` (`sweep.report.effects`) as `<sweep>/effects.parquet`, as
    `write_comparisons` writes comparisons (atomically, replacing the previous report's). Returns the URIs."""
    return _write_per_sweep(path, "effects.parquet", effects, EFFECTS_SCHEMA, sweeps)


def _write_per_sweep(path: str | os.PathLike, file: str, rows: pa.Table, schema: pa.Schema,
                     sweeps: Optional[Sequence[str]]) -> list[str]:
    """Each sweep's rows of a report table as `<sweep>/<file>`, atomically (Store.write_parquet); `sweeps` also get
    a file when they have no rows (so no stale file from an older report stays)."""
    names = rows["sweep"].to_pylist()
    wanted = set(names) | set(sweeps or ())
    written = []
    for name, store in sweep_stores(path):
        if name in wanted:
            mine = pa.array([i for i, s in enumerate(names) if s == name], pa.int64())
            store.write_parquet(file, _conform(rows.take(mine), schema))
            written.append(store.uri_of(file))
    return written


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

    table: "samples" | "inversions" | "references" (real frames' FID features) | "comparisons" (the last
    report's paired tests) | "effects" (the last report's factorial effects) | "grid" (requested points) |
    "points" (grid joined with samples).
    A part table is its compacted files (`motion-sweep compact`) plus the complete `part-*.parquet` files they
    do not hold, read in one `pyarrow.dataset` scan: temp files never match, a part held by a compacted file is
    read once, and a part rewritten after compaction replaces its old rows. A part that cannot be read
    (torn/corrupt) is skipped with a warning (strict=True raises instead).
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    found = sweep_stores(path)
    if sweeps is not None:
        found = [(name, s) for name, s in found if name in set(sweeps)]
    if table == "points":
        return join_grid(load(path, "grid", sweeps=sweeps, strict=strict),
                         load(path, "samples", sweeps=sweeps, strict=strict))
    pieces: list[pa.Table] = []
    for name, store in found:
        if table in ("grid", "comparisons", "effects", "search"):  # one file per sweep
            piece = _read_part(store, f"{table}.parquet", strict) if store.exists(f"{table}.parquet") else None
        else:
            piece = read_part_table(store, table, strict)
        if piece is None or piece.num_rows == 0 and not piece.column_names:
            continue
        if "sweep" not in piece.column_names:
            piece = piece.append_column("sweep", pa.array([name] * piece.num_rows, pa.string()))
        pieces.append(piece)
    schema = ALL_SCHEMAS.get(table)
    if not pieces:
        return schema.empty_table() if schema is not None else pa.table({})
    if len(pieces) == 1:
        return _conform(pieces[0], schema)
    out = pa.concat_tables([_conform(p, schema) for p in pieces], promote_options="permissive")
    return _conform(out, schema)


def compact(path: str | os.PathLike, tables: Sequence[str] = tuple(SCHEMAS), *,
            sweeps: Optional[Sequence[str]] = None, min_age_s: float = 60.0) -> dict[str, dict[str, int]]:
    """Merge each sweep's finished parts (and earlier compacted files) into one compacted file per table
    (`sweep.results.parts.compact_table`); parts younger than `min_age_s` wait for the next time.
    Returns {sweep: {table: files absorbed}}."""
    out: dict[str, dict[str, int]] = {}
    for name, store in sweep_stores(path):
        if sweeps is not None and name not in sweeps:
            continue
        for table in tables:
            absorbed = compact_table(store, table, min_age_s)
            if absorbed:
                out.setdefault(name, {})[table] = absorbed
    return out


def sweep_stores(path: str | os.PathLike) -> list[tuple[str, Store]]:
    """(name, Store) of the sweep at `path`, or of every sweep under a storage root."""
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
            or any(store.list_names(table, suffix=".parquet") for table in SCHEMAS))  # parts or compacted files


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
