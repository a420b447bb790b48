"""Before the first trial: Ray started or joined (`init_ray`), AWS credentials kept out of the runtime_env Tune
would log, and a worker that fits a trial seen to start and to see the videos and the storage (`preflight`),
so a sweep that cannot work stops with the problem and its fix instead of failing trial by trial."""

from __future__ import annotations

import os
import sys
import time
import warnings

from ..results.store import Store
from ..spec import Spec
from .plan import Plan


class StorageError(RuntimeError):
    """The spec's storage cannot be written (or read) from where the sweep runs."""


class WorkerVisibilityError(RuntimeError):
    """Inputs that the driver sees but the Ray workers do not."""


#: How long `run` waits for the first worker that fits a trial (a GPU node's cold start — instance, image pull,
#: setup — can pass 10 minutes); `motion-sweep run --preflight-timeout SECONDS` changes it.
PREFLIGHT_TIMEOUT_S = 1800.0


# Non-secret settings a remote (ray://) driver forwards to the workers. Never credentials (Ray logs
# runtime_envs) and never local paths (HF_HOME, MOTION_SWEEP_CACHE): the cluster's nodes set their own.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def init_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None,
             dashboard: bool = False, runtime_env: dict | None = None) -> bool:
    """Connect to a cluster (`auto`, `ray://…`) or start a local Ray; returns True if we started it.

    A local Ray's workers inherit this process's environment; inside a Ray Job the job's runtime_env applies;
    only a ray:// client forwards FORWARDED_ENV. `runtime_env` is the job's (e.g. a worker_process_setup_hook).
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address in (None, "", "local"):
        # address="local": a new Ray, never one that `ray start` left running on this machine
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus,
                 include_dashboard=dashboard, log_to_driver=False, configure_logging=False, runtime_env=runtime_env)
    elif address.startswith("ray://") and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        env = dict(runtime_env or {})
        env["env_vars"] = {**{k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}, **env.get("env_vars", {})}
        ray.init(address=address, runtime_env=env)
    else:
        ray.init(address=address, runtime_env=runtime_env)
    return True


#: The Ray release whose private `ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE` the function below edits
#: (the pyproject pins it); tests/test_sweep/run/test_tune.py fails when Ray changes, so the edit is checked again.
CREDENTIALS_PATCH_RAY = "2.60.0"


def keep_credentials_out_of_ray() -> None:
    """Tune copies AWS_* keys from the driver's environment into each trial's runtime_env, which Ray logs in
    plain text. Workers don't need that copy (a local Ray inherits the driver's environment; cluster nodes use
    their instance role). Ray 2.60 has no public switch for it (the set is a module constant read when a
    trainable's actor class is made), so this edits that private constant; it is pinned to
    CREDENTIALS_PATCH_RAY by a test, and tests/test_sweep/test_s3.py checks the logs stay clean."""
    import ray

    try:
        from ray.tune.execution import class_cache
    except ImportError:
        class_cache = None
    names = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if names is None or ray.__version__ != CREDENTIALS_PATCH_RAY:
        warnings.warn(f"Ray {ray.__version__}: cannot check that Tune keeps AWS credentials out of the trials' "
                      f"runtime_env (written for Ray {CREDENTIALS_PATCH_RAY}); Ray may log them", stacklevel=2)
    if names is not None:
        class_cache.ENV_VARS_TO_PROPAGATE = {n for n in names if n not in CREDENTIAL_ENV}


def _check_worker_side(video_paths: list[str], store: Store, probe: str) -> dict:
    """Runs on a worker: which videos are missing there, and can it read what the driver wrote?"""
    import socket

    def visible(path: str) -> bool:  # a remote video is fetched by the trial: the worker must reach it
        if "://" not in path:
            return os.path.exists(path)
        try:
            src = Store(path)
            return src.fs.get_file_info(src.root).type != pafs.FileType.NotFound
        except Exception:  # noqa: BLE001 - no access is reported as missing
            return False

    import pyarrow.fs as pafs

    missing = [p for p in video_paths if not visible(p)]
    try:
        storage_ok, storage_error = store.read_bytes(probe) == b"ok", ""
    except Exception as exc:  # noqa: BLE001 - reported to the user below
        storage_ok, storage_error = False, f"{type(exc).__name__}: {exc}"
    return {"node": socket.gethostname(), "missing": missing, "storage_ok": storage_ok,
            "storage_error": storage_error}


def preflight(spec: Spec, plan: Plan, store: Store, resources: dict, timeout_s: float = PREFLIGHT_TIMEOUT_S,
              report_every_s: float = 60.0) -> None:
    """Before any trial: a worker that fits a trial must start, and see the videos and the storage (on one
    machine this is instant). While it waits it says so, every `report_every_s`."""
    import ray

    probe = f"{spec.name}/.preflight"
    store.write_bytes_atomic(probe, b"ok")
    task = ray.remote(num_cpus=min(resources["cpu"], 1), num_gpus=resources["gpu"])(_check_worker_side)
    videos = sorted({d.video_path for d in plan.ddim_inversions})
    want = f"{resources['gpu']:g} GPU + {min(resources['cpu'], 1):g} CPU"
    ref, t0 = task.remote(videos, store, probe), time.monotonic()
    while True:
        left = timeout_s - (time.monotonic() - t0)
        done, _ = ray.wait([ref], timeout=max(0.0, min(report_every_s, left)))
        if done:
            seen = ray.get(ref)
            break
        waited = time.monotonic() - t0
        if waited >= timeout_s:
            ray.cancel(ref, force=True)
            raise WorkerVisibilityError(
                f"no worker with {want} free started within {timeout_s:.0f} s. Check the cluster's worker types "
                "against `resources:` in the spec (`ray status` shows the nodes and the pending demand, "
                "`ray exec cluster.yaml 'tail -n 100 /tmp/ray/session_latest/logs/monitor.*'` the autoscaler's "
                "launches), or wait longer: `motion-sweep run SPEC --preflight-timeout SECONDS`.")
        print(f"{spec.name}: waiting for a worker with {want} free to check the videos and the storage "
              f"({waited:.0f} s of {timeout_s:.0f} s; a GPU node's cold start with image pull and setup can "
              "take over 10 minutes; `ray status` shows pending demand)", file=sys.stderr, flush=True)
    if seen["missing"]:
        raise WorkerVisibilityError(
            f"{len(seen['missing'])} video(s) exist here but not on worker {seen['node']}: "
            f"{', '.join(seen['missing'][:5])}. Put the videos on storage every node mounts (e.g. a shared "
            "filesystem), or ship them with the job: `ray job submit --working-dir . -- motion-sweep run SPEC "
            "--address auto` with the videos inside the working directory and relative paths in the spec.")
    if not seen["storage_ok"]:
        raise StorageError(
            f"worker {seen['node']} cannot read the storage {store.uri!r} that the driver wrote to "
            f"({seen['storage_error']}). Use storage every node reaches (s3://bucket/prefix or a shared mount), "
            "not a path local to the driver.")
