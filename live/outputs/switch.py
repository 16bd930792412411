"""The recording a performer starts and stops while the show runs (OSC ``/dream/record/start``).

:class:`RecordSwitch` sits in the fan-out for the whole show and holds zero or one
:class:`~live.outputs.encoder.EncoderOutput`. ``start`` opens a new file named by the time
(``deepdream-20260127-201502.mp4``), so a second take never overwrites the first; ``stop``
finishes the file on a thread of its own, so the controller's thread returns at once. ``start``
and ``stop`` may be called from any thread; ``send`` from the loop's.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from live.errors import LiveError
from live.outputs.base import Output
from live.outputs.encoder import EncoderOutput, EncoderSettings

log = logging.getLogger(__name__)


def timed_name(directory: Path, suffix: str = ".mp4", now: float | None = None) -> Path:
    """``directory/deepdream-YYYYmmdd-HHMMSS<suffix>``, with ``-2``, ``-3``… if taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    path = directory / f"deepdream-{stamp}{suffix}"
    n = 2
    while path.exists():
        path = directory / f"deepdream-{stamp}-{n}{suffix}"
        n += 1
    return path


class RecordSwitch(Output):
    """Zero or one recording at a time, started and stopped live.

    ``initial``: a file to record from the start (``--record``); ``directory`` and ``suffix``:
    where and as what the files of later starts go.
    """

    def __init__(self, directory: Path, suffix: str = ".mp4", settings: EncoderSettings | None = None,
                 initial: Path | None = None) -> None:
        super().__init__("recording")
        self.directory = Path(directory)
        self.suffix = suffix
        self.settings = settings or EncoderSettings()
        self.initial = initial
        self.files: list[Path] = []  # every file this switch has started, in order
        self._current: EncoderOutput | None = None
        self._size: tuple[int, int, float] | None = None
        self._lock = threading.Lock()
        self._closers: list[threading.Thread] = []

    @property
    def recording(self) -> EncoderOutput | None:
        """The recording in progress, or None."""
        return self._current

    def open(self, width: int, height: int, fps: float) -> None:
        """Remember the frame size; start ``initial`` if given (its errors are start-up errors)."""
        self._size = (width, height, fps)
        if self.initial is not None:
            self.start(self.initial)

    def start(self, path: Path | str | None = None) -> Path:
        """Start recording to ``path`` (default: a new time-named file); a recording already in
        progress is finished first. Raises a LiveError when the file cannot be created."""
        if self._size is None:
            raise LiveError("the show has not started its outputs yet")
        target = Path(path) if path is not None else timed_name(self.directory, self.suffix)
        out = EncoderOutput(target, self.settings, placeholders=False)
        out.open(*self._size)
        with self._lock:
            previous, self._current = self._current, out
        self.files.append(target)
        if previous is not None:
            self._finish(previous)
        log.info("recording to %s", target)
        return target

    def stop(self, _arg: Any = None) -> Path | None:
        """Finish the recording in progress (in the background); returns its path, or None."""
        with self._lock:
            current, self._current = self._current, None
        if current is None:
            log.info("record stop: nothing is being recorded")
            return None
        self._finish(current)
        return current.target.path

    def _finish(self, out: EncoderOutput) -> None:
        t = threading.Thread(target=out.close, name=f"finish:{out.name}", daemon=True)
        t.start()
        self._closers.append(t)

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Hand the frame to the recording in progress, if any."""
        with self._lock:
            current = self._current
        if current is None:
            return
        try:
            current.send(frame, timestamp)
        except LiveError as e:
            # A failed file (disk full) ends this take; the switch stays, a new start may work.
            log.error("%s", e)
            with self._lock:
                if self._current is current:
                    self._current = None
            self._finish(current)
            return
        self.sent, self.dropped = current.sent, current.dropped

    def stats(self) -> dict[str, Any]:
        """The recording's stats, or ``state: off``."""
        current = self._current
        return current.stats() if current is not None else {"name": self.name, "state": "off"}

    def summary(self) -> str:
        current = self._current
        return current.summary() if current is not None else "recording: off"

    def close(self) -> None:
        """Finish the recording in progress and wait for every file to be finished."""
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current.close()
        for t in self._closers:
            t.join(15.0)
        self._closers.clear()
