"""Backends: the one thing that differs between PyTorch, onnxruntime and TensorRT.

A backend computes ``gradient(x, objective) -> (dL/dx, score)``; everything else (octaves,
jitter, feedback) lives outside it. A backend may also run several ascent steps at once
(:meth:`Backend.ascend`), which is where a CUDA graph or an engine with the update baked in
pays off. Backends are listed in one table and imported lazily, so heavy optional
dependencies (TensorRT) are only touched when asked for.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from live.ascent import ascent_steps
from live.errors import LiveError, UnavailableError, UsageError
from live.objectives import Objective

if TYPE_CHECKING:
    from live.model import Model

log = logging.getLogger(__name__)


@dataclass
class BackendStats:
    """Counters of expensive set-up work, so tests and logs can see nothing is rebuilt per change."""

    net_builds: int = 0  # networks prepared (copied to the device, cast, compiled or built)
    buffer_allocs: int = 0  # objective-weight buffer sets allocated (one per layer set)
    graph_captures: int = 0  # CUDA graphs captured (one per shape, layer set and step count)
    graph_failures: int = 0  # captures that failed: those keys run step by step (slower), said in describe()


class Backend(ABC):
    """Computes the dream gradient on one device. Subclasses register in :data:`BACKENDS`."""

    name: str = "?"
    size_multiple: int = 1  # dream sizes must be multiples of this (static-shape engines: 32)

    @property
    def fuses_steps(self) -> bool:
        """True when :meth:`ascend` runs its steps as one unit (a captured CUDA graph): the dreamer
        then looks in between octaves, not between steps, so the graph stays whole."""
        return False

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stats = BackendStats()
        # Where (shape, layer set) keys this backend cannot serve go instead (a plan that failed
        # its verification, or none built under --no-build): set by `run`, so the show goes on.
        self.fallback_factory: Callable[[], Backend] | None = None
        self._fallback: Backend | None = None
        self._fell_back: dict[Hashable, str] = {}

    @abstractmethod
    def gradient(self, x: Tensor, objective: Objective) -> tuple[Tensor, Tensor]:
        """dL/dx for ``x`` (N, 3, H, W, float32, model space) and the score L (0-d tensor)."""

    def ascend(
        self,
        x: Tensor,
        objective: Objective,
        steps: int,
        step: Tensor,
        jitter: int,
        lo: Tensor,
        hi: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Run ``steps`` ascent steps (see :func:`live.ascent.ascent_steps`); backends may fuse them."""
        return ascent_steps(lambda z: self.gradient(z, objective)[0], x, steps, step, jitter, lo, hi, generator)

    def prepare(self, shape: tuple[int, int, int, int], layers: tuple[str, ...]) -> None:
        """Do the set-up for this input shape and layer set now (export, engine build), so the
        first frame does not stall; backends with nothing to prepare do nothing."""

    def describe(self) -> str:
        return f"{self.name} on {self.device}"

    def fall_back(self, key: Hashable, error: LiveError) -> Backend:
        """The backend that dreams ``key`` instead of this one, after ``error``; re-raises
        ``error`` when no fallback was set. Logged once per key, as a warning with the reason."""
        if self.fallback_factory is None:
            raise error
        if self._fallback is None:
            self._fallback = self.fallback_factory()
        if key not in self._fell_back:
            self._fell_back[key] = str(error)
            log.warning("%s cannot dream %s: %s\n  dreaming it on %s instead", self.name, _key_text(key),
                        " ".join(str(error).split()), self._fallback.describe())
        return self._fallback

    def graph_note(self) -> str:
        """What became of this backend's CUDA-graph captures when any failed (for describe(), the
        status line and the GPU check's rows), else ``""``: a failed capture runs step by step,
        several times slower, and nobody should read "CUDA graphs" then."""
        s = self.stats
        if not s.graph_failures:
            return ""
        if not s.graph_captures:
            return f"; CUDA graph capture failed ({s.graph_failures}x): step by step"
        return (f"; {s.graph_failures} of {s.graph_captures + s.graph_failures} CUDA graph captures failed: "
                "those run step by step")

    def fallback_note(self) -> str:
        """``"; torch for 2 size/layer sets"`` when some work went to the fallback (for the status
        line and the overlay: the operator sees what really dreams), else ``""``."""
        if not self._fell_back or self._fallback is None:
            return ""
        return f"; {self._fallback.name} for {len(self._fell_back)} size/layer set(s)"

    @property
    def fell_back(self) -> dict[Hashable, str]:
        """Keys handed to the fallback, with the reason (for status and tests)."""
        return dict(self._fell_back)


# name -> module holding a ``create(model, device) -> Backend`` function; imported on first use.
BACKENDS: dict[str, str] = {
    "torch": "live.backends.torch_backend",
    "onnx": "live.backends.onnx_backend",
    "tensorrt": "live.backends.tensorrt_backend",
}

# What ``--backend auto`` tries, fastest first, as (backend, device kind). On the CPU torch comes
# before onnx: the forward-ops graph does ~2x the work of autograd (nine slices and a scatter per
# max-pool) and onnxruntime has no fusion to win it back - measured 156 ms vs 494 ms a step at
# 640x352, inception4c, 2 threads (bench/onnx_step.py). TensorRT fuses it, hence first on CUDA.
AUTO_ORDER: tuple[tuple[str, str], ...] = (("tensorrt", "cuda"), ("torch", "cuda"), ("torch", "cpu"), ("onnx", "cpu"))


def resolve_device(device: str) -> torch.device:
    """``auto`` → the first CUDA device if there is one, else the CPU; explicit names are checked."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.info("no CUDA device visible to PyTorch %s: dreaming on the CPU", torch.__version__)
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnavailableError(
            f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA device. "
            "Install a CUDA build of PyTorch and check `nvidia-smi`, or use --device cpu."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UnavailableError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    return dev


PRECISIONS: tuple[str, ...] = ("fp16", "fp32")
# The torch backend in fp16 on a 2-core CPU: 1914 ms against 234 ms in fp32 for one inception4c
# gradient at 128x96 (PyTorch 2.13); it runs, for comparing precisions, and says so.
CPU_FP16_SLOWDOWN = 8


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """The compute precision for ``device``: ``None``/``auto`` is fp16 on CUDA and fp32 on the CPU.

    This one function decides it for every command (run, image, bench, calibrate and
    build-engines), so a plan built ahead has the precision the show asks for.
    """
    if precision in (None, "auto"):
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: expected fp16, fp32 or auto")
    if precision == "fp16" and device.type == "cpu":
        log.warning("fp16 on the CPU runs about %dx slower than fp32 (no fp16 arithmetic there); "
                    "useful to compare precisions, not for a show", CPU_FP16_SLOWDOWN)
    return precision


def open_backend(
    name: str,
    model: Model,
    device: str = "auto",
    *,
    precision: str | None = None,
    no_build: bool = False,
    prepare: tuple[tuple[int, int, int, int], tuple[str, ...]] | None = None,
    fallback: bool = False,
) -> Backend:
    """Create a backend by name. ``auto`` tries the fastest first and logs why others were skipped;
    an explicitly named backend that cannot run raises with its reason.

    ``prepare=(shape, layers)`` does the set-up for the first frame now (export, build, and the
    verification of a plan or session): with ``auto`` a backend whose preparation fails is
    skipped like one that cannot start, so tensorrt goes first only once its plan has passed.
    ``fallback`` is the show's setting: a graph backend (onnx, tensorrt) that cannot prepare, or
    later meets a size or layer set without a usable plan, hands that work to the torch backend
    on the same device with a warning that says why, instead of stopping or building mid-show.
    ``no_build`` never builds a TensorRT plan; without a valid one the work goes to torch.
    """
    options = {"precision": precision, "no_build": no_build}
    if name == "auto":
        failures: list[str] = []
        loud = False  # a faster path that should have run here and did not: say so as a warning
        for candidate, kind in AUTO_ORDER:
            if device != "auto" and not device.startswith(kind):
                failures.append(f"{candidate} on {kind}: --device {device} was asked for")
                continue
            if kind == "cuda" and device == "auto" and not torch.cuda.is_available():
                failures.append(f"{candidate} on cuda: PyTorch {torch.__version__} sees no CUDA device")
                continue
            try:
                backend = _create(candidate, model, device if device != "auto" else kind, options)
            except LiveError as e:
                failures.append(f"{candidate} on {kind}: {e}")
                loud = loud or kind == "cuda"
                continue
            if prepare is not None:
                try:
                    backend.prepare(*prepare)
                except LiveError as e:  # it starts here, but its plan or graph cannot be used: say so
                    failures.append(f"{candidate} on {kind}: {e}")
                    loud = True
                    continue
            for reason in failures:
                log.log(logging.WARNING if loud else logging.INFO, "backend skipped - %s", reason)
            if fallback:
                _set_fallback(backend, model, options)
            log.info("backend: %s", backend.describe())
            return backend
        raise UnavailableError("no backend could start:\n  " + "\n  ".join(failures))
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; expected auto or one of: {', '.join(BACKENDS)}")
    backend = _create(name, model, device, options)
    if prepare is not None:
        try:
            backend.prepare(*prepare)
        except LiveError as e:
            if not fallback or name == "torch":
                raise
            torch_backend = _create("torch", model, str(backend.device), options)
            log.warning("%s cannot dream %s: %s\n  the show starts on %s instead", name, _key_text(prepare),
                        " ".join(str(e).split()), torch_backend.describe())
            torch_backend.prepare(*prepare)
            backend = torch_backend
    if fallback:
        _set_fallback(backend, model, options)
    log.info("backend: %s", backend.describe())
    return backend


def _set_fallback(backend: Backend, model: Model, options: dict[str, object]) -> None:
    if backend.name != "torch":
        backend.fallback_factory = lambda: _create("torch", model, str(backend.device), options)


def _key_text(key: Hashable) -> str:
    """``((1, 3, 704, 1280), ('inception4c',))`` as ``inception4c at 1280x704``."""
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], tuple) and len(key[0]) == 4:
        shape, layers = key
        return f"{'+'.join(layers)} at {shape[3]}x{shape[2]}"
    return str(key)


def _create(name: str, model: Model, device: str, options: dict[str, object] | None = None) -> Backend:
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError as e:
        raise UnavailableError(f"backend {name} needs a package that is not installed: {e}") from e
    return module.create(model, resolve_device(device), **(options or {}))
