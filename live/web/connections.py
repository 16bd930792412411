"""Connections to the web server: counted, capped per client and in total, and timed out when idle.

aiohttp on its own keeps a connection that never sends a request for an hour (its keep-alive
default) and accepts as many as the process has file descriptors; ten slow-loris sockets stayed
open for minutes, and ninety-five idle ones under a limit of a hundred descriptors made preset
saves fail and asyncio write thousands of tracebacks (docs/architecture.md, *Doors*). So every
connection passes through a :class:`ConnectionGuard` before aiohttp sees it:

- a connection must deliver a complete request head within ``header_timeout`` of opening, and
  the next one within ``idle_timeout`` of the last answer; one that does not is closed. A
  connection whose request is being handled (a websocket page, a download) is never idle;
- at most ``max_per_client`` connections per client address and ``max_total`` in all (below
  the process's open-file limit). When a limit is reached, the *oldest idle* connection (of that
  client, or of anyone) makes room; only when none is idle is the new one refused. So a flood of
  idle sockets cannot keep the operator's page out: each new connection pushes out the oldest
  silent one, and the page, once it has sent its request, is not idle;
- a client opening more than ``OPENS_PER_SECOND`` connections a second (beyond a burst) has the
  rest refused, and a refused connection never reaches asyncio or aiohttp: it is *held*, unread,
  until ``header_timeout`` (at most ``max_held`` of them, then closed at once). An attacker that
  reconnects as soon as it is closed would otherwise cost the show an accept and a close in a
  tight loop (measured: 9,000 a second, 0.15 of a core); held, its sockets wait, and so does it.
  Making room by eviction is limited the same way (``EVICTIONS_PER_SECOND`` in all): an attacker
  on many addresses, each under its opening rate, is held rather than served in a churn.

The guard wraps aiohttp's protocol (:meth:`ConnectionGuard.protocol`) and is told by the
server's middleware when a request starts and ends (:meth:`started`, :meth:`finished`).
Everything runs on the server's event loop thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import resource
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

from live.ratelimit import Bucket, PerClient

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256  # in all; a show has a few pages and controllers
MAX_PER_CLIENT = 16  # a browser opens six per host, plus the page's websocket
HEADER_TIMEOUT = 10.0  # s from opening to a complete request head
IDLE_TIMEOUT = 15.0  # s from an answer to the next request head
SWEEP_EVERY = 1.0  # s between two looks for connections past their time
# new connections a client may open a second, beyond a burst of twice that: an OSCQuery browser asks
# for each node's value on a connection of its own, a hundred at once
OPENS_PER_SECOND = 100.0
EVICTIONS_PER_SECOND = 20.0  # connections closed to make room, in all, beyond a burst of twice that
MAX_HELD = 1024  # refused sockets held unread (a reconnect loop waits on them); beyond, closed at once
FILES_PER_CONNECTION = 4  # of the open-file limit: the rest is for cameras, recordings, presets, models


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; returns the soft limit now.

    A soft limit of 1024 is a leftover of ``select()``; asyncio uses epoll. The systemd unit sets
    both (``LimitNOFILE``); this helps a show started by hand.
    """
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    except (ValueError, OSError):  # not allowed here: keep what there is
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _Connection:
    __slots__ = ("transport", "client", "opened", "busy", "deadline")

    def __init__(self, transport: asyncio.Transport, client: str, deadline: float) -> None:
        self.transport = transport
        self.client = client
        self.opened = time.monotonic()
        self.busy = 0  # requests being handled on it
        self.deadline: float | None = deadline  # when it is closed if still idle


class _Guarded(asyncio.Protocol):
    """aiohttp's protocol behind the guard, made only for an accepted connection."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.Protocol]) -> None:
        self.guard, self.factory = guard, factory
        self.inner: asyncio.Protocol = asyncio.Protocol()
        self.connection: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connection = self.guard._opened(transport)  # type: ignore[arg-type]
        if self.connection is not None:
            self.inner = self.factory()
            self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.connection is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.connection is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.guard._closed(self.connection)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.connection is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.connection is not None:
            self.inner.resume_writing()


class ConnectionGuard:
    """Caps and timeouts for one server's connections (see the module docstring).

    Args:
        max_total, max_per_client: connection caps (default ``MAX_CONNECTIONS``,
            ``MAX_PER_CLIENT``); ``max_total`` is lowered to a quarter of the open-file limit
            (``open_files``, default this process's, raised to its hard limit first) when smaller.
        header_timeout, idle_timeout: seconds a connection may stay silent (see above; default
            ``HEADER_TIMEOUT``, ``IDLE_TIMEOUT``).
        on_refuse: called with ``(kind, client)`` for each refused, evicted or timed-out
            connection (``refused``, ``evicted``, ``timed_out``), for counting and logging.
    """

    def __init__(self, *, max_total: int | None = None, max_per_client: int | None = None,
                 header_timeout: float | None = None, idle_timeout: float | None = None,
                 on_refuse: Callable[[str, str], Any] | None = None, open_files: int | None = None) -> None:
        files = raise_open_file_limit() if open_files is None else open_files
        max_total = MAX_CONNECTIONS if max_total is None else max_total
        self.max_total = max(8, min(max_total, files // FILES_PER_CONNECTION))
        self.max_per_client = min(MAX_PER_CLIENT if max_per_client is None else max_per_client, self.max_total)
        self.header_timeout = HEADER_TIMEOUT if header_timeout is None else header_timeout
        self.idle_timeout = IDLE_TIMEOUT if idle_timeout is None else idle_timeout
        self.on_refuse = on_refuse
        self.counts: Counter[str] = Counter()
        self._opens = PerClient(OPENS_PER_SECOND, 2 * OPENS_PER_SECOND)
        self._evictions = Bucket(EVICTIONS_PER_SECOND, 2 * EVICTIONS_PER_SECOND)
        self.max_held = max(8, min(MAX_HELD, files // FILES_PER_CONNECTION))
        self._held: collections.deque[tuple[float, socket.socket]] = collections.deque()  # oldest first
        self._all: OrderedDict[int, _Connection] = OrderedDict()  # oldest first
        self._by_client: dict[str, OrderedDict[int, _Connection]] = {}

    def protocol(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        """A protocol for one new connection: ``factory()`` (aiohttp's) behind this guard, made
        only if the connection is accepted."""
        return _Guarded(self, factory)

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._all)

    def per_client(self, client: str) -> int:
        return len(self._by_client.get(client, ()))

    # ----- connections (event loop thread)
    def _opened(self, transport: asyncio.Transport) -> _Connection | None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else "?"
        mine = self._by_client.setdefault(client, OrderedDict())
        if len(mine) >= self.max_per_client and not self._evict(mine):
            return self._refuse(transport, client, mine)
        if len(self._all) >= self.max_total and not self._evict(self._all):
            return self._refuse(transport, client, mine)
        conn = _Connection(transport, client, time.monotonic() + self.header_timeout)
        self._all[id(transport)] = conn
        mine[id(transport)] = conn
        self.counts["accepted"] += 1
        return conn

    def _admit(self, client: str, sock: socket.socket) -> bool:
        """Whether ``client`` may open one more connection now (its opening rate, and the eviction
        budget when every place is taken). A refused
        socket is held unread until ``header_timeout`` (or closed at once when ``max_held`` are
        held already) and counted."""
        full = len(self._all) >= self.max_total
        if self._opens.take(client) and (not full or self._evictions.take()):
            return True
        if len(self._held) < self.max_held:
            self._held.append((time.monotonic() + self.header_timeout, sock))
        else:
            sock.close()
        self._report("refused", client)
        return False

    @property
    def held(self) -> int:
        """Refused sockets held unread now."""
        return len(self._held)

    def _refuse(self, transport: asyncio.Transport, client: str,
                mine: OrderedDict[int, _Connection]) -> None:
        if not mine:
            self._by_client.pop(client, None)
        transport.abort()
        self._report("refused", client)
        return None

    def _evict(self, among: OrderedDict[int, _Connection]) -> bool:
        """Close the oldest idle connection in ``among``; False when every one is busy."""
        for conn in among.values():
            if conn.busy == 0 and not _writing(conn.transport):
                self._drop(conn, "evicted")
                return True
        return False

    def _drop(self, conn: _Connection, kind: str) -> None:
        self._forget(conn)
        conn.transport.abort()  # connection_lost follows; _closed finds it gone
        self._report(kind, conn.client)

    def _forget(self, conn: _Connection) -> None:
        key = id(conn.transport)
        self._all.pop(key, None)
        mine = self._by_client.get(conn.client)
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self._by_client[conn.client]

    def _closed(self, conn: _Connection) -> None:
        self._forget(conn)

    def _report(self, kind: str, client: str) -> None:
        self.counts[kind] += 1
        if self.on_refuse is not None:
            self.on_refuse(kind, client)

    # ----- requests (the middleware)
    def _find(self, request: web.BaseRequest) -> _Connection | None:
        transport = request.transport
        return self._all.get(id(transport)) if transport is not None else None

    def started(self, request: web.BaseRequest) -> None:
        """A request's head has arrived on its connection: not idle until :meth:`finished`."""
        conn = self._find(request)
        if conn is not None:
            conn.busy += 1
            conn.deadline = None

    def finished(self, request: web.BaseRequest) -> None:
        """The request was answered: the connection has ``idle_timeout`` for its next one."""
        conn = self._find(request)
        if conn is not None:
            conn.busy = max(conn.busy - 1, 0)
            if conn.busy == 0:
                conn.deadline = time.monotonic() + self.idle_timeout

    def sweep(self, now: float | None = None) -> int:
        """Close every idle connection past its time; returns how many."""
        now = time.monotonic() if now is None else now
        while self._held and self._held[0][0] <= now:
            self._held.popleft()[1].close()
        late = [c for c in self._all.values()
                if c.busy == 0 and c.deadline is not None and now >= c.deadline and not _writing(c.transport)]
        for conn in late:
            self._drop(conn, "timed_out")
        return len(late)

    async def sweeper(self) -> None:
        """Run :meth:`sweep` every ``SWEEP_EVERY`` seconds (a task on the server's loop)."""
        while True:
            await asyncio.sleep(min(SWEEP_EVERY, self.header_timeout / 4))
            self.sweep()

    def close_idle(self) -> int:
        """Close every connection with no request in hand (a stop: nothing to wait for there)."""
        idle = [c for c in self._all.values() if c.busy == 0]
        for conn in idle:
            self._forget(conn)
            conn.transport.abort()
        return len(idle)

    def close_all(self) -> None:
        while self._held:
            self._held.popleft()[1].close()
        for conn in list(self._all.values()):
            self._forget(conn)
            conn.transport.abort()


def _writing(transport: asyncio.BaseTransport) -> bool:
    """Whether an answer is still being written out (a large download to a slow phone)."""
    try:
        return transport.get_write_buffer_size() > 0  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return False


class _Listener:
    """What aiohttp's runner needs of a site's server (its ``sockets`` and ``close``), for sockets
    this module accepts on itself."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sockets: list[socket.socket]) -> None:
        self.loop, self.sockets = loop, sockets

    def close(self) -> None:
        for sock in self.sockets:
            try:
                self.loop.remove_reader(sock)
            except (ValueError, RuntimeError):  # closed already, or the loop is
                pass
            sock.close()

    async def wait_closed(self) -> None:
        return None


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site, accepting connections itself: a client over its opening rate is closed
    straight after ``accept`` (no asyncio transport, no aiohttp protocol: a few microseconds, so a
    reconnect loop costs the show little), every other connection is handed to asyncio with its
    protocol behind the :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port)
        self.guard = guard
        self._handing: set[asyncio.Task] = set()

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        sockets = []
        try:
            infos = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            for family, kind, proto, _, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(self._backlog)
                sock.setblocking(False)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self._server = _Listener(loop, sockets)  # type: ignore[assignment]
        for sock in sockets:
            loop.add_reader(sock, self._accept, loop, sock)

    def _accept(self, loop: asyncio.AbstractEventLoop, listening: socket.socket) -> None:
        server = self._runner.server
        assert server is not None
        for _ in range(self._backlog):
            try:
                conn, peer = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of file descriptors or memory: stop accepting for a second
                self.guard._report("accept_failed", f"{e.strerror or e}")
                loop.remove_reader(listening)
                loop.call_later(1.0, self._resume, loop, listening)
                return
            client = str(peer[0]) if peer else "?"
            if not self.guard._admit(client, conn):
                continue
            conn.setblocking(False)
            task = loop.create_task(loop.connect_accepted_socket(lambda: self.guard.protocol(server), conn))
            self._handing.add(task)
            task.add_done_callback(self._handed)

    def _resume(self, loop: asyncio.AbstractEventLoop, listening: socket.socket) -> None:
        if listening.fileno() >= 0:
            loop.add_reader(listening, self._accept, loop, listening)

    def _handed(self, task: asyncio.Task) -> None:
        self._handing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("a connection closed before it was set up: %s", task.exception())
