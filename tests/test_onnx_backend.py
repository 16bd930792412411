"""The exported dream graph: onnxruntime agrees with torch in fp32 and fp16 at two sizes, uses
only ops TensorRT's ONNX parser supports, takes objective weights as inputs (no re-export on a
change), is cached on disk, and ``--backend onnx`` dreams a still end to end."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import pytest
import torch

from live.backends import open_backend
from live.backends.forward_graph import GradientGraph
from live.backends.onnx_backend import OnnxBackend, ensure_onnx
from live.objectives import Objective

# ONNX ops the TensorRT 10 ONNX parser imports (onnx-tensorrt's operators.md), restricted to the
# ones this graph could plausibly need. An op outside it means the graph cannot become an engine.
TENSORRT_ONNX_OPS = {
    "Abs", "Add", "Cast", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Div", "Equal",
    "Expand", "Gather", "Greater", "Identity", "Max", "MaxPool", "Mul", "Pad", "Pow", "ReduceMax", "ReduceMean",
    "ReduceSum", "Relu",
    "Reshape", "Shape", "Slice", "Split", "Sqrt", "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where",
}
LAYERS = ("conv3", "inception4c")


@pytest.fixture
def engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEEPDREAM_LIVE_ENGINES", str(tmp_path / "engines"))
    return tmp_path / "engines"


def _objective(seed: int) -> Objective:
    gen = torch.Generator().manual_seed(seed)
    return Objective({name: torch.rand(n, generator=gen).numpy() for name, n in (("conv3", 192), ("inception4c", 512))})


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


@pytest.mark.parametrize("size", [(64, 96), (96, 64)])
@pytest.mark.parametrize(("precision", "min_cos"), [("fp32", 0.999), ("fp16", 0.99)])
def test_onnxruntime_agrees_with_torch(model, engines, size, precision, min_cos) -> None:
    objective = _objective(0)
    x = model.space.to_model(torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(2)))
    weights = [torch.from_numpy(objective.weights(n)).double() for n in LAYERS]
    want, want_score = GradientGraph(model.net, LAYERS, torch.float64)(x.double(), *weights)
    backend = OnnxBackend(model, torch.device("cpu"), precision=precision)
    got, score = backend.gradient(x, objective)
    assert got.shape == x.shape and got.dtype == torch.float32
    assert _cos(got, want) >= min_cos
    assert score.item() == pytest.approx(want_score.item(), rel=1e-3 if precision == "fp16" else 1e-5)


def test_exported_graph_uses_only_tensorrt_supported_ops(model, engines) -> None:
    for dtype in (torch.float32, torch.float16):
        graph = onnx.load(str(ensure_onnx(model, ("conv2", "inception5b"), (1, 3, 64, 64), dtype)))
        ops = {node.op_type for node in graph.graph.node}
        assert ops <= TENSORRT_ONNX_OPS, ops - TENSORRT_ONNX_OPS
        assert {"ConvTranspose", "MaxPool", "Equal"} <= ops and not ops & {"MaxUnpool", "Gradient"}
        assert graph.opset_import[0].version >= 17
        inputs = {i.name: i.type.tensor_type.elem_type for i in graph.graph.input}
        assert inputs == {"x": onnx.TensorProto.FLOAT, "w_conv2": onnx.TensorProto.FLOAT, "w_inception5b": onnx.TensorProto.FLOAT}


def test_switching_and_morphing_objectives_never_re_exports(model, engines) -> None:
    backend = OnnxBackend(model, torch.device("cpu"))
    x = model.space.to_model(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)))
    a, b = _objective(1), _objective(2)
    grads = [backend.gradient(x, a.lerp(b, t))[0] for t in (0.0, 0.5, 1.0)]
    assert backend.stats.net_builds == 1
    assert not torch.equal(grads[0], grads[2])
    # the graph is linear in the weights: the half-way morph is the mean of the ends
    torch.testing.assert_close(grads[1], (grads[0] + grads[2]) / 2, rtol=1e-4, atol=1e-6 * grads[1].abs().max().item())
    backend.gradient(x, Objective.parse("conv3"))  # another layer set is another graph
    assert backend.stats.net_builds == 2


def test_exports_are_cached_on_disk_and_a_damaged_file_is_exported_again(model, engines, caplog, monkeypatch) -> None:
    x = torch.zeros(1, 3, 64, 64)
    OnnxBackend(model, torch.device("cpu")).gradient(x, Objective.parse("conv2"))
    (path,) = engines.glob("*.onnx")
    assert path.name.startswith("dream-conv2-64x64-fp32-")

    import live.backends.onnx_backend as ob

    exports = []
    real = ob.export_onnx
    monkeypatch.setattr(ob, "export_onnx", lambda *a, **k: exports.append(a) or real(*a, **k))
    OnnxBackend(model, torch.device("cpu")).gradient(x, Objective.parse("conv2"))
    assert exports == []  # a new process reuses the file

    path.write_bytes(path.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        grad, _ = OnnxBackend(model, torch.device("cpu")).gradient(x, Objective.parse("conv2"))
    assert len(exports) == 1 and "exporting it again" in caplog.text
    assert torch.isfinite(grad).all()


def test_backend_onnx_dreams_a_still_end_to_end(engines, tmp_path) -> None:
    from live.cli import main

    out = tmp_path / "dream.png"
    args = ["image", "test-scene", str(out), "--backend", "onnx", "--weights", "random", "--steps", "1",
            "--octaves", "1", "--max-side", "128", "--no-progress"]
    assert main(args) == 0
    assert out.stat().st_size > 1000


def test_named_onnx_backend_opens_and_cuda_without_the_provider_says_what_to_install(model, engines) -> None:
    import onnxruntime

    from live.errors import UnavailableError

    assert open_backend("onnx", model, "cpu").describe().startswith("onnx on cpu")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return  # an onnxruntime-gpu install: nothing to refuse
    with pytest.raises(UnavailableError, match="onnxruntime-gpu"):
        OnnxBackend(model, torch.device("cuda"))


def test_a_network_without_a_forward_ops_gradient_is_refused_with_an_alternative(model, engines) -> None:
    from dataclasses import replace

    from live.errors import UnavailableError

    other = replace(model, name="bvlc", net=torch.nn.Identity())
    with pytest.raises(UnavailableError, match="use --backend torch with --model bvlc"):
        OnnxBackend(other, torch.device("cpu"))


@pytest.fixture(scope="module")
def bvlc_model():
    from live.model import load_model

    return load_model("random:5", model="bvlc")


@pytest.mark.parametrize(("precision", "min_cos"), [("fp32", 0.9999), ("fp16", 0.995)])
def test_bvlc_graph_with_lrn_runs_in_onnxruntime(bvlc_model, engines, precision, min_cos) -> None:
    layers = ("norm2", "inception4c")
    gen = torch.Generator().manual_seed(6)
    objective = Objective({n: torch.rand(bvlc_model.catalog.by_name[n].channels, generator=gen).numpy() for n in layers})
    x = bvlc_model.space.to_model(torch.rand(1, 3, 64, 96, generator=gen))
    weights = [torch.from_numpy(objective.weights(n)).double() for n in layers]
    want, _ = GradientGraph(bvlc_model.net, layers, torch.float64)(x.double(), *weights)
    backend = OnnxBackend(bvlc_model, torch.device("cpu"), precision=precision)
    got, _ = backend.gradient(x, objective)
    assert _cos(got, want) >= min_cos
    graph = onnx.load(str(next(iter(backend._sessions.values())).path))
    assert _compute_type(graph) == (onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT)
    ops = {node.op_type for node in graph.graph.node}
    assert ops <= TENSORRT_ONNX_OPS, ops - TENSORRT_ONNX_OPS


def _compute_type(graph: onnx.ModelProto) -> int:
    """The element type the graph computes in: that of its convolution weights (inputs and
    outputs are float32 at every precision)."""
    inits = {i.name: i.data_type for i in graph.graph.initializer}
    types = {inits[n.input[1]] for n in graph.graph.node if n.op_type == "Conv" and n.input[1] in inits}
    assert len(types) == 1, types
    return types.pop()


INCEPTION = ("inception3a", "inception3b", "inception4a", "inception4b", "inception4c", "inception4d",
             "inception4e", "inception5a", "inception5b")
# fp16's own limit in the last block, measured on random weights: both networks lose cosine there
# whatever computes them (rounding only the weights to fp16, in float64 arithmetic, already gives
# 0.997 at inception5b; rounding only the input, 0.997; PyTorch's fp16 autograd on the BVLC net
# 0.991). The graph reaches 0.990-0.996 at inception5a/5b, and other weights or inputs than these
# tests' fixed ones measured down to 0.9925 at inception4e (bench/fp16_cosine.py): the floors hold
# for this fixture, and a broken mask (cosine 0.0000) or lost precision fails them
# (docs/architecture.md, "The forward-ops-only gradient graph").
FP16_FLOOR = {(m, layer): 0.99 for m in ("torchvision", "bvlc") for layer in ("inception5a", "inception5b")}


@pytest.mark.parametrize("size", [(64, 96), (83, 115)], ids=["64x96", "odd-83x115"])
@pytest.mark.parametrize("model_name", ["torchvision", "bvlc"])
def test_fp16_graphs_on_onnxruntime_reach_float64_at_every_inception_layer(model_name, size, engines, model,
                                                                            bvlc_model) -> None:
    """One fp16 graph over all nine inception layers; each layer's gradient is taken alone by
    zeroing the other layers' weights (they are graph inputs), against torch autograd in float64."""
    import numpy as np

    from live.backends.torch_backend import TorchBackend

    net = model if model_name == "torchvision" else bvlc_model
    backend = OnnxBackend(net, torch.device("cpu"), precision="fp16", verify_sessions=False)
    shape = (1, 3, *size)
    x = net.space.to_model(torch.rand(shape, generator=torch.Generator().manual_seed(7)))
    sess = backend._session(shape, INCEPTION)
    assert _compute_type(onnx.load(str(sess.path))) == onnx.TensorProto.FLOAT16  # fp16 really ran
    assert backend.precision == "fp16" and "-fp16-" in sess.path.name
    reference = TorchBackend(net, torch.device("cpu"), dtype=torch.float64)
    got_cos = {}
    for layer in INCEPTION:
        one = Objective({name: (np.ones if name == layer else np.zeros)(net.catalog.by_name[name].channels,
                                                                        np.float32) for name in INCEPTION})
        got, _ = backend.gradient(x, one)
        want, _ = reference.gradient(x.double(), Objective.parse(layer))
        got_cos[layer] = _cos(got, want)
    low = {layer: round(c, 4) for layer, c in got_cos.items() if c < FP16_FLOOR.get((model_name, layer), 0.995)}
    assert not low, f"fp16 cosine to float64 below target: {low}"


def test_bvlc_still_on_the_onnx_backend_end_to_end(engines, tmp_path) -> None:
    from live.cli import main

    out = tmp_path / "classic.png"
    assert main(["image", "test-scene", str(out), "--model", "bvlc", "--layer", "norm2+inception4c".replace("+", " + "),
                 "--backend", "onnx", "--weights", "random", "--steps", "1", "--octaves", "1", "--max-side", "128",
                 "--no-progress"]) == 0
    assert out.stat().st_size > 1000


def test_bvlc_live_loop_on_the_onnx_backend(bvlc_model, engines) -> None:
    import cv2
    import numpy as np

    from live.app import LiveLoop
    from live.control.params import Registry
    from live.outputs import Fanout, NullOutput
    from live.sources import ImageSource
    from tests.conftest import photo_path

    frames = []

    class Keep(NullOutput):
        def send(self, frame):
            frames.append(frame.copy())
            super().send(frame)

    registry = Registry()
    registry.update({"width": 96, "height": 64, "steps": 1, "objective": "norm2 + inception4c", "fps_cap": 240})
    fan = Fanout([Keep()])
    fan.open(96, 64, 240)
    backend = OnnxBackend(bvlc_model, torch.device("cpu"))
    backend.prepare((1, 3, 64, 96), registry.get("objective").layers)
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        report = LiveLoop(photo, bvlc_model, backend, registry, fan, status_every=3600,
                          present="dream").run(max_frames=3)  # each frame out its own dream
    assert report.frames == 3 and backend.stats.net_builds == 1  # prepared once, never re-exported
    camera = cv2.imread(str(photo_path("coffee.png")))  # outputs at the photo's size, the dream at 96x64
    assert frames[-1].shape == camera.shape and np.abs(frames[-1].astype(int) - camera).mean() > 1
