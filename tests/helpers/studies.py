"""A sweep for the study tests, without a model: a samples table written with `sweep.results.tables.write_part`
and tiny H.264 clips from `videoio.moving_shape_video` (3 variants, one of them at two checkpoints), and the vote
part files of a study as they lie on disk."""

from __future__ import annotations

from pathlib import Path

from sweep.results.store import Store
from sweep.results.tables import write_part
from videoio import moving_shape_video, write_video

BASE, FULL, NOMV = "qk=off v=off", "qk=1d v=2d debias=difference", "qk=1d v=off"
VARIANTS = (BASE, FULL, NOMV)
STEPS = {BASE: [0], FULL: [100, 200], NOMV: [200]}
COLOURS = {BASE: (210, 210, 210), FULL: (230, 60, 40), NOMV: (40, 150, 235)}


def build_sweep(root: Path, *, size: int = 48, frames: int = 8, store_uri: str | None = None,
                videos: tuple[str, ...] = ("dog", "car"), prompts: tuple[str, ...] = ("a red ball", "a blue cube"),
                ) -> str:
    """A sweep folder `toy-sweep` with 3 variants × len(videos) × len(prompts) ok clips (FULL at 2 checkpoints)
    plus one error row; clips under root/clips (or uploaded to `store_uri` when given). Returns the folder."""
    storage = store_uri or str(root / "storage")
    store = Store(storage)
    motion = {"dog": ((1, 0), "square"), "car": ((0, 1), "circle"), "cat": ((1, 1), "triangle")}
    rows = []

    def put(local: Path, rel: str) -> str:
        if store.is_local:
            return str(local)
        store.upload(local, rel)
        return store.uri_of(rel)

    for vid in videos:
        direction, shape = motion[vid]
        ref = put(write_video(root / "clips" / f"ref-{vid}.mp4",
                              moving_shape_video(frames, size, size, direction=direction, shape=shape)),
                  f"refs/{vid}.mp4")
        for pi, prompt in enumerate(prompts):
            for k, variant in enumerate(VARIANTS):
                for step in STEPS[variant]:
                    # the base model's motion runs the other way: the page's clips differ visibly
                    clip = moving_shape_video(frames, size, size, direction=direction if k else (-1, 0), shape=shape,
                                              color=COLOURS[variant], texture_seed=pi)
                    name = f"{vid}-{pi}-{k}-{step}.mp4"
                    path = put(write_video(root / "clips" / name, clip), f"store/videos/{name}")
                    rows.append({"variant": variant, "video": vid, "prompt": prompt, "generation_seed": 0,
                                 "checkpoint_step_applied": step, "status": "ok", "video_path": path,
                                 "source_video": ref, "sample_key": f"{vid}-{pi}-{k}-{step}"})
    rows.append({"variant": NOMV, "video": videos[0], "prompt": "a green star", "generation_seed": 0,
                 "checkpoint_step_applied": 200, "status": "error", "error": "generate: boom", "video_path": None,
                 "source_video": "missing.mp4", "sample_key": "err"})
    write_part(store, "toy-sweep", "t1", rows)
    return store.uri_of("toy-sweep")


def part_files(sweep: str, study: str) -> dict[str, bytes]:
    """{name: bytes} of the vote parts of `study` in a local sweep folder."""
    folder = Path(sweep, "votes")
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"part-{study}-*.parquet"))} if folder.is_dir() else {}
