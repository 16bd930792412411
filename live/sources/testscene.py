"""A built-in synthetic scene: moving shapes and textures, no files or camera needed.

Used for demos without a camera and for tests. ``t`` is time in seconds; the scene pans and
its shapes move, so temporal feedback has real motion to follow.
"""

from __future__ import annotations

import numpy as np


def test_scene(width: int = 640, height: int = 360, t: float = 0.0) -> np.ndarray:
    """An RGB uint8 picture (height, width, 3) of the scene at time ``t``."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    pan = 40.0 * t
    # sky-to-ground gradient with a slow colour drift
    img = np.stack([0.25 + 0.5 * v, 0.35 + 0.3 * (1 - v), 0.6 - 0.3 * v + 0.1 * np.sin(t)], axis=-1)
    # wood-grain stripes and a checkerboard floor, both panning
    stripes = 0.5 + 0.5 * np.sin((x + pan) / 9.0 + 3.0 * np.sin(y / 37.0))
    img[..., 0] += 0.15 * stripes * (v > 0.6)
    checker = ((((x + pan) // 24) + (y // 24)) % 2).astype(np.float32)
    img[..., 1] += 0.12 * checker * (v > 0.75)
    # three discs on circular paths and a bar sweeping across
    for i, (r, g, b) in enumerate([(0.9, 0.3, 0.2), (0.2, 0.8, 0.3), (0.95, 0.85, 0.2)]):
        cx = width * (0.3 + 0.2 * i + 0.12 * np.cos(t * (0.7 + 0.3 * i) + i))
        cy = height * (0.4 + 0.15 * np.sin(t * (0.9 + 0.2 * i) + 2 * i))
        rad = min(width, height) * (0.08 + 0.03 * i)
        disc = np.clip(rad - np.hypot(x - cx, y - cy), 0.0, 1.0)[..., None]
        img = img * (1 - disc) + disc * np.array([r, g, b], np.float32)
    bar = (np.abs(x - ((pan * 3) % (width + 60) - 30)) < 12) & (v < 0.6)
    img[bar] = img[bar] * 0.3 + 0.7 * np.array([0.1, 0.1, 0.5], np.float32)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
