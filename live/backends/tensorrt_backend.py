"""The TensorRT backend: the forward-ops-only gradient graph built into a TensorRT engine.

``tensorrt`` is imported lazily: this module imports (and the rest of the package tests) without
it. Plans are built from the exported ONNX file (see :mod:`live.backends.onnx_backend`) with a
strongly typed network - fp16 is decided in the ONNX graph itself, TensorRT 11 has no FP16
builder flag - a timing cache per GPU and TensorRT version kept in the engines directory (a
foreign cache is rejected, not ignored), a workspace limit, and written atomically with a
manifest (:mod:`live.engines`, the cache this module builds into). Every freshly built or newly
loaded plan is verified once against the torch gradient before it dreams; one that fails is
quarantined (docs/architecture.md, "Engines and calibration").

Engines run on torch's current CUDA stream with buffers allocated once and bound by address
(``set_tensor_address``, ``execute_async_v3``); the few-step ascent around them can be captured
as one CUDA graph. No PyCUDA: it fights torch's CUDA context. Building and loading go through a
:class:`live.engines.Toolchain` (:class:`TensorRTToolchain` here), so the backend, the cache and
the verification are tested with a stand-in where there is no GPU.

:func:`build_engines` builds ahead of opening hours through the very code ``run`` uses
(:meth:`TensorRTBackend.prepare`), so a plan built ahead has exactly the precision and shape the
show will ask for.

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
from live.backends import Backend, resolve_precision
from live.backends.cuda_graph import GraphCache, capture_ascent
from live.backends.forward_graph import INPUT, OUTPUTS, weight_input
from live.backends.onnx_backend import check_model, ensure_onnx, precision_dtype
from live.backends.verify import verify
from live.dreamsize import Shape, dream_shape
from live.engines import (
    Toolchain,
    Verification,
    VerificationError,
    load_plan,
    plan_path,
    record_verification,
    size_text,
    timing_cache_path,
    wanted_manifest,
    weights_identity,
)
from live.errors import DataError, LiveError, UnavailableError, UsageError
from live.model import Model
from live.objectives import Objective

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'deepdream-live[tensorrt]'"
WORKSPACE_BYTES = 4 << 30  # enough for every tactic at 1080p; TensorRT uses less when it can


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


class TensorRTEngine:
    """A deserialized engine with its execution context and device buffers, all made once."""

    def __init__(self, trt: Any, engine: Any, shape: Shape, layers: Sequence[str], device: torch.device) -> None:
        context = engine.create_execution_context()
        if context is None:
            raise UnavailableError("TensorRT could not create an execution context (GPU memory?)")
        self.trt, self.engine, self.context, self.device = trt, engine, context, device
        self.buffers: dict[str, Tensor] = {}
        with torch.cuda.device(device):
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                dims = tuple(engine.get_tensor_shape(name))
                if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT and -1 in dims:
                    dims = tuple(shape) if name == INPUT else dims
                    context.set_input_shape(name, dims)
                self.buffers[name] = torch.zeros(dims, dtype=_torch_dtype(trt, engine.get_tensor_dtype(name)),
                                                 device=device)
                context.set_tensor_address(name, self.buffers[name].data_ptr())
        missing = {INPUT, *OUTPUTS, *(weight_input(n) for n in layers)} - self.buffers.keys()
        if missing:
            raise DataError(f"the engine lacks the tensors {sorted(missing)}; rebuild it")
        self.loaded: Objective | None = None

    def load_objective(self, objective: Objective) -> None:
        if self.loaded == objective:
            return
        for name in objective.layers:
            host = torch.from_numpy(objective.weights(name)).pin_memory()
            self.buffers[weight_input(name)].copy_(host, non_blocking=True)
        self.loaded = objective

    def run(self, x: Tensor) -> Tensor:
        """The gradient for ``x`` in the engine's output buffer (overwritten by the next run)."""
        self.buffers[INPUT].copy_(x)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise UnavailableError("TensorRT failed to enqueue the dream engine; see its messages above")
        return self.buffers[OUTPUTS[0]]

    @property
    def score(self) -> Tensor:
        return self.buffers[OUTPUTS[1]]


class TensorRTToolchain:
    """Builds and loads plans with TensorRT on one CUDA device (the real :class:`live.engines.Toolchain`)."""

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
        self.runtime = self.trt.Runtime(self.logger)

    def build(self, onnx: Path, shape: Shape, engines: Path) -> bytes:
        """Serialized plan for ``onnx`` at ``shape``; keeps this GPU's timing cache in ``engines``."""
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise DataError(f"TensorRT cannot parse {onnx.name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        cache_path = timing_cache_path(self, engines)
        use_timing_cache(config, cache_path)
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

    def load(self, data: bytes, shape: Shape, layers: Sequence[str]) -> TensorRTEngine:
        """Deserialize a plan and allocate its buffers on this device."""
        engine = self.runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise DataError("deserialize_cuda_engine returned nothing")
        return TensorRTEngine(self.trt, engine, shape, layers, self.device)


def use_timing_cache(config: Any, path: Path) -> Any:
    """Give the builder ``config`` the timing cache at ``path`` (one per GPU and TensorRT
    version, see :func:`live.engines.timing_cache_path`); a cache TensorRT rejects - made on
    another device or version, or damaged - is replaced by an empty one, with the reason logged.

    ``ignore_mismatch=False``: a mismatched cache is refused, never used. (``True`` would accept
    it, and NVIDIA warns that a foreign cache can give wrong results and slow plans.)
    """
    data = b""
    if path.exists():
        try:
            data = path.read_bytes()
        except OSError as e:
            log.warning("cannot read the TensorRT timing cache %s (%s); starting a new one", path, e)
    if data:
        try:
            cache = config.create_timing_cache(data)
            if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
                return cache
            why = "it was made on another GPU or TensorRT version"
        except Exception as e:  # noqa: BLE001 - TensorRT raises various types for a damaged cache
            why = f"{type(e).__name__}: {e}"
        log.warning("TensorRT rejected the timing cache %s (%s); starting a new one", path.name, why)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


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


@dataclass(frozen=True)
class PlanSpec:
    """One plan as ``run`` asks for it and ``build-engines`` builds it."""

    layers: tuple[str, ...]
    shape: Shape
    precision: str

    def label(self) -> str:
        return f"{'+'.join(self.layers)} at {size_text(self.shape)} ({self.precision})"


def plan_spec(model: Model, layers: Sequence[str], shape: Shape, precision: str) -> PlanSpec:
    """The plan for ``layers`` at ``shape``: layers canonical and shallowest first (as an
    objective lists them), the shape as given (the loop's :func:`live.dreamsize.dream_shape`)."""
    cat = model.catalog
    canonical = tuple(sorted({cat.resolve(n).name for n in layers}, key=lambda n: cat.by_name[n].index))
    return PlanSpec(canonical, tuple(int(d) for d in shape), precision)  # type: ignore[arg-type]


class TensorRTBackend(Backend):
    """Runs dream engines built by TensorRT; one per (dream size, layer set).

    ``prepare`` may build a plan (unless ``no_build``); during the show a size or layer set
    without a usable plan goes to the fallback backend where ``run`` set one, so nothing builds
    mid-show; without a fallback (``image``, ``bench``) it is built on first use.
    """

    name = "tensorrt"
    size_multiple = 32

    def __init__(self, model: Model, device: torch.device, *, precision: str | None = None, no_build: bool = False,
                 cuda_graphs: bool = True, toolchain: Toolchain | None = None) -> None:
        super().__init__(device)
        check_model(model, "tensorrt")
        self.toolchain = toolchain or TensorRTToolchain(device)
        self.model = model
        self.precision = resolve_precision(precision, device)
        self.dtype = precision_dtype(self.precision)
        self.no_build = no_build
        self.cuda_graphs = cuda_graphs and device.type == "cuda"
        self.verifications: dict[tuple[Shape, tuple[str, ...]], Verification] = {}
        self._engines: dict[tuple[Shape, tuple[str, ...]], Any] = {}
        self._refused: dict[tuple[Shape, tuple[str, ...]], LiveError] = {}
        self._graphs = GraphCache(device, self.stats, "the TensorRT dream steps")

    @property
    def fuses_steps(self) -> bool:
        return self.cuda_graphs  # a captured few-step graph is short; splitting it would undo it

    def describe(self) -> str:
        return (f"tensorrt {self.toolchain.tensorrt} on {self.toolchain.gpu} ({self.precision}, verified plans"
                f"{self.graph_note()}{self.fallback_note()})")

    def prepare(self, shape: Shape, layers: tuple[str, ...], *, force: bool = False) -> None:
        """Export, build (unless ``no_build``), load and verify the engine for this size and
        layer set now; raises with the reason when it cannot be used."""
        self._engine(tuple(shape), tuple(layers), build=not self.no_build, force=force)  # type: ignore[arg-type]

    def release(self, shape: Shape, layers: tuple[str, ...]) -> None:
        """Drop a loaded engine and its buffers (``build-engines`` verifies one plan at a time)."""
        self._engines.pop((tuple(shape), tuple(layers)), None)  # type: ignore[arg-type]

    def plan_for(self, shape: Shape, layers: Sequence[str]) -> Path:
        """Where the plan for this size and layer set lives (model and weights in its name)."""
        spec = plan_spec(self.model, layers, shape, self.precision)
        return plan_path(spec.layers, spec.shape, spec.precision, self.toolchain, self.model.name,
                         weights_identity(self.model))

    def _engine(self, shape: Shape, layers: tuple[str, ...], *, build: bool, force: bool = False) -> Any:
        key = (shape, layers)
        if key in self._engines and not force:
            return self._engines[key]
        if key in self._refused and not force:
            raise self._refused[key]
        try:
            engine = self._load_verified(shape, layers, build=build, force=force)
        except LiveError as e:
            self._refused[key] = e  # not retried every frame
            raise
        self._refused.pop(key, None)
        self._engines[key] = engine
        return engine

    def _load_verified(self, shape: Shape, layers: tuple[str, ...], *, build: bool, force: bool) -> Any:
        spec = plan_spec(self.model, layers, shape, self.precision)
        onnx = ensure_onnx(self.model, spec.layers, spec.shape, self.dtype)
        plan = self.plan_for(shape, layers)
        weights = weights_identity(self.model)
        wanted = wanted_manifest(self.toolchain, onnx, spec.precision, spec.shape, spec.layers, self.model.name, weights)
        engine = load_plan(self.toolchain, onnx, plan, wanted,
                           lambda data: self.toolchain.load(data, spec.shape, spec.layers),
                           no_build=not build, force_reason="rebuild requested" if force else None)
        self.stats.net_builds += 1
        self.stats.buffer_allocs += 1

        def gradient(x: Tensor, objective: Objective) -> Tensor:
            engine.load_objective(objective)
            return engine.run(x).clone()

        result = verify(gradient, self.model, spec.shape, spec.layers, spec.precision, self.device)
        self.verifications[(shape, layers)] = result
        record_verification(plan, result)
        if not result.passed:
            raise VerificationError(f"TensorRT engine {plan.name} gives a wrong gradient ({result.reason}); "
                                    "quarantined")
        return engine

    def _serve(self, x: Tensor, objective: Objective) -> tuple[Any, Backend | None]:
        """The engine for this input, or the fallback backend that dreams it instead."""
        key = (tuple(int(d) for d in x.shape), objective.layers)
        build = self.fallback_factory is None and not self.no_build  # never build mid-show
        try:
            return self._engine(*key, build=build), None  # type: ignore[arg-type]
        except LiveError as e:  # quarantined, no plan under no-build, or a plan TensorRT refuses
            return None, self.fall_back(key, e)

    def gradient(self, x: Tensor, objective: Objective) -> tuple[Tensor, Tensor]:
        engine, other = self._serve(x, objective)
        if other is not None:
            return other.gradient(x, objective)
        engine.load_objective(objective)
        grad = engine.run(x)
        return grad.clone(), engine.score.clone()

    def ascend(self, x: Tensor, objective: Objective, steps: int, step: Tensor, jitter: int, lo: Tensor,
               hi: Tensor, generator: torch.Generator | None = None) -> Tensor:
        engine, other = self._serve(x, objective)
        if other is not None:
            return other.ascend(x, objective, steps, step, jitter, lo, hi, generator)
        engine.load_objective(objective)
        if self.cuda_graphs and steps > 0:
            shape = tuple(x.shape)
            # TensorRT allocates and initialises lazily on its first enqueue: one warm-up outside capture
            captured = self._graphs.get(
                (shape, objective.layers, steps),
                lambda: capture_ascent(engine.run, shape, steps, self.device, warmup=1),
            )
            if captured is not None:
                return captured(x, step, jitter, lo, hi)
        return ascent_steps(engine.run, x, steps, step, jitter, lo, hi, generator)


def create(model: Model, device: torch.device, *, precision: str | None = None,
           no_build: bool = False) -> TensorRTBackend:
    """Registry entry point (see :data:`live.backends.BACKENDS`); raises
    :class:`UnavailableError` with the reason when TensorRT or a CUDA GPU is missing."""
    import_tensorrt()
    if device.type != "cuda":
        raise UnavailableError(f"the tensorrt backend needs an NVIDIA GPU (--device cuda), not {device}")
    return TensorRTBackend(model, device, precision=precision, no_build=no_build)


# ----- building ahead of opening hours (`deepdream-live build-engines`)
Progress = Callable[[int, int, str], None]  # (done, total, what is being built now)


@dataclass(frozen=True)
class BuiltPlan:
    """What ``build-engines`` did for one plan: its path and verification, or why it failed."""

    spec: PlanSpec
    plan: Path
    verification: Verification | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.verification is not None and self.verification.passed


def engine_specs(model: Model, sizes: Sequence[tuple[int, int]], layer_sets: Sequence[Sequence[str]],
                 precision: str) -> list[PlanSpec]:
    """Every (layer set x size) as :func:`plan_spec`, sizes rounded as the loop rounds them
    (:func:`live.dreamsize.dream_shape`), duplicates dropped, in the order given."""
    specs: list[PlanSpec] = []
    for layers in layer_sets:
        for w, h in sizes:
            if w <= 0 or h <= 0:
                raise UsageError(f"dream sizes must be positive, got {w}x{h}")
            spec = plan_spec(model, layers, dream_shape(w, h), precision)
            if spec not in specs:
                specs.append(spec)
    return specs


def build_engines(
    model: Model,
    sizes: Sequence[tuple[int, int]],
    layer_sets: Sequence[Sequence[str]],
    *,
    precision: str | None = None,
    toolchain: Toolchain | None = None,
    progress: Progress | None = None,
    force: bool = False,
    device: torch.device | None = None,
) -> list[BuiltPlan]:
    """Export, build and verify every (layer set x size) ahead of opening hours.

    ``sizes`` are dream sizes (width, height), rounded as the loop rounds them; ``precision``
    defaults as for ``run`` on this device (fp16 on CUDA). It goes through
    :meth:`TensorRTBackend.prepare`, the code ``run`` uses, one plan at a time. A plan that fails
    its verification is quarantined and reported; the others are still built.
    ``progress(done, total, label)`` is called before each plan and once at the end.
    """
    device = device or torch.device("cuda")
    backend = TensorRTBackend(model, device, precision=precision, toolchain=toolchain)
    specs = engine_specs(model, sizes, layer_sets, backend.precision)
    results = []
    for i, spec in enumerate(specs):
        if progress:
            progress(i, len(specs), spec.label())
        plan = backend.plan_for(spec.shape, spec.layers)
        try:
            backend.prepare(spec.shape, spec.layers, force=force)
            results.append(BuiltPlan(spec, plan, backend.verifications.get((spec.shape, spec.layers))))
        except LiveError as e:
            log.error("%s: %s", spec.label(), e)
            results.append(BuiltPlan(spec, plan, backend.verifications.get((spec.shape, spec.layers)), str(e)))
        backend.release(spec.shape, spec.layers)
    if progress:
        progress(len(specs), len(specs), "done")
    return results
