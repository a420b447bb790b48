"""model/generation.py: deterministic per seed, debias matters, BlendInit's formula, bad inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from helpers.models import F, H, W, assert_same_video, mean_level_difference, randomize, spec
from model import EmbeddingSpec, GenerationConfig, MotionEmbeddings, generate
from vocabulary import DEBIAS_MODES


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
