"""The gradient-ascent steps every backend shares: jitter, normalised step, clamp.

This module sits below both :mod:`live.dreamer` (which runs octaves of it) and
:mod:`live.backends` (which run it, or capture it as one CUDA graph), so neither imports the
other. Only torch ops on device tensors: a backend can capture the whole loop as a graph
(docs/architecture.md, "Backends").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

EPS = 1e-8  # keeps an all-zero gradient (an all-zero objective) from dividing by zero


def roll2d(x: Tensor, shift: Tensor) -> Tensor:
    """``torch.roll`` over H and W by a device tensor ``shift = (dy, dx)``.

    Written as index gathers so the shift never leaves the device: no host sync, and the random
    shift changes on every replay of a captured CUDA graph.
    """
    h, w = x.shape[-2:]
    iy = torch.remainder(torch.arange(h, device=x.device) - shift[0], h)
    ix = torch.remainder(torch.arange(w, device=x.device) - shift[1], w)
    return x.index_select(-2, iy).index_select(-1, ix)


def jitter_shift(jitter: Tensor | int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """A uniform random (dy, dx) in [-jitter, jitter], drawn on ``device`` unless a generator lives elsewhere.

    Never waits for the device: a draw from a host generator goes up through pinned memory
    without blocking, and an int ``jitter`` stays a Python number (a tensor made from it would be
    a blocking copy behind all queued GPU work, once per step).
    """
    if generator is not None and generator.device != device:
        r = torch.rand(2, generator=generator)
        if device.type == "cuda":
            r = r.pin_memory()
        r = r.to(device, non_blocking=True)
    else:
        r = torch.rand(2, generator=generator, device=device)
    return (torch.floor(r * (2 * jitter + 1)) - jitter).long()


def ascent_steps(
    gradient: Callable[[Tensor], Tensor],
    x: Tensor,
    steps: int,
    step: Tensor,
    jitter: Tensor | int,
    lo: Tensor,
    hi: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``steps`` jittered, normalised gradient-ascent steps; the math every backend shares.

    Only torch ops on device tensors, so a backend can capture the whole loop as one CUDA graph.
    ``step``, ``lo`` and ``hi`` are per-channel (1, 3, 1, 1) tensors in model units.
    """
    roll = isinstance(jitter, Tensor) or jitter > 0
    for _ in range(steps):
        if roll:
            shift = jitter_shift(jitter, generator, x.device)
            x = roll2d(x, shift)
        g = gradient(x)
        x = x + step * g / (g.abs().mean() + EPS)
        if roll:
            x = roll2d(x, -shift)
        x = torch.maximum(torch.minimum(x, hi), lo)
    return x
