"""Result tables (Arrow/Parquet): their schemas, writing parts, loading and joining.

Tables under a sweep folder `<storage>/<sweep>/`:

* `samples/part-<trial>.parquet`: one row per **canonical** sample (a generated clip at one checkpoint,
  scored once). Its design columns hold the values that ran (`qk_applied` is "off" when MQK was removed,
  `debias_applied` "off" without MV, `checkpoint_step_applied` 0 for the base model). Error rows have
  status "error", the message, and null metrics.
* `inversions/part-<inversion_key>.parquet`: one row per inversion (loss curve, steps, seconds).
* `grid.parquet` (written by `sweep.plan.save_plan`): one row per *requested* grid point × checkpoint with
  the requested axis values (`qk`, `debias`, `checkpoint_step`, ...) and the `sample_key` that answers it.
* `references/part-<key>.parquet`: FID/KID features of real frames, one row per reference video and FID
  backbone: the sweep's own reference videos (written by the trials, once per ddim_key × backbone) and, when
  the spec names a `reference_set`, each of its videos (written by the runner before the trials).
* `comparisons.parquet` (written by `sweep.report.report`): paired differences of every variant against the
  baseline, one row per variant × metric × checkpoint.

Column names follow `vocabulary`'s rule: an axis name holds the requested value, `<axis>_applied` the
value that ran. Requested points are answered by a join, not by duplicated rows: `load(path, "points")`
gives one row per requested grid point × checkpoint with both. Every column is described once, in the
schemas' field metadata (`describe_tables()`, `motion-sweep tables --describe`).

    from sweep.tables import load
    samples = load("results/paper-ablation")          # or the storage root: every sweep, told apart by `sweep`
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import re
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vocabulary import DESIGN_AXES, METRICS, SAMPLE_METRICS, applied

from .store import STORE_DIR, Store

TABLES = ("samples", "inversions", "references", "comparisons", "grid", "points", "search")

_timestamp = pa.timestamp("us", tz="UTC")


def doc_field(name: str, typ: pa.DataType, doc: str) -> pa.Field:
    """An Arrow field whose "doc" metadata says what the column holds (describe_tables() lists them)."""
    return pa.field(name, typ, metadata={"doc": doc})


_IDENTITY = [
    doc_field("sweep", pa.string(), "sweep name (the spec's `name`)"),
    doc_field("trial_id", pa.string(), "Tune trial that produced the row (= its inversion key)"),
]
_DATA = [
    doc_field("video", pa.string(), "reference video id (the data item's `id`, default its file stem)"),
    doc_field("source_video", pa.string(), "reference video path or URI"),
    doc_field("source_prompt", pa.string(), "text describing the reference video (conditions the inversion)"),
]
_PROVENANCE = [
    doc_field("preset", pa.string(), "model preset (vocabulary.PRESETS)"),
    doc_field("base_model", pa.string(), "hub id or local folder of the base model's weights"),
    doc_field("config", pa.string(), "JSON of every inversion/generation setting that produced the row"),
]
_BOOKKEEPING = [
    doc_field("status", pa.string(), "ok | error"),
    doc_field("error", pa.string(), "what failed (stage: message) on error rows"),
    doc_field("device", pa.string(), "where it ran: cpu or cuda:<GPU name>"),
    doc_field("code_version", pa.string(), "motion-sweep package version that wrote the row"),
    doc_field("created_at", _timestamp, "when the row was written (UTC)"),
]

SAMPLES_SCHEMA = pa.schema([
    *_IDENTITY,
    doc_field("sample_key", pa.string(), "content hash of the scored sample (generation + metric settings)"),
    doc_field("generation_key", pa.string(), "content hash of the generated clip"),
    doc_field("inversion_key", pa.string(), "content hash of the learned embeddings it used"),
    doc_field("ddim_key", pa.string(), "content hash of the reference's cached latent and DDIM inversion"),
    doc_field("variant", pa.string(), "readable canonical variant id, e.g. 'qk=1d v=2d debias=difference'"),
    doc_field("variant_key", pa.string(), "content hash of the canonical variant"),
    doc_field(applied("qk"), pa.string(), "MQK design that ran: 1d | 2d | off"),
    doc_field(applied("v"), pa.string(), "MV design that ran: 2d | 1d | off"),
    doc_field(applied("remove"), pa.string(), "components absent from the variant: none | qk | v | both"),
    doc_field(applied("debias"), pa.string(), "MV debias applied at generation; off when there is no MV"),
    doc_field(applied("seed"), pa.int64(), "optimisation seed (null for the base model: nothing optimised)"),
    doc_field("generation_seed", pa.int64(), "noise seed of the generation"),
    doc_field(applied("checkpoint_step"), pa.int64(), "inversion step of the embeddings used (0: base model)"),
    *_DATA,
    doc_field("prompt", pa.string(), "edit prompt the clip was generated from"),
    *_PROVENANCE,
    *[doc_field(m, pa.float64(), f"{METRICS[m].description} ({'higher' if METRICS[m].higher_is_better else 'lower'}"
                              " is better); null on error rows") for m in SAMPLE_METRICS],
    doc_field("fid_features", pa.list_(pa.list_(pa.float32())),
           "FID/KID feature vector of each kept frame ([frames][dim]; every frame unless fid_frames > 0)"),
    doc_field("unavailable", pa.string(), "'metric: reason; ...' for metrics that could not be computed"),
    doc_field("clip_backbone", pa.string(), "open_clip model of the CLIP metrics"),
    doc_field("clip_pretrained", pa.bool_(), "false: CLIP with random weights (plumbing numbers)"),
    doc_field("tracker", pa.string(), "point tracker of motion fidelity: lk (Lucas–Kanade) | cotracker3"),
    doc_field("tracker_checkpoint", pa.string(), "tracker weights (file or pinned torch.hub repo)"),
    doc_field("grid_size", pa.int64(), "requested tracking grid side (DMT: 55)"),
    doc_field("motion_filter", pa.string(), "which tracks entered motion_fidelity"),
    doc_field("fid_backbone", pa.string(), "feature extractor of fid_features"),
    doc_field("fid_frames", pa.int64(), "setting: frames per clip whose FID features are kept, evenly spaced (0: all)"),
    doc_field("pretrained_metrics", pa.bool_(), "true only when every learned metric backbone had trained weights"),
    doc_field("evaluation_version", pa.string(), "version of the metric definitions"),
    doc_field("motion_grid", pa.int64(), "tracking grid side used (clipped to fit the frame)"),
    doc_field("motion_tracks", pa.int64(), "generated tracks that entered motion_fidelity"),
    doc_field("motion_tracks_reference", pa.int64(), "reference tracks that entered motion_fidelity"),
    doc_field("motion_mask", pa.string(), "the moving-track rule of motion_fidelity, in pixels for this clip size"),
    doc_field("motion_mask_fallback", pa.bool_(), "true: nothing moved in the reference, so every visible track "
                                               "entered motion_fidelity (then it equals motion_fidelity_dmt)"),
    doc_field("video_path", pa.string(), "the generated clip (path or URI)"),
    *_BOOKKEEPING[:3],
    doc_field("invert_seconds", pa.float64(), "wall time of the embeddings' optimisation"),
    doc_field("generate_seconds", pa.float64(), "wall time of the generation (per clip of its batch)"),
    doc_field("score_seconds", pa.float64(), "wall time of scoring the clip"),
    doc_field("seconds_clip", pa.float64(), "scoring: CLIP embeddings and cosines"),
    doc_field("seconds_motion", pa.float64(), "scoring: tracking and the DMT score"),
    doc_field("seconds_fid", pa.float64(), "scoring: FID features"),
    doc_field("inversion_cached", pa.bool_(), "the embeddings came from the store (not optimised by this trial)"),
    *_BOOKKEEPING[3:],
])
# Swept hyperparameter axes are extra columns named `<axis>_applied` ("inversion.lr_applied"), typed from their
# values: the value that ran, null where the setting means nothing (the base model's learning rate).

INVERSIONS_SCHEMA = pa.schema([
    *_IDENTITY,
    doc_field("inversion_key", pa.string(), "content hash of the learned embeddings"),
    doc_field("ddim_key", pa.string(), "content hash of the reference's cached latent and DDIM inversion"),
    *_DATA,
    doc_field(applied("qk"), pa.string(), "MQK design that ran: 1d | 2d | off"),
    doc_field(applied("v"), pa.string(), "MV design that ran: 2d | 1d | off"),
    *_PROVENANCE[:2],
    doc_field(applied("seed"), pa.int64(), "optimisation seed (null for the base model)"),
    doc_field("steps", pa.int64(), "optimisation steps run"),
    doc_field("checkpoints", pa.list_(pa.int64()), "steps whose embeddings were saved"),
    _PROVENANCE[2],
    doc_field("loss_curve", pa.list_(pa.float32()), "training loss at every step"),
    doc_field("seconds", pa.float64(), "wall time of the optimisation"),
    doc_field("ddim_seconds", pa.float64(), "wall time of the DDIM inversion"),
    doc_field("cached", pa.bool_(), "the embeddings came from the store"),
    *_BOOKKEEPING,
])

REFERENCES_SCHEMA = pa.schema([
    doc_field("sweep", pa.string(), "sweep name"),
    doc_field("reference_key", pa.string(), "which real clip: the ddim_key of a sweep video, or "
                                         "'<reference set key>/<video id>'"),
    doc_field("source", pa.string(), "sweep_videos (the sweep's own reference videos) | reference_set (spec's)"),
    doc_field("video", pa.string(), "video id (a sweep video's id, or the reference set entry's id)"),
    doc_field("source_video", pa.string(), "video path or URI"),
    doc_field("reference_set", pa.string(), "the spec's reference_set (folder or manifest); null for sweep videos"),
    doc_field("ddim_key", pa.string(), "content hash of the frames as prepared for the model (sweep videos)"),
    doc_field("content_hash", pa.string(), "hash of the source (a sweep video: its fingerprint; a reference set entry: its "
                                         "decoded frames); one clip twice is refused"),
    doc_field("height", pa.int64(), "frame height fed to the backbone (the generated clips' size)"),
    doc_field("width", pa.int64(), "frame width fed to the backbone"),
    doc_field("n_frames", pa.int64(), "frames with features (every frame of the clip)"),
    doc_field("dim", pa.int64(), "feature dimension"),
    doc_field("fid_features", pa.list_(pa.list_(pa.float32())), "FID/KID feature vector of each frame ([frames][dim])"),
    doc_field("fid_backbone", pa.string(), "feature extractor (equals the samples' fid_backbone it serves)"),
    doc_field("pretrained_metrics", pa.bool_(), "the extractor had trained weights"),
    doc_field("evaluation_version", pa.string(), "version of the metric definitions"),
    *_BOOKKEEPING,
])

COMPARISONS_SCHEMA = pa.schema([
    doc_field("sweep", pa.string(), "sweep name"),
    doc_field("baseline", pa.string(), "variant compared against (default: the paper's full method)"),
    doc_field("variant", pa.string(), "variant compared"),
    doc_field("metric", pa.string(), "metric (vocabulary.METRICS)"),
    doc_field("higher_is_better", pa.bool_(), "direction of the metric"),
    doc_field("checkpoint", pa.int64(), "checkpoint step of the comparison (the non-base side's; the base model's "
                                     "single step 0 matches every step)"),
    doc_field("variant_checkpoint", pa.int64(), "the variant's step in the comparison (0 for the base model)"),
    doc_field("baseline_checkpoint", pa.int64(), "the baseline's step in the comparison"),
    doc_field("n_units", pa.int64(), "matched units (video, prompt, generation seed) with a value on both sides"),
    doc_field("n_unmatched", pa.int64(), "units with a value on one side only (dropped)"),
    doc_field("n_videos", pa.int64(), "videos among the matched units (the resampling unit)"),
    doc_field("baseline_mean", pa.float64(), "baseline's mean over videos of its per-video mean, matched units"),
    doc_field("variant_mean", pa.float64(), "variant's mean over videos of its per-video mean, matched units"),
    doc_field("mean_difference", pa.float64(), "variant − baseline: mean over videos of the per-video mean "
                                            "paired difference"),
    doc_field("ci_low", pa.float64(), "lower end of the CI of mean_difference (null: see ci_note)"),
    doc_field("ci_high", pa.float64(), "upper end of the CI of mean_difference (null: see ci_note)"),
    doc_field("ci_method", pa.string(), "how the CI was made (BCa bootstrap resampling videos)"),
    doc_field("ci_note", pa.string(), "why the CI is null (e.g. 'n too small: 3 videos < 5'); null when given"),
    doc_field("confidence", pa.float64(), "CI level"),
    doc_field("n_boot", pa.int64(), "bootstrap resamples"),
    doc_field("test", pa.string(), "the paired test of p"),
    doc_field("p", pa.float64(), "two-sided p-value of the paired test"),
    doc_field("p_holm", pa.float64(), "p adjusted by Holm's step-down over every comparison of this metric in the sweep"),
    doc_field("family_size", pa.int64(), "comparisons in that Holm family"),
    doc_field("code_version", pa.string(), "motion-sweep package version that wrote the row"),
    doc_field("created_at", _timestamp, "when the row was written (UTC)"),
])

#: Columns of the grid table that are not axes (the axes themselves hold requested values).
GRID_COLUMNS = {
    "sweep": "sweep name", "video": "reference video id", "source_prompt": "text describing the reference",
    "prompt": "edit prompt", "checkpoint_step": "requested checkpoint step",
    applied("checkpoint_step"): "step of the sample that answers it (0: base model)",
    "variant": "canonical variant id that answers the point", "variant_key": "its content hash",
    "trial_id": "trial that computes it", "sample_key": "sample that answers it (join key with samples)",
}
AXIS_DOC = {"qk": "requested MQK design", "v": "requested MV design", "remove": "requested removed components",
            "debias": "requested MV debias", "seed": "requested seed"}
assert tuple(AXIS_DOC) == DESIGN_AXES

#: Tables written as parts (write_part), and comparisons (one file per sweep, write_comparisons).
SCHEMAS = {"samples": SAMPLES_SCHEMA, "inversions": INVERSIONS_SCHEMA, "references": REFERENCES_SCHEMA}
#: `<sweep>/search.parquet`: one row per search sample (Tune trial). Each searched setting is also a column
#: of its own, named as in the space (`inversion.lr`), holding the sampled value.
SEARCH_SCHEMA = pa.schema([
    doc_field("sweep", pa.string(), "sweep name"),
    doc_field("search", pa.string(), "the sample's Tune trial id (= the `search` column of its samples rows)"),
    doc_field("experiment", pa.string(), "Tune experiment (under <sweep>/tune/)"),
    doc_field("config", pa.string(), "JSON of the sampled values (the searched settings only)"),
    doc_field("status", pa.string(), "ok | error (the trial failed after its retries)"),
    doc_field("error", pa.string(), "why it failed"),
    doc_field("steps_max", pa.int64(), "the sample's inversion steps (how far it would run without early stopping)"),
    doc_field("steps_run", pa.int64(), "the last inversion step it reached"),
    doc_field("stopped_early", pa.bool_(), "the scheduler stopped it before steps_max"),
    doc_field("rungs", pa.list_(pa.int64()), "checkpoint steps at which its eval set was scored"),
    doc_field("objectives", pa.list_(pa.float64()), "objective at each of those steps (aligned with rungs)"),
    doc_field("best_step", pa.int64(), "its step with the best objective"),
    doc_field("best_objective", pa.float64(), "the objective there"),
    doc_field("is_best", pa.bool_(), "this sample holds the search's best (objective, step)"),
    doc_field("videos", pa.int64(), "videos it inverted (one optimisation each)"),
    doc_field("inversion_keys", pa.list_(pa.string()), "content keys of its embeddings (store/inversions/<key>)"),
    doc_field("seconds", pa.float64(), "wall time of the trial"),
    doc_field("code_version", pa.string(), "motion-sweep package version that wrote the row"),
    doc_field("created_at", pa.timestamp("us", tz="UTC"), "when the row was written (UTC)"),
])


ALL_SCHEMAS = {**SCHEMAS, "comparisons": COMPARISONS_SCHEMA, "search": SEARCH_SCHEMA}
_NULL_ON_ERROR = {"samples": (*SAMPLE_METRICS, "fid_features"), "inversions": ("loss_curve",),
                  "references": ("fid_features",)}
_PART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def describe_tables() -> dict[str, dict[str, str]]:
    """{table: {column: what it holds}}: the one place where columns are documented."""
    out = {name: {f.name: f.metadata[b"doc"].decode() for f in schema} for name, schema in ALL_SCHEMAS.items()}
    out["samples"]["<axis>_applied"] = "a swept inversion./generation. hyperparameter: the value that ran"
    out["grid"] = {**{a: doc for a, doc in AXIS_DOC.items()}, "<axis>": "a swept hyperparameter: requested value",
                   **GRID_COLUMNS}
    out["points"] = {"(grid columns)": "the requested point", "(samples columns)": "the sample that answers it"}
    return out


# --------------------------------------------------------------------------------------------------
# Writing.

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
    return store.write_bytes_atomic(store.part_path(sweep, table, part), _parquet_bytes(data))


def write_comparisons(path: str | os.PathLike, comparisons: pa.Table, sweeps: Optional[Sequence[str]] = None
                      ) -> list[str]:
    """Write each sweep's rows of `comparisons` as `<sweep>/comparisons.parquet` under `path` (a sweep folder or
    a storage root), atomically, replacing the previous report's; `sweeps` also get a file when they have no
    rows (default: the sweeps in `comparisons`). Returns the URIs written."""
    names = comparisons["sweep"].to_pylist()
    wanted = set(names) | set(sweeps or ())
    written = []
    for name, store in _sweep_stores(path):
        if name in wanted:
            rows = pa.array([i for i, s in enumerate(names) if s == name], pa.int64())
            store.write_bytes_atomic("comparisons.parquet",
                                     _parquet_bytes(_conform(comparisons.take(rows), COMPARISONS_SCHEMA)))
            written.append(store.uri_of("comparisons.parquet"))
    return written


def _parquet_bytes(data: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink)
    return sink.getvalue().to_pybytes()


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
    report's paired tests) | "grid" (requested points) | "points" (grid joined with samples).
    A part table is its compacted files (`motion-sweep compact`) plus the complete `part-*.parquet` files they
    do not hold, read in one `pyarrow.dataset` scan: temp files never match, a part held by a compacted file is
    read once, and a part rewritten after compaction replaces its old rows. A part that cannot be read
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
        if table in ("grid", "comparisons", "search"):  # one file per sweep
            piece = _read_part(store, f"{table}.parquet", strict) if store.exists(f"{table}.parquet") else None
        else:
            piece = _read_part_table(store, table, strict)
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


# --------------------------------------------------------------------------------------------------
# Part tables: parts and compacted files.
#
# A compacted file `compact-<time>-<id>.parquet` holds the rows of the parts (and older compacted files) it
# absorbed, each row tagged with its part's name (`_part`), and names them in its footer: every absorbed part
# with the size and time it had, and the absorbed compacted files. A reader takes the compacted files no other
# one absorbed, drops their rows of any part that was since rewritten (its size or time differ), and adds the
# parts none of them holds. `compact` writes the new file whole (atomic rename / object put) before it deletes
# what it absorbed, so a compaction killed at any point leaves a table that reads the same.

COMPACT_PREFIX = "compact-"
PART_COLUMN = "_part"  # in compacted files only: the part a row came from
_COVERS_KEY = b"motion_sweep.covers"


def _table_state(store: Store, table: str, dead: Optional[list] = None) -> tuple[list, list, dict]:
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
    parts, _, covers = _table_state(sub, table)
    names = {p.name for p in parts} | {n for cov in covers.values() for n in cov.get("parts", {})}
    return {n[len("part-"):-len(".parquet")] for n in names}


def _covers(store: Store, rel: str) -> dict:
    import json

    meta = pq.read_schema(_open_arg(store, rel), filesystem=None if store.is_local else store.fs).metadata or {}
    return json.loads(meta.get(_COVERS_KEY, b"{}"))


def _open_arg(store: Store, rel: str) -> str:
    return str(store.local_path(rel)) if store.is_local else store.abspath(rel)


def _read_part_table(store: Store, table: str, strict: bool, attempts: int = 3) -> Optional[pa.Table]:
    """A sweep's part table as the rules above say; listed again if a file vanishes mid-read (a compaction
    finished meanwhile)."""
    for attempt in range(attempts):
        parts, compacts, _ = _table_state(store, table)
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


def compact(path: str | os.PathLike, tables: Sequence[str] = tuple(SCHEMAS), *,
            sweeps: Optional[Sequence[str]] = None, min_age_s: float = 60.0) -> dict[str, dict[str, int]]:
    """Merge each sweep's finished parts (and earlier compacted files) into one compacted file per table.

    Parts changed in the last `min_age_s` seconds are left for the next compaction (a running sweep may still be
    rewriting them). The new file is complete before anything it absorbed is deleted; readers see the same rows
    at every moment. Returns {sweep: {table: files absorbed}}."""
    import json
    import time
    import uuid

    out: dict[str, dict[str, int]] = {}
    now_ns = time.time_ns()
    for name, store in _sweep_stores(path):
        if sweeps is not None and name not in sweeps:
            continue
        for table in tables:
            dead: list = []
            parts, compacts, covers = _table_state(store, table, dead)
            settled = [p for p in parts if now_ns - p.mtime_ns >= min_age_s * 1e9]
            if not settled and len(compacts) <= 1:
                for f in dead:  # what a stopped compaction had yet to delete
                    store.delete(f"{table}/{f.name}")
                if dead:
                    out.setdefault(name, {})[table] = len(dead)
                continue
            data = _scan(store, table, settled, compacts, strict=True, tags=True)
            if data is None:
                continue
            held: dict[str, list] = {}
            for c in compacts:
                held.update(covers[c.name].get("parts", {}))
            for p in settled:
                held[p.name] = [p.size, p.mtime_ns]
            # transitively: a file absorbed by an absorbed file stays absorbed once that one is deleted
            absorbed = sorted({c.name for c in compacts} | {n for c in compacts for n in covers[c.name].get("compacts", [])})
            meta = {_COVERS_KEY: json.dumps({"parts": held, "compacts": absorbed}).encode()}
            data = data.replace_schema_metadata({**(data.schema.metadata or {}), **meta})
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
            rel = f"{table}/{COMPACT_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}.parquet"
            store.write_bytes_atomic(rel, _parquet_bytes(data))
            now = {f.name: f for f in store.list_files(table, prefix="part-", suffix=".parquet")}
            for p in settled:  # only if unchanged since it was read (else it is live, and read as such)
                if now.get(p.name) == p:
                    store.delete(f"{table}/{p.name}")
            for n in absorbed:
                store.delete(f"{table}/{n}")
            out.setdefault(name, {})[table] = len(settled) + len(compacts)
    return out


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

