"""Run a sweep on Ray: the one place that builds the Tuner.

1. plan the spec and write plan.json / grid.parquet;
2. skip trials whose part file is already in the store (re-running a spec resumes it);
3. DDIM-invert every video that lacks a cached inversion, once, as Ray tasks (so trials never race to do it);
4. one Tune trial per inversion key, `tune.with_resources` from the spec, retried on failure;
5. report what still failed — never drop it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

from .plan import Plan, make_plan, save_plan
from .results import sample_row, write_part
from .spec import Spec
from .store import Store

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """The spec's storage cannot be written (or read) from where the sweep runs."""


class WorkerVisibilityError(RuntimeError):
    """Inputs that the driver sees but the Ray workers do not."""


@dataclass
class RunSummary:
    sweep: str
    storage: str
    trials: int  # planned
    ran: int  # trials Tune ran this time
    skipped: int  # already complete in the store
    ddim_inversions: int  # computed this time
    failed: dict[str, str] = field(default_factory=dict)  # trial id -> error, after retries
    seconds: float = 0.0  # wall time of the whole run
    fit_seconds: float = 0.0  # wall time of the Tune phase
    trial_seconds: dict[str, float] = field(default_factory=dict)  # in-trial compute, per trial run


def sweep_info(spec: Spec) -> dict:
    """What a trial needs beyond its plan entry (plain, picklable)."""
    return {"name": spec.name, "preset": spec.preset, "model": spec.model, "base_model": spec.base_model,
            "metrics": spec.metrics.model_dump(), "fps": spec.generation.fps or 8}


# Non-secret settings a remote (ray://) driver forwards to the workers. Never credentials: Ray logs runtime_envs.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "MOTION_SWEEP_CACHE", "MOTION_SWEEP_INJECT_FAULT",
                 "MOTION_SWEEP_FAULT_DIR", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                 "AWS_DEFAULT_REGION")
_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def init_ray(address: str | None, num_cpus: int | None = None, num_gpus: int | None = None,
             dashboard: bool = False) -> bool:
    """Connect to a cluster (`auto`, `ray://…`) or start a local Ray; returns True if we started it.

    A local Ray's workers inherit this process's environment; inside a Ray Job the job's runtime_env applies;
    only a ray:// client forwards FORWARDED_ENV.
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if address in (None, "", "local"):
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, include_dashboard=dashboard,
                 log_to_driver=False, configure_logging=False)
    elif address.startswith("ray://") and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        ray.init(address=address, runtime_env={"env_vars": {k: os.environ[k] for k in FORWARDED_ENV
                                                            if k in os.environ}})
    else:
        ray.init(address=address)
    return True


def _keep_credentials_out_of_ray() -> None:
    """Tune copies AWS_* keys from the driver's environment into each trial's runtime_env, which Ray logs in
    plain text. Workers don't need that copy (a local Ray inherits the driver's environment; cluster nodes use
    their instance role). Relies on a private Tune module; tests/test_s3.py checks the logs stay clean."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return
    names = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if names is not None:
        class_cache.ENV_VARS_TO_PROPAGATE = {n for n in names if n not in _CREDENTIAL_ENV}


def run_sweep(spec: Spec, address: str | None = None, max_concurrent: int | None = None,
              num_cpus: int | None = None, max_failures: int = 2, verbose: int = 1) -> RunSummary:
    import ray

    from .trainable import ensure_reference

    started = time.perf_counter()
    plan = make_plan(spec)
    store = Store(spec.storage)
    try:
        save_plan(store, plan)
    except OSError as exc:
        raise StorageError(
            f"cannot write to the storage {store.uri!r}: {exc}. Check that the bucket/folder exists and that "
            "the credentials in the environment (or the instance role) allow writing there.") from None
    todo = [t for t in plan.trials if not store.exists(store.part_path(spec.name, "samples", t.trial_id))]
    summary = RunSummary(spec.name, store.uri_of(spec.name), len(plan.trials), len(todo),
                         len(plan.trials) - len(todo), 0)
    if not todo:
        print(f"{spec.name}: all {len(plan.trials)} trials are already in {summary.storage}; nothing to run",
              file=sys.stderr)
        summary.seconds = time.perf_counter() - started
        return summary
    info = sweep_info(spec)
    ddims = {d.ddim_key: d for d in plan.ddim_inversions}
    trials = {t.trial_id: t for t in todo}
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    we_started = init_ray(address, num_cpus=num_cpus)
    try:
        preflight(spec, plan, store, resources)
        missing = [ddims[k] for k in sorted({t.ddim_key for t in todo}) if not store.has_ddim(k)]
        if missing:
            print(f"{spec.name}: DDIM-inverting {len(missing)} video(s)", file=sys.stderr)
            task = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_retries=max_failures)(
                ensure_reference)
            refs = {d.video: task.remote(store, d, info["preset"], info["model"]) for d in missing}
            for video, ref in refs.items():
                try:
                    ray.get(ref)
                    summary.ddim_inversions += 1
                except Exception as exc:  # noqa: BLE001 - this video's trials fail below with the cause
                    summary.failed[f"ddim:{video}"] = _short(exc)
            bad = {d.ddim_key: summary.failed[f"ddim:{d.video}"] for d in missing
                   if f"ddim:{d.video}" in summary.failed}
            for t in [t for t in todo if t.ddim_key in bad]:
                # A bad video costs its own rows, as error rows with the cause, never the sweep. Its trials
                # count as done: a fixed video has another fingerprint, hence other keys.
                error = f"reference video {t.video_path}: {bad[t.ddim_key]}"
                write_part(store, spec.name, t.trial_id, [sample_row(g.columns, error=error)
                                                          for g in t.generations])
                summary.failed[t.trial_id] = error
                trials.pop(t.trial_id)
        if trials:
            _fit(spec, store, trials, ddims, info, resources, max_concurrent, max_failures, verbose, summary)
    finally:
        if we_started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return summary


def _check_worker_side(video_paths: list[str], store: Store, probe: str) -> dict:
    """Runs on a worker: which videos are missing there, and can it read what the driver wrote?"""
    import socket

    missing = [p for p in video_paths if not os.path.exists(p)]
    try:
        storage_ok, storage_error = store.read_bytes(probe) == b"ok", ""
    except Exception as exc:  # noqa: BLE001 - reported to the user below
        storage_ok, storage_error = False, f"{type(exc).__name__}: {exc}"
    return {"node": socket.gethostname(), "missing": missing, "storage_ok": storage_ok,
            "storage_error": storage_error}


def preflight(spec: Spec, plan: Plan, store: Store, resources: dict, timeout_s: float = 600) -> None:
    """Before any trial: the workers must see the videos and the storage (on one machine this is instant)."""
    import ray

    probe = f"{spec.name}/.preflight"
    store.write_bytes_atomic(probe, b"ok")
    task = ray.remote(num_cpus=min(resources["cpu"], 1), num_gpus=resources["gpu"])(_check_worker_side)
    videos = sorted({d.video_path for d in plan.ddim_inversions})
    try:
        seen = ray.get(task.remote(videos, store, probe), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise WorkerVisibilityError(
            f"no worker with {resources} started within {timeout_s:.0f} s; check the cluster's worker types and "
            "`resources:` in the spec (`ray status` shows what the cluster has)") from None
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


def _progress_callback(planned: dict):
    """One line per finished (or failed) trial in the terminal, whatever Tune's own verbosity."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self):
            self.done = 0

        def _line(self, trial, text: str) -> None:
            self.done += 1
            t = planned.get(trial.config.get("trial_id"))
            what = f"{t.video} qk={t.qk} v={t.v}" if t else trial.trial_id
            print(f"[{self.done}/{len(planned)}] {what}: {text}", file=sys.stderr, flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            self._line(trial, f"{r.get('samples', 0)} samples, {r.get('errors', 0)} errors, "
                              f"{r.get('trial_seconds', 0.0):.1f} s")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "FAILED (see the summary at the end)")
    return Progress()


def _fit(spec, store, trials, ddims, info, resources, max_concurrent, max_failures, verbose, summary) -> None:
    from ray import tune

    from .trainable import trainable

    _keep_credentials_out_of_ray()
    tune_storage, tune_fs = store.tune_storage(spec.name)
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(trainable, trials=trials, ddims=ddims, storage=store.uri, sweep=info),
            resources),
        param_space={"trial_id": tune.grid_search(sorted(trials))},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name="tune", storage_path=tune_storage, storage_filesystem=tune_fs, verbose=verbose,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=[_progress_callback(trials)]),
    )
    started = time.perf_counter()
    results = tuner.fit()
    summary.fit_seconds = time.perf_counter() - started
    for result in results:
        trial_id = result.config.get("trial_id", "?")
        if result.error is not None:
            summary.failed[trial_id] = _short(result.error)
        elif result.metrics and "trial_seconds" in result.metrics:
            summary.trial_seconds[trial_id] = result.metrics["trial_seconds"]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:500]


__all__ = ["RunSummary", "StorageError", "WorkerVisibilityError", "init_ray", "preflight",
           "run_sweep", "sweep_info"]
