"""`motion-sweep demo`: the whole seed grid on synthetic videos, the tiny preset and offline metrics, on local Ray.

Its numbers test the plumbing (random toy weights), not the science; every row says so (`pretrained_metrics`).
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


def demo_spec(storage: str | Path, name: str = "demo", inversion_steps: int = 8, ddim_steps: int = 5,
              generation_steps: int = 4) -> Spec:
    """The demo's spec: 2 videos × 1 edit prompt × the seed grid (36 points → 20 variants, 8 inversions each)."""
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
