"""Run a sweep on Ray: the one place that builds the Tuner.

1. plan the spec and write plan.json / grid.parquet;
2. skip trials whose part file is already in the store (re-running a spec resumes it);
3. DDIM-invert every video that lacks a cached inversion, once, as Ray tasks (so trials never race to do it);
   FID features of the spec's `reference_set`, if any, once, as a Ray task (the trials store their own videos');
4. the grid: one Tune trial per inversion key, its config the trial's real hyperparameters (`trial_config`),
   `tune.with_resources` from the spec, retried on failure from its last Tune checkpoint; Tune's files under
   STORAGE/NAME/tune/NAME. An interrupted run (the driver killed, an exception) is continued with
   `Tuner.restore`; a finished one is not: re-running a spec then starts a new Tune run for what the store lacks;
5. the search, if the spec has one: Tune's searcher samples the space, ASHA stops samples at the rungs
   (STORAGE/NAME/tune/NAME-search), and its summary is written (`sweep.search.summarize`);
6. report what still failed — never drop it.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

from vocabulary import cache_dir

from .plan import Plan, Trial, fingerprint_video, make_plan, save_plan
from .tables import finished_parts, sample_row, write_part
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
    experiment_path: Optional[str] = None  # the grid's Tune experiment (STORAGE/NAME/tune/NAME), once it exists
    results: Any = field(default=None, repr=False)  # its ResultGrid, when Tune ran this time
    restored: bool = False  # the grid's Tune run was an interrupted one, continued with Tuner.restore
    search_experiment_path: Optional[str] = None  # the search's (STORAGE/NAME/tune/NAME-search)
    search_results: Any = field(default=None, repr=False)
    search_restored: bool = False
    search: Optional[dict] = None  # the search summary (also <sweep>/search.json)
    retried: int = 0  # trials run again because their rows held errors (--retry-errors)
    error_rows: int = 0  # rows with status "error" in the sweep's samples table after this run
    error_trials: list = field(default_factory=list)  # the trials that hold them

    def result_grid(self, search: bool = False):
        """The ResultGrid of the grid (or search) experiment: this run's, or read back from its folder."""
        kept = self.search_results if search else self.results
        path = self.search_experiment_path if search else self.experiment_path
        return kept if kept is not None or path is None else result_grid(path)


def sweep_info(spec: Spec) -> dict:
    """What a trial needs beyond its plan entry (plain, picklable)."""
    return {"name": spec.name, "preset": spec.preset, "model": spec.model, "base_model": spec.base_model,
            "metrics": spec.metrics.model_dump(), "fps": spec.generation.fps}


#: How long `run` waits for the first worker that fits a trial (a GPU node's cold start — instance, image pull,
#: setup — can pass 10 minutes); `motion-sweep run --preflight-timeout SECONDS` changes it.
PREFLIGHT_TIMEOUT_S = 1800.0


# Non-secret settings a remote (ray://) driver forwards to the workers. Never credentials (Ray logs
# runtime_envs) and never local paths (HF_HOME, MOTION_SWEEP_CACHE): the cluster's nodes set their own.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
_CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


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
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, include_dashboard=dashboard,
                 log_to_driver=False, configure_logging=False, runtime_env=runtime_env)
    elif address.startswith("ray://") and "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        env = dict(runtime_env or {})
        env["env_vars"] = {**{k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}, **env.get("env_vars", {})}
        ray.init(address=address, runtime_env=env)
    else:
        ray.init(address=address, runtime_env=runtime_env)
    return True


#: The Ray release whose private `ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE` the function below edits
#: (the pyproject pins it); tests/test_tune.py fails when Ray changes, so the edit is checked again.
CREDENTIALS_PATCH_RAY = "2.60.0"


def _keep_credentials_out_of_ray() -> None:
    """Tune copies AWS_* keys from the driver's environment into each trial's runtime_env, which Ray logs in
    plain text. Workers don't need that copy (a local Ray inherits the driver's environment; cluster nodes use
    their instance role). Ray 2.60 has no public switch for it (the set is a module constant read when a
    trainable's actor class is made), so this edits that private constant; it is pinned to
    CREDENTIALS_PATCH_RAY by a test, and tests/test_s3.py checks the logs stay clean."""
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
        class_cache.ENV_VARS_TO_PROPAGATE = {n for n in names if n not in _CREDENTIAL_ENV}


def run_sweep(spec: Spec, address: str | None = None, max_concurrent: int | None = None,
              num_cpus: int | None = None, max_failures: int = 2, verbose: int = 1,
              callbacks: list | None = None, preflight_timeout: float = PREFLIGHT_TIMEOUT_S,
              retry_errors: bool = False) -> RunSummary:
    """Run the spec's grid and/or search; `callbacks` are extra Tune callbacks (besides the spec's tracking);
    `preflight_timeout`: seconds to wait for the first worker that fits a trial; `retry_errors`: run again the
    trials whose rows hold errors (their failed samples are computed again and the trial's rows replaced; the
    samples that succeeded come from the store)."""
    import ray

    from .trainable import ensure_reference_set, reference_set_part

    started = time.perf_counter()
    fingerprints = {item.video: item.sha256 or fingerprint_video(item.video) for item in spec.data}
    plan = make_plan(spec, fingerprints)  # also the search's videos and DDIM inversions (the same data)
    store = Store(spec.storage)
    try:
        if spec.has_grid:
            save_plan(store, plan)
        else:
            store.write_bytes_atomic(f"{spec.name}/.preflight", b"ok")
    except OSError as exc:
        raise StorageError(
            f"cannot write to the storage {store.uri!r}: {exc}. Check that the bucket/folder exists and that "
            "the credentials in the environment (or the instance role) allow writing there.") from None
    grid = plan.trials if spec.has_grid else []
    written = finished_parts(store, spec.name) if spec.has_grid else set()
    todo = [t for t in grid if t.trial_id not in written]
    with_errors = _error_trials(store, spec.name) if retry_errors else {}
    retried = [t for t in grid if t not in todo and t.trial_id in with_errors]
    todo += retried
    summary = RunSummary(spec.name, store.uri_of(spec.name), len(grid), len(todo), len(grid) - len(todo), 0,
                         retried=len(retried))
    info = sweep_info(spec)
    tune_dir = f"{spec.name}/tune"
    if spec.has_grid and _experiment_exists(store, tune_dir, spec.name):
        summary.experiment_path = store.uri_of(f"{tune_dir}/{spec.name}")
    search_done = None
    if spec.search is not None:
        from .search import sample_trials, search_fingerprint

        search_name = f"{spec.name}-search"
        if _experiment_exists(store, tune_dir, search_name):
            summary.search_experiment_path = store.uri_of(f"{tune_dir}/{search_name}")
        search_done = _finished_search(store, spec, search_fingerprint(spec))
        summary.search = search_done
    run_search = spec.search is not None and search_done is None
    # the reference set's frames take the generated clips' size (the first DDIM inversion's, if several)
    size = (plan.ddim_inversions[0].config["height"], plan.ddim_inversions[0].config["width"])
    set_part = reference_set_part(spec.reference_set, info["metrics"], size) if spec.reference_set else None
    need_set = set_part is not None and not store.exists(store.part_path(spec.name, "references", set_part))
    if not todo and not need_set and not run_search:
        what = f"all {len(grid)} trials" + (" and the search" if spec.search is not None else "") \
            if spec.has_grid else "the search"
        print(f"{spec.name}: {what} already in {summary.storage}; nothing to run", file=sys.stderr)
        summary.seconds = time.perf_counter() - started
        return _count_errors(store, spec.name, summary)
    ddims = {d.ddim_key: d for d in plan.ddim_inversions}
    needed_ddims = {t.ddim_key for t in todo}
    if run_search:  # the default point's DDIM inversions (a sample that searches DDIM settings makes its own)
        needed_ddims |= set(sample_trials(spec, _base_config(spec), fingerprints)[1])
    trials = {t.trial_id: t for t in todo}
    # every video this run needs, probed here before Ray starts: a bad one costs its own rows, nothing is scheduled
    bad_videos = probe_videos([ddims[k] for k in sorted(needed_ddims) if k in ddims])
    for t in [t for t in todo if t.ddim_key in bad_videos]:
        error = f"reference video {t.video_path}: {bad_videos[t.ddim_key]}"
        write_part(store, spec.name, t.trial_id, [sample_row(g.columns, error=error) for g in t.generations])
        summary.failed[t.trial_id] = error
        trials.pop(t.trial_id)
    if bad_videos:
        print(f"{spec.name}: {len(bad_videos)} reference video(s) refused before Ray started (their trials' rows "
              "are errors):\n" + "\n".join(f"  {ddims[k].video_path}: {e}" for k, e in sorted(bad_videos.items())),
              file=sys.stderr)
        if run_search:
            summary.failed["search"] = "not run: " + "; ".join(sorted(set(bad_videos.values())))
            run_search = False
        if not trials and not run_search and not need_set:
            summary.seconds = time.perf_counter() - started
            return _count_errors(store, spec.name, summary)
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    tracking = tracking_callbacks(spec)  # before Ray starts: a missing package is the user's to fix
    we_started = init_ray(address, num_cpus=num_cpus)
    try:
        preflight(spec, plan, store, resources, preflight_timeout)
        if need_set:
            print(f"{spec.name}: FID features of the reference set {spec.reference_set}", file=sys.stderr)
            task = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"])(ensure_reference_set)
            error = ray.get(task.remote(store, spec.name, spec.reference_set, info["metrics"], size, set_part))
            if error:
                summary.failed["reference_set"] = error
        # Each video's DDIM inversion is made inside the first trial that needs it, under a lease (the others
        # wait for it): no separate stage that every trial would wait behind.
        missing = [ddims[k] for k in sorted(needed_ddims)
                   if k in ddims and k not in bad_videos and not store.has_ddim(k)]
        _keep_credentials_out_of_ray()
        # Trials report the loss every step and the metrics only at checkpoints: Tune's documented switch lets
        # a result lack the declared metric (it is read on the driver, when each result arrives).
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        fit_started = time.perf_counter()
        if trials:
            _fit_grid(spec, store, {t.trial_id: t for t in grid}, trials, ddims, info, resources, max_concurrent,
                      max_failures, verbose, [*tracking, *(callbacks or [])], summary,
                      redo=frozenset(t.trial_id for t in retried))
        if run_search:
            _fit_search(spec, store, fingerprints, info, resources, max_concurrent, max_failures, verbose,
                        [*tracking_callbacks(spec), *(callbacks or [])], summary)
        summary.fit_seconds = time.perf_counter() - fit_started
        summary.ddim_inversions = sum(store.has_ddim(d.ddim_key) for d in missing)
    finally:
        if we_started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return _count_errors(store, spec.name, summary)


def probe_videos(ddims: list) -> dict[str, str]:
    """{ddim_key: problem} of the DDIM inversions whose video cannot be used: each distinct video (by content
    and frame sampling) is probed once, its header and the frames the sweep needs decoded; the verdict is
    cached under MOTION_SWEEP_CACHE by content hash, so a re-run decodes nothing."""
    import json

    import videoio

    cache = cache_dir() / "probes"
    out: dict[str, str] = {}
    seen: dict[tuple, Optional[str]] = {}
    for d in ddims:
        c = d.config
        needed = c["start"] + (c["frames"] - 1) * c["stride"] + 1
        key = (d.fingerprint, needed)
        if key not in seen:
            verdict = cache / f"{d.fingerprint}-{needed}.json"
            if verdict.is_file():
                seen[key] = json.loads(verdict.read_text()).get("problem")
            else:
                try:
                    local = d.video_path
                    if "://" in local:
                        from .plan import fetch_video

                        local = str(fetch_video(local, d.fingerprint, cache_dir() / "videos"))
                    videoio.probe_video(local, needed)
                    seen[key] = None
                except (videoio.VideoError, OSError) as exc:
                    seen[key] = str(exc)
                verdict.parent.mkdir(parents=True, exist_ok=True)
                tmp = verdict.with_name(f".tmp-{os.getpid()}-{verdict.name}")
                tmp.write_text(json.dumps({"problem": seen[key]}))
                os.replace(tmp, verdict)
        if seen[key] is not None:
            out[d.ddim_key] = seen[key]
    return out


def _error_trials(store: Store, sweep: str) -> dict[str, int]:
    """{trial id: error rows} of a sweep's samples table."""
    from .tables import load

    try:
        rows = load(store.uri_of(sweep), "samples").select(["trial_id", "status"]).to_pylist()
    except FileNotFoundError:
        return {}
    out: dict[str, int] = {}
    for r in rows:
        if r["status"] == "error":
            out[r["trial_id"]] = out.get(r["trial_id"], 0) + 1
    return out


def _count_errors(store: Store, sweep: str, summary: RunSummary) -> RunSummary:
    errors = _error_trials(store, sweep)
    summary.error_rows, summary.error_trials = sum(errors.values()), sorted(errors)
    return summary


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


def _progress_callback(planned: dict):
    """One line per finished, stopped or failed trial in the terminal, whatever Tune's own verbosity."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self):
            self.done = 0

        def _line(self, trial, text: str) -> None:
            self.done += 1
            t = planned.get(trial.config.get("trial_id"))
            what = f"{t.video} qk={t.qk} v={t.v}" if t else _trial_name(trial)
            total = f"/{len(planned)}" if planned else ""
            print(f"[{self.done}{total}] {what}: {text}", file=sys.stderr, flush=True)

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            if "trial_seconds" not in r:  # stopped by the scheduler at a rung
                objective = r.get("objective")
                self._line(trial, f"stopped at step {r.get('inversion_step')}"
                                  + (f", objective {objective:.4f}" if objective is not None else ""))
                return
            self._line(trial, f"{r.get('samples', 0)} samples, {r.get('errors', 0)} errors, "
                              f"{r.get('trial_seconds', 0.0):.1f} s")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "FAILED (see the summary at the end)")
    return Progress()


# --------------------------------------------------------------------------------------------------
# What Tune sees of a grid trial, and the searcher that hands the planned trials to Tune.

def _remove_of(qk: str, v: str) -> str:
    from vocabulary import OFF

    return {(True, True): "both", (True, False): "qk", (False, True): "v"}.get((qk == OFF, v == OFF), "none")


def trial_config(trial: Trial) -> dict:
    """A grid trial's Tune config: its hyperparameters under flat, readable keys (what Tune's progress table,
    the dashboard, TensorBoard's HParams and ResultGrid.get_dataframe() show), the (debias, prompt, seed)
    generations it serves, and `trial_id`, which picks the planned Trial in the trainable. Settings that mean
    nothing for it (the base model's learning rate) are left out rather than set to None."""
    config: dict[str, Any] = {"trial_id": trial.trial_id, "video": trial.video, "qk": trial.qk, "v": trial.v,
                              "remove": _remove_of(trial.qk, trial.v), "seed": trial.seed}
    config.update({f"inversion.{k}": v for k, v in trial.inversion.items()})
    served: list[list] = []
    for g in trial.generations:
        item = [g.debias, g.prompt, g.seed]
        if item not in served:
            served.append(item)
    config["generations"] = served
    return {k: v for k, v in config.items() if v is not None and v != []}


def _trial_name(trial) -> str:  # Tune's table and the logs: which video and design, then Tune's id
    c = trial.config
    if "video" in c:
        return f"{c['video']}-qk={c.get('qk')}-v={c.get('v')}-{trial.trial_id}"
    return f"sample-{trial.trial_id}"


def _trial_dirname(trial) -> str:  # short and unique: Tune's own id (the default embeds every config value)
    return trial.trial_id


def _planned_trials_searcher(configs: list[dict]):
    """Tune's Searcher handing out exactly the planned trials' configs, in order.

    Not BasicVariantGenerator(points_to_evaluate=...): in Ray 2.60 it needs every key of a point in
    param_space and fails on list values (`inversion.placement`); and configs from a Searcher are the trial's
    `evaluated_params`, which TensorBoard's HParams view logs.
    """
    from ray.tune.search import Searcher

    class PlannedTrials(Searcher):
        def __init__(self, configs: list[dict]):
            super().__init__()
            self.configs, self.next = list(configs), 0

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            self._metric, self._mode = metric, mode
            return True

        def suggest(self, trial_id: str):
            if self.next >= len(self.configs):
                return Searcher.FINISHED
            self.next += 1
            return dict(self.configs[self.next - 1])

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            pass

        def save(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "wb") as f:
                pickle.dump({"configs": self.configs, "next": self.next}, f)

        def restore(self, checkpoint_path: str) -> None:
            with open(checkpoint_path, "rb") as f:
                state = pickle.load(f)
            self.configs, self.next = state["configs"], state["next"]
    return PlannedTrials(configs)


def tracking_callbacks(spec: Spec) -> list:
    """Tune's own W&B / MLflow logger callbacks for the spec's `tracking:` block (imported only when asked)."""
    import importlib.util

    out = []
    wandb, mlflow = spec.tracking.wandb, spec.tracking.mlflow
    for name, block in (("wandb", wandb), ("mlflow", mlflow)):
        if block is not None and importlib.util.find_spec(name) is None:
            raise TrackingError(f"tracking.{name} needs the {name} package: pip install {name}")
    if wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback

        extra = {"entity": wandb.entity} if wandb.entity else {}
        out.append(WandbLoggerCallback(project=wandb.project, group=wandb.group or spec.name, **extra))
    if mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        out.append(MLflowLoggerCallback(tracking_uri=mlflow.tracking_uri,
                                        experiment_name=mlflow.experiment_name or spec.name,
                                        tags={"sweep": spec.name, **mlflow.tags}))
    return out


class TrackingError(ValueError):
    """A `tracking:` integration whose package is not installed."""


def result_grid(path: str):
    """The ResultGrid of a Tune experiment folder (STORAGE/NAME/tune/<experiment>), local or remote, with the
    metric and mode the run declared (from `<experiment>.run.json` beside it), so get_best_result() works."""
    from ray import tune

    parent, _, name = str(path).rstrip("/").rpartition("/")
    store = Store(parent)
    declared = store.read_json(f"{name}.run.json") if store.exists(f"{name}.run.json") else {}
    analysis = tune.ExperimentAnalysis(path if store.is_local else store.abspath(name),
                                       storage_filesystem=None if store.is_local else store.fs,
                                       default_metric=declared.get("metric"), default_mode=declared.get("mode"))
    return tune.ResultGrid(analysis)


# --------------------------------------------------------------------------------------------------
# The Tune runs.

def _experiment_exists(store: Store, tune_dir: str, experiment: str) -> bool:
    return bool(store.list_names(f"{tune_dir}/{experiment}", "experiment_state", ".json"))


def _restorable(store: Store, tune_dir: str, experiment: str, marker: dict) -> Optional[tuple[str, Any]]:
    """(path, filesystem) of an interrupted Tune run of `experiment` that `marker` matches, else None.

    The marker (`<experiment>.run.json` beside it) is written when a run starts and marked finished when
    fit() returns: only a run that never returned is continued; a finished one is history."""
    from ray import tune

    rel = f"{tune_dir}/{experiment}.run.json"
    if not store.exists(rel):
        return None
    seen = store.read_json(rel)
    if seen.get("finished") or any(seen.get(k) != v for k, v in marker.items() if k not in ("trials", "metric",
                                                                                          "mode")):
        return None
    if "trials" in marker and not set(marker["trials"]) <= set(seen.get("trials", [])):
        return None  # the spec now plans trials that run did not have
    storage_path, fs = store.tune_storage(tune_dir)
    path = f"{storage_path.rstrip('/')}/{experiment}"
    return (path, fs) if tune.Tuner.can_restore(path, storage_filesystem=fs) else None


def _tuner(store: Store, tune_dir: str, experiment: str, run_fn, marker: dict, param_space: dict, tune_config,
           run_config):
    """Tuner.restore of an interrupted run matching `marker`, else a new Tuner; and whether it restored."""
    from ray import tune

    found = _restorable(store, tune_dir, experiment, marker)
    if found is not None:
        path, fs = found
        print(f"continuing the interrupted Tune run {store.uri_of(f'{tune_dir}/{experiment}')}", file=sys.stderr)
        return tune.Tuner.restore(path, run_fn, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=fs), True
    store.write_json(f"{tune_dir}/{experiment}.run.json", {**marker, "finished": False})
    return tune.Tuner(run_fn, param_space=param_space, tune_config=tune_config, run_config=run_config), False


def _run_config(spec: Spec, store: Store, experiment: str, verbose: int, max_failures: int, callbacks: list):
    """Tune's files under STORAGE/NAME/tune/<experiment>; one Tune checkpoint kept per trial (its resume point)."""
    from ray import tune

    storage_path, fs = store.tune_storage(f"{spec.name}/tune")
    return tune.RunConfig(name=experiment, storage_path=storage_path, storage_filesystem=fs, verbose=verbose,
                          failure_config=tune.FailureConfig(max_failures=max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=callbacks)


def _fit_grid(spec, store, planned, trials, ddims, info, resources, max_concurrent, max_failures, verbose,
              callbacks, summary, redo: frozenset = frozenset()) -> None:
    from ray import tune

    from .trainable import trainable

    experiment, tune_dir = spec.name, f"{spec.name}/tune"
    # every planned trial, so a restored run finds any trial it had
    run_fn = tune.with_resources(
        tune.with_parameters(trainable, trials=planned, ddims=ddims, storage=store.uri, sweep=info,
                             checkpoint_every=spec.tune.checkpoint_every, redo=redo), resources)
    configs = [trial_config(trials[k]) for k in sorted(trials)]
    tune_config = tune.TuneConfig(
        search_alg=_planned_trials_searcher(configs), num_samples=len(configs), metric=spec.tune.metric,
        mode=spec.tune.mode, max_concurrent_trials=max_concurrent, reuse_actors=True,
        trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname)
    run_config = _run_config(spec, store, experiment, verbose, max_failures, [_progress_callback(trials), *callbacks])
    marker = {"trials": sorted(trials), "metric": spec.tune.metric, "mode": spec.tune.mode}
    tuner, summary.restored = _tuner(store, tune_dir, experiment, run_fn, marker, {}, tune_config, run_config)
    results = tuner.fit()
    store.write_json(f"{tune_dir}/{experiment}.run.json", {**marker, "finished": True})
    summary.results = results
    summary.experiment_path = store.uri_of(f"{tune_dir}/{experiment}")
    for result in results:
        trial_id = (result.config or {}).get("trial_id", "?")
        if result.error is not None:
            summary.failed[trial_id] = _short(result.error)
        elif result.metrics and "trial_seconds" in result.metrics:
            summary.trial_seconds[trial_id] = result.metrics["trial_seconds"]


def _base_config(spec: Spec) -> dict:
    from .search import base_point

    return base_point(spec)


def _finished_search(store: Store, spec: Spec, fingerprint: str) -> Optional[dict]:
    """The summary of this very search (same fingerprint) if it already ran to the end, else None."""
    rel = f"{spec.name}/tune/{spec.name}-search.run.json"
    if not store.exists(rel) or not store.exists(f"{spec.name}/search.json"):
        return None
    marker = store.read_json(rel)
    if not marker.get("finished") or marker.get("fingerprint") != fingerprint:
        return None
    return store.read_json(f"{spec.name}/search.json")


def _fit_search(spec, store, fingerprints, info, resources, max_concurrent, max_failures, verbose, callbacks,
                summary) -> None:
    from ray import tune

    from .search import asha_plan, format_search, make_scheduler, make_searcher, param_space, search_fingerprint, \
        summarize
    from .trainable import search_trainable

    experiment, tune_dir = f"{spec.name}-search", f"{spec.name}/tune"
    search = spec.search
    plan = asha_plan(spec) or {}
    context = {"objective": search.objective.model_dump(), "time_attr": plan.get("time_attr"),
               "times": plan.get("times", {})}
    run_fn = tune.with_resources(
        tune.with_parameters(search_trainable, spec=spec, fingerprints=fingerprints, storage=store.uri,
                             sweep=info, search=context, checkpoint_every=spec.tune.checkpoint_every), resources)
    tune_config = tune.TuneConfig(
        search_alg=make_searcher(spec), scheduler=make_scheduler(spec), num_samples=search.samples,
        metric="objective", mode=search.objective.mode, max_concurrent_trials=max_concurrent, reuse_actors=True,
        trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname)
    run_config = _run_config(spec, store, experiment, verbose, max_failures, [_progress_callback({}), *callbacks])
    fingerprint = search_fingerprint(spec)
    print(f"{spec.name}: searching {', '.join(search.space)} ({search.samples} samples, {search.algorithm}"
          + (f", ASHA at steps {search.rungs}" if search.rungs else "") + ")", file=sys.stderr)
    started = time.perf_counter()
    marker = {"fingerprint": fingerprint, "metric": "objective", "mode": search.objective.mode}
    tuner, summary.search_restored = _tuner(store, tune_dir, experiment, run_fn, marker, param_space(spec),
                                            tune_config, run_config)
    results = tuner.fit()
    seconds = time.perf_counter() - started
    summary.search_results = results
    summary.search_experiment_path = store.uri_of(f"{tune_dir}/{experiment}")
    summary.search = summarize(spec, store, results, experiment, summary.search_experiment_path, seconds)
    store.write_json(f"{tune_dir}/{experiment}.run.json", {**marker, "finished": True})
    for result in results:
        if result.error is not None:
            summary.failed[f"search:{(result.metrics or {}).get('trial_id', '?')}"] = _short(result.error)
    if verbose:
        print(format_search(summary.search), file=sys.stderr)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:500]


__all__ = ["CREDENTIALS_PATCH_RAY", "RunSummary", "StorageError", "TrackingError", "WorkerVisibilityError",
           "init_ray", "preflight", "result_grid", "run_sweep", "sweep_info", "tracking_callbacks", "trial_config"]
