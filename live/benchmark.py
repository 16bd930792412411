"""Benchmarks a site can run (``deepdream-live bench``) and the ``bench/`` scripts share.

Every figure is printed beside a baseline measured in the same run: the plain PyTorch
DeepDream loop (whole GoogLeNet with a forward hook, fp32, weights requiring grad,
``loss.backward()``) - what a DeepDream script usually is.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from live.app import LiveLoop, round32
from live.backends import Backend, open_backend
from live.control.params import Registry
from live.model import Model, load_model
from live.model.weights import random_reference
from live.outputs import Fanout, NullOutput
from live.sources import Frame, Status
from live.sources.testscene import test_scene

log = logging.getLogger(__name__)


def plain_loop(layer: str, device: torch.device, seed: int = 0) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """A typical DeepDream script's steps: full network, hook, weights requiring grad, backward()."""
    net = random_reference(seed).to(device).float().eval().requires_grad_(True)
    captured: dict[str, torch.Tensor] = {}
    getattr(net, layer).register_forward_hook(lambda m, i, o: captured.__setitem__("act", o))

    def steps(x: torch.Tensor, n: int) -> torch.Tensor:
        for _ in range(n):
            x = x.detach().requires_grad_(True)
            net(x)
            loss = captured["act"].pow(2).mean()
            net.zero_grad(set_to_none=True)
            loss.backward()
            g = x.grad
            x = (x + 0.01 * g / (g.abs().mean() + 1e-8)).clamp(-1, 1)
        return x.detach()

    return steps


class PullSource:
    """Frames made on demand, one per ``latest()``: the benchmark measures the loop, not a camera
    thread competing for the same cores. ``make(i)`` returns BGR frame ``i`` or None at the end."""

    dropped = 0

    def __init__(self, make: Callable[[int], np.ndarray | None], name: str) -> None:
        self.make, self.name, self.n, self.status = make, name, 0, Status.LIVE

    def latest(self, timeout: float = 0.0) -> Frame | None:
        image = self.make(self.n)
        if image is None:
            self.status = Status.ENDED
            return None
        self.n += 1
        return Frame(image, time.monotonic(), self.n)

    def describe(self) -> str:
        return self.name


def scene_source(width: int, height: int, fps: float = 30.0) -> PullSource:
    return PullSource(lambda i: cv2.cvtColor(test_scene(width, height, i / fps), cv2.COLOR_RGB2BGR), "test scene")


def clip_source(path: Path) -> PullSource:
    """Decodes ``path`` frame by frame, looping, as a camera would deliver it."""
    video = cv2.VideoCapture(str(path))

    def make(i: int) -> np.ndarray | None:
        ok, frame = video.read()
        if not ok:
            video.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = video.read()
        return frame if ok else None

    return PullSource(make, "clip")


def write_clip(path: Path, width: int, height: int, frames: int = 90, fps: float = 30.0) -> Path:
    """A real mp4v file of the test scene, for the clip benchmark."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(frames):
        writer.write(cv2.cvtColor(test_scene(width, height, i / fps), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@dataclass
class LoopFigures:
    source: str
    size: str
    steps: int
    fps: float
    latency_ms: float
    outside_dream: float  # share of frame time not in the dream step
    breakdown: str


def run_loop(model: Model, backend: Backend, source: PullSource, width: int, height: int, steps: int,
             frames: int, layer: str, outputs: Fanout | None = None) -> LoopFigures:
    """The real LiveLoop, headless (or into ``outputs``), for ``frames`` frames after a warm-up of 3."""
    registry = Registry()
    registry.update({"width": width, "height": height, "steps": steps, "objective": layer, "fps_cap": 240,
                     "octaves": 1})
    outputs = outputs or Fanout([NullOutput()])
    outputs.open(width, height, 240)
    loop = LiveLoop(source, model, backend, registry, outputs, seed=0, status_every=3600)  # type: ignore[arg-type]
    loop.run(max_frames=3)  # warm-up: cuDNN autotuning, CUDA graph capture, allocator
    report = loop.run(max_frames=frames)
    return LoopFigures(source.describe(), f"{width}x{height}", steps, report.fps, report.latency_ms,
                       1.0 - report.dream_share, report.breakdown)


def median_seconds(call: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``call()`` over ``repeats`` runs after one warm-up, GPU work included."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    call()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def plain_fps(layer: str, device: torch.device, width: int, height: int, steps: int, frames: int) -> float:
    """Frames per second of the plain loop dreaming ``steps`` steps per frame at this size."""
    plain = plain_loop(layer, device)
    x = torch.rand(1, 3, height, width, device=device) * 2 - 1
    return 1.0 / median_seconds(lambda: plain(x, steps), frames, device)


def loop_benchmark(
    sizes: list[tuple[int, int]] | None = None,
    steps: int | None = None,
    frames: int = 20,
    layer: str = "inception4c",
    weights: str = "random",
    backend_name: str = "auto",
    device: str = "auto",
    precision: str | None = None,
) -> list[dict]:
    """The whole live loop (test scene and a clip) against the plain loop, per size; prints a table."""
    model = load_model(weights, progress=False)
    backend = open_backend(backend_name, model, device, precision=precision)
    cuda = backend.device.type == "cuda"
    sizes = sizes or ([(1280, 720), (1920, 1080)] if cuda else [(320, 180)])
    steps = steps or (4 if cuda else 2)
    rows = []
    print(f"live loop, {backend.describe()}, {steps} steps/frame at {layer}, one octave, {frames} frames")
    print(f"{'size':>10} {'source':>12} {'fps':>7} {'plain fps':>10} {'x plain':>8} {'latency':>13} {'outside dream':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in sizes:
            dw, dh = round32(w), round32(h)
            base = plain_fps(layer, backend.device, dw, dh, steps, max(3, frames // 4))
            clip = write_clip(Path(tmp) / f"clip-{w}x{h}.mp4", w, h)
            for source in (scene_source(w, h), clip_source(clip)):
                f = run_loop(model, backend, source, w, h, steps, frames, layer)
                latency_frames = f.latency_ms / (1e3 / f.fps)
                print(f"{dw:>5}x{dh:<4} {f.source[:12]:>12} {f.fps:>7.2f} {base:>10.2f} {f.fps / base:>7.2f}x "
                      f"{f.latency_ms:>6.0f} ms {latency_frames:>3.1f}f {100 * f.outside_dream:>13.1f}%")
                print(f"{'':>10} {f.breakdown}")
                rows.append({**f.__dict__, "plain_fps": base, "vs_plain": f.fps / base, "latency_frames": latency_frames,
                             "backend": backend.describe()})
    if cuda:
        print("(on CUDA the dream runs asynchronously: its GPU time shows under 'download')")
    return rows
