"""The one thing between the two paces: camera frames to the dreamer, dreams back to the presenter.

The presenter (``live/presenter.py``) takes every camera frame at the source's rate; the
dreamer (``live/dream_loop.py``) dreams the newest one whenever it has finished the last
(docs/architecture.md, "Two paces"). Between them sit two latest-value slots, never a queue:

- :meth:`DreamHandoff.offer` puts a camera frame (a :class:`Shot`) in the dreamer's slot,
  replacing one it has not taken yet; :meth:`DreamHandoff.take` gives the dreamer the newest.
- :meth:`DreamHandoff.publish` puts a finished :class:`Dream` in the presenter's slot;
  :meth:`DreamHandoff.newest` and :meth:`DreamHandoff.wait` read it.

The lock is held only to swap references: no side waits for the other's work, and a stop wakes
both (:meth:`close`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from live.sources import Frame


@dataclass(frozen=True, slots=True)
class Shot:
    """A camera frame offered for dreaming.

    ``grey`` is its small grey image (what optical flow runs on); ``epoch`` counts scene cuts and
    resets: a dream of one epoch is never shown on a frame of another.
    """

    frame: Frame
    grey: np.ndarray
    epoch: int

    @property
    def sequence(self) -> int:
        """The source's number of this frame (increasing)."""
        return self.frame.sequence


@dataclass(frozen=True, slots=True)
class Dream:
    """A finished dream: what it changed in its camera frame.

    ``residual`` is dream − camera in model space at the dream size, on the dream's device and
    complete (its stream has finished it), or None where the dream must not be shown (it came
    back NaN or infinite: that frame shows the camera). ``number`` counts dreams from 1.
    """

    residual: Tensor | None
    shot: Shot
    number: int
    started: float  # time.monotonic() when the dreamer took the shot
    finished: float  # time.monotonic() when it was published


class DreamHandoff:
    """Two latest-value slots under one condition: the newest shot for the dreamer, the newest
    dream for the presenter. Thread-safe; nothing waits while holding the lock."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shot: Shot | None = None  # offered, not yet taken
        self._dream: Dream | None = None
        self._dreamer_waiting = False
        self._closed = False

    # ----- the presenter's side
    def offer(self, shot: Shot) -> bool:
        """Give the dreamer ``shot`` (replacing an older one it has not taken). Returns whether
        the dreamer is waiting for a shot, i.e. will dream this very frame next."""
        with self._cond:
            self._shot = shot
            self._cond.notify_all()
            return self._dreamer_waiting

    def withdraw(self) -> None:
        """Take back a shot the dreamer has not taken (paused, frozen, closed: nothing to dream)."""
        with self._cond:
            self._shot = None

    def newest(self) -> Dream | None:
        """The newest finished dream, or None."""
        return self._dream  # one reference read: atomic

    def wait(self, newer_than: int, timeout: float, sequence: int | None = None) -> Dream | None:
        """The newest dream once its number is above ``newer_than`` (and, with ``sequence``, once
        it is the dream of that camera frame or a later one), waiting at most ``timeout`` s;
        None if none came in time."""
        deadline = time.monotonic() + max(timeout, 0.0)
        with self._cond:
            while True:
                dream = self._dream
                if dream is not None and dream.number > newer_than and (
                        sequence is None or dream.shot.sequence >= sequence):
                    return dream
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return None
                self._cond.wait(left)

    def clear(self) -> None:
        """Forget the newest dream (a scene cut or reset: it belongs to another picture)."""
        with self._cond:
            self._dream = None

    @property
    def idle(self) -> bool:
        """Whether the dreamer waits with no shot to take: nothing is being dreamed or about to be."""
        with self._cond:
            return self._dreamer_waiting and self._shot is None

    # ----- the dreamer's side
    def take(self, timeout: float) -> Shot | None:
        """The newest shot offered (and not taken), waiting at most ``timeout`` s; None if none."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._dreamer_waiting = True
            try:
                while self._shot is None and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
                shot, self._shot = self._shot, None
                return shot
            finally:
                self._dreamer_waiting = False

    def publish(self, dream: Dream) -> None:
        """Make ``dream`` the newest (the presenter shows it from its next frame on)."""
        with self._cond:
            self._dream = dream
            self._cond.notify_all()

    def close(self) -> None:
        """Wake every waiter: the show is stopping."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        """Ready for another run after :meth:`close` (the loop can run again)."""
        with self._cond:
            self._closed = False
