"""How a sweep's table is kept as files: part files, compacted files, and reading them back in one scan.

Each trial writes its rows as one part, `<sweep>/<table>/part-<name>.parquet`, atomically. A compacted file
`compact-<time>-<id>.parquet` (`motion-sweep compact`) holds the rows of the parts (and older compacted files) it
absorbed, each row tagged with its part's name (`_part`), and names them in its footer: every absorbed part
with the size and time it had, and the absorbed compacted files. A reader takes the compacted files no other
one absorbed, drops their rows of any part that was since rewritten (its size or time differ), and adds the
parts none of them holds. `compact_table` writes the new file whole (atomic rename / object put) before it
deletes what it absorbed, so a compaction killed at any point leaves a table that reads the same.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
import warnings
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .store import Store

COMPACT_PREFIX = "compact-"
PART_COLUMN = "_part"  # in compacted files only: the part a row came from
_COVERS_KEY = b"motion_sweep.covers"


def table_state(store: Store, table: str, dead: Optional[list] = None) -> tuple[list, list, dict]:
    """(live parts, live compacted files, {compacted file: covers}) of a sweep's table, from one listing;
    `dead` (if given) receives the files a live compacted file holds (left by a compaction stopped midway)."""
    files = store.list_files(table, suffix=".parquet")
    parts = [f for f in files if f.name.startswith("part-")]
    compacts = [f for f in files if f.name.startswith(COMPACT_PREFIX)]
    covers = {c.name: _covers(store, f"{table}/{c.name}") for c in compacts}
    absorbed = {n for cov in covers.values() for n in cov.get("compacts", [])}
    live_compacts = [c for c in compacts if c.name not in absorbed]
    held = {}
    for c in live_compacts:
        held.update({n: tuple(v) for n, v in covers[c.name].get("parts", {}).items()})
    live_parts = [p for p in parts if held.get(p.name) != (p.size, p.mtime_ns)]
    if dead is not None:
        dead += [c for c in compacts if c.name in absorbed] + [p for p in parts if p not in live_parts]
    return live_parts, live_compacts, {c.name: covers[c.name] for c in live_compacts}


def finished_parts(store: Store, sweep: str, table: str = "samples") -> set[str]:
    """The part names (`part-<name>.parquet`) a sweep's table holds, as files or inside compacted files: for a
    grid, the trials whose rows are written."""
    sub = Store(store.uri_of(sweep))
    parts, _, covers = table_state(sub, table)
    names = {p.name for p in parts} | {n for cov in covers.values() for n in cov.get("parts", {})}
    return {n[len("part-"):-len(".parquet")] for n in names}


def _covers(store: Store, rel: str) -> dict:
    meta = pq.read_schema(_open_arg(store, rel), filesystem=None if store.is_local else store.fs).metadata or {}
    return json.loads(meta.get(_COVERS_KEY, b"{}"))


def _open_arg(store: Store, rel: str) -> str:
    return str(store.local_path(rel)) if store.is_local else store.abspath(rel)


def read_part_table(store: Store, table: str, strict: bool, attempts: int = 3) -> Optional[pa.Table]:
    """A sweep's part table as the rules above say; listed again if a file vanishes mid-read (a compaction
    finished meanwhile)."""
    for attempt in range(attempts):
        parts, compacts, _ = table_state(store, table)
        if not parts and not compacts:
            return None
        try:
            return _scan(store, table, parts, compacts, strict)
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
    return None


def _scan(store: Store, table: str, parts: list, compacts: list, strict: bool, tags: bool = False
          ) -> Optional[pa.Table]:
    """The files' rows in one go (schemas unified once, permissively); a compacted file's rows of a part that is
    read from its own file too are dropped. `tags`: keep `_part` (every row's part) for compact."""
    import pyarrow.compute as pc

    files = [*compacts, *parts]
    if store.is_local:
        data, source = _scan_local(store, table, files, strict, provenance=bool(compacts or tags))
    else:
        data, source = _read_files(store, table, files, strict, parallel=16)
    if data is None or source is None:
        return data
    name = pc.replace_substring_regex(source, r"^.*/", "")
    part = data[PART_COLUMN] if PART_COLUMN in data.column_names else pa.nulls(data.num_rows, pa.string())
    part = pc.coalesce(part.cast(pa.string()), name)  # a part file's rows: the part's own name
    from_compact = pc.starts_with(name, COMPACT_PREFIX)
    reread = pa.array(sorted({p.name for p in parts}), pa.string())
    keep = pc.invert(pc.and_(from_compact, pc.is_in(part, value_set=reread)))
    if PART_COLUMN in data.column_names:
        data = data.drop_columns([PART_COLUMN])
    if tags:
        data = data.append_column(PART_COLUMN, part)
    return data.filter(keep)


def _scan_local(store: Store, table: str, files: list, strict: bool, provenance: bool
                ) -> tuple[Optional[pa.Table], Optional[pa.ChunkedArray]]:
    """One `pyarrow.dataset` scan (parallel, every footer inspected); (table, each row's file) — the file
    column only when `provenance` is asked for."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    paths = [_open_arg(store, f"{table}/{f.name}") for f in files]
    try:
        factory = ds.FileSystemDatasetFactory(pafs.LocalFileSystem(), paths, ds.ParquetFileFormat())
        schema = factory.inspect(promote_options="permissive")
        if not provenance:  # parts only: every row counts
            return factory.finish(schema).to_table(), None
        data = factory.finish(schema).to_table(columns=[*schema.names, "__filename"])
        return data.drop_columns(["__filename"]), data["__filename"]
    except FileNotFoundError:
        raise
    except (pa.ArrowInvalid, OSError) as exc:  # a torn/corrupt file spoils the scan: find it file by file
        if isinstance(exc, OSError) and ("No such file" in str(exc) or "Path does not exist" in str(exc)):
            raise FileNotFoundError(str(exc)) from None
        return _read_files(store, table, files, strict, parallel=1)


def _read_files(store: Store, table: str, files: list, strict: bool, parallel: int
                ) -> tuple[Optional[pa.Table], Optional[pa.ChunkedArray]]:
    """Each file whole, `parallel` at a time (on an object store one GET per part beats a dataset scan's
    several requests per file); unreadable ones skipped with a warning (strict: raised)."""
    from concurrent.futures import ThreadPoolExecutor

    def read(f):
        rel = f"{table}/{f.name}"
        try:
            return pq.read_table(pa.BufferReader(store.read_bytes(rel)))
        except FileNotFoundError:
            raise
        except (pa.ArrowInvalid, OSError) as exc:  # torn/corrupt parquet: no footer, bad magic, truncated...
            if strict:
                raise
            warnings.warn(f"skipping unreadable part file {store.uri_of(rel)}: {exc}", stacklevel=5)
            return None

    if parallel > 1:
        with ThreadPoolExecutor(parallel) as pool:
            pieces = list(pool.map(read, files))
    else:
        pieces = [read(f) for f in files]
    kept = [(f, t) for f, t in zip(files, pieces) if t is not None]
    if not kept:
        return None, None
    data = pa.concat_tables([t for _, t in kept], promote_options="permissive")
    return data, pa.chunked_array([pa.array([f.name] * t.num_rows, pa.string()) for f, t in kept], pa.string())


def compact_table(store: Store, table: str, min_age_s: float = 60.0) -> int:
    """Merge one sweep's finished parts of `table` (and earlier compacted files) into one compacted file; returns
    how many files it absorbed (0: nothing to do).

    Parts changed in the last `min_age_s` seconds are left for the next compaction (a running sweep may still be
    rewriting them). The new file is complete before anything it absorbed is deleted; readers see the same rows
    at every moment."""
    dead: list = []
    parts, compacts, covers = table_state(store, table, dead)
    settled = [p for p in parts if time.time_ns() - p.mtime_ns >= min_age_s * 1e9]
    if not settled and len(compacts) <= 1:
        for f in dead:  # what a stopped compaction had yet to delete
            store.delete(f"{table}/{f.name}")
        return len(dead)
    data = _scan(store, table, settled, compacts, strict=True, tags=True)
    if data is None:
        return 0
    held: dict[str, list] = {}
    for c in compacts:
        held.update(covers[c.name].get("parts", {}))
    for p in settled:
        held[p.name] = [p.size, p.mtime_ns]
    # transitively: a file absorbed by an absorbed file stays absorbed once that one is deleted
    absorbed = sorted({c.name for c in compacts} | {n for c in compacts for n in covers[c.name].get("compacts", [])})
    meta = {_COVERS_KEY: json.dumps({"parts": held, "compacts": absorbed}).encode()}
    data = data.replace_schema_metadata({**(data.schema.metadata or {}), **meta})
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    store.write_parquet(f"{table}/{COMPACT_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}.parquet", data)
    now = {f.name: f for f in store.list_files(table, prefix="part-", suffix=".parquet")}
    for p in settled:  # only if unchanged since it was read (else it is live, and read as such)
        if now.get(p.name) == p:
            store.delete(f"{table}/{p.name}")
    for n in absorbed:
        store.delete(f"{table}/{n}")
    return len(settled) + len(compacts)
