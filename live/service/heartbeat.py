"""The loop's voice while it works: status lines and watchdog pings from a small thread.

A frame can be long (a big dream on a CPU, many steps) without anything being wrong. If status
lines and systemd's watchdog pings came from the end of each frame, a slow show would look dead:
no status line for a minute, and systemd would kill it after ``WatchdogSec=``. So both come from
a :class:`Heartbeat` thread, and both are tied to the loop's *progress*, not to its frames: the
loop marks progress after every dream step and every frame out (``progress()`` returns the
monotonic time of the last one).

- A watchdog ping (``WATCHDOG=1``) goes out every half watchdog interval, but only while the
  last progress is younger than ``stall_after`` (default: the watchdog interval). A slow loop
  keeps pinging; a frozen one (a driver call that never returns, a deadlock) stops, and systemd
  restarts the show within about two intervals. The thread never pings on its own say-so.
- A status line goes to the log every ``status_every`` seconds, during a long frame too; when
  the loop has made no progress for ``stall_after`` seconds, a warning says so instead, once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Self

from live.service import notify

log = logging.getLogger(__name__)


class Heartbeat:
    """Status lines and watchdog pings while ``progress()`` keeps moving; ``with Heartbeat(...):``.

    Args:
        progress: the monotonic time of the loop's last progress (a step done, a frame out);
            read from this thread, so it must be cheap and thread-safe (a float attribute is).
        status: the status line to log, or None for none. Called from this thread.
        status_every: seconds between status lines.
        watchdog: the watchdog interval in seconds (``notify.watchdog_interval()``), None: no pings.
        stall_after: progress older than this stops the pings (default: ``watchdog``, else 60 s).
        send: how a ping is sent (tests pass their own); ``clock``: the time source.
    """

    def __init__(
        self,
        progress: Callable[[], float],
        *,
        status: Callable[[], str] | None = None,
        status_every: float = 10.0,
        watchdog: float | None = None,
        stall_after: float | None = None,
        send: Callable[[], bool] = notify.watchdog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.progress = progress
        self.status = status
        self.status_every = status_every
        self.watchdog = watchdog if watchdog and watchdog > 0 else None
        self.stall_after = stall_after or self.watchdog or 60.0
        self._send = send
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pings = 0
        self.status_lines = 0
        self._stalled = False
        self._next_ping = clock()  # the first ping at once: the loop has just started
        self._next_status = clock() + status_every

    def start(self) -> Self:
        if self.watchdog is not None:
            log.info("systemd watchdog: %.1f s; pinging every %.1f s while the frame loop makes progress",
                     self.watchdog, self.watchdog / 2)
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(self._until_due()):
            self._tick()

    def _until_due(self) -> float:
        due = min(self._next_ping if self.watchdog else float("inf"),
                  self._next_status if self.status else float("inf"))
        return max(0.0, min(due - self._clock(), 1.0))  # at least once a second: the stall warning

    def _tick(self) -> None:
        """Ping and report if due (one pass of the thread's loop; tests call it with their clock)."""
        now = self._clock()
        age = now - self.progress()
        alive = age < self.stall_after
        if self.watchdog is not None and now >= self._next_ping:
            self._next_ping = now + self.watchdog / 2
            if alive and self._send():
                self.pings += 1
        if not alive and not self._stalled:
            self._stalled = True
            log.warning("the frame loop has made no progress for %.0f s%s", age,
                        ": watchdog pings stopped, systemd will restart the show" if self.watchdog else "")
        elif alive and self._stalled:
            self._stalled = False
            log.info("the frame loop is making progress again")
        if self.status is not None and now >= self._next_status:
            self._next_status = now + self.status_every
            if alive:
                try:
                    log.info("%s", self.status())
                    self.status_lines += 1
                except Exception:  # noqa: BLE001 - a status that cannot be read must not end the heartbeat
                    log.warning("status line failed", exc_info=True)
