"""Video files and still images as live sources.

A video plays in real time at its own frame rate (not as fast as it decodes), once or looping;
a still image is handed out again at a steady rate, so the loop sees a constant input as it
would see a camera pointed at a wall.

Decoding is bounded: a frame or picture above ``MAX_SOURCE_PIXELS`` (8K UHD) is refused before it
is decoded (its size read from the header), with a DataError that says what is allowed. A small
file can hold a huge picture (a 48 KB PNG of 20000×20000 pixels decodes to 1.2 GB), and a live
source is shrunk to the dream size every frame anyway. OpenCV's own decoder limit is set to the
same figure (``OPENCV_IO_MAX_IMAGE_PIXELS``) as a backstop.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from live.errors import DataError, InputError
from live.sources.base import Pacer, Source, Status, as_bgr

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".gif"}
)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"})
FALLBACK_FPS = 30.0
MAX_FILE_FPS = 240.0  # above this the container's rate is almost surely wrong (some write 1000 or 90000)
MAX_SOURCE_PIXELS = 7680 * 4320  # 8K UHD: more is never a camera, and costs a resize per frame
# OpenCV reads this when it first decodes an image (its default is 2^30 pixels, 3 GB of BGR)
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_SOURCE_PIXELS))


def check_source_size(what: str, width: int, height: int) -> None:
    """DataError if a ``width`` × ``height`` frame is larger than a source may be."""
    if width * height > MAX_SOURCE_PIXELS:
        raise _too_large(what, f"{width}x{height} ({width * height / 1e6:.0f} Mpx)")


def _too_large(what: str, size: str) -> DataError:
    return DataError(f"{what} is {size}; a source may be at most {MAX_SOURCE_PIXELS / 1e6:.0f} Mpx (7680x4320): "
                     "scale it down first, e.g. `ffmpeg -i IN -vf scale=1920:-2 OUT`")


def _header_size(path: Path) -> tuple[int, int] | None:
    """A still's size from its header alone (Pillow reads it without decoding), or None when
    Pillow does not know the format (OpenCV's own limit applies then). DataError for a picture
    so large that Pillow refuses even to open it."""
    import re
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise _too_large(f"image {path}", f"{int(pixels.group(1)) / 1e6:.0f} Mpx" if pixels else
                         "larger than Pillow opens") from None
    except Exception:  # noqa: BLE001 - a format Pillow does not know: OpenCV's own limit applies
        return None


class VideoFileSource(Source):
    """A video file played at its frame rate, looping (``loop=True``) or once, then "ended"."""

    def __init__(self, path: str | Path, *, loop: bool = True, fps: float | None = None) -> None:
        self.path = Path(path)
        super().__init__(f"video {self.path.name}")
        self.loop = loop
        self.fps = fps  # None: the file's own rate, read at start
        self._cap: cv2.VideoCapture | None = None
        self._first: np.ndarray | None = None
        self.position: float | None = None  # seconds into the clip of the frame shown last (its sound follows it)

    def describe(self) -> str:
        rate = f" @ {self.fps:g} fps" if self.fps else ""
        return f"video file {self.path}{rate}, {'looping' if self.loop else 'once'}"

    def _open_file(self) -> tuple[cv2.VideoCapture, np.ndarray | None]:
        cap = cv2.VideoCapture(str(self.path))
        if cap.isOpened():  # the container's frame size, before a frame is decoded
            try:
                check_source_size(f"video {self.path}", int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                                  int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            except DataError:
                cap.release()
                raise
        ok, image = cap.read() if cap.isOpened() else (False, None)
        return cap, (as_bgr(image) if ok and image is not None else None)

    def _open(self) -> None:
        if not self.path.is_file():
            raise InputError(f"video file {self.path} does not exist")
        self._cap, self._first = self._open_file()
        if self._first is None:
            self._cap.release()
            self._cap = None
            raise InputError(f"cannot read video file {self.path}: OpenCV could not decode a frame from it")
        if self.fps is None:
            rate = self._cap.get(cv2.CAP_PROP_FPS)
            if 0 < rate <= MAX_FILE_FPS:
                self.fps = rate
            else:
                log.warning("%s gives no usable frame rate (%g); playing at %g fps", self.path, rate, FALLBACK_FPS)
                self.fps = FALLBACK_FPS

    def _run(self) -> None:
        assert self._cap is not None and self.fps is not None
        pacer, image, shown = Pacer(self.fps), self._first, 0
        pass_start = 0
        while pacer.wait(self._stop):
            self._publish(image)
            self.position = (shown - pass_start) / self.fps
            shown += 1
            ok, image = self._cap.read()  # decode the next one while this one is shown
            if ok and image is not None:
                image = as_bgr(image)
                continue
            if not self.loop:
                log.info("%s ended after %d frames", self.path, shown)
                self._set_status(Status.ENDED, "video ended")
                return
            # reopen rather than seek to 0: seeking is unreliable in some containers and codecs
            self._cap.release()
            try:
                self._cap, image = self._open_file()
            except DataError as e:  # the file was replaced by one too large while it played
                log.error("%s", e)
                self._cap, image = None, None
            if image is None:
                log.error("%s could not be read again to loop it; stopping", self.path)
                self._set_status(Status.FAILED, f"{self.path.name} unreadable")
                return
            pass_start = shown
            log.debug("%s looped after %d frames", self.path, shown)

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageSource(Source):
    """A still image handed out ``fps`` times a second (the same read-only array each time)."""

    def __init__(self, path: str | Path, *, fps: float = 30.0) -> None:
        self.path = Path(path)
        super().__init__(f"image {self.path.name}")
        self.fps = fps
        self._image: np.ndarray | None = None

    def describe(self) -> str:
        size = f" ({self._image.shape[1]}x{self._image.shape[0]})" if self._image is not None else ""
        return f"image {self.path}{size}"

    def _open(self) -> None:
        if not self.path.is_file():
            raise InputError(f"image {self.path} does not exist")
        size = _header_size(self.path)
        if size is not None:
            check_source_size(f"image {self.path}", *size)
        # IMREAD_COLOR: grey, alpha and 16-bit pictures all come back as 8-bit BGR, EXIF-rotated
        image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"cannot read image {self.path}: OpenCV could not decode it")
        image.flags.writeable = False  # every frame shares this array
        self._image = image

    def _run(self) -> None:
        assert self._image is not None
        pacer = Pacer(self.fps)
        while pacer.wait(self._stop):
            self._publish(self._image)
