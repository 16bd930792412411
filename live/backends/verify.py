"""Verification of exported graphs and TensorRT plans against the torch gradient.

A plan or an onnxruntime session is trusted only after it has given the right gradient once: on a
fixed random input of its own shape and fixed random objective weights over its layer set, its
gradient must reach a cosine of 0.99 (fp16) or 0.9999 (fp32) to the torch backend's gradient in
float64 on the same device (docs/architecture.md, "Engines and calibration"). Cosine, not maximum
error: one rounding can flip a ReLU or a max decision without making the gradient worse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from live.backends.torch_backend import TorchBackend
from live.engines import Verification, verification_for
from live.model import Model
from live.objectives import Objective

SEED = 20150701  # fixed: the same input for every verification of a shape, run after run

Gradient = Callable[[Tensor, Objective], Tensor]


def probe(model: Model, shape: Sequence[int], layers: Sequence[str], device: torch.device) -> tuple[Tensor, Objective]:
    """The fixed random input (model space, float32, on ``device``) and objective for a shape."""
    gen = torch.Generator().manual_seed(SEED)
    x = model.space.to_model(torch.rand(tuple(shape), generator=gen)).to(device)
    terms = {name: torch.rand(model.catalog.by_name[name].channels, generator=gen).numpy() for name in layers}
    return x, Objective(terms)


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two gradients, in float64 (NaN when either has a NaN or is zero)."""
    a64, b64 = a.detach().double().flatten(), b.detach().double().flatten().to(a.device)
    denom = a64.norm() * b64.norm()
    return float((a64 @ b64 / denom).item()) if denom > 0 else float("nan")


def reference_gradient(model: Model, x: Tensor, objective: Objective) -> Tensor:
    """The torch backend's gradient in float64 on ``x``'s device: the yardstick."""
    backend = TorchBackend(model, x.device, dtype=torch.float64, cuda_graphs=False)
    grad, _ = backend.gradient(x.double(), objective)
    return grad


def verify(gradient: Gradient, model: Model, shape: Sequence[int], layers: Sequence[str], precision: str,
           device: torch.device) -> Verification:
    """Compare ``gradient(x, objective)`` with the float64 torch gradient on the fixed probe."""
    x, objective = probe(model, shape, layers, device)
    with torch.inference_mode(False):
        want = reference_gradient(model, x, objective)
        got = gradient(x, objective)
    if got.shape != want.shape:
        return verification_for(precision, float("nan"), f"torch float64 on {device.type} "
                                f"(shape {tuple(got.shape)} instead of {tuple(want.shape)})")
    return verification_for(precision, cosine(got, want), f"torch float64 on {device.type}")
