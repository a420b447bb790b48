"""Synthetic footage for the motion metric: a textured scene seen by a moving camera (pan, a turning path,
roll, zoom) with a textured subject moving in the frame, and the multi-scale texture the trackers hold on to.

Everything is seeded and drawn with OpenCV (no downloads). Directions are in image coordinates (0° = right,
90° = down); speeds are the share of the frame's shorter side travelled over the clip.
"""

from __future__ import annotations

import numpy as np


def texture(h: int, w: int, rng: np.random.Generator, base, contrast: float = 45.0) -> np.ndarray:
    """Multi-scale noise (blobs down to single pixels) so LK finds corners at any window size → float [h, w, 3]."""
    import cv2

    tex = np.zeros((h, w), np.float32)
    for cell, amp in ((16, 1.0), (6, 0.8), (2, 0.6), (1, 0.4)):
        small = rng.normal(0, 1, (max(2, h // cell), max(2, w // cell))).astype(np.float32)
        tex += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    tex /= tex.std()
    tint = rng.uniform(0.6, 1.4, 3).astype(np.float32)
    return np.clip(np.asarray(base, np.float32) + contrast * tex[..., None] * tint, 0, 255)


def _path(t: int, angle_deg: float, turn_deg: float, length: float) -> np.ndarray:
    """Positions [t, 2] from 0: `length` px in all, starting in direction `angle_deg` and turning by
    `turn_deg` at a constant rate (0: a straight line). Adding 180° to the angle reverses every step."""
    steps = t - 1
    th = np.radians(angle_deg) + np.radians(turn_deg) * (np.arange(steps) + 0.5) / steps
    v = length / steps * np.stack([np.cos(th), np.sin(th)], -1)
    return np.concatenate([np.zeros((1, 2)), np.cumsum(v, 0)])


def camera_clip(frames: int, height: int, width: int, seed: int = 0, *, pan_deg: float = 0.0, pan: float = 0.3,
                turn_deg: float = 0.0, roll_deg: float = 0.0, zoom: float = 0.0, subject_deg: float | None = None,
                subject_speed: float = 0.3, subject_turn_deg: float | None = None, subject_size: float = 0.3,
                subject_offset: tuple[float, float] = (0.0, 0.0), shape: str = "square",
                noise: float = 0.0) -> np.ndarray:
    """uint8 frames [T, H, W, 3]: a textured scene under a moving camera, and a textured subject.

    Camera, the same similarity transform of the image every step up to the pan's turning: the scene flows
    `pan` of the frame in all in direction `pan_deg`, that direction turning by `turn_deg` over the clip,
    and rolls by `roll_deg` and zooms by a factor 1 + `zoom` in all about the frame's centre. Negating
    pan (pan_deg + 180), roll and the zoom's log reverses every step of the camera. Subject (a square, or
    else a disc, `subject_size` of the shorter side): moves `subject_speed` of the frame in direction
    `subject_deg` (default: against the scene's flow, pan_deg + 180) turning by `subject_turn_deg` (default
    `turn_deg`), its path centred on the frame shifted by `subject_offset` (shares of width and height).
    `seed` draws both textures.
    """
    import cv2

    rng = np.random.default_rng(seed)
    side = min(height, width)
    steps = frames - 1
    subject_deg = pan_deg + 180.0 if subject_deg is None else subject_deg
    subject_turn_deg = turn_deg if subject_turn_deg is None else subject_turn_deg
    centre = np.array([width / 2, height / 2])
    # world (the canvas, relative to its middle) → image at each frame: the steps composed from frame 0
    flow = np.diff(_path(frames, pan_deg, turn_deg, pan * side), axis=0)
    a, k = np.radians(roll_deg) / steps, (1.0 + zoom) ** (1.0 / steps)
    about_centre = k * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lin, shift = [np.eye(2)], [centre]
    for d in flow:  # x → centre + about_centre·(x − centre) + d
        lin.append(about_centre @ lin[-1])
        shift.append(centre + about_centre @ (shift[-1] - centre) + d)
    corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
    reach = int(max(np.abs((corners - b) @ np.linalg.inv(m).T).max() for m, b in zip(lin, shift))) + 8
    canvas = texture(2 * reach, 2 * reach, rng, base=rng.uniform(60, 190, 3))
    size = max(8, int(subject_size * side))
    sprite = texture(size, size, rng, base=rng.uniform(50, 200, 3), contrast=55)
    yy, xx = np.mgrid[:size, :size]
    alpha = np.ones((size, size), np.float32) if shape == "square" else \
        (((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2) <= (size / 2) ** 2).astype(np.float32)
    subject = _path(frames, subject_deg, subject_turn_deg, subject_speed * side)
    subject += centre - (subject.max(0) + subject.min(0)) / 2 + np.array(subject_offset) * [width, height]
    out = []
    for m, b, (x, y) in zip(lin, shift, subject - size / 2):
        warp = np.hstack([m, (b - m @ [reach, reach])[:, None]]).astype(np.float32)  # canvas pixel → image
        frame = cv2.warpAffine(canvas, warp, (width, height), flags=cv2.INTER_LINEAR)
        place = np.float32([[1, 0, x], [0, 1, y]])
        cover = cv2.warpAffine(alpha, place, (width, height), flags=cv2.INTER_LINEAR)[..., None]
        frame = frame * (1 - cover) + cv2.warpAffine(sprite, place, (width, height), flags=cv2.INTER_LINEAR) * cover
        if noise:
            frame = frame + rng.normal(0, noise, frame.shape)
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(out)
