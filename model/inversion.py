"""Motion inversion: learn motion embeddings from one reference video (docs/method.md §2).

1. read N frames, resize/crop to the model size, VAE-encode once;
2. DDIM-invert that latent with the frozen base model (empty prompt, no CFG) — kept for BlendInit noise and
   shared by every variant of the video;
3. optimise only the embeddings with the ε-prediction MSE ("base") or MotionDirector's debiased temporal loss.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

import videoio
from vocabulary import LOSSES, check_choice

from .config import PRECISIONS, InversionConfig, ReferenceConfig
from .embeddings import EmbeddingSpec, MotionEmbeddings


@dataclass
class Reference:
    """A reference video prepared for one model: frames, cached VAE latent and its DDIM inversion."""

    frames: np.ndarray  # uint8 [F, H, W, 3] at the model size
    latents: torch.Tensor  # [1, 4, F, h, w], already × VAE scaling factor
    inverted_noise: torch.Tensor  # [1, 4, F, h, w], the DDIM inversion's last latent (t≈981)
    metadata: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        import json

        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        save_file({"frames": torch.from_numpy(np.ascontiguousarray(self.frames)),
                   "latents": self.latents.float().cpu().contiguous(),
                   "inverted_noise": self.inverted_noise.float().cpu().contiguous()},
                  str(tmp), metadata={"metadata": json.dumps(self.metadata)})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Reference":
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("metadata", "{}"))
            return cls(f.get_tensor("frames").numpy(), f.get_tensor("latents"), f.get_tensor("inverted_noise"), meta)


TrainCallback = Callable[[int, float], None]


def load_video_frames(path: str | Path, num_frames: int, height: int, width: int,
                      start: int = ReferenceConfig.start, stride: int = ReferenceConfig.stride) -> np.ndarray:
    """Read a video, take `num_frames` (from `start`, every `stride`), resize and centre-crop to height×width."""
    return take_frames(videoio.read_video(path), num_frames, height, width, start, stride)


def take_frames(frames: np.ndarray, num_frames: int, height: int, width: int, start: int = ReferenceConfig.start,
                stride: int = ReferenceConfig.stride) -> np.ndarray:
    """Of a video's frames, the `num_frames` from `start` every `stride`, resized to cover height×width and
    centre-cropped: the reference as the model takes it."""
    return videoio.resize_center_crop(videoio.sample_frames(frames, num_frames, start, stride), height, width)


@torch.no_grad()
def encode_frames(pipe, frames: np.ndarray) -> torch.Tensor:
    """VAE-encode uint8 frames [F,H,W,3] → latent [1, 4, F, h, w] (posterior mean × scaling factor)."""
    vae = pipe.vae
    x = torch.from_numpy(frames).to(vae.device).permute(0, 3, 1, 2).to(vae.dtype) / 127.5 - 1.0
    latents = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in x.split(8)])
    latents = latents * vae.config.scaling_factor
    return latents.permute(1, 0, 2, 3).unsqueeze(0)  # [F,4,h,w] -> [1,4,F,h,w]


def encode_prompt(pipe, prompt: str | list[str]) -> torch.Tensor:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    tokens = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    with torch.no_grad():
        return pipe.text_encoder(tokens.input_ids.to(pipe.text_encoder.device))[0]


@torch.no_grad()
def ddim_invert(pipe, latents: torch.Tensor, steps: int = ReferenceConfig.ddim_steps, progress: Callable[[int], None] | None = None
                ) -> torch.Tensor:
    """Run DDIM backwards (clean latent → noise) with the frozen model, empty prompt, no guidance.

    diffusers' `DDIMInverseScheduler` built from the pipeline's scheduler config: its timesteps are the
    generation scheduler's for the same `steps`, in reverse (t = 1, 21, ..., 981 for 50 steps), so denoising
    the result with the pipeline (DDIM, same steps, guidance 1) comes back to `latents` up to the
    approximation ε(x_t) ≈ ε(x_{t-1}) that DDIM inversion makes. The recurrence runs in fp32 (fp64 if
    `latents` is fp64) even when the UNet is fp16/bf16.
    """
    from diffusers import DDIMInverseScheduler

    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse.set_timesteps(steps, device=latents.device)
    context = encode_prompt(pipe, "")
    x = latents.double() if latents.dtype == torch.float64 else latents.float()
    for i, t in enumerate(inverse.timesteps):
        eps = pipe.unet(x.to(pipe.unet.dtype), t, encoder_hidden_states=context.to(pipe.unet.dtype)).sample
        x = inverse.step(eps.to(x.dtype), t, x).prev_sample
        if progress:
            progress(i + 1)
    return x


def prepare_reference(pipe, video: str | Path | np.ndarray, num_frames: int, height: int, width: int,
                      start: int = ReferenceConfig.start, stride: int = ReferenceConfig.stride,
                      ddim_steps: int = ReferenceConfig.ddim_steps) -> Reference:
    """Frames → latent → DDIM inversion, the per-video work every variant shares.

    `video` is a path, or frames already read with `load_video_frames` (to fail on bad input before loading
    a model).
    """
    if isinstance(video, np.ndarray):
        frames = video
        if frames.shape[1:] != (height, width, 3) or len(frames) != num_frames:
            raise ValueError(f"frames are {frames.shape}, expected ({num_frames}, {height}, {width}, 3)")
        video = "<frames>"
    else:
        frames = load_video_frames(video, num_frames, height, width, start, stride)
    latents = encode_frames(pipe, frames)
    noise = ddim_invert(pipe, latents, ddim_steps)
    meta = {"video": str(video), "num_frames": num_frames, "height": height, "width": width,
            "start": start, "stride": stride, "ddim_steps": ddim_steps}
    return Reference(frames, latents.float().cpu(), noise.float().cpu(), meta)


@dataclass
class TrainState:
    """Everything an optimisation needs to continue exactly where it stopped (CPU tensors).

    `train_embeddings(..., resume=state)` from a state saved at step k runs steps k+1.. with the same
    embeddings, AdamW moments, loss scale and generator draws as the uninterrupted run: on CPU in fp32 the
    result is bit-identical.
    """

    step: int  # steps done
    embeddings: dict[str, torch.Tensor]  # MotionEmbeddings.state_dict()
    optimizer: dict  # AdamW state_dict (moments, step counts, param groups)
    generator: torch.Tensor  # torch.Generator("cpu").get_state(): the t / ε / frame draws to come
    losses: list[float]  # every step's loss so far
    seconds: float = 0.0  # optimisation wall time so far
    scaler: dict | None = None  # accelerate's GradScaler state (fp16 loss scaling), if any

    def save(self, folder: str | Path) -> Path:
        """Write to `folder` (created): embeddings.safetensors, optimizer.pt, state.json."""
        import json

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.embeddings.items()}, str(folder / "embeddings.safetensors"))
        torch.save({"optimizer": self.optimizer, "generator": self.generator, "scaler": self.scaler},
                   folder / "optimizer.pt")
        (folder / "state.json").write_text(json.dumps({"step": self.step, "losses": self.losses,
                                                       "seconds": self.seconds}))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "TrainState":
        import json

        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / "state.json").read_text())
        rest = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        return cls(step=int(meta["step"]), embeddings=load_file(str(folder / "embeddings.safetensors")),
                   optimizer=rest["optimizer"], generator=rest["generator"], losses=list(meta["losses"]),
                   seconds=float(meta.get("seconds", 0.0)), scaler=rest.get("scaler"))


@dataclass
class TrainResult:
    embeddings: MotionEmbeddings  # at the last step run
    checkpoints: dict[int, dict[str, torch.Tensor]]  # step → state_dict copy (CPU), for saved steps run now
    losses: list[float]  # every step's loss, from step 1 (a resumed run includes the earlier ones)
    seconds: float
    state: TrainState | None = None  # to continue from (None when nothing is optimised)

    @property
    def step(self) -> int:
        """The last step done."""
        return self.state.step if self.state is not None else len(self.losses)

    def at(self, step: int) -> MotionEmbeddings:
        """The embeddings as they were at a saved step (a new module; `embeddings` stays at the last step)."""
        emb = MotionEmbeddings(self.embeddings.spec, self.embeddings.blocks)
        emb.load_state_dict(self.checkpoints[step])
        return emb


def inversion_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "base", frame: int = 0) -> torch.Tensor:
    """The training loss for one draw; `pred`/`target` are [B, C, F, h, w] (frames on dim 2), in fp32.

    "base": MSE(ε̂, ε). "debiased_temporal" adds MotionDirector's appearance-debiased temporal term with
    β = 1, α = √(1+β²) = √2 for the anchor frame `frame`: MSE(√2·ε̂ − ε̂[frame], √2·ε − ε[frame]).
    """
    check_choice("loss", kind, LOSSES)
    loss = F.mse_loss(pred, target)
    if kind == "debiased_temporal":
        if not 0 <= frame < pred.shape[2]:
            raise ValueError(f"frame {frame} is outside the {pred.shape[2]} frames")
        a = 2 ** 0.5
        anchor = slice(frame, frame + 1)
        loss = loss + F.mse_loss(a * pred - pred[:, :, anchor], a * target - target[:, :, anchor])
    return loss


def resolve_precision(precision: str, unet_dtype: torch.dtype, device: torch.device | str) -> str:
    """accelerate's mixed_precision ("no" | "fp16" | "bf16") for a config's `precision` and the UNet.

    "auto": a half UNet runs under autocast in its own dtype; an fp32 UNet gets fp16 autocast (with loss
    scaling) on CUDA and plain fp32 on CPU. "no" needs an fp32 UNet (the fp32 embeddings meet its weights).
    """
    check_choice("precision", precision, PRECISIONS)
    device = torch.device(device)
    half = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(unet_dtype)
    if precision == "auto":
        return half or ("fp16" if device.type == "cuda" else "no")
    if precision == "no" and half:
        raise ValueError(f"precision 'no' needs an fp32 UNet, this one is {unet_dtype}; use 'auto' or {half!r}")
    return precision


def make_accelerator(mixed_precision: str, device: torch.device | str):
    """A fresh `accelerate.Accelerator` for one optimisation on `device` (the frozen UNet's).

    Accelerate keeps its settings in process-wide state that refuses a second Accelerator with other
    settings (another precision, or cpu=True after CUDA); each inversion owns the loop, so it resets that
    state first. On CUDA the accelerator's device is the current one: call it inside `torch.cuda.device`.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(mixed_precision=mixed_precision, cpu=torch.device(device).type == "cpu")


def train_embeddings(pipe, latents: torch.Tensor, source_prompt: str, config: InversionConfig,
                     callback: TrainCallback | None = None, base_model: str = "", *,
                     resume: TrainState | None = None, stop_at: int | None = None) -> TrainResult:
    """Optimise only the motion embeddings on one video latent (AdamW, constant lr, t ~ U{0..T-1}).

    `accelerate` owns autocast, loss scaling and device placement (`config.precision`); only the embeddings'
    optimizer is prepared, the UNet stays frozen where the pipeline put it. Activation checkpointing of the
    3D blocks follows `config.checkpointing` (default: on for CUDA). Draws (t, ε, the debiased loss's frame) come
    from a CPU generator seeded with `config.seed`: the same on any device, and the CPU run is deterministic.

    `resume` continues a run from its `TrainState` (embeddings, AdamW state, generator state, step, losses);
    `stop_at` ends this call after that step (≤ config.steps) so a caller can evaluate, checkpoint or pause in
    between: `result.state` resumes it. Split or not, the steps are the same.
    """
    import time

    unet, scheduler = pipe.unet, pipe.scheduler
    device = unet.device
    spec = EmbeddingSpec(config.qk, config.v, config.placement, config.slots,
                         latents.shape[-2], latents.shape[-1], base_model)
    if latents.shape[2] > config.slots:
        raise ValueError(f"the video has {latents.shape[2]} frames but only {config.slots} slots; raise slots")
    embeddings = MotionEmbeddings.create(unet, spec)
    checkpoints: dict[int, dict[str, torch.Tensor]] = {}
    losses: list[float] = list(resume.losses) if resume else []
    started = time.perf_counter()
    params = list(embeddings.parameters())
    if not params or config.steps == 0:  # both designs off: the plain base model, nothing to learn
        return TrainResult(embeddings, {config.steps: embeddings.state_dict()}, losses, 0.0)
    first = resume.step + 1 if resume else 1
    last = config.steps if stop_at is None else min(int(stop_at), config.steps)
    if resume is not None:
        if not 0 <= resume.step <= config.steps or len(resume.losses) != resume.step:
            raise ValueError(f"cannot resume at step {resume.step} ({len(resume.losses)} losses) a run of "
                             f"{config.steps} steps")
        embeddings.load_state_dict(resume.embeddings)

    mixed_precision = resolve_precision(config.precision, unet.dtype, device)
    cuda = device.type == "cuda"
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        accelerator = make_accelerator(mixed_precision, device)
        if accelerator.device.type != device.type:
            raise RuntimeError(f"accelerate chose {accelerator.device} but the pipeline is on {device}")
        generator = torch.Generator("cpu").manual_seed(config.seed)  # CPU generator: same draws on any device
        latents = latents.to(accelerator.device, torch.float32)
        context = encode_prompt(pipe, source_prompt).to(unet.dtype)
        adamw = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        if resume is not None:
            generator.set_state(resume.generator)
            adamw.load_state_dict(resume.optimizer)  # before prepare: accelerate wraps this very optimizer
        optimizer = accelerator.prepare(adamw)
        if resume is not None and resume.scaler and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(resume.scaler)
        checkpointing = cuda if config.checkpointing is None else bool(config.checkpointing)
        restore = _checkpoint_blocks(unet) if checkpointing else (lambda: None)
        embeddings.attach(unet)
        saved = set(config.saved_steps)
        try:
            for step in range(first, last + 1):
                t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=generator)
                noise = torch.randn(latents.shape, generator=generator)
                t, noise = t.to(accelerator.device), noise.to(accelerator.device)
                noisy = scheduler.add_noise(latents, noise, t)
                target = noise if scheduler.config.prediction_type == "epsilon" \
                    else scheduler.get_velocity(latents, noise, t)
                r = int(torch.randint(0, latents.shape[2], (1,), generator=generator))
                with accelerator.autocast():
                    pred = unet(noisy.to(unet.dtype), t, encoder_hidden_states=context).sample
                loss = inversion_loss(pred.float(), target, config.loss, r)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                optimizer.step()
                value = float(loss.detach())
                losses.append(value)
                if callback:
                    callback(step, value)
                if step in saved:
                    checkpoints[step] = {k: v.detach().cpu().clone() for k, v in embeddings.state_dict().items()}
            seconds = (resume.seconds if resume else 0.0) + time.perf_counter() - started
            state = TrainState(step=max(last, first - 1), embeddings=_cpu_copy(embeddings.state_dict()),
                               optimizer=_cpu_copy(adamw.state_dict()), generator=generator.get_state(),
                               losses=list(losses), seconds=seconds,
                               scaler=_cpu_copy(accelerator.scaler.state_dict()) if accelerator.scaler else None)
        finally:
            embeddings.detach(unet)
            restore()
            if accelerator.device.type == "cuda":  # (on the CPU its gc.collect costs ~0.3 s a call and frees nothing)
                accelerator.free_memory()
    return TrainResult(embeddings, checkpoints, losses, seconds, state)


def _cpu_copy(obj):
    """A deep copy with every tensor detached on the CPU (a state that later steps cannot change)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


def _checkpoint_blocks(unet) -> Callable[[], None]:
    """Activation checkpointing for UNet3D, whose 3D blocks ignore diffusers' gradient_checkpointing flag.

    Wraps the forward of each resnet, temporal conv and (spatial/temporal) transformer in
    torch.utils.checkpoint; returns a function that undoes it.
    """
    from torch.utils.checkpoint import checkpoint

    wrapped: list = []
    for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        for group in ("resnets", "temp_convs", "attentions", "temp_attentions"):
            for module in getattr(block, group, []) or []:
                module.forward = functools.partial(_checkpointed, checkpoint, module.forward)
                wrapped.append(module)

    def restore():
        for module in wrapped:
            module.__dict__.pop("forward", None)
    return restore


def _checkpointed(checkpoint, forward, *args, **kwargs):
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)
