"""Backend-independent DeepDream: octaves, jitter, normalised gradient ascent, clamping.

Per octave (small to large, ``octave_scale`` apart) the image is nudged ``steps`` times::

    roll by a random shift (jitter) → g = backend.gradient(x) → x += step · g / mean|g|
    → unroll → clamp to the model's valid pixel range

Detail found at one octave is carried up to the next. Step sizes are in 8-bit grey levels per
step, so a setting looks the same whatever the model's input normalisation.

A ``checkpoint`` callable is called after every step (after every octave where the backend runs
its steps as one captured CUDA graph, which is short): the live loop marks progress there, and
raises :class:`DreamCancelled` from it to abandon a long frame when the show is asked to stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from live.backends import Backend
from live.errors import UsageError
from live.model.googlenet import InputSpace
from live.objectives import Objective

MIN_OCTAVE_SIDE = 32  # GoogLeNet's ceil-mode pools reject inputs much smaller than this


class DreamCancelled(Exception):
    """Raised by a ``checkpoint`` to abandon the dream between two steps (the show is stopping)."""


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
        checkpoint: Callable[[], None] | None = None,
    ) -> Tensor:
        """Dream on ``x`` (N, 3, H, W, model space); returns the same shape, clamped to valid pixels.

        Inputs whose size the backend cannot take are reflect-padded and cropped back.
        ``progress(n)`` is called after every ``n`` finished steps. ``checkpoint()`` is called
        between steps (between octaves on a backend that fuses its steps); whatever it raises
        (:class:`DreamCancelled`) ends the dream there.
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
            if progress is None and (checkpoint is None or self.backend.fuses_steps):
                y = self.backend.ascend(y, objective, settings.steps, step, settings.jitter, lo, hi, self.generator)
                if checkpoint is not None:
                    checkpoint()
            else:  # one step at a time: the same jitter draws, with a look-in after each
                for _ in range(settings.steps):
                    y = self.backend.ascend(y, objective, 1, step, settings.jitter, lo, hi, self.generator)
                    if progress is not None:
                        progress(1)
                    if checkpoint is not None:
                        checkpoint()
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
