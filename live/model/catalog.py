"""The layer catalog: which GoogLeNet layers can be dreamed on, and the names users bring.

Canonical names follow torchvision's module names (``conv1`` … ``inception5b``). Users
arrive with names from the 2015 Caffe release (``inception_4c/output``) and from the
TensorFlow DeepDream notebook (``mixed4c``); both resolve to the same layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from live.errors import UsageError


@dataclass(frozen=True)
class Layer:
    """One dreamable layer: its canonical name, depth order, width and known aliases."""

    name: str
    index: int  # 0-based depth order; the forward pass stops after the deepest needed
    channels: int
    aliases: tuple[str, ...]


def _inception(name: str, index: int, channels: int) -> Layer:
    tag = name.removeprefix("inception")  # "4c"
    return Layer(name, index, channels, (f"inception_{tag}/output", f"mixed{tag}", f"inception_{tag}"))


LAYERS: tuple[Layer, ...] = (
    Layer("conv1", 0, 64, ("conv1/7x7_s2", "conv2d0")),
    Layer("conv2", 1, 64, ("conv2/3x3_reduce", "conv2d1")),
    Layer("conv3", 2, 192, ("conv2/3x3", "conv2d2")),
    _inception("inception3a", 3, 256),
    _inception("inception3b", 4, 480),
    _inception("inception4a", 5, 512),
    _inception("inception4b", 6, 512),
    _inception("inception4c", 7, 512),
    _inception("inception4d", 8, 528),
    _inception("inception4e", 9, 832),
    _inception("inception5a", 10, 832),
    _inception("inception5b", 11, 1024),
)

BY_NAME: dict[str, Layer] = {layer.name: layer for layer in LAYERS}
_LOOKUP: dict[str, Layer] = {}
for _layer in LAYERS:
    for _key in (_layer.name, *_layer.aliases):
        _LOOKUP[_key.lower()] = _layer


def resolve(name: str) -> Layer:
    """Return the catalog layer for a canonical name or alias (case-insensitive).

    A 1-based index ("7") is accepted too, as controllers send numbers.
    Raises :class:`UsageError` listing the valid names when nothing matches.
    """
    key = name.strip().lower()
    if key in _LOOKUP:
        return _LOOKUP[key]
    if key.isdigit() and 1 <= int(key) <= len(LAYERS):
        return LAYERS[int(key) - 1]
    raise UsageError(
        f"unknown layer {name!r}; valid layers: {', '.join(layer.name for layer in LAYERS)} "
        f"(or a 1-based index 1..{len(LAYERS)}, or an alias such as 'inception_4c/output' or "
        f"'mixed4c'; `deepdream-live layers` lists them all)"
    )


def deepest(names: list[str] | tuple[str, ...] | set[str]) -> Layer:
    """The deepest of the given canonical layer names: where the forward pass may stop."""
    return max((BY_NAME[n] for n in names), key=lambda layer: layer.index)
