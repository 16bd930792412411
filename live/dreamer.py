"""Backend-independent DeepDream: octaves, jitter, normalised gradient ascent, clamping.

Per octave (small to large, ``octave_scale`` apart) the image is nudged ``steps`` times::

    roll by a random shift (jitter) → g = backend.gradient(x) → x += step · g / mean|g|
    → unroll → clamp to the model's valid pixel range

Detail found at one octave is carried up to the next. Step sizes are in 8-bit grey levels per
step, so a setting looks the same whatever the model's input normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from live.errors import UsageError
from live.model.googlenet import InputSpace
from live.objectives import Objective

if TYPE_CHECKING:
    from live.backends import Backend

EPS = 1e-8  # keeps an all-zero gradient (an all-zero objective) from dividing by zero
MIN_OCTAVE_SIDE = 32  # GoogLeNet's ceil-mode pools reject inputs much smaller than this


@dataclass(frozen=True)
class DreamSettings:
    """How hard and at what scales to dream. Defaults are the classic 2015 still-image look."""

    steps: int = 10
    step_size: float = 1.5  # grey levels (of 255) per step, on average over the image
    octaves: int = 4
    octave_scale: float = 1.4
    jitter: int = 32  # pixels; random roll per step, hides the network's stride grid

    def __post_init__(self) -> None:
        checks = [
            ("steps", self.steps, 0, 1000),
            ("step_size", self.step_size, 0.0, 255.0),
            ("octaves", self.octaves, 1, 12),
            ("octave_scale", self.octave_scale, 1.0, 4.0),
            ("jitter", self.jitter, 0, 512),
        ]
        for name, value, lo, hi in checks:
            if not lo <= value <= hi:
                raise UsageError(f"{name} must be between {lo} and {hi}, got {value}")


def octave_shapes(height: int, width: int, octaves: int, scale: float, multiple: int = 1) -> list[tuple[int, int]]:
    """Octave sizes, smallest first, ending at (height, width). Octaves below 32 px are skipped."""
    shapes = []
    for k in reversed(range(octaves)):
        f = scale**k
        h = max(multiple, round(height / f / multiple) * multiple)
        w = max(multiple, round(width / f / multiple) * multiple)
        if k == 0:
            h, w = height, width
        elif min(h, w) < MIN_OCTAVE_SIDE:
            continue
        if not shapes or shapes[-1] != (h, w):
            shapes.append((h, w))
    return shapes


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
    """A uniform random (dy, dx) in [-jitter, jitter], drawn on ``device`` unless a generator lives elsewhere."""
    if generator is not None and generator.device != device:
        r = torch.rand(2, generator=generator).to(device)
    else:
        r = torch.rand(2, generator=generator, device=device)
    j = torch.as_tensor(jitter, dtype=torch.float32, device=device)
    return (torch.floor(r * (2 * j + 1)) - j).long()


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


def resize(x: Tensor, shape: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == shape:
        return x
    shrinking = shape[0] < x.shape[-2]
    return F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=shrinking)


class Dreamer:
    """Runs octaves of gradient ascent on a backend. Holds no network, only the loop around it."""

    def __init__(self, backend: Backend, space: InputSpace, seed: int | None = None) -> None:
        self.backend = backend
        self.space = space
        # Seeds the jitter of eager backends. A captured CUDA graph draws from the device's default
        # generator instead (the only one graph replay advances), so GPU dreams are not repeatable.
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self._bounds: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor, Tensor]] = {}

    def total_steps(self, height: int, width: int, settings: DreamSettings) -> int:
        """How many gradient steps :meth:`dream` will take for this size (for progress bars)."""
        m = self.backend.size_multiple
        shapes = octave_shapes(_ceil_to(height, m), _ceil_to(width, m), settings.octaves, settings.octave_scale, m)
        return len(shapes) * settings.steps

    def dream(
        self,
        x: Tensor,
        objective: Objective,
        settings: DreamSettings,
        progress: Callable[[int], None] | None = None,
    ) -> Tensor:
        """Dream on ``x`` (N, 3, H, W, model space); returns the same shape, clamped to valid pixels.

        Inputs whose size the backend cannot take are reflect-padded and cropped back.
        ``progress(n)`` is called after every ``n`` finished steps.
        """
        h, w = x.shape[-2:]
        m = self.backend.size_multiple
        ph, pw = _ceil_to(h, m) - h, _ceil_to(w, m) - w
        base = F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x
        lo, hi, level = self._space_tensors(base)
        step = level * settings.step_size
        shapes = octave_shapes(base.shape[-2], base.shape[-1], settings.octaves, settings.octave_scale, m)

        detail = torch.zeros_like(resize(base, shapes[0]))
        for shape in shapes:
            octave_base = resize(base, shape)
            detail = resize(detail, shape)
            y = octave_base + detail
            if progress is None:
                y = self.backend.ascend(y, objective, settings.steps, step, settings.jitter, lo, hi, self.generator)
            else:
                for _ in range(settings.steps):
                    y = self.backend.ascend(y, objective, 1, step, settings.jitter, lo, hi, self.generator)
                    progress(1)
            detail = y - octave_base
        out = torch.maximum(torch.minimum(base + detail, hi), lo)
        return out[..., :h, :w]

    def _space_tensors(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Made once per device and dtype, not per frame: each would be a host-to-device copy.
        key = (like.device, like.dtype)
        if key not in self._bounds:
            lo, hi = self.space.bounds(like)
            self._bounds[key] = (lo, hi, self.space.per_grey_level(like))
        return self._bounds[key]


def _ceil_to(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)
