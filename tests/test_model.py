"""model/: embeddings, processors, inversion, generation and presets on the tiny preset (CPU)."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch

import videoio
from model import (EmbeddingMismatchError, EmbeddingSpec, GenerationConfig, InversionConfig, ModelNotFoundError,
                   MotionEmbeddings, debias_mv, generate, get_preset, load_pipeline, prepare_reference,
                   train_embeddings)
from vocabulary import DEBIAS_MODES, OFF, QK_DESIGNS, V_DESIGNS

F, H, W = 8, 64, 64  # tiny preset: 8 frames at 64x64 → latent 8x8


def unet_inputs(pipe, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, F, H // 8, W // 8, generator=g)
    ctx = torch.randn(batch, 77, pipe.unet.config.cross_attention_dim, generator=g)
    return x, torch.tensor([500]), ctx


def spec(qk="1d", v="2d", **kw):
    return EmbeddingSpec(qk=qk, v=v, latent_height=H // 8, latent_width=W // 8, **kw)


@pytest.fixture(scope="module")
def reference(tiny_pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "square.mp4"
    videoio.write_video(path, videoio.moving_shape_video(12, H, W, direction=(1, 0)))
    return prepare_reference(tiny_pipe, path, F, H, W, ddim_steps=5)


def randomize(emb: MotionEmbeddings, seed=1, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in emb.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


# --- embeddings and processors ----------------------------------------------------------------------------

@pytest.mark.parametrize("qk,v", list(itertools.product((*QK_DESIGNS, OFF), (*V_DESIGNS, OFF))))
def test_zero_embeddings_equal_stock_unet_and_trained_ones_do_not(tiny_pipe, qk, v):
    unet = tiny_pipe.unet
    x, t, ctx = unet_inputs(tiny_pipe, batch=2)
    with torch.no_grad():
        stock = unet(x, t, encoder_hidden_states=ctx).sample
        emb = MotionEmbeddings.create(unet, spec(qk, v)).attach(unet)
        try:
            zero = unet(x, t, encoder_hidden_states=ctx).sample
            randomize(emb)
            moved = unet(x, t, encoder_hidden_states=ctx).sample
        finally:
            emb.detach(unet)
        after = unet(x, t, encoder_hidden_states=ctx).sample
    torch.testing.assert_close(zero, stock, rtol=0, atol=1e-6)
    assert torch.equal(after, stock), "detach must restore the stock processors"
    if qk == v == OFF:
        assert torch.equal(moved, stock)
    else:
        assert (moved - stock).abs().max() > 1e-3


def test_parameter_shapes_and_sharing(tiny_pipe):
    emb = MotionEmbeddings.create(tiny_pipe.unet, spec("2d", "1d", slots=16))
    # tiny: layers_per_block=1 → 1 temporal block in down_blocks.2 and 2 in up_blocks.1, latent 2x2 there
    assert len(emb.qk) == 3 and len(emb.v) == 6
    assert {tuple(p.shape) for p in emb.qk.values()} == {(4, 16, 64)}
    assert {tuple(p.shape) for p in emb.v.values()} == {(1, 16, 64)}
    emb.attach(tiny_pipe.unet)
    try:
        block = tiny_pipe.unet.get_submodule("down_blocks.2.temp_attentions.0.transformer_blocks.0")
        p1, p2 = block.attn1.processor, block.attn2.processor
        assert p1.qk is p2.qk, "one MQK per block, shared by attn1 and attn2"
        assert p1.v is not p2.v, "one MV per attention"
    finally:
        emb.detach(tiny_pipe.unet)


def test_gradients_reach_only_the_embeddings_and_only_used_frame_slots(tiny_pipe):
    unet = tiny_pipe.unet
    emb = MotionEmbeddings.create(unet, spec("1d", "2d", slots=12)).attach(unet)
    try:
        x, t, ctx = unet_inputs(tiny_pipe)
        unet(x, t, encoder_hidden_states=ctx).sample.pow(2).mean().backward()
    finally:
        emb.detach(unet)
    assert all(p.grad is None for p in unet.parameters())
    for p in emb.parameters():
        assert p.grad is not None and p.grad[:, :F].abs().sum() > 0
        assert p.grad[:, F:].abs().sum() == 0, "frame slots past the video's frames get no gradient"


@pytest.mark.parametrize("which", ["qk", "v"])
def test_mqk_changes_only_q_and_k_and_mv_only_v(tiny_pipe, which):
    """In the full UNet: with only MQK non-zero, V sees the plain features; with only MV, Q and K do."""
    unet = tiny_pipe.unet
    x, t, ctx = unet_inputs(tiny_pipe)
    emb = MotionEmbeddings.create(unet, spec("1d", "2d"))
    randomize(emb)
    with torch.no_grad():
        for p in (emb.v if which == "qk" else emb.qk).values():
            p.zero_()  # only the embedding under test is non-zero
    attn = unet.get_submodule("up_blocks.1.temp_attentions.0.transformer_blocks.0.attn1")
    seen = {}
    hooks = [attn.register_forward_pre_hook(lambda m, args, kw: seen.__setitem__("features", args[0].clone()),
                                            with_kwargs=True)]
    hooks += [getattr(attn, n).register_forward_hook(lambda m, inp, out, n=n: seen.__setitem__(n, inp[0].clone()))
              for n in ("to_q", "to_k", "to_v")]
    emb.attach(unet)
    try:
        with torch.no_grad():
            unet(x, t, encoder_hidden_states=ctx)
    finally:
        emb.detach(unet)
        for h in hooks:
            h.remove()
    assert torch.equal(seen["to_q"], seen["to_k"])
    if which == "qk":
        assert not torch.equal(seen["to_q"], seen["features"])
        assert torch.equal(seen["to_v"], seen["features"]), "MQK must not reach V"
    else:
        assert torch.equal(seen["to_q"], seen["features"]), "MV must not reach Q/K"
        assert not torch.equal(seen["to_v"], seen["features"])


def test_processor_q_k_v_inputs_by_construction():
    """MotionAttnProcessor on a bare Attention: Q/K see F+mQK, V sees F+mV (debiased)."""
    from diffusers.models.attention_processor import Attention

    from model import MotionAttnProcessor

    torch.manual_seed(0)
    attn = Attention(query_dim=8, heads=2, dim_head=4)
    hidden = torch.randn(6, 5, 8)  # 3 positions x batch 2, 5 frames, 8 channels
    qk = torch.nn.Parameter(torch.randn(1, 7, 8))
    mv = torch.nn.Parameter(torch.randn(3, 7, 8))
    seen = {}
    for n in ("to_q", "to_k", "to_v"):
        getattr(attn, n).register_forward_hook(lambda m, inp, out, n=n: seen.__setitem__(n, inp[0]))
    MotionAttnProcessor(qk, mv, "normalize")(attn, hidden)
    torch.testing.assert_close(seen["to_q"], hidden + qk[:, :5])
    torch.testing.assert_close(seen["to_k"], hidden + qk[:, :5])
    expected_v = (hidden.view(2, 3, 5, 8) + debias_mv(mv[:, :5], "normalize")).view(6, 5, 8)
    torch.testing.assert_close(seen["to_v"], expected_v)
    MotionAttnProcessor(qk, mv, "drop")(attn, hidden)
    torch.testing.assert_close(seen["to_v"], hidden)


def test_debias_modes_exact_values():
    m = torch.tensor([[[1.0, 10.0], [3.0, 20.0], [6.0, 40.0], [10.0, 70.0]]])  # [P=1, F=4, C=2]
    assert torch.equal(debias_mv(m, "none"), m)
    assert torch.equal(debias_mv(m, "difference"),
                       torch.tensor([[[1.0, 10.0], [2.0, 10.0], [3.0, 20.0], [4.0, 30.0]]]))
    assert torch.equal(debias_mv(m, "normalize"),
                       torch.tensor([[[-4.0, -25.0], [-2.0, -15.0], [1.0, 5.0], [5.0, 35.0]]]))
    assert debias_mv(m, "drop") is None
    with pytest.raises(ValueError, match="unknown debias 'diff'.*difference"):
        debias_mv(m, "diff")


def test_zeroscope_architecture_default_placement_matches_the_paper():
    """ZeroScope's UNet config (= diffusers defaults) on the meta device: 5 MQK [1,F,1280], 10 MV [180,F,1280]."""
    from diffusers import UNet3DConditionModel

    with torch.device("meta"):
        unet = UNet3DConditionModel()  # ZeroScope's config equals the defaults
        emb = MotionEmbeddings(spec_zs := EmbeddingSpec("1d", "2d", latent_height=320 // 8, latent_width=576 // 8),
                               __import__("model").temporal_blocks(unet, spec_zs.placement, 40, 72))
    assert len(emb.qk) == 5 and len(emb.v) == 10
    assert {tuple(p.shape) for p in emb.qk.values()} == {(1, 32, 1280)}
    assert {tuple(p.shape) for p in emb.v.values()} == {(180, 32, 1280)}
    assert emb.num_parameters() == 5 * 32 * 1280 + 10 * 180 * 32 * 1280 == 73_932_800  # ≈ 73.9 M


def test_unknown_design_and_placement_are_clear_errors(tiny_pipe):
    with pytest.raises(ValueError, match=r"unknown MQK design \(qk\) '3d'; accepted: 1d, 2d, off"):
        spec("3d", "2d")
    with pytest.raises(ValueError, match="unknown MV design"):
        spec("1d", "0d")
    with pytest.raises(ValueError, match=r"placement \['down_blocks.9'\] matches no temporal attention block"):
        MotionEmbeddings.create(tiny_pipe.unet, spec(placement=("down_blocks.9",)))


# --- save / load -----------------------------------------------------------------------------------------------

def test_save_load_round_trip_and_mismatch_errors(tiny_pipe, tmp_path):
    emb = MotionEmbeddings.create(tiny_pipe.unet, spec("2d", "2d", base_model="tiny"))
    randomize(emb)
    path = emb.save(tmp_path / "e.safetensors", {"step": 7})
    back, extra = MotionEmbeddings.load(path, tiny_pipe.unet)
    assert back.spec == emb.spec and extra == {"step": 7}
    for (n1, p1), (n2, p2) in zip(emb.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    # another resolution: the 2D tensors no longer match the block grid
    other = MotionEmbeddings.create(tiny_pipe.unet, EmbeddingSpec("1d", "2d", latent_height=16, latent_width=16))
    other.save(tmp_path / "o.safetensors")
    with pytest.raises(EmbeddingMismatchError, match="trained on a 16x16 latent grid but this model runs at 8x8"):
        MotionEmbeddings.load(tmp_path / "o.safetensors", tiny_pipe.unet, latent_size=(8, 8))
    with pytest.raises(FileNotFoundError, match="no embeddings file"):
        MotionEmbeddings.load(tmp_path / "missing.safetensors")


def test_other_placement_file_does_not_load(tiny_pipe, tmp_path):
    emb = MotionEmbeddings.create(tiny_pipe.unet, spec(placement=("up_blocks.2",)))
    emb.save(tmp_path / "p.safetensors")
    from diffusers import UNet3DConditionModel

    other = UNet3DConditionModel(block_out_channels=(32, 32, 64, 64), layers_per_block=2, norm_num_groups=8,
                                 cross_attention_dim=32, attention_head_dim=4)
    with pytest.raises(EmbeddingMismatchError):
        MotionEmbeddings.load(tmp_path / "p.safetensors", other)


# --- inversion ---------------------------------------------------------------------------------------------------

def _fixed_loss(pipe, latents, emb, prompt):
    from model.inversion import encode_prompt

    g = torch.Generator().manual_seed(123)
    ctx = encode_prompt(pipe, prompt)
    total = 0.0
    emb.attach(pipe.unet)
    try:
        with torch.no_grad():
            for t in (100, 300, 500, 700, 900):
                noise = torch.randn(latents.shape, generator=g)
                noisy = pipe.scheduler.add_noise(latents, noise, torch.tensor([t]))
                pred = pipe.unet(noisy, torch.tensor([t]), encoder_hidden_states=ctx).sample
                total += torch.nn.functional.mse_loss(pred, noise).item()
    finally:
        emb.detach(pipe.unet)
    return total / 5


def test_inversion_loss_equals_hand_computed_values():
    """pred ε̂ = [1, 3], target ε = [0, 1] over F=2 frames (shape 1x1x2x1x1), worked out by hand."""
    from model.inversion import inversion_loss

    pred = torch.tensor([1.0, 3.0]).view(1, 1, 2, 1, 1)
    target = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1, 1)
    s2 = math.sqrt(2)
    base = ((1 - 0) ** 2 + (3 - 1) ** 2) / 2  # = 2.5
    # frame 0: √2·ε̂ − ε̂[0] = [√2−1, 3√2−1], √2·ε − ε[0] = [0, √2] → ((√2−1)² + (2√2−1)²)/2 = 6 − 3√2
    term0 = ((s2 - 1) ** 2 + (2 * s2 - 1) ** 2) / 2
    # frame 1: √2·ε̂ − ε̂[1] = [√2−3, 3√2−3], √2·ε − ε[1] = [−1, √2−1] → ((√2−2)² + (2√2−2)²)/2 = 9 − 6√2
    term1 = ((s2 - 2) ** 2 + (2 * s2 - 2) ** 2) / 2
    assert math.isclose(term0, 6 - 3 * s2) and math.isclose(term1, 9 - 6 * s2)
    for r in (0, 1):  # "base" ignores the frame
        assert inversion_loss(pred, target, "base", r).item() == pytest.approx(base, rel=1e-6)
    assert inversion_loss(pred, target, "debiased_temporal", 0).item() == pytest.approx(base + term0, rel=1e-6)
    assert inversion_loss(pred, target, "debiased_temporal", 1).item() == pytest.approx(base + term1, rel=1e-6)
    # a mean over every element, not a sum: repeating the same values over batch and channels changes nothing
    assert inversion_loss(pred.repeat(2, 3, 1, 1, 1), target.repeat(2, 3, 1, 1, 1), "debiased_temporal", 1).item() \
        == pytest.approx(base + term1, rel=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        inversion_loss(pred, target, "l1")
    with pytest.raises(ValueError, match="frame 2 is outside the 2 frames"):
        inversion_loss(pred, target, "debiased_temporal", 2)


class _TimeOnlyUNet:
    """A stand-in UNet whose ε depends on the timestep only: ε(t) = z1·cos(t/150) + z2·sin(t/150).

    DDIM steps are then affine in x, so DDIM inversion followed by DDIM denoising is exact — if and only if the
    two schedules visit the same noise levels and call the model with the same timestep labels. Records t.
    """

    def __init__(self, shape, dtype):
        g = torch.Generator().manual_seed(7)
        self.z = torch.randn((2, *shape), generator=g, dtype=torch.float64)
        self.dtype = dtype
        self.seen: list[int] = []

    def __call__(self, x, t, encoder_hidden_states=None):
        t = int(t)
        self.seen.append(t)
        eps = self.z[0] * math.cos(t / 150) + self.z[1] * math.sin(t / 150)
        return types.SimpleNamespace(sample=eps.to(x.dtype))


def _ddim_denoise(pipe, unet, x, steps):
    """Generation's denoising loop: the pipeline's scheduler class and config, eta 0, no guidance."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t, encoder_hidden_states=None).sample, t, x, eta=0.0).prev_sample
    return x


def _relative_error(x, reference):
    return ((x - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("steps", [50, 10])
def test_ddim_inversion_runs_the_generation_schedule_backwards(tiny_pipe, steps):
    """ddim_invert's timesteps are DDIMScheduler's (what generation uses) reversed, and with an ε that depends
    on t only, invert-then-denoise is exact: it pins the pairing of noise levels and model calls."""
    from diffusers import DDIMScheduler

    from model import ddim_invert

    shape = (1, 4, F, H // 8, W // 8)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    generation = DDIMScheduler.from_config(tiny_pipe.scheduler.config)
    generation.set_timesteps(steps)
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        unet = _TimeOnlyUNet(shape, dtype)
        pipe = types.SimpleNamespace(unet=unet, scheduler=tiny_pipe.scheduler, tokenizer=tiny_pipe.tokenizer,
                                     text_encoder=tiny_pipe.text_encoder)
        inverted = ddim_invert(pipe, latents.to(dtype), steps)
        assert inverted.dtype == dtype  # the recurrence runs in the latent's precision (fp32 at least)
        assert unet.seen == generation.timesteps.flip(0).tolist()
        assert unet.seen == list(range(1, 1000, 1000 // steps))  # ZeroScope's "leading" + offset 1: 1 … 981
        unet.seen.clear()
        back = _ddim_denoise(tiny_pipe, unet, inverted, steps)
        assert unet.seen == generation.timesteps.tolist()
        # Exact but for rounding: measured 2.6e-15 (fp64) and 1.4e-6 (fp32) at 50 steps. Wrong pairings miss by
        # far more: denoising with steps+1 → 1.44 (50) / 0.12 (10); inverting with the source step's label → 1.06.
        assert _relative_error(back, latents.to(dtype)) < tolerance
        assert _relative_error(inverted, latents.to(dtype)) > 0.5  # and the inversion did move the latent


@pytest.mark.slow
def test_invert_then_denoise_reconstructs_the_latent_on_the_tiny_preset(tiny_pipe):
    """The real (random-weight) tiny UNet, 50 DDIM steps, empty prompt, guidance 1, through the pipeline.

    DDIM inversion assumes ε(x_t) ≈ ε(x_{t-1}); a random UNet's ε changes fast with x, so the reconstruction is
    approximate here (fp64 measures the same error as fp32: it is that assumption, not rounding). Measured:
    relative error 0.41; denoising pure noise instead gives 14.3, and denoising with 51 steps 0.76. The
    latent is unit-scale, like a real SD latent (the tiny random VAE's latents have std 0.04).
    """
    from model import ddim_invert

    g = torch.Generator().manual_seed(0)
    latents = torch.nn.functional.interpolate(torch.randn(1, 4, F, 4, 4, generator=g), size=(F, H // 8, W // 8),
                                              mode="trilinear")
    latents = latents / latents.std()

    def denoise(x, steps=50):
        return tiny_pipe(prompt=[""], num_frames=F, height=H, width=W, num_inference_steps=steps,
                         guidance_scale=1.0, eta=0.0, latents=x, output_type="latent").frames

    inverted = ddim_invert(tiny_pipe, latents, 50)
    error = _relative_error(denoise(inverted), latents)
    from_noise = _relative_error(denoise(torch.randn(latents.shape, generator=g)), latents)
    assert error < 0.6, error
    assert from_noise > 10 * error, (error, from_noise)


def test_activation_checkpointing_gives_the_same_loss_and_gradients(tiny_pipe):
    """`_checkpoint_blocks` (on for CUDA training) on CPU: same loss and embedding gradients, blocks recomputed."""
    from model.inversion import _checkpoint_blocks, inversion_loss

    unet = tiny_pipe.unet
    emb = MotionEmbeddings.create(unet, spec("1d", "2d"))
    randomize(emb, scale=0.1)
    x, t, ctx = unet_inputs(tiny_pipe)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    calls = []
    inner = unet.get_submodule("down_blocks.2.temp_attentions.0.transformer_blocks.0.attn1.to_q")
    hook = inner.register_forward_hook(lambda *args: calls.append(1))

    def loss_and_grads():
        emb.zero_grad(set_to_none=True)
        calls.clear()
        loss = inversion_loss(unet(x, t, encoder_hidden_states=ctx).sample, target, "debiased_temporal", 3)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in emb.named_parameters()}, len(calls)

    emb.attach(unet)
    try:
        plain = loss_and_grads()
        restore = _checkpoint_blocks(unet)
        try:
            checkpointed = loss_and_grads()
        finally:
            restore()
        restored = loss_and_grads()
    finally:
        emb.detach(unet)
        hook.remove()
    assert (plain[2], checkpointed[2], restored[2]) == (1, 2, 1), "checkpointed blocks run again in backward"
    # The recomputation repeats the same ops on the same inputs: measured bit-identical on CPU. Tolerance
    # 1e-6 (loss) / 1e-5 (gradients) relative leaves room for a backend that reorders sums, far below what a
    # wrong or missing gradient path changes (O(1) relative).
    torch.testing.assert_close(checkpointed[0], plain[0], rtol=1e-6, atol=0)
    assert plain[1] and all(g.abs().max() > 0 for g in plain[1].values())
    for name, grad in plain[1].items():
        torch.testing.assert_close(checkpointed[1][name], grad, rtol=1e-5, atol=1e-5 * grad.abs().max().item())
        assert torch.equal(restored[1][name], grad)


def _plain_fp32_loop(pipe, latents, prompt, config):
    """The optimisation written out without accelerate: fp32, the same CPU-generator draws, torch AdamW."""
    from model.inversion import encode_prompt

    unet, scheduler = pipe.unet, pipe.scheduler
    emb = MotionEmbeddings.create(unet, EmbeddingSpec(config.qk, config.v, config.placement, config.slots,
                                                      latents.shape[-2], latents.shape[-1]))
    g = torch.Generator().manual_seed(config.seed)
    ctx = encode_prompt(pipe, prompt)
    optimizer = torch.optim.AdamW(emb.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses = []
    emb.attach(unet)
    try:
        for _ in range(config.steps):
            t = torch.randint(0, 1000, (1,), generator=g)
            noise = torch.randn(latents.shape, generator=g)
            r = int(torch.randint(0, latents.shape[2], (1,), generator=g))
            pred = unet(scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=ctx).sample
            loss = torch.nn.functional.mse_loss(pred, noise)
            if config.loss == "debiased_temporal":
                a = 2 ** 0.5
                loss = loss + torch.nn.functional.mse_loss(a * pred - pred[:, :, r:r + 1],
                                                           a * noise - noise[:, :, r:r + 1])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        emb.detach(unet)
    return losses, emb


@pytest.mark.parametrize("loss", ["base", "debiased_temporal"])
def test_accelerate_loop_equals_the_plain_fp32_loop_on_cpu(tiny_pipe, reference, loss):
    from model.inversion import make_accelerator

    # accelerate's process-wide state left in another configuration must not break the next inversion
    assert make_accelerator("bf16", "cpu").mixed_precision == "bf16"
    config = InversionConfig(steps=4, lr=0.2, loss=loss, seed=5)
    result = train_embeddings(tiny_pipe, reference.latents, "a red square moves right", config)
    losses, emb = _plain_fp32_loop(tiny_pipe, reference.latents, "a red square moves right", config)
    # Same ops in the same order on CPU: measured bit-identical. Stated tolerance: 1e-5 relative on the losses
    # and 1e-5 on the embeddings (values up to ~0.8 after 4 steps at lr 0.2); a skipped or extra step, another
    # draw or a missing debiased term changes them at the 1e-2..1 level.
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
    for name, value in emb.state_dict().items():
        torch.testing.assert_close(result.embeddings.state_dict()[name], value, rtol=1e-5, atol=1e-5)
    assert emb.state_dict() and all(v.abs().max() > 0.1 for v in emb.state_dict().values())


def test_precision_choice_and_bf16_autocast_on_cpu(tiny_pipe, reference):
    from model.inversion import resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", torch.float32, cpu) == "no"
    assert resolve_precision("auto", torch.float32, cuda) == "fp16"  # an fp32 UNet on CUDA: fp16 + loss scaling
    assert resolve_precision("auto", torch.float16, cuda) == "fp16"
    assert resolve_precision("auto", torch.bfloat16, cuda) == "bf16"
    assert resolve_precision("bf16", torch.float32, cpu) == "bf16"
    with pytest.raises(ValueError, match="precision 'no' needs an fp32 UNet"):
        resolve_precision("no", torch.float16, cuda)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        InversionConfig(precision="fp8")
    fp32 = train_embeddings(tiny_pipe, reference.latents, "x", InversionConfig(steps=2, seed=1, precision="no"))
    bf16 = train_embeddings(tiny_pipe, reference.latents, "x", InversionConfig(steps=2, seed=1, precision="bf16"))
    # bf16 autocast is in effect (the losses move) but close: measured relative differences ~1e-4
    assert bf16.losses != fp32.losses
    np.testing.assert_allclose(bf16.losses, fp32.losses, rtol=2e-2)


def test_inversion_lowers_the_loss_and_is_deterministic(tiny_pipe, reference):
    prompt = "a red square moves right"
    config = InversionConfig(steps=25, lr=0.2, checkpoints=(10,), seed=3)
    result = train_embeddings(tiny_pipe, reference.latents, prompt, config)
    assert sorted(result.checkpoints) == [10, 25] and len(result.losses) == 25
    before = _fixed_loss(tiny_pipe, reference.latents, MotionEmbeddings.create(tiny_pipe.unet, result.embeddings.spec),
                         prompt)
    after = _fixed_loss(tiny_pipe, reference.latents, result.embeddings, prompt)
    assert after < before - 0.01, (before, after)  # deterministic on CPU: 1.144 → 1.125 measured
    again = train_embeddings(tiny_pipe, reference.latents, prompt, config)
    assert again.losses == result.losses
    for k, v in result.checkpoints[10].items():
        assert torch.equal(v, again.checkpoints[10][k])
        assert torch.equal(result.at(10).state_dict()[k], v)
        assert torch.equal(result.checkpoints[25][k], result.embeddings.state_dict()[k])
    assert not torch.equal(result.checkpoints[10][k], result.checkpoints[25][k])


def test_default_checkpoints_are_the_papers_step_250(tiny_pipe, reference):
    import argparse

    from model.cli import add_invert_arguments

    assert InversionConfig().checkpoints == (250,) and InversionConfig().saved_steps == (250, 400)
    assert InversionConfig(steps=250).saved_steps == (250,)
    assert InversionConfig(steps=100).saved_steps == (100,)  # shorter runs keep only their last step
    assert InversionConfig(steps=400, checkpoints=(400,)).saved_steps == (400,)  # only the last, when asked
    assert InversionConfig(steps=400, checkpoints=(150, 150, 50)).saved_steps == (50, 150, 400)
    args = add_invert_arguments(argparse.ArgumentParser()).parse_args(["--video", "v", "--prompt", "p", "--out", "o"])
    assert args.steps == 400 and args.checkpoints == ""  # "" → InversionConfig's paper default
    base = train_embeddings(tiny_pipe, reference.latents, "x", InversionConfig(qk=OFF, v=OFF, steps=5))
    assert base.losses == [] and base.embeddings.num_parameters() == 0 and list(base.checkpoints) == [5]


def test_reference_caches_latent_and_inverted_noise(tiny_pipe, reference, tmp_path):
    from model import ddim_invert, encode_frames, load_video_frames

    assert reference.frames.shape == (F, H, W, 3) and reference.frames.dtype == np.uint8
    assert np.array_equal(reference.frames, load_video_frames(reference.metadata["video"], F, H, W))
    assert reference.latents.shape == reference.inverted_noise.shape == (1, 4, F, H // 8, W // 8)
    # the cached tensors are the encoder's and the 5-step inversion's, recomputed (same shapes, same process)
    torch.testing.assert_close(reference.latents, encode_frames(tiny_pipe, reference.frames), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(reference.inverted_noise, ddim_invert(tiny_pipe, reference.latents, 5),
                               rtol=1e-5, atol=1e-5)
    reference.save(tmp_path / "r.safetensors")
    back = type(reference).load(tmp_path / "r.safetensors")
    assert torch.equal(back.inverted_noise, reference.inverted_noise) and np.array_equal(back.frames,
                                                                                        reference.frames)
    assert torch.equal(back.latents, reference.latents)
    assert back.metadata == reference.metadata and back.metadata["ddim_steps"] == 5


# --- generation --------------------------------------------------------------------------------------------------

def assert_same_video(a, b, max_fraction=1e-3):
    """uint8 videos equal up to rounding: batched and unbatched runs may sum in another order (on an AMD EPYC,
    10 of 98,304 values differed by one level), so: at most 1 level apart, on at most 0.1% of the values."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() <= max_fraction, (diff.max(), (diff > 0).mean())


def mean_level_difference(a, b):
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()


def test_generation_is_deterministic_per_seed_and_debias_matters(tiny_pipe, reference):
    emb = MotionEmbeddings.create(tiny_pipe.unet, spec("1d", "2d"))
    randomize(emb, scale=2.0)
    cfg = GenerationConfig(steps=4, batch_size=2)
    a = generate(tiny_pipe, reference.inverted_noise, ["a dog", "a dog", "a cat"], [0, 1, 0], emb, "none", cfg)
    assert a.shape == (3, F, H, W, 3) and a.dtype == np.uint8
    b = generate(tiny_pipe, reference.inverted_noise, ["a dog"], [0], emb, "none", cfg)
    assert_same_video(a[0], b[0])  # batched or alone, same seed → same video
    # another seed / prompt is another video (measured 36.6 / 5.2 levels mean difference), not rounding
    assert mean_level_difference(a[0], a[1]) > 10 and mean_level_difference(a[0], a[2]) > 1
    videos = {d: generate(tiny_pipe, reference.inverted_noise, ["a dog"], [0], emb, d, cfg)[0] for d in DEBIAS_MODES}
    assert_same_video(videos["none"], b[0])
    for d1, d2 in itertools.combinations(DEBIAS_MODES, 2):  # measured 1.96 … 2.74 levels apart
        assert mean_level_difference(videos[d1], videos[d2]) > 0.5, (d1, d2)
    plain = generate(tiny_pipe, reference.inverted_noise, ["a dog"], [0], None, "none", cfg)[0]
    zero = MotionEmbeddings.create(tiny_pipe.unet, spec("1d", "2d"))
    assert_same_video(generate(tiny_pipe, reference.inverted_noise, ["a dog"], [0], zero, "none", cfg)[0], plain)
    assert mean_level_difference(videos["drop"], plain) > 0.2  # drop still uses MQK (measured 0.71)


def test_blend_init_formula(reference):
    from model import initial_noise

    eps = torch.randn(reference.inverted_noise.shape, generator=torch.Generator().manual_seed(5))
    z = initial_noise(reference.inverted_noise, 5, GenerationConfig(noise_prior=0.5))
    torch.testing.assert_close(z, 0.5 ** 0.5 * reference.inverted_noise + 0.5 ** 0.5 * eps)
    torch.testing.assert_close(initial_noise(reference.inverted_noise, 5, GenerationConfig(noise_init="random")), eps)


def test_generation_bad_inputs(tiny_pipe, reference):
    emb = MotionEmbeddings.create(tiny_pipe.unet, spec())
    with pytest.raises(ValueError, match="unknown debias 'sub'"):
        generate(tiny_pipe, reference.inverted_noise, ["a"], [0], emb, "sub")
    with pytest.raises(ValueError, match="empty prompt"):
        generate(tiny_pipe, reference.inverted_noise, [" "], [0], emb)
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        generate(tiny_pipe, reference.inverted_noise, ["a", "b"], [0], emb)
    wrong = MotionEmbeddings.create(tiny_pipe.unet, EmbeddingSpec("1d", "2d", latent_height=4, latent_width=4))
    with pytest.raises(ValueError, match="trained on a 4x4 latent but the noise is 8x8"):
        generate(tiny_pipe, reference.inverted_noise, ["a"], [0], wrong)


# --- inputs and presets ------------------------------------------------------------------------------------------

def test_bad_videos_are_clear_errors(tiny_pipe, tmp_path):
    from videoio import VideoError

    with pytest.raises(VideoError, match="video not found: .*nope.mp4"):
        prepare_reference(tiny_pipe, tmp_path / "nope.mp4", F, H, W)
    short = videoio.write_video(tmp_path / "short.mp4", videoio.moving_shape_video(4, H, W))
    with pytest.raises(VideoError, match="video has 4 frames but 8 frames from 0 every 1 need 8"):
        prepare_reference(tiny_pipe, short, F, H, W)
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "still.png", np.zeros((H, W, 3), np.uint8))
    with pytest.raises(VideoError, match="still image"):
        prepare_reference(tiny_pipe, tmp_path / "still.png", F, H, W)
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match=r"cannot decode video .*junk\.mp4.*re-encode it, e\.g\. `ffmpeg -i junk\.mp4"):
        prepare_reference(tiny_pipe, tmp_path / "junk.mp4", F, H, W)
    with pytest.raises(ValueError, match="unknown loss 'l1'"):
        InversionConfig(loss="l1")
    with pytest.raises(ValueError, match=r"checkpoints \[500\] are outside 1..steps=400"):
        InversionConfig(checkpoints=(500,))


def test_folder_of_frames_and_resize_crop(tmp_path):
    import imageio.v3 as iio

    frames = videoio.moving_shape_video(10, 48, 96)
    (tmp_path / "frames").mkdir()
    for i, f in enumerate(frames):
        iio.imwrite(tmp_path / "frames" / f"{i:03d}.png", f)
    from model import load_video_frames

    out = load_video_frames(tmp_path / "frames", 4, H, W, start=1, stride=2)
    assert out.shape == (4, H, W, 3) and out.dtype == np.uint8
    # frames 1, 3, 5, 7 (PNG is lossless), scaled to 64x128 and cropped to the centre 64x64
    def scaled_and_cropped(indices):
        x = torch.from_numpy(frames[indices]).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(64, 128), mode="bilinear", antialias=True, align_corners=False)
        return x[:, :, :, 32:96].round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    assert_same_video(out, scaled_and_cropped([1, 3, 5, 7]))
    assert mean_level_difference(out, scaled_and_cropped([0, 2, 4, 6])) > 1  # the other frames: another video


def test_missing_model_fails_fast_with_instructions():
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"(?s)zeroscope.*hf download cerspense/zeroscope_v2_576w.*--model"):
        load_pipeline(get_preset("zeroscope"), device="cpu")
    assert time.perf_counter() - started < 30
    with pytest.raises(ModelNotFoundError, match="local directory"):
        load_pipeline(get_preset("zeroscope", model="/nonexistent/zeroscope"), device="cpu")
    with pytest.raises(ValueError, match="unknown preset 'sd'; choose one of: zeroscope, tiny"):
        get_preset("sd")


def test_tiny_preset_loads_through_from_pretrained(tiny_pipe):
    from model.presets import tiny_model_dir

    index = json.loads((tiny_model_dir() / "model_index.json").read_text())
    assert index["_class_name"] == "TextToVideoSDPipeline"
    assert set(index) >= {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert tiny_pipe.tokenizer("a car").input_ids[:3] == [49406, 320, 1615]  # the real CLIP BPE


@pytest.mark.slow  # three subprocesses that each import torch/diffusers: ~16 s on 2 cores
def test_cli_invert_then_generate(tmp_path):
    video = videoio.write_video(tmp_path / "ref.gif", videoio.moving_shape_video(9, H, W, direction=(0, 1)))
    run = [sys.executable, "-m", "sweep.cli"]
    out = tmp_path / "emb"
    r = subprocess.run(run + ["invert", "--video", str(video), "--prompt", "a square falls", "--steps", "3",
                              "--checkpoints", "2", "--ddim-steps", "3", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["reference.safetensors", "run.json", "step-0002.safetensors",
                                                     "step-0003.safetensors"]
    assert len(json.loads((out / "run.json").read_text())["losses"]) == 3
    r = subprocess.run(run + ["generate", "--embeddings", str(out), "--step", "2", "--prompt", "a ball falls",
                              "--seed", "4", "--steps", "3", "--out", str(tmp_path / "g.mp4")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert videoio.read_video(tmp_path / "g.mp4").shape == (F, H, W, 3)
    r = subprocess.run(run + ["generate", "--embeddings", str(out), "--step", "9", "--prompt", "x", "--out",
                              str(tmp_path / "h.mp4")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no checkpoint at step 9" in r.stderr and "Traceback" not in r.stderr
