"""Tempo and beat phase, online: from the onset envelope, from taps, or from Ableton Link.

**Tracked** (docs/architecture.md, *Sound*): the whole-spectrum flux is kept for the last 8 s,
one value per block. Every quarter second its autocorrelation (recent seconds weighted more,
so a tempo change is followed within a few seconds) is scored for every tempo in the range by
the mean of its values at 1 to 4 beat periods (a comb: a tempo whose bars also line up beats
its neighbours), times a broad preference for 130 BPM that settles the octave between a
tempo and its half (87 against 174) the way a listener would. The best tempo is refined on a
fine grid; a change of more than 3% must be found twice in a row before it is believed, a
smaller one is smoothed. The beat phase is the offset whose pulse train, at that period,
gathers the most flux over the last beats; a clock then runs from it between updates and is
pulled halfway to each new measurement, so beats come at an even pace rather than jumping.
``confidence`` is the comb's normalised score (0 for noise or silence, near 1 for a steady beat).

**Tapped**: two taps or more within 2 s of each other set the tempo from the median interval of
the last eight and put the beat on the taps; the first tap of a series is beat 0, a downbeat.
Tapped tempo holds (confidence 1) until :meth:`TempoTracker.follow` hands back to tracking.

**Link**: :meth:`TempoTracker.external` sets tempo and beat from Ableton Link each block.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

WINDOW_S = 8.0  # seconds of onset envelope kept
MIN_WINDOW_S = 2.0  # before this much, no estimate
UPDATE_S = 0.25  # seconds between estimates
RECENT_S = 3.0  # the envelope's weighting towards the present (time constant)
PREFERRED_BPM = 130.0
PREFERENCE_OCTAVES = 1.0  # width of the preference (log2 of the tempo)
TAP_GAP_S = 2.0  # a pause longer than this starts a new series of taps
TAPS_KEPT = 8
SILENCE_S = 1.5  # silent this long: the tracked tempo's confidence falls away
# The onset envelope peaks this long after a beat's sound starts (flux window and peak); the
# phase search reports beats this much earlier (measured on the generated drums, bench/audio.py).
ENVELOPE_DELAY_S = 0.012


@dataclass(frozen=True)
class TempoState:
    """Tempo at one moment: ``bpm`` (0 before any), ``phase`` 0..1 within the beat,
    ``confidence`` 0..1, ``beat_index`` (None before any), ``last_beat`` and ``next_beat``
    (seconds of input time), ``source`` (none, tracked, tap, link)."""

    bpm: float = 0.0
    phase: float = 0.0
    confidence: float = 0.0
    beat_index: int | None = None
    last_beat: float = -math.inf
    next_beat: float = math.inf
    period: float = 0.0
    source: str = "none"


class TempoTracker:
    """Online tempo and beat from one onset-envelope value per block (``rate`` values a second)."""

    def __init__(self, rate: float, min_bpm: float = 60.0, max_bpm: float = 200.0) -> None:
        self.rate = rate
        self.min_bpm, self.max_bpm = min_bpm, max_bpm
        self._size = int(WINDOW_S * rate)
        self._env = np.zeros(self._size, np.float64)
        self._filled = 0
        self._every = max(1, int(round(UPDATE_S * rate)))
        self._count = 0
        self._silent_for = 0.0
        self._fft = 1 << int(math.ceil(math.log2(2 * self._size)))
        self._grid = np.arange(min_bpm, max_bpm + 1e-9, 0.5)
        self._weights_cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._commands: list[tuple[str, float, float]] = []  # (kind, time, value) from other threads
        self._taps: deque[float] = deque(maxlen=TAPS_KEPT)
        self._series = 0  # taps in the current series
        self.source = "none"
        self.bpm = 0.0
        self.confidence = 0.0
        self._candidate: float | None = None
        # the beat clock
        self._anchor = 0.0  # input time of a beat
        self._anchor_index = 0
        self._period = 0.0  # seconds
        self._started = False

    # ----- from other threads
    def tap(self, when: float) -> None:
        """A tap at input time ``when`` (from OSC, MIDI, keys or the page)."""
        with self._lock:
            self._commands.append(("tap", when, 0.0))

    def follow(self) -> None:
        """Back to tracking the sound after taps (or Link)."""
        with self._lock:
            self._commands.append(("follow", 0.0, 0.0))

    def external(self, bpm: float, beat: float, when: float) -> None:
        """Tempo and beat position from Ableton Link at input time ``when``."""
        with self._lock:
            self._commands.append(("link", when, bpm))
            self._commands.append(("link_beat", when, beat))

    # ----- the analysis thread
    def push(self, flux: float, now: float, silent: bool) -> TempoState:
        """One block's onset-envelope value at input time ``now``; returns the tempo then."""
        if self._commands:
            with self._lock:
                commands, self._commands = self._commands, []
            self._apply(commands, now)
        self._env[:-1] = self._env[1:]
        self._env[-1] = flux
        self._filled = min(self._filled + 1, self._size)
        self._silent_for = self._silent_for + 1 / self.rate if silent else 0.0
        self._count += 1
        if self._count % self._every == 0 and self.source in ("none", "tracked"):
            self._estimate(now)
        return self.state(now)

    def state(self, now: float) -> TempoState:
        """The tempo at input time ``now`` (the beat clock run forward from its anchor)."""
        if not self._started or self._period <= 0:
            return TempoState(bpm=self.bpm, confidence=self.confidence, source=self.source)
        beats = (now - self._anchor) / self._period
        whole = math.floor(beats)
        last = self._anchor + whole * self._period
        return TempoState(bpm=self.bpm, phase=beats - whole, confidence=self.confidence,
                          beat_index=self._anchor_index + whole, last_beat=last, next_beat=last + self._period,
                          period=self._period, source=self.source)

    def _apply(self, commands: list[tuple[str, float, float]], now: float) -> None:
        for kind, when, value in commands:
            if kind == "tap":
                self._tap(when)
            elif kind == "follow":
                self._taps.clear()
                self._series = 0
                if self.source != "tracked":
                    self.source = "none"
                    self.confidence = 0.0
                    self._candidate = None
            elif kind == "link" and value > 0:
                self.source = "link"
                self.bpm = float(value)
                self.confidence = 1.0
                self._period = 60.0 / self.bpm
            elif kind == "link_beat" and self.source == "link":
                whole = math.floor(value)
                self._anchor = when - (value - whole) * self._period
                self._anchor_index = int(whole)
                self._started = True

    def _tap(self, when: float) -> None:
        if self._taps and (when - self._taps[-1] > TAP_GAP_S or when <= self._taps[-1]):
            self._taps.clear()
            self._series = 0
        self._taps.append(when)
        self._series += 1
        if len(self._taps) < 2:
            return
        intervals = np.diff(np.array(self._taps))
        period = float(np.median(intervals))
        self.source = "tap"
        self.bpm = 60.0 / period
        self.confidence = 1.0
        self._period = period
        self._anchor = when
        self._anchor_index = self._series - 1  # the first tap of the series is beat 0
        self._started = True

    def _estimate(self, now: float) -> None:
        n = self._filled
        if n < MIN_WINDOW_S * self.rate or self._silent_for > SILENCE_S:
            if self._silent_for > SILENCE_S:
                self.confidence *= 0.5  # the music stopped: no more beats to trust
                if self.confidence < 0.05:
                    self.confidence = 0.0
            return
        e = self._env[-n:]
        # emphasise the peaks: the envelope above its local mean, weighted towards the present
        kernel = max(3, int(0.3 * self.rate))
        local = np.convolve(e, np.ones(kernel) / kernel, mode="same")
        e = np.maximum(e - local, 0.0) * self._recent(n)
        spectrum = np.fft.rfft(e, self._fft)
        acf = np.fft.irfft(spectrum.real ** 2 + spectrum.imag ** 2, self._fft)[:n]
        if acf[0] <= 1e-12:
            self.confidence *= 0.5
            return
        acf = acf / acf[0]
        max_lag = 0.7 * n

        def score(bpms: np.ndarray) -> np.ndarray:
            lags = 60.0 * self.rate / bpms
            multiples = lags[:, None] * np.arange(1, 5)[None, :]
            valid = multiples <= max_lag
            values = np.interp(np.minimum(multiples, n - 1), np.arange(n), acf)
            comb = (values * valid).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
            return comb

        comb = score(self._grid)
        prior = np.exp(-0.5 * (np.log2(self._grid / PREFERRED_BPM) / PREFERENCE_OCTAVES) ** 2)
        best = float(self._grid[int(np.argmax(comb * prior))])
        fine = np.arange(max(self.min_bpm, best - 1.0), min(self.max_bpm, best + 1.0) + 1e-9, 0.05)
        fine_score = score(fine)
        i = int(np.argmax(fine_score))
        estimate = float(fine[i])
        confidence = float(np.clip(fine_score[i], 0.0, 1.0))
        self._believe(estimate, confidence, e, now)

    def _recent(self, n: int) -> np.ndarray:
        w = self._weights_cache.get(n)
        if w is None:
            w = np.exp(-(n - 1 - np.arange(n)) / (RECENT_S * self.rate))
            self._weights_cache = {n: w}
        return w

    def _believe(self, estimate: float, confidence: float, e: np.ndarray, now: float) -> None:
        """Take a new estimate into the tempo, with hysteresis, then place the beat."""
        if self.bpm <= 0 or self.source == "none":
            self.bpm = estimate
            self._candidate = None
        elif abs(estimate / self.bpm - 1) <= 0.03:
            self.bpm += 0.5 * (estimate - self.bpm)
            self._candidate = None
        elif self._candidate is not None and abs(estimate / self._candidate - 1) <= 0.02:
            self.bpm = estimate  # found twice in a row: the tempo changed
            self._candidate = None
        else:
            self._candidate = estimate
            return
        self.source = "tracked"
        self.confidence = confidence
        period = 60.0 / self.bpm
        last_beat = self._phase(e, period * self.rate, now)
        if not self._started:
            self._anchor, self._anchor_index, self._started = last_beat, 0, True
        else:
            predicted = self._anchor + round((last_beat - self._anchor) / self._period) * self._period
            index = self._anchor_index + round((predicted - self._anchor) / self._period)
            error = last_beat - predicted
            self._anchor, self._anchor_index = predicted + 0.5 * error, index
        self._period = period

    def _phase(self, e: np.ndarray, period: float, now: float) -> float:
        """Input time of the last beat: the offset whose pulse train gathers the most flux."""
        n = len(e)
        offsets = np.arange(int(period))
        k = np.arange(max(1, min(8, int((n - period) / period))))
        positions = (n - 1) - offsets[:, None] - k[None, :] * period
        values = np.interp(np.maximum(positions, 0), np.arange(n), e) * (0.85 ** k)[None, :]
        best = int(np.argmax(values.sum(axis=1)))
        return now - best / self.rate - ENVELOPE_DELAY_S
