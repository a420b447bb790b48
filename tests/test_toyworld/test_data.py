"""The toy world's clips (`toyworld.data`): where a shape's path goes in the frame."""

from __future__ import annotations

import numpy as np
import pytest

from toyworld import data as td


@pytest.mark.parametrize("height, width", [(64, 64), (48, 80)])
def test_toy_paths_stay_inside_the_frame_and_are_centred_so_the_start_follows_the_motion(height, width):
    rng = np.random.default_rng(3)
    for _ in range(400):
        spec = td.sample_spec(rng, height=height, width=width)
        path = spec.path()
        half, frame = spec.size / 2, np.array([width, height])
        fits = path.max(0) - path.min(0) + spec.size + 2 <= frame  # per axis; a longer path is centred
        assert ((path >= half) & (path <= frame - half))[:, fits].all(), spec
        middle = (path.min(0) + path.max(0)) / 2
        assert (np.abs(middle - frame / 2) <= td.JITTER + 1e-6).all(), spec
        if spec.motion in ("right", "left"):
            assert (path[0, 0] < width / 2) == (spec.motion == "right")  # "moves right" enters on the left
        if spec.motion in ("up", "down"):
            assert (path[0, 1] < height / 2) == (spec.motion == "down")
