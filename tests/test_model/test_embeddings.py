"""model/embeddings.py: zero embeddings are the stock UNet; shapes, sharing and gradients; MQK feeds only Q and
K, MV only V; the debias modes' exact values; the paper's placement on ZeroScope's architecture; files."""

from __future__ import annotations

import itertools

import pytest
import torch

from helpers.models import F, randomize, spec, unet_inputs
from model import EmbeddingMismatchError, EmbeddingSpec, MotionEmbeddings, debias_mv
from vocabulary import OFF, QK_DESIGNS, V_DESIGNS


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
