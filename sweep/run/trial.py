"""One trial, without Ray: one inversion (or the plain base model) and every generation that hangs off it.

`run_trial` / `run_trials` are plain functions (Tune's adapters in `sweep.run.tune` call them; tests and notebooks
can too). What a trial publishes, through its `publish(metrics, checkpoint=None)` callback:

* every optimisation step: `{inversion_step, loss}`;
* at each checkpoint step k, once the optimisation reaches it (and before it goes on): the mean metrics of
  checkpoint k's generations, with `inversion_step = checkpoint_step = k` (a search also publishes `objective`);
* every `checkpoint_every` steps, once `checkpoint_min_seconds` have passed since the last one, a resume point (a
  local folder): the embeddings, AdamW state, generator state, step and loss history of each optimisation
  (`model.inversion.TrainState`); a retried trial continues from it;
* at the end: the sample/error counts and the trial's wall time, beside the last checkpoint's metrics.

The rows are written when the trial ends, its samples part last (its presence marks the trial complete); a
search trial writes each checkpoint's rows at once, as their own part.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

import model
import videoio
from vocabulary import OFF, SAMPLE_METRICS, objective_value

from ..results.leases import wait_or_lease
from ..results.store import Store
from ..results.tables import cached_sample_row, code_version, error_text, sample_row, write_part
from .artefacts import ensure_reference, ensure_reference_features, inversion_done
from .plan import DDIMInversion, Generation, SweepContext, Trial
from .workers import cuda, device_name, get_pipeline, get_scorer

#: `publish(metrics, checkpoint=None)`: a trial's results as they come; checkpoint is a local folder to keep as
#: the trial's resume point.
Publish = Callable[..., None]


@dataclass
class Runtime:
    """What every trial of this call runs with: the store, the loaded pipeline and scorer, and what rows record
    of them."""

    context: SweepContext
    store: Store
    pipe: Any
    scorer: Any
    backbones: dict  # the scorer's describe(): backbone names and weights, recorded on every row
    device: str
    owner: Optional[str] = None  # the leases' owner: this trial across its attempts (sweep.results.leases)


class EmbeddingRun:
    """One trial's motion embeddings: loaded from the store, or optimised step by step (paused at checkpoints)."""

    def __init__(self, trial: Trial, reference, runtime: Runtime, resume: dict):
        self.trial, self.reference, self.runtime = trial, reference, runtime
        self.latent_size = tuple(reference.inverted_noise.shape[-2:])
        self.needed = [0] if trial.base else sorted(set(trial.checkpoints))
        self.embeddings_at: dict[int, Any] = {}
        self.losses: list[float] = []
        self.seconds = 0.0
        self.state = None
        self.steps = 0 if trial.base else int(trial.inversion["steps"])
        self.cached = trial.base or inversion_done(runtime.store, trial)
        self.lease = None  # held while this process computes the embeddings (other sweeps wait for them)
        if trial.base:
            self.embeddings_at[0] = None
        elif self.cached:
            meta = runtime.store.read_json(runtime.store.inversion_meta_path(trial.inversion_key))
            self.losses, self.seconds = meta.get("losses", []), meta.get("seconds", 0.0)
        else:
            self.config = trial.inversion_config()
            self.state = resume.get(trial.inversion_key)
            if self.state is not None:
                self.losses, self.seconds = list(self.state.losses), self.state.seconds

    @property
    def step(self) -> int:
        return self.steps if self.cached else (self.state.step if self.state is not None else 0)

    def advance(self, to: int, on_step: Optional[Callable[[int, float], None]]) -> None:
        """Optimise up to step `to` (at most the run's length); store the embeddings of saved steps reached."""
        if self.cached or to <= self.step:
            return
        store, key, unet = self.runtime.store, self.trial.inversion_key, self.runtime.pipe.unet
        # through `model.` so a test's worker hook can wrap it
        result = model.train_embeddings(self.runtime.pipe, self.reference.latents, self.trial.source_prompt,
                                        self.config, on_step, base_model=self.trial.base_model,
                                        resume=self.state, stop_at=to)
        self.state, self.losses, self.seconds = result.state, result.losses, result.seconds
        with tempfile.TemporaryDirectory() as tmp:
            for step in sorted(result.checkpoints):
                emb = result.at(step)
                local = emb.save(Path(tmp) / f"step-{step}.safetensors", {"step": step})
                store.upload(local, store.inversion_step_path(key, step))
                self.embeddings_at[step] = emb.to(unet.device)
        if self.step == self.steps:  # meta.json last: its presence says every step file is complete
            store.write_json(store.inversion_meta_path(key),
                             {"steps": list(self.config.saved_steps), "losses": self.losses, "seconds": self.seconds,
                              "device": device_name(), "qk": self.trial.qk, "v": self.trial.v})
            if self.lease is not None:
                self.lease.release()
                self.lease = None

    def embeddings(self, step: int):
        """The embeddings at a checkpoint step (None for the base model); from the store if not in memory."""
        if step not in self.embeddings_at:
            store = self.runtime.store
            rel = store.inversion_step_path(self.trial.inversion_key, step)
            with tempfile.TemporaryDirectory() as tmp:
                local = store.download(rel, Path(tmp) / f"step-{step}.safetensors")
                self.embeddings_at[step], _ = model.MotionEmbeddings.load(local, self.runtime.pipe.unet,
                                                                          latent_size=self.latent_size)
        return self.embeddings_at[step]

    def inversions_row(self, **extra) -> dict:
        return {**self.trial.columns, "loss_curve": self.losses, "steps": len(self.losses), "seconds": self.seconds,
                "device": device_name(), "checkpoints": [k for k in self.needed if k and k <= self.step],
                "cached": self.cached and not self.trial.base, "code_version": code_version(), "status": "ok",
                **extra}


def run_trial(trial: Trial, ddim: DDIMInversion, context: SweepContext, publish: Publish | None = None, *,
              resume: dict | None = None, owner: str | None = None) -> dict:
    """Run (or resume) one trial and write its rows; returns the summary metrics published last. `resume` is what
    `load_resume` read from a resume point; `owner` names the trial across its attempts (sweep and trial id), so
    an attempt takes over the leases a dead earlier attempt held instead of waiting them out."""
    return run_trials([trial], {ddim.ddim_key: ddim}, context, publish, resume=resume, owner=owner)


def run_trials(trials: list[Trial], ddims: dict[str, DDIMInversion], context: SweepContext,
               publish: Publish | None = None, *, resume: dict | None = None, search: dict | None = None,
               owner: str | None = None) -> dict:
    """Run trials that advance together (one for a grid point; one per video for a search sample).

    The optimisations run in segments that end at checkpoint steps (where that step's generations are
    generated, scored and published, and the optimisation goes on) and at multiples of the context's
    `checkpoint_every` (where a resume point may be published). `search` (id, objective, time_attr, times) makes a search trial: each
    checkpoint writes its rows at once as their own part, tagged with the search id, and publishes the objective.
    """
    publish = publish or (lambda metrics, checkpoint=None: None)
    started = time.perf_counter()
    presets = {t.preset for t in trials}
    if len(presets) != 1:
        raise ValueError(f"trials that advance together share one base model, got presets {sorted(presets)}")
    preset = presets.pop()
    scorer = get_scorer(context.metrics)
    runtime = Runtime(context, Store(context.storage), get_pipeline(preset, context.models.get(preset)), scorer,
                      scorer.describe(), device_name(), owner)
    runs: list[EmbeddingRun] = []
    try:
        for trial in trials:
            runs.append(_prepare(trial, ddims[trial.ddim_key], runtime, resume or {}))
        return _advance(runs, runtime, publish, resume or {}, search, started)
    finally:  # a failed trial lets go of its keys at once (the lease would expire anyway)
        for run in runs:
            if run.lease is not None:
                run.lease.release()


def _prepare(trial: Trial, ddim: DDIMInversion, runtime: Runtime, resume: dict) -> EmbeddingRun:
    """The trial's reference (and its FID features) from the store or made, and its embeddings run; while this
    process optimises them it holds their lease (another sweep on this storage waits for them, or they for it)."""
    store, context = runtime.store, runtime.context
    reference = ensure_reference(store, ddim, ddim.preset, context.models.get(ddim.preset), runtime.owner)
    ensure_reference_features(store, context.name, ddim, reference.frames, runtime.scorer)
    lease = None if trial.base else wait_or_lease(store, trial.inversion_key, lambda: inversion_done(store, trial),
                                                  owner=runtime.owner)
    run = EmbeddingRun(trial, reference, runtime, resume)
    if lease is not None and run.cached:
        lease.release()
    else:
        run.lease = lease
    return run


def _advance(runs: list[EmbeddingRun], runtime: Runtime, publish: Publish, resume: dict, search: dict | None,
             started: float) -> dict:
    """Optimise every run from boundary to boundary (checkpoint steps, resume points, the end), generating and
    scoring at each checkpoint, publishing as it goes; write the rows; return the final summary."""
    store, name = runtime.store, runtime.context.name
    eval_steps = sorted({k for run in runs for k in run.needed})
    final = max([run.steps for run in runs] + [0])
    every = runtime.context.checkpoint_every
    last_resume_point = started
    boundaries = sorted(set(eval_steps) | ({*range(every, final, every)} if every else set()) | {final})
    resumed = int(resume.get("step", 0))
    live = len(runs) == 1  # one optimisation: its loss goes to Tune as each step ends
    rows: list[dict] = []
    last_metrics: dict = {}
    prev = 0
    for b in boundaries:
        trained = [run for run in runs if not run.cached and run.step < min(b, run.steps)]

        def on_step(step: int, loss: float, _b: int = b) -> None:
            if live and step != _b:  # step b's loss goes with b's results
                publish({"inversion_step": step, "loss": loss})
        for run in trained:
            run.advance(b, on_step)
        if 0 < b <= resumed:  # done before the trial was interrupted; only a grid needs its rows again
            if b in eval_steps and search is None:
                rows += _rows_at(b, runs, runtime)
            prev = b
            continue
        if not live and trained:  # several optimisations advanced one after the other: their mean loss per step
            for step in range(max(prev, resumed) + 1, b):
                publish({"inversion_step": step, "loss": _mean_loss(trained, step)})
        metrics: dict = {"inversion_step": b}
        if trained:
            metrics["loss"] = _mean_loss(trained, b)
        if b in eval_steps:
            at_b = _rows_at(b, runs, runtime)
            if search is not None:
                at_b = [{**r, "search": search["id"]} for r in at_b]
                for run in runs:  # the loss curve so far, replaced at each checkpoint
                    if not run.trial.base:
                        write_part(store, name, f"search-{search['id']}-{run.trial.inversion_key}",
                                   [run.inversions_row(search=search["id"])], table="inversions")
                write_part(store, name, f"search-{search['id']}-step{b}", at_b)  # whole, before it is published
            rows += at_b
            metrics.update({"checkpoint_step": b, **row_summary(at_b)})
            if search is not None:
                metrics["objective"] = objective_value(metrics, search["objective"])
                if search.get("time_attr") == "asha_time" and b in search.get("times", {}):
                    metrics["asha_time"] = search["times"][b]
            last_metrics = {k: v for k, v in metrics.items() if k not in ("samples", "errors", "loss", "asha_time")}
        if every and trained and b % every == 0 and b < final \
                and time.perf_counter() - last_resume_point >= runtime.context.checkpoint_min_seconds:
            with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # Tune may move the folder
                save_resume(tmp, b, runs)
                publish(metrics, checkpoint=tmp)
            last_resume_point = time.perf_counter()
        else:
            publish(metrics)
        prev = b

    if search is None:
        for run in runs:
            write_part(store, name, run.trial.trial_id, [run.inversions_row()], table="inversions")
        write_part(store, name, runs[0].trial.trial_id, rows)  # last: the samples part marks the trial complete
    # the last checkpoint's metrics (what Tune ranks by, scope "last"), the counts over every checkpoint
    counts = row_summary(rows)
    summary = {**last_metrics, "samples": counts["samples"], "errors": counts["errors"], "inversion_step": final,
               "trial_seconds": time.perf_counter() - started}
    publish(summary)
    if cuda():
        import torch

        torch.cuda.empty_cache()  # the next trial on this worker may be another video size
    return summary


def row_summary(rows: list[dict]) -> dict:
    """{samples, errors, <metric>: mean over the ok rows that have it}: what a checkpoint's rows publish."""
    ok = [r for r in rows if r.get("status") == "ok"]
    out: dict = {"samples": len(rows), "errors": len(rows) - len(ok)}
    for m in SAMPLE_METRICS:
        values = [r[m] for r in ok if r.get(m) is not None]
        if values:
            out[m] = float(np.mean(values))
    return out


def _mean_loss(runs: list[EmbeddingRun], step: int) -> float:
    values = [run.losses[step - 1] for run in runs if len(run.losses) >= step]
    return float(np.mean(values)) if values else float("nan")


# --------------------------------------------------------------------------------------------------
# Generating and scoring a checkpoint's clips.

def _rows_at(step: int, runs: list[EmbeddingRun], runtime: Runtime) -> list[dict]:
    """The rows of every generation at checkpoint `step`: cached ones reused, the rest generated in batches."""
    rows: list[dict] = []
    for run in runs:
        if step not in run.needed:
            continue
        todo: list[Generation] = []
        for g in run.trial.generations:
            if g.checkpoint != step:
                continue
            cached = cached_sample_row(runtime.store, g.sample_key, g.columns)
            if cached is not None:
                rows.append(cached)
            else:
                todo.append(g)
        groups: dict[tuple, list[Generation]] = {}
        for g in todo:  # one pipeline call per (debias, generation settings)
            groups.setdefault((g.debias, tuple(sorted(g.params.items()))), []).append(g)
        for (debias, _), gens in groups.items():
            config = gens[0].generation_config()
            embeddings = run.embeddings(step)
            mode = "none" if debias == OFF else debias  # without MV there is nothing to debias
            for i in range(0, len(gens), config.batch_size):
                rows += _generate_and_score(gens[i:i + config.batch_size], run, embeddings, mode, config, runtime)
    return rows


def _generate_and_score(gens: list[Generation], run: EmbeddingRun, embeddings, debias: str, config,
                        runtime: Runtime) -> list[dict]:
    """Generate a batch; if the batch fails, retry one by one so a bad generation costs only its own row."""
    store, backbones, device, reference = runtime.store, runtime.backbones, runtime.device, run.reference
    try:
        t0 = time.perf_counter()
        videos = model.generate(runtime.pipe, reference.inverted_noise, [g.prompt for g in gens],
                                [g.seed for g in gens], embeddings, debias, config)
        per_video = (time.perf_counter() - t0) / len(gens)
    except Exception:  # noqa: BLE001 - isolate the failing item below
        if len(gens) > 1:
            return [row for g in gens for row in _generate_and_score([g], run, embeddings, debias, config, runtime)]
        return [sample_row(gens[0].columns, backbones, error=error_text("generate"), device=device,
                           invert_seconds=run.seconds)]
    rows = []
    for g, video in zip(gens, videos):
        try:
            t0 = time.perf_counter()
            metrics = runtime.scorer.score(video, g.prompt, reference=reference.frames)
            score_seconds = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                local = videoio.write_video(Path(tmp) / "video.mp4", video, fps=runtime.context.fps)
                rel = store.video_path(g.generation_key)
                store.upload(local, rel)
            row = sample_row(g.columns, {**metrics, **backbones}, video_path=store.uri_of(rel), device=device,
                             invert_seconds=run.seconds, generate_seconds=per_video, score_seconds=score_seconds)
            store.put_sample(g.sample_key, row)
        except Exception:  # noqa: BLE001 - a scoring failure is this row's error, not the trial's
            row = sample_row(g.columns, backbones, error=error_text("score"), device=device,
                             invert_seconds=run.seconds, generate_seconds=per_video)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# Resume points: one folder, a TrainState per inversion key and the step they reached.

def save_resume(folder: str | Path, step: int, runs: list[EmbeddingRun]) -> None:
    folder = Path(folder)
    for run in runs:
        if run.state is not None:
            run.state.save(folder / run.trial.inversion_key)
    (folder / "resume.json").write_text(json.dumps({"step": step}))


def load_resume(folder: str | Path | None) -> dict:
    """{"step": k, <inversion_key>: TrainState, ...} from a folder `save_resume` wrote ({} for None)."""
    if folder is None or not (Path(folder) / "resume.json").exists():
        return {}
    folder = Path(folder)
    out: dict = {"step": json.loads((folder / "resume.json").read_text())["step"]}
    for sub in folder.iterdir():
        if sub.is_dir() and (sub / "state.json").exists():
            out[sub.name] = model.TrainState.load(sub)
    return out
