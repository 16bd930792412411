"""The site config: one TOML file that describes an installation, checked before the show starts.

A gallery machine runs for weeks from one file (``site.toml``, see ``live/site-example.toml``)::

    [source]      spec, capture_size, capture_fps, loop
    [dream]       any live parameter of the registry (objective, steps, width, height, feedback, …)
    [network]     weights, backend, device, flow_preset, model, precision, no_build
    [outputs]     window, fullscreen, monitor, vcam, vcam_device, vcam_backend, record, overlay, screenshot_dir,
                  record_dir, record_codec, record_bitrate, stream = [URLs], stream_bitrate,
                  keyframe_interval, encoder_preset, ndi,
                  size (of every output; left out: the source's own), present = camera|dream
    [osc]         enabled, host, port, allow = [CIDRs], feedback = ["host:port", …]
    [web]         enabled, host, port, mdns, token_file (the page, preview and OSCQuery)
    [midi]        enabled, mapping, api = alsa|jack
    [audio]       enabled, input (device, sound file or "source"), mapping (file or shipped name),
                  bands = [edges in Hz], attack_ms, release_ms, average_s, gate_db, sensitivity,
                  min_bpm, max_bpm, link
    [presets]     directory, start, cycle = [names], cycle_minutes, morph_time
    [schedule]    open = "10:00", close = "18:00", days = ["mon", …], outside = blackout|placeholder|stop
    [idle]        after_minutes, motion_threshold, preset, and [idle.dream] values for the idle look
    [governor]    enabled, target_fps, headroom, min_steps, min_size
    [log]         level
    [calibration] file (a profile path) or site (a name: calibration/<site>.toml)

Decisions an operator can rely on:

- **Strict.** An unknown section or key is an error with a "did you mean" suggestion (a typo
  such as ``stpes = 2`` must not be silently ignored for weeks). Every error names the file, the
  dotted key, the value and what is allowed; all errors in a file are reported together.
- **Dream values are not clamped.** The registry refuses a value out of range from every
  source, and a number typed into a config file that is out of range is a mistake:
  ``dream.steps = 99`` is an error that says ``0..50``, not a silent 50.
- **Precedence**, lowest to highest: registry defaults → calibration profile (size, steps) →
  ``[dream]`` → ``[presets] start`` → ``--preset`` → command-line flags. CLI flags override the
  config; a section value left out leaves the lower layer's value alone.
- **Relative paths** (record, mapping, presets directory, calibration file) are relative to the
  config file's directory, so a site directory can be moved as a whole.
- **Pure loading.** :func:`load_site` reads and checks only; SIGHUP calls it again and hands old
  and new to :func:`reload_plan`: the live part (dream, presets, schedule, idle, governor, log)
  is applied at once, the rest (source, outputs, network, osc, midi, calibration) is logged as
  needing a restart.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from live.control.params import LIVE_PARAMS, Param, Registry
from live.control.schedule import DAYS, OpeningHours
from live.errors import UsageError
from live.logs import LEVELS
from live.objectives import Objective
from live.redact import redact
from live.tomlfile import read_toml

log = logging.getLogger(__name__)

OUTSIDE_HOURS = ("blackout", "placeholder", "stop")
FLOW_PRESETS = ("ultrafast", "fast", "medium")
MIDI_APIS = ("alsa", "jack")  # as live.control.midi.APIS
# Registry parameters a config may set: everything but actions (reset is a button, not a setting).
DREAM_PARAMS: dict[str, Param] = {p.name: p for p in LIVE_PARAMS if p.kind != "trigger"}
# What SIGHUP can change while the show runs; every other section needs a restart.
LIVE_SECTIONS = frozenset({"dream", "presets", "schedule", "idle", "governor", "log"})
RESTART_SECTIONS = frozenset({"source", "outputs", "network", "osc", "midi", "calibration", "web", "audio"})
_PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # as live.control.presets


# ----------------------------------------------------------------------------- the tree
def _frozen_map(values: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True)
class SourceSection:
    """Where frames come from (``None``: not set here, the command line's default applies)."""

    spec: str | None = None
    capture_size: tuple[int, int] | None = None
    capture_fps: float | None = None
    loop: bool | None = None


@dataclass(frozen=True)
class NetworkSection:
    weights: str | None = None
    backend: str | None = None
    device: str | None = None
    flow_preset: str | None = None
    model: str | None = None  # torchvision or bvlc
    precision: str | None = None  # fp16 or fp32; unset: fp16 on CUDA, fp32 on the CPU
    no_build: bool | None = None  # never build TensorRT plans during the show (build-engines does)


@dataclass(frozen=True)
class OutputsSection:
    window: bool | None = None
    fullscreen: bool | None = None
    monitor: int | None = None
    vcam: bool | None = None
    vcam_device: str | None = None
    vcam_backend: str | None = None
    record: Path | None = None
    overlay: bool | None = None
    screenshot_dir: Path | None = None
    record_dir: Path | None = None
    record_codec: str | None = None
    record_bitrate: int | None = None
    stream: tuple[str, ...] | None = None  # stream URLs; they may hold keys: print through live.redact
    stream_bitrate: int | None = None
    keyframe_interval: float | None = None
    encoder_preset: str | None = None
    ndi: str | None = None
    size: tuple[int, int] | None = None  # every output's size; None: the source's own
    present: str | None = None  # camera (every camera frame) or dream (each dream); None: camera


@dataclass(frozen=True)
class OscSection:
    enabled: bool = True
    host: str = "127.0.0.1"  # loopback unless the site exposes it on purpose
    port: int = 9000
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    feedback: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class WebSection:
    """The show's web page (control, preview, status) and OSCQuery; beyond loopback it needs the
    token kept in ``token_file`` (default: ``web-token`` beside this config)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int | None = None  # None: 8080, or a free port when that is taken
    mdns: bool = True
    token_file: Path | None = None


@dataclass(frozen=True)
class MidiSection:
    enabled: bool = True
    mapping: Path | None = None
    api: str | None = None  # alsa | jack; None: $MIDO_BACKEND, else the platform's


@dataclass(frozen=True)
class AudioSection:
    """The sound (live/audio): an input, a mapping, and how the sound is analysed (``settings``:
    the analysis keys given, checked together by live.audio.analysis.AnalysisSettings)."""

    enabled: bool = True
    input: str | None = None  # a device (index or name), a sound file, or "source"
    mapping: str | None = None  # a mapping file (relative to this config) or a shipped name
    link: bool = False
    settings: Mapping[str, Any] = field(default_factory=_frozen_map)


@dataclass(frozen=True)
class PresetsSection:
    directory: Path | None = None
    start: str | None = None
    cycle: tuple[str, ...] = ()
    cycle_minutes: float = 10.0
    morph_time: float | None = None


@dataclass(frozen=True)
class ScheduleSection:
    """Opening hours. No ``open``/``close``: always open. ``close`` before ``open`` crosses midnight
    (``days`` are the days the show *opens*)."""

    open: dt.time | None = None
    close: dt.time | None = None
    days: tuple[str, ...] = DAYS
    outside: str = "blackout"

    def is_open(self, now: dt.datetime) -> bool:
        """Whether the show should dream at local time ``now``."""
        if self.open is None or self.close is None:
            return True
        return OpeningHours(self.open, self.close, self.days).is_open(now)


@dataclass(frozen=True)
class IdleSection:
    """Idle mode: after ``after_minutes`` without motion above ``motion_threshold`` (mean absolute
    difference of the small grey frames, 0..1 of full scale), switch to ``preset`` and/or ``dream``
    values (e.g. a slow zoom); motion brings the previous look back."""

    after_minutes: float | None = None
    motion_threshold: float = 0.02
    preset: str | None = None
    dream: Mapping[str, Any] = field(default_factory=_frozen_map)


@dataclass(frozen=True)
class GovernorSection:
    enabled: bool = True
    target_fps: float | None = None  # None: the calibration profile's target, else no governor
    headroom: float = 0.85
    min_steps: int = 1
    min_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class LogSection:
    level: str | None = None


@dataclass(frozen=True)
class CalibrationSection:
    file: Path | None = None
    site: str | None = None


@dataclass(frozen=True)
class Site:
    """One installation's config, checked. Build with :func:`load_site`; compare with :func:`diff`."""

    path: Path | None = None
    source: SourceSection = SourceSection()
    dream: Mapping[str, Any] = field(default_factory=_frozen_map)
    network: NetworkSection = NetworkSection()
    outputs: OutputsSection = OutputsSection()
    osc: OscSection = OscSection()
    web: WebSection = WebSection()
    midi: MidiSection = MidiSection()
    audio: AudioSection = AudioSection()
    presets: PresetsSection = PresetsSection()
    schedule: ScheduleSection = ScheduleSection()
    idle: IdleSection = IdleSection()
    governor: GovernorSection = GovernorSection()
    log: LogSection = LogSection()
    calibration: CalibrationSection = CalibrationSection()

    def apply(self, registry: Registry, source: str = "config") -> dict[str, Any]:
        """Write the ``[dream]`` values into ``registry`` in one update; returns what was applied."""
        if not self.dream:
            return {}
        return registry.update(dict(self.dream), source=source)

    def show_options(self) -> dict[str, Any]:
        """The :class:`live.app.ShowOptions` fields this config sets (only those it sets), so the
        caller can layer explicit command-line flags on top: ``ShowOptions(**{**site, **cli})``."""
        s, n, o = self.source, self.network, self.outputs
        values: dict[str, Any] = {
            "source": s.spec,
            "capture_width": s.capture_size[0] if s.capture_size else None,
            "capture_height": s.capture_size[1] if s.capture_size else None,
            "capture_fps": s.capture_fps,
            "loop_video": s.loop,
            "weights": n.weights,
            "backend": n.backend,
            "device": n.device,
            "flow_preset": n.flow_preset,
            "model": n.model,
            "precision": n.precision,
            "no_build": n.no_build,
            "window": o.window,
            "fullscreen": o.fullscreen,
            "monitor": o.monitor,
            "vcam": o.vcam,
            "vcam_device": o.vcam_device,
            "vcam_backend": o.vcam_backend,
            "record": o.record,
            "overlay": o.overlay,
            "screenshot_dir": o.screenshot_dir,
            "record_dir": o.record_dir,
            "record_codec": o.record_codec,
            "record_bitrate": o.record_bitrate,
            "streams": o.stream,
            "stream_bitrate": o.stream_bitrate,
            "keyframe_seconds": o.keyframe_interval,
            "encoder_preset": o.encoder_preset,
            "ndi": o.ndi,
            "output_size": o.size,
            "present": o.present,
        }
        return {k: v for k, v in values.items() if v is not None}

    @property
    def calibration_path(self) -> Path | None:
        """The calibration profile this site names, or None."""
        if self.calibration.file is not None:
            return self.calibration.file
        if self.calibration.site is not None:
            base = self.path.parent if self.path is not None else Path(".")
            return base / "calibration" / f"{self.calibration.site}.toml"
        return None


# ----------------------------------------------------------------------------- checking
class _Bad(Exception):
    """A value is not what a key allows; the message says what is allowed."""


class _Said(_Bad):
    """A value is wrong and the message already says why (an objective's own parser)."""


Check = Callable[[Any], Any]


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "text", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)  # fmt: skip


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("true or false")
    return value


def _int(lo: int, hi: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _Bad(f"an integer {lo}..{hi}")
        return value

    return check


def _float(lo: float, hi: float, *, open_lo: bool = False) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"a number {'>' if open_lo else ''}{lo:g}..{hi:g}")
        v = float(value)
        if not (lo < v if open_lo else lo <= v) or not v <= hi:
            raise _Bad(f"a number {'above ' if open_lo else ''}{lo:g}..{hi:g}")
        return v

    return check


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad("non-empty text")
    return value


def _choice(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise _Bad("one of " + ", ".join(repr(c) for c in choices))
        return value

    return check


def _size(value: Any) -> tuple[int, int]:
    if isinstance(value, str):
        w, sep, h = value.lower().partition("x")
        if sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0:
            return int(w), int(h)
    raise _Bad('a size "WIDTHxHEIGHT", e.g. "1280x720"')


def _output_size(value: Any) -> tuple[int, int]:
    from live.compose import MAX_OUTPUT_SIDE, MIN_OUTPUT_SIDE

    w, h = _size(value)
    if not (MIN_OUTPUT_SIDE <= w <= MAX_OUTPUT_SIDE and MIN_OUTPUT_SIDE <= h <= MAX_OUTPUT_SIDE):
        raise _Bad(f'a size "WIDTHxHEIGHT" with sides {MIN_OUTPUT_SIDE}..{MAX_OUTPUT_SIDE}, e.g. "1920x1080"')
    return w, h


def _time(value: Any) -> dt.time:
    if isinstance(value, dt.time):  # TOML's own local time (open = 10:00:00)
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
        if m and int(m.group(1)) < 24 and int(m.group(2)) < 60:
            return dt.time(int(m.group(1)), int(m.group(2)))
    raise _Bad('a time of day "HH:MM", 24-hour, e.g. "10:00" or "18:30"')


def _days(value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and value and all(isinstance(d, str) and d.lower()[:3] in DAYS for d in value):
        chosen = {d.lower()[:3] for d in value}
        return tuple(d for d in DAYS if d in chosen)
    raise _Bad("a non-empty list of days: " + ", ".join(DAYS))


def _cidrs(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if not isinstance(value, list):
        raise _Bad('a list of networks, e.g. ["192.168.1.0/24", "10.0.0.7/32"]')
    nets = []
    for item in value:
        try:
            nets.append(ipaddress.ip_network(str(item), strict=True))
        except ValueError as e:
            hint = ""
            if isinstance(item, str):
                try:
                    hint = f" (did you mean {ipaddress.ip_network(item, strict=False)}?)"
                except ValueError:
                    pass
            raise _Bad(f'networks in CIDR form such as "192.168.1.0/24"; {item!r}: {e}{hint}') from None
    return tuple(nets)


def _hostport(item: Any) -> tuple[str, int]:
    expected = '"host:port" with a port 1..65535, e.g. "192.168.1.20:9001" or "[::1]:9001"'
    if not isinstance(item, str):
        raise _Bad(expected)
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", item.strip())
    if not m:
        raise _Bad(f"{expected}; got {item!r}")
    host, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    if not 1 <= int(port) <= 65535:
        raise _Bad(f"{expected}; got port {port}")
    return host, int(port)


def _hostports(value: Any) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list):
        raise _Bad('a list of "host:port" addresses')
    return tuple(_hostport(v) for v in value)


def _preset_name(value: Any) -> str:
    if not isinstance(value, str) or not _PRESET_NAME.fullmatch(value):
        raise _Bad("a preset name: letters, digits, '-', '_' or '.', up to 64 characters")
    return value


def _preset_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _Bad("a non-empty list of preset names")
    return tuple(_preset_name(v) for v in value)


def _streams(value: Any) -> tuple[str, ...]:
    from live.outputs.targets import parse_target

    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad('a list of stream URLs, e.g. ["rtmp://live.twitch.tv/app/KEY", "srt://10.0.0.5:9000"]')
    for url in value:
        if "://" not in url:
            raise _Bad(f"stream URLs (rtmp://, rtmps://, srt://, udp://, rtp://), got {redact(url)!r}")
        try:
            parse_target(url)
        except UsageError as e:
            raise _Said(str(e)) from None
    return tuple(value)


def _bitrate(value: Any) -> int:
    from live.outputs.encoder import parse_bitrate

    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Bad('bits per second, e.g. "4500k", "6M" or 4500000')
    try:
        return parse_bitrate(value)
    except UsageError:
        raise _Bad('bits per second 100k..100M, e.g. "4500k" or "6M"') from None


def _edges(value: Any) -> tuple[float, ...]:
    """Audio band edges: a rising list of 2..17 frequencies in Hz."""
    if not isinstance(value, list) or not 2 <= len(value) <= 17 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 96000 for v in value):
        raise _Bad("a list of 2 to 17 band edges in Hz, e.g. [20, 200, 2000, 16000]")
    if any(b <= a for a, b in zip(value, value[1:])):
        raise _Bad("band edges that rise, e.g. [20, 200, 2000, 16000]")
    return tuple(float(v) for v in value)


def _host(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9.:_-]+", value):
        raise _Bad('an address to listen on, e.g. "127.0.0.1" (this machine only) or "0.0.0.0" (all)')
    return value


PATH = "path"  # marker: a path, relative to the config file's directory

# section -> key -> check. The order here is the order in the example file.
SCHEMA: dict[str, dict[str, Check | str]] = {
    "source": {"spec": _text, "capture_size": _size, "capture_fps": _float(0, 240, open_lo=True), "loop": _bool},
    "network": {"weights": _text, "backend": _text, "device": _text, "flow_preset": _choice(*FLOW_PRESETS),
                "model": _choice("torchvision", "bvlc"), "precision": _choice("fp16", "fp32", "auto"),
                "no_build": _bool},
    "outputs": {
        "window": _bool, "fullscreen": _bool, "monitor": _int(0, 63), "vcam": _bool, "vcam_device": _text,
        "vcam_backend": _text, "record": PATH, "overlay": _bool, "screenshot_dir": PATH,
        "record_dir": PATH, "record_codec": _text, "record_bitrate": _bitrate, "stream": _streams,
        "stream_bitrate": _bitrate, "keyframe_interval": _float(0.1, 60), "ndi": _text,
        "encoder_preset": _choice("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"), "size": _output_size,
        "present": _choice("camera", "dream"),
    },
    # port 0: any free one, named in the log (as --osc-port 0 / --web-port 0)
    "osc": {"enabled": _bool, "host": _host, "port": _int(0, 65535), "allow": _cidrs, "feedback": _hostports},
    "web": {"enabled": _bool, "host": _host, "port": _int(0, 65535), "mdns": _bool, "token_file": PATH},
    "midi": {"enabled": _bool, "mapping": PATH, "api": _choice(*MIDI_APIS)},
    "audio": {"enabled": _bool, "input": _text, "mapping": _text, "link": _bool, "bands": _edges,
              "attack_ms": _float(0.1, 5000), "release_ms": _float(0.1, 10000), "average_s": _float(0.5, 600),
              "gate_db": _float(-120, 0), "sensitivity": _float(0.5, 20), "min_bpm": _float(30, 300),
              "max_bpm": _float(30, 300)},
    "presets": {
        "directory": PATH, "start": _preset_name, "cycle": _preset_names,
        "cycle_minutes": _float(0, 7 * 24 * 60, open_lo=True), "morph_time": _float(0, 60),
    },
    "schedule": {"open": _time, "close": _time, "days": _days, "outside": _choice(*OUTSIDE_HOURS)},
    "idle": {"after_minutes": _float(0, 24 * 60, open_lo=True), "motion_threshold": _float(0, 1),
             "preset": _preset_name},  # plus the [idle.dream] table
    "governor": {"enabled": _bool, "target_fps": _float(0, 240, open_lo=True), "headroom": _float(0.3, 1.0),
                 "min_steps": _int(0, 50), "min_size": _size},
    "log": {"level": _choice(*LEVELS)},
    "calibration": {"file": PATH, "site": _preset_name},
}  # fmt: skip
SECTIONS = ("source", "dream", *(s for s in SCHEMA if s != "source"))


def _suggest(name: str, known: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    return f"; expected one of: {', '.join(known)}"


def _dream_value(param: Param, value: Any) -> Any:
    """A config value for ``param``: the registry's type, and out of range is an error, not a clamp."""
    if isinstance(value, (dict, list, dt.time, dt.date, dt.datetime)):
        raise _Bad(param.expects())
    if param.kind in ("int", "float") and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise _Bad(param.expects())
    if param.kind == "bool" and not isinstance(value, bool):
        raise _Bad("true or false")
    try:
        coerced = param.coerce(value)
    except UsageError as e:
        text = str(e)
        if text.startswith(f"{param.name}: "):  # an objective's own message, already specific
            raise _Said(text[len(param.name) + 2 :]) from None
        raise _Bad(param.expects()) from None
    return coerced


class _Checker:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.base = path.parent if path is not None else Path(".")
        self.errors: list[str] = []

    def error(self, key: str, value: Any, problem: _Bad) -> None:
        said = str(problem) if isinstance(problem, _Said) else f"expected {problem}"
        self.errors.append(redact(f"{key} = {_show(value)}: {said}"))  # a stream URL may hold its key

    def dream(self, table: Any, prefix: str) -> Mapping[str, Any]:
        values: dict[str, Any] = {}
        if not isinstance(table, dict):
            self.errors.append(f"[{prefix}] must be a table of live parameters, got {_type_name(table)}")
            return _frozen_map()
        for key, value in table.items():
            param = DREAM_PARAMS.get(key)
            if param is None:
                extra = " ('reset' is a button, not a setting)" if key == "reset" else ""
                suggestion = _suggest(key, list(DREAM_PARAMS), f"{prefix}.")
                self.errors.append(f"unknown key {prefix}.{key}{extra}{suggestion}")
                continue
            try:
                values[key] = _dream_value(param, value)
            except _Bad as e:
                self.error(f"{prefix}.{key}", value, e)
        return _frozen_map(values)

    def section(self, name: str, table: Any) -> dict[str, Any]:
        if not isinstance(table, dict):
            self.errors.append(f"{name} must be a table ([{name}]), got {_type_name(table)}")
            return {}
        schema = SCHEMA[name]
        out: dict[str, Any] = {}
        for key, value in table.items():
            if name == "idle" and key == "dream":
                out["dream"] = self.dream(value, "idle.dream")
                continue
            check = schema.get(key)
            if check is None:
                known = list(schema) + (["dream"] if name == "idle" else [])
                self.errors.append(f"unknown key {name}.{key}" + _suggest(key, known, f"{name}."))
                continue
            try:
                if check == PATH:
                    out[key] = self.base / Path(_text(value)).expanduser()
                else:
                    out[key] = check(value)  # type: ignore[operator]
            except _Bad as e:
                self.error(f"{name}.{key}", value, e)
        return out


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_site(data: Mapping[str, Any], path: Path | None = None) -> Site:
    """Check a parsed TOML document; UsageError listing every problem (see :func:`load_site`)."""
    where = str(path) if path is not None else "site config"
    c = _Checker(path)
    parts: dict[str, Any] = {}
    for name, table in data.items():
        if name == "dream":
            parts["dream"] = c.dream(table, "dream")
        elif name in SCHEMA:
            parts[name] = c.section(name, table)
        else:
            c.errors.append(f"unknown section [{name}]" + _suggest(name, list(SECTIONS)))
    sched = parts.get("schedule", {})
    if ("open" in sched) != ("close" in sched) and not any(k.startswith("schedule.") for k in c.errors):
        c.errors.append("[schedule] needs both open and close (or neither, for always open)")
    if "open" in sched and sched.get("open") == sched.get("close"):
        c.errors.append("schedule.open and schedule.close are the same time; leave both out for always open")
    cal = parts.get("calibration", {})
    if "file" in cal and "site" in cal:
        c.errors.append("[calibration] takes file or site, not both")
    if c.errors:
        lines = "\n  ".join(c.errors)
        raise UsageError(f"{where}: {len(c.errors)} problem(s) in the site config:\n  {lines}")

    def build(cls: type, name: str) -> Any:
        return cls(**parts[name]) if name in parts else cls()

    return Site(
        path=path,
        source=build(SourceSection, "source"),
        dream=parts.get("dream", _frozen_map()),
        network=build(NetworkSection, "network"),
        outputs=build(OutputsSection, "outputs"),
        osc=build(OscSection, "osc"),
        web=build(WebSection, "web"),
        midi=build(MidiSection, "midi"),
        audio=_audio_section(parts.get("audio", {}), c, path),
        presets=build(PresetsSection, "presets"),
        schedule=build(ScheduleSection, "schedule"),
        idle=build(IdleSection, "idle"),
        governor=build(GovernorSection, "governor"),
        log=build(LogSection, "log"),
        calibration=build(CalibrationSection, "calibration"),
    )


def _audio_section(values: Mapping[str, Any], c: _Checker, path: Path | None) -> AudioSection:
    """[audio]: the analysis keys are checked together (a tempo range, bands within Nyquist)."""
    values = dict(values)
    mapping = values.pop("mapping", None)
    if mapping is not None and ("/" in mapping or mapping.endswith(".toml")):
        mapping = str(c.base / Path(mapping).expanduser())  # a file, relative to this config; else a shipped name
    section = AudioSection(enabled=values.pop("enabled", True), input=values.pop("input", None), mapping=mapping,
                           link=values.pop("link", False), settings=_frozen_map(values))
    from live.audio.show import analysis_settings

    try:
        analysis_settings(section.settings)
    except UsageError as e:
        raise UsageError(f"{path or 'site config'}: [audio] {e}") from None
    return section


def load_site(path: Path | str) -> Site:
    """Read and check a site config. Pure: no side effects, so SIGHUP may call it again.

    Raises InputError (missing or unreadable file), DataError (not valid TOML, with the line
    number) or UsageError (every unknown key and wrong value, each with what is allowed).
    """
    path = Path(path).expanduser()
    data = read_toml(path, "site config",
                     f"site config {path} does not exist; copy live/site-example.toml there and edit it")
    return parse_site(data, path)


# ----------------------------------------------------------------------------- reloading
def _flatten(site: Site) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(site):
        if f.name == "path":
            continue
        value = getattr(site, f.name)
        if isinstance(value, Mapping):
            for k, v in value.items():
                flat[f"{f.name}.{k}"] = v
            continue
        for g in dataclasses.fields(value):
            v = getattr(value, g.name)
            if isinstance(v, Mapping):
                for k, w in v.items():
                    flat[f"{f.name}.{g.name}.{k}"] = w
            else:
                flat[f"{f.name}.{g.name}"] = v
    return flat


def _fmt(value: Any) -> str:
    return redact(_fmt_plain(value))  # stream URLs carry keys: the reload log must not


def _fmt_plain(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, (Objective, Path)):
        return str(value)
    if isinstance(value, dt.time):
        return value.strftime("%H:%M")
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):  # host:port pairs
        return "[" + ", ".join(f"{h}:{p}" for h, p in value) + "]"
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return _show(value)


def is_live(key: str) -> bool:
    """Whether a dotted key (``dream.steps``) can change while the show runs."""
    return key.split(".", 1)[0] in LIVE_SECTIONS


def diff(old: Site, new: Site) -> list[str]:
    """What changed, one line per key, for the log: ``dream.steps: 4 -> 2 (live)``."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(a.keys() | b.keys()):
        before, after = a.get(key), b.get(key)
        if before != after:
            lines.append(f"{key}: {_fmt(before)} -> {_fmt(after)} ({'live' if is_live(key) else 'needs a restart'})")
    return lines


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload changes: ``live`` lines are applied now, ``restart`` lines wait for a restart.
    ``dream`` holds the registry writes (a key removed from ``[dream]`` goes back to its default)."""

    live: tuple[str, ...]
    restart: tuple[str, ...]
    dream: Mapping[str, Any]

    @property
    def changed(self) -> bool:
        return bool(self.live or self.restart)


def reload_plan(old: Site, new: Site) -> ReloadPlan:
    """Compare two loads of the site config (SIGHUP). Only changed dream values are written, so
    what OSC or MIDI set since is left alone for every key the file did not change."""
    lines = diff(old, new)
    writes = {k: v for k, v in new.dream.items() if old.dream.get(k) != v}
    for k in old.dream.keys() - new.dream.keys():
        writes[k] = DREAM_PARAMS[k].default
    return ReloadPlan(
        live=tuple(x for x in lines if x.endswith("(live)")),
        restart=tuple(x for x in lines if not x.endswith("(live)")),
        dream=_frozen_map(writes),
    )


def apply_reload(old: Site, new: Site, registry: Registry) -> ReloadPlan:
    """SIGHUP: write the changed dream values, log every change and what needs a restart."""
    plan = reload_plan(old, new)
    if not plan.changed:
        log.info("site config reloaded: nothing changed")
        return plan
    if plan.dream:
        registry.update(dict(plan.dream), source="config")
    for line in plan.live:
        log.info("site config: %s", line)
    for line in plan.restart:
        log.warning("site config: %s - restart the service to apply it", line)
    return plan
