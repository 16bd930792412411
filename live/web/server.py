"""The show's own web server: the control page, its websocket, preview, screenshots and OSCQuery.

aiohttp on its own thread with its own event loop (docs/architecture.md, *The web page*). The
frame loop never waits for it: the preview output only keeps a reference to the newest frame,
and registry changes reach the server through a listener that marks names dirty and wakes the
event loop at most once per batch.

Per page (websocket client):

- **In**: JSON messages (``{"op": "set", "name": "steps", "value": 6}``, ``layer``, ``channel``,
  ``objective``, ``preset/load``, ``preset/save``, ``presets``, ``preview``, ``ack``, ``ping``).
  Registry writes are coalesced per name and applied at most every ``APPLY_INTERVAL`` (the first
  of a burst at once), so a fader burst costs the show a few writes and the last value wins. A
  refusal (unknown name, value out of range, bad preset name) goes back to that page as an
  ``error`` message. More than ``FLOOD_RATE`` messages a second, beyond a burst of
  ``FLOOD_BURST``, closes the socket (1008); between messages the thread yields the GIL every
  ``SLICE`` seconds so a flood cannot starve the frame loop's Python work.
- **Out**: ``hello`` (the registry's description, layers, values, presets, status), then
  ``values`` (newest per name, coalesced while a send is under way), ``status`` every second,
  ``presets`` when the list changes, ``error``/``notice``, and binary JPEG preview frames, one
  in flight per page: the next is sent when the page acknowledges the last, so a slow phone
  gets fewer frames instead of a queue. A send that has not finished after ``stall_seconds``,
  or an unacknowledged frame that old, drops the page.

Every door is hostile (docs/architecture.md, *Doors*):

- Connections pass a :class:`~live.web.connections.ConnectionGuard` (a complete request head
  within ``HEADER_TIMEOUT``, the next within ``IDLE_TIMEOUT``, caps per client and in all, the
  oldest idle connection making room for a new one).
- A page's message is checked before ``json.loads`` walks it: at most ``MAX_TEXT`` characters
  and ``MAX_BRACKETS`` brackets (nesting cannot be deeper than that). A refused message (not
  JSON, too big, too deep, an unknown op, binary) is answered to that page and logged at most
  once every ``LOG_EVERY`` seconds per page and kind.
- ``/screenshot.png`` (a PNG encode of the full frame) is refused to a cross-site request
  (fetch metadata: another site's ``<img>`` would otherwise make every visitor's browser ask
  for one) and limited per client (``SCREENSHOTS_PER_SECOND``) and in flight.
- Every log line of this server, aiohttp and asyncio goes through :class:`live.redact.LogGuard`
  (the token and any credential value masked, lines bounded, warnings at most one a second per
  logger); the event loop's own errors (a failed ``accept``) are one rate-limited line each.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from live import __version__
from live.control.osc import PREFIX, SenderFilter, value_messages
from live.control.osc_space import FADER_KINDS
from live.control.params import Param, Registry
from live.control.presets import PresetStore
from live.errors import LiveError, UsageError
from live.model import catalog
from live.objectives import Objective
from live.ratelimit import PerClient
from live.redact import guard_loggers, remember_secret
from live.web import oscquery
from live.web.connections import IDLE_TIMEOUT, ConnectionGuard, GuardedSite
from live.web.mdns import Advertiser, plan_services
from live.web.preview import PREVIEW_FPS, PREVIEW_WIDTH, PreviewOutput, encode_jpeg, encode_png
from live.web.security import TOKEN_COOKIE, TOKEN_QUERY, AccessPolicy, is_loopback_bind

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
MAX_CLIENTS = 32  # pages open at once; more is someone's script, not an audience
MAX_MESSAGE = 64 * 1024  # bytes of one websocket frame (aiohttp closes the socket above it); a page sends tens
MAX_TEXT = 8 * 1024  # characters of one page message json.loads may read; an objective is at most 2048
MAX_BRACKETS = 16  # '[' and '{' in one message: a page's are flat objects, nesting cannot go deeper
SCREENSHOTS_PER_SECOND = 1.0  # per client, with a burst of 3; a PNG of a 720p frame is ~150 ms of CPU
SCREENSHOTS_IN_FLIGHT = 2  # encodes queued or running, from every client together
MAX_QUOTE = 60  # characters of a page's own text quoted back to it
# every line redacted and bounded; the libraries' warnings also rate-limited (ours limit themselves)
LIBRARY_LOGGERS = ("aiohttp.access", "aiohttp.client", "aiohttp.internal", "aiohttp.server", "aiohttp.web",
                   "aiohttp.websocket", "asyncio")
OWN_LOGGERS = ("live.web.server", "live.web.security", "live.web.oscquery", "live.web.mdns", "live.web.preview",
               "live.web.connections")
FLOOD_RATE = 2000.0  # messages a second a page may keep up (a fader sends about 60)
FLOOD_BURST = 10_000  # messages a page may send at once above that rate (5 s at the limit)
APPLY_INTERVAL = 0.01  # s between two rounds of registry writes from pages: 100 Hz
STALL_SECONDS = 10.0
HEARTBEAT = 10.0  # s between websocket pings; a page that does not answer is closed
STATUS_EVERY = 1.0
SLICE = 0.002  # s of handling messages before the web thread lets other threads run
RECENT_PROBLEMS = 20
COOKIE_DAYS = 30
LOG_EVERY = 10.0
LINES_PER_CLIENT = 0.5  # log lines a second about one client's refused requests and messages (aiohttp's own
# lines about the same requests pass at most 0.5 a second too: live.redact.LogGuard)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Objective):
        return str(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def describe_param(param: Param) -> dict[str, Any]:
    """What a page needs to draw a control for ``param``: kind, range, unit, curve, help."""
    return {
        "name": param.name, "kind": param.kind, "default": _jsonable(param.default), "help": param.help,
        "lo": param.lo, "hi": param.hi, "unit": param.unit, "curve": param.curve, "choices": list(param.choices),
        "expects": param.expects(), "fader": param.kind in FADER_KINDS,
    }  # fmt: skip


class _Bucket:
    """A token bucket: ``rate`` per second, up to ``burst`` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.level = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level < 1.0:
            return False
        self.level -= 1.0
        return True


class _Client:
    """One open page: its socket and what is waiting to be sent to it."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request
        self.remote = request.remote or "?"
        self.wake = asyncio.Event()
        self.messages: collections.deque[dict[str, Any]] = collections.deque(maxlen=64)
        self.values: dict[str, Any] = {}
        self.norms: dict[str, float] = {}
        self.status: dict[str, Any] | None = None
        self.audio: dict[str, Any] | None = None  # the newest sound meters, not yet sent
        self.presets: list[str] | None = None
        self.preview = False
        self.frame_sent = 0  # number of the last preview frame sent
        self.awaiting_ack: float | None = None  # monotonic time the unacknowledged frame went out
        self.bucket = _Bucket(FLOOD_RATE, FLOOD_BURST)
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.wake.set()

    def error(self, text: str, about: str | None = None) -> None:
        self.send({"type": "error", "message": text, "about": about})

    def notice(self, text: str) -> None:
        self.send({"type": "notice", "message": text})

    @property
    def ready_for_frame(self) -> bool:
        return self.preview and self.awaiting_ack is None and not self.closed


class _RecentProblems(logging.Handler):
    """The last warnings and errors the show logged, for the page's status panel."""

    def __init__(self, size: int = RECENT_PROBLEMS) -> None:
        super().__init__(logging.WARNING)
        self.records: collections.deque[dict[str, str]] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().splitlines()[0][:300]
        except Exception:  # noqa: BLE001 - a bad log call must not break logging
            return
        self.records.append({"time": time.strftime("%H:%M:%S", time.localtime(record.created)),
                             "level": record.levelname.lower(), "source": record.name, "message": message})

    def recent(self) -> list[dict[str, str]]:
        """A copy, oldest first (``emit`` runs under the handler's lock on the logging thread)."""
        with self.lock:
            return list(self.records)


class _Throttle:
    """One log line per kind every ``every`` seconds, and at most ``LINES_PER_CLIENT`` a second (a
    burst of two) about one client, all kinds together; the lines held back are counted into
    the next of their kind."""

    MAX_KINDS = 1024  # kinds carry a client address: forget them all rather than grow without end

    def __init__(self, every: float = LOG_EVERY) -> None:
        self.every = every
        self.last: dict[str, float] = {}
        self.held: collections.Counter[str] = collections.Counter()
        self.clients = PerClient(LINES_PER_CLIENT, 2.0)

    def __call__(self, kind: str, fmt: str, *args: Any, client: str | None = None) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -math.inf) < self.every or client is not None and not self.clients.take(client):
            self.held[kind] += 1
            return
        if len(self.last) >= self.MAX_KINDS:
            self.last.clear()
            self.held.clear()
        self.last[kind] = now
        held = self.held.pop(kind, 0)
        log.warning(fmt + (f" ({held} more since the last report)" if held else ""), *args)


def _cut(text: str, limit: int = MAX_QUOTE) -> str:
    """``text`` cut to about ``limit`` characters (a request path of 8 KB is quoted in part)."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _quote(value: Any, limit: int = MAX_QUOTE) -> str:
    """``value`` quoted for a message, cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


class WebServer:
    """The show's web page, preview and OSCQuery on one HTTP port; ``with WebServer(...) as web:``.

    Args:
        registry: the live parameters; the page writes through ``Registry.set(source="web")``.
        host, port: where to listen (port 0 picks a free one, see :attr:`address`). Beyond
            loopback a ``token`` is required.
        token: what non-loopback clients must present (see :mod:`live.web.security`).
        presets: the preset store (list, load, save), or None.
        preview: the output that keeps the newest frame, or None (no preview, no screenshot).
        status: the show's status fields (fps, latency, backend, sizes, governor, source,
            outputs…); called from the web thread, so it must be thread-safe and quick.
        model: the network, for the layer picker.
        osc: ``(host, port)`` of the show's OSC server (OSCQuery's HOST_INFO), or None.
        osc_allow: the OSC allowlist; those networks may read OSCQuery without the token.
        mdns: advertise ``_oscjson._tcp`` and ``_osc._udp`` over mDNS.
        stall_seconds, heartbeat: when a page that does not read is dropped.
        audio: the sound's page side (:class:`live.audio.webdoor.AudioWeb`): meters, tap, the
            mapping; its ops are ``audio/…``; None when the show has no sound.
    """

    def __init__(
        self,
        registry: Registry,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        presets: PresetStore | None = None,
        preview: PreviewOutput | None = None,
        status: Callable[[], Mapping[str, Any]] | None = None,
        model: str = "torchvision",
        osc: tuple[str, int] | None = None,
        osc_allow: Iterable[str] = (),
        mdns: bool = False,
        name: str | None = None,
        streams: int = 0,
        stall_seconds: float = STALL_SECONDS,
        heartbeat: float = HEARTBEAT,
        audio: Any = None,
    ) -> None:
        if not is_loopback_bind(host) and not token:
            raise UsageError(f"the web page on {host} would let anyone on the network drive the show; "
                             "give it a token (--web-token) or listen on 127.0.0.1")
        self.registry = registry
        self.host, self.port = host, port
        self.token = token
        self.presets = presets
        self.preview = preview
        self.status_source = status
        self.model = model
        self.catalog = catalog.for_model(model)
        self.osc = osc
        self.mdns = mdns
        self.stall_seconds = stall_seconds
        self.heartbeat = heartbeat
        self.audio = audio
        # the allowlist opens OSCQuery only where it opens OSC: with OSC on loopback it lets nobody in
        osc_senders = SenderFilter(osc_allow) if osc is not None and not is_loopback_bind(osc[0]) else None
        self.policy = AccessPolicy(token, osc_senders)
        if token:
            remember_secret(token)  # no log line, ours or a library's, shows it (live/redact.py)
        self.namespace = oscquery.Namespace(registry, model=model, osc=osc, status=self._scalar_status,
                                            presets=self._preset_names, name=name,
                                            streams=streams, audio=audio.values if audio is not None else None)
        self.counts: collections.Counter[str] = collections.Counter()
        self.problems = _RecentProblems()
        self._throttle = _Throttle()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._bound: tuple[str, int] | None = None
        self._clients: set[_Client] = set()
        self._tasks: list[asyncio.Task] = []
        self._writes: dict[str, tuple[_Client, Callable[[], Any]]] = {}
        self._apply_wake: asyncio.Event | None = None
        self._preview_wanted: asyncio.Event | None = None
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._jpeg_at = -math.inf  # monotonic time it was encoded
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._flush_pending = False
        self._encode_pool: ThreadPoolExecutor | None = None
        self._advertiser: Advertiser | None = None
        self._closed = False
        self._last_presets: list[str] | None = None
        self.connections: ConnectionGuard | None = None
        self._screenshots = PerClient(SCREENSHOTS_PER_SECOND, 3 * SCREENSHOTS_PER_SECOND)
        self._screenshots_in_flight = 0

    # ----- lifecycle
    def start(self) -> WebServer:
        """Bind and serve on the ``web-server`` thread; raises UsageError if the port is taken."""
        if self._thread is not None or self._closed:
            raise RuntimeError("a WebServer starts once")
        guard_loggers(LIBRARY_LOGGERS)
        guard_loggers(OWN_LOGGERS, rate=None)
        self._encode_pool = ThreadPoolExecutor(1, thread_name_prefix="web-encode")
        self._thread = threading.Thread(target=self._run, name="web-server", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._encode_pool.shutdown()
            raise self._start_error
        logging.getLogger("live").addHandler(self.problems)
        self.registry.subscribe(self._registry_changed)
        port = self.address[1]
        log.info("web page on %s%s", self.url, "" if is_loopback_bind(self.host) else " (token required)")
        if self.mdns:
            services, notes = plan_services(self.namespace.name, (self.host, port), self.osc)
            for note in notes:
                log.info("mDNS: %s", note)
            self._advertiser = Advertiser(services, self.host).start()
        return self

    def close(self) -> None:
        """Close every page, stop the server and its thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True  # the registry has no unsubscribe: the listener checks this
        if self._advertiser is not None:
            self._advertiser.close()
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            try:
                future.result(timeout=15)
            except Exception:  # noqa: BLE001 - stopping anyway
                log.debug("web server shutdown", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=15)
        if self._encode_pool is not None:
            self._encode_pool.shutdown(wait=False, cancel_futures=True)
        logging.getLogger("live").removeHandler(self.problems)
        log.info("web server closed: %s", dict(self.counts) or "no pages")

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the real port when 0 was asked for."""
        return self._bound or (self.host, self.port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(self._loop_error)
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as e:  # noqa: BLE001 - handed to the starting thread
            self._start_error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            # connections still being set up or answered when the loop stopped: cancelled here
            # rather than destroyed pending (which asyncio reports as an error)
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
            loop.close()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's own errors (an accept that ran out of file descriptors, a callback that
        raised): one line a kind every ``LOG_EVERY`` seconds, never a traceback per event."""
        exc = context.get("exception")
        what = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        self.counts["loop_errors"] += 1
        self._throttle(f"loop:{context.get('message')}", "web: %s %s", context.get("message", "event loop error"),
                       what)

    def _connection_refused(self, kind: str, client: str) -> None:
        self.counts[f"connections_{kind}"] += 1
        self._throttle(f"conn:{kind}:{client}", "web: %s a connection from %s (%s)", kind.replace("_", " "), client,
                       "over the connection limits" if kind != "timed_out" else "no request in time", client=client)

    async def _startup(self) -> None:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_MESSAGE)
        app.router.add_get("/", self._root)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/screenshot.png", self._screenshot)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/dream", self._oscquery)
        app.router.add_get("/dream/{tail:.*}", self._oscquery)
        app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        # access_log=None: the request line may carry ?token=…, and a token never reaches a log
        # keepalive_timeout: aiohttp's own idle limit (its default is an hour); the guard adds the
        # head timeout and the caps, whatever aiohttp's version does
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0,
                                     keepalive_timeout=IDLE_TIMEOUT)
        await self._runner.setup()
        self.connections = ConnectionGuard(on_refuse=self._connection_refused)
        site = GuardedSite(self._runner, self.host, self.port, self.connections)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise UsageError(
                f"cannot listen for the web page on {self.host}:{self.port}: {e.strerror or e}; is another show "
                "running? choose another port with --web-port, or --no-web"
            ) from None
        sockname = self._runner.addresses[0]
        self._bound = (sockname[0], sockname[1])
        self._apply_wake = asyncio.Event()
        self._preview_wanted = asyncio.Event()
        self._tasks = [asyncio.create_task(coro) for coro in (self._applier(), self._status_ticker(), self._encoder(),
                                                              self.connections.sweeper())]
        if self.audio is not None:
            self._tasks.append(asyncio.create_task(self._audio_ticker()))

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.connections is not None:
            self.connections.close_idle()  # a flood of idle sockets must not hold up a stop
        for client in list(self._clients):
            client.closed = True
            try:
                await asyncio.wait_for(client.ws.close(code=1001, message=b"the show stopped"), 2.0)
            except Exception:  # noqa: BLE001 - a page that cannot be told is simply cut off
                self._abort(client)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.connections is not None:
            self.connections.close_all()  # the refused sockets held unread, and any left

    # ----- requests
    @web.middleware
    async def _guard(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if self.connections is not None:
            self.connections.started(request)
        try:
            return await self._checked(request, handler)
        finally:
            if self.connections is not None:
                self.connections.finished(request)

    async def _checked(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        try:
            websocket = request.headers.get("Upgrade", "").lower() == "websocket"
            verdict = self.policy.check(
                remote=request.remote or "", method=request.method, headers=request.headers,
                cookies=request.cookies, query=request.query, websocket=websocket,
                oscquery=self._is_oscquery(request),
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a request too odd to judge is refused, never a 500
            self.counts["refused_400"] += 1
            self._throttle(f"malformed:{request.remote}", "web: refused a malformed request from %s: %s",
                           request.remote, type(e).__name__, client=request.remote)
            return web.Response(status=400, text="malformed request\n", headers=self._headers())
        if not verdict.allowed:
            self.counts[f"refused_{verdict.status}"] += 1
            self._throttle(f"refused{verdict.status}:{request.remote}", "web: refused %s %s from %s: %s",
                           request.method, _cut(request.path), request.remote, verdict.reason, client=request.remote)
            return web.Response(status=verdict.status, text=verdict.reason + "\n", headers=self._headers())
        if verdict.keep_token:
            # keep the token in a cookie, and send the browser to the same address without it
            location = request.rel_url.with_query({k: v for k, v in request.query.items() if k != TOKEN_QUERY})
            response = web.Response(status=303, headers={"Location": str(location), **self._headers()})
            response.set_cookie(TOKEN_COOKIE, self.token or "", max_age=COOKIE_DAYS * 86400, path="/",
                                httponly=True, samesite="Strict")
            return response
        response = await handler(request)
        if not response.prepared:
            response.headers.update(self._headers())
        return response

    @staticmethod
    def _headers() -> dict[str, str]:
        return {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}

    @staticmethod
    def _wants_page(request: web.Request) -> bool:
        return "text/html" in request.headers.get("Accept", "") and not any(k.isupper() for k in request.query)

    def _is_oscquery(self, request: web.Request) -> bool:
        path = request.path
        return path == "/dream" or path.startswith("/dream/") or (path == "/" and not self._wants_page(request))

    async def _root(self, request: web.Request) -> web.StreamResponse:
        if self._wants_page(request):
            return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})
        return await self._oscquery(request)

    async def _oscquery(self, request: web.Request) -> web.StreamResponse:
        self.counts["oscquery"] += 1
        keys = [k for k in request.query if k.isupper()]
        if oscquery.HOST_INFO in keys:
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            return web.json_response(self.namespace.host_info(sockname[0] if sockname else None))
        node = self.namespace.node(request.path)
        if node is None:
            return web.json_response({"error": f"no OSC node at {request.path}"}, status=404)
        if keys:
            status, body = oscquery.attribute(node, keys[0])
            if body is None:
                return web.Response(status=status)
            return web.json_response(body)
        return web.json_response(node)

    async def _screenshot(self, request: web.Request) -> web.StreamResponse:
        site = request.headers.get("Sec-Fetch-Site", "").lower()
        if site not in ("", "same-origin", "none"):
            # another site's <img src=…/screenshot.png> (or fetch, or link) would make every
            # visitor's browser ask the show for a full-size PNG; a browser says where it is from
            self.counts["screenshots_cross_site"] += 1
            self._throttle(f"shot-site:{request.remote}", "web: refused a %s screenshot request (%s, %s) from %s",
                           _quote(site, 20), _quote(request.headers.get("Sec-Fetch-Mode", ""), 20),
                           _quote(request.headers.get("Sec-Fetch-Dest", ""), 20), request.remote, client=request.remote)
            return web.Response(status=403, text="screenshots are for this show's own page, not other sites\n")
        if not self._screenshots.take(request.remote or "?") or \
                self._screenshots_in_flight >= SCREENSHOTS_IN_FLIGHT:
            self.counts["screenshots_limited"] += 1
            self._throttle(f"shot-rate:{request.remote}", "web: screenshot from %s refused: over %g a second",
                           request.remote, SCREENSHOTS_PER_SECOND, client=request.remote)
            return web.Response(status=429, text="one screenshot a second; try again in a moment\n",
                                headers={"Retry-After": "1"})
        frame = self.preview.latest()[1] if self.preview is not None else None
        if frame is None:
            return web.Response(status=503, text="no frame yet: the show is still starting\n")
        self._screenshots_in_flight += 1
        try:
            png = await asyncio.get_running_loop().run_in_executor(self._encode_pool, encode_png, frame)
        finally:
            self._screenshots_in_flight -= 1
        name = time.strftime("deepdream-%Y%m%d-%H%M%S.png")
        self.counts["screenshots"] += 1
        return web.Response(body=png, content_type="image/png",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def _api_status(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._status_payload())

    # ----- pages
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if len(self._clients) >= MAX_CLIENTS:
            self._throttle("too_many", "web: refused a page from %s: %d pages are open", request.remote, MAX_CLIENTS)
            return web.Response(status=503, text=f"{MAX_CLIENTS} pages are open already; close one\n")
        ws = web.WebSocketResponse(heartbeat=self.heartbeat, max_msg_size=MAX_MESSAGE, compress=False)
        await ws.prepare(request)
        client = _Client(ws, request)
        self._clients.add(client)
        self.counts["pages"] += 1
        client.send(self._hello())
        writer = asyncio.create_task(self._writer(client))
        started = time.perf_counter()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self.counts["messages"] += 1
                    if not client.bucket.take():
                        self.counts["dropped_flooding"] += 1
                        self._throttle("flood", "web: closed the page of %s: more than %d messages a second",
                                       client.remote, int(FLOOD_RATE))
                        await ws.close(code=1008, message=b"too many messages")
                        break
                    self._handle(client, message.data)
                elif message.type == WSMsgType.BINARY:
                    self._refuse_message(client, "binary", "the page sends JSON text messages only")
                elif message.type == WSMsgType.ERROR:  # a frame over MAX_MESSAGE, a broken frame
                    self.counts["refused_messages"] += 1
                    self._throttle(f"ws-error:{client.remote}", "web: closed the page of %s: %s", client.remote,
                                   _quote(str(ws.exception()), 120), client=client.remote)
                if time.perf_counter() - started > SLICE:
                    await asyncio.sleep(SLICE)  # let the frame loop's thread have the GIL
                    started = time.perf_counter()
        finally:
            client.closed = True
            client.wake.set()
            self._clients.discard(client)
            self._update_preview_wanted()
            writer.cancel()
        return ws

    def _refuse_message(self, client: _Client, kind: str, reason: str) -> None:
        """A page's message not acted on: answered to that page, logged once per page and kind
        every ``LOG_EVERY`` seconds."""
        self.counts["refused_messages"] += 1
        client.error(reason)
        self._throttle(f"ws-{kind}:{client.remote}", "web: refused a message from %s: %s", client.remote, reason,
                       client=client.remote)

    def _handle(self, client: _Client, text: str) -> None:
        # bounded before json.loads walks it: 60,000 '[' made it raise RecursionError
        if len(text) > MAX_TEXT:
            self._refuse_message(client, "size", f"a message of {len(text)} characters; at most {MAX_TEXT}")
            return
        if text.count("[") + text.count("{") > MAX_BRACKETS:
            self._refuse_message(client, "nesting", f"more than {MAX_BRACKETS} brackets in one message; "
                                 "the page sends flat {\"op\": …} objects")
            return
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            self._refuse_message(client, "json", "not JSON: the page sends {\"op\": …} objects")
            return
        if not isinstance(data, dict) or not isinstance(data.get("op"), str):
            self._refuse_message(client, "shape", "expected a JSON object with an \"op\"")
            return
        op = data["op"]
        try:
            if op == "set":
                self._op_set(client, data)
            elif op == "layer":
                value = data.get("value")
                self._write(client, "objective", lambda: self._set_layer(value))
            elif op == "channel":
                value = data.get("value")
                self._write(client, "objective", lambda: self._set_channel(value))
            elif op == "objective":
                value = data.get("value")
                self._write(client, "objective", lambda: self._set_objective(value))
            elif op in ("preset/load", "preset/save"):
                asyncio.get_running_loop().create_task(self._preset(client, op, data.get("name")))
            elif op == "presets":
                client.presets = self._preset_names()
                client.wake.set()
            elif op == "preview":
                client.preview = bool(data.get("on"))
                client.awaiting_ack = None
                self._update_preview_wanted()
                client.wake.set()
            elif op == "ack":
                client.awaiting_ack = None
                client.wake.set()
            elif op == "ping":
                client.send({"type": "pong", "t": data.get("t")})
            elif op.startswith("audio/") and self.audio is not None:
                reply = self.audio.handle(op, data)  # the sound's ops (live/audio/webdoor.py)
                if reply is not None:
                    client.send(reply)
            else:
                self._refuse_message(client, "op", f"unknown op {_quote(op)}")
        except LiveError as e:
            about = data.get("name") if isinstance(data.get("name"), str) else op
            client.error(str(e), about[:MAX_QUOTE])

    def _op_set(self, client: _Client, data: Mapping[str, Any]) -> None:
        name = data.get("name")
        if not isinstance(name, str):
            raise UsageError("set needs a parameter name")
        param = self.registry.param(name)
        if "norm" in data:
            x = data["norm"]
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
                raise UsageError(f"{name}: a fader position is 0..1, got {x!r}")
            self._write(client, name, lambda: self.registry.set_norm(name, float(x), "web"))
            return
        value = data.get("value")
        if param.kind == "trigger":
            self._write(client, name, lambda: self.registry.set(name, True, "web"))
            return
        _refuse_out_of_range(param, value)
        self._write(client, name, lambda: self.registry.set(name, value, "web"))

    def _set_layer(self, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise UsageError(f"layer: expected a layer name or 1..{len(self.catalog.layers)}, got {value!r}")
        self.registry.set("objective", self.catalog.resolve(str(value)).name, "web")

    def _set_channel(self, value: Any) -> None:
        layer = self.catalog.deepest(self.registry.get("objective").layers)
        expected = f"a channel of {layer.name}, 0..{layer.channels - 1}"
        if value is None or value == "":
            self.registry.set("objective", layer.name, "web")  # the whole layer again
            return
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < layer.channels:
            raise UsageError(f"channel: expected {expected}, got {value!r}")
        self.registry.set("objective", f"{layer.name}:{value}", "web")

    def _set_objective(self, value: Any) -> None:
        if not isinstance(value, str):
            raise UsageError(f"objective: expected text such as inception4c:97, got {value!r}")
        self.registry.set("objective", Objective.parse(value, self.model), "web")

    def _write(self, client: _Client, key: str, apply: Callable[[], Any]) -> None:
        self._writes[key] = (client, apply)  # a newer write to the same name replaces one not yet applied
        assert self._apply_wake is not None
        self._apply_wake.set()

    async def _applier(self) -> None:
        assert self._apply_wake is not None
        while True:
            await self._apply_wake.wait()
            self._apply_wake.clear()
            writes, self._writes = self._writes, {}
            for key, (client, apply) in writes.items():
                try:
                    apply()
                    self.counts["applied"] += 1
                except LiveError as e:
                    self.counts["refused_values"] += 1
                    client.error(str(e), key)
                except Exception as e:  # noqa: BLE001 - a bug in one write must not stop the others
                    log.exception("web: applying %s failed", key)
                    client.error(f"{key}: {type(e).__name__}: {e}", key)
            await asyncio.sleep(APPLY_INTERVAL)

    async def _preset(self, client: _Client, op: str, name: Any) -> None:
        if self.presets is None:
            client.error("this show was started without presets", op)
            return
        if not isinstance(name, str):
            client.error(f"{op}: expected a preset name, got {_quote(name)}", op)
            return
        loop = asyncio.get_running_loop()
        try:
            if op == "preset/load":
                await loop.run_in_executor(None, self.presets.load, name)
                client.notice(f"preset {name} loaded")
            else:
                await loop.run_in_executor(None, self.presets.save, name)
                client.notice(f"preset {name} saved")
                self._broadcast_presets()
        except LiveError as e:
            client.error(str(e), op)

    def _preset_names(self) -> list[str]:
        if self.presets is None:
            return []
        try:
            return self.presets.names()
        except OSError:
            return []

    def _broadcast_presets(self) -> None:
        names = self._preset_names()
        self._last_presets = names
        for client in self._clients:
            client.presets = names
            client.wake.set()

    # ----- sending
    async def _writer(self, client: _Client) -> None:
        try:
            while not client.closed:
                await client.wake.wait()
                client.wake.clear()
                for text in self._outgoing(client):
                    await asyncio.wait_for(client.ws.send_str(text), self.stall_seconds)
                number, jpeg = self._jpeg
                # a frame encoded while no page watched is old news: wait for the encoder's next
                fresh = time.monotonic() - self._jpeg_at < 2.0 / PREVIEW_FPS
                if client.ready_for_frame and number > client.frame_sent and jpeg and fresh:
                    client.frame_sent = number
                    client.awaiting_ack = time.monotonic()
                    await asyncio.wait_for(client.ws.send_bytes(jpeg), self.stall_seconds)
                    self.counts["frames_sent"] += 1
        except TimeoutError:
            self._drop_stalled(client, "a send did not finish")
        except (ConnectionError, RuntimeError):
            pass  # the page went away while we wrote to it
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one page's failure must not reach the others
            log.debug("web: writing to the page of %s failed", client.remote, exc_info=True)
            self._abort(client)

    def _outgoing(self, client: _Client) -> list[str]:
        out = []
        while client.messages:
            out.append(json.dumps(client.messages.popleft()))
        if client.values or client.norms:
            out.append(json.dumps({"type": "values", "values": client.values, "norms": client.norms}))
            client.values, client.norms = {}, {}
        if client.presets is not None:
            out.append(json.dumps({"type": "presets", "names": client.presets}))
            client.presets = None
        if client.status is not None:
            out.append(json.dumps({"type": "status", "status": client.status}))
            client.status = None
        if client.audio is not None:
            out.append(json.dumps({"type": "audio", "audio": client.audio}))
            client.audio = None
        return out

    def _drop_stalled(self, client: _Client, why: str) -> None:
        if client.closed:
            return
        client.closed = True
        self.counts["dropped_stalled"] += 1
        self._throttle("stalled", "web: dropped the page of %s: %s within %.0f s", client.remote, why,
                       self.stall_seconds)
        self._abort(client)

    @staticmethod
    def _abort(client: _Client) -> None:
        transport = client.request.transport
        if transport is not None:
            transport.abort()

    # ----- values from the registry (any thread) to the pages (web thread)
    def _registry_changed(self, name: str, value: Any, source: str) -> None:
        if self._closed or self._loop is None:
            return
        with self._dirty_lock:
            self._dirty.add(name)
            if self._flush_pending:
                return
            self._flush_pending = True
        try:
            self._loop.call_soon_threadsafe(self._flush_changes)
        except RuntimeError:
            pass  # the loop is closing

    def _flush_changes(self) -> None:
        with self._dirty_lock:
            names, self._dirty = self._dirty, set()
            self._flush_pending = False
        if not self._clients:
            return
        values, norms = self._values(names)
        for client in self._clients:
            client.values.update(values)
            client.norms.update(norms)
            client.wake.set()

    def _values(self, names: Iterable[str]) -> tuple[dict[str, Any], dict[str, float]]:
        """Current values (and fader positions) of ``names``; the objective adds ``layer`` and ``channel``."""
        snap = self.registry.snapshot()
        values: dict[str, Any] = {}
        norms: dict[str, float] = {}
        for name in names:
            param = self.registry.params.get(name)
            if param is None:
                continue
            value = snap[name]
            values[name] = _jsonable(value)
            if param.kind in FADER_KINDS:
                norms[name] = float(param.to_norm(value))
            if isinstance(value, Objective):
                derived = value_messages(param, value)  # what OSC feedback shows for it
                values["layer"] = derived.get(f"{PREFIX}/layer", [None])[0]
                values["channel"] = derived.get(f"{PREFIX}/channel", [None])[0]
        return values, norms

    def _hello(self) -> dict[str, Any]:
        values, norms = self._values(self.registry.params)
        return {
            "type": "hello", "version": __version__, "model": self.model,
            "params": [describe_param(p) for p in self.registry.params.values()],
            "layers": [{"number": layer.index + 1, "name": layer.name, "channels": layer.channels,
                        "aliases": list(layer.aliases)} for layer in self.catalog.layers],
            "values": values, "norms": norms, "presets": self._preset_names(), "status": self._status_payload(),
            "preview": {"width": PREVIEW_WIDTH, "fps": PREVIEW_FPS, "available": self.preview is not None},
            "audio": self.audio.hello() if self.audio is not None else None,
        }  # fmt: skip

    # ----- status and preview (web thread)
    def _scalar_status(self) -> dict[str, Any]:
        if self.status_source is None:
            return {}
        return {k: v for k, v in self.status_source().items() if not isinstance(v, (list, dict, tuple))}

    def _status_payload(self) -> dict[str, Any]:
        try:
            status = dict(self.status_source()) if self.status_source is not None else {}
        except Exception as e:  # noqa: BLE001 - the page shows the failure instead of going blank
            status = {"state": f"status unavailable: {type(e).__name__}: {e}"}
        status["errors"] = self.problems.recent()
        status["pages"] = len(self._clients)
        return _jsonable(status)

    async def _status_ticker(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY)
            if not self._clients:
                continue
            payload = self._status_payload()
            names = self._preset_names()
            changed = names != self._last_presets
            self._last_presets = names
            now = time.monotonic()
            for client in list(self._clients):
                if client.awaiting_ack is not None and now - client.awaiting_ack > self.stall_seconds:
                    self._drop_stalled(client, "a preview frame was not acknowledged")
                    continue
                client.status = payload
                if changed:
                    client.presets = names
                client.wake.set()

    async def _audio_ticker(self) -> None:
        """The sound's meters to every page, newest only (live/audio/webdoor.py)."""
        from live.audio.webdoor import METER_RATE

        while True:
            await asyncio.sleep(1.0 / METER_RATE)
            if not self._clients:
                continue
            try:
                payload = _jsonable(self.audio.payload())
            except Exception:  # noqa: BLE001 - the meters pause; the page and the show go on
                log.debug("web: audio meters", exc_info=True)
                continue
            for client in list(self._clients):
                client.audio = payload
                client.wake.set()

    def _update_preview_wanted(self) -> None:
        if self._preview_wanted is None:
            return
        if self.preview is not None and any(c.preview and not c.closed for c in self._clients):
            self._preview_wanted.set()
        else:
            self._preview_wanted.clear()

    async def _encoder(self) -> None:
        """At most ``PREVIEW_FPS`` times a second, while a page is ready for a frame: encode the
        newest frame (on the ``web-encode`` thread) and wake the pages that can take it."""
        loop = asyncio.get_running_loop()
        seen = 0
        while True:
            assert self._preview_wanted is not None
            await self._preview_wanted.wait()
            started = time.monotonic()
            number, frame = self.preview.latest() if self.preview is not None else (0, None)
            ready = [c for c in self._clients if c.ready_for_frame]
            stale = time.monotonic() - self._jpeg_at >= 2.0 / PREVIEW_FPS  # a page that just opened
            if frame is not None and ready and (number != seen or stale):
                seen = number
                try:
                    jpeg = await loop.run_in_executor(self._encode_pool, encode_jpeg, frame)
                except Exception as e:  # noqa: BLE001 - the preview pauses; the show goes on
                    self._throttle("encode", "web: preview frame not encoded: %s", e)
                else:
                    self._jpeg = (self._jpeg[0] + 1, jpeg)
                    self._jpeg_at = time.monotonic()
                    self.counts["frames_encoded"] += 1
                    for client in ready:
                        client.wake.set()
            await asyncio.sleep(max(1.0 / PREVIEW_FPS - (time.monotonic() - started), 0.005))


def _refuse_out_of_range(param: Param, value: Any) -> None:
    """A number outside the parameter's range is refused, never clamped (the page shows why)."""
    if param.kind not in ("float", "int") or isinstance(value, bool):
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        return  # not a number: the registry says what it expects
    if not math.isfinite(number) or not param.lo <= number <= param.hi:
        raise UsageError(f"{param.name} expects {param.expects()}, got {value!r}")
