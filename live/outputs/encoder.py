"""H.264 recordings and RTMP/SRT/UDP streams through PyAV (FFmpeg), on their own thread.

One class, :class:`EncoderOutput`, serves both: ``--record show.mp4`` and ``--stream URL``.

- **Never slows the show.** ``send`` copies the frame into one of a fixed set of buffers and
  queues it; when the encoder or the network is behind, the frame is dropped and counted.
- **Real time.** Every frame carries its capture time. Presentation times are those times on a
  grid of ``1/rate`` s (the rate frames come at: the source's), so a 5 fps dream records 5 frames
  per second of real time, and a slow frame is held on screen for as long as it was shown, not
  squeezed. Each packet lasts the real gap before it.
- **Crash-safe files.** Fragmented MP4 or Matroska written every 0.5 s, and an encoder with no
  frame delay (no B-frames, no look-ahead): a SIGKILL costs at most the last half second.
- **Streams survive the network.** A server that goes away is retried with backoff (2 s,
  doubling to 30 s); the log says once when it left and once when it is back. Stream keys and
  passwords are shown as ``****`` everywhere (:mod:`live.redact`).
- **Keyframes by time**, not by frame count: every ``keyframe_seconds`` of real time, however
  slowly the dream runs (ingest servers want one every 2 s).
- Odd sizes are cropped by one pixel at the right or bottom (4:2:0 needs even sizes), as the
  virtual camera does.

Encoder: ``h264_nvenc`` where an NVIDIA encoder opens, else ``libx264`` (``veryfast``, one
thread: its cost stays on this thread and is measured, see :attr:`EncoderOutput.cpu_share`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from live.errors import OutputError, UnavailableError, UsageError
from live.outputs.base import FrameHandoff, Output, fit
from live.outputs.targets import Target, check_record_path, parse_target
from live.placeholder import placeholder_frame
from live.redact import redact, remember

log = logging.getLogger(__name__)

BACKOFF = (2.0, 30.0)  # first and longest wait between reconnects, seconds
DEFAULT_STREAM_BITRATE = 4_500_000  # bit/s: a 720p30 stream as Twitch and YouTube suggest
DEFAULT_CRF = 20  # recordings: quality-based, visually clean
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")
_nvenc_failure: str | None = None  # why h264_nvenc did not open here (asked once per process)
_nvenc_lock = threading.Lock()


def available() -> bool:
    """Whether PyAV can be imported (the OpenCV recorder is the fallback without it)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def parse_bitrate(text: str | int | float) -> int:
    """``4500k``, ``6M``, ``4500000`` → bits per second; UsageError saying the form otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower().removesuffix("bps").removesuffix("b/s")
        scale = {"k": 1e3, "m": 1e6}.get(s[-1:], 1.0)
        try:
            value = float(s[:-1] if scale != 1.0 else s) * scale
        except ValueError:
            raise UsageError(f"bitrate {text!r}: expected bits per second such as 4500k, 6M or 2500000") from None
    if not 100_000 <= value <= 100_000_000:
        raise UsageError(f"bitrate {text!r}: expected 100k..100M bits per second")
    return int(value)


@dataclass(frozen=True)
class EncoderSettings:
    """How to encode. ``codec`` None: h264_nvenc where it opens, else libx264."""

    codec: str | None = None
    bitrate: int | None = None  # None: CRF for recordings, DEFAULT_STREAM_BITRATE for streams
    crf: int = DEFAULT_CRF
    preset: str = "veryfast"
    keyframe_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0.1 <= self.keyframe_seconds <= 60:
            raise UsageError(f"keyframe interval must be 0.1..60 seconds, got {self.keyframe_seconds:g}")
        if self.preset not in PRESETS:
            raise UsageError(f"encoder preset {self.preset!r}: choose one of {', '.join(PRESETS)}")
        if not 0 <= self.crf <= 51:
            raise UsageError(f"CRF must be 0..51 (0 lossless, 18-23 good), got {self.crf}")


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size frames are encoded at: cropped to even (4:2:0 halves the colour resolution)."""
    return max(2, width - width % 2), max(2, height - height % 2)


class _Lost(Exception):
    """The connection or the file failed while writing; ``reason`` is already redacted."""


class EncoderOutput(Output):
    """Encode shown frames to a recording or a stream from a thread of its own.

    Args:
        target: a path ending ``.mp4``/``.mov``/``.mkv``, or a stream URL (see
            :mod:`live.outputs.targets`).
        settings: codec, bitrate, CRF, preset, keyframe interval.
        queue_size: frames that may wait for the encoder before ``send`` drops.
        placeholders: encode placeholder frames (network loading, camera lost) too. Streams do
            by default, so viewers and servers see a picture instead of a dead stream.
        backoff: first and longest wait between reconnects of a stream.
    """

    def __init__(
        self,
        target: str | Path | Target,
        settings: EncoderSettings | None = None,
        *,
        name: str | None = None,
        queue_size: int = 8,
        placeholders: bool | None = None,
        backoff: tuple[float, float] = BACKOFF,
        drain_timeout: float = 10.0,
    ) -> None:
        self.target = target if isinstance(target, Target) else parse_target(target)
        if self.target.network:
            remember(self.target.url)
        kind = "stream" if self.target.network else "recording"
        super().__init__(name or f"{kind} {self.target.shown if self.target.network else self.target.path.name}")
        self._handoff = FrameHandoff(queue_size)
        self.settings = settings or EncoderSettings()
        self.queue_size = queue_size
        self.placeholders = self.target.network if placeholders is None else placeholders
        self.backoff = backoff
        self.drain_timeout = drain_timeout
        self._state = "closed"
        self.written = 0  # frames encoded
        self.bytes_out = 0
        self.bitrate = 0.0  # bit/s over the last few seconds of output
        self.cpu_seconds = 0.0  # this thread's CPU time in conversion, encoding and muxing
        self.codec_name = ""
        self.reconnects = 0
        self.discarded = 0
        self._size = (0, 0)
        self._rate = Fraction(30)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._enabled = threading.Event()
        self._enabled.set()
        self._opened_at = 0.0
        self._resize_logged = False
        self._placeholder: tuple[str, np.ndarray] | None = None
        self._last_placeholder = float("-inf")
        self.on_state: Callable[[EncoderOutput], None] | None = None

    # ----- the loop's side
    def open(self, width: int, height: int, fps: float) -> None:
        """Check the target and start the encoder thread. A recording path that cannot be
        written is an OutputError now; a stream that cannot connect is retried in the thread."""
        if width < 2 or height < 2 or fps <= 0:
            raise ValueError(f"encoder needs a size of at least 2x2 and a positive rate, got {width}x{height} at {fps}")
        try:
            import av  # noqa: F401
        except ImportError:
            raise UnavailableError("H.264 recording and streaming need PyAV: pip install av") from None
        if not self.target.network:
            check_record_path(self.target)
        self._size = even_size(width, height)
        if self._size != (width, height):
            log.info("%s: %dx%d is cropped to %dx%d (H.264 4:2:0 needs even sizes)", self.name, width, height, *self._size)
        self._rate = Fraction(fps).limit_denominator(1001)
        w, h = self._size
        self._handoff.allocate((h, w, 3))
        if not self.target.network:
            # The file is created now, so a full disk or a bad codec is an error at start-up.
            try:
                self._session = self._connect()
            except _Lost as e:
                raise OutputError(f"cannot record to {self.target.path}: {e}") from None
            self.codec_name = self._session.codec_name
            log.info("recording to %s: %s", self.target.path, self._session.describe())
        else:
            self._session = None
        self._opened_at = time.monotonic()
        self.state = "live" if not self.target.network else "connecting"
        self._thread = threading.Thread(target=self._run, name=f"encoder:{self.name}", daemon=True)
        self._thread.start()

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Queue ``frame`` (shown at ``timestamp``, ``time.monotonic()`` seconds) for encoding,
        or drop and count it when the encoder is behind or the stream is down."""
        if self.failure is not None:
            raise OutputError(self.failure)
        if self._thread is None:
            raise OutputError(f"{self.name} is not open")
        if self.state in ("offline", "disabled", "waiting", "connecting") and self.target.network:
            self.dropped += 1  # said once in the log when the stream left; not a backlog
            return
        self._enqueue(frame, time.monotonic() if timestamp is None else timestamp)

    def send_placeholder(self, text: str) -> None:
        """Streams show ``text`` (at most a few frames a second) while no dream is ready."""
        if not self.placeholders or self._thread is None or self.state != "live":
            return
        now = time.monotonic()
        if now - self._last_placeholder < 0.2:
            return
        self._last_placeholder = now
        if self._placeholder is None or self._placeholder[0] != text:
            self._placeholder = (text, placeholder_frame(*self._size, text))
        self._enqueue(self._placeholder[1], now)

    def _enqueue(self, frame: np.ndarray, timestamp: float) -> None:
        w, h = self._size
        fh, fw = frame.shape[:2]
        crop = (fw - fw % 2, fh - fh % 2) == (w, h)
        if not crop and not self._resize_logged:
            self._resize_logged = True
            log.warning("%s: frames are %dx%d, the encoder %dx%d; resizing", self.name, fw, fh, w, h)

        def fill(buf: np.ndarray) -> None:
            if crop:
                np.copyto(buf, frame[:h, :w])  # the documented crop to even
            else:
                fit(frame, w, h, out=buf)

        if self._handoff.offer(fill, timestamp):
            self.sent += 1
        else:
            self.count_drop()

    # ----- control (any thread)
    @property
    def state(self) -> str:
        """closed, connecting, waiting (for an SRT receiver), live, offline, disabled or failed."""
        if self.failure is not None:
            return "failed"
        if not self._enabled.is_set() and self._state != "closed":
            return "disabled"
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        self._state = value

    @property
    def enabled(self) -> bool:
        """Whether frames are being encoded; a disabled stream is disconnected."""
        return self._enabled.is_set()

    def set_enabled(self, on: bool) -> None:
        """Start (True) or stop (False) sending; a stream disconnects while disabled."""
        if on == self.enabled:
            return
        if on:
            self._enabled.set()
            log.info("%s enabled", self.name)
        else:
            self._enabled.clear()
            log.info("%s disabled", self.name)
        self._wake()

    def _wake(self) -> None:
        try:
            self._handoff.queue.put_nowait((np.empty(0, np.uint8), -1.0))  # an empty frame: look at the flags
        except queue.Full:
            pass

    @property
    def cpu_share(self) -> float:
        """Fraction of one core this encoder's thread has used since it opened."""
        elapsed = time.monotonic() - self._opened_at
        return self.cpu_seconds / elapsed if self._opened_at and elapsed > 0 else 0.0

    def stats(self) -> dict[str, Any]:
        """State, codec, measured bitrate, frames and drops, CPU share: for status and check."""
        return {
            "name": self.name,
            "target": self.target.shown,
            "state": self.state if self.failure is None else "failed",
            "codec": self.codec_name,
            "bitrate_kbps": round(self.bitrate / 1000),
            "frames": self.written,
            "dropped": self.dropped + self.discarded,
            "cpu": round(self.cpu_share, 3),
            "reconnects": self.reconnects,
        }

    def summary(self) -> str:
        """``stream rtmp://host/app/****: live, 4500 kb/s, 1200 frames, 3 dropped, cpu 9%``."""
        s = self.stats()
        state = f"failed ({self.failure})" if self.failure else s["state"]
        return (f"{self.name}: {state}, {s['bitrate_kbps']} kb/s, {s['frames']} frames, {s['dropped']} dropped, "
                f"cpu {100 * s['cpu']:.0f}%")

    # ----- the encoder thread
    def _connect(self) -> _Session:
        return _Session.open(self.target, self.settings, self._size, self._rate, self.name, cancel=self._stop)

    def _run(self) -> None:
        delay, lost_since = self.backoff[0], None
        session, self._session = self._session, None
        try:
            while not self._stop.is_set():
                if not self._enabled.is_set():
                    if session is not None:
                        session.close()
                        session = None
                    self._discard_queued()
                    self._enabled.wait(0.2)
                    continue
                if session is None:
                    self.state = "connecting" if lost_since is None else "offline"
                    if "mode=listener" in self.target.url.lower():
                        self.state = "waiting"  # for a receiver to call
                    try:
                        session = self._connect()
                    except _Lost as e:
                        if not self.target.network:
                            raise
                        if lost_since is None:
                            lost_since = time.monotonic()
                            log.warning("%s cannot connect (%s); retrying every %g-%g s", self.name, e, *self.backoff)
                        self.state = "offline"
                        self._discard_queued()
                        self._stop.wait(delay)
                        delay = min(delay * 2, self.backoff[1])
                        continue
                    if lost_since is not None:
                        self.reconnects += 1
                        log.info("%s is back after %.0f s", self.name, time.monotonic() - lost_since)
                    else:
                        log.info("%s: %s", self.name, session.describe())
                    self.codec_name = session.codec_name
                    lost_since, delay = None, self.backoff[0]
                    self._discard_queued()  # frames from before the outage are stale
                    self.state = "live"
                try:
                    if self._pump(session):
                        session.close()
                        session = None
                        return
                except _Lost as e:
                    session.abort()
                    session = None
                    self.bitrate = 0.0
                    if not self.target.network:
                        raise
                    lost_since = time.monotonic()
                    self.state = "offline"
                    log.warning("%s lost: %s; reconnecting with backoff (%g s, up to %g s)", self.name, e, *self.backoff)
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.backoff[1])
        except _Lost as e:
            self.failure = f"{self.name}: {e}"
            self.state = "failed"
            log.error("%s stopped: %s", self.name, e)
        except Exception as e:  # noqa: BLE001 - reported through send() and the log, never raised into the loop
            self.failure = f"{self.name}: {type(e).__name__}: {redact(str(e))}"
            self.state = "failed"
            log.error("%s", self.failure)
            log.debug("encoder failure", exc_info=True)
        finally:
            if session is not None:
                session.close()
            if self.state != "failed":
                self.state = "closed"

    def _pump(self, session: _Session) -> bool:
        """Encode queued frames until told to stop (True) or the stream is disabled (False)."""
        window_start, window_bytes = time.monotonic(), 0
        while True:
            item = self._handoff.get()
            if item is None:
                if not self._abandon.is_set():
                    self._encode_timed(session.flush)
                return True
            buf, timestamp = item
            if buf.size == 0:  # a wake-up from set_enabled
                if not self._enabled.is_set():
                    return False
                continue
            if self._abandon.is_set():
                return True
            try:
                written = self._encode_timed(lambda buf=buf, timestamp=timestamp: session.encode(buf, timestamp))
            finally:
                self._handoff.release(buf)
            self.written += 1
            window_bytes += written
            self.bytes_out += written
            now = time.monotonic()
            if now - window_start >= 2.0:
                self.bitrate = 8 * window_bytes / (now - window_start)
                window_start, window_bytes = now, 0

    def _encode_timed(self, fn: Callable[[], int]) -> int:
        t = time.thread_time()
        try:
            return fn()
        finally:
            self.cpu_seconds += time.thread_time() - t

    def _discard_queued(self) -> None:
        while True:
            try:
                item = self._handoff.queue.get_nowait()
            except queue.Empty:
                return
            if item is None:  # the end, queued by close()
                self._stop.set()
                return
            if item[0].size:
                self._handoff.release(item[0])
                self.discarded += 1  # queued before a loss or while disabled: never encoded

    def close(self) -> None:
        """Encode what is queued (up to ``drain_timeout`` s), finish the file or stream."""
        thread, self._thread = self._thread, None
        if thread is None:
            if getattr(self, "_session", None) is not None:
                self._session.close()
                self._session = None
            return
        ended = self._handoff.finish(thread, self.drain_timeout, self._abandon, queued=self._stop.set)
        if ended != "done":
            log.warning("%s: gave up waiting for queued frames after %gs", self.name, self.drain_timeout)
        if ended == "stuck":
            log.error("%s: the encoder thread is stuck (a network write?); leaving it behind", self.name)
        log.info("%s closed: %d frames encoded, %d dropped, %.1f MB, encoder cpu %.0f%% of a core",
                 self.name, self.written, self.dropped, self.bytes_out / 1e6, 100 * self.cpu_share)


class _Session:
    """One open container and encoder: a file, or one connection of a stream."""

    def __init__(self, container: Any, stream: Any, rate: Fraction, settings: EncoderSettings, closer: Callable[[], None] | None) -> None:
        self.container, self.stream, self.rate, self.settings = container, stream, rate, settings
        self.codec_name = stream.codec_context.name
        self._closer = closer
        self._t0: float | None = None
        self._last_pts = -1
        self._gap = 1  # ticks (of 1/rate) between the last two frames
        self._last_key = float("-inf")
        self._frame: Any = None

    @classmethod
    def open(cls, target: Target, settings: EncoderSettings, size: tuple[int, int], rate: Fraction, name: str,
             cancel: threading.Event | None = None) -> _Session:
        """Open the container and the encoder; _Lost (redacted reason) when it cannot."""
        import av

        pick_codec(settings)  # before connecting: a failed probe must not cost a connection

        closer = None
        try:
            if target.scheme == "srt":
                from live.outputs.srt import SrtWriter

                writer = SrtWriter(target, cancel)
                closer = writer.close
                container = av.open(writer, "w", format=target.format, container_options=target.container_options,
                                    buffer_size=1316 * 8)
            else:
                container = av.open(target.open_url, "w", format=target.format,
                                    container_options=target.container_options)
        except (av.FFmpegError, OSError) as e:
            if closer is not None:
                closer()
            raise _Lost(_reason(e)) from None
        try:
            stream = _add_video_stream(container, target, settings, size, rate, name)
            container.start_encoding()  # header now: a refused connection shows here, not mid-show
        except BaseException as e:
            _close_quietly(container)
            if closer is not None:
                closer()
            if isinstance(e, (av.FFmpegError, OSError)):
                raise _Lost(_reason(e)) from None
            raise
        return cls(container, stream, rate, settings, closer)

    def describe(self) -> str:
        cc = self.stream.codec_context
        rate = f"{cc.bit_rate // 1000} kb/s" if cc.bit_rate else f"CRF {self.settings.crf}"
        return f"{cc.name} {cc.width}x{cc.height}, {rate}, keyframe every {self.settings.keyframe_seconds:g} s"

    def encode(self, bgr: np.ndarray, timestamp: float) -> int:
        import av

        if self._t0 is None:
            self._t0 = timestamp
        pts = round((timestamp - self._t0) * self.rate)
        if pts <= self._last_pts:
            if pts < self._last_pts:
                return 0  # faster than the file's rate: this frame would only push time ahead
            pts = self._last_pts + 1
        if self._last_pts >= 0:
            # Each packet lasts the real gap before it, the best guess of the gap after it: a
            # receiver that probes by packet durations counts real seconds, not 1/rate per frame
            # (FFmpeg's probe took 65 s to start on a 4.6 fps show declared at 60; README, *Two paces*).
            self._gap = pts - self._last_pts
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
        frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709")
        frame.pts = pts
        if timestamp - self._last_key >= self.settings.keyframe_seconds:
            frame.pict_type = av.video.frame.PictureType.I  # keyframes by time, however slow the show
            self._last_key = timestamp
        try:
            return self._mux(self.stream.encode(frame))
        except (av.FFmpegError, OSError) as e:
            raise _Lost(_reason(e)) from None

    def flush(self) -> int:
        import av

        try:
            return self._mux(self.stream.encode(None))
        except (av.FFmpegError, OSError) as e:
            raise _Lost(_reason(e)) from None

    def _mux(self, packets: list[Any]) -> int:
        size = 0
        for packet in packets:
            size += packet.size
            if not packet.duration:
                packet.duration = self._gap
            self.container.mux(packet)
        return size

    def close(self) -> None:
        """Finish cleanly: trailer (fragment index, cues), close the connection."""
        try:
            self.container.close()
        except Exception as e:  # noqa: BLE001 - the file is as finished as it can be
            log.warning("closing the encoder output: %s", _reason(e))
        finally:
            if self._closer is not None:
                self._closer()

    def abort(self) -> None:
        """The connection is gone: release without waiting on it."""
        _close_quietly(self.container)
        if self._closer is not None:
            self._closer()


def _close_quietly(container: Any) -> None:
    try:
        container.close()
    except Exception:  # noqa: BLE001 - it is broken already
        pass


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return redact(str(text))


def _codec_options(target: Target, settings: EncoderSettings, codec: str, rate: Fraction, size: tuple[int, int]) -> tuple[dict[str, str], int]:
    gop = max(1, round(settings.keyframe_seconds * rate))
    bitrate = settings.bitrate or (DEFAULT_STREAM_BITRATE if target.network else 0)
    if codec == "libx264":
        # One thread: its cost is this thread's, measured; no look-ahead and no B-frames, so
        # nothing waits in the encoder (latency for streams, crash safety for files).
        opts = {"preset": settings.preset, "tune": "zerolatency", "forced-idr": "1",
                "threads": "1" if size[0] * size[1] <= 1920 * 1088 else "0"}
        if bitrate:
            opts.update(b=str(bitrate), maxrate=str(bitrate), bufsize=str(bitrate))
            if target.network:
                opts.update(minrate=str(bitrate), **{"x264-params": "nal-hrd=cbr"})
        else:
            opts["crf"] = str(settings.crf)
        if target.network:
            opts["sc_threshold"] = "0"  # keyframes only on the clock: what ingest servers expect
    else:  # h264_nvenc and other hardware encoders: low-latency, no B-frames
        opts = {"preset": "p4", "tune": "ll", "bf": "0", "forced-idr": "1", "zerolatency": "1"}
        if bitrate:
            opts.update(rc="cbr" if target.network else "vbr", b=str(bitrate), maxrate=str(bitrate), bufsize=str(bitrate))
        else:
            opts.update(rc="vbr", cq=str(max(settings.crf, 1)))
    return opts, gop


def pick_codec(settings: EncoderSettings) -> str:
    """The codec asked for, or h264_nvenc where it opens on this machine, else libx264.

    h264_nvenc is in PyAV's build whether or not this machine has an NVIDIA encoder; it is
    opened once, on its own, to find out (a failure is logged once, with the reason)."""
    import av

    global _nvenc_failure
    if settings.codec:
        if settings.codec not in av.codecs_available:
            raise UsageError(f"encoder {settings.codec!r} is not in this FFmpeg build; try libx264")
        return settings.codec
    with _nvenc_lock:
        if _nvenc_failure is None:
            try:
                probe = av.CodecContext.create("h264_nvenc", "w")
                probe.width, probe.height, probe.pix_fmt = 256, 256, "yuv420p"
                probe.time_base = Fraction(1, 30)
                probe.open()
                _nvenc_failure = ""
            except (av.FFmpegError, OSError, ValueError) as e:
                _nvenc_failure = _reason(e) or "failed"
                log.info("h264_nvenc does not open here (%s); encoding with libx264", _nvenc_failure)
        return "h264_nvenc" if _nvenc_failure == "" else "libx264"


def _add_video_stream(container: Any, target: Target, settings: EncoderSettings, size: tuple[int, int], rate: Fraction, name: str) -> Any:
    codec = pick_codec(settings)
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1) / rate
    cc = stream.codec_context
    cc.time_base = Fraction(1) / rate
    cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited range
    opts, gop = _codec_options(target, settings, codec, rate, size)
    cc.gop_size = gop
    if "b" in opts:
        cc.bit_rate = int(opts["b"])
    stream.options = opts
    cc.open()
    return stream
