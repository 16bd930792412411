"""The one parameter registry: every live setting's name, type, range, default, unit and curve.

CLI flags, the site config, OSC, MIDI and keyboard shortcuts all write through
:meth:`Registry.set`; the frame loop reads one immutable :class:`Snapshot` per frame, so a frame
never sees half an update and a change takes effect on the next frame.

One check for every way in: a value out of its range is refused with :class:`OutOfRange`, a
:class:`~live.errors.UsageError` that names the allowed range, and nothing changes; it is never
clamped behind the operator's back. Only a fader's 0..1 position (:meth:`Param.from_norm`) is
mapped onto the range along the parameter's curve. Rules that span parameters or depend on the
machine (the largest dream size this device can dream, see :mod:`live.limits`) are added with
:meth:`Registry.add_rule`, and every refusal is told to :meth:`Registry.subscribe_refusals`
listeners (OSC answers it on ``/dream/error``).

Writers are threads (the OSC server, the MIDI poller); the loop is another. The registry is
copy-on-write: a write builds a new snapshot under a lock and publishes it with one reference
assignment, so the loop's :meth:`Registry.snapshot` never blocks.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from live.errors import UsageError
from live.objectives import Objective

log = logging.getLogger(__name__)

Listener = Callable[[str, Any, str], None]  # (name, new value, source)
RefusalListener = Callable[[str, str, str], None]  # (what was refused, the reason, source)
Rule = Callable[[Mapping[str, Any]], None]  # raises UsageError when the proposed values break it


class OutOfRange(UsageError):
    """A value of the right type outside its parameter's range (refused, never clamped)."""


@dataclass(frozen=True)
class Param:
    """One live setting. ``kind``: float, int, bool, str, objective, choice, or trigger.

    ``curve`` maps a 0..1 fader to the range: ``lin`` or ``log`` (for ranges spanning decades).
    A trigger is a counter: each set bumps it, so no press is lost between two frames.
    """

    name: str
    kind: str
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    curve: str = "lin"
    choices: tuple[str, ...] = ()

    def coerce(self, value: Any) -> Any:
        """The value in this parameter's type, or UsageError saying why not.

        A number outside the range raises :class:`OutOfRange` naming the range: a value is
        never clamped (a fader's position goes through :meth:`from_norm` instead).
        """
        expected = self.expects()
        try:
            if self.kind == "float":
                if isinstance(value, bool):
                    raise ValueError
                v = float(value)
                if not math.isfinite(v):
                    raise ValueError
                return self._in_range(v, value)
            if self.kind == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                return self._in_range(int(value), value)
            if self.kind in ("bool", "trigger"):
                if isinstance(value, str):
                    lowered = value.strip().lower()
                    if lowered not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
                        raise ValueError
                    return lowered in ("1", "true", "on", "yes")
                if isinstance(value, (int, float)):
                    return value != 0
                raise ValueError
            if self.kind == "choice":
                if str(value) not in self.choices:
                    raise ValueError
                return str(value)
            if self.kind == "objective":
                return Objective.parse(str(value))
            return str(value)
        except OutOfRange:
            raise
        except UsageError as e:
            raise UsageError(f"{self.name}: {e}") from e
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{self.name} expects {expected}, got {value!r}") from None

    def _in_range(self, v: float | int, given: Any) -> float | int:
        assert self.lo is not None and self.hi is not None
        if not self.lo <= v <= self.hi:
            shown = given.strip()[:40] if isinstance(given, str) else (
                str(v) if isinstance(v, int) and abs(v) < 10**15 else f"{v:g}")
            raise OutOfRange(f"{self.name} {shown} is out of range; allowed: {self.expects()}")
        return v

    def expects(self) -> str:
        if self.kind in ("float", "int"):
            kind = "a number" if self.kind == "float" else "an integer"
            return f"{kind} {self.lo:g}..{self.hi:g}{' ' + self.unit if self.unit else ''}"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind in ("bool", "trigger"):
            return "0/1, true/false or on/off"
        if self.kind == "objective":
            return "a layer or objective such as inception4c, inception4c:97 or '0.5*inception3b+inception4c'"
        return "text"

    def from_norm(self, x: float) -> Any:
        """Map a 0..1 fader position to a value (numbers along the curve; choices by position).

        A position outside 0..1 is refused (:class:`OutOfRange`), as a value out of range is.
        """
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise UsageError(f"{self.name}/norm expects a fader position 0..1, got {x!r}")
        if not 0.0 <= x <= 1.0:
            raise OutOfRange(f"{self.name}/norm {x:g} is out of range; allowed: a fader position 0..1")
        if self.kind in ("float", "int"):
            assert self.lo is not None and self.hi is not None
            if self.curve == "log":
                v = self.lo * (self.hi / self.lo) ** x
            else:
                v = self.lo + x * (self.hi - self.lo)
            # the curve's float rounding may land a hair outside the range at its ends
            v = min(max(v, self.lo), self.hi)
            return self.coerce(round(v) if self.kind == "int" else v)
        if self.kind == "choice":
            return self.choices[min(int(x * len(self.choices)), len(self.choices) - 1)]
        if self.kind in ("bool", "trigger"):
            return x >= 0.5
        raise UsageError(f"{self.name} has no 0..1 fader mapping; send {self.expects()}")

    def to_norm(self, value: Any) -> float:
        """The fader position (0..1) that shows ``value``."""
        if self.kind in ("float", "int"):
            if self.curve == "log":
                return math.log(value / self.lo) / math.log(self.hi / self.lo)
            return (value - self.lo) / (self.hi - self.lo)
        if self.kind == "choice":
            return self.choices.index(value) / max(len(self.choices) - 1, 1)
        if self.kind in ("bool", "trigger"):
            return 1.0 if value else 0.0
        raise UsageError(f"{self.name} has no 0..1 fader mapping")


# The live loop's parameters. Order is the order a UI or a dump lists them.
LIVE_PARAMS: tuple[Param, ...] = (
    Param("objective", "objective", "inception4c", "layer or objective to dream on"),
    # steps 1, feedback 0.9: the cheapest setting as strong as 4 independent steps per frame, on a
    # panning clip and a still scene (bench/steps_across_frames.py; docs/architecture.md, "Frame budget")
    Param("steps", "int", 1, "gradient steps per frame", 0, 50, "steps"),
    Param("step_size", "float", 2.0, "size of each step", 0.1, 32.0, "grey levels", "log"),
    Param("octaves", "int", 1, "octaves per frame (more: larger structures, slower)", 1, 6),
    Param("octave_scale", "float", 1.4, "size ratio between octaves", 1.1, 2.0),
    Param("jitter", "int", 16, "random roll per step, hides the network's grid", 0, 64, "px"),
    Param("feedback", "float", 0.9, "how much of the previous frame's dream carries over", 0.0, 1.0),
    Param("flow", "bool", True, "warp the carried dream along the optical flow"),
    Param("mix", "float", 1.0, "output blend: 0 camera only, 1 dream only", 0.0, 1.0),
    Param("zoom", "float", 0.0, "zoom per frame for the endless-zoom look", -0.05, 0.05, "ratio"),
    Param("rotate", "float", 0.0, "rotation per frame", -5.0, 5.0, "degrees"),
    Param("drift_x", "float", 0.0, "horizontal drift per frame", -16.0, 16.0, "px"),
    Param("drift_y", "float", 0.0, "vertical drift per frame", -16.0, 16.0, "px"),
    Param("width", "int", 640, "dream width (rounded to a multiple of 32)", 64, 3840, "px"),
    Param("height", "int", 360, "dream height (rounded to a multiple of 32)", 64, 2160, "px"),
    Param("fps_cap", "float", 60.0, "upper limit on output frame rate", 1.0, 240.0, "fps"),
    Param("pause", "bool", False, "pass the camera through undreamed"),
    Param("freeze", "bool", False, "hold the current output frame"),
    Param("reset", "trigger", 0, "clear the carried dream"),
    Param("tap", "trigger", 0, "tap tempo: the beat of the sound follows your taps"),
    Param("morph_time", "float", 0.0, "cross-fade time for layer and preset changes", 0.0, 60.0, "s"),
)


class Snapshot(Mapping[str, Any]):
    """Frozen parameter values for one frame; read as ``snap.steps`` or ``snap["steps"]``."""

    __slots__ = ("_values", "version")

    def __init__(self, values: dict[str, Any], version: int) -> None:
        self._values = MappingProxyType(values)
        self.version = version  # grows with every accepted write

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Snapshot(v{self.version}, {dict(self._values)!r})"


class Registry:
    """Thread-safe store of live parameters; writers :meth:`set`, the frame loop :meth:`snapshot`."""

    def __init__(self, params: tuple[Param, ...] = LIVE_PARAMS) -> None:
        self.params: dict[str, Param] = {p.name: p for p in params}
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._refusal_listeners: list[RefusalListener] = []
        self._rules: list[Rule] = []
        self._snapshot = Snapshot({p.name: p.coerce(p.default) if p.kind != "trigger" else 0 for p in params}, 0)

    def param(self, name: str) -> Param:
        """The parameter called ``name``; UsageError listing the valid names otherwise."""
        try:
            return self.params[name]
        except KeyError:
            raise UsageError(f"unknown parameter {name!r}; valid: {', '.join(self.params)}") from None

    def snapshot(self) -> Snapshot:
        """The current values; never blocks, never changes after it is returned."""
        return self._snapshot

    def get(self, name: str) -> Any:
        return self._snapshot[self.param(name).name]

    def set(self, name: str, value: Any, source: str = "api") -> Any:
        """Set one parameter; returns the stored value. Out of range: :class:`OutOfRange`, nothing changes."""
        return self.update({name: value}, source)[name]

    def set_norm(self, name: str, x: float, source: str = "api") -> Any:
        """Set from a 0..1 fader position along the parameter's curve (outside 0..1 is refused)."""
        try:
            value = self.param(name).from_norm(x)
        except UsageError as e:
            self._refused(f"{name}/norm", e, source)
            raise
        return self.set(name, value, source)

    def update(self, values: Mapping[str, Any], source: str = "api") -> dict[str, Any]:
        """Set several parameters at once: one new snapshot, so no frame sees only some of them.

        All values are checked first (each parameter's type and range, then the rules added with
        :meth:`add_rule`); if any is refused, none is applied, the refusal listeners hear why, and
        the :class:`~live.errors.UsageError` is raised.
        """
        coerced: dict[str, Any] = {}
        for name, v in values.items():
            try:
                coerced[name] = self.param(name).coerce(v)
            except UsageError as e:
                self._refused(name, e, source)
                raise
        refused: UsageError | None = None
        with self._lock:
            current = dict(self._snapshot)
            for name, v in coerced.items():
                if self.params[name].kind == "trigger":
                    current[name] += 1 if v else 0  # a count, so two presses between frames are two
                else:
                    current[name] = v
            try:
                for rule in self._rules:  # against the values this write would publish, under the lock
                    rule(current)
            except UsageError as e:
                refused = e
            else:
                for name in coerced:
                    coerced[name] = current[name]
                self._snapshot = Snapshot(current, self._snapshot.version + 1)
            listeners = list(self._listeners)
        if refused is not None:
            self._refused(", ".join(coerced), refused, source)
            raise refused
        for name, v in coerced.items():
            for listener in listeners:
                try:
                    listener(name, v, source)
                except Exception:  # a broken feedback target must not break the writer
                    log.exception("parameter listener failed for %s", name)
        return coerced

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(name, value, source)`` after every accepted change (OSC feedback, overlay)."""
        with self._lock:
            self._listeners.append(listener)

    def subscribe_refusals(self, listener: RefusalListener) -> None:
        """Call ``listener(what, reason, source)`` after every refused write, from any source, so a
        controller that cannot be answered directly (MIDI) is still heard (OSC's ``/dream/error``)."""
        with self._lock:
            self._refusal_listeners.append(listener)

    def add_rule(self, rule: Rule) -> None:
        """Check every later write with ``rule(values)``: the whole proposed snapshot, which the
        rule refuses by raising :class:`~live.errors.UsageError` (e.g. the device's largest dream
        size). The current values must already satisfy it: a rule never changes what is set."""
        with self._lock:
            rule(dict(self._snapshot))
            self._rules.append(rule)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules added with :meth:`add_rule`, in order."""
        with self._lock:
            return tuple(self._rules)

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` coerced and checked as :meth:`update` would, without applying them."""
        coerced = {name: self.param(name).coerce(v) for name, v in values.items()}
        proposed = {**dict(self._snapshot), **{k: v for k, v in coerced.items() if self.params[k].kind != "trigger"}}
        with self._lock:
            rules = list(self._rules)
        for rule in rules:
            rule(proposed)
        return coerced

    def _refused(self, what: str, error: UsageError, source: str) -> None:
        with self._lock:
            listeners = list(self._refusal_listeners)
        for listener in listeners:
            try:
                listener(what, str(error), source)
            except Exception:  # a broken error channel must not hide the refusal from the writer
                log.exception("refusal listener failed for %s", what)
