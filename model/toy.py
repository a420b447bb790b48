"""The toy world: a tiny text-to-video model and a tiny CLIP, trained on moving shapes (`model.toy_data`).

The `toy` preset is the demo's default and the project's positive control: prompts are followed and motion
inversion really transfers motion, measurably, on 2 CPU cores. Everything is made of the classes the real
model uses — a diffusers `TextToVideoSDPipeline` (AutoencoderKL, UNet3DConditionModel with ZeroScope's block
types, a transformers `CLIPTextModel` with the CLIP tokenizer, ZeroScope's DDIM scheduler) saved with
`save_pretrained`, and an open_clip model saved as an `open_clip_config.json` + safetensors folder — so the
shipped weights load through the same `from_pretrained` / open_clip paths as ZeroScope and ViT-B-32.

    python -m model.toy build              # train everything from seed 0 (75 min on 2 CPU cores)
    python -m model.toy build --minutes 10 # a quick, worse world (same steps, shorter phases)
    python -m model.toy build --reuse W --resume W --out X  # fine-tune world W's UNet + text encoder into X
    python -m model.toy build --eval-transfer 4  # also check the method's transfer at every sample check
    python -m model.toy eval [--transfer 4] # re-measure the shipped world (and whether the method transfers)

Build order: VAE (reconstruction + a tiny KL) → toy CLIP (contrastive, on clean frames and VAE decodes)
→ latents of a fixed training set → UNet + text encoder (v-prediction at zero terminal SNR, caption dropout;
optionally single frames first, then clips), with the sample quality of the EMA weights measured along the way
→ fp16 folders under `model/toy_world/`, then a final measurement through `load_pipeline("toy")` and the toy
CLIP's `local-dir:` name: prompt following, and a small motion-transfer check of the method itself.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import videoio

from . import toy_data as td

TOY_DIR = Path(__file__).resolve().parent / "toy_world"
PIPELINE_DIR = TOY_DIR / "pipeline"
CLIP_DIR = TOY_DIR / "clip"
LOG_JSON = TOY_DIR / "build_log.json"
TOY_FORMAT = 1

#: The toy CLIP as the evaluation backbone names it (ScorerConfig(clip=TOY_CLIP)).
TOY_CLIP = f"local-dir:{CLIP_DIR}"

# ------------------------------------------------------------------------------------- architecture
UNET_CONFIG = dict(  # ZeroScope's block types (3× CrossAttnDownBlock3D + DownBlock3D, mirrored) at toy width
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64, 64), layers_per_block=1,
    norm_num_groups=8, cross_attention_dim=48, attention_head_dim=4,
)
VAE_CONFIG = dict(  # 8× downsampling: 64×64 RGB ↔ 4×8×8
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 32, 64), layers_per_block=1,
    latent_channels=4, norm_num_groups=8, sample_size=64,
)
TEXT_CONFIG = dict(
    vocab_size=49408, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, projection_dim=48, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)
SCHEDULER_CONFIG = dict(  # ZeroScope's betas, rescaled to zero terminal SNR, with v-prediction (Lin et al. 2024)
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    # Why not ZeroScope's ε-prediction: trained on the same clips, its samples' motion followed the noise, not
    # the words. At zero terminal SNR the first sampling step sees pure noise and must predict the caption's
    # mean clip, which (paths centred, `toy_data.sample_spec`) shows the motion; ε cannot be learned where the
    # SNR is zero, v can. Measured in benchmarks/README.md "What made the words steer the motion".
    prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
)
CLIP_MODEL_CONFIG = dict(
    embed_dim=64,
    vision_cfg=dict(image_size=64, layers=[1, 1, 1, 1], width=12, head_width=32),  # a small ModifiedResNet
    text_cfg=dict(context_length=32, vocab_size=49408, width=32, heads=2, layers=2, mlp_ratio=2.0),
)
CLIP_PREPROCESS = dict(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], interpolation="bicubic", resize_mode="shortest")

#: Settings that work in the toy world (measured by the build / tests; see benchmarks/README.md "Toy world").
#: The toy UNet's temporal attention is small: the embeddings need a higher learning rate than ZeroScope's 0.02.
INVERSION_DEFAULTS = dict(steps=300, lr=0.1)
#: Guidance 7.5, not ZeroScope's 12: at 12 this v-prediction model's samples stop following the motion words
#: (the build log's final table: direction 0.67 vs 0.96, motion text dependence 0.06 vs 0.81).
GENERATION_DEFAULTS = dict(steps=30, guidance=7.5, noise_prior=0.5)
#: `motion-sweep demo`'s settings: cold to tables in 87 s on 2 CPU cores (103 s at 100 steps, lr 0.1, 20 denoising
#: steps): fewer inversion steps at a higher rate than the tests' transfer settings, which over 8 fresh references
#: transferred as well (benchmarks/README.md "The demo's settings"); the demo's table says how many.
DEMO_SETTINGS = dict(inversion_steps=80, lr=0.2, ddim_steps=20, generation_steps=15, guidance=7.5)


@dataclass
class BuildConfig:
    """What `python -m model.toy build` trains; step counts of 0 are filled from the time budget."""

    seed: int = 0
    minutes: float = 80.0          # total budget of the training phases (evaluations and saving come on top)
    threads: int = 1                # more than the free cores makes torch's CPU threads stall (10× slower)
    out: str = str(TOY_DIR)
    # VAE
    vae_share: float = 0.12
    vae_steps: int = 0
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    # toy CLIP
    clip_share: float = 0.12
    clip_steps: int = 0
    clip_batch: int = 64
    clip_lr: float = 2e-3
    # UNet + text encoder
    train_clips: int = 8000
    unet_steps: int = 0
    unet_batch: int = 16
    unet_lr: float = 1e-3
    warmup: int = 200
    ema: float = 0.995
    drop_motion: float = 0.15
    drop_all: float = 0.12
    high_t: float = 0.5            # share of a batch whose timesteps come from the noisiest 20 % (layout and motion)
    # The clip phase's other timesteps (1 - high_t of a batch) are drawn below this share of the schedule (1 = all):
    # below 1, a fine-tune that dwells on the lower-noise steps, which draw detail. Why: re-noised to t = 200 and
    # denoised, build 3 turns 2 of 6 real squares into circles, so corners are lost at low noise too.
    # Off by default: as a fine-tune of build 3 (build 11) it kept squares at 0.2 but not above (benchmarks/README.md).
    t_max: float = 1.0
    eval_every: int = 0            # UNet steps between sample-quality checks (0: about 6 checks)
    eval_clips: int = 12
    eval_ddim_steps: int = 20
    eval_guidance: float = 9.0
    # References of a motion-transfer check (`transfer_check`) at every sample check (0 = none; about 25 s a
    # reference on 2 CPU cores). Why: builds 8 and 9 followed their prompts better than build 3 and still lost the
    # method's transfer, which only the final measurement showed; with this a build shows when it goes.
    eval_transfer: int = 0
    snapshot: str = ""             # folder where the EMA pipeline is saved at every sample check ("" = none)
    reuse: str = ""                # a built world whose VAE and toy CLIP this build keeps ("" = train them)
    resume: str = ""               # a built world whose UNet + text encoder this build continues ("" = from seed)
    # Weight of the text encoder's distillation towards the toy CLIP's text tower (appearance words only; 0 = off,
    # as in the shipped build 3). Why: trained by the diffusion loss alone, build 3's text encoder merged "square"
    # and "circle" (hidden states 0.011 apart, "triangle" 0.116); with 0.5 the words stay apart. Necessary, not
    # sufficient: builds 5–7 kept them apart and still drew one blob for both (benchmarks/README.md).
    text_distill: float = 0.0
    # Weight of a paired loss (0 = off): each clip-phase batch is unet_batch/2 clips and the same clips with another
    # shape (`shape_counterpart`), with the same caption but for the shape word, the same timestep and noise; the
    # error of the difference of their predictions is added with this weight. Why: a square and a circle of 18 px
    # differ in 1.7 % of the frame, so the plain loss hardly sees the corners beside position, colour and motion.
    # Off by default: build 12 (weight 8) then kept real squares re-noised to 0.4 of the schedule (build 3: 2 of 6),
    # but from 0.6 up and from pure noise it still drew one blob; at 16 (build 13) it lost the motion words.
    shape_pairs: float = 0.0
    # Share of the UNet phase spent first on single frames (captions without motion words, uniform timesteps), as
    # video models start from an image model (0 = none, as in build 3). Why: every clip-trained build drew squares
    # and circles as one blob whose outline the noise decides; a batch of 64 frames shows 64 shapes for the cost of
    # 16 clips. Build 8 (0.3, with 24–28 px shapes) is the first whose squares come out boxy; build 10 (0.2, 16–20 px)
    # still draws one blob, and both weakened the method's transfer (benchmarks/README.md), so it stays off.
    image_share: float = 0.0
    image_batch: int = 64


# ---------------------------------------------------------------------------------------- builders
def build_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG, scaling_factor=1.0)


def build_unet():
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(**UNET_CONFIG)


def build_text_encoder():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def build_clip():
    from open_clip.model import CLIP

    return CLIP(**copy.deepcopy(CLIP_MODEL_CONFIG))


def make_pipeline(vae, text_encoder, unet, scheduler=None, tokenizer=None):
    from diffusers import TextToVideoSDPipeline
    from diffusers.utils import logging as diffusers_logging

    from .presets import clip_tokenizer

    previous = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer or clip_tokenizer(),
                                     unet=unet, scheduler=scheduler or build_scheduler())
    finally:
        diffusers_logging.set_verbosity(previous)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------------------- logging
class BuildLog:
    """Loss curves and measurements, as JSON (the system of record) and one line per event on stderr."""

    def __init__(self, path: Path | None):
        self.path = path
        self.data: dict = {"format": TOY_FORMAT, "phases": {}, "evaluations": [], "final": {}}
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def say(self, msg: str) -> None:
        print(f"[toy {self.elapsed() / 60:6.1f} min] {msg}", file=sys.stderr, flush=True)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".tmp-{self.path.name}")
        tmp.write_text(json.dumps(self.data, indent=1, default=_jsonable))
        tmp.replace(self.path)


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


class _Steps:
    """Step count from a fixed number or from a time budget: the rate is measured after a few warm-up
    steps (the first ones are slow) and re-measured at steps 100 and 400, so a change of machine load
    (and every 500 steps after) does not leave a phase far over or under its budget. The count is logged, so a build can
    be repeated exactly with the step options."""

    def __init__(self, fixed: int, seconds: float, probe: int = 10):
        self.fixed, self.seconds = fixed, seconds
        self.marks = sorted({probe + 5, 100, 400})
        self.total = fixed or None
        self.t0 = time.perf_counter()
        self.t_warm: float | None = None
        self.warm = 5

    def done(self, step: int) -> bool:
        if not self.fixed:
            if step == self.warm:
                self.t_warm = time.perf_counter()
            elif self.t_warm is not None and (step in self.marks or (step > 400 and step % 500 == 0)) \
                    and (self.total is None or step < self.total):
                per = (time.perf_counter() - self.t_warm) / (step - self.warm)
                left = self.seconds - (time.perf_counter() - self.t0)
                self.total = max(step, step + int(left / per))
        return self.total is not None and step >= self.total

    def estimate(self) -> int:
        return self.total or 0


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if not total:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


# -------------------------------------------------------------------------------------------- data
def _to_tensor(frames: np.ndarray):
    """uint8 [..., H, W, 3] → float [..., 3, H, W] in [-1, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1.0
    return x.movedim(-1, -3)


def random_frames(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[td.ClipSpec]]:
    """`n` single frames (a random frame of a random clip each) and their clips."""
    specs = [td.sample_spec(rng) for _ in range(n)]
    frames = np.stack([s.render()[rng.integers(td.FRAMES)] for s in specs])
    return frames, specs


# ------------------------------------------------------------------------------------------- VAE
def vae_frames(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames for the VAE: one to four shapes each (more edges per pixel than the clips, so the
    autoencoder learns shapes sooner), and a mask of the pixels that differ from the background."""
    frames, masks = [], []
    colors, backgrounds = list(td.COLORS.values()), list(td.BACKGROUNDS.values())
    for _ in range(n):
        bg = backgrounds[rng.integers(len(backgrounds))]
        shapes = []
        for _ in range(int(rng.integers(1, 5))):
            size = float(rng.uniform(td.SIZE_RANGE[0] - 2, td.SIZE_RANGE[1] + 2))
            shapes.append((td.SHAPES[rng.integers(len(td.SHAPES))], colors[rng.integers(len(colors))], size,
                           tuple(rng.uniform(size / 2 - 2, td.WIDTH - size / 2 + 2, 2))))
        f = videoio.render_shapes_frame(shapes, bg, td.HEIGHT, td.WIDTH)
        frames.append(f)
        masks.append(np.abs(f.astype(np.int16) - np.asarray(bg, np.int16)).max(-1) > 4)
    return np.stack(frames), np.stack(masks)


def train_vae(cfg: BuildConfig, log: BuildLog):
    import torch

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    vae = build_vae().train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    steps = _Steps(cfg.vae_steps, cfg.minutes * 60 * cfg.vae_share)
    curve, step, window = [], 0, []
    while not steps.done(step):
        frames, masks = vae_frames(rng, cfg.vae_batch)
        x = _to_tensor(frames)
        # shapes are a few % of the pixels: weight them (and a ring around them) up
        weight = 1.0 + 4.0 * torch.nn.functional.max_pool2d(
            torch.from_numpy(masks).float()[:, None], 5, stride=1, padding=2)
        for g in opt.param_groups:
            g["lr"] = cfg.vae_lr * _lr_factor(step, steps.estimate(), 50)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        err = rec - x
        loss_rec = ((err ** 2 + 0.5 * err.abs()) * weight).mean() / weight.mean()
        loss = loss_rec + cfg.vae_kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        window.append(float(loss_rec.detach()))
        if step % 50 == 0:
            curve.append((step, float(np.mean(window))))
            window = []
            if step % 200 == 0:
                log.say(f"vae step {step}/{steps.estimate()} recon {curve[-1][1]:.4f}")
    if window:
        curve.append((step, float(np.mean(window))))
    vae.eval()
    # scaling factor: latents of held-out frames to unit variance (SD's 0.18215 is the same idea)
    with torch.no_grad():
        frames, _ = random_frames(np.random.default_rng(cfg.seed + 2), 256)
        x = _to_tensor(frames)
        mean = vae.encode(x).latent_dist.mean
        rec = vae.decode(mean).sample
        psnr = float(10 * torch.log10(4.0 / torch.nn.functional.mse_loss(rec, x)))
        scale = float(1.0 / mean.std())
    vae.register_to_config(scaling_factor=scale)
    log.data["phases"]["vae"] = dict(steps=step, seconds=None, loss_curve=curve, psnr_db=psnr,
                                     scaling_factor=scale, params=sum(p.numel() for p in vae.parameters()))
    log.say(f"vae done: {step} steps, held-out PSNR {psnr:.1f} dB, scaling factor {scale:.4f}")
    return vae


# ------------------------------------------------------------------------------------------ CLIP
def clip_captions() -> tuple[list[str], list[tuple[str, str, str]]]:
    """The zero-shot classes of the toy CLIP: every (shape, colour, background) caption without motion."""
    rows = td.all_captions(with_motion=False)
    return [r[4] for r in rows], [(r[0], r[1], r[2]) for r in rows]


def _decoded_pool(vae, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[td.ClipSpec]]:
    """Frames as generated clips look: VAE decodes of slightly perturbed latents of random frames."""
    import torch

    frames, specs = random_frames(rng, n)
    out = []
    with torch.no_grad():
        for i in range(0, n, 64):
            x = _to_tensor(frames[i:i + 64])
            z = vae.encode(x).latent_dist.mean
            sigma = torch.from_numpy(rng.uniform(0, 0.3, (len(z), 1, 1, 1)).astype(np.float32)) / \
                vae.config.scaling_factor
            rec = vae.decode(z + sigma * torch.randn_like(z)).sample
            out.append(((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out), specs


def _augment(x, rng: np.random.Generator):
    """Blur / noise / brightness on a float batch [B, 3, H, W] in [-1, 1] (generated frames are imperfect)."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    sigma = rng.uniform(0, 1.2)
    if sigma > 0.3:
        k = torch.arange(-2, 3, dtype=torch.float32)
        w = torch.exp(-k ** 2 / (2 * sigma ** 2))
        w = w / w.sum()
        x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), w.view(1, 1, 1, 5).repeat(3, 1, 1, 1), groups=3)
        x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), w.view(1, 1, 5, 1).repeat(3, 1, 1, 1), groups=3)
    x = x * torch.from_numpy(rng.uniform(0.85, 1.15, (b, 1, 1, 1)).astype(np.float32))
    x = x + torch.from_numpy(rng.normal(0, rng.uniform(0, 0.08), x.shape).astype(np.float32))
    return x.clamp(-1, 1)


def train_clip(cfg: BuildConfig, log: BuildLog, vae=None):
    """Contrastive training with multi-positive targets: a frame matches every caption of its (shape,
    colour, background), with or without the motion words (which a single frame cannot show, so the
    text tower learns to look past them)."""
    import open_clip
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed + 10)
    rng = np.random.default_rng(cfg.seed + 11)
    model = build_clip().train()
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=CLIP_MODEL_CONFIG["text_cfg"]["context_length"])
    token_cache: dict[str, torch.Tensor] = {}

    def tokens(texts):
        missing = [t for t in set(texts) if t not in token_cache]
        if missing:
            for t, ids in zip(missing, tokenizer(missing)):
                token_cache[t] = ids
        return torch.stack([token_cache[t] for t in texts])

    pool, pool_specs = (_decoded_pool(vae, rng, 3000) if vae is not None else (None, None))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.clip_lr, weight_decay=0.05)
    steps = _Steps(cfg.clip_steps, cfg.minutes * 60 * cfg.clip_share)
    curve, window, step = [], [], 0
    while not steps.done(step):
        n_pool = cfg.clip_batch // 3 if pool is not None else 0
        frames, specs = random_frames(rng, cfg.clip_batch - n_pool)
        if n_pool:
            idx = rng.integers(len(pool), size=n_pool)
            frames = np.concatenate([frames, pool[idx]])
            specs = specs + [pool_specs[i] for i in idx]
        x = _augment(_to_tensor(frames), rng)
        texts = [s.caption(with_motion=rng.random() < 0.5) for s in specs]
        cls = np.array([hash((s.shape, s.color, s.background)) for s in specs])
        same = torch.from_numpy((cls[:, None] == cls[None, :]).astype(np.float32))
        target = same / same.sum(1, keepdim=True)
        for g in opt.param_groups:
            g["lr"] = cfg.clip_lr * _lr_factor(step, steps.estimate(), 50)
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(tokens(texts)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        loss = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean()
                      - (target * logits.T.log_softmax(1)).sum(1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        window.append(loss.item())
        if step % 25 == 0:
            curve.append((step, float(np.mean(window))))
            window = []
            if step % 100 == 0:
                log.say(f"clip step {step}/{steps.estimate()} loss {curve[-1][1]:.3f}")
    if window:
        curve.append((step, float(np.mean(window))))
    model.eval()
    log.data["phases"]["clip"] = dict(steps=step, loss_curve=curve,
                                      params=sum(p.numel() for p in model.parameters()))
    return model


def save_clip(model, folder: Path) -> Path:
    """An open_clip `local-dir:` folder: open_clip_config.json + open_clip_model.safetensors (fp16)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": CLIP_MODEL_CONFIG, "preprocess_cfg": CLIP_PREPROCESS}, indent=1))
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


# -------------------------------------------------------------------------------------- measuring
class ToyJudge:
    """Zero-shot shape/colour classification with the toy CLIP and motion direction with LK tracks."""

    def __init__(self, backbone):
        from evaluation import clip as clipm

        self.backbone = backbone
        self.captions, self.classes = clip_captions()
        self.text = np.stack([clipm.encode_text(backbone, c) for c in self.captions])

    @classmethod
    def from_model(cls, model):
        """A judge for an in-memory open_clip model (during the build)."""
        import open_clip
        from open_clip.transform import PreprocessCfg, image_transform_v2

        from evaluation.clip import ClipBackbone

        pp = image_transform_v2(PreprocessCfg(size=CLIP_MODEL_CONFIG["vision_cfg"]["image_size"],
                                              **CLIP_PREPROCESS), is_train=False)
        tok = open_clip.get_tokenizer("ViT-B-32", context_length=CLIP_MODEL_CONFIG["text_cfg"]["context_length"])
        return cls(ClipBackbone(model, pp, tok, "toy-clip (in training)", True, "cpu"))

    def classify(self, frames: np.ndarray) -> list[tuple[str, str, str]]:
        """(shape, colour, background) of each uint8 frame [N, H, W, 3]."""
        from evaluation import clip as clipm

        emb = clipm.encode_frames(self.backbone, frames)
        return [self.classes[i] for i in (emb @ self.text.T).argmax(1)]

    def clip_class(self, clip: np.ndarray) -> tuple[str, str, str]:
        """The majority (shape, colour, background) over a clip's frames."""
        from collections import Counter

        votes = self.classify(clip)
        return tuple(Counter(v[k] for v in votes).most_common(1)[0][0] for k in range(3))

    def accuracy(self, clips: np.ndarray, specs: list[tuple[str, str]]) -> dict:
        """Shape / colour / both accuracy of clips [N, F, H, W, 3] against (shape, colour) targets."""
        got = [self.clip_class(c) for c in clips]
        shape = np.mean([g[0] == s[0] for g, s in zip(got, specs)])
        color = np.mean([g[1] == s[1] for g, s in zip(got, specs)])
        both = np.mean([g[0] == s[0] and g[1] == s[1] for g, s in zip(got, specs)])
        return dict(shape=float(shape), color=float(color), both=float(both), n=len(specs))


DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1), "up_right": (1, -1),
              "up_left": (-1, -1), "down_right": (1, 1), "down_left": (-1, 1)}


def mean_motion(frames: np.ndarray, min_travel: float = 3.0) -> np.ndarray:
    """Mean displacement per frame (x, y) of the LK grid tracks that travel at least `min_travel` px from
    the first to the last frame (and, where the tracker says, stay visible); 0 when nothing moves."""
    from evaluation import motion as mm

    _, h, w, _ = frames.shape
    g = mm.effective_grid_size(55, h, w)
    tracks = mm.track_lk(frames, mm.grid_points(g, h, w))
    xy = np.asarray(getattr(tracks, "xy", tracks), np.float64)  # [T, N, 2]
    visible = np.asarray(getattr(tracks, "visible", np.ones(xy.shape[:2], bool)))
    travel = xy[-1] - xy[0]
    keep = (np.linalg.norm(travel, axis=-1) >= min_travel) & visible.all(0)
    if not keep.any():
        return np.zeros(2)
    return travel[keep].mean(0) / (len(frames) - 1)


def direction_cosine(frames: np.ndarray, motion: str) -> float | None:
    """Cosine between the clip's mean motion and the straight `motion`; None when the clip does not move
    (under 0.3 px per frame)."""
    d = mean_motion(frames)
    n = float(np.linalg.norm(d))
    if n <= 0.3:
        return None
    v = np.asarray(DIRECTIONS[motion], np.float64)
    return float(d @ v) / (n * float(np.linalg.norm(v)))


def direction_correct(frames: np.ndarray, motion: str) -> bool:
    """Does the clip's moving content go the way `motion` (a straight motion) says (cosine > 0.8: closer to it than to a neighbouring direction)?"""
    cos = direction_cosine(frames, motion)
    return cos is not None and cos > 0.8


FOUR_WAYS = ("right", "left", "up", "down")


def motion_text_dependence(pipe, seeds: tuple[int, ...] = (0, 1, 2, 3), steps: int = 20, guidance: float = 9.0,
                           shape: str = "square", color: str = "red", background: str = "grey") -> dict:
    """Do motion words change the generated motion? Per seed, one initial latent is generated under the four
    prompts "a red square moves right / left / up / down on a grey background"; the score is the mean cosine
    between each clip's mean motion (`mean_motion`) and its prompted direction, 0 for a clip that does not move.
    1: the motion follows the words; 0: it ignores them (e.g. the initial noise alone decides it); −1: reversed.
    A rate of `direction_correct` cannot tell "ignores the words" from "follows them badly": a model whose
    motion comes from the noise alone still scores chance (1/8) on it."""
    import torch

    from .generation import frames_uint8

    prompts = [td.caption(shape, color, background, m) for m in FOUR_WAYS]
    h, w = td.HEIGHT // pipe.vae_scale_factor, td.WIDTH // pipe.vae_scale_factor
    cosines, moving = [], []
    for seed in seeds:
        g = torch.Generator("cpu").manual_seed(seed)
        latent = torch.randn((1, pipe.unet.config.in_channels, td.FRAMES, h, w), generator=g)
        out = pipe(prompt=prompts, latents=latent.repeat(len(prompts), 1, 1, 1, 1), num_frames=td.FRAMES,
                   height=td.HEIGHT, width=td.WIDTH, num_inference_steps=steps, guidance_scale=guidance,
                   output_type="np")
        for m, clip in zip(FOUR_WAYS, frames_uint8(out.frames)):
            cos = direction_cosine(clip, m)
            moving.append(cos is not None)
            cosines.append(cos or 0.0)
    return dict(motion_follows_words=float(np.mean(cosines)), moving=float(np.mean(moving)), n=len(cosines))


def evaluate_samples(pipe, judge: ToyJudge, n: int, seed: int, steps: int, guidance: float) -> dict:
    """Generate `n` prompted clips (shape, colour, background and a straight motion) and measure them."""
    import torch

    from .generation import frames_uint8

    rng = np.random.default_rng(seed)
    jobs = []
    for i in range(n):
        s = td.SHAPES[i % len(td.SHAPES)]
        c = list(td.COLORS)[(i // len(td.SHAPES)) % len(td.COLORS)]
        b = list(td.BACKGROUNDS)[rng.integers(len(td.BACKGROUNDS))]
        m = td.STRAIGHT[rng.integers(len(td.STRAIGHT))]
        jobs.append((s, c, b, m))
    prompts = [td.caption(*j) for j in jobs]
    t0 = time.perf_counter()
    clips = []
    for i in range(0, n, 8):
        g = torch.Generator("cpu").manual_seed(seed + i)
        out = pipe(prompt=prompts[i:i + 8], num_frames=td.FRAMES, height=td.HEIGHT, width=td.WIDTH,
                   num_inference_steps=steps, guidance_scale=guidance, generator=g, output_type="np")
        clips.append(frames_uint8(out.frames))
    clips = np.concatenate(clips)
    seconds = time.perf_counter() - t0
    acc = judge.accuracy(clips, [(j[0], j[1]) for j in jobs])
    acc["direction"] = float(np.mean([direction_correct(c, j[3]) for c, j in zip(clips, jobs)]))
    acc["seconds_per_clip"] = seconds / n
    dependence = motion_text_dependence(pipe, steps=steps, guidance=guidance)
    acc.update(motion_follows_words=dependence["motion_follows_words"], moving=dependence["moving"],
               ddim_steps=steps, guidance=guidance)
    return acc, clips


# ------------------------------------------------------------------------------ motion transfer
def reference_clip(motion: str, shape: str = "square", color: str = "red", background: str = "grey",
                   seed: int = 0) -> tuple[np.ndarray, td.ClipSpec]:
    """A reference clip of the toy world (seeded size, speed and place) and its spec."""
    spec = td.sample_spec(np.random.default_rng(seed), shape=shape, color=color, background=background,
                          motion=motion)
    return spec.render(), spec


def transfer_trial(pipe, scorer, reference: np.ndarray, source_prompt: str, prompt: str, seed: int = 0,
                   inversion: dict | None = None, generation: dict | None = None,
                   debias: tuple[str, ...] = ("difference",), base_noise: tuple[str, ...] = ("blend",)) -> dict:
    """Invert `reference` (described by `source_prompt`), generate `prompt` with the embeddings (one clip per
    debias mode) and with the plain base model (same prompt, seed and initial noise; `base_noise` "blend" is
    BlendInit from the reference's inverted noise as the method uses, "random" pure noise), and score every
    clip against the reference → {"method:<debias>" | "base:<noise>": scores, ..., "clips": {...},
    "seconds_inversion": s, "seconds_generation": s per clip}."""
    from .generation import GenerationConfig, generate
    from .inversion import InversionConfig, prepare_reference, train_embeddings

    inv = InversionConfig(**{"checkpoints": (), **INVERSION_DEFAULTS, **(inversion or {}), "seed": seed})
    gen = GenerationConfig(**{k: v for k, v in {**GENERATION_DEFAULTS, **(generation or {})}.items()})
    t0 = time.perf_counter()
    ref = prepare_reference(pipe, reference, len(reference), reference.shape[1], reference.shape[2])
    trained = train_embeddings(pipe, ref.latents, source_prompt, inv)
    out: dict = {"seconds_inversion": time.perf_counter() - t0, "losses": trained.losses, "clips": {}}
    t1 = time.perf_counter()
    runs = [(f"method:{d}", trained.embeddings, d, gen) for d in debias]
    runs += [(f"base:{n}", None, "none", dataclasses.replace(gen, noise_init=n)) for n in base_noise]
    for name, emb, d, g in runs:
        clip = generate(pipe, ref.inverted_noise, [prompt], [seed], emb, d, g)[0]
        out["clips"][name] = clip
        out[name] = scorer.score(clip, prompt, reference)
    out["seconds_generation"] = (time.perf_counter() - t1) / len(runs)
    return out


def transfer_check(pipe, scorer, n: int = 4, seed: int = 900, inversion: dict | None = None) -> dict:
    """The method's positive control in small, for a build's log: invert `n` references (shape A, a straight
    motion each, source prompt without motion words) and generate shape B with no motion word, with the
    embeddings (debias `difference`) and with the plain base model from the same seed → the mean motion fidelity
    of each and in how many references the method is higher. A base model that follows its prompts can still
    fail here (builds 8 and 9 in benchmarks/README.md: their embeddings carried the motion only under the source
    prompt, if at all); the paired test over 12 references is tests/test_toy_world.py's."""
    if n < 1:
        raise ValueError(f"transfer_check needs at least 1 reference, got n={n}")
    rows = []
    for k in range(n):
        motion = td.STRAIGHT[(3 * k) % len(td.STRAIGHT)]  # right, down, down_right, left: both axes, a diagonal
        a, b = td.SHAPES[k % len(td.SHAPES)], td.SHAPES[(k + 1) % len(td.SHAPES)]
        color, background = list(td.COLORS)[k % len(td.COLORS)], list(td.BACKGROUNDS)[k % len(td.BACKGROUNDS)]
        ref, _ = reference_clip(motion, a, color, background, seed=seed + k)
        prompt = td.caption(b, list(td.COLORS)[(k + 2) % len(td.COLORS)], background)
        res = transfer_trial(pipe, scorer, ref, td.caption(a, color, background), prompt, seed=seed + k,
                             inversion=inversion, base_noise=("random",))
        rows.append((motion, res["method:difference"]["motion_fidelity"], res["base:random"]["motion_fidelity"]))
    method, base = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
    return dict(n=n, motions=[r[0] for r in rows], method=float(method.mean()), base=float(base.mean()),
                method_higher=int((method > base).sum()), method_per_reference=method.tolist(),
                base_per_reference=base.tolist())


# ----------------------------------------------------------------------------------- UNet training
def encode_clips(vae, specs: list[td.ClipSpec], log: BuildLog):
    """The VAE latents [n, 4, F, 8, 8] (× scaling) of these clips, rendered and encoded 32 at a time."""
    import torch

    latents = []
    with torch.no_grad():
        for i in range(0, len(specs), 32):
            frames = np.stack([s.render() for s in specs[i:i + 32]])  # [b, F, H, W, 3]
            x = _to_tensor(frames.reshape(-1, *frames.shape[2:]))     # [b·F, 3, H, W]
            z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
            z = z.view(len(frames), td.FRAMES, *z.shape[1:]).permute(0, 2, 1, 3, 4)  # [b, 4, F, h, w]
            latents.append(z.contiguous())
            if (i // 32) % 100 == 0:
                log.say(f"encoding training clips {i}/{len(specs)}")
    return torch.cat(latents)


def encode_dataset(vae, n: int, seed: int, log: BuildLog):
    """A fixed training set: `n` clips, their specs and their VAE latents (`encode_clips`)."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    specs = [td.sample_spec(rng) for _ in range(n)]
    latents = encode_clips(vae, specs, log)
    log.data["phases"]["latents"] = dict(clips=n, seconds=time.perf_counter() - t0)
    return latents, specs


def shape_counterpart(spec: td.ClipSpec) -> td.ClipSpec:
    """The same clip (path, size, colour, background) with the next shape: square → circle → triangle → square,
    so each pair of shapes is met once."""
    return dataclasses.replace(spec, shape=td.SHAPES[(td.SHAPES.index(spec.shape) + 1) % len(td.SHAPES)])


def appearance_teacher(judge: ToyJudge):
    """The toy CLIP's text tower (the judge's backbone) as a frozen target for the text encoder: caption → unit
    embedding (cached). Given captions without motion words, it pins what the words say about shape, colour and
    background and leaves the motion words to the diffusion loss."""
    import torch

    from evaluation import clip as clipm

    cache: dict[str, torch.Tensor] = {}

    def embed(texts: list[str]) -> torch.Tensor:
        for text in set(texts) - cache.keys():
            cache[text] = torch.from_numpy(clipm.encode_text(judge.backbone, text))
        return torch.stack([cache[t] for t in texts])

    return embed


def load_built_unet(world: Path):
    """The UNet + text encoder of a built world, in fp32, to continue training (`--resume`)."""
    import torch
    from diffusers import UNet3DConditionModel
    from transformers import CLIPTextModel

    folder = world / "pipeline"
    return (UNet3DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32),
            CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32))


def train_unet(cfg: BuildConfig, log: BuildLog, vae, judge: ToyJudge | None, scorer=None):
    import torch

    from .presets import clip_tokenizer

    latents, specs = encode_dataset(vae, cfg.train_clips, cfg.seed + 20, log)
    if cfg.shape_pairs:  # the same clips with their other shape, encoded once (their time counts as the latents')
        t0 = time.perf_counter()
        pair_latents = encode_clips(vae, [shape_counterpart(s) for s in specs], log)
        log.data["phases"]["latents"]["seconds"] += time.perf_counter() - t0
    torch.manual_seed(cfg.seed + 30)
    rng = np.random.default_rng(cfg.seed + 31)
    unet, text_encoder = load_built_unet(Path(cfg.resume)) if cfg.resume else (build_unet(), build_text_encoder())
    unet, text_encoder, scheduler = unet.train(), text_encoder.train(), build_scheduler()
    teacher = appearance_teacher(judge) if cfg.text_distill and judge is not None else None
    # training only, not shipped: maps the text encoder's pooled state into the toy CLIP's embedding space (made
    # only when used: its initialisation draws from the seeded generator the rest of the build then uses)
    head = torch.nn.Linear(TEXT_CONFIG["hidden_size"], CLIP_MODEL_CONFIG["embed_dim"]) if teacher else None
    tokenizer = clip_tokenizer()
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    for p in [*ema_unet.parameters(), *ema_text.parameters()]:
        p.requires_grad_(False)
    token_cache: dict[str, torch.Tensor] = {}

    def tokens(texts):
        missing = [t for t in set(texts) if t not in token_cache]
        if missing:
            ids = tokenizer(missing, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            token_cache.update(zip(missing, ids))
        return torch.stack([token_cache[t] for t in texts])

    params = [*unet.parameters(), *text_encoder.parameters(), *(head.parameters() if teacher else [])]
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    shares = 0.0 if cfg.reuse else cfg.vae_share + cfg.clip_share
    budget = cfg.minutes * 60 * (1 - shares) - log.data["phases"]["latents"]["seconds"]
    curve, window, step, evals = [], [], 0, []
    distill_curve, distill_window, pair_curve, pair_window = [], [], [], []
    eval_every = cfg.eval_every
    train_step = _train_step(cfg, scheduler, unet, text_encoder, head, teacher, tokens, opt, params,
                             (ema_unet, ema_text))
    image_curve, image_steps = _train_on_frames(cfg, log, train_step, latents, specs, rng, budget * cfg.image_share)
    steps = _Steps(cfg.unet_steps, budget * (1 - cfg.image_share) * 0.9, probe=20)  # ~10 % goes to sample checks
    t_train = time.perf_counter()
    while not steps.done(step):
        if step == 100 and not eval_every:
            eval_every = max(100, steps.estimate() // 6)
        size = cfg.unet_batch // 2 if cfg.shape_pairs else cfg.unet_batch
        idx = torch.from_numpy(rng.integers(len(latents), size=size))
        z0 = latents[idx]
        batch_specs = [specs[i] for i in idx.tolist()]
        texts = [td.training_caption(spec, rng, cfg.drop_motion, cfg.drop_all) for spec in batch_specs]
        # layout and motion are decided at high noise levels: a share of each batch is drawn there
        n_train = scheduler.config.num_train_timesteps
        t = torch.randint(0, max(1, int(cfg.t_max * n_train)), (size,))
        high = torch.rand(size) < cfg.high_t
        t[high] = torch.randint(int(0.8 * n_train), n_train, (int(high.sum()),))
        if cfg.shape_pairs:  # each clip and its other-shape counterpart, same caption otherwise, same t (and noise)
            pairs = [shape_counterpart(spec) for spec in batch_specs]
            texts += [text.replace(f" {a.shape} ", f" {b.shape} ") for text, a, b in zip(texts, batch_specs, pairs)]
            z0, batch_specs, t = torch.cat([z0, pair_latents[idx]]), batch_specs + pairs, torch.cat([t, t])
        lr = cfg.unet_lr * _lr_factor(step, steps.estimate(), cfg.warmup if not image_steps else 50)
        diffusion_loss, distill = train_step(z0, t, texts, batch_specs, lr)
        step += 1
        if cfg.shape_pairs:
            pair_window.append(train_step.pair_loss.item())
        window.append(diffusion_loss)
        if distill is not None:
            distill_window.append(distill)
        if step % 50 == 0:
            curve.append((step, float(np.mean(window))))
            if distill_window:
                distill_curve.append((step, float(np.mean(distill_window))))
            if pair_window:
                pair_curve.append((step, float(np.mean(pair_window))))
            window, distill_window, pair_window = [], [], []
            if step % 250 == 0:
                rate = (time.perf_counter() - t_train) / step
                log.say(f"unet step {step}/{steps.estimate()} loss {curve[-1][1]:.4f}"
                        + (f" distill {distill_curve[-1][1]:.4f}" if distill_curve else "")
                        + (f" pair {pair_curve[-1][1]:.4f}" if pair_curve else "")
                        + f" ({rate:.2f} s/step)")
                log.data["phases"]["unet"] = dict(steps=step, loss_curve=curve, distill_curve=distill_curve,
                                                  evaluations=evals)
                log.save()
        if judge is not None and eval_every and step % eval_every == 0:
            pipe = make_pipeline(vae, ema_text, ema_unet, tokenizer=tokenizer)
            res, _ = evaluate_samples(pipe, judge, cfg.eval_clips, 1000, cfg.eval_ddim_steps, cfg.eval_guidance)
            if cfg.eval_transfer and scorer is not None:
                # the final measurement's references: one curve
                res["transfer"] = transfer_check(pipe, scorer, cfg.eval_transfer,
                                                 seed=cfg.seed + FINAL_SEED_OFFSET + TRANSFER_SEED_OFFSET)
            res.update(step=step, minutes=log.elapsed() / 60)
            if cfg.snapshot:
                _snapshot(vae, ema_text, ema_unet, tokenizer, Path(cfg.snapshot), step)
            evals.append(res)
            log.say(f"unet step {step} samples: shape {res['shape']:.2f} colour {res['color']:.2f} "
                    f"direction {res['direction']:.2f}, follows motion words {res['motion_follows_words']:+.2f} "
                    f"({res['seconds_per_clip']:.1f} s/clip)" + (
                        f"; transfer: method {res['transfer']['method']:+.2f} vs base {res['transfer']['base']:+.2f}"
                        if "transfer" in res else ""))
    if window:
        curve.append((step, float(np.mean(window))))
    log.data["phases"]["unet"] = dict(
        steps=step, batch=cfg.unet_batch, loss_curve=curve, distill_curve=distill_curve, pair_curve=pair_curve,
        evaluations=evals,
        resumed_from=cfg.resume or None,
        image_steps=image_steps, image_batch=cfg.image_batch, image_curve=image_curve,
        seconds_per_step=(time.perf_counter() - t_train) / max(step, 1),
        params_unet=sum(p.numel() for p in unet.parameters()),
        params_text_encoder=sum(p.numel() for p in text_encoder.parameters()))
    return ema_unet, ema_text, tokenizer


def _train_step(cfg: BuildConfig, scheduler, unet, text_encoder, head, teacher, tokens, opt, params, emas):
    """One optimiser step of the UNet + text encoder, shared by the frame and clip phases:
    step(z0 [B, 4, F, h, w], timesteps, captions, the clips' specs, lr) → (diffusion loss, distillation loss or None),
    with the EMA weights updated (their warm-up counts the steps of both phases)."""
    import torch
    import torch.nn.functional as F

    updates = 0

    def step(z0, t, texts: list[str], specs: list[td.ClipSpec], lr: float) -> tuple[float, float | None]:
        nonlocal updates
        paired = cfg.shape_pairs and z0.shape[2] > 1  # the clip phase's batches are pairs (first half, second half)
        noise = torch.randn_like(z0[: len(z0) // 2]).repeat(2, 1, 1, 1, 1) if paired else torch.randn_like(z0)
        target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(z0, noise, t)
        for g in opt.param_groups:
            g["lr"] = lr
        pred = unet(scheduler.add_noise(z0, noise, t), t, encoder_hidden_states=text_encoder(tokens(texts))[0]).sample
        loss = diffusion_loss = F.mse_loss(pred, target)
        if paired:
            # the error of the pair's difference (what the shape words alone change) weighted up: the plain loss
            # holds it at weight 1/2, beside everything the two clips share
            k = len(z0) // 2
            step.pair_loss = F.mse_loss(pred[:k] - pred[k:], target[:k] - target[k:])
            loss = loss + cfg.shape_pairs * step.pair_loss
        distill = None
        if teacher is not None:
            plain = [spec.caption(with_motion=False) for spec in specs]
            pooled = text_encoder(tokens(plain)).pooler_output
            distill = 1 - F.cosine_similarity(head(pooled), teacher(plain), dim=-1).mean()
            loss = loss + cfg.text_distill * distill
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        updates += 1
        decay = min(cfg.ema, (1 + updates) / (10 + updates))
        with torch.no_grad():
            for src, dst in zip((unet, text_encoder), emas):
                for p, q in zip(src.parameters(), dst.parameters()):
                    q.lerp_(p, 1 - decay)
        return diffusion_loss.item(), (distill.item() if distill is not None else None)

    return step


def _train_on_frames(cfg: BuildConfig, log: BuildLog, train_step, latents, specs, rng: np.random.Generator,
                     seconds: float) -> tuple[list, int]:
    """The image phase: the UNet3D on one-frame clips (a random frame of each training clip, its caption without
    motion words, timesteps uniform) for `seconds` → (loss curve, steps)."""
    import torch

    if seconds <= 0:
        return [], 0
    steps = _Steps(0, seconds, probe=20)
    curve, window, step = [], [], 0
    t0 = time.perf_counter()
    while not steps.done(step):
        idx = torch.from_numpy(rng.integers(len(latents), size=cfg.image_batch))
        frame = torch.from_numpy(rng.integers(td.FRAMES, size=cfg.image_batch))
        z0 = latents[idx, :, frame][:, :, None]                                   # [B, 4, 1, h, w]
        batch_specs = [specs[i] for i in idx.tolist()]
        texts = [td.training_caption(spec, rng, 1.0, cfg.drop_all) for spec in batch_specs]
        t = torch.randint(0, SCHEDULER_CONFIG["num_train_timesteps"], (cfg.image_batch,))
        loss, _ = train_step(z0, t, texts, batch_specs,
                             cfg.unet_lr * _lr_factor(step, steps.estimate(), cfg.warmup))
        step += 1
        window.append(loss)
        if step % 50 == 0:
            curve.append((step, float(np.mean(window))))
            window = []
            if step % 250 == 0:
                log.say(f"unet (frames) step {step}/{steps.estimate()} loss {curve[-1][1]:.4f} "
                        f"({(time.perf_counter() - t0) / step:.2f} s/step)")
    return curve, step


def _snapshot(vae, text_encoder, unet, tokenizer, folder: Path, step: int) -> None:
    """The EMA pipeline so far, replaced atomically (to try inversion on a build that is still running)."""
    tmp = folder.with_name(f".{folder.name}-{step}")
    save_pipeline(vae, text_encoder, unet, tokenizer, tmp, {"format": TOY_FORMAT, "partial_step": step})
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def save_pipeline(vae, text_encoder, unet, tokenizer, folder: Path, meta: dict) -> Path:
    """save_pretrained in fp16 (loading casts to the requested dtype: fp32 on CPU)."""
    import torch

    pipe = make_pipeline(copy.deepcopy(vae).to(torch.float16), copy.deepcopy(text_encoder).to(torch.float16),
                         copy.deepcopy(unet).to(torch.float16), tokenizer=tokenizer)
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / "motion_sweep_toy.json").write_text(json.dumps(meta, indent=1, default=_jsonable))
    return folder


# ------------------------------------------------------------------------------------------- build
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
            vae, clip_model = load_built(Path(cfg.reuse), log)
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
    meta_path.write_text(json.dumps(meta, default=_jsonable))
    return model


def load_built(world: Path, log: BuildLog):
    """The VAE and toy CLIP of an earlier build (`--reuse`), in fp32, with that build's logs of them."""
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    vae = AutoencoderKL.from_pretrained(world / "pipeline" / "vae", torch_dtype=torch.float32).eval()
    clip_model = build_clip()
    clip_model.load_state_dict({k: v.float() for k, v in
                                load_file(str(world / "clip" / "open_clip_model.safetensors")).items()})
    earlier = json.loads((world / "build_log.json").read_text())
    for phase in ("vae", "clip"):
        log.data["phases"][phase] = earlier["phases"][phase] | {"reused_from": str(world)}
    log.say(f"vae, clip: reused from {world}")
    return vae, clip_model.eval()


def held_out_frames(seed: int, n: int = 360) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    frames, specs = random_frames(np.random.default_rng(seed), n)
    return frames, [(s.shape, s.color, s.background) for s in specs]


def zero_shot(judge: ToyJudge, frames: np.ndarray, labels: list[tuple[str, str, str]]) -> dict:
    got = judge.classify(frames)
    return {k: float(np.mean([g[i] == l[i] for g, l in zip(got, labels)]))
            for i, k in enumerate(("shape", "color", "background"))} | {"n": len(labels)}


def toy_scorer(clip_dir: Path):
    """The project's scorer on a built toy CLIP folder (its `local-dir:` name) with Lucas–Kanade tracks."""
    from evaluation import ScorerConfig, get_scorer

    return get_scorer(ScorerConfig.from_names(clip=f"local-dir:{Path(clip_dir).resolve()}", tracker="lk", fid="clip"))


#: measure() runs at the build seed + FINAL_SEED_OFFSET, its transfer check at that + TRANSFER_SEED_OFFSET (the
#: build's sample checks reuse those references, so their transfer numbers and the final one are one curve)
FINAL_SEED_OFFSET, TRANSFER_SEED_OFFSET = 500, 400


def measure(pipeline_dir: Path = PIPELINE_DIR, clip_dir: Path = CLIP_DIR, seed: int = FINAL_SEED_OFFSET,
            n: int = 24,
            settings: tuple[tuple[int, float], ...] = ((30, 12.0), (30, 7.5)), transfer: int = 4) -> dict:
    """Load the saved world as users do and measure it: toy-CLIP zero-shot accuracy on held-out frames,
    prompt following (shape, colour, direction) of `n` generations per (DDIM steps, guidance) setting, and
    whether the method transfers motion (`transfer_check` over `transfer` references; 0 skips it)."""
    from .presets import get_preset, load_pipeline

    t0 = time.perf_counter()
    pipe = load_pipeline(get_preset("toy", model=pipeline_dir), device="cpu")
    scorer = toy_scorer(clip_dir)
    judge = ToyJudge(scorer.clip)  # one toy CLIP for the judge and the transfer check, as the tests have it
    out: dict = {"load_seconds": time.perf_counter() - t0}
    out["clip_zero_shot"] = zero_shot(judge, *held_out_frames(seed + 1))
    out["samples"] = []
    for steps, guidance in settings:
        res, _ = evaluate_samples(pipe, judge, n, seed, steps, guidance)
        out["samples"].append(res)
    if transfer:
        t1 = time.perf_counter()
        out["transfer"] = transfer_check(pipe, scorer, transfer, seed=seed + TRANSFER_SEED_OFFSET) | {
            "seconds": time.perf_counter() - t1}
    return out


def _fmt(x) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def _reused(phase: dict) -> str:
    return f" (reused from {phase['reused_from']})" if phase.get("reused_from") else ""


def log_markdown(data: dict) -> str:
    """The build log as a short markdown report (the JSON beside it has every number)."""
    ph = data.get("phases", {})
    lines = ["# Toy world build log", "",
             f"seed {data['config']['seed']}, {data.get('torch_threads')} torch threads, "
             f"training {data.get('train_seconds', 0) / 60:.1f} min, total {data.get('total_seconds', 0) / 60:.1f} min",
             "", "| phase | steps | minutes | result |", "|---|---|---|---|"]
    if "vae" in ph:
        v = ph["vae"]
        lines.append(f"| VAE | {v['steps']} | {v['seconds'] / 60:.1f} | held-out PSNR {v['psnr_db']:.1f} dB, "
                     f"scaling factor {v['scaling_factor']:.4f}{_reused(v)} |")
    if "clip" in ph:
        c = ph["clip"]
        zs = c.get("zero_shot", {})
        lines.append(f"| toy CLIP | {c['steps']} | {c['seconds'] / 60:.1f} | zero-shot shape {zs.get('shape', 0):.3f}, "
                     f"colour {zs.get('color', 0):.3f}, background {zs.get('background', 0):.3f}{_reused(c)} |")
    if "latents" in ph:
        lines.append(f"| latents | {ph['latents']['clips']} clips | {ph['latents']['seconds'] / 60:.1f} | |")
    if "unet" in ph:
        u = ph["unet"]
        if u.get("image_steps"):
            lines.append(f"| UNet + text encoder, single frames | {u['image_steps']} (batch {u.get('image_batch')} "
                         f"frames) | | final loss {u['image_curve'][-1][1]:.4f} |")
        lines.append(f"| UNet + text encoder | {u['steps']} (batch {u.get('batch')}) | "
                     f"{u.get('seconds', 0) / 60:.1f} | final loss {u['loss_curve'][-1][1]:.4f} |")
        evals = u.get("evaluations", [])
        transfer = any("transfer" in e for e in evals)
        lines += ["", "Samples of the EMA weights during training (prompted shape, colour, straight motion"
                  + ("; transfer: the method's and the base model's mean motion fidelity, `transfer_check`" if transfer
                     else "") + "):", "",
                  "| step | min | shape | colour | both | direction | follows motion words |"
                  + (" transfer: method / base (method higher) |" if transfer else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if transfer else "")]
        for e in evals:
            row = (f"| {e['step']} | {e['minutes']:.0f} | {e['shape']:.2f} | {e['color']:.2f} | "
                   f"{e['both']:.2f} | {e['direction']:.2f} | {_fmt(e.get('motion_follows_words', '-'))} |")
            if transfer:
                tr = e.get("transfer")
                row += (f" {tr['method']:+.2f} / {tr['base']:+.2f} ({tr['method_higher']} of {tr['n']}) |" if tr
                        else " |")
            lines.append(row)
        for name, curve in (("UNet loss on single frames", u.get("image_curve")), ("UNet loss", u["loss_curve"]),
                            ("text distillation loss", u.get("distill_curve"))):
            if curve:
                pick = curve[:: max(1, len(curve) // 12)]
                pick += curve[-1:] if pick[-1] != curve[-1] else []
                lines += ["", f"{name} (mean over 50 steps): " + ", ".join(f"{s}: {l:.4f}" for s, l in pick)]
        if u.get("resumed_from"):
            lines += ["", f"UNet + text encoder continued from {u['resumed_from']}"]
    fin = data.get("final", {})
    if fin:
        zs = fin["clip_zero_shot"]
        lines += ["", "## Final, through `load_pipeline` and the `local-dir:` toy CLIP", "",
                  f"toy-CLIP zero-shot on {zs['n']} held-out frames: shape {zs['shape']:.3f}, colour {zs['color']:.3f}, "
                  f"background {zs['background']:.3f}", "",
                  "| DDIM steps | guidance | n | shape | colour | both | direction | follows motion words | s/clip |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in fin["samples"]:
            lines.append(f"| {r['ddim_steps']} | {r['guidance']:g} | {r['n']} | {r['shape']:.2f} | {r['color']:.2f} | "
                         f"{r['both']:.2f} | {r['direction']:.2f} | {_fmt(r.get('motion_follows_words', '-'))} | "
                         f"{r['seconds_per_clip']:.2f} |")
        if fin.get("transfer"):
            tr = fin["transfer"]
            lines += ["", f"Motion transfer ({tr['n']} references, another shape, no motion word; debias `difference`): "
                          f"motion fidelity {tr['method']:.2f} with the embeddings vs {tr['base']:.2f} for the base "
                          f"model from the same seed, higher in {tr['method_higher']} of {tr['n']}"]
    if data.get("bytes"):
        lines += ["", f"Size on disk: {sum(data['bytes'].values()) / 1e6:.1f} MB"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.toy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train the toy world and write model/toy_world/")
    defaults = BuildConfig()
    b.add_argument("--minutes", type=float, default=defaults.minutes,
                   help=f"time budget of the training phases (default {defaults.minutes:g}); step options win")
    b.add_argument("--clip-share", type=float, default=defaults.clip_share)
    b.add_argument("--vae-share", type=float, default=defaults.vae_share)
    for name in ("vae_steps", "clip_steps", "unet_steps", "train_clips", "unet_batch", "seed", "threads",
                 "eval_every", "eval_clips", "image_batch", "eval_transfer"):
        b.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("unet_lr", "drop_motion", "high_t", "t_max", "text_distill", "image_share", "shape_pairs"):
        b.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    b.add_argument("--reuse", default="", help="keep the VAE and toy CLIP of this built world (train the UNet only)")
    b.add_argument("--resume", default="", help="continue the UNet + text encoder of this built world (with --reuse "
                                                "of the same world: a fine-tune)")
    b.add_argument("--out", default=defaults.out, help="output folder (default: the shipped model/toy_world)")
    b.add_argument("--snapshot", default="", help="also save the EMA pipeline here at every sample check")
    e = sub.add_parser("eval", help="measure a built toy world")
    e.add_argument("--out", default=str(TOY_DIR))
    e.add_argument("-n", type=int, default=24)
    e.add_argument("--transfer", type=int, default=4, help="references of the motion-transfer check (0 skips it)")
    e.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "eval" and args.transfer < 0:
        parser.error(f"--transfer {args.transfer}: give a number of references, or 0 to skip the transfer check")
    if args.command == "build" and not 0 < args.t_max <= 1:
        parser.error(f"--t-max {args.t_max}: give a share of the noise schedule in (0, 1] (1 = all timesteps)")
    if args.command == "build" and args.shape_pairs < 0:
        parser.error(f"--shape-pairs {args.shape_pairs}: give a weight >= 0 (0 = no paired loss)")
    if args.command == "build" and args.eval_transfer < 0:
        parser.error(f"--eval-transfer {args.eval_transfer}: give a number of references, or 0 for no transfer "
                     "check at the sample checks")
    if args.command == "build":
        cfg = BuildConfig(**{k: v for k, v in vars(args).items() if k in BuildConfig.__dataclass_fields__})
        data = build(cfg)
        print(json.dumps(data.get("final", {}), indent=1, default=_jsonable))
    else:
        import torch

        torch.set_num_threads(args.threads)
        out = Path(args.out)
        print(json.dumps(measure(out / "pipeline", out / "clip", n=args.n, transfer=args.transfer), indent=1,
                         default=_jsonable))
    return 0


if __name__ == "__main__":
    sys.exit(main())
