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
  silent one, and the page, once it has sent its request, is not idle.

The guard wraps aiohttp's protocol (:meth:`ConnectionGuard.protocol`) and is told by the
server's middleware when a request starts and ends (:meth:`started`, :meth:`finished`).
Everything runs on the server's event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 256  # in all; a show has a few pages and controllers
MAX_PER_CLIENT = 16  # a browser opens six per host, plus the page's websocket
HEADER_TIMEOUT = 10.0  # s from opening to a complete request head
IDLE_TIMEOUT = 15.0  # s from an answer to the next request head
SWEEP_EVERY = 1.0  # s between two looks for connections past their time
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
    """aiohttp's protocol behind the guard: a refused connection never reaches aiohttp."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard, self.inner = guard, inner
        self.connection: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connection = self.guard._opened(transport)  # type: ignore[arg-type]
        if self.connection is not None:
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
        self._all: OrderedDict[int, _Connection] = OrderedDict()  # oldest first
        self._by_client: dict[str, OrderedDict[int, _Connection]] = {}

    def protocol(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        """``inner`` (aiohttp's protocol for one connection) behind this guard."""
        return _Guarded(self, inner)

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

    def close_all(self) -> None:
        for conn in list(self._all.values()):
            self._forget(conn)
            conn.transport.abort()


def _writing(transport: asyncio.BaseTransport) -> bool:
    """Whether an answer is still being written out (a large download to a slow phone)."""
    try:
        return transport.get_write_buffer_size() > 0  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return False


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site with every connection's protocol wrapped by a :class:`ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            lambda: self.guard.protocol(server()), self._host, self._port,
            backlog=self._backlog, reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
