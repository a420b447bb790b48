"""The toy world's own measurements (`toyworld.judge`), on clips the tests render (no weights needed): does a motion
word change the generated motion (`motion_text_dependence`), and the direction judge it is built on."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from toyworld import data as td
from toyworld.judge import FOUR_WAYS, direction_correct, motion_text_dependence


class RenderingPipe:
    """Stands in for a TextToVideoSDPipeline: draws the prompted shape, with its start (and, for `motion="noise"`,
    its direction) taken from the initial latent, so two prompts on one latent differ only where `motion` says."""

    vae_scale_factor = 8
    unet = SimpleNamespace(config=SimpleNamespace(in_channels=4))

    def __init__(self, motion: str):
        self.motion = motion  # "prompt": follows the words; "reversed"; "noise": the latent decides; "static"

    def __call__(self, prompt, latents, num_frames, height, width, **_):
        clips = []
        for text, latent in zip(prompt, latents):
            said = next(m for m in FOUR_WAYS if f"moves {m} " in text)
            rng = np.random.default_rng(int(abs(float(latent.sum())) * 1000))  # same latent -> same clip layout
            drawn = {"prompt": said, "reversed": td.OPPOSITE[said],
                     "noise": FOUR_WAYS[rng.integers(4)], "static": None}[self.motion]
            spec = td.sample_spec(rng, shape="square", color="red", background="grey", motion=drawn or "right")
            if drawn is None:
                spec = td.ClipSpec(**{**spec.to_dict(), "speed": 0.0, "accel": 0.0})
            clips.append(spec.render(num_frames, height, width).astype(np.float32) / 255.0)
        return SimpleNamespace(frames=np.stack(clips))


@pytest.mark.parametrize("motion, expected", [("prompt", 1.0), ("reversed", -1.0), ("noise", 0.0), ("static", 0.0)])
def test_motion_text_dependence_tells_following_from_ignoring_the_words(motion, expected):
    got = motion_text_dependence(RenderingPipe(motion), seeds=(0, 1, 2))
    assert got["n"] == 12
    assert got["motion_follows_words"] == pytest.approx(expected, abs=0.1)
    assert got["moving"] == (0.0 if motion == "static" else 1.0)


def test_a_model_whose_noise_decides_the_motion_still_scores_chance_on_direction_correct():
    """Why the dependence measure exists: per-clip direction accuracy cannot see that the words are ignored."""
    import torch

    pipe = RenderingPipe("noise")
    hits = []
    for seed in range(6):
        latent = torch.randn((1, 4, td.FRAMES, 8, 8), generator=torch.Generator().manual_seed(seed))
        prompts = [td.caption("square", "red", "grey", m) for m in FOUR_WAYS]
        clips = (pipe(prompts, latent.repeat(4, 1, 1, 1, 1), td.FRAMES, td.HEIGHT, td.WIDTH).frames * 255).astype(np.uint8)
        hits += [direction_correct(c, m) for c, m in zip(clips, FOUR_WAYS)]
    assert np.mean(hits) == pytest.approx(0.25)  # exactly one of the four prompts per latent is "right"
