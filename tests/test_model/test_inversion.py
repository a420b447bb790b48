"""model/inversion.py: the losses' exact values, DDIM inversion runs the schedule backwards, activation
checkpointing and accelerate change nothing on CPU, the optimisation lowers the loss deterministically, the
paper's checkpoints, the cached reference, and bad reference videos."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

import videoio
from helpers.models import F, H, W, assert_same_video, mean_level_difference, randomize, spec, unet_inputs
from model import EmbeddingSpec, InversionConfig, MotionEmbeddings, prepare_reference, train_embeddings
from vocabulary import OFF


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
