"""The dreaming network: GoogLeNet weights, the folded trunk, its input space and layer catalog."""

from __future__ import annotations

from dataclasses import dataclass

from live.model import catalog
from live.model.googlenet import TORCHVISION_SPACE, DreamNet, InputSpace, fold_batchnorm
from live.model.weights import WeightsInfo, load_reference


@dataclass(frozen=True)
class Model:
    """A ready network: the folded trunk (CPU, float32), how pictures map into it, and its source."""

    name: str
    net: DreamNet
    space: InputSpace
    weights: WeightsInfo


def load_model(weights: str | None = None, *, progress: bool = True) -> Model:
    """Load GoogLeNet from a ``--weights`` value (see :func:`live.model.weights.load_reference`)."""
    reference, info = load_reference(weights, progress=progress)
    return Model("torchvision", fold_batchnorm(reference), TORCHVISION_SPACE, info)


__all__ = ["Model", "load_model", "catalog", "DreamNet", "InputSpace", "WeightsInfo"]
