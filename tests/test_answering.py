"""A show that answers while it works: during a 10 s frame the status lines and watchdog pings
keep coming, a stop lands within a second, a frozen step stops the pings, and a second Ctrl-C
still finalises the recording. Frames are made slow on purpose (tests/slow_backend.py: each step
is a fixed wait, without the real work), so the timings here do not depend on how busy the
machine is."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
import torch

from live.app import LiveLoop
from live.control.params import Registry
from live.outputs import Fanout, NullOutput
from live.service.heartbeat import Heartbeat
from live.sources import ImageSource
from tests.conftest import photo_path
from tests.slow_backend import SlowBackend, read_until
from tests.systemd_manager import FakeSystemd

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    listener = FakeSystemd()
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    yield listener
    listener.close()


def _wait(condition, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _loop(model, backend, steps: int, **kw) -> tuple[LiveLoop, ImageSource]:
    registry = Registry()
    registry.update({"width": 64, "height": 64, "steps": steps, "octaves": 1, "fps_cap": 240})
    fan = Fanout([NullOutput()])
    fan.open(64, 64, 240)
    source = ImageSource(photo_path("coffee.png"), fps=60).start()
    return LiveLoop(source, model, backend, registry, fan, seed=0, **kw), source


def test_during_a_10_s_frame_status_and_pings_keep_coming_and_a_stop_lands_within_a_second(
    model, notify_socket: FakeSystemd, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="live")
    backend = SlowBackend(model, torch.device("cpu"), step_seconds=0.25)  # 40 steps: a 10 s frame
    loop, source = _loop(model, backend, steps=40, status_every=0.5, watchdog=1.0)
    stop = threading.Event()
    result = {}
    thread = threading.Thread(target=lambda: result.update(report=loop.run(stop)))
    with source:
        thread.start()
        try:
            assert _wait(lambda: backend.steps_done >= 1), "the frame never started"
            started = time.monotonic()

            def lines() -> list[str]:
                return [r.getMessage() for r in caplog.records if "fps, latency" in r.getMessage()]

            # Three status lines and three pings, a line every 0.5 s, not one per (10 s) dream: they
            # must all come while the first dream is still running (the camera goes out meanwhile).
            assert _wait(lambda: (len(lines()) >= 3 and notify_socket.pings(started) >= 3) or loop.dream_clock.frames > 0)
            assert loop.dream_clock.frames == 0, "the first 10 s dream ended before three status lines and pings"
            assert any(re.search(r"this dream: \d+ steps in \d+\.\d s so far", line) for line in lines()), lines()
        finally:
            asked = time.time()  # the clock log records are stamped by
            stop.set()
            thread.join(timeout=60)
    assert not thread.is_alive()
    assert result["report"].stopped_because == "stopped" and result["report"].dreams == 0  # abandoned, not finished
    # from the stop to the loop's own "stopped" line: the step in hand (0.25 s) and the wind-down
    stopped = next(r for r in caplog.records if r.getMessage().startswith("stopped (stopped)"))
    took = stopped.created - asked
    assert took < 1.0, f"stopped {took:.2f} s after it was asked, in the middle of a 10 s frame"


def test_a_frozen_step_stops_the_watchdog_pings(model, notify_socket: FakeSystemd, caplog) -> None:
    backend = SlowBackend(model, torch.device("cpu"), step_seconds=0.02, freeze_after=8)
    loop, source = _loop(model, backend, steps=1, status_every=3600, watchdog=0.6)  # stalled after 0.6 s
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    with source:
        thread.start()
        try:
            assert _wait(lambda: backend.steps_done >= 8)  # the next step never returns
            assert _wait(lambda: notify_socket.pings() >= 1)  # it pinged while it worked
            assert _wait(lambda: "no progress for" in caplog.text)  # past the stall limit it says so
            assert "systemd will restart the show" in caplog.text
            # Every ping sent before that line is queued ahead of a mark sent after it.
            pinged = _pings_before_a_mark(notify_socket)
            time.sleep(1.5)  # five ping periods (0.3 s) with the loop frozen
            assert _pings_before_a_mark(notify_socket) == pinged  # silence: systemd restarts the show
        finally:
            stop.set()
            backend.release.set()
            thread.join(timeout=60)
    assert not thread.is_alive()


def _pings_before_a_mark(listener: FakeSystemd) -> int:
    """The pings that reached ``listener`` before a mark sent now (datagrams arrive in order)."""
    from live.service import notify

    mark = f"X-TEST-MARK={time.monotonic_ns()}"
    assert notify.notify(mark)
    assert _wait(lambda: mark in listener.messages)
    texts = listener.messages
    return sum("WATCHDOG=1" in text for text in texts[: texts.index(mark)])


def test_the_heartbeat_pings_only_while_progress_is_recent() -> None:
    now = [0.0]
    progress = [0.0]
    sent: list[float] = []

    beat = Heartbeat(lambda: progress[0], watchdog=10.0, send=lambda: sent.append(now[0]) or True,
                     clock=lambda: now[0])
    # Driven by hand: one tick of the thread's loop at a time, at chosen clock readings.
    for t in range(0, 60):
        now[0] = float(t)
        if t < 30:
            progress[0] = float(t) if t % 7 == 0 else progress[0]  # a slow loop: a step every 7 s
        beat._tick()
    assert sent and max(sent) < 40  # pinged through the slow part, stopped 10 s after the last progress
    assert all(b - a >= 5.0 for a, b in zip(sent, sent[1:]))  # no more often than every half interval


def _show(args: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.slow_backend", "run", "--source", "test-scene", "--capture-size", "64x64",
         "--no-window", "--no-osc", "--no-midi", "--weights", "random", "--backend", "slow", "--size", "64x64", *args],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "DEEPDREAM_TEST_STEP_SECONDS": "0.25", **env},
    )


def test_ctrl_c_stops_the_real_show_within_a_second_in_the_middle_of_a_10_s_frame(notify_socket: FakeSystemd) -> None:
    proc = _show(["--steps", "40", "--octaves", "1", "--status-every", "1"],
                 WATCHDOG_USEC="2000000", NOTIFY_SOCKET=notify_socket.path)
    seen: list[str] = []
    try:
        read_until(proc, r"this dream: \d+ steps", seen)  # a status line during the first, 10 s dream
        read_until(proc, r"this dream: \d+ steps", seen)  # and another one
        assert _wait(lambda: notify_socket.pings() >= 2)  # pinged while the long dream runs
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    log = "".join(seen) + rest
    assert proc.returncode == 0, log
    assert "SIGINT: stopping after the current dream step" in log
    took = float(re.search(r"stopped (\d+\.\d+) s after SIGINT", log).group(1))
    assert took < 1.0, log  # outputs closed too
    assert re.search(r"stopped \(stopped\) after \d+ frames .*; 0 dreams", log)  # the 10 s dream was abandoned


def test_a_second_ctrl_c_abandons_a_hung_step_and_still_finalises_the_recording(tmp_path: Path) -> None:
    out = tmp_path / "show.mkv"
    # A 2 s watchdog (no socket: nothing is sent) makes the heartbeat call the loop frozen after
    # 2 s of no progress, where its default without a watchdog is a minute.
    proc = _show(["--steps", "1", "--record", str(out), "--status-every", "0.5"],
                 DEEPDREAM_TEST_STEP_SECONDS="0.05", DEEPDREAM_TEST_FREEZE_AFTER="12", WATCHDOG_USEC="2000000")
    seen: list[str] = []
    try:
        read_until(proc, r"running:", seen)
        read_until(proc, r"no progress for", seen)  # frozen after 12 frames
        proc.send_signal(signal.SIGINT)
        read_until(proc, r"SIGINT: stopping", seen)
        time.sleep(1.0)
        assert proc.poll() is None  # the first Ctrl-C waits for a step that never ends
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    log = "".join(seen) + rest
    assert proc.returncode == 130, log
    assert "abandoning the current frame; the recording is still finalised" in log
    video = cv2.VideoCapture(str(out))
    frames = 0
    while video.read()[0]:
        frames += 1
    assert frames >= 5, log  # the frames before the hang, in a file that plays
