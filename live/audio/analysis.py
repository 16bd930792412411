"""The analysis: levels, bands relative to their long-term average, per-band onsets, tempo.

Runs on blocks of at most 256 samples at 48 kHz (5.3 ms), in plain numpy, deterministic: the
same samples give the same features on every run, which is what makes ``render`` repeatable.
Per block (docs/architecture.md, *Sound*):

- **Level**: RMS and peak of the block; RMS goes through the attack/release follower.
- **Bands**: the power in each band from a 2048-sample Blackman-Harris spectrum every other
  block (its sidelobes are below -90 dB, so a 60 Hz tone stays in ``low``), divided by that band's long-term
  average (an exponential average over ``average_s``, a running mean until then, held while
  the band is below the gate), then the follower: 1.0 is "as loud as usual", MilkDrop's
  convention. Below the gate (-60 dBFS by default) a band reads 0.
- **Onsets**: spectral flux from a 1024-sample Hann spectrum. Per band, the rise of the
  magnitude over the band's recent loudest magnitude (so a snare's edge below 200 Hz is small
  beside the kicks that make that band); over the whole spectrum, the rise of the log
  magnitude, which hears a quiet hi-hat as well as a kick; ``onset`` is an onset of either. Each against an adaptive threshold:
  a running mean plus ``sensitivity`` running mean deviations, and at least 40% of the band's
  recent strongest onsets. An onset is the block where the flux crosses its threshold rising,
  so the detector looks no block ahead (a peak confirmed by the next block was as accurate and
  half as quick, bench/audio.py); two onsets closer than 60 ms are one.
- **Tempo** (:mod:`live.audio.tempo`) is fed the bands' rises, low bands weighted most (kick
  and snare carry the beat, hi-hats its subdivisions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from live.audio.features import PULSE_SECONDS, Features
from live.audio.tempo import TempoTracker
from live.errors import UsageError

RATE = 48000
MAX_BLOCK = 256  # samples: 5.3 ms at 48 kHz, the most a block may hold
LEVEL_WINDOW = 2048  # samples of the band spectrum (23 Hz bins at 48 kHz)
LEVEL_EVERY = 2  # blocks between two band spectra (10.7 ms at 48 kHz)
ONSET_WINDOW = 1024  # samples of the onset spectrum: short enough to place an onset within 10 ms
DEFAULT_BANDS = (("low", 20.0, 200.0), ("mid", 200.0, 2000.0), ("high", 2000.0, 16000.0))
STANDARD_NAMES = ("low", "mid", "high")
COMBINE_S = 0.06  # onsets closer than this are one
# A band's onset must raise its magnitude by at least this part of the band's recent loudest.
BAND_RISE = 0.1
# ... and reach this part of the band's recent strongest onsets (halving every PEAK_HALF_LIFE_S).
PEAK_RATIO = 0.4
PEAK_HALF_LIFE_S = 4.0
LEARN_BLOCKS = 16  # blocks (85 ms) a threshold learns (a running mean at first) before it may fire
FLUX_AVERAGE_S = 0.5  # time constant of the onset threshold's running mean and deviation
# An onset's flux crosses its threshold about this long after the sound starts (measured on the
# generated drums, bench/audio.py): the time an onset is reported at is this much earlier.
ONSET_DELAY_S = 0.008


@dataclass(frozen=True)
class AnalysisSettings:
    """How the sound is analysed. ``bands``: (name, low Hz, high Hz) each; ``attack_ms`` and
    ``release_ms``: the followers' rise and fall time constants; ``average_s``: the long-term
    average bands are measured against; ``gate_db``: below this (dBFS) a band is silent;
    ``sensitivity``: onset threshold in running mean deviations (lower finds more onsets)."""

    rate: int = RATE
    block: int = MAX_BLOCK
    bands: tuple[tuple[str, float, float], ...] = DEFAULT_BANDS
    attack_ms: float = 10.0
    release_ms: float = 300.0
    average_s: float = 8.0
    gate_db: float = -60.0
    sensitivity: float = 4.0
    min_bpm: float = 60.0
    max_bpm: float = 200.0

    def __post_init__(self) -> None:
        if not isinstance(self.rate, int) or not 8000 <= self.rate <= 192000:
            raise UsageError(f"audio sample rate {self.rate!r}: expected 8000..192000 Hz")
        if not isinstance(self.block, int) or not 16 <= self.block <= MAX_BLOCK:
            raise UsageError(f"audio block {self.block!r}: expected 16..{MAX_BLOCK} samples")
        if not self.bands or len(self.bands) > 16:
            raise UsageError("audio bands: expected 1..16 bands")
        names = [b[0] for b in self.bands]
        if len(set(names)) != len(names):
            raise UsageError(f"audio bands: names must differ, got {names}")
        nyquist = self.rate / 2
        for name, lo, hi in self.bands:
            if not (0 <= lo < hi <= nyquist):
                raise UsageError(f"audio band {name}: {lo:g}..{hi:g} Hz; expected low < high within 0..{nyquist:g} Hz")
        for key, value, lo, hi in (("attack_ms", self.attack_ms, 0.1, 5000), ("release_ms", self.release_ms, 0.1, 10000),
                                   ("average_s", self.average_s, 0.5, 600), ("gate_db", self.gate_db, -120, 0),
                                   ("sensitivity", self.sensitivity, 0.5, 20), ("min_bpm", self.min_bpm, 30, 300),
                                   ("max_bpm", self.max_bpm, 30, 300)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
                raise UsageError(f"audio {key} {value!r}: expected {lo:g}..{hi:g}")
        if self.max_bpm < 1.5 * self.min_bpm:
            raise UsageError(f"audio tempo range {self.min_bpm:g}..{self.max_bpm:g} BPM: the top must be at least "
                             "1.5 times the bottom")

    @staticmethod
    def bands_from_edges(edges: list[float]) -> tuple[tuple[str, float, float], ...]:
        """Bands from a list of edges in Hz: three bands are low, mid and high, others band1.. bandN."""
        if len(edges) < 2 or any(not isinstance(e, (int, float)) or isinstance(e, bool) for e in edges):
            raise UsageError(f"audio band edges {edges!r}: expected a rising list of at least two frequencies in Hz")
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise UsageError(f"audio band edges {edges!r}: each edge must be above the one before")
        n = len(edges) - 1
        names = STANDARD_NAMES if n == 3 else tuple(f"band{i}" for i in range(1, n + 1))
        return tuple((names[i], float(edges[i]), float(edges[i + 1])) for i in range(n))

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b[0] for b in self.bands)


def _coefficient(seconds: float, dt: float) -> float:
    """The one-pole smoothing step for a time constant ``seconds`` at a step of ``dt``."""
    return 1.0 - math.exp(-dt / max(seconds, 1e-6))


def _bins(freqs: np.ndarray, bands: tuple[tuple[str, float, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """For np.add.reduceat: start indices of each band's bins, and each band's bin count (≥ 1)."""
    starts, counts = [], []
    for _, lo, hi in bands:
        inside = np.flatnonzero((freqs >= lo) & (freqs < hi))
        if len(inside) == 0:  # a band narrower than a bin: the nearest bin stands for it
            inside = np.array([int(np.argmin(np.abs(freqs - (lo + hi) / 2)))])
        starts.append(inside[0])
        counts.append(len(inside))
    return np.array(starts), np.array(counts)


class Analyzer:
    """Feed :meth:`process` consecutive blocks of float32 mono samples; each returns the
    :class:`Features` at the end of that block. Not thread-safe: one analysis thread owns it."""

    def __init__(self, settings: AnalysisSettings | None = None) -> None:
        s = self.settings = settings or AnalysisSettings()
        self.dt = s.block / s.rate
        self.samples = 0
        self._buf = np.zeros(LEVEL_WINDOW, np.float32)
        bh = np.arange(LEVEL_WINDOW) / LEVEL_WINDOW  # 4-term Blackman-Harris: sidelobes below -92 dB
        self._level_window = (0.35875 - 0.48829 * np.cos(2 * np.pi * bh) + 0.14128 * np.cos(4 * np.pi * bh)
                              - 0.01168 * np.cos(6 * np.pi * bh)).astype(np.float32)
        self._power_norm = 2.0 / (LEVEL_WINDOW * float(np.sum(self._level_window.astype(np.float64) ** 2)))
        self._onset_window = np.hanning(ONSET_WINDOW).astype(np.float32)
        freqs_l = np.fft.rfftfreq(LEVEL_WINDOW, 1 / s.rate)
        freqs_o = np.fft.rfftfreq(ONSET_WINDOW, 1 / s.rate)
        self._level_starts, _ = _bins(freqs_l, s.bands)
        self._level_ends = np.array([int(np.flatnonzero(freqs_l < hi)[-1]) + 1 for _, _, hi in s.bands])
        self._level_ends = np.maximum(self._level_ends, self._level_starts + 1)
        self._onset_starts, self._onset_counts = _bins(freqs_o, s.bands)
        self._onset_ends = self._onset_starts + self._onset_counts
        n = len(s.bands)
        self.names = s.band_names
        self._gate = 10 ** (s.gate_db / 10)  # a power
        self._average = np.zeros(n)
        self._energy = np.zeros(n)
        self._blocks = 0
        self._level_sum = np.zeros(LEVEL_WINDOW // 2 + 2)  # cumulative sums, a leading 0 kept
        self._rise_sum = np.zeros(ONSET_WINDOW // 2 + 2)
        self._mag_sum = np.zeros(ONSET_WINDOW // 2 + 2)
        self._seen = np.zeros(n)  # seconds each band has been above the gate (running mean until average_s)
        self._env = np.zeros(n)
        self._level = 0.0
        self._attack = _coefficient(s.attack_ms / 1000, self.dt)
        self._release = _coefficient(s.release_ms / 1000, self.dt)
        self._avg_step = _coefficient(s.average_s, self.dt)
        # onsets: per band, then the whole spectrum as the last entry
        bins = ONSET_WINDOW // 2 + 1
        self._prev_log, self._prev_mag = np.zeros(bins), np.zeros(bins)
        self._rise, self._lin_rise = np.zeros(bins), np.zeros(bins)
        self._windowed = np.zeros(ONSET_WINDOW, np.float32)
        self._inv_bins = 1.0 / bins
        self._band_loudest = np.zeros(n)
        self._flux_mean = np.zeros(n + 1)
        self._flux_dev = np.zeros(n + 1)
        self._flux_prev = np.zeros(n + 1)  # the block before: an onset is a rising crossing
        self._last_onset = np.full(n + 1, -math.inf)
        self._flux_step = _coefficient(FLUX_AVERAGE_S, self.dt)
        self._floor = np.full(n + 1, BAND_RISE)
        self._floor[-1] = 1e-3
        self._flux_peak = np.zeros(n + 1)
        self._learned = np.zeros(n + 1)  # blocks each threshold has learnt from
        centres = np.array([math.sqrt(max(lo, 20.0) * hi) for _, lo, hi in s.bands])
        self._tempo_weights = 1.0 / (1.0 + np.maximum(0.0, np.log2(centres / 250.0)))
        self._peak_decay = 0.5 ** (self.dt / PEAK_HALF_LIFE_S)
        self._warm = int(ONSET_WINDOW / s.block) + 2  # blocks before the onset window is full
        self._onset_at = -math.inf
        self.tempo = TempoTracker(1.0 / self.dt, s.min_bpm, s.max_bpm)
        self._last = Features(bands=MappingProxyType(dict.fromkeys(self.names, 0.0)))

    @property
    def time(self) -> float:
        """Seconds of input analysed so far."""
        return self.samples / self.settings.rate

    @property
    def last(self) -> Features:
        """The features of the newest block."""
        return self._last

    def process(self, block: np.ndarray) -> Features:
        """Analyse one block (at most ``settings.block`` samples, float mono); returns its features."""
        s = self.settings
        x = np.asarray(block, np.float32).reshape(-1)
        n = len(x)
        if n == 0 or n > s.block:
            raise ValueError(f"a block holds 1..{s.block} samples, got {n}")
        energy2 = float(np.dot(x, x))
        if not math.isfinite(energy2):  # a broken driver's NaN must not poison the averages
            x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
            energy2 = float(np.dot(x, x))
        self.samples += n
        now = self.time
        buf = self._buf
        buf[:-n] = buf[n:]
        buf[-n:] = x

        # level: RMS and peak of this block, RMS followed
        rms = math.sqrt(energy2 / n)
        peak = max(float(x.max()), -float(x.min()))
        self._level += (rms - self._level) * (self._attack if rms > self._level else self._release)

        # bands relative to their long-term average, followed
        # (the 2048-sample spectrum every LEVEL_EVERY blocks: its window is 8 blocks long anyway)
        if self._blocks % LEVEL_EVERY == 0:
            spec = np.fft.rfft(buf * self._level_window)
            cumulative = self._level_sum
            np.cumsum(np.abs(spec) ** 2, out=cumulative[1:])
            self._energy = (cumulative[self._level_ends] - cumulative[self._level_starts]) * self._power_norm
        self._blocks += 1
        energy = self._energy
        loud = energy > self._gate
        self._seen[loud] += self.dt
        step = np.maximum(self._avg_step, self.dt / np.maximum(self._seen, self.dt))  # running mean at first
        self._average[loud] += (energy[loud] - self._average[loud]) * step[loud]
        relative = np.where(loud, energy / np.maximum(self._average, self._gate), 0.0)
        rising = relative > self._env
        self._env += (relative - self._env) * np.where(rising, self._attack, self._release)

        # onsets: spectral flux per band and overall, crossing its threshold in this block
        np.multiply(buf[-ONSET_WINDOW:], self._onset_window, out=self._windowed)
        mag = np.abs(np.fft.rfft(self._windowed))
        logmag = np.log1p(100.0 * mag)
        rise, lin_rise = self._rise, self._lin_rise  # the rises, in buffers kept from block to block
        np.subtract(logmag, self._prev_log, out=rise)
        np.maximum(rise, 0.0, out=rise)
        np.subtract(mag, self._prev_mag, out=lin_rise)
        np.maximum(lin_rise, 0.0, out=lin_rise)
        self._prev_log, self._prev_mag = logmag, mag
        csum, msum = self._rise_sum, self._mag_sum
        np.cumsum(lin_rise, out=csum[1:])
        np.cumsum(mag, out=msum[1:])
        band_mag = msum[self._onset_ends] - msum[self._onset_starts]
        # the band's recent loudest magnitude (falling by half every PEAK_HALF_LIFE_S)
        self._band_loudest = np.maximum(band_mag, self._band_loudest * self._peak_decay)
        flux = np.empty(len(self.names) + 1)
        # per band: the rise in magnitude over the band's recent loudest, so a small rise in a
        # band (a snare's edge below 200 Hz) is small beside the kicks that make that band
        usual = self._band_loudest
        flux[:-1] = np.where(usual > 0, (csum[self._onset_ends] - csum[self._onset_starts]) / np.maximum(usual, 1e-9), 0.0)
        # overall: the log-magnitude rise, which hears a quiet hi-hat as well as a kick
        flux[-1] = float(rise.sum()) * self._inv_bins
        # tempo: the bands' rises, the low ones weighted most (kick and snare carry the beat,
        # hi-hats its subdivisions)
        tempo_flux = float(np.dot(flux[:-1], self._tempo_weights))
        onset_names: tuple[str, ...] = ()
        any_onset = False
        if self.samples >= self._warm * s.block:
            # the block where the flux crosses its threshold, rising: no lookahead at all (a peak
            # confirmed by the next block, measured too, was as accurate and half as quick)
            candidate = flux
            threshold = np.maximum(self._flux_mean + s.sensitivity * self._flux_dev + self._floor,
                                   PEAK_RATIO * self._flux_peak)
            peak_time = now - ONSET_DELAY_S
            found = ((candidate > threshold) & (self._flux_prev <= threshold)
                     & (peak_time - self._last_onset > COMBINE_S) & (self._learned >= LEARN_BLOCKS))
            found[:-1] &= loud  # a band below the gate has no onsets, nor has an input below it
            found[-1] &= bool(loud.any())
            self._flux_peak *= self._peak_decay
            if found.any():
                self._flux_peak[found] = np.maximum(self._flux_peak[found], candidate[found])
                onset_names = tuple(name for name, f in zip(self.names, found[:-1]) if f)
                # any band's onset, or the whole spectrum's: one onset for one sound
                any_onset = peak_time - self._last_onset[-1] > COMBINE_S
                self._last_onset[found] = peak_time
                if any_onset:
                    self._last_onset[-1] = peak_time
            # the threshold learns from blocks that are not onsets, so a dense pattern keeps it low
            # (a running mean at first, so the threshold is right from the first blocks on)
            quiet = ~found
            step = np.maximum(self._flux_step, 1.0 / (self._learned + 1.0))[quiet]
            dev = np.abs(flux - self._flux_mean)
            self._flux_mean[quiet] += (flux[quiet] - self._flux_mean[quiet]) * step
            self._flux_dev[quiet] += (dev[quiet] - self._flux_dev[quiet]) * step
            self._learned[quiet] += 1
        self._flux_prev = flux
        if any_onset:
            self._onset_at = now - self.dt - ONSET_DELAY_S
        onset_pulse = max(0.0, 1.0 - (now - self._onset_at) / PULSE_SECONDS)

        silent = peak < 10 ** (s.gate_db / 20)
        tempo = self.tempo.push(tempo_flux, now, silent)
        beat_pulse = max(0.0, 1.0 - (now - tempo.last_beat) / PULSE_SECONDS) if tempo.beat_index is not None else 0.0
        self._last = Features(
            time=now, level=self._level, peak=peak,
            bands=MappingProxyType({name: float(v) for name, v in zip(self.names, self._env)}),
            onset=onset_pulse, onsets=onset_names + (("any",) if any_onset else ()),
            bpm=tempo.bpm, beat=beat_pulse, phase=tempo.phase, confidence=tempo.confidence,
            beat_index=tempo.beat_index, tempo_source=tempo.source, silent=silent,
        )  # fmt: skip
        return self._last

    def onset_times(self) -> np.ndarray:
        """When each detector last fired (seconds; -inf for never): the bands', then any band's."""
        return self._last_onset.copy()


def analyse(samples: np.ndarray, settings: AnalysisSettings | None = None) -> list[Features]:
    """Every block's features for a whole recording (tests, bench, render)."""
    analyzer = Analyzer(settings)
    b = analyzer.settings.block
    return [analyzer.process(samples[i:i + b]) for i in range(0, len(samples) - b + 1, b)]
