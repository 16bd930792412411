"""Dream sizes: the one rounding that the loop, the governor, ``calibrate`` and ``build-engines``
share, so a plan built ahead of the show has exactly the shape the show asks for.

Sizes are multiples of 32: the network's stride, and the static-shape engines are built per size.
"""

from __future__ import annotations

SIZE_MULTIPLE = 32
Shape = tuple[int, int, int, int]


def round32(n: float) -> int:
    """The nearest multiple of 32 (at least 32): 720 -> 704, 1080 -> 1088."""
    return max(SIZE_MULTIPLE, round(n / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def dream_shape(width: float, height: float, batch: int = 1) -> Shape:
    """The NCHW shape the loop dreams at for a ``width`` x ``height`` dream size."""
    return (batch, 3, round32(height), round32(width))
