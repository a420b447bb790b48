"""Ray Tune's side of a trial: the function trainables (plain functions of a config dict) that run `sweep.run.trial`,
the config Tune sees of a grid trial, the searcher that hands Tune the planned trials, the terminal's line per
finished trial, the spec's tracking callbacks, and reading a finished experiment back as a ResultGrid.

The one place that builds the Tuner is `sweep.run.runner`.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
import time
from typing import Any

from ..results.parts import finished_parts
from ..results.store import Store
from ..results.tables import load
from ..spec import Spec
from .plan import SweepContext, Trial, removed
from .search import sample_trials
from .trial import load_resume, row_summary, run_trial, run_trials


class TrackingError(ValueError):
    """A `tracking:` integration whose package is not installed."""


# --------------------------------------------------------------------------------------------------
# The trainables.

def tune_publish(metrics: dict, checkpoint: str | None = None) -> None:
    """A trial's `publish`: `tune.report`, with the resume folder as a Tune checkpoint."""
    from ray import tune

    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint) if checkpoint else None)


def tune_resume() -> dict:
    """The resume point of a retried (or restored) trial: Tune's last checkpoint, read into memory."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as folder:
        return load_resume(folder)


def trainable(config: dict, trials: dict, ddims: dict, context: SweepContext, redo: frozenset = frozenset()) -> None:
    """A grid trial: `config["trial_id"]` picks the planned trial; the plan comes via with_parameters (the rest of
    the config is the trial's hyperparameters, there for Tune's table, TensorBoard and ResultGrid).
    `redo`: trials to run again although their rows are written (--retry-errors)."""
    trial = trials[config["trial_id"]]
    store = Store(context.storage)
    if trial.trial_id not in redo and trial.trial_id in finished_parts(store, context.name):
        # finished after Tune last saved its state (a restored experiment hands it back)
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        part = store.part_path(context.name, "samples", trial.trial_id)
        if store.exists(part):  # its own file: read just that, not the whole table
            done = pq.read_table(store.abspath(part), filesystem=store.fs).to_pylist()
        else:  # inside a compacted file
            rows = load(store.uri_of(context.name))
            done = rows.filter(pc.equal(rows["trial_id"], trial.trial_id)).to_pylist()
        tune_publish({**row_summary(done), "inversion_step": trial.inversion["steps"], "trial_seconds": 0.0})
        return
    # the leases' owner: this planned trial of this sweep, whichever attempt (a retry after a dead worker, or
    # the continuation of a killed driver's run) runs it
    run_trial(trial, ddims[trial.ddim_key], context, tune_publish, resume=tune_resume(),
              owner=f"{context.name}/{trial.trial_id}")


def search_trainable(config: dict, spec: Spec, fingerprints: dict, context: SweepContext, search: dict) -> None:
    """A search sample: the config's values (drawn by the searcher) are planned like a grid point (same content
    keys) over the eval set, one inversion per video, advancing together."""
    from ray import tune

    trials, ddims = sample_trials(spec, config, fingerprints)
    sample = tune.get_context().get_trial_id()
    run_trials(trials, ddims, context, tune_publish, resume=tune_resume(), owner=f"{context.name}/{sample}",
               search={**search, "id": sample})


# --------------------------------------------------------------------------------------------------
# What Tune sees of a grid trial, and the searcher that hands the planned trials to Tune.

def trial_config(trial: Trial) -> dict:
    """A grid trial's Tune config: its hyperparameters under flat, readable keys (what Tune's progress table,
    the dashboard, TensorBoard's HParams and ResultGrid.get_dataframe() show), the (debias, prompt, seed)
    generations it serves, and `trial_id`, which picks the planned Trial in the trainable. Settings that mean
    nothing for it (the base model's learning rate) are left out rather than set to None."""
    config: dict[str, Any] = {"trial_id": trial.trial_id, "video": trial.video, "qk": trial.qk, "v": trial.v,
                              "remove": removed(trial.qk, trial.v), "seed": trial.seed}
    config.update({f"inversion.{k}": v for k, v in trial.inversion.items()})
    served: list[list] = []
    for g in trial.generations:
        item = [g.debias, g.prompt, g.seed]
        if item not in served:
            served.append(item)
    config["generations"] = served
    return {k: v for k, v in config.items() if v is not None and v != []}


def trial_name(trial) -> str:
    """Tune's table and the logs: which video and design, then Tune's id."""
    c = trial.config
    if "video" in c:
        return f"{c['video']}-qk={c.get('qk')}-v={c.get('v')}-{trial.trial_id}"
    return f"sample-{trial.trial_id}"


def trial_dirname(trial) -> str:
    """Short and unique: Tune's own id (the default embeds every config value)."""
    return trial.trial_id


def planned_trials_searcher(configs: list[dict]):
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


# --------------------------------------------------------------------------------------------------
# Callbacks: the terminal's progress lines, the spec's tracking.

def progress_callback(planned: dict, total: int | None = None):
    """The terminal's view of a Tune run, whatever Tune's own verbosity: a line per finished, stopped or failed trial
    with the run's counts so far (done of total, running, failed, samples written) and an ETA, and, when stderr is
    a terminal, a live bar with the same counts below those lines. `planned`: the grid's trials by id (their video
    and design name the line); `total`: the trials to expect (default: len(planned))."""
    from ray import tune
    from tqdm import tqdm

    class Progress(tune.Callback):
        def __init__(self):
            self.total = total or len(planned) or None
            self.done = self.running = self.failed = self.samples = 0
            self.started = time.monotonic()
            self.bar = tqdm(total=self.total, unit="trial", desc="trials", file=sys.stderr, dynamic_ncols=True,
                            disable=not sys.stderr.isatty(), leave=False,
                            bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining} {postfix}")

        def counts(self) -> str:
            return f"{self.running} running, {self.failed} failed, {self.samples} samples written"

        def eta(self) -> str:
            """What is left at the rate trials have finished so far (ready when one has)."""
            if not self.total or not self.done or self.done >= self.total:
                return ""
            left = (time.monotonic() - self.started) / self.done * (self.total - self.done)
            return f", ETA {tqdm.format_interval(left)}"

        def _line(self, trial, text: str) -> None:
            self.done += 1
            self.running = max(0, self.running - 1)
            t = planned.get(trial.config.get("trial_id"))
            what = f"{t.video} qk={t.qk} v={t.v}" if t else trial_name(trial)
            of = f"/{self.total}" if self.total else ""
            self.bar.write(f"[{self.done}{of}] {what}: {text} ({self.counts()}{self.eta()})", file=sys.stderr)
            self.bar.set_postfix_str(self.counts(), refresh=False)
            self.bar.update(1)

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running += 1
            self.bar.set_postfix_str(self.counts())

        def on_trial_recover(self, iteration, trials, trial, **info):  # retried: it starts again
            self.running = max(0, self.running - 1)

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            if "trial_seconds" not in r:  # stopped by the scheduler at a rung
                objective = r.get("objective")
                self._line(trial, f"stopped at step {r.get('inversion_step')}"
                                  + (f", objective {objective:.4f}" if objective is not None else ""))
                return
            self.samples += r.get("samples", 0)
            self._line(trial, f"{r.get('samples', 0)} samples, {r.get('errors', 0)} errors, "
                              f"{r.get('trial_seconds', 0.0):.1f} s")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.failed += 1
            self._line(trial, "FAILED (see the summary at the end)")

        def on_experiment_end(self, trials, **info):
            self.bar.close()
    return Progress()


def tracking_callbacks(spec: Spec) -> list:
    """Tune's own W&B / MLflow logger callbacks for the spec's `tracking:` block (imported only when asked)."""
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
