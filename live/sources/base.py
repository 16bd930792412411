"""What every frame source shares: the frame record, its status, and a one-slot buffer.

A source produces frames on its own daemon thread and keeps only the newest one: the live
loop asks for ``latest()`` when it is ready for a frame and gets the freshest picture there
is, never a backlog (latency beats completeness). Frames the loop was too slow to take are
counted as dropped. While a source has lost its input (camera unplugged, stream down) the
loop still gets a picture: a dark placeholder frame that says what happened, so the show goes
on and whoever watches can see why.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self

import cv2
import numpy as np

from live.placeholder import placeholder_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    """One picture from a source.

    ``image`` is BGR uint8 (height, width, 3) as OpenCV gives it; treat it as read-only, since a
    still image or a placeholder hands out the same array again. ``timestamp`` is
    ``time.monotonic()`` at capture; ``sequence`` counts up by one for every frame the source
    made, so a jump of more than one means frames were dropped in between. ``placeholder`` is
    true for the stand-in picture shown while the input is lost.
    """

    image: np.ndarray
    timestamp: float
    sequence: int
    placeholder: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.shape[1], self.image.shape[0]


class Status(StrEnum):
    """Where a source stands; compares equal to its string value (``status == "live"``)."""

    IDLE = "idle"  # made, not started
    LIVE = "live"  # input open, frames arriving
    RECONNECTING = "reconnecting"  # input lost; placeholder frames while it retries
    ENDED = "ended"  # a video played once has finished
    FAILED = "failed"  # stopped on an unexpected error (logged with its traceback)
    CLOSED = "closed"  # close() was called


def as_bgr(image: np.ndarray) -> np.ndarray:
    """A grey or BGRA picture as 3-channel BGR; anything else is returned as it is."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def placeholder_image(size: tuple[int, int], message: str) -> np.ndarray:
    """A dark (height, width, 3) BGR frame with ``message`` centred on it, read-only."""
    image = placeholder_frame(size[0], size[1], message)
    image.flags.writeable = False  # handed out again and again: nobody may draw on it
    return image


class Pacer:
    """Wakes a producer ``fps`` times a second; a slow producer runs as fast as it can instead
    of bursting later to catch up."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._due = time.monotonic()

    def wait(self, stop: threading.Event) -> bool:
        """Sleep until the next frame is due; False once ``stop`` is set."""
        delay = self._due - time.monotonic()
        if stop.wait(delay) if delay > 0 else stop.is_set():
            return False
        self._due = max(self._due + self.period, time.monotonic())
        return True


class Source(ABC):
    """A producer of frames on its own daemon thread, read through a one-slot buffer.

    Use as a context manager (``with open_source("0") as src:``), or call ``start()`` and
    ``close()``. ``start()`` opens the input and raises ``InputError`` if it cannot; after that
    a source never raises into the loop: it logs, changes ``status`` and shows placeholders.
    """

    fps: float | None = None  # the rate the input runs at, where a kind of source knows it

    def __init__(
        self,
        name: str,
        *,
        placeholder_size: tuple[int, int] | None = None,
        placeholder_fps: float = 10.0,
        join_timeout: float = 2.0,
    ) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slot: Frame | None = None
        self._sequence = 0
        self._captured = 0
        self._dropped = 0
        self._status = Status.IDLE
        self._message = ""
        self._size = placeholder_size  # the last real frame's size, for the placeholder
        self._placeholder_period = 1.0 / placeholder_fps
        self._placeholder_due = -math.inf
        self._placeholder: tuple[tuple[int, int], str, np.ndarray] | None = None
        self._join_timeout = join_timeout

    # -- what a kind of source provides -----------------------------------------------------

    @abstractmethod
    def _open(self) -> None:
        """Open the input, on the caller's thread; raise ``InputError`` if it cannot be read."""

    @abstractmethod
    def _run(self) -> None:
        """Produce frames with ``_publish`` until ``_stop`` is set or the input ends."""

    def _release(self) -> None:
        """Let go of the input; runs on the source's thread when it finishes."""

    def describe(self) -> str:
        """One line for logs and the status display: what this source reads."""
        return self.name

    # -- the public surface -----------------------------------------------------------------

    @property
    def status(self) -> Status:
        """live, reconnecting, ended … (see ``Status``)."""
        return self._status

    @property
    def message(self) -> str:
        """Why the status is what it is, for display ("camera lost - reconnecting"), or ""."""
        return self._message

    @property
    def captured(self) -> int:
        """Real frames produced since start."""
        return self._captured

    @property
    def dropped(self) -> int:
        """Real frames replaced in the buffer before anyone took them."""
        return self._dropped

    @property
    def nominal_fps(self) -> float | None:
        """The rate the input says it delivers (a camera's mode, a video file's own rate, the rate
        a still or the test scene is handed out at), or None where it says none. Outputs declare it
        as their frame rate (docs/architecture.md, "Two paces")."""
        return self.fps

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the latest real frame, or of the placeholder before the first one."""
        return self._size

    def start(self) -> Self:
        """Open the input and start the producer thread; ``InputError`` if the input cannot be
        opened. Starting a started source does nothing."""
        if self._thread is not None:
            return self
        self._stop.clear()
        self._open()
        self._set_status(Status.LIVE)
        self._thread = threading.Thread(target=self._guarded_run, name=f"source: {self.name}", daemon=True)
        self._thread.start()
        log.info("reading %s", self.describe())
        return self

    def latest(self, timeout: float = 0.0) -> Frame | None:
        """The newest frame not yet returned, or None if there is none.

        Never blocks unless ``timeout`` is given, then waits at most that long for one. While the
        input is lost it returns a placeholder frame (``placeholder=True``) at most
        ``placeholder_fps`` times a second.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._slot is not None:
                    frame, self._slot = self._slot, None
                    return frame
                now = time.monotonic()
                wake = deadline
                if self._status is Status.RECONNECTING and self._size is not None:
                    if now >= self._placeholder_due:
                        return self._placeholder_frame(now)
                    wake = min(deadline, self._placeholder_due)
                elif self._status is not Status.LIVE:
                    return None  # ended, failed, closed or never started: nothing will come
                if now >= deadline:
                    return None
                self._cond.wait(wake - now)

    def close(self) -> None:
        """Stop the producer thread and release the input. Safe to call more than once."""
        self._stop.set()
        with self._cond:
            self._slot = None  # a closed source hands out nothing, not a last stale frame
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self._join_timeout)
            if thread.is_alive():  # stuck in a driver call; it is a daemon, so it cannot block exit
                log.warning("%s did not stop within %.1f s; leaving its thread behind", self.name, self._join_timeout)
        self._set_status(Status.CLOSED)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()!r} {self._status}>"

    # -- for producers ----------------------------------------------------------------------

    def _publish(self, image: np.ndarray, timestamp: float | None = None) -> None:
        """Put a real frame in the slot, replacing (and counting as dropped) one not yet taken."""
        timestamp = time.monotonic() if timestamp is None else timestamp
        with self._cond:
            self._sequence += 1
            if self._slot is not None and not self._slot.placeholder:
                self._dropped += 1
            self._slot = Frame(image, timestamp, self._sequence)
            self._captured += 1
            self._size = (image.shape[1], image.shape[0])
            if self._status is not Status.LIVE and not self._stop.is_set():
                self._status, self._message = Status.LIVE, ""
            self._cond.notify_all()

    def _set_status(self, status: Status, message: str = "") -> None:
        with self._cond:
            if self._status is Status.CLOSED:
                return  # a producer finishing late must not revive a closed source
            self._status, self._message = status, message
            self._cond.notify_all()

    def _placeholder_frame(self, now: float) -> Frame:
        """Called with the lock held; the drawn picture is reused while size and text stay."""
        assert self._size is not None
        if self._placeholder is None or self._placeholder[:2] != (self._size, self._message):
            self._placeholder = (self._size, self._message, placeholder_image(self._size, self._message))
        self._placeholder_due = now + self._placeholder_period
        self._sequence += 1
        return Frame(self._placeholder[2], now, self._sequence, placeholder=True)

    def _guarded_run(self) -> None:
        try:
            self._run()
        except Exception:  # a bug or an unexpected driver error: say so loudly, stop this source only
            log.exception("%s stopped on an unexpected error", self.name)
            self._set_status(Status.FAILED, f"{self.name} failed")
        finally:
            self._release()
