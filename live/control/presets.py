"""Presets and morphing: named bundles of parameters, and cross-fades between settings.

A preset is a TOML file of parameter values (``objective = "inception4c:97"``, ``steps = 6``,
…) in the presets directory, one file per preset so a site can copy, share and version them.
Loading one writes all its values to the registry in one update (source ``"preset"``).

Presets can be saved from OSC and the web page, so the store is a door (docs/architecture.md,
*Doors*): a name is letters, digits, ``-``, ``_`` and ``.`` and nothing else (matched whole: no
newline slips past the end of the pattern), at most ``MAX_PRESETS`` presets are kept (a save of
a new name beyond that is refused; overwriting one is fine), saves are rate-limited
(``SAVES_PER_SECOND``), and a preset file over ``MAX_PRESET_BYTES`` is refused unread.

:class:`Morpher` sits between the registry and the frame loop. When the objective changes, or
a preset is loaded, and ``morph_time`` is above zero, the loop does not jump: the objective's
layer and channel weights interpolate (layers cross-fade) and a preset's numbers glide, over
``morph_time`` seconds. Faders moved by hand are never slowed down.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from live.atomic import atomic_write
from live.control.params import Param, Registry, Snapshot
from live.errors import DataError, InputError, OutputError, UsageError
from live.objectives import Objective
from live.ratelimit import Bucket
from live.tomlfile import read_toml

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # always fullmatch: "evil\n" matched "…$"
MAX_PRESETS = 1000  # presets in one directory; a show uses tens
MAX_PRESET_BYTES = 64 * 1024  # one preset file; a saved look is a few hundred bytes
SAVES_PER_SECOND = 5.0  # from every source together, with a burst of 20
NOT_PRESET = ("reset", "tap", "morph_time")  # actions and a setting about morphing, not part of a look


def default_presets_dir() -> Path:
    """``$DEEPDREAM_LIVE_PRESETS``, else ``$XDG_CONFIG_HOME/deepdream-live/presets``."""
    if os.environ.get("DEEPDREAM_LIVE_PRESETS"):
        return Path(os.environ["DEEPDREAM_LIVE_PRESETS"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "deepdream-live" / "presets"


class PresetStore:
    """Presets as ``<directory>/<name>.toml``; values checked against the registry on load and save."""

    def __init__(self, registry: Registry, directory: Path | None = None) -> None:
        self.registry = registry
        self.directory = directory or default_presets_dir()
        self._saves = Bucket(SAVES_PER_SECOND, 4 * SAVES_PER_SECOND)
        self._save_lock = threading.Lock()

    def path(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:80] + "…"
            raise UsageError(
                f"preset name {shown}: use letters, digits, '-', '_' or '.', up to 64 characters (no paths)"
            )
        return self.directory / f"{name}.toml"

    def names(self) -> list[str]:
        """The presets on disk, sorted (at most ``MAX_PRESETS``)."""
        if not self.directory.is_dir():
            return []
        found = sorted(p.stem for p in self.directory.glob("*.toml") if _NAME.fullmatch(p.stem))
        return found[:MAX_PRESETS]

    def read(self, name: str) -> dict[str, Any]:
        """A preset's values, each checked as the registry would: out of range is a DataError naming the file."""
        path = self.path(name)
        if not path.is_file():
            known = ", ".join(self.names()) or "none yet"
            raise InputError(f"no preset {name!r} in {self.directory} (presets there: {known})")
        try:
            size = path.stat().st_size
        except OSError:
            size = 0  # read_toml says what is wrong with it
        if size > MAX_PRESET_BYTES:
            raise DataError(f"preset file {path} is {size} bytes; a preset is at most {MAX_PRESET_BYTES} "
                            "(a saved look is a few hundred): is it really a preset?")
        data = read_toml(path, "preset file", f"no preset {name!r} in {self.directory}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key in NOT_PRESET:
                continue
            try:
                values[key] = self.registry.param(key).coerce(value)
            except UsageError as e:
                raise DataError(f"preset file {path}: {e}") from e
        return values

    def load(self, name: str) -> dict[str, Any]:
        """Apply a preset to the registry in one update; returns the values applied."""
        values = self.read(name)
        self.registry.update(values, source="preset")
        log.info("preset %s loaded (%d values)", name, len(values))
        return values

    def save(self, name: str, values: dict[str, Any] | None = None) -> Path:
        """Save ``values`` (default: the registry's current look) as preset ``name``."""
        # Imported here: only saving needs the writer, and the loop imports this module on GPU
        # machines checked offline (make gpu-check) that may lack it.
        import tomli_w

        path = self.path(name)
        snap = self.registry.snapshot()
        chosen = values if values is not None else {k: snap[k] for k in snap if k not in NOT_PRESET}
        data = {k: str(v) if isinstance(v, Objective) else v for k, v in chosen.items()}
        with self._save_lock:
            if not self._saves.take():
                raise OutputError(f"preset {name} not saved: more than {SAVES_PER_SECOND:g} saves a second; "
                                  "try again in a moment")
            if not path.exists() and len(self.names()) >= MAX_PRESETS:
                raise OutputError(f"preset {name} not saved: {self.directory} holds {MAX_PRESETS} presets already, "
                                  "the most a show keeps; delete some or overwrite one")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(path) as f:
                    f.write(tomli_w.dumps(data).encode())
            except OSError as e:
                raise OutputError(f"cannot save preset {name!r} to {path}: {e}") from e
        log.info("preset %s saved to %s", name, path)
        return path


@dataclass
class _Fade:
    start: Any
    end: Any
    t0: float
    seconds: float


class Morpher:
    """Turns jumps into cross-fades for the frame loop: ``view(snapshot)`` each frame.

    Objective changes from any source, and every numeric value a preset sets, fade over the
    registry's ``morph_time``; everything else passes straight through.
    """

    def __init__(self, registry: Registry, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.clock = clock
        self._lock = threading.Lock()
        self._fades: dict[str, _Fade] = {}
        self._shown: dict[str, Any] = dict(registry.snapshot())  # what the loop last used
        registry.subscribe(self._changed)

    def _changed(self, name: str, value: Any, source: str) -> None:
        seconds = self.registry.get("morph_time")
        fades = name == "objective" or (source == "preset" and self.registry.param(name).kind in ("float", "int"))
        with self._lock:
            if seconds <= 0 or not fades or source == "morph":
                self._fades.pop(name, None)
                return
            # from what is on screen now, even in the middle of another fade
            self._fades[name] = _Fade(self._shown.get(name, value), value, self.clock(), seconds)

    @property
    def active(self) -> bool:
        with self._lock:
            return bool(self._fades)

    def view(self, snap: Snapshot) -> Snapshot:
        """The values the loop should use for this frame (fading ones interpolated)."""
        now = self.clock()
        values = dict(snap)
        with self._lock:
            for name, fade in list(self._fades.items()):
                t = (now - fade.t0) / fade.seconds
                if t >= 1.0 or snap[name] != fade.end:  # finished, or overridden since
                    del self._fades[name]
                    continue
                values[name] = _interpolate(self.registry.param(name), fade.start, fade.end, t)
            self._shown = values
        return Snapshot(values, snap.version)


def _interpolate(param: Param, start: Any, end: Any, t: float) -> Any:
    t = min(max(t, 0.0), 1.0)
    if isinstance(start, Objective):
        return start.lerp(end, t)
    if param.curve == "log" and start > 0 and end > 0:
        value = math.exp((1 - t) * math.log(start) + t * math.log(end))
    else:
        value = (1 - t) * start + t * end
    return round(value) if param.kind == "int" else value
