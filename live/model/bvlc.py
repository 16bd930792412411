"""The BVLC GoogLeNet: the Caffe network behind the 2015 DeepDream images.

It differs from torchvision's GoogLeNet (:mod:`live.model.googlenet`) in ways that change the
look, so it is its own network rather than a set of weights for the other one:

* local response normalisation (:class:`LRN`: size 5, alpha 1e-4, beta 0.75, k 1) after the
  first pool (``pool1/norm1``) and after ``conv2/3x3`` (``conv2/norm2``); no batch-norm, so
  every convolution has a bias and the weights load as they are;
* the "5x5" inception branch really is 5x5 (pad 2), and the pool before inception5a is 3x3
  stride 2 (torchvision: 2x2);
* input in BGR, 0..255, with the ImageNet mean (104, 117, 123) subtracted (:data:`BVLC_SPACE`).

Structure, for code that walks the network (the forward-only gradient graph mirrors it):
:data:`SEQUENCE` lists ``(module attribute, catalog layer or None)`` in execution order. Each
module is one of :class:`~live.model.googlenet.ConvReLU` (``conv1 conv2 conv3``),
``nn.MaxPool2d`` (``pool1 … pool4``, 3x3 stride 2, ceil mode: Caffe rounds pooled sizes up),
:class:`LRN` (``norm1 norm2``) or :class:`BVLCInception` (a
:class:`~live.model.googlenet.Inception` with torchvision's branch names: ``branch1`` 1x1;
``branch2`` 1x1 → 3x3; ``branch3`` 1x1 → 5x5; ``branch4`` 3x3/1 max-pool → 1x1; outputs
concatenated in that order). :data:`CAFFE_PARAMS` maps each Caffe layer holding weights to its
module path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from live.errors import DataError
from live.model import catalog
from live.model.googlenet import _INCEPTIONS, ConvReLU, Inception, InputSpace

log = logging.getLogger(__name__)

BVLC_SPACE = InputSpace(bgr=True, scale=255.0, mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0))
"""Caffe's input: BGR in 0..255 minus the ImageNet mean, given in BGR order (B 104, G 117, R 123)."""

LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 1.0  # both LRN layers of deploy.prototxt


def channel_window_sum(t: Tensor, size: int) -> Tensor:
    """Sum over a window of ``size`` neighbouring channels, zero-padded: Caffe's LRN window.

    Written as ``size`` shifted slices of a channel-padded tensor added up (a fixed all-ones
    convolution over channels), so it exports to ONNX and TensorRT as plain Pad/Slice/Add. The
    window is symmetric, so this operator is its own adjoint: LRN's backward reuses it.
    """
    half = size // 2  # size is odd: the window is centred
    padded = F.pad(t, (0, 0, 0, 0, half, half))  # pads dim 1 (channels)
    channels = t.shape[1]
    total = padded[:, 0:channels]
    for i in range(1, size):
        total = total + padded[:, i : i + channels]
    return total


class LRN(nn.Module):
    """Caffe's across-channel local response normalisation::

        y = x / (k + alpha/size · Σ_window x²) ^ beta

    the same convention as ``torch.nn.LocalResponseNorm``. The sum is taken of
    ``(x · sqrt(alpha/size))²`` rather than of ``x²``: at Caffe's 0..255 input scale ``x²``
    overflows float16, the pre-scaled squares do not.
    """

    def __init__(
        self, size: int = LRN_SIZE, alpha: float = LRN_ALPHA, beta: float = LRN_BETA, k: float = LRN_K
    ) -> None:
        super().__init__()
        if size % 2 != 1:  # Caffe refuses even sizes too; their window would be lopsided
            raise ValueError(f"LRN size must be odd (as in Caffe), got {size}")
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.root = (alpha / size) ** 0.5

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def denominator_base(self, x: Tensor) -> Tensor:
        """``s = k + alpha/size · Σ_window x²`` (the output is ``x · s^-beta``)."""
        return self.k + channel_window_sum((x * self.root).square(), self.size)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float16:
            # fp16 in, fp16 out, fp32 inside: a power and a division per element cost little next
            # to the convolutions, and in fp16 they cost the gradient ~0.002 of cosine to float64
            # at inception4c (PyTorch fp16 autograd, random weights, 0.9943 -> 0.9966).
            return self.forward(x.float()).half()
        return x * self.denominator_base(x).pow(-self.beta)

    def input_gradient(self, x: Tensor, g: Tensor) -> Tensor:
        """dL/dx given dL/dy = ``g``, in forward ops only (for graphs without autograd)::

            dx = g · s^-β − 2β · r·x · Σ_window(g · r·x · s^(-β-1)),   r = sqrt(alpha/size)

        The window sum is symmetric, so the same :func:`channel_window_sum` carries it back.
        """
        if x.dtype == torch.float16:  # fp32 inside, as in forward
            return self.input_gradient(x.float(), g.float()).to(g.dtype)
        s = self.denominator_base(x)
        p = s.pow(-self.beta)
        rx = x * self.root
        return g * p - (2.0 * self.beta) * rx * channel_window_sum(g * rx * p / s, self.size)


class BVLCInception(Inception):
    """An inception block as Caffe's GoogLeNet has it: torchvision's layout and branch names,
    with ReLU convolutions that carry a bias and a real 5x5 kernel in the third branch."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pp: int) -> None:
        super().__init__(ConvReLU, cin, c1, c3r, c3, c5r, c5, pp)
        self.branch3[1] = ConvReLU(c5r, c5, kernel_size=5, padding=2)


# (module attribute, catalog layer it produces or None), in execution order.
SEQUENCE: tuple[tuple[str, str | None], ...] = (
    ("conv1", "conv1"),  # conv1/7x7_s2 + conv1/relu_7x7
    ("pool1", None),  # pool1/3x3_s2
    ("norm1", "norm1"),  # pool1/norm1
    ("conv2", "conv2"),  # conv2/3x3_reduce + relu
    ("conv3", "conv3"),  # conv2/3x3 + relu
    ("norm2", "norm2"),  # conv2/norm2
    ("pool2", None),  # pool2/3x3_s2
    ("inception3a", "inception3a"),
    ("inception3b", "inception3b"),
    ("pool3", None),  # pool3/3x3_s2
    ("inception4a", "inception4a"),
    ("inception4b", "inception4b"),
    ("inception4c", "inception4c"),
    ("inception4d", "inception4d"),
    ("inception4e", "inception4e"),
    ("pool4", None),  # pool4/3x3_s2
    ("inception5a", "inception5a"),
    ("inception5b", "inception5b"),
)
assert [layer for _, layer in SEQUENCE if layer] == [layer.name for layer in catalog.BVLC.layers]


def _caffe_params() -> dict[str, str]:
    params = {"conv1/7x7_s2": "conv1.conv", "conv2/3x3_reduce": "conv2.conv", "conv2/3x3": "conv3.conv"}
    for name in _INCEPTIONS:
        caffe = f"inception_{name.removeprefix('inception')}"
        params.update({
            f"{caffe}/1x1": f"{name}.branch1.conv",
            f"{caffe}/3x3_reduce": f"{name}.branch2.0.conv",
            f"{caffe}/3x3": f"{name}.branch2.1.conv",
            f"{caffe}/5x5_reduce": f"{name}.branch3.0.conv",
            f"{caffe}/5x5": f"{name}.branch3.1.conv",
            f"{caffe}/pool_proj": f"{name}.branch4.1.conv",
        })  # fmt: skip
    return params


CAFFE_PARAMS: dict[str, str] = _caffe_params()
"""Caffe layer name → module path of its convolution (blobs: weight (out, in, kh, kw), bias)."""


class BVLCGoogLeNet(nn.Module):
    """The BVLC GoogLeNet trunk for dreaming (no classifier). Weights never require grad.

    ``forward(x, layers)`` has :class:`~live.model.googlenet.DreamNet`'s interface: activations
    of the named canonical layers, computed no further than the deepest of them.
    """

    SEQUENCE = SEQUENCE
    CATALOG = catalog.BVLC

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvReLU(3, 64, kernel_size=7, stride=2, padding=3)
        self.pool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.norm1 = LRN()
        self.conv2 = ConvReLU(64, 64, kernel_size=1)
        self.conv3 = ConvReLU(64, 192, kernel_size=3, padding=1)
        self.norm2 = LRN()
        self.pool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception3a", "inception3b"):
            self.add_module(name, BVLCInception(*_INCEPTIONS[name]))
        self.pool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            self.add_module(name, BVLCInception(*_INCEPTIONS[name]))
        self.pool4 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception5a", "inception5b"):
            self.add_module(name, BVLCInception(*_INCEPTIONS[name]))
        assert [name for name, _ in self.named_children()] == [name for name, _ in SEQUENCE]
        self.requires_grad_(False)

    def forward(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        """Activations of the named canonical layers; computation stops at the deepest one.

        A layer this network lacks raises :class:`live.errors.UsageError`.
        """
        wanted = set(layers)
        stop = catalog.BVLC.deepest(wanted).name
        acts: dict[str, Tensor] = {}
        for module, layer in SEQUENCE:
            x = getattr(self, module)(x)
            if layer in wanted:
                acts[layer] = x
            if layer == stop:
                break
        return acts


def from_caffe(blobs: Mapping[str, list[np.ndarray]], source: str) -> BVLCGoogLeNet:
    """Build the network from a caffemodel's blobs (see :func:`live.model.caffe.read_caffemodel`).

    Raises :class:`DataError` naming ``source`` when layers are missing (another network), a blob
    has the wrong number of values, or values are not finite. Extra layers (the classifier and
    auxiliary heads) are ignored.
    """
    net = BVLCGoogLeNet()
    expected = "the BVLC GoogLeNet (bvlc_googlenet.caffemodel)"
    missing = [name for name in CAFFE_PARAMS if len(blobs.get(name, ())) < 2]
    if missing:
        raise DataError(
            f"{source} is a Caffe model but not {expected}: {len(missing)} of its {len(CAFFE_PARAMS)} "
            f"convolution layers are missing (first: {', '.join(missing[:3])})"
        )
    state: dict[str, Tensor] = {}
    targets = net.state_dict()
    for caffe_name, path in CAFFE_PARAMS.items():
        for blob, part in zip(blobs[caffe_name][:2], ("weight", "bias")):
            want = targets[f"{path}.{part}"].shape
            # V1 files store a bias as (1, 1, 1, out) and may store weights flat: the count decides.
            if blob.size != want.numel():
                raise DataError(
                    f"{source}: layer {caffe_name} {part} has shape {tuple(blob.shape)}, expected {tuple(want)}; "
                    f"expected {expected}"
                )
            if not np.isfinite(blob).all():
                raise DataError(f"{source}: layer {caffe_name} contains NaN or infinite values; the file is damaged")
            state[f"{path}.{part}"] = torch.from_numpy(np.asarray(blob, np.float32).reshape(tuple(want)).copy())
    net.load_state_dict(state, strict=True)
    return net.eval()


def random_bvlc(seed: int = 0) -> BVLCGoogLeNet:
    """A seeded, untrained BVLC network whose activations keep their scale through depth.

    He-initialised weights (the LRN layers then see activations of the input's size, as in the
    trained network) and small random biases, so every layer dreams with ordinary gradients.
    """
    gen = torch.Generator().manual_seed(seed)
    net = BVLCGoogLeNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return net.eval()
