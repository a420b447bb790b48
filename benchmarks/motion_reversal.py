"""Motion fidelity of a clip against its own time reversal, on footage the tests do not build (issue 25).

    HF_HUB_OFFLINE=1 python benchmarks/motion_reversal.py [--seeds 0 1 2] [--sizes 128x128 144x256]
                                                         [--frames 24] [--footage roundabout street handheld] [--json]

A reversed clip is a different motion, so `motion_fidelity` must drop by at least 0.3 from the clip against itself.
With a moving camera, the version-2 score (every generated track takes its best match among all reference tracks;
`motion_fidelity(..., camera=False)`) did not: the reversed scene's tracks match the subject's and vice versa. The
clips here are made unlike the tests' (tests/helpers/camera_clips.py: noise textures, similarity cameras, a flat
subject): a real photograph (matplotlib's sample `grace_hopper.jpg`, mirrored into a large scene) under a camera
with perspective, and
  - roundabout: a car going round a circle, the camera behind it turning with it (the frame rotates), seen
    obliquely (a homography every frame, not a similarity);
  - street: two depths (the photo far away, a textured kerb near the bottom moving 1.8× as fast: parallax) under a
    pan, and a car driving against the pan;
  - handheld: a zoom in with seeded hand shake (small random rotations and shifts every frame) while a ball
    crosses the frame.
For each clip (seeds × sizes, LK tracks on the DMT grid clipped to the frame) it prints the score of the clip against
itself, against its reversal, against the same motion with another car and another scene crop (`other`), and against
a static clip (its first frame repeated), for motion_fidelity (camera and moving tracks), its version-2 form and the
published DMT score. Seconds: LK tracking and scoring of the 4 candidates, on the 2-core development VM.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2
import numpy as np

from evaluation import motion as motionm


# ------------------------------------------------------------------------------------------- footage
def photo_scene(rng: np.random.Generator, size: int, side: int) -> np.ndarray:
    """A `size`² float32 scene from the sample photograph: mirrored tiles, the photo 1.2–2 frame sides (`side`)
    wide, a seeded crop and tint."""
    import matplotlib.cbook
    from PIL import Image

    photo = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), np.float32)
    tile = np.concatenate([photo, photo[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    scale = rng.uniform(1.2, 2.0) * side / photo.shape[1]
    tile = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    reps = int(np.ceil(size / min(tile.shape[:2]))) + 1
    big = np.tile(tile, (reps, reps, 1))
    y, x = rng.integers(0, big.shape[0] - size), rng.integers(0, big.shape[1] - size)
    return np.clip(big[y:y + size, x:x + size] * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.float32)


def sprite(rng: np.random.Generator, h: int, w: int, round_corners: float) -> tuple[np.ndarray, np.ndarray]:
    """A textured body (colour, stripes, blurred grain) and its alpha: a rounded rectangle (round_corners < 0.5) or an
    ellipse (0.5)."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    base = rng.uniform(40, 220, 3).astype(np.float32)
    stripes = 30 * np.sin(xx * rng.uniform(0.3, 0.8) + rng.uniform(0, 6))[..., None]
    grain = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), 1.2)  # paint, not pixel noise
    body = np.clip(base + stripes + grain, 0, 255).astype(np.float32)
    r = round_corners * min(h, w)
    dx = np.maximum(np.abs(xx - (w - 1) / 2) - (w / 2 - r), 0)
    dy = np.maximum(np.abs(yy - (h - 1) / 2) - (h / 2 - r), 0)
    alpha = (dx ** 2 + dy ** 2 <= r ** 2).astype(np.float32)
    return body, alpha


def tilt(h: int, w: int, strength: float) -> np.ndarray:
    """An oblique view: a homography that shrinks the top of the frame (far) against the bottom (near)."""
    k = strength / h
    centre = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]])
    persp = np.array([[1, 0, 0], [0, 1, 0], [0, k, 1]]) @ np.diag([1 + strength / 2, 1 + strength / 2, 1])
    return np.linalg.inv(centre) @ persp @ centre


def render(frames: int, h: int, w: int, scene: np.ndarray, views: list[np.ndarray], bodies: list) -> np.ndarray:
    """uint8 frames: the scene through each frame's homography (scene pixel → image), then each body
    (pixels, alpha, per-frame homography body pixel → image) on top."""
    out = []
    for i in range(frames):
        frame = cv2.warpPerspective(scene, views[i], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        for pix, alpha, where in bodies:
            a = cv2.warpPerspective(alpha, where[i], (w, h), flags=cv2.INTER_LINEAR)[..., None]
            frame = frame * (1 - a) + cv2.warpPerspective(pix, where[i], (w, h), flags=cv2.INTER_LINEAR) * a
        out.append(frame)
    return np.stack(out)


def similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]])


def roundabout(frames: int, h: int, w: int, seed: int, look: int) -> np.ndarray:
    rng, paint = np.random.default_rng(seed), np.random.default_rng(look)
    side = min(h, w)
    radius = rng.uniform(1.0, 1.5) * side                      # of the car's circle, scene px
    sweep = np.radians(rng.uniform(30, 50)) * rng.choice([-1, 1])
    size = int(4 * radius + 4 * side)
    scene = photo_scene(paint, size, side)
    centre = np.array([size / 2, size / 2])
    phi = rng.uniform(0, 2 * np.pi) + sweep * np.arange(frames) / (frames - 1)
    heading = phi + np.sign(sweep) * np.pi / 2
    car = centre + radius * np.stack([np.cos(phi), np.sin(phi)], -1)
    lag = 0.25 * side * np.stack([np.cos(heading), np.sin(heading)], -1)
    cam = car - lag * np.linspace(1.0, 0.7, frames)[:, None]    # the camera closes in a little on the car
    # scene → camera (origin at the camera, heading up) → image (the camera at 60 % of the height) → oblique
    to_image = tilt(h, w, 0.35) @ np.array([[1, 0, w / 2], [0, 1, 0.6 * h], [0, 0, 1]])
    views = [to_image @ similarity(-a - np.pi / 2, 1.0, 0, 0) @ np.array([[1, 0, -x], [0, 1, -y], [0, 0, 1]])
             for a, (x, y) in zip(heading, cam)]
    ch, cw = int(0.32 * side), int(0.18 * side)
    pix, alpha = sprite(paint, ch, cw, 0.3)
    # body pixel → scene: centred on the car, its long side along the heading
    body = [v @ np.array([[1, 0, x], [0, 1, y], [0, 0, 1]]) @ similarity(a - np.pi / 2, 1.0, 0, 0)
            @ np.array([[1, 0, -cw / 2], [0, 1, -ch / 2], [0, 0, 1]]) for v, a, (x, y) in zip(views, heading, car)]
    return render(frames, h, w, scene, views, [(pix, alpha, body)])


def street(frames: int, h: int, w: int, seed: int, look: int) -> np.ndarray:
    rng, paint = np.random.default_rng(seed), np.random.default_rng(look)
    side = min(h, w)
    pan = rng.uniform(0.15, 0.3) * w * rng.choice([-1, 1])      # the far scene's flow over the clip, px
    scene = photo_scene(paint, 4 * max(h, w), side)
    kerb, _ = sprite(paint, h // 3, 4 * w, 0.0)
    t = np.arange(frames) / (frames - 1)
    view = tilt(h, w, 0.2)
    start = np.array([[1, 0, -1.5 * w], [0, 1, -1.5 * h], [0, 0, 1]])
    views = [view @ np.array([[1, 0, pan * s], [0, 1, 0], [0, 0, 1]]) @ start for s in t]
    near = [view @ np.array([[1, 0, 1.8 * pan * s - 1.5 * w], [0, 1, h - h // 3], [0, 0, 1]]) for s in t]
    ch, cw = int(0.22 * side), int(0.4 * side)
    pix, alpha = sprite(paint, ch, cw, 0.25)
    drive = -np.sign(pan) * rng.uniform(0.2, 0.35) * w           # against the pan, px over the clip
    car = [view @ np.array([[1, 0, w / 2 - cw / 2 + drive * (s - 0.5)], [0, 1, 0.55 * h - ch], [0, 0, 1]]) for s in t]
    ones = np.ones(kerb.shape[:2], np.float32)
    return render(frames, h, w, scene, views, [(kerb, ones, near), (pix, alpha, car)])


def handheld(frames: int, h: int, w: int, seed: int, look: int) -> np.ndarray:
    rng, paint = np.random.default_rng(seed), np.random.default_rng(look)
    side = min(h, w)
    scene = photo_scene(paint, 3 * max(h, w), side)
    zoom = (1 + rng.uniform(0.3, 0.5)) ** (np.arange(frames) / (frames - 1))
    shake = np.cumsum(rng.normal(0, [0.004, 0.3, 0.3], (frames, 3)), axis=0)  # radians, px, px: a random walk
    views = [np.array([[1, 0, w / 2], [0, 1, h / 2], [0, 0, 1]]) @ similarity(r, z, x, y)
             @ np.array([[1, 0, -1.5 * max(h, w)], [0, 1, -1.5 * max(h, w)], [0, 0, 1]])
             for z, (r, x, y) in zip(zoom, shake)]
    d = int(0.25 * side)
    pix, alpha = sprite(paint, d, d, 0.5)
    angle = rng.uniform(0, 2 * np.pi)
    along = np.arange(frames) / (frames - 1) - 0.5
    path = 0.35 * side * np.stack([np.cos(angle), np.sin(angle)], -1) * along[:, None]
    ball = [np.array([[1, 0, w / 2 - d / 2 + x], [0, 1, h / 2 - d / 2 + y], [0, 0, 1]]) for x, y in path]
    return render(frames, h, w, scene, views, [(pix, alpha, ball)])


FOOTAGE = {"roundabout": roundabout, "street": street, "handheld": handheld}


def finish(frames: np.ndarray, seed: int) -> np.ndarray:
    """Sensor noise, then uint8."""
    return np.clip(frames + np.random.default_rng(seed).normal(0, 3, frames.shape), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- scores
def track(video: np.ndarray) -> motionm.Tracks:
    _, h, w, _ = video.shape
    return motionm.track_lk(video, motionm.grid_points(motionm.effective_grid_size(55, h, w), h, w))


def measure(name: str, frames: int, h: int, w: int, seed: int) -> dict:
    make = FOOTAGE[name]
    clip = finish(make(frames, h, w, seed, look=seed), seed)
    other = finish(make(frames, h, w, seed, look=seed + 1000), seed + 1000)  # the same paths, other looks
    t0 = time.perf_counter()
    ref = track(clip)
    cands = {"self": ref, "reversed": track(clip[::-1].copy()), "other": track(other),
             "static": track(np.repeat(clip[:1], frames, axis=0))}
    row = {"footage": name, "size": f"{h}x{w}", "frames": frames, "seed": seed}
    for cand, tracks in cands.items():
        new = motionm.motion_fidelity(tracks, ref)
        row[cand] = {"motion_fidelity": new.score, "camera": new.camera, "objects": new.objects,
                     "v2": motionm.motion_fidelity(tracks, ref, camera=False).score, "dmt": new.dmt}
    row["seconds"] = time.perf_counter() - t0
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sizes", nargs="+", default=["128x128", "144x256"])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--footage", nargs="+", default=list(FOOTAGE), choices=list(FOOTAGE))
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = ap.parse_args()
    rows = []
    if not args.json:
        print("| footage | size | seed | version 2: self / reversed (drop) | motion_fidelity: self / reversed (drop) "
              "| DMT: self / reversed (drop) | other look | static | reversed: camera / objects | s |")
        print("|---|---|---:|---|---|---|---:|---:|---|---:|")
    for name in args.footage:
        for size in args.sizes:
            h, w = (int(v) for v in size.split("x"))
            for seed in args.seeds:
                rows.append(measure(name, args.frames, h, w, seed))
                if not args.json:
                    r = rows[-1]
                    print(f"| {name} | {size} | {seed} | " + " | ".join(
                        f"{r['self'][k]:.2f} / {r['reversed'][k]:.2f} ({r['self'][k] - r['reversed'][k]:+.2f})"
                        for k in ("v2", "motion_fidelity", "dmt"))
                        + f" | {r['other']['motion_fidelity']:.2f} | {r['static']['motion_fidelity']:.2f} | "
                        f"{r['reversed']['camera']:.2f} / {r['reversed']['objects']:.2f} | {r['seconds']:.1f} |",
                        flush=True)
    if args.json:
        print(json.dumps(rows, indent=1, default=float))
        return
    drops = np.array([r["self"]["motion_fidelity"] - r["reversed"]["motion_fidelity"] for r in rows])
    drops_v2 = np.array([r["self"]["v2"] - r["reversed"]["v2"] for r in rows])
    print(f"\n{len(rows)} clips: drop self − reversed, motion_fidelity min {drops.min():.2f} median "
          f"{np.median(drops):.2f} (≥ 0.3 in {(drops >= 0.3).sum()}); version 2 min {drops_v2.min():.2f} median "
          f"{np.median(drops_v2):.2f} (≥ 0.3 in {(drops_v2 >= 0.3).sum()})")


if __name__ == "__main__":
    main()
