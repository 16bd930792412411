"""Mappings at work: features into the registry, triggers on the beat.

**Continuous maps** modulate the operator's own value, the *base*: whatever OSC, MIDI, keys, the
page, a preset or the config last set (the mapper hears every write that is not its own). Each
analysis block the mapped value is ``(set value or base) × Π scale + Σ add``, each map's output
smoothed over its ``smooth_ms``; the values that changed go to :meth:`Registry.update` in one
write, so a frame never sees half of them: at once in a block with an onset or a trigger, else
at most every ``WRITE_INTERVAL`` seconds. The
registry checks them as it checks a fader: one it refuses (an ``add`` on a base near the end of
its range) is not applied, is counted in :attr:`Mapper.refused` and logged at most every
``LOG_EVERY`` seconds; the others still go. When the input has been silent for
``SILENCE_RELEASE_S`` every map rests (adds nothing, scales by 1, lets the base through), so
silence leaves every parameter where the operator put it; so does removing a map or closing.

**Triggers** count beats or onsets and fire every Nth. A beat trigger fires ``lookahead``
seconds before its beat, so the frame that shows it comes out on the beat: the lookahead is the
show's own measured latency (the engine asks the loop), plus the input's. An onset trigger
fires at once, or, quantised and with a tempo, at the next beat it can still make. Beats count
only while the tempo is tapped, from Link, or tracked with at least the mapping's confidence.
Actions: ``reset`` and the layer steps write the registry at once; ``next_preset`` and ``morph``
read a preset file, on a worker thread, never on the analysis thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from live.audio.features import Features
from live.audio.mapping import AudioMapping, ContinuousMap, Trigger
from live.audio.tempo import TempoState
from live.control.params import Registry
from live.errors import LiveError, UsageError

log = logging.getLogger(__name__)

SOURCE = "audio"
WRITE_INTERVAL = 0.01  # s between two continuous writes: 100 a second at most
SILENCE_RELEASE_S = 0.25  # silent this long: every map rests
LOG_EVERY = 10.0
REST_SNAP = 1e-3  # resting maps this close to rest (a part of their span) are at rest
MAX_LOOKAHEAD_S = 2.0  # more than this is not a latency any show has; capped, and said once


class Mapper:
    """Applies an :class:`AudioMapping` to ``registry``; :meth:`apply` once per analysis block.

    ``presets`` loads presets by name (``next_preset``, ``morph``), or None; ``layers`` lists
    the layer names in depth order (``next_layer``); ``clock`` is for tests.
    """

    def __init__(self, registry: Registry, mapping: AudioMapping | None = None, *,
                 presets: Any = None, layers: tuple[str, ...] | None = None,
                 clock: Callable[[], float] = time.monotonic, run_actions_inline: bool = False) -> None:
        self.registry = registry
        self.presets = presets
        if layers is None:
            from live.model import catalog

            layers = tuple(layer.name for layer in catalog.LAYERS)
        self.layers = layers
        self.clock = clock
        self._lock = threading.RLock()
        self._mapping = AudioMapping()
        self._base: dict[str, Any] = {}
        self._smoothed: dict[int, float] = {}  # map index -> its smoothed output
        self._written: dict[str, Any] = {}  # what this mapper last wrote per parameter
        self._last_write = -math.inf
        self._silent_since: float | None = None
        self._last_time: float | None = None
        self._fired_beat: dict[int, int] = {}  # trigger index -> the last beat index it fired on
        self._counts: dict[int, int] = {}  # trigger index -> onsets counted
        self._pending: dict[int, float] = {}  # trigger index -> input time it fires at
        self._cycle: dict[int, int] = {}  # trigger index -> next position in its preset list
        self.refused = 0
        self.fired = 0
        self._refusal_logged = (-math.inf, 0)
        self._warned_lookahead = False
        self._closed = False
        self._inline = run_actions_inline  # render: deterministic, no worker thread
        self._actions = None if run_actions_inline else ThreadPoolExecutor(1, thread_name_prefix="audio-action")
        registry.subscribe(self._changed)
        if mapping is not None:
            self.set_mapping(mapping)

    # ----- the mapping
    @property
    def mapping(self) -> AudioMapping:
        with self._lock:
            return self._mapping

    def set_mapping(self, mapping: AudioMapping) -> None:
        """Use ``mapping`` from the next block on; parameters it no longer drives go back to their base."""
        with self._lock:
            old = set(self._mapping.params)
            self._mapping = mapping
            self._smoothed = {}
            self._pending, self._counts, self._fired_beat, self._cycle = {}, {}, {}, {}
            now = self.registry.snapshot()
            for name in mapping.params:
                if name not in self._base:
                    self._base[name] = now[name]
            released = old - set(mapping.params)
        self._restore(released)
        log.info("audio mapping: %d map(s), %d trigger(s)%s", len(mapping.maps), len(mapping.triggers),
                 "".join(f"; {m.describe()}" for m in mapping.maps[:6]))

    def close(self) -> None:
        """Put every mapped parameter back to its base; stop the action thread."""
        with self._lock:
            self._closed = True
            names = set(self._mapping.params)
        self._restore(names)
        if self._actions is not None:
            self._actions.shutdown(wait=True, cancel_futures=True)

    def _restore(self, names: set[str]) -> None:
        values = {}
        with self._lock:
            for name in names:
                base = self._base.pop(name, None)
                if base is not None and self._written.pop(name, None) is not None:
                    values[name] = base
        if values:
            self._write(values)

    def _changed(self, name: str, value: Any, source: str) -> None:
        """Registry listener: a write from anyone but the mapper is the operator's new base."""
        if source == SOURCE:
            return
        with self._lock:
            if name in self._base:
                self._base[name] = value
                self._written.pop(name, None)

    # ----- per block (the analysis thread)
    def apply(self, features: Features, tempo: TempoState, lookahead: float = 0.0) -> None:
        """Map one block's features; fire the triggers that are due."""
        with self._lock:
            if self._closed:
                return
            mapping = self._mapping
            now = features.time
            dt = 0.0 if self._last_time is None else max(now - self._last_time, 0.0)
            self._last_time = now
            if features.silent:
                self._silent_since = now if self._silent_since is None else self._silent_since
            else:
                self._silent_since = None
            resting = self._silent_since is not None and now - self._silent_since >= SILENCE_RELEASE_S
            values = self._continuous(mapping, features, dt, resting) if mapping.maps else {}
            due = self._triggers(mapping, features, tempo, self._cap(lookahead)) if mapping.triggers else []
        wall = self.clock()
        # an onset or a trigger goes out at once; the rest of the music at most every WRITE_INTERVAL
        if values and (wall - self._last_write >= WRITE_INTERVAL or due or features.onsets):
            self._last_write = wall
            self._write(values)
        for trigger, index in due:
            self._fire(trigger, index)

    def _cap(self, lookahead: float) -> float:
        """The lookahead, at most MAX_LOOKAHEAD_S (said once when the show is slower than that)."""
        if lookahead > MAX_LOOKAHEAD_S:
            if not self._warned_lookahead:
                self._warned_lookahead = True
                log.warning("the show takes %.1f s from a change to its frame: beat triggers fire at most %.1f s "
                            "early, so they land late", lookahead, MAX_LOOKAHEAD_S)
            return MAX_LOOKAHEAD_S
        return max(lookahead, 0.0)

    def _continuous(self, mapping: AudioMapping, features: Features, dt: float, resting: bool) -> dict[str, Any]:
        setting: dict[str, float] = {}
        scale: dict[str, float] = {}
        add: dict[str, float] = {}
        for i, m in enumerate(mapping.maps):
            base = self._base.get(m.param)
            if base is None:
                continue
            rest = m.rest() if m.rest() is not None else float(base)
            target = rest if resting else m.output(_feature(features, m))
            previous = self._smoothed.get(i, rest)
            if m.smooth_ms > 0 and dt > 0:
                target = previous + (target - previous) * (1.0 - math.exp(-dt * 1000.0 / m.smooth_ms))
                if resting and abs(target - rest) <= REST_SNAP * abs(m.max - m.min):
                    target = rest  # the glide home ends exactly on the operator's value
            self._smoothed[i] = target
            if m.mode == "set":
                setting[m.param] = target
            elif m.mode == "scale":
                scale[m.param] = scale.get(m.param, 1.0) * target
            else:
                add[m.param] = add.get(m.param, 0.0) + target
        out: dict[str, Any] = {}
        for name in mapping.params:
            base = self._base.get(name)
            if base is None:
                continue
            value = setting.get(name, float(base)) * scale.get(name, 1.0) + add.get(name, 0.0)
            if self.registry.params[name].kind == "int":
                value = round(value)
            elif abs(value - base) < 1e-12:
                value = base
            if value != self._written.get(name, base):
                out[name] = value
        return out

    def _write(self, values: dict[str, Any]) -> None:
        try:
            stored = self.registry.update(values, SOURCE)
        except UsageError:
            stored = {}
            for name, value in values.items():  # apply the others; count the one refused
                try:
                    stored[name] = self.registry.set(name, value, SOURCE)
                except UsageError as e:
                    self._refused(name, value, e)
        with self._lock:
            for name, value in stored.items():
                if name in self._base:
                    self._written[name] = value

    def _refused(self, name: str, value: Any, error: UsageError) -> None:
        self.refused += 1
        now = time.monotonic()
        when, count = self._refusal_logged
        if now - when >= LOG_EVERY:
            hidden = self.refused - count - 1
            log.warning("audio mapping: %s %r not applied: %s%s", name, value, error,
                        f" ({hidden} more refused since the last report)" if hidden > 0 else "")
            self._refusal_logged = (now, self.refused)

    # ----- triggers
    def _triggers(self, mapping: AudioMapping, f: Features, tempo: TempoState,
                  lookahead: float) -> list[tuple[Trigger, int]]:
        if not mapping.triggers:
            return []
        now = f.time
        beats_ok = tempo.beat_index is not None and tempo.period > 0 and (
            tempo.source in ("tap", "link") or tempo.confidence >= mapping.confidence)
        due: list[tuple[Trigger, int]] = []
        for i, t in enumerate(mapping.triggers):
            if t.on == "beat":
                if not beats_ok:
                    self._fired_beat.pop(i, None)
                    continue
                assert tempo.beat_index is not None
                fired = self._fired_beat.get(i)
                # the beats whose moment (less the lookahead) has come: the current one and those ahead
                ahead = int(lookahead / tempo.period) + 1
                for j in range(ahead + 1):
                    index = tempo.beat_index + j
                    when = tempo.last_beat + j * tempo.period
                    if when - lookahead > now:
                        break
                    if fired is None:  # the beat was just found: start counting from here, fire nothing old
                        fired = index if j == 0 else index - 1
                        continue
                    if index < fired - 1:  # the count restarted (a new series of taps)
                        fired = index - 1
                    if index > fired and index % t.every == 0:
                        due.append((t, index))
                    fired = max(fired, index)
                self._fired_beat[i] = fired if fired is not None else tempo.beat_index
                continue
            band = t.on.partition(".")[2]
            hit = ("any" in f.onsets) if not band else (band in f.onsets)
            if hit:
                self._counts[i] = self._counts.get(i, 0) + 1
                if self._counts[i] % t.every == 0 and i not in self._pending:
                    if t.quantise and beats_ok:
                        self._pending[i] = _next_beat(tempo, now, lookahead)
                    else:
                        due.append((t, self._counts[i]))
            when = self._pending.get(i)
            if when is not None and now >= when:
                del self._pending[i]
                due.append((t, self._counts.get(i, 0)))
        return due

    def _fire(self, trigger: Trigger, index: int) -> None:
        self.fired += 1
        log.debug("audio trigger %s (%d)", trigger.describe(), index)
        try:
            if trigger.action == "reset":
                self.registry.set("reset", True, SOURCE)
            elif trigger.action in ("next_layer", "prev_layer"):
                self._step_layer(1 if trigger.action == "next_layer" else -1)
            elif self._inline:
                self._preset(trigger)
            elif self._actions is not None:
                self._actions.submit(self._preset_logged, trigger)
        except LiveError as e:
            self._refused(trigger.action, index, UsageError(str(e)))

    def _step_layer(self, direction: int) -> None:
        from live.model import catalog

        current = self.registry.get("objective")
        deepest = catalog.deepest(current.layers).name if current.layers else self.layers[0]
        i = self.layers.index(deepest) if deepest in self.layers else 0
        self.registry.set("objective", self.layers[(i + direction) % len(self.layers)], SOURCE)

    def _preset_logged(self, trigger: Trigger) -> None:
        try:
            self._preset(trigger)
        except LiveError as e:
            self._refused(trigger.action, trigger.presets, UsageError(str(e)))
        except Exception:  # noqa: BLE001 - a worker's failure must reach the log, not vanish
            log.exception("audio trigger %s failed", trigger.describe())

    def _preset(self, trigger: Trigger) -> None:
        if self.presets is None:
            raise UsageError("no presets directory: next_preset and morph need one (--presets)")
        key = id(trigger)
        with self._lock:
            position = self._cycle.get(key, 0)
            self._cycle[key] = position + 1
        name = trigger.presets[position % len(trigger.presets)]
        if trigger.action == "morph":
            self.registry.set("morph_time", trigger.seconds, SOURCE)
        self.presets.load(name)


def _feature(features: Features, m: ContinuousMap) -> float:
    try:
        return features.value(m.feature)
    except KeyError:
        return 0.0


def _next_beat(tempo: TempoState, now: float, lookahead: float) -> float:
    """The input time to fire at so a change lands on the next beat it can still make."""
    when = tempo.last_beat
    while when - lookahead < now:
        when += tempo.period
    return when - lookahead
