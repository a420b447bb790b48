"""The toy world's training phases: what a build trains (`BuildConfig`) and the loops that train it.

Build order: VAE (reconstruction + a tiny KL) → toy CLIP (contrastive, on clean frames and VAE decodes) → latents
of a fixed training set → UNet + text encoder (v-prediction at zero terminal SNR, caption dropout; optionally
single frames first, then clips), with the sample quality of the EMA weights measured along the way. Each phase
runs a fixed number of steps or fills its share of a time budget. `builder.build` runs the phases in order.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import videoio
from vocabulary import TOY_WORLD_DIR

from . import data as td
from .architecture import (CLIP_MODEL_CONFIG, SCHEDULER_CONFIG, TEXT_CONFIG, TOY_FORMAT, build_clip,
                           build_scheduler, build_text_encoder, build_unet, build_vae, load_built_unet,
                           make_pipeline, save_pipeline)
from .buildlog import BuildLog
from .judge import ToyJudge, evaluate_samples
from .measurement import FINAL_SEED_OFFSET, TRANSFER_SEED_OFFSET
from .transfer import transfer_check


@dataclass
class BuildConfig:
    """What `python -m toyworld build` trains; step counts of 0 are filled from the time budget."""

    seed: int = 0
    minutes: float = 80.0          # total budget of the training phases (evaluations and saving come on top)
    threads: int = 1                # more than the free cores makes torch's CPU threads stall (10× slower)
    out: str = str(TOY_WORLD_DIR)
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
    # Off by default: as a fine-tune of build 3 (build 11) it kept squares at 0.2 but not above (toyworld/NOTES.md).
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
    # sufficient: builds 5–7 kept them apart and still drew one blob for both (toyworld/NOTES.md).
    text_distill: float = 0.0
    # Weight of a paired loss (0 = off): each clip-phase batch is unet_batch/2 clips and the same clips with another
    # shape (`data.shape_counterpart`), with the same caption but for the shape word, the same timestep and noise;
    # the error of the difference of their predictions is added with this weight. Why: a square and a circle of 18 px
    # differ in 1.7 % of the frame, so the plain loss hardly sees the corners beside position, colour and motion.
    # Off by default: build 12 (weight 8) then kept real squares re-noised to 0.4 of the schedule (build 3: 2 of 6),
    # but from 0.6 up and from pure noise it still drew one blob; at 16 (build 13) it lost the motion words.
    shape_pairs: float = 0.0
    # Share of the UNet phase spent first on single frames (captions without motion words, uniform timesteps), as
    # video models start from an image model (0 = none, as in build 3). Why: every clip-trained build drew squares
    # and circles as one blob whose outline the noise decides; a batch of 64 frames shows 64 shapes for the cost of
    # 16 clips. Build 8 (0.3, with 24–28 px shapes) is the first whose squares come out boxy; build 10 (0.2,
    # 16–20 px) still draws one blob, and both weakened the method's transfer (toyworld/NOTES.md), so it stays off.
    image_share: float = 0.0
    image_batch: int = 64


# ------------------------------------------------------------------------- shared by the phases
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


def _to_tensor(frames: np.ndarray):
    """uint8 [..., H, W, 3] → float [..., 3, H, W] in [-1, 1]."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1.0
    return x.movedim(-1, -3)


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
        frames, _ = td.random_frames(np.random.default_rng(cfg.seed + 2), 256)
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
def _decoded_pool(vae, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[td.ClipSpec]]:
    """Frames as generated clips look: VAE decodes of slightly perturbed latents of random frames."""
    import torch

    frames, specs = td.random_frames(rng, n)
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
        frames, specs = td.random_frames(rng, cfg.clip_batch - n_pool)
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


def train_unet(cfg: BuildConfig, log: BuildLog, vae, judge: ToyJudge | None, scorer=None):
    import torch

    from model.presets import clip_tokenizer

    latents, specs = encode_dataset(vae, cfg.train_clips, cfg.seed + 20, log)
    if cfg.shape_pairs:  # the same clips with their other shape, encoded once (their time counts as the latents')
        t0 = time.perf_counter()
        pair_latents = encode_clips(vae, [td.shape_counterpart(s) for s in specs], log)
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
            pairs = [td.shape_counterpart(spec) for spec in batch_specs]
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
