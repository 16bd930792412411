"""Adaptive quality at run time: hold a target frame rate by trimming steps, then size.

The loop calls :meth:`Governor.observe` once per dreamed frame with that frame's seconds (the
work, not the ``fps_cap`` sleep) and the registry's current values. Now and then it returns an
:class:`Adjustment`, which the loop writes with ``registry.update(adj.values(), source="governor")``.

How it decides, and why it does not oscillate:

- **Smoothed measure.** The median frame time over the last ``window_seconds`` (≥ ``min_frames``
  frames); the first ``settle_frames`` after any change are skipped (a new shape may build a CUDA
  graph or an engine) and the window restarts, so a decision never mixes two settings.
- **Settings in order of preference**: largest size first, then most steps (the same rule
  ``calibrate`` chooses by). When frames run over budget, the governor moves to the most preferred
  setting predicted to fit, so steps are trimmed at the current size first and the size shrinks
  only when even ``min_steps`` at this size cannot fit.
- **Prediction**: cost ∝ pixels × steps, scaled from the measured time. That overstates the cost
  of a higher setting (per-frame overhead does not grow with steps), so an up-move is cautious.
- **Hysteresis**: move down when the smoothed time exceeds the budget (``down_at`` × 1/target);
  move up only when the higher setting is *predicted* to take at most ``headroom`` × budget. Both
  moves aim below ``headroom`` × budget, leaving a band in which nothing happens.
- **Cool-downs**: ``down_cooldown`` / ``up_cooldown`` seconds after each change; an up-move that is
  followed by a down-move within ``probation`` seconds failed, and doubles the up cool-down (up to
  ``max_up_cooldown``), so a wrong prediction cannot turn into a see-saw.
- **The operator's ceiling**: the governor never goes above the steps and size the operator set.
  A change of steps or size that did not come from the governor (OSC, MIDI, a preset, a key) is
  taken as the new ceiling for that dimension.

Time is counted in observed frame seconds, not the wall clock, so the behaviour is the same in a
simulation and with a paused show.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from live.dreamsize import round32

log = logging.getLogger(__name__)


def default_sizes(width: int, height: int, smallest: int = 128) -> list[tuple[int, int]]:
    """A ladder of dream sizes below ``width``×``height`` at the same aspect, multiples of 32,
    each roughly 0.8× the area of the one before, down to ``smallest`` pixels on the short side."""
    sizes = [(round32(width), round32(height))]
    scale = 1.0
    while True:
        scale *= 0.9  # 0.9 per side ≈ 0.8 per area: a step the audience barely notices
        w, h = round32(width * scale), round32(height * scale)
        if min(w, h) < smallest:
            break
        if w * h < sizes[-1][0] * sizes[-1][1]:
            sizes.append((w, h))
    return sizes


@dataclass(frozen=True)
class Setting:
    steps: int
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def work(self) -> float:
        # steps=0 still costs upload, flow and download: count it as half a step
        return self.pixels * max(self.steps, 0.5)

    def __str__(self) -> str:
        return f"{self.steps} step{'' if self.steps == 1 else 's'} at {self.width}x{self.height}"


@dataclass(frozen=True)
class Adjustment:
    """A change for the loop to write into the registry (``source="governor"``)."""

    steps: int
    width: int
    height: int
    reason: str

    def values(self) -> dict[str, int]:
        return {"steps": self.steps, "width": self.width, "height": self.height}


class Governor:
    """Keeps the frame rate at ``target_fps`` by changing ``steps``, ``width`` and ``height``.

    ``sizes``: the dream sizes it may use, largest first (e.g. a calibration profile's); only
    those smaller than the operator's size (and not below ``min_size``) are used. Default:
    :func:`default_sizes` of the operator's size.
    """

    def __init__(
        self,
        target_fps: float,
        *,
        sizes: Sequence[tuple[int, int]] | None = None,
        min_steps: int = 1,
        min_size: tuple[int, int] | None = None,
        headroom: float = 0.85,
        down_at: float = 1.0,
        window_seconds: float = 1.5,
        min_frames: int = 8,
        settle_frames: int = 3,
        down_cooldown: float = 1.0,
        up_cooldown: float = 4.0,
        max_up_cooldown: float = 120.0,
        probation: float = 10.0,
    ) -> None:
        if target_fps <= 0:
            raise ValueError(f"target_fps must be above 0, got {target_fps}")
        if not 0 < headroom < down_at:
            raise ValueError(f"need 0 < headroom < down_at, got headroom={headroom}, down_at={down_at}")
        self.target_fps = target_fps
        self.budget = 1.0 / target_fps
        self.sizes = [(round32(w), round32(h)) for w, h in sizes] if sizes else None
        self.min_steps = min_steps
        self.min_size = (round32(min_size[0]), round32(min_size[1])) if min_size else None
        self.headroom = headroom
        self.down_at = down_at
        self.window_seconds = window_seconds
        self.min_frames = min_frames
        self.settle_frames = settle_frames
        self.down_cooldown = down_cooldown
        self.base_up_cooldown = self.up_cooldown = up_cooldown
        self.max_up_cooldown = max_up_cooldown
        self.probation = probation
        self.ceiling: Setting | None = None
        self.current: Setting | None = None
        self.changes = 0
        self._times: deque[float] = deque()
        self._pending: deque[tuple[str, Any]] = deque()
        self._window_sum = 0.0
        self._skip = 0
        self._clock = 0.0  # observed frame seconds
        self._last_change = -1e9
        self._last_up = -1e9

    # ----- the operator's side
    def set_ceiling(self, steps: int, width: int, height: int) -> None:
        """The highest setting the governor may use (what the operator chose); also the current one."""
        self.ceiling = Setting(int(steps), round32(width), round32(height))
        self.current = self.ceiling
        self._restart_window()

    def registry_listener(self, name: str, value: Any, source: str) -> None:
        """For ``registry.subscribe``: an operator's write of steps or size, even to the value the
        governor happens to use now, becomes the ceiling (the next :meth:`observe` applies it)."""
        if source != "governor" and name in ("steps", "width", "height"):
            self._pending.append((name, value))  # deque.append is atomic: writers are other threads

    def _take_pending(self) -> None:
        if self.ceiling is None or self.current is None:
            self._pending.clear()
            return
        ceiling, current, changed = vars(self.ceiling).copy(), vars(self.current).copy(), False
        while self._pending:
            name, value = self._pending.popleft()
            value = int(value) if name == "steps" else round32(value)
            ceiling[name] = current[name] = value
            changed = True
        if changed:
            self.ceiling, self.current = Setting(**ceiling), Setting(**current)
            self.up_cooldown = self.base_up_cooldown
            self._last_change = self._clock
            self._restart_window()
            log.info("governor: operator set %s; new ceiling %s", self.current, self.ceiling)

    def _follow(self, values: Mapping[str, Any]) -> None:
        """Take hand-made changes of steps or size as the new ceiling for that dimension."""
        steps, w, h = int(values["steps"]), round32(values["width"]), round32(values["height"])
        if self.ceiling is None or self.current is None:
            self.set_ceiling(steps, w, h)
            log.debug("governor: ceiling %s", self.ceiling)
            return
        new_steps = steps if steps != self.current.steps else self.ceiling.steps
        new_size = (w, h) if (w, h) != (self.current.width, self.current.height) else (
            self.ceiling.width, self.ceiling.height)  # fmt: skip
        ceiling = Setting(new_steps, *new_size)
        if ceiling != self.ceiling or Setting(steps, w, h) != self.current:
            self.ceiling = ceiling
            self.current = Setting(steps, w, h)
            self.up_cooldown = self.base_up_cooldown
            self._last_change = self._clock
            self._restart_window()
            log.info("governor: operator set %s; new ceiling %s", self.current, self.ceiling)

    # ----- the loop's side
    def observe(self, frame_seconds: float, values: Mapping[str, Any] | None = None) -> Adjustment | None:
        """Record one dreamed frame's seconds; returns an Adjustment when the setting should change.

        ``values``: the registry's current ``steps``, ``width`` and ``height`` (a snapshot), so
        changes made by hand are seen; None means "as the governor last set them".
        """
        self._take_pending()
        if values is not None:
            self._follow(values)
        if self.current is None:
            raise ValueError("Governor.observe needs the registry values (or set_ceiling) before the first frame")
        self._clock += frame_seconds
        if self._skip > 0:
            self._skip -= 1
            return None
        self._times.append(frame_seconds)
        self._window_sum += frame_seconds
        while len(self._times) > self.min_frames and self._window_sum - self._times[0] >= self.window_seconds:
            self._window_sum -= self._times.popleft()
        if len(self._times) < self.min_frames or self._window_sum < self.window_seconds:
            return None
        measured = statistics.median(self._times)
        since = self._clock - self._last_change
        if measured > self.budget * self.down_at:
            if since < self.down_cooldown:
                return None
            return self._move_down(measured)
        if since < self.up_cooldown:
            return None
        return self._move_up(measured)

    # ----- decisions
    def ladder(self, ceiling: Setting | None = None) -> list[Setting]:
        """Every setting the governor may use under ``ceiling`` (default: the operator's), most
        preferred first: largest size, then most steps."""
        top = ceiling or self.ceiling
        if top is None:
            raise ValueError("no ceiling yet: call set_ceiling or observe with the registry values")
        sizes = [(top.width, top.height)]
        below = self.sizes if self.sizes is not None else default_sizes(top.width, top.height)
        for w, h in below:
            if self.min_size is not None and (w < self.min_size[0] or h < self.min_size[1]):
                continue  # the site said: never smaller than this
            if w * h < top.pixels and w <= top.width and h <= top.height and (w, h) not in sizes:
                sizes.append((w, h))
        sizes.sort(key=lambda s: -s[0] * s[1])
        lowest = min(self.min_steps, top.steps)
        return [Setting(s, w, h) for w, h in sizes for s in range(top.steps, lowest - 1, -1)]

    def predict(self, measured: float, setting: Setting) -> float:
        """Seconds per frame ``setting`` should take, from ``measured`` at the current setting."""
        assert self.current is not None
        return measured * setting.work / self.current.work

    def _best_fit(self, measured: float) -> Setting | None:
        limit = self.budget * self.headroom
        for s in self.ladder():
            if self.predict(measured, s) <= limit:
                return s
        return None

    def _move_down(self, measured: float) -> Adjustment | None:
        assert self.current is not None
        ladder = self.ladder()
        target = self._best_fit(measured)
        if target is None:
            target = min(ladder, key=lambda s: s.work)  # the cheapest there is; say so
            note = "; the target cannot be reached even so"
        else:
            note = ""
        if target.work >= self.current.work:
            return None  # nothing cheaper to go to (already at the bottom, or only a costlier layout fits)
        if self._clock - self._last_up < self.probation:
            # the last up-move did not hold: wait longer before trying again
            self.up_cooldown = min(self.up_cooldown * 2, self.max_up_cooldown)
        reason = (f"{1 / measured:.1f} fps < {self.target_fps:g} target (median {1e3 * measured:.1f} ms): "
                  f"{self.current} -> {target}{note}")  # fmt: skip
        return self._change(target, reason)

    def _move_up(self, measured: float) -> Adjustment | None:
        assert self.current is not None
        ladder = self.ladder()
        position = ladder.index(self.current) if self.current in ladder else len(ladder)
        target = self._best_fit(measured)
        if target is None or ladder.index(target) >= position:
            return None
        predicted = self.predict(measured, target)
        reason = (f"room at {1 / measured:.1f} fps (target {self.target_fps:g}): {self.current} -> {target}, "
                  f"predicted {1e3 * predicted:.1f} ms of {1e3 * self.budget:.1f}")  # fmt: skip
        self._last_up = self._clock
        return self._change(target, reason)

    def _change(self, target: Setting, reason: str) -> Adjustment:
        self.current = target
        self.changes += 1
        self._last_change = self._clock
        self._restart_window()
        log.info("governor: %s", reason)
        return Adjustment(target.steps, target.width, target.height, reason)

    def _restart_window(self) -> None:
        self._times.clear()
        self._window_sum = 0.0
        self._skip = self.settle_frames
