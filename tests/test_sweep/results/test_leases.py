"""Leases on shared keys: two sweeps on one storage compute each shared inversion once.

Unit level (threads and a store; fast): a second claimant waits for the result instead of computing it, a
dead holder's lease is taken over after it expires, and of two sweeps that see it expire only one takes it.
End to end (slow): two `motion-sweep run` processes with overlapping grids on one storage, at the same time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import videoio
from sweep.results.leases import acquire_lease, lease_dir, wait_or_lease
from sweep.results.store import Store


def test_a_second_claimant_waits_for_the_result_instead_of_computing_it(tmp_path):
    store = Store(tmp_path)
    computed, results = [], []

    def claimant(name: str) -> None:
        lease = wait_or_lease(store, "key1", lambda: store.exists("store/result"), ttl_s=5, poll_s=0.05)
        if lease is not None:  # this one computes
            computed.append(name)
            time.sleep(0.5)
            store.write_bytes_atomic("store/result", name.encode())
            lease.release()
        results.append(store.read_bytes("store/result").decode())

    threads = [threading.Thread(target=claimant, args=(f"sweep{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(computed) == 1 and results == [computed[0]] * 4
    assert store.list_files(lease_dir("key1")) == []  # released


def test_a_dead_holders_lease_is_taken_over_after_it_expires(tmp_path):
    store = Store(tmp_path)
    dead = acquire_lease(store, "key2", "crashed-worker", ttl_s=0.3)  # never renewed, never released
    assert dead is not None
    assert acquire_lease(store, "key2", "other", ttl_s=5) is None  # live: others wait
    t0 = time.monotonic()
    lease = wait_or_lease(store, "key2", lambda: False, ttl_s=5, poll_s=0.05)
    assert lease is not None and lease.number == dead.number + 1
    assert 0.2 < time.monotonic() - t0 < 5
    lease.release()


def test_a_later_attempt_of_the_same_trial_takes_its_dead_attempts_lease_at_once(tmp_path):
    """A retried (or restored) trial names the same owner: it does not wait out the lease its dead worker held;
    another sweep's trial, or a holder that names no owner, still waits; the taken-over lease keeps the owner."""
    store = Store(tmp_path)
    dead = acquire_lease(store, "key5", "worker-that-died", ttl_s=60, owner="sweep/abc123")
    assert acquire_lease(store, "key5", "other-sweep", ttl_s=5, owner="other/abc123") is None
    assert acquire_lease(store, "key5", "no-owner", ttl_s=5) is None
    t0 = time.monotonic()
    retry = wait_or_lease(store, "key5", lambda: False, ttl_s=5, poll_s=10, owner="sweep/abc123")
    assert retry is not None and retry.number == dead.number + 1 and time.monotonic() - t0 < 5  # no poll slept
    assert retry.owner == "sweep/abc123" and acquire_lease(store, "key5", "other-sweep", ttl_s=5) is None
    retry.release()
    assert store.list_files(lease_dir("key5")) == []


def test_of_two_sweeps_that_see_a_lease_expire_only_one_takes_it(tmp_path):
    store = Store(tmp_path)
    acquire_lease(store, "key3", "crashed", ttl_s=0.01)
    time.sleep(0.05)
    barrier, got = threading.Barrier(8), []

    def take(i: int) -> None:
        barrier.wait()
        lease = acquire_lease(store, "key3", f"taker{i}", ttl_s=30)
        if lease is not None:
            got.append(lease)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 1


def test_a_kept_alive_lease_outlives_its_ttl_and_release_stops_it(tmp_path):
    store = Store(tmp_path)
    lease = acquire_lease(store, "key4", "worker", ttl_s=0.3).keep_alive()
    time.sleep(1.0)  # three ttls: renewed meanwhile
    assert acquire_lease(store, "key4", "other", ttl_s=1) is None
    lease.release()
    assert acquire_lease(store, "key4", "other", ttl_s=1) is not None


def _spec(folder: Path, name: str, qk: list[str], storage: Path) -> Path:
    video = folder / "square.mp4"
    if not video.exists():
        videoio.write_video(video, videoio.moving_shape_video(10, 64, 64))
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "preset": "tiny", "storage": str(storage),
        "data": [{"video": str(video), "source_prompt": "a red square slides", "prompts": ["a ball rolls"]}],
        "axes": {"qk": qk, "v": ["2d"], "remove": ["none"], "debias": ["none"]},
        "inversion": {"steps": 60, "ddim_steps": 2}, "generation": {"steps": 2}, "resources": {"cpu": 1}}))
    return path


@pytest.mark.slow
def test_two_concurrent_sweeps_compute_each_shared_inversion_once(tmp_path):
    from sweep.results.tables import load

    storage = tmp_path / "shared"
    specs = [_spec(tmp_path, "lab-a", ["1d", "2d"], storage), _spec(tmp_path, "lab-b", ["2d", "1d"], storage)]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "sweep.cli", "run", str(s), "--num-cpus", "1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for s in specs]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    inversions = load(storage, table="inversions").to_pylist()
    by_key: dict[str, list[dict]] = {}
    for r in inversions:
        by_key.setdefault(r["inversion_key"], []).append(r)
    assert len(by_key) == 2 and all(len(rows) == 2 for rows in by_key.values())  # both sweeps, both keys
    computed = {k: sum(not r["cached"] for r in rows) for k, rows in by_key.items()}
    assert computed == {k: 1 for k in by_key}, computed  # each shared inversion computed exactly once
    samples = load(storage)
    assert samples.num_rows == 4 and set(samples["status"].to_pylist()) == {"ok"}
    assert sorted(set(samples["sweep"].to_pylist())) == ["lab-a", "lab-b"]
    assert Store(storage).list_dirs("store/leases") == [] or all(
        not Store(storage).list_files(f"store/leases/{d}") for d in Store(storage).list_dirs("store/leases"))
