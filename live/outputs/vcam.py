"""Send the dream to a virtual camera (v4l2loopback on Linux, OBS on Windows and macOS) so
video-call apps can pick it up like a webcam.

Frames go as BGR, the loop's own layout, so pyvirtualcam converts nothing on our side.
Virtual cameras want even sizes (4:2:0 chroma is subsampled by two): an odd width or height
is cropped by one pixel at the right or bottom edge, never scaled, so pixels stay sharp.
``send`` never calls ``sleep_until_next_frame``: the loop paces itself, and the virtual camera
shows each frame until the next arrives. While no dream is ready, ``send_placeholder`` keeps
frames flowing so call apps do not decide the camera is gone and drop it.
"""

from __future__ import annotations

import logging
import platform
from typing import Any

import numpy as np

from live.errors import UnavailableError, UsageError
from live.outputs.base import Output, fit
from live.placeholder import placeholder_frame

log = logging.getLogger(__name__)

MODPROBE = 'sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label="deepdream-live"'
"""The command that creates a loopback device on Linux (exclusive_caps lets Chrome see it)."""


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size a virtual camera is opened at: ``width`` and ``height`` rounded down to even."""
    return width - width % 2, height - height % 2


class VirtualCamOutput(Output):
    """A pyvirtualcam camera fed BGR frames.

    ``device`` picks the camera (``/dev/video10`` on Linux, ``OBS Virtual Camera`` elsewhere);
    None takes the first free one. ``backend`` names a pyvirtualcam backend (``v4l2loopback``,
    ``obs``, ``unitycapture`` or a registered one); None tries them all.
    """

    def __init__(self, device: str | None = None, backend: str | None = None) -> None:
        super().__init__("virtual camera")
        self.device = device
        self.backend = backend
        self.placeholders = 0
        self._cam: Any = None
        self._size = (0, 0)
        self._placeholder: tuple[str, np.ndarray] | None = None

    def open(self, width: int, height: int, fps: float) -> None:
        """Open the virtual camera at ``width``×``height`` (rounded down to even). Raises
        UnavailableError with the fix when there is no device, UsageError for an unknown
        backend."""
        import pyvirtualcam  # optional at import time: the package works without a camera
        from pyvirtualcam.camera import BACKENDS

        if self.backend is not None and self.backend not in BACKENDS:
            known = ", ".join(sorted(BACKENDS)) or "none on this system"
            raise UsageError(f"unknown virtual camera backend {self.backend!r}; available: {known}")
        if not BACKENDS:
            raise UnavailableError(f"pyvirtualcam has no virtual camera backend for {platform.system()}")
        w, h = even_size(width, height)
        if w < 2 or h < 2:
            raise ValueError(f"virtual camera needs at least 2x2 pixels, got {width}x{height}")
        if (w, h) != (width, height):
            log.info("virtual camera: %dx%d is odd; sending %dx%d (one pixel cropped)", width, height, w, h)
        try:
            self._cam = pyvirtualcam.Camera(w, h, fps, fmt=pyvirtualcam.PixelFormat.BGR, device=self.device, backend=self.backend)
        except Exception as exc:  # noqa: BLE001 - pyvirtualcam raises RuntimeError with every backend's reason
            raise self._explain(exc) from exc
        self._size = (w, h)
        log.info("virtual camera %s (%s) open at %dx%d, %g fps", self._cam.device, self._cam.backend, w, h, fps)

    def _explain(self, exc: BaseException) -> UnavailableError:
        reason = str(exc).strip() or type(exc).__name__
        where = self.device or "any device"
        if "v4l2 loopback" in reason.lower() or "modprobe v4l2loopback" in reason:
            return UnavailableError(
                f"no virtual camera device ({where}): v4l2loopback is not loaded. Create one with\n"
                f"  {MODPROBE}\n"
                "then pass its /dev/videoN with --vcam-device, or run without the virtual camera.\n"
                f"pyvirtualcam said: {reason}"
            )
        hint = "" if platform.system() == "Linux" else " (install OBS Studio and start its Virtual Camera once)"
        return UnavailableError(f"cannot open virtual camera {where}{hint}: {reason}")

    @property
    def size(self) -> tuple[int, int]:
        """The (width, height) the camera was opened at (even)."""
        return self._size

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Send one BGR frame; returns as soon as the device has it."""
        if self._cam is None:
            raise UnavailableError("virtual camera is not open")
        w, h = self._size
        fh, fw = frame.shape[:2]
        if fw in (w, w + 1) and fh in (h, h + 1):
            frame = frame[:h, :w]  # the documented one-pixel crop to an even size
        else:
            frame = fit(frame, w, h)
        self._cam.send(frame)
        self.sent += 1

    def send_placeholder(self, text: str = "deepdream-live: starting...") -> None:
        """Send a dark frame with ``text``, so call apps keep the device while engines build
        or the camera is lost. The frame is drawn once per distinct text."""
        if self._cam is None:
            raise UnavailableError("virtual camera is not open")
        if self._placeholder is None or self._placeholder[0] != text:
            self._placeholder = (text, placeholder_frame(*self._size, text))
        self._cam.send(self._placeholder[1])
        self.placeholders += 1

    def close(self) -> None:
        """Release the device; call apps see the camera stop."""
        cam, self._cam = self._cam, None
        if cam is not None:
            cam.close()
            log.info("virtual camera closed after %d frames (%d placeholders)", self.sent, self.placeholders)
