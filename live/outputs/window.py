"""A window for the projector or the desk: OpenCV HighGUI, optionally fullscreen on a chosen
monitor, with keys for the performer.

HighGUI is not thread-safe: open, send, poll and close from the frame loop's thread.
``send`` shows the frame and runs the GUI's event loop for one millisecond (``waitKeyEx(1)``),
which is also where key presses are collected; ``poll_keys`` hands them to the loop as named
actions. Closing the window (its close button, the window manager) switches this output off
and reports ``"window_closed"``; the other outputs go on.

Fullscreen on X11 is asked of the window manager, and also done by hand: the window is moved
to the monitor's origin and sized to cover it, so a kiosk X session without a window manager
still gets a full screen.

Letterboxing is done here, in black: each frame is padded to the window's own aspect ratio
before it is shown, and the window stretches what it gets (``WINDOW_FREERATIO``). Left to
itself, OpenCV's Qt window keeps the ratio by painting bars in the desktop palette's light
grey (239, 239, 239), which on a projector reads as a lit frame around the show.

The mouse pointer: OpenCV has no call to hide it, and this module does not pretend to. On X11
run ``unclutter -idle 0.5`` beside the show (it hides an idle pointer), or park the pointer
on another monitor; ``hide_cursor=True`` logs that advice once at open.
"""

from __future__ import annotations

import logging
import os
import sys

import cv2
import numpy as np

from live.errors import UnavailableError, UsageError
from live.outputs import x11
from live.outputs.base import Output
from live.placeholder import placeholder_frame

log = logging.getLogger(__name__)

NO_WINDOW = "--no-window"

# Arrow keys come back from waitKeyEx as platform key codes: X11 keysyms (Qt and GTK on
# Linux), Qt key codes, Windows virtual keys shifted by 16 bits, and macOS function keys.
_LEFT = (0xFF51, 0x01000012, 0x250000, 0xF702)
_RIGHT = (0xFF53, 0x01000014, 0x270000, 0xF703)

KEYMAP: dict[int, str] = {
    27: "quit",  # Esc
    32: "freeze",  # space
    **{code: "prev_layer" for code in _LEFT},
    **{code: "next_layer" for code in _RIGHT},
}
for _letter, _action in {"q": "quit", "f": "fullscreen", "n": "next_layer", "p": "prev_layer", "s": "screenshot", "o": "overlay",
                        "t": "tap"}.items():
    # Caps Lock or Shift must not make a key dead on stage; Qt also reports letters in upper case.
    KEYMAP[ord(_letter)] = KEYMAP[ord(_letter.upper())] = _action

ACTIONS = ("quit", "fullscreen", "next_layer", "prev_layer", "freeze", "screenshot", "overlay", "tap", "window_closed")
"""Every action ``poll_keys`` can return."""


def key_action(code: int) -> str | None:
    """The action for a ``cv2.waitKeyEx`` code, or None for no key (-1) and unmapped keys."""
    if code < 0:
        return None
    action = KEYMAP.get(code)
    if action is None and code > 0xFFFF:
        # GTK and Qt may add modifier flags (Num Lock, Shift) above the key's own bits.
        action = KEYMAP.get(code & 0xFFFF)
    return action


def letterbox_size(width: int, height: int, window_width: int, window_height: int) -> tuple[int, int]:
    """The smallest canvas holding a ``width``×``height`` frame at the window's aspect ratio: the
    frame's own size when the ratios agree to within a pixel, else wider or taller by the bars."""
    if window_width * height > window_height * width:  # window wider than the frame: bars left and right
        canvas = (round(height * window_width / window_height), height)
    else:
        canvas = (width, round(width * window_height / window_width))
    if abs(canvas[0] - width) <= 1 and abs(canvas[1] - height) <= 1:
        return width, height
    return canvas


class WindowOutput(Output):
    """An OpenCV window showing the dream.

    ``monitor`` is an index into the X11 monitors (primary first, then left to right);
    ``position`` places the window's top-left corner instead where monitors cannot be listed.
    ``fullscreen`` starts covering that monitor; the ``f`` key toggles it.
    """

    def __init__(
        self,
        title: str = "deepdream-live",
        fullscreen: bool = False,
        monitor: int | None = None,
        position: tuple[int, int] | None = None,
        hide_cursor: bool = False,
    ) -> None:
        super().__init__("window")
        self.title = title
        self.fullscreen = fullscreen
        self.monitor = monitor
        self.position = position
        self.hide_cursor = hide_cursor
        self._open = False
        self._shown = False
        self._pumped = False
        self._actions: list[str] = []
        self._frame_size = (0, 0)
        self._rect: x11.Rect | None = None
        self._placeholder: tuple[str, np.ndarray] | None = None
        self._canvas: np.ndarray | None = None  # black, the window's aspect; reused frame to frame

    def open(self, width: int, height: int, fps: float) -> None:
        """Create the window. Raises UnavailableError when there is no display to show it on,
        UsageError for a monitor that does not exist."""
        if sys.platform.startswith("linux"):
            display = os.environ.get("DISPLAY")
            if not display:
                raise UnavailableError(f"no display: set DISPLAY or run headless with {NO_WINDOW}")
            # Held until Qt has connected: our probes must not leave the server without clients
            # (it resets, and Qt aborts on a refused connection). See x11.held.
            with x11.held(display) as reachable:
                # Qt aborts the process on an unreachable display; ask first, while we can explain.
                if reachable is False:
                    raise UnavailableError(f"cannot connect to display {display}: is the X server running and may this user use it? Or run headless with {NO_WINDOW}")
                self._create(width, height, x11.monitors(display))
        else:
            self._create(width, height, None)
        if self.hide_cursor:
            log.info("the window cannot hide the mouse pointer (OpenCV has no way to); on X11 run 'unclutter -idle 0.5' or park the pointer on another monitor")
        log.info("window %r open%s", self.title, " fullscreen" if self.fullscreen else "")

    def _create(self, width: int, height: int, rects: list[x11.Rect] | None) -> None:
        if self.monitor is not None:
            if rects is None:
                raise UsageError("monitors cannot be listed on this system; place the window with a position instead")
            if not 0 <= self.monitor < len(rects):
                listing = ", ".join(f"{i}: {r.width}x{r.height}+{r.x}+{r.y}" for i, r in enumerate(rects))
                raise UsageError(f"no monitor {self.monitor}; monitors are {listing}")
            self._rect = rects[self.monitor]
        elif rects:
            self._rect = rects[0]
        self._frame_size = (width, height)
        # GUI_NORMAL: no Qt toolbar or status bar over the projection. FREERATIO: the window fills
        # itself with the frame, which letterbox() has already padded to its aspect, in black.
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_FREERATIO | cv2.WINDOW_GUI_NORMAL)
        self._open = True
        self._place_normal()
        if self.fullscreen:
            self._set_fullscreen(True)

    def _origin(self) -> tuple[int, int] | None:
        if self.position is not None:
            return self.position
        if self.monitor is not None and self._rect is not None:
            return (self._rect.x, self._rect.y)
        return None

    def _place_normal(self) -> None:
        width, height = self._frame_size
        if self._rect is not None:
            # A frame larger than the monitor would hang off it; shrink, keeping the aspect.
            scale = min(1.0, self._rect.width / width, self._rect.height / height)
            width, height = int(width * scale), int(height * scale)
        cv2.resizeWindow(self.title, width, height)
        origin = self._origin()
        if origin is not None:
            cv2.moveWindow(self.title, *origin)

    def _set_fullscreen(self, on: bool) -> None:
        if on:
            if self._rect is not None:
                # Without a window manager the fullscreen request below does nothing.
                cv2.moveWindow(self.title, self._rect.x, self._rect.y)
                cv2.resizeWindow(self.title, self._rect.width, self._rect.height)
            cv2.setWindowProperty(self.title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
        else:
            cv2.setWindowProperty(self.title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_NORMAL)
            self._place_normal()
        self.fullscreen = on

    def toggle_fullscreen(self) -> None:
        """Switch between fullscreen on the monitor and a frame-sized window."""
        if self._open:
            self._set_fullscreen(not self.fullscreen)

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Show ``frame`` and collect key presses; nothing once the user closed the window
        (showing again would reopen it)."""
        if not self._open or self._closed_by_user():
            return
        cv2.imshow(self.title, self._letterboxed(frame))
        self._shown = True
        self._pump()
        self.sent += 1

    def send_placeholder(self, text: str) -> None:
        """Show a dark frame with ``text`` while no dream is ready; keeps the window responsive."""
        if not self._open or self._closed_by_user():
            return
        if self._placeholder is None or self._placeholder[0] != text:
            self._placeholder = (text, placeholder_frame(*self._frame_size, text))
        cv2.imshow(self.title, self._letterboxed(self._placeholder[1]))
        self._shown = True
        self._pump()

    def _window_size(self) -> tuple[int, int] | None:
        """The size of the window's picture area now, or the monitor's when fullscreen and the
        window cannot say (yet); None when neither is known."""
        try:
            _, _, w, h = cv2.getWindowImageRect(self.title)
        except cv2.error:
            w = h = 0
        if w > 0 and h > 0:
            return w, h
        if self.fullscreen and self._rect is not None:
            return self._rect.width, self._rect.height
        return None

    def _letterboxed(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` centred on black bars that give it the window's aspect ratio (the frame
        itself when the aspects already match, or the window's size is unknown)."""
        size = self._window_size()
        if size is None:
            return frame
        canvas_size = letterbox_size(frame.shape[1], frame.shape[0], *size)
        if canvas_size == (frame.shape[1], frame.shape[0]):
            return frame
        cw, ch = canvas_size
        shape = (ch, cw, *frame.shape[2:])
        if self._canvas is None or self._canvas.shape != shape or self._canvas.dtype != frame.dtype:
            self._canvas = np.zeros(shape, frame.dtype)
        x, y = (cw - frame.shape[1]) // 2, (ch - frame.shape[0]) // 2
        self._canvas[y : y + frame.shape[0], x : x + frame.shape[1]] = frame
        return self._canvas

    def _pump(self) -> None:
        self._pumped = True
        action = key_action(cv2.waitKeyEx(1))
        if action == "fullscreen":
            # A window concern: handled here; the loop sees the action only for its log.
            self.toggle_fullscreen()
        if action is not None:
            self._actions.append(action)
        self._closed_by_user()

    def _closed_by_user(self) -> bool:
        # Checked before every imshow too: showing into a closed window would reopen it.
        if not self.healthy:
            return True
        if not self._shown:
            return False
        try:
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:  # Qt raises once its last window is gone
            visible = False
        if not visible:
            self.failure = "window closed by the user"
            self._actions.append("window_closed")
        return not visible

    def poll_keys(self) -> list[str]:
        """Actions from keys pressed since the last call (see ``ACTIONS``), oldest first."""
        if self._open and self.healthy and not self._pumped:
            self._pump()  # no frame since the last poll: keep the GUI alive anyway
        self._pumped = False
        actions, self._actions = self._actions, []
        return actions

    def close(self) -> None:
        """Destroy the window (if the user has not already)."""
        if not self._open:
            return
        self._open = False
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)  # let the GUI process the destroy, or the window lingers on screen
        except cv2.error:
            pass
