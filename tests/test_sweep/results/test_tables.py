"""Result tables: atomic parts, loading (never torn files, old parts with fewer columns), the grid join, rows
normalised on the way in, the scored-row cache, remote storage through pyarrow's filesystems."""

import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.sweeps import DIM, make_spec, run_fake
from sweep.results.schemas import SAMPLES_SCHEMA
from sweep.results.store import Store
from sweep.results.tables import cached_sample_row, load, sample_row, write_part
from sweep.run.plan import BASE_VARIANT, make_plan


def test_round_trip(tmp_path):
    spec = make_spec(tmp_path)
    run_fake(spec, fail=lambda g: g.prompt == "p0a" and g.checkpoint == 10)
    table = load(Path(spec.storage) / spec.name)
    assert table.schema.names[: len(SAMPLES_SCHEMA)] == SAMPLES_SCHEMA.names
    assert table.schema.field("fid_features").type == pa.list_(pa.list_(pa.float32()))
    plan = make_plan(spec)
    assert table.num_rows == len(plan.generations())
    assert set(table["sample_key"].to_pylist()) == {g.sample_key for g in plan.generations()}
    errors = table.filter(pa.compute.equal(table["status"], "error"))
    assert errors.num_rows > 0
    assert set(errors["error"].to_pylist()) == {"CUDA out of memory"}
    assert errors["text_similarity"].null_count == errors.num_rows and errors["fid_features"].null_count == errors.num_rows
    ok = table.filter(pa.compute.equal(table["status"], "ok"))
    assert ok["fid_features"][0].as_py().__len__() == 4
    assert set(table["sweep"].to_pylist()) == {"abl"}
    assert table["code_version"][0].as_py()
    assert set(table["variant"].to_pylist()) == {"qk=1d v=2d debias=difference", "qk=1d v=2d debias=none",
                                                 "qk=1d v=off", BASE_VARIANT}
    inv = load(Path(spec.storage) / spec.name, table="inversions")
    assert inv.num_rows == len(plan.trials)
    assert inv.schema.field("loss_curve").type == pa.list_(pa.float32())
    assert len(inv["loss_curve"][0].as_py()) == 20


def test_storage_root_loads_every_sweep(tmp_path):
    a = make_spec(tmp_path, name="a")
    b = make_spec(tmp_path, name="b", axes={"qk": ["1d", "2d"], "inversion.lr": [0.01, 0.03]})
    run_fake(a)
    run_fake(b)
    table = load(a.storage)
    assert sorted(set(table["sweep"].to_pylist())) == ["a", "b"]
    # b's swept hyperparameter is a column; a's rows have it null
    lr = dict(zip(table["sweep"].to_pylist(), table["inversion.lr_applied"].to_pylist()))
    assert lr["a"] is None and lr["b"] in (0.01, 0.03)
    assert load(a.storage, sweeps=["b"]).num_rows == len(make_plan(b).generations())
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nothing-here")


def test_torn_and_temp_parts_are_never_read(tmp_path):
    spec = make_spec(tmp_path, n_videos=1)
    store = run_fake(spec)
    n = load(store.uri).num_rows
    samples = Path(store.uri) / spec.name / "samples"
    good = sorted(samples.glob("part-*.parquet"))[0].read_bytes()
    (samples / ".tmp-1234-part-zzz.parquet").write_bytes(good)  # a write in progress (complete bytes even)
    (samples / "part-torn.parquet").write_bytes(good[: len(good) // 2])  # a torn copy
    (samples / "part-empty.parquet").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipping unreadable part file"):
        table = load(store.uri)
    assert table.num_rows == n
    with pytest.raises((pa.ArrowInvalid, OSError)):
        load(store.uri, strict=True)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    store = Store(tmp_path / "res")
    write_part(store, "s", "t1", [{"variant": "x", "video": "v", "text_similarity": 0.3}])
    before = sorted(p.name for p in (tmp_path / "res" / "s" / "samples").iterdir())

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_part(store, "s", "t2", [{"variant": "x", "video": "v", "text_similarity": 0.4}])
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "res" / "s" / "samples").iterdir()) == before  # no temp left
    assert load(tmp_path / "res" / "s")["text_similarity"].to_pylist() == [0.3]


def test_rows_are_normalised(tmp_path):
    store = Store(tmp_path)
    rows = [{"variant": "x", "video": "v", "text_similarity": float("nan"), "motion_fidelity": np.float32(0.5),
             "fid_features": np.ones(DIM), "custom": 1},
            {"variant": "x", "video": "v", "status": "error", "error": "boom", "text_similarity": 0.9},
            {"variant": "x", "video": "v", "error": "implicit error"}]
    write_part(store, "s", "p", rows)
    t = load(tmp_path / "s")
    assert t["text_similarity"].to_pylist() == [None, None, None]  # NaN -> null; error rows keep metrics null
    assert t["motion_fidelity"].to_pylist()[0] == 0.5
    assert t["status"].to_pylist() == ["ok", "error", "error"]
    assert t["fid_features"][0].as_py() == [[1.0] * DIM]  # a single vector is one frame
    assert t["custom"].to_pylist() == [1, None, None] and t["trial_id"].to_pylist() == ["p"] * 3
    with pytest.raises(ValueError, match="status"):
        write_part(store, "s", "q", [{"status": "done"}])
    with pytest.raises(ValueError, match="part names"):
        write_part(store, "s", "../escape", [])


def test_points_answer_every_requested_grid_point(tmp_path):
    spec = make_spec(tmp_path)
    run_fake(spec, fail=lambda g: g.variant == "qk=1d v=off" and g.prompt == "p1b")
    points = load(Path(spec.storage) / spec.name, table="points")
    plan = make_plan(spec)
    assert points.num_rows == sum(len(g.checkpoints) for g in plan.grid_points) == len(plan.grid_points) * 2
    # requested values are kept: remove=v with either debias, remove=both at 10 and 20 (served by step 0)
    rows = points.to_pylist()
    v_removed = [r for r in rows if r["remove"] == "v"]
    assert {r["debias"] for r in v_removed} == {"difference", "none"}
    assert {r["variant"] for r in v_removed} == {"qk=1d v=off"}
    base = [r for r in rows if r["remove"] == "both"]
    assert {r["checkpoint_step"] for r in base} == {10, 20} and {r["checkpoint_step_applied"] for r in base} == {0}
    assert all(r["status"] in ("ok", "error") for r in rows)  # every point has its sample
    assert all(r["text_similarity"] is None for r in rows if r["status"] == "error")
    assert all(r["text_similarity"] == 0.5 for r in rows if r["status"] == "ok")


def test_old_parts_with_fewer_columns_still_load(tmp_path):
    old = pa.table({"sweep": ["s"], "trial_id": ["t0"], "variant": ["x"], "video": ["v"], "status": ["ok"],
                    "text_similarity": [0.25], "legacy": ["kept"]})
    folder = tmp_path / "s" / "samples"
    folder.mkdir(parents=True)
    pq.write_table(old, folder / "part-t0.parquet")
    write_part(Store(tmp_path), "s", "t1", [{"variant": "x", "video": "v", "text_similarity": 0.5,
                                              "inversion.lr_applied": 0.01}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = load(tmp_path)
    assert t.num_rows == 2 and sorted(t["text_similarity"].to_pylist()) == [0.25, 0.5]
    assert t.schema.names[: len(SAMPLES_SCHEMA)] == SAMPLES_SCHEMA.names
    assert {"legacy", "inversion.lr_applied"} <= set(t.column_names)
    empty = load(tmp_path / "s", table="inversions")
    assert empty.num_rows == 0 and "loss_curve" in empty.column_names


def test_remote_storage_code_path(tmp_path, monkeypatch):
    """The pyarrow.fs path (used for s3:// and friends), on an in-memory filesystem."""
    import pyarrow.fs as pafs

    import sweep.results.store as store_module

    memory = pafs._MockFileSystem()
    monkeypatch.setattr(store_module, "_filesystem_from_uri", lambda uri: (memory, uri.split("://", 1)[1]))
    spec = make_spec(tmp_path)
    spec.storage = "hdfs://namenode/results"  # not an object store: temp file + move
    store = run_fake(spec, fail=lambda g: g.prompt == "p1a")
    assert not store.is_local
    table = load("hdfs://namenode/results")
    assert table.num_rows == len(make_plan(spec).generations())
    assert load("hdfs://namenode/results/abl", table="points").num_rows == len(make_plan(spec).grid_points) * 2
    names = store.list_names("abl/samples")
    assert names and all(n.startswith("part-") for n in names)
    memory.create_dir("namenode/results/abl/samples", recursive=True)
    with memory.open_output_stream("namenode/results/abl/samples/part-torn.parquet") as f:
        f.write(b"PAR1 not a whole file")
    with pytest.warns(UserWarning, match="part-torn"):
        assert load("hdfs://namenode/results").num_rows == table.num_rows
    # cache look-ups, upload/download, cached rows
    store.write_bytes_atomic(store.inversion_step_path("k", 250), b"emb")
    assert store.has_inversion("k", [250]) and not store.has_inversion("k", [250, 400])
    assert store.inversion_steps("k") == [250]
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"mp4")
    store.upload(src, store.video_path("g"))
    assert store.exists(store.video_path("g")) and store.download(store.video_path("g"), tmp_path / "back.mp4").read_bytes() == b"mp4"
    plan = make_plan(spec)
    g = plan.generations()[0]
    store.put_sample(g.sample_key, sample_row({**g.columns, "sweep": "older"}, {"text_similarity": np.float64(0.7),
                                                                             "fid_features": np.ones((2, DIM))}))
    row = cached_sample_row(store, g.sample_key, g.columns)
    assert row["sweep"] == "abl" and row["text_similarity"] == 0.7
    write_part(store, "abl", "again", [row])  # JSON-cached rows (ISO timestamps, lists) write back fine
    assert cached_sample_row(store, "missing", g.columns) is None
