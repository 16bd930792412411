"""The web page's live preview: an output that keeps the newest frame, encoded off the loop.

:class:`PreviewOutput` sits in the show's :class:`~live.outputs.Fanout` like any other output.
Its :meth:`~PreviewOutput.send` costs the frame loop one reference assignment: no copy, no
resize, no encode. The web server's own threads take :meth:`~PreviewOutput.latest` at the
preview's rate (at most ``PREVIEW_FPS``, only while a page watches) and turn it into a small
JPEG with :func:`encode_jpeg`; frames that came and went in between are simply never looked at
(docs/architecture.md, *The web page*).

Frames are not copied because the loop never writes to a frame after sending it (each frame
is a new array: a download, a resize, a placeholder); OpenCV releases the GIL while it resizes
and encodes, so the encoder thread does not hold up the loop's Python work either.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from live.outputs.base import Output
from live.placeholder import placeholder_frame

log = logging.getLogger(__name__)

PREVIEW_WIDTH = 640  # px: enough to judge a look on a phone, a fraction of a 1080p frame's pixels
PREVIEW_FPS = 15.0  # at most; a slow client gets fewer (one frame in flight per client)
JPEG_QUALITY = 70


class PreviewOutput(Output):
    """Keeps the newest output frame for the web page's preview and screenshot.

    ``latest()`` returns ``(number, frame)``; the number grows with every frame sent, so a
    reader can tell a new frame from one it has seen. Thread-safe without a lock: the pair is
    published with one reference assignment.
    """

    def __init__(self, name: str = "web preview") -> None:
        super().__init__(name)
        self._latest: tuple[int, np.ndarray | None] = (0, None)
        self._placeholder: tuple[str, np.ndarray] | None = None
        self.size: tuple[int, int] = (0, 0)

    def open(self, width: int, height: int, fps: float) -> None:
        self.size = (width, height)

    def send(self, frame: np.ndarray) -> None:
        self.sent += 1
        self._latest = (self.sent, frame)

    def send_placeholder(self, text: str) -> None:
        # called several times a second while the network loads: draw each text once
        if self._placeholder is None or self._placeholder[0] != text:
            # at the preview's own width, so the words stay readable whatever the output's size
            w, h = self.size if all(self.size) else (16, 9)
            w, h = PREVIEW_WIDTH, max(2, round(PREVIEW_WIDTH * h / w))
            self._placeholder = (text, placeholder_frame(w, h, text))
            self._latest = (self._latest[0] + 1, self._placeholder[1])

    def latest(self) -> tuple[int, np.ndarray | None]:
        """``(number, frame)`` of the newest frame, ``(0, None)`` before the first."""
        return self._latest

    def close(self) -> None:
        self._latest = (self._latest[0], None)

    def summary(self) -> str:
        return f"{self.name}: {self.sent} frames offered"


def encode_jpeg(frame: np.ndarray, max_width: int = PREVIEW_WIDTH, quality: int = JPEG_QUALITY) -> bytes:
    """``frame`` (BGR uint8) as a JPEG at most ``max_width`` wide, keeping its aspect."""
    h, w = frame.shape[:2]
    if w > max_width:
        frame = cv2.resize(frame, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a {w}x{h} frame")
    return data.tobytes()


def encode_png(frame: np.ndarray) -> bytes:
    """``frame`` (BGR uint8) as a full-size PNG, for the page's screenshot download."""
    ok, data = cv2.imencode(".png", frame)
    if not ok:
        raise ValueError(f"PNG encoding failed for a {frame.shape[1]}x{frame.shape[0]} frame")
    return data.tobytes()
