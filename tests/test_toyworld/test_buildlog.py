"""The build log's markdown report (`toyworld.buildlog.log_markdown`): what it shows of each phase and measurement."""

from __future__ import annotations

import pytest

from toyworld.buildlog import log_markdown
from toyworld.transfer import transfer_check


def test_build_log_markdown_marks_reused_phases_and_shows_both_loss_curves():
    log = {"config": {"seed": 0}, "torch_threads": 2, "train_seconds": 600, "total_seconds": 660, "phases": {
        "vae": {"steps": 10, "seconds": 60, "psnr_db": 30.0, "scaling_factor": 1.2, "reused_from": "model/toy_world"},
        "clip": {"steps": 20, "seconds": 60, "zero_shot": {"shape": 1.0, "color": 1.0, "background": 1.0}},
        "unet": {"steps": 150, "batch": 16, "seconds": 500, "evaluations": [], "resumed_from": "model/toy_world",
                 "loss_curve": [(50, 0.5), (100, 0.4), (150, 0.3)], "distill_curve": [(50, 0.9), (100, 0.1)]}}}
    md = log_markdown(log)
    vae, clip = (next(line for line in md.splitlines() if line.startswith(f"| {name} ")) for name in ("VAE", "toy CLIP"))
    assert "reused from model/toy_world" in vae and "reused" not in clip
    assert "UNet loss (mean over 50 steps): 50: 0.5000, 100: 0.4000, 150: 0.3000" in md  # the last point once
    assert "text distillation loss (mean over 50 steps): 50: 0.9000, 100: 0.1000" in md
    assert "continued from model/toy_world" in md
    del log["phases"]["unet"]["distill_curve"]
    assert "distillation" not in log_markdown(log)  # a build without it says nothing about it
    assert "single frames" not in log_markdown(log)
    log["phases"]["unet"].update(image_steps=100, image_batch=64, image_curve=[(50, 0.6), (100, 0.35)])
    md = log_markdown(log)
    assert "| UNet + text encoder, single frames | 100 (batch 64 frames) | | final loss 0.3500 |" in md
    assert "UNet loss on single frames (mean over 50 steps): 50: 0.6000, 100: 0.3500" in md
    assert "Motion transfer" not in md  # no final measurement yet
    with pytest.raises(ValueError, match="at least 1 reference, got n=0"):
        transfer_check(None, None, n=0)  # a mean over no references would be a silent NaN
    log["final"] = {"clip_zero_shot": {"n": 360, "shape": 1.0, "color": 1.0, "background": 1.0}, "samples": [],
                    "transfer": {"n": 4, "method": 0.751, "base": 0.34, "method_higher": 3}}
    assert ("Motion transfer (4 references, another shape, no motion word; debias `difference`): motion fidelity "
            "0.75 with the embeddings vs 0.34 for the base model from the same seed, higher in 3 of 4") \
        in log_markdown(log)
