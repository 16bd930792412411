"""Audio mappings: which feature drives which parameter, and which sound fires which action.

A mapping file (TOML, like the MIDI mapping) holds ``[[map]]`` tables, continuous::

    [[map]]
    feature = "low"       # level, low, mid, high (or a band of [audio] bands), onset, beat, phase, bpm, confidence
    param = "zoom"        # a number parameter of the registry
    mode = "add"          # add (to the operator's value, default) | scale (multiply it) | set (replace it)
    min = 0.0             # what the feature at in_min gives: the amount added, the factor or the value
    max = 0.01            # ... and at in_max
    in_min = 0.0          # the feature's range that is used (default: the feature's own, e.g. 0..2 for bands)
    in_max = 2.0
    curve = "lin"         # lin | log (geometric between min and max, both above 0)
    smooth_ms = 80        # smoothing of the mapped value (default 0)

and ``[[trigger]]`` tables::

    [[trigger]]
    on = "beat"           # beat | onset (any band) | onset.low, onset.mid, … (one band)
    every = 16            # every Nth beat or onset (default 1)
    action = "next_layer" # reset | next_layer | prev_layer | next_preset | morph
    presets = ["calm", "storm"]   # next_preset and morph: the list they step through
    seconds = 4.0         # morph: the cross-fade time
    quantise = true       # onsets: fire on the next beat when there is a tempo (default true)

and, at the top, ``confidence = 0.3``: a tracked tempo below this fires no beat trigger.

**Refused, never clamped.** A file is checked whole before any of it is used, against the
registry: a ``set`` range outside the parameter's range, an ``add`` amount larger than the range,
two ``set`` maps on one parameter, an unknown key, feature, parameter or preset name, a number
that is not finite; each is an error naming the file, the table, the key and what is allowed.
The file is read only up to ``MAX_FILE_BYTES`` and holds at most ``MAX_ENTRIES`` tables of each
kind, so a hostile file costs bounded work. At run time a mapped value still goes through
:meth:`Registry.update`; one it refuses (an ``add`` on top of a value near the end of the range)
is not applied and is counted (:mod:`live.audio.mapper`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from importlib.resources import files
from pathlib import Path
from typing import Any

from live.atomic import atomic_write
from live.audio.features import FEATURES
from live.control.params import Registry
from live.errors import DataError, InputError, OutputError, UsageError

MAX_FILE_BYTES = 64 * 1024
MAX_ENTRIES = 64
MODES = ("add", "scale", "set")
CURVES = ("lin", "log")
ACTIONS = ("reset", "next_layer", "prev_layer", "next_preset", "morph")
MAP_KEYS = ("feature", "param", "mode", "min", "max", "in_min", "in_max", "curve", "smooth_ms")
TRIGGER_KEYS = ("on", "every", "action", "presets", "seconds", "quantise")
TOP_KEYS = ("map", "trigger", "confidence")
MAPPABLE = ("float", "int")
MAX_SCALE = 10.0
DEFAULT_CONFIDENCE = 0.3
_PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as live.control.presets
SHIPPED = "presets"  # folder of shipped mapping presets, beside this module


@dataclass(frozen=True)
class ContinuousMap:
    """One feature driving one number parameter (see the module docstring for the keys)."""

    feature: str
    param: str
    mode: str = "add"
    min: float = 0.0
    max: float = 1.0
    in_min: float = 0.0
    in_max: float = 1.0
    curve: str = "lin"
    smooth_ms: float = 0.0

    def output(self, x: float) -> float:
        """What the feature value ``x`` gives (the amount, factor or value), within min..max."""
        t = (x - self.in_min) / (self.in_max - self.in_min)
        t = 0.0 if not math.isfinite(t) else min(max(t, 0.0), 1.0)  # the mapping's own input range
        if self.curve == "log":
            return self.min * (self.max / self.min) ** t
        return self.min + t * (self.max - self.min)

    def rest(self) -> float | None:
        """What the map gives in silence: nothing added, a factor of 1, the operator's value (None)."""
        return {"add": 0.0, "scale": 1.0}.get(self.mode)

    def describe(self) -> str:
        return f"{self.feature} -> {self.param} ({self.mode} {self.min:g}..{self.max:g})"


@dataclass(frozen=True)
class Trigger:
    """Every ``every``-th beat or onset fires ``action``."""

    on: str
    action: str
    every: int = 1
    presets: tuple[str, ...] = ()
    seconds: float = 0.0
    quantise: bool = True

    def describe(self) -> str:
        what = f"{self.on}s" if self.on == "beat" and self.every > 1 else self.on
        return f"every {self.every} {what} -> {self.action}" if self.every > 1 else f"every {what} -> {self.action}"


@dataclass(frozen=True)
class AudioMapping:
    """A checked mapping: continuous maps, triggers, and the tempo confidence beat triggers need."""

    maps: tuple[ContinuousMap, ...] = ()
    triggers: tuple[Trigger, ...] = ()
    confidence: float = DEFAULT_CONFIDENCE

    @property
    def params(self) -> tuple[str, ...]:
        """The parameters the continuous maps drive, each once, in file order."""
        return tuple(dict.fromkeys(m.param for m in self.maps))

    def to_toml(self) -> dict[str, Any]:
        """The mapping as a TOML document (defaults left out)."""
        doc: dict[str, Any] = {}
        if self.confidence != DEFAULT_CONFIDENCE:
            doc["confidence"] = self.confidence
        doc["map"] = [_table(m, ContinuousMap) for m in self.maps]
        doc["trigger"] = [_table(t, Trigger) for t in self.triggers]
        return {k: v for k, v in doc.items() if v != []}


def _table(item: Any, cls: type) -> dict[str, Any]:
    defaults = cls.__dataclass_fields__
    out: dict[str, Any] = {}
    for f in fields(cls):
        value = getattr(item, f.name)
        default = defaults[f.name].default
        if f.name in ("feature", "param", "on", "action") or value != default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value[:60])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return type(value).__name__


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Checker:
    def __init__(self, registry: Registry, where: str, bands: Sequence[str]) -> None:
        self.registry = registry
        self.where = where
        self.features = list(dict.fromkeys([*bands, *FEATURES]))
        self.bands = list(bands)

    def bad(self, head: str, key: str, value: Any, allowed: str) -> DataError:
        return DataError(f"{self.where}: {head}: {key} = {_show(value)}: {allowed}")

    def keys(self, head: str, entry: Any, allowed: tuple[str, ...], kind: str) -> dict[str, Any]:
        if not isinstance(entry, dict):
            raise DataError(f"{self.where}: {head}: expected a table of keys ([[{kind}]]), got {_show(entry)}")
        unknown = [k for k in entry if k not in allowed]
        if unknown:
            raise DataError(f"{self.where}: {head}: unknown key {str(unknown[0])[:40]!r}; allowed keys: "
                            f"{', '.join(allowed)}")
        return entry

    def continuous(self, n: int, entry: Any) -> ContinuousMap:
        head = f"map {n}"
        entry = self.keys(head, entry, MAP_KEYS, "map")
        for key in ("feature", "param"):
            if key not in entry:
                raise DataError(f"{self.where}: {head}: missing key {key!r}")
        feature = entry["feature"]
        if feature not in self.features:
            raise self.bad(head, "feature", feature, f"expected one of {', '.join(self.features)}")
        name = entry["param"]
        mappable = [p.name for p in self.registry.params.values() if p.kind in MAPPABLE]
        if not isinstance(name, str) or name not in mappable:
            raise self.bad(head, "param", name, f"expected a number parameter: {', '.join(mappable)}")
        p = self.registry.params[name]
        mode = entry.get("mode", "add")
        if mode not in MODES:
            raise self.bad(head, "mode", mode, f"expected one of {', '.join(MODES)}")
        default_in = FEATURES[feature][1] if feature in FEATURES else FEATURES["low"][1]
        values: dict[str, float] = {}
        for key, default in (("in_min", default_in[0]), ("in_max", default_in[1]), ("smooth_ms", 0.0)):
            value = entry.get(key, default)
            if not _number(value):
                raise self.bad(head, key, value, "expected a finite number")
            values[key] = float(value)
        if values["in_min"] == values["in_max"]:
            raise DataError(f"{self.where}: {head}: in_min and in_max are both {values['in_min']:g}: the feature "
                            "would do nothing")
        if not 0 <= values["smooth_ms"] <= 10000:
            raise self.bad(head, "smooth_ms", values["smooth_ms"], "expected 0..10000 ms")
        assert p.lo is not None and p.hi is not None
        span = p.hi - p.lo
        limits = {"set": (p.lo, p.hi, f"within {name}'s range {p.lo:g}..{p.hi:g}"),
                  "add": (-span, span, f"an amount within ±{span:g} (the width of {name}'s range {p.lo:g}..{p.hi:g})"),
                  "scale": (0.0, MAX_SCALE, f"a factor 0..{MAX_SCALE:g}")}[mode]
        defaults = {"set": (p.lo, p.hi), "add": (0.0, span / 4), "scale": (1.0, 2.0)}[mode]
        for key, default in (("min", defaults[0]), ("max", defaults[1])):
            value = entry.get(key, default)
            if not _number(value) or not limits[0] <= value <= limits[1]:
                raise self.bad(head, key, value, f"expected {limits[2]}")
            values[key] = float(value)
        if values["min"] == values["max"]:
            raise DataError(f"{self.where}: {head}: min and max are both {values['min']:g}: the feature would do "
                            "nothing")
        curve = entry.get("curve", p.curve if mode == "set" else "lin")
        if curve not in CURVES:
            raise self.bad(head, "curve", curve, f"expected one of {', '.join(CURVES)}")
        if curve == "log" and not (values["min"] > 0 and values["max"] > 0):
            key = "curve" if "curve" in entry else "mode"
            raise self.bad(head, key, entry.get(key, mode), f"a log curve needs min and max above 0, and "
                           f"{values['min']:g}..{values['max']:g} is not; use curve = \"lin\"")
        return ContinuousMap(feature=feature, param=name, mode=mode, curve=curve, **values)

    def trigger(self, n: int, entry: Any) -> Trigger:
        head = f"trigger {n}"
        entry = self.keys(head, entry, TRIGGER_KEYS, "trigger")
        for key in ("on", "action"):
            if key not in entry:
                raise DataError(f"{self.where}: {head}: missing key {key!r}")
        sources = ["beat", "onset", *(f"onset.{b}" for b in self.bands)]
        on = entry["on"]
        if on not in sources:
            raise self.bad(head, "on", on, f"expected one of {', '.join(sources)}")
        action = entry["action"]
        if action not in ACTIONS:
            raise self.bad(head, "action", action, f"expected one of {', '.join(ACTIONS)}")
        every = entry.get("every", 1)
        if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= 1024:
            raise self.bad(head, "every", every, "expected an integer 1..1024")
        presets = entry.get("presets", [])
        if not isinstance(presets, list) or len(presets) > MAX_ENTRIES:
            raise self.bad(head, "presets", presets, f"expected a list of up to {MAX_ENTRIES} preset names")
        for name in presets:
            if not isinstance(name, str) or not _PRESET_NAME.match(name):
                raise self.bad(head, "presets", name, "each a preset name: letters, digits, '-', '_' or '.', "
                               "up to 64 characters (no paths)")
        if action in ("next_preset", "morph") and not presets:
            raise DataError(f"{self.where}: {head}: action = {action!r} needs presets = [\"name\", …], the presets "
                            "it steps through")
        if action not in ("next_preset", "morph") and presets:
            raise self.bad(head, "presets", presets, f"only next_preset and morph use presets, not {action}")
        seconds = entry.get("seconds", 0.0)
        limit = self.registry.params["morph_time"].hi if "morph_time" in self.registry.params else 60.0
        if not _number(seconds) or not 0 <= seconds <= limit:
            raise self.bad(head, "seconds", seconds, f"expected a cross-fade time 0..{limit:g} s")
        if "seconds" in entry and action != "morph":
            raise self.bad(head, "seconds", seconds, f"only morph takes seconds, not {action}")
        quantise = entry.get("quantise", True)
        if not isinstance(quantise, bool):
            raise self.bad(head, "quantise", quantise, "expected true or false")
        return Trigger(on=on, action=action, every=every, presets=tuple(presets), seconds=float(seconds),
                       quantise=quantise)


def parse_mapping(data: Mapping[str, Any], registry: Registry, where: str = "audio mapping",
                  bands: Sequence[str] = ("low", "mid", "high")) -> AudioMapping:
    """Check a parsed mapping document against the registry; DataError naming what is wrong."""
    if not isinstance(data, Mapping):
        raise DataError(f"{where}: expected a table of [[map]] and [[trigger]] entries")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise DataError(f"{where}: unknown key {str(unknown[0])[:40]!r}; expected [[map]], [[trigger]] or confidence")
    checker = _Checker(registry, where, bands)
    tables = {}
    for key in ("map", "trigger"):
        entries = data.get(key, [])
        if not isinstance(entries, list):
            raise DataError(f"{where}: {key} must be a list of tables ([[{key}]]), got {_show(entries)}")
        if len(entries) > MAX_ENTRIES:
            raise DataError(f"{where}: {len(entries)} [[{key}]] tables; at most {MAX_ENTRIES}")
        tables[key] = entries
    maps = tuple(checker.continuous(i, e) for i, e in enumerate(tables["map"], 1))
    triggers = tuple(checker.trigger(i, e) for i, e in enumerate(tables["trigger"], 1))
    sets = [m.param for m in maps if m.mode == "set"]
    twice = sorted({p for p in sets if sets.count(p) > 1})
    if twice:
        raise DataError(f"{where}: two set maps drive {twice[0]}; one value cannot follow two features "
                        "(use add or scale for the second)")
    confidence = data.get("confidence", DEFAULT_CONFIDENCE)
    if not _number(confidence) or not 0 <= confidence <= 1:
        raise DataError(f"{where}: confidence = {_show(confidence)}: expected 0..1 (the tempo confidence beat "
                        "triggers need)")
    return AudioMapping(maps, triggers, float(confidence))


def parse_text(text: str, registry: Registry, where: str = "audio mapping",
               bands: Sequence[str] = ("low", "mid", "high")) -> AudioMapping:
    """Check mapping text (from a file, OSC or the page): size first, then TOML, then the tables."""
    import tomllib

    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise DataError(f"{where} is larger than {MAX_FILE_BYTES // 1024} KiB; a mapping is a few dozen lines")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"{where} is not valid TOML: {e}") from None
    except RecursionError:
        raise DataError(f"{where} nests too deeply to be a mapping") from None
    return parse_mapping(data, registry, where, bands)


def load_mapping(path: Path, registry: Registry, bands: Sequence[str] = ("low", "mid", "high")) -> AudioMapping:
    """Read and check a mapping file (InputError when missing, DataError when wrong)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"audio mapping {path} does not exist; start from a shipped one: "
                         f"{', '.join(shipped_names())} (see README, *Sound*)") from None
    except OSError as e:
        raise InputError(f"audio mapping {path} cannot be read: {e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"audio mapping {path} is not UTF-8 text") from None
    if len(raw) > MAX_FILE_BYTES:
        raise DataError(f"audio mapping {path} is larger than {MAX_FILE_BYTES // 1024} KiB; a mapping is a few "
                        "dozen lines")
    return parse_text(text, registry, f"audio mapping {path}", bands)


def save_mapping(path: Path, mapping: AudioMapping) -> None:
    """Write ``mapping`` to ``path`` atomically (OutputError if it cannot be written)."""
    import tomli_w

    text = "# deepdream-live audio mapping (README, *Sound*); saved by the show\n" + tomli_w.dumps(mapping.to_toml())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(text.encode())
    except OSError as e:
        raise OutputError(f"cannot save the audio mapping to {path}: {e}") from e


def shipped_names() -> list[str]:
    """The mapping presets that ship with the show."""
    folder = files("live.audio") / SHIPPED
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def shipped_path(name: str) -> Path:
    """The file of a shipped mapping preset (UsageError naming the ones there are)."""
    if name not in shipped_names():
        raise UsageError(f"no shipped audio mapping {name[:40]!r}; shipped: {', '.join(shipped_names())}")
    return Path(str(files("live.audio") / SHIPPED / f"{name}.toml"))


def resolve_mapping(spec: str | Path, registry: Registry, bands: Sequence[str] = ("low", "mid", "high")) -> AudioMapping:
    """A mapping from a file path, or by the name of a shipped preset."""
    text = str(spec)
    if text in shipped_names():
        return load_mapping(shipped_path(text), registry, bands)
    return load_mapping(Path(text).expanduser(), registry, bands)


def replace_map(mapping: AudioMapping, new: ContinuousMap) -> AudioMapping:
    """``mapping`` with ``new`` in place of the maps of the same feature and parameter (else added)."""
    kept = [m for m in mapping.maps if not (m.param == new.param and m.feature == new.feature)]
    if new.mode == "set":
        kept = [m for m in kept if not (m.param == new.param and m.mode == "set")]
    if len(kept) >= MAX_ENTRIES:
        raise UsageError(f"the audio mapping holds {MAX_ENTRIES} maps already; remove one first")
    return AudioMapping((*kept, new), mapping.triggers, mapping.confidence)


def without_param(mapping: AudioMapping, param: str) -> AudioMapping:
    """``mapping`` without the maps that drive ``param``."""
    return AudioMapping(tuple(m for m in mapping.maps if m.param != param), mapping.triggers, mapping.confidence)

