"""Sound in: a device through PortAudio, a file played in real time, or a video source's own sound.

Every input hands mono float32 blocks of ``BLOCK`` samples to a :class:`BlockQueue`, each with
the monotonic time it arrived; the analysis thread takes them from there. The queue keeps the
newest ``QUEUE_BLOCKS`` (a stalled analysis drops the oldest, counted), so an input never waits
for the analysis and the analysis never lags by more than a fraction of a second.

- :class:`DeviceInput` (``--audio DEVICE``): ``sounddevice`` (PortAudio: ALSA, PulseAudio or
  PipeWire through ALSA, JACK; CoreAudio and WASAPI elsewhere), 48 kHz where the device takes
  it, blocks of 256. A device that is missing or vanishes is said once ("no audio device: …",
  "audio device … gone"); the input keeps looking for it every ``RETRY_S`` (PortAudio's device
  list is read again) and says once when it is back. Without PortAudio or ``sounddevice`` it
  says so in one line, and the show goes on without sound.
- :class:`FileInput` (``--audio FILE``): WAV, FLAC, MP3 (anything FFmpeg reads) decoded by PyAV,
  resampled to 48 kHz mono, played in real time and looped; or the sound of a video file or
  stream source (``--audio source``), optionally kept in step with the video's own position.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from live.errors import InputError, UsageError

log = logging.getLogger(__name__)

RATE = 48000
BLOCK = 256
QUEUE_BLOCKS = 64  # 0.34 s at 48 kHz
RETRY_S = 2.0
STALL_S = 1.0  # a device whose callback is silent this long has gone
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".aif", ".aiff"})
MAX_CHANNELS = 2
INSTALL_HINT = "install deepdream-live[audio] (sounddevice) and PortAudio (Debian: apt install libportaudio2)"


class BlockQueue:
    """The newest blocks from an input, with their arrival times (thread-safe, bounded)."""

    def __init__(self, size: int = QUEUE_BLOCKS) -> None:
        self._blocks: deque[tuple[np.ndarray, float]] = deque(maxlen=size)
        self._cond = threading.Condition()
        self.dropped = 0
        self.received = 0

    def put(self, block: np.ndarray, arrived: float | None = None) -> None:
        with self._cond:
            if len(self._blocks) == self._blocks.maxlen:
                self.dropped += 1
            self._blocks.append((block, time.monotonic() if arrived is None else arrived))
            self.received += 1
            self._cond.notify()

    def get(self, timeout: float) -> tuple[np.ndarray, float] | None:
        with self._cond:
            if not self._blocks:
                self._cond.wait(timeout)
            return self._blocks.popleft() if self._blocks else None

    def clear(self) -> None:
        with self._cond:
            self._blocks.clear()


class AudioInput:
    """What every input offers: a name, the sample rate it delivers, a status line, the input
    latency in seconds (sound at the microphone to block delivered), ``start``/``close``."""

    rate = RATE
    latency = 0.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = "idle"
        self.queue = BlockQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> AudioInput:
        self._thread = threading.Thread(target=self._guarded, name=f"audio-in {self.name}"[:15], daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.status = "closed"

    def _guarded(self) -> None:
        try:
            self._run()
        except Exception:  # noqa: BLE001 - an input's thread failing must not pass unheard
            log.exception("audio input %s failed; the show goes on without its sound", self.name)
            self.status = "failed"

    def _run(self) -> None:
        raise NotImplementedError


# ----------------------------------------------------------------------------- devices
def _sounddevice() -> Any:
    """The sounddevice module; ImportError or OSError (no PortAudio) say why there is none."""
    import sounddevice  # an optional extra, imported when a device is first used

    return sounddevice


def no_device_reason(error: BaseException) -> str:
    """One line on why there is no audio device, with the fix."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, ImportError):
        return f"{INSTALL_HINT} ({text})"
    if "PortAudio library not found" in text or isinstance(error, OSError) and "portaudio" in text.lower():
        return "PortAudio is not installed (Debian: apt install libportaudio2; macOS: brew install portaudio)"
    return text


def list_devices() -> list[dict[str, Any]]:
    """Input devices: index, name, host API, channels, default rate. OSError/ImportError when
    there is no PortAudio or sounddevice."""
    sd = _sounddevice()
    apis = sd.query_hostapis()
    out = []
    for i, d in enumerate(sd.query_devices()):
        if d["max_input_channels"] > 0:
            out.append({"index": i, "name": d["name"], "api": apis[d["hostapi"]]["name"],
                        "channels": d["max_input_channels"], "rate": d["default_samplerate"]})
    return out


def describe_devices() -> str:
    """What ``--audio-list`` prints: one line per input device, or why there are none."""
    try:
        devices = list_devices()
    except (ImportError, OSError) as e:
        return f"no audio device: {no_device_reason(e)}"
    if not devices:
        return "no audio input devices (plug one in, or start JACK or PipeWire)"
    return "\n".join(f"{d['index']:3d}  {d['name']}  ({d['api']}, {d['channels']} ch, {d['rate']:g} Hz)"
                     for d in devices)


class DeviceInput(AudioInput):
    """A sound card or interface through PortAudio; ``device`` is an index, a name (or the start
    of one, case-insensitive), or ``default``. Missing, it is looked for again every RETRY_S."""

    def __init__(self, device: str = "default", *, sd: Any = None, retry: float = RETRY_S) -> None:
        super().__init__(f"device {device}")
        self.device = device
        self._sd = sd  # tests pass a stand-in; else imported when first needed
        self.retry = retry
        self._last_callback = 0.0
        self._reported: str | None = None
        self._opened_before = False
        self._channels = 1
        self.stream: Any = None

    def _module(self) -> Any:
        if self._sd is None:
            self._sd = _sounddevice()
        return self._sd

    def _resolve(self, sd: Any) -> int | None:
        """The device index for ``self.device`` in PortAudio's current list (None: the default)."""
        if self.device in ("", "default"):
            default = sd.default.device
            try:
                default = default[0]  # sounddevice keeps (input, output) as a pair
            except (TypeError, IndexError, KeyError):
                pass
            if default is None or (isinstance(default, int) and default < 0):
                raise OSError("there is no default input device")
            return None
        devices = sd.query_devices()
        if self.device.isdigit():
            i = int(self.device)
            if i < len(devices) and devices[i]["max_input_channels"] > 0:
                return i
            raise OSError(f"no input device {i}")
        wanted = self.device.lower()
        for i, d in enumerate(devices):
            if d["max_input_channels"] > 0 and d["name"].lower().startswith(wanted):
                return i
        for i, d in enumerate(devices):
            if d["max_input_channels"] > 0 and wanted in d["name"].lower():
                return i
        raise OSError(f"no input device named {self.device!r}")

    def _open(self) -> None:
        sd = self._module()
        index = self._resolve(sd)
        info = sd.query_devices(index, "input")
        self._channels = max(1, min(MAX_CHANNELS, int(info["max_input_channels"])))
        rate = RATE
        try:
            sd.check_input_settings(device=index, channels=self._channels, samplerate=RATE, dtype="float32")
        except Exception:  # noqa: BLE001 - the device's own rate then (44.1 kHz cards)
            rate = int(info["default_samplerate"])
        self.rate = rate
        self.stream = sd.InputStream(device=index, channels=self._channels, samplerate=rate, blocksize=BLOCK,
                                     dtype="float32", callback=self._callback)
        self.stream.start()
        self.latency = float(getattr(self.stream, "latency", 0.0) or 0.0)
        self._last_callback = time.monotonic()
        name = info["name"]
        if self._reported is not None or self._opened_before:
            log.info("audio device back: %s", name)
        else:
            log.info("audio from %s at %d Hz (input latency %.0f ms)", name, rate, 1e3 * self.latency)
        self._reported = None
        self._opened_before = True
        self.status = "live"

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: mix to mono, hand over, return at once."""
        self._last_callback = time.monotonic()
        block = indata[:, 0].copy() if indata.shape[1] == 1 else indata.mean(axis=1, dtype=np.float32)
        self.queue.put(block, self._last_callback)

    def _say(self, what: str) -> None:
        if self._reported != what:  # once per distinct reason, not every retry
            self._reported = what
            log.warning("%s", what)

    def _close_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as e:  # noqa: BLE001 - a vanished device may refuse to close
                log.debug("closing audio stream: %s", e)

    def _rescan(self) -> None:
        """Make PortAudio read its device list again (it reads it once, when it starts)."""
        sd = self._sd
        if sd is not None and hasattr(sd, "_terminate") and hasattr(sd, "_initialize"):
            try:
                sd._terminate()
                sd._initialize()
            except Exception as e:  # noqa: BLE001 - the next try says why
                log.debug("PortAudio rescan: %s", e)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.stream is None:
                try:
                    self._open()
                except (ImportError, OSError) as e:
                    self.status = "missing"
                    if isinstance(e, ImportError) or "PortAudio library not found" in str(e):
                        self._say(f"no audio device: {no_device_reason(e)}; the show goes on without sound")
                        self.status = "unavailable"
                        return  # nothing will change that while the show runs
                    self._say(f"no audio device: {no_device_reason(e)}; the show goes on and looks for it "
                              f"every {self.retry:g} s")
                    self._stop.wait(self.retry)
                    self._rescan()
                    continue
                except Exception as e:  # noqa: BLE001 - PortAudioError and its kin: missing for now
                    self.status = "missing"
                    self._say(f"no audio device: {self.device}: {e}; the show goes on and looks for it every "
                              f"{self.retry:g} s")
                    self._close_stream()
                    self._stop.wait(self.retry)
                    self._rescan()
                    continue
            if self._stop.wait(0.2):
                break
            stream = self.stream
            gone = stream is not None and (not getattr(stream, "active", True)
                                           or time.monotonic() - self._last_callback > STALL_S)
            if gone:
                self._close_stream()
                self.status = "missing"
                self._say(f"audio device gone: {self.device} (reopened when it returns; the show goes on)")
                self._stop.wait(self.retry)
                self._rescan()
        self._close_stream()


# ----------------------------------------------------------------------------- files
def _decode(path: str, rate: int, start: float = 0.0) -> Iterator[np.ndarray]:
    """The file's first audio stream as float32 mono at ``rate``, from ``start`` seconds."""
    import av

    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"cannot read sound from {path}: {e}") from None
    with container:
        if not container.streams.audio:
            raise InputError(f"{path} has no sound (no audio stream)")
        stream = container.streams.audio[0]
        if start > 0:
            try:
                container.seek(int(start / stream.time_base), stream=stream)
            except av.FFmpegError:
                pass
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)


def probe_sound(path: str) -> None:
    """InputError unless ``path`` opens and has an audio stream (before a show relies on it)."""
    for _ in _decode(path, RATE):
        return
    raise InputError(f"{path} holds no sound")


class FileInput(AudioInput):
    """A sound file (or a video's sound) played in real time, looped unless ``loop`` is False.

    ``position`` (a callable giving the video's own position in seconds, None while unknown)
    keeps the sound in step with a video source: drift over ``SYNC_S`` is taken out of the
    pacing, and a video that starts over (loops) restarts the sound.
    """

    SYNC_S = 0.04

    def __init__(self, path: str | Path, *, loop: bool = True, position: Callable[[], float | None] | None = None,
                 name: str | None = None, paced: bool = True) -> None:
        self.path = str(path)
        super().__init__(name or f"file {Path(self.path).name}")
        self.loop = loop
        self.position = position
        self.paced = paced
        self.played = 0.0  # seconds of the file delivered in this pass

    def _run(self) -> None:
        period = BLOCK / RATE
        due: float | None = None  # the clock starts with the first block, not before the file opens
        carry = np.zeros(0, np.float32)
        passes = 0
        last_video: float | None = None
        while not self._stop.is_set():
            self.status = "live"
            self.played = 0.0
            for chunk in _decode(self.path, RATE):
                data = np.concatenate((carry, chunk)) if len(carry) else chunk
                whole = len(data) // BLOCK * BLOCK
                carry = data[whole:]
                for i in range(0, whole, BLOCK):
                    if due is None:
                        due = time.monotonic()
                    if self.paced:
                        delay = due - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            return
                        if delay < -0.5:  # the machine stalled: carry on from now, no burst
                            due = time.monotonic()
                    self.queue.put(data[i:i + BLOCK])
                    due += period
                    self.played += period
                    if self.position is not None:
                        video = self.position()
                        if video is not None:
                            if last_video is not None and video < last_video - 0.5:
                                last_video = video
                                break  # the video started over: so does its sound
                            last_video = video
                            drift = self.played - video
                            if abs(drift) > self.SYNC_S:
                                due += max(min(drift, 0.5), -0.5)  # ahead: wait; behind: catch up
                    if self._stop.is_set():
                        return
                else:
                    continue
                break
            passes += 1
            carry = np.zeros(0, np.float32)
            if not self.loop:
                self.status = "ended"
                log.info("%s ended", self.name)
                return
            log.debug("%s looped (%d)", self.name, passes)


def is_sound_file(spec: str) -> bool:
    """Whether ``--audio SPEC`` names a file rather than a device."""
    path = Path(spec).expanduser()
    return path.suffix.lower() in AUDIO_EXTENSIONS or path.is_file()


def open_input(spec: str, *, video: str | None = None, position: Callable[[], float | None] | None = None) -> AudioInput:
    """The input ``--audio SPEC`` names: ``source`` (the video source's sound), a sound file, or a
    device (index, name or ``default``). Not started."""
    spec = spec.strip()
    if not spec:
        raise UsageError("--audio needs a device (index or name), a sound file, or 'source'")
    if spec == "source":
        if video is None:
            raise UsageError("--audio source takes the sound of a video file or stream source; this show's "
                             "source has none (use --audio DEVICE or --audio FILE)")
        streaming = "://" in video
        if not streaming:
            probe_sound(video)
        return FileInput(video, loop=not streaming, position=position, name=f"sound of {Path(video).name}",
                         paced=not streaming)
    if is_sound_file(spec):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise InputError(f"sound file {path} does not exist")
        probe_sound(str(path))
        return FileInput(path)
    return DeviceInput(spec)
