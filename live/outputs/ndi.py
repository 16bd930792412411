"""NDI out, for Resolume, TouchDesigner, OBS or vMix on the same network (``--ndi NAME``).

Through ``ndi-python`` (the ``ndi`` extra): its wheels carry the NDI 6 runtime for Linux
(x86-64, aarch64, armv7l), macOS and Windows, and its API is the NDI SDK's own, one to one, so
NDI's documentation applies as written. (``cyndilib`` installs from wheels too; it wraps the
SDK in its own classes and ships an older runtime.)

Frames go as BGRX (NDI's own 4-byte layout, no chroma loss) at the show's frame rate, each
timecoded with its capture time, from a thread of its own behind a one-frame queue: NDI
compresses in the sending call, and that must not cost the loop its frame. The source is
visible to receivers as ``MACHINE (NAME)``.

If the binding or its runtime cannot be loaded, :meth:`NdiOutput.open` says so in one line and
the output stays off; the rest of the show goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from fractions import Fraction
from typing import Any

import cv2
import numpy as np

from live.errors import OutputError
from live.outputs.base import FrameHandoff, Output, fit

log = logging.getLogger(__name__)

INSTALL = "pip install 'deepdream-live[ndi]'"


def load_binding() -> Any:
    """The ``NDIlib`` module with its runtime initialised; OutputError with the reason otherwise."""
    try:
        import NDIlib  # type: ignore[import-not-found]
    except ImportError as e:
        raise OutputError(f"NDI output off: the NDI binding is not installed ({INSTALL}): {e}") from None
    except OSError as e:  # the bundled libndi does not load (wrong architecture, missing libc)
        raise OutputError(f"NDI output off: the NDI runtime does not load here: {e}") from None
    if not NDIlib.initialize():
        raise OutputError("NDI output off: the NDI runtime refused to start (this CPU or OS is not supported by NDI)")
    return NDIlib


class NdiOutput(Output):
    """Send the dream as the NDI source ``name``."""

    def __init__(self, source_name: str) -> None:
        super().__init__(f"ndi {source_name}")
        self.source_name = source_name
        self.state = "closed"
        self._ndi: Any = None
        self._sender: Any = None
        self._size = (0, 0)
        self._rate = Fraction(30)
        self._handoff = FrameHandoff(1)  # one frame waits while NDI sends the last
        self._thread: threading.Thread | None = None
        self._clock_offset = time.time() - time.monotonic()

    def open(self, width: int, height: int, fps: float) -> None:
        """Create the NDI sender. Without the binding or its runtime: one log line, output off."""
        try:
            ndi = load_binding()
        except OutputError as e:
            self.failure = str(e)
            self.state = "off"
            log.warning("%s; the show goes on without it", e)
            return
        sender = ndi.send_create(ndi.SendCreate(p_ndi_name=self.source_name, clock_video=False, clock_audio=False))
        if sender is None:
            self.failure = f"NDI output off: the runtime could not create the source {self.source_name!r}"
            self.state = "off"
            log.warning("%s; the show goes on without it", self.failure)
            return
        self._ndi, self._sender = ndi, sender
        self._size = (width, height)
        self._rate = Fraction(fps).limit_denominator(1001)
        self._handoff.allocate((height, width, 4))
        self.state = "live"
        self._thread = threading.Thread(target=self._run, name=f"ndi:{self.source_name}", daemon=True)
        self._thread.start()
        log.info("NDI source %r: %dx%d BGRX at %s fps", self.source_name, width, height, self._rate)

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Queue ``frame`` as BGRX; dropped and counted when NDI is still sending the last one."""
        if self._thread is None:
            return
        w, h = self._size
        if self._handoff.offer(lambda buf: cv2.cvtColor(fit(frame, w, h), cv2.COLOR_BGR2BGRA, dst=buf),
                               time.monotonic() if timestamp is None else timestamp):
            self.sent += 1
        else:
            self.dropped += 1  # a receiver slower than the show: expected, not worth a warning

    def _run(self) -> None:
        ndi = self._ndi
        w, h = self._size
        video = ndi.VideoFrameV2()
        video.xres, video.yres = w, h
        video.FourCC = ndi.FOURCC_VIDEO_TYPE_BGRX
        video.frame_rate_N, video.frame_rate_D = self._rate.numerator, self._rate.denominator
        video.picture_aspect_ratio = w / h
        video.frame_format_type = ndi.FRAME_FORMAT_TYPE_PROGRESSIVE
        video.line_stride_in_bytes = w * 4
        while True:
            item = self._handoff.get()
            if item is None:
                return
            buf, timestamp = item
            try:
                video.data = buf
                # NDI timecodes are 100 ns units of wall-clock time: when the camera saw it.
                video.timecode = int((timestamp + self._clock_offset) * 1e7)
                ndi.send_send_video_v2(self._sender, video)
            except Exception as e:  # noqa: BLE001 - reported through the loop's fan-out
                self.failure = f"NDI send failed: {type(e).__name__}: {e}"
                self.state = "failed"
                return
            finally:
                self._handoff.release(buf)

    def stats(self) -> dict[str, Any]:
        """State, frames and drops, connected receivers (for status and check)."""
        receivers = 0
        if self._sender is not None:
            try:
                receivers = int(self._ndi.send_get_no_connections(self._sender, 0))
            except Exception:  # noqa: BLE001 - a count is a nicety
                receivers = -1
        return {"name": self.name, "state": self.state, "frames": self.sent, "dropped": self.dropped,
                "receivers": receivers}

    def summary(self) -> str:
        s = self.stats()
        state = f"failed ({self.failure})" if self.failure else s["state"]
        return f"{self.name}: {state}, {s['frames']} sent, {s['dropped']} dropped, {s['receivers']} receivers"

    def close(self) -> None:
        """Stop sending and destroy the source (receivers see it go)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            try:
                self._handoff.queue.put(None, timeout=2.0)  # the end
            except queue.Full:
                pass
            thread.join(5.0)
        if self._sender is not None:
            self._ndi.send_destroy(self._sender)
            self._sender = None
            self.state = "closed"
