"""The `motion-sweep` command line.

Heavy libraries (torch, diffusers, Ray) are imported inside each command so `--help` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except USER_ERRORS + _user_error_types() as exc:
        print(f"motion-sweep {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that mean "your input is wrong" (printed without a traceback), from modules already loaded."""
    types: list[type[BaseException]] = []
    if "model.presets" in sys.modules:
        types.append(sys.modules["model.presets"].ModelNotFoundError)
    if "evaluation" in sys.modules and hasattr(sys.modules["evaluation"], "EvaluationError"):
        types.append(sys.modules["evaluation"].EvaluationError)
    if "sweep.runner" in sys.modules:
        runner = sys.modules["sweep.runner"]
        types += [runner.StorageError, runner.WorkerVisibilityError]
    return tuple(types)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="motion-sweep",
        description="Motion Inversion (arXiv 2403.20193) from the command line: learn motion embeddings from a "
                    "reference video, generate new videos with them, score videos, and run ablation sweeps on Ray.",
        epilog="Start with `motion-sweep demo`. Each command has its own --help.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("invert", help="learn motion embeddings from one reference video",
                       description="Learn motion embeddings (Motion Query-Key / Motion Value) from one reference "
                                   "video. Writes the embeddings at each checkpoint step plus the cached reference "
                                   "(latent and DDIM-inverted noise) to OUT, ready for `motion-sweep generate`.")
    p.add_argument("--preset", default="tiny", help="base model: zeroscope (the paper's) or tiny (offline toy; "
                   "default)")
    p.add_argument("--model", help="local directory with the preset's weights (instead of the hub id)")
    p.add_argument("--video", required=True, help="reference video: mp4/gif/webm file or a folder of frames")
    p.add_argument("--prompt", required=True, help="text describing the reference video (source prompt)")
    p.add_argument("--qk", default="1d", choices=["1d", "2d", "off"], help="Motion Query-Key design (default 1d)")
    p.add_argument("--v", default="2d", choices=["2d", "1d", "off"], help="Motion Value design (default 2d)")
    p.add_argument("--steps", type=int, default=400, help="optimisation steps (default 400)")
    p.add_argument("--checkpoints", default="", help="extra steps to save, comma-separated, e.g. 150,250")
    p.add_argument("--lr", type=float, default=0.02, help="AdamW learning rate (default 0.02)")
    p.add_argument("--loss", default="base", choices=["base", "debiased_temporal"], help="training loss")
    p.add_argument("--placement", default="down_blocks.2,up_blocks.1",
                   help="UNet blocks whose temporal attention gets embeddings (default: the paper's 1280 levels)")
    p.add_argument("--frames", type=int, help="frames to use (default: the preset's, 24 for zeroscope)")
    p.add_argument("--start", type=int, default=0, help="first frame to use (default 0)")
    p.add_argument("--stride", type=int, default=1, help="take every STRIDE-th frame (default 1)")
    p.add_argument("--ddim-steps", type=int, default=50, help="DDIM inversion steps (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_invert)

    p = sub.add_parser("generate", help="generate a video with learned motion embeddings",
                       description="Generate videos for new prompts with the motion learned by `motion-sweep "
                                   "invert`. Several --prompt/--seed values make one video each.")
    p.add_argument("--embeddings", required=True, help="the directory written by `motion-sweep invert`")
    p.add_argument("--step", type=int, help="which checkpoint step to use (default: the last)")
    p.add_argument("--prompt", required=True, action="append", help="edit prompt (repeatable)")
    p.add_argument("--debias", default="difference", choices=["difference", "normalize", "none", "drop"],
                   help="Motion Value debias at generation (default: difference, the paper's)")
    p.add_argument("--seed", type=int, action="append", help="noise seed (repeatable; default 0)")
    p.add_argument("--steps", type=int, default=30, help="DDIM steps (default 30)")
    p.add_argument("--guidance", type=float, default=12.0, help="classifier-free guidance (default 12)")
    p.add_argument("--noise-init", default="blend", choices=["blend", "random"],
                   help="blend: BlendInit from the inverted reference noise (default); random: pure noise")
    p.add_argument("--noise-prior", type=float, default=0.5, help="BlendInit's p (default 0.5)")
    p.add_argument("--model", help="local directory with the base model's weights, if not where invert found it")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out", required=True, help="output .mp4 (or .gif); several videos get -<prompt#>-s<seed>")
    p.set_defaults(func=cmd_generate)

    from evaluation.cli import add_score_arguments  # light: argparse only

    p = sub.add_parser("score", help="score a generated video against its reference and prompt",
                       description="Every metric for one generated video (any size and length; the reference is "
                                   "resampled to it): CLIP text similarity, temporal consistency, appearance "
                                   "leakage, DMT motion fidelity (published and two-way), and the backbones used.")
    add_score_arguments(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("plan", help="show what a sweep spec would run (and what the store already holds)",
                       description="Expand the spec's grid over every video × prompt, map grid points to canonical "
                                   "variants, and count DDIM inversions, embedding optimisations and generations, "
                                   "against a naive one-trial-per-grid-point sweep.")
    p.add_argument("spec", help="sweep spec (YAML)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run a sweep spec on Ray (local or a cluster)",
                       description="Run the spec: one Ray Tune trial per inversion, rows written to Parquet under "
                                   "the spec's storage. Re-running a spec resumes it.")
    p.add_argument("spec", help="sweep spec (YAML)")
    p.add_argument("--address", default="local",
                   help="local (start Ray here; default), auto (the cluster this machine belongs to) or ray://host:port")
    p.add_argument("--max-concurrent", type=int, help="at most N trials at once (default: as resources allow)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray (default: all)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the whole seed ablation grid on synthetic videos (no weights, no GPU)",
                       description="Make synthetic reference videos, run the seed grid (qk × v × remove × debias) "
                                   "with the tiny preset and offline metrics on a local Ray, and print a summary. "
                                   "Its numbers test the plumbing, not the method.")
    p.add_argument("--storage", default="./demo-results", help="where tables and videos go (default ./demo-results)")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", help="summarize a sweep: means with 95%% CIs, FID/KID per variant",
                       description="Group the samples by variant and checkpoint: mean and 95%% bootstrap CI over "
                                   "videos, error counts, FID/KID from stored features, paired deltas against "
                                   "--reference. Prints a table and writes summary.md and summary.csv.")
    p.add_argument("path", help="a sweep folder (STORAGE/NAME) or a storage root")
    p.add_argument("--out", help="folder for summary.md/summary.csv (default: PATH)")
    p.add_argument("--reference", help="variant id to compare every other variant against")
    p.set_defaults(func=cmd_report)
    return parser


def _load_pipeline(preset_name: str, model: str | None, device: str | None):
    from model import get_preset, load_pipeline

    return load_pipeline(get_preset(preset_name, model), device=device)


def cmd_invert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model import InversionConfig, get_preset, load_video_frames, prepare_reference, train_embeddings

    preset = get_preset(args.preset, args.model)
    config = InversionConfig(
        qk=args.qk, v=args.v, placement=tuple(p for p in args.placement.split(",") if p), steps=args.steps,
        lr=args.lr, loss=args.loss, seed=args.seed,
        checkpoints=tuple(int(c) for c in args.checkpoints.split(",") if c.strip()))
    out = Path(args.out)
    frames = args.frames or preset.num_frames
    video = load_video_frames(args.video, frames, preset.height, preset.width, args.start, args.stride)
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
           "inversion": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(config).items()},
           "saved_steps": sorted(result.checkpoints), "losses": result.losses,
           "seconds": round(result.seconds, 3), "parameters": result.embeddings.num_parameters()}
    (out / "run.json").write_text(json.dumps(run, indent=2))
    print(f"wrote {len(result.checkpoints)} checkpoint(s) ({result.embeddings.num_parameters():,} parameters) "
          f"to {out}", file=sys.stderr)
    print(out)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from model import GenerationConfig, Reference, generate
    from model.embeddings import MotionEmbeddings
    import videoio

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
    fps = 8
    for i, ((prompt, seed), video) in enumerate(zip(pairs, videos)):
        path = out if len(pairs) == 1 else out.with_name(
            f"{out.stem}-{args.prompt.index(prompt)}-s{seed}{out.suffix or '.mp4'}")
        videoio.write_video(path, video, fps=fps)
        print(path)
    return 0



def cmd_score(args: argparse.Namespace) -> int:
    from evaluation.cli import run_score

    return run_score(args)


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import format_summary, make_plan, plan_summary
    from .spec import load_spec
    from .store import Store

    spec = load_spec(args.spec)
    summary = plan_summary(make_plan(spec), Store(spec.storage))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def _print_run(summary) -> int:
    print(f"{summary.sweep}: {summary.ran} trial(s) run, {summary.skipped} already complete, "
          f"{summary.ddim_inversions} DDIM inversion(s), {summary.seconds:.1f} s", file=sys.stderr)
    for trial_id, error in summary.failed.items():
        print(f"  FAILED {trial_id}: {error}", file=sys.stderr)
    print(f"tables: {summary.storage}  (from sweep.results import load; load({summary.storage!r}))")
    return 1 if summary.failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import run_sweep
    from .spec import load_spec

    spec = load_spec(args.spec)
    summary = run_sweep(spec, address=args.address, max_concurrent=args.max_concurrent, num_cpus=args.num_cpus)
    return _print_run(summary)


def cmd_demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray binds 127.0.0.1
    from .demo import demo_spec
    from .results import report
    from .runner import run_sweep

    spec = demo_spec(args.storage)
    summary = run_sweep(spec, address="local", num_cpus=args.num_cpus, verbose=0)
    code = _print_run(summary)
    report(summary.storage, n_boot=200)
    print("note: tiny preset + random metric backbones — these numbers test the plumbing, not the method")
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from .results import report

    report(args.path, args.out, reference_variant=args.reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
