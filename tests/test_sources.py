"""Frame sources: real video files and photographs, the test scene, and cameras up to OpenCV's
``VideoCapture`` boundary (a fake stands in for the device: no camera here)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from live.errors import InputError
from live.sources import (
    CaptureSource,
    Frame,
    ImageSource,
    Source,
    Status,
    TestSceneSource,
    VideoFileSource,
    capture,
    open_source,
)
from live.sources.testscene import test_scene as draw_scene
from tests.conftest import photo_path
from tests.streaming import wait_for

W, H = 96, 64


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Every source a test starts has its thread gone once the test has closed it."""
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("source:")]
    assert not left, f"source threads still running: {left}"


def frames_until(source: Source, done: Callable[[list[Frame]], bool], timeout: float = 30.0) -> list[Frame]:
    """Every frame ``latest()`` hands out until ``done(frames so far)`` holds, then what is left
    in the slot (a video that ended leaves its last frame there). How many arrive in a given
    time is up to the machine; what they are is not."""
    frames: list[Frame] = []
    end = time.monotonic() + timeout
    while not done(frames):
        assert time.monotonic() < end, f"{source.describe()}: not done within {timeout} s, {len(frames)} frames"
        frame = source.latest(timeout=0.02)
        if frame is not None:
            frames.append(frame)
    while (frame := source.latest()) is not None:
        frames.append(frame)
    return frames


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, as OpenCV decodes it."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return frames


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A real 30-frame mp4 (mp4v) of the test scene at 60 fps: half a second of video."""
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 60.0, (W, H))
    assert writer.isOpened(), "this OpenCV build cannot write mp4v"
    for i in range(30):
        writer.write(cv2.cvtColor(draw_scene(W, H, i / 6), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


# -- video files -------------------------------------------------------------------------------


def test_video_file_plays_in_real_time_then_ends(clip: Path) -> None:
    expected = decoded(clip)
    began = time.monotonic()
    with VideoFileSource(clip, loop=False) as src:
        assert src.fps == pytest.approx(60.0)
        frames = frames_until(src, lambda _: src.status == "ended")
        assert src.latest(timeout=0.1) is None  # nothing more comes once it has ended
    assert src.captured == len(expected) == 30  # every frame of the file once, then the end
    assert len(frames) + src.dropped == 30  # each one either taken or (a busy reader) dropped, never lost
    assert frames[-1].sequence == 30
    assert not any(f.placeholder for f in frames)
    for f in frames:  # the file's own frames, in order: frame n is the n-th picture of the file
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        np.testing.assert_array_equal(f.image, expected[f.sequence - 1])
    # Paced at the file's 60 fps, not as fast as it decodes: the 30th frame comes 29/60 s after the
    # first at the earliest (a busy machine only makes it later).
    assert frames[-1].timestamp - began >= 29 / 60 - 1e-6
    assert np.abs(frames[-1].image.astype(int) - expected[0].astype(int)).mean() > 5  # it moves


def test_video_file_loops_past_its_end(clip: Path) -> None:
    expected = decoded(clip)
    with VideoFileSource(clip, loop=True) as src:
        frames = frames_until(src, lambda got: bool(got) and got[-1].sequence > 45)  # the clip has 30 frames
        assert src.status == "live"
        assert src.captured > 45
    # the loop starts the picture over: frame 31 is the file's first picture again, and so on
    for f in frames:
        np.testing.assert_array_equal(f.image, expected[(f.sequence - 1) % 30])


def test_unreadable_video_file_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(InputError, match="cannot read video file .*broken.mp4"):
        open_source(str(bad)).start()


# -- still images and the test scene -------------------------------------------------------------


def test_image_source_repeats_a_real_photograph() -> None:
    path = photo_path("coffee.png")
    expected = cv2.imread(str(path))
    began = time.monotonic()
    with open_source(str(path), fps=50) as src:
        assert isinstance(src, ImageSource)
        frames = frames_until(src, lambda got: len(got) >= 8)  # handed out again and again, like a camera
        made, elapsed = src.captured, time.monotonic() - began
    assert made <= 50 * elapsed + 1  # paced at its 50 fps, never faster (a busy machine only makes fewer)
    assert [f.sequence for f in frames] == sorted({f.sequence for f in frames})
    for f in frames:
        assert f.image.shape == (400, 600, 3)
        np.testing.assert_array_equal(f.image, expected)  # BGR, as OpenCV reads it


def test_test_scene_moves_and_is_bgr() -> None:
    with TestSceneSource(W, H, fps=30) as src:
        first = src.latest(timeout=30.0)
        assert first is not None
        later = frames_until(src, lambda got: bool(got) and got[-1].timestamp - first.timestamp >= 0.3)[-1]
    assert first.image.shape == later.image.shape == (H, W, 3)
    assert later.timestamp - first.timestamp >= 0.3
    assert np.abs(first.image.astype(int) - later.image.astype(int)).mean() > 2  # 0.3 s of scene time apart
    # BGR: the sky at the top is blue over red in the scene, at any time (moving shapes stay below it)
    top = first.image[:6].astype(int)
    assert (top[..., 0] - top[..., 2] > 40).all()
    # and the picture is the scene drawn in RGB, channels reversed (it has moved since t=0 by however
    # long the machine took to hand it over, so compare which order fits better)
    scene = draw_scene(W, H, 0.0).astype(int)
    assert np.abs(first.image[..., ::-1] - scene).mean() < 0.7 * np.abs(first.image - scene).mean()


# -- cameras, through a fake VideoCapture ----------------------------------------------------------


class FakeCamera:
    """Stands in for an opened ``cv2.VideoCapture``: numbered frames (the count is written into
    the pixels), a read every ``period`` seconds, and reads that fail after ``fail_after``."""

    def __init__(self, period: float = 0.0, fail_after: int | None = None) -> None:
        self.period, self.fail_after, self.reads, self.released = period, fail_after, 0, False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return not self.released

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.period:
            time.sleep(self.period)
        if self.released or (self.fail_after is not None and self.reads >= self.fail_after):
            return False, None
        self.reads += 1
        image = np.zeros((H, W, 3), np.uint8)
        image[0, :4] = np.frombuffer(self.reads.to_bytes(4, "little"), np.uint8)[:, None]
        return True, image

    def release(self) -> None:
        self.released = True


def number_in(frame: Frame) -> int:
    return int.from_bytes(bytes(frame.image[0, :4, 0]), "little")


class Unplugged:
    """A closed capture, as ``cv2.VideoCapture`` returns for a camera that is not there."""

    def isOpened(self) -> bool:  # noqa: N802
        return False

    def release(self) -> None:
        pass


class GatedCamera(FakeCamera):
    """A camera whose reads wait for the test: ``allow(n)`` lets ``n`` more frames through (a
    sensor that delivers exactly when told), ``free()`` lets it run on its own."""

    def __init__(self) -> None:
        super().__init__(period=0.001)
        self._permits = threading.Semaphore(0)
        self._free = threading.Event()

    def allow(self, n: int) -> None:
        self._permits.release(n)

    def free(self) -> None:
        self._free.set()

    def read(self) -> tuple[bool, np.ndarray | None]:
        while not self._free.is_set() and not self._permits.acquire(timeout=0.05):
            pass
        return super().read()


def test_latest_is_always_the_newest_frame_never_a_backlog() -> None:
    camera = GatedCamera()
    with CaptureSource(lambda: camera, name="fast camera") as src:
        try:
            made = 0
            for taken, burst in enumerate((1, 7, 30, 2), start=1):  # frames made while the loop is busy elsewhere
                before = time.monotonic()
                camera.allow(burst)
                made += burst
                assert wait_for(lambda made=made: src.captured == made, 30, step=0.005)
                frame = src.latest()
                assert frame is not None and frame.sequence == made  # the newest, whatever came before it
                assert number_in(frame) == made  # the picture is the frame its number says
                assert frame.timestamp >= before  # read in this burst, not aged in a queue
                assert src.latest() is None  # straight after: no older frame is waiting behind it
                assert src.dropped == made - taken  # the frames in between were dropped, and counted
        finally:
            camera.free()


class PluggableCamera(FakeCamera):
    """A camera on a cable the test plugs and unplugs: reads fail while ``plugged`` is clear."""

    def __init__(self, plugged: threading.Event) -> None:
        super().__init__(period=0.01)
        self.plugged = plugged

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.plugged.is_set():
            time.sleep(self.period)
            return False, None
        return super().read()


def test_camera_lost_shows_placeholders_then_recovers(caplog: pytest.LogCaptureFixture) -> None:
    plugged = threading.Event()
    plugged.set()
    opened: list[PluggableCamera] = []

    def opener() -> PluggableCamera | Unplugged:
        if not plugged.is_set():
            return Unplugged()  # reopening fails while the camera is away
        opened.append(PluggableCamera(plugged))
        return opened[-1]

    caplog.set_level(logging.INFO, logger="live.sources")
    src = CaptureSource(opener, name="camera 7", retry_initial=0.02, retry_max=0.08, placeholder_fps=50)
    statuses: list[str] = []
    frames: list[Frame] = []

    def poll_until(done: Callable[[], bool]) -> None:
        end = time.monotonic() + 60
        while not done():
            assert time.monotonic() < end, f"not within 60 s: statuses {statuses[-3:]}, {len(frames)} frames"
            frame = src.latest(timeout=0.02)
            statuses.append(src.status)
            if frame is not None:
                frames.append(frame)

    def count(placeholder: bool) -> int:
        return sum(1 for f in frames if f.placeholder is placeholder)

    with src:
        statuses.append(src.status)
        poll_until(lambda: count(False) >= 5)  # the show runs on the camera
        plugged.clear()  # the cable is pulled
        poll_until(lambda: count(True) >= 5)  # the loop still gets pictures: placeholders
        plugged.set()  # and plugged back in
        poll_until(lambda: frames[-1].placeholder is False)
        real_before = sum(1 for f in frames if not f.placeholder)
        poll_until(lambda: count(False) >= real_before + 5)
    assert len(opened) == 2 and opened[0].released  # the lost capture was released before reopening

    kinds = [f.placeholder for f in frames]
    first_placeholder = kinds.index(True)
    last_placeholder = len(kinds) - 1 - kinds[::-1].index(True)
    assert not any(kinds[:first_placeholder]) and not any(kinds[last_placeholder + 1 :])  # real, stand-in, real
    placeholders = frames[first_placeholder : last_placeholder + 1]
    assert all(f.placeholder for f in placeholders)
    assert all(f.image.shape == (H, W, 3) for f in frames)  # the placeholder keeps the camera's size
    assert placeholders[0].image.mean() < 60 and placeholders[0].image.max() > 150  # dark, with lettering
    outage = placeholders[-1].timestamp - placeholders[0].timestamp
    # at most placeholder_fps of them (each stamped when handed out), not one per poll
    assert len(placeholders) <= 50 * outage + 1 + 1e-6
    assert src.status == "closed"

    seen = [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]
    assert seen == ["live", "reconnecting", "live"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("camera 7 lost" in m for m in messages) == 1  # said once, not at every retry
    assert any("camera 7 is back after" in m for m in messages)


def test_camera_that_is_not_there_says_how_to_find_one(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def video_capture(*args: object) -> Unplugged:
        calls.append(args)
        return Unplugged()

    monkeypatch.setattr(capture.cv2, "VideoCapture", video_capture)
    src = open_source("0")
    with pytest.raises(InputError) as err:
        src.start()
    assert "no camera at index 0" in str(err.value) and "plugged in" in str(err.value)
    if sys.platform.startswith("linux"):
        assert "v4l2-ctl --list-devices" in str(err.value)
        assert calls == [(0, cv2.CAP_V4L2)]
    assert src.status == "idle"


class RecordingCapture(FakeCamera):
    """An opened fake that remembers what it was asked for."""

    def __init__(self, *args: object) -> None:
        super().__init__(period=0.005)
        self.args, self.props = args, {}

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return float(self.props.get(prop, 0))


def test_camera_is_asked_for_mjpg_size_and_rate(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    made: list[RecordingCapture] = []
    monkeypatch.setattr(capture.cv2, "VideoCapture", lambda *a: made.append(RecordingCapture(*a)) or made[-1])
    caplog.set_level(logging.INFO, logger="live.sources")
    with open_source("/dev/video3", 1280, 720, 25) as src:
        assert src.latest(timeout=30.0) is not None
        assert src.describe() == "camera /dev/video3"
    (cam,) = made
    assert cam.args[0] == "/dev/video3"
    assert cam.props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter_fourcc(*"MJPG")
    assert (cam.props[cv2.CAP_PROP_FRAME_WIDTH], cam.props[cv2.CAP_PROP_FRAME_HEIGHT]) == (1280, 720)
    assert cam.props[cv2.CAP_PROP_FPS] == 25
    assert any("got 1280x720 @ 25 fps MJPG" in r.getMessage() for r in caplog.records)  # what the camera gave


def test_stream_goes_through_ffmpeg_with_timeouts_and_hides_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[RecordingCapture] = []
    monkeypatch.setattr(capture.cv2, "VideoCapture", lambda *a: made.append(RecordingCapture(*a)) or made[-1])
    url = "rtsp://admin:hunter2@cam.local:554/live"
    with open_source(url) as src:
        assert isinstance(src, CaptureSource)
        assert src.latest(timeout=30.0) is not None
        assert "hunter2" not in src.describe() and "cam.local:554/live" in src.describe()
    (cam,) = made
    assert cam.args[0] == url and cam.args[1] == cv2.CAP_FFMPEG
    assert cv2.CAP_PROP_READ_TIMEOUT_MSEC in cam.args[2]  # a silent server cannot hang the reader


def test_unreachable_stream_is_an_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture.cv2, "VideoCapture", lambda *a: Unplugged())
    with pytest.raises(InputError, match=r"cannot open stream http://10\.0\.0\.9/video"):
        open_source("http://10.0.0.9/video").start()


# -- what a spec names ---------------------------------------------------------------------------


def test_open_source_dispatch(clip: Path, tmp_path: Path) -> None:
    picture = tmp_path / "still.JPG"
    cv2.imwrite(str(picture), np.zeros((8, 8, 3), np.uint8))
    assert isinstance(open_source("test"), TestSceneSource)
    assert isinstance(open_source("test-scene", 320, 180, 15), TestSceneSource)
    assert open_source("test-scene", 320, 180, 15).describe() == "test scene 320x180 @ 15 fps"
    for spec, name in [("0", "camera 0"), ("2", "camera 2"), ("/dev/video1", "camera /dev/video1")]:
        src = open_source(spec)
        assert isinstance(src, CaptureSource) and src.describe() == name
    for url in ["rtsp://cam.local/stream", "http://cam.local/mjpg", "https://example.org/live.m3u8"]:
        src = open_source(url)
        assert isinstance(src, CaptureSource) and src.describe() == f"stream {url}"
    video = open_source(str(clip), loop=False)
    assert isinstance(video, VideoFileSource) and not video.loop
    assert isinstance(open_source(str(picture)), ImageSource)  # extensions in any case
    assert all(open_source(s).status == "idle" for s in ["test", "0", str(clip)])  # nothing opened yet


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("no/such/clip.mp4", "'no/such/clip.mp4': no such file"),
        ("webcam", "'webcam': no such file"),
        ("ftp://host/file.mp4", "unsupported URL scheme 'ftp'"),
        ("", "no source given"),
    ],
)
def test_open_source_errors_name_the_input_and_what_is_accepted(spec: str, says: str) -> None:
    with pytest.raises(InputError) as err:
        open_source(spec)
    message = str(err.value)
    assert says in message
    for accepted in ["camera index", "/dev/video0", "rtsp://", ".mp4", ".png", "test-scene"]:
        assert accepted in message


def test_open_source_rejects_files_of_other_kinds(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(InputError, match="notes.txt.*neither a video nor an image"):
        open_source(str(notes))
    with pytest.raises(InputError, match="is a directory"):
        open_source(str(tmp_path))


def test_corrupt_image_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(InputError, match="cannot read image .*broken.png"):
        open_source(str(bad)).start()


# -- lifecycle -----------------------------------------------------------------------------------


def test_close_stops_every_thread(clip: Path) -> None:
    def source_threads() -> list[str]:
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("source:"))

    assert source_threads() == []
    sources = [
        TestSceneSource(W, H, 30),
        VideoFileSource(clip),
        ImageSource(photo_path("coffee.png")),
        CaptureSource(lambda: FakeCamera(period=0.001), name="fake"),
        CaptureSource(lambda: FakeCamera(fail_after=0), name="dead", retry_initial=0.05),  # stuck reconnecting
    ]
    for src in sources:
        src.start()
    assert source_threads() == sorted(f"source: {src.name}" for src in sources)  # one thread each
    assert wait_for(lambda: sources[-1].status == "reconnecting", 30, step=0.01)
    for src in sources:
        src.close()
        src.close()  # twice is harmless
        assert src.status == Status.CLOSED
        assert src.latest() is None
    assert source_threads() == []


def test_unexpected_error_in_a_source_is_logged_and_marks_it_failed(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeCamera):
        def read(self) -> tuple[bool, np.ndarray | None]:
            raise ZeroDivisionError("driver bug")

    with CaptureSource(lambda: Broken(), name="odd camera") as src:
        assert wait_for(lambda: src.status == "failed", 30, step=0.01)
        assert src.latest() is None
    assert any("odd camera stopped on an unexpected error" in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_source_too_large_to_decode_is_refused_from_its_header(tmp_path: Path) -> None:
    """A still's size is read from its header before OpenCV decodes it; OpenCV's own decoder limit is
    set to the same figure as a backstop."""
    import os

    from live.errors import DataError
    from live.sources.files import MAX_SOURCE_PIXELS, check_source_size
    from tests.conftest import png_header

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(20000, 20000))  # 48 bytes that would decode to 1.2 GB of BGR
    with pytest.raises(DataError, match=r"bomb.png is 400 Mpx; a source may be at most 33 Mpx"):
        ImageSource(bomb).start()
    big = tmp_path / "big.png"
    big.write_bytes(png_header(9000, 5000))  # 45 Mpx: under Pillow's own limits, over a source's
    with pytest.raises(DataError, match=r"big.png is 9000x5000 \(45 Mpx\)"):
        ImageSource(big).start()
    assert os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] == str(MAX_SOURCE_PIXELS)
    check_source_size("an 8K frame", 7680, 4320)  # 8K UHD itself is fine
    with pytest.raises(DataError, match="scale it down first"):
        check_source_size("video x.mp4", 7681, 4320)
