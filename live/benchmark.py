"""Benchmarks a site can run (``deepdream-live bench``) and the ``bench/`` scripts share.

Every figure is printed beside baselines measured in the same run, each named for what it is
(docs/architecture.md, "Frame budget"):

- **naive loop**: what a DeepDream script usually is - the whole GoogLeNet with a forward hook on
  the layer, fp32, weights requiring grad, ``loss.backward()`` (it computes every weight's
  gradient and throws them away). :func:`plain_loop`.
- **frozen loop**: the same with the weights frozen and ``torch.autograd.grad`` for the input only.
  :func:`frozen_loop`.
- **best ordinary loop**: what a competent user writes - frozen, the network cut at the layer
  (nothing past it is computed), channels-last on the CPU; on CUDA fp16 with the steps captured
  as one CUDA graph. :func:`best_ordinary_loop`. The README's headline ratios are against this.

Per-step ratios (one gradient step) and per-shown-frame ratios (the whole live loop, frames
out per second) are separate figures. A shown frame of an ordinary loop is one camera frame
dreamed from scratch with N steps; the project's spends fewer steps per frame and carries the
dream over with feedback, so per-frame figures also print the *dream strength* they reached:
the objective of the shown frame divided by that of the camera frame it came from, evaluated by
the same network and weights (:class:`StrengthMeter`).

Runs are counted in frames, not seconds: a warm-up of 60 frames (2 s of a 30 fps camera) before
anything is measured, so the figures repeat from run to run and machine to machine.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from live.app import LiveLoop, round32
from live.backends import Backend, open_backend
from live.control.params import Registry
from live.gpu_timing import GPU_STAGES
from live.model import Model
from live.model.googlenet import TORCHVISION_SPACE, DreamNet, InputSpace, TorchvisionGoogLeNet, fold_batchnorm
from live.model.weights import load_reference, random_reference
from live.objectives import Objective
from live.outputs import Fanout, Output
from live.sources import Frame, Source, Status
from live.sources.base import Pacer
from live.sources.testscene import test_scene

log = logging.getLogger(__name__)

WARMUP_FRAMES = 60  # 2 s of a 30 fps camera: the feedback has settled by then
# The show's frame-rate ceiling (the registry's largest fps_cap), applied alike to the project's
# loop and to every ordinary loop it is compared with: a ratio never counts one side's cap.
FPS_CAP = 240.0
ORDINARY_STEPS = 4  # what an ordinary live loop dreams per frame (the reference)
StepsFn = Callable[[Tensor, int], Tensor]


# ----------------------------------------------------------------------------- baselines
def _ordinary_ascent(grad: Callable[[Tensor], Tensor], step: float, jitter: int, lo: float, hi: float,
                     seed: int) -> StepsFn:
    """The ascent an ordinary script writes around ``grad``: roll, normalised step, unroll, clamp."""
    gen = torch.Generator().manual_seed(seed)

    def steps(x: Tensor, n: int) -> Tensor:
        for _ in range(n):
            if jitter:
                dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=gen)).tolist()
                x = torch.roll(x, (dy, dx), dims=(-2, -1))
            g = grad(x)
            x = x.detach() + step * g / (g.abs().mean() + 1e-8)
            if jitter:
                x = torch.roll(x, (-dy, -dx), dims=(-2, -1))
            x = x.clamp(lo, hi)
        return x.detach()

    return steps


def _reference(reference: TorchvisionGoogLeNet | None, seed: int) -> TorchvisionGoogLeNet:
    return copy.deepcopy(reference) if reference is not None else random_reference(seed)


def plain_loop(layer: str, device: torch.device, seed: int = 0, *, reference: TorchvisionGoogLeNet | None = None,
               step: float = 0.01, jitter: int = 0) -> StepsFn:
    """The naive loop: full network, hook, weights requiring grad, ``loss.backward()``."""
    net = _reference(reference, seed).to(device).float().eval().requires_grad_(True)
    captured: dict[str, Tensor] = {}
    getattr(net, layer).register_forward_hook(lambda m, i, o: captured.__setitem__("act", o))

    def grad(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        net(x)
        loss = captured["act"].pow(2).mean()
        net.zero_grad(set_to_none=True)
        loss.backward()
        return x.grad

    return _ordinary_ascent(grad, step, jitter, -1.0, 1.0, seed)


def frozen_loop(layer: str, device: torch.device, seed: int = 0, *, reference: TorchvisionGoogLeNet | None = None,
                step: float = 0.01, jitter: int = 0) -> StepsFn:
    """The ordinary loop with frozen weights: full network and hook, ``autograd.grad`` for the input only."""
    net = _reference(reference, seed).to(device).float().eval().requires_grad_(False)
    captured: dict[str, Tensor] = {}
    getattr(net, layer).register_forward_hook(lambda m, i, o: captured.__setitem__("act", o))

    def grad(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        net(x)
        (g,) = torch.autograd.grad(captured["act"].pow(2).mean(), x)
        return g

    return _ordinary_ascent(grad, step, jitter, -1.0, 1.0, seed)


def ordinary_trunk(reference: TorchvisionGoogLeNet, layer: str) -> nn.Sequential:
    """The network cut at ``layer`` the way a user cuts torchvision's GoogLeNet: its modules in
    order, up to and including the layer, batch-norm left as it is."""
    modules = []
    for attribute, name in DreamNet.SEQUENCE:
        modules.append(getattr(reference, attribute))
        if name == layer:
            return nn.Sequential(*modules)
    raise ValueError(f"{layer!r} is not a layer of the torchvision GoogLeNet")


def cut_loop(layer: str, device: torch.device, seed: int = 0, *, reference: TorchvisionGoogLeNet | None = None,
             step: float = 0.01, jitter: int = 0) -> StepsFn:
    """Frozen and cut at the layer, but in PyTorch's default (NCHW) layout: the best ordinary
    loop without channels-last, to show what the layout alone is worth (per-step table only)."""
    trunk = ordinary_trunk(_reference(reference, seed), layer).eval().requires_grad_(False).to(device)

    def grad(x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(trunk(x).pow(2).mean(), x)
        return g

    return _ordinary_ascent(grad, step, jitter, -1.0, 1.0, seed)


def best_ordinary_loop(layer: str, device: torch.device, seed: int = 0, *,
                       reference: TorchvisionGoogLeNet | None = None, step: float = 0.01, jitter: int = 0) -> StepsFn:
    """The best ordinary form: frozen, cut at the layer, channels-last on the CPU; on CUDA fp16 with
    the ``n`` steps captured as one CUDA graph per (shape, n) (no jitter there: ``torch.roll``
    needs host shifts, which a graph cannot take)."""
    trunk = ordinary_trunk(_reference(reference, seed), layer).eval().requires_grad_(False)
    if device.type == "cuda":
        return _graphed_fp16(trunk.to(device).half(), step)
    trunk = trunk.to(device, memory_format=torch.channels_last)

    def grad(x: Tensor) -> Tensor:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        (g,) = torch.autograd.grad(trunk(x).pow(2).mean(), x)
        return g

    return _ordinary_ascent(grad, step, jitter, -1.0, 1.0, seed)


def _graphed_fp16(trunk: nn.Module, step: float) -> StepsFn:  # pragma: no cover - needs CUDA
    graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}

    def run(x: Tensor, n: int) -> Tensor:
        for _ in range(n):
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(trunk(xg).float().pow(2).mean(), xg)
            x = (x + step * g / (g.abs().mean() + 1e-4)).clamp(-1, 1)
        return x

    def steps(x: Tensor, n: int) -> Tensor:
        key = (tuple(x.shape), n)
        if key not in graphs:
            static_in = x.detach().half().clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up outside the capture, as torch.cuda.graph asks
                    run(static_in.clone(), n)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = run(static_in, n)
            graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out.float()

    return steps


def project_steps(backend: Backend, objective: Objective, step: float = 0.01, jitter: int = 0) -> StepsFn:
    """This project's ascent through ``backend``, as a ``steps(x, n)`` like the baselines."""
    step_t = torch.full((1, 3, 1, 1), step, device=backend.device)
    lo, hi = -torch.ones_like(step_t), torch.ones_like(step_t)
    gen = torch.Generator().manual_seed(0)

    def steps(x: Tensor, n: int) -> Tensor:
        return backend.ascend(x, objective, n, step_t, jitter, lo, hi, gen if backend.device.type == "cpu" else None)

    return steps


BASELINES: dict[str, Callable[..., StepsFn]] = {
    "naive": plain_loop,
    "frozen": frozen_loop,
    "best ordinary": best_ordinary_loop,
}
BASELINE_HELP = {
    "naive": "whole network + hook, weights requiring grad, backward()",
    "frozen": "whole network + hook, weights frozen, autograd.grad for the input",
    "best ordinary": "frozen, cut at the layer, channels-last (CUDA: fp16 + CUDA graph)",
}


# ----------------------------------------------------------------------------- dream strength
class StrengthMeter:
    """Dream strength: objective(shown frame) / objective(camera frame), both scored by the same
    network and weights at the dream size (frames of another size are resized with INTER_AREA)."""

    def __init__(self, model: Model, objective: Objective | str, dream_size: tuple[int, int]) -> None:
        self.model = model
        self.objective = objective if isinstance(objective, Objective) else Objective.parse(objective)
        self.dream_size = dream_size
        self._weights = {name: torch.from_numpy(self.objective.weights(name)) for name in self.objective.layers}

    @torch.no_grad()
    def score(self, bgr: np.ndarray) -> float:
        """The objective of one BGR uint8 frame."""
        if (bgr.shape[1], bgr.shape[0]) != self.dream_size:
            bgr = cv2.resize(bgr, self.dream_size, interpolation=cv2.INTER_AREA)
        rgb01 = torch.from_numpy(np.ascontiguousarray(bgr)).permute(2, 0, 1).flip(0)[None].float() / 255.0
        acts = self.model.net(self.model.space.to_model(rgb01), self.objective.layers)
        return float(sum((a.square().mean(dim=(0, 2, 3)) * self._weights[n]).sum() for n, a in acts.items()))

    def strength(self, shown: Sequence[np.ndarray], cameras: Sequence[np.ndarray]) -> float:
        """Mean over frames of objective(shown) / objective(camera)."""
        if not shown or len(shown) != len(cameras):
            raise ValueError(f"strength needs as many shown frames as camera frames, got {len(shown)} and {len(cameras)}")
        return statistics.fmean(self.score(s) / max(self.score(c), 1e-12) for s, c in zip(shown, cameras))


def flicker(frames: Sequence[np.ndarray]) -> float:
    """Mean absolute frame-to-frame change, in grey levels (0..255)."""
    if len(frames) < 2:
        return 0.0
    return statistics.fmean(float(cv2.absdiff(a, b).mean()) for a, b in zip(frames, frames[1:]))


# ----------------------------------------------------------------------------- sources
class PullSource:
    """Frames made on demand, one per ``latest()``: the benchmark measures the loop, not a camera
    thread competing for the same cores. ``make(i)`` returns BGR frame ``i`` or None at the end.
    With ``record`` set, every frame handed out is appended to it (to pair shown and camera frames)."""

    dropped = 0
    size = None

    def __init__(self, make: Callable[[int], np.ndarray | None], name: str) -> None:
        self.make, self.name, self.n, self.status = make, name, 0, Status.LIVE
        self.record: list[np.ndarray] | None = None

    def latest(self, timeout: float = 0.0) -> Frame | None:
        image = self.make(self.n)
        if image is None:
            self.status = Status.ENDED
            return None
        self.n += 1
        if self.record is not None:
            self.record.append(image)
        return Frame(image, time.monotonic(), self.n)

    def describe(self) -> str:
        return self.name


SCENE_FRAMES = 24  # frames of the test scene drawn ahead (0.8 s of motion at 30 fps, played to and fro)


def scene_frames(width: int, height: int, frames: int = SCENE_FRAMES, fps: float = 30.0) -> list[np.ndarray]:
    """The test scene as BGR frames, drawn now: a loop measured on them pays nothing for drawing."""
    return [test_scene(width, height, i / fps, bgr=True) for i in range(frames)]


def scene_source(width: int, height: int, fps: float = 30.0, frames: int = SCENE_FRAMES) -> PullSource:
    """The test scene as a camera, pre-rendered (:func:`scene_frames`) and played to and fro, so
    drawing it costs the loop under measurement nothing."""
    return frames_source(scene_frames(width, height, frames, fps), "test scene")


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


def frames_source(frames: Sequence[np.ndarray], name: str) -> PullSource:
    """Frames held in memory, played forwards then backwards (no jump for the scene-cut detector),
    so decoding or drawing them costs the measured loop nothing."""
    period = max(2 * len(frames) - 2, 1)

    def make(i: int) -> np.ndarray:
        k = i % period
        return frames[k if k < len(frames) else period - k]

    return PullSource(make, name)


def write_clip(path: Path, width: int, height: int, frames: int = 90, fps: float = 30.0) -> Path:
    """A real mp4v file of the test scene, for the clip benchmark."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(frames):
        writer.write(cv2.cvtColor(test_scene(width, height, i / fps), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def photo() -> np.ndarray | None:
    """A real street photograph (scikit-image's motorcycle_left.png, 741x500, BGR), or None when
    scikit-image (the test extra) is not installed."""
    try:
        from importlib.resources import files

        path = Path(str(files("skimage") / "data" / "motorcycle_left.png"))
    except ModuleNotFoundError:
        return None
    image = cv2.imread(str(path))
    return image


def write_panning_clip(path: Path, width: int, height: int, frames: int = 90, step: int = 4,
                       fps: float = 30.0) -> tuple[Path, str]:
    """A real photograph panned ``step`` px a frame (to and fro), encoded as mp4v: a camera
    sweeping a street. Without scikit-image, the test scene stands in (said in the name)."""
    picture = photo()
    if picture is None:
        log.warning("scikit-image is not installed (pip install -e '.[test]'): the panning clip is the test scene")
        return write_clip(path, width, height, frames, fps), "test-scene clip"
    ph, pw = picture.shape[:2]
    scale = max(height * 1.1 / ph, (width + 48 * step) / pw)
    picture = cv2.resize(picture, (round(pw * scale), round(ph * scale)), interpolation=cv2.INTER_CUBIC)
    room = picture.shape[1] - width
    top = (picture.shape[0] - height) // 2
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for i in range(frames):
        k = (i * step) % (2 * room)
        x = k if k <= room else 2 * room - k
        writer.write(np.ascontiguousarray(picture[top : top + height, x : x + width]))
    writer.release()
    return path, "panning photo clip"


def decode(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """Every frame of a clip, decoded once."""
    video = cv2.VideoCapture(str(path))
    frames = []
    while (limit is None or len(frames) < limit) and (got := video.read())[0]:
        frames.append(got[1])
    video.release()
    return frames


# ----------------------------------------------------------------------------- the live loop, timed
class _Keep(Output):
    """Headless output that keeps the frames sent while ``keeping`` is on."""

    def __init__(self) -> None:
        super().__init__("benchmark")
        self.keeping = False
        self.frames: list[np.ndarray] = []
        self.size: tuple[int, int] | None = None
        self.last_size = ""  # of the last frame sent: what the loop really shows

    def open(self, width: int, height: int, fps: float) -> None:
        self.size = (width, height)

    def send(self, frame: np.ndarray) -> None:
        self.sent += 1
        self.last_size = f"{frame.shape[1]}x{frame.shape[0]}"
        if self.keeping:
            self.frames.append(frame)

    def close(self) -> None:
        pass


@dataclass
class LoopFigures:
    source: str
    size: str  # the dream size
    steps: int
    fps: float
    latency_ms: float
    outside_dream: float  # share of frame time not in the dream step
    breakdown: str
    output: str = ""  # the output size
    strength: float | None = None  # objective(shown) / objective(camera), when measured
    flicker: float | None = None  # mean |frame-to-frame change| of the shown frames, grey levels
    camera_flicker: float | None = None  # the same of the camera frames (motion, for reference)
    values: dict[str, Any] = field(default_factory=dict)  # the registry values the loop ran with
    cpu_fps: float | None = None  # frames per second of this process's CPU time (steadier on a busy machine)
    # GPU time per stage of both paces from CUDA events, "upload 0.1 dream 9.8 carry 0.0 ... ms/frame" ("" off CUDA)
    gpu_breakdown: str = ""


class ProjectRun:
    """The real LiveLoop, headless, warmed up and then advanced in chunks (:meth:`advance`), so
    several runs can take turns on a machine whose load drifts. See :func:`run_loop`."""

    def __init__(self, model: Model, backend: Backend, source: PullSource, width: int, height: int,
                 steps: int | None, layer: str, *, warmup: int = 3, look: Mapping[str, Any] | None = None,
                 output_size: tuple[int, int] | None = None, meter: StrengthMeter | None = None,
                 seed: int = 0, outputs: Sequence[Output] = ()) -> None:
        self.registry = Registry()
        values: dict[str, Any] = {"octaves": 1} if look is None else dict(look)
        values.update({"width": width, "height": height, "objective": layer, "fps_cap": FPS_CAP})
        if steps is not None:
            values["steps"] = steps
        self.registry.update(values)
        self.keep = _Keep()
        fanout = Fanout([self.keep, *outputs])  # ``outputs``: more to feed, e.g. a recorder (make gpu-check)
        fanout.open(*(output_size or (width, height)), FPS_CAP)
        self.source, self.meter, self.dream = source, meter, f"{round32(width)}x{round32(height)}"
        # present="dream": every frame out is a dreamed one, in step with the dreamer, so figures are
        # per dreamed frame and runs of the same frames compare (bench/two_paces.py times the camera's pace)
        self.loop = LiveLoop(source, model, backend, self.registry, fanout, seed=seed,  # type: ignore[arg-type]
                             status_every=3600, output_size=output_size, present="dream")
        self.loop.run(max_frames=warmup)  # feedback settles; cuDNN autotuning, CUDA graph capture, allocator
        self.frames, self.seconds, self.latency, self.cpu_seconds = 0, 0.0, 0.0, 0.0
        self.stages: dict[str, float] = {}
        # GPU seconds per stage (CUDA events) and the frames or dreams they were measured over
        self.gpu_stages: dict[str, tuple[float, int]] = {}
        self.cameras: list[np.ndarray] = []

    def advance(self, n: int) -> None:
        """Run ``n`` more timed frames."""
        if self.meter is not None:
            self.keep.keeping, self.source.record = True, self.cameras
        c0 = time.process_time()
        report = self.loop.run(max_frames=n)
        self.cpu_seconds += time.process_time() - c0
        self.source.record, self.keep.keeping = None, False
        self.frames += report.frames
        self.seconds += report.seconds
        self.latency += report.latency_ms * report.frames
        for stage, t in self.loop.stage_totals().items():
            self.stages[stage] = self.stages.get(stage, 0.0) + t
        for clock in (self.loop.clock, self.loop.dream_clock):  # the presenter's per frame, the dreamer's per dream
            for stage, t in clock.gpu.items():
                total, count = self.gpu_stages.get(stage, (0.0, 0))
                self.gpu_stages[stage] = (total + t, count + clock.gpu_frames)

    def figures(self) -> LoopFigures:
        n = max(self.frames, 1)
        fps = self.frames / max(self.seconds, 1e-9)
        total = sum(self.stages.values())
        breakdown = " ".join(f"{s} {1e3 * t / n:.1f}" for s, t in self.stages.items()) + " ms/frame"
        # in dream mode every frame out is one dream, so both paces' stages are per frame
        gpu = " ".join(f"{s} {1e3 * self.gpu_stages[s][0] / max(self.gpu_stages[s][1], 1):.1f}"
                       for s in GPU_STAGES if s in self.gpu_stages)
        gpu = gpu + " ms/frame" if gpu else ""
        snap = self.registry.snapshot()
        f = LoopFigures(self.source.describe(), self.dream, snap.steps, fps, self.latency / n,
                        1.0 - (self.stages.get("dream", 0.0) / total if total else 0.0), breakdown,
                        self.keep.last_size,
                        values={k: snap[k] for k in ("steps", "feedback", "step_size", "octaves", "jitter")},
                        cpu_fps=self.frames / max(self.cpu_seconds, 1e-9), gpu_breakdown=gpu)
        shown = self.keep.frames[: len(self.cameras)]
        if self.meter is not None and shown:
            f.strength = self.meter.strength(shown, self.cameras)
            f.flicker = flicker(shown)
            f.camera_flicker = flicker(self.cameras)
        return f


def run_loop(model: Model, backend: Backend, source: PullSource, width: int, height: int, steps: int | None,
             frames: int, layer: str, *, warmup: int = 3, look: Mapping[str, Any] | None = None,
             output_size: tuple[int, int] | None = None, meter: StrengthMeter | None = None,
             seed: int = 0, outputs: Sequence[Output] = ()) -> LoopFigures:
    """The real LiveLoop, headless, for ``frames`` frames after a warm-up of ``warmup``.

    ``look``: registry values to run with (default: one octave, everything else the registry's
    defaults); ``steps`` overrides the look's steps unless None. ``output_size``: what frames go
    out at (default: the source's own). With a ``meter``, dream strength and flicker are measured
    over the timed frames. ``outputs``: opened here and fed every shown frame too (closing them is
    the caller's).
    """
    run = ProjectRun(model, backend, source, width, height, steps, layer, warmup=warmup, look=look,
                     output_size=output_size, meter=meter, seed=seed, outputs=outputs)
    run.advance(frames)
    return run.figures()


# ----------------------------------------------------------------------------- the two paces, in real time
class PacedFrames(Source):
    """Frames from memory published in real time at ``fps`` on the source's own thread, as a camera
    delivers them (its decoding costs nothing here), played forwards then backwards so the motion
    never jumps. Remembers which frame each capture time was (``index_at``) and every publication."""

    def __init__(self, frames: Sequence[np.ndarray], fps: float, name: str = "paced clip") -> None:
        super().__init__(name, placeholder_size=(frames[0].shape[1], frames[0].shape[0]))
        self.frames, self.fps = list(frames), fps
        self.index_at: dict[float, int] = {}
        self.published: list[tuple[float, int]] = []

    def describe(self) -> str:
        return f"{self.name} {self.frames[0].shape[1]}x{self.frames[0].shape[0]} @ {self.fps:g} fps"

    def frame(self, index: int) -> np.ndarray:
        """The picture of clip position ``index`` (forwards, then backwards)."""
        period = max(2 * len(self.frames) - 2, 1)
        k = index % period
        return self.frames[k if k < len(self.frames) else period - k]

    def _open(self) -> None:
        pass

    def _run(self) -> None:
        pacer, i = Pacer(self.fps), 0
        while pacer.wait(self._stop):
            stamp = time.monotonic()
            self.index_at[stamp] = i
            self.published.append((stamp, i))
            self._publish(self.frame(i), stamp)
            i += 1


class _Timeline(Output):
    """Every frame's capture time and send time; the frames themselves for ``keep`` of them, the
    first sent ``after`` seconds or more into the run (a window to judge, full size)."""

    def __init__(self, after: float = 0.0, keep: int = 0) -> None:
        super().__init__("timeline")
        self.after, self.keep = after, keep
        self.started = time.monotonic()
        self.times: list[tuple[float, float]] = []
        self.kept: list[tuple[float, np.ndarray]] = []
        self.repeats = 0
        self._last: np.ndarray | None = None

    def open(self, width: int, height: int, fps: float) -> None:
        self.size, self.fps = (width, height), fps

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        self.times.append((float(timestamp if timestamp is not None else time.monotonic()), time.monotonic()))
        if self._last is not None and frame is not self._last and np.array_equal(frame, self._last):
            self.repeats += 1
        elif self._last is not None and frame is self._last:
            self.repeats += 1
        self._last = frame
        if len(self.kept) < self.keep and self.times[-1][1] - self.started >= self.after:
            self.kept.append((self.times[-1][0], frame.copy()))
        self.sent += 1

    def close(self) -> None:
        pass


@dataclass
class PacedFigures:
    """One run of the show against a paced camera (:func:`paced_run`)."""

    present: str
    seconds: float
    presented: int
    delivered: int  # frames the camera made from the first presented one to the last
    dreams: int
    dream_fps: float
    latency_ms: list[float]  # capture to sent, every frame out
    dream_age_ms: float | None
    repeats: int  # frames out identical to the one before
    period: float  # the camera's frame period (s)
    breakdown: str
    presenter_cpu_s: float  # CPU time of the presenter's thread
    process_cpu_s: float
    gpu_breakdown: str = ""  # both paces' GPU time per stage from CUDA events ("" off CUDA)
    kept: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (clip index, frame out)
    sent_at: list[tuple[int, float]] = field(default_factory=list)  # (clip index shown, send time)
    published: list[tuple[float, int]] = field(default_factory=list)

    @property
    def presented_share(self) -> float:
        return self.presented / max(self.delivered, 1)

    def latency_frames(self, q: float) -> float:
        ordered = sorted(self.latency_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / (1e3 * self.period) if ordered else math.nan


def paced_run(model: Model, backend: Backend, source: PacedFrames, dream: tuple[int, int], seconds: float,
              present: str, *, look: Mapping[str, Any] | None = None, judge_after: float = 0.0, keep: int = 0,
              loop: LiveLoop | None = None, outputs: Sequence[Output] = (), rate: float | None = None,
              stop: threading.Event | None = None, reprojector: Any = None,
              seed: int = 0) -> tuple[PacedFigures, LiveLoop]:
    """The real show (both paces, threads and all) for ``seconds`` (or until ``stop``) against
    ``source`` (started here if it is not yet), headless, outputs at the source's size, opened at
    ``rate`` (default: the source's) along with ``outputs``. ``loop``: continue an earlier run's
    show (warm: feedback, caches). ``reprojector``: carry the dream with this one instead.
    Returns the figures and the loop."""
    timeline = _Timeline(judge_after, keep)
    fanout = Fanout([timeline, *outputs])
    fanout.open(source.frames[0].shape[1], source.frames[0].shape[0], rate or source.fps)
    if loop is None:
        registry = Registry()
        values: dict[str, Any] = dict(look or {})
        values.update({"width": dream[0], "height": dream[1], "fps_cap": 240})
        registry.update(values)
        loop = LiveLoop(source, model, backend, registry, fanout, seed=seed, status_every=3600, present=present)
    else:
        loop.outputs = loop.presenter.outputs = fanout
    if reprojector is not None:
        loop.presenter.reprojector = reprojector
    if source.status != Status.LIVE:
        source.start()
    t0, c0 = time.thread_time(), time.process_time()
    report = loop.run(stop, duration=seconds)
    presenter_cpu, process_cpu = time.thread_time() - t0, time.process_time() - c0
    indices = [source.index_at[ts] for ts, _ in timeline.times]
    latencies = [1e3 * (sent - ts) for ts, sent in timeline.times]
    figures = PacedFigures(
        present, report.seconds, len(indices), (indices[-1] - indices[0] + 1) if indices else 0, report.dreams,
        report.dream_fps, latencies, report.dream_age_ms, timeline.repeats, 1.0 / source.fps, report.breakdown,
        presenter_cpu, process_cpu, report.gpu_breakdown,
        kept=[(source.index_at[ts], frame) for ts, frame in timeline.kept],
        sent_at=[(source.index_at[ts], sent) for ts, sent in timeline.times],
        published=list(source.published),
    )
    return figures, loop


class OrdinaryRun:
    """An ordinary live loop, as a competent user writes it: each camera frame resized to the dream
    size, dreamed ``n_steps`` from scratch, converted back and shown (at the dream size).
    Advanced in chunks like :class:`ProjectRun`."""

    def __init__(self, steps_fn: StepsFn, source: PullSource, space: InputSpace, dream_size: tuple[int, int],
                 n_steps: int, *, warmup: int = 1, meter: StrengthMeter | None = None) -> None:
        self.steps_fn, self.source, self.space, self.dream_size, self.n_steps = steps_fn, source, space, dream_size, n_steps
        self.meter = meter
        self.shown: list[np.ndarray] = []
        self.cameras: list[np.ndarray] = []
        self.frames, self.seconds, self.cpu_seconds = 0, 0.0, 0.0
        for _ in range(warmup):
            self._one()

    def _one(self) -> tuple[np.ndarray, np.ndarray] | None:
        frame = self.source.latest()
        if frame is None:
            return None
        small = cv2.resize(frame.image, self.dream_size, interpolation=cv2.INTER_AREA)
        rgb01 = torch.from_numpy(small).permute(2, 0, 1).flip(0)[None].float().div_(255.0)
        x = self.steps_fn(self.space.to_model(rgb01).clamp(-1.0, 1.0), self.n_steps)
        pic = self.space.to_picture(x)[0].clamp(0, 1).mul(255).add(0.5).to(torch.uint8)
        return pic.flip(0).permute(1, 2, 0).contiguous().cpu().numpy(), frame.image

    def advance(self, n: int) -> None:
        for _ in range(n):
            started, c0 = time.perf_counter(), time.process_time()
            got = self._one()
            spare = 1.0 / FPS_CAP - (time.perf_counter() - started)
            if spare > 0:
                time.sleep(spare)  # the show's ceiling, as the project's loop keeps it
            self.seconds += time.perf_counter() - started
            self.cpu_seconds += time.process_time() - c0
            if got is None:
                return
            self.frames += 1
            if self.meter is not None:
                self.shown.append(got[0])
                self.cameras.append(got[1])

    def figures(self) -> LoopFigures:
        fps = self.frames / max(self.seconds, 1e-9)
        size = "x".join(map(str, self.dream_size))
        f = LoopFigures(self.source.describe(), size, self.n_steps, fps, 1e3 / max(fps, 1e-9), 0.0, "", size,
                        cpu_fps=self.frames / max(self.cpu_seconds, 1e-9))
        if self.meter is not None and self.shown:
            f.strength = self.meter.strength(self.shown, self.cameras)
            f.flicker = flicker(self.shown)
            f.camera_flicker = flicker(self.cameras)
        return f


def ordinary_live_loop(steps_fn: StepsFn, source: PullSource, space: InputSpace, dream_size: tuple[int, int],
                       n_steps: int, frames: int, *, warmup: int = 1,
                       meter: StrengthMeter | None = None) -> LoopFigures:
    """:class:`OrdinaryRun` for ``frames`` frames after ``warmup``."""
    run = OrdinaryRun(steps_fn, source, space, dream_size, n_steps, warmup=warmup, meter=meter)
    run.advance(frames)
    return run.figures()


def take_turns(runs: Mapping[str, ProjectRun | OrdinaryRun], frames: Mapping[str, int], chunks: int = 10) -> None:
    """Advance every run to its number of frames in ``chunks`` turns, the order rotating, so a
    load that drifts during the benchmark falls on all of them alike."""
    names = list(runs)
    for c in range(chunks):
        for name in names[c % len(names):] + names[: c % len(names)]:
            want = frames[name] * (c + 1) // chunks - frames[name] * c // chunks
            if want:
                runs[name].advance(want)


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


def interleaved_times(calls: Mapping[str, Callable[[], object]], repeats: int,
                      device: torch.device) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall seconds and median process CPU seconds of each call, timed in turns (one of
    each, order rotating) after one warm-up each, so a machine whose load drifts during the run
    biases none of them.

    CPU time counts the work this process did (idle OpenMP threads sleep, so waiting is not in
    it): on a machine other programs keep busy, wall time measures the neighbours as much as the
    loop, and the CPU-time ratio is the steadier figure. On a quiet machine the two agree.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = list(calls)
    for name in names:
        calls[name]()
    sync()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            calls[name]()
            sync()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return ({name: statistics.median(t) for name, t in wall.items()},
            {name: statistics.median(t) for name, t in cpu.items()})


def interleaved_medians(calls: Mapping[str, Callable[[], object]], repeats: int,
                        device: torch.device) -> dict[str, float]:
    """Median wall seconds of each call, timed in turns (see :func:`interleaved_times`)."""
    return interleaved_times(calls, repeats, device)[0]


def plain_fps(layer: str, device: torch.device, width: int, height: int, steps: int, frames: int) -> float:
    """Frames per second of the naive loop dreaming ``steps`` steps per frame at this size."""
    plain = plain_loop(layer, device)
    x = torch.rand(1, 3, height, width, device=device) * 2 - 1
    return 1.0 / median_seconds(lambda: plain(x, steps), frames, device)


# ----------------------------------------------------------------------------- the bench command
def bench_model(weights: str = "random") -> tuple[Model, TorchvisionGoogLeNet]:
    """The project's model and the unfolded network the ordinary loops use: the same weights."""
    reference, info = load_reference(weights, progress=False)
    return Model("torchvision", fold_batchnorm(reference), TORCHVISION_SPACE, info), reference


def _step_in_model_units(model: Model, grey_levels: float) -> float:
    # torchvision's space has the same scale on every channel
    return float(model.space.per_grey_level(torch.zeros(1, 3, 1, 1)).flatten()[0]) * grey_levels


def loop_benchmark(
    sizes: list[tuple[int, int]] | None = None,
    steps: int | None = None,
    frames: int = 20,
    layer: str = "inception4c",
    weights: str = "random",
    backend_name: str = "auto",
    device: str = "auto",
    warmup: int = WARMUP_FRAMES,
    precision: str | None = None,
) -> list[dict]:
    """Per shown frame: the live loop (default look) against the ordinary loops dreaming 4 steps
    per frame, with dream strength; then the cost of output size apart from dream size. Prints
    tables ready for the README; returns the rows."""
    model, reference = bench_model(weights)
    backend = open_backend(backend_name, model, device, precision=precision)
    cuda = backend.device.type == "cuda"
    sizes = sizes or ([(960, 540)] if cuda else [(640, 360)])  # camera sizes; the dream is rounded to 32
    look = {name: p.default for name, p in Registry().params.items() if name in ("steps", "feedback", "step_size",
                                                                                 "octaves", "jitter")}
    if steps is not None:
        look["steps"] = steps
    step = _step_in_model_units(model, look["step_size"])
    rows: list[dict] = []
    threads = f"{torch.get_num_threads()} threads" if not cuda else torch.cuda.get_device_name()
    print(f"Per shown frame: {backend.describe()}, {threads}, {layer}, weights {model.weights.describe()}; "
          f"warm-up {warmup} frames, {frames} timed, the loops taking turns")
    print(f"project: default look {_look(look)}; ordinary loops: {ORDINARY_STEPS} steps/frame from the camera "
          f"frame, same step size and jitter")
    print()
    print("| dream | source | project fps | strength | best ordinary fps | strength | x best ordinary | "
          "x best ordinary, CPU time | frozen fps | x frozen | naive fps | x naive |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for w, h in sizes:
            dw, dh = round32(w), round32(h)
            cam_w, cam_h = w, h
            clip, clip_name = write_panning_clip(Path(tmp) / f"pan-{cam_w}x{cam_h}.mp4", cam_w, cam_h,
                                                 frames=warmup + frames)
            scenes = {clip_name: decode(clip),
                      "test scene": [cv2.cvtColor(test_scene(cam_w, cam_h, i / 30), cv2.COLOR_RGB2BGR)
                                     for i in range(warmup + frames)]}
            meter = StrengthMeter(model, layer, (dw, dh))
            for name, pictures in scenes.items():
                runs: dict[str, ProjectRun | OrdinaryRun] = {
                    "project": ProjectRun(model, backend, frames_source(pictures, name), dw, dh, None, layer,
                                          warmup=warmup, look=look, meter=meter)}
                for kind, make in BASELINES.items():
                    fn = make(layer, backend.device, reference=reference, step=step, jitter=look["jitter"])
                    src = frames_source(pictures, name)
                    for _ in range(warmup - 1):
                        src.latest()  # the same camera frames the project is measured on (one more: warm-up)
                    runs[kind] = OrdinaryRun(fn, src, model.space, (dw, dh), ORDINARY_STEPS,
                                             meter=meter if kind == "best ordinary" else None)
                # the two compared for strength see every timed frame; the slow extra columns fewer
                counts = {k: frames if k in ("project", "best ordinary") else max(4, frames // 4) for k in runs}
                take_turns(runs, counts)
                ours = runs["project"].figures()
                base = {kind: runs[kind].figures() for kind in BASELINES}
                b, f, n = base["best ordinary"], base["frozen"], base["naive"]
                print(f"| {dw}x{dh} | {name} | {ours.fps:.2f} | {ours.strength:.2f} | {b.fps:.2f} | "
                      f"{b.strength:.2f} | **{ours.fps / b.fps:.2f}x** | {ours.cpu_fps / b.cpu_fps:.2f}x | "
                      f"{f.fps:.2f} | {ours.fps / f.fps:.2f}x | {n.fps:.2f} | {ours.fps / n.fps:.2f}x |", flush=True)
                rows.append({"table": "per shown frame", "dream": f"{dw}x{dh}", "source": name,
                             "output": ours.output, "project_fps": ours.fps, "project_strength": ours.strength,
                             "project_flicker": ours.flicker, "look": ours.values,
                             "best_ordinary_fps": b.fps, "best_ordinary_strength": b.strength,
                             "best_ordinary_flicker": b.flicker, "frozen_fps": f.fps, "naive_fps": n.fps,
                             "vs_best_ordinary": ours.fps / b.fps, "vs_frozen": ours.fps / f.fps,
                             "vs_naive": ours.fps / n.fps, "breakdown": ours.breakdown,
                             "gpu_breakdown": ours.gpu_breakdown,
                             "vs_best_ordinary_cpu_time": ours.cpu_fps / b.cpu_fps,
                             "backend": backend.describe()})
        rows += output_size_benchmark(model, backend, sizes[0], look, frames, layer, warmup=min(warmup, 10))
    if cuda:
        print("(on CUDA the host's stage times are launch and wait times; the GPU's own time per stage is in the "
              "rows' gpu breakdown, from CUDA events)")
    return rows


def output_size_benchmark(model: Model, backend: Backend, dream: tuple[int, int], look: Mapping[str, Any],
                          frames: int, layer: str, *, warmup: int = 10,
                          outputs: Sequence[tuple[int, int]] | None = None) -> list[dict]:
    """The cost of outputs larger than the dream: the same camera (the test scene at each output
    size, in memory) shown at the dream size (``--output-size`` = dream size) and at its own size."""
    dw, dh = round32(dream[0]), round32(dream[1])
    cuda = backend.device.type == "cuda"
    outputs = outputs or ([(1920, 1080)] if cuda else [(1280, 720), (1920, 1080)])
    print()
    print(f"Output size apart from dream size: dream {dw}x{dh}, default look, test scene as the camera, "
          f"{frames} frames after {warmup}")
    print()
    print("| camera | output | fps | vs output at dream size | same, CPU time | compose ms/frame | "
          "breakdown (ms/frame) |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for ow, oh in outputs:
        pictures = [cv2.cvtColor(test_scene(ow, oh, i / 30), cv2.COLOR_RGB2BGR) for i in range(24)]
        runs = {label: ProjectRun(model, backend, frames_source(pictures, "test scene"), dw, dh, None, layer,
                                  warmup=warmup, look=look, output_size=size)
                for label, size in (("dream size", (dw, dh)), ("camera's own", None))}
        take_turns(runs, dict.fromkeys(runs, frames))
        figures = {label: run.figures() for label, run in runs.items()}
        small, big = figures["dream size"], figures["camera's own"]
        for label, f in figures.items():
            ratio = f.fps / small.fps
            compose = _stage_ms(f.breakdown, "compose")
            print(f"| {ow}x{oh} | {f.output} ({label}) | {f.fps:.2f} | {100 * ratio:.0f}% | "
                  f"{100 * f.cpu_fps / small.cpu_fps:.0f}% | {compose:.1f} | {f.breakdown.removesuffix(' ms/frame')} |",
                  flush=True)
        rows.append({"table": "output size", "dream": f"{dw}x{dh}", "camera": f"{ow}x{oh}",
                     "fps_output_at_dream_size": small.fps, "fps_output_at_camera_size": big.fps,
                     "ratio": big.fps / small.fps, "ratio_cpu_time": big.cpu_fps / small.cpu_fps,
                     "breakdown_small": small.breakdown,
                     "breakdown_big": big.breakdown, "backend": backend.describe()})
    return rows


def _stage_ms(breakdown: str, stage: str) -> float:
    words = breakdown.split()
    try:
        return float(words[words.index(stage) + 1])
    except (ValueError, IndexError):
        return float("nan")


def _look(look: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in look.items())


# ----------------------------------------------------------------------------- steps across frames
STEPS_GRID = (1, 2, 4)
FEEDBACK_GRID = (0.0, 0.6, 0.8, 0.9)


def steps_across_frames(frames: int = 30, warmup: int = WARMUP_FRAMES, dream: tuple[int, int] = (640, 352),
                        camera: tuple[int, int] = (640, 360), layer: str = "inception4c", weights: str = "random",
                        steps_grid: Sequence[int] = STEPS_GRID, feedback_grid: Sequence[float] = FEEDBACK_GRID,
                        backend_name: str = "auto", device: str = "auto") -> list[dict]:
    """Dream strength, flicker and fps for every (steps, feedback) on a panning clip and a still
    scene; prints one table per scene, ready for the README, and a suggested default."""
    model, _ = bench_model(weights)
    backend = open_backend(backend_name, model, device)
    defaults = {name: p.default for name, p in Registry().params.items()}
    look = {k: defaults[k] for k in ("step_size", "octaves", "jitter")}
    meter = StrengthMeter(model, layer, dream)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        clip, clip_name = write_panning_clip(Path(tmp) / "pan.mp4", *camera, frames=warmup + frames)
        panning = decode(clip)
        scenes = {clip_name: panning, "still photo": [panning[0]]}
        for name, pictures in scenes.items():
            print(f"\n{name}: {backend.describe()}, {torch.get_num_threads()} threads, dream {dream[0]}x{dream[1]}, "
                  f"{layer}, {_look(look)}; warm-up {warmup} frames, {frames} measured; weights "
                  f"{model.weights.describe()}\n")
            print("| steps | feedback | strength | flicker | fps | steps x fps |")
            print("|---|---|---|---|---|---|")
            for s in steps_grid:
                for f in feedback_grid:
                    figures = run_loop(model, backend, frames_source(pictures, name), *dream, s, frames, layer,
                                       warmup=warmup, look={**look, "feedback": f}, meter=meter)
                    rows.append({"scene": name, "steps": s, "feedback": f, "strength": figures.strength,
                                 "flicker": figures.flicker, "camera_flicker": figures.camera_flicker,
                                 "fps": figures.fps, "breakdown": figures.breakdown})
                    print(f"| {s} | {f:g} | {figures.strength:.2f} | {figures.flicker:.2f} | {figures.fps:.2f} | "
                          f"{s * figures.fps:.2f} |", flush=True)
            camera_flicker = rows[-1]["camera_flicker"]
            print(f"(the camera's own frame-to-frame change: {camera_flicker:.2f} grey levels)")
    choice = choose_default(rows)
    if choice is not None:
        print(f"\ncheapest setting reaching the strength of {max(steps_grid)} independent steps per frame on every "
              f"scene: steps {choice[0]}, feedback {choice[1]:g}")
    return rows


def choose_default(rows: Sequence[Mapping[str, Any]], reference_steps: int = ORDINARY_STEPS) -> tuple[int, float] | None:
    """The (steps, feedback) with the fewest steps per frame (then the least feedback) whose
    strength is at least that of ``reference_steps`` independent steps (feedback 0) on every scene."""
    scenes = {r["scene"] for r in rows}
    need = {sc: next((r["strength"] for r in rows if r["scene"] == sc and r["steps"] == reference_steps
                      and r["feedback"] == 0.0), None) for sc in scenes}
    if any(v is None for v in need.values()):
        return None
    candidates = sorted({(r["steps"], r["feedback"]) for r in rows})
    for s, f in candidates:
        if all(r["strength"] >= need[r["scene"]] for r in rows if (r["steps"], r["feedback"]) == (s, f)):
            return s, f
    return None

