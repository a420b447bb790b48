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
    `tiny`: textured shapes, plumbing in seconds; `toy`: the toy world's clips and the settings that work there
    (`model.toy.DEMO_SETTINGS`). Step counts given here win over the preset's."""
    storage = Path(storage).resolve()
    if preset == "tiny":
        videos = make_demo_videos(storage / "demo-videos")
        data = [(videos[v], src, edit) for v, (_, _, src, edit) in DEMO_VIDEOS.items()]
        inversion = {"steps": inversion_steps or 8, "ddim_steps": ddim_steps or 5}
        generation = {"steps": generation_steps or 4}
    elif preset == "toy":
        from model.toy import DEMO_SETTINGS as toy

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
