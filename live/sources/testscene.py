"""A built-in synthetic scene: moving shapes and textures, no files or camera needed.

Used for demos without a camera and for tests. ``t`` is time in seconds; the scene pans and
its shapes move, so temporal feedback has real motion to follow.
"""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np

from live.errors import UsageError
from live.sources.base import Pacer, Source

log = logging.getLogger(__name__)


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


class TestSceneSource(Source):
    """The test scene, animated in real time at ``fps`` as BGR frames: a source needing nothing."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, width: int = 640, height: int = 360, fps: float = 30.0) -> None:
        super().__init__("test scene", placeholder_size=(width, height))
        self.width, self.height, self.fps = width, height, fps

    def describe(self) -> str:
        return f"test scene {self.width}x{self.height} @ {self.fps:g} fps"

    def _open(self) -> None:
        if self.width < 1 or self.height < 1 or self.fps <= 0:
            raise UsageError(f"test scene needs a positive size and fps, got {self.width}x{self.height} @ {self.fps}")

    def _run(self) -> None:
        pacer, start, slow_logged = Pacer(self.fps), time.monotonic(), False
        while pacer.wait(self._stop):
            began = time.monotonic()
            rgb = test_scene(self.width, self.height, began - start)
            self._publish(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), began)
            took = time.monotonic() - began
            if took > pacer.period and not slow_logged:  # drawn in numpy; large sizes cost real time
                log.info(
                    "test scene takes %.0f ms a frame at %dx%d: slower than %g fps",
                    1e3 * took, self.width, self.height, self.fps,
                )  # fmt: skip
                slow_logged = True
