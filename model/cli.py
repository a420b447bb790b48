"""`motion-sweep invert` and `motion-sweep generate`: the method's own commands (no Ray).

`add_invert_arguments` / `add_generate_arguments` fill a parser (light: argparse and the vocabulary only);
`run_invert` / `run_generate` do the work (torch and diffusers load there).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vocabulary import DEBIAS_MODES, LOSSES, NOISE_INITS, OFF, PAPER_METHOD, PRESETS, QK_DESIGNS, V_DESIGNS

from .config import DEFAULT_PLACEMENT, GenerationConfig, InversionConfig, ReferenceConfig


def add_invert_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--preset", default="tiny", choices=list(PRESETS),
                   help="base model: zeroscope (the paper's) or tiny (offline toy; default)")
    p.add_argument("--model", help="local directory with the preset's weights (instead of the hub id)")
    p.add_argument("--video", required=True, help="reference video: mp4/gif/webm file or a folder of frames")
    p.add_argument("--prompt", required=True, help="text describing the reference video (source prompt)")
    p.add_argument("--qk", default=PAPER_METHOD["qk"], choices=[*QK_DESIGNS, OFF],
                   help="Motion Query-Key design (default: %(default)s, the paper's)")
    p.add_argument("--v", default=PAPER_METHOD["v"], choices=[*V_DESIGNS, OFF],
                   help="Motion Value design (default: %(default)s, the paper's)")
    p.add_argument("--steps", type=int, default=InversionConfig.steps, help="optimisation steps (default %(default)s)")
    p.add_argument("--checkpoints", default="",
                   help="steps to save besides the last, comma-separated, e.g. 150,250 (default: 250, the step the "
                        "paper's example uses, when --steps >= 250; give the last step alone to save only it)")
    p.add_argument("--lr", type=float, default=InversionConfig.lr, help="AdamW learning rate (default %(default)s)")
    p.add_argument("--loss", default=InversionConfig.loss, choices=list(LOSSES), help="training loss")
    p.add_argument("--placement", default=",".join(DEFAULT_PLACEMENT),
                   help="UNet blocks whose temporal attention gets embeddings (default: the paper's 1280 levels)")
    p.add_argument("--frames", type=int, help="frames to use (default: the preset's, 24 for zeroscope)")
    p.add_argument("--start", type=int, default=ReferenceConfig.start, help="first frame to use (default %(default)s)")
    p.add_argument("--stride", type=int, default=ReferenceConfig.stride,
                   help="take every STRIDE-th frame (default %(default)s)")
    p.add_argument("--ddim-steps", type=int, default=ReferenceConfig.ddim_steps,
                   help="DDIM inversion steps (default %(default)s)")
    p.add_argument("--seed", type=int, default=InversionConfig.seed)
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out", required=True, help="output directory")
    return p


def add_generate_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--embeddings", required=True, help="the directory written by `motion-sweep invert`")
    p.add_argument("--step", type=int, help="which checkpoint step to use (default: the last)")
    p.add_argument("--prompt", required=True, action="append", help="edit prompt (repeatable)")
    p.add_argument("--debias", default=PAPER_METHOD["debias"], choices=list(DEBIAS_MODES),
                   help="Motion Value debias at generation (default: difference, the paper's)")
    p.add_argument("--seed", type=int, action="append", help="noise seed (repeatable; default 0)")
    p.add_argument("--steps", type=int, default=GenerationConfig.steps, help="DDIM steps (default %(default)s)")
    p.add_argument("--guidance", type=float, default=GenerationConfig.guidance,
                   help="classifier-free guidance (default %(default)g)")
    p.add_argument("--noise-init", default=GenerationConfig.noise_init, choices=list(NOISE_INITS),
                   help="blend: BlendInit from the inverted reference noise (default); random: pure noise")
    p.add_argument("--noise-prior", type=float, default=GenerationConfig.noise_prior,
                   help="BlendInit's p (default %(default)s)")
    p.add_argument("--fps", type=int, help="frame rate of the written file (default: the preset's)")
    p.add_argument("--model", help="local directory with the base model's weights, if not where invert found it")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out", required=True, help="output .mp4 (or .gif); several videos get -<prompt#>-s<seed>")
    return p


def _load_pipeline(preset_name: str, model: str | None, device: str | None):
    from .presets import get_preset, load_pipeline

    return load_pipeline(get_preset(preset_name, model), device=device)


def run_invert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import videoio

    from .inversion import prepare_reference, take_frames, train_embeddings
    from .presets import get_preset

    preset = get_preset(args.preset, args.model)
    config = InversionConfig(
        qk=args.qk, v=args.v, placement=tuple(p for p in args.placement.split(",") if p), steps=args.steps,
        lr=args.lr, loss=args.loss, seed=args.seed,
        checkpoints=tuple(int(c) for c in args.checkpoints.split(",") if c.strip()))
    out = Path(args.out)
    frames = args.frames or preset.num_frames
    source = videoio.read_video(args.video)
    video = take_frames(source, frames, preset.height, preset.width, args.start, args.stride)
    print(what_was_taken(args.video, source.shape, frames, args.start, args.stride, preset), file=sys.stderr)
    pipe = _load_pipeline(args.preset, args.model, args.device)
    print(f"preparing {args.video}: {frames} frames at {preset.height}x{preset.width}, DDIM inversion "
          f"({args.ddim_steps} steps)", file=sys.stderr)
    reference = prepare_reference(pipe, video, frames, preset.height, preset.width, args.start, args.stride,
                                  args.ddim_steps)
    reference.metadata["video"] = str(args.video)
    reference.metadata["source_prompt"] = args.prompt
    reference.save(out / "reference.safetensors")
    with tqdm(total=config.steps, desc="inversion", unit="step", disable=config.steps == 0) as bar:
        def progress(step: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
        result = train_embeddings(pipe, reference.latents, args.prompt, config, progress, preset.model)
    for step in sorted(result.checkpoints):
        result.at(step).save(out / f"step-{step:04d}.safetensors", {"step": step, "source_prompt": args.prompt})
    run = {"preset": preset.name, "model": preset.model, "video": str(args.video), "source_prompt": args.prompt,
           "frames": frames, "start": args.start, "stride": args.stride, "ddim_steps": args.ddim_steps,
           "fps": preset.fps,
           "inversion": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
           "saved_steps": sorted(result.checkpoints), "losses": result.losses,
           "seconds": round(result.seconds, 3), "parameters": result.embeddings.num_parameters()}
    (out / "run.json").write_text(json.dumps(run, indent=2))
    print(f"wrote {len(result.checkpoints)} checkpoint(s) ({result.embeddings.num_parameters():,} parameters) "
          f"to {out}", file=sys.stderr)
    print(out)
    return 0


def what_was_taken(video: str, shape: tuple, frames: int, start: int, stride: int, preset) -> str:
    """What `invert` made of a reference video of `shape` ([T, H, W, 3]): which frames, and how it was resized."""
    total, height, width = shape[:3]
    text = (f"{video}: {total} frames of {height}x{width}; taking {frames} (frames {start} to "
            f"{start + (frames - 1) * stride}, every {stride})")
    if (height, width) != (preset.height, preset.width):
        text += f", resized to cover {preset.height}x{preset.width} and centre-cropped"
    if preset.name == "toy" and (total != frames or (height, width) != (preset.height, preset.width)):
        text += (f". The toy world knows {preset.num_frames}-frame {preset.height}x{preset.width} clips of flat "
                 "shapes moving along centred paths; other clips may not transfer (README: \"What the toy world "
                 "knows\")")
    return text


def run_generate(args: argparse.Namespace) -> int:
    import videoio

    from .embeddings import MotionEmbeddings
    from .generation import generate
    from .inversion import Reference

    folder = Path(args.embeddings)
    run_file = folder / "run.json"
    if not run_file.is_file():
        raise FileNotFoundError(f"{folder} has no run.json: give the directory written by `motion-sweep invert`")
    run = json.loads(run_file.read_text())
    step = args.step if args.step is not None else max(run["saved_steps"])
    if step not in run["saved_steps"]:
        raise ValueError(f"no checkpoint at step {step} in {folder}; saved steps: {run['saved_steps']}")
    model_path = args.model or (run["model"] if run["preset"] != "tiny" else None)
    pipe = _load_pipeline(run["preset"], model_path, args.device)
    reference = Reference.load(folder / "reference.safetensors")
    embeddings, _ = MotionEmbeddings.load(folder / f"step-{step:04d}.safetensors", pipe.unet,
                                          latent_size=tuple(reference.inverted_noise.shape[-2:]))
    if not list(embeddings.parameters()):
        embeddings = None  # both designs off: the plain base model
    seeds = args.seed or [0]
    pairs = [(p, s) for p in args.prompt for s in seeds]
    config = GenerationConfig(steps=args.steps, guidance=args.guidance, noise_init=args.noise_init,
                              noise_prior=args.noise_prior)
    print(f"generating {len(pairs)} video(s) with step-{step} embeddings, debias={args.debias}", file=sys.stderr)
    videos = generate(pipe, reference.inverted_noise, [p for p, _ in pairs], [s for _, s in pairs],
                      embeddings, args.debias, config)
    out = Path(args.out)
    fps = args.fps or run.get("fps") or PRESETS[run["preset"]].fps
    for (prompt, seed), video in zip(pairs, videos):
        path = out if len(pairs) == 1 else out.with_name(
            f"{out.stem}-{args.prompt.index(prompt)}-s{seed}{out.suffix or '.mp4'}")
        videoio.write_video(path, video, fps=fps)
        print(path)
    return 0
