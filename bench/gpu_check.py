"""`make gpu-check`: the GPU path verified and measured end to end, in one run, written down.

On a machine with an NVIDIA GPU (and no network: see ``bench/gpu_deps.py`` for the wheel folder)
it runs, in this order, within a time budget (default 450 s, so the whole make target stays under
8 minutes; what does not fit is marked "skipped: time budget", never guessed):

1. the machine: GPU, driver, CUDA, PyTorch, TensorRT, onnxruntime (and its providers);
2. the CUDA tests: ``tests/test_cuda.py`` and every test marked ``cuda``, in a child pytest (a
   test that breaks the CUDA context must not take the measurements with it);
3. ``deepdream-live image`` on CUDA;
4. the live loop, headless (outputs off, then the recorder on) at 1280x720 and 1920x1080 on the
   built-in test scene, 4 steps and 1 step at inception4c: fps, capture-to-output latency, the
   per-stage breakdown and peak GPU memory - for the torch backend and TensorRT where it imports;
5. in the same run, two baselines dreaming the same frames and steps: the plain fp32 loop (whole
   network, forward hook, weights requiring grad, ``loss.backward()``) and the best ordinary form
   (weights frozen, network cut at the layer, fp16, the functional step captured in a CUDA graph);
6. the fp16 gradient's cosine to float64 at 1280x720 (dreamed at 1280x704, the loop's size) for
   three layers of each model, on every backend that runs here.

It writes ``gpu-check.json`` and ``gpu-check.md`` (the table, headed by the GPU, driver, CUDA,
PyTorch and TensorRT versions) into OUTDIR and prints the table. Without CUDA it prints one line
and exits 69; ``--device cpu --quick`` is the reduced run the test suite keeps from rotting (tiny
sizes, few frames, the same code). Exit 1 when a CUDA test failed or a part of the check broke.

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
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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

from live.app import STAGES, round32  # noqa: E402
from live.benchmark import PullSource, plain_loop, run_loop, scene_source  # noqa: E402
from live.dreamsize import dream_shape  # noqa: E402
from live.errors import LiveError  # noqa: E402
from live.model import Model, load_model  # noqa: E402
from live.model.googlenet import DreamNet  # noqa: E402
from live.model.weights import random_reference  # noqa: E402
from live.outputs import RecorderOutput  # noqa: E402

log = logging.getLogger("gpu-check")

EX_UNAVAILABLE = 69
LAYER = "inception4c"
COSINE_LAYERS = ("inception3b", "inception4c", "inception5b")
# The issue's targets (4 steps, inception4c, end to end, on an H100/H200-class GPU).
TARGETS = {"fps_720p": 100.0, "fps_1080p": 55.0, "vs_plain": 3.0, "vs_best_ordinary": 1.0, "latency_frames": 2.0,
           "tensorrt_vs_torch": 1.5, "fp16_cosine": 0.995}


class Budget:
    """Seconds left for the check; a part that would not fit is skipped and says so."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds


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
        info["tensorrt"] = f"not usable: {' '.join(str(e).split())}"
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


# ----------------------------------------------------------------------------- 2. the CUDA tests
def cuda_tests(out: Path, quick: bool, budget: Budget) -> dict[str, object]:
    """pytest on the CUDA tests in a child process; counts from its JUnit XML.

    Only the test files that mark tests ``cuda`` are collected: every CUDA test runs, and a test
    module needing a package this machine lacks (MIDI, say) cannot fail the check by its import.
    """
    report = out / "cuda-tests.xml"
    marked = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                    if "pytest.mark.cuda" in p.read_text())
    targets = ["tests/test_cuda.py"] if quick else marked
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "--junitxml", str(report),
           *targets]
    timeout = max(30.0, min(300.0, budget.left() - 120))
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"the CUDA tests ran past {timeout:.0f} s and were stopped"}
    counts = _junit_counts(report) if report.exists() else {}
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return {"command": " ".join(cmd[1:]), "exit_code": done.returncode, "seconds": round(time.monotonic() - t0, 1),
            **counts, "tail": tail}


def _junit_counts(path: Path) -> dict[str, int]:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return total


# ----------------------------------------------------------------------------- 3. image
def image(out: Path, device: torch.device, weights: str, quick: bool) -> dict[str, object]:
    from live.cli import main

    target = out / "image.png"
    # torch: with --backend auto and TensorRT here, every octave's size would build a plan first
    # (minutes); the TensorRT path is measured by the loop and the cosines
    args = ["image", "test-scene", str(target), "--device", str(device), "--weights", weights, "--no-progress",
            "--backend", "torch"]
    if quick:
        args += ["--steps", "1", "--octaves", "1", "--max-side", "96"]
    t0 = time.monotonic()
    code = main(args)
    result: dict[str, object] = {"exit_code": code, "seconds": round(time.monotonic() - t0, 2)}
    if code == 0 and target.exists():
        from PIL import Image

        with Image.open(target) as im:
            meta = json.loads(im.info.get("deepdream-live", "{}"))
        result.update(backend=meta.get("backend", "?"), bytes=target.stat().st_size)
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


def live_loop(model: Model, backend, width: int, height: int, steps: int, frames: int, record: Path | None
              ) -> dict[str, object]:
    outputs = [_recorder(record)] if record is not None else []
    peak = _peak_memory(backend.device)
    try:
        f = run_loop(model, backend, scene_source(width, height), width, height, steps, frames, LAYER,
                     outputs=outputs)
    finally:
        for out in outputs:
            out.close()
    return {"fps": round(f.fps, 2), "latency_ms": round(f.latency_ms, 1),
            "latency_frames": round(f.latency_ms * f.fps / 1e3, 2), "stages_ms": _stages(f.breakdown),
            "gpu_memory_mib": peak(), "outputs": "recorder" if record is not None else "off"}


# ----------------------------------------------------------------------------- 5. the baselines
def _frames_in(source: PullSource, device: torch.device, width: int, height: int):
    """Each test-scene frame as a competent script would take it: resize, upload, scale to -1..1."""
    import cv2

    def take() -> torch.Tensor:
        frame = source.latest()
        assert frame is not None
        small = cv2.resize(frame.image, (width, height), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(small).to(device, non_blocking=True).permute(2, 0, 1).flip(0)[None].float()
        return x / 127.5 - 1.0

    return take


def _frame_out(x: torch.Tensor) -> np.ndarray:
    return ((x[0].flip(0).permute(1, 2, 0) + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()


def baseline_fps(step_frame: Callable[[torch.Tensor], torch.Tensor], device: torch.device, width: int, height: int,
                 frames: int) -> float:
    """Frames per second of a synchronous script: take a frame, dream it, bring it back."""
    take = _frames_in(scene_source(width, height), device, width, height)
    for _ in range(3):  # warm-up: cuDNN autotuning, graph capture
        _frame_out(step_frame(take()))
    t0 = time.perf_counter()
    for _ in range(frames):
        _frame_out(step_frame(take()))
    return frames / (time.perf_counter() - t0)


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


# ----------------------------------------------------------------------------- 6. fp16 cosines
def cosines(models: dict[str, Model], backends: list[str], layers: tuple[str, ...], device: torch.device,
            size: tuple[int, int], budget: Budget, per_item: float) -> list[dict[str, object]]:
    from live.backends import open_backend
    from live.backends.verify import cosine, probe, reference_gradient

    shape = dream_shape(*size)
    rows: list[dict[str, object]] = []
    for name, model in models.items():
        for layer in layers:
            x, objective = probe(model, shape, (layer,), device)
            want = reference_gradient(model, x, objective)
            for backend_name in backends:
                row: dict[str, object] = {"model": name, "layer": layer, "backend": backend_name,
                                          "size": f"{shape[3]}x{shape[2]}"}
                if not budget.allows(per_item):
                    rows.append({**row, "skipped": "time budget"})
                    continue
                try:
                    backend = open_backend(backend_name, model, str(device), precision="fp16")
                    if hasattr(backend, "verify_sessions"):
                        backend.verify_sessions = False  # the cosine is measured right here
                    got, _ = backend.gradient(x, objective)
                    row["cosine"] = round(cosine(got, want), 5)
                except LiveError as e:
                    row["skipped"] = " ".join(str(e).split())[:200]
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the table
def _fmt(v: object, spec: str = ".1f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "—"


def table(result: dict) -> str:
    m = result["machine"]
    lines = [f"### gpu-check: {m['gpu']}", "",
             f"driver {m['driver']}, CUDA {m['cuda']}, PyTorch {m['torch']}, TensorRT {m['tensorrt']}, "
             f"onnxruntime {m['onnxruntime']}; {result['started']}, {result['seconds']:.0f} s"
             + (" (reduced CPU run: --device cpu --quick)" if result["quick"] else ""), ""]
    t = result.get("tests", {})
    if "tests" in t:
        lines.append(f"CUDA tests: {t['passed']} passed, {t['failures']} failed, {t['errors']} errors, "
                     f"{t['skipped']} skipped ({t['seconds']} s)")
    elif t:
        lines.append(f"CUDA tests: {t.get('error') or t.get('skipped')}")
    im = result.get("image", {})
    if im:
        lines.append(f"`image` on {result['device']}: exit {im.get('exit_code', '—')}, {_fmt(im.get('seconds'))} s, "
                     f"{im.get('backend', im.get('error', '—'))}")
    lines += ["", ("| backend | size | steps | outputs | fps | latency ms (frames) | capture/flow/upload/dream/"
                   "compose/download/output ms | GPU MiB | × plain fp32 | × best ordinary |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.get("loop", []):
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['backend']} | {r['size']} | {r['steps']} | {r.get('outputs', '')} | "
                         f"{r.get('skipped') or r.get('error')} | | | | | |")
            continue
        st = r["stages_ms"]
        stages = "/".join(_fmt(st.get(k)) for k in STAGES)
        lines.append(f"| {r['backend']} | {r['size']} | {r['steps']} | {r['outputs']} | {r['fps']:.1f} | "
                     f"{r['latency_ms']:.0f} ({r['latency_frames']:.1f}) | {stages} | "
                     f"{_fmt(r['gpu_memory_mib'], '.0f')} | {_fmt(r.get('vs_plain'), '.2f')} | "
                     f"{_fmt(r.get('vs_best_ordinary'), '.2f')} |")
    lines += ["", "| baseline (same frames and steps) | size | steps | fps |", "|---|---|---|---|"]
    for b in result.get("baselines", []):
        lines.append(f"| {b['form']} | {b['size']} | {b['steps']} | {_fmt(b.get('fps'))}"
                     f"{' ' + b['skipped'] if 'skipped' in b else ''} |")
    lines += ["", "| fp16 cosine to float64 | layer | " + " | ".join(result.get("cosine_backends", [])) + " |",
              "|---|---|" + "---|" * len(result.get("cosine_backends", []))]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for c in result.get("cosines", []):
        cells.setdefault((c["model"], c["layer"]), {})[c["backend"]] = (
            _fmt(c["cosine"], ".4f") if "cosine" in c else f"skipped: {c.get('skipped')}")
    for (model, layer), row in cells.items():
        lines.append(f"| {model} | {layer} | " + " | ".join(row.get(b, "—") for b in result["cosine_backends"]) + " |")
    lines += ["", "Targets (4 steps, inception4c):"]
    for name, verdict in result.get("targets", {}).items():
        lines.append(f"- {name}: {verdict}")
    if result.get("skipped"):
        lines += ["", "Skipped:"] + [f"- {p}" for p in result["skipped"]]
    if result.get("problems"):
        lines += ["", "Problems:"] + [f"- {p}" for p in result["problems"]]
    return "\n".join(lines) + "\n"


def _verdicts(result: dict, sizes: list[tuple[int, int]]) -> dict[str, str]:
    """Each target as met / missed with the measured figure, or not measured."""
    def loop_row(backend: str, size: tuple[int, int]) -> dict | None:
        want = f"{round32(size[0])}x{round32(size[1])}"
        return next((r for r in result.get("loop", []) if r["backend"].startswith(backend) and r["size"] == want
                     and r["steps"] == 4 and r.get("outputs") == "off" and "fps" in r), None)

    out: dict[str, str] = {}
    for key, size in (("fps_720p", sizes[0]), ("fps_1080p", sizes[-1])):
        r = loop_row("torch", size)
        goal = TARGETS[key]
        out[f"torch >= {goal:g} fps at {size[0]}x{size[1]}"] = (
            f"{'met' if r['fps'] >= goal else 'MISSED'} ({r['fps']:.1f})" if r else "not measured")
    for size in sizes:
        r = loop_row("torch", size)
        if r is None:
            continue
        for key, label in (("vs_plain", "x plain fp32"), ("vs_best_ordinary", "x best ordinary")):
            if isinstance(r.get(key), float):
                ok = r[key] >= TARGETS[key]
                out[f"torch >= {TARGETS[key]:g}{label} at {r['size']}"] = f"{'met' if ok else 'MISSED'} ({r[key]:.2f})"
        ok = r["latency_frames"] <= TARGETS["latency_frames"]
        out[f"latency <= 2 frames at {r['size']}"] = f"{'met' if ok else 'MISSED'} ({r['latency_frames']:.1f})"
        t = loop_row("tensorrt", size)
        out[f"tensorrt >= 1.5x torch at {r['size']}"] = (
            f"{'met' if t['fps'] / r['fps'] >= 1.5 else 'MISSED'} ({t['fps'] / r['fps']:.2f})" if t else "not measured")
    measured = [c for c in result.get("cosines", []) if "cosine" in c]
    if measured:
        low = [f"{c['backend']} {c['model']} {c['layer']} {c['cosine']:.4f}" for c in measured
               if not c["cosine"] >= TARGETS["fp16_cosine"]]
        out["fp16 cosine >= 0.995 on every backend"] = ("met" if not low else "MISSED: " + "; ".join(low))
    else:
        out["fp16 cosine >= 0.995 on every backend"] = "not measured"
    return out


# ----------------------------------------------------------------------------- the run
def run_check(out: Path, device: torch.device, quick: bool, budget_s: float, weights: str,
              frames: int | None) -> dict:
    budget = Budget(budget_s)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"device": str(device), "quick": quick, "started": started, "problems": [], "skipped": [],
                    "machine": machine(device)}

    def part(name: str, work: Callable[[], object]) -> object:
        try:
            return work()
        except Exception as e:  # noqa: BLE001 - one broken part must not hide the others' figures
            result["problems"].append(f"{name}: {type(e).__name__}: {e}")
            log.error("%s failed:\n%s", name, traceback.format_exc())
            return None

    if quick:  # every part runs, at the smallest size that still means something
        sizes, steps_list, frames = [(96, 64)], [1], frames or 2
        cos_size, cos_models, cos_layers = (96, 64), ("torchvision",), COSINE_LAYERS[:1]
    else:
        sizes, steps_list, frames = [(1280, 720), (1920, 1080)], [4, 1], frames or 60
        cos_size, cos_models, cos_layers = (1280, 720), ("torchvision", "bvlc"), COSINE_LAYERS

    result["tests"] = part("CUDA tests", lambda: cuda_tests(out, quick, budget)) or {}
    result["image"] = part("image", lambda: image(out, device, weights, quick)) or {}

    from live.backends import open_backend

    model = load_model(weights, progress=False)
    candidates = ["torch"] + (["tensorrt"] if device.type == "cuda" else [])
    backends = {}
    for name in candidates:
        try:
            backends[name] = open_backend(name, model, str(device))
        except LiveError as e:
            result["problems" if name == "torch" else "skipped"].append(f"{name}: {' '.join(str(e).split())}")
    loop_rows, base_rows = [], []
    record_dir = Path(tempfile.mkdtemp(prefix="gpu-check-rec-"))
    for w, h in sizes:
        dw, dh = round32(w), round32(h)
        for steps in steps_list:
            base: dict[str, float] = {}
            for form, make in (("plain fp32 loop", lambda s=steps: plain_baseline(device, s)),
                               ("best ordinary (frozen, cut, " + ("fp16, CUDA graph)" if device.type == "cuda"
                                                                  else "fp32 eager on CPU)"),
                                lambda s=steps, w=dw, h=dh: best_ordinary_baseline(device, s, (1, 3, h, w)))):
                row = {"form": form, "size": f"{dw}x{dh}", "steps": steps}
                if not budget.allows(30):
                    base_rows.append({**row, "skipped": "(skipped: time budget)"})
                    continue
                fps = part(f"{form} {dw}x{dh}", lambda mk=make, w=dw, h=dh: baseline_fps(mk(), device, w, h, frames))
                if isinstance(fps, float):
                    row["fps"] = round(fps, 2)
                    base["plain" if form.startswith("plain") else "best"] = fps
                base_rows.append(row)
            for name, backend in backends.items():
                for record in (None, record_dir / f"{name}-{dw}x{dh}-{steps}.mp4"):
                    row = {"backend": backend.describe(), "size": f"{dw}x{dh}", "steps": steps,
                           "outputs": "recorder" if record else "off"}
                    if not budget.allows(60 if name == "tensorrt" else 20):
                        loop_rows.append({**row, "skipped": "skipped: time budget"})
                        continue
                    measured = part(f"loop {name} {dw}x{dh} x{steps}",
                                    lambda b=backend, r=record, s=steps, w=dw, h=dh: live_loop(model, b, w, h, s,
                                                                                               frames, r))
                    if isinstance(measured, dict):
                        row.update(measured)
                        if "plain" in base:
                            row["vs_plain"] = round(row["fps"] / base["plain"], 2)
                        if "best" in base:
                            row["vs_best_ordinary"] = round(row["fps"] / base["best"], 2)
                    else:
                        row["error"] = "failed (see problems)"
                    loop_rows.append(row)
    shutil.rmtree(record_dir, ignore_errors=True)
    result["loop"], result["baselines"] = loop_rows, base_rows

    cos_backends = ["torch", "onnx"] + (["tensorrt"] if "tensorrt" in backends else [])
    if device.type == "cuda":
        try:
            import onnxruntime

            providers, version = onnxruntime.get_available_providers(), onnxruntime.__version__
        except ImportError:
            providers, version = [], "(not installed)"
        if "CUDAExecutionProvider" not in providers:
            cos_backends.remove("onnx")
            result["skipped"].append(f"onnx: onnxruntime {version} has no CUDA provider")
    result["cosine_backends"] = cos_backends
    models = {"torchvision": model}
    if "bvlc" in cos_models:
        models["bvlc"] = load_model(weights, model="bvlc", progress=False)
    per_item = 90 if "tensorrt" in cos_backends else 10
    result["cosines"] = part("cosines", lambda: cosines(models, cos_backends, cos_layers, device, cos_size, budget,
                                                        per_item)) or []
    result["targets"] = _verdicts(result, sizes) if not quick else {"(quick CPU run)": "targets apply to a GPU run"}
    result["seconds"] = round(time.monotonic() - t0, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="where gpu-check.json and gpu-check.md are written")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for the reduced run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few frames (the test suite's run)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check (default: 450)")
    parser.add_argument("--weights", default="random:0", help="weights for both models (default: random:0; speed "
                        "does not depend on them, cosines do a little)")
    parser.add_argument("--frames", type=int, default=None, help="frames timed per loop run (default: 60, quick 3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device visible to PyTorch {torch.__version__} "
              f"(CUDA build: {torch.version.cuda or 'no'}); nothing to check here (--device cpu --quick runs the "
              "reduced CPU check)")
        return EX_UNAVAILABLE
    engines = os.environ.get("DEEPDREAM_LIVE_ENGINES")
    with tempfile.TemporaryDirectory(prefix="gpu-check-engines-") as tmp:
        os.environ.setdefault("DEEPDREAM_LIVE_ENGINES", tmp)  # plans of this run only, unless told otherwise
        try:
            result = run_check(args.outdir, device, args.quick, args.budget, args.weights, args.frames)
        finally:
            if engines is None:
                os.environ.pop("DEEPDREAM_LIVE_ENGINES", None)
    (args.outdir / "gpu-check.json").write_text(json.dumps(result, indent=2) + "\n")
    text = table(result)
    (args.outdir / "gpu-check.md").write_text(text)
    print(text)
    tests = result.get("tests", {})
    failed = tests.get("failures", 0) or tests.get("errors", 0) or "error" in tests or result["problems"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
