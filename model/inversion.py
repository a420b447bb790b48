"""Motion inversion: learn motion embeddings from one reference video (METHOD.md §2).

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

from .embeddings import DEFAULT_PLACEMENT, DEFAULT_SLOTS, EmbeddingSpec, MotionEmbeddings, check_choice

LOSSES = ("base", "debiased_temporal")


@dataclass(frozen=True)
class InversionConfig:
    """The optimisation's hyperparameters (paper defaults)."""

    qk: str = "1d"
    v: str = "2d"
    placement: tuple[str, ...] = DEFAULT_PLACEMENT
    slots: int = DEFAULT_SLOTS
    steps: int = 400
    lr: float = 0.02
    weight_decay: float = 0.01
    loss: str = "base"
    checkpoints: tuple[int, ...] = ()  # steps at which to keep a copy; the last step is always kept
    seed: int = 0

    def __post_init__(self):
        check_choice("loss", self.loss, LOSSES)
        object.__setattr__(self, "placement", tuple(self.placement))
        object.__setattr__(self, "checkpoints", tuple(sorted(set(int(c) for c in self.checkpoints))))
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        bad = [c for c in self.checkpoints if not 0 < c <= self.steps]
        if bad:
            raise ValueError(f"checkpoints {bad} are outside 1..steps={self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        EmbeddingSpec(self.qk, self.v, self.placement, self.slots)  # validates the designs

    @property
    def saved_steps(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.checkpoints) | {self.steps}))


@dataclass
class Reference:
    """A reference video prepared for one model: frames, cached VAE latent and its DDIM inversion."""

    frames: np.ndarray  # uint8 [F, H, W, 3] at the model size
    latents: torch.Tensor  # [1, 4, F, h, w], already × VAE scaling factor
    inverted_noise: torch.Tensor  # [1, 4, F, h, w], the DDIM inversion's last latent (t≈981)
    metadata: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file
        import json

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
        from safetensors import safe_open
        import json

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("metadata", "{}"))
            return cls(f.get_tensor("frames").numpy(), f.get_tensor("latents"), f.get_tensor("inverted_noise"), meta)


TrainCallback = Callable[[int, float], None]


def load_video_frames(path: str | Path, num_frames: int, height: int, width: int,
                      start: int = 0, stride: int = 1) -> np.ndarray:
    """Read a video, take `num_frames` (from `start`, every `stride`), resize and centre-crop to height×width."""
    frames = videoio.read_video(path)
    frames = videoio.sample_frames(frames, num_frames, start, stride)
    return videoio.resize_center_crop(frames, height, width)


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
def ddim_invert(pipe, latents: torch.Tensor, steps: int = 50, progress: Callable[[int], None] | None = None
                ) -> torch.Tensor:
    """Run DDIM backwards (clean latent → noise) with the frozen model, empty prompt, no guidance."""
    from diffusers import DDIMInverseScheduler

    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse.set_timesteps(steps, device=latents.device)
    context = encode_prompt(pipe, "")
    x = latents.float()  # the 50-step recurrence runs in fp32 even when the UNet is fp16/bf16
    for i, t in enumerate(inverse.timesteps):
        eps = pipe.unet(x.to(pipe.unet.dtype), t, encoder_hidden_states=context).sample
        x = inverse.step(eps.float(), t, x).prev_sample
        if progress:
            progress(i + 1)
    return x


def prepare_reference(pipe, video: str | Path | np.ndarray, num_frames: int, height: int, width: int,
                      start: int = 0, stride: int = 1, ddim_steps: int = 50) -> Reference:
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
class TrainResult:
    embeddings: MotionEmbeddings  # at the last step
    checkpoints: dict[int, dict[str, torch.Tensor]]  # step → state_dict copy (CPU)
    losses: list[float]
    seconds: float

    def at(self, step: int) -> MotionEmbeddings:
        """The embeddings as they were at a saved step (a new module; `embeddings` stays at the last step)."""
        emb = MotionEmbeddings(self.embeddings.spec, self.embeddings.blocks)
        emb.load_state_dict(self.checkpoints[step])
        return emb


def train_embeddings(pipe, latents: torch.Tensor, source_prompt: str, config: InversionConfig,
                     callback: TrainCallback | None = None, base_model: str = "") -> TrainResult:
    """Optimise only the motion embeddings on one video latent (AdamW, constant lr, t ~ U{0..T-1})."""
    import time

    unet, scheduler = pipe.unet, pipe.scheduler
    device = unet.device
    latents = latents.to(device, torch.float32)
    spec = EmbeddingSpec(config.qk, config.v, config.placement, config.slots,
                         latents.shape[-2], latents.shape[-1], base_model)
    if latents.shape[2] > config.slots:
        raise ValueError(f"the video has {latents.shape[2]} frames but only {config.slots} slots; raise slots")
    embeddings = MotionEmbeddings.create(unet, spec)
    checkpoints: dict[int, dict[str, torch.Tensor]] = {}
    losses: list[float] = []
    started = time.perf_counter()
    params = list(embeddings.parameters())
    if not params or config.steps == 0:  # both designs off: the plain base model, nothing to learn
        return TrainResult(embeddings, {config.steps: embeddings.state_dict()}, losses, 0.0)

    generator = torch.Generator("cpu").manual_seed(config.seed)  # CPU generator: same draws on any device
    context = encode_prompt(pipe, source_prompt)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=unet.dtype if unet.dtype != torch.float32 else torch.float16) \
        if cuda else contextlib.nullcontext()
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and unet.dtype == torch.float16)
    restore = _checkpoint_blocks(unet) if cuda else (lambda: None)
    embeddings.attach(unet)
    saved = set(config.saved_steps)
    try:
        for step in range(1, config.steps + 1):
            t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=generator).to(device)
            noise = torch.randn(latents.shape, generator=generator).to(device)
            noisy = scheduler.add_noise(latents, noise, t)
            target = noise if scheduler.config.prediction_type == "epsilon" \
                else scheduler.get_velocity(latents, noise, t)
            r = int(torch.randint(0, latents.shape[2], (1,), generator=generator))
            with autocast:
                pred = unet(noisy.to(unet.dtype), t, encoder_hidden_states=context).sample.float()
            loss = F.mse_loss(pred, target)
            if config.loss == "debiased_temporal":
                # MotionDirector's appearance-debiased temporal loss with beta=1, alpha=sqrt(2)
                a = 2 ** 0.5
                loss = loss + F.mse_loss(a * pred - pred[:, :, r:r + 1], a * target - target[:, :, r:r + 1])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            value = float(loss.detach())
            losses.append(value)
            if callback:
                callback(step, value)
            if step in saved:
                checkpoints[step] = {k: v.detach().cpu().clone() for k, v in embeddings.state_dict().items()}
    finally:
        embeddings.detach(unet)
        restore()
    return TrainResult(embeddings, checkpoints, losses, time.perf_counter() - started)


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
