"""The GPU cost model (model/cost.py): its measurement tools against known cases, the shipped fit against fresh
measurements at held-out settings, and the predictions' arithmetic (fits, ranges, precisions)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model import cost
from model.config import InversionConfig
from vocabulary import GPU_TYPES

ROOT = Path(__file__).resolve().parents[2]
PAPER = dict(frames=24, height=320, width=576)


def test_importing_the_cost_model_does_not_import_torch():
    code = ("import sys; import model.cost as c; "
            "c.predict_trial('zeroscope', gpu='A10G', frames=24, height=320, width=576); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_storage_tracker_counts_live_bytes_exactly_on_meta_and_cpu():
    for device in ("meta", "cpu"):
        x = torch.ones(256, 256, device=device)  # before the tracker: not counted
        with cost.storage_tracker() as tracker:
            y = x @ x  # 256 KiB
            z = y.relu()  # +256 KiB: peak 512 KiB
            del y
            w = z.t()  # a view: no new storage
            z.add_(1)  # in place: no new storage
            v = z * 2  # +256 KiB after y's release: still 512 KiB live
        assert tracker.peak == 2 * 256 * 256 * 4, device
        assert tracker.current == 2 * 256 * 256 * 4, device
        del w, v


def test_flop_counter_matches_the_temporal_attention_by_hand():
    """FLOPs of one temporal self-attention with motion embeddings attached, counted on the meta device through
    the fused SDPA route, equal 4 projections (2·n·F·C·C each) + QKᵀ and AV (2·n·F·F·C each)."""
    from diffusers.models.attention_processor import Attention

    from model.embeddings import MotionAttnProcessor

    n, frames, channels, heads = 12, 6, 64, 4
    with torch.device("meta"):
        attn = Attention(channels, heads=heads, dim_head=channels // heads)
        qk = torch.nn.Parameter(torch.zeros(1, 32, channels))
        v = torch.nn.Parameter(torch.zeros(n, 32, channels))
        x = torch.empty(n, frames, channels)
    attn.set_processor(MotionAttnProcessor(qk, v, "none"))
    with cost._fused_sdpa_on_meta(), cost.flop_counter() as counter:
        attn(x)
    expected = 4 * 2 * n * frames * channels * channels + 2 * 2 * n * frames * frames * channels
    assert counter.get_total_flops() == expected


def test_fused_sdpa_on_meta_keeps_no_square_scores():
    q = torch.empty(2, 4, 1024, 64, device="meta")
    with cost.storage_tracker() as plain:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    with cost._fused_sdpa_on_meta(), cost.storage_tracker() as fused:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert plain.peak >= 2 * 4 * 1024 * 1024 * 4  # the math path's N×N scores
    assert fused.peak == 2 * 4 * 1024 * 64 * 4 + 2 * 4 * 1024 * 4  # output + log-sum-exp


def test_shipped_fit_validates_within_15_percent_for_two_presets():
    model = cost.cost_model()
    for preset in ("zeroscope", "videocrafter2"):
        pm = model["presets"][preset]
        for key in ("inversion", "inversion_ckpt", "generation"):
            fits = pm["fits"][key]
            assert fits["flop"]["relative_error"] <= 0.15, (preset, key)
            for cls in ("fp32", "half"):
                assert fits["peak_bytes"][cls]["relative_error"] <= 0.15, (preset, key, cls)


@pytest.mark.parametrize("preset,stage,checkpointing,point", [
    ("zeroscope", "generation", False, (3, 96, 160)),
    pytest.param("videocrafter2", "inversion", True, (8, 192, 256), marks=pytest.mark.slow),  # ~20 s
])
def test_prediction_matches_a_fresh_measurement_at_a_held_out_setting(preset, stage, checkpointing, point):
    from model.presets import build_unet

    frames, height, width = point
    unet = build_unet(preset, device="meta", dtype=torch.bfloat16)
    measured = cost.measure_step(unet, stage, frames=frames, height=height, width=width,
                                 checkpointing=checkpointing)
    predicted = cost.predict_step(preset, stage, frames=frames, height=height, width=width, precision="bf16",
                                  checkpointing=checkpointing)
    assert abs(predicted.peak_memory_gib * 2 ** 30 - measured["peak_bytes"]) / measured["peak_bytes"] <= 0.15
    assert abs(predicted.tflop * 1e12 - measured["flop"]) / measured["flop"] <= 0.15
    assert predicted.peak_memory_gib_high > predicted.peak_memory_gib


def test_trial_fits_a_large_gpu_and_not_a_small_one():
    kw = dict(**PAPER, qk="1d", v="2d", precision="fp16", checkpointing=True, inversion_steps=400, ddim_steps=50,
              generations=2, denoising_steps=30, generation_batch=1)
    big = cost.predict_trial("zeroscope", gpu="A100-80GB", **kw)
    small = cost.predict_trial("zeroscope", gpu="A10G", **kw)
    assert big.fits and small.fits  # fp16 with checkpointing: ~11 GiB
    # without activation checkpointing the step's activations (~20 GiB in fp16) no longer fit 24 GB
    plain = {**kw, "checkpointing": False}
    assert cost.predict_trial("zeroscope", gpu="A100-80GB", **plain).fits
    assert not cost.predict_trial("zeroscope", gpu="A10G", **plain).fits
    # 4 clips per call: generation's 8 UNet rows set the peak (the VAE decodes frame by frame), it still fits
    batch4 = cost.predict_trial("zeroscope", gpu="A10G", **{**kw, "generations": 8, "generation_batch": 4})
    assert batch4.fits and batch4.dominant == "generation" and batch4.peak_memory_gib > small.peak_memory_gib
    assert small.peak_memory_gib == pytest.approx(big.peak_memory_gib)  # memory does not depend on the GPU
    assert big.peak_memory_gib < big.peak_memory_gib_high <= GPU_TYPES["A100-80GB"].memory_gib
    assert big.gpu_seconds_low < big.gpu_seconds < big.gpu_seconds_high
    # the same FLOPs at the fraction assumed: seconds scale with the inverse of the GPU's peak
    a10g = cost.predict_trial("zeroscope", gpu="A10G", **kw)
    assert a10g.gpu_seconds / big.gpu_seconds == pytest.approx(312 / 125, rel=1e-6)
    # no bf16 on a T4: nothing runs
    assert not cost.predict_trial("zeroscope", gpu="T4", **{**kw, "precision": "bf16"}).fits
    # a larger generation batch decodes more frames at once: more memory, the same FLOPs
    batched = cost.predict_trial("zeroscope", gpu="A100-80GB", **{**kw, "generations": 8, "generation_batch": 4})
    single = cost.predict_trial("zeroscope", gpu="A100-80GB", **{**kw, "generations": 8, "generation_batch": 1})
    assert batched.peak_memory_gib > single.peak_memory_gib
    assert batched.tflop == pytest.approx(single.tflop)


def test_step_arithmetic_designs_precisions_and_checkpointing():
    kw = dict(frames=16, height=320, width=512)
    ckpt = cost.predict_step("videocrafter2", "inversion", checkpointing=True, **kw)
    plain = cost.predict_step("videocrafter2", "inversion", checkpointing=False, **kw)
    assert ckpt.peak_memory_gib < plain.peak_memory_gib and ckpt.tflop > plain.tflop  # recompute costs FLOPs
    fp32 = cost.predict_step("videocrafter2", "inversion", precision="fp32", **kw)
    # fp32 activations are twice the bytes; the embeddings' fp32 gradients and the fp32 loss are not
    assert 1.2 < fp32.peak_memory_gib / ckpt.peak_memory_gib < 2.0 and fp32.tflop == ckpt.tflop
    assert cost.predict_step("zeroscope", "inversion", qk="off", v="off", **kw).tflop == 0.0
    one = cost.predict_step("zeroscope", "generation", batch=1, **kw)
    four = cost.predict_step("zeroscope", "generation", batch=4, **kw)
    assert four.tflop == pytest.approx(4 * one.tflop) and four.peak_memory_gib == pytest.approx(4 * one.peak_memory_gib)
    # modelscope has zeroscope's UNet
    assert cost.predict_step("modelscope", "generation", **kw) == one
    # the paper's embeddings: 5 MQK [1,32,1280] + 10 MV [180,32,1280]
    assert cost.embedding_scalars("zeroscope", height=320, width=576) == 5 * 32 * 1280 + 10 * 180 * 32 * 1280


def test_precision_names():
    assert cost.precision_name("auto") == "fp16" and cost.precision_name("auto", "cpu") == "fp32"
    assert cost.precision_name("no") == "fp32" and cost.precision_name("bf16") == "bf16"
    with pytest.raises(ValueError):
        cost.precision_name("fp8")
    with pytest.raises(ValueError):
        cost.predict_trial("zeroscope", gpu="B200", **PAPER)
    assert InversionConfig().checkpointing is None and InversionConfig(checkpointing=False).checkpointing is False
    assert math.isfinite(cost.predict_trial("zeroscope", gpu="A10G", **PAPER).gpu_seconds)


def test_the_vae_decodes_frame_by_frame_so_its_peak_does_not_grow_with_the_frames():
    """`load_pipeline` turns on the VAE's slicing (one frame per decode call): the decode's measured peak for 8
    frames is one frame's activations plus the decoded frames, as `vae_decode` predicts, not 8 frames' worth; and
    the frames are the ones an unsliced decode gives."""
    from model import get_preset, load_pipeline

    vae = load_pipeline(get_preset("tiny"), device="cpu").vae
    assert vae.use_slicing
    one = cost.measure_vae_decode(vae, images=1, height=64, width=64, count_flops=False)["peak_bytes"]
    eight = cost.measure_vae_decode(vae, images=8, height=64, width=64, count_flops=False)["peak_bytes"]
    held = 8 * 64 * 64 * 3 * 4 * 2  # the 8 decoded fp32 frames and their concatenation
    assert eight <= one + held < 2 * one
    z = torch.randn(3, vae.config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sliced = vae.decode(z).sample
        vae.disable_slicing()
        whole = vae.decode(z).sample
    torch.testing.assert_close(sliced, whole, rtol=1e-4, atol=1e-5)
    # the model's decode term: one frame's activations whatever the count, the held frames grow with it
    model = cost.cost_model()
    b1, f1 = cost.vae_decode(1, 320, 576, "fp16", model)
    b96, f96 = cost.vae_decode(96, 320, 576, "fp16", model)
    assert f96 == pytest.approx(96 * f1) and b96 - b1 == pytest.approx(95 * 320 * 576 * 3 * (2 * 2 + 4))
