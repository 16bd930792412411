"""The dreaming network: GoogLeNet weights, the trunk, its input space and layer catalog.

Two networks (``--model``): ``torchvision`` (torchvision's GoogLeNet, batch-norm folded; the
default) and ``bvlc`` (the Caffe GoogLeNet of the 2015 DeepDream images, with LRN; see
:mod:`live.model.bvlc`). Both nets have the same interface, ``net(x, layers) -> {layer: act}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from live.errors import UsageError
from live.model import catalog
from live.model.bvlc import BVLC_SPACE, BVLCGoogLeNet
from live.model.googlenet import TORCHVISION_SPACE, DreamNet, InputSpace, fold_batchnorm
from live.model.weights import WeightsInfo, load_bvlc, load_reference

MODELS: tuple[str, ...] = tuple(catalog.CATALOGS)
"""The names ``--model`` accepts, the default first."""


@dataclass(frozen=True)
class Model:
    """A ready network: the trunk (CPU, float32), how pictures map into it, and its source.

    ``net`` is a :class:`DreamNet` for ``torchvision`` and a :class:`BVLCGoogLeNet` for ``bvlc``.
    """

    name: str
    net: DreamNet | BVLCGoogLeNet
    space: InputSpace
    weights: WeightsInfo

    @property
    def catalog(self) -> catalog.Catalog:
        """This network's layers in depth order."""
        return catalog.for_model(self.name)

    def check_layers(self, layers: Iterable[str]) -> None:
        """Raise :class:`UsageError` if this network lacks one of ``layers`` (e.g. ``norm1`` on
        torchvision's), naming the model that has it."""
        self.catalog.check(layers)


def load_model(weights: str | None = None, *, model: str = "torchvision", progress: bool = True) -> Model:
    """Load a network from a ``--model`` and a ``--weights`` value.

    ``weights`` as in :func:`live.model.weights.load_reference` (torchvision) and
    :func:`live.model.weights.load_bvlc` (bvlc). Raises :class:`UsageError` for an unknown model.
    """
    if model == "torchvision":
        reference, info = load_reference(weights, progress=progress)
        return Model("torchvision", fold_batchnorm(reference), TORCHVISION_SPACE, info)
    if model == "bvlc":
        net, info = load_bvlc(weights, progress=progress)
        return Model("bvlc", net, BVLC_SPACE, info)
    raise UsageError(f"unknown model {model!r}; expected one of: {', '.join(MODELS)}")


__all__ = [
    "MODELS",
    "BVLCGoogLeNet",
    "DreamNet",
    "InputSpace",
    "Model",
    "WeightsInfo",
    "catalog",
    "load_model",
]
