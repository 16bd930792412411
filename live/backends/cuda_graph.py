"""The few-step ascent captured as one CUDA graph, shared by the torch and TensorRT backends.

Eager launches cost ~8 ms a step whatever the size (docs/architecture.md, "Frame budget"); a replayed graph does not. The
image, step size, jitter and bounds live in static buffers that are overwritten before each
replay, so changing them never recaptures; the jitter draws from the device's default generator,
the one replay advances.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import Tensor

from live.backends import BackendStats
from live.ascent import ascent_steps

log = logging.getLogger(__name__)


@dataclass
class CapturedAscent:
    """A captured ``ascent_steps`` for one shape and step count; call it like the eager one."""

    graph: torch.cuda.CUDAGraph
    x: Tensor
    step: Tensor
    jitter: Tensor
    lo: Tensor
    hi: Tensor
    out: Tensor

    def __call__(self, x: Tensor, step: Tensor, jitter: int, lo: Tensor, hi: Tensor) -> Tensor:
        self.x.copy_(x)
        self.step.copy_(step)
        self.jitter.fill_(jitter)
        self.lo.copy_(lo)
        self.hi.copy_(hi)
        self.graph.replay()
        return self.out.clone()  # the static output is overwritten by the next replay


def capture_ascent(
    gradient: Callable[[Tensor], Tensor], shape: tuple[int, ...], steps: int, device: torch.device, warmup: int = 2
) -> CapturedAscent:
    """Capture ``steps`` jittered ascent steps of ``gradient`` for inputs of ``shape``.

    ``warmup`` eager runs on a side stream first: cuDNN autotuning, allocator pools and lazy
    initialisation (TensorRT's first enqueue) must happen outside the capture.
    """
    x = torch.zeros(shape, device=device)
    step = torch.zeros(1, 3, 1, 1, device=device)
    jitter = torch.zeros((), device=device)
    lo = torch.full((1, 3, 1, 1), -1.0, device=device)
    hi = torch.full((1, 3, 1, 1), 1.0, device=device)

    def run() -> Tensor:
        return ascent_steps(gradient, x, steps, step, jitter, lo, hi, None)

    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            run()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: the presenter keeps working on its own stream and thread while the dreamer
    # captures (docs/architecture.md, "Two paces"); only this thread's calls must be capture-safe.
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = run()
    return CapturedAscent(graph, x, step, jitter, lo, hi, out)


class GraphCache:
    """Captured ascents by key; a capture that fails is remembered as None (run eagerly), counted
    in ``stats.graph_failures`` (the backend's describe() says so) and logged once, with its
    reason: capture support varies by driver, and eager always works."""

    def __init__(self, device: torch.device, stats: BackendStats, what: str) -> None:
        self.device, self.stats, self.what = device, stats, what
        self._graphs: dict[Hashable, CapturedAscent | None] = {}
        self._failure_logged = False

    def get(self, key: Hashable, capture: Callable[[], CapturedAscent]) -> CapturedAscent | None:
        if key in self._graphs:
            return self._graphs[key]
        try:
            captured: CapturedAscent | None = capture()
            self.stats.graph_captures += 1
            log.info("captured a CUDA graph of %s for %s", self.what, key)
        except Exception as e:  # noqa: BLE001 - see the class docstring
            captured = None
            self.stats.graph_failures += 1
            if not self._failure_logged:
                log.warning("CUDA graph capture of %s failed (%s: %s); running step by step, which is slower",
                            self.what, type(e).__name__, e)
                self._failure_logged = True
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # let the aborted capture's work drain
        self._graphs[key] = captured
        return captured
