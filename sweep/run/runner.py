"""Run a sweep on Ray: the one place that builds the Tuner.

1. plan the spec and write plan.json / grid.parquet;
2. skip trials whose part file is already in the store (re-running a spec resumes it);
3. probe every video the run needs before Ray starts (a bad one costs its own rows); start Ray and check a
   worker sees the videos and the storage (`sweep.run.preflight`); FID features of the spec's `reference_set`,
   if any, once, as a Ray task (each video's DDIM inversion is made inside the first trial that needs it, under
   a lease, and the trials store their own videos' FID features: `sweep.run.artefacts`);
4. the grid: one Tune trial per inversion key, its config the trial's real hyperparameters (`trial_config`),
   `tune.with_resources` from the spec, retried on failure from its last Tune checkpoint; Tune's files under
   STORAGE/NAME/tune/NAME. An interrupted run (the driver killed, an exception) is continued with
   `Tuner.restore`; a finished one is not: re-running a spec then starts a new Tune run for what the store lacks;
5. the search, if the spec has one: Tune's searcher samples the space, ASHA stops samples at the rungs
   (STORAGE/NAME/tune/NAME-search), and its summary is written (`sweep.run.search.write_search_summary`);
6. report what still failed — never drop it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from ..results.parts import finished_parts
from ..results.store import Store
from ..results.tables import error_line, load, sample_row, write_part
from ..spec import Spec
from .artefacts import ensure_reference_set, reference_set_part
from .gpu_budget import gpu_fit_warnings
from .plan import SweepContext, make_plan, save_plan
from .preflight import PREFLIGHT_TIMEOUT_S, StorageError, init_ray, keep_credentials_out_of_ray, preflight
from .search import (asha_plan, base_point, format_search, make_scheduler, make_searcher, param_space, sample_trials,
                     search_fingerprint, write_search_summary)
from .tune import (planned_trials_searcher, progress_callback, result_grid, search_trainable, tracking_callbacks,
                   trainable, trial_config, trial_dirname, trial_name)
from .videos import fingerprints_of, probe_videos


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


def run_sweep(spec: Spec, address: str | None = None, max_concurrent: int | None = None,
              num_cpus: int | None = None, max_failures: int = 2, verbose: int = 0,
              callbacks: list | None = None, preflight_timeout: float = PREFLIGHT_TIMEOUT_S,
              retry_errors: bool = False, cluster: str | None = None, gpu_type: str | None = None) -> RunSummary:
    """Run the spec's grid and/or search; `callbacks` are extra Tune callbacks (besides the spec's tracking);
    `preflight_timeout`: seconds to wait for the first worker that fits a trial; `retry_errors`: run again the
    trials whose rows hold errors (their failed samples are computed again and the trial's rows replaced; the
    samples that succeeded come from the store). `cluster` (a cluster.yaml; default ./cluster.yaml or the
    repository's) and `gpu_type` say which GPUs the warning about a trial's predicted memory checks
    (`sweep.run.gpu_budget`)."""
    import ray

    started = time.perf_counter()
    fingerprints = fingerprints_of(spec)
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
    context = SweepContext.of(spec)
    tune_dir = f"{spec.name}/tune"
    if spec.has_grid and _experiment_exists(store, tune_dir, spec.name):
        summary.experiment_path = store.uri_of(f"{tune_dir}/{spec.name}")
    search_done = None
    if spec.search is not None:
        search_name = f"{spec.name}-search"
        if _experiment_exists(store, tune_dir, search_name):
            summary.search_experiment_path = store.uri_of(f"{tune_dir}/{search_name}")
        search_done = _finished_search(store, spec, search_fingerprint(spec))
        summary.search = search_done
    run_search = spec.search is not None and search_done is None
    # the reference set's frames take the generated clips' size (the first DDIM inversion's, if several)
    size = (plan.ddim_inversions[0].config["height"], plan.ddim_inversions[0].config["width"])
    set_part = reference_set_part(spec.reference_set, context.metrics, size) if spec.reference_set else None
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
        needed_ddims |= set(sample_trials(spec, base_point(spec), fingerprints)[1])
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
    if spec.resources.gpu > 0:  # before Ray starts: a trial predicted not to fit its GPU share
        for line in gpu_fit_warnings(plan, cluster, gpu_type):
            print(f"{spec.name}: warning: {line}", file=sys.stderr)
    we_started = init_ray(address, num_cpus=num_cpus)
    try:
        preflight(spec, plan, store, resources, preflight_timeout)
        if need_set:
            print(f"{spec.name}: FID features of the reference set {spec.reference_set}", file=sys.stderr)
            task = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"])(ensure_reference_set)
            error = ray.get(task.remote(store, spec.name, spec.reference_set, context.metrics, size, set_part))
            if error:
                summary.failed["reference_set"] = error
        # Each video's DDIM inversion is made inside the first trial that needs it, under a lease (the others
        # wait for it): no separate stage that every trial would wait behind.
        missing = [ddims[k] for k in sorted(needed_ddims)
                   if k in ddims and k not in bad_videos and not store.has_ddim(k)]
        keep_credentials_out_of_ray()
        # Trials report the loss every step and the metrics only at checkpoints: Tune's documented switch lets
        # a result lack the declared metric (it is read on the driver, when each result arrives).
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        fit_started = time.perf_counter()
        launch = _Launch(resources, max_concurrent, max_failures, verbose)
        with _tune_output(verbose):
            if trials:
                _fit_grid(spec, context, {t.trial_id: t for t in grid}, trials, ddims, launch,
                          [*tracking, *(callbacks or [])], summary, redo=frozenset(t.trial_id for t in retried))
            if run_search:
                _fit_search(spec, context, fingerprints, launch, [*tracking_callbacks(spec), *(callbacks or [])],
                            summary)
        summary.fit_seconds = time.perf_counter() - fit_started
        summary.ddim_inversions = sum(store.has_ddim(d.ddim_key) for d in missing)
    finally:
        if we_started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - started
    return _count_errors(store, spec.name, summary)


def _error_trials(store: Store, sweep: str) -> dict[str, int]:
    """{trial id: error rows} of a sweep's samples table."""
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


@contextlib.contextmanager
def _tune_output(verbose: int):
    """Tune's terminal output at `verbose`. Ray 2.60's default ("new") output prints its experiment table and a
    TensorBoard hint (pointing at a driver-side folder, not at STORAGE/NAME/tune) even at verbose 0; its documented
    switch RAY_AIR_NEW_OUTPUT=0 selects the reporter that honours verbose 0: nothing. The project's own progress
    lines (`tune.progress_callback`) print either way."""
    if verbose:
        yield
        return
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = before


@dataclass(frozen=True)
class _Launch:
    """How the user asked Tune to run the trials: each trial's resources, the concurrency, retries, verbosity."""

    resources: dict
    max_concurrent: Optional[int]
    max_failures: int
    verbose: int


def _run_config(spec: Spec, store: Store, experiment: str, launch: _Launch, callbacks: list):
    """Tune's files under STORAGE/NAME/tune/<experiment>; one Tune checkpoint kept per trial (its resume point)."""
    from ray import tune

    storage_path, fs = store.tune_storage(f"{spec.name}/tune")
    return tune.RunConfig(name=experiment, storage_path=storage_path, storage_filesystem=fs, verbose=launch.verbose,
                          failure_config=tune.FailureConfig(max_failures=launch.max_failures),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1), callbacks=callbacks)


def _fit_grid(spec: Spec, context: SweepContext, planned: dict, trials: dict, ddims: dict, launch: _Launch,
              callbacks: list, summary: RunSummary, redo: frozenset = frozenset()) -> None:
    from ray import tune

    store = Store(context.storage)
    experiment, tune_dir = spec.name, f"{spec.name}/tune"
    # every planned trial, so a restored run finds any trial it had
    run_fn = tune.with_resources(
        tune.with_parameters(trainable, trials=planned, ddims=ddims, context=context, redo=redo), launch.resources)
    configs = [trial_config(trials[k]) for k in sorted(trials)]
    tune_config = tune.TuneConfig(
        search_alg=planned_trials_searcher(configs), num_samples=len(configs), metric=spec.tune.metric,
        mode=spec.tune.mode, max_concurrent_trials=launch.max_concurrent, reuse_actors=True,
        trial_name_creator=trial_name, trial_dirname_creator=trial_dirname)
    run_config = _run_config(spec, store, experiment, launch, [progress_callback(trials), *callbacks])
    marker = {"trials": sorted(trials), "metric": spec.tune.metric, "mode": spec.tune.mode}
    tuner, summary.restored = _tuner(store, tune_dir, experiment, run_fn, marker, {}, tune_config, run_config)
    results = tuner.fit()
    store.write_json(f"{tune_dir}/{experiment}.run.json", {**marker, "finished": True})
    summary.results = results
    summary.experiment_path = store.uri_of(f"{tune_dir}/{experiment}")
    for result in results:
        trial_id = (result.config or {}).get("trial_id", "?")
        if result.error is not None:
            summary.failed[trial_id] = error_line(result.error)
        elif result.metrics and "trial_seconds" in result.metrics:
            summary.trial_seconds[trial_id] = result.metrics["trial_seconds"]


def _finished_search(store: Store, spec: Spec, fingerprint: str) -> Optional[dict]:
    """The summary of this very search (same fingerprint) if it already ran to the end, else None."""
    rel = f"{spec.name}/tune/{spec.name}-search.run.json"
    if not store.exists(rel) or not store.exists(f"{spec.name}/search.json"):
        return None
    marker = store.read_json(rel)
    if not marker.get("finished") or marker.get("fingerprint") != fingerprint:
        return None
    return store.read_json(f"{spec.name}/search.json")


def _fit_search(spec: Spec, context: SweepContext, fingerprints: dict, launch: _Launch, callbacks: list,
                summary: RunSummary) -> None:
    from ray import tune

    store = Store(context.storage)
    experiment, tune_dir = f"{spec.name}-search", f"{spec.name}/tune"
    search = spec.search
    asha = asha_plan(spec) or {}
    scoring = {"objective": search.objective.model_dump(), "time_attr": asha.get("time_attr"),
               "times": asha.get("times", {})}
    run_fn = tune.with_resources(
        tune.with_parameters(search_trainable, spec=spec, fingerprints=fingerprints, context=context, search=scoring),
        launch.resources)
    tune_config = tune.TuneConfig(
        search_alg=make_searcher(spec), scheduler=make_scheduler(spec), num_samples=search.samples,
        metric="objective", mode=search.objective.mode, max_concurrent_trials=launch.max_concurrent,
        reuse_actors=True, trial_name_creator=trial_name, trial_dirname_creator=trial_dirname)
    run_config = _run_config(spec, store, experiment, launch, [progress_callback({}, search.samples), *callbacks])
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
    summary.search = write_search_summary(spec, store, results, experiment, summary.search_experiment_path, seconds)
    store.write_json(f"{tune_dir}/{experiment}.run.json", {**marker, "finished": True})
    for result in results:
        if result.error is not None:
            summary.failed[f"search:{(result.metrics or {}).get('trial_id', '?')}"] = error_line(result.error)
    if launch.verbose:
        print(format_search(summary.search), file=sys.stderr)
