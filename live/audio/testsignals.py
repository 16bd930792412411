"""Generated sounds with known answers, for rehearsal without music, the tests and ``bench/audio.py``.

A drum pattern (kick, snare, hi-hat) at a given tempo, with noise, returns its samples and
the exact time of every hit, so an onset detector and a tempo tracker can be scored against
the truth. The instruments are built to sit in the default bands: the kick's energy below
200 Hz, the snare's between 200 Hz and 2 kHz, the hat's above 5 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 48000


@dataclass(frozen=True)
class Pattern:
    """Samples (float32 mono at ``rate``) and the truth: hit times per instrument, beat times."""

    samples: np.ndarray
    rate: int
    hits: dict[str, np.ndarray]  # instrument -> seconds
    beats: np.ndarray  # seconds of every quarter note
    bpm_at: np.ndarray  # the tempo at each beat

    def onsets(self, merge: float = 0.03) -> np.ndarray:
        """Every hit of any instrument, hits closer than ``merge`` seconds counted once."""
        times = np.sort(np.concatenate(list(self.hits.values())))
        kept: list[float] = []
        for t in times:
            if not kept or t - kept[-1] > merge:
                kept.append(float(t))
        return np.array(kept)


def _kick(rate: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.25 * rate)
    t = np.arange(n) / rate
    freq = 45 + 90 * np.exp(-t / 0.03)  # the pitch drop of a kick drum
    phase = 2 * np.pi * np.cumsum(freq) / rate
    return (np.sin(phase) * np.exp(-t / 0.07)).astype(np.float32)


def _band_noise(n: int, rate: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(f < lo) | (f > hi)] = 0
    out = np.fft.irfft(spectrum, n)
    return out / (np.abs(out).max() + 1e-9)


def _snare(rate: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.18 * rate)
    t = np.arange(n) / rate
    body = np.sin(2 * np.pi * 330 * t) * np.exp(-t / 0.04)
    noise = _band_noise(n, rate, 400, 1900, rng) * np.exp(-t / 0.05)
    return (0.5 * body + 0.7 * noise).astype(np.float32)


def _hat(rate: int, rng: np.random.Generator) -> np.ndarray:
    n = int(0.06 * rate)
    t = np.arange(n) / rate
    return (0.35 * _band_noise(n, rate, 6000, 16000, rng) * np.exp(-t / 0.012)).astype(np.float32)


def drum_pattern(bpm: float | list[tuple[float, float]], seconds: float, *, noise_db: float = -30.0,
                 rate: int = RATE, seed: int = 0, lead_in: float = 0.0) -> Pattern:
    """Kick on beats 1 and 3, snare on 2 and 4, hi-hat on every eighth note, for ``seconds``.

    ``bpm`` is one tempo or a list of ``(from_second, bpm)`` steps (a tempo change). White noise
    at ``noise_db`` below full scale runs throughout (``None``-like ``-inf`` for none);
    ``lead_in`` seconds of that noise alone come first.
    """
    rng = np.random.default_rng(seed)
    steps = [(0.0, float(bpm))] if isinstance(bpm, (int, float)) else [(float(a), float(b)) for a, b in bpm]
    total = int((seconds + lead_in) * rate)
    out = np.zeros(total + rate, np.float32)
    kick, snare, hat = _kick(rate, rng), _snare(rate, rng), _hat(rate, rng)
    hits: dict[str, list[float]] = {"kick": [], "snare": [], "hat": []}
    beats, tempos = [], []
    t, beat = lead_in, 0
    while t < seconds + lead_in:
        tempo = [b for a, b in steps if a <= t - lead_in][-1]
        period = 60.0 / tempo
        beats.append(t)
        tempos.append(tempo)
        hits["kick" if beat % 2 == 0 else "snare"].append(t)
        hits["hat"] += [t, t + period / 2]
        beat += 1
        t += period
    for name, sound, gain in (("kick", kick, 0.8), ("snare", snare, 0.6), ("hat", hat, 1.0)):
        for when in hits[name]:
            i = int(round(when * rate))
            if i >= total:
                continue
            end = min(i + len(sound), len(out))
            out[i:end] += gain * sound[: end - i]
    out = out[:total]
    if np.isfinite(noise_db):
        out += (10 ** (noise_db / 20) * rng.standard_normal(total)).astype(np.float32)
    limit = np.float32(0.99)
    np.clip(out, -limit, limit, out=out)
    return Pattern(out, rate, {k: np.array([h for h in v if h < seconds + lead_in]) for k, v in hits.items()},
                   np.array(beats), np.array(tempos))


def tone(freq: float, seconds: float, *, amplitude: float = 0.5, rate: int = RATE) -> np.ndarray:
    """A sine tone, float32 mono."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, db: float = -40.0, *, rate: int = RATE, seed: int = 1) -> np.ndarray:
    """White noise at ``db`` below full scale (RMS), float32 mono."""
    rng = np.random.default_rng(seed)
    return (10 ** (db / 20) * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def f_measure(detected: np.ndarray, truth: np.ndarray, tolerance: float = 0.03) -> tuple[float, float, float]:
    """(F, precision, recall) of detected onset times against the truth, each truth matched at
    most once, within ``tolerance`` seconds (the MIREX rule)."""
    detected, truth = np.sort(np.asarray(detected, float)), np.sort(np.asarray(truth, float))
    used = np.zeros(len(truth), bool)
    hits = 0
    for d in detected:
        if len(truth) == 0:
            break
        i = int(np.searchsorted(truth, d))
        best, best_err = -1, tolerance
        for j in (i - 1, i):
            if 0 <= j < len(truth) and not used[j] and abs(truth[j] - d) <= best_err:
                best, best_err = j, abs(truth[j] - d)
        if best >= 0:
            used[best] = True
            hits += 1
    precision = hits / len(detected) if len(detected) else 0.0
    recall = hits / len(truth) if len(truth) else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f, precision, recall
