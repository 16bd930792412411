"""The onnxruntime backend: the forward-ops-only gradient graph, exported once, run by onnxruntime.

One ONNX file per (layer set, dream size, precision), exported on first use into the engines
directory (see :func:`live.engines.engines_dir`) under a name that includes a hash of the
weights, so other weights or another project version never pick up a stale graph. Objective
weights are graph inputs: switching channels or morphing only changes the numbers fed in.

Every session is verified once against the torch gradient (:mod:`live.backends.verify`) before it
dreams; one that fails is quarantined (the graph file is set aside with the reason beside it) and
its work goes to the fallback backend where ``run`` set one.

``precision`` as everywhere (:func:`live.backends.resolve_precision`): fp32 on the CPU, fp16 on
CUDA (an onnxruntime build with the CUDA provider, device buffers bound directly to torch
tensors). fp16 is decided inside the graph; inputs and outputs stay float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from live import __version__
from live.atomic import atomic_write
from live.backends import Backend, resolve_precision
from live.backends.forward_graph import INPUT, OPSET, OUTPUTS, export_onnx, weight_input
from live.backends.verify import verify
from live.engines import Shape, VerificationError, engines_dir, ensure_dir, stem, weights_identity
from live.errors import DataError, LiveError, UnavailableError
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


def precision_dtype(precision: str) -> torch.dtype:
    try:
        return PRECISIONS[precision]
    except KeyError:
        raise DataError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}") from None


def precision_name(dtype: torch.dtype) -> str:
    return next(name for name, d in PRECISIONS.items() if d == dtype)


def onnx_path(model: Model, layers: tuple[str, ...], shape: Shape, dtype: torch.dtype) -> Path:
    """Where this graph's ONNX file lives: readable stem plus a key over everything it depends on."""
    key = hashlib.sha256(
        "|".join([weights_identity(model), "+".join(layers), "x".join(map(str, shape)), precision_name(dtype),
                  __version__, torch.__version__, str(OPSET)]).encode()
    ).hexdigest()[:16]
    return engines_dir() / f"{stem(layers, shape, precision_name(dtype))}-{key}.onnx"


def quarantine_record(path: Path) -> Path:
    """Where a graph that failed its verification is described (the graph itself sits beside it)."""
    return path.with_name(path.name + ".quarantined.json")


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

    def __init__(self, model: Model, device: torch.device, *, precision: str | None = None,
                 verify_sessions: bool = True) -> None:
        super().__init__(device)
        check_model(model, "onnx")
        import onnxruntime as ort

        self._ort = ort
        self.model = model
        self.precision = resolve_precision(precision, device)
        self.dtype = precision_dtype(self.precision)
        self.verify_sessions = verify_sessions
        self.verifications: dict[tuple[Shape, tuple[str, ...]], Any] = {}  # key -> Verification
        self._refused: dict[tuple[Shape, tuple[str, ...]], LiveError] = {}
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
        return (f"onnx on {self.device} (onnxruntime {self._ort.__version__}, {precision_name(self.dtype)}"
                f"{self.fallback_note()})")

    def prepare(self, shape: Shape, layers: tuple[str, ...]) -> None:
        """Export and load the graph for this size and layer set now, not on the first frame."""
        self._session(shape, layers)

    def _session(self, shape: Shape, layers: tuple[str, ...]) -> _Session:
        key = (shape, layers)
        sess = self._sessions.get(key)
        if sess is not None:
            return sess
        if key in self._refused:
            raise self._refused[key]
        try:
            sess = self._open_verified(shape, layers)
        except LiveError as e:
            self._refused[key] = e  # not retried every frame
            raise
        self._sessions[key] = sess
        return sess

    def _open_verified(self, shape: Shape, layers: tuple[str, ...]) -> _Session:
        record = quarantine_record(onnx_path(self.model, layers, shape, self.dtype))
        if record.exists():
            try:
                reason = json.loads(record.read_text()).get("reason", "its verification failed")
            except (OSError, ValueError) as e:
                reason = f"its verification failed (record unreadable: {e})"
            raise VerificationError(f"the dream graph for {'+'.join(layers)} at {shape[3]}x{shape[2]} "
                                    f"({self.precision}) is quarantined: {reason} (delete {record} to try again)")
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
        if self.verify_sessions:
            self._verify(sess, shape, layers)
        return sess

    def _verify(self, sess: _Session, shape: Shape, layers: tuple[str, ...]) -> None:
        """Once per session: the gradient against torch's in float64; a failure quarantines the graph."""
        result = verify(lambda x, objective: self._run(sess, x, objective)[0], self.model, shape, layers,
                        self.precision, self.device)
        self.verifications[(shape, layers)] = result
        if result.passed:
            log.info("dream graph %s: %s", sess.path.name, result.describe())
            return
        record = quarantine_record(sess.path)
        try:
            sess.path.replace(sess.path.with_name(sess.path.name + ".quarantined"))
            record.write_text(json.dumps(asdict(result), indent=2) + "\n")
        except OSError as e:
            log.warning("could not quarantine %s: %s", sess.path, e)
        log.error("dream graph %s quarantined: %s", sess.path.name, result.reason)
        raise VerificationError(f"the dream graph {sess.path.name} gives a wrong gradient ({result.reason}); "
                                "quarantined")

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
        key = (tuple(int(d) for d in x.shape), objective.layers)
        try:
            sess = self._session(*key)  # type: ignore[arg-type]
        except LiveError as e:  # quarantined, or no graph to be had: the fallback dreams it, if any
            return self.fall_back(key, e).gradient(x, objective)
        return self._run(sess, x, objective)

    def _run(self, sess: _Session, x: Tensor, objective: Objective) -> tuple[Tensor, Tensor]:
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


def create(model: Model, device: torch.device, *, precision: str | None = None, no_build: bool = False) -> OnnxBackend:
    """Registry entry point (see :data:`live.backends.BACKENDS`); ``no_build`` concerns TensorRT
    plans only (exporting a graph takes seconds, not minutes)."""
    return OnnxBackend(model, device, precision=precision)
