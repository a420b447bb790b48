"""`storage: s3://bucket/prefix` against a real S3 API: moto's server on 127.0.0.1 (no AWS, no network).

The credentials are obviously fake and come from the environment only (as an instance role's would on a
cluster); `AWS_ENDPOINT_URL` points pyarrow's S3 client (and every Ray worker, which inherits the driver's
environment on a local Ray) at the server. The tests check the store, the Parquet tables and a whole sweep
through `sweep.run.runner.run_sweep`, and that the secret never lands in a table, the plan, Tune's files or
Ray's logs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import pytest

pytest.importorskip("moto.server", reason="needs moto[server] (in the dev extra)")

BUCKET = "motion-sweep-test"
ACCESS_KEY = "AKIAFAKEMOTIONSWEEP0"
SECRET = "fake-secret-" + "e1b2c3d4" * 4  # unique enough to grep for
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    # keep the SDKs from reading a developer's real ~/.aws files or the EC2 metadata service
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on loopback, the fake credentials and the endpoint in os.environ, and one bucket."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        for key, value in {**FAKE_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(key, value)
        import pyarrow.fs as pafs

        admin = pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True)
        admin.create_dir(BUCKET)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture()
def prefix(s3_server):
    """A fresh s3://bucket/<unique prefix> per test."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"


def _objects(uri: str) -> dict[str, bytes]:
    """Every object under an s3:// URI: {key relative to it: bytes}."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)
    out = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                out[info.path[len(root) + 1:]] = f.read()
    return out


# --------------------------------------------------------------------------------------------------
# The store.

def test_pyarrow_takes_the_endpoint_from_the_environment(s3_server):
    """No endpoint in the URI or the code: AWS_ENDPOINT_URL (as the AWS SDKs read it) is enough."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(f"s3://{BUCKET}/x")
    assert path == f"{BUCKET}/x"
    assert fs.__reduce__()[1][0]["endpoint_override"] == s3_server


def test_store_round_trip_on_s3(prefix, tmp_path):
    from sweep.results.store import Store

    store = Store(prefix + "/")
    assert store.uri == prefix and not store.is_local and store.local_path("a") is None
    assert not store.exists("store/samples/k.json") and store.read_json("store/samples/k.json") is None
    assert store.list_names("store/samples") == [] and store.list_dirs("nothing") == []

    store.write_bytes_atomic("a/b/blob.bin", b"\x00\x01payload")
    assert store.exists("a/b/blob.bin") and store.read_bytes("a/b/blob.bin") == b"\x00\x01payload"
    store.write_bytes_atomic("a/b/blob.bin", b"second")  # replaces
    assert store.read_bytes("a/b/blob.bin") == b"second"

    store.put_sample("k1", {"status": "ok", "text_similarity": float("nan"), "x": [1, 2]})
    assert store.get_sample("k1") == {"status": "ok", "text_similarity": None, "x": [1, 2]}
    assert store.has_sample("k1") and not store.has_sample("k2")

    local = tmp_path / "emb.safetensors"
    local.write_bytes(b"weights" * 1000)
    store.upload(local, store.inversion_step_path("inv", 5))
    store.upload(local, store.inversion_step_path("inv", 10))
    store.write_json(store.inversion_meta_path("inv"), {"steps": 10})
    assert store.inversion_steps("inv") == [5, 10] and store.has_inversion("inv", [5, 10])
    assert not store.has_inversion("inv", [20])
    copy = store.download(store.inversion_step_path("inv", 10), tmp_path / "dl" / "copy.safetensors")
    assert copy.read_bytes() == local.read_bytes()
    assert not [p for p in (tmp_path / "dl").iterdir() if p.name.startswith(".")]  # no temp file left

    assert store.list_names("a/b") == ["blob.bin"]
    assert store.list_dirs() == ["a", "store"] and store.list_dirs("store") == ["inversions", "samples"]
    # a single PUT is the atomic write: no temp objects anywhere
    assert all(not Path(k).name.startswith(".") for k in _objects(prefix))
    assert store.uri_of("a/b/blob.bin") == f"{prefix}/a/b/blob.bin"

    path, fs = store.tune_storage("sweep-x")
    assert path == f"{prefix[len('s3://'):]}/sweep-x" and fs is not None


@pytest.mark.parametrize("uri", [
    f"s3://{ACCESS_KEY}:{SECRET}@{BUCKET}/prefix",
    f"s3://{BUCKET}/prefix?access_key={ACCESS_KEY}&secret_key={SECRET}",
    f"s3://{BUCKET}/prefix?endpoint_override=127.0.0.1:9000",
])
def test_store_refuses_credentials_and_options_in_the_uri(uri):
    """A storage URI is copied into plans, tables and logs: keys (or any option) in it are an error that
    does not repeat them."""
    from sweep.results.store import Store

    with pytest.raises(ValueError, match="environment") as info:
        Store(uri)
    assert SECRET not in str(info.value) and ACCESS_KEY not in str(info.value)


def test_store_pickles_without_credentials(prefix):
    import pickle

    from sweep.results.store import Store

    store = Store(prefix)
    store.write_json("x.json", {"a": 1})  # resolves the filesystem
    blob = pickle.dumps(store)
    assert SECRET.encode() not in blob and ACCESS_KEY.encode() not in blob
    again = pickle.loads(blob)
    assert again.read_json("x.json") == {"a": 1}
    _, fs = store.tune_storage("sweep")  # what Tune pickles to every trial
    assert SECRET.encode() not in pickle.dumps(fs)


def test_results_parts_round_trip_on_s3(prefix):
    import numpy as np

    from sweep.results.store import Store
    from sweep.results.tables import load, sample_row, write_part

    store = Store(prefix)
    cols = {"variant": "qk=1d v=2d", "qk_applied": "1d", "v_applied": "2d", "remove_applied": "none",
            "debias_applied": "none", "video": "v0", "prompt": "a ball", "seed_applied": 0, "generation_seed": 0,
            "checkpoint_step_applied": 2, "sample_key": "s1"}
    rows = [sample_row(cols, {"text_similarity": 0.25, "motion_fidelity": 0.5,
                              "fid_features": np.ones((2, 4), np.float32)}),
            sample_row({**cols, "sample_key": "s2"}, error="boom")]
    rel = write_part(store, "sw", "t1", rows)
    assert rel == "sw/samples/part-t1.parquet" and store.exists(rel)
    write_part(store, "sw", "inv1", [{"inversion_key": "inv1", "loss_curve": [1.0, 0.5], "status": "ok"}],
               table="inversions")
    store.write_bytes_atomic("sw/samples/.tmp-1234-part-t2.parquet", b"torn")  # never read

    for path in (f"{prefix}/sw", prefix):  # a sweep folder, or the storage root
        table = load(path)
        assert table.num_rows == 2 and table.column("sweep").to_pylist() == ["sw", "sw"]
        assert table.column("status").to_pylist() == ["ok", "error"]
        assert table.column("text_similarity").to_pylist() == [0.25, None]
        assert table.column("fid_features").to_pylist()[0] == [[1.0] * 4] * 2
    inv = load(prefix, table="inversions")
    assert inv.num_rows == 1 and inv.column("loss_curve").to_pylist() == [[1.0, 0.5]]


# --------------------------------------------------------------------------------------------------
# A whole sweep with its storage on S3.

@pytest.fixture(scope="module")
def ray_on_s3(s3_server):
    """A local Ray started after the S3 environment is set, so its workers inherit it (as a cluster's
    workers get theirs from the instance role and cluster.yaml). Yields Ray's session folder (logs)."""
    import ray

    from sweep.run.preflight import init_ray

    started = init_ray("local", num_cpus=2)
    session_dir = ray._private.worker._global_node.get_session_dir_path()
    yield Path(session_dir)
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def s3_sweep(ray_on_s3, tmp_path_factory):
    """One tiny sweep (1 video, 1 prompt, 1 variant, 2 steps) with `storage: s3://...`: (spec, summary)."""
    import pyarrow.fs as pafs

    import videoio
    from sweep.run.runner import run_sweep
    from sweep.spec import Spec

    folder = tmp_path_factory.mktemp("s3-sweep")
    video = videoio.write_video(folder / "square.mp4", videoio.moving_shape_video(10, 64, 64))
    # the reference video itself lives in the bucket: the trial fetches it on the worker
    video_uri = f"s3://{BUCKET}/videos-{uuid.uuid4().hex[:8]}/square.mp4"
    pafs.copy_files(str(video), video_uri)
    spec = Spec.model_validate({
        "name": "on-s3", "preset": "tiny", "storage": f"s3://{BUCKET}/sweeps-{uuid.uuid4().hex[:8]}",
        "data": [{"video": video_uri, "source_prompt": "a red square slides", "prompts": ["a ball rolls"]}],
        "axes": {"qk": ["1d"], "v": ["2d"], "remove": ["none"], "debias": ["none"]},
        "inversion": {"steps": 2, "ddim_steps": 2}, "generation": {"steps": 2},
    })
    return spec, run_sweep(spec, verbose=0)


@pytest.mark.slow
def test_sweep_on_s3_writes_tables_store_and_tune_there(s3_sweep, tmp_path):
    from sweep.report import report
    from sweep.results.store import Store
    from sweep.results.tables import load

    spec, summary = s3_sweep
    storage = spec.storage
    assert summary.failed == {} and summary.ran == 1 and summary.ddim_inversions == 1
    assert summary.storage == f"{storage}/on-s3"

    rows = load(summary.storage)
    assert rows.num_rows == 1 and rows.column("status").to_pylist() == ["ok"]
    assert rows.column("sweep").to_pylist() == ["on-s3"]
    video_uri = rows.column("video_path").to_pylist()[0]
    assert video_uri.startswith(f"{storage}/store/videos/")
    assert Store(storage).exists(video_uri[len(storage) + 1:])
    assert load(storage, table="inversions").num_rows == 1
    refs = load(storage, table="references")  # the s3:// video, read on the worker, content-addressed
    assert refs.column("source_video").to_pylist()[0].startswith(f"s3://{BUCKET}/videos-")
    video_bytes = _objects(spec.data[0].video.rsplit("/", 1)[0])["square.mp4"]
    assert refs.column("content_hash").to_pylist() == [hashlib.sha256(video_bytes).hexdigest()]
    assert load(storage, table="points").num_rows == 1
    summary_table = report(summary.storage, tmp_path / "report", echo=False)
    assert summary_table.num_rows == 1 and (tmp_path / "report" / "summary.md").is_file()

    objects = _objects(storage)
    # Tune's experiment (its state, each trial's results and TensorBoard events) lies under the sweep's prefix
    tune_keys = [k for k in objects if k.startswith("on-s3/tune/")]
    assert any(Path(k).name.startswith("experiment_state") for k in tune_keys), sorted(objects)
    assert any("events.out.tfevents" in k for k in tune_keys), tune_keys
    assert "on-s3/plan.json" in objects and "on-s3/grid.parquet" in objects
    assert any(k.startswith("store/ddim/") for k in objects)
    assert any(k.startswith("store/inversions/") and k.endswith(".safetensors") for k in objects)


@pytest.mark.slow
def test_sweep_on_s3_writes_no_credentials(s3_sweep):
    """Not in the loaded tables, the plan, Tune's files, or any other object the sweep wrote."""
    from sweep.results.tables import load

    spec, summary = s3_sweep
    tables = [load(spec.storage, table=t).to_pylist() for t in ("samples", "inversions", "points")]
    table_text = json.dumps(tables, default=str)
    objects = _objects(spec.storage)
    for secret in (SECRET, ACCESS_KEY):
        assert secret not in table_text
        assert secret not in objects["on-s3/plan.json"].decode()
        assert not [k for k, data in objects.items() if secret.encode() in data]


@pytest.mark.slow
def test_sweep_on_s3_keeps_credentials_out_of_ray_logs(s3_sweep, ray_on_s3):
    """Ray logs every runtime_env it creates (runtime_env_agent.log) in plain text: credentials must not be
    copied into one (Ray Tune copies AWS_* variables into each trial's unless told not to)."""
    logs = [p for p in (ray_on_s3 / "logs").rglob("*") if p.is_file()]
    assert logs
    for secret in (SECRET, ACCESS_KEY):
        leaked = [p.name for p in logs if secret.encode() in p.read_bytes()]
        assert not leaked, f"{secret[:8]}... found in Ray's logs: {leaked}"


@pytest.mark.slow
def test_rerunning_on_s3_runs_nothing(s3_sweep):
    from sweep.results.tables import load
    from sweep.run.runner import run_sweep

    spec, first = s3_sweep
    again = run_sweep(spec, verbose=0)
    assert again.ran == 0 and again.skipped == 1 and again.failed == {}
    assert load(first.storage).num_rows == 1


def test_remote_video_is_fetched_once_and_checked_against_its_hash(prefix, tmp_path):
    """fetch_video: a node's copy is named by content; an object replaced after planning is refused."""
    import pyarrow.fs as pafs

    from sweep.run.videos import PlanError, fetch_video, fingerprint_video

    uri = f"{prefix}/clip.mp4"
    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_output_stream(path) as f:
        f.write(b"first version")
    digest = fingerprint_video(uri)
    assert digest == hashlib.sha256(b"first version").hexdigest()
    got = fetch_video(uri, digest, tmp_path / "cache")
    assert got.read_bytes() == b"first version" and got.name == "clip.mp4" and digest in str(got)
    with fs.open_output_stream(path) as f:
        f.write(b"second version")
    assert fetch_video(uri, digest, tmp_path / "cache") == got  # cached by content: no second request needed
    with pytest.raises(PlanError, match="changed since the sweep was planned"):
        fetch_video(uri, digest, tmp_path / "other-cache")
    assert not [p for p in (tmp_path / "other-cache").rglob("*") if p.is_file()]  # nothing half-fetched left
    with pytest.raises(PlanError, match="video not found"):
        fetch_video(f"{prefix}/missing.mp4", digest, tmp_path / "cache")


def test_tables_load_and_compact_on_s3(prefix):
    """The same table rules on an object store: parts read whole in parallel, compaction, a rewritten part."""
    from sweep.results.tables import compact, load, write_part

    for i in range(6):
        write_part(prefix, "s", f"t{i}", [{"sample_key": f"k{i}", "status": "ok", "motion_fidelity": i / 10}])

    def rows():
        t = load(prefix)
        return sorted(zip(t["sample_key"].to_pylist(), t["status"].to_pylist()))

    before = rows()
    assert len(before) == 6
    assert compact(prefix, min_age_s=0) == {"s": {"samples": 6}}
    assert rows() == before
    names = [k.rsplit("/", 1)[-1] for k in _objects(prefix) if "/samples/" in k]
    assert len(names) == 1 and names[0].startswith("compact-")
    write_part(prefix, "s", "t2", [{"sample_key": "k2", "status": "error", "error": "CUDA out of memory"}])
    assert rows() == [r if r[0] != "k2" else ("k2", "error") for r in before]
