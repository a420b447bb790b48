"""Shared builders of the model tests, on the tiny preset: its clip size, random UNet inputs, an embedding spec at
its latent size, random (non-zero) embeddings."""

from __future__ import annotations

import numpy as np
import torch

from model import EmbeddingSpec, MotionEmbeddings

F, H, W = 8, 64, 64  # tiny preset: 8 frames at 64x64 → latent 8x8


def unet_inputs(pipe, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, F, H // 8, W // 8, generator=g)
    ctx = torch.randn(batch, 77, pipe.unet.config.cross_attention_dim, generator=g)
    return x, torch.tensor([500]), ctx


def spec(qk="1d", v="2d", **kw):
    return EmbeddingSpec(qk=qk, v=v, latent_height=H // 8, latent_width=W // 8, **kw)


def randomize(emb: MotionEmbeddings, seed=1, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in emb.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def assert_same_video(a, b, max_fraction=1e-3):
    """uint8 videos equal up to rounding: batched and unbatched runs may sum in another order (on an AMD EPYC,
    10 of 98,304 values differed by one level), so: at most 1 level apart, on at most 0.1% of the values."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() <= max_fraction, (diff.max(), (diff > 0).mean())


def mean_level_difference(a, b):
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()
