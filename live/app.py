"""The live loop: capture → snapshot → upload → temporal feedback → dream → download → fan out.

This module wires and times; the maths lives in ``dreamer``, ``temporal`` and the backends.
Capture runs on the source's own thread (newest frame only), optical flow on the CPU; on CUDA
the dream of frame *k* is launched and left running while the CPU takes and flows frame *k + 1*,
uploads it and queues its dream; only then is frame *k* collected (its download was queued right
behind its compose), so the GPU goes from one dream to the next while the host shows the last
- one frame in flight per stage, so latency stays bounded. Nothing on that path waits for the
GPU but the one download a frame (docs/architecture.md, "One frame").

Nothing in here may crash the show: a source that drops out shows its placeholder, an output
that fails is switched off by :class:`live.outputs.Fanout`, bad parameters never reach the
loop (the registry rejects them), and a dream that comes back NaN or infinite shows the camera
for that frame instead of a black one.

Nothing in here may make the show deaf either: the dream checks in after every step, so a stop
lands within a step, and status lines and watchdog pings come from a heartbeat thread that
follows the loop's progress rather than its frames (:mod:`live.service.heartbeat`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from torch import Tensor

from live import temporal
from live.atomic import atomic_write
from live.backends import Backend
from live.compose import make_compositor, resize_interpolation
from live.control.params import Registry, Snapshot
from live.control.presets import Morpher
from live.control.schedule import IdleWatcher, OpeningHours, PresetCycler
from live.dreamer import DreamCancelled, Dreamer, DreamSettings
from live.dreamsize import round32  # the loop's dream size rounding (re-exported)
from live.governor import Governor
from live.gpu_timing import GPU_STAGES, FrameMarks, GpuStageTimer
from live.limits import DreamLimit
from live.model import Model, catalog
from live.objectives import Objective
from live.outputs import Fanout, overlay
from live.placeholder import placeholder_frame
from live.service.heartbeat import Heartbeat
from live.sources import Frame, Source, Status

log = logging.getLogger(__name__)

# "compose": upsampling the dream residual onto the full-size camera (docs/architecture.md, "Frame budget")
STAGES = ("capture", "flow", "upload", "dream", "compose", "download", "output")
RETRY_SECONDS = 5.0  # first wait before dreaming again after a failure
MIN_RECOVERY_SIDE = 64  # out of memory below this: stop shrinking, pass through and retry
LOOKAHEAD_AFTER = 10  # frames before the loop's latency is given to the sound's beat triggers
NONFINITE_LOG_EVERY = 60.0  # s between two log lines about NaN/Inf dreams (the first is logged at once)


@dataclass
class StageClock:
    """Seconds spent per stage, for the periodic status line and the end-of-run report.

    ``totals`` is the host's clock around each stage (on CUDA: the time to queue the GPU work,
    and in ``download`` the wait for it); ``gpu`` is the GPU's own time per stage from CUDA
    events (:mod:`live.gpu_timing`), over ``gpu_frames`` frames, empty off CUDA.
    """

    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    frames: int = 0
    latency: float = 0.0  # summed capture-to-output seconds
    started: float = field(default_factory=time.monotonic)
    gpu: dict[str, float] = field(default_factory=dict)
    gpu_frames: int = 0

    def add(self, stage: str, seconds: float) -> None:
        self.totals[stage] += seconds

    def add_gpu(self, seconds: dict[str, float]) -> None:
        for stage, t in seconds.items():
            self.gpu[stage] = self.gpu.get(stage, 0.0) + t
        self.gpu_frames += 1

    def breakdown(self) -> str:
        n = max(self.frames, 1)
        return " ".join(f"{s} {1e3 * t / n:.1f}" for s, t in self.totals.items()) + " ms/frame"

    def gpu_breakdown(self) -> str:
        """``"upload 0.1 dream 15.2 compose 0.3 download 0.1 ms/frame"`` of GPU time, or "" off CUDA."""
        if not self.gpu_frames:
            return ""
        return " ".join(f"{s} {1e3 * self.gpu.get(s, 0.0) / self.gpu_frames:.1f}" for s in GPU_STAGES) + " ms/frame"

    def fps(self) -> float:
        return self.frames / max(time.monotonic() - self.started, 1e-9)

    def dream_share(self) -> float:
        """Fraction of the measured frame time spent in the dream step."""
        total = sum(self.totals.values())
        return self.totals["dream"] / total if total else 0.0


@dataclass
class LoopReport:
    """What a run did: frames out, timing, and the reason it stopped."""

    frames: int
    seconds: float
    fps: float
    latency_ms: float
    breakdown: str
    dream_share: float
    stopped_because: str
    gpu_breakdown: str = ""  # GPU time per stage from CUDA events ("" off CUDA)


class _InFlight(NamedTuple):
    """A dreamed frame between its dream and its download (one frame late on CUDA)."""

    shown: object  # the composed frame, on the device
    captured_at: float  # its camera frame's capture time
    finite: Tensor  # whether the dream was finite: travels with the download, read on the host after it
    camera: np.ndarray  # the camera picture: shown instead when the dream was not finite
    start: Tensor  # the dream's input: names the cause when that was already not finite
    marks: FrameMarks | None = None  # CUDA events of its first stages (GPU stage times)


class LiveLoop:
    """One frame at a time from ``source`` through the dream to ``outputs``, reading ``registry``.

    Construct once, then :meth:`run` until a stop event, a frame budget or a deadline.
    ``output_size`` (width, height) is the size every frame goes out at, whatever the dream size
    (the registry's width and height); None: each frame at the source's own size.
    """

    def __init__(
        self,
        source: Source,
        model: Model,
        backend: Backend,
        registry: Registry,
        outputs: Fanout,
        *,
        overlay: bool = False,
        flow_preset: str = "fast",
        seed: int | None = None,
        screenshot_dir: Path = Path("."),
        status_every: float = 10.0,
        hours: OpeningHours | None = None,
        closed_look: str = "blackout",
        cycler: PresetCycler | None = None,
        idle: IdleWatcher | None = None,
        governor: Governor | None = None,
        on_tick: Callable[[], None] | None = None,
        watchdog: float | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> None:
        self.source = source
        self.model = model
        self.backend = backend
        self.registry = registry
        self.outputs = outputs
        self.overlay = overlay
        self.screenshot_dir = screenshot_dir
        self.status_every = status_every
        self.device = backend.device
        self.dreamer = Dreamer(backend, model.space, seed=seed)
        self.flows = temporal.FlowEstimator(flow_preset)
        self.feedback = temporal.TemporalFeedback()
        self.clock = StageClock()
        self.morpher = Morpher(registry)  # layer and preset changes cross-fade over morph_time
        self.hours, self.closed_look, self.cycler, self.idle = hours, closed_look, cycler, idle
        self.governor = governor
        self.on_tick = on_tick  # once per iteration, on the loop's thread (config reload)
        if governor is not None:
            registry.subscribe(governor.registry_listener)
        self._dreamed = False  # whether this iteration dreamed (what the governor times)
        # On CUDA the dream runs asynchronously: collect each frame one frame late, after the next
        # frame's dream is queued, so the host's work overlaps the GPU's (docs/architecture.md, "One frame").
        self.pipelined = self.device.type == "cuda"
        self._pending: _InFlight | None = None  # the dreamed frame still to download
        self.gpu_timer = GpuStageTimer(self.device)  # GPU time per stage (CUDA events; nothing elsewhere)
        self._last_output: np.ndarray | None = None
        self._last_reset = registry.snapshot().reset
        self.output_size = output_size
        self.compositor = make_compositor(model.space, self.device)
        self._lo, self._hi = model.space.bounds(torch.zeros(1, 3, 1, 1, device=self.device))
        self._stop_reason = ""
        self._was_open = True
        self._failures = 0  # consecutive failed dreams; each doubles the wait before a retry
        self._degraded_until = 0.0
        self._degraded_reason = ""
        # progress, for the heartbeat: the monotonic time of the last step or iteration
        self.watchdog = watchdog  # systemd's watchdog interval (s), or None: no pings
        self.progress_at = time.monotonic()
        self._stop_event: threading.Event | None = None
        self._frame_began: float | None = None  # when the dream in progress started
        self._frame_steps = 0
        self.nonfinite = 0  # frames whose dream came back NaN or infinite (shown as the camera)
        self._nonfinite_logged = (-math.inf, 0)  # (when, count then)

    # ----- the loop
    def run(
        self,
        stop: threading.Event | None = None,
        max_frames: int | None = None,
        duration: float | None = None,
        on_frame: Callable[[int], None] | None = None,
    ) -> LoopReport:
        """Run until ``stop`` is set, ``max_frames`` frames went out, ``duration`` seconds passed,
        the source ended, or the operator quit. ``on_frame(n)`` is called after each output frame
        (readiness for systemd hooks in here). A stop lands between two dream steps: a long frame
        is abandoned, not finished. Status lines and watchdog pings come from a :class:`Heartbeat`
        while this runs."""
        stop = stop or threading.Event()
        self._stop_event = stop
        self.clock = StageClock()
        deadline = time.monotonic() + duration if duration else math.inf
        self._stop_reason = ""
        self.progress_at = time.monotonic()
        with Heartbeat(lambda: self.progress_at, status=self.status_line, status_every=self.status_every,
                       watchdog=self.watchdog):
            self._run(stop, max_frames, duration, deadline, on_frame)
        self._flush()
        report = self.report()
        log.info(
            "stopped (%s) after %d frames in %.1f s: %.2f fps, latency %.0f ms; %s%s",
            report.stopped_because, report.frames, report.seconds, report.fps, report.latency_ms, report.breakdown,
            f"; GPU {report.gpu_breakdown}" if report.gpu_breakdown else "",
        )  # fmt: skip
        return report

    def _run(self, stop: threading.Event, max_frames: int | None, duration: float | None, deadline: float,
             on_frame: Callable[[int], None] | None) -> None:
        while not self._stop_reason:
            self.progress_at = time.monotonic()  # an iteration is progress: the loop is not frozen
            if stop.is_set():
                self._stop_reason = "stopped"
                break
            in_flight = 1 if self._pending is not None else 0  # pipelined: one frame still to download
            if max_frames is not None and self.clock.frames + in_flight >= max_frames:
                self._stop_reason = f"{max_frames} frames"
                break
            if time.monotonic() >= deadline:
                self._stop_reason = f"{duration:g} s"
                break
            frame_started = time.monotonic()
            if self.on_tick is not None:
                self.on_tick()
            if self.cycler is not None:
                self.cycler.tick()
            snap = self.morpher.view(self.registry.snapshot())
            if self.idle is not None and self.idle.idle:
                snap = Snapshot(self.idle.apply(dict(snap)), snap.version)
            self._dreamed = False
            if self.hours is not None and not self.hours.is_open():
                if self.closed_look == "stop":
                    self._stop_reason = "closed"
                    break
                self._closed(snap)
            else:
                self.step(snap)
            if self.governor is not None and self._dreamed:
                adjustment = self.governor.observe(time.monotonic() - frame_started, self.registry.snapshot())
                if adjustment is not None:
                    self.registry.update(adjustment.values(), source="governor")
            if on_frame is not None:
                on_frame(self.clock.frames)
            self._handle_keys()
            spare = 1.0 / snap.fps_cap - (time.monotonic() - frame_started)
            if spare > 0:
                stop.wait(spare)

    def step(self, snap: Snapshot) -> None:
        """One iteration: take the newest frame (waiting up to a frame) and push it through."""
        t = time.perf_counter()
        frame = self.source.latest(timeout=0.25)
        self.clock.add("capture", time.perf_counter() - t)
        if frame is None:
            if self.source.status in (Status.ENDED, Status.FAILED, Status.CLOSED):
                self._stop_reason = f"source {self.source.status}"
            return
        dw, dh = round32(snap.width), round32(snap.height)
        if snap.freeze and self._last_output is not None:
            self._flush()
            self._emit_array(self._last_output, frame.timestamp)
            return
        degraded = time.monotonic() < self._degraded_until
        if frame.placeholder or snap.pause or degraded:
            # Nothing to dream on (camera lost), the operator asked for the plain camera, or the
            # dream failed a moment ago and is waiting to be retried.
            self._flush()
            self.feedback.reset()
            self.flows.reset()
            picture = self._at_output_size(frame.image)
            if degraded and not frame.placeholder:
                picture = _notice(picture, self._degraded_reason)
            self._emit_array(picture, frame.timestamp)
            return
        try:
            self._dream_frame(frame, snap, dw, dh)
            self._failures = 0
        except DreamCancelled:  # the show is stopping: this frame is abandoned between two steps
            try:
                self._flush()  # the previous frame is whole (its download was queued before this dream)
            except Exception as e:  # noqa: BLE001 - stopping anyway: a frame lost is no reason to crash
                self._pending = None
                log.debug("the last dreamed frame could not be collected while stopping: %s", e)
            self._stop_reason = "stopped"
        except Exception as e:  # noqa: BLE001 - nothing in the frame loop may end the show
            self._dream_failed(e, dw, dh)
        finally:
            self._frame_began = None

    def _closed(self, snap: Snapshot) -> None:
        """Outside opening hours: black frames (outputs and the watchdog stay alive), no dreaming."""
        self._flush()
        self.feedback.reset()
        self.flows.reset()
        if self._was_open:
            log.info("closing time: outputs go black until opening hours")
            self._was_open = False
        # The newest camera frame is taken and dropped: it gives the size the outputs run at (when
        # none was named) and keeps the source's buffer fresh for opening time.
        frame = self.source.latest(timeout=0.2)
        w, h = self._output_size(frame.image if frame is not None else None)
        if self.closed_look == "placeholder":
            picture = placeholder_frame(w, h, "closed")
        else:
            picture = np.zeros((h, w, 3), np.uint8)
        self._emit_array(picture, time.monotonic())
        time.sleep(0.2)  # a handful of frames a second is plenty for a closed screen

    def _dream_failed(self, error: Exception, dw: int, dh: int) -> None:
        """A frame's dream raised: shrink on out-of-memory, else pass the camera through for a
        while (longer each time it fails again) and retry. Logged once per incident."""
        self._pending = None
        self.feedback.reset()
        self.flows.reset()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        oom = isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()
        w, h = round32(int(dw * 0.75)), round32(int(dh * 0.75))
        if oom and min(w, h) >= MIN_RECOVERY_SIDE and (w, h) != (dw, dh):
            log.warning("out of memory dreaming at %dx%d: continuing at %dx%d", dw, dh, w, h)
            self.registry.update({"width": w, "height": h}, source="recovery")
            return
        self._failures += 1
        wait = min(RETRY_SECONDS * 2 ** (self._failures - 1), 60.0)
        reason = "out of memory" if oom else f"{type(error).__name__}: {error}"
        self._degraded_reason = f"dream paused ({reason[:60]}); retrying"
        self._degraded_until = time.monotonic() + wait
        log.error("the dream failed (%s); showing the camera and retrying in %.0f s", reason, wait)
        if self._failures == 1:
            log.debug("dream failure", exc_info=error)

    def _dream_frame(self, frame: Frame, snap: Snapshot, dw: int, dh: int) -> None:
        t = time.perf_counter()
        small = self.flows.grey(frame.image)
        if not self._was_open:
            log.info("opening time: dreaming again")
            self._was_open = True
        if self.idle is not None and self.flows.previous is not None:
            self.idle.observe(temporal.change_score(self.flows.previous, small))
        reset = snap.reset != self._last_reset
        if reset or (self.flows.previous is not None and temporal.is_scene_cut(self.flows.previous, small)):
            if not reset:
                log.debug("scene cut: temporal feedback reset")
            self._last_reset = snap.reset
            self.flows.reset()
            self.feedback.reset()
        flow = self.flows.estimate(frame.image, grey=small, out_size=(dh, dw))
        self.clock.add("flow", time.perf_counter() - t)

        marks = self.gpu_timer.start()
        t = time.perf_counter()
        cam = self._upload(frame.image, dw, dh)
        self.clock.add("upload", time.perf_counter() - t)
        marks.mark()

        t = time.perf_counter()
        flow_t = temporal.flow_to_tensor(flow, self.device) if flow is not None and snap.flow else None
        x = temporal.carry(self.feedback, cam, flow_t, snap.feedback, (self._lo, self._hi),
                           snap.zoom, snap.rotate, (snap.drift_x, snap.drift_y))
        if snap.steps > 0:
            settings = DreamSettings(snap.steps, snap.step_size, snap.octaves, snap.octave_scale, snap.jitter)
            self._frame_began, self._frame_steps = time.monotonic(), 0
            dreamed = self.dreamer.dream(x, snap.objective, settings, checkpoint=self._checkpoint)
        else:
            dreamed = x
        self.feedback.finish(cam, dreamed)
        self._dreamed = True
        self.clock.add("dream", time.perf_counter() - t)
        marks.mark()

        t = time.perf_counter()
        # the full-size camera plus the upsampled residual; mix blends camera and dream at output
        # size. On CUDA its download is queued behind it here and collected one frame later.
        shown = self.compositor.compose(cam, dreamed, snap.mix)
        self.clock.add("compose", time.perf_counter() - t)

        # finite is checked on the dream itself (composed to uint8, a NaN is just a dark pixel)
        previous, self._pending = self._pending, _InFlight(shown, frame.timestamp, shown.finite, frame.image, x,
                                                           marks)
        if previous is not None:
            # the previous frame, collected only now: this frame's dream is already queued
            # behind its download, so the GPU never idles while the host shows it
            self._collect(previous)
        if not self.pipelined:
            self._flush()

    def _checkpoint(self) -> None:
        """Called by the dreamer after every step: progress for the heartbeat, and a stop lands here."""
        self.progress_at = time.monotonic()
        self._frame_steps += 1
        if self._stop_event is not None and self._stop_event.is_set():
            raise DreamCancelled

    # ----- host <-> device
    def _upload(self, bgr: np.ndarray, dw: int, dh: int) -> Tensor:
        """Camera frame → (1, 3, dh, dw) model-space tensor; the frame at the output size stays
        with the compositor for this frame's compose (one host→device copy on CUDA)."""
        return self.compositor.upload(bgr, self._output_size(bgr), (dw, dh))

    def _download(self, shown: object) -> np.ndarray:
        """The composed frame → BGR uint8 at the output size, one device→host copy."""
        return self.compositor.download(shown)

    def _output_size(self, bgr: np.ndarray | None = None) -> tuple[int, int]:
        """(width, height) frames go out at: the one given, else the source's own."""
        if self.output_size is not None:
            return self.output_size
        if bgr is not None:
            return bgr.shape[1], bgr.shape[0]
        if self._last_output is not None:
            return self._last_output.shape[1], self._last_output.shape[0]
        if self.source.size is not None:
            return self.source.size
        snap = self.registry.snapshot()
        return round32(snap.width), round32(snap.height)

    def _at_output_size(self, bgr: np.ndarray) -> np.ndarray:
        """A camera (or placeholder) frame to show as it is, at the output size."""
        w, h = self._output_size(bgr)
        if (bgr.shape[1], bgr.shape[0]) == (w, h):
            return bgr
        return cv2.resize(bgr, (w, h), interpolation=resize_interpolation((bgr.shape[1], bgr.shape[0]), (w, h)))

    def _flush(self) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        self._collect(pending)

    def _collect(self, pending: _InFlight) -> None:
        """Download a dreamed frame (the frame's one wait for the GPU) and send it out."""
        t = time.perf_counter()
        out = self._download(pending.shown)
        self.clock.add("download", time.perf_counter() - t)
        gpu = self.gpu_timer.read(pending.marks, pending.shown.composed, pending.shown.ready)
        if gpu is not None:
            self.clock.add_gpu(gpu)
        if not bool(pending.finite):  # on the host since the download: no second wait
            out = self._nonfinite(pending)
        self._emit_array(out, pending.captured_at)

    def _nonfinite(self, pending: _InFlight) -> np.ndarray:
        """The dream came back NaN or infinite (fp16 overflow, bad weights, a backend fault): this
        frame shows the camera, the carried dream is cleared so the next frame starts clean, and
        the event is counted and logged with its cause (at once, then at most once a minute)."""
        self.nonfinite += 1
        self.feedback.reset()
        if not bool(torch.isfinite(pending.start).all()):
            cause = "the carried dream (temporal feedback) was already NaN or infinite"
        else:
            cause = (f"the dream step on {self.backend.describe()} produced NaN or infinity (an fp16 overflow, "
                     "weights that overflow, or a backend fault)")
        now = time.monotonic()
        when, count = self._nonfinite_logged
        if now - when >= NONFINITE_LOG_EVERY:
            since = self.nonfinite - count - 1
            log.warning("a dreamed frame was not finite: %s; showing the camera for it and clearing the carried "
                        "dream%s", cause, f" ({since} more since the last report)" if since > 0 else "")
            self._nonfinite_logged = (now, self.nonfinite)
        return self._at_output_size(pending.camera)

    def _emit_array(self, out: np.ndarray, captured_at: float) -> None:
        t = time.perf_counter()
        self._last_output = out
        if self.overlay:
            out = self._draw_overlay(out.copy())
        self.outputs.send(out, captured_at)  # encoders time the video by the capture time
        self.clock.add("output", time.perf_counter() - t)
        self.clock.frames += 1
        self.clock.latency += time.monotonic() - captured_at

    # ----- operator
    def _draw_overlay(self, frame: np.ndarray) -> np.ndarray:
        snap = self.registry.snapshot()
        lines = [
            f"{self.clock.fps():.1f} fps  {snap.objective}",
            f"steps {snap.steps}  feedback {snap.feedback:.2f}  {self.backend.describe()}",
        ]
        if self.model.weights.is_random:
            lines.append("RANDOM WEIGHTS (demo)")
        return overlay.status_overlay(frame, lines)

    def _handle_keys(self) -> None:
        for action in self.outputs.poll_keys():
            if action == "quit":
                self._stop_reason = "quit key"
            elif action in ("next_layer", "prev_layer"):
                self._step_layer(1 if action == "next_layer" else -1)
            elif action == "freeze":
                self.registry.set("freeze", not self.registry.get("freeze"), source="keys")
            elif action == "overlay":
                self.overlay = not self.overlay
            elif action == "tap":
                self.registry.set("tap", True, source="keys")  # tap tempo (live/audio)
            elif action == "screenshot":
                self.screenshot()
            elif action == "window_closed" and not self.outputs.active:
                self._stop_reason = "window closed"

    def _step_layer(self, direction: int) -> None:
        current: Objective = self.registry.get("objective")
        index = catalog.BY_NAME[current.layers[-1]].index if current.layers else 0
        layer = catalog.LAYERS[(index + direction) % len(catalog.LAYERS)]
        self.registry.set("objective", layer.name, source="keys")
        log.info("layer: %s", layer.name)

    def screenshot(self) -> Path | None:
        """Save the last output frame as a PNG in the screenshot directory; returns its path."""
        if self._last_output is None:
            return None
        path = self.screenshot_dir / time.strftime("deepdream-%Y%m%d-%H%M%S.png")
        ok, png = cv2.imencode(".png", self._last_output)
        try:
            with atomic_write(path) as f:
                f.write(png.tobytes())
        except OSError as e:  # a full disk must not stop the show
            log.error("screenshot not saved to %s: %s", path, e)
            return None
        log.info("screenshot saved: %s", path)
        return path

    # ----- reporting
    def status_line(self) -> str:
        snap = self.registry.snapshot()
        c = self.clock
        line = (
            f"{c.fps():.2f} fps, latency {1e3 * c.latency / max(c.frames, 1):.0f} ms, "
            f"{snap.objective} x{snap.steps} at {round32(snap.width)}x{round32(snap.height)}"
            f" -> {'x'.join(map(str, self._output_size()))}; "
            f"{c.breakdown()}{'; GPU ' + c.gpu_breakdown() if c.gpu_frames else ''}; "
            f"source {self.source.status}, {self.source.dropped} dropped; {self.outputs.summary()}"
        )
        began = self._frame_began
        if began is not None and time.monotonic() - began > 1.0:
            line += f"; this frame: {self._frame_steps} steps in {time.monotonic() - began:.1f} s so far"
        if self.nonfinite:
            line += f"; {self.nonfinite} non-finite dream(s) shown as the camera"
        return line

    def status(self) -> dict[str, object]:
        """What OSC's /dream/status answers: fps, layer, objective, steps, backend, size, source."""
        snap = self.registry.snapshot()
        objective: Objective = snap.objective
        return {
            "fps": round(self.clock.fps(), 2),
            "layer": objective.layers[-1] if objective.layers else "",
            "objective": str(objective),
            "steps": snap.steps,
            "backend": self.backend.describe(),
            "size": f"{round32(snap.width)}x{round32(snap.height)}",
            "source": str(self.source.status),
            "weights": "random" if self.model.weights.is_random else self.model.weights.kind,
            "outputs": self.outputs.summary(),  # state, bitrate and drops per output; keys masked
            # for the web page's status panel
            "latency_ms": round(1e3 * self.clock.latency / max(self.clock.frames, 1), 1),
            "output_size": f"{self._last_output.shape[1]}x{self._last_output.shape[0]}"
            if self._last_output is not None else "",
            "source_dropped": self.source.dropped,
            "governor": _governor_state(self.governor),
            "nonfinite": self.nonfinite,
        }

    def lookahead(self) -> float:
        """Seconds from a registry change to the frame that shows it, as measured here: the wait
        for the next frame to begin (half a frame on average) plus capture-to-output latency.
        What the sound's beat triggers fire early by (docs/architecture.md, *Sound*)."""
        c = self.clock
        if c.frames < LOOKAHEAD_AFTER:
            return 0.0  # not measured yet (the first frames include the start-up)
        return 0.5 / max(c.fps(), 1e-3) + c.latency / c.frames

    def report(self) -> LoopReport:
        c = self.clock
        seconds = time.monotonic() - c.started
        return LoopReport(
            frames=c.frames,
            seconds=seconds,
            fps=c.frames / max(seconds, 1e-9),
            latency_ms=1e3 * c.latency / max(c.frames, 1),
            breakdown=c.breakdown(),
            dream_share=c.dream_share(),
            stopped_because=self._stop_reason or "stopped",
            gpu_breakdown=c.gpu_breakdown(),
        )


def _governor_state(governor: Governor | None) -> str:
    """One line on what the governor is doing, for status."""
    if governor is None:
        return "off"
    now = f": {governor.current}" if governor.current is not None else ""
    ceiling = f" (ceiling {governor.ceiling})" if governor.ceiling not in (None, governor.current) else ""
    return f"holding {governor.target_fps:g} fps{now}{ceiling}"


def outputs_status(outputs: Fanout) -> list[dict[str, object]]:
    """Each output's frames sent and dropped, and why it stopped if it did (the page's table)."""
    return [{"name": o.name, "sent": o.sent, "dropped": o.dropped, "failure": o.failure} for o in outputs.outputs]


def _notice(picture: np.ndarray, text: str) -> np.ndarray:
    """A one-line notice along the bottom of the picture (the show stays watchable)."""
    return overlay.notice(picture, text)


# ----------------------------------------------------------------------------- wiring
@dataclass
class ShowOptions:
    """How to set up a show: what ``deepdream-live run`` was told (parameters go to the registry)."""

    source: str = "auto"  # "auto": camera 0, else the test scene (logged)
    capture_width: int = 1280
    capture_height: int = 720
    capture_fps: float = 30.0
    loop_video: bool = True
    window: bool | None = None  # None: a window when there is a display
    fullscreen: bool = False
    monitor: int | None = None
    vcam: bool = False
    vcam_device: str | None = None
    vcam_backend: str | None = None
    record: Path | None = None
    record_dir: Path | None = None  # where /dream/record/start puts its files (default: --record's, else .)
    record_codec: str | None = None  # None: h264_nvenc where it opens, else libx264
    record_bitrate: int | None = None  # None: constant quality (CRF)
    streams: tuple[str, ...] = ()
    stream_bitrate: int | None = None
    keyframe_seconds: float = 2.0
    encoder_preset: str = "veryfast"  # libx264's speed/quality trade (docs/architecture.md, *Encoders*)
    ndi: str | None = None
    overlay: bool = False
    weights: str | None = None
    backend: str = "auto"
    device: str = "auto"
    flow_preset: str = "fast"
    seed: int | None = None
    max_frames: int | None = None
    duration: float | None = None
    status_every: float = 10.0
    screenshot_dir: Path = Path(".")
    # What outputs run at; None: the source's own size. The dream size is the registry's width/height.
    output_size: tuple[int, int] | None = None
    # The test scene stands in for a camera, so it is drawn at the size a camera is asked for (or
    # the output size named); run_show sets it.
    test_scene_size: tuple[int, int] = (1280, 720)
    model: str = "torchvision"
    precision: str | None = None  # None: fp16 on CUDA, fp32 on the CPU (live.backends.resolve_precision)
    no_build: bool = False  # never build a TensorRT plan during the show; without one, dream on torch
    dream_limit: DreamLimit | None = None  # largest dream size; None: the default of the device dreamed on
    # live control
    osc: bool = True
    osc_host: str = "127.0.0.1"
    osc_port: int = 9000
    osc_allow: tuple[str, ...] = ()
    osc_feedback: tuple[str, ...] = ()
    web: bool = True
    web_host: str = "127.0.0.1"
    web_port: int | None = None  # None: 8080, or a free port when 8080 is taken (logged)
    web_token: str | None = None  # None: generated and stored (only needed beyond loopback)
    web_token_path: Path | None = None  # where a generated token is kept (default: beside the config)
    mdns: bool = True
    config: Path | None = None  # the site config file, if any (the web token is kept beside it)
    midi: bool = True
    midi_map: Path | None = None  # None: live.control.midi.default_mapping_path()
    midi_api: str | None = None  # alsa | jack; None: $MIDO_BACKEND, else the platform's
    presets_dir: Path | None = None
    # sound (live/audio): an input (device, file or "source"), a mapping (file or shipped name)
    audio: str | None = None
    audio_map: str | None = None
    audio_settings: dict[str, object] = field(default_factory=dict)  # AnalysisSettings keys
    audio_link: bool = False
    # unattended installations
    preset_cycle: tuple[str, ...] = ()
    preset_cycle_minutes: float = 10.0
    hours: OpeningHours | None = None
    closed_look: str = "blackout"  # blackout | placeholder | stop
    idle_after_minutes: float | None = None
    idle_threshold: float = 0.02
    idle_values: dict[str, object] = field(default_factory=dict)
    target_fps: float | None = None  # None: no governor
    governor_sizes: list[tuple[int, int]] | None = None
    governor_min_steps: int = 1
    governor_min_size: tuple[int, int] | None = None
    governor_headroom: float = 0.85


def open_show_source(opts: ShowOptions) -> Source:
    """The source to read, started. ``auto`` falls back to the test scene when no camera opens."""
    from live.errors import InputError
    from live.sources import TestSceneSource, open_source

    if opts.source.strip().lower() in ("test", "test-scene"):
        return TestSceneSource(opts.test_scene_size[0], opts.test_scene_size[1], opts.capture_fps).start()
    if opts.source != "auto":
        return open_source(opts.source, opts.capture_width, opts.capture_height, opts.capture_fps,
                           loop=opts.loop_video).start()
    try:
        return open_source("0", opts.capture_width, opts.capture_height, opts.capture_fps).start()
    except InputError as e:
        log.warning("%s\nno camera: showing the built-in test scene instead (choose one with --source)", e)
        return TestSceneSource(opts.test_scene_size[0], opts.test_scene_size[1], opts.capture_fps).start()


def build_outputs(opts: ShowOptions) -> Fanout:
    """The outputs asked for. A window is opened by default only where there is a display."""
    import os

    from live.outputs import VirtualCamOutput, WindowOutput

    outputs = []
    window = opts.window
    if window is None:
        window = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        if not window:
            log.info("no display: running without a window (headless)")
    if window:
        outputs.append(WindowOutput("deepdream-live", fullscreen=opts.fullscreen, monitor=opts.monitor))
    if opts.vcam:
        outputs.append(VirtualCamOutput(device=opts.vcam_device, backend=opts.vcam_backend))
    outputs.extend(_encoder_outputs(opts))
    if opts.ndi:
        from live.outputs.ndi import NdiOutput

        outputs.append(NdiOutput(opts.ndi))
    return Fanout(outputs)


def _encoder_outputs(opts: ShowOptions) -> list:
    """The recording switch (always, so /dream/record/start works) and one encoder per stream;
    OpenCV's recorder where PyAV is missing."""
    from live.outputs import RecorderOutput, encoder

    if not encoder.available():
        if opts.streams:
            from live.errors import UnavailableError

            raise UnavailableError("--stream needs PyAV: pip install av")
        if opts.record is None:
            return []
        log.warning("PyAV is not installed: recording with OpenCV instead (mp4v or MJPG, not H.264, not "
                    "crash-safe, nominal frame rate); pip install av for H.264")
        return [RecorderOutput(opts.record)]
    from live.outputs.encoder import EncoderOutput, EncoderSettings
    from live.outputs.switch import RecordSwitch

    common = {"codec": opts.record_codec, "keyframe_seconds": opts.keyframe_seconds, "preset": opts.encoder_preset}
    record = EncoderSettings(bitrate=opts.record_bitrate, **common)
    stream = EncoderSettings(bitrate=opts.stream_bitrate, **common)
    directory = opts.record_dir or (opts.record.parent if opts.record is not None else Path("."))
    suffix = opts.record.suffix.lower() if opts.record is not None else ".mp4"
    outs: list = [RecordSwitch(directory, suffix, record, initial=opts.record)]
    outs += [EncoderOutput(url, stream, name=f"stream {i}") for i, url in enumerate(opts.streams, 1)]
    return outs


def _output_actions(outputs: Fanout) -> dict[str, Callable[[object], object]]:
    """OSC actions for the recording switch and each stream (``stream/<n>/enable``)."""
    from live.outputs.encoder import EncoderOutput
    from live.outputs.switch import RecordSwitch

    actions: dict[str, Callable[[object], object]] = {}
    for out in outputs.outputs:
        if isinstance(out, RecordSwitch):
            actions["record/start"] = lambda _arg=None, out=out: out.start()
            actions["record/stop"] = out.stop
    streams = [o for o in outputs.outputs if isinstance(o, EncoderOutput) and o.target.network]
    for i, out in enumerate(streams, 1):
        actions[f"stream/{i}/enable"] = out.set_enabled
    return actions


def run_show(
    opts: ShowOptions,
    registry: Registry,
    stop: threading.Event | None = None,
    *,
    on_tick: Callable[[], None] | None = None,
    finishing: threading.Event | None = None,
) -> LoopReport:
    """Set up outputs, control, network and source, then run the loop until stopped.

    Outputs open first and show a placeholder while the network loads, so a video-call app
    keeps the virtual camera and a projector never shows a desktop. OSC and MIDI start before
    the network too: a performer can set the look while it loads. systemd hears READY=1 after
    the first frame, and watchdog pings while the loop makes progress (a heartbeat thread).
    ``finishing`` is set once the loop has stopped and the outputs are being closed (a
    recording finalised): the command line then lets a second Ctrl-C wait for it.
    """
    from concurrent.futures import ThreadPoolExecutor

    from live import limits
    from live.backends import open_backend
    from live.control.presets import PresetStore
    from live.model import load_model
    from live.service import notify

    stop = stop or threading.Event()
    snap = registry.snapshot()
    width, height = round32(snap.width), round32(snap.height)  # the dream size
    opts.test_scene_size = opts.output_size or (opts.capture_width, opts.capture_height)
    presets = PresetStore(registry, opts.presets_dir)
    loop_ref: list[LiveLoop] = []
    source_ref: list[Source] = []  # the source once it runs (the sound of a video follows its position)

    def status() -> dict[str, object]:
        if not loop_ref:
            return {"state": "loading", "fps": 0.0}
        return loop_ref[0].status()

    with contextlib.ExitStack() as stack:
        source: Source | None = None
        output_size = opts.output_size
        if output_size is None:
            source, output_size = _source_and_size(stack, opts, stop)
            if source is not None:
                source_ref.append(source)
        outputs = stack.enter_context(build_outputs(opts))
        preview = _add_preview(outputs) if opts.web else None
        outputs.open(output_size[0], output_size[1], snap.fps_cap)
        midi = stack.enter_context(_start_midi(opts, registry)) if opts.midi else None
        audio = _start_audio(stack, opts, registry, presets, source_ref, loop_ref) if opts.audio or opts.audio_map \
            else None
        if opts.osc:
            actions = {"preset/load": presets.load, "preset/save": presets.save,
                       "morph": lambda seconds: registry.set("morph_time", seconds, source="osc")}
            if midi is not None:
                actions["learn"] = midi.learn
            actions.update(_output_actions(outputs))
            osc_address = _start_osc(stack, opts, registry, actions, status,
                                     audio.routes() if audio is not None else None)
        if opts.web:
            _start_web(stack, opts, registry, presets, preview, osc_address if opts.osc else None,
                       lambda: {"state": "dreaming" if loop_ref else "loading the network", **status(),
                                "outputs": outputs_status(outputs)}, audio)

        def prepare() -> tuple[Model, Backend]:
            model = load_model(opts.weights, model=opts.model)
            # export/build/verify what the first frame needs now, while the outputs show a
            # placeholder; a plan that cannot be used hands its work to torch, with the reason
            first = ((1, 3, height, width), registry.snapshot().objective.layers)
            backend = open_backend(opts.backend, model, opts.device, precision=opts.precision,
                                   no_build=opts.no_build, prepare=first, fallback=True)
            return model, backend

        with notify.extending(120, status_text="loading the network"), ThreadPoolExecutor(1, "load") as pool:
            loading = pool.submit(prepare)
            while not loading.done():
                outputs.send_placeholder("deepdream-live: loading the network...")
                if "quit" in outputs.poll_keys() or stop.wait(0.2):
                    stop.set()
            model, backend = loading.result()  # re-raises a loading error with its own message
        if stop.is_set():
            if finishing is not None:
                finishing.set()
            return LoopReport(0, 0.0, 0.0, 0.0, "", 0.0, "stopped while loading")
        # the largest dream size of the device the backend landed on (auto may fall back)
        kind = backend.device.type
        limit = opts.dream_limit if opts.dream_limit is not None and opts.dream_limit.device == kind else None
        if limit is None:
            if opts.dream_limit is not None:
                log.warning("dreaming on %s, not %s: the largest dream size is now %s's default", kind,
                            opts.dream_limit.device, kind)
            limit = limits.default_limit(kind)
        limits.enforce(registry, limit)
        if source is None:
            source = stack.enter_context(open_show_source(opts))
        source_ref.append(source)
        loop = LiveLoop(
            source, model, backend, registry, outputs,
            overlay=opts.overlay, flow_preset=opts.flow_preset, seed=opts.seed,
            screenshot_dir=opts.screenshot_dir, status_every=opts.status_every,
            hours=opts.hours, closed_look=opts.closed_look,
            cycler=PresetCycler(presets, list(opts.preset_cycle), opts.preset_cycle_minutes)
            if opts.preset_cycle else None,
            idle=_idle_watcher(opts, registry), governor=_governor(opts), on_tick=on_tick,
            watchdog=notify.watchdog_interval(),
            output_size=output_size,
        )  # fmt: skip
        loop_ref.append(loop)
        log.info("running: %s -> %s, %s; dreaming at %dx%d, output %dx%d", source.describe(), outputs.summary(),
                 backend.describe(), width, height, *output_size)

        def on_frame(n: int) -> None:
            if n == 1:
                notify.ready(f"dreaming: {source.describe()} on {backend.describe()}")

        try:
            return loop.run(stop, max_frames=opts.max_frames, duration=opts.duration, on_frame=on_frame)
        finally:
            if finishing is not None:
                finishing.set()
            notify.stopping()


SOURCE_SIZE_WAIT = 10.0  # seconds a live source has to deliver its first frame, which sets the output size


def _source_and_size(stack: contextlib.ExitStack, opts: ShowOptions,
                     stop: threading.Event) -> tuple[Source | None, tuple[int, int]]:
    """The output size when none is named: the source's own, and the source if it had to start.

    A video file is only probed, and starts when the dream is ready, so a clip played once is
    seen from its first frame. Any other source (camera, stream, image, test scene) is live
    anyway: it starts now and its first frame gives the size (a camera may not give the size it
    was asked for). A source with no frame in time goes out at the size asked of it.
    """
    from live.sources.files import VIDEO_EXTENSIONS

    path = Path(opts.source.strip()).expanduser()
    if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
        video = cv2.VideoCapture(str(path))
        try:
            size = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
        finally:
            video.release()
        if min(size) > 0:
            log.info("outputs at %dx%d, the size of %s (--output-size WxH to choose)", *size, path.name)
            return None, size
    source: Source = stack.enter_context(open_show_source(opts))
    deadline = time.monotonic() + SOURCE_SIZE_WAIT
    while source.captured == 0 and source.status in (Status.LIVE, Status.RECONNECTING) \
            and time.monotonic() < deadline and not stop.wait(0.02):
        pass
    if source.captured and source.size is not None:
        size = source.size
        log.info("outputs at %dx%d, the size of %s (--output-size WxH to choose)", *size, source.describe())
    else:
        size = source.size or (opts.capture_width, opts.capture_height)
        log.warning("%s gave no frame within %.0f s: outputs at %dx%d, the size asked of it (--output-size WxH "
                    "to choose)", source.describe(), SOURCE_SIZE_WAIT, *size)
    return source, size


def _start_midi(opts: ShowOptions, registry: Registry):
    """MIDI control, or a no-op context where the extra is missing (logged by MidiControl)."""
    from live.control.midi import MidiControl, default_mapping_path

    return MidiControl(registry, opts.midi_map or default_mapping_path(), api=opts.midi_api)


def _start_osc(stack: contextlib.ExitStack, opts: ShowOptions, registry: Registry,
               actions: dict[str, Callable[[object], object]],
               status: Callable[[], dict[str, object]], routes: dict | None = None) -> tuple[str, int]:
    """OSC control; returns where it listens. A port already in use is an error at start-up: the
    message names --osc-port. ``routes``: the sound's addresses, when the show has sound."""
    from live.control.osc import OscServer

    return stack.enter_context(OscServer(registry, opts.osc_host, opts.osc_port, allow=opts.osc_allow,
                                  feedback=opts.osc_feedback, actions=actions, status=status,
                                  routes=routes)).address


def _start_audio(stack: contextlib.ExitStack, opts: ShowOptions, registry: Registry, presets: object,
                 source_ref: list[Source], loop_ref: list[LiveLoop]):
    """The sound (live/audio): its input, analysis and mapping on their own thread, beat
    triggers early by the loop's measured latency. Returns its OSC and page doors."""
    from live.audio.show import start_audio

    def position() -> float | None:  # --audio source: the video's own position, for its sound to follow
        return getattr(source_ref[0], "position", None) if source_ref else None

    return start_audio(stack, registry, presets, audio=opts.audio, mapping=opts.audio_map,
                       settings=opts.audio_settings, link=opts.audio_link, video=opts.source, position=position,
                       latency=lambda: loop_ref[0].lookahead() if loop_ref else 0.0)


def _add_preview(outputs: Fanout):
    """The web page's preview: one more output in the fan-out, keeping the newest frame."""
    from live.web.preview import PreviewOutput

    preview = PreviewOutput()
    outputs.outputs.append(preview)
    return preview


def _start_web(stack: contextlib.ExitStack, opts: ShowOptions, registry: Registry, presets: object,
               preview: object, osc: tuple[str, int] | None, status: Callable[[], dict[str, object]],
               audio: object = None) -> None:
    """The web page, preview and OSCQuery. Beyond loopback it needs a token: the one given, or
    one made once, kept in a 0600 file and printed this once (docs/architecture.md, *The web page*)."""
    from live.web.security import announce_token, is_loopback_bind, resolve_token
    from live.web.server import DEFAULT_PORT as DEFAULT_WEB_PORT
    from live.web.server import WebServer

    token = None
    choice = None
    if not is_loopback_bind(opts.web_host):
        choice = resolve_token(opts.web_token, config=opts.config, path=opts.web_token_path)
        token = choice.token
    from live.errors import UsageError

    def server(port: int) -> WebServer:
        return WebServer(registry, opts.web_host, port, token=token, presets=presets, preview=preview,
                         status=status, model=opts.model, osc=osc, osc_allow=opts.osc_allow, mdns=opts.mdns,
                         streams=len(opts.streams), audio=audio.web if audio is not None else None)

    try:
        web = stack.enter_context(server(DEFAULT_WEB_PORT if opts.web_port is None else opts.web_port))
    except UsageError as e:
        if opts.web_port is not None:
            raise  # a port asked for by name: its owner wants to know
        # the default port is taken (another show, another program): a page elsewhere beats none
        log.warning("%s; serving the web page on a free port instead", e)
        web = stack.enter_context(server(0))
    if choice is not None:
        announce_token(choice, web.address[1], opts.web_host)


def _idle_watcher(opts: ShowOptions, registry: Registry) -> IdleWatcher | None:
    if not opts.idle_after_minutes:
        return None
    values = registry.check(dict(opts.idle_values))  # range and the device's largest dream size
    if not values:
        values = {"zoom": 0.004, "feedback": 1.0}  # the classic slow endless zoom
    return IdleWatcher(opts.idle_after_minutes * 60.0, values, threshold=opts.idle_threshold)


def _governor(opts: ShowOptions) -> Governor | None:
    if not opts.target_fps:
        return None
    return Governor(opts.target_fps, sizes=opts.governor_sizes, min_steps=opts.governor_min_steps,
                    min_size=opts.governor_min_size, headroom=opts.governor_headroom)
