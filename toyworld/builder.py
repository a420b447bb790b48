"""A whole build of the toy world: the training phases in order, then the final measurement, written atomically.

`build(cfg)` writes `cfg.out`/{pipeline,clip,build_log.json,build_log.md}. The VAE and toy CLIP phases are cached
beside the output, so a build stopped in the UNet phase resumes after them; `--reuse` keeps those of a built world.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from .architecture import (CLIP_MODEL_CONFIG, TOY_FORMAT, VAE_CONFIG, build_clip, build_vae, jsonable,
                           load_built_vae_clip, save_clip, save_pipeline)
from .buildlog import BuildLog, log_markdown
from .data import held_out_frames
from .judge import ToyJudge, zero_shot
from .measurement import FINAL_SEED_OFFSET, measure, toy_scorer
from .train import BuildConfig, train_clip, train_unet, train_vae


def build(cfg: BuildConfig) -> dict:
    """Train the toy world and write `cfg.out`/{pipeline,clip,build_log.json,build_log.md} (atomically)."""
    import torch

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-build-"))
    log = BuildLog(tmp / "build_log.json")
    log.data["config"] = asdict(cfg)
    log.data["torch_threads"] = torch.get_num_threads()
    work = out.parent / f".{out.name}-work"  # finished phases, so a stopped build resumes where it was
    try:
        if cfg.reuse:
            vae, clip_model = _reused_phases(Path(cfg.reuse), log)
        else:
            vae = _cached_phase(work, "vae", cfg, log, lambda: train_vae(cfg, log))
            clip_model = _cached_phase(work, "clip", cfg, log, lambda: train_clip(cfg, log, vae))
        judge = ToyJudge.from_model(clip_model)
        held = held_out_frames(cfg.seed + 99)
        log.data["phases"]["clip"]["zero_shot"] = zero_shot(judge, *held)
        log.say(f"clip zero-shot on held-out frames: {log.data['phases']['clip']['zero_shot']}")
        log.save()
        save_clip(clip_model, tmp / "clip")  # now: the transfer checks during training score with it
        scorer = toy_scorer(tmp / "clip") if cfg.eval_transfer else None
        t = time.perf_counter()
        unet, text_encoder, tokenizer = train_unet(cfg, log, vae, judge, scorer)
        log.data["phases"]["unet"]["seconds"] = time.perf_counter() - t
        log.data["train_seconds"] = log.elapsed()
        save_pipeline(vae, text_encoder, unet, tokenizer, tmp / "pipeline",
                      {"format": TOY_FORMAT, "seed": cfg.seed, "config": asdict(cfg)})
        log.save()
        # the final measurement goes through the shipped files and the project's own loaders
        log.data["final"] = measure(tmp / "pipeline", tmp / "clip", seed=cfg.seed + FINAL_SEED_OFFSET)
        log.data["total_seconds"] = log.elapsed()
        log.data["bytes"] = {p.relative_to(tmp).as_posix(): p.stat().st_size
                             for p in sorted(tmp.rglob("*")) if p.is_file()}
        log.save()
        (tmp / "build_log.md").write_text(log_markdown(log.data))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        shutil.rmtree(work, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.say(f"wrote {out} ({sum(log.data['bytes'].values()) / 1e6:.1f} MB)")
    return log.data


_PHASE_FIELDS = {"vae": ("seed", "minutes", "vae_share", "vae_steps", "vae_batch", "vae_lr", "vae_kl"),
                 "clip": ("clip_share", "clip_steps", "clip_batch", "clip_lr")}


def _cached_phase(work: Path, phase: str, cfg: BuildConfig, log: BuildLog, train):
    """Run a phase (VAE, CLIP) or load its result from an earlier run of the same build (same settings,
    same architecture): a build stopped in the UNet phase does not redo the first two."""
    from safetensors.torch import load_file, save_file

    fields = _PHASE_FIELDS["vae"] + (_PHASE_FIELDS["clip"] if phase == "clip" else ())
    key = json.dumps({"format": TOY_FORMAT, "phase": phase, "cfg": {k: getattr(cfg, k) for k in fields},
                      "arch": [VAE_CONFIG, CLIP_MODEL_CONFIG if phase == "clip" else None]}, default=str, sort_keys=True)
    meta_path, weights = work / f"{phase}.json", work / f"{phase}.safetensors"
    if meta_path.is_file() and weights.is_file():
        meta = json.loads(meta_path.read_text())
        if meta["key"] == key:
            model = build_vae() if phase == "vae" else build_clip()
            if phase == "vae":
                model.register_to_config(scaling_factor=meta["scaling_factor"])
            model.load_state_dict(load_file(str(weights)))
            log.data["phases"][phase] = meta["log"] | {"resumed": True}
            log.say(f"{phase}: reused the result of an earlier run of this build ({work})")
            return model.eval()
    t = time.perf_counter()
    model = train()
    log.data["phases"][phase]["seconds"] = time.perf_counter() - t
    work.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta = {"key": key, "log": log.data["phases"][phase]}
    if phase == "vae":
        meta["scaling_factor"] = model.config.scaling_factor
    meta_path.write_text(json.dumps(meta, default=jsonable))
    return model


def _reused_phases(world: Path, log: BuildLog):
    """The VAE and toy CLIP of an earlier build (`--reuse`), with that build's logs of them."""
    vae, clip_model = load_built_vae_clip(world)
    earlier = json.loads((world / "build_log.json").read_text())
    for phase in ("vae", "clip"):
        log.data["phases"][phase] = earlier["phases"][phase] | {"reused_from": str(world)}
    log.say(f"vae, clip: reused from {world}")
    return vae, clip_model
