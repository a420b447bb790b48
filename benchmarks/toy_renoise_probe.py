"""toyworld/NOTES.md "Builds 11–13": at which noise level does a toy world lose a square's corners?

    python benchmarks/toy_renoise_probe.py [WORLD]   # WORLD: a built toy world folder (default: the shipped one)

Re-noises 6 real red squares and 6 red circles (grey background, moving right) to 0.2 / 0.4 / 0.6 / 0.8 of the
noise schedule, denoises each with its own caption (diffusers' VideoToVideoSDPipeline on the world's components,
30 DDIM steps, guidance 7.5) and prints how many the toy CLIP still classifies as the shape they started as.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    import torch
    from diffusers import VideoToVideoSDPipeline

    from model.generation import frames_uint8
    from model.presets import get_preset, load_pipeline
    from toyworld import data as td
    from toyworld.judge import ToyJudge
    from toyworld.measurement import toy_scorer
    from vocabulary import TOY_WORLD_DIR

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("world", nargs="?", default=str(TOY_WORLD_DIR))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = Path(args.world)
    base = load_pipeline(get_preset("toy", model=world / "pipeline"), device="cpu")  # as measure() loads it
    pipe = VideoToVideoSDPipeline(**base.components)
    pipe.set_progress_bar_config(disable=True)
    judge = ToyJudge(toy_scorer(world / "clip").clip)
    rng = np.random.default_rng(5)
    print(f"{world}: of 6 real clips, how many keep their shape when re-noised to a share of the schedule")
    for shape in ("square", "circle"):
        clips = [td.sample_spec(rng, shape=shape, color="red", background="grey", motion="right").render()
                 for _ in range(6)]
        kept = []
        for strength in (0.2, 0.4, 0.6, 0.8):
            classes = [judge.clip_class(frames_uint8(pipe(
                prompt=td.caption(shape, "red", "grey"), video=list(clip.astype(np.float32) / 255.0),
                strength=strength, num_inference_steps=30, guidance_scale=7.5,
                generator=torch.Generator().manual_seed(i), output_type="np").frames)[0])[0]
                for i, clip in enumerate(clips)]
            kept.append(f"{strength}: {classes.count(shape)}")
        print(f"{shape}s kept: " + ", ".join(kept))


if __name__ == "__main__":
    main()
