"""The builder's training phases (`toyworld.train`): the image phase, the clip phase's batches (shape pairs,
timestep range) and the sample checks of the UNet phase, on fresh weights for a few steps."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from toyworld import data as td
from toyworld import train
from toyworld.architecture import (GENERATION_DEFAULTS, INVERSION_DEFAULTS, build_scheduler, build_text_encoder,
                                   build_unet, build_vae)
from toyworld.buildlog import BuildLog, log_markdown


def test_the_image_phase_trains_the_unet_on_single_frames_with_appearance_captions():
    """Before clips, the builder's image phase feeds one frame per training clip (a [B, 4, 1, h, w] batch) with
    captions that never name a motion (a frame cannot show one), and it does change the weights."""
    import torch

    cfg = train.BuildConfig(image_batch=4, drop_all=0.0)
    unet, text_encoder = build_unet(), build_text_encoder()
    from model.presets import clip_tokenizer

    tokenizer, seen, shapes = clip_tokenizer(), [], []

    def tokens(texts):
        seen.extend(texts)
        return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids

    forward = unet.forward

    def spy(sample, *args, **kwargs):
        shapes.append(tuple(sample.shape))
        return forward(sample, *args, **kwargs)

    emas = (copy.deepcopy(unet), copy.deepcopy(text_encoder))
    unet.forward = spy
    specs = [td.sample_spec(np.random.default_rng(k)) for k in range(6)]
    latents = torch.randn(6, 4, td.FRAMES, 8, 8)
    params = [*unet.parameters(), *text_encoder.parameters()]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-3)
    train_step = train._train_step(cfg, build_scheduler(), unet, text_encoder, None, None, tokens, opt, params, emas)
    curve, steps = train._train_on_frames(cfg, BuildLog(None), train_step, latents, specs,
                                          np.random.default_rng(0), seconds=1e-3)
    assert steps >= 1 and shapes and all(s == (4, 4, 1, 8, 8) for s in shapes)
    assert seen and not any(word in t for t in seen for word in ("moves", "zigzags"))
    assert set(seen) <= {s.caption(with_motion=False) for s in specs}
    assert any(not torch.equal(a, b) for a, b in zip(before, params))


def _record_clip_phase(monkeypatch, cfg: train.BuildConfig) -> list[dict]:
    """Run `train_unet`'s clip phase for cfg's steps on a random UNet and VAE; per step: its batch, timesteps,
    captions, specs, the UNet's noisy input and prediction, and the paired loss the step computed."""
    unet = build_unet()
    seen: list[dict] = []
    forward = unet.forward

    def spy(sample, timestep, **kwargs):
        out = forward(sample, timestep, **kwargs)
        if sample.shape[2] > 1 and len(seen[-1]) == 4:  # the step's diffusion forward (not the distillation's)
            seen[-1].update(noisy=sample.detach().clone(), pred=out.sample.detach().clone())
        return out

    unet.forward = spy
    real = train._train_step

    def recording_train_step(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(z0, t, texts, specs, lr):
            seen.append(dict(z0=z0.clone(), t=t.clone(), texts=list(texts), specs=list(specs)))
            out = step(z0, t, texts, specs, lr)
            wrapped.pair_loss = seen[-1]["pair_loss"] = getattr(step, "pair_loss", None)
            return out

        return wrapped

    monkeypatch.setattr(train, "build_unet", lambda: unet)
    monkeypatch.setattr(train, "_train_step", recording_train_step)
    train.train_unet(cfg, BuildLog(None), build_vae(), None)
    return seen


def test_shape_pairs_train_each_clip_beside_its_other_shape_from_the_same_noise(monkeypatch):
    """`build --shape-pairs W`: each clip-phase batch is half clips, half the same clips with the next shape
    (same path, size, colour, background; the caption changed in its shape word only), at the same timestep
    and from the same noise, and the paired loss is the error of the pair's difference, recomputed here from
    the UNet's own input and output."""
    import torch

    cfg = train.BuildConfig(train_clips=6, unet_steps=2, unet_batch=6, shape_pairs=2.0)
    steps = _record_clip_phase(monkeypatch, cfg)
    assert len(steps) == 2
    alphas = build_scheduler().alphas_cumprod
    for s in steps:
        k = len(s["z0"]) // 2
        a, b = s["specs"][:k], s["specs"][k:]
        assert k == 3 and b == [td.shape_counterpart(x) for x in a]
        assert all(x.shape != y.shape and x.path().tolist() == y.path().tolist() and (x.color, x.size) ==
                   (y.color, y.size) for x, y in zip(a, b))
        assert s["texts"][k:] == [t.replace(f" {x.shape} ", f" {y.shape} ") for t, x, y in zip(s["texts"], a, b)]
        assert torch.equal(s["t"][:k], s["t"][k:])
        ab = alphas[s["t"]].view(-1, 1, 1, 1, 1)
        noise = (s["noisy"] - ab.sqrt() * s["z0"]) / (1 - ab).sqrt()
        torch.testing.assert_close(noise[:k], noise[k:], atol=1e-4, rtol=1e-4)
        target = ab.sqrt() * noise - (1 - ab).sqrt() * s["z0"]  # v
        expected = torch.nn.functional.mse_loss(s["pred"][:k] - s["pred"][k:], target[:k] - target[k:])
        assert s["pair_loss"].item() == pytest.approx(expected.item(), rel=1e-3)
    assert [td.shape_counterpart(td.shape_counterpart(td.shape_counterpart(x))) for x in a] == a


def test_t_max_keeps_the_clip_phase_below_a_share_of_the_noise_schedule(monkeypatch):
    """`build --t-max 0.3 --high-t 0`: every clip-phase timestep is below 300 of 1,000; the high-noise share,
    when on, still draws from the noisiest 20 %; without pairs the batch is the plain unet_batch."""
    low = _record_clip_phase(monkeypatch, train.BuildConfig(train_clips=4, unet_steps=3, unet_batch=8, t_max=0.3,
                                                            high_t=0.0))
    assert all(len(s["t"]) == 8 and int(s["t"].max()) < 300 and s["pair_loss"] is None for s in low)
    mixed = _record_clip_phase(monkeypatch, train.BuildConfig(train_clips=4, unet_steps=3, unet_batch=8, t_max=0.3,
                                                              high_t=1.0))
    assert all(int(s["t"].min()) >= 800 for s in mixed)


def test_a_build_can_check_transfer_at_every_sample_check(scorer, judge, monkeypatch):
    """`build --eval-transfer N`: every sample check of the UNet phase also runs `transfer_check` on the EMA
    weights, with the final measurement's references, and the build log shows the curve. Plumbing here: a fresh
    UNet trained 2 steps on 4 clips, 3 inversion, 2 denoising and 2 DDIM inversion steps; a build without it has no
    such column."""
    monkeypatch.setitem(INVERSION_DEFAULTS, "steps", 3)
    monkeypatch.setitem(GENERATION_DEFAULTS, "steps", 2)
    cfg = train.BuildConfig(train_clips=4, unet_steps=2, unet_batch=2, eval_every=2, eval_clips=1, eval_ddim_steps=2,
                            eval_transfer=2)
    calls = []
    check = train.transfer_check
    monkeypatch.setattr(train, "transfer_check", lambda *a, **k: calls.append(k["seed"]) or check(*a, **k, ddim_steps=2))
    log = BuildLog(None)
    train.train_unet(cfg, log, build_vae(), judge, scorer)
    (sample,) = log.data["phases"]["unet"]["evaluations"]
    assert calls == [cfg.seed + 900] and sample["step"] == 2  # measure(seed=cfg.seed + 500) checks seed + 900
    assert sample["transfer"]["n"] == 2 and sample["transfer"]["motions"] == ["right", "down"]
    log.data["config"] = {"seed": 0}
    tr = sample["transfer"]
    row = f"| {tr['method']:+.2f} / {tr['base']:+.2f} ({tr['method_higher']} of 2) |"
    md = log_markdown(log.data)
    assert "transfer: method / base (method higher) |" in md and row in md
    del sample["transfer"]
    assert "transfer" not in log_markdown(log.data)
