"""`make gpu-check`: the GPU path verified and measured end to end, in one run, written down.

On a machine with an NVIDIA GPU (and no network: see ``bench/gpu_deps.py`` for the wheel folder)
it runs, in this order, within a deadline (``make gpu-check`` gives it the moment the target
started plus 8 minutes, dependency install included; run by hand, ``--budget`` seconds from now):

1. the machine: GPU, driver, CUDA, PyTorch, TensorRT, onnxruntime (and its providers);
2. ``tests``: ``tests/test_cuda.py`` and every test marked ``cuda``, in a child pytest (a test
   that breaks the CUDA context must not take the measurements with it);
3. ``image``: ``deepdream-live image`` on the device, as a child process (the command's own
   logging and thread set-up stay out of this process);
4. ``loop``: the live loop, headless (outputs off, then the recorder on) at 1280x720 and
   1920x1080 on the built-in test scene (drawn before the clock starts), 4 steps and 1 step at
   inception4c, every frame dreamed (``--present dream``, so rows compare with the baselines):
   fps, capture-to-output latency, the host's time per stage of both paces (its clock), the
   GPU's time per stage of both paces (CUDA events: the dreamer's upload and dream, the
   presenter's carry, compose and download), the dream's share of the frame in GPU time, the
   CUDA graphs captured and failed, peak GPU memory - for the torch backend, torch with the
   other memory layout (channels-last on CUDA, measured, kept only if it pays), and TensorRT
   where it imports; then the two paces (docs/architecture.md, "Two paces"): the show at the
   camera's pace against the scene published in real time as a 1920x1080 camera at 60 fps, a
   960x544 dream at 4 steps: presented fps over the camera's, the dream's rate and age,
   glass-to-output latency, GPU time per stage of each pace;
5. ``baselines``: in the same run, on the same frames and steps and under the same 240 fps
   ceiling: the plain fp32 loop (whole network, forward hook, weights requiring grad,
   ``loss.backward()``) with PyTorch's defaults (cuDNN convolutions in TF32) and with TF32 off
   (true fp32), and the best ordinary form (weights frozen, network cut at the layer, fp16, the
   functional step captured in a CUDA graph);
6. ``cosines``: the fp16 gradient's cosine to float64 at 1280x720 (dreamed at 1280x704, the
   loop's size) for three layers of each model, on every backend that runs here.

It writes ``gpu-check.json`` and ``gpu-check.md`` (the table, headed by the verdict and the GPU,
driver, CUDA, PyTorch and TensorRT versions) into OUTDIR, prints the table and, last, one line:
the verdict and, on failure, the first reason.

**Green means green.** The exit code is 0 only when every part asked for ran and passed: a part
that could not start (pytest missing, a conftest that fails to import, no result file), failed
(a test, ``image`` exiting nonzero, a loop that raised) or did not fit the deadline makes it 1,
and the table says which part and why. The only skips that pass are things truly absent from
the machine (TensorRT not installed, onnxruntime without a CUDA provider), listed as such. The
targets below the tables are figures to read, not part of the exit code. Without CUDA it prints
one line and exits 69; ``--device cpu --quick`` is the reduced run the test suite keeps from
rotting (tiny sizes, few frames, the same code), and ``--parts`` runs some parts only (the
rehearsal tests; the others are marked "not asked for").

Run: ``make gpu-check`` or ``python3 bench/gpu_check.py OUTDIR [--device cpu --quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from live import threads  # noqa: E402

threads.prepare_environment()  # before PyTorch loads, as the show's command line does

try:
    import torch
except ImportError:
    print(f"gpu-check: this Python ({sys.executable}) has no PyTorch; run it with the Python that has the "
          "CUDA build (make gpu-check PYTHON=/path/to/python3)")
    sys.exit(69)
from packaging.version import Version  # noqa: E402

if Version(torch.__version__.split("+")[0]) < Version("2.4"):
    print(f"gpu-check: PyTorch {torch.__version__} is older than 2.4, which this project needs")
    sys.exit(69)

import numpy as np  # noqa: E402

from live import logs  # noqa: E402
from live.app import STAGES, round32  # noqa: E402
from live.benchmark import (  # noqa: E402
    FPS_CAP, PacedFrames, frames_source, paced_run, plain_loop, run_loop, scene_frames)
from live.dreamsize import dream_shape  # noqa: E402
from live.errors import LiveError  # noqa: E402
from live.gpu_timing import DREAM_GPU_STAGES, GPU_STAGES, PRESENT_GPU_STAGES  # noqa: E402
from live.model import Model, load_model  # noqa: E402
from live.model.googlenet import DreamNet  # noqa: E402
from live.model.weights import random_reference  # noqa: E402
from live.outputs import RecorderOutput  # noqa: E402

log = logging.getLogger("gpu-check")

EX_UNAVAILABLE = 69
LAYER = "inception4c"
COSINE_LAYERS = ("inception3b", "inception4c", "inception5b")
PARTS = ("tests", "image", "loop", "baselines", "cosines")
PART_NAMES = {"tests": "CUDA tests", "image": "image", "loop": "live loop", "baselines": "baselines",
              "cosines": "fp16 cosines"}
# The issue's targets (4 steps, inception4c, end to end, on an H100/H200-class GPU).
TARGETS = {"fps_720p": 100.0, "fps_1080p": 55.0, "vs_plain": 3.0, "vs_best_ordinary": 1.0, "latency_frames": 2.0,
           "tensorrt_vs_torch": 1.5, "fp16_cosine": 0.995, "dream_gpu_share_1080p": 0.90,
           "presented_share": 0.95}  # issue 18: presented >= 0.95x the camera's rate at 1080p60, 960x544 x4
# The two paces' case (camera size, camera fps, dream size, steps, seconds measured after a warm-up)
PACES = ((1920, 1080), 60.0, (960, 544), 4, 10.0)
PACES_QUICK = ((96, 64), 30.0, (96, 64), 1, 2.0)
CHANNELS_LAST_PAYS = 1.05  # channels-last becomes the CUDA default only if it is at least this much faster
# Skips a CUDA-test run may contain and still pass: things truly absent from a machine.
ABSENT_ON_ANY = re.compile(r"tensorrt", re.IGNORECASE)
ABSENT_ON_CPU = re.compile(r"NVIDIA GPU|CUDA", re.IGNORECASE)  # the rehearsal on a machine without one


class OutOfTime(Exception):
    """A part (or one row of it) would not fit the deadline: it did not run, and the check fails."""


class PartFailed(Exception):
    """A part ran and failed; the message is the one-line reason the table shows."""


class Budget:
    """Seconds left before the deadline; every expensive step asks first (:meth:`need`)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    @classmethod
    def until(cls, epoch: float, reserve: float = 10.0) -> Budget:
        """Up to the wall-clock ``epoch`` (as ``date +%s`` gives it), less ``reserve`` seconds for
        writing the results."""
        return cls(epoch - time.time() - reserve)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds

    def need(self, seconds: float, what: str) -> None:
        """Raise :class:`OutOfTime` unless ``seconds`` are left for ``what``."""
        if not self.allows(seconds):
            raise OutOfTime(f"time budget: {max(self.left(), 0):.0f} s left, about {seconds:.0f} s needed for {what}")


def _line(text: str, limit: int = 240) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


@contextlib.contextmanager
def row_outcome(row: dict, what: str) -> Iterator[None]:
    """One row's measurement: a row that would not fit the budget says ``not_run``, one that
    failed says ``failed`` with its one-line reason (the traceback goes to the log), and the
    other rows go on."""
    try:
        yield
    except OutOfTime as e:
        row["not_run"] = str(e)
    except PartFailed as e:
        row["failed"] = str(e)
    except Exception as e:  # noqa: BLE001 - one broken row must not hide the others' figures
        log.error("%s failed:\n%s", what, traceback.format_exc())
        row["failed"] = _line(f"{type(e).__name__}: {e}")


# ----------------------------------------------------------------------------- 1. the machine
def machine(device: torch.device) -> dict[str, str]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": str(torch.version.cuda),
            "gpu": "none", "driver": "n/a", "tensorrt": "not installed", "onnxruntime": "not installed"}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        cap = torch.cuda.get_device_capability(device)
        info["compute_capability"] = f"{cap[0]}.{cap[1]}"
        info["gpu_memory_gib"] = f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.0f}"
        info["driver"] = _driver_version()
    else:
        info["gpu"] = f"none (CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    try:
        from live.backends.tensorrt_backend import import_tensorrt

        info["tensorrt"] = import_tensorrt().__version__
    except LiveError as e:
        info["tensorrt"] = f"not usable: {_line(e)}"
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = f"{onnxruntime.__version__} ({', '.join(onnxruntime.get_available_providers())})"
    with contextlib.suppress(ImportError):
        import cv2

        info["opencv"] = cv2.__version__
    return info


def _driver_version() -> str:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "unknown (no nvidia-smi)"
    try:
        done = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20, check=False)
        return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def _child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


# ----------------------------------------------------------------------------- 2. the CUDA tests
def cuda_test_files(quick: bool) -> list[Path]:
    """The test files that mark tests ``cuda`` (quick: tests/test_cuda.py): every CUDA test runs,
    and a test module needing a package this machine lacks (MIDI, say) cannot fail the check by
    its import."""
    if quick:
        return [ROOT / "tests" / "test_cuda.py"]
    return sorted(p for p in (ROOT / "tests").glob("test_*.py") if "pytest.mark.cuda" in p.read_text())


def cuda_tests(out: Path, files: Sequence[Path], device: torch.device, budget: Budget) -> dict[str, object]:
    """pytest on ``files`` (``-m cuda``) in a child process; counts and skip reasons from its
    JUnit XML. Raises :class:`PartFailed` with the reason when the run cannot be trusted."""
    budget.need(30, "the CUDA tests")
    report = out / "cuda-tests.xml"
    report.unlink(missing_ok=True)  # a result file left by an earlier run must never pass for this run's
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-rs",
           "--junitxml", str(report), *map(str, files)]
    timeout = max(20.0, min(300.0, budget.left() - 90))
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_child_env(),
                              check=False)
    except subprocess.TimeoutExpired as e:
        raise PartFailed(f"the CUDA tests ran past {timeout:.0f} s and were stopped") from e
    output = (done.stdout + "\n" + done.stderr).strip()
    result: dict[str, object] = {"command": " ".join(cmd[1:]), "exit_code": done.returncode,
                                 "seconds": round(time.monotonic() - t0, 1), "tail": output.splitlines()[-15:]}
    if not report.exists():
        raise PartFailed(f"pytest wrote no result file (exit {done.returncode}): {_pytest_trouble(output)}")
    counts = _junit(report)
    result.update(counts)
    problems = []
    if counts["tests"] == 0:
        problems.append("no CUDA test was collected")
    if counts["failures"] or counts["errors"]:
        problems.append(f"{counts['failures']} failed, {counts['errors']} errors: {', '.join(counts['failed'][:4])}")
    allowed = [ABSENT_ON_ANY] + ([ABSENT_ON_CPU] if device.type == "cpu" else [])
    unexplained = [r for r in counts["skip_reasons"] if not any(a.search(r) for a in allowed)]
    if unexplained:
        problems.append(f"{len(unexplained)} skipped for something other than a missing TensorRT: {unexplained[0]}")
    if done.returncode not in (0,) and not problems:
        problems.append(f"pytest exited {done.returncode}: {_pytest_trouble(output)}")
    if problems:
        result["problem"] = "; ".join(problems)
    return result


def _pytest_trouble(output: str) -> str:
    """The line of a pytest run's output that says what went wrong, for a one-line reason."""
    if re.search(r"No module named '?pytest'?", output):
        return f"pytest is not installed for {sys.executable} (pip install pytest, or its wheel in wheels/)"
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln.lstrip("E ").strip() for ln in lines if re.search(r"\b\w*(Error|Exception)\b:", ln)]
    if any("while loading conftest" in ln for ln in lines):
        where = next(ln for ln in lines if "while loading conftest" in ln)
        return _line(f"{where} {errors[-1] if errors else ''}")
    return _line(errors[-1] if errors else (lines[-1] if lines else "no output"))


def _junit(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total: dict = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    total["skip_reasons"] = [_line(sk.get("message", "") or sk.text or "", 160)
                             for sk in root.iter("skipped")]
    total["failed"] = [case.get("name", "?") for case in root.iter("testcase")
                       if case.find("failure") is not None or case.find("error") is not None]
    return total


# ----------------------------------------------------------------------------- 3. image
def image(out: Path, device: torch.device, weights: str, quick: bool, budget: Budget) -> dict[str, object]:
    """``deepdream-live image`` in a child process; PartFailed unless it exits 0 with a picture
    dreamed by torch on this device."""
    budget.need(20 if quick else 45, "`image`")
    target = out / "image.png"
    target.unlink(missing_ok=True)
    # torch: with --backend auto and TensorRT here, every octave's size would build a plan first
    # (minutes); the TensorRT path is measured by the loop and the cosines
    cmd = [sys.executable, "-m", "live", "--log-level", "warning", "image", "test-scene", str(target),
           "--device", str(device), "--weights", weights, "--no-progress", "--backend", "torch"]
    if quick:
        cmd += ["--steps", "1", "--octaves", "1", "--max-side", "96"]
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_child_env(), check=False,
                              timeout=max(10.0, min(180.0, budget.left() - 60)))
    except subprocess.TimeoutExpired as e:
        raise PartFailed(f"`image` ran past {e.timeout:.0f} s and was stopped") from e
    result: dict[str, object] = {"exit_code": done.returncode, "seconds": round(time.monotonic() - t0, 2)}
    if done.returncode != 0:
        said = [ln for ln in (done.stderr + "\n" + done.stdout).splitlines() if ln.strip()]
        raise PartFailed(f"`image` exited {done.returncode}: {_line(said[-1] if said else 'no output')}")
    if not target.exists():
        raise PartFailed(f"`image` exited 0 but wrote no {target.name}")
    from PIL import Image

    with Image.open(target) as im:
        meta = json.loads(im.info.get("deepdream-live", "{}"))
    backend = str(meta.get("backend", "?"))
    result.update(backend=backend, bytes=target.stat().st_size)
    if not backend.startswith(f"torch on {device.type}"):
        raise PartFailed(f"`image` dreamed on {backend!r}, not torch on {device}")
    return result


# ----------------------------------------------------------------------------- 4. the live loop
def _stages(breakdown: str) -> dict[str, float]:
    """``capture 0.1 flow 2.0 ... ms/frame`` as numbers."""
    return {k: float(v) for k, v in re.findall(r"([a-z]+) ([0-9.]+)", breakdown)}


def _peak_memory(device: torch.device) -> Callable[[], float | None]:
    if device.type != "cuda":
        return lambda: None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return lambda: round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _recorder(path: Path):
    """The show's own recorder: H.264 through PyAV (NVENC where the card has one), else OpenCV's."""
    from live.outputs import encoder

    if encoder.available():
        return encoder.EncoderOutput(path, encoder.EncoderSettings())
    return RecorderOutput(path)


def live_loop(model: Model, backend, pictures: list[np.ndarray], width: int, height: int, steps: int, frames: int,
              record: Path | None) -> dict[str, object]:
    """One loop row: the real LiveLoop on the pre-rendered ``pictures``."""
    outputs = [_recorder(record)] if record is not None else []
    peak = _peak_memory(backend.device)
    captures, failures = backend.stats.graph_captures, backend.stats.graph_failures
    try:
        f = run_loop(model, backend, frames_source(pictures, "test scene"), width, height, steps, frames, LAYER,
                     outputs=outputs)
    finally:
        for out in outputs:
            out.close()
    gpu = _stages(f.gpu_breakdown)
    row: dict[str, object] = {
        "fps": round(f.fps, 2), "latency_ms": round(f.latency_ms, 1),
        "latency_frames": round(f.latency_ms * f.fps / 1e3, 2), "stages_ms": _stages(f.breakdown),
        "gpu_stages_ms": gpu, "gpu_memory_mib": peak(), "outputs": "recorder" if record is not None else "off",
        "graph_captures": backend.stats.graph_captures - captures,
        "graph_failures": backend.stats.graph_failures - failures,
        "backend": backend.describe(),  # after the run: says so if captures failed
    }
    if "dream" in gpu:  # the dream's GPU time against the whole frame: the CPU work hidden behind it
        row["dream_gpu_share"] = round(gpu["dream"] * f.fps / 1e3, 3)
    return row


def two_paces(model: Model, backend, pictures: list[np.ndarray], fps: float, dream: tuple[int, int], steps: int,
              seconds: float) -> dict[str, object]:
    """The two paces' row: the real show at the camera's pace (every camera frame out, the newest
    dream carried onto it) against ``pictures`` published in real time at ``fps``, headless; a
    warm-up run, then ``seconds`` measured. Raises when no frame went out or no dream was made
    (then the part did not really run)."""
    captures, failures = backend.stats.graph_captures, backend.stats.graph_failures
    look = {"steps": steps, "objective": LAYER, "octaves": 1}
    source = PacedFrames(pictures, fps, "test scene")
    with source:
        _, loop = paced_run(model, backend, source, dream, max(seconds / 4, 1.0), "camera", look=look)  # warm-up
        f, loop = paced_run(model, backend, source, dream, seconds, "camera", loop=loop)
    if not f.presented:
        raise PartFailed(f"the two paces: no frame went out in {seconds:g} s")
    if not f.dreams:
        raise PartFailed(f"the two paces: no dream was made in {seconds:g} s")
    shown, dreamt = loop.clock, loop.dream_clock
    return {
        "camera_fps": fps, "presented_fps": round(f.presented / max(f.seconds, 1e-9), 2),
        "presented_share": round(f.presented_share, 3), "dream_fps": round(f.dream_fps, 2),
        "dream_age_ms": round(f.dream_age_ms, 1) if f.dream_age_ms is not None else None,
        "latency_p50_frames": round(f.latency_frames(0.5), 2), "latency_p95_frames": round(f.latency_frames(0.95), 2),
        "repeated": f.repeats, "presented": f.presented,
        "stages_ms": {"shown": _stages(shown.per_frame()), "dream": _stages(dreamt.per_frame("dream"))},
        "gpu_stages_ms": {k: v for k, v in (("shown", _stages(shown.gpu_breakdown())),
                                           ("dream", _stages(dreamt.gpu_breakdown("dream")))) if v},
        "graph_captures": backend.stats.graph_captures - captures,
        "graph_failures": backend.stats.graph_failures - failures,
        "backend": backend.describe(),
    }


# ----------------------------------------------------------------------------- 5. the baselines
def _frames_in(pictures: list[np.ndarray], device: torch.device, width: int, height: int):
    """Each pre-rendered frame as a competent script would take it: resize, upload, scale to -1..1."""
    import cv2

    source = frames_source(pictures, "test scene")

    def take() -> torch.Tensor:
        frame = source.latest()
        assert frame is not None
        small = cv2.resize(frame.image, (width, height), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(small).to(device, non_blocking=True).permute(2, 0, 1).flip(0)[None].float()
        return x / 127.5 - 1.0

    return take


def _frame_out(x: torch.Tensor) -> np.ndarray:
    return ((x[0].flip(0).permute(1, 2, 0) + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


def baseline_fps(step_frame: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                 pictures: list[np.ndarray], width: int, height: int, frames: int) -> float:
    """Frames per second of a synchronous script: take a frame, dream it, bring it back - under the
    same ceiling as the project's loop (:data:`live.benchmark.FPS_CAP`)."""
    take = _frames_in(pictures, device, width, height)
    for _ in range(3):  # warm-up: cuDNN autotuning, graph capture
        _frame_out(step_frame(take()))
    t0 = time.perf_counter()
    for _ in range(frames):
        started = time.perf_counter()
        _frame_out(step_frame(take()))
        spare = 1.0 / FPS_CAP - (time.perf_counter() - started)
        if spare > 0:
            time.sleep(spare)
    return frames / (time.perf_counter() - t0)


@contextlib.contextmanager
def tf32(on: bool | None) -> Iterator[None]:
    """cuDNN convolutions and CUDA matmuls in TF32 (True) or true fp32 (False) inside; None:
    PyTorch's defaults, untouched. Uses the precision API of this PyTorch (the flags of the old
    and the new API must not be mixed)."""
    if on is None:
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        matmul = torch.backends.cuda.matmul
        saved = (conv.fp32_precision, matmul.fp32_precision)
        conv.fp32_precision = matmul.fp32_precision = "tf32" if on else "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = saved
    else:
        saved_old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved_old


def plain_baseline(device: torch.device, steps: int) -> Callable[[torch.Tensor], torch.Tensor]:
    plain = plain_loop(LAYER, device)
    return lambda x: plain(x, steps)


def best_ordinary_baseline(device: torch.device, steps: int, shape: tuple[int, int, int, int]
                           ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Weights frozen, the network cut at the layer, fp16, and the ``steps`` functional steps
    captured once as a CUDA graph (on the CPU: fp32, eager - fp16 is no speed-up there)."""
    net = random_reference(0)
    cut = next(i for i, (_, layer) in enumerate(DreamNet.SEQUENCE) if layer == LAYER)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    trunk = torch.nn.Sequential(*(getattr(net, attr) for attr, _ in DreamNet.SEQUENCE[: cut + 1]))
    trunk = trunk.to(device, dtype).eval().requires_grad_(False)

    def ascend(x: torch.Tensor) -> torch.Tensor:
        for _ in range(steps):
            xh = x.detach().to(dtype).requires_grad_(True)
            loss = trunk(xh).float().square().mean()
            (g,) = torch.autograd.grad(loss, xh)
            g = g.float()
            x = (x + 0.01 * g / (g.abs().mean() + 1e-8)).clamp(-1.0, 1.0)
        return x.detach()

    if device.type != "cuda":
        return ascend
    static = torch.zeros(shape, device=device)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            ascend(static)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = ascend(static)

    def replay(x: torch.Tensor) -> torch.Tensor:
        static.copy_(x)
        graph.replay()
        return result.clone()

    return replay


def baseline_forms(device: torch.device, steps: int, shape: tuple[int, int, int, int]
                   ) -> list[tuple[str, str, bool | None, Callable[[], Callable[[torch.Tensor], torch.Tensor]]]]:
    """(key, label, TF32 setting, maker) for each baseline measured on this device."""
    forms: list = []
    if device.type == "cuda":
        forms.append(("plain", "plain fp32 loop, PyTorch defaults (cuDNN convolutions in TF32)", None,
                      lambda: plain_baseline(device, steps)))
        forms.append(("plain_tf32_off", "plain fp32 loop, TF32 off (true fp32)", False,
                      lambda: plain_baseline(device, steps)))
        forms.append(("best", "best ordinary (frozen, cut, fp16, CUDA graph)", None,
                      lambda: best_ordinary_baseline(device, steps, shape)))
    else:
        forms.append(("plain", "plain fp32 loop (CPU: no TF32)", None, lambda: plain_baseline(device, steps)))
        forms.append(("best", "best ordinary (frozen, cut, fp32 eager on CPU)", None,
                      lambda: best_ordinary_baseline(device, steps, shape)))
    return forms


# ----------------------------------------------------------------------------- 6. fp16 cosines
def cosines(models: dict[str, Callable[[], Model]], backends: list[str], layers: tuple[str, ...],
            device: torch.device, size: tuple[int, int], budget: Budget, per_item: float,
            per_reference: float, references: dict | None = None) -> list[dict[str, object]]:
    """fp16 gradient against float64, per model, layer and backend. Each model is loaded, and each
    float64 reference computed, only when the budget still has room for it; ``references`` keeps
    models and references for a later call (TensorRT's cosines come last)."""
    from live.backends import open_backend
    from live.backends.verify import cosine, probe, reference_gradient

    shape = dream_shape(*size)
    cache = {} if references is None else references
    rows: list[dict[str, object]] = []
    for name, load in models.items():
        for layer in layers:
            base = {"model": name, "layer": layer, "size": f"{shape[3]}x{shape[2]}"}
            try:
                if (name, layer) not in cache:
                    budget.need(per_reference + per_item, f"the float64 reference of {name} {layer}")
                    if name not in cache:
                        cache[name] = load()
                    x, objective = probe(cache[name], shape, (layer,), device)
                    cache[(name, layer)] = (x, objective, reference_gradient(cache[name], x, objective))
                model = cache[name]
                x, objective, want = cache[(name, layer)]
            except OutOfTime as e:
                rows += [{**base, "backend": b, "not_run": str(e)} for b in backends]
                continue
            for backend_name in backends:
                row: dict[str, object] = {**base, "backend": backend_name}
                if not budget.allows(per_item):
                    rows.append({**row, "not_run": f"time budget: {max(budget.left(), 0):.0f} s left"})
                    continue
                try:
                    backend = open_backend(backend_name, model, str(device), precision="fp16")
                    if hasattr(backend, "verify_sessions"):
                        backend.verify_sessions = False  # the cosine is measured right here
                    got, _ = backend.gradient(x, objective)
                    row["cosine"] = round(cosine(got, want), 5)
                except LiveError as e:
                    row["failed"] = _line(e, 200)
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the table
def _fmt(v: object, spec: str = ".1f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def verdict_line(result: dict) -> str:
    """The one line printed last: passed, or FAILED with the first reason."""
    problems = result.get("problems", [])
    if not problems:
        asked = [PART_NAMES[p] for p in PARTS if result["parts"].get(p, {}).get("status") != "not asked for"]
        return f"gpu-check: passed: every part asked for ran and passed ({', '.join(asked)})"
    more = f" (+{len(problems) - 1} more, see gpu-check.md)" if len(problems) > 1 else ""
    return f"gpu-check: FAILED: {problems[0]}{more}"


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"### gpu-check: {m['gpu']}", "",
             f"driver {m['driver']}, CUDA {m['cuda']}, PyTorch {m['torch']}, TensorRT {m['tensorrt']}, "
             f"onnxruntime {m['onnxruntime']}; {result['started']}, {result['seconds']:.0f} s"
             + (" (reduced CPU run: --device cpu --quick)" if result["quick"] else ""), ""]
    passed = not result["problems"]
    lines += [f"**Result: {'PASSED' if passed else 'FAILED'}** - "
              + ("every part asked for ran and passed" if passed else f"{len(result['problems'])} problem(s), below")
              + " (the targets at the end are figures to read, not part of this result)", "",
              "| part | status | why |", "|---|---|---|"]
    for p in PARTS:
        st = result["parts"].get(p, {"status": "not asked for", "why": ""})
        lines.append(f"| {PART_NAMES[p]} | {st['status']} | {st.get('why', '')} |")
    t = result.get("tests", {})
    if "tests" in t:
        lines += ["", f"CUDA tests: {t['passed']} passed, {t['failures']} failed, {t['errors']} errors, "
                      f"{t['skipped']} skipped ({t['seconds']} s)"
                  + (f"; skipped for: {'; '.join(sorted(set(t['skip_reasons'])))}" if t.get("skip_reasons") else "")]
    im = result.get("image", {})
    if im.get("backend"):
        lines.append(f"`image` on {result['device']}: exit {im.get('exit_code', '—')}, {_fmt(im.get('seconds'))} s, "
                     f"{im['backend']}")
    asked = {p for p in PARTS if result["parts"].get(p, {}).get("status") != "not asked for"}
    if {"loop", "baselines"} & asked:
        lines += _loop_tables(result)
    if "cosines" in asked:
        lines += _cosine_table(result)
    if not result["quick"] and {"loop", "cosines"} & asked:
        lines += ["", "Targets (4 steps, inception4c):"] + [f"- {k}: {v}" for k, v in result.get("targets", {}).items()]
    if result.get("absent"):
        lines += ["", "Not on this machine (skipped, not a failure):"] + [f"- {p}" for p in result["absent"]]
    if result.get("problems"):
        lines += ["", "Problems:"] + [f"- {p}" for p in result["problems"]]
    return "\n".join(lines) + "\n"


def _loop_tables(result: dict) -> list[str]:
    host = "/".join(STAGES)
    gpu = "/".join(GPU_STAGES)
    lines = ["", f"Live loop on the pre-rendered test scene, capped at {FPS_CAP:g} fps like every baseline, "
              "every frame dreamed (--present dream). Host ms: the host's clock per stage of both paces (on CUDA: "
              "the time to queue the work; the dreamer's dream and the presenter's download: the wait for it). "
              "GPU ms: the GPU's own time per stage, from CUDA events on each pace's stream. Dream GPU %: the "
              "dream's GPU time over the whole frame time.", "",
              f"| backend | size | steps | outputs | fps | latency ms (frames) | host ms {host} | GPU ms {gpu} | "
              "dream GPU % | CUDA graphs captured/failed | GPU MiB | × plain (defaults) | × plain (TF32 off) | "
              "× best ordinary |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.get("loop", []):
        if "fps" not in r:
            lines.append(f"| {r['backend']} | {r['size']} | {r['steps']} | {r.get('outputs', '')} | "
                         f"{r.get('not_run') or r.get('failed')} | | | | | | | | | |")
            continue
        stages = "/".join(_fmt(r["stages_ms"].get(k)) for k in STAGES)
        gpu_ms = "/".join(_fmt(r["gpu_stages_ms"].get(k), ".2f") for k in GPU_STAGES) if r["gpu_stages_ms"] else "—"
        share = _fmt(100 * r["dream_gpu_share"], ".0f") if "dream_gpu_share" in r else "—"
        lines.append(f"| {r['backend']} | {r['size']} | {r['steps']} | {r['outputs']} | {r['fps']:.1f} | "
                     f"{r['latency_ms']:.0f} ({r['latency_frames']:.1f}) | {stages} | {gpu_ms} | {share} | "
                     f"{r['graph_captures']}/{r['graph_failures']} | {_fmt(r['gpu_memory_mib'], '.0f')} | "
                     f"{_fmt(r.get('vs_plain'), '.2f')} | {_fmt(r.get('vs_plain_tf32_off'), '.2f')} | "
                     f"{_fmt(r.get('vs_best_ordinary'), '.2f')} |")
    lines += ["", f"| baseline (same frames, steps and {FPS_CAP:g} fps cap) | size | steps | fps |", "|---|---|---|---|"]
    for b in result.get("baselines", []):
        extra = b.get("not_run") or b.get("failed")
        lines.append(f"| {b['form']} | {b['size']} | {b['steps']} | {_fmt(b.get('fps'))}"
                     f"{' ' + extra if extra else ''} |")
    if result.get("layout"):
        lines += ["", "Memory layout (outputs off, the first step count; on CUDA channels-last becomes the default "
                      f"only at >= {CHANNELS_LAST_PAYS:g}x):"] + [f"- {v}" for v in result["layout"]]
    if result.get("paces"):
        shown, dreamt = "/".join(PRESENT_GPU_STAGES), "/".join(DREAM_GPU_STAGES)
        lines += ["", "Two paces: the show at the camera's pace (every camera frame out, the newest dream carried "
                      "onto it) against the test scene published in real time; latency is glass to output (capture "
                      "to sent), in camera frames; GPU ms per frame out (presenter) and per dream (dreamer).", "",
                  "| backend | camera | dream | steps | presented fps (÷ camera) | dream fps | dream age ms | "
                  f"latency p50/p95 (frames) | repeated | GPU ms shown {shown} | GPU ms dream {dreamt} | "
                  "CUDA graphs captured/failed |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["paces"]:
            head = f"| {r['backend']} | {r['size']} @ {r['camera_fps']:g} fps | {r['dream']} | {r['steps']} |"
            if "presented_fps" not in r:
                lines.append(f"{head} {r.get('not_run') or r.get('failed')} | | | | | | | |")
                continue
            gpu = r["gpu_stages_ms"]
            gs = "/".join(_fmt(gpu["shown"].get(k), ".2f") for k in PRESENT_GPU_STAGES) if "shown" in gpu else "—"
            gd = "/".join(_fmt(gpu["dream"].get(k), ".2f") for k in DREAM_GPU_STAGES) if "dream" in gpu else "—"
            lines.append(f"{head} {r['presented_fps']:.1f} ({r['presented_share']:.2f}) | {r['dream_fps']:.1f} | "
                         f"{_fmt(r['dream_age_ms'], '.0f')} | {r['latency_p50_frames']:.2f}/"
                         f"{r['latency_p95_frames']:.2f} | {r['repeated']} | {gs} | {gd} | "
                         f"{r['graph_captures']}/{r['graph_failures']} |")
    return lines


def _cosine_table(result: dict) -> list[str]:
    cos_backends = result.get("cosine_backends", [])
    lines = ["", "| fp16 cosine to float64 | layer | " + " | ".join(cos_backends) + " |",
              "|---|---|" + "---|" * len(cos_backends)]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for c in result.get("cosines", []):
        cells.setdefault((c["model"], c["layer"]), {})[c["backend"]] = (
            _fmt(c["cosine"], ".4f") if "cosine" in c else (c.get("not_run") or f"failed: {c.get('failed')}"))
    for (model, layer), row in cells.items():
        lines.append(f"| {model} | {layer} | " + " | ".join(row.get(b, "—") for b in cos_backends) + " |")
    return lines


def _verdicts(result: dict, sizes: list[tuple[int, int]]) -> dict[str, str]:
    """Each target as met / missed with the measured figure, or not measured."""
    def loop_row(prefix: str, size: tuple[int, int], layout: str = "default") -> dict | None:
        want = f"{round32(size[0])}x{round32(size[1])}"
        return next((r for r in result.get("loop", []) if r["backend"].startswith(prefix) and r["size"] == want
                     and r["steps"] == 4 and r.get("outputs") == "off" and r.get("layout") == layout
                     and "fps" in r), None)

    out: dict[str, str] = {}
    for key, size in (("fps_720p", sizes[0]), ("fps_1080p", sizes[-1])):
        r = loop_row("torch", size)
        goal = TARGETS[key]
        out[f"torch >= {goal:g} fps at {size[0]}x{size[1]}"] = (
            f"{'met' if r['fps'] >= goal else 'MISSED'} ({r['fps']:.1f})" if r else "not measured")
    r = loop_row("torch", sizes[-1])
    goal = TARGETS["dream_gpu_share_1080p"]
    label = f"dream GPU time >= {100 * goal:.0f}% of the frame at {sizes[-1][0]}x{sizes[-1][1]}"
    out[label] = (f"{'met' if r['dream_gpu_share'] >= goal else 'MISSED'} ({100 * r['dream_gpu_share']:.0f}%)"
                  if r and "dream_gpu_share" in r else "not measured")
    for size in sizes:
        r = loop_row("torch", size)
        if r is None:
            continue
        for key, label in (("vs_plain", "x plain fp32 (PyTorch defaults)"), ("vs_best_ordinary", "x best ordinary")):
            if isinstance(r.get(key), float):
                ok = r[key] >= TARGETS[key]
                out[f"torch >= {TARGETS[key]:g}{label} at {r['size']}"] = f"{'met' if ok else 'MISSED'} ({r[key]:.2f})"
        ok = r["latency_frames"] <= TARGETS["latency_frames"]
        out[f"latency <= 2 frames at {r['size']}"] = f"{'met' if ok else 'MISSED'} ({r['latency_frames']:.1f})"
        t = loop_row("tensorrt", size)
        out[f"tensorrt >= 1.5x torch at {r['size']}"] = (
            f"{'met' if t['fps'] / r['fps'] >= 1.5 else 'MISSED'} ({t['fps'] / r['fps']:.2f})" if t else "not measured")
    paced = next((r for r in result.get("paces", []) if "presented_share" in r), None)
    goal = TARGETS["presented_share"]
    label = (f"presented >= {goal:g}x the camera's rate ({PACES[0][0]}x{PACES[0][1]} at {PACES[1]:g} fps, dream "
             f"{PACES[2][0]}x{PACES[2][1]} x{PACES[3]})")
    out[label] = (f"{'met' if paced['presented_share'] >= goal else 'MISSED'} ({paced['presented_share']:.2f})"
                  if paced else "not measured")
    measured = [c for c in result.get("cosines", []) if "cosine" in c]
    if measured:
        low = [f"{c['backend']} {c['model']} {c['layer']} {c['cosine']:.4f}" for c in measured
               if not c["cosine"] >= TARGETS["fp16_cosine"]]
        out["fp16 cosine >= 0.995 on every backend"] = ("met" if not low else "MISSED: " + "; ".join(low))
    else:
        out["fp16 cosine >= 0.995 on every backend"] = "not measured"
    return out


def _layout_verdicts(rows: list[dict], device: torch.device) -> list[str]:
    """channels-last against NCHW per size, from the torch rows that ran both (4 steps, outputs off)."""
    out = []
    for r in rows:
        if r.get("layout") != "other" or "fps" not in r:
            continue
        base = next((b for b in rows if b.get("layout") == "default" and b["backend"].startswith("torch")
                     and b["size"] == r["size"] and b["steps"] == r["steps"] and b.get("outputs") == "off"
                     and "fps" in b), None)
        if base is None:
            continue
        if device.type == "cuda":
            ratio = r["fps"] / base["fps"]
            keep = "worth making the CUDA default" if ratio >= CHANNELS_LAST_PAYS else "keep NCHW (the CUDA default)"
            out.append(f"channels-last on CUDA at {r['size']}: {ratio:.2f}x NCHW -> {keep}")
        else:
            ratio = base["fps"] / r["fps"]
            out.append(f"channels-last (the CPU default) at {r['size']}: {ratio:.2f}x NCHW")
    return out


# ----------------------------------------------------------------------------- the run
def run_check(out: Path, device: torch.device, quick: bool, budget: Budget, weights: str, frames: int | None,
              parts: Sequence[str] = PARTS, test_files: Sequence[Path] | None = None) -> dict:
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"device": str(device), "quick": quick, "started": started, "problems": [], "absent": [],
                    "parts": {p: {"status": "not asked for", "why": "--parts"} for p in PARTS if p not in parts},
                    "machine": machine(device)}

    def fail(name: str, why: str, status: str = "failed") -> None:
        result["parts"][name] = {"status": status, "why": why}
        result["problems"].append(f"{PART_NAMES[name]}: {why}")

    def attempt(work: Callable[[], dict]) -> tuple[str, dict | str]:
        """("passed", what it returned), or (status, one-line reason): nothing escapes."""
        try:
            got = work()
        except OutOfTime as e:
            return "did not run", str(e)
        except PartFailed as e:
            return "failed", str(e)
        except Exception as e:  # noqa: BLE001 - one broken part must not hide the others' figures
            log.error("a part failed:\n%s", traceback.format_exc())
            return "failed", _line(f"{type(e).__name__}: {e}")
        if got.get("problem"):
            return "failed", str(got["problem"])
        return "passed", got

    def settle(name: str, outcome: tuple[str, dict | str]) -> dict:
        status, got = outcome
        if status != "passed":
            fail(name, str(got), status)
            return {}
        assert isinstance(got, dict)
        result["parts"][name] = {"status": "passed", "why": got.get("summary", "")}
        return got

    def run_part(name: str, work: Callable[[], dict]) -> dict:
        return settle(name, attempt(work)) if name in parts else {}

    paces = PACES_QUICK if quick else PACES
    if quick:  # every part runs, at the smallest size that still means something
        sizes, steps_list, frames = [(96, 64)], [1], frames or 2
        cos_size, cos_models, cos_layers = (96, 64), ("torchvision",), COSINE_LAYERS[:1]
        allow = {"baseline": 5, "loop": 5, "tensorrt": 5, "model": 5, "reference": 2, "cosine": 2, "paces": 5}
    else:
        sizes, steps_list, frames = [(1280, 720), (1920, 1080)], [4, 1], frames or 60
        cos_size, cos_models, cos_layers = (1280, 720), ("torchvision", "bvlc"), COSINE_LAYERS
        allow = {"baseline": 30, "loop": 20, "tensorrt": 60, "model": 15, "reference": 10, "cosine": 10,
                 "paces": 25}

    def tests_part() -> dict:
        files = list(test_files) if test_files else cuda_test_files(quick)
        got = cuda_tests(out, files, device, budget)
        got["summary"] = (f"{got['passed']} passed, {got['skipped']} skipped, {got['failures']} failed "
                          f"in {got['seconds']} s")
        return got

    def image_part() -> dict:
        im = image(out, device, weights, quick, budget)
        return {**im, "summary": f"{im['backend']}, {im['seconds']} s"}

    # The two child processes run side by side (each waits on its own process): nothing is being
    # measured yet, and the measurements below start only when both have finished.
    children = {name: work for name, work in (("tests", tests_part), ("image", image_part)) if name in parts}
    with ThreadPoolExecutor(max(len(children), 1), thread_name_prefix="gpu-check") as pool:
        running = {name: pool.submit(attempt, work) for name, work in children.items()}
        for name in ("tests", "image"):  # recorded in this order, whichever finished first
            result[name] = settle(name, running[name].result()) if name in running else {}

    measured = [p for p in ("loop", "baselines", "cosines") if p in parts]
    model: Model | None = None
    if measured:
        try:
            budget.need(allow["model"], "loading the model")
            model = load_model(weights, progress=False)
        except OutOfTime as e:
            for p in measured:
                fail(p, str(e), "did not run")
            measured = []
        except Exception as e:  # noqa: BLE001 - said in the table, the check fails
            for p in measured:
                fail(p, _line(f"the model did not load: {type(e).__name__}: {e}"))
            measured = []

    loop_rows: list[dict] = []
    base_rows: list[dict] = []
    backends: dict[str, object] = {}
    pictures: dict[tuple[int, int], list[np.ndarray]] = {}
    base: dict[tuple[str, int], dict[str, float]] = {}  # (dream size, steps) -> baseline fps by key
    if model is not None and ("loop" in measured or "baselines" in measured):
        from live.backends import open_backend
        from live.backends.torch_backend import TorchBackend

        try:
            backends["torch"] = open_backend("torch", model, str(device))
            # the other memory layout, measured beside the default (channels-last on CUDA)
            backends["torch-layout"] = TorchBackend(model, device, channels_last=device.type == "cuda")
        except LiveError as e:
            if "loop" in measured:
                fail("loop", _line(f"torch: {e}"))
        if device.type == "cuda":
            try:
                backends["tensorrt"] = open_backend("tensorrt", model, str(device))
            except LiveError as e:
                result["absent"].append(f"tensorrt: {_line(e)}")
        for w, h in [*sizes, paces[0]]:
            if (w, h) not in pictures:
                pictures[(w, h)] = scene_frames(w, h)  # drawn now, before any clock starts
        if "baselines" in measured:
            for w, h in sizes:
                dw, dh = round32(w), round32(h)
                for steps in steps_list:
                    got = base.setdefault((f"{dw}x{dh}", steps), {})
                    for key, form, tf, make in baseline_forms(device, steps, (1, 3, dh, dw)):
                        row: dict = {"form": form, "key": key, "size": f"{dw}x{dh}", "steps": steps}
                        with row_outcome(row, f"baseline {form}"):
                            budget.need(allow["baseline"], f"the {key} baseline at {dw}x{dh}")
                            with tf32(tf):
                                fps = baseline_fps(make(), device, pictures[(w, h)], dw, dh, frames)
                            row["fps"] = round(fps, 2)
                            got[key] = fps
                        base_rows.append(row)

    def loop_rows_of(names: Sequence[str]) -> None:
        """Loop rows of these backends at every size and step count (the other layout: outputs off,
        the first step count only)."""
        if model is None or "loop" not in measured:
            return
        record_dir = Path(tempfile.mkdtemp(prefix="gpu-check-rec-"))
        try:
            for name in names:
                backend = backends.get(name)
                if backend is None:
                    continue
                for w, h in sizes:
                    dw, dh = round32(w), round32(h)
                    for steps in steps_list[:1] if name == "torch-layout" else steps_list:
                        records = [None] if name == "torch-layout" else [None, record_dir / f"{name}-{dw}x{dh}-{steps}.mp4"]
                        for record in records:
                            row = {"backend": backend.describe(), "size": f"{dw}x{dh}", "steps": steps,
                                   "outputs": "recorder" if record else "off",
                                   "layout": "other" if name == "torch-layout" else "default"}
                            with row_outcome(row, f"loop {name}"):
                                budget.need(allow["tensorrt" if name == "tensorrt" else "loop"],
                                            f"the {name} loop at {dw}x{dh}")
                                row.update(live_loop(model, backend, pictures[(w, h)], dw, dh, steps, frames, record))
                                for key, col in (("plain", "vs_plain"), ("plain_tf32_off", "vs_plain_tf32_off"),
                                                 ("best", "vs_best_ordinary")):
                                    if key in base.get((f"{dw}x{dh}", steps), {}):
                                        row[col] = round(row["fps"] / base[(f"{dw}x{dh}", steps)][key], 2)
                            loop_rows.append(row)
        finally:
            shutil.rmtree(record_dir, ignore_errors=True)

    paces_rows: list[dict] = []

    def paces_row() -> None:
        """The two paces, torch only: the show at the camera's pace against a real-time camera."""
        backend = backends.get("torch")
        if model is None or "loop" not in measured or backend is None:
            return
        (w, h), fps, (dw, dh), steps, seconds = paces
        row: dict = {"backend": backend.describe(), "size": f"{w}x{h}", "camera_fps": fps, "dream": f"{dw}x{dh}",
                     "steps": steps}
        with row_outcome(row, "the two paces"):
            budget.need(allow["paces"], "the two paces")
            row.update(two_paces(model, backend, pictures[(w, h)], fps, (dw, dh), steps, seconds))
        paces_rows.append(row)

    cos_backends = ["torch", "onnx"] + (["tensorrt"] if "tensorrt" in backends else [])
    if device.type == "cuda":
        try:
            import onnxruntime

            providers, version = onnxruntime.get_available_providers(), onnxruntime.__version__
        except ImportError:
            providers, version = [], "(not installed)"
        if "CUDAExecutionProvider" not in providers:
            cos_backends.remove("onnx")
            result["absent"].append(f"onnx: onnxruntime {version} has no CUDA provider")
    result["cosine_backends"] = cos_backends
    cos_rows: list[dict] = []
    references: dict = {}
    loaders: dict[str, Callable[[], Model]] = {"torchvision": lambda: model}  # type: ignore[dict-item,return-value]
    if "bvlc" in cos_models:
        loaders["bvlc"] = lambda: load_model(weights, model="bvlc", progress=False)

    def cosines_of(names: list[str], per_item: float) -> None:
        if model is None or "cosines" not in measured or not names:
            return
        try:
            cos_rows.extend(cosines(loaders, names, cos_layers, device, cos_size, budget, per_item,
                                    allow["reference"], references))
        except Exception as e:  # noqa: BLE001 - said in the table, the check fails
            log.error("cosines failed:\n%s", traceback.format_exc())
            cos_rows.append({"model": "?", "layer": "?", "backend": ",".join(names),
                             "failed": _line(f"{type(e).__name__}: {e}")})

    # TensorRT last, loop rows and cosines: its engine builds are the long part, and what the
    # deadline cuts off then is said in the table (and fails the check) without costing torch's figures.
    loop_rows_of(["torch", "torch-layout"])
    paces_row()
    cosines_of([b for b in cos_backends if b != "tensorrt"], allow["cosine"])
    loop_rows_of(["tensorrt"])
    cosines_of([b for b in cos_backends if b == "tensorrt"], 90)

    for part_name, rows, label in (("loop", loop_rows + paces_rows, "row"), ("baselines", base_rows, "baseline"),
                                   ("cosines", cos_rows, "cosine")):
        if part_name not in measured or part_name in result["parts"]:
            continue
        bad = [r for r in rows if "not_run" in r or "failed" in r]
        if bad:
            first = bad[0]
            what = first.get("form") or " ".join(str(first[k]) for k in ("backend", "model", "layer", "size")
                                                 if k in first)
            fail(part_name, f"{len(bad)} of {len(rows)} {label}s did not run or failed; first: {what}: "
                 f"{first.get('failed') or first.get('not_run')}",
                 "failed" if any("failed" in r for r in bad) else "did not run")
        elif not rows:
            fail(part_name, "nothing was measured")
        elif part_name == "cosines":
            result["parts"][part_name] = {"status": "passed", "why": f"{len(rows)} cosines, lowest "
                                          f"{min(r['cosine'] for r in rows):.4f}"}
        else:
            graphs = sum(r.get("graph_failures", 0) for r in rows)
            result["parts"][part_name] = {"status": "passed", "why": f"{len(rows)} {label}s"
                                          + (f"; {graphs} CUDA graph capture(s) failed (step by step)"
                                             if graphs else "")}
    result["loop"], result["baselines"], result["cosines"] = loop_rows, base_rows, cos_rows
    result["paces"] = paces_rows
    result["layout"] = _layout_verdicts(loop_rows, device)
    result["targets"] = (_verdicts(result, sizes) if not quick
                         else {"(quick CPU run)": "targets apply to a GPU run"})
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="where gpu-check.json and gpu-check.md are written")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for the reduced run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few frames (the test suite's run)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check from now "
                        "(default: 450)")
    parser.add_argument("--deadline", type=float, default=None, help="the wall-clock time (seconds since the "
                        "epoch, as `date +%%s` prints) by which the check must end; make gpu-check passes the "
                        "moment it started plus 8 minutes. The earlier of this and --budget holds")
    parser.add_argument("--weights", default="random:0", help="weights for both models (default: random:0; speed "
                        "does not depend on them, cosines do a little)")
    parser.add_argument("--frames", type=int, default=None, help="frames timed per loop run (default: 60, quick 2)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"run only these parts, comma-separated "
                        f"(default: all of {','.join(PARTS)}); the others are reported as not asked for")
    parser.add_argument("--tests", nargs="+", type=Path, default=None, metavar="FILE",
                        help="test files for the tests part (default: every file marking tests cuda)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--parts {args.parts!r}: expected some of {','.join(PARTS)}")
    logs.configure("warning")  # once, here: nothing later in this process reconfigures logging
    threads.apply()  # the show's thread settings, once, as `run` applies them
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device visible to PyTorch {torch.__version__} "
              f"(CUDA build: {torch.version.cuda or 'no'}); nothing to check here (--device cpu --quick runs the "
              "reduced CPU check)")
        return EX_UNAVAILABLE
    out = args.outdir.resolve()  # the child pytest runs elsewhere: every path it is given is absolute
    budget = Budget(args.budget)
    if args.deadline is not None:
        budget = min(budget, Budget.until(args.deadline), key=lambda b: b.deadline)
    tests = [p.resolve() for p in args.tests] if args.tests else None
    engines = os.environ.get("DEEPDREAM_LIVE_ENGINES")
    with tempfile.TemporaryDirectory(prefix="gpu-check-engines-") as tmp:
        os.environ.setdefault("DEEPDREAM_LIVE_ENGINES", tmp)  # plans of this run only, unless told otherwise
        try:
            result = run_check(out, device, args.quick, budget, args.weights, args.frames, parts, tests)
        finally:
            if engines is None:
                os.environ.pop("DEEPDREAM_LIVE_ENGINES", None)
    result["passed"] = not result["problems"]
    (out / "gpu-check.json").write_text(json.dumps(result, indent=2) + "\n")
    text = table(result)
    (out / "gpu-check.md").write_text(text)
    print(text)
    print(verdict_line(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
