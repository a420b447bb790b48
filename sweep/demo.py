"""`motion-sweep demo`: the whole seed grid on a local Ray, in the toy world by default.

`--preset toy` (default): reference clips of the toy world (`model.toy_data`: flat shapes moving on plain
backgrounds), the toy model and toy CLIP trained on such clips (`model.toy`, shipped weights): the method
transfers each clip's motion to another shape, so the ablation's numbers mean something, in miniature.
`--preset tiny`: textured shapes, random weights: the same plumbing in seconds, numbers that mean nothing
(every row says so: `pretrained_metrics`).
"""

from __future__ import annotations

from pathlib import Path

import videoio

from vocabulary import SEED_GRID

from .spec import Spec

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
    from model import toy_data as td

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, ((shape, color, background, motion, seed), edit) in TOY_DEMO_VIDEOS.items():
        import numpy as np

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
    `toy`: the toy world's clips and settings that work there (`model.toy`); `tiny`: plumbing in seconds."""
    if preset == "toy":
        return _toy_demo_spec(storage, name, inversion_steps, ddim_steps, generation_steps)
    if preset != "tiny":
        raise ValueError(f"the demo runs the toy or the tiny preset, not {preset!r}")
    inversion_steps, ddim_steps, generation_steps = inversion_steps or 8, ddim_steps or 5, generation_steps or 4
    storage = Path(storage).resolve()
    videos = make_demo_videos(storage / "demo-videos")
    return Spec.model_validate({
        "name": name,
        "preset": "tiny",
        "storage": str(storage),
        "data": [{"video": str(videos[name]), "source_prompt": src, "prompts": [edit]}
                 for name, (_, _, src, edit) in DEMO_VIDEOS.items()],
        "axes": SEED_GRID,
        "inversion": {"steps": inversion_steps, "ddim_steps": ddim_steps},
        "generation": {"steps": generation_steps},
        "resources": {"cpu": 1},
    })


def _toy_demo_spec(storage: str | Path, name: str, inversion_steps: int | None, ddim_steps: int | None,
                   generation_steps: int | None) -> Spec:
    from model.toy import DEMO_SETTINGS

    storage = Path(storage).resolve()
    videos = make_toy_demo_videos(storage / "demo-videos-toy")
    return Spec.model_validate({
        "name": name,
        "preset": "toy",
        "storage": str(storage),
        "data": [{"video": str(path), "source_prompt": src, "prompts": [edit]} for path, src, edit in videos.values()],
        "axes": SEED_GRID,
        "inversion": {"steps": inversion_steps or DEMO_SETTINGS["inversion_steps"], "lr": DEMO_SETTINGS["lr"],
                      "ddim_steps": ddim_steps or DEMO_SETTINGS["ddim_steps"]},
        "generation": {"steps": generation_steps or DEMO_SETTINGS["generation_steps"],
                       "guidance": DEMO_SETTINGS["guidance"]},
        "resources": {"cpu": 1},
    })
