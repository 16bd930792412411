"""The largest dream a device is asked for, so no setting can make one frame last a minute.

A frame's time grows with the dream's pixels (every convolution is linear in them). Past some
size one frame takes longer than anyone watching waits, the show stops answering its controls
between frames, and a watchdog cannot tell slow from stuck. So each device has a largest dream
size, a pixel count (width × height after rounding to multiples of 32): the size at which one
frame of the reference setting (``REFERENCE_STEPS`` steps, one octave) takes ``FRAME_SECONDS``.

- ``deepdream-live calibrate`` measures it on this machine (:func:`measure_limit`) and writes it
  into the profile; ``run`` uses the profile's limit when the profile was measured here.
- Without a profile (or with one from another machine) a conservative default per device kind
  applies (:data:`DEFAULT_MAX_PIXELS`): 960×544 on a CPU (estimated by pixel count from the
  measured 170 ms a step at 640×360 on the 2-core CI machine: about 1.6 s a reference frame),
  1920×1088 on a CUDA GPU (not measured yet; docs/architecture.md, "Refusals, limits and a loop
  that answers").
- Every write of ``width``/``height`` goes through :class:`SizeRule`, a registry rule, so the
  command line, the site config, OSC, MIDI and presets are all refused above it, with the
  reason and the size that fits (docs/architecture.md, "Refusals, limits and a loop that answers").

More steps or octaves than the reference make a frame longer than ``FRAME_SECONDS`` at the limit;
the loop still answers between steps (a stop, a status line, a watchdog ping), so such a frame
is slow, never deaf.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from live.control.params import OutOfRange
from live.errors import UsageError

if TYPE_CHECKING:
    import torch

    from live.backends import Backend
    from live.control.params import Registry
    from live.model import Model

log = logging.getLogger(__name__)

FRAME_SECONDS = 2.0  # the longest one reference frame may take at the largest size
REFERENCE_STEPS = 4  # the registry's default steps per frame, one octave
DEFAULT_MAX_PIXELS = {"cpu": 960 * 544, "cuda": 1920 * 1088}
ABSOLUTE_MAX_PIXELS = 3840 * 2176  # the registry's largest size, rounded to 32: no device is asked for more
MIN_PIXELS = 64 * 64  # the registry's smallest dream; a limit never goes below it


def round32(n: int) -> int:
    """As :func:`live.app.round32` (dream sizes are multiples of 32); here so the app can import this."""
    return max(32, int(round(n / 32)) * 32)


def megapixels(pixels: float) -> str:
    return f"{pixels / 1e6:.2f} Mpx"


def example_size(pixels: int) -> tuple[int, int]:
    """The largest 16:9 size, in multiples of 32, whose area is at most ``pixels`` (960x544 for 0.52 Mpx)."""
    return fitting_size(7680, 4352, pixels)


@dataclass(frozen=True)
class DreamLimit:
    """The largest dream size for one device: ``max_pixels``, and where that figure came from."""

    max_pixels: int
    device: str  # "cpu" or "cuda"
    source: str  # "measured by calibrate: …" or "default for an uncalibrated cpu"

    def describe(self) -> str:
        w, h = example_size(self.max_pixels)
        return f"{megapixels(self.max_pixels)} (e.g. {w}x{h}) on {self.device}, {self.source}"

    def check(self, width: int, height: int) -> None:
        """:class:`OutOfRange` (a UsageError) if a ``width`` × ``height`` dream is above this limit,
        saying why and what fits."""
        dw, dh = round32(width), round32(height)
        if dw * dh <= self.max_pixels:
            return
        fit = fitting_size(dw, dh, self.max_pixels)
        raise OutOfRange(
            f"dream size {dw}x{dh} ({megapixels(dw * dh)}) is above the largest this machine dreams with one "
            f"frame in {FRAME_SECONDS:g} s: {self.describe()}; choose {fit[0]}x{fit[1]} or smaller, or run "
            "`deepdream-live calibrate` to measure this machine"
        )


def fitting_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """``width`` × ``height`` scaled down, keeping its shape, to multiples of 32 within ``max_pixels``."""
    scale = min(1.0, math.sqrt(max_pixels / max(width * height, 1)))
    w, h = max(64, int(width * scale) // 32 * 32), max(64, int(height * scale) // 32 * 32)
    while w * h > max_pixels and (w > 64 or h > 64):
        if w >= h and w > 64:
            w -= 32
        else:
            h -= 32
    return w, h


def device_kind(backend: str = "auto", device: str = "auto") -> str:
    """The kind of device a show with these ``--backend``/``--device`` values dreams on."""
    if device.startswith("cuda") or backend == "tensorrt":
        return "cuda"
    if device == "cpu" or backend == "onnx":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_limit(kind: str) -> DreamLimit:
    """The conservative limit of an uncalibrated device of this kind."""
    kind = "cuda" if kind.startswith("cuda") else "cpu"
    return DreamLimit(DEFAULT_MAX_PIXELS[kind], kind, f"the default for an uncalibrated {kind}")


class SizeRule:
    """The registry rule that refuses a dream size above :attr:`limit` (see :meth:`Registry.add_rule`).

    The limit can be replaced while the show runs (the backend fell back to another device)."""

    def __init__(self, limit: DreamLimit) -> None:
        self.limit = limit

    def __call__(self, values: Mapping[str, Any]) -> None:
        self.limit.check(int(values["width"]), int(values["height"]))


def rule_of(registry: Registry) -> SizeRule | None:
    """The size rule installed in ``registry``, if any."""
    return next((r for r in registry.rules if isinstance(r, SizeRule)), None)


def guard(registry: Registry, limit: DreamLimit) -> SizeRule:
    """Make ``registry`` refuse dream sizes above ``limit`` from now on (replacing an older limit).

    The current size must fit: one set before is refused here with the reason (UsageError); see
    :func:`enforce` for a show that is already running.
    """
    rule = rule_of(registry)
    snap = registry.snapshot()
    limit.check(snap.width, snap.height)
    if rule is None:
        rule = SizeRule(limit)
        registry.add_rule(rule)
    else:
        rule.limit = limit
    return rule


def enforce(registry: Registry, limit: DreamLimit) -> SizeRule:
    """As :func:`guard`, for a show already set up: a size above ``limit`` is brought down to the
    largest that fits, keeping its shape, with a warning that says why (the backend fell back to
    a slower device, say): the show goes on, smaller, rather than not at all."""
    snap = registry.snapshot()
    try:
        limit.check(snap.width, snap.height)
    except UsageError as e:
        w, h = fitting_size(round32(snap.width), round32(snap.height), limit.max_pixels)
        log.warning("%s; dreaming at %dx%d instead", e, w, h)
        rule = rule_of(registry)
        if rule is not None:
            rule.limit = limit  # w x h fits the new limit, and the old one may be tighter
        registry.update({"width": w, "height": h}, source="limit")
    return guard(registry, limit)


# ----------------------------------------------------------------------------- measuring
def measure_limit(model: Model, backend: Backend, seconds_per_pixel_step: float,
                  frame_seconds: float = FRAME_SECONDS, *,
                  clock: Callable[[], float] = time.perf_counter) -> DreamLimit:
    """The largest size whose reference frame takes ``frame_seconds`` on ``backend``.

    ``seconds_per_pixel_step`` comes from the calibration sweep (a frame's time over its pixels
    and steps). The size it predicts is then timed for real, one step at a time (the faster of
    two, so an allocator's first touch does not count); a slower result shrinks the limit in
    proportion, a faster one leaves it (never extrapolated upwards past what was timed).
    ``clock`` times the step (tests pass a simulated one, so the arithmetic is exact).
    """
    kind = backend.device.type
    predicted = frame_seconds / (REFERENCE_STEPS * max(seconds_per_pixel_step, 1e-12))
    pixels = int(min(max(predicted, MIN_PIXELS), ABSOLUTE_MAX_PIXELS))
    w, h = example_size(pixels)
    step = _time_step(model, backend, w, h, clock)
    frame = REFERENCE_STEPS * step
    if frame > frame_seconds:
        pixels = int(pixels * frame_seconds / frame)
    pixels = max(pixels, MIN_PIXELS)
    source = (f"measured by calibrate: {REFERENCE_STEPS} steps at {w}x{h} took {frame:.2f} s "
              f"({time.strftime('%Y-%m-%d')})")
    log.info("largest dream size on %s: %s", kind, megapixels(pixels))
    return DreamLimit(pixels, kind, source)


def _time_step(model: Model, backend: Backend, width: int, height: int,
               clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds for one dream step at ``width`` × ``height`` (the faster of two runs)."""
    import torch

    from live.dreamer import Dreamer, DreamSettings
    from live.objectives import Objective

    dreamer = Dreamer(backend, model.space, seed=0)
    x = torch.zeros(1, 3, height, width, device=backend.device)
    settings = DreamSettings(steps=1, step_size=2.0, octaves=1, jitter=16)
    objective = Objective.parse("inception4c")
    best = math.inf
    for _ in range(2):
        t = clock()
        y = dreamer.dream(x, objective, settings)
        _sync(y)
        best = min(best, clock() - t)
        if best > FRAME_SECONDS / REFERENCE_STEPS:  # clearly too slow already: one timing is enough
            break
    return best


def _sync(x: torch.Tensor) -> None:
    if x.device.type == "cuda":
        import torch

        torch.cuda.synchronize(x.device)

