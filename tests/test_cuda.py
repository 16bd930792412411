"""The torch backend on an NVIDIA GPU: fp16 agreement and CUDA-graph capture. Skipped without CUDA.

The CPU tests cover the same code paths up to the device (the ascent math that is captured is
``live.ascent.ascent_steps``, exercised on the CPU everywhere else).
"""

from __future__ import annotations

import pytest
import torch

from live.backends.torch_backend import TorchBackend
from live.dreamer import Dreamer, DreamSettings
from live.objectives import Objective

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU and a CUDA build of PyTorch"),
]


def test_fp16_gradient_agrees_with_float64(model) -> None:
    dev = torch.device("cuda")
    x = model.space.to_model(torch.rand(1, 3, 224, 224, device=dev, generator=torch.Generator(dev).manual_seed(0)))
    for text in ("conv2", "inception4c", "0.5*inception3b + inception5b"):
        obj = Objective.parse(text)
        g16, _ = TorchBackend(model, dev, cuda_graphs=False).gradient(x, obj)
        g64, _ = TorchBackend(model, dev, dtype=torch.float64).gradient(x.double(), obj)
        assert torch.isfinite(g16).all()
        cos = torch.nn.functional.cosine_similarity(g16.double().flatten(), g64.flatten(), dim=0)
        assert cos >= 0.99, (text, cos.item())


def test_one_graph_per_shape_and_layer_set_and_numbers_change_without_recapture(model) -> None:
    dev = torch.device("cuda")
    backend = TorchBackend(model, dev)
    dreamer = Dreamer(backend, model.space, seed=0)
    x = model.space.to_model(torch.rand(1, 3, 256, 448, device=dev))
    settings = DreamSettings(steps=4, octaves=1, jitter=16)
    a, b = Objective.parse("inception3b"), Objective.parse("inception4c")

    fade = [dreamer.dream(x, a.lerp(b, t), settings) for t in (0.0, 0.3, 0.6, 1.0)]
    assert backend.stats.graph_captures == 1  # one layer set {3b, 4c}: weights are numbers
    assert all(torch.isfinite(y).all() for y in fade)
    assert not torch.allclose(fade[0], fade[-1])
    assert not torch.equal(dreamer.dream(x, a, settings), dreamer.dream(x, a, settings))  # jitter varies per replay

    dreamer.dream(x, Objective.parse("inception4c:97"), settings)
    dreamer.dream(x, a, settings)
    assert backend.stats.graph_captures == 3  # + {4c}, + {3b}
    dreamer.dream(x, b, settings)
    assert backend.stats.graph_captures == 3
    assert backend.stats.net_builds == 1


def test_graph_and_eager_ascend_alike(model) -> None:
    dev = torch.device("cuda")
    x = model.space.to_model(torch.rand(1, 3, 224, 320, device=dev))
    obj, settings = Objective.parse("inception4a"), DreamSettings(steps=4, octaves=1, jitter=0)
    graphed = Dreamer(TorchBackend(model, dev), model.space, seed=0).dream(x, obj, settings)
    eager = Dreamer(TorchBackend(model, dev, cuda_graphs=False), model.space, seed=0).dream(x, obj, settings)
    cos = torch.nn.functional.cosine_similarity((graphed - x).flatten(), (eager - x).flatten(), dim=0)
    assert cos > 0.99


def test_live_loop_on_cuda_dreams_each_frame_and_captures_once(model) -> None:
    import cv2
    import numpy as np

    from live.app import LiveLoop
    from live.control.params import Registry
    from live.outputs import Fanout, NullOutput
    from live.sources import ImageSource
    from tests.conftest import photo_path

    class Keep(NullOutput):
        def send(self, frame):
            self.last = frame.copy()
            super().send(frame)

    dev = torch.device("cuda")
    backend = TorchBackend(model, dev)
    registry = Registry()
    registry.update({"width": 640, "height": 352, "steps": 4, "fps_cap": 240})
    out = Keep()
    fan = Fanout([out])
    fan.open(640, 352, 240)
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        loop = LiveLoop(photo, model, backend, registry, fan, status_every=3600, present="dream")
        assert loop.dream_loop.stream is not None and loop.presenter.stream is not None  # a stream each
        report = loop.run(max_frames=12)
    assert report.frames == out.sent == 12 and report.dreams >= 12
    camera = cv2.imread(str(photo_path("coffee.png")))  # outputs at the photo's own size, the dream at 640x352
    assert out.last.shape == camera.shape and np.abs(out.last.astype(int) - camera).mean() > 2
    assert backend.stats.graph_captures == 1


def test_the_presenter_never_synchronises_on_the_dream(model, caplog) -> None:
    """At the camera's pace on CUDA the dream runs on its own stream, and neither pace makes a
    synchronising call in its steady state: PyTorch's sync debug mode turns any such call into an
    error (in the presenter it would end the run; in the dreamer it would fail the dream, which is
    logged). Warm-up first: graph capture, cached grids and pinned buffers may synchronise once."""
    import logging

    from live.app import LiveLoop
    from live.control.params import Registry
    from live.outputs import Fanout, NullOutput
    from live.sources import ImageSource
    from tests.conftest import photo_path

    class Keep(NullOutput):
        def send(self, frame, timestamp=None):
            self.last = frame.copy()
            super().send(frame)

    caplog.set_level(logging.WARNING)
    dev = torch.device("cuda")
    registry = Registry()
    registry.update({"width": 960, "height": 544, "steps": 4, "fps_cap": 240})
    out = Keep()
    fan = Fanout([out])
    fan.open(1280, 720, 60)
    with ImageSource(photo_path("coffee.png"), fps=60) as photo:
        loop = LiveLoop(photo, model, TorchBackend(model, dev), registry, fan, status_every=3600,
                        output_size=(1280, 720))
        warm = loop.run(max_frames=60)
        assert warm.dreams >= 2, warm
        torch.cuda.set_sync_debug_mode("error")
        try:
            report = loop.run(max_frames=120)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert report.frames == 120 and report.dreams >= 2, report
    assert loop.dream_loop.degraded() is None and "the dream failed" not in caplog.text, caplog.text
    assert out.last.shape == (720, 1280, 3)
    print(f"presenter {report.fps:.1f} fps, dreams {report.dream_fps:.1f} a second, latency "
          f"{report.latency_ms:.1f} ms (p95 {report.latency_p95_ms:.1f}), dream age {report.dream_age_ms} ms")


@pytest.mark.parametrize("model_name", ["torchvision", "bvlc"])
def test_fp16_on_cuda_torch_and_forward_graph_agree_with_float64(model, model_name) -> None:
    """Both networks in fp16 on the GPU, autograd and the forward-ops graph (what TensorRT runs),
    against float64: the max-pool mask and the LRN must hold where the rounding is CUDA's."""
    from live.backends.forward_graph import GradientGraph
    from live.backends.verify import cosine, probe, reference_gradient
    from live.model import load_model

    dev = torch.device("cuda")
    net = model if model_name == "torchvision" else load_model("random:5", model="bvlc")
    for layer in ("inception3b", "inception4c", "inception4e"):
        x, objective = probe(net, (1, 3, 224, 320), (layer,), dev)
        want = reference_gradient(net, x, objective)
        g16, _ = TorchBackend(net, dev, cuda_graphs=False).gradient(x, objective)
        graph = GradientGraph(net.net, [layer], torch.float16).to(dev)
        gg, _ = graph(x, torch.from_numpy(objective.weights(layer)).to(dev))
        assert graph.net.inception3a.branch1.conv.weight.dtype == torch.float16  # fp16 really ran
        assert cosine(g16, want) >= 0.99, (model_name, layer, "torch")
        assert cosine(gg, want) >= 0.99, (model_name, layer, "forward graph")
