"""``deepdream-live check``: is this machine ready for the show? One line per check, with the fix.

Each check answers pass, fail or not applicable (``ok=None``), and says what to do about a
failure. Which failures count against the exit code depends on what the show is configured
to use: no display is fine for a headless show, fatal for a projector. Every check is quick
(no network, no engine build, a camera is opened once) so an installer can run it after each
change and a technician can run it over SSH while the show is down.
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
    midi: bool = False  # MIDI control configured
    midi_port: str | None = None  # a port name (substring) that must be present
    backend: str = "auto"
    device: str = "auto"
    weights: str | None = None  # --weights; None means imagenet
    probe_backends: bool = True  # start each backend on random weights (about a second on a CPU)
    min_free_gb: float = 2.0  # disk space below this fails the recording check
    unit: str = UNIT
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
        ("osc", lambda: [check_osc(opts, show_running=running)]),
        ("midi", lambda: [check_midi(opts)]),
        ("disk", lambda: [check_disk(opts)]),
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
        # Not probed: a stream's open timeout is seconds, and the network may be down for now.
        return [CheckResult("camera", None, f"source is a stream ({spec.split('://')[0]}://…), not probed")]
    if not (spec == "auto" or spec.isdigit() or spec.startswith("/dev/")):
        path = Path(spec).expanduser()
        ok = path.is_file() and os.access(path, os.R_OK)
        return [
            CheckResult(
                "source",
                ok,
                f"{path} {'readable' if ok else 'missing or unreadable'}",
                "check the source path in the site config (--source)",
                required=True,
            )
        ]
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
    return CheckResult(name, True, f"DISPLAY={display}, monitors: {sizes}", required=required)


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


def check_backends(opts: CheckOptions) -> list[CheckResult]:
    """Each registered backend started on random weights (or just imported), with its reason."""
    import importlib

    from live.backends import BACKENDS, open_backend
    from live.errors import LiveError

    model = None
    if opts.probe_backends:
        from live.model import load_model

        model = load_model("random:0", progress=False)
    results = []
    for name, module in BACKENDS.items():
        required = opts.backend == name
        try:
            if model is None:
                importlib.import_module(module)
                detail = "importable (not started)"
            else:
                detail = open_backend(name, model, opts.device).describe()
            results.append(CheckResult(f"backend {name}", True, detail, required=required))
        except (LiveError, ImportError) as e:
            results.append(
                CheckResult(
                    f"backend {name}",
                    False,
                    " ".join(str(e).split()),
                    "see the reason; `--backend auto` skips it",
                    required=required,
                )
            )
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


def check_weights(opts: CheckOptions) -> CheckResult:
    """The ImageNet checkpoint is cached and readable (no download here), or the named file is."""
    from live.model.weights import CHECKPOINT_NAME, cache_dir, checkpoint_url, find_cached_checkpoint

    spec = (opts.weights or "imagenet").strip()
    if spec == "random" or spec.startswith("random:"):
        return CheckResult("weights", None, f"{spec}: untrained network, nothing to check")
    if spec not in ("imagenet", "auto"):
        path = Path(spec).expanduser()
        ok = path.is_file() and os.access(path, os.R_OK)
        return CheckResult(
            "weights",
            ok,
            f"{path} {'readable' if ok else 'missing or unreadable'}",
            "fix the --weights path",
            required=True,
        )
    found = find_cached_checkpoint()
    fix = f"download {checkpoint_url()} to {cache_dir() / CHECKPOINT_NAME} (or run once while online)"
    if found is None:
        fallback = " - RANDOM weights will be used" if spec == "auto" else ""
        return CheckResult(
            "weights", False, f"ImageNet checkpoint not cached{fallback}", fix, required=spec == "imagenet"
        )
    try:
        with open(found, "rb") as f:
            f.read(1)
    except OSError as e:
        return CheckResult(
            "weights",
            False,
            f"{found} not readable: {e.strerror}",
            f"fix its permissions, or {fix}",
            required=spec == "imagenet",
        )
    return CheckResult("weights", True, f"{found} ({found.stat().st_size / 1e6:.1f} MB)", required=spec == "imagenet")


def check_engines(opts: CheckOptions) -> CheckResult:
    """Built engines match this GPU: ``live.engines.validate_all`` where it exists, else the
    manifests in the engines directory are read (TensorRT version and ONNX hash are checked
    by ``run`` when it loads a plan)."""
    required = opts.backend == "tensorrt"
    fix = "deepdream-live build-engines"
    try:
        from live import engines
    except ImportError:
        return CheckResult("engines", None, "not checked (this version has no engines module)")
    validate_all = getattr(engines, "validate_all", None)
    if validate_all is not None:
        try:
            report = validate_all()
        except Exception as e:  # noqa: BLE001 - the engine module's failure is this check's answer
            return CheckResult("engines", False, f"cannot validate: {e}", fix, required=required)
        if isinstance(report, CheckResult):
            return report
        bad = [item for item in (report or []) if not getattr(item, "ok", bool(item))]
        detail = f"{len(report or [])} engine(s), {len(bad)} stale or invalid"
        return CheckResult("engines", not bad, detail, fix, required=required)
    where = engines.engines_dir()
    manifests = sorted(where.glob(f"*{engines.MANIFEST_SUFFIX}")) if where.is_dir() else []
    if not manifests:
        return CheckResult("engines", False if required else None, f"none built in {where}", fix, required=required)
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    stale = []
    for path in manifests:
        plan = path.with_name(path.name[: -len(engines.MANIFEST_SUFFIX)])
        try:
            built_for = engines.Manifest.from_json(path.read_text()).gpu
        except (OSError, ValueError, TypeError, KeyError):
            stale.append(plan.name)
            continue
        if not plan.exists() or (gpu is not None and built_for != gpu):
            stale.append(plan.name)
    detail = f"{len(manifests)} plan(s) in {where}" + (f"; stale: {', '.join(stale)}" if stale else "")
    return CheckResult("engines", not stale, detail, fix, required=required)


def check_osc(opts: CheckOptions, *, show_running: bool = False) -> CheckResult:
    """The OSC port can be bound (free), on the configured host."""
    if opts.osc_port is None:
        return CheckResult("osc", None, "OSC not configured")
    where = f"udp {opts.osc_host}:{opts.osc_port}"
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


def check_midi(opts: CheckOptions) -> CheckResult:
    """MIDI input ports (mido + python-rtmidi); required only when MIDI control is configured."""
    required = opts.midi or opts.midi_port is not None
    fix = "pip install 'deepdream-live[midi]'; plug the controller in; sudo modprobe snd-seq"
    if sys.platform.startswith("linux") and not os.path.exists("/dev/snd/seq"):
        # Checked first: asking rtmidi without a sequencer prints ALSA errors on stderr.
        return CheckResult(
            "midi", False if required else None, "no MIDI: no ALSA sequencer (/dev/snd/seq)", fix, required=required
        )
    try:
        import mido

        ports = mido.get_input_names()
    except Exception as e:  # noqa: BLE001 - mido raises ImportError, OSError or rtmidi's own errors
        return CheckResult(
            "midi",
            False if required else None,
            f"no MIDI: {' '.join(str(e).split()) or type(e).__name__}",
            fix,
            required=required,
        )
    listed = ", ".join(ports) or "none"
    if opts.midi_port is not None:
        ok = any(opts.midi_port in p for p in ports)
        return CheckResult(
            "midi",
            ok,
            f"port {opts.midi_port!r} {'found' if ok else 'not found'}; inputs: {listed}",
            "plug the controller in, or set the port name from this list",
            required=True,
        )
    if not ports:
        return CheckResult("midi", False if required else None, "no MIDI input ports", fix, required=required)
    return CheckResult("midi", True, f"inputs: {listed}", required=required)


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
