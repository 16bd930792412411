"""A throw-away X server for tests that need a display: ``with running_xvfb() as display``.

Xvfb picks a free display number itself (``-displayfd``), so parallel runs cannot collide.
Keep HighGUI (OpenCV's Qt windows) out of the test process and drive it from a child process
instead: Qt keeps its X connection for the life of the process and exits the whole process
the next time it touches a display that has gone away.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
from collections.abc import Iterator
from pathlib import Path

XVFB = Path("/usr/bin/Xvfb")


@contextlib.contextmanager
def running_xvfb(width: int = 1280, height: int = 720, timeout: float = 10.0) -> Iterator[str]:
    """Start Xvfb with one ``width``×``height``×24 screen and yield its display (``":N"``);
    the server is stopped, and waited for, on exit."""
    if not XVFB.exists():
        raise FileNotFoundError(f"{XVFB} is not installed")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [str(XVFB), "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        # Xvfb writes the display number once it accepts connections.
        ready, _, _ = select.select([read_fd], [], [], timeout)
        number = os.read(read_fd, 32).decode().strip() if ready else ""
        if not number:
            raise RuntimeError(f"Xvfb did not start within {timeout}s (exit code {proc.poll()})")
        yield f":{number}"
    finally:
        os.close(read_fd)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
