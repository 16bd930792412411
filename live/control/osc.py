"""OSC control: ``/dream/<param>`` messages from TouchOSC, Open Stage Control or TouchDesigner.

Every address writes through the parameter :class:`~live.control.params.Registry`, so OSC,
MIDI, keys and presets all land in one place, and every accepted change from any of them is
sent back to the configured controllers (feedback) so their faders follow.

Address space (prefix ``/dream``; :func:`live.control.osc_reference.address_table_markdown`
renders it for the README):

* ``/dream/<param> <value>`` in engineering units; ``/dream/<param>/norm <0..1>`` for faders.
  Integer parameters round floats (faders send floats). On/off parameters take 0/1, T/F,
  true/false; with no argument they toggle. Triggers (``reset``) fire on a non-zero or
  no-argument message, so a push button's release (0) does not fire twice.
* ``/dream/layer <name | alias | 1-based index>``, ``/dream/layer/norm <0..1>``,
  ``/dream/channel <int>`` (a channel of the deepest layer now dreamed on),
  ``/dream/objective <string form>``.
* ``/dream/preset/load <name>``, ``/dream/preset/save <name>``, ``/dream/morph <seconds>``,
  ``/dream/learn <param>``, ``/dream/record/start``, ``/dream/record/stop`` and
  ``/dream/stream/<n>/enable <0|1>``: handed to the ``actions`` the app passes in.
* ``/dream/query <param>``, ``/dream/dump``, ``/dream/status``: replies. A reply goes to the
  sender's address (its IP and source port, where Open Stage Control and python-osc clients
  listen) *and* to every feedback target, because TouchOSC listens on its own port, not on
  the port it sends from. Status replies are one message per field, ``/dream/status/fps``
  etc., so each field can drive its own label widget.

Threads: one blocking server thread handles datagrams strictly in arrival order (python-osc's
threading server starts a thread per datagram, which reorders a fader burst so an older value
can win). One feedback thread sends the newest value per address at most every
``FEEDBACK_INTERVAL`` seconds, so a 2000-message fader burst costs a few dozen feedback
datagrams and the last value always goes out.

Hostile input (wrong types, unknown addresses, malformed or oversized datagrams, senders
outside the allowlist) is counted in :attr:`OscServer.stats` and logged at most once per kind
every ``LOG_EVERY`` seconds, each line at most ``MAX_LOG_LINE`` characters; nothing a client
sends stops the server. No library parser walks a datagram before it is checked: every
datagram is walked by :mod:`live.control.osc_wire` first (sizes, nesting, element counts), only
then is each message parsed by python-osc, and addresses are matched by
:mod:`live.control.osc_match` (bounded patterns, no backtracking), never by python-osc's
dispatcher (docs/architecture.md, *Doors*). Replies that are larger than what asked for them
(``/dream/dump``, ``/dream/status``) are limited per sender (``REPORTS_PER_SECOND``), so the
show cannot be used to reflect a flood at someone else.

Refusals are answered. A message the server or the registry refuses (a value out of range, a
wrong type, an unknown address, an action that failed) is not applied, is counted and logged as
above, and is answered with ``/dream/error <address> <reason>`` to the sender (at most
``ERROR_REPLIES_PER_SECOND`` a second; more are counted) and to the feedback targets, so a
controller can show why its fader did not move. Refusals of other sources (MIDI, a preset, the
web page) reach the feedback targets the same way, through the registry's refusal listeners.
Out-of-range values are never clamped; a fader sends its 0..1 position to ``/norm`` instead.

The receive buffer is asked for ``RCVBUF`` bytes (``SO_RCVBUFFORCE`` when running as root, which
passes the system's cap, then ``SO_RCVBUF``); the size granted is logged, and when it is less,
so is the ``sysctl`` that raises ``net.core.rmem_max`` (see :func:`enlarge_receive_buffer`).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self

import numpy as np
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg
from pythonosc.osc_server import BlockingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from live.control import osc_wire
from live.control.osc_match import AddressSpace, PatternError
from live.control.params import OutOfRange, Param, Registry
from live.errors import LiveError, UnavailableError, UsageError
from live.model import catalog
from live.objectives import Objective
from live.ratelimit import PerClient

log = logging.getLogger(__name__)

PREFIX = "/dream"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9000
RCVBUF = 4 * 1024 * 1024  # a few thousand queued datagrams: a fader burst while the thread is busy
MAX_PACKET = osc_wire.MAX_PACKET  # controllers send tens of bytes; anything bigger is counted as oversized
FEEDBACK_INTERVAL = 0.02  # s between feedback flushes: 50 Hz is smoother than any touch screen
LOG_EVERY = 10.0  # s between two log lines of the same error kind
LINES_PER_CLIENT = 0.5  # log lines a second about one sender's refused datagrams, all kinds together
MAX_LOG_LINE = 400  # characters of one log line about a datagram (a quoted 8 KB string is cut)
MAX_REASON = 200  # characters of the reason in a /dream/error reply
REPORTS_PER_SECOND = 2.0  # dumps and status replies a sender may ask for (a burst of 4), each many datagrams
STATUS_EVERY = 1.0  # s between status pushes to the feedback targets
# among what the app's status() returns: both paces' rates, latency and the dream's age first
STATUS_FIELDS = ("fps", "dream_fps", "dream_age_ms", "layer", "backend", "size", "outputs")
ACTIONS = ("preset/load", "preset/save", "morph", "learn", "record/start", "record/stop")
STREAM_ENABLE = re.compile(r"stream/([1-9][0-9]?)/enable")  # one action per configured stream
ERROR_ADDRESS = f"{PREFIX}/error"  # the answer to a refused message: /dream/error <address> <reason>
ERROR_REPLIES_PER_SECOND = 20  # to the senders, all together; a flood of bad values is counted, not echoed
SYSCTL_CONF = "/etc/sysctl.d/60-deepdream-live.conf"

_FADER_KINDS = ("float", "int", "bool", "choice")  # kinds with a 0..1 mapping
_ACCEPTED_TYPES = (bool, int, float, str)  # OSC argument types a parameter can be set from


class _Rejected(Exception):
    """A message the server refuses; ``kind`` names the counter it goes to."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _Limited(Exception):
    """A message over its sender's rate limit: already counted and logged, not answered."""


class SenderFilter:
    """Which sender IPs may drive the show: loopback always, plus the allowed networks (CIDR)."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for text in allow:
            try:
                self.networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                raise UsageError(
                    f"OSC allowlist entry {text!r} is not a network; use CIDR such as 192.168.1.0/24 "
                    "or a single address such as 192.168.1.20"
                ) from None

    @property
    def open_to_all(self) -> bool:
        """True when some allowed network is the whole Internet (0.0.0.0/0 or ::/0)."""
        return any(net.prefixlen == 0 for net in self.networks)

    def __call__(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 senders as ::ffff:a.b.c.d
        return ip.is_loopback or any(ip in net for net in self.networks)


class _Throttle:
    """Log the first problem of each kind, then at most one line per kind every ``every`` seconds,
    and at most ``LINES_PER_CLIENT`` lines a second (a burst of two) about any one sender."""

    def __init__(self, every: float = LOG_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._senders = PerClient(LINES_PER_CLIENT, 2.0, clock=clock)

    def __call__(self, kind: str, fmt: str, *args: Any, exc_info: bool = False, client: str | None = None) -> None:
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.every or client is not None and not self._senders.take(client):
                self._suppressed[kind] += 1
                return
            self._last[kind] = now
            hidden = self._suppressed.pop(kind, 0)
        text = _shorten(fmt % args if args else fmt, MAX_LOG_LINE)
        if hidden:
            text += f" ({hidden} more {kind} since the last report)"
        log.warning("OSC %s", text, exc_info=exc_info)

    def flush(self) -> None:
        """Report what was suppressed since each kind's last log line."""
        with self._lock:
            hidden, self._suppressed = dict(self._suppressed), Counter()
        for kind, n in hidden.items():
            log.warning("OSC: %d more %s were not logged", n, kind)


def _shorten(text: str, limit: int) -> str:
    """``text`` on one line and at most ``limit`` characters (a hostile string is quoted in part)."""
    text = " ".join(text.splitlines())
    return text if len(text) <= limit else text[: limit - 25] + f"… ({len(text)} characters)"


def enlarge_receive_buffer(sock: socket.socket, size: int = RCVBUF) -> tuple[int, str]:
    """Ask for a ``size``-byte receive buffer on ``sock``; returns (bytes granted, how it was asked).

    As root, ``SO_RCVBUFFORCE`` sets it past ``net.core.rmem_max``; otherwise (or if that fails)
    ``SO_RCVBUF`` is capped by it. Linux reports twice what it books for data, so a grant of at
    least ``size`` means the request was met.
    """
    how = "SO_RCVBUF"
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None and hasattr(os, "geteuid") and os.geteuid() == 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            how = "SO_RCVBUFFORCE"
        except OSError as e:  # a container without CAP_NET_ADMIN: the ordinary request below
            log.debug("SO_RCVBUFFORCE refused (%s); asking with SO_RCVBUF", e)
    if how == "SO_RCVBUF":
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError as e:
            log.warning("OSC: cannot set the receive buffer to %d bytes: %s", size, e)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), how


def rcvbuf_fix(size: int = RCVBUF) -> str:
    """The commands that let a process ask for ``size`` bytes of UDP receive buffer."""
    return (f"sudo sysctl -w net.core.rmem_max={size} (to keep it after a reboot: "
            f"echo 'net.core.rmem_max = {size}' | sudo tee {SYSCTL_CONF})")


def _parse_target(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")  # [::1]:9001
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"OSC feedback target {text!r}: expected host:port, such as 192.168.1.20:9001")
    return host, int(port)


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%", 1)[0]).is_loopback for info in infos)


def _osc_value(value: Any) -> int | float | str:
    """A value as an OSC argument controllers understand: on/off as 1/0 (a toggle matches its
    ``on`` value 1, not an OSC True), objectives in their string form."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return str(value)


def _one_arg(address: str, args: tuple[Any, ...], expected: str) -> Any:
    if len(args) != 1:
        raise UsageError(f"{address} expects one argument ({expected}), got {len(args)}")
    return args[0]


def _number(address: str, value: Any, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{address} expects {expected}, got {value!r}")
    return float(value)


def _on_off(address: str, args: tuple[Any, ...]) -> bool:
    """1/0, T/F, true/false or on/off; anything else is refused with what was expected."""
    expected = "1 or 0 (true/false, on/off)"
    value = _one_arg(address, args, expected)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "0", "true", "false", "on", "off", "t", "f"):
        return value.strip().lower() in ("1", "true", "on", "t")
    raise UsageError(f"{address} expects {expected}, got {value!r}")


def _whole(address: str, value: Any, expected: str) -> int:
    """An integer from an int, a float with no fraction, or a string of digits (an input widget)."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise UsageError(f"{address} expects {expected}, got {value!r}")


def value_messages(param: Param, value: Any, *, triggers: bool = False) -> dict[str, list[Any]]:
    """The OSC messages that show ``param = value`` on a controller: what ``/dream/query`` answers
    and feedback sends (OSCQuery's ``?VALUE`` reads the same). A trigger's press count only with
    ``triggers``."""
    if param.kind == "trigger" and not triggers:
        return {}  # a press count would light a button up forever; nothing to follow
    name = param.name
    out: dict[str, list[Any]] = {f"{PREFIX}/{name}": [_osc_value(value)]}
    if param.kind in _FADER_KINDS:
        out[f"{PREFIX}/{name}/norm"] = [float(param.to_norm(value))]
    if isinstance(value, Objective):
        layer = catalog.deepest(value.layers)
        out[f"{PREFIX}/layer"] = [layer.name]
        out[f"{PREFIX}/layer/norm"] = [layer.index / (len(catalog.LAYERS) - 1)]
        if len(value.layers) == 1:
            nonzero = np.flatnonzero(value.weights(layer.name))
            if len(nonzero) == 1:
                out[f"{PREFIX}/channel"] = [int(nonzero[0])]
    return out


class _Server(BlockingOSCUDPServer):
    """python-osc's blocking server (its socket and loop only) with our allowlist, checks, routing
    and error counting; its dispatcher is never asked to parse or match anything."""

    def __init__(self, address: tuple[str, int], owner: OscServer) -> None:
        self._owner = owner
        # read whole datagrams (up to the UDP maximum), so an oversized one is seen and counted
        # instead of being cut to socketserver's default 8 KiB and parsed as garbage
        self.max_packet_size = 65536
        super().__init__(address, Dispatcher())

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self._owner._sender_allowed(client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        self._owner._handle_datagram(request[0], client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's default prints a traceback to stderr; count and log it instead
        self._owner._count_error("internal", "error handling a datagram from %s", client_address, exc_info=True)


class OscServer:
    """OSC control of a :class:`Registry`, with feedback to controllers; ``with OscServer(...) as s:``.

    Args:
        registry: the parameters to drive.
        host, port: where to listen; port 0 picks a free port (see :attr:`address`). Any host
            other than loopback requires ``allow``: name the controllers' networks, or
            ``0.0.0.0/0`` to accept anyone (logged as a warning).
        allow: sender networks (CIDR) allowed besides loopback, which is always allowed.
        feedback: ``host:port`` controllers that receive every change (their listening port).
        actions: callables for ``preset/load``, ``preset/save``, ``morph``, ``learn``; each
            takes one argument (a name, seconds or a parameter name), runs on the OSC thread
            and must return quickly. A missing action is reported as unsupported.
        status: returns the status fields (``fps``, ``layer``, ``backend``, ``size``); called
            from the OSC and feedback threads, so it must be thread-safe and quick.
        rcvbuf: requested socket receive buffer (the OS may grant less; the grant is logged).
        status_every: seconds between status pushes to the feedback targets (0: only on request).
        routes: more addresses below the prefix (``audio/query`` …), each a handler called as
            ``handler(client, address, args)`` on the OSC thread; a UsageError is refused and
            answered like any, a returned ``{address: args}`` is the reply.
    """

    def __init__(
        self,
        registry: Registry,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        allow: Iterable[str] = (),
        feedback: Iterable[str] = (),
        actions: Mapping[str, Callable[[Any], Any]] | None = None,
        status: Callable[[], Mapping[str, Any]] | None = None,
        rcvbuf: int = RCVBUF,
        status_every: float = STATUS_EVERY,
        routes: Mapping[str, Callable[[tuple[str, int], str, tuple[Any, ...]], Mapping[str, list[Any]] | None]]
        | None = None,
    ) -> None:
        self.registry = registry
        self.host, self.port = host, port
        allow = list(allow)
        self.senders = SenderFilter(allow)
        self.targets = [_parse_target(t) for t in feedback]
        self.actions = dict(actions or {})
        unknown = {k for k in self.actions if k not in ACTIONS and not STREAM_ENABLE.fullmatch(k)}
        if unknown:
            raise UsageError(f"unknown OSC actions {sorted(unknown)}; known: {', '.join(ACTIONS)}")
        self.status = status
        self.routes = dict(routes or {})  # more addresses below the prefix (the sound's: live.audio.oscdoor)
        self.rcvbuf = rcvbuf
        self.status_every = status_every
        if not _is_loopback_host(host):
            if not self.senders.networks:
                # an open OSC port on a venue network lets any phone on the Wi-Fi drive the show
                raise UsageError(
                    f"OSC on {host} would accept messages from anyone on the network; name the "
                    "controllers' network with --osc-allow (e.g. 192.168.1.0/24), or --osc-allow "
                    "0.0.0.0/0 to accept every sender"
                )
            if self.senders.open_to_all:
                log.warning("OSC on %s:%s accepts messages from any sender (allowlist %s)", host, port, allow)

        self._counts: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self._throttle = _Throttle()
        self.routes = self._build_routes()
        self._space = AddressSpace(self.routes)
        self._reports = PerClient(REPORTS_PER_SECOND, 2 * REPORTS_PER_SECOND)
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._feedback_thread: threading.Thread | None = None
        self._clients: list[SimpleUDPClient] = []
        self._pending: dict[str, list[Any]] = {}  # OSC address -> newest arguments, not yet sent
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._closed = False
        self._error_window = (0.0, 0)  # (second it started, error replies sent in it)
        self.receive_buffer = 0  # bytes the OS granted (Linux books about 1 KiB per small datagram)

    # ----- lifecycle
    def start(self) -> Self:
        """Bind, then serve on a daemon thread; feedback starts if targets are configured."""
        if self._server is not None or self._closed:
            raise RuntimeError("an OscServer starts once")
        try:
            self._server = _Server((self.host, self.port), self)
        except OSError as e:
            # Unavailable (exit 69), not a usage error: the port's holder may go away, the address
            # may come up with the network, and the service tries again until then.
            raise UnavailableError(
                f"cannot listen for OSC on {self.host}:{self.port}: {e.strerror or e}; is another show "
                "running? choose another port with --osc-port"
            ) from None
        granted, how = enlarge_receive_buffer(self._server.socket, self.rcvbuf)
        self.receive_buffer = granted
        # Linux reports twice what it books for data; less than asked means net.core.rmem_max caps it
        if granted < self.rcvbuf:
            log.warning(
                "OSC receive buffer is %d bytes, asked %d (net.core.rmem_max caps it): a fader burst may "
                "overflow it and the kernel drops datagrams. Raise it: %s",
                granted,
                self.rcvbuf,
                rcvbuf_fix(self.rcvbuf),
            )
        try:
            for host, port in self.targets:
                self._clients.append(SimpleUDPClient(host, port))
        except OSError as e:
            self.close()
            raise UsageError(f"OSC feedback target {host}:{port}: {e}") from None

        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="osc-server", daemon=True
        )
        self._serve_thread.start()
        self.registry.subscribe_refusals(self._refused_elsewhere)
        if self._clients:
            self.registry.subscribe(self._changed)
            self._feedback_thread = threading.Thread(target=self._feedback_loop, name="osc-feedback", daemon=True)
            self._feedback_thread.start()
        host, port = self.address
        log.info(
            "OSC listening on %s:%d (receive buffer %d bytes, by %s)%s",
            host,
            port,
            granted,
            how,
            f"; feedback to {', '.join(f'{h}:{p}' for h, p in self.targets)}" if self.targets else "",
        )
        return self

    def close(self) -> None:
        """Stop both threads and close every socket; safe to call twice."""
        if self._closed:
            return
        self._closed = True  # the registry has no unsubscribe: the listener checks this flag
        self._stopping.set()
        self._wake.set()
        if self._server is not None:
            if self._serve_thread is not None:
                self._server.shutdown()  # returns once serve_forever has left its loop
                self._serve_thread.join()
            self._server.server_close()
        if self._feedback_thread is not None:
            self._feedback_thread.join()
        for client in self._clients:
            client.close()
        self._clients.clear()
        self._throttle.flush()
        stats = self.stats
        if self._server is not None:
            log.info(
                "OSC closed: %d datagrams, %d applied, %d rejected senders, errors %s",
                stats["received"],
                stats["applied"],
                stats["rejected_senders"],
                stats["errors"] or "none",
            )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the real port when 0 was asked for."""
        if self._server is None:
            return self.host, self.port
        host, port = self._server.server_address[:2]
        return host, port

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: datagrams received, messages, applied, replies, error replies (sent and held
        back by the rate limit), rejected senders, feedback sent/dropped, and ``errors`` by kind
        (out_of_range, bad_args, unknown_address, bad_pattern, malformed, oversized, unsupported,
        rate_limited, action_failed, status_failed, internal)."""
        with self._count_lock:
            out: dict[str, Any] = {
                key: self._counts[key]
                for key in (
                    "received",
                    "messages",
                    "applied",
                    "replies",
                    "error_replies",
                    "error_replies_held",
                    "rejected_senders",
                    "feedback_sent",
                    "feedback_dropped",
                )
            }
            out["errors"] = dict(self._errors)
        return out

    # ----- counting
    def _count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self._counts[key] += n

    def _count_error(self, kind: str, fmt: str, *args: Any, exc_info: bool = False, client: str | None = None) -> None:
        with self._count_lock:
            self._errors[kind] += 1
        self._throttle(kind, fmt, *args, exc_info=exc_info, client=client)

    # ----- receiving (server thread)
    def _sender_allowed(self, client_address: Any) -> bool:
        if self.senders(client_address[0]):
            return True
        self._count("rejected_senders")
        self._throttle("rejected_senders", "ignored a datagram from %s (not in the OSC allowlist)", client_address[0],
                       client=client_address[0])
        return False

    def _handle_datagram(self, data: bytes, client: tuple[str, int]) -> None:
        self._count("received")
        if len(data) > MAX_PACKET:
            self._count_error(
                "oversized", "dropped a %d-byte datagram from %s (limit %d)", len(data), client[0], MAX_PACKET,
                client=client[0],
            )
            return
        try:
            # Walked by our own checks first: python-osc's bundle parser loops forever on an
            # element of size -4 or 0 (docs/architecture.md, *Doors*). Each message is then parsed
            # alone, never the bundle (Dispatcher.call_handlers_for_packet would also sleep until
            # a bundle's timetag: a far-future one would stall every fader behind it).
            messages = [OscMessage(data[start:end]) for start, end in osc_wire.split(data)]
        except osc_wire.WireError as e:
            self._count_error("malformed", "dropped a malformed datagram from %s: %s", client[0], e, client=client[0])
            return
        except Exception as e:  # noqa: BLE001 - python-osc refusing what the checks passed: still not fatal
            self._count_error("malformed", "dropped a datagram python-osc cannot parse from %s: %s", client[0], e,
                              client=client[0])
            return
        for message in messages:
            self._dispatch(message, client)

    def _dispatch(self, message: OscMessage, client: tuple[str, int]) -> None:
        self._count("messages")
        address = message.address
        try:
            addresses = self._space.match(address)
        except PatternError as e:
            self._refuse("bad_pattern", address, client, f"address pattern refused: {e}")
            return
        handlers = [self.routes[a] for a in addresses] or [self._unknown]
        args = tuple(message.params)
        for handler in handlers:
            try:
                handler(client, address, args)
                self._count("applied")
            except _Limited:
                pass
            except _Rejected as e:
                self._refuse(e.kind, address, client, str(e))
            except OutOfRange as e:
                self._refuse("out_of_range", address, client, str(e))
            except UsageError as e:
                self._refuse("bad_args", address, client, str(e))
            except Exception:  # noqa: BLE001 - a bug in one handler must not stop the show; logged with traceback
                self._count_error("internal", "handling %s from %s failed", address, client[0], exc_info=True)
                self._answer_error(client, address, "internal error handling this message (see the show's log)")

    # ----- refusals (server thread; other sources' from their own threads)
    def _refuse(self, kind: str, address: str, client: tuple[str, int], reason: str) -> None:
        """A message not applied: counted, logged (rate-limited), answered on /dream/error."""
        self._count_error(kind, "%s from %s: %s", address, client[0], reason, client=client[0])
        self._answer_error(client, address, reason)

    def _answer_error(self, client: tuple[str, int], address: str, reason: str) -> None:
        reason = _shorten(reason, MAX_REASON)
        message = {ERROR_ADDRESS: [address, reason]}
        now = time.monotonic()
        with self._count_lock:
            start, sent = self._error_window
            if now - start >= 1.0:
                start, sent = now, 0
            allowed = sent < ERROR_REPLIES_PER_SECOND
            self._error_window = (start, sent + 1 if allowed else sent)
        if allowed and self._server is not None:
            try:
                self._server.socket.sendto(build_msg(ERROR_ADDRESS, [address, reason]).dgram, client)
                self._count("error_replies")
            except OSError as e:
                self._throttle("reply_failed", "cannot reply to %s: %s", client[0], e)
        elif not allowed:
            self._count("error_replies_held")
        if self._clients:
            self._queue(message)  # the targets see the newest refusal; a burst collapses to one

    def _refused_elsewhere(self, what: str, reason: str, source: str) -> None:
        """A refusal from another source (MIDI, a preset, the web page): tell the feedback targets."""
        if source == "osc" or self._closed or not self._clients:
            return  # OSC's own refusals are answered where they happen, with the address
        self._queue({ERROR_ADDRESS: [f"{source}: {what}", reason]})

    def _build_routes(self) -> dict[str, Callable[[tuple[str, int], str, tuple[Any, ...]], None]]:
        """Every address the server acts on → its handler ``(client, address as sent, args)``.
        Messages are acted on at once, whatever a bundle's timetag says."""
        routes: dict[str, Callable[[tuple[str, int], str, tuple[Any, ...]], None]] = {}

        def route(address: str, fn: Callable[[tuple[str, int], str, tuple[Any, ...]], None]) -> None:
            routes[address] = fn

        for param in self.registry.params.values():
            route(f"{PREFIX}/{param.name}", self._setter(param))
            if param.kind in _FADER_KINDS:
                route(f"{PREFIX}/{param.name}/norm", self._norm_setter(param))
        route(f"{PREFIX}/layer", self._on_layer)
        route(f"{PREFIX}/layer/norm", self._on_layer_norm)
        route(f"{PREFIX}/channel", self._on_channel)
        for key in ACTIONS:
            route(f"{PREFIX}/{key}", self._action(key))
        for key in self.actions:
            if STREAM_ENABLE.fullmatch(key):
                route(f"{PREFIX}/{key}", self._action(key))
        for key, handler in self.routes.items():
            route(f"{PREFIX}/{key}", self._extra(handler))
        route(f"{PREFIX}/query", self._on_query)
        route(f"{PREFIX}/dump", self._on_dump)
        route(f"{PREFIX}/status", self._on_status)
        return routes

    @staticmethod
    def _unknown(client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        raise _Rejected("unknown_address", f"no such address; see the OSC table in the README (e.g. {PREFIX}/steps)")

    def _limit_reports(self, client: tuple[str, int], address: str) -> None:
        """Raise :class:`_Limited` unless ``client`` may have another many-datagram reply now (dump,
        status). A sender over the limit is counted and logged (rate-limited), never answered: an
        answer would reflect the flood at whoever the datagrams claim to come from."""
        if not self._reports.take(client[0]):
            self._count_error("rate_limited", "%s from %s: over %g a second, not answered", address, client[0],
                              REPORTS_PER_SECOND, client=client[0])
            raise _Limited

    def _setter(self, param: Param) -> Callable[[tuple[str, int], str, tuple[Any, ...]], None]:
        name = param.name

        def set_value(client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
            if param.kind == "trigger":
                # no argument, an OSC nil (what OSCQuery clients send to a "N" method) or non-zero
                if not args or args == (None,) or param.coerce(_one_arg(address, args, param.expects())):
                    self.registry.set(name, True, "osc")
                return  # a button's release (0) is not a second press
            if not args and param.kind == "bool":
                self.registry.set(name, not self.registry.get(name), "osc")  # a bare message toggles
                return
            value = _one_arg(address, args, param.expects())
            if not isinstance(value, _ACCEPTED_TYPES):
                raise UsageError(f"{address} expects {param.expects()}, got {value!r}")
            if param.kind == "int" and isinstance(value, float) and math.isfinite(value):
                value = round(value)  # faders send floats
            self.registry.set(name, value, "osc")  # out of range: OutOfRange, nothing changes

        return set_value

    def _norm_setter(self, param: Param) -> Callable[[tuple[str, int], str, tuple[Any, ...]], None]:
        def set_norm(client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
            x = _number(address, _one_arg(address, args, "a fader position 0..1"), "a fader position 0..1")
            self.registry.set_norm(param.name, x, "osc")  # outside 0..1: OutOfRange, nothing changes

        return set_norm

    def _on_layer(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        expected = f"a layer name or a 1-based index 1..{len(catalog.LAYERS)}"
        value = _one_arg(address, args, expected)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise UsageError(f"{address} expects {expected}, got {value!r}")
        self.registry.set("objective", catalog.resolve(str(value)).name, "osc")

    def _on_layer_norm(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        x = _number(address, _one_arg(address, args, "a fader position 0..1"), "a fader position 0..1")
        if not 0.0 <= x <= 1.0:
            raise OutOfRange(f"{address} {x:g} is out of range; allowed: a fader position 0..1")
        layers = catalog.LAYERS
        index = round(x * (len(layers) - 1))
        self.registry.set("objective", layers[index].name, "osc")

    def _on_channel(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        layer = catalog.deepest(self.registry.get("objective").layers)
        expected = f"a channel of {layer.name}, 0..{layer.channels - 1}"
        channel = _whole(address, _one_arg(address, args, expected), expected)
        if not 0 <= channel < layer.channels:
            raise OutOfRange(f"{address} {channel} is out of range; allowed: {expected}")
        self.registry.set("objective", f"{layer.name}:{channel}", "osc")

    def _action(self, key: str) -> Callable[[tuple[str, int], str, tuple[Any, ...]], None]:
        def run(client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
            if key == "morph":
                seconds = _number(address, _one_arg(address, args, "seconds"), "seconds >= 0")
                if seconds < 0:
                    raise OutOfRange(f"{address} {seconds:g} is out of range; allowed: seconds >= 0")
                argument: Any = seconds
                if key not in self.actions and "morph_time" in self.registry.params:
                    self.registry.set("morph_time", seconds, "osc")  # the registry setting is enough
                    return
            elif key == "learn":
                argument = self.registry.param(str(_one_arg(address, args, "a parameter name"))).name
            elif key in ("record/start", "record/stop"):
                if args and not (len(args) == 1 and args[0] not in (0, 0.0, False)):
                    return  # a push button's release (0): not a second press
                argument = None
            elif STREAM_ENABLE.fullmatch(key):
                argument = _on_off(address, args)
            else:
                name = _one_arg(address, args, "a preset name")
                if isinstance(name, bool) or not isinstance(name, (str, int, float)):
                    raise UsageError(f"{address} expects a preset name, got {name!r}")
                argument = str(int(name)) if isinstance(name, float) and name.is_integer() else str(name)
            fn = self.actions.get(key)
            if fn is None:
                raise _Rejected("unsupported", f"this show was started without {key} support")
            try:
                fn(argument)
            except OutOfRange:
                raise  # counted as out of range, like the same value sent to its parameter
            except LiveError as e:
                raise _Rejected("action_failed", f"{key} {argument!r} failed: {e}") from None
            except Exception as e:  # a bug in the action must not stop OSC; traceback at debug
                log.debug("OSC action %s failed", key, exc_info=True)
                raise _Rejected("action_failed", f"{key} {argument!r} failed: {type(e).__name__}: {e}") from None

        return run

    def _extra(self, handler: Callable[[tuple[str, int], str, tuple[Any, ...]], Mapping[str, list[Any]] | None]
               ) -> Callable[[tuple[str, int], str, tuple[Any, ...]], None]:
        """A route given at construction: its refusals are answered like any, its reply goes back."""
        def run(client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
            reply = handler(client, address, args)
            if reply:
                self._reply(client, reply)

        return run

    # ----- replies (server thread)
    def _on_query(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        name = str(_one_arg(address, args, "a parameter name")).removeprefix(f"{PREFIX}/")
        snap = self.registry.snapshot()
        if name == "layer":
            messages = self._messages("objective", snap["objective"])
            messages = {a: v for a, v in messages.items() if a.startswith(f"{PREFIX}/layer")}
        else:
            param = self.registry.param(name)
            messages = self._messages(param.name, snap[param.name], triggers=True)
        self._reply(client, messages)

    def _on_dump(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        self._limit_reports(client, address)
        snap = self.registry.snapshot()
        messages: dict[str, list[Any]] = {}
        for name in self.registry.params:
            messages.update(self._messages(name, snap[name], triggers=True))
        self._reply(client, messages)

    def _on_status(self, client: tuple[str, int], address: str, args: tuple[Any, ...]) -> None:
        if self.status is None:
            raise _Rejected("unsupported", "this show was started without a status source")
        self._limit_reports(client, address)
        self._reply(client, self._status_messages())

    def _status_messages(self) -> dict[str, list[Any]]:
        assert self.status is not None
        try:
            fields = dict(self.status())
        except Exception as e:  # noqa: BLE001 - the app's status source failing is reported, not fatal
            raise _Rejected("status_failed", f"status() failed: {type(e).__name__}: {e}") from None
        return {f"{PREFIX}/status/{key}": [_osc_value(value)] for key, value in fields.items()}

    def _reply(self, client: tuple[str, int], messages: Mapping[str, list[Any]]) -> None:
        """Send to the sender now (in order, after everything it sent before) and queue for the targets."""
        assert self._server is not None
        for address, args in messages.items():
            try:
                self._server.socket.sendto(build_msg(address, args).dgram, client)
                self._count("replies")
            except OSError as e:
                self._throttle("reply_failed", "cannot reply to %s: %s", client[0], e)
        if self._clients:
            self._queue(messages)

    # ----- feedback (writers' threads -> feedback thread)
    def _messages(self, name: str, value: Any, *, triggers: bool = False) -> dict[str, list[Any]]:
        """The OSC messages that show ``name = value`` on a controller."""
        return value_messages(self.registry.params[name], value, triggers=triggers)

    def _changed(self, name: str, value: Any, source: str) -> None:
        if self._closed:
            return
        self._queue(self._messages(name, value))

    def _queue(self, messages: Mapping[str, list[Any]]) -> None:
        if not messages:
            return
        with self._pending_lock:
            self._pending.update(messages)  # newer values replace older ones not yet sent
        self._wake.set()

    def _feedback_loop(self) -> None:
        next_status = time.monotonic()
        while not self._stopping.is_set():
            timeout = None
            if self.status is not None and self.status_every > 0:
                timeout = max(next_status - time.monotonic(), 0.0)
            self._wake.wait(timeout)
            if self._stopping.is_set():
                break
            self._wake.clear()
            with self._pending_lock:
                batch, self._pending = self._pending, {}
            if self.status is not None and self.status_every > 0 and time.monotonic() >= next_status:
                next_status = time.monotonic() + self.status_every
                try:
                    batch.update(self._status_messages())
                except _Rejected as e:
                    self._count_error(e.kind, "%s", e)
            self._send(batch)
            # wait before the next flush: values arriving meanwhile collapse to the newest
            self._stopping.wait(FEEDBACK_INTERVAL)

    def _send(self, batch: Mapping[str, list[Any]]) -> None:
        for address, args in batch.items():
            for client, (host, port) in zip(self._clients, self.targets):
                try:
                    client.send_message(address, args)
                    self._count("feedback_sent")
                except OSError as e:  # full socket buffer, unreachable network: drop, keep going
                    self._count("feedback_dropped")
                    self._throttle("feedback_dropped", "feedback to %s:%s dropped: %s", host, port, e)
                except Exception:  # noqa: BLE001 - an unbuildable value must not stop feedback; logged
                    self._count_error("internal", "cannot build feedback %s %r", address, args, exc_info=True)
