"""Cameras and network streams: ``cv2.VideoCapture`` read on its own thread, reconnecting.

A camera can be unplugged and plugged back in, a stream can drop: the source then logs once,
shows a placeholder frame with a message, and tries to open the input again with exponential
backoff until it returns. How the capture is opened is a plain callable, so tests (and other
capture libraries) can stand in for OpenCV.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from live.errors import DeviceMissingError
from live.sources.base import Source, Status, as_bgr

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
STREAM_OPEN_TIMEOUT_MS = 10_000
STREAM_READ_TIMEOUT_MS = 5_000  # without it a silent server blocks read() and the loss goes unnoticed


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` a capture source uses."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


class CaptureSource(Source):
    """Frames from a ``Capture`` opened by ``open_capture``, read on a daemon thread.

    ``failures_before_lost`` consecutive failed reads mean the input is gone: the capture is
    released and reopened after ``retry_initial`` seconds, doubling up to ``retry_max``. The
    source is live again at the first frame read after a reopen.
    """

    def __init__(
        self,
        open_capture: Callable[[], Capture | None],
        *,
        name: str,
        open_error: str | None = None,
        lost_message: str = "camera lost - reconnecting",
        placeholder_size: tuple[int, int] | None = None,
        placeholder_fps: float = 10.0,
        retry_initial: float = 0.5,
        retry_max: float = 5.0,
        failures_before_lost: int = 3,
        join_timeout: float = 2.0,
    ) -> None:
        super().__init__(
            name, placeholder_size=placeholder_size, placeholder_fps=placeholder_fps, join_timeout=join_timeout
        )
        self._open_capture = open_capture
        self._open_error = open_error or f"cannot open {name}"
        self._lost_message = lost_message
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._failures_before_lost = failures_before_lost
        self._cap: Capture | None = None

    def _try_open(self) -> tuple[Capture | None, str]:
        """The opened capture, or None and why not."""
        try:
            cap = self._open_capture()
        except (cv2.error, OSError) as e:  # a driver or network refusal; any other exception is a bug
            return None, str(e)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            return None, "it did not open"
        return cap, ""

    def _open(self) -> None:
        self._cap, reason = self._try_open()
        if self._cap is None:
            # 69, not 66: a device that is not there yet is retried by the service (live/errors.py)
            raise DeviceMissingError(f"{self._open_error} ({reason})" if reason != "it did not open"
                                     else self._open_error)
        get = getattr(self._cap, "get", None)  # what the driver says the mode's rate is (0: it does not say)
        rate = float(get(cv2.CAP_PROP_FPS)) if get is not None else 0.0
        self.fps = rate if 0 < rate <= 240 else None

    def _run(self) -> None:
        delay, failures = self._retry_initial, 0
        lost_since: float | None = None
        while not self._stop.is_set():
            if self._cap is None:
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, self._retry_max)
                self._cap, reason = self._try_open()
                failures = 0
                if self._cap is None:
                    log.debug("%s still unavailable (%s); next try in %.1f s", self.name, reason, delay)
                continue
            try:
                ok, image = self._cap.read()
                error = ""
            except cv2.error as e:
                ok, image, error = False, None, str(e)
            now = time.monotonic()
            if ok and image is not None and image.size:
                failures = 0
                if lost_since is not None:
                    log.info("%s is back after %.1f s", self.name, now - lost_since)
                    lost_since, delay = None, self._retry_initial
                self._publish(as_bgr(image), now)
                continue
            failures += 1
            if failures < self._failures_before_lost:
                continue
            if lost_since is None:  # log the loss once, not at every failed retry
                lost_since = now
                why = f": {error}" if error else ""
                log.warning("%s lost%s; showing a placeholder and reconnecting", self.name, why)
                self._set_status(Status.RECONNECTING, self._lost_message)
            self._cap.release()
            self._cap = None

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def fourcc_text(code: float) -> str:
    """OpenCV's numeric FOURCC as its four letters ("MJPG"), or "?" when the driver gives none."""
    value = int(code)
    text = bytes((value >> (8 * i)) & 0xFF for i in range(4)).decode("ascii", "replace")
    return text if value and text.isprintable() else "?"


def open_camera(device: int | str, width: int, height: int, fps: float) -> cv2.VideoCapture:
    """A camera by index or device path, asked for MJPG at ``width``×``height`` and ``fps``.

    Returns the capture even if it did not open (the caller checks ``isOpened()``); logs what
    the camera actually gave, since drivers silently pick the nearest mode they have.
    """
    # V4L2 directly on Linux: OpenCV's default there may pick GStreamer, which ignores these settings
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    cap = cv2.VideoCapture(device, api)
    if not cap.isOpened():
        return cap
    # MJPG first: most USB cameras reach full size at 30 fps only compressed, and V4L2 picks
    # the frame sizes it offers from the pixel format already set
    cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
    cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    cap.set(cv2.CAP_PROP_FPS, fps)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the driver's own queue would add frames of latency
    got = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS))
    log.info(
        "camera %s: asked for %dx%d @ %g fps MJPG, got %dx%d @ %g fps %s",
        device, width, height, fps, int(got[0]), int(got[1]), got[2], fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)),
    )  # fmt: skip
    return cap


def open_stream(url: str) -> cv2.VideoCapture:
    """A network stream through OpenCV's FFmpeg backend, with open and read timeouts."""
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_OPEN_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_READ_TIMEOUT_MS,
    ]  # fmt: skip
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def redact(url: str) -> str:
    """``url`` with any password replaced by ***, for logs and the status display."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def camera_source(
    device: int | str, width: int = 1280, height: int = 720, fps: float = 30.0, **kw: Any
) -> CaptureSource:
    """A camera by index (0) or device path (/dev/video0); ``kw`` goes to ``CaptureSource``."""
    where = f"index {device}" if isinstance(device, int) else str(device)
    hint = " `v4l2-ctl --list-devices` lists the cameras there are." if sys.platform.startswith("linux") else ""
    return CaptureSource(
        lambda: open_camera(device, width, height, fps),
        name=f"camera {device}",
        open_error=f"no camera at {where}: is it plugged in, and not in use by another program?{hint}",
        lost_message="camera lost - reconnecting",
        placeholder_size=(width, height),
        **kw,
    )


def stream_source(url: str, width: int = 1280, height: int = 720, **kw: Any) -> CaptureSource:
    """A network stream (RTSP, HTTP …); ``width``×``height`` only sizes the placeholder until the
    first frame arrives."""
    shown = redact(url)
    return CaptureSource(
        lambda: open_stream(url),
        name=f"stream {shown}",
        open_error=(
            f"cannot open stream {shown}: check the address and that the server is up and sends video "
            "OpenCV's FFmpeg can decode (try it with `ffplay URL`)"
        ),
        lost_message="stream lost - reconnecting",
        placeholder_size=(width, height),
        **kw,
    )
