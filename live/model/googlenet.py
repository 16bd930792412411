"""GoogLeNet in torchvision's layout, and the batch-norm-folded network that dreams.

Two networks share one description of the trunk:

* :class:`TorchvisionGoogLeNet` is torchvision's architecture module for module (batch-norm
  with eps 1e-3, aux heads, classifier), so torchvision's ImageNet checkpoint loads by its own
  key names through PyTorch's strict ``load_state_dict`` - that is where a wrong file is caught.
* :class:`DreamNet` is the same trunk with batch-norm folded into each convolution and no
  classifier. Its forward stops at the deepest layer the objective needs: nothing past it is
  computed, which also removes whole-network dreaming's "image too small" failure.

Note torchvision's known quirk, kept for checkpoint compatibility: the "5x5" branch uses a
3x3 kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from live.model import catalog

BN_EPS = 1e-3  # torchvision's BasicConv2d

# name, in, 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection
_INCEPTIONS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}

# The max-pool in front of a layer, if any (torchvision's maxpool1..4, all ceil-mode).
_POOL_BEFORE: dict[str, tuple[int, int]] = {
    "conv2": (3, 2),
    "inception3a": (3, 2),
    "inception4a": (3, 2),
    "inception5a": (2, 2),
}
_POOL_NAMES = {"conv2": "maxpool1", "inception3a": "maxpool2", "inception4a": "maxpool3", "inception5a": "maxpool4"}

ConvBlock = Callable[..., nn.Module]


class BasicConv2d(nn.Module):
    """torchvision's conv block: convolution without bias, batch-norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


class ConvReLU(nn.Module):
    """A folded conv block: convolution with the batch-norm folded into weight and bias, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=True, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x))


class Inception(nn.Module):
    """An inception block with torchvision's branch names (branch1 … branch4)."""

    def __init__(self, block: ConvBlock, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int) -> None:
        super().__init__()
        self.branch1 = block(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(block(cin, c3r, kernel_size=1), block(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(block(cin, c5r, kernel_size=1), block(c5r, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True), block(cin, pp, kernel_size=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def _trunk(block: ConvBlock) -> dict[str, nn.Module]:
    """The dreamable layers in depth order, built from the given conv block."""
    layers: dict[str, nn.Module] = {
        "conv1": block(3, 64, kernel_size=7, stride=2, padding=3),
        "conv2": block(64, 64, kernel_size=1),
        "conv3": block(64, 192, kernel_size=3, padding=1),
    }
    for name, widths in _INCEPTIONS.items():
        layers[name] = Inception(block, *widths)
    assert list(layers) == [layer.name for layer in catalog.LAYERS]  # the catalog is this trunk
    return layers


def _pools() -> dict[str, nn.MaxPool2d]:
    return {
        _POOL_NAMES[before]: nn.MaxPool2d(k, stride=s, ceil_mode=True) for before, (k, s) in _POOL_BEFORE.items()
    }


class InceptionAux(nn.Module):
    """torchvision's auxiliary classifier; present only so checkpoints load by their key names."""

    def __init__(self, in_channels: int, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)


class TorchvisionGoogLeNet(nn.Module):
    """torchvision's GoogLeNet (inference form), key for key, with batch-norm not folded.

    Its input is the network's own input space (see :class:`live.model.InputSpace`): torchvision's
    ``transform_input`` re-normalisation is already part of that space.
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        for name, module in {**_trunk(BasicConv2d), **_pools()}.items():
            self.add_module(name, module)
        self.aux1 = InceptionAux(512, num_classes)
        self.aux2 = InceptionAux(528, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits of the whole network (no aux heads, as in eval mode)."""
        for layer in catalog.LAYERS:
            pool = _POOL_NAMES.get(layer.name)
            if pool:
                x = getattr(self, pool)(x)
            x = getattr(self, layer.name)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _sequence() -> tuple[tuple[str, str | None], ...]:
    seq: list[tuple[str, str | None]] = []
    for layer in catalog.LAYERS:
        if layer.name in _POOL_NAMES:
            seq.append((_POOL_NAMES[layer.name], None))
        seq.append((layer.name, layer.name))
    return tuple(seq)


class DreamNet(nn.Module):
    """The folded trunk used for dreaming. Build it with :func:`fold_batchnorm`.

    :attr:`SEQUENCE` lists ``(module attribute, catalog layer or None)`` in execution order, for
    code that walks the network (the forward-only gradient graph); :attr:`CATALOG` its layers.
    """

    SEQUENCE = _sequence()
    CATALOG = catalog.TORCHVISION

    def __init__(self) -> None:
        super().__init__()
        for name, module in {**_trunk(ConvReLU), **_pools()}.items():
            self.add_module(name, module)
        self.requires_grad_(False)

    def forward(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        """Activations of the named canonical layers; computation stops at the deepest one."""
        wanted = set(layers)
        stop = catalog.deepest(wanted).index
        acts: dict[str, Tensor] = {}
        for layer in catalog.LAYERS[: stop + 1]:
            pool = _POOL_NAMES.get(layer.name)
            if pool:
                x = getattr(self, pool)(x)
            x = getattr(self, layer.name)(x)
            if layer.name in wanted:
                acts[layer.name] = x
        return acts


def fold_batchnorm(reference: TorchvisionGoogLeNet) -> DreamNet:
    """A :class:`DreamNet` computing what ``reference`` computes, batch-norm folded in.

    Folding is done in float64 so the folded network matches the reference to float32 rounding.
    """
    folded: dict[str, Tensor] = {}
    for path, module in reference.named_modules():
        if not isinstance(module, BasicConv2d) or path.startswith("aux"):
            continue
        bn = module.bn
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        weight = module.conv.weight.double() * scale[:, None, None, None]
        bias = bn.bias.double() - bn.running_mean.double() * scale
        folded[f"{path}.conv.weight"] = weight.float()
        folded[f"{path}.conv.bias"] = bias.float()
    net = DreamNet()
    net.load_state_dict(folded, strict=True)
    return net.eval()


@dataclass(frozen=True)
class InputSpace:
    """How a picture maps into the network's input: ``x = (p[order] * scale - mean) / std``.

    ``p`` is an RGB picture with values in 0..1. torchvision's GoogLeNet (with its
    ``transform_input``) sees ``(p - 0.5) / 0.5``; the Caffe BVLC model sees BGR 0..255 with the
    ImageNet mean subtracted. The dreamer works in this space and clamps to its bounds.
    """

    bgr: bool = False
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    # (device, dtype) -> (mean, std) as (1, 3, 1, 1) tensors: made once, because building them
    # from Python numbers is a blocking host-to-device copy that waits for all queued GPU work
    # (docs/architecture.md, "No host synchronisation on the frame path"). Not part of the
    # value: two equal spaces compare equal.
    _stats_cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = field(
        default_factory=dict, init=False, compare=False, repr=False)

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.device, like.dtype)
        stats = self._stats_cache.get(key)
        if stats is None:
            mean = torch.tensor(self.mean, dtype=like.dtype).view(1, 3, 1, 1).to(like.device)
            std = torch.tensor(self.std, dtype=like.dtype).view(1, 3, 1, 1).to(like.device)
            stats = self._stats_cache[key] = (mean, std)
        return stats

    def to_model(self, rgb01: Tensor) -> Tensor:
        """Map an (N, 3, H, W) RGB picture in 0..1 into the network's input space."""
        p = rgb01.flip(1) if self.bgr else rgb01
        mean, std = self._stats(p)
        return (p * self.scale - mean) / std

    def to_picture(self, x: Tensor) -> Tensor:
        """Inverse of :meth:`to_model`: back to an RGB picture in 0..1 (not clamped)."""
        mean, std = self._stats(x)
        p = (x * std + mean) / self.scale
        return p.flip(1) if self.bgr else p

    def bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """Per-channel lower and upper bounds of valid pictures, shaped (1, 3, 1, 1)."""
        return self.to_model(torch.zeros_like(like[:1, :, :1, :1])), self.to_model(torch.ones_like(like[:1, :, :1, :1]))

    def per_grey_level(self, like: Tensor) -> Tensor:
        """Model-space size of one 8-bit grey level per channel, shaped (1, 3, 1, 1).

        Step sizes are given in grey levels so the same setting looks the same on every model.
        """
        lo, hi = self.bounds(like)
        return (hi - lo) / 255.0


TORCHVISION_SPACE = InputSpace()
