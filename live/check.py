"""``deepdream-live check``: is this machine ready for the show? One line per check, with the fix.

Each check answers pass, fail or not applicable (``ok=None``), and says what to do about a
failure. Which failures count against the exit code depends on what the show is configured
to use: no display is fine for a headless show, fatal for a projector. A failure is *required*
exactly when ``run`` would stop on it; an optional part that is missing (MIDI, a backend ``auto``
can do without) is a warning with its fix. With ``--config``, everything the site config names
is opened the way ``run`` opens it: the calibration profile, the start preset, the MIDI mapping,
the weights file, the monitor, the OSC address (tests/test_site_start.py runs both commands on
a table of broken configs). Every check is quick (no engine build, a camera is opened once,
the weights server is only asked whether it answers when nothing is cached) so an installer can
run it after each change and a technician can run it over SSH while the show is down.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

UNIT = "deepdream-live"
EXIT_OK = 0
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE, like the other commands: something required is missing


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict: ``ok`` True (pass), False (fail) or None (skipped, not applicable).

    ``required`` failures make the command exit non-zero; others are warnings.
    """

    name: str
    ok: bool | None
    detail: str
    fix: str = ""
    required: bool = False


@dataclass
class CheckOptions:
    """What the show is configured to use (from the site config and flags) and so must work."""

    source: str = "auto"  # "auto": camera 0 is wanted but the test scene stands in
    window: bool | None = None  # None: a window only if there is a display
    vcam: bool = False
    vcam_device: str | None = None
    record: Path | None = None
    screenshot_dir: Path = Path(".")
    osc_host: str = "127.0.0.1"
    osc_port: int | None = None  # None: OSC not configured
    osc_allow: tuple[str, ...] = ()
    osc_feedback: tuple[str, ...] = ()
    midi: bool = False  # MIDI control configured
    midi_port: str | None = None  # a port name (substring) that must be present
    midi_api: str | None = None  # alsa, jack; None: $MIDO_BACKEND, else the platform's
    midi_map: Path | None = None  # the mapping file run reads (when it exists)
    backend: str = "auto"
    device: str = "auto"
    weights: str | None = None  # --weights; None means imagenet
    model: str = "torchvision"
    monitor: int | None = None  # the window's monitor index
    calibration: Path | None = None  # the profile run loads
    presets_dir: Path | None = None
    preset: str | None = None  # the preset run starts from
    preset_cycle: tuple[str, ...] = ()
    probe_backends: bool = True  # start each backend on random weights (about a second on a CPU)
    streams: tuple[str, ...] = ()  # stream URLs (may hold keys: only ever printed redacted)
    ndi: str | None = None
    record_codec: str | None = None
    min_free_gb: float = 2.0  # disk space below this fails the recording check
    unit: str = UNIT
    dream_size: tuple[int, int] | None = None  # the configured dream size (None: the default 640x360)
    extra: dict[str, object] = field(default_factory=dict)  # room for checks added later


def run_checks(options: CheckOptions | None = None) -> list[CheckResult]:
    """Run every check for ``options`` and return their results in a stable order."""
    opts = options or CheckOptions()
    results: list[CheckResult] = []
    service = check_service(opts)
    # A running show holds the camera and the OSC port: say so next to those failures.
    running = service.ok is True
    steps: list[tuple[str, Callable[[], list[CheckResult]]]] = [
        ("camera", lambda: check_camera(opts, show_running=running)),
        ("virtual camera", lambda: [check_virtual_camera(opts)]),
        ("display", lambda: [check_display(opts)]),
        ("gpu", lambda: [check_gpu(opts)]),
        ("threads", lambda: [check_threads(opts)]),
        ("backends", lambda: check_backends(opts)),
        ("weights", lambda: [check_weights(opts)]),
        ("engines", lambda: [check_engines(opts)]),
        ("calibration", lambda: [check_calibration(opts)]),
        ("presets", lambda: check_presets(opts)),
        ("osc", lambda: [check_osc(opts, show_running=running)]),
        ("osc buffer", lambda: [check_osc_buffer(opts)]),
        ("dream size", lambda: [check_dream_limit(opts)]),
        ("midi", lambda: [check_midi(opts)]),
        ("disk", lambda: [check_disk(opts)]),
        ("outputs", lambda: check_outputs(opts, show_running=running)),
    ]
    for name, step in steps:
        try:
            results.extend(step())
        except Exception as e:  # one broken check must not hide the others
            log.warning("check %s crashed", name, exc_info=True)
            results.append(
                CheckResult(
                    name,
                    False,
                    f"the check itself failed: {e!r}",
                    "report this as a bug with the log (--log-level debug)",
                )
            )
    results.append(service)
    return results


def exit_code(results: list[CheckResult]) -> int:
    """0 when every required check passed (or was skipped), else 69 (EX_UNAVAILABLE)."""
    return EXIT_UNAVAILABLE if any(r.ok is False and r.required for r in results) else EXIT_OK


def format_results(results: list[CheckResult]) -> str:
    """One line per check: ``PASS``, ``FAIL`` (required), ``WARN`` (failed, not required) or
    ``SKIP``, then ``name: detail`` and, for failures, ``→ fix: …``."""
    lines = []
    for r in results:
        if r.ok is None:
            tag = "SKIP"
        elif r.ok:
            tag = "PASS"
        else:
            tag = "FAIL" if r.required else "WARN"
        line = f"{tag}  {r.name}: {r.detail}"
        if r.ok is not True and r.fix:
            line += f" → fix: {r.fix}"
        lines.append(line)
    failed = sum(r.ok is False and r.required for r in results)
    lines.append(f"{failed} required check(s) failed" if failed else "ready: every required check passed")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- devices
def _v4l2_names() -> dict[str, str]:
    """``/dev/videoN`` → the driver's card name, from sysfs."""
    names = {}
    for node in sorted(glob.glob("/sys/class/video4linux/video*")):
        try:
            names[f"/dev/{os.path.basename(node)}"] = Path(node, "name").read_text().strip()
        except OSError:
            names[f"/dev/{os.path.basename(node)}"] = "?"
    return names


def _is_loopback(dev: str) -> bool:
    # v4l2loopback adds its own sysfs attributes to each device it creates.
    return Path("/sys/class/video4linux", os.path.basename(dev), "max_openers").exists()


def check_camera(opts: CheckOptions, *, show_running: bool = False) -> list[CheckResult]:
    """The configured source: a camera is opened once and read one frame; files must exist."""
    spec = opts.source.strip()
    if spec.lower() in ("test", "test-scene"):
        return [CheckResult("camera", None, "source is the built-in test scene")]
    if "://" in spec:
        # Not probed: a stream's open timeout is seconds, and the network may be down for now
        # (run exits 69 then, and systemd starts it again until the stream answers).
        return [CheckResult("camera", None, f"source is a stream ({spec.split('://')[0]}://…), not probed; "
                            "the show retries until it answers")]
    if not (spec == "auto" or spec.isdigit() or spec.startswith("/dev/")):
        return [_check_file_source(spec)]
    device = f"/dev/video{spec}" if spec.isdigit() else ("/dev/video0" if spec == "auto" else spec)
    required = spec != "auto"  # auto falls back to the test scene
    names = _v4l2_names()
    cameras = [d for d in names if not _is_loopback(d)]
    listed = ", ".join(f"{d} ({names[d]})" for d in cameras) or "none"
    fallback = "" if required else " (auto: the test scene stands in)"
    if not os.path.exists(device):
        return [
            CheckResult(
                f"camera {spec}",
                False,
                f"{device} does not exist{fallback}; cameras: {listed}",
                "plug the camera in (`v4l2-ctl --list-devices` lists them) or set --source",
                required=required,
            )
        ]
    ok, why = _open_camera(device)
    detail = f"{device} ({names.get(device, '?')}): {why}"
    fix = "close other programs using it (`fuser -v " + device + "`)"
    if show_running:
        fix = "the show is running and holds the camera: `systemctl --user stop deepdream-live` first"
    return [CheckResult(f"camera {spec}", ok, detail + ("" if ok else fallback), fix, required=required)]


def _check_file_source(spec: str) -> CheckResult:
    """A video or image file, opened and read as ``run`` opens it (unsupported types, files that
    do not decode)."""
    from live.errors import LiveError
    from live.sources import open_source

    fix = "check the source path in the site config (--source)"
    try:
        source = open_source(spec)
        with source:
            kind = type(source).__name__.removesuffix("Source").lower()
    except LiveError as e:
        return CheckResult("source", False, " ".join(str(e).split()), fix, required=True)
    return CheckResult("source", True, f"{Path(spec).expanduser()} readable ({kind})", fix, required=True)


def _open_camera(device: str) -> tuple[bool, str]:
    import cv2  # only here: the check must not pay for OpenCV when no camera is configured

    t0 = time.perf_counter()
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    cap = cv2.VideoCapture(device, api)
    try:
        if not cap.isOpened():
            return False, "cannot be opened (in use, or not a capture device)"
        got, frame = cap.read()
        if not got or frame is None:
            return False, "opened but gave no frame"
        h, w = frame.shape[:2]
        return True, f"{w}x{h} frame in {1000 * (time.perf_counter() - t0):.0f} ms"
    finally:
        cap.release()


def check_virtual_camera(opts: CheckOptions) -> CheckResult:
    """v4l2loopback loaded, a loopback device present (the configured one, if named), pyvirtualcam."""
    from live.outputs.vcam import MODPROBE

    name = "virtual camera"
    try:
        import pyvirtualcam  # noqa: F401 - importability is the check
    except ImportError as e:
        return CheckResult(
            name, False, f"pyvirtualcam is not importable ({e})", "pip install pyvirtualcam", required=opts.vcam
        )
    if not sys.platform.startswith("linux"):
        return CheckResult(name, None, "not Linux: pyvirtualcam uses OBS's virtual camera, not checked here")
    loaded = os.path.isdir("/sys/module/v4l2loopback")
    loopbacks = [d for d in _v4l2_names() if _is_loopback(d)]
    unused = "" if opts.vcam else " (not configured)"
    if not loaded:
        return CheckResult(
            name,
            False,
            f"v4l2loopback module not loaded{unused}",
            f"apt install v4l2loopback-dkms; {MODPROBE} (or systemd/install.sh --v4l2loopback)",
            required=opts.vcam,
        )
    names = _v4l2_names()
    listed = ", ".join(f"{d} ({names[d]})" for d in loopbacks) or "none"
    if opts.vcam_device and opts.vcam_device not in loopbacks:
        return CheckResult(
            name,
            False,
            f"{opts.vcam_device} is not a loopback device; loopback devices: {listed}",
            "set --vcam-device to one of those, or load v4l2loopback with video_nr to match",
            required=opts.vcam,
        )
    if not loopbacks:
        return CheckResult(
            name,
            False,
            "v4l2loopback is loaded but made no device",
            f"sudo modprobe -r v4l2loopback; {MODPROBE}",
            required=opts.vcam,
        )
    return CheckResult(name, True, f"loopback devices: {listed}{unused}", required=opts.vcam)


def check_display(opts: CheckOptions) -> CheckResult:
    """``$DISPLAY`` set and the X server reachable (through libX11, not OpenCV's GUI, which
    aborts the process on an unreachable display)."""
    from live.outputs import x11

    required = opts.window is True
    name = "display"
    headless = "" if required else (" (headless: no window)" if opts.window is False else " (no window will open)")
    fix = (
        "run inside the graphical session, with DISPLAY imported into systemd "
        "(`systemctl --user import-environment DISPLAY XAUTHORITY`), or configure --no-window"
    )
    display = os.environ.get("DISPLAY")
    if not display:
        if os.environ.get("WAYLAND_DISPLAY"):
            return CheckResult(
                name, None, f"Wayland only (WAYLAND_DISPLAY={os.environ['WAYLAND_DISPLAY']}), not probed"
            )
        return CheckResult(
            name, False if opts.window is not False else None, f"DISPLAY is not set{headless}", fix, required=required
        )
    reachable = x11.can_connect(display)
    if reachable is None:
        return CheckResult(name, None, f"DISPLAY={display}, libX11 missing so not probed")
    if not reachable:
        return CheckResult(
            name,
            False,
            f"DISPLAY={display} does not accept a connection{headless}",
            fix + "; a display opened by another user also needs XAUTHORITY",
            required=required,
        )
    monitors = x11.monitors(display) or []
    sizes = ", ".join(f"{m.width}x{m.height}+{m.x}+{m.y}" for m in monitors) or "?"
    if opts.monitor is not None and monitors and not 0 <= opts.monitor < len(monitors):
        # run opens a window here unless told not to, and refuses a monitor that is not there
        listing = ", ".join(f"{i}: {m.width}x{m.height}+{m.x}+{m.y}" for i, m in enumerate(monitors))
        return CheckResult(
            name,
            False,
            f"DISPLAY={display} has no monitor {opts.monitor}; monitors are {listing}",
            f"set [outputs] monitor (--monitor) to one of 0..{len(monitors) - 1}; 0 is the primary",
            required=opts.window is not False,
        )
    where = f"; the window goes on monitor {opts.monitor}" if opts.monitor is not None and monitors else ""
    return CheckResult(name, True, f"DISPLAY={display}, monitors: {sizes}{where}", required=required)


def check_gpu(opts: CheckOptions) -> CheckResult:
    """A CUDA device PyTorch can use; otherwise why not (CPU build of torch, no driver)."""
    import torch

    required = opts.device.startswith("cuda")
    smi = shutil.which("nvidia-smi")
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        cap = torch.cuda.get_device_capability(index)
        return CheckResult(
            "gpu",
            True,
            f"{torch.cuda.get_device_name(index)} (sm_{cap[0]}{cap[1]}), "
            f"torch {torch.__version__} CUDA {torch.version.cuda}",
            required=required,
        )
    cpu = "" if required else " - dreaming on the CPU (a few fps at best)"
    if torch.version.cuda is None:
        return CheckResult(
            "gpu",
            False,
            f"torch {torch.__version__} is a CPU-only build{cpu}",
            "install a CUDA build of PyTorch (make TORCH='torch==2.x.y' from PyPI on Linux)",
            required=required,
        )
    if smi is None:
        return CheckResult(
            "gpu",
            False,
            f"no NVIDIA driver (nvidia-smi not found){cpu}",
            "install the NVIDIA driver (Debian: apt install nvidia-driver; Ubuntu: ubuntu-drivers install) and reboot",
            required=required,
        )
    return CheckResult(
        "gpu",
        False,
        f"nvidia-smi exists but torch {torch.__version__} (CUDA {torch.version.cuda}) sees no device{cpu}",
        "run nvidia-smi: driver too old for this CUDA, or the GPU is not visible to this user (group video/render)",
        required=required,
    )


# What a backend needs beyond the package itself: (module to find, how to get it).
_BACKEND_NEEDS = {
    "onnx": ("onnxruntime", "pip install onnxruntime (or onnxruntime-gpu)"),
    "tensorrt": ("tensorrt", "pip install 'deepdream-live[tensorrt]', on a machine with an NVIDIA GPU"),
}


def check_threads(opts: CheckOptions) -> CheckResult:
    """The dream's CPU threads and how idle ones wait: spinning threads collapse on shared cores."""
    from live import threads

    settings = threads.current()
    if settings.spinning:
        fix = ("start deepdream-live directly (it sets OMP_WAIT_POLICY=PASSIVE before PyTorch loads), or "
               "unset OMP_WAIT_POLICY / set it to PASSIVE")
        return CheckResult("threads", False, settings.describe() + " - the loop can slow down many times over "
                           "when other work shares the cores", fix)
    if settings.threads > settings.cores:
        return CheckResult("threads", False, settings.describe(),
                           f"use at most {settings.cores} (--threads or {threads.ENV_THREADS})")
    return CheckResult("threads", True, settings.describe())


def _backend_without_probe(name: str, device: str) -> str:
    """Whether backend ``name`` could start, without starting it: its packages are installed and
    its device is there. Raises LiveError or ImportError with the reason."""
    import importlib
    import importlib.util

    from live.backends import BACKENDS, resolve_device
    from live.errors import UnavailableError

    module = importlib.import_module(BACKENDS[name])
    if name == "tensorrt":
        module.import_tensorrt()  # run's own test: installed, and a version this can use
    needed = _BACKEND_NEEDS.get(name)
    if needed is not None and importlib.util.find_spec(needed[0]) is None:
        raise UnavailableError(f"{needed[0]} is not installed")
    dev = resolve_device(device)
    if name == "tensorrt" and dev.type != "cuda":
        raise UnavailableError(f"the tensorrt backend needs an NVIDIA GPU (--device cuda), not {dev}")
    return f"installed, {dev} present (not started: --no-probe)"


def check_backends(opts: CheckOptions) -> list[CheckResult]:
    """Each registered backend started on random weights (or, with ``--no-probe``, its packages
    and device looked for): PASS only for a backend that can run here."""
    from live.backends import BACKENDS, open_backend
    from live.errors import LiveError

    model = None
    if opts.probe_backends:
        from live.model import load_model

        model = load_model("random:0", model=opts.model, progress=False)
    results = []
    for name in BACKENDS:
        required = opts.backend == name
        try:
            if model is None:
                detail = _backend_without_probe(name, opts.device)
            else:
                detail = open_backend(name, model, opts.device).describe()
            results.append(CheckResult(f"backend {name}", True, detail, required=required))
        except (LiveError, ImportError) as e:
            reason = " ".join(str(e).split())
            needed = _BACKEND_NEEDS.get(name)
            if needed is not None and ("not installed" in reason or isinstance(e, ImportError)):
                fix = needed[1]
            elif "CUDA" in reason or "NVIDIA" in reason:
                fix = "needs an NVIDIA GPU with a CUDA build of PyTorch (see the gpu line)"
            else:
                fix = "see the reason"
            if not required:
                fix += "; optional: `--backend auto` uses the fastest backend that starts"
            results.append(CheckResult(f"backend {name}", False, reason, fix, required=required))
    if opts.backend == "auto" and not any(r.ok for r in results):
        results.append(
            CheckResult("backend auto", False, "no backend can start", "see the backend lines above", required=True)
        )
    elif opts.backend not in ("auto", *BACKENDS):
        results.append(
            CheckResult(
                f"backend {opts.backend}",
                False,
                "not a backend name",
                f"choose auto or one of: {', '.join(BACKENDS)}",
                required=True,
            )
        )
    return results


def _answers(url: str, timeout: float = 5.0) -> str | None:
    """None when ``url``'s server answers a HEAD request, else why not (one line)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError as e:
        return f"the server answers {e.code} {e.reason}"
    except (urllib.error.URLError, OSError) as e:
        return str(getattr(e, "reason", e))


def check_weights(opts: CheckOptions) -> CheckResult:
    """The weights ``run`` will use, read the way ``run`` reads them (a damaged file fails here,
    not at the show's start); not cached yet: whether the download server answers."""
    from live.errors import LiveError
    from live.model import load_model
    from live.model.weights import (
        BVLC_CAFFEMODEL_NAME,
        BVLC_CONVERTED_NAME,
        CHECKPOINT_NAME,
        bvlc_url,
        cache_dir,
        checkpoint_url,
        find_cached_checkpoint,
    )
    from live.sources import redact

    spec = (opts.weights or "imagenet").strip()
    if spec == "random" or spec.startswith("random:"):
        return CheckResult("weights", None, f"{spec}: untrained network, nothing to check")
    required = spec != "auto"  # auto runs on random weights rather than stop
    if spec in ("imagenet", "auto"):
        if opts.model == "bvlc":
            cached = [p for p in (cache_dir() / BVLC_CONVERTED_NAME, cache_dir() / BVLC_CAFFEMODEL_NAME) if p.is_file()]
            found, url, dest = (cached[0] if cached else None), bvlc_url(), cache_dir() / BVLC_CAFFEMODEL_NAME
        else:
            found, url, dest = find_cached_checkpoint(), checkpoint_url(), cache_dir() / CHECKPOINT_NAME
        if found is None:
            why = _answers(url)
            if why is None:
                return CheckResult("weights", True, f"ImageNet weights not cached yet: the first start downloads "
                                   f"them from {redact(url)} (it answers now)", required=required)
            fallback = " - RANDOM weights will be used" if spec == "auto" else ""
            return CheckResult(
                "weights",
                False,
                f"ImageNet weights not cached and {redact(url)} does not answer ({why}){fallback}",
                f"download {redact(url)} elsewhere and put it at {dest}, or set weights to a file",
                required=required,
            )
    try:
        loaded = load_model(spec, model=opts.model, progress=False)
    except LiveError as e:
        return CheckResult("weights", False, " ".join(str(e).split()), "fix or replace the weights file (--weights)",
                           required=required)
    where = Path(loaded.weights.source)
    size = f" ({where.stat().st_size / 1e6:.1f} MB)" if where.is_file() else ""
    return CheckResult("weights", True, f"{where}{size}: {opts.model} GoogLeNet, read", required=required)


def check_engines(opts: CheckOptions) -> CheckResult:
    """Every plan in the engines directory validated against its manifest and this machine
    (``live.engines.validate_all``: size and sha256, project, TensorRT and GPU, and whether it
    passed its verification against the torch gradient), one clause per plan."""
    import torch

    from live import engines

    required = opts.backend == "tensorrt"
    fix = "deepdream-live build-engines --config <site.toml> (or --sizes WxH --layers L)"
    where = engines.engines_dir()
    try:
        from live.backends.tensorrt_backend import import_tensorrt

        tensorrt: str | None = import_tensorrt().__version__
    except Exception:  # noqa: BLE001 - not installed, or an unusable version: plans cannot run here
        tensorrt = None
    gpu = cc = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        cc = "{}.{}".format(*torch.cuda.get_device_capability())
    reports = engines.validate_all(where, tensorrt=tensorrt, gpu=gpu, compute_capability=cc)
    if not reports:
        return CheckResult("engines", False if required else None, f"none built in {where}", fix, required=required)
    bad = [r for r in reports if not r.ok]
    lines = "; ".join(("ok " if r.ok else "BAD ") + r.detail for r in reports)
    detail = f"{len(reports)} plan(s) in {where}, {len(bad)} unusable: {lines}"
    return CheckResult("engines", not bad, detail, fix, required=required)


def check_calibration(opts: CheckOptions) -> CheckResult:
    """The calibration profile the site names loads (``run`` stops on a missing or broken one)."""
    from live.errors import LiveError

    if opts.calibration is None:
        return CheckResult("calibration", None, "no calibration profile configured (the defaults apply)")
    from live.calibrate import load_profile

    fix = (f"deepdream-live calibrate --site {opts.calibration.stem} (writes {opts.calibration}), "
           "or leave [calibration] out of the site config")
    try:
        profile = load_profile(opts.calibration)
    except LiveError as e:
        return CheckResult("calibration", False, " ".join(str(e).split()), fix, required=True)
    chosen = ", ".join(f"{k} {v}" for k, v in profile.registry_values().items())
    other = f"; measured on another machine ({'; '.join(profile.mismatch)})" if profile.mismatch else ""
    return CheckResult("calibration", True, f"{opts.calibration}: {chosen}{other}", fix, required=True)


def check_presets(opts: CheckOptions) -> list[CheckResult]:
    """The start preset loads (``run`` stops without it); presets of the cycle exist (``run``
    skips a missing one with a log line, so those are warnings)."""
    from live.control.params import Registry
    from live.control.presets import PresetStore
    from live.errors import LiveError

    if opts.preset is None and not opts.preset_cycle:
        return [CheckResult("presets", None, "no start preset or cycle configured")]
    store = PresetStore(Registry(), opts.presets_dir)
    fix = (f"save it from the running show (/dream/preset/save NAME) or write {store.directory}/NAME.toml; "
           "or leave it out of [presets]")
    results = []
    if opts.preset is not None:
        try:
            values = store.read(opts.preset)
            results.append(CheckResult(f"preset {opts.preset}", True, f"{len(values)} values", required=True))
        except LiveError as e:
            results.append(CheckResult(f"preset {opts.preset}", False, " ".join(str(e).split()), fix, required=True))
    bad = []
    for name in opts.preset_cycle:
        try:
            store.read(name)
        except LiveError as e:
            bad.append(f"{name} ({' '.join(str(e).split())})")
    if opts.preset_cycle:
        cycle = ", ".join(opts.preset_cycle)
        detail = f"{cycle}: the show skips {'; '.join(bad)}" if bad else f"{cycle}: all there"
        results.append(CheckResult("preset cycle", not bad, detail, fix))
    return results


def check_osc(opts: CheckOptions, *, show_running: bool = False) -> CheckResult:
    """The OSC settings as the server checks them (allowlist, feedback targets), and the port can
    be bound (free) on the configured host."""
    if opts.osc_port is None:
        return CheckResult("osc", None, "OSC not configured")
    from live.control.osc import OscServer
    from live.control.params import Registry
    from live.errors import LiveError

    where = f"udp {opts.osc_host}:{opts.osc_port}"
    try:
        OscServer(Registry(), opts.osc_host, opts.osc_port, allow=opts.osc_allow, feedback=opts.osc_feedback)
    except LiveError as e:
        return CheckResult("osc", False, f"{where}: {' '.join(str(e).split())}", "fix [osc] in the site config",
                           required=True)
    for target in opts.osc_feedback:
        host = target.rsplit(":", 1)[0].strip("[]")
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        except OSError as e:
            return CheckResult("osc", False, f"feedback target {target}: {e.strerror or e}",
                               "use the controller's IP address in [osc] feedback", required=True)
    try:
        family = socket.AF_INET6 if ":" in opts.osc_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((opts.osc_host, opts.osc_port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            fix = "another deepdream-live running? choose --osc-port"
            if show_running:
                fix = "the show is running and holds it (`systemctl --user stop deepdream-live`), or choose --osc-port"
            return CheckResult("osc", False, f"{where} is in use", fix, required=True)
        if e.errno == errno.EADDRNOTAVAIL:
            return CheckResult(
                "osc",
                False,
                f"{where}: no such address on this machine",
                "use 127.0.0.1, 0.0.0.0 or one of this machine's addresses (--osc-host)",
                required=True,
            )
        return CheckResult(
            "osc", False, f"{where}: {e.strerror or e}", "choose another --osc-port (above 1023)", required=True
        )
    return CheckResult("osc", True, f"{where} free", required=True)


def check_osc_buffer(opts: CheckOptions) -> CheckResult:
    """Whether the OSC socket gets the receive buffer it asks for (else a fader burst can overflow
    it and the kernel drops datagrams): the same request the show makes, on a throwaway socket."""
    if opts.osc_port is None:
        return CheckResult("osc buffer", None, "OSC not configured")
    from live.control.osc import RCVBUF, enlarge_receive_buffer, rcvbuf_fix

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        granted, how = enlarge_receive_buffer(sock, RCVBUF)
    try:
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        cap = f", net.core.rmem_max {rmem_max}"
    except (OSError, ValueError):
        cap = ""
    detail = f"receive buffer {granted} bytes of {RCVBUF} asked ({how}{cap})"
    if granted >= RCVBUF:
        return CheckResult("osc buffer", True, detail)
    return CheckResult("osc buffer", False, detail + ": fader bursts may drop datagrams", rcvbuf_fix(RCVBUF))


def check_dream_limit(opts: CheckOptions) -> CheckResult:
    """The largest dream size on this machine (measured by calibrate, else the device's default),
    and whether the configured size fits under it (``run`` refuses a size above it)."""
    from live import limits
    from live.errors import LiveError

    kind = limits.device_kind(opts.backend, opts.device)
    limit, note = None, ""
    if opts.calibration is not None:
        from live.calibrate import load_profile

        try:
            limit = load_profile(opts.calibration).limit(kind)
        except LiveError as e:
            note = f" (calibration profile unusable: {' '.join(str(e).split())})"
        else:
            note = "" if limit is not None else " (the profile holds no limit for this machine)"
    limit = limit or limits.default_limit(kind)
    w, h = opts.dream_size or (640, 360)
    try:
        limit.check(w, h)
    except LiveError:
        return CheckResult("dream size", False, f"{limits.round32(w)}x{limits.round32(h)} is above the largest: "
                           f"{limit.describe()}{note}", "lower [dream] width/height, or run `deepdream-live "
                           "calibrate` on this machine", required=True)
    fix = "" if opts.calibration is not None else "run `deepdream-live calibrate` to measure this machine"
    return CheckResult("dream size", True, f"largest {limit.describe()}{note}; configured "
                       f"{limits.round32(w)}x{limits.round32(h)} fits", fix)


def check_midi(opts: CheckOptions) -> CheckResult:
    """The MIDI mapping loads (``run`` stops on a broken one), and the MIDI system in use (ALSA,
    JACK) lists input ports. MIDI itself is optional: the show runs without it and picks a
    controller up when it is plugged in, so no MIDI is a warning, with the fix for that system."""
    from live.control import midi
    from live.errors import LiveError

    configured = opts.midi or opts.midi_port is not None
    try:
        api = midi.resolve_api(opts.midi_api)
        label = midi.api_label(opts.midi_api)
    except LiveError as e:
        return CheckResult("midi", False, str(e), "set [midi] api (--midi-api) to alsa or jack", required=True)
    if configured and opts.midi_map is not None and opts.midi_map.exists():
        try:
            from live.control.params import Registry

            bindings = midi.load_mapping(opts.midi_map, Registry())
        except LiveError as e:
            return CheckResult("midi", False, " ".join(str(e).split()), f"fix the mapping file {opts.midi_map}",
                               required=True)
        mapping = f"; mapping {opts.midi_map}: {len(bindings)} binding(s)"
    else:
        mapping = ""
    try:
        ports = midi.MidoPorts(opts.midi_api).list_ports()
    except ImportError:
        return CheckResult("midi", False if configured else None, f"no MIDI: the midi extra is not installed{mapping}",
                           "pip install 'deepdream-live[midi]' (mido and python-rtmidi)")
    except (OSError, SystemError, RuntimeError) as e:
        other = "--midi-api alsa" if api == "jack" else "--midi-api jack"
        fix = ("start the JACK server (jackd, or the session's JACK) before the show" if api == "jack" else
               "sudo modprobe snd-seq (and add the user to the audio group)")
        return CheckResult("midi", False if configured else None, f"no MIDI over {label}: {' '.join(str(e).split())}"
                           f"{mapping}", f"{fix}; or choose the other MIDI system: {other}")
    listed = ", ".join(ports) or "none"
    if opts.midi_port is not None:
        ok = any(opts.midi_port in p for p in ports)
        return CheckResult(
            "midi",
            ok,
            f"{label}: port {opts.midi_port!r} {'found' if ok else 'not found'}; inputs: {listed}{mapping}",
            "plug the controller in, or set the port name from this list",
        )
    if not ports:
        return CheckResult("midi", False if configured else None, f"{label}: no MIDI input ports{mapping}",
                           "plug the controller in (it is picked up while the show runs)")
    return CheckResult("midi", True, f"{label}: inputs: {listed}{mapping}")


def check_disk(opts: CheckOptions) -> CheckResult:
    """Free space where recordings (or screenshots) go."""
    target = opts.record.expanduser().parent if opts.record is not None else opts.screenshot_dir.expanduser()
    where = target
    while not where.exists() and where != where.parent:
        where = where.parent  # the recorder creates nothing above the file, but the space is shared
    required = opts.record is not None
    what = "recording" if required else "screenshots"
    try:
        free_gb = shutil.disk_usage(where).free / 1e9
    except OSError as e:
        return CheckResult(
            "disk", False, f"{target}: {e.strerror}", "choose a writable --record directory", required=required
        )
    if opts.record is not None and not target.is_dir():
        return CheckResult("disk", False, f"{target} does not exist ({what})", f"mkdir -p {target}", required=True)
    supported = _recording_types()
    if opts.record is not None and supported and opts.record.suffix.lower() not in supported:
        return CheckResult("disk", False, f"cannot record to {opts.record.name}: not one of {', '.join(supported)}",
                           "give the recording one of those extensions", required=True)
    if not os.access(where, os.W_OK):
        return CheckResult(
            "disk", False, f"{where} is not writable ({what})", "choose a writable directory", required=required
        )
    ok = free_gb >= opts.min_free_gb
    return CheckResult(
        "disk",
        ok,
        f"{free_gb:.1f} GB free in {where} ({what})",
        f"free space (at least {opts.min_free_gb:g} GB) or record elsewhere",
        required=required,
    )


def _recording_types() -> tuple[str, ...]:
    """The file extensions the recorder writes, as it declares them (empty when it does not)."""
    from live.outputs import recorder

    types = getattr(recorder, "FOURCC", None) or getattr(recorder, "CONTAINERS", None) or ()
    return tuple(types)


def check_service(opts: CheckOptions) -> CheckResult:
    """The systemd user unit: installed, enabled, active (informational; never required)."""
    name = f"service {opts.unit}"
    if shutil.which("systemctl") is None:
        return CheckResult(name, None, "systemctl not found (not a systemd system)")

    def ask(verb: str) -> tuple[int, str]:
        try:
            done = subprocess.run(
                ["systemctl", "--user", verb, opts.unit], capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return 255, str(e)
        said = (done.stdout.strip() or done.stderr.strip()).splitlines()
        return done.returncode, said[0] if said else ""

    code, enabled = ask("is-enabled")
    if enabled in ("", "not-found") or "No such file" in enabled:
        return CheckResult(name, None, "not installed", "make install-service")
    code, active = ask("is-active")
    if code == 255 or "Failed to connect" in active:
        return CheckResult(
            name,
            None,
            f"{enabled}, but no systemd user instance to ask ({active})",
            "log in to the graphical session, or: loginctl enable-linger $USER",
        )
    ok = active == "active"
    return CheckResult(
        name,
        ok,
        f"{enabled}, {active}",
        f"systemctl --user start {opts.unit}; logs: journalctl --user -u {opts.unit} -e",
    )


def check_outputs(opts: CheckOptions, *, show_running: bool = False) -> list[CheckResult]:
    """Recording, streams and NDI: can this machine make them (PyAV, codec, libsrt, NDI
    runtime)? And, when the show answers on its OSC port, each output's live state, bitrate and
    dropped frames. Stream URLs are printed with their keys masked."""
    from live.redact import redact

    results: list[CheckResult] = []
    try:
        import av
    except ImportError:
        av = None
    wanted = opts.record is not None or bool(opts.streams)
    if av is None:
        results.append(CheckResult("encoder", False, "PyAV is not installed: no H.264 recording or streaming "
                                   "(the OpenCV fallback records mp4v)", "pip install av", required=bool(opts.streams)))
    else:
        codec = opts.record_codec or "libx264"
        ok = codec in av.codecs_available
        nvenc = " h264_nvenc in the build (used where an NVIDIA encoder opens)," if "h264_nvenc" in av.codecs_available else ""
        results.append(CheckResult("encoder", ok, f"PyAV {av.__version__}:{nvenc} {codec} {'present' if ok else 'missing'}",
                                   "choose --record-codec libx264", required=wanted))
    for i, url in enumerate(opts.streams, 1):
        results.append(_check_stream(i, url, av))
    if opts.ndi:
        import importlib.util

        found = importlib.util.find_spec("NDIlib") is not None
        results.append(CheckResult(f"ndi {opts.ndi}", found, "ndi-python installed" if found else
                                   "ndi-python is not installed (the show goes on without NDI)",
                                   "pip install 'deepdream-live[ndi]'"))
    if opts.osc_port is not None and (show_running or _port_taken(opts.osc_host, opts.osc_port)):
        fields = _ask_show_status(opts)
        pace = _show_pace(fields)
        if pace is not None:
            results.append(CheckResult("running: show", True, pace))
        live = fields.get("outputs")
        if live is not None:
            for part in (p.strip() for p in str(live).split(";") if p.strip()):
                name, _, state = part.partition(":")
                failed = "failed" in state or "offline" in state
                results.append(CheckResult(f"running: {name}", not failed, redact(state.strip()),
                                           "see the show's log: journalctl --user -u deepdream-live -e"))
    return [CheckResult(r.name, r.ok, redact(r.detail), r.fix, r.required) for r in results]


def _check_stream(index: int, url: str, av: object) -> CheckResult:
    from live.errors import UsageError
    from live.outputs.targets import parse_target

    name = f"stream {index}"
    try:
        target = parse_target(url)
    except UsageError as e:
        return CheckResult(name, False, str(e), "fix the URL in the site config (--stream)", required=True)
    if av is None:
        return CheckResult(name, False, f"{target.shown}: needs PyAV", "pip install av", required=True)
    if target.scheme == "srt":
        from live.outputs.srt import load_libsrt

        try:
            version = load_libsrt().version
        except Exception as e:  # noqa: BLE001 - the reason is the answer
            return CheckResult(name, False, f"{target.shown}: {e}", "apt install libsrt1.5-gnutls (Debian, Ubuntu)",
                               required=True)
        return CheckResult(name, True, f"{target.shown}: MPEG-TS over SRT (libsrt {version})", required=True)
    return CheckResult(name, True, f"{target.shown}: {target.format} over {target.scheme}", required=True)


def _port_taken(host: str, port: int) -> bool:
    """Whether something (the show, presumably) holds the UDP port: only then is it asked."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((host, port))
    except OSError:
        return True
    return False


def _show_pace(fields: dict[str, object]) -> str | None:
    """Both paces of the running show in one line, from its status (None when it did not say)."""
    if "fps" not in fields or "dream_fps" not in fields:
        return None
    try:
        fps, dreams = float(fields["fps"]), float(fields["dream_fps"])  # type: ignore[arg-type]
        age = float(fields.get("dream_age_ms", -1.0))  # type: ignore[arg-type]
        latency = float(fields.get("latency_ms", -1.0))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    text = f"{fps:.1f} fps out, dreaming {dreams:.1f} a second, dream age {'-' if age < 0 else f'{age:.0f} ms'}"
    if latency >= 0:
        text += f", latency {latency:.0f} ms (capture to output)"
    present = fields.get("present")
    if present in ("camera", "dream"):
        text = ("every camera frame: " if present == "camera" else "each dream: ") + text
    return text


def _ask_show_status(opts: CheckOptions, timeout: float = 1.0) -> dict[str, object]:
    """The running show's ``/dream/status`` fields over OSC (empty if nobody answers)."""
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import build_msg

    from live.control.osc import DEFAULT_PORT

    port = DEFAULT_PORT if opts.osc_port is None else opts.osc_port
    if port == 0:
        return {}  # a show on any free port cannot be found by its number
    host = "127.0.0.1" if opts.osc_host in ("0.0.0.0", "::", "") else opts.osc_host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    fields: dict[str, object] = {}
    prefix = "/dream/status/"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(build_msg("/dream/status", []).dgram, (host, port))
            deadline = time.monotonic() + timeout
            # the reply is one message per field, outputs among them; gather until it came (or time ran out)
            while time.monotonic() < deadline and "outputs" not in fields:
                data, _ = sock.recvfrom(65536)
                try:
                    message = OscMessage(data)
                except Exception:  # noqa: BLE001 - not ours
                    continue
                if message.address.startswith(prefix) and message.params:
                    fields[message.address[len(prefix):]] = message.params[0]
    except OSError:
        pass
    return fields
    return None
