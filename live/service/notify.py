"""sd_notify without libsystemd: readiness, watchdog pings, status text and timeout extensions.

Under a ``Type=notify`` unit systemd puts a datagram socket in ``$NOTIFY_SOCKET`` (a path, or
an abstract-namespace name written with a leading ``@``) and reads ``KEY=VALUE`` lines from
it. Every function here is a silent no-op when that variable is absent (a terminal, the tests,
another init system), and none of them raises: a full socket buffer or a vanished manager must
never take the show down; the failure is logged once instead.

The watchdog (``WatchdogSec=`` in the unit, ``$WATCHDOG_USEC`` here) is pinged only while the
frame loop makes progress: the show's :class:`live.service.heartbeat.Heartbeat` pings from a
small thread, but only when the loop finished a dream step or a frame recently, so a slow frame
(minutes on a CPU) keeps the show alive and a stalled loop (a driver call that never returns, a
deadlock) stops the pings and systemd restarts the show. No thread pings on its own say-so; that
would keep a dead show "healthy" forever. :class:`Watchdog` is the per-frame form of the same
rule, for loops that call it once per frame.

Long steps that happen before the loop runs (building engines, loading the network) use
:func:`extending`, which sends ``EXTEND_TIMEOUT_USEC`` from a small thread while the step runs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

_failed_once = False  # so a broken socket is reported once, not every frame


def _address() -> str | bytes | None:
    """Where ``$NOTIFY_SOCKET`` points: a path, an abstract name (bytes, leading NUL) or None."""
    where = os.environ.get("NOTIFY_SOCKET")
    if not where:
        return None
    if where.startswith("@"):
        # Abstract namespace: the kernel's name starts with a NUL byte instead of the '@'.
        return b"\0" + where[1:].encode()
    if where.startswith("/"):
        return where
    # systemd 254+ also offers vsock: addresses (for VMs); a show never runs behind one.
    log.debug("NOTIFY_SOCKET=%r is not a unix socket address; notifications disabled", where)
    return None


def notify(*fields: str) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=…"``) as one datagram to ``$NOTIFY_SOCKET``.

    Returns True if it was sent, False if there is no socket or sending failed (logged once).
    Thread-safe: each call uses its own socket, so no state is shared between threads.
    """
    global _failed_once
    address = _address()
    if address is None or not fields:
        return False
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as e:
        if not _failed_once:
            _failed_once = True
            log.warning(
                "cannot notify systemd at %s: %s (further failures are not logged)", os.environ.get("NOTIFY_SOCKET"), e
            )
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Tell systemd start-up is complete (``READY=1``); the watchdog starts counting from here."""
    fields = ["READY=1"]
    if status_text:
        fields.append(f"STATUS={_one_line(status_text)}")
    return notify(*fields)


def watchdog() -> bool:
    """One watchdog ping (``WATCHDOG=1``). Call it from the frame loop (see :class:`Watchdog`)."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """Set the one-line status ``systemctl --user status deepdream-live`` shows."""
    return notify(f"STATUS={_one_line(text)}")


def extend_timeout(seconds: float) -> bool:
    """Ask for ``seconds`` more before the current state's timeout (``EXTEND_TIMEOUT_USEC``).

    systemd then expects another message within ``seconds``; it only matters once the state
    has run past its configured limit (``TimeoutStartSec=``, ``TimeoutStopSec=``). Note that
    systemd pushes the watchdog deadline out by the same amount, so this is for bounded steps
    only (see :func:`extending`).
    """
    return notify(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1_000_000))}")


def stopping(status_text: str | None = None) -> bool:
    """Tell systemd the show is shutting down (``STOPPING=1``), so a slow stop is not a hang."""
    fields = ["STOPPING=1"]
    if status_text:
        fields.append(f"STATUS={_one_line(status_text)}")
    return notify(*fields)


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds from ``$WATCHDOG_USEC``, or None if there is none.

    ``$WATCHDOG_PID``, when set, must be this process: a child that inherited the variables
    must not ping for its parent.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not a process id; watchdog disabled", pid)
            return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number of microseconds; watchdog disabled", usec)
        return None
    return value / 1_000_000 if value > 0 else None


class Watchdog:
    """Pings the systemd watchdog from the frame loop: call :meth:`on_frame` once per output frame.

    A ping goes out at most every ``interval / 2`` seconds (systemd's advice), and only when the
    frame counter has moved since the last one. Frames that keep coming, however slowly, keep
    the show alive; a loop that stops producing frames stops the pings, and systemd restarts it
    after ``WatchdogSec=``. Placeholder frames (camera lost, engine building) count as frames:
    the loop is alive and showing something.

    ``interval`` defaults to :func:`watchdog_interval`; None disables the helper, and
    :meth:`on_frame` then costs one comparison.
    """

    def __init__(
        self,
        interval: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        send: Callable[[], bool] = watchdog,
    ) -> None:
        self.interval = watchdog_interval() if interval is None else interval
        self.enabled = self.interval is not None and self.interval > 0
        self._period = self.interval / 2 if self.enabled else float("inf")
        self._clock = clock
        self._send = send
        self._last_ping = float("-inf")  # the first frame pings at once
        self._last_frame: int | None = None
        self.pings = 0
        if self.enabled:
            log.info("systemd watchdog: %.1f s; pinging every %.1f s from the frame loop", self.interval, self._period)

    def on_frame(self, n: int) -> None:
        """Record that output frame ``n`` went out; ping the watchdog if it is due."""
        if not self.enabled or n == self._last_frame:
            return
        now = self._clock()
        if now - self._last_ping < self._period:
            return
        self._last_frame = n
        self._last_ping = now
        if self._send():
            self.pings += 1


@contextmanager
def extending(seconds: float = 60.0, *, limit: float | None = 3600.0, status_text: str | None = None) -> Iterator[None]:
    """Keep systemd from timing out while a long step runs inside the ``with`` block.

    A small daemon thread sends ``EXTEND_TIMEOUT_USEC=seconds`` at once and then every
    ``seconds / 3`` until the block ends, or until ``limit`` seconds have passed (None: no
    limit), after which a step that hangs is left to systemd's own timeout. No-op without
    ``$NOTIFY_SOCKET``.

    It never sends ``WATCHDOG=1``. A watchdog ping says "the frame loop is alive", and only the
    loop can say that; a helper thread would go on pinging while the loop is deadlocked, and
    the show would sit frozen for weeks. ``EXTEND_TIMEOUT_USEC`` is scoped instead: it names
    how long this step may still take, stops with the block, and is capped by ``limit``. Use
    it for start-up steps (engine build, network load before ``READY=1``); once the loop runs,
    it should keep emitting placeholder frames through :class:`Watchdog` rather than extend.
    """
    if _address() is None:
        yield
        return
    if status_text:
        status(status_text)
    done = threading.Event()
    started = time.monotonic()

    def keep_extending() -> None:
        while True:
            if limit is not None and time.monotonic() - started >= limit:
                log.warning("still running after %.0f s: no longer extending systemd's timeout", limit)
                return
            extend_timeout(seconds)
            if done.wait(seconds / 3):
                return

    thread = threading.Thread(target=keep_extending, name="sd-extend-timeout", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1.0)


def barrier(timeout: float = 5.0) -> bool:
    """Wait until systemd has read every message sent before this one (``BARRIER=1``), so a
    status sent just before the process exits is not lost; False without a socket or on timeout."""
    import array
    import select

    address = _address()
    if address is None:
        return False
    read_end, write_end = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # sendmsg, not socket.send_fds: that one drops its address argument (CPython 3.11)
            fds = array.array("i", [write_end])
            sock.sendmsg([b"BARRIER=1"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)], 0, address)
        os.close(write_end)
        write_end = -1
        # systemd closes its copy of the write end once it has handled the messages before it
        ready, _, _ = select.select([read_end], [], [], timeout)
        return bool(ready)
    except OSError:
        return False
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE field in the datagram.
    return " ".join(text.split())
