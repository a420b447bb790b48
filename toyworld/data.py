"""The toy world's data: moving flat shapes with captions that name what is seen.

A clip is a shape (square, circle, triangle) of a colour on a plain background, moving along a path
(eight straight directions, a clockwise circle, a zig-zag to the right; straight motions at random speed
with random speed changes). Its caption names what is seen: "a red circle moves left on a grey
background", or without the motion ("a red circle on a grey background"). Everything is seeded and
generated on the fly (numpy only; rendering lives in `videoio`): clips, single frames, a training caption, a
reference clip for the method, and a clip's counterpart with another shape.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

import videoio

FRAMES, HEIGHT, WIDTH, FPS = 8, 64, 64, 8

SHAPES = videoio.TOY_SHAPES
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 90, 230), "yellow": (235, 205, 40),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128), "black": (20, 20, 20), "white": (235, 235, 235),
}
#: motion name -> the words a caption uses for it
MOTIONS: dict[str, str] = {
    "right": "moves right", "left": "moves left", "up": "moves up", "down": "moves down",
    "up_right": "moves up and right", "up_left": "moves up and left",
    "down_right": "moves down and right", "down_left": "moves down and left",
    "circle": "moves in a circle", "zigzag": "zigzags right",
}
STRAIGHT = ("right", "left", "up", "down", "up_right", "up_left", "down_right", "down_left")
OPPOSITE = {"right": "left", "left": "right", "up": "down", "down": "up", "up_right": "down_left",
            "down_left": "up_right", "up_left": "down_right", "down_right": "up_left"}

SIZE_RANGE = (16.0, 20.0)     # shape bounding size, px
SPEED_RANGE = (4.0, 5.0)      # px per frame (straight motions): a path crosses most of the frame
JITTER = 4.0                  # px: how far a path's centre may sit from the frame's centre
ACCEL_RANGE = (-0.5, 0.5)     # speed change over the clip (0: constant speed)
RADIUS_RANGE = (8.0, 11.0)    # circle motion radius, px


def caption(shape: str, color: str, background: str, motion: str | None = None) -> str:
    """"a red circle moves left on a grey background"; `motion` None leaves the motion out."""
    verb = f" {MOTIONS[motion]}" if motion else ""
    return f"a {color} {shape}{verb} on a {background} background"


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides one clip; `render()` draws it."""

    shape: str
    color: str
    background: str
    motion: str
    size: float
    speed: float
    accel: float
    start: tuple[float, float]
    radius: float = 10.0
    phase: float = 0.0

    def path(self, num_frames: int = FRAMES) -> np.ndarray:
        return videoio.motion_path(self.motion, num_frames, self.speed, self.start, self.accel, self.radius,
                                   self.phase)

    def render(self, num_frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
        return videoio.render_shape_clip(self.path(num_frames), self.shape, COLORS[self.color],
                                         BACKGROUNDS[self.background], self.size, height, width)

    def caption(self, with_motion: bool = True) -> str:
        return caption(self.shape, self.color, self.background, self.motion if with_motion else None)

    def to_dict(self) -> dict:
        return asdict(self)


def sample_spec(rng: np.random.Generator, shape: str | None = None, color: str | None = None,
                background: str | None = None, motion: str | None = None, num_frames: int = FRAMES,
                height: int = HEIGHT, width: int = WIDTH) -> ClipSpec:
    """A random clip (any argument given is fixed); the whole path stays inside the frame.

    A path is centred on the frame (± `JITTER` px), so where a shape starts follows from where it goes: "moves
    right" enters on the left. Why: at the noisiest timesteps the model can only learn the mean clip for a
    caption; with starts anywhere that mean is a smear whose motion is too faint to learn in a CPU build (the
    model then lets the noise decide the direction), with centred paths it is the motion itself
    (toyworld/NOTES.md "What made the words steer the motion")."""
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    color = color or list(COLORS)[rng.integers(len(COLORS))]
    background = background or list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    motion = motion or list(MOTIONS)[rng.integers(len(MOTIONS))]
    size = float(rng.uniform(*SIZE_RANGE))
    speed = float(rng.uniform(*SPEED_RANGE))
    accel = float(rng.uniform(*ACCEL_RANGE)) if motion in STRAIGHT else 0.0
    radius = float(rng.uniform(*RADIUS_RANGE))
    phase = float(rng.uniform(0, 2 * np.pi))
    rel = videoio.motion_path(motion, num_frames, speed, (0.0, 0.0), accel, radius, phase)
    margin = size / 2 + 1.0
    lo = margin - rel.min(0)
    hi = np.array([width, height], np.float64) - margin - rel.max(0)
    centred = np.array([width, height], np.float64) / 2 - (rel.min(0) + rel.max(0)) / 2
    start = centred + rng.uniform(-JITTER, JITTER, 2)
    start = np.where(hi >= lo, np.clip(start, lo, hi), centred)  # a path longer than the frame is centred
    start = tuple(float(v) for v in start)
    return ClipSpec(shape, color, background, motion, size, speed, accel, start, radius, phase)


def training_caption(spec: ClipSpec, rng: np.random.Generator, drop_motion: float = 0.3,
                     drop_all: float = 0.1) -> str:
    """The caption the diffusion model trains on: "" with probability `drop_all` (for classifier-free
    guidance), the motion left out with probability `drop_motion` (so a prompt without a motion word is
    in-distribution and gives varied motions), else the full caption."""
    u = rng.random()
    if u < drop_all:
        return ""
    return spec.caption(with_motion=rng.random() >= drop_motion)


def sample_clips(n: int, seed: int, **fixed) -> tuple[np.ndarray, list[ClipSpec]]:
    """`n` random clips → (uint8 [n, F, H, W, 3], their specs); the same seed gives the same clips."""
    rng = np.random.default_rng(seed)
    specs = [sample_spec(rng, **fixed) for _ in range(n)]
    return np.stack([s.render() for s in specs]), specs


def all_captions(with_motion: bool = False) -> list[tuple[str, str, str, str | None, str]]:
    """Every (shape, color, background, motion, caption) the world can describe."""
    out = []
    for s in SHAPES:
        for c in COLORS:
            for b in BACKGROUNDS:
                for m in ([None, *MOTIONS] if with_motion else [None]):
                    out.append((s, c, b, m, caption(s, c, b, m)))
    return out


def random_frames(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[ClipSpec]]:
    """`n` single frames (a random frame of a random clip each) and their clips."""
    specs = [sample_spec(rng) for _ in range(n)]
    frames = np.stack([s.render()[rng.integers(FRAMES)] for s in specs])
    return frames, specs


def held_out_frames(seed: int, n: int = 360) -> tuple[np.ndarray, list[tuple[str, str, str]]]:
    """`n` random frames and their (shape, colour, background) labels: a zero-shot test set for the toy CLIP."""
    frames, specs = random_frames(np.random.default_rng(seed), n)
    return frames, [(s.shape, s.color, s.background) for s in specs]


def reference_clip(motion: str, shape: str = "square", color: str = "red", background: str = "grey",
                   seed: int = 0) -> tuple[np.ndarray, ClipSpec]:
    """A reference clip of the toy world (seeded size, speed and place) and its spec."""
    spec = sample_spec(np.random.default_rng(seed), shape=shape, color=color, background=background,
                       motion=motion)
    return spec.render(), spec


def shape_counterpart(spec: ClipSpec) -> ClipSpec:
    """The same clip (path, size, colour, background) with the next shape: square → circle → triangle → square,
    so each pair of shapes is met once."""
    return replace(spec, shape=SHAPES[(SHAPES.index(spec.shape) + 1) % len(SHAPES)])
