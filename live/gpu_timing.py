"""GPU time per stage of each pace, from CUDA events (docs/architecture.md, "Two paces" and
"No host synchronisation on the frame path").

On CUDA the host's clock around a stage measures how long the host took to *queue* its work:
the kernels run later, and their time lands wherever the host next waits. Events recorded on
the pace's own stream between its stages measure what each stage cost the GPU. They are read
only after the pace's one wait (the dreamer's hand-off, the presenter's download) has returned,
when every one of them has completed, so reading them never waits. Off CUDA nothing is
recorded: there the host's clock is the stage's cost.

- The dreamer, per dream, on its stream: ``upload`` (the camera's copy, resize and conversion)
  and ``dream`` (feedback and the ascent, up to the finite check).
- The presenter, per frame out, on its stream: ``carry`` (the carried dream's flow field up and
  the warp), ``compose`` (the camera up, the residual upsampled onto it) and ``download`` (the
  shown frame's copy to pinned host memory); the last two boundaries are the compositor's own
  events (:class:`live.compose.Composed`).
"""

from __future__ import annotations

from typing import Any

import torch

DREAM_GPU_STAGES = ("upload", "dream")
PRESENT_GPU_STAGES = ("carry", "compose", "download")
GPU_STAGES = DREAM_GPU_STAGES + PRESENT_GPU_STAGES  # every GPU column, for gpu-check's table


class FrameMarks:
    """The events a pace records itself for one frame or dream, in order, by :meth:`mark`; a
    no-op off CUDA."""

    def __init__(self, events: list[Any] | None) -> None:
        self.events = events
        self.recorded = 0

    def mark(self) -> None:
        """Record the next boundary on the current stream (never waits)."""
        if self.events is not None and self.recorded < len(self.events):
            self.events[self.recorded].record()
            self.recorded += 1


class GpuStageTimer:
    """Hands out :class:`FrameMarks` and turns a finished frame's events into seconds per stage.

    ``stages``: the pace's GPU stages, in stream order; ``own``: how many of their boundaries the
    pace records itself (the first is recorded by :meth:`start`); the remaining boundaries are
    events it is handed (the compositor's) and passes to :meth:`read`. Event sets are reused in
    turn (``ring`` of them): a set is read when its frame is done, long before it comes round again.
    """

    def __init__(self, device: torch.device, stages: tuple[str, ...], own: int | None = None, ring: int = 3) -> None:
        self.enabled = device.type == "cuda"
        self.stages = stages
        self.own = len(stages) + 1 if own is None else own
        self._sets = ([[torch.cuda.Event(enable_timing=True) for _ in range(self.own)] for _ in range(ring)]
                      if self.enabled else [])
        self._next = 0

    def start(self) -> FrameMarks:
        """A new frame or dream: its first boundary is recorded now."""
        if not self.enabled:
            return FrameMarks(None)
        events = self._sets[self._next]
        self._next = (self._next + 1) % len(self._sets)
        marks = FrameMarks(events)
        marks.mark()
        return marks

    def read(self, marks: FrameMarks | None, *more: Any) -> dict[str, float] | None:
        """Seconds per GPU stage of a frame whose wait has returned (so all its events have
        completed), or None when nothing was recorded (off CUDA, or a frame cut short). ``more``:
        the boundaries after the pace's own, in order."""
        if marks is None or marks.events is None or marks.recorded < self.own or any(m is None for m in more):
            return None
        bounds = (*marks.events, *more)
        if len(bounds) != len(self.stages) + 1:
            return None
        return {stage: a.elapsed_time(b) / 1e3 for stage, a, b in zip(self.stages, bounds, bounds[1:])}
