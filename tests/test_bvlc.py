"""The BVLC (Caffe) GoogLeNet: LRN against PyTorch's, shapes and truncation, its input space, its
catalog beside torchvision's, and dreaming with it end to end (still image and live loop)."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import torch

from live.app import LiveLoop
from live.backends import open_backend
from live.backends.torch_backend import TorchBackend
from live.control.params import Registry
from live.dreamer import Dreamer, DreamSettings, resize
from live.errors import UsageError
from live.model import MODELS, Model, catalog, load_model
from live.model.bvlc import BVLC_SPACE, LRN, SEQUENCE, BVLCGoogLeNet, channel_window_sum
from live.objectives import Objective
from live.outputs import Fanout
from live.sources import ImageSource
from tests.conftest import Collect, photo_path


@pytest.fixture(scope="module")
def bvlc_model() -> Model:
    return load_model("random:5", model="bvlc")


# ----- LRN


@pytest.mark.parametrize("size", [5, 3, 1])
def test_lrn_matches_pytorchs_local_response_norm(size: int) -> None:
    x = torch.randn(2, 13, 9, 7, dtype=torch.float64) * 120.0  # Caffe's 0..255 scale, where LRN bites
    ours = LRN(size, 1e-4, 0.75, 1.0)(x)
    theirs = torch.nn.LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=1.0)(x)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ours, x, rtol=1e-2)  # it actually normalises at this scale


def test_lrn_is_what_caffes_deploy_prototxt_says() -> None:
    norm = BVLCGoogLeNet().norm1
    assert (norm.size, norm.alpha, norm.beta, norm.k) == (5, 1e-4, 0.75, 1.0)
    with pytest.raises(ValueError, match="odd"):
        LRN(4)  # Caffe only has odd windows


def test_lrn_does_not_overflow_in_float16() -> None:
    x = torch.full((1, 8, 2, 2), 600.0)  # 600² overflows float16 (max 65504)
    half = LRN()(x.half()).float()
    assert torch.isfinite(half).all() and torch.allclose(half, LRN()(x), rtol=1e-2)


def test_lrn_input_gradient_in_forward_ops_matches_autograd() -> None:
    # The forward-only gradient graph needs LRN's backward without autograd.
    lrn = LRN()
    x = (torch.randn(2, 11, 5, 6, dtype=torch.float64) * 150.0).requires_grad_(True)
    g = torch.randn(2, 11, 5, 6, dtype=torch.float64)
    (want,) = torch.autograd.grad(lrn(x), x, g)
    assert torch.allclose(lrn.input_gradient(x.detach(), g), want, rtol=1e-10, atol=1e-12)


def test_channel_window_sum_is_a_zero_padded_window() -> None:
    t = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_window_sum(t, 5).flatten().tolist() == [3.0, 6.0, 10.0, 15.0, 14.0, 12.0]


# ----- the network


def test_every_catalog_layer_has_caffes_shape(bvlc_model: Model) -> None:
    names = [layer.name for layer in catalog.BVLC.layers]
    assert {"norm1", "norm2"} <= set(names)
    with torch.no_grad():
        acts = bvlc_model.net(torch.randn(1, 3, 224, 224) * 60.0, names)
    side = {"conv1": 112, "norm1": 56, "conv2": 56, "conv3": 56, "norm2": 56, "inception3a": 28, "inception3b": 28,
            "inception5a": 7, "inception5b": 7}  # fmt: skip
    for layer in catalog.BVLC.layers:
        a = acts[layer.name]
        assert a.shape[1] == layer.channels, layer.name
        assert a.shape[2:] == (side.get(layer.name, 14),) * 2, layer.name  # Caffe's ceil-mode pools
        assert a.std() > 1.0, layer.name  # He init: random activations keep their scale


def test_the_forward_stops_at_the_deepest_needed_layer(bvlc_model: Model) -> None:
    ran: list[str] = []
    hooks = [getattr(bvlc_model.net, name).register_forward_hook(lambda m, i, o, n=name: ran.append(n))
             for name, _ in SEQUENCE]  # fmt: skip
    try:
        with torch.no_grad():
            acts = bvlc_model.net(torch.zeros(1, 3, 64, 64), ["norm1"])
            assert list(acts) == ["norm1"] and ran == ["conv1", "pool1", "norm1"]
            ran.clear()
            acts = bvlc_model.net(torch.zeros(1, 3, 64, 64), ["conv3", "norm2"])
            assert sorted(acts) == ["conv3", "norm2"] and ran[-1] == "norm2" and "pool2" not in ran
    finally:
        for hook in hooks:
            hook.remove()


def test_layer_names_resolve_in_both_catalogs() -> None:
    assert catalog.resolve("pool1/norm1", model="bvlc").name == "norm1"
    assert catalog.resolve("conv2/norm2", model="bvlc").name == "norm2"
    assert catalog.resolve("inception_4c/output", model="bvlc").name == "inception4c"
    assert catalog.resolve("conv2/3x3", model="bvlc").name == "conv3"
    assert catalog.resolve("norm1").name == "norm1"  # without a model: any network's layer
    assert [layer.name for layer in catalog.TORCHVISION.layers] == [layer.name for layer in catalog.LAYERS]
    assert MODELS == ("torchvision", "bvlc")


def test_a_bvlc_only_layer_on_torchvision_is_a_clear_error(model: Model) -> None:
    objective = Objective.parse("0.5*pool1/norm1 + inception4c")  # as the registry parses: no model
    assert objective.layers == ("norm1", "inception4c")
    with pytest.raises(UsageError, match="'norm1' .*only in the bvlc model.*--model bvlc"):
        Objective.parse("pool1/norm1", model="torchvision")
    with pytest.raises(UsageError, match="only in the bvlc model"):
        model.check_layers(objective.layers)
    objective.check("bvlc")  # fine on the network that has it
    # and should it reach the network anyway, the network says the same
    with pytest.raises(UsageError, match="only in the bvlc model"):
        TorchBackend(model, torch.device("cpu")).gradient(torch.zeros(1, 3, 64, 64), objective)


def test_unknown_model_lists_both() -> None:
    with pytest.raises(UsageError, match="unknown model 'caffe'; expected one of: torchvision, bvlc"):
        load_model("random", model="caffe")


def test_random_bvlc_weights_are_seeded_and_announced(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        a = load_model("random:3", model="bvlc")
    b, c = load_model("random:3", model="bvlc"), load_model("random:4", model="bvlc")
    assert "RANDOM weights (seed 3)" in caplog.text and a.weights.is_random
    assert torch.equal(a.net.conv1.conv.weight, b.net.conv1.conv.weight)
    assert not torch.equal(a.net.conv1.conv.weight, c.net.conv1.conv.weight)


# ----- the input space


def test_bvlc_input_space_is_bgr_0_255_minus_the_mean() -> None:
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0  # RGB red
    x = BVLC_SPACE.to_model(red)
    assert x[0, :, 0, 0].tolist() == [-104.0, -117.0, 255.0 - 123.0]  # B, G, R
    picture = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    assert torch.allclose(BVLC_SPACE.to_picture(BVLC_SPACE.to_model(picture)), picture, atol=1e-12)
    lo, hi = BVLC_SPACE.bounds(picture)
    assert lo.flatten().tolist() == [-104.0, -117.0, -123.0] and hi.flatten().tolist() == [151.0, 138.0, 132.0]
    assert BVLC_SPACE.per_grey_level(picture).flatten().tolist() == [1.0, 1.0, 1.0]  # 1.5 = the 2015 step


# ----- dreaming with it


def test_still_image_dreaming_on_bvlc_end_to_end(bvlc_model: Model) -> None:
    # StillJob has no model field yet: the pieces dream_still wires, with model="bvlc".
    backend = open_backend("torch", bvlc_model, "cpu")
    dreamer = Dreamer(backend, bvlc_model.space, seed=0)
    objective = Objective.parse("inception3b", model="bvlc")
    photo = cv2.cvtColor(cv2.imread(str(photo_path("chelsea.png"))), cv2.COLOR_BGR2RGB)
    picture = resize(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0, (96, 128))
    x = bvlc_model.space.to_model(picture)
    before = backend.gradient(x, objective)[1]
    y = dreamer.dream(x, objective, DreamSettings(steps=2, octaves=2, jitter=8))
    after = backend.gradient(y, objective)[1]
    out = bvlc_model.space.to_picture(y)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert out.min() >= -1e-5 and out.max() <= 1 + 1e-5  # clamped to valid pixels
    assert (out - picture).abs().mean() > 1.0 / 255  # visibly dreamed
    assert after > before  # the objective rose


def test_live_loop_dreams_on_bvlc(bvlc_model: Model) -> None:
    registry = Registry()
    registry.update(
        {"width": 128, "height": 96, "steps": 1, "jitter": 4, "fps_cap": 240, "objective": "norm2 + inception3a"}
    )
    out = Collect()
    fan = Fanout([out])
    fan.open(128, 96, 30)
    camera = cv2.imread(str(photo_path("coffee.png")))  # outputs at the photo's own size, the dream at 128x96
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        loop = LiveLoop(photo, bvlc_model, TorchBackend(bvlc_model, torch.device("cpu")), registry, fan, seed=0,
                        status_every=3600, present="dream")  # fmt: skip  (each frame out its own dream)
        report = loop.run(max_frames=4)
    assert report.frames == 4 and len(out.frames) == 4
    assert all(f.shape == camera.shape for f in out.frames)
    assert all(np.abs(f.astype(int) - camera).mean() > 1.0 for f in out.frames)  # dreamed, not passed through
