"""What the X server says about itself, read through libX11/libXrandr with ctypes.

OpenCV's Qt window aborts the whole process (SIGABRT, no exception) when ``$DISPLAY`` names
a server it cannot reach, and it cannot tell us where the monitors are. Both questions are
answered here, before OpenCV touches the display. Everything degrades to ``None`` when the
libraries are missing (not Linux, Wayland-only systems), and callers then skip the check.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import time
from collections.abc import Iterator
from typing import NamedTuple

log = logging.getLogger(__name__)


class Rect(NamedTuple):
    """A monitor's place on the X screen, in pixels."""

    x: int
    y: int
    width: int
    height: int


class _MonitorInfo(ctypes.Structure):
    # XRRMonitorInfo from <X11/extensions/Xrandr.h>; Atom and RROutput are unsigned long.
    _fields_ = [
        ("name", ctypes.c_ulong),
        ("primary", ctypes.c_int),
        ("automatic", ctypes.c_int),
        ("noutput", ctypes.c_int),
        ("x", ctypes.c_int),
        ("y", ctypes.c_int),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("mwidth", ctypes.c_int),
        ("mheight", ctypes.c_int),
        ("outputs", ctypes.POINTER(ctypes.c_ulong)),
    ]


@functools.cache  # find_library runs ldconfig: once per process, not per question
def _load(name: str) -> ctypes.CDLL | None:
    path = ctypes.util.find_library(name)
    if path is None:
        return None
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


@functools.cache
def _xlib() -> ctypes.CDLL | None:
    x11 = _load("X11")
    if x11 is None:
        return None
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    x11.XDefaultScreen.argtypes = [ctypes.c_void_p]
    x11.XDisplayWidth.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XDisplayHeight.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XRootWindow.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XRootWindow.restype = ctypes.c_ulong
    return x11


# An X server whose last client has just left resets itself (Xorg and Xvfb without -noreset) and
# refuses connections meanwhile: on a bare kiosk server the show's own probe is that last client.
_OPEN_TRIES = (0.0, 0.05, 0.2, 0.5, 1.0)


def _open(x11: ctypes.CDLL, display: str | None) -> int | None:
    """A connection to ``display``, tried again through a server reset; None if it never opens."""
    for pause in _OPEN_TRIES:
        time.sleep(pause)
        dpy = x11.XOpenDisplay(display.encode() if display else None)
        if dpy:
            return dpy
    return None


def can_connect(display: str | None = None) -> bool | None:
    """True if the X server ``display`` (default ``$DISPLAY``) accepts a connection, False if
    not, None if libX11 is not installed and the question cannot be asked."""
    x11 = _xlib()
    if x11 is None:
        return None
    dpy = _open(x11, display)
    if not dpy:
        return False
    x11.XCloseDisplay(dpy)
    return True


@contextlib.contextmanager
def held(display: str | None = None) -> Iterator[bool | None]:
    """One connection to ``display`` kept open for the ``with`` block; yields what
    :func:`can_connect` would answer (True, False, or None without libX11).

    Open a window inside the block. A server whose last client leaves resets and refuses
    connections for a moment; were the show's probes the only clients, each one closing would
    start such a reset, and Qt's own connection, made right after, could land in it (Qt then
    aborts the process). Held until the window has connected, ours is never the last one."""
    x11 = _xlib()
    if x11 is None:
        yield None
        return
    dpy = _open(x11, display)
    try:
        yield bool(dpy)
    finally:
        if dpy:
            x11.XCloseDisplay(dpy)


def monitors(display: str | None = None) -> list[Rect] | None:
    """The active monitors of ``display`` (default ``$DISPLAY``), primary first; the whole X
    screen as one monitor when RandR is missing; None when the display cannot be opened."""
    x11 = _xlib()
    if x11 is None:
        return None
    dpy = _open(x11, display)
    if not dpy:
        return None
    try:
        screen = x11.XDefaultScreen(dpy)
        whole = [Rect(0, 0, x11.XDisplayWidth(dpy, screen), x11.XDisplayHeight(dpy, screen))]
        xrandr = _load("Xrandr")
        if xrandr is None:
            return whole
        xrandr.XRRGetMonitors.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        xrandr.XRRGetMonitors.restype = ctypes.POINTER(_MonitorInfo)
        xrandr.XRRFreeMonitors.argtypes = [ctypes.POINTER(_MonitorInfo)]
        count = ctypes.c_int(0)
        infos = xrandr.XRRGetMonitors(dpy, x11.XRootWindow(dpy, screen), 1, ctypes.byref(count))
        if not infos or count.value < 1:
            return whole
        try:
            found = [(not infos[i].primary, Rect(infos[i].x, infos[i].y, infos[i].width, infos[i].height)) for i in range(count.value)]
        finally:
            xrandr.XRRFreeMonitors(infos)
        # Primary first, then left to right, so monitor 0 is where the desktop's panel lives.
        return [rect for _, rect in sorted(found, key=lambda item: (item[0], item[1].x, item[1].y))]
    finally:
        x11.XCloseDisplay(dpy)
