"""One trial: one inversion (or the plain base model) and every generation that hangs off it.

`run_trial` / `run_trials` are plain functions (used directly in tests and notebooks); `trainable` and
`search_trainable` are the Ray Tune wrappers (plain functions of a config dict). What a trial reports:

* every optimisation step: `{inversion_step, loss}`;
* at each checkpoint step k, once the optimisation reaches it (and before it goes on): the mean metrics of
  checkpoint k's generations, with `inversion_step = checkpoint_step = k` (a search also reports `objective`);
* every `checkpoint_every` steps, a Tune checkpoint: the embeddings, AdamW state, generator state, step
  and loss history of each inversion (`model.inversion.TrainState`); a retried trial continues from it;
* at the end: the sample/error counts and the trial's wall time, beside the last checkpoint's metrics.

Pipelines and scorers are cached per worker process, so a worker that runs several trials loads each model once.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

import videoio

from vocabulary import OFF, SAMPLE_METRICS

from .plan import DDIMInversion, Generation, Trial, content_key, fetch_video
from .store import Store
from .tables import cached_sample_row, code_version, finished_parts, sample_row, write_part

#: `report(metrics, checkpoint=None)`: checkpoint is a local folder to keep as the trial's resume point.
Report = Callable[..., None]

_PIPELINES: dict = {}


def get_pipeline(preset: str, model: str | None):
    """The preset's pipeline, loaded once per worker process."""
    from model import get_preset, load_pipeline

    key = (preset, model)
    if key not in _PIPELINES:
        _PIPELINES[key] = load_pipeline(get_preset(preset, model))
    return _PIPELINES[key]


def get_scorer(metrics: dict):
    import evaluation
    from evaluation import ScorerConfig

    m = dict(metrics)
    kwargs = {k: m[k] for k in ("grid_size", "min_motion", "fid_frames") if m.get(k) is not None}
    device = "cuda" if _cuda() else "cpu"
    config = ScorerConfig.from_names(clip=m.get("clip"), tracker=m.get("tracker"), fid=m.get("fid"),
                                     device=device, **kwargs)
    return evaluation.get_scorer(config)  # one per config and process


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def device_name() -> str:
    import torch

    return f"cuda:{torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"


def ensure_reference(store: Store, ddim: DDIMInversion, preset: str, model: str | None):
    """The video's cached latent + DDIM inversion from the store, computed and stored on a miss (once across
    concurrent sweeps: the others wait for it)."""
    from model import Reference, prepare_reference

    rel = store.ddim_path(ddim.ddim_key)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "reference.safetensors"
        lease = wait_or_lease(store, ddim.ddim_key, lambda: store.exists(rel))
        if lease is None:
            return Reference.load(store.download(rel, local))
        try:
            pipe = get_pipeline(preset, model)
            c = ddim.config
            ref = prepare_reference(pipe, local_video(ddim), c["frames"], c["height"], c["width"], c["start"],
                                    c["stride"], c["ddim_steps"])
            ref.metadata.update(video=ddim.video, fingerprint=ddim.fingerprint, base_model=ddim.base_model)
            ref.save(local)
            store.upload(local, rel)
            return Reference.load(local)  # what every other trial reads: the stored bytes, not the in-memory copy
        finally:
            lease.release()


#: A lease lives this long unless its holder renews it (every third of it, from a background thread); a sweep
#: whose holder died waits at most this long before taking the computation over.
LEASE_TTL_S = 120.0
LEASE_POLL_S = 2.0


def wait_or_lease(store: Store, key: str, done: Callable[[], bool], ttl_s: float = LEASE_TTL_S,
                  poll_s: float = LEASE_POLL_S):
    """None once `done()` (the result is stored, by whoever computed it); else a held, kept-alive lease on `key`:
    this process computes it while any other sweep that needs it waits here."""
    import os
    import socket
    import uuid

    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    while not done():
        lease = store.acquire_lease(key, holder, ttl_s)
        if lease is not None:
            if done():  # finished between the look and the lease
                lease.release()
                return None
            return lease.keep_alive()
        time.sleep(poll_s)
    return None


def inversion_done(store: Store, trial: Trial) -> bool:
    """Every checkpoint's embeddings and the meta.json written after them are in the store."""
    needed = sorted(set(trial.checkpoints))
    return store.has_inversion(trial.inversion_key, needed) and store.exists(store.inversion_meta_path(trial.inversion_key))


def local_video(ddim: DDIMInversion) -> str:
    """The reference video as a local path: itself, or a remote one (s3://…) fetched into this node's cache."""
    if "://" not in ddim.video_path:
        return ddim.video_path
    from vocabulary import cache_dir

    return str(fetch_video(ddim.video_path, ddim.fingerprint, cache_dir() / "videos"))


# --------------------------------------------------------------------------------------------------
# FID/KID reference features: real frames, stored once per (clip, backbone) so the report needs no model.

def _fid_backbone(scorer) -> tuple[str, bool]:
    """The scorer's FID feature extractor (as the samples' `fid_backbone` says it) and whether it is trained."""
    return scorer.describe()["fid_backbone"], bool(scorer.inception is not None or scorer.clip.pretrained)


def _reference_row(key: str, features: np.ndarray | None, backbone: tuple[str, bool], **fields) -> dict:
    from evaluation import EVALUATION_VERSION

    ok = features is not None
    return {"reference_key": key, **fields, "fid_features": features,
            "n_frames": len(features) if ok else None, "dim": features.shape[1] if ok else None,
            "fid_backbone": backbone[0], "pretrained_metrics": backbone[1], "evaluation_version": EVALUATION_VERSION,
            "status": "ok" if ok else "error", "device": device_name(), "code_version": code_version(),
            "created_at": dt.datetime.now(dt.timezone.utc)}


def ensure_reference_features(store: Store, sweep: str, ddim: DDIMInversion, frames: np.ndarray, scorer) -> str:
    """FID features of every frame of a sweep video as prepared for the model (the default FID reference),
    written once per (ddim_key, backbone) as a `references` part; returns the part name."""
    backbone = _fid_backbone(scorer)
    part = f"video-{ddim.ddim_key}-{content_key(backbone[0])[:8]}"
    if store.exists(store.part_path(sweep, "references", part)):
        return part
    fields = {"source": "sweep_videos", "video": ddim.video, "source_video": ddim.video_path,
              "ddim_key": ddim.ddim_key, "height": int(frames.shape[1]), "width": int(frames.shape[2]),
              "content_hash": ddim.fingerprint}
    try:
        row = _reference_row(ddim.ddim_key, scorer.fid_features(frames, all_frames=True), backbone, **fields)
    except Exception:  # noqa: BLE001 - the trial's samples still count; the report says why FID lacks it
        row = {**_reference_row(ddim.ddim_key, None, backbone, **fields), "error": _error_text("fid reference")}
    write_part(store, sweep, part, [row], table="references")
    return part


def reference_set_part(reference_set: str, metrics: dict, size: tuple[int, int]) -> str:
    """Part name of a reference set's features: changes with its videos (names and bytes), the FID settings
    and the frame size, so an edited set is computed again."""
    from evaluation.scorer import reference_videos

    listing = []
    for vid, path in reference_videos(reference_set):
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        listing.append((vid, [(f.name, f.stat().st_size) for f in files if f.is_file()]))
    settings = {k: metrics.get(k) for k in ("clip", "fid")}
    return "set-" + content_key({"set": str(reference_set), "videos": listing, "metrics": settings,
                                 "size": list(size)})


def ensure_reference_set(store: Store, sweep: str, reference_set: str, metrics: dict, size: tuple[int, int],
                         part: str) -> str | None:
    """FID features of every frame of every video of the spec's reference set (resized to `size`), as one
    `references` part with a row per video. Returns None, or the error (also written, as an error row, so
    the report says why FID is missing instead of falling back to another reference)."""
    from evaluation.scorer import reference_set_features

    scorer = get_scorer(metrics)
    backbone = _fid_backbone(scorer)
    common = {"source": "reference_set", "reference_set": str(reference_set), "height": int(size[0]),
              "width": int(size[1])}
    try:
        per_video = reference_set_features(reference_set, scorer.config, size=size)
    except Exception as exc:  # noqa: BLE001 - reported by the runner and the report
        error = f"reference set {reference_set}: {type(exc).__name__}: {exc}"
        write_part(store, sweep, part, [{**_reference_row(part, None, backbone, **common), "error": error}],
                   table="references")
        return error
    rows = [_reference_row(f"{part}/{vid}", feats, backbone, video=vid, content_hash=digest, **common)
            for vid, (feats, digest) in per_video.items()]
    write_part(store, sweep, part, rows, table="references")
    return None


def run_trial(trial: Trial, ddim: DDIMInversion, storage: str, sweep: dict, report: Report | None = None, *,
              resume: dict | None = None, checkpoint_every: int | None = None) -> dict:
    """Run (or resume) one trial and write its rows; returns the summary metrics reported last.

    `sweep` carries what the plan does not: name, preset, model, metrics config, fps. `resume` is what
    `load_resume` read from a checkpoint folder; `checkpoint_every` steps a checkpoint is handed to `report`.
    """
    return run_trials([trial], {ddim.ddim_key: ddim}, storage, sweep, report, resume=resume,
                      checkpoint_every=checkpoint_every)


class _Inversion:
    """One trial's embeddings: loaded from the store, or optimised step by step (paused at checkpoints)."""

    def __init__(self, trial: Trial, reference, store: Store, pipe, sweep: dict, resume: dict):
        from model import InversionConfig

        self.trial, self.reference, self.store, self.pipe, self.sweep = trial, reference, store, pipe, sweep
        self.latent_size = tuple(reference.inverted_noise.shape[-2:])
        self.needed = [0] if trial.base else sorted(set(trial.checkpoints))
        self.embeddings_at: dict[int, Any] = {}
        self.losses: list[float] = []
        self.seconds = 0.0
        self.state = None
        self.steps = 0 if trial.base else int(trial.inversion["steps"])
        self.cached = trial.base or inversion_done(store, trial)
        self.lease = None  # held while this process computes the embeddings (other sweeps wait for them)
        if trial.base:
            self.embeddings_at[0] = None
        elif self.cached:
            meta = store.read_json(store.inversion_meta_path(trial.inversion_key))
            self.losses, self.seconds = meta.get("losses", []), meta.get("seconds", 0.0)
        else:
            inv = trial.inversion
            self.config = InversionConfig(
                qk=trial.qk, v=trial.v, placement=tuple(inv["placement"]), slots=inv["slots"], steps=self.steps,
                lr=inv["lr"], weight_decay=inv["weight_decay"], loss=inv["loss"], checkpoints=tuple(self.needed),
                seed=trial.seed or 0)
            self.state = resume.get(trial.inversion_key)
            if self.state is not None:
                self.losses, self.seconds = list(self.state.losses), self.state.seconds

    @property
    def step(self) -> int:
        return self.steps if self.cached else (self.state.step if self.state is not None else 0)

    def advance(self, to: int, on_step: Optional[Callable[[int, float], None]]) -> None:
        """Optimise up to step `to` (at most the run's length); store the embeddings of saved steps reached."""
        from model import train_embeddings

        if self.cached or to <= self.step:
            return
        result = train_embeddings(self.pipe, self.reference.latents, self.trial.source_prompt, self.config, on_step,
                                  base_model=self.sweep.get("base_model", ""), resume=self.state, stop_at=to)
        self.state, self.losses, self.seconds = result.state, result.losses, result.seconds
        with tempfile.TemporaryDirectory() as tmp:
            for step in sorted(result.checkpoints):
                emb = result.at(step)
                local = emb.save(Path(tmp) / f"step-{step}.safetensors", {"step": step})
                self.store.upload(local, self.store.inversion_step_path(self.trial.inversion_key, step))
                self.embeddings_at[step] = emb.to(self.pipe.unet.device)
        if self.step == self.steps:  # meta.json last: its presence says every step file is complete
            self.store.write_json(self.store.inversion_meta_path(self.trial.inversion_key),
                                  {"steps": list(self.config.saved_steps), "losses": self.losses,
                                   "seconds": self.seconds, "device": device_name(), "qk": self.trial.qk,
                                   "v": self.trial.v})
            if self.lease is not None:
                self.lease.release()
                self.lease = None

    def embeddings(self, step: int):
        """The embeddings at a checkpoint step (None for the base model); from the store if not in memory."""
        from model import MotionEmbeddings

        if step not in self.embeddings_at:
            rel = self.store.inversion_step_path(self.trial.inversion_key, step)
            with tempfile.TemporaryDirectory() as tmp:
                local = self.store.download(rel, Path(tmp) / f"step-{step}.safetensors")
                self.embeddings_at[step], _ = MotionEmbeddings.load(local, self.pipe.unet,
                                                                    latent_size=self.latent_size)
        return self.embeddings_at[step]

    def inversions_row(self, **extra) -> dict:
        return {**self.trial.columns, "loss_curve": self.losses, "steps": len(self.losses), "seconds": self.seconds,
                "device": device_name(), "checkpoints": [k for k in self.needed if k and k <= self.step],
                "cached": self.cached and not self.trial.base, "code_version": code_version(), "status": "ok",
                **extra}


def run_trials(trials: list[Trial], ddims: dict[str, DDIMInversion], storage: str, sweep: dict,
               report: Report | None = None, *, resume: dict | None = None, checkpoint_every: int | None = None,
               search: dict | None = None) -> dict:
    """Run trials that advance together (one for a grid point; one per video for a search sample).

    The optimisations run in segments that end at checkpoint steps (where that step's generations are
    generated, scored and reported, and the optimisation goes on) and at multiples of `checkpoint_every`
    (where a resume point is reported). `search` (id, objective, time_attr, times) makes a search trial: each
    checkpoint writes its rows at once as their own part, tagged with the search id, and reports the objective.
    """
    report = report or (lambda metrics, checkpoint=None: None)
    resume = resume or {}
    store = Store(storage)
    started = time.perf_counter()
    pipe = get_pipeline(sweep["preset"], sweep.get("model"))
    scorer = get_scorer(sweep["metrics"])
    runs: list[_Inversion] = []
    try:
        return _run_trials(trials, ddims, store, sweep, report, resume, checkpoint_every, search, pipe, scorer,
                           runs, started)
    finally:  # a failed trial lets go of its keys at once (the lease would expire anyway)
        for run in runs:
            if run.lease is not None:
                run.lease.release()


def _run_trials(trials, ddims, store: Store, sweep: dict, report: Report, resume: dict, checkpoint_every, search,
                pipe, scorer, runs: list, started: float) -> dict:
    import torch

    name = sweep["name"]
    backbones, device = scorer.describe(), device_name()
    for trial in trials:
        ddim = ddims[trial.ddim_key]
        reference = ensure_reference(store, ddim, sweep["preset"], sweep.get("model"))
        ensure_reference_features(store, name, ddim, reference.frames, scorer)
        # another sweep on this storage may be computing the same embeddings: wait for them, or take them on
        lease = None if trial.base else wait_or_lease(store, trial.inversion_key, lambda t=trial: inversion_done(store, t))
        run = _Inversion(trial, reference, store, pipe, sweep, resume)
        run.lease = lease if not run.cached else None
        if lease is not None and run.cached:
            lease.release()
        runs.append(run)

    eval_steps = sorted({k for run in runs for k in run.needed})
    final = max([run.steps for run in runs] + [0])
    every = checkpoint_every or 0
    boundaries = sorted(set(eval_steps) | ({*range(every, final, every)} if every else set()) | {final})
    resumed = int(resume.get("step", 0))
    live = len(runs) == 1  # one optimisation: its loss goes to Tune as each step ends
    rows: list[dict] = []
    last_metrics: dict = {}
    prev = 0
    for b in boundaries:
        trained = [run for run in runs if not run.cached and run.step < min(b, run.steps)]

        def on_step(step: int, loss: float, _b: int = b) -> None:
            if live and step != _b:  # step b's loss goes with b's report
                report({"inversion_step": step, "loss": loss})
        for run in trained:
            run.advance(b, on_step)
        if 0 < b <= resumed:  # done before the trial was interrupted; only a grid needs its rows again
            if b in eval_steps and search is None:
                rows += _rows_at(b, runs, store, pipe, scorer, backbones, device, sweep)
            prev = b
            continue
        if not live and trained:  # several optimisations advanced one after the other: their mean loss per step
            for step in range(max(prev, resumed) + 1, b):
                report({"inversion_step": step, "loss": _mean_loss(trained, step)})
        metrics: dict = {"inversion_step": b}
        if trained:
            metrics["loss"] = _mean_loss(trained, b)
        if b in eval_steps:
            at_b = _rows_at(b, runs, store, pipe, scorer, backbones, device, sweep)
            if search is not None:
                at_b = [{**r, "search": search["id"]} for r in at_b]
                for run in runs:  # the loss curve so far, replaced at each checkpoint
                    if not run.trial.base:
                        write_part(store, name, f"search-{search['id']}-{run.trial.inversion_key}",
                                   [run.inversions_row(search=search["id"])], table="inversions")
                write_part(store, name, f"search-{search['id']}-step{b}", at_b)  # whole, before it is reported
            rows += at_b
            metrics.update({"checkpoint_step": b, **_summary(at_b)})
            if search is not None:
                metrics["objective"] = objective_of(metrics, search["objective"])
                if search.get("time_attr") == "asha_time" and b in search.get("times", {}):
                    metrics["asha_time"] = search["times"][b]
            last_metrics = {k: v for k, v in metrics.items() if k not in ("samples", "errors", "loss", "asha_time")}
        if every and trained and b % every == 0 and b < final:
            with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # Tune may move the folder
                save_resume(tmp, b, runs)
                report(metrics, checkpoint=tmp)
        else:
            report(metrics)
        prev = b

    if search is None:
        for run in runs:
            write_part(store, name, run.trial.trial_id, [run.inversions_row()], table="inversions")
        write_part(store, name, trials[0].trial_id, rows)  # last: the samples part marks the trial complete
    # the last checkpoint's metrics (what Tune ranks by, scope "last"), the counts over every checkpoint
    counts = _summary(rows)
    summary = {**last_metrics, "samples": counts["samples"], "errors": counts["errors"], "inversion_step": final,
               "trial_seconds": time.perf_counter() - started}
    report(summary)
    if _cuda():
        torch.cuda.empty_cache()  # the next trial on this worker may be another video size
    return summary


def _mean_loss(runs: list[_Inversion], step: int) -> float:
    values = [run.losses[step - 1] for run in runs if len(run.losses) >= step]
    return float(np.mean(values)) if values else float("nan")


def _rows_at(step: int, runs: list[_Inversion], store: Store, pipe, scorer, backbones: dict, device: str,
             sweep: dict) -> list[dict]:
    """The rows of every generation at checkpoint `step`: cached ones reused, the rest generated in batches."""
    from model import GenerationConfig

    rows: list[dict] = []
    for run in runs:
        if step not in run.needed:
            continue
        todo: list[Generation] = []
        for g in run.trial.generations:
            if g.checkpoint != step:
                continue
            cached = cached_sample_row(store, g.sample_key, g.columns)
            if cached is not None:
                rows.append(cached)
            else:
                todo.append(g)
        groups: dict[tuple, list[Generation]] = {}
        for g in todo:  # one pipeline call per (debias, generation settings)
            groups.setdefault((g.debias, tuple(sorted(g.params.items()))), []).append(g)
        for (debias, params), gens in groups.items():
            p = dict(params)
            gen_config = GenerationConfig(steps=p["steps"], guidance=p["guidance"], noise_init=p["noise_init"],
                                          noise_prior=p["noise_prior"] if p.get("noise_prior") is not None else 0.5,
                                          negative_prompt=p.get("negative_prompt", ""))
            embeddings = run.embeddings(step)
            mode = "none" if debias == OFF else debias  # without MV there is nothing to debias
            for batch in _batched(gens, gen_config.batch_size):
                rows += _generate_and_score(pipe, scorer, store, run.reference, embeddings, mode, gen_config, batch,
                                            sweep, backbones, device, run.seconds)
    return rows


def objective_of(metrics: dict, objective: dict) -> float:
    """metric ± Σ penalty·other, each penalty counted in its metric's bad direction; the worst value when a
    metric is missing (every generation failed), so the scheduler stops the sample rather than keep it."""
    from vocabulary import METRICS

    sign = 1.0 if objective["mode"] == "max" else -1.0
    value = metrics.get(objective["metric"])
    if value is None or not np.isfinite(value):
        return -sign * float("inf")
    for name, weight in objective.get("penalty", {}).items():
        other = metrics.get(name)
        if other is None or not np.isfinite(other):
            return -sign * float("inf")
        goodness = other if METRICS[name].higher_is_better else -other
        value += sign * weight * goodness
    return float(value)


# --------------------------------------------------------------------------------------------------
# Resume points: one folder, a TrainState per inversion key and the step they reached.

def save_resume(folder: str | Path, step: int, runs: list[_Inversion]) -> None:
    import json

    folder = Path(folder)
    for run in runs:
        if run.state is not None:
            run.state.save(folder / run.trial.inversion_key)
    (folder / "resume.json").write_text(json.dumps({"step": step}))


def load_resume(folder: str | Path | None) -> dict:
    """{"step": k, <inversion_key>: TrainState, ...} from a folder `save_resume` wrote ({} for None)."""
    import json

    from model.inversion import TrainState

    if folder is None or not (Path(folder) / "resume.json").exists():
        return {}
    folder = Path(folder)
    out: dict = {"step": json.loads((folder / "resume.json").read_text())["step"]}
    for sub in folder.iterdir():
        if sub.is_dir() and (sub / "state.json").exists():
            out[sub.name] = TrainState.load(sub)
    return out


def _batched(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _generate_and_score(pipe, scorer, store: Store, reference, embeddings, debias: str, config, gens: list[Generation],
                        sweep: dict, backbones: dict, device: str, invert_seconds: float) -> list[dict]:
    """Generate a batch; if the batch fails, retry one by one so a bad generation costs only its own row."""
    from model import generate

    try:
        t0 = time.perf_counter()
        videos = generate(pipe, reference.inverted_noise, [g.prompt for g in gens], [g.seed for g in gens],
                          embeddings, debias, config)
        per_video = (time.perf_counter() - t0) / len(gens)
    except Exception:  # noqa: BLE001 - isolate the failing item below
        if len(gens) > 1:
            return [row for g in gens for row in _generate_and_score(
                pipe, scorer, store, reference, embeddings, debias, config, [g], sweep, backbones, device,
                invert_seconds)]
        g = gens[0]
        return [sample_row(g.columns, backbones, error=_error_text("generate"), device=device,
                           invert_seconds=invert_seconds)]
    rows = []
    for g, video in zip(gens, videos):
        try:
            t0 = time.perf_counter()
            metrics = scorer.score(video, g.prompt, reference=reference.frames)
            score_seconds = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                local = videoio.write_video(Path(tmp) / "video.mp4", video, fps=sweep["fps"])
                rel = store.video_path(g.generation_key)
                store.upload(local, rel)
            row = sample_row(g.columns, {**metrics, **backbones}, video_path=store.uri_of(rel), device=device,
                             invert_seconds=invert_seconds, generate_seconds=per_video, score_seconds=score_seconds)
            store.put_sample(g.sample_key, row)
        except Exception:  # noqa: BLE001 - a scoring failure is this row's error, not the trial's
            row = sample_row(g.columns, backbones, error=_error_text("score"), device=device,
                             invert_seconds=invert_seconds, generate_seconds=per_video)
        rows.append(row)
    return rows


def _error_text(stage: str) -> str:
    lines = traceback.format_exc().strip().splitlines()
    return f"{stage}: {lines[-1]}"


def _summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if r.get("status") == "ok"]
    out: dict = {"samples": len(rows), "errors": len(rows) - len(ok)}
    for m in SAMPLE_METRICS:
        values = [r[m] for r in ok if r.get(m) is not None]
        if values:
            out[m] = float(np.mean(values))
    return out


def _tune_report(metrics: dict, checkpoint: str | None = None) -> None:
    from ray import tune

    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint) if checkpoint else None)


def _tune_resume() -> dict:
    """The resume point of a retried (or restored) trial: Tune's last checkpoint, read into memory."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return {}
    with checkpoint.as_directory() as folder:
        return load_resume(folder)


def trainable(config: dict, trials: dict, ddims: dict, storage: str, sweep: dict,
              checkpoint_every: int | None = None, redo: frozenset = frozenset()) -> None:
    """Ray Tune function trainable: `config["trial_id"]` picks the trial; the plan comes via with_parameters
    (the rest of the config is the trial's hyperparameters, there for Tune's table, TensorBoard and ResultGrid).
    `redo`: trials to run again although their rows are written (--retry-errors)."""
    trial = trials[config["trial_id"]]
    store = Store(storage)
    if trial.trial_id not in redo and trial.trial_id in finished_parts(store, sweep["name"]):
        # finished after Tune last saved its state (a restored experiment hands it back)
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from .tables import load

        part = store.part_path(sweep["name"], "samples", trial.trial_id)
        if store.exists(part):  # its own file: read just that, not the whole table
            done = pq.read_table(store.abspath(part), filesystem=store.fs).to_pylist()
        else:  # inside a compacted file
            rows = load(store.uri_of(sweep["name"]))
            done = rows.filter(pc.equal(rows["trial_id"], trial.trial_id)).to_pylist()
        _tune_report({**_summary(done), "inversion_step": trial.inversion["steps"], "trial_seconds": 0.0})
        return
    run_trial(trial, ddims[trial.ddim_key], storage, sweep, report=_tune_report, resume=_tune_resume(),
              checkpoint_every=checkpoint_every)


def search_trainable(config: dict, spec, fingerprints: dict, storage: str, sweep: dict, search: dict,
                     checkpoint_every: int | None = None) -> None:
    """Ray Tune function trainable of a search sample: the config's values (drawn by the searcher) are planned
    like a grid point (same content keys) over the eval set, one inversion per video, advancing together."""
    from ray import tune

    from .search import sample_trials

    trials, ddims = sample_trials(spec, config, fingerprints)
    run_trials(trials, ddims, storage, sweep, report=_tune_report, resume=_tune_resume(),
               checkpoint_every=checkpoint_every, search={**search, "id": tune.get_context().get_trial_id()})
