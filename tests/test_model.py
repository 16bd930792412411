"""GoogLeNet: loading torchvision checkpoints, batch-norm folding, truncation, the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from live.backends.torch_backend import TorchBackend
from live.errors import UsageError
from live.model import catalog
from live.model.googlenet import DreamNet, fold_batchnorm
from live.model.weights import read_checkpoint
from live.objectives import Objective


def _reference_activations(reference: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    acts: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(reference, layer.name).register_forward_hook(lambda m, i, o, n=layer.name: acts.__setitem__(n, o))
        for layer in catalog.LAYERS
    ]
    try:
        reference(x)
    finally:
        for h in hooks:
            h.remove()
    return acts


def test_loader_reads_back_a_torchvision_checkpoint(reference: torch.nn.Module, checkpoint: Path) -> None:
    loaded = read_checkpoint(checkpoint)
    expected = reference.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_checkpoint_keys_are_torchvisions(checkpoint: Path) -> None:
    keys = set(torch.load(checkpoint, weights_only=True))
    # torchvision's names, as in googlenet-1378be20.pth
    for key in ("conv1.conv.weight", "conv1.bn.running_var", "inception4c.branch2.1.conv.weight",
                "inception5b.branch4.1.bn.bias", "aux1.fc2.weight", "fc.bias"):
        assert key in keys


def test_folded_forward_equals_unfolded(reference: torch.nn.Module) -> None:
    folded = fold_batchnorm(reference)
    x = torch.randn(2, 3, 160, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = _reference_activations(reference, x)
        got = folded(x, [layer.name for layer in catalog.LAYERS])
    for name, a in want.items():
        rel = (got[name] - a).norm() / a.norm()
        assert rel < 1e-5, (name, rel.item())


def test_catalog_channel_counts_match_the_network(reference: torch.nn.Module) -> None:
    with torch.no_grad():
        acts = fold_batchnorm(reference)(torch.zeros(1, 3, 96, 96), [layer.name for layer in catalog.LAYERS])
    assert {n: a.shape[1] for n, a in acts.items()} == {layer.name: layer.channels for layer in catalog.LAYERS}


def test_forward_stops_at_the_deepest_needed_layer(reference: torch.nn.Module) -> None:
    net = fold_batchnorm(reference)
    ran: list[str] = []
    for layer in catalog.LAYERS:
        getattr(net, layer.name).register_forward_hook(lambda m, i, o, n=layer.name: ran.append(n))
    acts = net(torch.zeros(1, 3, 64, 64), ["conv2", "inception3b"])
    assert set(acts) == {"conv2", "inception3b"}
    assert ran == ["conv1", "conv2", "conv3", "inception3a", "inception3b"]


def test_truncated_network_dreams_on_images_too_small_for_the_whole_network(model) -> None:
    # Whole-network dreaming fails below ~15 px at the deepest pool; a shallow objective does not care.
    backend = TorchBackend(model, torch.device("cpu"))
    g, _ = backend.gradient(torch.randn(1, 3, 12, 12), Objective.parse("conv2"))
    assert g.shape == (1, 3, 12, 12) and g.abs().sum() > 0


@pytest.mark.parametrize("objective", ["conv2", "inception3b:7", "inception4c", "0.5*inception3b + inception5b"])
def test_truncated_gradient_equals_full_network_gradient(reference, model, objective: str) -> None:
    """Autograd through the full, unfolded torchvision network (to the classifier) vs. the backend."""
    obj = Objective.parse(objective)
    x = torch.randn(1, 3, 128, 160, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    full = reference.double()
    xr = x.clone().requires_grad_(True)
    acts = {}
    hooks = [getattr(full, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in obj.layers]
    full(xr)  # the whole network, classifier included
    for h in hooks:
        h.remove()
    loss = sum((acts[n].pow(2).mean(dim=(0, 2, 3)) * torch.from_numpy(obj.weights(n)).double()).sum() for n in obj.layers)
    (want,) = torch.autograd.grad(loss, xr)
    reference.float()

    backend = TorchBackend(model, torch.device("cpu"), dtype=torch.float64)
    got, score = backend.gradient(x, obj)
    assert torch.allclose(score, loss.detach(), rtol=1e-5)
    rel = (got - want).norm() / want.norm()
    assert rel < 1e-5, rel.item()


@pytest.mark.parametrize(
    ("alias", "name"),
    [("inception_4c/output", "inception4c"), ("mixed4c", "inception4c"), ("MIXED5B", "inception5b"),
     ("conv2/3x3", "conv3"), ("conv2d0", "conv1"), ("8", "inception4c")],
)
def test_aliases_resolve(alias: str, name: str) -> None:
    assert catalog.resolve(alias).name == name


def test_unknown_layer_lists_the_valid_names() -> None:
    with pytest.raises(UsageError) as e:
        catalog.resolve("inception9z")
    message = str(e.value)
    assert "inception9z" in message
    for layer in catalog.LAYERS:
        assert layer.name in message


def test_dreamnet_weights_never_require_grad(model) -> None:
    assert isinstance(model.net, DreamNet)
    assert not any(p.requires_grad for p in model.net.parameters())
    backend = TorchBackend(model, torch.device("cpu"))
    assert not any(p.requires_grad for p in backend.net.parameters())
