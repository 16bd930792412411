"""Where the time goes, per pace: seconds per stage, frames, latency and the dream's age.

The presenter counts shown frames (stages ``PRESENT_STAGES``), the dreamer counts dreams
(``DREAM_STAGES``); each has its own :class:`StageClock` (docs/architecture.md, "Two paces").
``totals`` is the host's clock around each stage (on CUDA: the time to queue the GPU work, and in
the dreamer's ``dream`` and the presenter's ``download`` the one wait for it); ``gpu`` is the
GPU's own time per stage from CUDA events (:mod:`live.gpu_timing`), empty off CUDA.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

# The presenter: waiting for the camera, carrying the dream onto the frame (flow, check, warp),
# composing it on the full-size camera, downloading it, sending it out.
PRESENT_STAGES = ("capture", "carry", "compose", "download", "output")
# The dreamer: feedback flow, upload, the dream itself.
DREAM_STAGES = ("flow", "upload", "dream")
STAGES = ("capture", "flow", "upload", "dream", "carry", "compose", "download", "output")
RECENT = 2048  # latencies kept for the percentiles


@dataclass
class StageClock:
    """Seconds spent per stage, frames (or dreams) counted, capture-to-output latency and the
    age of the dream each frame carried. For the status line and the end-of-run report."""

    stages: tuple[str, ...] = PRESENT_STAGES
    totals: dict[str, float] = field(default_factory=dict)
    frames: int = 0
    latency: float = 0.0  # summed capture-to-output seconds
    aged: int = 0  # frames that carried a dream
    age: float = 0.0  # summed dream age (s) over those frames
    started: float = field(default_factory=time.monotonic)
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    gpu: dict[str, float] = field(default_factory=dict)  # GPU seconds per stage (CUDA events)
    gpu_frames: int = 0  # frames (or dreams) those were measured over

    def add_gpu(self, seconds: dict[str, float]) -> None:
        """One frame's (or dream's) GPU seconds per stage."""
        for stage, t in seconds.items():
            self.gpu[stage] = self.gpu.get(stage, 0.0) + t
        self.gpu_frames += 1

    def gpu_breakdown(self, unit: str = "frame") -> str:
        """``"carry 0.1 compose 0.3 download 0.1 ms/frame"`` of GPU time, or "" off CUDA."""
        if not self.gpu_frames:
            return ""
        return " ".join(f"{s} {1e3 * t / self.gpu_frames:.1f}" for s, t in self.gpu.items()) + f" ms/{unit}"

    def __post_init__(self) -> None:
        for stage in self.stages:
            self.totals.setdefault(stage, 0.0)

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] = self.totals.get(stage, 0.0) + seconds

    def count(self, latency: float | None = None, age: float | None = None) -> None:
        """One more frame out (or dream done), ``latency`` s after its capture, carrying a dream
        ``age`` s old."""
        self.frames += 1
        if latency is not None:
            self.latency += latency
            self.recent.append(latency)
        if age is not None:
            self.aged += 1
            self.age += age

    def per_frame(self, unit: str = "frame") -> str:
        n = max(self.frames, 1)
        return " ".join(f"{s} {1e3 * t / n:.1f}" for s, t in self.totals.items()) + f" ms/{unit}"

    def breakdown(self) -> str:
        return self.per_frame()

    def fps(self) -> float:
        return self.frames / max(time.monotonic() - self.started, 1e-9)

    def mean_latency_ms(self) -> float:
        return 1e3 * self.latency / max(self.frames, 1)

    def mean_age_ms(self) -> float | None:
        """The mean age of the dream on the frames that carried one (None: none did)."""
        return 1e3 * self.age / self.aged if self.aged else None

    def latency_percentile_ms(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the recent latencies, in ms (nan before any frame)."""
        if not self.recent:
            return math.nan
        ordered = sorted(self.recent)
        return 1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def dream_share(self) -> float:
        """Fraction of the measured time spent in the dream step."""
        total = sum(self.totals.values())
        return self.totals.get("dream", 0.0) / total if total else 0.0
