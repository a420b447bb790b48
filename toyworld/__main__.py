"""The toy world: a tiny text-to-video model and a tiny CLIP, trained on moving shapes (`toyworld.data`).

The `toy` preset is the demo's default and the project's positive control: prompts are followed and motion
inversion really transfers motion, measurably, on 2 CPU cores. This is its command line:

    python -m toyworld build              # train everything from seed 0 (75 min on 2 CPU cores)
    python -m toyworld build --minutes 10 # a quick, worse world (same steps, shorter phases)
    python -m toyworld build --reuse W --resume W --out X  # fine-tune world W's UNet + text encoder into X
    python -m toyworld build --eval-transfer 4  # also check the method's transfer at every sample check
    python -m toyworld eval [--transfer 4] # re-measure the shipped world (and whether the method transfers)

A build writes fp16 folders under `model/toy_world/` (where the `toy` preset finds them), then measures them through
`load_pipeline("toy")` and the toy CLIP's `local-dir:` name: prompt following, and a small motion-transfer check
of the method itself. How the shipped world came to be: toyworld/NOTES.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vocabulary import TOY_WORLD_DIR

from .architecture import jsonable
from .builder import build
from .measurement import measure
from .train import BuildConfig


def main(argv: list[str] | None = None) -> int:
    """`python -m toyworld build|eval ...`; the exit status."""
    parser = argparse.ArgumentParser(prog="python -m toyworld", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train the toy world and write model/toy_world/")
    defaults = BuildConfig()
    b.add_argument("--minutes", type=float, default=defaults.minutes,
                   help=f"time budget of the training phases (default {defaults.minutes:g}); step options win")
    b.add_argument("--clip-share", type=float, default=defaults.clip_share)
    b.add_argument("--vae-share", type=float, default=defaults.vae_share)
    for name in ("vae_steps", "clip_steps", "unet_steps", "train_clips", "unet_batch", "seed", "threads",
                 "eval_every", "eval_clips", "image_batch", "eval_transfer"):
        b.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("unet_lr", "drop_motion", "high_t", "t_max", "text_distill", "image_share", "shape_pairs"):
        b.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    b.add_argument("--reuse", default="", help="keep the VAE and toy CLIP of this built world (train the UNet only)")
    b.add_argument("--resume", default="", help="continue the UNet + text encoder of this built world (with --reuse "
                                                "of the same world: a fine-tune)")
    b.add_argument("--out", default=defaults.out, help="output folder (default: the shipped model/toy_world)")
    b.add_argument("--snapshot", default="", help="also save the EMA pipeline here at every sample check")
    e = sub.add_parser("eval", help="measure a built toy world")
    e.add_argument("--out", default=str(TOY_WORLD_DIR))
    e.add_argument("-n", type=int, default=24)
    e.add_argument("--transfer", type=int, default=4, help="references of the motion-transfer check (0 skips it)")
    e.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "eval" and args.transfer < 0:
        parser.error(f"--transfer {args.transfer}: give a number of references, or 0 to skip the transfer check")
    if args.command == "build" and not 0 < args.t_max <= 1:
        parser.error(f"--t-max {args.t_max}: give a share of the noise schedule in (0, 1] (1 = all timesteps)")
    if args.command == "build" and args.shape_pairs < 0:
        parser.error(f"--shape-pairs {args.shape_pairs}: give a weight >= 0 (0 = no paired loss)")
    if args.command == "build" and args.eval_transfer < 0:
        parser.error(f"--eval-transfer {args.eval_transfer}: give a number of references, or 0 for no transfer "
                     "check at the sample checks")
    if args.command == "build":
        cfg = BuildConfig(**{k: v for k, v in vars(args).items() if k in BuildConfig.__dataclass_fields__})
        data = build(cfg)
        print(json.dumps(data.get("final", {}), indent=1, default=jsonable))
    else:
        import torch

        torch.set_num_threads(args.threads)
        out = Path(args.out)
        print(json.dumps(measure(out / "pipeline", out / "clip", n=args.n, transfer=args.transfer), indent=1,
                         default=jsonable))
    return 0


if __name__ == "__main__":
    sys.exit(main())
