"""The engines directory: exported ONNX dream graphs and TensorRT plans with verified manifests.

A TensorRT plan runs only on the TensorRT version and GPU architecture it was built for, and
only means something for the ONNX graph (model, weights, layer set, size, precision) it was built
from. So every plan has a JSON manifest beside it saying all of that, plus the plan's own size
and sha256 and the result of its verification against the torch gradient. Before a plan is used,
:func:`check` compares the manifest with what this machine wants; any difference, a missing
manifest, or a truncated or corrupt plan is a reason to rebuild (logged), or, with ``no_build``,
to refuse with the command that rebuilds it. A plan that failed its verification is quarantined:
its manifest keeps the reason, and it is neither used nor silently rebuilt until its inputs change
or a rebuild is forced (docs/architecture.md, "Engines and calibration").

Plan file names carry the model and the weights' identity, so torchvision and bvlc (or ImageNet
and random weights) never overwrite each other's plans; the timing cache is kept per GPU and
TensorRT version.

The actual build is behind :class:`Toolchain` (the real one is TensorRT, in
:mod:`live.backends.tensorrt_backend`), so the cache logic is tested with a stand-in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from live import __version__
from live.atomic import atomic_write
from live.dreamsize import Shape
from live.errors import DataError, OutputError, UnavailableError

if TYPE_CHECKING:
    from live.model import Model

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".json"
# Verification: a plan or session must reach this cosine to the torch gradient (float64) on a
# fixed random input of its shape before it is trusted (docs/architecture.md, "Engines and calibration").
MIN_COSINE = {"fp16": 0.99, "fp32": 0.9999}


class VerificationError(UnavailableError):
    """A plan or session gave a wrong gradient: quarantined, never used for the show."""


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


def rebuild_command(shape: Shape, layers: Sequence[str], precision: str = "fp16", model: str = "torchvision",
                    *, force: bool = False) -> str:
    """The command an operator runs to build this plan ahead of time."""
    extra = "" if precision == "fp16" else f" --precision {precision}"
    if model != "torchvision":
        extra += f" --model {model}"
    if force:
        extra += " --force"
    return f"deepdream-live build-engines --sizes {size_text(shape)} --layers {'+'.join(layers)}{extra}"


_weights_ids: dict[int, tuple[Any, str]] = {}


def weights_identity(model: Model) -> str:
    """sha256 of the network's parameters: what makes two plans of one model differ (cached per
    network object; hashing GoogLeNet's 25 MB takes a moment)."""
    net = model.net
    cached = _weights_ids.get(id(net))
    if cached is not None and cached[0] is net:
        return cached[1]
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    digest = h.hexdigest()
    _weights_ids[id(net)] = (net, digest)
    return digest


@dataclass(frozen=True)
class Verification:
    """How a plan or session compared with the torch gradient on a fixed random input."""

    passed: bool
    cosine: float
    threshold: float
    reference: str  # what it was compared with, e.g. "torch float64 on cuda"
    checked: str = ""  # ISO time
    reason: str = ""  # why it failed, for the log and the manifest

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return f"verification {verdict}: cosine {self.cosine:.5f} to {self.reference} (needs >= {self.threshold})"


def verification_for(precision: str, cosine: float, reference: str) -> Verification:
    """The verdict for ``cosine`` at ``precision``'s threshold (:data:`MIN_COSINE`)."""
    threshold = MIN_COSINE[precision]
    passed = bool(cosine >= threshold)  # NaN fails
    reason = "" if passed else f"gradient cosine {cosine:.5f} to {reference}, below {threshold} for {precision}"
    return Verification(passed, float(cosine), threshold, reference,
                        dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), reason)


@dataclass(frozen=True)
class Manifest:
    """What a plan was built for. ``plan_bytes``/``plan_sha256`` describe the plan file itself;
    ``verification`` is the last :class:`Verification` (as a dict), empty until one ran."""

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
    model: str = ""
    weights: str = ""  # sha256 of the network's parameters (weights_identity)
    verification: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)  # informative only (build time, workspace)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["shape"] = tuple(int(v) for v in data["shape"])
        data["layers"] = tuple(data["layers"])
        return cls(**data)

    @property
    def quarantined(self) -> str | None:
        """The reason this plan failed its verification, or None."""
        v = self.verification
        if v and not v.get("passed", False):
            return str(v.get("reason") or "its verification failed")
        return None


def _mismatch(have: Manifest, want: Manifest) -> str | None:
    """Why a plan built for ``have`` must not run where ``want`` holds; None if it may."""
    if have.tensorrt != want.tensorrt:
        return f"built with TensorRT {have.tensorrt}, this machine has {want.tensorrt}"
    if (have.gpu, have.compute_capability) != (want.gpu, want.compute_capability):
        return (f"built for {have.gpu} (compute capability {have.compute_capability}), "
                f"this is {want.gpu} ({want.compute_capability})")
    if have.model != want.model:
        return f"built for the {have.model or 'unnamed'} model, wanted {want.model}"
    if have.weights != want.weights:
        return (f"built for other weights (sha256 {have.weights[:12] or 'unrecorded'}, "
                f"these are {want.weights[:12]})")
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


def read_manifest(plan: Path) -> Manifest:
    """The manifest beside ``plan``; DataError saying why it cannot be read."""
    mpath = manifest_path(plan)
    try:
        return Manifest.from_json(mpath.read_text())
    except FileNotFoundError:
        raise DataError(f"the plan has no manifest ({mpath.name})") from None
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise DataError(f"its manifest {mpath.name} is unreadable ({type(e).__name__}: {e})") from None


def integrity(plan: Path, have: Manifest) -> str | None:
    """Why the plan file does not match its manifest (size, then sha256), or None."""
    size = plan.stat().st_size
    if size != have.plan_bytes:
        return f"the plan is truncated or overwritten ({size} bytes, its manifest says {have.plan_bytes})"
    if sha256_file(plan) != have.plan_sha256:
        return "the plan is corrupt (its sha256 differs from its manifest)"
    return None


def check(plan: Path, wanted: Manifest) -> str | None:
    """Why ``plan`` cannot be used for ``wanted`` (a sentence for the log), or None if it can.

    Reads the manifest and verifies the plan's size and sha256 against it, so a truncated or
    corrupted plan is never handed to TensorRT; a quarantined plan says why it was quarantined.
    """
    if not plan.exists():
        return "no plan built yet"
    try:
        have = read_manifest(plan)
    except DataError as e:
        return str(e)
    reason = _mismatch(have, wanted) or integrity(plan, have)
    if reason:
        return reason
    if have.quarantined:
        return f"quarantined: {have.quarantined}"
    return None


def is_quarantined(plan: Path, wanted: Manifest) -> bool:
    """Whether ``plan`` is intact, built for exactly ``wanted`` and failed its verification: then
    a rebuild would most likely fail the same way, so it is not rebuilt without ``--force``."""
    try:
        have = read_manifest(plan)
    except DataError:
        return False
    return bool(plan.exists() and have.quarantined and not _mismatch(have, wanted) and not integrity(plan, have))


def record_verification(plan: Path, verification: Verification) -> None:
    """Write ``verification`` into the plan's manifest (atomically); a failure quarantines the plan.
    An engines directory that cannot be written loses the record, not the verdict (logged)."""
    have = read_manifest(plan)
    done = replace(have, verification=asdict(verification))
    if verification.passed:
        log.info("engine %s: %s", plan.name, verification.describe())
    else:
        log.error("engine %s quarantined: %s", plan.name, verification.reason)
    if done.verification == have.verification:
        return
    try:
        with atomic_write(manifest_path(plan)) as f:
            f.write(done.to_json().encode())
    except OSError as e:
        log.warning("could not record the verification in %s: %s", manifest_path(plan), e)


class Toolchain(Protocol):
    """What builds plans on this machine: TensorRT on one GPU, or a stand-in in tests."""

    tensorrt: str  # version
    gpu: str
    compute_capability: str

    def build(self, onnx: Path, shape: Shape, engines: Path) -> bytes:
        """Serialized plan for the ONNX file at ``shape``; may keep a timing cache in ``engines``
        (see :func:`timing_cache_path`)."""
        ...

    def load(self, data: bytes, shape: Shape, layers: Sequence[str]) -> Any:
        """A runnable engine from a plan's bytes (see :mod:`live.backends.tensorrt_backend`)."""
        ...


def wanted_manifest(toolchain: Toolchain, onnx: Path, precision: str, shape: Shape, layers: Sequence[str],
                    model: str = "", weights: str = "") -> Manifest:
    return Manifest(
        tensorrt=toolchain.tensorrt, gpu=toolchain.gpu, compute_capability=toolchain.compute_capability,
        precision=precision, shape=tuple(shape), layers=tuple(layers), onnx_sha256=sha256_file(onnx),
        model=model, weights=weights,
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
    if force_reason is None and is_quarantined(plan, wanted):
        raise VerificationError(
            f"TensorRT engine {plan.name} is {reason}.\n  After updating TensorRT or the driver, rebuild it with: "
            f"{rebuild_command(wanted.shape, wanted.layers, wanted.precision, wanted.model or 'torchvision', force=True)}"
        )
    if no_build:
        raise UnavailableError(
            f"TensorRT engine {plan} cannot be used: {reason}.\n"
            f"  Build it with: {rebuild_command(wanted.shape, wanted.layers, wanted.precision, wanted.model or 'torchvision')}"
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
    force_reason: str | None = None,
) -> object:
    """Build if needed, then ``load(plan bytes)``; a plan the runtime rejects is rebuilt once."""
    build_engine(toolchain, onnx, plan, wanted, no_build=no_build, force_reason=force_reason)
    try:
        return load(plan.read_bytes())
    except Exception as e:  # a runtime's refusal has many shapes; the reason goes in the log
        reason = f"TensorRT could not load it ({type(e).__name__}: {e})"
    build_engine(toolchain, onnx, plan, wanted, no_build=no_build, force_reason=reason)
    try:
        return load(plan.read_bytes())
    except Exception as e:
        raise DataError(f"TensorRT cannot load the freshly built engine {plan}: {e}") from e


def plan_path(layers: Sequence[str], shape: Shape, precision: str, toolchain: Toolchain,
              model: str = "", weights: str = "") -> Path:
    """Where the plan for this graph and GPU architecture lives in the engines directory: the
    model and the first 12 hex digits of the weights' sha256 lead the name, so plans of other
    networks or weights never overwrite this one."""
    arch = "sm" + toolchain.compute_capability.replace(".", "")
    who = f"{model}-{weights[:12]}-" if model or weights else ""
    return engines_dir() / f"{who}{stem(layers, shape, precision)}-{arch}.plan"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def timing_cache_path(toolchain: Toolchain, engines: Path | None = None) -> Path:
    """The TensorRT timing cache for this GPU and TensorRT version: a cache is only valid for
    the device and version that made it, so each gets its own file (and a mismatch is rejected,
    never ignored: NVIDIA warns of wrong results and slow plans from a foreign cache)."""
    arch = "sm" + toolchain.compute_capability.replace(".", "")
    name = f"timing-{_slug(toolchain.gpu)}-{arch}-trt{_slug(toolchain.tensorrt)}.cache"
    return (engines or engines_dir()) / name


# ----------------------------------------------------------------------------- checking a directory
@dataclass(frozen=True)
class PlanReport:
    """One plan in the engines directory as ``check`` sees it."""

    plan: Path
    ok: bool
    detail: str


def validate_all(engines: Path | None = None, *, tensorrt: str | None = None, gpu: str | None = None,
                 compute_capability: str | None = None) -> list[PlanReport]:
    """Every plan in the engines directory checked against its manifest and this machine.

    A plan is fine when its manifest reads, its size and sha256 match, it was built by this
    project version, for this machine's TensorRT version and GPU (when those are known here:
    ``None`` means not installed or not visible, which itself makes the plan unusable) and it
    passed its verification. Cheap: no TensorRT is loaded and nothing is built.
    """
    where = engines or engines_dir()
    if not where.is_dir():
        return []
    reports = []
    for plan in sorted(where.glob("*.plan")):
        reports.append(_validate(plan, tensorrt, gpu, compute_capability))
    for mpath in sorted(where.glob(f"*.plan{MANIFEST_SUFFIX}")):
        plan = mpath.with_name(mpath.name[: -len(MANIFEST_SUFFIX)])
        if not plan.exists():
            reports.append(PlanReport(plan, False, f"{plan.name}: manifest without its plan"))
    return reports


def _validate(plan: Path, tensorrt: str | None, gpu: str | None, cc: str | None) -> PlanReport:
    try:
        have = read_manifest(plan)
    except DataError as e:
        return PlanReport(plan, False, f"{plan.name}: {e}")
    what = (f"{have.model or '?'} {'+'.join(have.layers)} {size_text(have.shape)} {have.precision}, "
            f"TensorRT {have.tensorrt} on {have.gpu}")
    problems = []
    bad = integrity(plan, have)
    if bad:
        problems.append(bad)
    if have.project != __version__:
        problems.append(f"built by deepdream-live {have.project}, this is {__version__}")
    if tensorrt is None:
        problems.append("TensorRT is not installed here")
    elif have.tensorrt != tensorrt:
        problems.append(f"this machine has TensorRT {tensorrt}")
    if gpu is None:
        problems.append("no CUDA GPU visible here")
    elif (have.gpu, have.compute_capability) != (gpu, cc or have.compute_capability):
        problems.append(f"this GPU is {gpu} ({cc})")
    if not have.model or not have.weights:
        problems.append("its manifest predates model and weights keys (rebuild)")
    v = have.verification
    if have.quarantined:
        problems.append(f"quarantined: {have.quarantined}")
    elif v:
        what += f"; verified, cosine {float(v.get('cosine', float('nan'))):.4f}"
    else:
        what += "; not verified yet (verified on first load)"
    if problems:
        return PlanReport(plan, False, f"{plan.name} ({what}): " + "; ".join(problems))
    return PlanReport(plan, True, f"{plan.name} ({what})")
