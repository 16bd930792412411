"""The dreamer's pace: dream the newest camera frame whenever the last dream is done.

Runs on a thread of its own (docs/architecture.md, "Two paces"). It takes the newest
:class:`~live.handoff.Shot` the presenter offered, carries the previous dream onto it along the
optical flow (temporal feedback, as the one-pace loop did), dreams it, and publishes what the
dream changed (the residual at the dream size) as the newest :class:`~live.handoff.Dream`.
It never waits for the presenter; the presenter never waits for it longer than its budget.

What belongs to the dream lives here: feedback, the endless zoom, morphs and idle looks as the
dream sees them, the governor (it steers the dream's rate), the non-finite guard, and recovery
from a dream that fails (out of memory shrinks the dream; any other error pauses dreaming with
a retry that backs off). On CUDA the dream runs on a stream of its own and finishes it before
publishing, so whoever reads a published residual never waits for work in progress. That finish
is the dreamer's one wait for the GPU per dream: nothing else on its path synchronises (no
Python list as an index, no tensor from Python numbers, no value read from the device but the
finite flags, which come down with the finish; docs/architecture.md, "No host synchronisation
on the frame path").
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from live import temporal
from live.backends import Backend
from live.compose import make_compositor
from live.control.params import Registry, Snapshot
from live.control.presets import Morpher
from live.control.schedule import IdleWatcher
from live.dreamer import DreamCancelled, Dreamer, DreamSettings
from live.dreamsize import round32
from live.governor import Governor
from live.gpu_timing import DREAM_GPU_STAGES, GpuStageTimer
from live.handoff import Dream, DreamHandoff, Shot
from live.model import Model
from live.stages import DREAM_STAGES, StageClock

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0  # first wait before dreaming again after a failure
MIN_RECOVERY_SIDE = 64  # out of memory below this: stop shrinking, pass through and retry
NONFINITE_LOG_EVERY = 60.0  # s between two log lines about NaN/Inf dreams (the first is logged at once)
TAKE_TIMEOUT = 0.25  # s the dreamer waits for a shot before looking at its stop events again


class DreamLoop:
    """The dreamer: takes shots from ``handoff``, publishes dreams to it, on its own thread.

    ``start`` it with the events that stop it, ``join`` it when the show ends. The public
    counters (``clock``, ``nonfinite``) and ``progress_at`` are read by the status line and the
    heartbeat from other threads.
    """

    def __init__(
        self,
        model: Model,
        backend: Backend,
        registry: Registry,
        handoff: DreamHandoff,
        *,
        morpher: Morpher,
        flow_preset: str = "fast",
        seed: int | None = None,
        idle: IdleWatcher | None = None,
        governor: Governor | None = None,
    ) -> None:
        self.model, self.backend, self.registry, self.handoff = model, backend, registry, handoff
        self.morpher, self.idle, self.governor = morpher, idle, governor
        self.device = backend.device
        self.dreamer = Dreamer(backend, model.space, seed=seed)
        self.flows = temporal.FlowEstimator(flow_preset)
        self.feedback = temporal.TemporalFeedback()
        self.compositor = make_compositor(model.space, self.device)  # its upload, on this thread
        self._lo, self._hi = model.space.bounds(torch.zeros(1, 3, 1, 1, device=self.device))
        self.clock = StageClock(DREAM_STAGES)
        # CUDA: the dream's own stream; the presenter's work never queues behind it.
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._finite_host = torch.zeros(2, dtype=torch.bool).pin_memory() if self.stream is not None else None
        self._finished_event = torch.cuda.Event() if self.stream is not None else None
        self.gpu_timer = GpuStageTimer(self.device, DREAM_GPU_STAGES)  # CUDA events; nothing elsewhere
        self.nonfinite = 0  # dreams that came back NaN or infinite (their frames show the camera)
        self._nonfinite_logged = (-math.inf, 0)  # (when, count then)
        self._failures = 0  # consecutive failed dreams; each doubles the wait before a retry
        self._degraded_until = 0.0
        self._degraded_reason = ""
        self._epoch: int | None = None
        self._number = 0
        self.progress_at = time.monotonic()  # the last step or wake-up, for the heartbeat
        self.dream_began: float | None = None  # when the dream in progress started
        self.dream_steps = 0
        self._stops: Sequence[threading.Event] = ()
        self._thread: threading.Thread | None = None

    # ----- the thread
    def start(self, *stops: threading.Event) -> None:
        """Dream on a new thread until one of ``stops`` is set."""
        self._stops = stops
        self.clock = StageClock(DREAM_STAGES)
        self.progress_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="dreamer", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; False if it still runs after ``timeout`` s (a hung step)."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            return False
        self._thread = None
        return True

    @property
    def alive(self) -> bool:
        """Whether the dreamer's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _stopping(self) -> bool:
        return any(stop.is_set() for stop in self._stops)

    def _run(self) -> None:
        context = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with context:
            while not self._stopping():
                self.progress_at = time.monotonic()
                shot = self.handoff.take(TAKE_TIMEOUT)
                if shot is None or self._stopping():
                    continue
                try:
                    self._dream(shot)
                    self._failures = 0
                except DreamCancelled:  # the show is stopping: this dream is abandoned between two steps
                    return
                except Exception as e:  # noqa: BLE001 - nothing in the dream may end the show
                    self._failed(e)
                finally:
                    self.dream_began = None

    # ----- one dream
    def snapshot(self) -> Snapshot:
        """The values the dream uses now: morphs interpolated, the idle look over them."""
        snap = self.morpher.view(self.registry.snapshot())
        if self.idle is not None and self.idle.idle:
            snap = Snapshot(self.idle.apply(dict(snap)), snap.version)
        return snap

    def _dream(self, shot: Shot) -> None:
        started = time.monotonic()
        snap = self.snapshot()
        dw, dh = round32(snap.width), round32(snap.height)
        t = time.perf_counter()
        if shot.epoch != self._epoch:  # a scene cut or reset since the last dream: start clean
            self._epoch = shot.epoch
            self.flows.reset()
            self.feedback.reset()
        if self.idle is not None and self.flows.previous is not None:
            self.idle.observe(temporal.change_score(self.flows.previous, shot.grey))
        image = shot.frame.image
        flow = self.flows.estimate(image, grey=shot.grey, out_size=(dh, dw))
        self.clock.add("flow", time.perf_counter() - t)

        marks = self.gpu_timer.start()
        t = time.perf_counter()
        cam = self.compositor.upload(image, (image.shape[1], image.shape[0]), (dw, dh))
        self.clock.add("upload", time.perf_counter() - t)
        marks.mark()

        t = time.perf_counter()
        flow_t = temporal.flow_to_tensor(flow, self.device) if flow is not None and snap.flow else None
        x = temporal.carry(self.feedback, cam, flow_t, snap.feedback, (self._lo, self._hi),
                           snap.zoom, snap.rotate, (snap.drift_x, snap.drift_y))
        if snap.steps > 0:
            settings = DreamSettings(snap.steps, snap.step_size, snap.octaves, snap.octave_scale, snap.jitter)
            self.dream_began, self.dream_steps = time.monotonic(), 0
            dreamed = self.dreamer.dream(x, snap.objective, settings, checkpoint=self._checkpoint)
        else:
            dreamed = x
        self.feedback.finish(cam, dreamed)
        residual: Tensor | None = dreamed - cam
        marks.mark()
        dream_ok, start_ok = self._finished(dreamed, x)
        self.clock.add("dream", time.perf_counter() - t)
        gpu = self.gpu_timer.read(marks)  # after the finish: every event has completed
        if gpu is not None:
            self.clock.add_gpu(gpu)
        if not dream_ok:
            residual = None
            self._nonfinite(start_ok())
        self._number += 1
        self.handoff.publish(Dream(residual, shot, self._number, started, time.monotonic()))
        self.clock.count()
        if self.governor is not None:
            adjustment = self.governor.observe(time.monotonic() - started, self.registry.snapshot())
            if adjustment is not None:
                self.registry.update(adjustment.values(), source="governor")

    def _finished(self, dreamed: Tensor, start: Tensor) -> tuple[bool, Callable[[], bool]]:
        """Wait for this dream to finish on its device: whether the dream is finite, and how to ask
        whether its input was (only asked when it was not: one value read per dream).

        On CUDA the two flags come down through a pinned buffer behind an event recorded on the
        dream's own stream: this thread waits for its own work only, with no stream-wide
        synchronisation (the CUDA tests run both paces under ``set_sync_debug_mode("error")``)."""
        flags = torch.stack([torch.isfinite(dreamed).all(), torch.isfinite(start).all()])
        host = flags
        if self._finite_host is not None and self._finished_event is not None:
            self._finite_host.copy_(flags, non_blocking=True)
            self._finished_event.record(self.stream)
            self._finished_event.synchronize()
            host = self._finite_host
        return bool(host[0]), lambda: bool(host[1])

    def _checkpoint(self) -> None:
        """Called by the dreamer after every step: progress for the heartbeat, and a stop lands here."""
        self.progress_at = time.monotonic()
        self.dream_steps += 1
        if self._stopping():
            raise DreamCancelled

    # ----- when a dream goes wrong
    def _nonfinite(self, start_ok: bool) -> None:
        """The dream came back NaN or infinite (fp16 overflow, bad weights, a backend fault): its
        frame shows the camera, the carried dream is cleared so the next dream starts clean, and
        the event is counted and logged with its cause (at once, then at most once a minute)."""
        self.nonfinite += 1
        self.feedback.reset()
        if not start_ok:
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

    def _failed(self, error: Exception) -> None:
        """A dream raised: shrink on out-of-memory, else let the presenter pass the camera through
        for a while (longer each time it fails again) and retry. Logged once per incident."""
        self.feedback.reset()
        self.flows.reset()
        self.handoff.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        snap = self.registry.snapshot()
        dw, dh = round32(snap.width), round32(snap.height)
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

    def degraded(self) -> str | None:
        """Why the dream is paused (a failure, waiting to be retried), or None while it may dream."""
        return self._degraded_reason if time.monotonic() < self._degraded_until else None

    # ----- reporting
    def in_progress(self) -> str:
        """``this dream: N steps in S s so far`` while a dream has run over a second, else ""."""
        began = self.dream_began
        if began is None or time.monotonic() - began <= 1.0:
            return ""
        return f"this dream: {self.dream_steps} steps in {time.monotonic() - began:.1f} s so far"


