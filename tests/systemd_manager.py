"""systemd's end of NOTIFY_SOCKET, for tests: what a show tells its service manager."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path


class FakeSystemd:
    """Reads NOTIFY_SOCKET datagrams on a thread, keeping each text with its arrival time, and,
    as systemd does, closes the file descriptors a message carries (what ends a BARRIER=1 wait).

    ``path`` is where the socket is bound (default: a fresh short directory of its own, since
    unix socket paths are limited to 107 bytes); point ``NOTIFY_SOCKET`` at :attr:`path`.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._dir = None if path is not None else Path(tempfile.mkdtemp(prefix="ddl-"))
        self.path = str(path if path is not None else self._dir / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.got: list[tuple[float, str]] = []  # (time.monotonic() on arrival, text)
        self.barriers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 4096, 4)
            except (TimeoutError, OSError):
                continue
            for fd in fds:
                os.close(fd)
            self.barriers += data == b"BARRIER=1"
            self.got.append((time.monotonic(), data.decode()))

    @property
    def messages(self) -> list[str]:
        """Every text received, in order."""
        return [text for _, text in list(self.got)]

    def pings(self, since: float = 0.0, until: float = float("inf")) -> int:
        """WATCHDOG=1 messages that arrived in [since, until) (``time.monotonic()`` seconds)."""
        return sum(1 for t, m in list(self.got) if "WATCHDOG=1" in m and since <= t < until)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
