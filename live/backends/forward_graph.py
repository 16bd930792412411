"""The dream gradient written with forward ops only, so it exports to ONNX and TensorRT runs it.

TensorRT has no autograd and PyTorch cannot export ``autograd.grad`` to ONNX, so the backward
pass of the truncated network (torchvision's folded GoogLeNet, or the BVLC one) is spelled
out here, walking the modules the network lists in its ``SEQUENCE`` (docs/architecture.md, "The
forward-ops-only gradient graph"):

* conv (batch-norm folded): input gradient = ``ConvTranspose`` with the same weight, stride and
  padding, ``output_padding`` chosen so the shape matches the conv's input;
* ReLU: multiply by the mask ``y > 0``;
* concat: split the gradient by branch widths; branch fan-out: add;
* LRN (the BVLC network): ``g·s^-β − 2β·r·x·Σ_window(g·r·x·s^(-β-1))``, the channel window
  written as shifted slices (:meth:`live.model.bvlc.LRN.input_gradient`);
* max-pool: pad the input with -inf (plus the ceil-mode overhang); for each of the k² window
  offsets the strided slice of the padded input already sits on the pooled grid; the mask is
  ``slice == the running maximum of the slices`` (never ``MaxPool``'s output, which a runtime
  may round differently), kept only for the first match per window (PyTorch's tie rule); the k²
  masked gradients are stacked and scattered back with one grouped ``ConvTranspose`` of one-hot
  kernels, then cropped. No pooling indices, no ``MaxUnpool``: TensorRT's ONNX parser has neither.

The objective weights are graph inputs (one fp32 vector per layer), so switching layers,
focusing channels and morphing are numbers, never a rebuild. Exported graphs have static shapes
per dream size; the sizes are multiples of 32 so every stride divides them.
"""

from __future__ import annotations

import copy
import io
import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from live.model.bvlc import LRN
from live.model.googlenet import ConvReLU, Inception

log = logging.getLogger(__name__)

OPSET = 18
INPUT = "x"
OUTPUTS = ("grad", "score")

Backward = Callable[[Tensor], Tensor]


def weight_input(layer: str) -> str:
    """The ONNX input name carrying ``layer``'s channel weights."""
    return f"w_{layer}"


class GradientGraph(nn.Module):
    """``forward(x, *weights) -> (dL/dx, L)`` for the objective Σ_l Σ_c w[l,c]·mean(act[l,c]²).

    ``layers`` are canonical catalog names; ``weights`` come in the same order (shallowest first,
    as :attr:`live.objectives.Objective.layers` lists them), one vector per layer of its width.
    ``dtype`` is the compute precision inside the graph: float16 keeps inputs, outputs, the score
    and the final scaling in float32; float64 is for checking against autograd.
    """

    def __init__(self, net: nn.Module, layers: Sequence[str], dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.catalog = net.CATALOG
        names = [self.catalog.resolve(name).name for name in layers]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"expected distinct layer names, got {list(layers)}")
        self.layers = tuple(sorted(names, key=lambda n: self.catalog.by_name[n].index))
        if tuple(names) != self.layers:
            raise ValueError(f"layers must be given shallowest first: {self.layers}")
        self.dtype = dtype
        self.io_dtype = torch.promote_types(dtype, torch.float32)  # fp16 compute, fp32 in and out
        deepest = self.catalog.deepest(self.layers).name
        # the modules to run, in order, up to and including the deepest wanted layer
        sequence = list(net.SEQUENCE)
        self.sequence = sequence[: next(i for i, (_, layer) in enumerate(sequence) if layer == deepest) + 1]
        self.net = copy.deepcopy(net).to(dtype).requires_grad_(False).eval()
        # One-hot scatter kernels per (channels, kernel size) of the pools in use; buffers, so the
        # exported graph holds them as initializers.
        self._onehot_names: dict[tuple[int, int], str] = {}
        for pool in self._pools_in_use():
            k = _pair(pool[0].kernel_size)[0]
            key = (pool[1], k)
            if key not in self._onehot_names:
                name = f"onehot_{key[0]}_{k}"
                self.register_buffer(name, _onehot_kernels(*key, dtype), persistent=False)
                self._onehot_names[key] = name

    def _pools_in_use(self) -> list[tuple[nn.MaxPool2d, int]]:
        pools = []
        channels = 3
        for attr, _ in self.sequence:
            module = getattr(self.net, attr)
            if isinstance(module, nn.MaxPool2d):
                pools.append((module, channels))
            elif isinstance(module, Inception):
                pools.append((module.branch4[0], channels))
                channels = sum(_out_channels(b) for b in (module.branch1, module.branch2, module.branch3, module.branch4))
            elif isinstance(module, ConvReLU):
                channels = module.conv.out_channels
        return pools

    # ----- forward ops, each returning its output and a closure computing its input gradient
    def _conv_relu(self, block: ConvReLU, x: Tensor) -> tuple[Tensor, Backward]:
        conv = block.conv
        y = torch.relu(conv(x))
        stride, padding, dilation = _pair(conv.stride), _pair(conv.padding), _pair(conv.dilation)
        kernel = conv.weight.shape[2:]
        # output_padding recovers the input rows/columns a strided conv drops (depends on parity).
        out_pad = tuple(
            int(x.shape[2 + i]) - ((int(y.shape[2 + i]) - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
            for i in range(2)
        )

        def backward(g: Tensor) -> Tensor:
            g = g * (y > 0).to(g.dtype)
            return F.conv_transpose2d(g, conv.weight, None, stride, padding, out_pad, 1, dilation)

        return y, backward

    def _max_pool(self, pool: nn.MaxPool2d, x: Tensor) -> tuple[Tensor, Backward]:
        (k, _), (s, _), (p, _) = _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)
        y = F.max_pool2d(x, k, s, p, ceil_mode=pool.ceil_mode)
        n, c, h, w = (int(d) for d in x.shape)
        ho, wo = int(y.shape[2]), int(y.shape[3])
        # The padded extent every window reads; beyond the input on the right/bottom is the
        # ceil-mode overhang (also -inf, so it never wins).
        hp, wp = (ho - 1) * s + k, (wo - 1) * s + k
        onehot = getattr(self, self._onehot_names[(c, k)])

        def backward(g: Tensor) -> Tensor:
            xs = x[:, :, : hp - p, : wp - p]  # windows need not reach the input's end (floor mode)
            xp = F.pad(xs, (p, wp - p - xs.shape[3], p, hp - p - xs.shape[2]), value=float("-inf"))
            # row-major window order: PyTorch keeps the first maximum it scans
            windows = [xp[:, :, i : i + (ho - 1) * s + 1 : s, j : j + (wo - 1) * s + 1 : s]
                       for i in range(k) for j in range(k)]
            # Each slice is compared with the running maximum of the slices themselves, never with
            # MaxPool's output y: a runtime may keep y in fp32 while the slices read an fp16-rounded
            # copy, and then the equality fails (docs/architecture.md, "The forward-ops-only
            # gradient graph").
            peak = windows[0]
            for window in windows[1:]:
                peak = torch.maximum(peak, window)
            parts, taken = [], None
            for window in windows:
                m = (window == peak).to(g.dtype)
                if taken is None:
                    taken = m
                else:
                    m = m * (1 - taken)
                    taken = taken + m
                parts.append(g * m)
            z = torch.stack(parts, 2).reshape(n, c * k * k, ho, wo)
            full = F.conv_transpose2d(z, onehot, None, s, 0, 0, c)
            return full[:, :, p : p + h, p : p + w]

        return y, backward

    def _lrn(self, lrn: LRN, x: Tensor) -> tuple[Tensor, Backward]:
        y = lrn(x)
        return y, lambda g: lrn.input_gradient(x, g)

    def _inception(self, block: Inception, x: Tensor) -> tuple[Tensor, Backward]:
        outs: list[Tensor] = []
        chains: list[list[Backward]] = []
        for branch in (block.branch1, block.branch2, block.branch3, block.branch4):
            h, chain = x, []
            for op in branch if isinstance(branch, nn.Sequential) else [branch]:
                h, bw = self._max_pool(op, h) if isinstance(op, nn.MaxPool2d) else self._conv_relu(op, h)
                chain.append(bw)
            outs.append(h)
            chains.append(chain)
        widths = [int(o.shape[1]) for o in outs]

        def backward(g: Tensor) -> Tensor:
            total = None
            for part, chain in zip(torch.split(g, widths, 1), chains):
                for bw in reversed(chain):
                    part = bw(part)
                total = part if total is None else total + part
            assert total is not None
            return total

        return torch.cat(outs, 1), backward

    # ----- the whole graph
    def forward(self, x: Tensor, *weights: Tensor) -> tuple[Tensor, Tensor]:
        if len(weights) != len(self.layers):
            raise ValueError(f"expected {len(self.layers)} weight vectors ({', '.join(self.layers)}), got {len(weights)}")
        h = x.to(self.dtype)
        tape: list[Backward] = []
        acts: dict[str, Tensor] = {}
        seed_at: dict[int, str] = {}  # tape position after which a wanted layer's seed joins
        for attr, layer in self.sequence:
            module = getattr(self.net, attr)
            if isinstance(module, nn.MaxPool2d):
                h, bw = self._max_pool(module, h)
            elif isinstance(module, Inception):
                h, bw = self._inception(module, h)
            elif isinstance(module, LRN):
                h, bw = self._lrn(module, h)
            else:
                h, bw = self._conv_relu(module, h)
            tape.append(bw)
            if layer in self.layers:
                acts[layer] = h
                seed_at[len(tape) - 1] = layer

        # Seed the backward with dL/da = 2·w·a/n scaled so its largest element is 1: unscaled it
        # underflows in fp16 for large maps, and at the BVLC net's 0..255 scale it overflows. The
        # scale is one number for all layers (it cancels in the normalised step) and is divided
        # out again in fp32 at the end.
        seeds: dict[str, Tensor] = {}
        peak = torch.zeros((), dtype=self.io_dtype, device=x.device)
        score = torch.zeros((), dtype=self.io_dtype, device=x.device)
        for name, w in zip(self.layers, weights):
            a = acts[name].to(self.io_dtype)
            n = int(a.shape[0]) * int(a.shape[2]) * int(a.shape[3])
            score = score + (a.square().mean(dim=(0, 2, 3)) * w.to(self.io_dtype)).sum()
            seeds[name] = a * (2.0 / n * w.to(self.io_dtype)).view(1, -1, 1, 1)
            peak = torch.maximum(peak, seeds[name].abs().amax())
        peak = torch.clamp(peak, min=1e-30)  # an all-zero objective: zero seeds, zero gradient
        seeds = {name: (seed / peak).to(self.dtype) for name, seed in seeds.items()}

        g: Tensor | None = None
        for i in reversed(range(len(tape))):
            if i in seed_at:
                seed = seeds[seed_at[i]]
                g = seed if g is None else g + seed
            assert g is not None  # the deepest module on the tape is a wanted layer
            g = tape[i](g)
        assert g is not None
        return g.to(self.io_dtype) * peak, score


def _out_channels(branch: nn.Module) -> int:
    last = branch[-1] if isinstance(branch, nn.Sequential) else branch
    return last.conv.out_channels


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _onehot_kernels(channels: int, k: int, dtype: torch.dtype) -> Tensor:
    """Grouped ConvTranspose weight (channels·k², 1, k, k): input slot i·k+j of each channel
    group writes to window offset (i, j)."""
    eye = torch.eye(k * k, dtype=dtype).view(k * k, 1, k, k)
    return eye.repeat(channels, 1, 1, 1)


def export_onnx(
    net: nn.Module,
    layers: Sequence[str],
    shape: tuple[int, int, int, int],
    dtype: torch.dtype = torch.float32,
) -> bytes:
    """The ONNX model (opset 18) of :class:`GradientGraph` for one input shape, as bytes.

    Inputs: ``x`` (float32, ``shape``) and ``w_<layer>`` (float32, one per layer); outputs
    ``grad`` (float32, ``shape``) and ``score`` (float32 scalar).

    Shapes are static: the tracer bakes every slice bound of the max-pool backward in as a
    constant, so a graph exported with dynamic H/W axes runs only at the traced size (measured:
    onnxruntime rejects 96x128 on a graph traced at 64x96). One graph per dream size it is.
    """
    graph = GradientGraph(net, layers, dtype)
    x = torch.zeros(shape, dtype=graph.io_dtype)
    weights = tuple(
        torch.full((graph.catalog.by_name[name].channels,), 1.0, dtype=graph.io_dtype) for name in graph.layers
    )
    inputs = [INPUT, *(weight_input(name) for name in graph.layers)]
    buf = io.BytesIO()
    with torch.no_grad(), _quiet_legacy_exporter():
        # The TorchScript exporter: the dynamo one needs onnxscript and gains nothing for a graph
        # with no control flow. Constant folding removes the shape arithmetic of static sizes.
        torch.onnx.export(
            graph, (x, *weights), buf, input_names=inputs, output_names=list(OUTPUTS), opset_version=OPSET,
            dynamo=False, do_constant_folding=True,
        )
    return buf.getvalue()


class _quiet_legacy_exporter:
    """Silences the deprecation and tracer warnings of the TorchScript exporter (expected here:
    sizes are deliberately baked in as constants)."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*Constant folding - Only steps=1.*")  # strided slices stay ops

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
