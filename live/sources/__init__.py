"""Where frames come from: cameras, files, streams and the built-in test scene.

``open_source(spec)`` turns what the operator typed into a ``Source``; ``start()`` it (or use it
as a context manager) and take ``latest()`` frames from it. See ``base`` for the contract.
"""

from __future__ import annotations

import re
from pathlib import Path

from live.errors import InputError
from live.sources.base import Frame, Source, Status
from live.sources.capture import STREAM_SCHEMES, CaptureSource, camera_source, redact, stream_source
from live.sources.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, ImageSource, VideoFileSource
from live.sources.testscene import TestSceneSource

__all__ = [
    "CaptureSource",
    "Frame",
    "ImageSource",
    "Source",
    "Status",
    "TestSceneSource",
    "VideoFileSource",
    "SPEC_HELP",
    "camera_source",
    "open_source",
    "stream_source",
]

TEST_SCENE_SPECS = ("test", "test-scene")
SPEC_HELP = (
    "a camera index (0) or device (/dev/video0), an rtsp:// or http(s):// stream URL, "
    f"a video file ({', '.join(sorted(VIDEO_EXTENSIONS))}), "
    f"an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) or 'test-scene'"
)


def open_source(spec: str, width: int = 1280, height: int = 720, fps: float = 30.0, *, loop: bool = True) -> Source:
    """The source ``spec`` names, not yet started; ``InputError`` if it names nothing usable.

    ``width``, ``height`` and ``fps`` are what a camera is asked for and what the test scene
    draws; files keep their own size (and videos their own rate). ``loop`` applies to videos.
    Opening the input happens in ``start()``, which raises ``InputError`` if, for example, no
    camera is plugged in at that index.
    """
    text = spec.strip()
    if text.lower() in TEST_SCENE_SPECS:
        return TestSceneSource(width, height, fps)
    if text.isdigit():
        return camera_source(int(text), width, height, fps)
    if re.fullmatch(r"/dev/video\d+", text) or text.startswith("/dev/v4l/"):
        return camera_source(text, width, height, fps)
    scheme = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*)://", text)
    if scheme:
        if scheme.group(1).lower() in STREAM_SCHEMES:
            return stream_source(text, width, height)
        raise InputError(
            f"source {redact(text)!r}: unsupported URL scheme {scheme.group(1)!r}; a source is {SPEC_HELP}"
        )
    if not text:
        raise InputError(f"no source given; a source is {SPEC_HELP}")
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(f"source {spec!r}: no such file; a source is {SPEC_HELP}")
    if path.is_dir():
        raise InputError(f"source {spec!r} is a directory; a source is {SPEC_HELP}")
    if suffix in VIDEO_EXTENSIONS:
        return VideoFileSource(path, loop=loop)
    if suffix in IMAGE_EXTENSIONS:
        return ImageSource(path, fps=fps)
    kind = suffix or "no extension"
    raise InputError(f"source {spec!r}: {kind} is neither a video nor an image type; a source is {SPEC_HELP}")
