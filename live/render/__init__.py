"""``deepdream-live render IN OUT``: a video file dreamed frame by frame, as offline DeepDream
video tools do, with the live show's own building blocks.

- **Every frame**, none dropped, in order; the output has the input's frame times, so its frame
  rate and duration are the input's (variable-rate inputs stay variable).
- **The live look**: the same parameters (flags, a preset, a site config's ``[dream]``), the same
  :class:`~live.dreamer.Dreamer`, optical flow (:class:`~live.temporal.FlowEstimator`) and
  :class:`~live.temporal.TemporalFeedback` between consecutive frames, scene cuts included.
  The dream runs at the registry's size (fitted to the input's aspect); its residual is laid over
  the full-resolution frame, as ``image`` does, so the output keeps the input's resolution.
- **Repeatable**: a fixed seed (``--seed``, default 0) gives the same frames on the same machine
  (CPU; a captured CUDA graph draws its jitter from the device's generator). Each frame draws
  its jitter from the seed and its own frame number (:func:`frame_seed`), so what a frame gets
  does not depend on where dreaming began: a segment of a farm render that starts at a scene cut
  dreams exactly the frames a whole run dreams (docs/architecture.md, *Renders across machines*).
- **Sound kept**: audio streams are copied packet for packet, never decoded.
- **Interruptible**: Ctrl-C finishes the frame in hand and closes the file, playable; a state
  file beside it (``OUT.render-state``) lets ``--resume`` go on from there: the finished frames
  are copied over untouched and the dream continues with the saved feedback, flow and random
  state, so the result is the unbroken run's. A killed render resumes from its last checkpoint
  (every ``keyframe_seconds`` of video, each at a keyframe).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from live import temporal
from live.compose import Compositor, make_compositor
from live.control.params import Registry, Snapshot
from live.dreamer import Dreamer, DreamSettings
from live.errors import InputError, OutputError, UsageError
from live.outputs.encoder import DEFAULT_CRF, EncoderSettings, even_size, pick_codec
from live.outputs.targets import check_record_path, parse_target

log = logging.getLogger(__name__)

STATE_SUFFIX = ".render-state"
KEEP_CHECKPOINTS = 4  # the newest may be ahead of what a killed process got onto the disk (encoder look-ahead)


@dataclass
class RenderJob:
    """What to render and how (see :func:`render`)."""

    source: Path
    target: Path
    registry: Registry = field(default_factory=Registry)
    weights: str | None = None
    model: str = "torchvision"
    backend: str = "auto"
    device: str = "auto"
    seed: int = 0
    flow_preset: str = "fast"
    codec: str | None = None
    bitrate: int | None = None
    crf: int = DEFAULT_CRF
    keyframe_seconds: float = 2.0
    resume: bool = False
    progress: bool | None = None  # None: a bar when stderr is a terminal
    on_frame: Callable[[int], None] | None = None  # after each finished frame (tests, GUIs)
    # the look per frame time (seconds), e.g. the input's sound through an audio mapping
    # (live.audio.timeline.AudioLook); None: the registry's one look for every frame
    look: Callable[[float], Snapshot] | None = None


@dataclass(frozen=True)
class RenderReport:
    """What a render did."""

    frames: int  # frames in the output
    dreamed: int  # frames dreamed by this run (fewer than ``frames`` after --resume)
    total: int | None  # frames in the input, when the container says
    audio_packets: int
    seconds: float
    interrupted: bool


def state_path(target: Path) -> Path:
    """Where the resume state of ``target`` lives."""
    return target.with_name(target.name + STATE_SUFFIX)


def frame_seed(seed: int, index: int) -> int:
    """The jitter seed of frame ``index`` of a render seeded ``seed``: a function of the two
    alone, so a frame is dreamed alike whichever process or segment dreams it."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def dream_size(snap: Snapshot, width: int, height: int) -> tuple[int, int]:
    """The registry's size fitted to the input's aspect, in multiples of 32, never above the input."""
    scale = min(snap.width / width, snap.height / height, 1.0)
    return max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32)


def fingerprint(job: RenderJob, snap: Snapshot, size: tuple[int, int]) -> str:
    """What must not change between a render and its --resume (the input, the look, the seed,
    the weights, the encoder), for the dream size ``size``."""
    stat = job.source.stat()
    values = {k: str(snap[k]) for k in sorted(snap) if k not in ("reset", "freeze", "pause", "fps_cap", "morph_time")}
    parts = [str(job.source.resolve()), str(stat.st_size), str(int(stat.st_mtime)), json.dumps(values),
             str(size), str(job.seed), str(job.weights), job.model, job.flow_preset, str(job.codec), str(job.crf),
             str(job.bitrate), str(getattr(job.look, "fingerprint", ""))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class Interrupt:
    """Ctrl-C (SIGINT) or SIGTERM sets ``asked`` and logs ``said``; a second one stops at once.
    Signal handlers only on the main thread (elsewhere the event is the only way in)."""

    def __init__(self, asked: threading.Event | None = None,
                 said: str = "finishing this frame, then closing the file (again to stop at once)") -> None:
        self.asked = asked if asked is not None else threading.Event()
        self.said = said
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("%s: %s", signal.Signals(signum).name, self.said)
        self.asked.set()
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def render(job: RenderJob) -> RenderReport:
    """Dream every frame of ``job.source`` into ``job.target``; see the module docstring.

    Raises InputError (unreadable input), OutputError (unwritable output), UsageError (bad
    settings, or a --resume that does not match the broken-off render)."""
    import av

    from live.backends import open_backend
    from live.model import load_model
    from live.render.plan import open_film

    target = parse_target(job.target)
    if target.network:
        raise UsageError(f"render writes a file (.mp4, .mov, .mkv), not a stream: {target.shown}")
    check_record_path(target)
    if not job.source.is_file():
        raise InputError(f"cannot render {job.source}: no such file")
    with open_film(job.source) as source:
        vin = source.streams.video[0]
        vin.thread_type = "AUTO"
        audio_in = list(source.streams.audio)
        width, height = vin.codec_context.width, vin.codec_context.height
        size = even_size(width, height)
        rate = vin.average_rate or vin.guessed_rate or Fraction(30)
        total = vin.frames or None
        snap = job.registry.snapshot()
        dw, dh = dream_size(snap, width, height)
        key = fingerprint(job, snap, (dw, dh))

        model = load_model(job.weights, model=job.model, progress=job.progress is not False)
        backend = open_backend(job.backend, model, job.device)
        path = FramePath(model, backend, snap, (dw, dh), job.seed, job.flow_preset, look=job.look)
        settings = EncoderSettings(codec=job.codec, bitrate=job.bitrate, crf=job.crf, keyframe_seconds=job.keyframe_seconds)

        start, copied_audio = 0, 0
        resumed_from: Path | None = None
        if job.resume:
            start, copied = _load_resume(job, key, path)
            resumed_from = copied
        out = av.open(str(target.path), "w", format=target.format, container_options=target.container_options)
        try:
            vout, encoder = _video_stream(out, settings, size, vin, rate, resumed_from)
            audio_out = {}
            for a in audio_in:
                try:
                    audio_out[a.index] = out.add_stream_from_template(a)
                except (av.FFmpegError, ValueError) as e:
                    raise UsageError(f"the audio ({a.codec_context.name}) cannot be copied into {target.path.suffix}: "
                                     f"{e}; render to .mkv, which takes any codec") from None
            resume_time = None
            if resumed_from is not None:
                resume_time = _frame_time(job.source, start)
                copied_audio = _copy_finished(resumed_from, job.source, out, vout, audio_out, start, resume_time)
            report = _run(job, source, vin, audio_in, out, vout, encoder, audio_out, path, size, start, resume_time,
                          total, key)
        finally:
            try:
                out.close()
            except Exception as e:  # noqa: BLE001 - what could be written, is
                log.warning("closing %s: %s", target.path, e)
        if resumed_from is not None:
            resumed_from.unlink(missing_ok=True)
    report = RenderReport(report.frames, report.dreamed, total, report.audio_packets + copied_audio, report.seconds,
                          report.interrupted)
    if report.interrupted:
        log.info("interrupted after %d of %s frames: %s plays; continue with --resume", report.frames,
                 total or "?", target.path)
    else:
        state_path(target.path).unlink(missing_ok=True)
        log.info("rendered %d frames to %s in %.0f s", report.frames, target.path, report.seconds)
    return report


def configure_encoder(cc: Any, codec: str, settings: EncoderSettings, size: tuple[int, int], time_base: Fraction,
                      rate: Fraction) -> None:
    """Encoder settings for a render (the stream's own encoder, a standalone one on resume, or a
    farm segment's: every keyframe an IDR with its parameter sets, no B-frames, so pieces join)."""
    cc.width, cc.height = size
    cc.pix_fmt = "yuv420p"
    cc.time_base = time_base
    cc.framerate = rate
    cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1
    cc.gop_size = max(1, round(settings.keyframe_seconds * rate))
    # No B-frames: packets in frame order, so a broken-off file can be continued; parameter sets
    # repeated at every keyframe, so frames copied from it decode beside a new encoder's.
    opts = {"bf": "0", "forced-idr": "1"}
    if codec == "libx264":
        opts.update(preset="medium", **{"x264-params": "repeat-headers=1"})
    if settings.bitrate:
        cc.bit_rate = settings.bitrate
    elif codec == "libx264":
        opts["crf"] = str(settings.crf)
    cc.options = opts


def _video_stream(out: Any, settings: EncoderSettings, size: tuple[int, int], vin: Any, rate: Fraction,
                  partial: Path | None) -> tuple[Any, Any]:
    """The output video stream and the encoder feeding it. Resuming, the stream is the broken-off
    file's (its finished packets are copied in as they are) and a new encoder continues it."""
    import av

    codec = pick_codec(settings)
    if partial is None:
        stream = out.add_stream(codec, rate=rate)
        stream.time_base = vin.time_base
        configure_encoder(stream.codec_context, codec, settings, size, vin.time_base, rate)
        return stream, stream.codec_context
    with av.open(str(partial)) as old:
        stream = out.add_stream_from_template(old.streams.video[0])
    stream.time_base = vin.time_base
    stream.codec_context.framerate = rate  # a template copies the codec's parameters, not the stream's rate
    encoder = av.CodecContext.create(codec, "w")
    configure_encoder(encoder, codec, settings, size, vin.time_base, rate)
    return stream, encoder


def _frame_time(source: Path, index: int) -> float:
    """The presentation time of video frame ``index`` of ``source`` (packets only, no decoding)."""
    import av

    with av.open(str(source)) as c:
        v = c.streams.video[0]
        times = sorted(p.pts for p in c.demux(v) if p.pts is not None)
        return float(times[index] * v.time_base) if index < len(times) else float("inf")


def _copy_finished(old: Path, source: Path, out: Any, vout: Any, audio_out: dict[int, Any], frames: int,
                   resume_time: float) -> int:
    """Copy the first ``frames`` video packets of the broken-off file, interleaved with the
    source's audio before ``resume_time``; returns the audio packets copied."""
    import av

    audio: list[Any] = []
    with av.open(str(source)) as src:
        streams = [a for a in src.streams.audio if a.index in audio_out]
        if streams:
            for packet in src.demux(streams):
                if packet.dts is None or packet.pts is None:
                    continue
                if float(packet.pts * packet.time_base) >= resume_time:
                    continue
                packet.stream = audio_out[packet.stream.index]
                audio.append(packet)
        copied, a = 0, 0
        with av.open(str(old)) as partial:
            v = partial.streams.video[0]
            for packet in partial.demux(v):
                if packet.dts is None:
                    continue
                if copied == frames:
                    break
                t = float(packet.pts * v.time_base)
                while a < len(audio) and float(audio[a].pts * audio[a].time_base) <= t:
                    out.mux(audio[a])
                    a += 1
                packet.stream = vout
                out.mux(packet)
                copied += 1
        for packet in audio[a:]:
            out.mux(packet)
    if copied < frames:
        raise UsageError(f"cannot resume: {old} holds {copied} frames, the saved state expects {frames}; "
                         "render again without --resume")
    return len(audio)


def _run(job, source, vin, audio_in, out, vout, encoder, audio_out, path, size, start, resume_time, total,
         key) -> RenderReport:
    import av
    from tqdm import tqdm

    w, h = size
    interval = max(1, round(job.keyframe_seconds * float(vin.average_rate or vin.guessed_rate or 30)))
    frame_ticks = max(1, round(1 / (float(vin.average_rate or vin.guessed_rate or 30) * vin.time_base)))
    checkpoints: list[dict[str, Any]] = _read_checkpoints(job.target) if job.resume else []
    pending: dict[str, Any] | None = None
    index, dreamed, audio_packets, interrupted = 0, 0, 0, False
    started = time.monotonic()
    first_audio_pts = resume_time if resume_time is not None else float("-inf")
    rate = vin.average_rate or vin.guessed_rate or 30
    with Interrupt() as stop, tqdm(total=total, initial=start, desc="rendering", unit="frame",
                                    disable=None if job.progress is None else not job.progress) as bar:
        for packet in source.demux(vin, *audio_in):
            if packet.stream is not vin:
                if packet.dts is None or packet.pts is None:
                    continue
                if float(packet.pts * packet.time_base) < first_audio_pts:
                    continue  # already copied with the broken-off file's frames
                packet.stream = audio_out[packet.stream.index]
                out.mux(packet)
                audio_packets += 1
                continue
            for frame in packet.decode():
                if index < start:
                    index += 1
                    continue
                if stop.asked.is_set():
                    interrupted = True
                    break
                state = _capture(index, path) if index % interval == 0 or index == start else None
                at = float(frame.pts * vin.time_base) if frame.pts is not None else index / float(rate)
                bgr = path.dream(frame.to_ndarray(format="bgr24")[:h, :w], index, at)
                out_frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p", dst_colorspace="ITU709")
                out_frame.pts = frame.pts
                out_frame.time_base = vin.time_base
                out_frame.duration = frame.duration or frame_ticks  # the last frame keeps its length
                if state is not None:
                    out_frame.pict_type = av.video.frame.PictureType.I  # a checkpoint starts a fragment
                _mux(out, vout, encoder.encode(out_frame))
                if pending is not None:  # the keyframe after it is muxed: the frames before it are out
                    checkpoints = _save_checkpoint(job.target, key, checkpoints, pending)
                pending = state
                index += 1
                dreamed += 1
                bar.update(1)
                if job.on_frame is not None:
                    job.on_frame(index)
            if interrupted:
                break
        _mux(out, vout, encoder.encode(None))
        if interrupted:
            # Everything before `index` is in the file now: the exact place to go on from.
            _save_checkpoint(job.target, key, checkpoints, _capture(index, path))
    return RenderReport(index, dreamed, total, audio_packets, time.monotonic() - started, interrupted)


def _mux(out: Any, stream: Any, packets: list[Any]) -> None:
    for packet in packets:
        packet.stream = stream
        out.mux(packet)


class FramePath:
    """One process's frame path, as the live loop dreams a frame (flow, feedback, zoom, ascent),
    its residual laid over the full-size frame with the loop's compositor. Frames go in order;
    :meth:`dream` takes each with its frame number (its jitter seed, :func:`frame_seed`). Used by
    :func:`render` and by each segment of a farm render (``live/render/segment.py``)."""

    def __init__(self, model: Any, backend: Any, snap: Snapshot, dream_size: tuple[int, int], seed: int,
                 flow_preset: str, look: Callable[[float], Snapshot] | None = None) -> None:
        self.snap = snap
        self.look = look  # the look per frame time (RenderJob.look), else ``snap`` for every frame
        self._last_reset: int | None = None
        self.seed = seed
        self.device: torch.device = backend.device
        self.dream_size = dream_size
        self.dreamer = Dreamer(backend, model.space, seed=seed)
        self.flows = temporal.FlowEstimator(flow_preset, repeatable=True)
        self.feedback = temporal.TemporalFeedback()
        self.compositor: Compositor = make_compositor(model.space, self.device)
        self.settings = DreamSettings(snap.steps, snap.step_size, snap.octaves, snap.octave_scale, snap.jitter)
        self.bounds = model.space.bounds(torch.zeros(1, 3, 1, 1, device=self.device))

    def dream(self, bgr: np.ndarray, index: int, at: float = 0.0) -> np.ndarray:
        """Frame ``index`` (uint8 BGR, even size), shown at ``at`` seconds, dreamed; the same size."""
        snap, settings = self.snap, self.settings
        if self.look is not None:  # the sound's look at this frame's time (live/audio/timeline.py)
            snap = self.look(at)
            settings = DreamSettings(snap.steps, snap.step_size, snap.octaves, snap.octave_scale, snap.jitter)
            # A reset the look asks for clears the carried dream, as a scene cut does. The first
            # frame (a start, or a resume whose saved state already holds earlier resets) is the
            # baseline: a reset there has nothing to clear.
            if self._last_reset is not None and snap.reset != self._last_reset:
                self.flows.reset()
                self.feedback.reset()
            self._last_reset = snap.reset
        self.dreamer.generator.manual_seed(frame_seed(self.seed, index))
        return _dream(bgr, self.flows, self.feedback, self.dreamer, self.compositor, snap, settings,
                      *self.dream_size, *self.bounds, self.device)


def _dream(bgr: np.ndarray, flows: temporal.FlowEstimator, feedback: temporal.TemporalFeedback, dreamer: Dreamer,
           compositor: Compositor, snap: Snapshot, settings: DreamSettings, dw: int, dh: int, lo: torch.Tensor,
           hi: torch.Tensor, device: torch.device) -> np.ndarray:
    """One frame as the live loop dreams it (flow, feedback, zoom, ascent), its residual laid over
    the full-size frame with the loop's compositor."""
    small_grey = flows.grey(bgr)
    if flows.previous is not None and temporal.is_scene_cut(flows.previous, small_grey):
        flows.reset()
        feedback.reset()
    flow = flows.estimate(bgr, grey=small_grey, out_size=(dh, dw))
    h, w = bgr.shape[:2]
    cam = compositor.upload(bgr, (w, h), (dw, dh))
    flow_t = temporal.flow_to_tensor(flow, device) if flow is not None and snap.flow else None
    x = temporal.carry(feedback, cam, flow_t, snap.feedback, (lo, hi), snap.zoom, snap.rotate,
                       (snap.drift_x, snap.drift_y))
    dreamed = dreamer.dream(x, snap.objective, settings) if snap.steps > 0 else x
    feedback.finish(cam, dreamed)
    return compositor.download(compositor.compose(cam, dreamed, snap.mix))


def _capture(index: int, path: FramePath) -> dict[str, Any]:
    residual = path.feedback.residual
    return {"frame": index, "generator": path.dreamer.generator.get_state(), "flow": path.flows.state(),
            "residual": None if residual is None else residual.detach().cpu().clone()}


def _read_checkpoints(target: Path) -> list[dict[str, Any]]:
    path = state_path(target)
    if not path.exists():
        return []
    return torch.load(path, weights_only=False).get("checkpoints", [])


def _save_checkpoint(target: Path, fingerprint: str, checkpoints: list[dict[str, Any]], state: dict[str, Any]) -> list[dict[str, Any]]:
    checkpoints = [c for c in checkpoints if c["frame"] < state["frame"]][-(KEEP_CHECKPOINTS - 1):] + [state]
    path = state_path(target)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"fingerprint": fingerprint, "checkpoints": checkpoints}, tmp)
    os.replace(tmp, path)
    return checkpoints


def _load_resume(job: RenderJob, fingerprint: str, path: FramePath) -> tuple[int, Path]:
    """Restore the newest checkpoint the broken-off file holds; returns its frame and the file
    renamed aside (its finished frames are copied into the new one)."""
    import av

    saved_at = state_path(job.target)
    if not saved_at.exists() or not job.target.exists():
        raise UsageError(f"nothing to resume: {saved_at.name} or {job.target.name} is missing; render without --resume")
    saved = torch.load(saved_at, weights_only=False)
    if saved.get("fingerprint") != fingerprint:
        raise UsageError(f"cannot resume {job.target}: the input, the settings, the seed or the weights differ from "
                         "the broken-off render; use the same ones, or render again without --resume")
    try:
        with av.open(str(job.target)) as partial:
            in_file = sum(1 for p in partial.demux(partial.streams.video[0]) if p.dts is not None)
    except av.FFmpegError as e:
        raise OutputError(f"cannot resume: {job.target} does not read back ({e}); render again without --resume") from None
    usable = [c for c in saved["checkpoints"] if c["frame"] <= in_file]
    if not usable:
        raise UsageError(f"cannot resume: {job.target} holds {in_file} frames, before any checkpoint; render again")
    state = usable[-1]
    path.dreamer.generator.set_state(state["generator"])
    path.flows.restore(state["flow"])
    path.feedback.residual = None if state["residual"] is None else state["residual"].to(path.device)
    aside = job.target.with_name(job.target.name + ".resuming")
    os.replace(job.target, aside)
    log.info("resuming %s at frame %d", job.target, state["frame"])
    return state["frame"], aside
