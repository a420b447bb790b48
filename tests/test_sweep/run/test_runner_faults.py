"""Surviving faults: a crashing trial, a lost node, a killed driver, torn writes, workers that cannot see inputs.

The fast tests share one local Ray (bound to 127.0.0.1, faults injected in its workers) and one faulty sweep on
it; the slow ones start their own cluster or driver. Each bounds its own time and stops only what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import videoio
from helpers import REPO



def small_spec(tmp_path: Path, name: str, storage: Path | None = None, videos: int = 1, gpu: float = 0.0) -> dict:
    data = []
    for i in range(videos):
        path = tmp_path / f"v{i}.mp4"
        if not path.exists():
            videoio.write_video(path, videoio.moving_shape_video(10, 64, 64, direction=(1.0, i * 0.5),
                                                                 texture_seed=i))
        data.append({"video": str(path), "source_prompt": f"a square moves ({i})", "prompts": ["a ball rolls"]})
    return {"name": name, "preset": "tiny", "storage": str(storage or tmp_path / "results"), "data": data,
            "axes": {"qk": ["1d", "2d"], "v": ["2d"], "remove": ["none", "qk"], "debias": ["none"]},
            "inversion": {"steps": 4, "ddim_steps": 2}, "generation": {"steps": 2},
            "resources": {"cpu": 1, "gpu": gpu}}


FAULTY_SOURCE = "a square moves (faulty)"  # the source prompt of the one sweep whose trials meet injected faults


def faulty_spec(tmp_path: Path) -> dict:
    """3 trials of one video (MQK 1d, 2d, removed): the 1d trial crashes once, the 2d trial fails every time
    (FAULTS), the third runs clean."""
    spec = small_spec(tmp_path, "faults")
    spec["data"][0]["source_prompt"] = FAULTY_SOURCE
    return spec


#: Injected in the module's Ray workers (tests/helpers/fault_injection.py): halfway through its inversion, the 1d
#: trial of FAULTY_SOURCE raises the first time only (a transient crash), the 2d trial raises every time.
FAULTS = [{"stage": "invert", "source_prompt": FAULTY_SOURCE, "qk": "1d", "step": 2, "once": True},
          {"stage": "invert", "source_prompt": FAULTY_SOURCE, "qk": "2d", "step": 2}]


@pytest.fixture(scope="module")
def ray_faults(tmp_path_factory):
    """One local Ray for this module's Ray tests (each used to start its own), FAULTS injected in its workers
    through a worker_process_setup_hook; marker files and logs in the folder it yields. Stopped afterwards."""
    import ray

    from helpers import fault_injection
    from sweep.run.preflight import init_ray

    folder = tmp_path_factory.mktemp("faults")
    started = init_ray("local", num_cpus=2, runtime_env=fault_injection.runtime_env(FAULTS, folder))
    yield folder
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def fault_run(ray_faults, tmp_path_factory):
    """One sweep that meets both faults (shared by the crash-once and always-fails tests): max_failures=1, so the
    crashing trial's one retry passes and the failing trial gives up after its retry."""
    from sweep.run.plan import make_plan
    from sweep.run.runner import run_sweep
    from sweep.spec import Spec

    spec = Spec.model_validate(faulty_spec(tmp_path_factory.mktemp("fault-run")))
    plan = make_plan(spec)
    crashes = next(t for t in plan.trials if t.qk == "1d")
    fails = next(t for t in plan.trials if t.qk == "2d")
    return plan, crashes, fails, run_sweep(spec, verbose=0, max_failures=1)


def rows_by_key(table) -> dict:
    return {r["sample_key"]: r for r in table.to_pylist()}


def test_a_trial_that_crashes_once_is_retried_and_every_row_lands(fault_run, ray_faults):
    from helpers import fault_injection
    from sweep.results.tables import load

    plan, crashes, fails, summary = fault_run
    assert crashes.trial_id not in summary.failed and summary.ran == len(plan.trials) == 3
    assert (ray_faults / f"fault-invert-0-{FAULTY_SOURCE}-1d").exists()  # it did crash (FAULTS[0]'s marker)
    starts = [c for c in fault_injection.starts(ray_faults) if c["source_prompt"] == FAULTY_SOURCE and c["qk"] == "1d"]
    assert len(starts) == 2  # ... and its optimisation was run again
    rows = load(summary.storage)
    # every row lands: all but the always-failing trial's, each once and ok
    keys = rows.column("sample_key").to_pylist()
    expected = [g.sample_key for t in plan.trials if t is not fails for g in t.generations]
    assert len(keys) == len(set(keys)) == len(expected) == 2 and set(keys) == set(expected)
    assert set(rows.column("status").to_pylist()) == {"ok"}
    assert crashes.trial_id in rows.column("trial_id").to_pylist()


def test_a_trial_that_always_fails_is_reported_not_dropped(fault_run):
    from sweep.results.tables import load

    plan, crashes, fails, summary = fault_run
    assert list(summary.failed) == [fails.trial_id] and "injected fault" in summary.failed[fails.trial_id]
    rows = load(summary.storage)
    trial_ids = rows.column("trial_id").to_pylist()
    assert fails.trial_id not in trial_ids and len(set(trial_ids)) == 2  # the others landed


def test_workers_that_cannot_see_the_videos_fail_before_any_trial(tmp_path, ray_faults, monkeypatch):
    """Simulated: the worker-side check reports the driver's video path missing (as on a cluster)."""
    from sweep.run import preflight
    from sweep.run.preflight import WorkerVisibilityError
    from sweep.run.runner import run_sweep
    from sweep.spec import Spec

    spec = Spec.model_validate(small_spec(tmp_path, "invisible"))
    real = preflight._check_worker_side
    monkeypatch.setattr(preflight, "_check_worker_side",
                        lambda videos, store, probe: {**real(videos, store, probe), "missing": list(videos)})
    with pytest.raises(WorkerVisibilityError, match=r"(?s)exist here but not on worker.*--working-dir"):
        run_sweep(spec, verbose=0)
    assert not (Path(spec.storage) / "invisible" / "tune").exists()  # no trial started


def test_preflight_says_what_it_waits_for_and_gives_up_after_its_timeout(tmp_path, ray_faults, capsys):
    """A trial needs a GPU that never comes (a CPU-only Ray): run reports the wait, then names the option."""
    from sweep.results.store import Store
    from sweep.run.plan import make_plan
    from sweep.run.preflight import WorkerVisibilityError, preflight
    from sweep.spec import Spec

    spec = Spec.model_validate(small_spec(tmp_path, "no-gpu", gpu=1))
    t0 = time.monotonic()
    with pytest.raises(WorkerVisibilityError, match=r"(?s)no worker with 1 GPU.*within 2 s.*--preflight-timeout"):
        preflight(spec, make_plan(spec), Store(spec.storage), {"cpu": 1, "gpu": 1}, timeout_s=2.0,
                  report_every_s=0.5)
    assert time.monotonic() - t0 < 30
    waiting = [line for line in capsys.readouterr().err.splitlines() if "waiting for a worker with 1 GPU" in line]
    assert len(waiting) >= 2 and "of 2 s" in waiting[-1] and "ray status" in waiting[-1]


def _run_cli(spec_path: Path, env: dict, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweep.cli", "run", str(spec_path), "--num-cpus", "1",
                             "--max-concurrent", "1"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, **kwargs)


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the driver, then every process of its session (the local Ray it started), nothing else."""
    import psutil

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == proc.pid:
                p.kill()
        except (ProcessLookupError, psutil.Error, PermissionError):
            pass


@pytest.mark.slow
def test_killed_driver_resumes_without_recomputing(tmp_path):
    import yaml

    from sweep.results.tables import load
    from sweep.run.plan import make_plan
    from sweep.run.preflight import init_ray
    from sweep.run.runner import run_sweep
    from sweep.spec import Spec

    spec_dict = small_spec(tmp_path, "killed", videos=2)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec_dict))
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    parts = Path(spec_dict["storage"]) / "killed" / "samples"
    proc = _run_cli(spec_path, env)
    deadline = time.monotonic() + 400
    try:
        while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
    finally:
        _kill_session(proc)
    done = {p.name: p.stat().st_mtime_ns for p in parts.glob("part-*.parquet")}
    assert 2 <= len(done) < 6, "kill the driver while the sweep is half done"
    inversions = Path(spec_dict["storage"]) / "store" / "inversions"
    metas = {p: p.stat().st_mtime_ns for p in inversions.glob("*/meta.json")}

    spec = Spec.model_validate(spec_dict)
    plan = make_plan(spec)
    started = init_ray("local", num_cpus=2)  # (or the module's Ray, when the fast tests started it)
    try:
        resumed = run_sweep(spec, verbose=0)
        reference = run_sweep(Spec.model_validate(small_spec(tmp_path, "uninterrupted",
                                                             storage=tmp_path / "fresh", videos=2)), verbose=0)
    finally:
        import ray

        if started:
            ray.shutdown()
    assert resumed.failed == {} and resumed.skipped == len(done) and resumed.ran == len(plan.trials) - len(done)
    assert resumed.restored  # the killed driver's Tune run was continued (Tuner.restore), not started again
    for name, mtime in done.items():  # finished rows were not rewritten
        assert (parts / name).stat().st_mtime_ns == mtime
    for meta, mtime in metas.items():  # finished inversions were not recomputed
        assert meta.stat().st_mtime_ns == mtime
    ours, theirs = rows_by_key(load(resumed.storage)), rows_by_key(load(reference.storage))
    assert len(ours) == len(plan.generations()) == 6
    assert set(ours) == set(theirs)  # sample keys hash what made a row, not where or in which sweep
    for key, row in ours.items():
        for metric in ("text_similarity", "temporal_consistency", "motion_fidelity", "appearance_leakage"):
            assert row[metric] == pytest.approx(theirs[key][metric], abs=1e-5), metric


TORN_WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from sweep.results.tables import write_part
rows = [{{"sample_key": f"k{{i}}", "video": "v", "prompt": "p" * 2000, "status": "ok"}} for i in range(4000)]
n = 0
while True:
    write_part({storage!r}, "torn", f"p{{n}}", rows)
    n += 1
    print(n, flush=True)
"""


def test_a_writer_killed_mid_write_leaves_nothing_half_read(tmp_path):
    from sweep.results.tables import load

    storage = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-c", TORN_WRITER.format(root=str(REPO), storage=str(storage))],
                            stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):  # let it finish a few parts, then kill it in the middle of the next one
            proc.stdout.readline()
        time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    folder = storage / "torn" / "samples"
    complete = sorted(folder.glob("part-*.parquet"))
    assert len(complete) >= 3
    table = load(storage / "torn")
    assert table.num_rows == 4000 * len(complete)  # whole parts only; any temp file of the killed write is ignored
    assert all(p.name.startswith("part-") for p in complete)


def test_unwritable_storage_fails_before_ray(tmp_path):
    from sweep.run.preflight import StorageError
    from sweep.run.runner import run_sweep
    from sweep.spec import Spec

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    spec = Spec.model_validate(small_spec(tmp_path, "nostore", storage=blocker / "results"))
    with pytest.raises(StorageError, match="cannot write to the storage"):
        run_sweep(spec, verbose=0)


@pytest.mark.slow
def test_losing_a_worker_node_mid_sweep_keeps_every_row_once(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from sweep.results.tables import load
    from sweep.run.plan import make_plan
    from sweep.run.runner import run_sweep
    from sweep.spec import Spec

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.shutdown()  # leave the module's Ray, if the fast tests started it (so this test comes last), for the cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head runs no trials
    try:
        cluster.add_node(num_cpus=1, num_gpus=1)
        doomed = cluster.add_node(num_cpus=1, num_gpus=1)
        ray.init(address=cluster.address)
        spec = Spec.model_validate(small_spec(tmp_path, "nodeloss", videos=2, gpu=1))
        plan = make_plan(spec)
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(summary=run_sweep(spec, verbose=0,
                                                                                  max_failures=3)))
        runner.start()
        inversions = Path(spec.storage) / "store" / "inversions"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(inversions.glob("*/step-*")):  # trials are running
            time.sleep(0.2)
        cluster.remove_node(doomed)
        runner.join(timeout=600)
        assert not runner.is_alive(), "sweep did not finish after losing a node"
        summary = outcome["summary"]
        assert summary.failed == {}
        table = load(summary.storage)
        keys = table.column("sample_key").to_pylist()
        assert len(keys) == len(set(keys)) == len(plan.generations()) == 6
        assert set(table.column("status").to_pylist()) == {"ok"}
    finally:
        ray.shutdown()
        cluster.shutdown()
