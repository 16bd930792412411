"""GPU time per stage of the live loop, from CUDA events (docs/architecture.md, "One frame").

On CUDA the host's clock around a stage measures how long the host took to *queue* its work:
the dream's kernels run later, and their time lands wherever the host next waits (the
download). Events recorded on the stream between the stages measure what each stage cost the
GPU. They are read after the frame's download has returned, when every one of them has
completed, so reading them never waits. Off CUDA nothing is recorded: there the host's clock is
the stage's cost.

Per frame, in stream order: ``upload`` (the camera's copy, resize and conversion), ``dream``
(feedback and the ascent), ``compose`` (the residual upsampled onto the full-size camera) and
``download`` (the shown frame's copy to pinned host memory); the last two boundaries are the
compositor's own events (:class:`live.compose.Composed`).
"""

from __future__ import annotations

from typing import Any

import torch

GPU_STAGES = ("upload", "dream", "compose", "download")


class FrameMarks:
    """The events of one frame's first stages, recorded in order by :meth:`mark`; a no-op off CUDA."""

    def __init__(self, events: list[Any] | None) -> None:
        self.events = events
        self.recorded = 0

    def mark(self) -> None:
        """Record the next boundary on the current stream (never waits)."""
        if self.events is not None and self.recorded < len(self.events):
            self.events[self.recorded].record()
            self.recorded += 1


class GpuStageTimer:
    """Hands out :class:`FrameMarks` and turns a downloaded frame's events into seconds per stage.

    Event sets are reused in turn (``ring`` of them): a frame's set is read when the frame is
    downloaded, at most one frame later, long before the set comes round again.
    """

    def __init__(self, device: torch.device, ring: int = 3) -> None:
        self.enabled = device.type == "cuda"
        self._sets = ([[torch.cuda.Event(enable_timing=True) for _ in range(3)] for _ in range(ring)]
                      if self.enabled else [])
        self._next = 0

    def start(self) -> FrameMarks:
        """A new frame: its first boundary (before the upload) is recorded now."""
        if not self.enabled:
            return FrameMarks(None)
        events = self._sets[self._next]
        self._next = (self._next + 1) % len(self._sets)
        marks = FrameMarks(events)
        marks.mark()
        return marks

    def read(self, marks: FrameMarks | None, composed: Any, ready: Any) -> dict[str, float] | None:
        """Seconds per GPU stage of a frame whose download has returned (so all its events have
        completed), or None when nothing was recorded (off CUDA, or a frame cut short)."""
        if marks is None or marks.events is None or marks.recorded < 3 or composed is None or ready is None:
            return None
        start, uploaded, dreamed = marks.events
        bounds = (start, uploaded, dreamed, composed, ready)
        return {stage: a.elapsed_time(b) / 1e3 for stage, a, b in zip(GPU_STAGES, bounds, bounds[1:])}
