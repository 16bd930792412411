"""The engines directory: exported ONNX dream graphs and TensorRT plans with verified manifests.

A TensorRT plan runs only on the TensorRT version and GPU architecture it was built for, and
only means something for the ONNX graph (weights, layer set, size, precision) it was built from.
So every plan has a JSON manifest beside it saying all of that, plus the plan's own size and
sha256. Before a plan is used, :func:`check` compares the manifest with what this machine wants;
any difference, a missing manifest, or a truncated or corrupt plan is a reason to rebuild
(logged), or, with ``no_build``, to refuse with the command that rebuilds it.

The actual build is behind :class:`Toolchain` (the real one is TensorRT, in
:mod:`live.backends.tensorrt_backend`), so the cache logic is tested with a stand-in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from live import __version__
from live.atomic import atomic_write
from live.errors import DataError, OutputError, UnavailableError

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".json"
Shape = tuple[int, int, int, int]


def engines_dir() -> Path:
    """``$DEEPDREAM_LIVE_ENGINES``, else ``engines/`` in the user cache (beside the weights)."""
    if os.environ.get("DEEPDREAM_LIVE_ENGINES"):
        return Path(os.environ["DEEPDREAM_LIVE_ENGINES"])
    from live.model.weights import cache_dir

    return cache_dir() / "engines"


def ensure_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            f"cannot create the engines directory {path}: {e.strerror}. "
            "Point $DEEPDREAM_LIVE_ENGINES at a writable directory."
        ) from e
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def size_text(shape: Shape) -> str:
    """``WxH`` of an NCHW shape, as the command line spells sizes."""
    return f"{shape[3]}x{shape[2]}"


def stem(layers: Sequence[str], shape: Shape, precision: str) -> str:
    """File name stem shared by a graph's ONNX file and its plans: layer set, size, precision."""
    batch = f"-n{shape[0]}" if shape[0] != 1 else ""
    return f"dream-{'+'.join(layers)}-{size_text(shape)}{batch}-{precision}"


def rebuild_command(shape: Shape, layers: Sequence[str], precision: str = "fp16") -> str:
    """The command an operator runs to build this plan ahead of time."""
    extra = "" if precision == "fp16" else f" --precision {precision}"
    return f"deepdream-live build-engines --sizes {size_text(shape)} --layers {'+'.join(layers)}{extra}"


@dataclass(frozen=True)
class Manifest:
    """What a plan was built for. ``plan_bytes``/``plan_sha256`` describe the plan file itself."""

    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    shape: Shape
    layers: tuple[str, ...]
    onnx_sha256: str
    project: str = __version__
    plan_bytes: int = 0
    plan_sha256: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # informative only (build time, workspace)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["shape"] = tuple(int(v) for v in data["shape"])
        data["layers"] = tuple(data["layers"])
        return cls(**data)


def _mismatch(have: Manifest, want: Manifest) -> str | None:
    """Why a plan built for ``have`` must not run where ``want`` holds; None if it may."""
    if have.tensorrt != want.tensorrt:
        return f"built with TensorRT {have.tensorrt}, this machine has {want.tensorrt}"
    if (have.gpu, have.compute_capability) != (want.gpu, want.compute_capability):
        return (f"built for {have.gpu} (compute capability {have.compute_capability}), "
                f"this is {want.gpu} ({want.compute_capability})")
    if have.precision != want.precision:
        return f"built in {have.precision}, wanted {want.precision}"
    if have.shape != want.shape:
        return f"built for shape {'x'.join(map(str, have.shape))}, wanted {'x'.join(map(str, want.shape))}"
    if have.layers != want.layers:
        return f"built for layers {'+'.join(have.layers)}, wanted {'+'.join(want.layers)}"
    if have.onnx_sha256 != want.onnx_sha256:
        return (f"the ONNX graph changed (sha256 {have.onnx_sha256[:12]} -> {want.onnx_sha256[:12]}: "
                "other weights or a new exporter)")
    if have.project != want.project:
        return f"built by deepdream-live {have.project}, this is {want.project}"
    return None


def manifest_path(plan: Path) -> Path:
    return plan.with_name(plan.name + MANIFEST_SUFFIX)


def check(plan: Path, wanted: Manifest) -> str | None:
    """Why ``plan`` cannot be used for ``wanted`` (a sentence for the log), or None if it can.

    Reads the manifest and verifies the plan's size and sha256 against it, so a truncated or
    corrupted plan is never handed to TensorRT.
    """
    mpath = manifest_path(plan)
    if not plan.exists():
        return "no plan built yet"
    try:
        have = Manifest.from_json(mpath.read_text())
    except FileNotFoundError:
        return f"the plan has no manifest ({mpath.name})"
    except (OSError, ValueError, TypeError, KeyError) as e:
        return f"its manifest {mpath.name} is unreadable ({type(e).__name__}: {e})"
    reason = _mismatch(have, wanted)
    if reason:
        return reason
    size = plan.stat().st_size
    if size != have.plan_bytes:
        return f"the plan is truncated or overwritten ({size} bytes, its manifest says {have.plan_bytes})"
    if sha256_file(plan) != have.plan_sha256:
        return "the plan is corrupt (its sha256 differs from its manifest)"
    return None


class Toolchain(Protocol):
    """What builds plans on this machine: TensorRT on one GPU, or a stand-in in tests."""

    tensorrt: str  # version
    gpu: str
    compute_capability: str

    def build(self, onnx: Path, shape: Shape, engines: Path) -> bytes:
        """Serialized plan for the ONNX file at ``shape``; may keep a timing cache in ``engines``."""
        ...


def wanted_manifest(toolchain: Toolchain, onnx: Path, precision: str, shape: Shape, layers: Sequence[str]) -> Manifest:
    return Manifest(
        tensorrt=toolchain.tensorrt, gpu=toolchain.gpu, compute_capability=toolchain.compute_capability,
        precision=precision, shape=tuple(shape), layers=tuple(layers), onnx_sha256=sha256_file(onnx),
    )


def build_engine(
    toolchain: Toolchain,
    onnx: Path,
    plan: Path,
    wanted: Manifest,
    *,
    no_build: bool = False,
    force_reason: str | None = None,
) -> Path:
    """Return ``plan`` once it is valid for ``wanted``, building it first if it is not.

    ``force_reason`` rebuilds even a plan whose manifest matches (e.g. TensorRT refused to
    deserialize it). ``no_build`` raises :class:`UnavailableError` with the command to rebuild
    instead of building. Plan and manifest are written atomically, plan first: a crash in between
    leaves a manifest whose checksum no longer matches, which :func:`check` catches.
    """
    reason = force_reason or check(plan, wanted)
    if reason is None:
        log.debug("engine %s is valid for this machine", plan.name)
        return plan
    if no_build:
        raise UnavailableError(
            f"TensorRT engine {plan} cannot be used: {reason}.\n"
            f"  Build it with: {rebuild_command(wanted.shape, wanted.layers, wanted.precision)}"
        )
    log.warning("building TensorRT engine %s (%s); this takes a while", plan.name, reason)
    ensure_dir(plan.parent)
    data = toolchain.build(onnx, wanted.shape, plan.parent)
    if not data:
        raise UnavailableError(f"TensorRT returned no plan for {onnx.name}; see the TensorRT messages above")
    with atomic_write(plan) as f:
        f.write(data)
    done = replace(wanted, plan_bytes=len(data), plan_sha256=hashlib.sha256(data).hexdigest())
    with atomic_write(manifest_path(plan)) as f:
        f.write(done.to_json().encode())
    log.info("engine %s written (%.1f MB)", plan.name, len(data) / 1e6)
    return plan


def load_plan(
    toolchain: Toolchain,
    onnx: Path,
    plan: Path,
    wanted: Manifest,
    load: Callable[[bytes], object],
    *,
    no_build: bool = False,
) -> object:
    """Build if needed, then ``load(plan bytes)``; a plan the runtime rejects is rebuilt once."""
    build_engine(toolchain, onnx, plan, wanted, no_build=no_build)
    try:
        return load(plan.read_bytes())
    except Exception as e:  # a runtime's refusal has many shapes; the reason goes in the log
        reason = f"TensorRT could not load it ({type(e).__name__}: {e})"
    build_engine(toolchain, onnx, plan, wanted, no_build=no_build, force_reason=reason)
    try:
        return load(plan.read_bytes())
    except Exception as e:
        raise DataError(f"TensorRT cannot load the freshly built engine {plan}: {e}") from e


def plan_path(layers: Sequence[str], shape: Shape, precision: str, toolchain: Toolchain) -> Path:
    """Where the plan for this graph and GPU architecture lives in the engines directory."""
    arch = "sm" + toolchain.compute_capability.replace(".", "")
    return engines_dir() / f"{stem(layers, shape, precision)}-{arch}.plan"
