"""model/: embeddings, processors, inversion, generation and presets on the tiny preset (CPU)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import videoio
from model import (DEBIAS_MODES, QK_DESIGNS, V_DESIGNS, EmbeddingMismatchError, EmbeddingSpec, GenerationConfig,
                   InversionConfig, ModelNotFoundError, MotionEmbeddings, debias_mv, generate, get_preset,
                   load_pipeline, prepare_reference, train_embeddings)

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

@pytest.mark.parametrize("qk,v", list(itertools.product(QK_DESIGNS, V_DESIGNS)))
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
    if qk == v == "off":
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
    assert not torch.equal(result.checkpoints[10][k], result.checkpoints[25][k])


def test_debiased_temporal_loss_and_base_model_inversion(tiny_pipe, reference):
    r = train_embeddings(tiny_pipe, reference.latents, "x", InversionConfig(steps=2, loss="debiased_temporal"))
    b = train_embeddings(tiny_pipe, reference.latents, "x", InversionConfig(steps=2, loss="base"))
    assert r.losses[0] > b.losses[0]  # the extra term is a non-negative MSE added to the same first draw
    base = train_embeddings(tiny_pipe, reference.latents, "x", InversionConfig(qk="off", v="off", steps=5))
    assert base.losses == [] and base.embeddings.num_parameters() == 0


def test_reference_caches_latent_and_inverted_noise(tiny_pipe, reference, tmp_path):
    assert reference.frames.shape == (F, H, W, 3) and reference.frames.dtype == np.uint8
    assert reference.latents.shape == reference.inverted_noise.shape == (1, 4, F, H // 8, W // 8)
    assert not torch.allclose(reference.latents, reference.inverted_noise)
    reference.save(tmp_path / "r.safetensors")
    back = type(reference).load(tmp_path / "r.safetensors")
    assert torch.equal(back.inverted_noise, reference.inverted_noise) and np.array_equal(back.frames,
                                                                                        reference.frames)
    assert back.metadata["ddim_steps"] == 5


# --- generation --------------------------------------------------------------------------------------------------

def test_generation_is_deterministic_per_seed_and_debias_matters(tiny_pipe, reference):
    emb = MotionEmbeddings.create(tiny_pipe.unet, spec("1d", "2d"))
    randomize(emb, scale=2.0)
    cfg = GenerationConfig(steps=4, batch_size=2)
    a = generate(tiny_pipe, reference.inverted_noise, ["a dog", "a dog", "a cat"], [0, 1, 0], emb, "none", cfg)
    assert a.shape == (3, F, H, W, 3) and a.dtype == np.uint8
    b = generate(tiny_pipe, reference.inverted_noise, ["a dog"], [0], emb, "none", cfg)
    np.testing.assert_array_equal(a[0], b[0])  # batched or alone, same seed → same video
    assert not np.array_equal(a[0], a[1])  # another seed
    videos = {d: generate(tiny_pipe, reference.inverted_noise, ["a dog"], [0], emb, d, cfg)[0] for d in DEBIAS_MODES}
    for d1, d2 in itertools.combinations(DEBIAS_MODES, 2):
        assert not np.array_equal(videos[d1], videos[d2]), (d1, d2)
    plain = generate(tiny_pipe, reference.inverted_noise, ["a dog"], [0], None, "none", cfg)[0]
    zero = MotionEmbeddings.create(tiny_pipe.unet, spec("1d", "2d"))
    np.testing.assert_array_equal(generate(tiny_pipe, reference.inverted_noise, ["a dog"], [0], zero, "none", cfg)[0],
                                  plain)


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
    with pytest.raises(VideoError, match="cannot decode video"):
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
