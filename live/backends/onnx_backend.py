"""The onnxruntime backend: the forward-ops-only gradient graph, exported once, run by onnxruntime.

One ONNX file per (layer set, dream size, precision), exported on first use into the engines
directory (see :func:`live.engines.engines_dir`) under a name that includes a hash of the
weights, so other weights or another project version never pick up a stale graph. Objective
weights are graph inputs: switching channels or morphing only changes the numbers fed in.

On CPU it runs float32 with onnxruntime's CPU provider; on CUDA (an onnxruntime build with the
CUDA provider) fp16 with device buffers bound directly to torch tensors.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from live import __version__
from live.atomic import atomic_write
from live.backends import Backend
from live.backends.forward_graph import INPUT, OPSET, OUTPUTS, export_onnx, weight_input
from live.engines import Shape, engines_dir, ensure_dir, stem
from live.errors import DataError, UnavailableError
from live.model import Model
from live.objectives import Objective

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


def check_model(model: Model, backend: str) -> None:
    """The forward-ops graph walks a network's ``SEQUENCE`` of conv, ReLU, max-pool, LRN and
    inception blocks (torchvision's folded GoogLeNet and the BVLC one); anything else is refused
    with what to use instead."""
    if not hasattr(model.net, "SEQUENCE"):
        raise UnavailableError(
            f"the {backend} backend has no forward-ops gradient for the {model.name!r} model; "
            f"use --backend torch with --model {model.name}"
        )


def graph_precision(model: Model, precision: str, backend: str) -> str:
    """The precision the forward-ops graph really runs in for ``model``.

    The BVLC graph exported in fp16 gives a wrong gradient on onnxruntime (cosine ~0 to float64
    from inception3a on, measured on the CPU provider; in PyTorch the same graph in fp16 is
    right, 0.999), so it runs in fp32 until fp16 is verified on a GPU. Logged, never silent.
    """
    if model.name == "bvlc" and precision == "fp16":
        log.warning("%s: the bvlc graph runs in fp32 (its fp16 export is not verified); "
                    "--backend torch runs bvlc in fp16 on CUDA", backend)
        return "fp32"
    return precision


def precision_dtype(precision: str) -> torch.dtype:
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise DataError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}") from None


def precision_name(dtype: torch.dtype) -> str:
    return next(name for name, d in PRECISIONS.items() if d == dtype)


_weights_hashes: dict[int, tuple[Any, str]] = {}


def weights_hash(model: Model) -> str:
    """sha256 of the folded network's parameters (cached per network object)."""
    net = model.net
    cached = _weights_hashes.get(id(net))
    if cached is not None and cached[0] is net:
        return cached[1]
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()
    _weights_hashes[id(net)] = (net, digest)
    return digest


def onnx_path(model: Model, layers: tuple[str, ...], shape: Shape, dtype: torch.dtype) -> Path:
    """Where this graph's ONNX file lives: readable stem plus a key over everything it depends on."""
    key = hashlib.sha256(
        "|".join([weights_hash(model), "+".join(layers), "x".join(map(str, shape)), precision_name(dtype),
                  __version__, torch.__version__, str(OPSET)]).encode()
    ).hexdigest()[:16]
    return engines_dir() / f"{stem(layers, shape, precision_name(dtype))}-{key}.onnx"


def ensure_onnx(model: Model, layers: tuple[str, ...], shape: Shape, dtype: torch.dtype, *, force: bool = False) -> Path:
    """The exported graph for (layers, shape, precision), exported now if it is not on disk."""
    path = onnx_path(model, layers, shape, dtype)
    if path.exists() and not force:
        return path
    ensure_dir(path.parent)
    log.info("exporting the dream graph for %s at %dx%d (%s) to %s", "+".join(layers), shape[3], shape[2],
             precision_name(dtype), path)
    data = export_onnx(model.net, layers, shape, dtype)
    with atomic_write(path) as f:
        f.write(data)
    return path


@dataclass
class _Session:
    session: Any  # onnxruntime.InferenceSession
    path: Path
    binding: Any = None  # onnxruntime IOBinding on CUDA
    x: Tensor | None = None
    grad: Tensor | None = None
    score: Tensor | None = None
    weights: dict[str, Tensor] | None = None


class OnnxBackend(Backend):
    """Runs the exported gradient graph with onnxruntime.

    ``precision`` is ``fp32`` (CPU default) or ``fp16`` (CUDA default): fp16 is decided inside
    the graph, inputs and outputs stay float32.
    """

    name = "onnx"
    size_multiple = 32

    def __init__(self, model: Model, device: torch.device, *, precision: str | None = None) -> None:
        super().__init__(device)
        check_model(model, "onnx")
        import onnxruntime as ort

        self._ort = ort
        self.model = model
        self.dtype = precision_dtype(graph_precision(model, precision or ("fp16" if device.type == "cuda" else "fp32"), "onnx"))
        available = ort.get_available_providers()
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise UnavailableError(
                    f"onnxruntime {ort.__version__} has no CUDA provider (has: {', '.join(available)}); "
                    "install onnxruntime-gpu, or use --backend onnx --device cpu"
                )
            self.providers: list[Any] = [("CUDAExecutionProvider", {"device_id": device.index or 0}),
                                         "CPUExecutionProvider"]
        else:
            self.providers = ["CPUExecutionProvider"]
        self._sessions: dict[tuple[Shape, tuple[str, ...]], _Session] = {}

    def describe(self) -> str:
        return f"onnx on {self.device} (onnxruntime {self._ort.__version__}, {precision_name(self.dtype)})"

    def prepare(self, shape: Shape, layers: tuple[str, ...]) -> None:
        """Export and load the graph for this size and layer set now, not on the first frame."""
        self._session(shape, layers)

    def _session(self, shape: Shape, layers: tuple[str, ...]) -> _Session:
        key = (shape, layers)
        sess = self._sessions.get(key)
        if sess is not None:
            return sess
        path = ensure_onnx(self.model, layers, shape, self.dtype)
        try:
            session = self._open(path)
        except Exception as e:  # a damaged file in the cache: onnxruntime's errors vary by version
            log.warning("cached dream graph %s does not load (%s: %s); exporting it again", path.name,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            path = ensure_onnx(self.model, layers, shape, self.dtype, force=True)
            session = self._open(path)
        self.stats.net_builds += 1
        sess = _Session(session, path)
        if self.device.type == "cuda":
            self._bind(sess, shape, layers)
        self._sessions[key] = sess
        return sess

    def _open(self, path: Path) -> Any:
        options = self._ort.SessionOptions()
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # onnxruntime's own warnings would flood the operator's log
        return self._ort.InferenceSession(str(path), sess_options=options, providers=self.providers)

    def _bind(self, sess: _Session, shape: Shape, layers: tuple[str, ...]) -> None:
        # Device buffers allocated once and bound by pointer: no host round trip per step.
        dev = self.device
        sess.x = torch.zeros(shape, device=dev)
        sess.grad = torch.zeros(shape, device=dev)
        sess.score = torch.zeros((), device=dev)
        sess.weights = {name: torch.zeros(self.model.catalog.by_name[name].channels, device=dev) for name in layers}
        self.stats.buffer_allocs += 1
        binding = sess.session.io_binding()
        index = dev.index or 0

        def bind(method: Any, name: str, t: Tensor) -> None:
            method(name, "cuda", index, np.float32, tuple(t.shape), t.data_ptr())

        bind(binding.bind_input, INPUT, sess.x)
        for name, t in sess.weights.items():
            bind(binding.bind_input, weight_input(name), t)
        bind(binding.bind_output, OUTPUTS[0], sess.grad)
        bind(binding.bind_output, OUTPUTS[1], sess.score)
        sess.binding = binding

    def gradient(self, x: Tensor, objective: Objective) -> tuple[Tensor, Tensor]:
        shape = tuple(int(d) for d in x.shape)
        sess = self._session(shape, objective.layers)  # type: ignore[arg-type]
        if sess.binding is not None:
            assert sess.x is not None and sess.weights is not None and sess.grad is not None and sess.score is not None
            sess.x.copy_(x)
            for name, buf in sess.weights.items():
                buf.copy_(torch.from_numpy(objective.weights(name)))
            # onnxruntime runs on its own CUDA stream: torch's queued work must be done first.
            torch.cuda.current_stream(self.device).synchronize()
            sess.session.run_with_iobinding(sess.binding)
            return sess.grad.clone(), sess.score.clone()
        feeds = {INPUT: np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())}
        for name in objective.layers:
            feeds[weight_input(name)] = objective.weights(name)
        grad, score = sess.session.run(list(OUTPUTS), feeds)
        return torch.from_numpy(grad).to(x.dtype), torch.from_numpy(np.asarray(score)).to(x.dtype)


def create(model: Model, device: torch.device) -> OnnxBackend:
    """Registry entry point (see :data:`live.backends.BACKENDS`)."""
    return OnnxBackend(model, device)
