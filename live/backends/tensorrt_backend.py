"""The TensorRT backend: the forward-ops-only gradient graph built into a TensorRT engine.

``tensorrt`` is imported lazily: this module imports (and the rest of the package tests) without
it. Plans are built from the exported ONNX file (see :mod:`live.backends.onnx_backend`) with a
strongly typed network - fp16 is decided in the ONNX graph itself, TensorRT 11 has no FP16
builder flag - a timing cache kept in the engines directory, a workspace limit, and written
atomically with a manifest (:mod:`live.engines`, the cache this module builds into);
:func:`build_engines` builds ahead of opening hours. Engines run on torch's current CUDA stream
with buffers allocated once and bound by address (``set_tensor_address``,
``execute_async_v3``); the few-step ascent around them can be captured as one CUDA graph.
No PyCUDA: it fights torch's CUDA context.

Written for the TensorRT 10 and 11 Python APIs (both have ``STRONGLY_TYPED``, named I/O tensors
and ``execute_async_v3``; 11 drops the deprecated ``EXPLICIT_BATCH`` flag and ``FP16`` builder
flag, which are not used here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from live.ascent import ascent_steps
from live.atomic import atomic_write
from live.backends import Backend
from live.backends.cuda_graph import GraphCache, capture_ascent
from live.backends.forward_graph import INPUT, OUTPUTS, weight_input
from live.backends.onnx_backend import check_model, ensure_onnx, graph_precision, precision_dtype
from live.engines import Shape, Toolchain, build_engine, load_plan, plan_path, size_text, wanted_manifest
from live.errors import DataError, UnavailableError, UsageError
from live.model import Model
from live.objectives import Objective

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'deepdream-live[tensorrt]'"
WORKSPACE_BYTES = 4 << 30  # enough for every tactic at 1080p; TensorRT uses less when it can
TIMING_CACHE = "timing.cache"


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or :class:`UnavailableError` saying how to install a usable one."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise UnavailableError(f"TensorRT is not installed ({e}); install it with {INSTALL_HINT}") from e
    from packaging.version import Version

    version = Version(trt.__version__)
    if not 10 <= version.major <= 11:
        raise UnavailableError(f"TensorRT {trt.__version__} found; this needs TensorRT 10 or 11 ({INSTALL_HINT})")
    return trt


def _torch_dtype(trt: Any, dt: Any) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.bool: torch.bool}
    if dt not in table:
        raise DataError(f"unexpected TensorRT tensor type {dt} in a dream engine")
    return table[dt]


class TensorRTToolchain:
    """Builds plans with TensorRT on one CUDA device (the real :class:`live.engines.Toolchain`)."""

    def __init__(self, device: torch.device, workspace: int = WORKSPACE_BYTES) -> None:
        self.trt = import_tensorrt()
        if device.type != "cuda" or not torch.cuda.is_available():
            raise UnavailableError(
                f"TensorRT needs an NVIDIA GPU visible to PyTorch (device {device}, PyTorch {torch.__version__}); "
                "check `nvidia-smi` and that PyTorch is a CUDA build"
            )
        self.device = device
        self.workspace = workspace
        self.tensorrt = self.trt.__version__
        self.gpu = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        self.compute_capability = f"{major}.{minor}"
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)

    def build(self, onnx: Path, shape: Shape, engines: Path) -> bytes:
        """Serialized plan for ``onnx`` at ``shape``; keeps the timing cache in ``engines``."""
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise DataError(f"TensorRT cannot parse {onnx.name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        cache_path = engines / TIMING_CACHE
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=True)  # a cache from another GPU is ignored, not fatal
        # Exported graphs have static shapes (one per dream size); a dynamic input gets its own
        # one-size optimisation profile so the plan is tuned for exactly this size.
        dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
        if dynamic:
            profile = builder.create_optimization_profile()
            for tensor in dynamic:
                dims = shape if tensor.name == INPUT else tuple(max(d, 1) for d in tensor.shape)
                profile.set_shape(tensor.name, dims, dims, dims)
            config.add_optimization_profile(profile)
        monitor = _progress_monitor(trt, onnx.name)
        if monitor is not None:
            config.progress_monitor = monitor
        t0 = time.monotonic()
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise UnavailableError(f"TensorRT could not build an engine from {onnx.name}; see its messages above")
        log.info("TensorRT built %s in %.0f s", onnx.name, time.monotonic() - t0)
        try:
            with atomic_write(cache_path) as f:
                f.write(memoryview(config.get_timing_cache().serialize()))
        except OSError as e:  # the plan is what matters; a lost cache only makes the next build slower
            log.warning("could not save the TensorRT timing cache %s: %s", cache_path, e)
        return bytes(memoryview(serialized))


def _progress_monitor(trt: Any, label: str) -> Any:
    """A TensorRT progress monitor that logs top-level build phases (None where unsupported)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None:
                log.info("TensorRT %s: %s (%d steps)", label, phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            pass

    return Monitor()


@dataclass
class _Engine:
    """A deserialized engine with its context and device buffers, all made once."""

    engine: Any
    context: Any
    buffers: dict[str, Tensor]
    loaded: Objective | None = None


class TensorRTBackend(Backend):
    """Runs dream engines built by TensorRT; one per (dream size, layer set)."""

    name = "tensorrt"
    size_multiple = 32

    def __init__(self, model: Model, device: torch.device, *, precision: str = "fp16", no_build: bool = False,
                 cuda_graphs: bool = True, toolchain: Any = None) -> None:
        super().__init__(device)
        check_model(model, "tensorrt")
        self.toolchain = toolchain or TensorRTToolchain(device)
        self.trt = import_tensorrt()
        self.runtime = self.trt.Runtime(self.toolchain.logger)
        self.model = model
        self.precision = graph_precision(model, precision, "tensorrt")
        self.dtype = precision_dtype(self.precision)
        self.no_build = no_build
        self.cuda_graphs = cuda_graphs
        self._engines: dict[tuple[Shape, tuple[str, ...]], _Engine] = {}
        self._graphs = GraphCache(device, self.stats, "the TensorRT dream steps")

    @property
    def fuses_steps(self) -> bool:
        return self.cuda_graphs  # a captured few-step graph is short; splitting it would undo it

    def describe(self) -> str:
        return f"tensorrt {self.toolchain.tensorrt} on {self.toolchain.gpu} ({self.precision})"

    def prepare(self, shape: Shape, layers: tuple[str, ...]) -> None:
        """Export, build (or verify) and load the engine for this size and layer set now."""
        self._engine(shape, layers)

    def _engine(self, shape: Shape, layers: tuple[str, ...]) -> _Engine:
        key = (shape, layers)
        if key in self._engines:
            return self._engines[key]
        onnx = ensure_onnx(self.model, layers, shape, self.dtype)
        plan = plan_path(layers, shape, self.precision, self.toolchain)
        wanted = wanted_manifest(self.toolchain, onnx, self.precision, shape, layers)
        engine = load_plan(self.toolchain, onnx, plan, wanted, self._deserialize, no_build=self.no_build)
        context = engine.create_execution_context()
        if context is None:
            raise UnavailableError(f"TensorRT could not create an execution context for {plan.name} (GPU memory?)")
        buffers: dict[str, Tensor] = {}
        with torch.cuda.device(self.device):
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                dims = tuple(engine.get_tensor_shape(name))
                if engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT and -1 in dims:
                    dims = shape if name == INPUT else dims
                    context.set_input_shape(name, dims)
                buffers[name] = torch.zeros(dims, dtype=_torch_dtype(self.trt, engine.get_tensor_dtype(name)),
                                            device=self.device)
                context.set_tensor_address(name, buffers[name].data_ptr())
        missing = {INPUT, *OUTPUTS, *(weight_input(n) for n in layers)} - buffers.keys()
        if missing:
            raise DataError(f"engine {plan.name} lacks the tensors {sorted(missing)}; rebuild it")
        self.stats.net_builds += 1
        self.stats.buffer_allocs += 1
        entry = _Engine(engine, context, buffers)
        self._engines[key] = entry
        return entry

    def _deserialize(self, data: bytes) -> Any:
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise DataError("deserialize_cuda_engine returned nothing")
        return engine

    def _load_objective(self, e: _Engine, objective: Objective) -> None:
        if e.loaded == objective:
            return
        for name in objective.layers:
            host = torch.from_numpy(objective.weights(name)).pin_memory()
            e.buffers[weight_input(name)].copy_(host, non_blocking=True)
        e.loaded = objective

    def _run(self, e: _Engine, x: Tensor) -> Tensor:
        e.buffers[INPUT].copy_(x)
        stream = torch.cuda.current_stream(self.device)
        if not e.context.execute_async_v3(stream.cuda_stream):
            raise UnavailableError("TensorRT failed to enqueue the dream engine; see its messages above")
        return e.buffers[OUTPUTS[0]]

    def gradient(self, x: Tensor, objective: Objective) -> tuple[Tensor, Tensor]:
        e = self._engine(tuple(int(d) for d in x.shape), objective.layers)  # type: ignore[arg-type]
        self._load_objective(e, objective)
        grad = self._run(e, x)
        return grad.clone(), e.buffers[OUTPUTS[1]].clone()

    def ascend(self, x: Tensor, objective: Objective, steps: int, step: Tensor, jitter: int, lo: Tensor,
               hi: Tensor, generator: torch.Generator | None = None) -> Tensor:
        e = self._engine(tuple(int(d) for d in x.shape), objective.layers)  # type: ignore[arg-type]
        self._load_objective(e, objective)
        if self.cuda_graphs and steps > 0:
            shape = tuple(x.shape)
            # TensorRT allocates and initialises lazily on its first enqueue: one warm-up outside capture
            captured = self._graphs.get(
                (shape, objective.layers, steps),
                lambda: capture_ascent(lambda z: self._run(e, z), shape, steps, self.device, warmup=1),
            )
            if captured is not None:
                return captured(x, step, jitter, lo, hi)
        return ascent_steps(lambda z: self._run(e, z), x, steps, step, jitter, lo, hi, generator)


def create(model: Model, device: torch.device) -> TensorRTBackend:
    """Registry entry point (see :data:`live.backends.BACKENDS`); raises
    :class:`UnavailableError` with the reason when TensorRT or a CUDA GPU is missing."""
    import_tensorrt()
    if device.type != "cuda":
        raise UnavailableError(f"the tensorrt backend needs an NVIDIA GPU (--device cuda), not {device}")
    return TensorRTBackend(model, device)


# ----- building ahead of opening hours (`deepdream-live build-engines`)
Progress = Callable[[int, int, str], None]  # (done, total, what is being built now)


def build_engines(
    model: Model,
    sizes: Sequence[tuple[int, int]],
    layer_sets: Sequence[Sequence[str]],
    *,
    precision: str = "fp16",
    toolchain: Toolchain | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> list[Path]:
    """Export and build every (layer set × size) ahead of opening hours; returns the plans.

    ``sizes`` are (width, height) as the camera delivers them; each is rounded up to the dream
    size (a multiple of 32). ``toolchain`` defaults to TensorRT on the current CUDA device.
    ``progress(done, total, label)`` is called before each build and once at the end.
    """
    if toolchain is None:
        toolchain = TensorRTToolchain(torch.device("cuda"))
    cat = model.catalog
    canonical = [tuple(sorted({cat.resolve(n).name for n in layers}, key=lambda n: cat.by_name[n].index))
                 for layers in layer_sets]
    jobs = [(layers, (1, 3, _ceil32(h), _ceil32(w))) for layers in canonical for (w, h) in sizes]
    plans = []
    dtype = precision_dtype(precision)
    for i, (layers, shape) in enumerate(jobs):
        label = f"{'+'.join(layers)} at {size_text(shape)} ({precision})"
        if progress:
            progress(i, len(jobs), label)
        onnx = ensure_onnx(model, layers, shape, dtype)
        plan = plan_path(layers, shape, precision, toolchain)
        wanted = wanted_manifest(toolchain, onnx, precision, shape, layers)
        plans.append(build_engine(toolchain, onnx, plan, wanted, force_reason="rebuild requested" if force else None))
    if progress:
        progress(len(jobs), len(jobs), "done")
    return plans


def _ceil32(n: int) -> int:
    if n <= 0:
        raise UsageError(f"dream sizes must be positive, got {n}")
    return -(-n // 32) * 32
