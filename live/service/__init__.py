"""Running as a service: talking to systemd (readiness, watchdog, status) without a dependency.

See :mod:`live.service.notify`; the unit files and their installer live in ``systemd/``.
"""

from live.service.heartbeat import Heartbeat
from live.service.notify import (
    Watchdog,
    extend_timeout,
    extending,
    ready,
    status,
    stopping,
    watchdog,
    watchdog_interval,
)

__all__ = [
    "Heartbeat",
    "Watchdog",
    "extend_timeout",
    "extending",
    "ready",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]
