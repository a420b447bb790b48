"""Generation with learned motion embeddings (docs/method.md §3).

The stock `TextToVideoSDPipeline` with our processors attached: DDIM 30 steps, guidance 12, negative prompt "",
and BlendInit initial noise z_T = √p·z_inv + √(1−p)·ε from the reference's DDIM inversion.
"""

from __future__ import annotations

import numpy as np
import torch

from vocabulary import DEBIAS_MODES, check_choice

from .config import GenerationConfig
from .embeddings import MotionEmbeddings


def frames_uint8(frames) -> np.ndarray:
    """A pipeline's `output_type="np"` frames (floats in [0, 1]) as uint8 videos [B, F, H, W, 3]."""
    return (np.clip(np.asarray(frames), 0, 1) * 255).round().astype(np.uint8)


def initial_noise(inverted_noise: torch.Tensor, seed: int, config: GenerationConfig) -> torch.Tensor:
    """ε from a CPU generator (the same on any device), blended with the inverted latent for BlendInit."""
    eps = torch.randn(inverted_noise.shape, generator=torch.Generator("cpu").manual_seed(seed))
    if config.noise_init == "random":
        return eps
    p = config.noise_prior
    return p ** 0.5 * inverted_noise.float().cpu() + (1 - p) ** 0.5 * eps


def generate(pipe, inverted_noise: torch.Tensor, prompts: list[str], seeds: list[int],
             embeddings: MotionEmbeddings | None = None, debias: str = "none",
             config: GenerationConfig = GenerationConfig()) -> np.ndarray:
    """One video per (prompt, seed) pair → uint8 [N, F, H, W, 3]; size and length follow the inverted noise.

    `embeddings=None` (or both designs off) is the plain base model. Deterministic for a seed (DDIM, eta 0).
    """
    check_choice("debias", debias, DEBIAS_MODES)
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    if any(not p or not p.strip() for p in prompts):
        raise ValueError("empty prompt: give the text of the video to generate")
    if inverted_noise.dim() == 4:
        inverted_noise = inverted_noise.unsqueeze(0)
    _, _, frames, h, w = inverted_noise.shape
    scale = pipe.vae_scale_factor
    if embeddings is not None:
        spec = embeddings.spec
        if (spec.latent_height, spec.latent_width) != (h, w):
            raise ValueError(f"embeddings were trained on a {spec.latent_height}x{spec.latent_width} latent "
                             f"but the noise is {h}x{w}; use the reference they were trained with")
        embeddings.attach(pipe.unet, debias)
    try:
        videos = []
        for i in range(0, len(prompts), config.batch_size):
            batch_prompts, batch_seeds = prompts[i:i + config.batch_size], seeds[i:i + config.batch_size]
            latents = torch.cat([initial_noise(inverted_noise, s, config) for s in batch_seeds])
            out = pipe(prompt=batch_prompts, negative_prompt=[config.negative_prompt] * len(batch_prompts),
                       num_frames=frames, height=h * scale, width=w * scale, num_inference_steps=config.steps,
                       guidance_scale=config.guidance, eta=0.0,
                       latents=latents.to(pipe.device, pipe.unet.dtype), output_type="np")
            videos.append(frames_uint8(out.frames))
    finally:
        if embeddings is not None:
            embeddings.detach(pipe.unet)
    return np.concatenate(videos)
