"""What the analysis tells the show about the sound: one frozen record per analysis block.

The names are the read-only nodes under ``/dream/audio/`` (OSC, OSCQuery, the web page's
meters) and the ``feature`` a mapping follows (docs/architecture.md, *Sound*).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# name -> (what it means, the range a mapping reads by default: in_min, in_max)
FEATURES: dict[str, tuple[str, tuple[float, float]]] = {
    "level": ("loudness: RMS of the input, 0..1 of full scale, with the attack/release follower", (0.0, 0.5)),
    "low": ("low band energy relative to its long-term average (1 = normal), followed", (0.0, 2.0)),
    "mid": ("mid band energy relative to its long-term average (1 = normal), followed", (0.0, 2.0)),
    "high": ("high band energy relative to its long-term average (1 = normal), followed", (0.0, 2.0)),
    "onset": ("1 at an onset in any band, falling to 0 over 100 ms", (0.0, 1.0)),
    "bpm": ("tempo in beats per minute (tracked, tapped or from Ableton Link)", (60.0, 180.0)),
    "beat": ("1 on the beat, falling to 0 over 100 ms", (0.0, 1.0)),
    "phase": ("position within the beat, 0 at the beat rising to 1 just before the next", (0.0, 1.0)),
    "confidence": ("how sure the tempo is, 0..1 (1 when tapped or from Link)", (0.0, 1.0)),
}
NODE_FEATURES = tuple(FEATURES)  # the nodes under /dream/audio/, in this order
PULSE_SECONDS = 0.1  # how long the onset and beat pulses take to fall from 1 to 0


@dataclass(frozen=True)
class Features:
    """The sound at the end of one analysis block (``time``: seconds since the input started).

    ``bands`` holds every band's followed relative level by name (``low``, ``mid``, ``high`` by
    default, or the names of the site's own band edges); ``onsets`` names the bands with an
    onset in this block. ``beat_index`` counts beats since the tempo was found or tapped (the
    first tap is beat 0), None while there is no tempo.
    """

    time: float = 0.0
    level: float = 0.0
    peak: float = 0.0
    bands: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    onset: float = 0.0
    onsets: tuple[str, ...] = ()
    bpm: float = 0.0
    beat: float = 0.0
    phase: float = 0.0
    confidence: float = 0.0
    beat_index: int | None = None
    tempo_source: str = "none"  # none | tracked | tap | link
    silent: bool = True

    def value(self, name: str) -> float:
        """A feature by its node name (a band by its own name); KeyError for an unknown one."""
        if name in self.bands:
            return float(self.bands[name])
        if name in ("level", "peak", "onset", "bpm", "beat", "phase", "confidence"):
            return float(getattr(self, name))
        if name.startswith("onset.") and name[6:] in self.bands:
            return 1.0 if name[6:] in self.onsets else 0.0
        raise KeyError(name)

    def values(self) -> dict[str, float]:
        """Every node's value: the nine of ``/dream/audio/`` plus any other band."""
        out = {"level": self.level}
        out.update({name: float(v) for name, v in self.bands.items()})
        for name in ("onset", "bpm", "beat", "phase", "confidence"):
            out[name] = float(getattr(self, name))
        for name in ("low", "mid", "high"):
            out.setdefault(name, 0.0)  # custom bands: the standard nodes still answer
        return out

    def as_json(self) -> dict[str, Any]:
        """For the web page: values, peak, onset bands, beat count and the tempo's source."""
        return {"values": {k: round(v, 4) for k, v in self.values().items()}, "peak": round(self.peak, 4),
                "onsets": list(self.onsets), "beat_index": self.beat_index, "tempo_source": self.tempo_source,
                "silent": self.silent}
