"""The presenter's pace: every camera frame out, with the newest dream carried onto it.

Runs on the show's own thread (the outputs' thread: OpenCV windows want that), at the source's
rate capped by ``fps_cap`` (docs/architecture.md, "Two paces"). Per frame it takes the newest
camera frame, offers it to the dreamer through the :class:`~live.handoff.DreamHandoff`, and
sends out the camera at the output size plus the newest dream's residual moved onto this frame
(:class:`~live.reproject.Reprojector`). When the dreamer was free and takes this very frame,
the presenter may wait for its dream, but at most half a camera frame; a dream that keeps up
is then shown on its own frame, as the one-pace loop did.

``present="dream"`` is the one-pace show: each frame waits for its own dream and goes out
when it is done, so frames come at the dream's rate with a latency of one dream.

On CUDA the presenter works on a stream of its own and never waits for the dream: a published
residual is already finished (the dreamer waited for it), so the presenter's one wait per frame
is for its own frame's download (an event on its own stream, never a stream- or device-wide
synchronisation), and nothing else on its path reads the device (docs/architecture.md, "No
host synchronisation on the frame path").

The operator's states are the presenter's: freeze repeats the last frame, pause and a lost
camera show the camera (the placeholder), a dream that failed shows the camera with a notice
while the dreamer waits to retry, closed hours show black or a placeholder. Keys, overlay and
screenshots are here too, since they belong to the outputs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from live import temporal
from live.atomic import atomic_write
from live.compose import HostCompositor, make_compositor, resize_interpolation
from live.control.params import Registry, Snapshot
from live.control.presets import Morpher
from live.control.schedule import IdleWatcher, OpeningHours, PresetCycler
from live.dream_loop import DreamLoop
from live.dreamsize import round32
from live.gpu_timing import PRESENT_GPU_STAGES, FrameMarks, GpuStageTimer
from live.handoff import Dream, DreamHandoff, Shot
from live.model import catalog
from live.model.googlenet import InputSpace
from live.objectives import Objective
from live.outputs import Fanout, overlay
from live.placeholder import placeholder_frame
from live.reproject import SAME, Reprojector
from live.sources import Frame, Source, Status
from live.stages import PRESENT_STAGES, StageClock

log = logging.getLogger(__name__)

MODES = ("camera", "dream")
BUDGET = 0.5  # of a camera frame: the longest the presenter waits for its own frame's dream
DEFAULT_PERIOD = 1.0 / 30.0  # s between camera frames until the source's own rate is seen
PERIOD_FRAMES = 15  # recent camera frames the period is the median of
# DIS preset of the flow that carries the dream, twice a frame: medium is sharper at motion
# boundaries, but costs about 4x fast, which on a 2-core CPU is more than the presenter can spend
# per camera frame (README, "Two paces")
CARRY_PRESET = "fast"
DREAM_WAIT_SLICE = 0.25  # s: dream mode looks at stop and the dreamer's state this often while it waits


class Presenter:
    """Takes camera frames from ``source`` and sends shown frames to ``outputs``.

    ``present``: ``camera`` (every camera frame, the newest dream carried onto it) or ``dream``
    (each frame waits for its own dream). ``output_size`` (width, height): what every frame goes out at;
    None: each frame at the source's own size.
    """

    def __init__(
        self,
        source: Source,
        outputs: Fanout,
        registry: Registry,
        handoff: DreamHandoff,
        dream_loop: DreamLoop,
        space: InputSpace,
        device: torch.device,
        *,
        morpher: Morpher,
        present: str = "camera",
        carry_preset: str = CARRY_PRESET,
        carry_method: str = "direct",
        overlay: bool = False,
        overlay_lines: Callable[[], list[str]] = lambda: [],
        screenshot_dir: Path = Path("."),
        hours: OpeningHours | None = None,
        closed_look: str = "blackout",
        cycler: PresetCycler | None = None,
        idle: IdleWatcher | None = None,
        on_tick: Callable[[], None] | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> None:
        if present not in MODES:
            from live.errors import UsageError

            raise UsageError(f"--present {present!r}: choose camera (every camera frame, the dream carried onto "
                             "it) or dream (each dream when it finishes)")
        self.source, self.outputs, self.registry, self.handoff = source, outputs, registry, handoff
        self.dream_loop, self.morpher, self.present = dream_loop, morpher, present
        self.device = device
        self.overlay, self.overlay_lines, self.screenshot_dir = overlay, overlay_lines, screenshot_dir
        self.hours, self.closed_look, self.cycler, self.idle = hours, closed_look, cycler, idle
        self.on_tick = on_tick  # once per iteration, on this thread (config reload)
        self.output_size = output_size
        self.compositor = make_compositor(space, device)
        self.reprojector = Reprojector(carry_preset, carry_method)
        self._greys = temporal.FlowEstimator(carry_preset)  # its grey(): the size all flow runs at
        self.clock = StageClock(PRESENT_STAGES)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        # carry and compose are timed by events of its own, the download by the compositor's
        self.gpu_timer = GpuStageTimer(device, PRESENT_GPU_STAGES, own=2)
        self.stop_reason = ""
        self.progress_at = time.monotonic()
        self._last_output: np.ndarray | None = None
        self._last_reset = registry.snapshot().reset
        self._was_open = True
        self._epoch = 0
        self._prev_grey: np.ndarray | None = None
        self._shown_dream = 0  # dream mode: the number of the last dream shown
        self._on_stream: set[int] = set()  # CUDA: dreams whose residual is marked as used on our stream
        self._intervals: deque[float] = deque(maxlen=PERIOD_FRAMES)
        self._last_camera: Frame | None = None
        self._levels_of: int | None = None  # the CPU path: the dream whose grey levels are kept
        self._levels: np.ndarray | None = None

    # ----- the loop
    def run(self, stop, max_frames: int | None, duration: float | None, deadline: float,
            on_frame: Callable[[int], None] | None) -> None:
        """Present until ``stop``, ``max_frames`` frames out, ``deadline`` (monotonic), the source
        ended, or the operator quit; :attr:`stop_reason` says which."""
        self.stop_reason = ""
        context = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with context:
            while not self.stop_reason:
                self.progress_at = time.monotonic()  # an iteration is progress: the presenter is not frozen
                if stop.is_set():
                    self.stop_reason = "stopped"
                    break
                if max_frames is not None and self.clock.frames >= max_frames:
                    self.stop_reason = f"{max_frames} frames"
                    break
                if time.monotonic() >= deadline:
                    self.stop_reason = f"{duration:g} s"
                    break
                started = time.monotonic()
                if self.on_tick is not None:
                    self.on_tick()
                if self.cycler is not None:
                    self.cycler.tick()
                snap = self.morpher.view(self.registry.snapshot())
                if self.idle is not None and self.idle.idle:
                    snap = Snapshot(self.idle.apply(dict(snap)), snap.version)
                if self.hours is not None and not self.hours.is_open():
                    if self.closed_look == "stop":
                        self.stop_reason = "closed"
                        break
                    self._closed()
                else:
                    self.step(snap, stop)
                if on_frame is not None:
                    on_frame(self.clock.frames)
                self._handle_keys()
                spare = 1.0 / snap.fps_cap - (time.monotonic() - started)
                if spare > 0:
                    stop.wait(spare)

    def step(self, snap: Snapshot, stop: threading.Event | None = None) -> None:
        """One camera frame (waiting up to a quarter second for it) out, in the present mode."""
        stop = stop or threading.Event()
        t = time.perf_counter()
        frame = self.source.latest(timeout=0.25)
        self.clock.add("capture", time.perf_counter() - t)
        if frame is None:
            if self.source.status in (Status.ENDED, Status.FAILED, Status.CLOSED):
                self.stop_reason = f"source {self.source.status}"
            return
        self._note_period(frame)
        if snap.freeze and self._last_output is not None:
            self.handoff.withdraw()  # frozen: nothing new to dream
            self._emit(self._last_output, frame.timestamp)
            return
        degraded = self.dream_loop.degraded()
        if frame.placeholder or snap.pause or degraded:
            # Nothing to dream on (camera lost), the operator asked for the plain camera, or the
            # dream failed a moment ago and waits to be retried: the camera, and the dream starts
            # afresh afterwards.
            self._new_epoch()
            picture = self._at_output_size(frame.image)
            if degraded and not frame.placeholder:
                picture = overlay.notice(picture, degraded)
            self._emit(picture, frame.timestamp)
            return
        if not self._was_open:
            log.info("opening time: dreaming again")
            self._was_open = True
        shot = self._shot(frame, snap)
        will_dream = self.handoff.offer(shot)
        if self.present == "dream":
            self._present_dream(shot, snap, stop)
        else:
            self._present_camera(shot, snap, will_dream)

    def _shot(self, frame: Frame, snap: Snapshot) -> Shot:
        """This frame as the dreamer and the reprojector see it; a scene cut or reset starts a new epoch."""
        t = time.perf_counter()
        grey = self._greys.grey(frame.image)
        reset = snap.reset != self._last_reset
        if reset or (self._prev_grey is not None and temporal.is_scene_cut(self._prev_grey, grey)):
            if not reset:
                log.debug("scene cut: the carried dream and temporal feedback reset")
            self._last_reset = snap.reset
            self._new_epoch()
        self._prev_grey = grey
        shot = Shot(frame, grey, self._epoch)
        self.reprojector.observe(shot)
        self.clock.add("carry", time.perf_counter() - t)
        return shot

    def _present_camera(self, shot: Shot, snap: Snapshot, will_dream: bool) -> None:
        if will_dream:  # the dreamer takes this very frame: its own dream may be worth a short wait
            self.handoff.wait(0, BUDGET * self.period, sequence=shot.sequence)
        dream = self.handoff.newest()
        if isinstance(self.compositor, HostCompositor):
            self._present_on_host(shot, snap, dream)
            return
        t = time.perf_counter()
        residual = None
        marks = self.gpu_timer.start()
        if dream is not None:
            self._use_on_stream(dream)
            residual = self.reprojector.carry(dream, shot)
        marks.mark()
        self.clock.add("carry", time.perf_counter() - t)
        if residual is None:
            self._emit(self._at_output_size(shot.frame.image), shot.frame.timestamp)
            return
        picture = self._compose(shot.frame.image, residual, snap.mix, marks)
        self._emit(picture, shot.frame.timestamp, dream)

    def _present_on_host(self, shot: Shot, snap: Snapshot, dream: Dream | None) -> None:
        """The CPU path: each dream is turned into grey levels once, then moved onto every frame
        in that form (OpenCV all the way), rather than converted again per camera frame."""
        t = time.perf_counter()
        field = self.reprojector.field(dream, shot) if dream is not None else None
        levels = None
        if field is not None and dream is not None and dream.residual is not None:
            if self._levels_of != dream.number:
                self._levels_of, self._levels = dream.number, self.compositor.levels(dream.residual)
            if field is SAME:
                levels = self._levels if snap.mix == 1.0 else self._levels * np.float32(snap.mix)
            else:
                levels = self.reprojector.move(self._levels, field, snap.mix)
        self.clock.add("carry", time.perf_counter() - t)
        if levels is None:
            self._emit(self._at_output_size(shot.frame.image), shot.frame.timestamp)
            return
        t = time.perf_counter()
        self.compositor.keep_camera(shot.frame.image, self._output_size(shot.frame.image))
        picture = self.compositor.compose_levels(levels)
        self.clock.add("compose", time.perf_counter() - t)
        self._emit(picture, shot.frame.timestamp, dream)

    def _present_dream(self, shot: Shot, snap: Snapshot, stop) -> None:
        # In step with the dreamer, as the one-pace loop was: this frame waits for its own dream.
        while True:
            dream = self.handoff.wait(self._shown_dream, DREAM_WAIT_SLICE, sequence=shot.sequence)
            self.progress_at = time.monotonic()  # waiting on a dream in progress is not being frozen
            if dream is not None:
                break
            if stop.is_set() or self.dream_loop.degraded() or self.handoff.idle:
                return  # stopping, the dream failed, or it was dropped (out of memory): next frame
        self._shown_dream = dream.number
        if dream.shot.epoch != self._epoch:
            return  # dreamed before a cut or reset
        frame = dream.shot.frame
        if dream.residual is None:  # not finite: this frame shows the camera
            self._emit(self._at_output_size(frame.image), frame.timestamp)
            return
        self._use_on_stream(dream)
        marks = self.gpu_timer.start()
        marks.mark()  # nothing to carry: the dream is on its own frame
        self._emit(self._compose(frame.image, dream.residual, snap.mix, marks), frame.timestamp, dream)

    def _compose(self, image: np.ndarray, residual: torch.Tensor, mix: float, marks: FrameMarks) -> np.ndarray:
        """The camera frame plus the residual, downloaded: on CUDA the presenter's one wait a
        frame, for this frame's own copy (the residual was finished before it was published)."""
        t = time.perf_counter()
        self.compositor.keep_camera(image, self._output_size(image))
        shown = self.compositor.compose_residual(residual, mix)
        self.clock.add("compose", time.perf_counter() - t)
        t = time.perf_counter()
        out = self.compositor.download(shown)
        self.clock.add("download", time.perf_counter() - t)
        gpu = self.gpu_timer.read(marks, shown.composed, shown.ready)  # all complete: no wait
        if gpu is not None:
            self.clock.add_gpu(gpu)
        return out

    def _use_on_stream(self, dream: Dream) -> None:
        """CUDA: a residual made on the dream's stream is read on ours; tell the allocator, so its
        memory is not reused before our reads are done (no synchronisation)."""
        if self.stream is None or dream.residual is None or dream.number in self._on_stream:
            return
        dream.residual.record_stream(self.stream)
        self._on_stream = {dream.number}

    def _new_epoch(self) -> None:
        """A scene cut, reset, pause or lost camera: no dream from before is shown after it."""
        self._epoch += 1
        self.handoff.withdraw()
        self.handoff.clear()
        self.reprojector.reset()
        self._prev_grey = None

    def _closed(self) -> None:
        """Outside opening hours: black frames (outputs and the watchdog stay alive), no dreaming."""
        self._new_epoch()
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
        self._emit(picture, time.monotonic())
        time.sleep(0.2)  # a handful of frames a second is plenty for a closed screen

    # ----- the camera's rate
    def _note_period(self, frame: Frame) -> None:
        last, self._last_camera = self._last_camera, frame
        if last is None or frame.placeholder or last.placeholder or frame.sequence <= last.sequence:
            return
        self._intervals.append((frame.timestamp - last.timestamp) / (frame.sequence - last.sequence))

    @property
    def period(self) -> float:
        """Seconds between camera frames: the median of the recent ones (1/30 s before any)."""
        if not self._intervals:
            return DEFAULT_PERIOD
        ordered = sorted(self._intervals)
        return max(ordered[len(ordered) // 2], 1e-3)

    # ----- frames out
    def output_size_now(self) -> tuple[int, int]:
        """(width, height) frames go out at now."""
        return self._output_size()

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

    def _emit(self, out: np.ndarray, captured_at: float, dream: Dream | None = None) -> None:
        t = time.perf_counter()
        self._last_output = out
        if self.overlay:
            out = overlay.status_overlay(out.copy(), self.overlay_lines())
        self.outputs.send(out, captured_at)  # encoders time the video by the capture time
        self.clock.add("output", time.perf_counter() - t)
        now = time.monotonic()
        self.clock.count(latency=now - captured_at, age=None if dream is None else now - dream.shot.frame.timestamp)

    @property
    def last_output(self) -> np.ndarray | None:
        """The last frame sent out (before the overlay)."""
        return self._last_output

    # ----- operator
    def _handle_keys(self) -> None:
        for action in self.outputs.poll_keys():
            if action == "quit":
                self.stop_reason = "quit key"
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
                self.stop_reason = "window closed"

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
