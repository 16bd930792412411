"""The forward-ops-only gradient graph equals autograd in float64: every catalog layer, mixed
layer and channel weights, ceil-mode pooling edges and exact ties in max-pool windows."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from live.backends.forward_graph import GradientGraph
from live.model import catalog

TOL = 1e-6


@pytest.fixture(scope="module")
def net64(model):
    return copy.deepcopy(model.net).double()  # a copy: the session's model stays float32


@pytest.fixture(scope="module")
def bvlc64():
    from live.model.bvlc import random_bvlc

    return random_bvlc(seed=3).double()


def _autograd(net, x: torch.Tensor, weights: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    acts = net(x, weights.keys())
    score = sum((acts[name].square().mean(dim=(0, 2, 3)) * w).sum() for name, w in weights.items())
    (g,) = torch.autograd.grad(score, x)
    return g, score.detach()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("size", [(64, 96), (67, 45)], ids=["64x96", "odd-67x45"])
def test_every_catalog_layer_matches_autograd(net64, size) -> None:
    # 67x45: every ceil-mode pool has an overhang on at least one side (and conv1 an odd input).
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, *size, generator=gen, dtype=torch.float64)
    for layer in catalog.LAYERS:
        w = {layer.name: torch.rand(layer.channels, generator=gen, dtype=torch.float64)}
        want, want_score = _autograd(net64, x, w)
        got, score = GradientGraph(net64, [layer.name], torch.float64)(x, *w.values())
        assert _rel(got, want) < TOL, layer.name
        assert abs(score.item() - want_score.item()) <= TOL * abs(want_score.item()), layer.name


def test_mixed_layer_and_channel_weights_match_autograd(net64) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 70, 99, generator=gen, dtype=torch.float64)  # batch of two, odd sizes
    weights = {}
    for name in ("conv2", "inception3b", "inception4e", "inception5a"):
        w = torch.randn(catalog.BY_NAME[name].channels, generator=gen, dtype=torch.float64)
        w[torch.rand(w.shape, generator=gen) < 0.7] = 0  # sparse, signed: focus and suppression
        weights[name] = w
    want, want_score = _autograd(net64, x, weights)
    got, score = GradientGraph(net64, list(weights), torch.float64)(x, *weights.values())
    assert _rel(got, want) < TOL
    assert abs(score.item() - want_score.item()) <= TOL * abs(want_score.item())


@pytest.mark.parametrize(("k", "s", "p"), [(3, 2, 0), (2, 2, 0), (3, 1, 1)])
@pytest.mark.parametrize("size", [(9, 9), (10, 13), (7, 4)])
def test_max_pool_backward_keeps_pytorchs_first_maximum_on_exact_ties(net64, k, s, p, size) -> None:
    # Values from {0, 1, 2}: most windows hold several equal maxima.
    gen = torch.Generator().manual_seed(k * 100 + s * 10 + p)
    x = torch.randint(0, 3, (2, 4, *size), generator=gen).double()
    pool = torch.nn.MaxPool2d(k, s, p, ceil_mode=True)
    dy_shape = pool(x).shape
    dy = torch.randn(dy_shape, generator=gen, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(F.max_pool2d(xr, k, s, p, ceil_mode=True), xr, dy)

    graph = GradientGraph(net64, ["inception5b"], torch.float64)  # has kernels for every pool in the trunk
    graph.register_buffer("onehot_4_%d" % k, torch.eye(k * k, dtype=torch.float64).view(k * k, 1, k, k).repeat(4, 1, 1, 1))
    graph._onehot_names[(4, k)] = "onehot_4_%d" % k
    y, backward = graph._max_pool(pool, x)
    assert torch.equal(y, pool(x))
    got = backward(dy)
    # Overlapping windows add in another order than autograd: rounding only, a wrong route is O(1).
    assert (got - want).abs().max().item() < 1e-12


def test_layers_must_be_canonical_order_and_distinct(net64) -> None:
    with pytest.raises(ValueError, match="shallowest first"):
        GradientGraph(net64, ["inception4c", "conv2"])
    with pytest.raises(ValueError, match="distinct"):
        GradientGraph(net64, ["conv2", "conv2"])


@pytest.mark.parametrize("size", [(64, 96), (67, 45)], ids=["64x96", "odd-67x45"])
def test_every_bvlc_layer_matches_autograd_lrn_included(bvlc64, size) -> None:
    """The BVLC network: LRN after conv1's pool and conv3, real 5x5 branches, 3x3 s2 pool4."""
    gen = torch.Generator().manual_seed(2)
    x = 60.0 * torch.randn(1, 3, *size, generator=gen, dtype=torch.float64)  # Caffe's 0..255 scale
    for layer in catalog.BVLC.layers:
        w = {layer.name: torch.rand(layer.channels, generator=gen, dtype=torch.float64)}
        want, want_score = _autograd(bvlc64, x, w)
        got, score = GradientGraph(bvlc64, [layer.name], torch.float64)(x, *w.values())
        assert _rel(got, want) < TOL, layer.name
        assert abs(score.item() - want_score.item()) <= TOL * abs(want_score.item()), layer.name


def test_bvlc_mixed_weights_across_an_lrn_match_autograd(bvlc64) -> None:
    gen = torch.Generator().manual_seed(4)
    x = 60.0 * torch.randn(1, 3, 96, 64, generator=gen, dtype=torch.float64)
    weights = {name: torch.randn(catalog.BVLC.by_name[name].channels, generator=gen, dtype=torch.float64)
               for name in ("norm1", "norm2", "inception4c")}
    want, _ = _autograd(bvlc64, x, weights)
    got, _ = GradientGraph(bvlc64, list(weights), torch.float64)(x, *weights.values())
    assert _rel(got, want) < TOL
