"""Two paces: every camera frame goes out at the camera's rate with the newest dream carried onto
it along the motion, while the dream keeps its own, slower pace (docs/architecture.md, "Two
paces"). A slow stand-in dream and a source paced in real time stand in for a slow machine, so
what is asserted does not depend on how busy this one is: which frames go out and where the
dream lands on them, never how many frames a wall-clock second holds."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from live.app import LiveLoop
from live.backends.torch_backend import TorchBackend
from live.benchmark import PacedFrames
from live.control.params import Registry
from live.handoff import Dream, DreamHandoff, Shot
from live.outputs import Fanout, Output
from live.presenter import CARRY_PRESET
from live.reproject import Reprojector
from live.sources import Frame
from live.temporal import FlowEstimator
from tests.conftest import photo_path
from tests.slow_backend import SlowBackend, read_until

ROOT = Path(__file__).resolve().parents[1]
W, H = 192, 128  # camera, output and dream size alike: "at the dream's size" is the picture's size
SIDE, TOP = 40, 44  # the square
PRESET = CARRY_PRESET  # the presenter's own
MARK = 0.3  # what the stand-in dream adds to the square's blue, of full scale (about 77 grey levels)


# ----------------------------------------------------------------------------- a moving textured square
def _scene() -> tuple[np.ndarray, np.ndarray]:
    # the background: a real photograph in grey (no pixel of it has the square's colour)
    photo = cv2.imread(str(photo_path("coffee.png")), cv2.IMREAD_GRAYSCALE)
    grey = cv2.resize(photo, (W * 2, H * 2), interpolation=cv2.INTER_AREA)[H // 2 : H // 2 + H, W // 2 : W // 2 + W]
    background = np.dstack([grey // 2 + 20] * 3)  # darker than the square
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.random((SIDE, SIDE)).astype(np.float32), (0, 0), 1.0)
    square = np.dstack([20 + 40 * tex, 150 + 80 * tex, 190 + 65 * tex]).clip(0, 255).astype(np.uint8)  # BGR
    return background, square


BACKGROUND, SQUARE = _scene()


def square_x(i: int) -> int:
    """Left edge of the square in frame ``i``: 4 px a frame to the right, then back (ping-pong)."""
    period = 34
    k = i % (2 * period)
    return 8 + 4 * (k if k < period else 2 * period - k)


def square_frame(i: int) -> np.ndarray:
    image = BACKGROUND.copy()
    x = square_x(i)
    image[TOP : TOP + SIDE, x : x + SIDE] = SQUARE
    return image


class MovingSquare(PacedFrames):
    """The square's frames in real time at ``fps``, drawn for each index (the square moves on
    rather than back and forth); remembers which frame each capture time was."""

    def __init__(self, fps: float = 30.0) -> None:
        super().__init__([square_frame(0)], fps, "moving square")

    def frame(self, index: int) -> np.ndarray:
        return square_frame(index)


class Marker(TorchBackend):
    """A stand-in dream that marks the square: blue raised by MARK wherever the picture is the
    square's warm colour; each call waits ``seconds`` (a dream slower than the camera)."""

    def __init__(self, model, seconds: float) -> None:
        super().__init__(model, torch.device("cpu"))
        self.seconds, self.space = seconds, model.space

    def ascend(self, x, objective, steps, *args, **kwargs):
        time.sleep(self.seconds)
        rgb = self.space.to_picture(x)
        square = (rgb[:, 0:1] > 0.66) & (rgb[:, 2:3] < 0.35)
        marked = rgb.clone()
        marked[:, 2:3] += MARK * square
        return self.space.to_model(marked)


class Stamped(Output):
    """Keeps every frame with its capture time and when it was sent."""

    def __init__(self) -> None:
        super().__init__("stamped")
        self.frames: list[tuple[float, float, np.ndarray]] = []

    def open(self, width: int, height: int, fps: float) -> None:
        self.size, self.fps = (width, height), fps

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        self.frames.append((timestamp, time.monotonic(), frame.copy()))
        self.sent += 1

    def close(self) -> None:
        pass


def _registry(**values) -> Registry:
    registry = Registry()
    registry.update({"width": W, "height": H, "steps": 1, "octaves": 1, "jitter": 0, "feedback": 0.0,
                     "fps_cap": 240, **values})
    return registry


def _show(model, backend, present: str, seconds: float, **values) -> tuple[LiveLoop, MovingSquare, Stamped, object]:
    source = MovingSquare()
    out = Stamped()
    fan = Fanout([out])
    fan.open(W, H, 30)
    loop = LiveLoop(source, model, backend, _registry(**values), fan, seed=0, status_every=3600, present=present)
    with source:
        report = loop.run(duration=seconds)
    return loop, source, out, report


def _mark(frame: np.ndarray, index: int) -> np.ndarray:
    """How much the shown frame's blue was raised over its camera frame, in grey levels."""
    return frame[..., 0].astype(int) - square_frame(index)[..., 0].astype(int)


# ----------------------------------------------------------------------------- the camera's rate
def test_a_slow_dream_still_shows_every_camera_frame(model) -> None:
    """200 ms a dream step, a camera at 30 fps: every camera frame goes out, each once, in order,
    while the dream makes a handful."""
    backend = SlowBackend(model, torch.device("cpu"), step_seconds=0.2)
    loop, source, out, report = _show(model, backend, "camera", 3.0)
    stamps = [ts for ts, _, _ in out.frames]
    indices = [source.index_at[ts] for ts in stamps]  # each frame out is a camera frame the source made
    assert len(set(indices)) == len(indices), "a camera frame went out twice"
    assert all(b > a for a, b in zip(stamps, stamps[1:])), "capture times must increase"
    delivered = indices[-1] - indices[0] + 1  # the source's own count over the same stretch
    print(f"presented {len(indices)} of the {delivered} frames the source made meanwhile; "
          f"{report.dreams} dreams ({report.dream_fps:.1f} a second), {report.fps:.1f} fps shown")
    assert len(indices) >= 0.9 * delivered
    assert 2 <= report.dreams <= len(indices) / 3  # the dream at its own, far slower pace


def test_the_mark_stays_on_the_moving_square_and_dream_mode_lags(model) -> None:
    """A dream slower than the camera marks a square moving 4 px a frame. At the camera's pace the
    mark, carried along the flow, stays on the square of every frame it is shown on, within 1 px
    (at the dream's size, which is the picture's here). At the dream's pace every frame is a
    dreamed one, so the mark sits on its own square, but that square is where the camera saw it
    one dream ago: the picture lags the camera."""
    results = {}
    for present in ("camera", "dream"):
        loop, source, out, report = _show(model, Marker(model, 0.12), present, 3.0)
        carried, outside, covered, lag = 0, [], [], []
        published = source.published
        for stamp, sent, frame in out.frames:
            index = source.index_at[stamp]
            mark = _mark(frame, index)
            if mark.max() < MARK * 255 / 2:
                continue  # no dream on this frame yet
            carried += 1
            x = square_x(index)
            box = np.zeros((H, W), bool)
            box[TOP - 1 : TOP + SIDE + 1, x - 1 : x + SIDE + 1] = True  # the square, one pixel wider
            outside.append(int(mark[~box].max()))
            covered.append(float((mark[TOP + 2 : TOP + SIDE - 2, x + 2 : x + SIDE - 2] > MARK * 255 / 2).mean()))
            newest = max(i for t, i in published if t <= sent)  # what the camera saw when this went out
            lag.append(abs(square_x(newest) - x))
        results[present] = (carried, outside, covered, lag, report)
        print(f"{present}: {len(out.frames)} frames, {carried} carrying the mark, {report.dreams} dreams; "
              f"mark outside the square (+1 px): max {max(outside, default=0)} grey levels; square covered "
              f"{np.mean(covered):.2f}; the square shown lags the camera by {np.mean(lag):.1f} px on average "
              f"(max {max(lag, default=0)})")
    carried, outside, covered, lag, report = results["camera"]
    assert carried >= 20 and report.dreams < carried  # most frames carry a dream made on an older frame
    assert max(outside) < MARK * 255 / 2  # never half the mark more than 1 px off the square
    # carried, not faded away: its edges may fade, and where the flow fails it fades (rarely) entirely
    assert np.mean(covered) >= 0.75 and np.mean(np.array(covered) >= 0.5) >= 0.85
    carried, outside, covered, dream_lag, report = results["dream"]
    assert carried >= 3 and max(outside) < MARK * 255 / 2  # on its own frame the mark is exact
    # one dream (120 ms and more) behind a square that moves 4 px every 33 ms
    assert np.mean(dream_lag) >= 8 and np.mean(dream_lag) > np.mean(lag) + 4


def test_a_disoccluded_region_shows_no_smeared_residual(monkeypatch) -> None:
    """The square moves on; the background it uncovers was hidden in the dreamed frame, so no
    part of the dream belongs there. The flow drags the square's motion over the strip (DIS is
    smooth, measured: the strip's flow is the square's), which copies the dream of the background
    further left into it, and the forward-backward check passes that; the checks as a whole fade
    it out. Without them the same strip is smeared."""
    greys = FlowEstimator("fast")
    rng = np.random.default_rng(1)
    ratios = []
    for gap in (2, 4, 8):
        then_i, now_i = 3, 3 + gap
        then = Shot(Frame(square_frame(then_i), 0.0, then_i), greys.grey(square_frame(then_i)), 0)
        now = Shot(Frame(square_frame(now_i), gap / 30, now_i), greys.grey(square_frame(now_i)), 0)
        residual = torch.from_numpy(rng.normal(0.0, 0.2, (1, 3, H, W)).astype(np.float32))  # a dream everywhere
        dream = Dream(residual, then, 1, 0.0, 0.0)
        strip = (slice(TOP, TOP + SIDE), slice(square_x(then_i), square_x(now_i) - 1))  # uncovered, 1 px spared
        inside = (slice(TOP + 2, TOP + SIDE - 2), slice(square_x(now_i) + 2, square_x(now_i) + SIDE - 2))
        carried = Reprojector(PRESET, "direct").carry(dream, now)[0].abs()
        with monkeypatch.context() as m:
            m.setattr("live.reproject.reliable", lambda back, *a: np.ones(back.shape[:2], np.float32))
            unchecked = Reprojector(PRESET, "direct").carry(dream, now)[0].abs()
        print(f"gap {gap}: |residual| in the uncovered strip {carried[:, strip[0], strip[1]].mean():.3f} "
              f"(unchecked {unchecked[:, strip[0], strip[1]].mean():.3f}), on the square "
              f"{carried[:, inside[0], inside[1]].mean():.3f}")
        smear, without = carried[:, strip[0], strip[1]].mean(), unchecked[:, strip[0], strip[1]].mean()
        assert without > 0.1  # what the checks prevent: the dream of elsewhere, dragged over the strip
        assert smear < 0.3 * without  # mostly faded (a narrow strip's edge can pass by chance: README)
        assert carried[:, inside[0], inside[1]].mean() > 2.5 * smear  # while the square keeps its dream
        ratios.append(float(smear / without))
    assert np.mean(ratios) < 0.15, ratios  # the wider the strip, the less of it is left


def test_a_scene_cut_or_reset_drops_the_carried_dream(model) -> None:
    """Frames after a cut show no dream of the old picture, even while the dreamer is slow."""
    handoff = DreamHandoff()
    greys = FlowEstimator("fast")
    shot = Shot(Frame(square_frame(0), 0.0, 1), greys.grey(square_frame(0)), epoch=0)
    handoff.publish(Dream(torch.ones(1, 3, H, W), shot, 1, 0.0, 0.0))
    later = Shot(Frame(square_frame(1), 0.03, 2), greys.grey(square_frame(1)), epoch=1)  # after a cut
    assert Reprojector().carry(handoff.newest(), later) is None
    same = Shot(Frame(square_frame(1), 0.03, 2), later.grey, epoch=0)
    assert Reprojector().carry(handoff.newest(), same) is not None


def test_the_handoff_keeps_only_the_newest_and_never_blocks_the_presenter() -> None:
    handoff = DreamHandoff()
    greys = FlowEstimator("fast")
    shots = [Shot(Frame(square_frame(i), i / 30, i + 1), greys.grey(square_frame(i)), 0) for i in range(3)]
    assert handoff.offer(shots[0]) is False  # no dreamer waiting
    handoff.offer(shots[1])
    handoff.offer(shots[2])
    assert handoff.take(0.0) is shots[2]  # the newest; the older ones are gone, not queued
    assert handoff.take(0.0) is None
    started = time.monotonic()
    assert handoff.wait(0, 0.05) is None and time.monotonic() - started < 1.0  # a bounded wait
    got: list[Shot | None] = []
    taker = threading.Thread(target=lambda: got.append(handoff.take(5.0)))
    taker.start()
    deadline = time.monotonic() + 5
    while not handoff.idle and time.monotonic() < deadline:
        time.sleep(0.001)
    assert handoff.offer(shots[0]) is True  # the dreamer was waiting: it takes this very frame
    taker.join(5)
    assert got == [shots[0]]


def test_present_dream_is_the_one_pace_show(model) -> None:
    """--present dream: each frame out waits for its own dream (the dream's rate)."""
    loop, source, out, report = _show(model, Marker(model, 0.1), "dream", 1.5)
    assert out.frames and len(out.frames) <= report.dreams
    for stamp, _, frame in out.frames:
        assert _mark(frame, source.index_at[stamp]).max() >= MARK * 255 / 2  # every frame out is dreamed


def test_a_non_finite_dream_shows_the_camera_at_the_cameras_pace(model) -> None:
    class Poisoned(TorchBackend):
        def ascend(self, x, *args, **kwargs):
            time.sleep(0.05)
            return torch.full_like(x, float("nan"))

    loop, source, out, report = _show(model, Poisoned(model, torch.device("cpu")), "camera", 1.0)
    assert report.dreams >= 1 and loop.nonfinite == report.dreams
    for stamp, _, frame in out.frames:
        assert np.array_equal(frame, square_frame(source.index_at[stamp]))  # the camera, never black


# ----------------------------------------------------------------------------- a stop, both threads running
def test_ctrl_c_ends_the_show_within_a_second_with_both_paces_running() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.slow_backend", "run", "--source", "test-scene", "--capture-size", "128x96",
         "--capture-fps", "30", "--no-window", "--no-osc", "--no-midi", "--no-web", "--weights", "random",
         "--backend", "slow", "--size", "96x64", "--steps", "1", "--octaves", "1", "--status-every", "0.5"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "DEEPDREAM_TEST_STEP_SECONDS": "0.2"},
    )
    seen: list[str] = []
    try:
        # frames out and dreams made (rates printed with two decimals): both paces run
        read_until(proc, r"(?!0\.00 )\d+\.\d+ fps, latency \d+ ms, dream (?!0\.00 )\d+\.\d+ fps", seen)
        assert any(re.search(r"dream [1-9][\d.]* fps|dream 0\.[1-9]", line) for line in seen), "".join(seen[-20:])
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    log = "".join(seen) + rest
    assert proc.returncode == 0, log
    took = float(re.search(r"stopped (\d+\.\d+) s after SIGINT", log).group(1))
    assert took < 1.0, log


def test_present_comes_from_the_flag_or_the_site_config(tmp_path: Path) -> None:
    from live.cli import _build_parser, _show_setup
    from live.errors import UsageError

    def opts(*argv: str):
        return _show_setup(_build_parser().parse_args(["run", *argv]))[0]

    site = tmp_path / "site.toml"
    site.write_text('[outputs]\nwindow = false\npresent = "dream"\n')
    assert opts().present == "camera"  # the default: the camera's pace
    assert opts("--config", str(site)).present == "dream"
    assert opts("--config", str(site), "--present", "camera").present == "camera"  # a flag over the config
    site.write_text('[outputs]\npresent = "slow"\n')
    with pytest.raises(UsageError, match=r"outputs\.present.*camera.*dream"):
        opts("--config", str(site))
