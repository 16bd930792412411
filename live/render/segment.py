"""One segment of a farm render, as a worker renders it (a local process, a Ray task, or the
driver itself): read its own frame range from the input, dream it with the one-process frame
path (:class:`live.render.FramePath`), encode it, and leave it with its checksum
(docs/architecture.md, *Renders across machines*).

What a worker leaves in the segment folder, all written beside the final name and renamed into
place, so a killed worker leaves nothing that looks finished:

- ``seg-NNNN.mkv``: the segment's frames, H.264 starting with an IDR frame and without B-frames,
  so segments join by copying packets;
- ``seg-NNNN.json``: its checksum (sha256), frame count and the plan's key for it: a segment
  whose file, checksum or key does not match is rendered again;
- ``seg-NNNN.progress``: frames done, the worker's host and process, for the progress bar and the
  status file;
- ``seg-NNNN.attempts``: one line per worker that started it: more than one means a worker died
  in it (the driver logs that).

Frames never travel between processes: a task is the plan's numbers for one segment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from live.atomic import atomic_write
from live.errors import InputError, LiveError

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1.0  # seconds between progress files (a farm's shared storage sees one a second per worker)


class SegmentCancelled(LiveError):
    """The render was stopped (Ctrl-C) while this segment was being dreamed."""

    exit_code = 130


@dataclass(frozen=True)
class SegmentTask:
    """Everything a worker needs for one segment: small, picklable, no frames."""

    index: int
    start: int
    end: int
    warmup: int
    lead: int  # the next segment's warm-up, dreamed here too (live/render/plan.py, Segment)
    fade: int  # last frames cross-faded into it
    key: str
    source: str
    folder: str
    pts: tuple[int, ...]  # presentation times of frames first .. end - 1
    time_base: tuple[int, int]
    rate: tuple[int, int]
    size: tuple[int, int]  # encoded (even) size
    dream_size: tuple[int, int]
    values: dict[str, Any]  # the registry snapshot's values
    seed: int
    flow_preset: str
    weights: str | None
    model: str
    backend: str
    device: str
    threads: int
    codec: str
    crf: int
    bitrate: int | None
    keyframe_seconds: float

    @property
    def first(self) -> int:
        """The first frame read: this segment's warm-up, or the next one's when it reaches further."""
        return min(self.start - self.warmup, self.end - self.lead)

    @property
    def name(self) -> str:
        return f"seg-{self.index:04d}"

    @property
    def path(self) -> Path:
        return Path(self.folder) / f"{self.name}.mkv"


@dataclass(frozen=True)
class SegmentResult:
    """What a worker reports back (small; the frames stay in the file)."""

    index: int
    frames: int
    sha256: str
    bytes: int
    host: str
    pid: int
    seconds: float  # the whole task
    setup_seconds: float  # model, backend, input and encoder opened; before the first frame
    dream_seconds: float  # frames read, dreamed and encoded, warm-up included
    cpu_seconds: float  # this process's CPU time over the task (all its threads; a worker runs one task at a time)


def crossfade(a: Any, b: Any, weight: float) -> Any:
    """``a`` dissolving into ``b`` (uint8 frames): ``weight`` 0 is ``a``, 1 is ``b``. Both are the
    same camera frame with different dreams over it, so this blends the dreams alone."""
    import numpy as np

    mixed = a.astype(np.float32) * (1.0 - weight) + b.astype(np.float32) * weight
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def sidecar(folder: Path, index: int) -> Path:
    """The checksum file of segment ``index``."""
    return folder / f"seg-{index:04d}.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def finished(folder: Path, index: int, key: str, frames: int) -> tuple[bool, str]:
    """Whether segment ``index`` is finished and intact: its checksum file names ``key`` and
    ``frames``, and the segment file has that checksum. Returns (ok, why not)."""
    meta = sidecar(folder, index)
    video = folder / f"seg-{index:04d}.mkv"
    if not meta.exists() and not video.exists():
        return False, "missing"
    try:
        info = json.loads(meta.read_text())
    except (OSError, ValueError):
        return False, "no readable checksum file"
    if not isinstance(info, dict):
        return False, "no readable checksum file"
    if info.get("key") != key or info.get("frames") != frames:
        return False, "made for another plan"
    if not video.exists():
        return False, "file missing"
    if video.stat().st_size != info.get("bytes") or file_sha256(video) != info.get("sha256"):
        return False, "checksum differs (damaged)"
    return True, ""


# Set up once per worker process: a Ray worker or a local process runs many segments.
_models: dict[tuple[Any, ...], tuple[Any, Any]] = {}
_models_lock = threading.Lock()


def _model_and_backend(task: SegmentTask) -> tuple[Any, Any]:
    from live.backends import open_backend
    from live.model import load_model

    key = (task.weights, task.model, task.backend, task.device)
    with _models_lock:
        if key not in _models:
            model = load_model(task.weights, model=task.model, progress=False)
            _models[key] = (model, open_backend(task.backend, model, task.device))
        return _models[key]


class _Progress:
    """The segment's progress file, rewritten at most every PROGRESS_EVERY seconds."""

    def __init__(self, task: SegmentTask, host: str, pid: int) -> None:
        self.path = Path(task.folder) / f"{task.name}.progress"
        self.info = {"segment": task.index, "host": host, "pid": pid, "frames": 0, "total": task.end - task.start,
                     "warmup_done": 0, "warmup": task.warmup, "started": time.time(), "first_frame": None,
                     "updated": time.time(), "done": False}
        self._last = 0.0
        self.write()

    def frame(self, warm: bool) -> None:
        key = "warmup_done" if warm else "frames"
        self.info[key] += 1
        now = time.time()
        if not warm and self.info["first_frame"] is None:
            self.info["first_frame"] = now
        if now - self._last >= PROGRESS_EVERY or self.info["frames"] == 1:
            self.write()

    def write(self, done: bool = False) -> None:
        self.info["updated"] = self._last = time.time()
        self.info["done"] = done
        try:
            with atomic_write(self.path) as f:
                f.write(json.dumps(self.info).encode())
        except OSError as e:  # progress is a courtesy; the segment goes on
            log.debug("progress file %s: %s", self.path, e)


def run_segment(task: SegmentTask, *, cancelled: Callable[[], bool] | None = None) -> SegmentResult:
    """Render one segment into its folder (see the module docstring) and return its checksum.

    Raises InputError naming the frame that cannot be read, SegmentCancelled when ``cancelled()``
    turns true between frames."""
    import av
    import torch

    from live.control.params import Snapshot
    from live.outputs.encoder import EncoderSettings
    from live.render import FramePath, configure_encoder

    t0, cpu0 = time.perf_counter(), time.process_time()
    host, pid = socket.gethostname(), os.getpid()
    folder = Path(task.folder)
    with open(folder / f"{task.name}.attempts", "a") as f:
        f.write(json.dumps({"host": host, "pid": pid, "started": time.time()}) + "\n")
    progress = _Progress(task, host, pid)
    threads_before = torch.get_num_threads()
    if threads_before != task.threads:
        torch.set_num_threads(task.threads)  # CPU results depend on it: the plan fixes it
    part = folder / f"{task.name}.mkv.{host}-{pid}.part"
    try:
        model, backend = _model_and_backend(task)
        snap = Snapshot(dict(task.values), 0)
        own = task.start - task.warmup
        path = FramePath(model, backend, snap, task.dream_size, task.seed, task.flow_preset)
        # The next segment's warm-up, from its own empty start: the frames it will dream there.
        lead_from = task.end - task.lead
        lead = FramePath(model, backend, snap, task.dream_size, task.seed, task.flow_preset) if task.lead else None
        time_base, rate = Fraction(*task.time_base), Fraction(*task.rate)
        settings = EncoderSettings(codec=task.codec, bitrate=task.bitrate, crf=task.crf,
                                   keyframe_seconds=task.keyframe_seconds)
        ticks = max(1, round(1 / (float(rate) * time_base)))
        first = task.first
        w, h = task.size
        frames_out, setup = 0, 0.0
        with _Frames(Path(task.source), task.pts, first) as frames, av.open(str(part), "w", format="matroska") as out:
            stream = out.add_stream(task.codec, rate=rate)
            stream.time_base = time_base
            configure_encoder(stream.codec_context, task.codec, settings, (w, h), time_base, rate)
            setup = time.perf_counter() - t0
            for offset, frame in enumerate(frames):
                index = first + offset
                if cancelled is not None and cancelled():
                    raise SegmentCancelled(f"segment {task.index} stopped at frame {index}")
                camera = frame.to_ndarray(format="bgr24")[:h, :w]
                bgr = path.dream(camera, index) if index >= own else None
                if lead is not None and index >= lead_from:
                    following = lead.dream(camera, index)
                    fade_at = index - (task.end - task.fade) + 1  # 1 .. fade in the fade, else <= 0
                    if fade_at > 0 and bgr is not None:
                        bgr = crossfade(bgr, following, fade_at / (task.fade + 1))
                if index < task.start:
                    progress.frame(warm=True)
                    continue
                assert bgr is not None
                out_frame = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p",
                                                                                   dst_colorspace="ITU709")
                out_frame.pts = frame.pts
                out_frame.time_base = time_base
                out_frame.duration = ticks
                if index == task.start:
                    out_frame.pict_type = av.video.frame.PictureType.I  # the segment opens with an IDR frame
                for packet in stream.codec_context.encode(out_frame):
                    out.mux(packet)
                frames_out += 1
                progress.frame(warm=False)
            for packet in stream.codec_context.encode(None):
                out.mux(packet)
        if frames_out != task.end - task.start:
            raise InputError(f"segment {task.index}: {frames_out} frames made of {task.end - task.start}")
        digest, size = file_sha256(part), part.stat().st_size
        os.replace(part, task.path)
        with atomic_write(sidecar(folder, task.index)) as f:
            f.write(json.dumps({"key": task.key, "frames": frames_out, "sha256": digest, "bytes": size,
                                "start": task.start, "end": task.end, "warmup": task.warmup, "host": host,
                                "pid": pid, "finished": time.time()}).encode())
        progress.write(done=True)
        seconds = time.perf_counter() - t0
        return SegmentResult(task.index, frames_out, digest, size, host, pid, seconds, setup, seconds - setup,
                             time.process_time() - cpu0)
    finally:
        part.unlink(missing_ok=True)
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)


class _Frames:
    """The decoded frames ``first`` .. of the segment, found by their presentation times: a seek
    to the keyframe before the first (decoding from the start where a container cannot seek), then
    each frame checked against the plan's time for it, so a frame missing or unreadable is named."""

    def __init__(self, source: Path, pts: tuple[int, ...], first: int) -> None:
        import av

        self.source, self.pts, self.first = source, pts, first
        try:
            self.container = av.open(str(source))
        except (av.FFmpegError, OSError) as e:
            raise InputError(f"cannot read {source}: {e}") from None
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"

    def __enter__(self) -> _Frames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.container.close()

    def _decoded(self) -> Any:
        for packet in self.container.demux(self.stream):
            yield from packet.decode()

    def __iter__(self) -> Any:
        import av

        want = self.pts[0]
        if want != 0:
            try:
                self.container.seek(want, stream=self.stream, backward=True, any_frame=False)
            except (av.FFmpegError, OSError):
                self.container.seek(0, stream=self.stream)
        i = 0
        source = self._decoded()
        restarted = False
        while i < len(self.pts):
            index = self.first + i
            try:
                frame = next(source, None)
            except (av.FFmpegError, OSError) as e:
                raise InputError(f"cannot read frame {index} of {self.source} (time {self._time(i)}): {e}; the "
                                 "finished segments are kept: when the file reads again, --resume renders the "
                                 "rest") from None
            if frame is None:
                raise InputError(f"cannot read frame {index} of {self.source} (time {self._time(i)}): the file ends "
                                 "before it; the finished segments are kept")
            if frame.pts is None or frame.pts < self.pts[i]:
                continue  # before the range (the seek lands on the keyframe before it)
            if frame.pts > self.pts[i]:
                if i == 0 and not restarted:  # the seek went past it: decode from the start instead
                    self.container.seek(0, stream=self.stream)
                    source, restarted = self._decoded(), True
                    continue
                raise InputError(f"cannot read frame {index} of {self.source} (time {self._time(i)}): the next "
                                 f"frame read is at {float(frame.pts * self.stream.time_base):.3f} s; the file "
                                 "changed since the plan was made, or is damaged there")
            yield frame
            i += 1

    def _time(self, i: int) -> str:
        return f"{float(self.pts[i] * self.stream.time_base):.3f} s"
