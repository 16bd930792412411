"""MIDI control: knobs, faders, encoders and buttons on USB controllers drive registry parameters.

A *mapping file* (TOML) lists ``[[binding]]`` tables, each tying one control to one parameter::

    [[binding]]
    port = "nanoKONTROL2"   # port-name prefix, case-insensitive; leave out for any port
    channel = 1             # 1..16; leave out for any channel
    cc = 16                 # or: note = 36 (exactly one of cc / note)
    param = "steps"         # a registry name
    min = 1                 # optional sub-range in the parameter's units (default: its range;
    max = 20                #   min > max turns the knob round)
    curve = "lin"           # lin or log (default: the parameter's own curve)
    takeover = true         # soft takeover (default true); false: the value jumps to the knob

    # buttons and pads (notes; CCs bound to on/off or trigger parameters):
    mode = "toggle"         # toggle | momentary | trigger (default: trigger for triggers, else toggle)
    # high-resolution faders:
    cc14 = true             # cc n is the coarse half (MSB), cc n+32 the fine half (LSB)
    # endless encoders:
    relative = "twos-complement"   # | binary-offset | sign-magnitude
    step = 0.0078740157     # part of the range one detent moves (default 1/127)

:class:`MidiControl` polls the port names on a background thread (hot-plug: a controller that is
unplugged and replugged works again), hands every message to :meth:`MidiControl.handle`, and
writes through :meth:`Registry.set` with source ``"midi"``. MIDI learn binds the next control
that moves to an armed parameter and saves the mapping file atomically.

MIDI is an optional extra (``mido`` + ``python-rtmidi``), imported only when ports are listed:
without it, or without an ALSA sequencer, "no MIDI: <reason>" is logged once and the show goes on.

A control sends a 0..127 position, mapped along its binding's range and curve, so it cannot ask
for a value outside the parameter's range, and a mapping file whose ``min``/``max`` lie outside
it is refused when it is loaded. A write the registry still refuses (a rule such as the largest
dream size for this machine) is not applied, is counted in :attr:`MidiControl.refused`, logged
at most once every ``LOG_EVERY`` seconds, and reaches OSC's feedback targets on ``/dream/error``
through the registry.

Ports come from ALSA (Linux's default) or JACK (``api="jack"``, ``--midi-api jack``): on a machine
that runs a JACK server for sound, controllers appear there, and virtual ports of other programs too.

MIDI learn keeps the mapping file as the operator wrote it: comments, order and layout stay, the
replaced ``[[binding]]`` tables go and the learned one is added at the end (tomlkit edits the
document instead of writing a new one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import tomlkit
import tomlkit.exceptions

from live.atomic import atomic_write
from live.control.params import Param, Registry
from live.errors import DataError, OutputError, UsageError
from live.tomlfile import read_toml

log = logging.getLogger(__name__)

SOURCE = "midi"
INSTALL_HINT = "install deepdream-live[midi] (mido and python-rtmidi)"
CURVES = ("lin", "log")
MODES = ("toggle", "momentary", "trigger")
RELATIVE = ("twos-complement", "binary-offset", "sign-magnitude")
BINDABLE = ("float", "int", "bool", "trigger", "choice")  # text and objectives have no knob position
KEYS = ("port", "channel", "cc", "note", "param", "min", "max", "curve", "mode", "cc14", "relative", "step",
        "takeover")
# A knob this close (0..1 of its travel) to the parameter's current position picks it up even if
# it did not cross it: 7-bit knobs move in 1/127 steps and a slow hand may stop just short.
PICKUP_TOLERANCE = 0.02
# A 14-bit fader sends MSB then LSB back to back; an MSB waits this long for its LSB before it is
# applied alone (as the spec says: LSB taken as 0), so a move never shows a coarse in-between value.
MSB_WAIT_S = 0.005
# With no MIDI here, ports are listed this many times less often: each failed attempt costs an
# ALSA client and prints ALSA's own complaint to stderr.
NO_MIDI_SLOWDOWN = 5
LOG_EVERY = 10.0  # s between two log lines about refused MIDI values

PortLister = Callable[[], list[str]]
PortOpener = Callable[..., Any]  # (name, callback=fn) -> a port with close()


def default_mapping_path() -> Path:
    """``$DEEPDREAM_LIVE_MIDI_MAP``, else ``$XDG_CONFIG_HOME/deepdream-live/midi.toml``."""
    if os.environ.get("DEEPDREAM_LIVE_MIDI_MAP"):
        return Path(os.environ["DEEPDREAM_LIVE_MIDI_MAP"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "deepdream-live" / "midi.toml"


def port_prefix(port_name: str) -> str:
    """A port's name without the numbers the OS appends (ALSA ``20:0``, Windows `` 1``), which
    change when a controller is replugged; what MIDI learn stores as the binding's ``port``."""
    stripped = re.sub(r"\s+\d+(:\d+)?$", "", port_name.strip())
    return stripped or port_name.strip()


# --- the mapping -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Binding:
    """One control (a CC or a note, on a port prefix and channel) tied to one parameter."""

    param: str
    cc: int | None = None
    note: int | None = None
    port: str | None = None  # name prefix, compared case-insensitively; None: any port
    channel: int | None = None  # 1..16 as printed on controllers; None: any channel
    min: float | None = None
    max: float | None = None
    curve: str | None = None
    mode: str | None = None
    cc14: bool = False
    relative: str | None = None
    step: float | None = None
    takeover: bool = True

    def matches(self, port_name: str, channel: int) -> bool:
        """Whether a message from ``port_name`` on MIDI channel ``channel`` (0..15) is for this binding."""
        if self.channel is not None and self.channel != channel + 1:
            return False
        return self.port is None or port_name.lower().startswith(self.port.lower())

    def overlaps(self, other: Binding) -> bool:
        """Whether some port and channel would reach both bindings."""
        if self.channel is not None and other.channel is not None and self.channel != other.channel:
            return False
        if self.port is None or other.port is None:
            return True
        a, b = self.port.lower(), other.port.lower()
        return a.startswith(b) or b.startswith(a)

    def describe(self) -> str:
        """``cc 16 ch 1 on 'nanoKONTROL2' -> steps``, for logs."""
        control = f"cc {self.cc}" if self.cc is not None else f"note {self.note}"
        where = f" ch {self.channel}" if self.channel is not None else ""
        where += f" on {self.port!r}" if self.port is not None else " on any port"
        return f"{control}{where} -> {self.param}"

    def to_toml(self) -> dict[str, Any]:
        """The binding as a ``[[binding]]`` table, leaving out what is at its default."""
        table: dict[str, Any] = {}
        for key in KEYS:
            value = getattr(self, key)
            if value is None or (key == "cc14" and not value) or (key == "takeover" and value):
                continue
            table[key] = value
        return table


def _show(value: Any) -> str:
    """A value as it would be written in the TOML file."""
    if isinstance(value, str):
        return json.dumps(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _default_mode(param: Param) -> str:
    return "trigger" if param.kind == "trigger" else "toggle"


def _parse_binding(entry: Any, n: int, registry: Registry, where: str) -> Binding:
    """Check one ``[[binding]]`` table; DataError naming the file, binding, key, value and what is allowed."""
    head = f"{where}: binding {n}"
    if not isinstance(entry, dict):
        raise DataError(f"{head}: expected a table of keys ([[binding]]), got {_show(entry)}")

    def bad(key: str, allowed: str) -> DataError:
        return DataError(f"{head}: {key} = {_show(entry[key])}: {allowed}")

    unknown = [k for k in entry if k not in KEYS]
    if unknown:
        raise DataError(f"{head}: unknown key {unknown[0]!r}; allowed keys: {', '.join(KEYS)}")
    if "param" not in entry:
        raise DataError(f"{head}: missing key 'param' (the parameter this control sets; one of "
                        f"{', '.join(n for n, p in registry.params.items() if p.kind in BINDABLE)})")
    name = entry["param"]
    if not isinstance(name, str) or name not in registry.params:
        raise bad("param", f"not a parameter; valid: {', '.join(registry.params)}")
    p = registry.params[name]
    if p.kind not in BINDABLE:
        bindable = ", ".join(n for n, q in registry.params.items() if q.kind in BINDABLE)
        raise bad("param", f"takes {p.expects()}, which no knob or button can send; bindable: {bindable}")
    numeric = p.kind in ("float", "int")
    button = p.kind in ("bool", "trigger")

    if ("cc" in entry) == ("note" in entry):
        raise DataError(f"{head}: give exactly one of cc (a controller number) or note (a key or pad), "
                        f"got {'both' if 'cc' in entry else 'neither'}")
    control = "cc" if "cc" in entry else "note"
    number = entry[control]
    if not _is_int(number) or not 0 <= number <= 127:
        raise bad(control, "expected an integer 0..127")

    port = entry.get("port")
    if "port" in entry and (not isinstance(port, str) or not port.strip()):
        raise bad("port", "expected the start of a port name, such as \"nanoKONTROL2\" (leave it out for any port)")
    channel = entry.get("channel")
    if "channel" in entry and (not _is_int(channel) or not 1 <= channel <= 16):
        raise bad("channel", "expected an integer 1..16 (leave it out for any channel)")

    bounds: dict[str, float] = {}
    for key in ("min", "max"):
        if key not in entry:
            continue
        if not numeric:
            raise bad(key, f"a sub-range needs a number parameter; {name} is {p.kind}")
        value = entry[key]
        if not _is_number(value) or not p.lo <= value <= p.hi:
            raise bad(key, f"expected a number within {name}'s range {p.lo:g}..{p.hi:g}")
        bounds[key] = float(value)
    lo, hi = bounds.get("min", p.lo), bounds.get("max", p.hi)
    if numeric and lo == hi:
        raise DataError(f"{head}: min and max are both {lo:g}: the control would do nothing")

    curve = entry.get("curve")
    if "curve" in entry:
        if curve not in CURVES:
            raise bad("curve", f"expected one of {', '.join(CURVES)}")
        if not numeric:
            raise bad("curve", f"a curve shapes a number range; {name} is {p.kind}")
    if numeric and (curve or p.curve) == "log" and not (lo > 0 and hi > 0):
        key = "curve" if "curve" in entry else "param"
        raise bad(key, f"a log curve needs a range above 0, and {lo:g}..{hi:g} is not; set min and max above 0 "
                       f"or use curve = \"lin\"")

    mode = entry.get("mode")
    if "mode" in entry:
        if mode not in MODES:
            raise bad("mode", f"expected one of {', '.join(MODES)}")
        if control == "cc" and not button:
            raise bad("mode", f"modes are for notes and for buttons bound to on/off or trigger parameters; "
                              f"cc {number} -> {name} ({p.kind}) is a knob or fader")
        if (mode == "trigger") != (p.kind == "trigger"):
            allowed = "trigger" if p.kind == "trigger" else "toggle or momentary"
            raise bad("mode", f"{name} is {'a trigger' if p.kind == 'trigger' else p.kind}: use {allowed}")

    cc14 = entry.get("cc14", False)
    if "cc14" in entry:
        if not isinstance(cc14, bool):
            raise bad("cc14", "expected true or false")
        if cc14 and (control != "cc" or number > 31):
            raise bad("cc14", "14-bit pairs are cc 0..31 (coarse) with cc 32..63 (fine); give cc = 0..31")
        if cc14 and button:
            raise bad("cc14", f"14-bit resolution is for knobs and faders; {name} is {p.kind}")

    relative = entry.get("relative")
    if "relative" in entry:
        if relative not in RELATIVE:
            raise bad("relative", f"expected one of {', '.join(RELATIVE)}")
        if control != "cc" or not numeric:
            raise bad("relative", "relative mode is for endless encoders sending a cc to a number parameter")
        if cc14:
            raise bad("relative", "an encoder sends steps, not a 14-bit position: drop cc14")
    step = entry.get("step")
    if "step" in entry:
        if relative is None:
            raise DataError(f"{head}: step = {_show(step)}: step is for relative encoders; add relative = "
                            f"\"{RELATIVE[0]}\" (or {', '.join(RELATIVE[1:])})")
        if not _is_number(step) or not 0 < step <= 1:
            raise bad("step", "expected the part of the range one detent moves, above 0 and at most 1 (1/127 = "
                              "0.00787 is the default)")
    takeover = entry.get("takeover", True)
    if not isinstance(takeover, bool):
        raise bad("takeover", "expected true or false")

    return Binding(param=name, cc=number if control == "cc" else None, note=number if control == "note" else None,
                   port=port.strip() if port else None, channel=channel, min=bounds.get("min"),
                   max=bounds.get("max"), curve=curve, mode=mode, cc14=cc14, relative=relative,
                   step=float(step) if step is not None else None, takeover=takeover)


def _check_lsb_clashes(bindings: list[Binding], where: str) -> None:
    """A 14-bit pair claims cc n+32; another binding there would see fader noise as its own moves."""
    for i, fine in enumerate(bindings, 1):
        if not fine.cc14:
            continue
        for j, other in enumerate(bindings, 1):
            if other.cc == fine.cc + 32 and fine.overlaps(other):
                raise DataError(f"{where}: binding {j}: cc = {other.cc}: that is the fine (LSB) half of binding "
                                f"{i}'s 14-bit cc {fine.cc} on the same port and channel; move one of them or "
                                f"set cc14 = false in binding {i}")


def parse_mapping(data: Mapping[str, Any], registry: Registry, where: str = "MIDI mapping") -> list[Binding]:
    """The bindings of a parsed mapping document, each checked against the registry."""
    unknown = [k for k in data if k != "binding"]
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r}; a MIDI mapping holds only [[binding]] tables")
    entries = data.get("binding", [])
    if not isinstance(entries, list):
        raise DataError(f"{where}: binding must be an array of tables ([[binding]]), got {_show(entries)}")
    bindings = [_parse_binding(entry, n, registry, where) for n, entry in enumerate(entries, 1)]
    for n, b in enumerate(bindings, 1):
        if b in bindings[: n - 1]:  # a toggle bound twice would flip twice: nothing visible happens
            raise DataError(f"{where}: binding {n} repeats binding {bindings.index(b) + 1} ({b.describe()}); "
                            f"remove one")
    _check_lsb_clashes(bindings, where)
    return bindings


def load_mapping(path: Path, registry: Registry) -> list[Binding]:
    """Read and check a mapping file; InputError if it cannot be read, DataError if it is wrong."""
    data = read_toml(path, "MIDI mapping", f"no MIDI mapping file {path}")
    return parse_mapping(data, registry, str(path))


NEW_MAPPING_HEAD = ("# deepdream-live MIDI mapping; keys are described in live/control/midi.py and in\n"
                    "# live/control/layouts/midi-example.toml. MIDI learn adds bindings at the end and keeps\n"
                    "# everything else in this file as it is, comments included.\n")
_TABLE_HEADER = re.compile(r"^\s*\[\[\s*binding\s*\]\]\s*(#.*)?$")
_KEY_LINE = re.compile(r"^\s*[A-Za-z0-9_\"'-]+\s*=")


def _tables_text(bindings: list[Binding] | tuple[Binding, ...]) -> str:
    """``[[binding]]`` tables for ``bindings``, a blank line between them (tomlkit writes the TOML)."""
    return "\n".join(tomlkit.dumps({"binding": [b.to_toml()]}) for b in bindings)


def _edit_mapping(text: str, wanted: list[Binding], registry: Registry) -> str | None:
    """``text`` with the tables of bindings not in ``wanted`` cut out (from their header to their
    last key, and the blank lines after it) and the missing ones appended; every other line,
    comments and section headings included, stays as written. None when the file is laid out in a
    way this cannot edit line by line (it does not parse, or holds its tables some other way)."""
    try:
        entries = tomlkit.parse(text).unwrap().get("binding", [])
    except tomlkit.exceptions.TOMLKitError:
        return None
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if _TABLE_HEADER.match(line)]
    if not isinstance(entries, list) or len(headers) != len(entries):
        return None
    remaining = list(wanted)
    cut: set[int] = set()
    for n, (start, entry) in enumerate(zip(headers, entries, strict=True)):
        try:
            binding = _parse_binding(entry, n + 1, registry, "MIDI mapping")
        except DataError as e:  # edited by hand since the show loaded it: not ours to drop
            log.warning("MIDI learn leaves %s as it is", e)
            continue
        if binding in remaining:
            remaining.remove(binding)
            continue
        end = headers[n + 1] if n + 1 < len(headers) else len(lines)
        last = max((i for i in range(start + 1, end) if _KEY_LINE.match(lines[i])), default=start)
        stop = last + 1
        while stop < end and not lines[stop].strip():
            stop += 1
        cut.update(range(start, stop))
    edited = "".join(line for i, line in enumerate(lines) if i not in cut)
    if remaining:
        edited = edited.rstrip("\n") + "\n\n" + _tables_text(remaining)
    return edited


def mapping_text(bindings: list[Binding] | tuple[Binding, ...], previous: str | None = None,
                 registry: Registry | None = None) -> str:
    """The mapping file's text for ``bindings``. Given the file's ``previous`` text, that text is
    edited: bindings that stay keep their tables as written, with every comment, heading and blank
    line around them; tables of bindings that went are cut out; new bindings are appended at the
    end. Without it, or when the old file cannot be edited line by line, a new file is written."""
    if previous is not None:
        edited = _edit_mapping(previous, list(bindings), registry or Registry())
        if edited is not None:
            return edited
        log.warning("the MIDI mapping file could not be edited in place; writing it anew (its comments are lost)")
    return NEW_MAPPING_HEAD + "\n" + _tables_text(bindings)


def save_mapping(path: Path, bindings: list[Binding] | tuple[Binding, ...]) -> None:
    """Write the bindings atomically (readers see the old file or the new one), editing the file
    that is there so its comments and layout stay (see :func:`mapping_text`); OutputError if not."""
    try:
        previous = path.read_text(encoding="utf-8") if path.exists() else None
    except (OSError, UnicodeDecodeError) as e:
        log.warning("cannot read MIDI mapping %s to keep its comments (%s); writing it anew", path, e)
        previous = None
    text = mapping_text(bindings, previous)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            f.write(text.encode("utf-8"))
    except OSError as e:
        raise OutputError(f"cannot save MIDI mapping {path}: {e}") from e


# --- from messages to values -----------------------------------------------------------------


class _Route:
    """A binding resolved against its parameter: how a 0..1 position becomes a value and back."""

    def __init__(self, binding: Binding, param: Param) -> None:
        self.binding = binding
        self.param = param
        self.numeric = param.kind in ("float", "int")
        self.lo = binding.min if binding.min is not None else param.lo
        self.hi = binding.max if binding.max is not None else param.hi
        self.log = (binding.curve or param.curve) == "log"
        self.mode = binding.mode or _default_mode(param)
        self.button = binding.note is not None or param.kind in ("bool", "trigger")
        self.step = binding.step if binding.step is not None else 1 / 127

    def value_at(self, x: float) -> Any:
        """The value a control at ``x`` (0..1) asks for, in the parameter's type and range."""
        if not self.numeric:
            return self.param.from_norm(x)
        v = self.lo * (self.hi / self.lo) ** x if self.log else self.lo + x * (self.hi - self.lo)
        # the curve's float rounding may land a hair outside the binding's range at its ends
        v = min(max(v, min(self.lo, self.hi)), max(self.lo, self.hi))
        return self.param.coerce(round(v) if self.param.kind == "int" else v)

    def pos_of(self, value: Any) -> float:
        """Where along this control (0..1, clamped) ``value`` sits."""
        if not self.numeric:
            x = self.param.to_norm(value)
        elif self.log:
            x = math.log(value / self.lo) / math.log(self.hi / self.lo) if value > 0 else 0.0
        else:
            x = (value - self.lo) / (self.hi - self.lo)
        return min(max(x, 0.0), 1.0)


def _decode_relative(value: int, scheme: str) -> int:
    """Signed detents from one encoder message (several at once when the encoder accelerates)."""
    if scheme == "twos-complement":  # 1..63 up, 127 = -1 .. 64 = -64
        return value - 128 if value >= 64 else value
    if scheme == "binary-offset":  # 64 is rest: 65 = +1, 63 = -1
        return value - 64
    return -(value - 64) if value >= 64 else value  # sign-magnitude: bit 6 is the sign, 65 = -1


_UNSET = object()


class _State:
    """What one control on one port last did: for pickup, button edges, 14-bit halves, encoders."""

    __slots__ = ("knob", "msb", "pending_since", "pos", "pressed", "seen_lsb", "sent")

    def __init__(self) -> None:
        self.knob: float | None = None  # last position received
        self.sent: Any = _UNSET  # value last written; the registry holding another means someone else moved it
        self.pressed = False
        self.msb: int | None = None
        self.seen_lsb = False  # a controller that never sends the fine half is treated as 7-bit
        self.pending_since: float | None = None
        self.pos: float | None = None  # an encoder's position, kept finer than an int parameter's steps


# --- ports -----------------------------------------------------------------------------------

# python-rtmidi's API for each MIDI system a show can choose (--midi-api, [midi] api).
APIS = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK"}
API_LABELS = {"alsa": "ALSA", "jack": "JACK"}
ALSA_SEQUENCER = "/dev/snd/seq"
# What ALSA's and JACK's C libraries print on stderr when there is no sequencer or no server;
# the reason reaches the log as one "no MIDI" line instead.
_NATIVE_NOISE = re.compile(rb"^(ALSA lib |Cannot connect to server|jack server is not running|JackShm|"
                           rb"Cannot open .*jack|JackClient|jack_client_open)")
_stderr_lock = threading.Lock()


def resolve_api(api: str | None = None) -> str | None:
    """The MIDI system in use: ``api`` when given ("alsa" or "jack"; UsageError otherwise), else
    the one ``$MIDO_BACKEND`` names, else ALSA on Linux; None means the operating system's own
    (CoreMIDI, Windows MM) through mido's default."""
    if api is not None:
        if api not in APIS:
            raise UsageError(f"MIDI API {api!r}: expected one of {', '.join(APIS)}")
        return api
    chosen = os.environ.get("MIDO_BACKEND", "").upper()
    if "JACK" in chosen:
        return "jack"
    if "ALSA" in chosen or (not chosen and sys.platform.startswith("linux")):
        return "alsa"
    return None


def api_label(api: str | None = None) -> str:
    """``ALSA``, ``JACK`` or what else ``$MIDO_BACKEND`` names, for logs and ``check``."""
    resolved = resolve_api(api)
    if resolved is not None:
        return API_LABELS[resolved]
    return os.environ.get("MIDO_BACKEND") or "the system's MIDI"


def _blocked(api: str | None) -> str | None:
    """Why listing ports cannot work, found without asking the MIDI library (which would print
    ALSA's complaint on stderr): an ALSA sequencer device that is missing or forbidden."""
    if api != "alsa" or not sys.platform.startswith("linux"):
        return None
    if not os.path.exists(ALSA_SEQUENCER):
        return (f"no ALSA sequencer ({ALSA_SEQUENCER} is missing): load it with `sudo modprobe snd-seq`, "
                "or use JACK (--midi-api jack) where a JACK server runs")
    if not os.access(ALSA_SEQUENCER, os.R_OK | os.W_OK):
        return (f"no permission to use the ALSA sequencer {ALSA_SEQUENCER}: add this user to the audio "
                "group (`sudo usermod -aG audio $USER`, then log in again)")
    return None


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Hold back what ALSA's and JACK's C libraries print on file descriptor 2 while the block
    runs; every other line written there meanwhile (another thread's log) is passed on after it."""
    with _stderr_lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no fd 2 to redirect (embedded, closed)
            yield
            return
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                held.seek(0)
                lines = held.read().splitlines(keepends=True)
                noise = [line for line in lines if _NATIVE_NOISE.match(line)]
                kept = b"".join(line for line in lines if not _NATIVE_NOISE.match(line))
                if kept:
                    os.write(2, kept)
                if noise:
                    log.debug("held back from the MIDI library: %s",
                              " | ".join(x.strip().decode(errors="replace") for x in noise))


class MidoPorts:
    """Input ports through mido and python-rtmidi on one MIDI system: MidiControl's default
    ``list_ports`` and ``open_port``. ``api`` None follows ``$MIDO_BACKEND``, else the platform's."""

    def __init__(self, api: str | None = None) -> None:
        self.api = resolve_api(api)
        self._explicit = api is not None
        self._backend: Any = None

    @property
    def label(self) -> str:
        """The MIDI system's name: ALSA, JACK, …"""
        return api_label(self.api if self._explicit else None)

    def blocked(self) -> str | None:
        """Why ports cannot be listed here now, when that is known without trying; else None."""
        return _blocked(self.api)

    def _mido(self) -> Any:
        if self._backend is None:
            import mido  # an optional extra: imported when MIDI is first used, not with the package

            self._backend = (mido.Backend(f"mido.backends.rtmidi/{APIS[self.api]}", load=True)
                             if self._explicit and self.api is not None else mido)
        return self._backend

    def list_ports(self) -> list[str]:
        """The input port names; OSError saying why when this MIDI system does not answer."""
        backend = self._mido()  # ImportError first: without the extra nothing else matters
        blocked = self.blocked()
        if blocked:
            raise OSError(blocked)
        try:
            with quiet_native_stderr():
                return list(backend.get_input_names())
        except (SystemError, RuntimeError, OSError) as e:
            raise OSError(_hint(str(e).strip() or type(e).__name__, self.api)) from e

    def open_port(self, name: str, callback: Callable[[Any], None]) -> Any:
        """Open input port ``name``; messages go to ``callback`` on the MIDI library's thread."""
        backend = self._mido()
        with quiet_native_stderr():
            return backend.open_input(name, callback=callback)


def _hint(reason: str, api: str | None) -> str:
    if api == "jack" and "jack" in reason.lower():
        return f"{reason} (start the JACK server, e.g. `jackd -d alsa` or your JACK session, or use --midi-api alsa)"
    if api == "alsa" and "alsa" in reason.lower():
        return f"{reason} (check `aconnect -l`; or use JACK: --midi-api jack)"
    return reason


def _no_midi_reason(error: BaseException) -> str:
    if isinstance(error, ImportError):
        return f"{INSTALL_HINT}; {error}"
    return str(error).strip() or type(error).__name__


def midi_available(list_ports: PortLister | None = None, api: str | None = None) -> tuple[bool, str]:
    """Whether MIDI input works here, and a line saying why not or which ports there are (health check)."""
    try:
        names = (list_ports or MidoPorts(api).list_ports)()
    except (ImportError, SystemError, OSError, RuntimeError) as e:
        return False, f"no MIDI: {_no_midi_reason(e)}"
    if not names:
        return True, "MIDI works; no input ports (plug a controller in)"
    return True, f"MIDI input ports: {', '.join(names)}"


class MidiControl:
    """MIDI input for the show: a mapping, MIDI learn, soft takeover, 14-bit CCs, encoders, hot-plug.

    A daemon thread lists the input ports every ``poll_interval`` seconds, opens those a binding's
    ``port`` prefix names (all of them while learning, or when a binding names no port), closes the
    ones that vanished and reopens them when they come back. ``list_ports`` and ``open_port``
    (called as ``open_port(name, callback=fn)``) default to mido's on the MIDI system ``api``
    ("alsa", "jack"; None: ``$MIDO_BACKEND``, else the platform's); tests pass fakes.
    """

    def __init__(
        self,
        registry: Registry,
        mapping_path: Path | None = None,
        *,
        list_ports: PortLister | None = None,
        open_port: PortOpener | None = None,
        poll_interval: float = 2.0,
        api: str | None = None,
    ) -> None:
        self.registry = registry
        self.mapping_path = Path(mapping_path) if mapping_path is not None else None
        self.poll_interval = poll_interval
        self.ports = MidoPorts(api)  # UsageError for an unknown API, before any thread starts
        self._list_ports = list_ports or self.ports.list_ports
        self._open_port = open_port or self.ports.open_port
        self._default_ports = list_ports is None
        self._lock = threading.RLock()  # callbacks of several ports, learn() and the poller share the state
        self._routes: list[_Route] = []
        self._index: dict[tuple[str, int], list[tuple[_Route, str]]] = {}
        self._states: dict[tuple[Binding, str], _State] = {}
        self._pending: dict[tuple[Binding, str], _Route] = {}  # 14-bit MSBs waiting for their LSB
        self._learning: str | None = None
        self._ports: dict[str, Any] = {}
        self._known: set[str] = set()  # stable names of ports opened before, to log "back" not "opened"
        self._open_failed: set[str] = set()
        self._unavailable: str | None = None
        self._handler_errors: set[str] = set()
        self.refused = 0  # values the registry refused (not applied)
        self._refusal_logged = (-math.inf, 0)  # (when, refused count then)
        self._repoll = False
        self._stop = threading.Event()
        self._wake = threading.Event()

        if self.mapping_path is not None:
            if self.mapping_path.exists():
                self._set_bindings(load_mapping(self.mapping_path, registry))
                log.info("MIDI mapping %s: %d binding(s)", self.mapping_path, len(self._routes))
            else:
                log.info("no MIDI mapping at %s yet; MIDI learn will create it", self.mapping_path)
        if self._default_ports:
            log.info("MIDI over %s", self.ports.label)
        self._thread = threading.Thread(target=self._run, name="midi-ports", daemon=True)
        self._thread.start()

    # -- the public surface --

    @property
    def bindings(self) -> tuple[Binding, ...]:
        """The bindings in force, in mapping-file order."""
        with self._lock:
            return tuple(r.binding for r in self._routes)

    @property
    def open_ports(self) -> list[str]:
        """The names of the ports open now."""
        with self._lock:
            return sorted(self._ports)

    @property
    def learning(self) -> str | None:
        """The parameter armed for MIDI learn, if any."""
        return self._learning

    @property
    def unavailable(self) -> str | None:
        """Why MIDI does not work here (the last "no MIDI" reason), or None while it does."""
        return self._unavailable

    def reload(self) -> None:
        """Read the mapping file again (DataError/InputError if it is wrong; the old mapping stays)."""
        if self.mapping_path is None:
            raise UsageError("no MIDI mapping file to reload; start with one to use this")
        bindings = load_mapping(self.mapping_path, self.registry)
        with self._lock:
            self._set_bindings(bindings)
        log.info("MIDI mapping %s reloaded: %d binding(s)", self.mapping_path, len(bindings))
        self._poll_soon()

    def learn(self, param: str) -> None:
        """Arm MIDI learn: the next CC or note from any port is bound to ``param`` and saved."""
        p = self.registry.param(param)  # UsageError listing the valid names
        if p.kind not in BINDABLE:
            bindable = ", ".join(n for n, q in self.registry.params.items() if q.kind in BINDABLE)
            raise UsageError(f"{param} takes {p.expects()}, which no knob or button can send; learnable: {bindable}")
        with self._lock:
            self._learning = param
        note = f" (but no MIDI here: {self._unavailable})" if self._unavailable else ""
        log.info("MIDI learn: move a knob or press a pad to bind it to %s%s", param, note)
        self._poll_soon()  # open every port, not only the mapped ones

    def cancel_learn(self) -> bool:
        """Disarm MIDI learn; True if it was armed."""
        with self._lock:
            was, self._learning = self._learning, None
        if was:
            log.info("MIDI learn for %s cancelled", was)
        return was is not None

    def handle(self, message: Any, port_name: str) -> None:
        """Act on one mido message from ``port_name``: learn, or set the bound parameters."""
        kind = message.type
        if kind == "control_change":
            key, value = ("cc", message.control), message.value
        elif kind == "note_on":
            key, value = ("note", message.note), message.velocity
        elif kind == "note_off":
            key, value = ("note", message.note), 0
        else:
            return  # clock, sysex, aftertouch …: arrive by the thousand, mean nothing here
        with self._lock:
            if self._learning is not None:
                self._learn_from(key, message.channel, value, port_name)
                return
            if self._pending:
                self._flush(lambda k, r: k[1] == port_name and not self._is_lsb_of(r, key))
            for route, role in self._index.get(key, ()):
                if route.binding.matches(port_name, message.channel):
                    state = self._states.setdefault((route.binding, port_name), _State())
                    try:
                        self._apply(route, role, state, value, port_name)
                    except UsageError as e:  # refused by the registry: not applied, counted, said
                        self._refused(route, port_name, e)

    def _refused(self, route: _Route, port_name: str, error: UsageError) -> None:
        self.refused += 1
        now = time.monotonic()
        when, count = self._refusal_logged
        if now - when >= LOG_EVERY:
            hidden = self.refused - count - 1
            log.warning("MIDI %s from %s refused: %s%s", route.binding.describe(), port_name, error,
                        f" ({hidden} more refused since the last report)" if hidden > 0 else "")
            self._refusal_logged = (now, self.refused)

    def close(self) -> None:
        """Stop the polling thread and close the ports (safe to call twice)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._close_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- mapping --

    def _set_bindings(self, bindings: list[Binding]) -> None:
        routes = [_Route(b, self.registry.params[b.param]) for b in bindings]
        index: dict[tuple[str, int], list[tuple[_Route, str]]] = {}
        for r in routes:
            b = r.binding
            if b.note is not None:
                index.setdefault(("note", b.note), []).append((r, "button"))
            elif b.cc14:
                index.setdefault(("cc", b.cc), []).append((r, "msb"))
                index.setdefault(("cc", b.cc + 32), []).append((r, "lsb"))
            else:
                index.setdefault(("cc", b.cc), []).append((r, "button" if r.button else "cc"))
        self._routes, self._index = routes, index
        # Bindings that stayed keep their pickup state; those that went take theirs with them.
        kept = set(bindings)
        self._states = {k: s for k, s in self._states.items() if k[0] in kept}
        self._pending = {k: r for k, r in self._pending.items() if k[0] in kept}

    def _learn_from(self, key: tuple[str, int], channel: int, value: int, port_name: str) -> None:
        kind, number = key
        if kind == "note" and value == 0:
            return  # the release of a pad pressed before learn was armed
        name = self._learning
        assert name is not None
        learned = Binding(param=name, port=port_prefix(port_name), channel=channel + 1,
                          cc=number if kind == "cc" else None, note=number if kind == "note" else None)
        # Older bindings this control would also fire are replaced, whichever parameter they set.
        kept = [r.binding for r in self._routes
                if not (r.binding.cc == learned.cc and r.binding.note == learned.note
                        and r.binding.overlaps(learned))]
        replaced = len(self._routes) - len(kept)
        bindings = [*kept, learned]
        try:
            _check_lsb_clashes(bindings, "MIDI learn")
        except DataError as e:
            log.warning("%s; still learning %s, move another control", e, name)
            return
        self._set_bindings(bindings)
        self._learning = None
        if kind == "cc":  # the knob's position is known now, so the next move can pick the value up
            self._states.setdefault((learned, port_name), _State()).knob = value / 127
        what = learned.describe() + (f" (replacing {replaced} older binding(s) of that control)" if replaced else "")
        if self.mapping_path is None:
            log.info("MIDI learn: %s; not saved: no mapping file given", what)
            return
        try:
            save_mapping(self.mapping_path, bindings)
        except OutputError as e:
            log.error("MIDI learn: %s, but %s", what, e)
            return
        log.info("MIDI learn: %s; saved to %s", what, self.mapping_path)

    # -- values --

    @staticmethod
    def _is_lsb_of(route: _Route, key: tuple[str, int]) -> bool:
        return key[0] == "cc" and route.binding.cc14 and key[1] == route.binding.cc + 32

    def _apply(self, route: _Route, role: str, state: _State, value: int, port_name: str) -> None:
        b = route.binding
        if role == "button":
            self._press(route, state, value > 0 if b.note is not None else value >= 64, b.note is not None)
        elif role == "msb":
            state.msb = value
            if state.seen_lsb:
                state.pending_since = time.monotonic()
                self._pending[(b, port_name)] = route
                self._wake.set()  # the poller applies it alone if no LSB follows
            else:
                self._absolute(route, state, value / 127)
        elif role == "lsb":
            state.seen_lsb = True
            if state.msb is None:
                return  # a fine half with no coarse half yet says nothing about the position
            self._pending.pop((b, port_name), None)
            state.pending_since = None
            self._absolute(route, state, (state.msb * 128 + value) / 16383)
        elif b.relative is not None:
            self._relative(route, state, _decode_relative(value, b.relative))
        else:
            self._absolute(route, state, value / 127)

    def _absolute(self, route: _Route, state: _State, x: float) -> None:
        """A knob or fader at ``x``; with soft takeover it must reach the current value first."""
        name = route.param.name
        target = route.value_at(x)
        previous, state.knob = state.knob, x
        if route.binding.takeover:
            current = self.registry.get(name)
            if state.sent is _UNSET or current != state.sent:  # never set by this knob, or moved elsewhere
                at = route.pos_of(current)
                crossed = previous is not None and (previous - at) * (x - at) <= 0
                if not (target == current or abs(x - at) <= PICKUP_TOLERANCE or crossed):
                    return
        state.sent = self.registry.set(name, target, SOURCE)

    def _relative(self, route: _Route, state: _State, detents: int) -> None:
        """An endless encoder: move from wherever the parameter is now (no takeover needed)."""
        if detents == 0:
            return
        name = route.param.name
        current = self.registry.get(name)
        if state.pos is None or current != state.sent:
            state.pos = route.pos_of(current)
        state.pos = min(max(state.pos + detents * route.step, 0.0), 1.0)
        state.sent = self.registry.set(name, route.value_at(state.pos), SOURCE)

    def _press(self, route: _Route, state: _State, pressed: bool, is_note: bool) -> None:
        """A button or pad: notes press on every note-on; CC buttons on crossing 64 upwards."""
        edge = pressed and (is_note or not state.pressed)
        state.pressed = pressed
        name = route.param.name
        if route.mode == "momentary":
            state.sent = self.registry.set(name, route.value_at(1.0 if pressed else 0.0), SOURCE)
        elif not edge:
            return
        elif route.mode == "trigger":
            state.sent = self.registry.set(name, True, SOURCE)
        else:  # toggle: flip between the two ends of the range (on and off for a switch)
            on = route.value_at(1.0)
            off = route.value_at(0.0)
            state.sent = self.registry.set(name, off if self.registry.get(name) == on else on, SOURCE)

    def _flush(self, due: Callable[[tuple[Binding, str], _Route], bool]) -> None:
        """Apply the waiting 14-bit MSBs that ``due`` picks, alone (their LSB taken as 0)."""
        for key, route in list(self._pending.items()):
            if due(key, route):
                del self._pending[key]
                state = self._states[key]
                state.pending_since = None
                if state.msb is not None:
                    self._absolute(route, state, state.msb * 128 / 16383)

    def _flush_due(self, limit: float) -> None:
        """Apply alone the MSBs that have waited since before ``limit`` for an LSB."""
        with self._lock:
            self._flush(lambda key, route: (self._states[key].pending_since or 0.0) <= limit)

    # -- ports --

    def _poll_soon(self) -> None:
        self._repoll = True
        self._wake.set()

    def _run(self) -> None:
        next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_poll or self._repoll:
                self._repoll = False
                try:
                    interval = self._poll()
                except Exception:  # the poller must outlive any one surprise; say what it was
                    log.exception("MIDI port polling failed; trying again in %.0f s", self.poll_interval)
                    interval = self.poll_interval
                next_poll = time.monotonic() + interval
            if self._pending:
                self._flush_due(time.monotonic() - MSB_WAIT_S)
            timeout = max(next_poll - time.monotonic(), 0.0)
            if self._pending:
                timeout = min(timeout, MSB_WAIT_S)
            self._wake.wait(timeout)
            self._wake.clear()

    def _sequencer_may_be_back(self) -> bool:
        """Whether listing ports again could succeed; for ALSA on Linux the sequencer device must
        exist (checked without a listing, which would cost an ALSA client and stderr noise)."""
        return not self._default_ports or self.ports.blocked() is None

    def _poll(self) -> float:
        """List the ports, open and close to match; returns the seconds until the next poll."""
        slow = self.poll_interval * NO_MIDI_SLOWDOWN
        if self._unavailable is not None and not self._sequencer_may_be_back():
            return slow
        try:
            names = list(self._list_ports())
        except (ImportError, SystemError, OSError, RuntimeError) as e:
            self._no_midi(_no_midi_reason(e))
            return slow
        if self._unavailable is not None:
            log.info("MIDI works again (%s)", ", ".join(names) or "no input ports yet")
            self._unavailable = None
        with self._lock:
            wanted = self._wanted(names)
            closing = [(name, self._detach(name)) for name in list(self._ports) if name not in wanted]
            opening = [name for name in names if name in wanted and name not in self._ports]
        for name, port in closing:
            self._close(name, port)
            if name not in names:
                log.warning("MIDI port gone: %s (it is reopened when it returns)", name)
        for name in opening:
            self._open(name)
        return self.poll_interval

    def _wanted(self, names: list[str]) -> set[str]:
        if self._learning is not None or any(r.binding.port is None for r in self._routes):
            return set(names)
        prefixes = [r.binding.port.lower() for r in self._routes if r.binding.port]
        return {n for n in names if any(n.lower().startswith(p) for p in prefixes)}

    def _open(self, name: str) -> None:
        try:
            port = self._open_port(name, callback=lambda message, _name=name: self._on_message(message, _name))
        except (SystemError, OSError, RuntimeError, ValueError, ImportError) as e:
            if name not in self._open_failed:  # once per port, not every poll
                self._open_failed.add(name)
                log.warning("cannot open MIDI port %s: %s (trying again while it is there)", name, e)
            return
        self._open_failed.discard(name)
        if self._stop.is_set():  # closed meanwhile (a slow machine outlived close()'s join): let go
            self._close(name, port)
            return
        with self._lock:
            self._ports[name] = port
        stable = port_prefix(name)
        log.info("MIDI port %s: %s", "back" if stable in self._known else "opened", name)
        self._known.add(stable)

    def _detach(self, name: str) -> Any:
        """Forget a port (under the lock); the caller closes it after letting go of the lock, since
        closing joins the port's callback thread, which may be waiting for that lock."""
        port = self._ports.pop(name)
        # A replugged controller starts from unknown knob positions: pick values up afresh.
        self._states = {k: s for k, s in self._states.items() if k[1] != name}
        self._pending = {k: r for k, r in self._pending.items() if k[1] != name}
        return port

    def _close_all(self) -> None:
        with self._lock:
            closing = [(name, self._detach(name)) for name in list(self._ports)]
        for name, port in closing:
            self._close(name, port)

    @staticmethod
    def _close(name: str, port: Any) -> None:
        try:
            port.close()
        except (SystemError, OSError, RuntimeError) as e:  # a port whose device is gone may refuse
            log.debug("closing MIDI port %s: %s", name, e)

    def _no_midi(self, reason: str) -> None:
        if self._unavailable is None:
            log.warning("no MIDI: %s", reason)
        self._unavailable = reason
        self._close_all()

    def _on_message(self, message: Any, port_name: str) -> None:
        """The port's callback (rtmidi's thread): nothing may escape into the MIDI library."""
        try:
            self.handle(message, port_name)
        except Exception as e:  # logged once per kind: a show sends thousands of messages
            kind = f"{type(e).__name__}: {e}"
            if kind not in self._handler_errors:
                self._handler_errors.add(kind)
                log.exception("MIDI message %s from %s failed", message, port_name)
