"""Outputs as a user meets them: recordings that play back, a virtual camera that call apps
see (through pyvirtualcam's own backend registry), a window on a real (virtual) X server, and
a fan-out that keeps the show going when one output fails."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from live.errors import OutputError, UnavailableError, UsageError
from live.outputs import ACTIONS, Fanout, NullOutput, Output, RecorderOutput, VirtualCamOutput, WindowOutput, key_action
from live.outputs import x11
from tests.conftest import FakeLoopback
from tests.streaming import wait_for
from tests.xvfb import XVFB, running_xvfb

W, H = 320, 180


def moving_pattern(i: int, width: int = W, height: int = H) -> np.ndarray:
    """A smooth colour gradient with a bright square that moves 4 px per frame."""
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 96)], axis=-1).astype(np.uint8)
    x = (4 * i) % (width - 40)
    frame[60:100, x : x + 40] = 255
    return frame


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open as a video"
    declared = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, declared


def recorder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("recorder:")]


# --- recorder ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_recording_plays_back_as_sent(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"show{suffix}"
    sent = [moving_pattern(i) for i in range(60)]
    with RecorderOutput(path) as rec:
        rec.open(W, H, 30)
        for i, frame in enumerate(sent):
            rec.send(frame)
            # this test is about playback, not drops: each frame is written before the next is sent
            assert wait_for(lambda n=i + 1: rec.written == n, 30, step=0.002)
    assert not recorder_threads()
    assert rec.sent == 60 and rec.dropped == 0 and rec.written == 60

    frames, declared = read_video(path)
    assert abs(len(frames) - 60) <= 1
    assert abs(declared - 60) <= 1
    assert frames[0].shape == (H, W, 3)
    for i in (0, 17, 30, 45, len(frames) - 1):
        err = np.abs(frames[i].astype(int) - sent[i]).mean()
        assert err < 8, f"frame {i} differs by {err:.1f} grey levels on average"
        # In order: frame i looks like what was sent as frame i, not as a neighbour.
        other = sent[(i + 10) % 60]
        assert err < np.abs(frames[i].astype(int) - other).mean()


class StalledWriter:
    """A real VideoWriter whose ``write`` waits until ``resume`` is set, like a disk or an encoder
    that stalls: however fast or slow the machine, the writer is behind for as long as the test says."""

    real = cv2.VideoWriter
    resume = threading.Event()

    def __init__(self, *args: object) -> None:
        self._w = self.real(*args)

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self._w.isOpened()

    def write(self, frame: np.ndarray) -> None:
        assert self.resume.wait(60), "the test never let the writer go on"
        self._w.write(frame)

    def release(self) -> None:
        self._w.release()


def test_slow_recorder_drops_instead_of_stalling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(cv2, "VideoWriter", StalledWriter)
    monkeypatch.setattr(cv2.VideoWriter, "fourcc", StalledWriter.real.fourcc, raising=False)
    monkeypatch.setattr(StalledWriter, "resume", threading.Event())
    path = tmp_path / "slow.mp4"
    rec = RecorderOutput(path, queue_size=4)
    rec.open(W, H, 30)
    frame = moving_pattern(3)
    with caplog.at_level(logging.WARNING, logger="live.outputs.recorder"):
        loop = threading.Thread(target=lambda: [rec.send(frame) for _ in range(50)])  # the show's loop
        loop.start()
        loop.join(30)
        stalled = loop.is_alive()
        StalledWriter.resume.set()
        loop.join()
        assert not stalled, "send waited for the stalled writer: the loop would freeze with it"
        rec.close()
    # the queue and the frame in the writer's hands were taken; the rest was dropped and counted
    assert rec.sent <= 4 + 1 and rec.dropped >= 50 - 5 and rec.sent + rec.dropped == 50
    warnings = [r.getMessage() for r in caplog.records if "falling behind" in r.getMessage()]
    assert len(warnings) == 1, "the drop warning is rate-limited, not one per frame"
    assert not recorder_threads()
    assert rec.written == rec.sent
    frames, _ = read_video(path)
    assert abs(len(frames) - rec.sent) <= 1, "close() wrote every queued frame and finalised the file"


def test_recorder_errors_name_path_and_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "show.mp4"
    with pytest.raises(OutputError, match="no-such-dir.*does not exist"):
        RecorderOutput(missing).open(W, H, 30)

    wrong = tmp_path / "show.mkv"
    with pytest.raises(OutputError, match=r"\.mkv.*\.mp4.*\.avi"):
        RecorderOutput(wrong).open(W, H, 30)
    assert not wrong.exists()

    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(OutputError, match="not writable"):
            RecorderOutput(locked / "show.avi").open(W, H, 30)
    assert not recorder_threads()


def test_recorder_leaves_no_empty_file_when_the_codec_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class RefusingWriter:
        def __init__(self, filename: str, *args: object) -> None:
            Path(filename).touch()  # what a backend that fails after creating the file leaves

        def isOpened(self) -> bool:  # noqa: N802
            return False

        def release(self) -> None:
            pass

    fourcc = cv2.VideoWriter.fourcc
    monkeypatch.setattr(cv2, "VideoWriter", RefusingWriter)
    RefusingWriter.fourcc = staticmethod(fourcc)  # type: ignore[attr-defined]
    path = tmp_path / "show.mp4"
    with pytest.raises(OutputError, match="show.mp4"):
        RecorderOutput(path).open(W, H, 30)
    assert not path.exists()


# --- virtual camera ---------------------------------------------------------------------


def test_vcam_sends_even_bgr_frames_in_order_at_the_loops_pace(fake_vcam: type[FakeLoopback],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import pyvirtualcam
    from pyvirtualcam import PixelFormat
    from pyvirtualcam.util import decode_fourcc

    sleeps: list[float] = []  # pyvirtualcam's own pacing, which the show must not use
    monkeypatch.setattr(pyvirtualcam.Camera, "sleep_until_next_frame", lambda self: sleeps.append(1))

    vcam = VirtualCamOutput(device="/dev/video10", backend="live-test")
    vcam.open(W + 1, H + 1, 30)  # odd sizes: cropped to even
    (cam,) = fake_vcam.instances
    assert (cam.width, cam.height) == (W, H) and vcam.size == (W, H)
    assert decode_fourcc(cam.fourcc) == PixelFormat.BGR.value == "24BG"
    assert cam.device() == "/dev/video10"

    sent = []
    calls = []
    for i in range(12):
        frame = moving_pattern(i, W + 1, H + 1)
        frame[0, 0] = (i, 0, 0)  # the frame's number, in its first pixel's blue byte
        sent.append(frame)
        t0 = time.perf_counter()
        vcam.send(frame)
        calls.append((t0, time.perf_counter()))
    vcam.close()
    assert cam.closed == 1
    assert sleeps == [], "send must not sleep until the camera's next frame: the loop paces itself"
    assert vcam.sent == 12
    # each frame reached the device during its own send call: nothing queued, nothing re-timed
    assert all(t0 <= t <= t1 for (t0, t1), (t, _) in zip(calls, cam.received, strict=True))
    got = [f.reshape(H, W, 3) for _, f in cam.received]
    assert [int(f[0, 0, 0]) for f in got] == list(range(12))
    for frame, back in zip(sent, got):
        np.testing.assert_array_equal(back, frame[:H, :W])  # BGR bytes as sent, no channel swap


def test_vcam_placeholder_keeps_frames_flowing(fake_vcam: type[FakeLoopback]) -> None:
    with VirtualCamOutput(backend="live-test") as vcam:
        vcam.open(W, H, 30)
        for _ in range(3):
            vcam.send_placeholder("deepdream-live: starting…")
    (cam,) = fake_vcam.instances
    assert len(cam.received) == 3 and vcam.placeholders == 3 and vcam.sent == 0
    frame = cam.received[0][1].reshape(H, W, 3)
    assert np.median(frame) < 40, "a dark frame"
    assert (frame > 150).sum() > 100, "with readable text on it"


def test_vcam_without_loopback_says_how_to_fix_it(fake_vcam: type[FakeLoopback]) -> None:
    fake_vcam.fail_with = "No v4l2 loopback device found at /dev/video[0-99]. Did you run 'modprobe v4l2loopback'?"
    with pytest.raises(UnavailableError) as info:
        VirtualCamOutput(backend="live-test").open(W, H, 30)
    assert "modprobe v4l2loopback" in str(info.value) and "--vcam-device" in str(info.value)

    fake_vcam.fail_with = "Device /dev/video9 does not exist."
    with pytest.raises(UnavailableError, match="/dev/video9"):
        VirtualCamOutput(device="/dev/video9", backend="live-test").open(W, H, 30)

    with pytest.raises(UsageError, match="live-test"):
        VirtualCamOutput(backend="no-such-backend").open(W, H, 30)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="v4l2loopback is Linux only")
def test_real_v4l2loopback_missing_gives_the_modprobe_line() -> None:
    if any(Path("/dev").glob("video*")):
        pytest.skip("this machine has video devices; the 'no loopback' path cannot be shown")
    with pytest.raises(UnavailableError, match="modprobe v4l2loopback"):
        VirtualCamOutput(backend="v4l2loopback").open(W, H, 30)


# --- window -----------------------------------------------------------------------------


def test_keys_map_to_actions() -> None:
    assert key_action(-1) is None
    assert key_action(ord("q")) == key_action(ord("Q")) == key_action(27) == "quit"
    assert key_action(ord("f")) == "fullscreen"
    assert key_action(ord("n")) == key_action(0xFF53) == key_action(0x270000) == "next_layer"
    assert key_action(ord("p")) == key_action(0xFF51) == key_action(0x250000) == "prev_layer"
    assert key_action(ord(" ")) == "freeze"
    assert key_action(ord("s")) == "screenshot"
    assert key_action(ord("o")) == "overlay"
    assert key_action(0x100000 | ord("s")) == "screenshot", "Num Lock must not kill the keys"
    assert key_action(ord("z")) is None
    assert {key_action(k) for k in range(0x110000)} - {None} <= set(ACTIONS)


def test_window_needs_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("DISPLAY is an X11 matter")
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(UnavailableError, match="--no-window"):
        WindowOutput().open(W, H, 30)
    # A DISPLAY nobody serves: Qt would abort the process; we explain instead.
    monkeypatch.setenv("DISPLAY", ":987")
    if x11.can_connect() is None:
        pytest.skip("libX11 is not installed")
    with pytest.raises(UnavailableError, match="cannot connect to display :987"):
        WindowOutput().open(W, H, 30)


@pytest.fixture(scope="module")
def xserver() -> str:
    if not XVFB.exists():
        pytest.skip(f"{XVFB} is not installed: cannot show a window without a display")
    with running_xvfb(1280, 720) as display:
        yield display


@pytest.fixture
def display(xserver: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DISPLAY", xserver)
    return xserver


BLOCKS = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0), "yellow": (0, 255, 255)}  # BGR


def run_window_script(body: str, tmp_path: Path) -> dict:
    """Run ``body`` in a child Python with ``frame``, ``out`` and ``grab(name)`` defined; it
    reports by assigning to ``result``. A child, because Qt ends the process that used it
    once its X server goes away (see tests/xvfb.py)."""
    script = textwrap.dedent(
        """
        import json, os, sys, time, numpy as np
        from pathlib import Path
        from PIL import ImageGrab
        out = Path(sys.argv[1])
        frame = np.zeros((180, 320, 3), np.uint8)
        blocks = {blocks!r}
        for (name, bgr), (y, x) in zip(blocks.items(), [(0, 0), (0, 160), (90, 0), (90, 160)]):
            frame[y:y + 90, x:x + 160] = bgr
        shown = []
        def show(output, seconds=0.5):
            # Qt maps and paints asynchronously: keep frames coming, as the loop would.
            shown[:] = [output]
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                output.send(frame)
                time.sleep(0.01)
        block = 160 * 90 / (1280 * 720)  # one block of the 320x180 frame shown 1:1
        def shares(shot):
            screen = np.asarray(shot.convert("RGB")).reshape(-1, 3).astype(int)
            return {{n: float((np.abs(screen - bgr[::-1]).sum(1) < 30).mean()) for n, bgr in blocks.items()}}
        def windowed(s):
            return all(0.9 * block < v < 1.5 * block for v in s.values())
        def fullscreen(s):
            return sum(s.values()) > 0.95
        def grab(name, want=lambda s: s["red"] > 0, patience=60.0):
            # A busy machine can take seconds to map a window or to change its state: keep frames
            # coming until the screen shows what ``want`` looks for (or patience runs out), then
            # keep that screenshot for the test to judge.
            deadline = time.monotonic() + patience
            while True:
                shot = ImageGrab.grab(xdisplay=os.environ["DISPLAY"])
                if want(shares(shot)) or time.monotonic() > deadline:
                    break
                for _ in range(10):
                    if shown and getattr(shown[0], "healthy", True):
                        shown[0].send(frame)
                    time.sleep(0.01)
            shot.save(out / (name + ".png"))
        result = {{}}
        """
    ).format(blocks=BLOCKS) + textwrap.dedent(body) + "\nprint('RESULT ' + json.dumps(result))\n"
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"window script failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


def colour_share(png: Path) -> dict[str, float]:
    """The share of the screen each block colour covers."""
    from PIL import Image

    screen = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3).astype(int)
    return {name: float((np.abs(screen - bgr[::-1]).sum(1) < 30).mean()) for name, bgr in BLOCKS.items()}


def test_window_shows_the_frame_and_goes_fullscreen(display: str, tmp_path: Path) -> None:
    result = run_window_script(
        """
        from live.outputs import WindowOutput
        win = WindowOutput(title="dream", position=(100, 50))
        win.open(320, 180, 30)
        show(win)
        grab("windowed", windowed)
        win.toggle_fullscreen()
        show(win)
        grab("fullscreen", fullscreen)
        win.toggle_fullscreen()
        show(win)
        grab("back", windowed)
        result["keys"] = win.poll_keys()
        result["healthy"] = win.healthy
        win.close()
        """,
        tmp_path,
    )
    assert result == {"keys": [], "healthy": True}
    block = 160 * 90 / (1280 * 720)
    for shot in ("windowed", "back"):
        share = colour_share(tmp_path / f"{shot}.png")
        for name, s in share.items():
            assert 0.9 * block < s < 1.5 * block, f"{shot}: {name} covers {s:.3%} of the screen, expected about {block:.3%}"
    share = colour_share(tmp_path / "fullscreen.png")
    assert sum(share.values()) > 0.95, f"fullscreen covers only {sum(share.values()):.0%} of the screen"
    assert all(s > 0.2 for s in share.values())


def test_monitors_are_found_while_the_x_server_resets_after_its_last_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bare kiosk X server (and Xvfb) resets when its last client leaves and refuses
    # connections meanwhile: the window's own display probe is such a client. On a busy machine
    # the monitor lookup right after it failed ("monitors cannot be listed") and the show exited.
    if x11.can_connect() is None:
        pytest.skip("libX11 is not installed")
    if not XVFB.exists():
        pytest.skip(f"{XVFB} is not installed (make test installs it)")
    real = x11._xlib()

    class Resetting:
        """libX11, except that the server refuses the next ``refuse`` connections."""

        refuse = 0

        def __getattr__(self, name: str):
            return getattr(real, name)

        def XOpenDisplay(self, name):  # noqa: N802 (libX11's name)
            if self.refuse:
                self.refuse -= 1
                return None
            return real.XOpenDisplay(name)

    lib = Resetting()
    monkeypatch.setattr(x11, "_xlib", lambda: lib)
    with running_xvfb() as display:
        lib.refuse = 2
        assert x11.can_connect(display) is True and lib.refuse == 0
        lib.refuse = 3
        assert x11.monitors(display) == [x11.Rect(0, 0, 1280, 720)] and lib.refuse == 0
        lib.refuse = 100  # a display that stays away is still reported, within seconds
        started = time.monotonic()
        assert x11.can_connect(display) is False and x11.monitors(display) is None
        assert time.monotonic() - started < 10


def test_the_window_keeps_the_server_company_until_qt_has_connected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The show's display probes must not be the X server's last clients when Qt connects: each
    one closing would reset a bare server, and Qt, connecting in that moment, aborts the show.
    So one probe connection stays open until the window exists, and is closed after."""
    if x11.can_connect() is None:
        pytest.skip("libX11 is not installed")
    if not XVFB.exists():
        pytest.skip(f"{XVFB} is not installed (make test installs it)")
    real = x11._xlib()
    ours: list[int] = []

    class Counting:
        """libX11, counting the connections the show's own probes hold open."""

        def __getattr__(self, name: str):
            return getattr(real, name)

        def XOpenDisplay(self, name):  # noqa: N802 (libX11's name)
            dpy = real.XOpenDisplay(name)
            if dpy:
                ours.append(dpy)
            return dpy

        def XCloseDisplay(self, dpy):  # noqa: N802
            ours.remove(dpy)
            return real.XCloseDisplay(dpy)

    monkeypatch.setattr(x11, "_xlib", lambda: Counting())
    held_when_created: list[int] = []
    monkeypatch.setattr(cv2, "namedWindow", lambda *a: held_when_created.append(len(ours)))
    for name in ("resizeWindow", "moveWindow", "setWindowProperty"):
        monkeypatch.setattr(cv2, name, lambda *a: None)
    with running_xvfb() as display:
        monkeypatch.setenv("DISPLAY", display)
        WindowOutput(monitor=0).open(W, H, 30)
    assert held_when_created == [1], "a probe connection is open while the window connects"
    assert ours == [], "and closed once the window exists"


def test_window_starts_fullscreen_on_the_chosen_monitor(display: str, tmp_path: Path) -> None:
    assert x11.monitors(display) == [x11.Rect(0, 0, 1280, 720)]
    with pytest.raises(UsageError, match="no monitor 2; monitors are 0: 1280x720"):
        WindowOutput(monitor=2).open(W, H, 30)  # refused before any window exists
    run_window_script(
        """
        from live.outputs import WindowOutput
        with WindowOutput(fullscreen=True, monitor=0) as win:
            win.open(320, 180, 30)
            show(win)
            grab("fullscreen", fullscreen)
        """,
        tmp_path,
    )
    assert sum(colour_share(tmp_path / "fullscreen.png").values()) > 0.95


def test_fullscreen_letterboxes_in_black_and_keeps_the_pictures_aspect(display: str, tmp_path: Path) -> None:
    """A 4:3 picture on the 16:9 screen: 960x720 in the middle, black bars (not Qt's light grey)."""
    run_window_script(
        """
        frame = np.zeros((240, 320, 3), np.uint8)
        for (name, bgr), (y, x) in zip(blocks.items(), [(0, 0), (0, 160), (120, 0), (120, 160)]):
            frame[y:y + 120, x:x + 160] = bgr
        from live.outputs import WindowOutput
        with WindowOutput(fullscreen=True, monitor=0) as win:
            win.open(320, 240, 30)
            # A busy machine maps the window and makes it fullscreen in its own time: keep frames
            # coming until the red quarter covers what it will fullscreen (about 19% of the screen).
            deadline = time.monotonic() + 120
            while True:
                show(win, 0.2)
                shot = ImageGrab.grab(xdisplay=os.environ["DISPLAY"])
                red = (np.asarray(shot.convert("RGB")) == (255, 0, 0)).all(axis=-1).mean()
                if red > 0.15 or time.monotonic() > deadline:
                    break
            shot.save(out / "fullscreen.png")
        """,
        tmp_path,
    )
    from PIL import Image

    screen = np.asarray(Image.open(tmp_path / "fullscreen.png").convert("RGB")).astype(int)
    drawn = np.nonzero((screen > 40).any(axis=2).any(axis=0))[0]  # columns the picture covers
    assert drawn.size, "the picture never reached the screen in 120 s"
    left, right = drawn.min(), drawn.max() + 1
    assert abs((right - left) - 960) <= 2 and abs(left - 160) <= 2, f"picture spans x {left}..{right}"
    bars = np.concatenate([screen[:, : left - 1], screen[:, right + 1 :]], axis=1)
    assert bars.size and bars.max() <= 8, f"the bars are not black: up to {bars.max()} (Qt paints 239)"
    share = colour_share(tmp_path / "fullscreen.png")
    assert all(abs(s - 0.1875) < 0.01 for s in share.values()), share  # each block a quarter of 960x720


def test_letterbox_size_pads_only_the_short_side() -> None:
    from live.outputs.window import letterbox_size

    assert letterbox_size(320, 240, 1280, 720) == (427, 240)  # 4:3 on 16:9: bars left and right
    assert letterbox_size(640, 352, 1920, 1080) == (640, 360)  # a little taller: thin bars above and below
    assert letterbox_size(640, 360, 1920, 1080) == (640, 360)  # same aspect: no bars
    assert letterbox_size(641, 360, 1920, 1080) == (641, 360)  # within a pixel: none either


def test_closing_the_window_stops_only_the_window(display: str, tmp_path: Path) -> None:
    result = run_window_script(
        """
        import logging, cv2
        from live.outputs import Fanout, NullOutput, WindowOutput
        win, other = WindowOutput(title="dream"), NullOutput()
        fan = Fanout([win, other])
        fan.open(320, 180, 30)
        show(fan, 0.2)
        cv2.destroyWindow("dream")  # what the close button does
        show(fan, 0.3)
        result["actions"] = fan.poll_keys()
        grab("after", patience=0)
        result["window"] = [win.healthy, win.sent, win.failure]
        result["other"] = other.sent
        result["active"] = [o.name for o in fan.active]
        fan.close()
        """,
        tmp_path,
    )
    assert result["actions"] == ["window_closed"]
    healthy, shown, failure = result["window"]
    assert not healthy and failure == "window closed by the user"
    assert result["other"] > shown, "the other output got every frame, before and after"
    assert result["active"] == ["headless"]
    assert sum(colour_share(tmp_path / "after.png").values()) < 0.001, "the closed window did not come back"


# --- fan-out ----------------------------------------------------------------------------


class Counting(Output):
    def __init__(self, name: str, fail_from: int | None = None, fail_close: bool = False) -> None:
        super().__init__(name)
        self.fail_from, self.fail_close = fail_from, fail_close
        self.frames: list[int] = []
        self.opened = self.closed = 0

    def open(self, width: int, height: int, fps: float) -> None:
        self.opened += 1

    def send(self, frame: np.ndarray) -> None:
        if self.fail_from is not None and len(self.frames) >= self.fail_from:
            raise OSError("device unplugged")
        self.frames.append(int(frame[0, 0, 0]))
        self.sent += 1

    def close(self) -> None:
        self.closed += 1
        if self.fail_close:
            raise RuntimeError("would not let go")


def test_one_failing_output_leaves_the_others_running(caplog: pytest.LogCaptureFixture) -> None:
    a, broken, b = Counting("a"), Counting("vcam", fail_from=3), Counting("b", fail_close=True)
    fan = Fanout([a, broken, b])
    fan.open(W, H, 30)
    with caplog.at_level(logging.ERROR, logger="live.outputs.base"):
        for i in range(10):
            frame = np.full((H, W, 3), i, np.uint8)
            fan.send(frame)
        fan.close()
    assert a.frames == b.frames == list(range(10))
    assert broken.frames == [0, 1, 2] and not broken.healthy
    stopped = [r.getMessage() for r in caplog.records if "vcam" in r.getMessage()]
    assert stopped == ["vcam output stopped: OSError: device unplugged (2 other outputs go on)"]
    assert not any(r.exc_info for r in caplog.records), "the reason, not a traceback"
    assert (a.closed, broken.closed, b.closed) == (1, 1, 1), "each closed once, even after one raised"
    assert any("b output did not close cleanly" in r.getMessage() for r in caplog.records)
    assert "vcam: 3 sent, 0 dropped, failed (OSError: device unplugged)" in fan.summary()


def test_an_output_that_cannot_open_closes_the_ones_already_open() -> None:
    class Refusing(Counting):
        def open(self, width: int, height: int, fps: float) -> None:
            raise UnavailableError("no virtual camera device")

    first, refusing = Counting("window"), Refusing("vcam")
    with pytest.raises(UnavailableError):
        Fanout([first, refusing]).open(W, H, 30)
    assert first.closed == 1


def test_headless_runs_and_reports() -> None:
    empty = Fanout()
    empty.open(W, H, 30)
    empty.send(moving_pattern(0))
    assert empty.poll_keys() == [] and empty.summary() == "headless: no outputs"
    with Fanout([NullOutput()]) as fan:
        fan.open(W, H, 30)
        for i in range(5):
            fan.send(moving_pattern(i))
    assert fan.summary() == "headless: 5 sent, 0 dropped, ok"
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        fan.send(np.zeros((H, W), np.float32))
