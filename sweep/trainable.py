"""One trial: one inversion (or the plain base model) and every generation that hangs off it.

`run_trial` is a plain function (used directly in tests and notebooks); `trainable` is the Ray Tune wrapper
that forwards the inversion loss and the final metrics to Tune. Pipelines and scorers are cached per worker
process, so a worker that runs several trials loads each model once.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np

import videoio

from .plan import DDIMInversion, Generation, Trial
from .results import cached_sample_row, code_version, sample_row, write_part
from .store import Store

Report = Callable[[dict], None]
METRIC_NAMES = ("text_similarity", "temporal_consistency", "motion_fidelity", "motion_fidelity_two_way",
                "appearance_leakage")
# Test hook for fault-tolerance tests: comma-separated "<stage>:<substring>[:once]" with stage invert|generate;
# ":once" fails only the first time (marker files in $MOTION_SWEEP_FAULT_DIR), like a transient crash.
FAULT_ENV = "MOTION_SWEEP_INJECT_FAULT"
FAULT_DIR_ENV = "MOTION_SWEEP_FAULT_DIR"

_PIPELINES: dict = {}
_SCORERS: dict = {}


def get_pipeline(preset: str, model: str | None):
    """The preset's pipeline, loaded once per worker process."""
    from model import get_preset, load_pipeline

    key = (preset, model)
    if key not in _PIPELINES:
        _PIPELINES[key] = load_pipeline(get_preset(preset, model))
    return _PIPELINES[key]


def get_scorer(metrics: dict):
    from evaluation import ScorerConfig, get_scorer as cached_scorer

    m = dict(metrics)
    kwargs = {k: m[k] for k in ("grid_size", "min_motion") if m.get(k) is not None}
    device = "cuda" if _cuda() else "cpu"
    config = ScorerConfig.from_names(clip=m.get("clip"), tracker=m.get("tracker"), fid=m.get("fid"),
                                     device=device, **kwargs)
    return cached_scorer(config)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def device_name() -> str:
    import torch

    return f"cuda:{torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cpu"


def _maybe_fail(stage: str, value: str) -> None:
    import hashlib

    for fault in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        kind, match, *once = fault.split(":")
        if kind != stage or match not in value:
            continue
        if once == ["once"]:
            folder = Path(os.environ.get(FAULT_DIR_ENV, tempfile.gettempdir()))
            marker = folder / f"fault-{stage}-{hashlib.sha256(value.encode()).hexdigest()[:16]}"
            try:
                marker.touch(exist_ok=False)
            except FileExistsError:
                continue
        raise RuntimeError(f"injected fault ({FAULT_ENV}={fault}) at {stage} of {value}")


def ensure_reference(store: Store, ddim: DDIMInversion, preset: str, model: str | None):
    """The video's cached latent + DDIM inversion from the store, computed and stored on a miss."""
    from model import Reference, prepare_reference

    rel = store.ddim_path(ddim.ddim_key)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "reference.safetensors"
        if store.exists(rel):
            return Reference.load(store.download(rel, local))
        pipe = get_pipeline(preset, model)
        c = ddim.config
        ref = prepare_reference(pipe, ddim.video_path, c["frames"], c["height"], c["width"], c["start"],
                                c["stride"], c["ddim_steps"])
        ref.metadata.update(video=ddim.video, fingerprint=ddim.fingerprint, base_model=ddim.base_model)
        ref.save(local)
        store.upload(local, rel)
        return ref


def run_trial(trial: Trial, ddim: DDIMInversion, storage: str, sweep: dict, report: Report | None = None) -> dict:
    """Run (or resume) one trial and write its rows; returns the summary metrics reported to Tune.

    `sweep` carries what the plan does not: name, preset, model, metrics config, fps.
    """
    import torch

    from model import GenerationConfig, InversionConfig, MotionEmbeddings, train_embeddings

    report = report or (lambda metrics: None)
    store = Store(storage)
    name = sweep["name"]
    pipe = get_pipeline(sweep["preset"], sweep.get("model"))
    started = time.perf_counter()
    reference = ensure_reference(store, ddim, sweep["preset"], sweep.get("model"))

    # -- the embeddings: from the store, or optimised now (reporting the loss to Tune) --
    inv = trial.inversion
    needed = sorted(set(trial.checkpoints))
    embeddings_at: dict[int, MotionEmbeddings | None] = {}
    losses: list[float] = []
    invert_seconds = 0.0
    latent_size = tuple(reference.inverted_noise.shape[-2:])
    if trial.base:
        embeddings_at = {0: None}
    elif store.has_inversion(trial.inversion_key, needed):
        meta = store.read_json(store.inversion_meta_path(trial.inversion_key))
        losses, invert_seconds = meta.get("losses", []), meta.get("seconds", 0.0)
        with tempfile.TemporaryDirectory() as tmp:
            for step in needed:
                local = store.download(store.inversion_step_path(trial.inversion_key, step), Path(tmp) / f"{step}")
                embeddings_at[step], _ = MotionEmbeddings.load(local, pipe.unet, latent_size=latent_size)
    else:
        config = InversionConfig(qk=trial.qk, v=trial.v, placement=tuple(inv["placement"]), slots=inv["slots"],
                                 steps=inv["steps"], lr=inv["lr"], weight_decay=inv["weight_decay"],
                                 loss=inv["loss"], checkpoints=tuple(needed), seed=trial.seed or 0)
        every = max(1, config.steps // 50)  # ~50 loss points per trial in Tune; the full curve goes to the table

        def on_step(step: int, loss: float) -> None:
            if step == max(1, config.steps // 2):
                _maybe_fail("invert", f"{trial.video}/{trial.trial_id}")  # mid-inversion, for the crash test
            if step % every == 0 or step == config.steps:
                report({"inversion_step": step, "loss": loss})
        result = train_embeddings(pipe, reference.latents, trial.source_prompt, config, on_step,
                                  base_model=sweep.get("base_model", ""))
        losses, invert_seconds = result.losses, result.seconds
        with tempfile.TemporaryDirectory() as tmp:
            for step in sorted(result.checkpoints):
                emb = result.at(step)
                local = emb.save(Path(tmp) / f"step-{step}.safetensors", {"step": step})
                store.upload(local, store.inversion_step_path(trial.inversion_key, step))
                embeddings_at[step] = emb.to(pipe.unet.device)
        # meta.json last: its presence says every step file is complete
        store.write_json(store.inversion_meta_path(trial.inversion_key),
                         {"steps": sorted(result.checkpoints), "losses": losses, "seconds": invert_seconds,
                          "device": device_name(), "qk": trial.qk, "v": trial.v})

    # -- generations: cached rows are reused; the rest are generated in batches and scored --
    scorer = get_scorer(sweep["metrics"])
    backbones = scorer.describe()
    device = device_name()
    rows: list[dict] = []
    todo: list[Generation] = []
    for g in trial.generations:
        cached = cached_sample_row(store, g.sample_key, g.columns)
        if cached is not None:
            rows.append(cached)
        else:
            todo.append(g)
    groups: dict[tuple, list[Generation]] = {}
    for g in todo:  # one pipeline call per (checkpoint, debias, generation settings)
        groups.setdefault((g.checkpoint, g.debias, tuple(sorted(g.params.items()))), []).append(g)
    for (checkpoint, debias, params), gens in groups.items():
        p = dict(params)
        gen_config = GenerationConfig(steps=p["steps"], guidance=p["guidance"], noise_init=p["noise_init"],
                                      noise_prior=p["noise_prior"] if p.get("noise_prior") is not None else 0.5,
                                      negative_prompt=p.get("negative_prompt", ""))
        embeddings = embeddings_at.get(checkpoint if not trial.base else 0)
        mode = "none" if debias == "-" else debias
        for batch in _batched(gens, gen_config.batch_size):
            rows += _generate_and_score(pipe, scorer, store, reference, embeddings, mode, gen_config, batch,
                                        sweep, backbones, device, invert_seconds)
    write_part(store, name, trial.trial_id, [{**trial.columns, "loss_curve": losses, "steps": len(losses),
                                              "seconds": invert_seconds, "device": device,
                                              "checkpoints": sorted(k for k in embeddings_at if k),
                                              "code_version": code_version(), "status": "ok"}],
               table="inversions")
    write_part(store, name, trial.trial_id, rows)  # last: the samples part marks the trial complete
    summary = _summary(rows)
    summary["trial_seconds"] = time.perf_counter() - started
    report(summary)
    if _cuda():
        torch.cuda.empty_cache()  # the next trial on this worker may be another video size
    return summary


def _batched(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _generate_and_score(pipe, scorer, store: Store, reference, embeddings, debias: str, config, gens: list[Generation],
                        sweep: dict, backbones: dict, device: str, invert_seconds: float) -> list[dict]:
    """Generate a batch; if the batch fails, retry one by one so a bad generation costs only its own row."""
    from model import generate

    try:
        for g in gens:
            _maybe_fail("generate", g.prompt)
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
                local = videoio.write_video(Path(tmp) / "video.mp4", video, fps=sweep.get("fps", 8))
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
    for m in METRIC_NAMES:
        values = [r[m] for r in ok if r.get(m) is not None]
        if values:
            out[m] = float(np.mean(values))
    return out


def trainable(config: dict, trials: dict, ddims: dict, storage: str, sweep: dict) -> None:
    """Ray Tune function trainable: `config["trial_id"]` picks the trial; the plan comes via with_parameters."""
    from ray import tune

    trial = trials[config["trial_id"]]
    run_trial(trial, ddims[trial.ddim_key], storage, sweep, report=tune.report)
