"""A built-in synthetic scene: moving shapes and textures, no files or camera needed.

Used for demos without a camera and for tests. ``t`` is time in seconds; the scene pans and
its shapes move, so temporal feedback has real motion to follow.
"""

from __future__ import annotations

import functools
import logging
import time

import cv2
import numpy as np

from live.errors import UsageError
from live.sources.base import Pacer, Source

log = logging.getLogger(__name__)


_PERIOD = 48  # px; stripes and checkerboard repeat every 48 px, so panning is a slice of one image


@functools.lru_cache(maxsize=4)
def _background(width: int, height: int, bgr: bool = False) -> np.ndarray:
    """The static, panning part of the scene, _PERIOD px wider than the frame, uint8 (RGB, or BGR).

    Drawn once per size: a frame is then a slice of it plus a few shapes, 0.5 ms of CPU at
    1280x720 and 1.0 ms at 1920x1080, where drawing the whole picture in float every frame (and
    converting it to BGR) cost 7.5 and 17.8 ms (2-core machine, same run) and competed with the
    show it stood in a camera for.
    """
    y, x = np.mgrid[0:height, 0 : width + _PERIOD].astype(np.float32)
    v = y / max(height - 1, 1)
    img = np.stack([0.25 + 0.5 * v, 0.35 + 0.3 * (1 - v), 0.6 - 0.3 * v], axis=-1)
    # wood-grain stripes and a checkerboard floor
    stripes = 0.5 + 0.5 * np.sin(x * (2 * np.pi / _PERIOD) + 3.0 * np.sin(y / 37.0))
    img[..., 0] += 0.15 * stripes * (v > 0.6)
    checker = (((x // (_PERIOD // 2)) + (y // 24)) % 2).astype(np.float32)
    img[..., 1] += 0.12 * checker * (v > 0.75)
    out = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(out[..., ::-1]) if bgr else out


def test_scene(width: int = 640, height: int = 360, t: float = 0.0, *, bgr: bool = False) -> np.ndarray:
    """A uint8 picture (height, width, 3) of the scene at time ``t``, RGB (or BGR with ``bgr``)."""
    pan = 40.0 * t
    offset = int(pan) % _PERIOD
    img = _background(width, height, bgr)[:, offset : offset + width].copy()
    # slow colour drift of the blue channel (the background's blue stays inside 0.3..0.6: no clipping)
    drift = round(0.1 * np.sin(t) * 255.0)
    blue = 0 if bgr else 2
    scalar = [0.0, 0.0, 0.0, 0.0]
    scalar[blue] = float(drift)
    cv2.add(img, tuple(scalar), dst=img)  # saturating per-channel add
    # three discs on circular paths and a bar sweeping across, drawn by OpenCV (antialiased)
    for i, colour in enumerate([(0.9, 0.3, 0.2), (0.2, 0.8, 0.3), (0.95, 0.85, 0.2)]):
        cx = width * (0.3 + 0.2 * i + 0.12 * np.cos(t * (0.7 + 0.3 * i) + i))
        cy = height * (0.4 + 0.15 * np.sin(t * (0.9 + 0.2 * i) + 2 * i))
        rad = min(width, height) * (0.08 + 0.03 * i)
        rgb = tuple(int(255 * c) for c in (colour[::-1] if bgr else colour))
        cv2.circle(img, (round(cx * 16), round(cy * 16)), round(rad * 16), rgb, -1, cv2.LINE_AA, shift=4)
    bar_x = int((pan * 3) % (width + 60) - 30)
    x0, x1, y1 = max(bar_x - 12, 0), min(bar_x + 12, width), int(0.6 * height)
    if x1 > x0:
        roi = img[:y1, x0:x1]
        tint = np.array([0.5, 0.1, 0.1] if bgr else [0.1, 0.1, 0.5])
        roi[:] = (roi * 0.3 + tint * 0.7 * 255).astype(np.uint8)
    return img


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
        _background(self.width, self.height, True)  # drawn once here, so the first frame is not late

    def _run(self) -> None:
        pacer, start, slow_logged = Pacer(self.fps), time.monotonic(), False
        while pacer.wait(self._stop):
            began = time.monotonic()
            self._publish(test_scene(self.width, self.height, began - start, bgr=True), began)
            took = time.monotonic() - began
            if took > pacer.period and not slow_logged:  # drawn in numpy; large sizes cost real time
                log.info(
                    "test scene takes %.0f ms a frame at %dx%d: slower than %g fps",
                    1e3 * took, self.width, self.height, self.fps,
                )  # fmt: skip
                slow_logged = True
