"""Dreaming: the objective rises, jitter/clamp behave, settings are checked, and live changes of
objective are numbers only - no network rebuilt, no buffers reallocated for a known layer set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from live.backends import open_backend
from live.backends.torch_backend import TorchBackend
from live.ascent import jitter_shift, roll2d
from live.dreamer import Dreamer, DreamSettings, octave_shapes
from live.errors import UsageError
from live.objectives import Objective


@pytest.fixture(scope="module")
def backend(model) -> TorchBackend:
    return TorchBackend(model, torch.device("cpu"))


def _photo_input(model, photo: np.ndarray, size: tuple[int, int] = (128, 192)) -> torch.Tensor:
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)
    return model.space.to_model(x)


@pytest.mark.parametrize("layer", ["conv2", "inception3b", "inception4c", "inception5b"])
def test_objective_rises_over_a_few_steps(model, backend, photo, layer: str) -> None:
    obj = Objective.parse(layer)
    x = _photo_input(model, photo)
    before = backend.gradient(x, obj)[1].item()
    y = Dreamer(backend, model.space, seed=0).dream(x, obj, DreamSettings(steps=5, octaves=1, jitter=8))
    after = backend.gradient(y, obj)[1].item()
    assert after > before * 1.05, (before, after)
    assert y.shape == x.shape


def test_dream_stays_in_the_valid_pixel_range(model, backend, photo) -> None:
    x = _photo_input(model, photo)
    y = Dreamer(backend, model.space, seed=0).dream(x, Objective.parse("conv3"), DreamSettings(steps=6, step_size=40, octaves=2))
    picture = model.space.to_picture(y)
    assert picture.min() >= -1e-6 and picture.max() <= 1 + 1e-6
    # and such a large step really pushes pixels to the bounds
    assert (picture <= 1e-4).any() or (picture >= 1 - 1e-4).any()


def test_odd_sizes_and_octaves_return_the_input_size(model, backend, photo) -> None:
    x = _photo_input(model, photo, size=(101, 77))
    y = Dreamer(backend, model.space, seed=0).dream(x, Objective.parse("inception4a"), DreamSettings(steps=1, octaves=3))
    assert y.shape == x.shape and not torch.equal(x, y)


def test_seed_makes_dreams_repeatable(model, backend, photo) -> None:
    x = _photo_input(model, photo)
    obj, settings = Objective.parse("inception3a"), DreamSettings(steps=3, octaves=1, jitter=16)
    a = Dreamer(backend, model.space, seed=5).dream(x, obj, settings)
    b = Dreamer(backend, model.space, seed=5).dream(x, obj, settings)
    c = Dreamer(backend, model.space, seed=6).dream(x, obj, settings)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_roll2d_matches_torch_roll() -> None:
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    for dy, dx in [(0, 0), (2, -3), (-6, 9)]:
        assert torch.equal(roll2d(x, torch.tensor([dy, dx])), torch.roll(x, (dy, dx), dims=(2, 3)))


def test_jitter_stays_within_its_amplitude() -> None:
    gen = torch.Generator().manual_seed(0)
    shifts = torch.stack([jitter_shift(4, gen, torch.device("cpu")) for _ in range(500)])
    assert shifts.min() == -4 and shifts.max() == 4


def test_octave_shapes_smallest_first_and_end_at_full_size() -> None:
    shapes = octave_shapes(360, 640, 4, 1.4)
    assert shapes[-1] == (360, 640) and shapes[0] == (131, 233)
    assert all(a[0] < b[0] for a, b in zip(shapes, shapes[1:]))
    assert octave_shapes(40, 40, 5, 2.0) == [(40, 40)]  # octaves under 32 px are dropped
    assert all(h % 32 == 0 and w % 32 == 0 for h, w in octave_shapes(384, 640, 3, 1.4, multiple=32))


@pytest.mark.parametrize("bad", [dict(steps=-1), dict(octaves=0), dict(octave_scale=0.5), dict(step_size=-1.0), dict(jitter=1000)])
def test_settings_out_of_range_are_rejected(bad: dict) -> None:
    with pytest.raises(UsageError, match=next(iter(bad))):
        DreamSettings(**bad)


def test_switching_layer_and_morphing_change_the_gradient_without_rebuilding(model, photo) -> None:
    backend = TorchBackend(model, torch.device("cpu"))
    net = backend.net
    x = _photo_input(model, photo, size=(96, 128))
    a, b = Objective.parse("inception3b"), Objective.parse("inception4c")

    g_a = backend.gradient(x, a)[0]
    g_b = backend.gradient(x, b)[0]
    assert not torch.allclose(g_a, g_b, rtol=0.05, atol=0)

    # a channel focus within the same layer: different gradient, same buffers
    bufs = backend.load_objective(b)["inception4c"]
    g_ch = backend.gradient(x, Objective.parse("inception4c:97"))[0]
    assert backend.load_objective(b)["inception4c"] is bufs
    assert not torch.allclose(g_b, g_ch, rtol=0.05, atol=0)

    # a two-second cross-fade at 30 fps: 60 different objectives over one layer set
    grads = [backend.gradient(x, a.lerp(b, t))[0] for t in np.linspace(0, 1, 60)]
    assert torch.allclose(grads[0], g_a, rtol=1e-4, atol=1e-9)
    assert torch.allclose(grads[-1], g_b, rtol=1e-4, atol=1e-9)
    cos_to_b = [torch.nn.functional.cosine_similarity(g.flatten(), g_b.flatten(), dim=0).item() for g in grads]
    assert cos_to_b[-1] > cos_to_b[30] > cos_to_b[0]

    # switching back and forth again
    for _ in range(3):
        backend.gradient(x, a)
        backend.gradient(x, b)

    assert backend.net is net
    assert backend.stats.net_builds == 1
    # layer sets seen: {3b}, {4c}, {3b, 4c} - one buffer set each, however many switches
    assert backend.stats.buffer_allocs == 3


def test_auto_backend_on_a_cpu_machine_is_torch_on_cpu(model) -> None:
    backend = open_backend("auto", model, "auto")
    assert backend.name == "torch" and backend.device.type in ("cpu", "cuda")


def test_explicit_unavailable_device_fails_with_its_reason(model) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from live.errors import UnavailableError

    with pytest.raises(UnavailableError, match="sees no CUDA device"):
        open_backend("torch", model, "cuda")


def test_unknown_backend_names_the_valid_ones(model) -> None:
    with pytest.raises(UsageError, match="expected auto or one of: torch"):
        open_backend("tensorflow", model)


def test_graph_cache_captures_once_per_key_and_falls_back_once_with_the_reason(caplog) -> None:
    from live.backends import BackendStats
    from live.backends.cuda_graph import GraphCache

    stats = BackendStats()
    cache = GraphCache(torch.device("cpu"), stats, "test steps")
    made = []
    assert cache.get("a", lambda: made.append(1) or "graph-a") == "graph-a"
    assert cache.get("a", lambda: made.append(1) or "other") == "graph-a"  # no recapture

    def broken():
        made.append(2)
        raise RuntimeError("operation not permitted when stream is capturing")

    assert cache.get("b", broken) is None and cache.get("b", broken) is None  # eager from now on, no retry
    assert cache.get("c", broken) is None
    assert made == [1, 2, 2] and stats.graph_captures == 1 and stats.graph_failures == 2
    assert caplog.text.count("CUDA graph capture of test steps failed (RuntimeError: operation not permitted") == 1


def test_a_failed_cuda_graph_capture_is_counted_and_said_in_describe(model, monkeypatch) -> None:
    """A capture that fails runs step by step (several times slower on a GPU): describe(), which
    the status line, the overlay and the GPU check's rows show, must not say "CUDA graphs" then.
    Rehearsed on the CPU with the capture standing in (the cache and describe() are the real ones)."""
    from live.backends import torch_backend

    backend = TorchBackend(model, torch.device("cpu"))
    backend.cuda_graphs = True  # as on CUDA

    def broken(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch_backend, "capture_ascent", broken)
    obj = Objective.parse("inception3a")
    x = model.space.to_model(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    step, lo, hi = torch.full((1, 3, 1, 1), 0.01), -torch.ones(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    y = backend.ascend(x, obj, 2, step, 0, lo, hi)
    assert torch.isfinite(y).all() and not torch.equal(y, x)  # it still dreamed, step by step
    assert (backend.stats.graph_captures, backend.stats.graph_failures) == (0, 1)
    assert backend.describe() == "torch on cpu (float32, step by step: CUDA graph capture failed)"

    monkeypatch.setattr(torch_backend, "capture_ascent", lambda gradient, shape, steps, device: (
        lambda x, step, jitter, lo, hi: x))  # another size captures
    backend.ascend(x[..., :32], obj, 2, step, 0, lo, hi)
    assert backend.describe() == ("torch on cpu (float32, CUDA graphs; 1 of 2 CUDA graph captures failed: those run "
                                  "step by step)")
