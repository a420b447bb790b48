"""Result tables: atomic parts, loading (never torn files), the grid join, summaries, the report."""

import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep.plan import BASE_VARIANT, make_plan, save_plan
from sweep.report import compare, report, summarize, summary_notes
from sweep.tables import SAMPLES_SCHEMA, cached_sample_row, load, sample_row, write_part
from sweep.spec import Spec
from sweep.store import Store

DIM = 6
NUMPY_FID = None  # evaluation.fid
BACKBONE = "clip:fake"


def make_spec(tmp_path: Path, name: str = "abl", n_videos: int = 3, axes=None, prompts: str = "ab",
              checkpoints=(10, 20)) -> Spec:
    data = []
    for i in range(n_videos):
        video = tmp_path / f"v{i}.mp4"
        video.write_bytes(f"video {i}".encode())
        data.append({"video": str(video), "source_prompt": f"source {i}", "prompts": [f"p{i}{p}" for p in prompts]})
    axes = axes or {"qk": ["1d"], "v": ["2d"], "remove": ["none", "v", "both"], "debias": ["difference", "none"]}
    return Spec.model_validate({"name": name, "preset": "tiny", "storage": str(tmp_path / "results"),
                                "data": data, "axes": axes,
                                "inversion": {"steps": 20, "checkpoints": list(checkpoints)}})


def run_fake(spec: Spec, fail=lambda g: False, metric=lambda g: 0.5, seed: int = 0, metrics=None,
             references: bool = True, features=None) -> Store:
    """What the trainable does, minus the model: one samples part and one inversions part per trial, and one
    references part per reference video (its frames' FID features, as the trainable stores them).

    metric(g) sets every per-sample metric but temporal_consistency/appearance_leakage (0.9/0.1); `metrics(g)`,
    if given, returns the metric dict instead. features(g) -> [frames, DIM] (default: normal around metric(g)).
    """
    rng = np.random.default_rng(seed)
    plan = make_plan(spec)
    store = Store(spec.storage)
    save_plan(store, plan)
    for trial in plan.trials:
        rows = []
        for g in trial.generations:
            if fail(g):
                rows.append(sample_row(g.columns, error="CUDA out of memory", device="cpu"))
                continue
            value = metric(g)
            values = metrics(g) if metrics else {
                "text_similarity": value, "temporal_consistency": 0.9, "motion_fidelity": value,
                "motion_fidelity_two_way": value, "appearance_leakage": 0.1}
            feats = features(g) if features else rng.normal(value, 1.0, size=(4, DIM)).astype(np.float32)
            rows.append(sample_row(g.columns, {**values, "fid_features": feats},
                                   video_path=f"store/videos/{g.generation_key}.mp4", device="cpu",
                                   generate_seconds=1.0, pretrained_metrics=False, fid_backbone=BACKBONE))
        write_part(store, spec.name, trial.trial_id, rows)
        write_part(store, spec.name, trial.trial_id, [{**trial.columns, "loss_curve": np.linspace(1, 0, 20),
                                                      "seconds": 3.0, "device": "cpu"}], table="inversions")
    if references:
        for d in plan.ddim_inversions:
            write_reference(store, spec.name, d.ddim_key, d.video, rng.normal(0.0, 1.0, size=(8, DIM)))
    return store


def write_reference(store: Store, sweep: str, key: str, video: str, feats, source: str = "sweep_videos",
                    backbone: str = BACKBONE, content: str | None = None, **fields) -> None:
    feats = np.asarray(feats, np.float32)
    write_part(store, sweep, f"ref-{key}".replace("/", "-"), [{
        "reference_key": key, "source": source, "video": video, "ddim_key": key if source == "sweep_videos" else None,
        "content_hash": content or key, "n_frames": len(feats), "dim": feats.shape[1], "fid_features": feats,
        "fid_backbone": backbone, "status": "ok", "created_at": "2024-01-01T00:00:00+00:00", **fields}],
        table="references")


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


def test_summarize_means_cis_errors(tmp_path):
    spec = make_spec(tmp_path, n_videos=5)
    # per video: v0 -> 0.2 ... v4 -> 0.6 (so the mean over videos is 0.4)
    value = lambda g: {"v0": 0.2, "v1": 0.3, "v2": 0.4, "v3": 0.5, "v4": 0.6}[g.columns["video"]]  # noqa: E731
    fail = lambda g: g.columns["video"] == "v2" and g.prompt == "p2a" and g.variant == "qk=1d v=off"  # noqa: E731
    run_fake(spec, fail=fail, metric=value)
    summary = summarize(load(spec.storage), references=load(spec.storage, "references"), n_boot=500,
                        fid_functions=NUMPY_FID)
    rows = {(r["variant"], r["checkpoint_step_applied"]): r for r in summary.to_pylist()}
    assert set(rows) == {("qk=1d v=2d debias=difference", 10), ("qk=1d v=2d debias=difference", 20),
                         ("qk=1d v=2d debias=none", 10), ("qk=1d v=2d debias=none", 20),
                         ("qk=1d v=off", 10), ("qk=1d v=off", 20), (BASE_VARIANT, 0)}
    r = rows[("qk=1d v=2d debias=difference", 10)]
    assert (r["n_samples"], r["n_ok"], r["n_errors"], r["n_videos"]) == (10, 10, 0, 5)
    assert r["text_similarity_mean"] == pytest.approx(0.4)
    assert r["text_similarity_low"] < 0.4 < r["text_similarity_high"]
    assert 0.2 <= r["text_similarity_low"] and r["text_similarity_high"] <= 0.6
    assert r["text_similarity_n"] == 10
    e = rows[("qk=1d v=off", 10)]
    assert (e["n_samples"], e["n_ok"], e["n_errors"], e["n_videos"]) == (10, 9, 1, 5)
    assert e["text_similarity_mean"] == pytest.approx(0.4)  # the error row is counted, not averaged
    assert e["text_similarity_n"] == 9
    # FID/KID against the reference videos' frames (5 videos × 8 frames), never the base model's samples
    assert r["fid"] is not None and r["kid"] is not None and r["fid_n_frames"] == 40
    assert r["fid_n_reference_frames"] == 40 and r["fid_dim"] == DIM and r["fid_reliable"] is True
    assert summary_notes(summary) == []


def test_summarize_missing_values_are_counted_not_averaged():
    t = pa.table({"variant": ["a"] * 4, "checkpoint_step_applied": [1] * 4, "video": ["x", "x", "y", "y"],
                  "status": ["ok", "ok", "ok", "error"], "text_similarity": [0.1, None, 0.3, None]})
    (r,) = summarize(t, metrics=["text_similarity"]).to_pylist()
    assert (r["n_samples"], r["n_ok"], r["n_errors"], r["text_similarity_n"]) == (4, 3, 1, 2)
    assert r["text_similarity_mean"] == pytest.approx(0.2)
    assert "fid" not in r  # no feature column: no FID columns


def test_paired_comparison_against_the_base_model(tmp_path):
    spec = make_spec(tmp_path)
    value = lambda g: 0.3 if g.variant == BASE_VARIANT else 0.5  # noqa: E731
    run_fake(spec, metric=value)
    comparisons = compare(load(spec.storage), baseline=BASE_VARIANT, n_boot=200)
    assert set(comparisons["baseline"].to_pylist()) == {BASE_VARIANT}
    rows = [r for r in comparisons.to_pylist() if r["metric"] == "text_similarity"]
    assert {(r["variant"], r["checkpoint"]) for r in rows} == {
        (v, c) for v in ("qk=1d v=2d debias=difference", "qk=1d v=2d debias=none", "qk=1d v=off") for c in (10, 20)}
    for r in rows:
        assert r["mean_difference"] == pytest.approx(0.2)
        assert r["n_units"] == 6  # 3 videos × 2 prompts; base's single checkpoint 0 matches every checkpoint
        assert r["baseline_checkpoint"] == 0


def test_fid_needs_a_reference(tmp_path):
    spec = make_spec(tmp_path, axes={"remove": ["none"]})
    run_fake(spec, references=False)
    table = load(spec.storage)
    summary = summarize(table, references=load(spec.storage, "references"), n_boot=10, fid_functions=NUMPY_FID)
    assert set(summary["fid"].to_pylist()) == {None}
    assert any("no reference frames" in n and "reference_features=" in n for n in summary_notes(summary))
    ref = np.random.default_rng(1).normal(0.0, 1.0, size=(50, DIM))
    summary = summarize(table, reference_features=ref, n_boot=10, fid_functions=NUMPY_FID)
    assert all(v is not None and v > 0 for v in summary["fid"].to_pylist())


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


def test_report_writes_markdown_and_csv(tmp_path, capsys):
    spec = make_spec(tmp_path)
    run_fake(spec)
    out = tmp_path / "report"
    summary = report(Path(spec.storage) / spec.name, out, baseline=BASE_VARIANT, n_boot=50,
                     fid_functions=NUMPY_FID)
    printed = capsys.readouterr().out
    assert "qk=1d v=off" in printed and "text_similarity" in printed
    md = (out / "summary.md").read_text()
    assert md.startswith("# Summary") and "| variant " in md and "| step " in md
    csv_text = (out / "summary.csv").read_text().splitlines()
    assert csv_text[0].startswith("variant,checkpoint_step_applied,n_samples")
    assert len(csv_text) == summary.num_rows + 1
    comparisons = load(Path(spec.storage) / spec.name, table="comparisons")
    assert comparisons.num_rows > 0 and set(comparisons["baseline"].to_pylist()) == {BASE_VARIANT}


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

    import sweep.store as store_module

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
