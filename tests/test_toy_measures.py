"""The toy world's own measurements, on clips the tests render (no weights needed): does a motion word change
the generated motion (`motion_text_dependence`), and the direction judge it is built on."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from model import toy
from model import toy_data as td


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
            said = next(m for m in toy.FOUR_WAYS if f"moves {m} " in text)
            rng = np.random.default_rng(int(abs(float(latent.sum())) * 1000))  # same latent -> same clip layout
            drawn = {"prompt": said, "reversed": td.OPPOSITE[said],
                     "noise": toy.FOUR_WAYS[rng.integers(4)], "static": None}[self.motion]
            spec = td.sample_spec(rng, shape="square", color="red", background="grey", motion=drawn or "right")
            if drawn is None:
                spec = td.ClipSpec(**{**spec.to_dict(), "speed": 0.0, "accel": 0.0})
            clips.append(spec.render(num_frames, height, width).astype(np.float32) / 255.0)
        return SimpleNamespace(frames=np.stack(clips))


@pytest.mark.parametrize("motion, expected", [("prompt", 1.0), ("reversed", -1.0), ("noise", 0.0), ("static", 0.0)])
def test_motion_text_dependence_tells_following_from_ignoring_the_words(motion, expected):
    got = toy.motion_text_dependence(RenderingPipe(motion), seeds=(0, 1, 2))
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
        prompts = [td.caption("square", "red", "grey", m) for m in toy.FOUR_WAYS]
        clips = (pipe(prompts, latent.repeat(4, 1, 1, 1, 1), td.FRAMES, td.HEIGHT, td.WIDTH).frames * 255).astype(np.uint8)
        hits += [toy.direction_correct(c, m) for c, m in zip(clips, toy.FOUR_WAYS)]
    assert np.mean(hits) == pytest.approx(0.25)  # exactly one of the four prompts per latent is "right"


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


def test_build_log_markdown_marks_reused_phases_and_shows_both_loss_curves():
    log = {"config": {"seed": 0}, "torch_threads": 2, "train_seconds": 600, "total_seconds": 660, "phases": {
        "vae": {"steps": 10, "seconds": 60, "psnr_db": 30.0, "scaling_factor": 1.2, "reused_from": "model/toy_world"},
        "clip": {"steps": 20, "seconds": 60, "zero_shot": {"shape": 1.0, "color": 1.0, "background": 1.0}},
        "unet": {"steps": 150, "batch": 16, "seconds": 500, "evaluations": [], "resumed_from": "model/toy_world",
                 "loss_curve": [(50, 0.5), (100, 0.4), (150, 0.3)], "distill_curve": [(50, 0.9), (100, 0.1)]}}}
    md = toy.log_markdown(log)
    vae, clip = (next(line for line in md.splitlines() if line.startswith(f"| {name} ")) for name in ("VAE", "toy CLIP"))
    assert "reused from model/toy_world" in vae and "reused" not in clip
    assert "UNet loss (mean over 50 steps): 50: 0.5000, 100: 0.4000, 150: 0.3000" in md  # the last point once
    assert "text distillation loss (mean over 50 steps): 50: 0.9000, 100: 0.1000" in md
    assert "continued from model/toy_world" in md
    del log["phases"]["unet"]["distill_curve"]
    assert "distillation" not in toy.log_markdown(log)  # a build without it says nothing about it
    assert "single frames" not in toy.log_markdown(log)
    log["phases"]["unet"].update(image_steps=100, image_batch=64, image_curve=[(50, 0.6), (100, 0.35)])
    md = toy.log_markdown(log)
    assert "| UNet + text encoder, single frames | 100 (batch 64 frames) | | final loss 0.3500 |" in md
    assert "UNet loss on single frames (mean over 50 steps): 50: 0.6000, 100: 0.3500" in md
    assert "Motion transfer" not in md  # no final measurement yet
    with pytest.raises(ValueError, match="at least 1 reference, got n=0"):
        toy.transfer_check(None, None, n=0)  # a mean over no references would be a silent NaN
    log["final"] = {"clip_zero_shot": {"n": 360, "shape": 1.0, "color": 1.0, "background": 1.0}, "samples": [],
                    "transfer": {"n": 4, "method": 0.751, "base": 0.34, "method_higher": 3}}
    assert ("Motion transfer (4 references, another shape, no motion word; debias `difference`): motion fidelity "
            "0.75 with the embeddings vs 0.34 for the base model from the same seed, higher in 3 of 4") \
        in toy.log_markdown(log)


def test_the_image_phase_trains_the_unet_on_single_frames_with_appearance_captions():
    """Before clips, the builder's image phase feeds one frame per training clip (a [B, 4, 1, h, w] batch) with
    captions that never name a motion (a frame cannot show one), and it does change the weights."""
    import torch

    cfg = toy.BuildConfig(image_batch=4, drop_all=0.0)
    unet, text_encoder = toy.build_unet(), toy.build_text_encoder()
    from model.presets import clip_tokenizer

    tokenizer, seen, shapes = clip_tokenizer(), [], []

    def tokens(texts):
        seen.extend(texts)
        return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids

    forward = unet.forward

    def spy(sample, *args, **kwargs):
        shapes.append(tuple(sample.shape))
        return forward(sample, *args, **kwargs)

    emas = (toy.copy.deepcopy(unet), toy.copy.deepcopy(text_encoder))
    unet.forward = spy
    specs = [td.sample_spec(np.random.default_rng(k)) for k in range(6)]
    latents = torch.randn(6, 4, td.FRAMES, 8, 8)
    params = [*unet.parameters(), *text_encoder.parameters()]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-3)
    train_step = toy._train_step(cfg, toy.build_scheduler(), unet, text_encoder, None, None, tokens, opt, params, emas)
    curve, steps = toy._train_on_frames(cfg, toy.BuildLog(None), train_step, latents, specs,
                                        np.random.default_rng(0), seconds=1e-3)
    assert steps >= 1 and shapes and all(s == (4, 4, 1, 8, 8) for s in shapes)
    assert seen and not any(word in t for t in seen for word in ("moves", "zigzags"))
    assert set(seen) <= {s.caption(with_motion=False) for s in specs}
    assert any(not torch.equal(a, b) for a, b in zip(before, params))


def _record_clip_phase(monkeypatch, cfg: toy.BuildConfig) -> list[dict]:
    """Run `train_unet`'s clip phase for cfg's steps on a random UNet and VAE; per step: its batch, timesteps,
    captions, specs, the UNet's noisy input and prediction, and the paired loss the step computed."""
    unet = toy.build_unet()
    seen: list[dict] = []
    forward = unet.forward

    def spy(sample, timestep, **kwargs):
        out = forward(sample, timestep, **kwargs)
        if sample.shape[2] > 1 and len(seen[-1]) == 4:  # the step's diffusion forward (not the distillation's)
            seen[-1].update(noisy=sample.detach().clone(), pred=out.sample.detach().clone())
        return out

    unet.forward = spy
    real = toy._train_step

    def recording_train_step(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(z0, t, texts, specs, lr):
            seen.append(dict(z0=z0.clone(), t=t.clone(), texts=list(texts), specs=list(specs)))
            out = step(z0, t, texts, specs, lr)
            wrapped.pair_loss = seen[-1]["pair_loss"] = getattr(step, "pair_loss", None)
            return out

        return wrapped

    monkeypatch.setattr(toy, "build_unet", lambda: unet)
    monkeypatch.setattr(toy, "_train_step", recording_train_step)
    toy.train_unet(cfg, toy.BuildLog(None), toy.build_vae(), None)
    return seen


def test_shape_pairs_train_each_clip_beside_its_other_shape_from_the_same_noise(monkeypatch):
    """`build --shape-pairs W`: each clip-phase batch is half clips, half the same clips with the next shape
    (same path, size, colour, background; the caption changed in its shape word only), at the same timestep
    and from the same noise, and the paired loss is the error of the pair's difference, recomputed here from
    the UNet's own input and output."""
    import torch

    cfg = toy.BuildConfig(train_clips=6, unet_steps=2, unet_batch=6, shape_pairs=2.0)
    steps = _record_clip_phase(monkeypatch, cfg)
    assert len(steps) == 2
    alphas = toy.build_scheduler().alphas_cumprod
    for s in steps:
        k = len(s["z0"]) // 2
        a, b = s["specs"][:k], s["specs"][k:]
        assert k == 3 and b == [toy.shape_counterpart(x) for x in a]
        assert all(x.shape != y.shape and x.path().tolist() == y.path().tolist() and (x.color, x.size) ==
                   (y.color, y.size) for x, y in zip(a, b))
        assert s["texts"][k:] == [t.replace(f" {x.shape} ", f" {y.shape} ") for t, x, y in zip(s["texts"], a, b)]
        assert torch.equal(s["t"][:k], s["t"][k:])
        ab = alphas[s["t"]].view(-1, 1, 1, 1, 1)
        noise = (s["noisy"] - ab.sqrt() * s["z0"]) / (1 - ab).sqrt()
        torch.testing.assert_close(noise[:k], noise[k:], atol=1e-4, rtol=1e-4)
        target = ab.sqrt() * noise - (1 - ab).sqrt() * s["z0"]  # v
        expected = torch.nn.functional.mse_loss(s["pred"][:k] - s["pred"][k:], target[:k] - target[k:])
        assert s["pair_loss"].item() == pytest.approx(expected.item(), rel=1e-3)
    assert [toy.shape_counterpart(toy.shape_counterpart(toy.shape_counterpart(x))) for x in a] == a


def test_t_max_keeps_the_clip_phase_below_a_share_of_the_noise_schedule(monkeypatch):
    """`build --t-max 0.3 --high-t 0`: every clip-phase timestep is below 300 of 1,000; the high-noise share,
    when on, still draws from the noisiest 20 %; without pairs the batch is the plain unet_batch."""
    low = _record_clip_phase(monkeypatch, toy.BuildConfig(train_clips=4, unet_steps=3, unet_batch=8, t_max=0.3,
                                                          high_t=0.0))
    assert all(len(s["t"]) == 8 and int(s["t"].max()) < 300 and s["pair_loss"] is None for s in low)
    mixed = _record_clip_phase(monkeypatch, toy.BuildConfig(train_clips=4, unet_steps=3, unet_batch=8, t_max=0.3,
                                                            high_t=1.0))
    assert all(int(s["t"].min()) >= 800 for s in mixed)


def test_demo_figure_table_keeps_error_rows_visible_and_out_of_the_statistics():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fig_toy_demo.py"
    spec = importlib.util.spec_from_file_location("fig_toy_demo", path)
    fig = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fig)
    columns = {
        "variant": ["qk=1d v=2d debias=difference", "qk=1d v=2d debias=difference", "qk=1d v=off", "qk=1d v=off"],
        "video": ["square-right", "triangle-up-left", "square-right", "triangle-up-left"],
        "motion_fidelity": [0.79, -0.27, None, -0.94],
        "text_similarity": [0.9, 0.7, None, 0.8],
        "status": ["ok", "ok", "error", "ok"]}
    samples = [dict(zip(columns, values)) for values in zip(*columns.values())]
    lines = fig.table(samples).splitlines()
    assert lines[0] == "| variant | square-right | triangle-up-left |"
    assert "| qk=1d v=2d debias=difference | +0.79 | -0.27 |" in lines
    assert "| qk=1d v=off | error | -0.94 |" in lines
    assert lines[-1] == "text similarity (toy CLIP) 0.70–0.90; n = 4 samples, 3 ok"
