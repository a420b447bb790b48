"""`motion-sweep demo`'s specs: the whole seed grid on a local Ray, in the toy world by default, and a small search.

`--preset toy` (default): reference clips of the toy world (`toyworld.data`: flat shapes moving on plain
backgrounds), the toy model and toy CLIP trained on such clips (`toyworld`, shipped weights): the method
transfers each clip's motion to another shape, so the ablation's numbers mean something, in miniature.
`--preset tiny`: textured shapes, random weights: the same plumbing in seconds, numbers that mean nothing
(every row says so: `pretrained_metrics`). `--search`: a random search with ASHA on the tiny preset.
"""

from __future__ import annotations

from pathlib import Path

import videoio
from vocabulary import SEED_GRID

from .spec import Spec

#: The toy demo's settings: cold to tables in 87 s on 2 CPU cores (103 s at 100 steps, lr 0.1, 20 denoising steps):
#: fewer inversion steps at a higher rate than the toy world's transfer tests use (the toy UNet's temporal attention
#: is small: the embeddings need a higher learning rate than ZeroScope's 0.02), which over 8 fresh references
#: transferred as well (toyworld/NOTES.md, "The demo's settings"); guidance 7.5, not ZeroScope's 12: at 12 the toy
#: model's samples stop following motion words.
DEMO_SETTINGS = dict(inversion_steps=80, lr=0.2, ddim_steps=20, generation_steps=15, guidance=7.5)

DEMO_VIDEOS = {  # name: (direction, shape, source prompt, edit prompt)
    "square-right": ((1.0, 0.0), "square", "a red square slides to the right", "a blue ball rolls on the floor"),
    "circle-up": ((0.0, -1.0), "circle", "a red disc rises", "a balloon floats up into the sky"),
}


def make_demo_videos(folder: Path, num_frames: int = 12, size: int = 64) -> dict[str, Path]:
    """Textured shapes moving in straight lines (written once; reused by later runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, (name, (direction, shape, _, _)) in enumerate(DEMO_VIDEOS.items()):
        path = folder / f"{name}.mp4"
        if not path.exists():
            frames = videoio.moving_shape_video(num_frames, size, size, direction=direction, shape=shape,
                                                texture_seed=i)
            videoio.write_video(path, frames)
        paths[name] = path
    return paths


#: The toy demo's reference clips: (shape, colour, background, motion, seed) and the edit prompt's subject. The
#: source prompts name no motion (the embeddings must carry it); the edits name another shape and colour.
TOY_DEMO_VIDEOS = {
    "square-right": (("square", "red", "grey", "right", 3), ("circle", "blue", "grey")),
    "triangle-up-left": (("triangle", "green", "black", "up_left", 5), ("square", "yellow", "black")),
}


def make_toy_demo_videos(folder: Path) -> dict[str, tuple[Path, str, str]]:
    """The toy world's reference clips as mp4 files: {name: (path, source prompt, edit prompt)}."""
    import numpy as np

    from toyworld import data as td

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, ((shape, color, background, motion, seed), edit) in TOY_DEMO_VIDEOS.items():
        spec = td.sample_spec(np.random.default_rng(seed), shape=shape, color=color, background=background,
                              motion=motion)
        path = folder / f"{name}.mp4"
        if not path.exists():
            videoio.write_video(path, spec.render(), fps=td.FPS)
        out[name] = (path, spec.caption(with_motion=False), td.caption(*edit))
    return out


def demo_spec(storage: str | Path, name: str = "demo", preset: str = "toy", inversion_steps: int | None = None,
              ddim_steps: int | None = None, generation_steps: int | None = None) -> Spec:
    """The demo's spec: 2 videos × 1 edit prompt × the seed grid (36 points → 20 variants, 8 inversions each).
    `tiny`: textured shapes, plumbing in seconds; `toy`: the toy world's clips and the settings that work there
    (`DEMO_SETTINGS`). Step counts given here win over the preset's."""
    storage = Path(storage).resolve()
    if preset == "tiny":
        videos = make_demo_videos(storage / "demo-videos")
        data = [(videos[v], src, edit) for v, (_, _, src, edit) in DEMO_VIDEOS.items()]
        inversion = {"steps": inversion_steps or 8, "ddim_steps": ddim_steps or 5}
        generation = {"steps": generation_steps or 4}
    elif preset == "toy":
        toy = DEMO_SETTINGS
        data = list(make_toy_demo_videos(storage / "demo-videos-toy").values())
        inversion = {"steps": inversion_steps or toy["inversion_steps"], "lr": toy["lr"],
                     "ddim_steps": ddim_steps or toy["ddim_steps"]}
        generation = {"steps": generation_steps or toy["generation_steps"], "guidance": toy["guidance"]}
    else:
        raise ValueError(f"the demo runs the tiny or the toy preset, not {preset!r}")
    return Spec.model_validate({
        "name": name, "preset": preset, "storage": str(storage),
        "data": [{"video": str(path), "source_prompt": src, "prompts": [edit]} for path, src, edit in data],
        "axes": SEED_GRID, "inversion": inversion, "generation": generation, "resources": {"cpu": 1},
    })


def demo_search_spec(storage: str | Path, name: str = "demo-search", samples: int = 6,
                     rungs: tuple[int, ...] = (4, 8, 16), ddim_steps: int = 3, generation_steps: int = 3,
                     seed: int = 0) -> Spec:
    """`motion-sweep demo --search`: one synthetic video, the tiny preset, a random search over the learning
    rate and the MQK design with ASHA at `rungs`, one prompt × one seed scored per rung."""
    storage = Path(storage).resolve()
    videos = make_demo_videos(storage / "demo-videos")
    video, (_, _, source, edit) = next(iter(DEMO_VIDEOS.items()))
    return Spec.model_validate({
        "name": name, "preset": "tiny", "storage": str(storage),
        "data": [{"video": str(videos[video]), "source_prompt": source, "prompts": [edit]}],
        "inversion": {"steps": max(rungs), "ddim_steps": ddim_steps},
        "generation": {"steps": generation_steps},
        "resources": {"cpu": 1},
        "tune": {"checkpoint_every": max(rungs)},
        "search": {"objective": {"metric": "motion_fidelity", "penalty": {"appearance_leakage": 0.5}},
                   "space": {"inversion.lr": {"loguniform": [0.002, 0.2]}, "qk": ["1d", "2d"]},
                   "algorithm": "random", "scheduler": {"asha": {"rungs": list(rungs)}}, "samples": samples,
                   "eval": {"prompts": 1, "seeds": 1}, "seed": seed},
    })


def paper_scale_spec(folder: str | Path, axes: dict, n_videos: int = 22, n_prompts: int = 3) -> Spec:
    """A spec at the paper's scale (22 videos × 3 prompts on ZeroScope, the paper's settings) over stand-in
    videos that are only hashed: for planning and table benchmarks, not for running."""
    folder = Path(folder)
    data = []
    for i in range(n_videos):
        video = folder / f"video{i:02d}.mp4"
        video.write_bytes(f"stand-in for reference video {i}".encode())  # only hashed by the planner
        data.append({"video": str(video), "source_prompt": f"reference {i}",
                     "prompts": [f"edit {i}.{j}" for j in range(n_prompts)]})
    return Spec.model_validate({
        "name": "paper-ablation", "preset": "zeroscope", "storage": str(folder / "results"), "data": data,
        "axes": axes, "inversion": {"steps": 400, "lr": 0.02, "checkpoints": [250, 400], "ddim_steps": 50},
        "generation": {"steps": 30, "guidance": 12.0, "noise_prior": 0.5}})
