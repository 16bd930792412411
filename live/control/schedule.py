"""What an unattended installation does on its own: opening hours, preset cycles, idle mode.

Each is a small object the frame loop ticks once per frame; none of them raises into the loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from live.control.presets import PresetStore
from live.errors import LiveError

log = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class OpeningHours:
    """Open between ``opens`` and ``closes`` (local time) on ``days``; closing past midnight works
    (``20:00``-``02:00`` is open late into the next day, counted as the opening day's night)."""

    def __init__(self, opens: dt.time, closes: dt.time, days: Iterable[str] = DAYS,
                 now: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self.opens, self.closes, self.now = opens, closes, now
        self.days = {DAYS.index(d) for d in days}

    def is_open(self, at: dt.datetime | None = None) -> bool:
        at = at or self.now()
        t, day = at.time(), at.weekday()
        if self.opens <= self.closes:
            return day in self.days and self.opens <= t < self.closes
        # overnight: open from `opens` on an opening day until `closes` the morning after
        return (day in self.days and t >= self.opens) or ((day - 1) % 7 in self.days and t < self.closes)


class PresetCycler:
    """Loads the next preset of ``names`` every ``minutes``; a missing or broken preset is logged
    once and skipped, so one bad file does not stop the cycle."""

    def __init__(self, store: PresetStore, names: list[str], minutes: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.names, self.period, self.clock = store, list(names), minutes * 60.0, clock
        self._next = 0
        self._due = clock()  # the first preset goes on at once
        self._bad: set[str] = set()

    def tick(self) -> str | None:
        """Call once per frame; returns the preset loaded now, if any."""
        if not self.names or self.clock() < self._due:
            return None
        self._due = self.clock() + self.period
        for _ in range(len(self.names)):
            name = self.names[self._next]
            self._next = (self._next + 1) % len(self.names)
            try:
                self.store.load(name)
                return name
            except LiveError as e:
                if name not in self._bad:
                    log.error("preset cycle: skipping %s: %s", name, e)
                    self._bad.add(name)
        return None


class IdleWatcher:
    """Idle mode: after ``after_seconds`` without motion, the loop uses ``overrides`` (say, a slow
    endless zoom) on top of the live values; the first motion brings the live values back.

    ``motion`` is :func:`live.temporal.change_score` between consecutive frames.
    """

    def __init__(self, after_seconds: float, overrides: Mapping[str, Any], threshold: float = 0.01,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.after, self.overrides, self.threshold, self.clock = after_seconds, dict(overrides), threshold, clock
        self._last_motion = clock()
        self.idle = False

    def observe(self, motion: float) -> None:
        now = self.clock()
        if motion > self.threshold:
            self._last_motion = now
            if self.idle:
                log.info("motion: leaving idle mode")
            self.idle = False
        elif not self.idle and now - self._last_motion >= self.after:
            log.info("no motion for %.0f s: idle mode", now - self._last_motion)
            self.idle = True

    def apply(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` with the idle overrides laid over them while idle."""
        return {**values, **self.overrides} if self.idle else values
