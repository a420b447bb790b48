"""model/cli.py: `motion-sweep invert` then `generate`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import videoio
from helpers.models import F, H, W


@pytest.mark.slow  # three subprocesses that each import torch/diffusers: ~16 s on 2 cores
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


def test_invert_says_which_frames_it_took_and_how_it_resized_them():
    from model import get_preset
    from model.cli import what_was_taken

    toy, zeroscope = get_preset("toy"), get_preset("zeroscope")
    text = what_was_taken("car.mp4", (48, 120, 160, 3), 8, 4, 2, toy)
    assert text.startswith("car.mp4: 48 frames of 120x160; taking 8 (frames 4 to 18, every 2)")
    assert "resized to cover 64x64 and centre-cropped" in text and "The toy world knows 8-frame 64x64 clips" in text
    own = what_was_taken("sq.mp4", (8, 64, 64, 3), 8, 0, 1, toy)  # one of its own clips: nothing to say
    assert own == "sq.mp4: 8 frames of 64x64; taking 8 (frames 0 to 7, every 1)"
    assert "toy world" not in what_was_taken("car.mp4", (48, 120, 160, 3), 24, 0, 1, zeroscope)
