"""The live show's wiring: a source, two paces and the outputs (docs/architecture.md, "Two paces").

- The *presenter* (:mod:`live.presenter`, on the thread that calls :meth:`LiveLoop.run`) takes
  every camera frame at the source's rate and sends it out with the newest dream carried onto it.
- The *dreamer* (:mod:`live.dream_loop`, a thread of its own) dreams the newest camera frame
  whenever it has finished the last, with temporal feedback.
- Between them, one :class:`live.handoff.DreamHandoff`: latest-value slots, never a queue.

This module wires and times; the maths lives in ``dreamer``, ``temporal``, ``reproject`` and
the backends. Nothing in here may crash the show: a source that drops out shows its
placeholder, an output that fails is switched off by :class:`live.outputs.Fanout`, bad
parameters never reach the loop (the registry rejects them), and a dream that comes back NaN or
infinite shows the camera for that frame instead of a black one.

Nothing in here may make the show deaf either: the dreamer checks in after every step, so a stop
lands within a step, and status lines and watchdog pings come from a heartbeat thread that
follows both paces' progress rather than their frames (:mod:`live.service.heartbeat`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import torch

from live.backends import Backend
from live.control.params import Registry
from live.control.presets import Morpher
from live.control.schedule import IdleWatcher, OpeningHours, PresetCycler
from live.dream_loop import RETRY_SECONDS, DreamLoop  # noqa: F401 - RETRY_SECONDS: the first retry wait
from live.dreamsize import round32  # the loop's dream size rounding (re-exported)
from live.governor import Governor
from live.handoff import DreamHandoff
from live.limits import DreamLimit
from live.model import Model
from live.objectives import Objective
from live.outputs import Fanout
from live.presenter import CARRY_PRESET, Presenter
from live.service.heartbeat import Heartbeat
from live.sources import Source, Status
from live.stages import STAGES, StageClock  # noqa: F401 - STAGES: every stage's name, for gpu-check

log = logging.getLogger(__name__)

DREAMER_STOP_WAIT = 5.0  # s the show waits for the dream step in progress when it stops (then leaves it)
LOOKAHEAD_AFTER = 10  # frames before the loop's latency is given to the sound's beat triggers


@dataclass
class LoopReport:
    """What a run did: frames out and dreams made, their timing, and the reason it stopped."""

    frames: int
    seconds: float
    fps: float
    latency_ms: float
    breakdown: str
    dream_share: float
    stopped_because: str
    dreams: int = 0
    dream_fps: float = 0.0
    dream_age_ms: float | None = None  # mean age of the dream on the frames that carried one
    latency_p95_ms: float = math.nan
    # GPU time per stage from CUDA events, each pace per its own unit:
    # "shown: carry 0.2 compose 0.3 download 0.1 ms/frame; dream: upload 0.1 dream 15.2 ms/dream" ("" off CUDA)
    gpu_breakdown: str = ""


class LiveLoop:
    """The show: ``source`` through the dream to ``outputs``, reading ``registry``, at two paces.

    Construct once, then :meth:`run` until a stop event, a frame budget or a deadline.
    ``present``: ``camera`` (default: every camera frame goes out, at the source's rate, the
    newest dream carried onto it) or ``dream`` (each dream when it finishes, on its own frame).
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
        present: str = "camera",
        overlay: bool = False,
        flow_preset: str = "fast",
        carry_preset: str = CARRY_PRESET,
        carry_method: str = "direct",
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
        self.status_every = status_every
        self.device = backend.device
        self.governor = governor
        if governor is not None:
            registry.subscribe(governor.registry_listener)
        self.watchdog = watchdog  # systemd's watchdog interval (s), or None: no pings
        self.morpher = Morpher(registry)  # layer and preset changes cross-fade over morph_time
        self.handoff = DreamHandoff()
        self.dream_loop = DreamLoop(model, backend, registry, self.handoff, morpher=self.morpher,
                                    flow_preset=flow_preset, seed=seed, idle=idle, governor=governor)
        self.presenter = Presenter(
            source, outputs, registry, self.handoff, self.dream_loop, model.space, self.device,
            morpher=self.morpher, present=present, carry_preset=carry_preset, carry_method=carry_method,
            overlay=overlay, overlay_lines=self._overlay_lines, screenshot_dir=screenshot_dir, hours=hours,
            closed_look=closed_look, cycler=cycler, idle=idle, on_tick=on_tick, output_size=output_size,
        )  # fmt: skip
        self.present = present
        if self.device.type == "cuda":
            # Set-up work queued on the default stream (the input bounds, the compositors' grey
            # levels) is finished before either pace reads it on its own stream, which does not wait
            # for the default one. Once, here; never per frame.
            torch.cuda.synchronize(self.device)

    # ----- what other parts read
    @property
    def clock(self) -> StageClock:
        """The presenter's clock: frames out, their stages and latency."""
        return self.presenter.clock

    @property
    def dream_clock(self) -> StageClock:
        """The dreamer's clock: dreams made and their stages."""
        return self.dream_loop.clock

    @property
    def feedback(self):
        """The dreamer's temporal feedback (the carried residual)."""
        return self.dream_loop.feedback

    @property
    def nonfinite(self) -> int:
        """Dreams that came back NaN or infinite (their frames showed the camera)."""
        return self.dream_loop.nonfinite

    @property
    def overlay(self) -> bool:
        return self.presenter.overlay

    @overlay.setter
    def overlay(self, on: bool) -> None:
        self.presenter.overlay = on

    def stage_totals(self) -> dict[str, float]:
        """Seconds per stage of both paces (the presenter's per frame out, the dreamer's per dream)."""
        return {**self.presenter.clock.totals, **self.dream_loop.clock.totals}

    # ----- the show
    def run(
        self,
        stop: threading.Event | None = None,
        max_frames: int | None = None,
        duration: float | None = None,
        on_frame: Callable[[int], None] | None = None,
    ) -> LoopReport:
        """Run until ``stop`` is set, ``max_frames`` frames went out, ``duration`` seconds passed,
        the source ended, or the operator quit. ``on_frame(n)`` is called after each presenter
        iteration with the frames out so far (readiness for systemd hooks in here). A stop lands
        between two dream steps: a long dream is abandoned, not finished. Status lines and watchdog
        pings come from a :class:`Heartbeat` while this runs."""
        stop = stop or threading.Event()
        ended = threading.Event()  # the presenter has stopped: the dreamer follows
        self.presenter.clock = StageClock(self.presenter.clock.stages)
        deadline = time.monotonic() + duration if duration else math.inf
        self.presenter.progress_at = time.monotonic()
        self.handoff.reopen()
        with Heartbeat(self._progress, status=self.status_line, status_every=self.status_every,
                       watchdog=self.watchdog):
            self.dream_loop.start(stop, ended)
            try:
                self.presenter.run(stop, max_frames, duration, deadline, on_frame)
            finally:
                ended.set()
                self.handoff.close()
                self._join_dreamer()
        report = self.report()
        log.info(
            "stopped (%s) after %d frames in %.1f s: %.2f fps, latency %.0f ms; %d dreams, %.2f a second, "
            "dream age %s; %s%s",
            report.stopped_because, report.frames, report.seconds, report.fps, report.latency_ms, report.dreams,
            report.dream_fps, "-" if report.dream_age_ms is None else f"{report.dream_age_ms:.0f} ms",
            report.breakdown, f"; GPU {report.gpu_breakdown}" if report.gpu_breakdown else "",
        )  # fmt: skip
        return report

    def _join_dreamer(self) -> None:
        if self.dream_loop.join(1.0):
            return
        log.warning("waiting for the dream step in progress (up to %.0f s more)", DREAMER_STOP_WAIT)
        if not self.dream_loop.join(DREAMER_STOP_WAIT):
            log.error("the dream step did not return (a hung driver call?); leaving the dreamer's thread behind")

    def _progress(self) -> float:
        """The older of the two paces' last progress: a dream stuck in a step (a hung driver call)
        stops the watchdog's pings even while the presenter shows the camera."""
        return min(self.presenter.progress_at, self.dream_loop.progress_at)

    # ----- reporting
    def _overlay_lines(self) -> list[str]:
        snap = self.registry.snapshot()
        lines = [
            f"{self.clock.fps():.1f} fps, dream {self.dream_clock.fps():.1f} fps  {snap.objective}",
            f"steps {snap.steps}  feedback {snap.feedback:.2f}  {self.backend.describe()}",
        ]
        if self.model.weights.is_random:
            lines.append("RANDOM WEIGHTS (demo)")
        return lines

    def _output_size_text(self) -> str:
        return "x".join(map(str, self.presenter.output_size_now()))

    def status_line(self) -> str:
        """One line for the log: both rates, latency, the dream's age, the look, stages, source, outputs."""
        snap = self.registry.snapshot()
        c, d = self.clock, self.dream_clock
        age = c.mean_age_ms()
        line = (
            f"{c.fps():.2f} fps, latency {c.mean_latency_ms():.0f} ms, dream {d.fps():.2f} fps "
            f"(age {'-' if age is None else f'{age:.0f} ms'}), "
            f"{snap.objective} x{snap.steps} at {round32(snap.width)}x{round32(snap.height)}"
            f" -> {self._output_size_text()}; shown: {c.per_frame()}; dream: {d.per_frame('dream')}; "
            f"{'GPU ' + gpu + '; ' if (gpu := self.gpu_breakdown()) else ''}"
            f"source {self.source.status}, {self.source.dropped} dropped; {self.outputs.summary()}"
        )
        progress = self.dream_loop.in_progress()
        if progress:
            line += f"; {progress}"
        if self.nonfinite:
            line += f"; {self.nonfinite} non-finite dream(s) shown as the camera"
        return line

    def status(self) -> dict[str, object]:
        """What OSC's /dream/status answers: both rates, latency and the dream's age, layer,
        objective, steps, backend, size, source, outputs."""
        snap = self.registry.snapshot()
        objective: Objective = snap.objective
        last = self.presenter.last_output
        age = self.clock.mean_age_ms()
        return {
            "fps": round(self.clock.fps(), 2),
            "dream_fps": round(self.dream_clock.fps(), 2),
            "dream_age_ms": round(age, 1) if age is not None else -1.0,
            "latency_ms": round(self.clock.mean_latency_ms(), 1),
            "present": self.present,
            "layer": objective.layers[-1] if objective.layers else "",
            "objective": str(objective),
            "steps": snap.steps,
            "backend": self.backend.describe(),
            "size": f"{round32(snap.width)}x{round32(snap.height)}",
            "source": str(self.source.status),
            "weights": "random" if self.model.weights.is_random else self.model.weights.kind,
            "outputs": self.outputs.summary(),  # state, bitrate and drops per output; keys masked
            # for the web page's status panel
            "output_size": f"{last.shape[1]}x{last.shape[0]}" if last is not None else "",
            "source_dropped": self.source.dropped,
            "governor": _governor_state(self.governor),
            "nonfinite": self.nonfinite,
        }

    def gpu_breakdown(self) -> str:
        """Both paces' GPU time per stage from CUDA events, each per its own unit, or "" off CUDA."""
        parts = [f"{name}: {text}" for name, text in (("shown", self.clock.gpu_breakdown()),
                                                      ("dream", self.dream_clock.gpu_breakdown("dream"))) if text]
        return "; ".join(parts)

    def lookahead(self) -> float:
        """Seconds from a registry change to the frame that shows it, as measured here: the wait
        for the presenter's next frame to begin (half a frame on average) plus its glass-to-output
        latency (capture to sent). What the sound's beat triggers fire early by
        (docs/architecture.md, *Sound*)."""
        c = self.clock
        if c.frames < LOOKAHEAD_AFTER:
            return 0.0  # not measured yet (the first frames include the start-up)
        return 0.5 / max(c.fps(), 1e-3) + c.latency / c.frames

    def report(self) -> LoopReport:
        c, d = self.clock, self.dream_clock
        seconds = time.monotonic() - c.started
        return LoopReport(
            frames=c.frames,
            seconds=seconds,
            fps=c.frames / max(seconds, 1e-9),
            latency_ms=c.mean_latency_ms(),
            breakdown=f"shown: {c.per_frame()}; dream: {d.per_frame('dream')}",
            dream_share=d.dream_share(),
            stopped_because=self.presenter.stop_reason or "stopped",
            dreams=d.frames,
            dream_fps=d.frames / max(seconds, 1e-9),
            dream_age_ms=c.mean_age_ms(),
            latency_p95_ms=c.latency_percentile_ms(0.95),
            gpu_breakdown=self.gpu_breakdown(),
        )

    def screenshot(self) -> Path | None:
        """Save the last output frame as a PNG in the screenshot directory; returns its path."""
        return self.presenter.screenshot()


def _governor_state(governor: Governor | None) -> str:
    """One line on what the governor is doing, for status."""
    if governor is None:
        return "off"
    now = f": {governor.current}" if governor.current is not None else ""
    ceiling = f" (ceiling {governor.ceiling})" if governor.ceiling not in (None, governor.current) else ""
    return f"holding {governor.target_fps:g} dreams a second{now}{ceiling}"


def outputs_status(outputs: Fanout) -> list[dict[str, object]]:
    """Each output's frames sent and dropped, and why it stopped if it did (the page's table)."""
    return [{"name": o.name, "sent": o.sent, "dropped": o.dropped, "failure": o.failure} for o in outputs.outputs]


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
    # camera: every camera frame goes out with the newest dream carried onto it; dream: each dream
    # when it finishes (docs/architecture.md, "Two paces")
    present: str = "camera"
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
    from concurrent import futures
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
        # The rate frames really come at: the source's (every camera frame goes out), at most
        # fps_cap. Encoders declare it and give each packet the real gap before it.
        rate = min(_source_rate(opts, source), snap.fps_cap)
        outputs.open(output_size[0], output_size[1], rate)
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
                if stop.is_set():
                    # The load cannot be abandoned; wait for it quietly. (Looping on here without
                    # waiting held the GIL from the loading thread: a stop made the load 10x slower.)
                    futures.wait([loading])
                    break
                outputs.send_placeholder("deepdream-live: loading the network...")
                if "quit" in outputs.poll_keys():
                    stop.set()
                stop.wait(0.2)
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
            present=opts.present, overlay=opts.overlay, flow_preset=opts.flow_preset, seed=opts.seed,
            screenshot_dir=opts.screenshot_dir, status_every=opts.status_every,
            hours=opts.hours, closed_look=opts.closed_look,
            cycler=PresetCycler(presets, list(opts.preset_cycle), opts.preset_cycle_minutes)
            if opts.preset_cycle else None,
            idle=_idle_watcher(opts, registry), governor=_governor(opts), on_tick=on_tick,
            watchdog=notify.watchdog_interval(),
            output_size=output_size,
        )  # fmt: skip
        loop_ref.append(loop)
        log.info("running: %s -> %s, %s; dreaming at %dx%d, output %dx%d at %g fps, presenting %s", source.describe(),
                 outputs.summary(), backend.describe(), width, height, *output_size, rate,
                 "every camera frame" if opts.present == "camera" else "each dream as it finishes")

        def on_frame(n: int) -> None:
            if n == 1:
                notify.ready(f"dreaming: {source.describe()} on {backend.describe()}")

        # Everything made so far (PyTorch, the network, the servers: some 200,000 objects) lives
        # as long as the show. Out of the collector's walk, a full collection no longer stops
        # every thread for 40-120 ms, a hitch in the picture and in the doors' answers every few
        # minutes; given back when the show ends (a reload or the next show in this process).
        gc.freeze()
        try:
            return loop.run(stop, max_frames=opts.max_frames, duration=opts.duration, on_frame=on_frame)
        finally:
            gc.unfreeze()
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


def _source_rate(opts: ShowOptions, source: Source | None) -> float:
    """Frames per second the source delivers: what it says (a camera's mode, the test scene), a
    video file's own rate, else the rate a camera is asked for."""
    from live.sources.files import MAX_FILE_FPS, VIDEO_EXTENSIONS

    if source is not None and source.nominal_fps:
        return float(source.nominal_fps)
    path = Path(opts.source.strip()).expanduser()
    if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
        video = cv2.VideoCapture(str(path))
        try:
            rate = float(video.get(cv2.CAP_PROP_FPS))
        finally:
            video.release()
        if 0 < rate <= MAX_FILE_FPS:
            return rate
    return float(opts.capture_fps)


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
