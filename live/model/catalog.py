"""The layer catalog: which GoogLeNet layers can be dreamed on, and the names users bring.

Canonical names follow torchvision's module names (``conv1`` … ``inception5b``). Users
arrive with names from the 2015 Caffe release (``inception_4c/output``) and from the
TensorFlow DeepDream notebook (``mixed4c``); both resolve to the same layer.

Two networks are supported (see :mod:`live.model`): torchvision's GoogLeNet and the BVLC
(Caffe) GoogLeNet of the 2015 DeepDream images. They share the twelve layers of :data:`LAYERS`;
the BVLC network has two more, its LRN layers ``norm1`` (Caffe's ``pool1/norm1``) and ``norm2``
(``conv2/norm2``). Each network has a :class:`Catalog` in depth order (:func:`for_model`);
the module-level :func:`resolve` accepts a layer of either network, so an objective can be
written before the network is chosen, and :meth:`Catalog.check` is where a layer the chosen
network lacks becomes a clear error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from live.errors import UsageError


@dataclass(frozen=True)
class Layer:
    """One dreamable layer: its canonical name, depth order, width and known aliases.

    ``index`` is the position in the depth order of the catalog the layer came from: for the
    shared layers of :data:`LAYERS` that is torchvision's order (the one controllers number).
    """

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
"""The layers both networks have, in torchvision's depth order: torchvision's whole catalog."""

BY_NAME: dict[str, Layer] = {layer.name: layer for layer in LAYERS}

# The BVLC network's LRN layers, and the shared layer each one directly follows.
_BVLC_ONLY: tuple[tuple[str, Layer], ...] = (
    ("conv1", Layer("norm1", -1, 64, ("pool1/norm1",))),  # after pool1/3x3_s2, which follows conv1
    ("conv3", Layer("norm2", -1, 192, ("conv2/norm2",))),
)


def _key(name: str) -> str:
    return name.strip().lower()


@dataclass(frozen=True)
class Catalog:
    """One network's dreamable layers in depth order (``layers[i].index == i``)."""

    model: str
    layers: tuple[Layer, ...]
    by_name: dict[str, Layer] = field(init=False, repr=False, compare=False)
    _lookup: dict[str, Layer] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        assert all(layer.index == i for i, layer in enumerate(self.layers)), "layers must be numbered in order"
        lookup = {_key(k): layer for layer in self.layers for k in (layer.name, *layer.aliases)}
        object.__setattr__(self, "by_name", {layer.name: layer for layer in self.layers})
        object.__setattr__(self, "_lookup", lookup)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._lookup

    def resolve(self, name: str) -> Layer:
        """The layer for a canonical name, alias or 1-based index into this catalog.

        A layer only another network has raises :class:`UsageError` naming that network.
        """
        key = _key(name)
        if key in self._lookup:
            return self._lookup[key]
        if key.isdigit() and 1 <= int(key) <= len(self.layers):
            return self.layers[int(key) - 1]
        raise _unknown(name, self)

    def check(self, names: Iterable[str]) -> None:
        """Raise :class:`UsageError` for the first name this network does not have."""
        for name in names:
            if _key(name) not in self._lookup:
                raise _unknown(name, self)

    def deepest(self, names: Iterable[str]) -> Layer:
        """The deepest of the given canonical names in this network: where its forward may stop."""
        names = list(names)
        self.check(names)
        return max((self.by_name[_lookup_name(n, self)] for n in names), key=lambda layer: layer.index)


def _lookup_name(name: str, cat: Catalog) -> str:
    return cat._lookup[_key(name)].name


def _bvlc_layers() -> tuple[Layer, ...]:
    ordered: list[Layer] = []
    extra = dict(_BVLC_ONLY)
    for layer in LAYERS:
        ordered.append(layer)
        if layer.name in extra:
            ordered.append(extra[layer.name])
    return tuple(replace(layer, index=i) for i, layer in enumerate(ordered))


TORCHVISION = Catalog("torchvision", LAYERS)
BVLC = Catalog("bvlc", _bvlc_layers())
CATALOGS: dict[str, Catalog] = {cat.model: cat for cat in (TORCHVISION, BVLC)}
"""Every network's catalog by model name (the values ``--model`` takes)."""

# Every layer of every network in one depth order (BVLC's is a superset of torchvision's, in
# the same relative order), so objectives sort the same whichever network they are meant for.
_ALL = BVLC
assert [layer.name for layer in _ALL.layers if layer.name in BY_NAME] == [layer.name for layer in LAYERS]


def for_model(model: str) -> Catalog:
    """The catalog of the network ``model`` (``torchvision`` or ``bvlc``)."""
    try:
        return CATALOGS[model]
    except KeyError:
        raise UsageError(f"unknown model {model!r}; expected one of: {', '.join(CATALOGS)}") from None


def resolve(name: str, model: str | None = None) -> Layer:
    """Return the catalog layer for a canonical name or alias (case-insensitive).

    A 1-based index ("7") is accepted too, as controllers send numbers (torchvision's numbering
    without ``model``). With ``model`` the name must belong to that network; without it any
    network's layer is accepted (the BVLC-only ones come back with their BVLC ``index``).
    Raises :class:`UsageError` listing the valid names when nothing matches.
    """
    if model is not None:
        return for_model(model).resolve(name)
    key = _key(name)
    if key in TORCHVISION:
        return TORCHVISION.resolve(key)
    if key.isdigit() and 1 <= int(key) <= len(LAYERS):
        return LAYERS[int(key) - 1]
    if key in _ALL:
        return _ALL.resolve(key)
    raise _unknown(name, None)


def depth(name: str) -> int:
    """Position of a canonical layer name in one depth order covering every network."""
    return _ALL.by_name[name].index


def models_with(name: str) -> list[str]:
    """The networks that have the layer ``name`` (canonical name or alias)."""
    return [model for model, cat in CATALOGS.items() if name in cat]


def deepest(names: list[str] | tuple[str, ...] | set[str]) -> Layer:
    """The deepest of the given canonical layer names in torchvision's network: where the
    forward pass of :class:`live.model.googlenet.DreamNet` may stop."""
    return TORCHVISION.deepest(names)


def _unknown(name: str, cat: Catalog | None) -> UsageError:
    owners = models_with(name)
    if cat is not None and owners:
        layer = CATALOGS[owners[0]].resolve(name)
        also = f" ({', '.join(layer.aliases)})" if layer.aliases else ""
        return UsageError(
            f"layer {layer.name!r}{also} exists only in the {' and '.join(owners)} model, not in {cat.model}; "
            f"run with --model {owners[0]}, or pick one of {cat.model}'s layers: "
            f"{', '.join(layer.name for layer in cat.layers)}"
        )
    layers = cat.layers if cat is not None else LAYERS
    extra = ""
    if cat is None:
        extra = "; BVLC model only: " + ", ".join(f"{lay.name} ({lay.aliases[0]})" for _, lay in _BVLC_ONLY)
    return UsageError(
        f"unknown layer {name!r}; valid layers: {', '.join(layer.name for layer in layers)}{extra} "
        f"(or a 1-based index 1..{len(layers)}, or an alias such as 'inception_4c/output' or "
        f"'mixed4c'; `deepdream-live layers` lists them all)"
    )
