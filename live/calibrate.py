"""``deepdream-live calibrate``: what this machine and this camera can hold, written as a profile.

It times the real :class:`live.app.LiveLoop`, headless, on the built-in test scene (the same
path as ``bench``: :func:`live.benchmark.run_loop`) for every backend × dream size × steps ×
layer asked for, optionally reads the camera for a few seconds (its real frame rate, interval
jitter and how old a frame is when the loop takes it), chooses the settings that hold the
target frame rate with headroom, and writes ``calibration/<site>.toml`` atomically. ``run``
reads the choice back with :func:`load_profile`; the run-time governor corrects from there.

Decisions:

- **Random weights by default.** Speed does not depend on the weights' values, so calibration
  needs no download and runs offline.
- **The choice**: the largest size, then the most steps, whose measured frame rate is at least
  ``target_fps / headroom`` for *every* layer measured (the operator may switch layers live).
  When nothing holds the target, the cheapest measured setting is chosen with ``fits = false``
  and a warning; the governor will trim further at run time if it can.
- **A profile from another machine** (different GPU, or different CPU when dreaming on the CPU,
  or another backend) is still used, with a warning that names both machines: the governor
  corrects a wrong start within seconds, while refusing would leave an unattended show at
  defaults that may be far worse. Re-run ``calibrate`` to silence it.
- **A missing or corrupt profile is an error** naming the file and the command that writes it:
  a site config that names a profile expects it to be there.
- **The largest dream size** (``[limit]``): after the sweep, the size whose reference frame takes
  :data:`live.limits.FRAME_SECONDS` is predicted from the measured frames and then timed for
  real (:func:`live.limits.measure_limit`). ``run`` refuses larger sizes from any source; a
  profile from another machine does not lend its limit (the device's default applies).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import platform
import re
import socket
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

from live.atomic import atomic_write
from live.errors import DataError, InputError, OutputError, UsageError
from live.tomlfile import read_toml

if TYPE_CHECKING:
    import torch

    from live.limits import DreamLimit

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the file layout changes; older readers refuse newer files with a reason
DEFAULT_TARGET_FPS = 25.0
DEFAULT_HEADROOM = 0.85
# Short enough for a CPU to finish in well under a minute; --full measures the wider sweep.
CPU_SIZES = ((320, 192), (256, 160))
CPU_STEPS = (1, 2, 3)
CUDA_SIZES = ((1920, 1088), (1280, 736), (960, 544), (640, 352))
CUDA_STEPS = (1, 2, 4, 6)
FULL_CPU_SIZES = ((640, 352), (480, 288), (320, 192), (256, 160))
FULL_CUDA_SIZES = ((1920, 1088), (1600, 896), (1280, 736), (1024, 576), (960, 544), (640, 352))
FULL_STEPS = (1, 2, 3, 4, 6, 8)
FULL_LAYERS = ("inception3b", "inception4c", "inception5b")
# What outputs are measured at unless told: the size `run` asks a camera for. calibrate trims the
# dream size only; the output stays what the show sends (docs/architecture.md, "Frame budget").
DEFAULT_OUTPUT_SIZE = (1280, 720)
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _steps(n: int) -> str:
    return f"{n} step{'' if n == 1 else 's'}"


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Measurement:
    """One timed setting: the whole live loop, headless, on the test scene."""

    backend: str
    layer: str
    width: int
    height: int
    steps: int
    fps: float
    frame_ms: float
    latency_ms: float

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass(frozen=True)
class CameraMeasurement:
    """What the camera really delivers. ``skipped`` holds the reason when it was not measured."""

    spec: str
    fps: float = 0.0
    jitter_ms: float = 0.0  # standard deviation of the interval between frames
    max_interval_ms: float = 0.0
    read_latency_ms: float = 0.0  # how old a frame is when the loop takes it (not sensor latency)
    frames: int = 0
    size: str = ""
    skipped: str = ""


@dataclass(frozen=True)
class Choice:
    """The chosen setting; ``fits`` is false when nothing measured holds the target."""

    backend: str
    width: int
    height: int
    steps: int
    fps: float
    fits: bool


@dataclass(frozen=True)
class Profile:
    """A calibration profile as written to, or read from, ``calibration/<site>.toml``."""

    site: str
    created: str
    target_fps: float
    headroom: float
    chosen: Choice
    machine: Mapping[str, str]
    table: tuple[Measurement, ...]
    camera: CameraMeasurement | None = None
    path: Path | None = None
    mismatch: tuple[str, ...] = field(default=())  # how this machine differs from the measured one
    output_size: str = ""  # "WxH" the outputs were measured at (the dream sizes are in the table)
    max_pixels: int | None = None  # the largest dream size measured here (None: not measured)
    limit_note: str = ""  # how it was measured

    def limit(self, device: str) -> DreamLimit | None:
        """The measured largest dream size, if it applies to this machine and ``device`` kind."""
        from live.limits import DreamLimit

        if self.max_pixels is None or self.mismatch:
            return None
        kind = "cuda" if self.machine.get("gpu", "none") != "none" else "cpu"
        if kind != ("cuda" if device.startswith("cuda") else "cpu"):
            return None
        return DreamLimit(self.max_pixels, kind, f"{self.limit_note or 'measured by calibrate'} ({self.path})")

    def registry_values(self) -> dict[str, int]:
        """The chosen steps and size, for ``registry.update(..., source="calibration")``."""
        return {"steps": self.chosen.steps, "width": self.chosen.width, "height": self.chosen.height}

    def sizes(self) -> list[tuple[int, int]]:
        """The measured dream sizes, largest first: the governor's ladder."""
        return sorted({m.size for m in self.table}, key=lambda s: -s[0] * s[1])


# ----------------------------------------------------------------------------- the machine
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_description(device: torch.device | None = None) -> dict[str, str]:
    """CPU, GPU (name and compute capability), PyTorch and CUDA versions, and the host name."""
    import torch  # here, so `deepdream-live --help` does not pay for importing torch
    gpu, capability = "none", ""
    use_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if use_cuda and torch.cuda.is_available():
        index = device.index if device is not None and device.index is not None else 0
        gpu = torch.cuda.get_device_name(index)
        capability = "{}.{}".format(*torch.cuda.get_device_capability(index))
    return {
        "cpu": _cpu_name(),
        "gpu": gpu,
        "gpu_capability": capability,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "python": platform.python_version(),
        "host": socket.gethostname(),
    }


def compare_machines(measured: Mapping[str, str], here: Mapping[str, str]) -> list[str]:
    """The differences that change speed: the GPU, or the CPU when neither has a GPU."""
    reasons = []
    if measured.get("gpu") != here.get("gpu"):
        reasons.append(f"GPU {measured.get('gpu')!r} there, {here.get('gpu')!r} here")
    elif here.get("gpu") == "none" and measured.get("cpu") != here.get("cpu"):
        reasons.append(f"CPU {measured.get('cpu')!r} there, {here.get('cpu')!r} here")
    return reasons


# ----------------------------------------------------------------------------- choosing
def choose(table: Sequence[Measurement], target_fps: float, headroom: float = DEFAULT_HEADROOM) -> Choice:
    """The largest size, then the most steps, that holds ``target_fps / headroom`` on every
    measured layer; across backends the fastest wins. Nothing fits: the cheapest, ``fits=False``."""
    if not table:
        raise UsageError("nothing was measured: give at least one size, one step count and one layer")
    need = target_fps / headroom
    # worst layer per (backend, size, steps): the operator may switch layers while the show runs
    worst: dict[tuple[str, int, int, int], float] = {}
    for m in table:
        key = (m.backend, m.width, m.height, m.steps)
        worst[key] = min(worst.get(key, float("inf")), m.fps)
    ranked = sorted(worst.items(), key=lambda kv: (-kv[0][1] * kv[0][2], -kv[0][3], -kv[1]))
    for (backend, w, h, steps), fps in ranked:
        if fps >= need:
            return Choice(backend, w, h, steps, fps, True)
    (backend, w, h, steps), fps = max(worst.items(), key=lambda kv: kv[1])
    return Choice(backend, w, h, steps, fps, False)


# ----------------------------------------------------------------------------- measuring
def measure_camera(spec: str, seconds: float = 3.0, width: int = 1280, height: int = 720,
                   fps: float = 30.0) -> CameraMeasurement:
    """Read ``spec`` for ``seconds``: delivered fps, interval jitter, frame age when taken.
    A camera that cannot be opened (or delivers nothing) is skipped with the reason."""
    from live.sources import open_source

    try:
        source = open_source(spec, width, height, fps).start()
    except (InputError, UsageError) as e:
        log.warning("camera not measured: %s", e)
        return CameraMeasurement(spec, skipped=str(e))
    stamps: list[float] = []
    ages: list[float] = []
    size = ""
    last_seq = -1
    with source:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            frame = source.latest(timeout=0.5)
            if frame is None or frame.sequence == last_seq:
                continue
            if frame.placeholder:
                return CameraMeasurement(spec, skipped=f"the camera dropped out while measuring ({source.message})")
            ages.append(time.monotonic() - frame.timestamp)
            last_seq = frame.sequence
            stamps.append(frame.timestamp)
            size = "{}x{}".format(*frame.size)
    if len(stamps) < 3:
        return CameraMeasurement(spec, frames=len(stamps), skipped=f"only {len(stamps)} frame(s) in {seconds:g} s")
    intervals = [b - a for a, b in zip(stamps, stamps[1:])]
    measured = CameraMeasurement(
        spec=spec,
        fps=(len(stamps) - 1) / (stamps[-1] - stamps[0]),
        jitter_ms=1e3 * statistics.pstdev(intervals),
        max_interval_ms=1e3 * max(intervals),
        read_latency_ms=1e3 * statistics.median(ages),
        frames=len(stamps),
        size=size,
    )
    log.info("camera %s: %.1f fps at %s, jitter %.1f ms, longest gap %.0f ms", spec, measured.fps, size,
             measured.jitter_ms, measured.max_interval_ms)  # fmt: skip
    return measured


def default_profile_path(site: str) -> Path:
    """``calibration/<site>.toml`` (relative to the working directory)."""
    return Path("calibration") / f"{site}.toml"


def default_site_name() -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).strip("-.") or "site"
    return name[:64]


def calibrate(
    *,
    site: str | None = None,
    path: Path | None = None,
    target_fps: float = DEFAULT_TARGET_FPS,
    headroom: float = DEFAULT_HEADROOM,
    sizes: Sequence[tuple[int, int]] | None = None,
    steps: Sequence[int] | None = None,
    layers: Sequence[str] = ("inception4c",),
    backends: Sequence[str] = ("auto",),
    frames: int | None = None,
    full: bool = False,
    camera: str | None = None,
    camera_seconds: float = 3.0,
    weights: str = "random",
    device: str = "auto",
    precision: str | None = None,
    measure_limit: bool = True,
    output_size: tuple[int, int] = DEFAULT_OUTPUT_SIZE,
) -> Profile:
    """Measure, choose and write a profile; returns it (with ``path`` set).

    Per size, step counts are timed in increasing order and the rest are skipped once one runs
    at under half the target (more steps can only be slower), which keeps a sweep short. Every
    setting shows its frames at ``output_size`` (the camera's full-size picture plus the dream):
    only the dream size is chosen, never the output's.
    ``measure_limit``: also measure the largest dream size (a few seconds; see :mod:`live.limits`).
    """
    import cv2

    from live.app import round32
    from live.backends import BACKENDS, open_backend
    from live.benchmark import frames_source, run_loop
    from live.compose import check_output_size
    from live.errors import LiveError
    from live.model import load_model
    from live.objectives import Objective
    from live.sources.testscene import test_scene

    if not (math.isfinite(target_fps) and 0 < target_fps <= 240) or not (math.isfinite(headroom) and 0 < headroom <= 1):
        raise UsageError(f"target fps must be above 0 and at most 240, headroom in (0, 1]; got {target_fps:g} and "
                         f"{headroom:g}")
    if frames is not None and frames < 1:
        raise UsageError(f"--frames {frames}: out of range; allowed: 1 or more frames per setting")
    if not (math.isfinite(camera_seconds) and camera_seconds > 0):
        raise UsageError(f"--camera-seconds {camera_seconds:g}: out of range; allowed: a number of seconds above 0")
    site = site or default_site_name()
    if not _SITE_NAME.match(site):
        raise UsageError(f"site name {site!r}: use letters, digits, '-', '_' or '.' (it names calibration/<site>.toml)")
    path = Path(path) if path is not None else default_profile_path(site)
    for layer in layers:
        Objective.parse(layer)  # an unknown layer fails now, with the catalog, not after minutes of timing
    _check_writable(path)
    output_size = check_output_size(output_size)

    model = load_model(weights, progress=False)
    names = list(BACKENDS) if list(backends) == ["all"] else list(backends)
    opened = []
    for name in names:
        try:
            opened.append(open_backend(name, model, device, precision=precision))
        except LiveError as e:
            if len(names) == 1:
                raise
            log.warning("backend %s not measured: %s", name, e)
    if not opened:
        raise UsageError(f"none of the backends {', '.join(names)} could start (see the log)")
    cuda = any(b.device.type == "cuda" for b in opened)
    if not sizes:
        sizes = (FULL_CUDA_SIZES if full else CUDA_SIZES) if cuda else (FULL_CPU_SIZES if full else CPU_SIZES)
    steps = sorted(set(steps or (FULL_STEPS if full else (CUDA_STEPS if cuda else CPU_STEPS))))
    layers = list(FULL_LAYERS if full and tuple(layers) == ("inception4c",) else layers)
    frames = frames or (30 if cuda else 8)

    # the test scene as the camera, drawn once at the output size (a real camera draws on its own thread)
    scene = [cv2.cvtColor(test_scene(*output_size, i / 30), cv2.COLOR_RGB2BGR) for i in range(12)]
    table: list[Measurement] = []
    started = time.monotonic()
    for backend in opened:
        for w, h in sizes:
            dw, dh = round32(w), round32(h)
            for layer in layers:
                for n in steps:
                    f = run_loop(model, backend, frames_source(scene, "test scene"), dw, dh, n, frames, layer,
                                 output_size=output_size)
                    m = Measurement(backend.name, layer, dw, dh, n, f.fps, 1e3 / max(f.fps, 1e-9), f.latency_ms)
                    table.append(m)
                    log.info("%s %s %dx%d x%d: %.2f fps", backend.describe(), layer, dw, dh, n, f.fps)
                    if f.fps < target_fps / 2 and n != steps[-1]:
                        log.info("  more steps at %dx%d (%s) cannot reach %g fps: skipped", dw, dh, layer, target_fps)
                        break
    log.info("measured %d settings in %.1f s", len(table), time.monotonic() - started)

    chosen = choose(table, target_fps, headroom)
    if not chosen.fits:
        log.warning("no measured setting holds %g fps with %.0f%% headroom; the fastest is %s at %dx%d "
                    "(%.1f fps). Try smaller --sizes or fewer --steps, or a lower --target-fps.",
                    target_fps, 100 * (1 - headroom), _steps(chosen.steps), chosen.width, chosen.height,
                    chosen.fps)  # fmt: skip
    camera_result = measure_camera(camera, camera_seconds) if camera else None
    chosen_backend = next(b for b in opened if b.name == chosen.backend)
    max_pixels, limit_note = None, ""
    if measure_limit:
        from live import limits

        # seconds per pixel-step from the largest measured setting: the one least diluted by the
        # loop's fixed per-frame costs
        rows = [m for m in table if m.backend == chosen.backend and m.steps > 0]
        biggest = max(rows, key=lambda m: (m.width * m.height * m.steps, -m.fps)) if rows else None
        if biggest is not None:
            per_pixel_step = (1.0 / max(biggest.fps, 1e-9)) / (biggest.width * biggest.height * biggest.steps)
            found = limits.measure_limit(model, chosen_backend, per_pixel_step)
            max_pixels, limit_note = found.max_pixels, found.source
    device_of_choice = chosen_backend.device
    machine = machine_description(device_of_choice)
    machine["backend"] = next(b.describe() for b in opened if b.name == chosen.backend)
    machine["threads"] = _threads()
    profile = Profile(
        site=site,
        created=dt.datetime.now(dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        target_fps=float(target_fps),
        headroom=float(headroom),
        chosen=chosen,
        machine=machine,
        table=tuple(table),
        camera=camera_result,
        path=path,
        max_pixels=max_pixels,
        limit_note=limit_note,
        output_size="{}x{}".format(*output_size),
    )
    write_profile(profile, path)
    return profile


def _threads() -> str:
    from live import threads

    return threads.current().describe()


def _check_writable(path: Path) -> None:
    """OutputError now, before minutes of timing, if the profile could not be written there.
    Creates nothing: the directories are made when the profile is written."""
    if path.exists() and path.is_dir():
        raise OutputError(f"calibration profile {path} is a directory; give a .toml file path")
    existing = path.parent if str(path.parent) else Path(".")
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"cannot create {path.parent} for the calibration profile: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the calibration profile under {existing}: permission denied")


# ----------------------------------------------------------------------------- the file
def write_profile(profile: Profile, path: Path) -> Path:
    """Write ``profile`` as TOML, atomically (a reader sees the old file or the new one)."""
    data: dict[str, Any] = {
        "calibration": {
            "format": FORMAT,
            "site": profile.site,
            "created": profile.created,
            "target_fps": profile.target_fps,
            "headroom": profile.headroom,
            **({"output_size": profile.output_size} if profile.output_size else {}),
        },
        "chosen": asdict(profile.chosen),
        "machine": dict(profile.machine),
        "measurement": [asdict(m) for m in profile.table],
    }
    if profile.camera is not None:
        data["camera"] = asdict(profile.camera)
    if profile.max_pixels is not None:
        from live.limits import FRAME_SECONDS, REFERENCE_STEPS

        data["limit"] = {"max_pixels": profile.max_pixels, "frame_seconds": FRAME_SECONDS,
                         "reference_steps": REFERENCE_STEPS, "measured": profile.limit_note}
    text = (
        f"# Written by deepdream-live calibrate on {profile.created}; re-run it after changing the machine.\n"
        "# run loads [chosen]; the governor trims steps or size at run time when frames run long.\n"
        + tomli_w.dumps(data)
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(text.encode())
    except OSError as e:
        raise OutputError(f"cannot write the calibration profile {path}: {e}") from e
    log.info("calibration written to %s: %s at %dx%d (%s)", path, _steps(profile.chosen.steps), profile.chosen.width,
             profile.chosen.height, "holds the target" if profile.chosen.fits else "below the target")  # fmt: skip
    return path


def _record(cls: type, table: Any, what: str) -> Any:
    if not isinstance(table, dict):
        raise TypeError(f"[{what}] is missing or not a table")
    fields = cls.__dataclass_fields__
    missing = [n for n, f in fields.items() if n not in table and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise TypeError(f"[{what}] lacks {', '.join(missing)}")
    return cls(**{k: v for k, v in table.items() if k in fields})  # unknown keys: a newer writer's extras


def _typed(record: Any, what: str) -> Any:
    for name, f in record.__dataclass_fields__.items():
        value = getattr(record, name)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        ok = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": isinstance(value, (int, float)) and not isinstance(value, bool),
              "str": isinstance(value, str), "bool": isinstance(value, bool)}.get(kind, True)  # fmt: skip
        if not ok:
            raise TypeError(f"[{what}] {name} = {value!r} is not {kind}")
    return record


def load_profile(path: Path | str, here: Mapping[str, str] | None = None) -> Profile:
    """Read a calibration profile. ``here``: this machine (default: :func:`machine_description`).

    Missing file: InputError; not a profile (bad TOML, missing or mistyped keys, a newer format):
    DataError naming the file. Measured on another machine: a warning, and ``mismatch`` says how.
    """
    path = Path(path)
    hint = "write it with `deepdream-live calibrate`"
    data = read_toml(path, "calibration profile",
                     f"calibration profile {path} does not exist; {hint} (or remove it from the site config)",
                     hint=f"{hint} again")
    try:
        head = data.get("calibration")
        if not isinstance(head, dict):
            raise TypeError("[calibration] is missing")
        if head.get("format") != FORMAT:
            raise TypeError(f"format {head.get('format')!r}; this version reads format {FORMAT}")
        chosen = _typed(_record(Choice, data.get("chosen"), "chosen"), "chosen")
        table = data.get("measurement", [])
        if not isinstance(table, list):
            raise TypeError("[[measurement]] is not a list of tables")
        rows = tuple(_typed(_record(Measurement, row, "measurement"), "measurement") for row in table)
        camera = _record(CameraMeasurement, data["camera"], "camera") if "camera" in data else None
        machine = data.get("machine")
        if not isinstance(machine, dict):
            raise TypeError("[machine] is missing")
        from live.control.params import Registry
        from live.limits import ABSOLUTE_MAX_PIXELS, MIN_PIXELS

        try:  # the registry's own check: a hand-edited profile must not sneak in what a flag could not
            Registry().check({"steps": chosen.steps, "width": chosen.width, "height": chosen.height})
        except UsageError as e:
            raise TypeError(f"[chosen] {chosen.steps} steps at {chosen.width}x{chosen.height}: {e}") from None
        limit = data.get("limit", {})
        if not isinstance(limit, dict):
            raise TypeError("[limit] is not a table")
        max_pixels = limit.get("max_pixels")
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or not MIN_PIXELS <= max_pixels <= ABSOLUTE_MAX_PIXELS):
            raise TypeError(f"[limit] max_pixels = {max_pixels!r} is not a pixel count "
                            f"{MIN_PIXELS}..{ABSOLUTE_MAX_PIXELS}")
        profile = Profile(
            site=str(head.get("site", path.stem)),
            created=str(head.get("created", "")),
            target_fps=float(head["target_fps"]),
            headroom=float(head.get("headroom", DEFAULT_HEADROOM)),
            chosen=chosen,
            machine={str(k): str(v) for k, v in machine.items()},
            table=rows,
            camera=camera,
            path=path,
            max_pixels=max_pixels,
            limit_note=str(limit.get("measured", "")),
            output_size=str(head.get("output_size", "")),
        )
    except (TypeError, KeyError, ValueError) as e:
        raise DataError(f"calibration profile {path} is not a usable profile: {e}; {hint} again") from e
    here = here if here is not None else machine_description()
    mismatch = tuple(compare_machines(profile.machine, here))
    if mismatch:
        log.warning("calibration profile %s was measured on another machine (%s): using its settings anyway; the "
                    "governor corrects them at run time. Re-run `deepdream-live calibrate` here to fix this.",
                    path, "; ".join(mismatch))  # fmt: skip
        profile = Profile(**{**profile.__dict__, "mismatch": mismatch})
    if not profile.chosen.fits:
        log.warning("calibration profile %s: its setting did not hold %g fps when measured", path, profile.target_fps)
    return profile


# ----------------------------------------------------------------------------- the report
def format_report(profile: Profile) -> str:
    """The measured table and the choice, as text for the terminal."""
    need = profile.target_fps / profile.headroom
    lines = [
        f"calibration for {profile.site}: target {profile.target_fps:g} fps with {100 * (1 - profile.headroom):.0f}% "
        f"headroom (needs {need:.1f} fps measured); {profile.machine.get('backend', '')}, "
        f"GPU {profile.machine.get('gpu')}, CPU {profile.machine.get('cpu')}",
        f"{'backend':>8} {'layer':>12} {'size':>10} {'steps':>5} {'fps':>7} {'ms':>7}  fits",
    ]
    if profile.output_size or profile.machine.get("threads"):
        lines.insert(1, f"outputs at {profile.output_size or '?'} (the dream sizes below are what is chosen); "
                        f"threads: {profile.machine.get('threads', '?')}")
    for m in profile.table:
        c = profile.chosen
        mark = "*" if (m.backend, m.width, m.height, m.steps) == (c.backend, c.width, c.height, c.steps) else " "
        lines.append(f"{m.backend:>8} {m.layer:>12} {m.width:>5}x{m.height:<4} {m.steps:>5} {m.fps:>7.2f} "
                     f"{m.frame_ms:>7.1f}  {'yes' if m.fps >= need else 'no ':3} {mark}")  # fmt: skip
    c = profile.chosen
    verdict = "holds the target" if c.fits else "DOES NOT hold the target (the fastest measured)"
    lines.append(f"chosen: {_steps(c.steps)} at {c.width}x{c.height} on {c.backend}, {c.fps:.1f} fps - {verdict}")
    cam = profile.camera
    if cam is not None:
        if cam.skipped:
            lines.append(f"camera {cam.spec}: not measured ({cam.skipped})")
        else:
            lines.append(f"camera {cam.spec}: {cam.fps:.1f} fps at {cam.size}, jitter {cam.jitter_ms:.1f} ms, "
                         f"longest gap {cam.max_interval_ms:.0f} ms, "
                         f"frame age when read {cam.read_latency_ms:.0f} ms")  # fmt: skip
        if not cam.skipped and cam.fps < profile.target_fps:
            lines.append(f"  the camera delivers fewer than {profile.target_fps:g} fps: the show cannot be faster")
    if profile.max_pixels is not None:
        from live.limits import FRAME_SECONDS, example_size, megapixels

        w, h = example_size(profile.max_pixels)
        lines.append(f"largest dream size: {megapixels(profile.max_pixels)} (e.g. {w}x{h}), one frame within "
                     f"{FRAME_SECONDS:g} s; larger sizes are refused ({profile.limit_note})")
    if profile.path is not None:
        lines.append(f"written to {profile.path}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
def add_arguments(parser: Any) -> None:
    """The ``calibrate`` subcommand's options (``parser``: an argparse (sub)parser)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--site", default=None, help="site name: writes calibration/SITE.toml (default: the host name)")
    where.add_argument("--output", type=Path, default=None, metavar="FILE", help="write the profile here instead")
    parser.add_argument("--target-fps", type=float, default=DEFAULT_TARGET_FPS,
                        help="frame rate to hold (default: %(default)s)")
    parser.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM,
                        help="use at most this share of the frame time (default: %(default)s)")
    parser.add_argument("--sizes", default=None, metavar="WxH[,WxH…]",
                        help="dream sizes (default: 320x192,256x160 on CPU; 1920x1088…640x352 on CUDA)")
    parser.add_argument("--steps", default=None, metavar="N[,N…]",
                        help="steps per frame (default: 1,2,3 on CPU; 1,2,4,6 on CUDA)")
    parser.add_argument("--layers", default="inception4c", metavar="L[,L…]", help="layers (default: %(default)s)")
    parser.add_argument("--backends", default="auto", metavar="B[,B…]",
                        help="backends to time, or 'all' (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=None,
                        help="frames timed per setting (default: 8 on CPU, 30 on CUDA)")
    parser.add_argument("--full", action="store_true", help="the wide sweep: more sizes, steps 1..8, three layers")
    parser.add_argument("--output-size", default=None, metavar="WxH",
                        help="the size the show's outputs run at, e.g. the camera's (default: 1280x720); only the "
                        "dream size is chosen")
    parser.add_argument("--camera", default=None, metavar="SPEC", help="also measure this camera (fps, jitter), e.g. 0")
    parser.add_argument("--camera-seconds", type=float, default=3.0,
                        help="how long to read the camera (default: %(default)s)")
    parser.add_argument("--no-limit", action="store_true",
                        help="do not measure the largest dream size (run then uses the device's default)")


def calibrate_from_args(args: Any) -> Profile:
    """Run :func:`calibrate` from parsed ``add_arguments`` options (plus ``weights``/``device``)."""

    def sizes(text: str) -> list[tuple[int, int]]:
        from live.control.params import Registry

        out, registry = [], Registry()
        for item in text.split(","):
            w, sep, h = item.strip().lower().partition("x")
            if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
                raise UsageError(f"--sizes {item!r}: expected WIDTHxHEIGHT[,WIDTHxHEIGHT…], e.g. 640x352,320x192")
            try:  # the sizes a show can be set to, no more
                registry.check({"width": int(w), "height": int(h)})
            except UsageError as e:
                raise UsageError(f"--sizes {item.strip()}: {e}") from None
            out.append((int(w), int(h)))
        return out

    def counts(text: str) -> list[int]:
        try:
            values = [int(t) for t in text.split(",")]
        except ValueError:
            raise UsageError(f"--steps {text!r}: expected step counts such as 1,2,4") from None
        if any(not 0 <= v <= 50 for v in values):
            raise UsageError(f"--steps {text!r}: each count must be 0..50")
        return values

    return calibrate(
        site=args.site, path=args.output, target_fps=args.target_fps, headroom=args.headroom,
        sizes=sizes(args.sizes) if args.sizes else None, steps=counts(args.steps) if args.steps else None,
        layers=[t.strip() for t in args.layers.split(",")], backends=[t.strip() for t in args.backends.split(",")],
        frames=args.frames, full=args.full, camera=args.camera, camera_seconds=args.camera_seconds,
        weights=getattr(args, "weights", None) or "random", device=getattr(args, "device", "auto"),
        precision=getattr(args, "precision", None),
        measure_limit=not getattr(args, "no_limit", False),
        output_size=sizes(args.output_size)[0] if getattr(args, "output_size", None) else DEFAULT_OUTPUT_SIZE,
    )  # fmt: skip
