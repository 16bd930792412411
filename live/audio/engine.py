"""The sound of the show on its own thread: input → analysis → tempo → mappings → registry.

:class:`AudioEngine` takes blocks from its input's queue, analyses them, applies the mapping and
publishes the newest :class:`~live.audio.features.Features` in a latest-value slot that OSC,
OSCQuery and the web page read (docs/architecture.md, *Sound*). The frame loop never waits for
it, and it never waits for the frame loop: the loop reads the registry as it always does.

While the input gives nothing (a device missing, a file not started) the engine analyses
silence at the block rate, so the meters fall, the mapped parameters come back to the
operator's values and taps still keep a beat. ``tap`` is a registry parameter (a trigger), so
a tap can come from OSC (``/dream/tap``), a MIDI button, the ``t`` key or the page's button.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np

from live.audio.analysis import AnalysisSettings, Analyzer
from live.audio.features import Features
from live.audio.inputs import AudioInput
from live.audio.mapper import Mapper
from live.audio.mapping import AudioMapping, save_mapping
from live.audio.tempo import TempoState
from live.control.params import Registry
from live.errors import UsageError

log = logging.getLogger(__name__)

TAP_PARAM = "tap"
LOOKAHEAD_EVERY_S = 0.5  # how often the show's latency is asked for


class AudioEngine:
    """Analysis and mappings for one show; ``with AudioEngine(...) as audio:``.

    Args:
        registry: the live parameters the mappings drive.
        source: the input (started and closed with the engine), or None: silence (taps still work).
        mapping: what drives what; None for meters only.
        settings: bands, followers, gate, tempo range.
        presets: the preset store (``next_preset`` and ``morph`` triggers), or None.
        mapping_path: where :meth:`save` writes the mapping (OSC and the page edit it).
        latency: the show's registry-to-output latency in seconds, measured by the loop; beat
            triggers fire this much (plus the input's own latency) before their beat.
        link: an Ableton Link clock (:mod:`live.audio.link`), or None.
    """

    def __init__(self, registry: Registry, source: AudioInput | None = None, mapping: AudioMapping | None = None,
                 settings: AnalysisSettings | None = None, *, presets: Any = None, mapping_path: Path | None = None,
                 latency: Callable[[], float] | None = None, link: Any = None) -> None:
        self.registry = registry
        self.source = source
        rate = source.rate if source is not None else 48000
        base = settings or AnalysisSettings()
        if base.rate != rate:
            from dataclasses import replace

            base = replace(base, rate=rate)
        self.settings = base
        self.analyzer = Analyzer(base)
        self.mapper = Mapper(registry, mapping, presets=presets)
        self.mapping_path = mapping_path
        self.latency = latency
        self.link = link
        self._latest = self.analyzer.last
        self._tempo = TempoState()
        self._offset: float | None = None  # wall clock minus input time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lookahead = 0.0
        self._lookahead_at = -1e9
        self.blocks = 0
        self.cpu_seconds = 0.0
        self.started_at = time.monotonic()
        self._listeners: list[Callable[[Features], None]] = []
        self._failures: set[str] = set()  # kinds of analysis failure already logged
        self._tap_seen = registry.snapshot()[TAP_PARAM] if TAP_PARAM in registry.params else 0
        registry.subscribe(self._registry_changed)

    # ----- lifecycle
    def start(self) -> Self:
        if self.source is not None:
            self.source.start()
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="audio-analysis", daemon=True)
        self._thread.start()
        log.info("audio: %s; bands %s", self.source.name if self.source is not None else "no input (taps only)",
                 ", ".join(f"{n} {lo:g}-{hi:g} Hz" for n, lo, hi in self.settings.bands))
        return self

    def close(self) -> None:
        """Stop the thread and the input; mapped parameters go back to the operator's values."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.source is not None:
            self.source.close()
        self.mapper.close()
        if self.link is not None:
            self.link.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- what others read
    @property
    def features(self) -> Features:
        """The newest block's features (a frozen record; read from any thread)."""
        return self._latest

    @property
    def tempo(self) -> TempoState:
        return self._tempo

    def subscribe(self, listener: Callable[[Features], None]) -> None:
        """Call ``listener(features)`` after every block, on the analysis thread (keep it quick)."""
        self._listeners.append(listener)

    def status(self) -> dict[str, Any]:
        """For the status line, OSC status and the page: input, tempo, CPU share, refusals."""
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        f = self._latest
        return {"input": self.source.name if self.source is not None else "none",
                "input_status": self.source.status if self.source is not None else "none",
                "bpm": round(f.bpm, 1), "confidence": round(f.confidence, 2), "tempo_source": f.tempo_source,
                "cpu_percent": round(100 * self.cpu_seconds / elapsed, 2), "refused": self.mapper.refused,
                "triggers_fired": self.mapper.fired, "lookahead_ms": round(1e3 * self._lookahead, 1),
                "dropped_blocks": self.source.queue.dropped if self.source is not None else 0}

    # ----- control
    def tap(self, wall: float | None = None) -> None:
        """A tap at wall-clock time ``wall`` (default now)."""
        now = time.monotonic()
        wall = now if wall is None else wall
        offset = self._offset if self._offset is not None else now - self.analyzer.time
        self.analyzer.tempo.tap(wall - offset)

    def follow(self) -> None:
        """Back to tracking the tempo from the sound (after taps)."""
        self.analyzer.tempo.follow()

    def set_mapping(self, mapping: AudioMapping) -> None:
        self.mapper.set_mapping(mapping)

    def save(self) -> Path:
        """Write the mapping in force to the mapping file (UsageError without one)."""
        if self.mapping_path is None:
            raise UsageError("no audio mapping file to save to; start with --audio-map FILE")
        save_mapping(self.mapping_path, self.mapper.mapping)
        log.info("audio mapping saved to %s", self.mapping_path)
        return self.mapping_path

    def _registry_changed(self, name: str, value: Any, source: str) -> None:
        if name == TAP_PARAM and value != self._tap_seen:
            self._tap_seen = value
            self.tap()

    # ----- the analysis thread
    def lookahead(self) -> float:
        """Seconds beat triggers fire early: the show's measured latency plus the input's."""
        now = time.monotonic()
        if now - self._lookahead_at >= LOOKAHEAD_EVERY_S:
            self._lookahead_at = now
            show = 0.0
            if self.latency is not None:
                try:
                    show = max(float(self.latency()), 0.0)
                except Exception:  # noqa: BLE001 - a latency source failing costs the lookahead only
                    log.debug("latency source failed", exc_info=True)
            self._lookahead = show + (self.source.latency if self.source is not None else 0.0)
        return self._lookahead

    def process(self, block: np.ndarray, arrived: float | None = None) -> Features:
        """Analyse one block and apply the mapping (the thread's step; tests call it directly)."""
        started = time.thread_time()
        f = self.analyzer.process(block)
        if arrived is not None:
            offset = arrived - f.time
            # the smallest offset seen is the one with the least queueing in it; it drifts slowly
            self._offset = offset if self._offset is None else min(offset, self._offset + 0.001)
        if self.link is not None:
            self.link.feed(self.analyzer.tempo, f)
        tempo = self.analyzer.tempo.state(f.time)
        self.mapper.apply(f, tempo, self.lookahead())
        self._tempo = tempo
        self._latest = f
        self.blocks += 1
        for listener in self._listeners:
            try:
                listener(f)
            except Exception:  # noqa: BLE001 - a broken meter must not stop the analysis
                log.exception("audio listener failed")
        self.cpu_seconds += time.thread_time() - started
        return f

    def _run(self) -> None:
        s = self.settings
        period = s.block / s.rate
        silence = np.zeros(s.block, np.float32)
        idle_since = time.monotonic()
        while not self._stop.is_set():
            item = self.source.queue.get(timeout=period * 2) if self.source is not None else None
            if item is None:
                if self.source is None and self._stop.wait(period):
                    break
                # no sound: analyse silence for the time that went by, so meters fall and maps rest
                now = time.monotonic()
                missing = min(int((now - idle_since) / period), 16)
                for _ in range(max(missing, 1 if self.source is None else 0)):
                    self._step(silence, now)
                if missing:
                    idle_since = now
                continue
            idle_since = time.monotonic()
            block, arrived = item
            self._step(block[: s.block], arrived)

    def _step(self, block: np.ndarray, arrived: float | None) -> None:
        try:
            self.process(block, arrived)
        except Exception as e:  # noqa: BLE001 - the analysis outlives any one bad block; each kind said once
            kind = f"{type(e).__name__}: {e}"
            if kind not in self._failures:
                self._failures.add(kind)
                log.exception("audio analysis of a block failed (said once; the analysis goes on)")
