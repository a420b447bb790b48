"""The model tests' shared reference: a rendered square moving right, prepared (latent + DDIM inversion) on the
tiny preset once per module."""

import pytest

import videoio
from helpers.models import F, H, W
from model import prepare_reference


@pytest.fixture(scope="module")
def reference(tiny_pipe, tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "square.mp4"
    videoio.write_video(path, videoio.moving_shape_video(12, H, W, direction=(1, 0)))
    return prepare_reference(tiny_pipe, path, F, H, W, ddim_steps=5)
