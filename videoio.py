"""Video files in and out, and synthetic reference videos.

Shared by `model` (reading reference videos, writing generated ones) and `evaluation` (scoring files),
which must not import each other. Frames are always uint8 arrays shaped [T, H, W, 3] (RGB).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".gif", ".webm", ".mov", ".mkv", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class VideoError(ValueError):
    """A video the user gave us cannot be used; the message says why and what to do."""


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Read every frame of a video file (mp4/gif/webm/...) or a folder of images (sorted by name)."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.exists():
        raise VideoError(f"video not found: {path} (give an mp4/gif/webm file or a folder of frames)")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise VideoError(f"folder {path} holds no frames ({', '.join(IMAGE_SUFFIXES)} files expected)")
        try:
            frames = [_rgb(iio.imread(f)) for f in files]
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the user's file
            raise VideoError(f"cannot read a frame in {path}: {exc}") from None
        if len({f.shape for f in frames}) != 1:
            raise VideoError(f"frames in {path} differ in size; resize them to one size first")
        frames = np.stack(frames)
    else:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise VideoError(f"{path} is a still image, not a video; give a video file or a folder of frames")
        try:
            plugin = "pillow" if path.suffix.lower() == ".gif" else "pyav"
            frames = iio.imread(path, plugin=plugin, index=None)
        except Exception as exc:  # noqa: BLE001
            raise _undecodable(path, exc) from None
        frames = np.asarray(frames)
        if frames.ndim == 3:  # a one-frame file comes back without the time axis
            frames = frames[None]
        frames = np.stack([_rgb(f) for f in frames])
    if frames.shape[0] < 2:
        raise VideoError(f"{path} has a single frame; a video needs at least 2")
    return frames


def _undecodable(path: Path, exc: Exception) -> VideoError:
    return VideoError(f"cannot decode video {path}: {type(exc).__name__}: {exc} (is the file complete? re-encode "
                      f"it, e.g. `ffmpeg -i {path.name} -c:v libx264 -pix_fmt yuv420p fixed.mp4`, or give a folder "
                      "of frames)")


def probe_video(path: str | os.PathLike, needed: int) -> tuple[int, int, int]:
    """Decode only what shows a video is usable: its header and first `needed` frames (a folder: the first
    `needed` images). Returns (frames decoded, height, width); VideoError says what is wrong (unreadable,
    corrupt, or fewer than `needed` frames)."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.exists():
        raise VideoError(f"video not found: {path} (give an mp4/gif/webm file or a folder of frames)")
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            frames = [_rgb(iio.imread(f)) for f in files[:needed]]
            total = len(files)
        else:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                raise VideoError(f"{path} is a still image, not a video; give a video file or a folder of frames")
            plugin = "pillow" if path.suffix.lower() == ".gif" else "pyav"
            frames = []
            for frame in iio.imiter(path, plugin=plugin):
                frames.append(_rgb(np.asarray(frame)))
                if len(frames) >= needed:
                    break
            total = len(frames)
    except VideoError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the user's file
        raise _undecodable(path, exc) from None
    if not frames:
        raise VideoError(f"{path} holds no decodable frame")
    if len({f.shape for f in frames}) != 1:
        raise VideoError(f"frames in {path} differ in size; resize them to one size first")
    if total < needed:
        raise VideoError(f"{path} has {total} frames but the sweep needs {needed} (frames, start and stride); "
                         "lower them or use a longer video")
    return len(frames), frames[0].shape[0], frames[0].shape[1]


def _rgb(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.shape[-1] == 4:
        frame = frame[..., :3]
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return frame


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 8) -> Path:
    """Write uint8 frames [T, H, W, 3] as mp4 (H.264) or gif, atomically (temp file, then rename)."""
    import imageio.v3 as iio

    path = Path(path)
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        if path.suffix.lower() == ".gif":
            iio.imwrite(tmp, frames, plugin="pillow", duration=1000 / fps, loop=0)
        else:
            _write_h264(tmp, frames, fps)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write_h264(path: str, frames: np.ndarray, fps: int) -> None:
    """H.264 through PyAV directly: imageio's writer runs gc.collect() twice per file, which costs more than
    encoding a short clip inside a process holding a model. yuv444p keeps small synthetic clips exact enough to
    track, and odd sizes are fine with it."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv444p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush


def sample_frames(frames: np.ndarray, num_frames: int, start: int = 0, stride: int = 1) -> np.ndarray:
    """Take `num_frames` frames from `start` every `stride` frames; too short a video is an error."""
    if num_frames < 1 or stride < 1 or start < 0:
        raise VideoError(f"bad frame sampling: num_frames={num_frames}, start={start}, stride={stride}")
    needed = start + (num_frames - 1) * stride + 1
    if frames.shape[0] < needed:
        raise VideoError(
            f"video has {frames.shape[0]} frames but {num_frames} frames from {start} every {stride} "
            f"need {needed}; lower frames/stride or use a longer video")
    return frames[start:needed:stride]


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize so the frame covers height×width (aspect kept), then crop the centre."""
    import torch
    import torch.nn.functional as F

    t, h, w, _ = frames.shape
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    x = x[:, :, top:top + height, left:left + width]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def moving_shape_video(
    num_frames: int = 16,
    height: int = 64,
    width: int = 64,
    direction: tuple[float, float] = (1.0, 0.0),
    speed: float = 2.0,
    shape: str = "square",
    color: tuple[int, int, int] = (230, 60, 40),
    background: tuple[int, int, int] = (30, 40, 60),
    size: int | None = None,
    texture_seed: int = 0,
) -> np.ndarray:
    """A textured shape moving in a straight line over a textured background.

    `direction` is (dx, dy) in pixels per frame before `speed` scaling (x right, y down). The texture
    gives trackers corners to hold on to; the background is static, so only the shape moves.
    """
    rng = np.random.default_rng(texture_seed)
    size = size or max(8, min(height, width) // 4)
    bg = np.asarray(background, np.float32) + rng.normal(0, 25, (height, width, 1)).astype(np.float32)
    bg = np.clip(bg, 0, 255)
    sprite_tex = rng.normal(0, 40, (size, size, 1)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    if shape == "square":
        mask = np.ones((size, size), bool)
    elif shape == "circle":
        mask = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= (size / 2) ** 2
    elif shape == "triangle":
        mask = xx <= yy
    else:
        raise ValueError(f"unknown shape {shape!r}; use square, circle or triangle")
    dx, dy = direction[0] * speed, direction[1] * speed
    # Centre the path so the shape stays in view for the whole clip.
    x0 = (width - size) / 2 - dx * (num_frames - 1) / 2
    y0 = (height - size) / 2 - dy * (num_frames - 1) / 2
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frame = bg.copy()
        x, y = int(round(x0 + dx * i)), int(round(y0 + dy * i))
        ys, xs = slice(max(y, 0), min(y + size, height)), slice(max(x, 0), min(x + size, width))
        sub = mask[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x]
        tex = np.clip(np.asarray(color, np.float32) + sprite_tex[ys.start - y:ys.stop - y,
                                                                  xs.start - x:xs.stop - x], 0, 255)
        region = frame[ys, xs]
        region[sub] = tex[sub]
        frame[ys, xs] = region
        out[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------------
# The toy world's clips: flat shapes with a dark border on plain backgrounds, moving along a path.
# Anti-aliased from signed distances (sub-pixel positions, smooth motion), so a small VAE can reproduce
# them and a Lucas–Kanade tracker finds the border's edges and corners. Used by `toyworld.data`.

TOY_SHAPES = ("square", "circle", "triangle")


def _shape_distance(shape: str, x: np.ndarray, y: np.ndarray, size: float) -> np.ndarray:
    """Signed distance (px, negative inside) to a shape of bounding size `size` centred at the origin."""
    half = size / 2.0
    if shape == "circle":
        return np.hypot(x, y) - half
    if shape == "square":
        r = half * 0.9  # a square looks bigger than a circle of the same width
        qx, qy = np.abs(x) - r, np.abs(y) - r
        return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    if shape == "triangle":  # upright isosceles triangle inscribed in the size×size box
        top, bottom = (0.0, -half), half * 0.85
        d_base = y - bottom  # > 0 below the base
        # the two slanted sides: normals pointing outwards
        sides = []
        for sign in (-1.0, 1.0):
            ex, ey = sign * half, bottom - top[1]  # edge vector from apex to a base corner
            nx, ny = ey * sign, -ex * sign
            norm = np.hypot(nx, ny)
            sides.append(((x - top[0]) * nx + (y - top[1]) * ny) / norm)
        return np.maximum(np.maximum(sides[0], sides[1]), d_base)
    raise ValueError(f"unknown shape {shape!r}; use one of {', '.join(TOY_SHAPES)}")


def render_shape_clip(path: np.ndarray, shape: str, color: tuple[int, int, int],
                      background: tuple[int, int, int], size: float = 16.0, height: int = 64, width: int = 64,
                      border: float = 2.0, border_color: tuple[int, int, int] | None = None) -> np.ndarray:
    """Render a flat shape with a border moving along `path` ([T, 2] centre positions (x, y) in pixels).

    Coverage is anti-aliased (clip(0.5 − signed distance)), so sub-pixel positions move smoothly. The
    border (default: the fill at 35 % brightness) gives trackers edges of known contrast on any
    background. → uint8 [T, H, W, 3].
    """
    path = np.asarray(path, np.float32).reshape(-1, 2)
    fill = np.asarray(color, np.float32)
    edge = np.asarray(border_color if border_color is not None else fill * 0.35, np.float32)
    bg = np.asarray(background, np.float32)
    ys, xs = np.mgrid[:height, :width].astype(np.float32) + 0.5  # pixel centres
    out = np.empty((len(path), height, width, 3), np.uint8)
    for i, (cx, cy) in enumerate(path):
        d = _shape_distance(shape, xs - cx, ys - cy, size)
        outer = np.clip(0.5 - d, 0.0, 1.0)[..., None]
        inner = np.clip(0.5 - (d + border), 0.0, 1.0)[..., None]
        frame = bg * (1 - outer) + edge * (outer - inner) + fill * inner
        out[i] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return out


def render_shapes_frame(shapes: list[tuple[str, tuple[int, int, int], float, tuple[float, float]]],
                        background: tuple[int, int, int], height: int = 64, width: int = 64,
                        border: float = 2.0) -> np.ndarray:
    """One frame with several bordered shapes, each (shape, color, size, (x, y) centre), drawn in order
    (later ones on top) → uint8 [H, W, 3]. `render_shape_clip` draws one shape per frame the same way."""
    ys, xs = np.mgrid[:height, :width].astype(np.float32) + 0.5
    frame = np.broadcast_to(np.asarray(background, np.float32), (height, width, 3)).copy()
    for shape, color, size, (cx, cy) in shapes:
        fill = np.asarray(color, np.float32)
        d = _shape_distance(shape, xs - cx, ys - cy, size)
        outer = np.clip(0.5 - d, 0.0, 1.0)[..., None]
        inner = np.clip(0.5 - (d + border), 0.0, 1.0)[..., None]
        frame = frame * (1 - outer) + fill * 0.35 * (outer - inner) + fill * inner
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8)


def motion_path(motion: str, num_frames: int = 8, speed: float = 2.5, start: tuple[float, float] = (0.0, 0.0),
                accel: float = 0.0, radius: float = 10.0, phase: float = 0.0) -> np.ndarray:
    """Centre positions [T, 2] (x, y; x right, y down) of a path starting at `start`.

    Straight motions ("right", "left", "up", "down", "up_right", "up_left", "down_right", "down_left")
    move `speed` px per frame, scaled along the clip by 1 + accel·(k − mid)/mid (speed changes); "circle"
    goes clockwise round a circle of `radius` (an eighth of a turn per frame) starting at angle `phase`;
    "zigzag" moves right while switching between down and up every two frames.
    """
    steps = num_frames - 1
    mid = max(steps / 2.0, 1e-6)
    if motion == "circle":
        angles = phase + np.arange(num_frames) * (2 * np.pi / 8)
        centre = np.asarray(start, np.float64) - radius * np.array([np.cos(phase), np.sin(phase)])
        return (centre + radius * np.stack([np.cos(angles), np.sin(angles)], -1)).astype(np.float32)
    if motion == "zigzag":
        dy = np.array([1.0 if (k // 2) % 2 == 0 else -1.0 for k in range(steps)])
        d = np.stack([np.full(steps, 1.0), dy], -1) * speed * np.array([0.8, 1.0])
    else:
        vec = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1), "up_right": (1, -1),
               "up_left": (-1, -1), "down_right": (1, 1), "down_left": (-1, 1)}.get(motion)
        if vec is None:
            raise ValueError(f"unknown motion {motion!r}")
        v = np.asarray(vec, np.float64) / np.linalg.norm(vec)
        scale = 1.0 + accel * (np.arange(steps) + 0.5 - mid) / mid
        d = v[None] * (speed * scale)[:, None]
    pos = np.concatenate([np.zeros((1, 2)), np.cumsum(d, 0)]) + np.asarray(start, np.float64)
    return pos.astype(np.float32)
