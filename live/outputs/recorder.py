"""The fallback recorder, used only where PyAV is missing: MP4 (mp4v) or Motion-JPEG AVI
through OpenCV, without ever stalling the frame loop.

The real recorder is :class:`live.outputs.encoder.EncoderOutput` (H.264, real timestamps, a
crash-safe container); OpenCV's wheels cannot write H.264, and a file written here is not
crash-safe and plays at the nominal rate whatever the show's real rate was.

``send`` copies the frame into one of a fixed set of buffers and hands it to a writer thread
through a bounded queue. When the encoder or the disk falls behind, every buffer is in flight,
and the frame is dropped and counted instead of waiting (latency beats completeness). The
video is written to its final path as it goes: a recording cut short is still a recording.
The file's frame rate is the nominal ``fps`` given to ``open``; dropped frames therefore make
the recording play slightly fast, which the drop counter and the log make visible.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import cv2
import numpy as np

from live.errors import OutputError
from live.outputs.base import FrameHandoff, Output, fit

log = logging.getLogger(__name__)

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
"""Container extension → the codec written into it."""


class RecorderOutput(Output):
    """Write frames to ``path`` (``.mp4`` → mp4v, ``.avi`` → MJPG) from a writer thread.

    ``queue_size`` frames may wait to be encoded; beyond that ``send`` drops. ``close`` waits up
    to ``drain_timeout`` seconds for the queued frames, then finalises the file.
    """

    def __init__(self, path: Path | str, queue_size: int = 32, drain_timeout: float = 10.0) -> None:
        self.path = Path(path)
        super().__init__(f"recorder {self.path.name}")
        self._handoff = FrameHandoff(queue_size)
        self.queue_size = queue_size
        self.drain_timeout = drain_timeout
        self.written = 0
        self._size = (0, 0)
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()
        self._error: str | None = None
        self._resize_logged = False

    def open(self, width: int, height: int, fps: float) -> None:
        """Create the file and start the writer thread. Raises OutputError naming the path and
        the reason when the extension, directory or codec is wrong; no empty file is left."""
        suffix = self.path.suffix.lower()
        if suffix not in FOURCC:
            supported = ", ".join(f"{ext} ({codec})" for ext, codec in FOURCC.items())
            raise OutputError(f"cannot record to {self.path}: unsupported extension {self.path.suffix or '(none)'!r}; use {supported}")
        parent = self.path.parent if str(self.path.parent) else Path(".")
        # OpenCV only says "not opened": find the reason ourselves so the message can say it.
        if not parent.is_dir():
            raise OutputError(f"cannot record to {self.path}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"cannot record to {self.path}: directory {parent} is not writable")
        if self.path.is_dir():
            raise OutputError(f"cannot record to {self.path}: it is a directory")
        if width < 1 or height < 1 or fps <= 0:
            raise ValueError(f"recorder needs a positive size and frame rate, got {width}x{height} at {fps} fps")
        existed = self.path.exists()
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*FOURCC[suffix]), float(fps), (width, height))
        if not writer.isOpened():
            writer.release()
            if not existed and self.path.exists() and self.path.stat().st_size == 0:
                self.path.unlink()
            raise OutputError(f"cannot record to {self.path}: OpenCV could not open a {FOURCC[suffix]} writer at {width}x{height}")
        self._size = (width, height)
        self._handoff.allocate((height, width, 3))  # all frame memory, once
        self._thread = threading.Thread(target=self._write_loop, args=(writer,), name=f"recorder:{self.path.name}", daemon=True)
        self._thread.start()
        log.info("recording %dx%d at %g fps to %s (%s)", width, height, fps, self.path, FOURCC[suffix])

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Queue ``frame`` for writing, or drop and count it when the writer is behind."""
        if self._error is not None:
            raise OutputError(f"recorder {self.path}: {self._error}")
        if self._thread is None:
            raise OutputError(f"recorder {self.path} is not open")
        width, height = self._size
        if (frame.shape[1], frame.shape[0]) != self._size and not self._resize_logged:
            self._resize_logged = True
            log.warning("recorder %s: frames are %dx%d, the file is %dx%d; resizing", self.path.name, frame.shape[1], frame.shape[0], width, height)
        if self._handoff.offer(lambda buf: fit(frame, width, height, out=buf)):
            self.sent += 1
        else:
            self.count_drop()

    def _write_loop(self, writer: cv2.VideoWriter) -> None:
        try:
            while True:
                item = self._handoff.get()
                if item is None or self._abandon.is_set():
                    break
                writer.write(item[0])
                self.written += 1
                self._handoff.release(item[0])
        except Exception as exc:  # noqa: BLE001 - reported through send() and close()
            self._error = f"writing failed: {type(exc).__name__}: {exc}"
        finally:
            # Release here, in the thread that wrote, so close() never races a write.
            writer.release()

    def close(self) -> None:
        """Write what is queued (up to ``drain_timeout`` seconds) and finalise the file."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        # Past the timeout: stop after the frame being encoded and finalise what is there.
        ended = self._handoff.finish(thread, self.drain_timeout, self._abandon)
        if ended != "done":
            log.warning("recorder %s: gave up waiting for queued frames after %gs; the file ends early", self.path, self.drain_timeout)
        if ended == "stuck":
            log.error("recorder %s: the writer is stuck; the file may be unusable", self.path)
        if self._error is not None:
            log.error("recorder %s: %s", self.path, self._error)
        log.info("recorded %d frames to %s (%d dropped)", self.written, self.path, self.dropped)
