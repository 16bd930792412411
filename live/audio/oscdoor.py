"""The sound's OSC addresses: read-only feature nodes, queries, feedback on request, map editing.

Handed to the OSC server as extra routes (``OscServer(routes=…)``); every handler checks its
arguments before anything walks them (types, counts, lengths, names against fixed lists) and
returns the messages to reply with, or raises :class:`~live.errors.UsageError`, which the server
answers on ``/dream/error`` like any refusal (docs/architecture.md, *Doors*).

- ``/dream/audio/<feature>`` (``level``, ``low``, ``mid``, ``high``, ``onset``, ``bpm``, ``beat``,
  ``phase``, ``confidence``): read-only; with no argument it answers its value; with one it is refused.
- ``/dream/audio/query``: every feature (or the one named).
- ``/dream/audio/feedback <rate>``: the features streamed to the sender's address ``rate`` times a
  second (1..60; 0 stops), at most ``MAX_SUBSCRIBERS`` senders.
- ``/dream/audio/map <feature> <param> [mode] [min] [max]``, ``/dream/audio/unmap <param>``,
  ``/dream/audio/mapping <name>`` (a shipped mapping, or one saved beside the mapping file),
  ``/dream/audio/save``, ``/dream/audio/follow`` (back to tracking the tempo after taps).
  Tap tempo is the registry's ``/dream/tap``.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from live.audio.features import FEATURES, NODE_FEATURES
from live.audio.mapping import (
    MODES,
    AudioMapping,
    ContinuousMap,
    _Checker,
    load_mapping,
    replace_map,
    shipped_names,
    shipped_path,
    without_param,
)
from live.errors import DataError, UsageError

log = logging.getLogger(__name__)

PREFIX = "/dream"
MAX_SUBSCRIBERS = 8
MAX_RATE = 60.0
MAX_TEXT = 64  # characters of a name argument
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# (name below /dream, argument, accepts, meaning, OSC type tag, readable): the README's rows,
# OSCQuery's nodes; the feature nodes come first.
AUDIO_METHODS: tuple[tuple[str, str, str, str, str, bool], ...] = (
    *((f"audio/{name}", "—", "read-only", f"sound: {FEATURES[name][0]}", "f", True) for name in NODE_FEATURES),
    ("audio/query", "string (optional)", "feature name", "replies `/dream/audio/<feature> <value>` for one or every "
     "feature", "s", False),
    ("audio/feedback", "float", "0..60 per second", "stream every feature to the sender this often (0 stops)", "f",
     False),
    ("audio/map", "feature, param [, mode, min, max]", "e.g. `low zoom add 0 0.01`", "map a sound feature onto a "
     "parameter (replaces that feature's map of it)", "ss", False),
    ("audio/unmap", "string", "parameter name", "remove the sound's maps of a parameter (it returns to its value)",
     "s", False),
    ("audio/mapping", "string", "shipped or saved mapping name", "use another audio mapping", "s", False),
    ("audio/save", "—", "", "save the audio mapping in force to its file", "N", False),
    ("audio/follow", "—", "", "follow the sound's tempo again after tap tempo", "N", False),
)


def _one_name(address: str, args: tuple[Any, ...], what: str) -> str:
    if len(args) != 1 or not isinstance(args[0], str):
        raise UsageError(f"{address} expects one string ({what})")
    text = args[0].strip()
    if not text or len(text) > MAX_TEXT:
        raise UsageError(f"{address} expects {what}, up to {MAX_TEXT} characters")
    return text


def _finite(address: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{address}: {what} must be a finite number, got {str(value)[:40]!r}")
    return float(value)


class AudioOsc:
    """The audio routes for one show's :class:`~live.audio.engine.AudioEngine`."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._subscribers: dict[tuple[str, int], float] = {}  # address -> rate
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: dict[int, socket.socket] = {}  # by address family
        self._thread: threading.Thread | None = None
        self.sent = 0

    # ----- the routes the OSC server maps (name below /dream -> handler)
    def routes(self) -> dict[str, Callable[[tuple[str, int], str, tuple[Any, ...]], Mapping[str, list[Any]] | None]]:
        out: dict[str, Callable[[tuple[str, int], str, tuple[Any, ...]], Mapping[str, list[Any]] | None]] = {}
        for name in NODE_FEATURES:
            out[f"audio/{name}"] = self._feature(name)
        out.update({"audio/query": self._query, "audio/feedback": self._feedback, "audio/map": self._map,
                    "audio/unmap": self._unmap, "audio/mapping": self._mapping, "audio/save": self._save,
                    "audio/follow": self._follow})
        return out

    def messages(self, names: tuple[str, ...] = NODE_FEATURES) -> dict[str, list[Any]]:
        values = self.engine.features.values()
        return {f"{PREFIX}/audio/{name}": [float(values.get(name, 0.0))] for name in names}

    def _feature(self, name: str) -> Callable[[tuple[str, int], str, tuple[Any, ...]], Mapping[str, list[Any]]]:
        def handle(client: tuple[str, int], address: str, args: tuple[Any, ...]) -> Mapping[str, list[Any]]:
            if args and args != (None,):
                raise UsageError(f"{address} is read-only (the sound sets it); send it without an argument to "
                                 f"read it, or map the feature with {PREFIX}/audio/map")
            return self.messages((name,))

        return handle

    def _query(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> Mapping[str, list[Any]]:
        if not args:
            return self.messages()
        name = _one_name(address, args, "a feature name").removeprefix(f"{PREFIX}/audio/")
        if name not in NODE_FEATURES:
            raise UsageError(f"{address}: no feature {name!r}; features: {', '.join(NODE_FEATURES)}")
        return self.messages((name,))

    def _feedback(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        if len(args) != 1:
            raise UsageError(f"{address} expects one number: features per second 1..{MAX_RATE:g}, or 0 to stop")
        rate = _finite(address, args[0], "the rate")
        if rate != 0 and not 1 <= rate <= MAX_RATE:
            raise UsageError(f"{address} {rate:g} is out of range; allowed: 1..{MAX_RATE:g} per second, or 0 to stop")
        target = (str(client[0]), int(client[1]))
        with self._lock:
            if rate == 0:
                self._subscribers.pop(target, None)
                return
            if target not in self._subscribers and len(self._subscribers) >= MAX_SUBSCRIBERS:
                raise UsageError(f"{address}: {MAX_SUBSCRIBERS} controllers receive the sound already; one must stop "
                                 "(rate 0) first")
            self._subscribers[target] = rate
            self._start_feed()
        return

    def _map(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        if not 2 <= len(args) <= 5:
            raise UsageError(f"{address} expects feature, param [, mode, min, max], e.g. low zoom add 0 0.01")
        if not all(isinstance(a, str) for a in args[:3]):
            raise UsageError(f"{address}: feature, param and mode are names (strings)")
        entry: dict[str, Any] = {"feature": args[0][:MAX_TEXT], "param": args[1][:MAX_TEXT]}
        if len(args) >= 3:
            if args[2] not in MODES:
                raise UsageError(f"{address}: mode {args[2][:MAX_TEXT]!r}; expected one of {', '.join(MODES)}")
            entry["mode"] = args[2]
        if len(args) == 4:
            raise UsageError(f"{address}: give both min and max, or neither")
        if len(args) == 5:
            entry["min"] = _finite(address, args[3], "min")
            entry["max"] = _finite(address, args[4], "max")
        new = self.check_map(entry, "OSC")
        self.engine.set_mapping(replace_map(self.engine.mapper.mapping, new))

    def check_map(self, entry: dict[str, Any], where: str) -> ContinuousMap:
        """One map from OSC or the page, checked as a mapping file's would be (UsageError if not)."""
        checker = _Checker(self.engine.registry, f"audio map from {where}", self.engine.settings.band_names)
        try:
            return checker.continuous(1, entry)
        except DataError as e:  # the file checker's words; from a controller it is a usage error
            raise UsageError(str(e).replace(": map 1", "")) from None

    def _unmap(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        name = _one_name(address, args, "a parameter name")
        mapping = self.engine.mapper.mapping
        if name not in mapping.params:
            raise UsageError(f"{address}: the sound drives no {name!r}; mapped: {', '.join(mapping.params) or 'nothing'}")
        self.engine.set_mapping(without_param(mapping, name))

    def _mapping(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        self.load(_one_name(address, args, "a mapping name"))

    def load(self, name: str) -> AudioMapping:
        """A shipped mapping by name, or ``<name>.toml`` beside the mapping file; never a path."""
        if not _NAME.match(name):
            raise UsageError(f"mapping name {name[:MAX_TEXT]!r}: letters, digits, '-', '_' or '.', no paths")
        bands = self.engine.settings.band_names
        path_dir: Path | None = self.engine.mapping_path.parent if self.engine.mapping_path is not None else None
        if path_dir is not None and (path_dir / f"{name}.toml").is_file():
            mapping = load_mapping(path_dir / f"{name}.toml", self.engine.registry, bands)
        elif name in shipped_names():
            mapping = load_mapping(shipped_path(name), self.engine.registry, bands)
        else:
            raise UsageError(f"no audio mapping {name!r}; shipped: {', '.join(shipped_names())}")
        self.engine.set_mapping(mapping)
        return mapping

    def _save(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        self.engine.save()

    def _follow(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        self.engine.follow()

    # ----- feedback on request
    def _start_feed(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._feed, name="osc-audio-feed", daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        from pythonosc.osc_message_builder import build_msg

        due: dict[tuple[str, int], float] = {}
        while not self._stop.wait(1 / MAX_RATE):
            now = time.monotonic()
            with self._lock:
                subscribers = dict(self._subscribers)
            if not subscribers:
                continue
            datagrams = None
            for target, rate in subscribers.items():
                if now < due.get(target, 0.0):
                    continue
                due[target] = now + 1 / rate
                if datagrams is None:
                    datagrams = [build_msg(a, v).dgram for a, v in self.messages().items()]
                family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
                sock = self._sockets.get(family)
                if sock is None:
                    sock = self._sockets[family] = socket.socket(family, socket.SOCK_DGRAM)
                    sock.setblocking(False)
                for dgram in datagrams:
                    try:
                        sock.sendto(dgram, target)
                        self.sent += 1
                    except OSError as e:  # unreachable, full buffer: the next round tries again
                        log.debug("audio feedback to %s: %s", target, e)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for sock in self._sockets.values():
            sock.close()
