"""The PyTorch backend: autograd through the truncated, folded GoogLeNet.

On CPU it runs eagerly in float32. On CUDA it computes in fp16 (updates stay fp32), lets cuDNN
autotune, and captures the whole few-step ascent as one CUDA graph per (shape, layer set,
steps): eager PyTorch is launch-bound at ~8 ms a step, a replayed graph is not (docs/architecture.md, "Frame budget").
Objective weights, step size, jitter and bounds live in static device buffers that are
overwritten before each replay, so changing them never recaptures.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor

from live.backends import Backend, resolve_precision
from live.backends.cuda_graph import GraphCache, capture_ascent
from live.ascent import ascent_steps
from live.model import Model
from live.objectives import Objective

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    """Autograd on CPU or CUDA.

    ``dtype`` is the compute precision: fp16 on CUDA and fp32 on CPU unless given (tests use
    float64). Updates always happen in the dtype of the image passed in.
    """

    name = "torch"

    def __init__(
        self, model: Model, device: torch.device, *, dtype: torch.dtype | None = None, cuda_graphs: bool = True,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(device)
        self.dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        # oneDNN's CPU convolutions are ~1.5x faster on channels-last tensors (measured at 640x360).
        # On CUDA the default layout stays until `make gpu-check` shows channels-last pays there
        # (it measures both, docs/architecture.md, "The GPU check"); ``channels_last`` overrides.
        if channels_last is None:
            channels_last = device.type == "cpu"
        self.channels_last = channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = copy.deepcopy(model.net).to(device=device, dtype=self.dtype, memory_format=self.memory_format)
        self.net.requires_grad_(False).eval()
        self.stats.net_builds += 1
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self._weights: dict[tuple[str, ...], dict[str, Tensor]] = {}
        self._loaded: dict[tuple[str, ...], Objective] = {}  # what each buffer set holds now
        self._graphs = GraphCache(device, self.stats, "the torch dream steps")
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    @property
    def fuses_steps(self) -> bool:
        return self.cuda_graphs  # a captured few-step graph is short; splitting it would undo it

    def describe(self) -> str:
        mode = str(self.dtype).removeprefix("torch.")
        s = self.stats
        if not self.cuda_graphs:
            graphs = ""
        elif s.graph_failures and not s.graph_captures:
            graphs = ", step by step: CUDA graph capture failed"
        else:
            graphs = ", CUDA graphs"
        layout = ""
        if self.channels_last != (self.device.type == "cpu"):  # named only where it is not the device's default
            layout = ", channels-last" if self.channels_last else ", NCHW"
        note = self.graph_note() if s.graph_captures else ""
        return f"torch on {self.device} ({mode}{graphs}{layout}{note})"

    # ----- objective weights: one buffer set per layer set, refilled in place
    def load_objective(self, objective: Objective) -> dict[str, Tensor]:
        """Copy the objective's numbers into this layer set's device buffers (allocated once).

        Unchanged objectives copy nothing. Changed ones (a morph changes every frame) go through
        pinned memory without blocking, so the host never waits for the previous frame's GPU work.
        """
        bufs = self._weights.get(objective.layers)
        if bufs is None:
            wdtype = torch.promote_types(self.dtype, torch.float32)  # fp32 weights for fp16 compute
            bufs = {name: torch.zeros(len(w), device=self.device, dtype=wdtype) for name, w in objective.terms.items()}
            self._weights[objective.layers] = bufs
            self.stats.buffer_allocs += 1
        elif self._loaded.get(objective.layers) == objective:
            return bufs
        cuda = self.device.type == "cuda"
        for name, buf in bufs.items():
            host = torch.from_numpy(objective.weights(name))
            # pin_memory() draws from PyTorch's caching host allocator, which keeps a block alive
            # until its asynchronous copy has run.
            buf.copy_(host.pin_memory() if cuda else host, non_blocking=cuda)
        self._loaded[objective.layers] = objective
        return bufs

    def _gradient(self, x: Tensor, weights: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        xc = x.detach().to(dtype=self.dtype, memory_format=self.memory_format).requires_grad_(True)
        acts = self.net(xc, weights.keys())
        # Seed the backward with dL/da = 2·w·a/n scaled so its largest element is 1: unscaled it
        # underflows in fp16 for large maps and overflows at the BVLC net's 0..255 scale. One
        # scale for all layers (it cancels in the normalised step), divided out again at the end.
        seeds, score = [], torch.zeros((), device=x.device, dtype=x.dtype)
        peak = torch.zeros((), device=x.device, dtype=x.dtype)
        for name, a in acts.items():
            a_det = a.detach().to(x.dtype)
            n = a.shape[0] * a.shape[2] * a.shape[3]
            w = weights[name].to(x.dtype)
            score = score + (a_det.square().sum(dim=(0, 2, 3)) * w).sum() / n
            seed = a_det * (w * (2.0 / n)).view(1, -1, 1, 1)
            peak = torch.maximum(peak, seed.abs().amax())
            seeds.append(seed)
        peak = torch.clamp(peak, min=1e-30)  # an all-zero objective: zero seeds, zero gradient
        seeds = [(seed / peak).to(a.dtype) for seed, a in zip(seeds, acts.values())]
        (g,) = torch.autograd.grad(list(acts.values()), xc, seeds)
        return g.to(dtype=x.dtype, memory_format=torch.contiguous_format) * peak, score

    def gradient(self, x: Tensor, objective: Objective) -> tuple[Tensor, Tensor]:
        return self._gradient(x, self.load_objective(objective))

    def ascend(
        self,
        x: Tensor,
        objective: Objective,
        steps: int,
        step: Tensor,
        jitter: int,
        lo: Tensor,
        hi: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        weights = self.load_objective(objective)

        def gradient(z: Tensor) -> Tensor:
            return self._gradient(z, weights)[0]

        if self.cuda_graphs and steps > 0:
            shape = tuple(x.shape)
            captured = self._graphs.get(
                (shape, objective.layers, steps), lambda: capture_ascent(gradient, shape, steps, self.device)
            )
            if captured is not None:
                return captured(x, step, jitter, lo, hi)
        return ascent_steps(gradient, x, steps, step, jitter, lo, hi, generator)


DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def create(model: Model, device: torch.device, *, precision: str | None = None, no_build: bool = False) -> TorchBackend:
    """Registry entry point (see :data:`live.backends.BACKENDS`). ``precision`` as decided by
    :func:`live.backends.resolve_precision` (fp16 on CUDA, fp32 on the CPU; fp16 on the CPU
    runs, slowly, for comparisons); ``no_build`` has no meaning here (nothing is built)."""
    return TorchBackend(model, device, dtype=DTYPES[resolve_precision(precision, device)])
