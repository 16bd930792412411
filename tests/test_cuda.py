"""The torch backend and the live loop on an NVIDIA GPU: fp16 agreement, CUDA-graph capture, and
both paces (docs/architecture.md, "Two paces") on their own streams, the dreamer waiting for
nothing but its own dream's hand-off and the presenter for nothing but its own frame's download.
Skipped without CUDA, and for nothing else: every picture is made here (no scikit-image), so
`make gpu-check` runs them all.

The CPU tests cover the same code paths up to the device (the ascent math that is captured is
``live.ascent.ascent_steps``, exercised on the CPU everywhere else; ``tests/test_frame_path.py``
rehearses both paces' CUDA paths on CPU tensors).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np
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


def _picture(tmp_path: Path, width: int = 600, height: int = 400) -> Path:
    """A picture made here (the test scene at an odd size, written as PNG): no package needed."""
    from live.sources.testscene import test_scene

    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), test_scene(width, height, 1.7, bgr=True))
    return path


def _gpu_stages(breakdown: str) -> dict[str, float]:
    """``shown: carry 0.1 ... ms/frame; dream: upload 0.1 dream 9.8 ms/dream`` as numbers per stage."""
    return {k: float(v) for k, v in re.findall(r"([a-z]+) ([0-9.]+)", breakdown)}


def test_live_loop_on_cuda_dreams_each_frame_and_captures_once(model, tmp_path) -> None:
    from live.app import LiveLoop
    from live.control.params import Registry
    from live.outputs import Fanout, NullOutput
    from live.sources import ImageSource

    class Keep(NullOutput):
        def send(self, frame, timestamp=None):
            self.last = frame.copy()
            super().send(frame)

    dev = torch.device("cuda")
    backend = TorchBackend(model, dev)
    registry = Registry()
    registry.update({"width": 640, "height": 352, "steps": 4, "fps_cap": 240})
    out = Keep()
    fan = Fanout([out])
    fan.open(640, 352, 240)
    picture = _picture(tmp_path)
    with ImageSource(picture, fps=240) as photo:
        loop = LiveLoop(photo, model, backend, registry, fan, status_every=3600, present="dream")
        assert loop.dream_loop.stream is not None and loop.presenter.stream is not None  # a stream each
        report = loop.run(max_frames=12)
    assert report.frames == out.sent == 12 and report.dreams >= 12
    camera = cv2.imread(str(picture))  # outputs at the picture's own size, the dream at 640x352
    assert out.last.shape == camera.shape and np.abs(out.last.astype(int) - camera).mean() > 2
    assert backend.stats.graph_captures == 1 and backend.stats.graph_failures == 0
    assert backend.describe() == "torch on cuda (float16, CUDA graphs)"
    # GPU time per stage of both paces, from CUDA events: the dreamer's upload and dream, the
    # presenter's carry (nothing to carry in dream mode), compose and download
    gpu = _gpu_stages(report.gpu_breakdown)
    assert set(gpu) == {"upload", "dream", "carry", "compose", "download"} and gpu["dream"] > 0, report.gpu_breakdown
    assert report.gpu_breakdown.startswith("shown: carry ") and report.gpu_breakdown.endswith(" ms/dream")


def test_dreamed_frames_wait_for_nothing_but_their_own_hand_off_and_download(model, caplog) -> None:
    """Under ``set_sync_debug_mode("error")`` any synchronising CUDA call raises: a list used as an
    index, a tensor made from Python numbers, ``.item()``, a pageable copy. Every frame is dreamed
    here (dream mode) with all the dream's per-frame work on (jitter, feedback along the flow, the
    endless zoom, a dream smaller than the output): a raise in the dreamer is logged as a failed
    dream and its frames show the camera, a raise in the presenter ends the run."""
    from live.app import LiveLoop
    from live.benchmark import frames_source, scene_frames
    from live.control.params import Registry
    from live.outputs import Fanout, NullOutput

    dev = torch.device("cuda")
    backend = TorchBackend(model, dev)
    registry = Registry()
    # the dream smaller than the output, jitter, feedback along the flow and the endless zoom: all on
    registry.update({"width": 640, "height": 352, "steps": 4, "jitter": 16, "feedback": 0.8, "zoom": 0.01,
                     "fps_cap": 240})
    out = NullOutput()
    fan = Fanout([out])
    fan.open(1280, 720, 240)
    loop = LiveLoop(frames_source(scene_frames(1280, 720, frames=8), "test scene"), model, backend, registry, fan,
                    seed=0, status_every=3600, present="dream")
    loop.run(max_frames=4)  # warm-up: graph capture, cuDNN autotuning, buffers and grids made once
    torch.cuda.synchronize()
    with caplog.at_level(logging.ERROR):
        torch.cuda.set_sync_debug_mode("error")
        try:
            report = loop.run(max_frames=8)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert "the dream failed" not in caplog.text, caplog.text
    assert report.frames == 8 and report.dreams >= 8 and loop.nonfinite == 0 and out.sent == 12
    assert loop.dream_loop.degraded() is None
    assert backend.stats.graph_captures == 1


def test_the_presenter_never_synchronises_on_the_dream(model, caplog, tmp_path) -> None:
    """At the camera's pace on CUDA the dream runs on its own stream, and neither pace makes a
    synchronising call in its steady state: PyTorch's sync debug mode turns any such call into an
    error (in the presenter it would end the run; in the dreamer it would fail the dream, which is
    logged). Warm-up first: graph capture, cached grids and pinned buffers may synchronise once.
    The presenter carries each dream onto newer frames (the flow field up, the warp) on its own
    stream, and its GPU stage times come from CUDA events."""
    from live.app import LiveLoop
    from live.control.params import Registry
    from live.outputs import Fanout, NullOutput
    from live.sources import ImageSource

    class Keep(NullOutput):
        def send(self, frame, timestamp=None):
            self.last = frame.copy()
            super().send(frame)

    caplog.set_level(logging.WARNING)
    dev = torch.device("cuda")
    registry = Registry()
    registry.update({"width": 960, "height": 544, "steps": 4, "jitter": 16, "feedback": 0.8, "zoom": 0.01,
                     "fps_cap": 240})
    out = Keep()
    fan = Fanout([out])
    fan.open(1280, 720, 60)
    with ImageSource(_picture(tmp_path), fps=60) as photo:
        loop = LiveLoop(photo, model, TorchBackend(model, dev), registry, fan, status_every=3600,
                        output_size=(1280, 720))
        warm = loop.run(max_frames=60)
        assert warm.dreams >= 2, warm
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            report = loop.run(max_frames=120)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert report.frames == 120 and report.dreams >= 2, report
    assert loop.dream_loop.degraded() is None and "the dream failed" not in caplog.text, caplog.text
    assert out.last.shape == (720, 1280, 3)
    gpu = _gpu_stages(report.gpu_breakdown)
    assert {"carry", "compose", "download", "upload", "dream"} <= set(gpu), report.gpu_breakdown
    print(f"presenter {report.fps:.1f} fps, dreams {report.dream_fps:.1f} a second, latency "
          f"{report.latency_ms:.1f} ms (p95 {report.latency_p95_ms:.1f}), dream age {report.dream_age_ms} ms; "
          f"GPU {report.gpu_breakdown}")


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
