"""H.264 recordings as a user meets them: decoded back with PyAV, timed like the real show,
crash-safe under SIGTERM and SIGKILL, never slowing the loop; and the redaction of stream keys."""

from __future__ import annotations

import logging
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import pytest

from live.errors import OutputError, UsageError
from live.outputs import Fanout
from live.outputs.encoder import EncoderOutput, EncoderSettings, parse_bitrate
from live.outputs.switch import RecordSwitch, timed_name
from live.outputs.targets import parse_target
from live.redact import redact, redact_url
from tests.streaming import frame_number, pattern, psnr, wait_for

W, H = 320, 240


def decode(path: Path) -> tuple[list[av.VideoFrame], av.container.InputContainer]:
    container = av.open(str(path))
    frames = list(container.decode(video=0))
    return frames, container


def top_level_boxes(path: Path) -> list[str]:
    """The MP4 file's top-level box types, in order."""
    boxes, data, pos = [], path.read_bytes(), 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        boxes.append(kind.decode("latin-1"))
        if size < 8:
            break
        pos += size
    return boxes


def record(path: Path, times: list[float], size: tuple[int, int] = (W, H), fps: float = 30.0, **kw) -> EncoderOutput:
    out = EncoderOutput(path, **kw)
    out.open(size[0], size[1], fps)
    for i, t in enumerate(times):
        out.send(pattern(i, *size), t)
        wait_for(lambda: out._handoff.queue.qsize() == 0, 10)  # a test wants every frame; the show would drop
    out.close()
    return out


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_a_recording_is_h264_yuv420p_and_plays_back_as_sent(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"show{suffix}"
    t0 = 1000.0
    out = record(path, [t0 + i / 30 for i in range(45)])
    frames, container = decode(path)
    stream = container.streams.video[0]
    assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    assert (frames[0].width, frames[0].height) == (W, H)
    assert len(frames) == 45 == out.written
    assert [frame_number(f.to_ndarray(format="bgr24")) for f in frames] == list(range(45))
    assert min(psnr(f.to_ndarray(format="bgr24"), pattern(i)) for i, f in enumerate(frames)) >= 30
    if suffix != ".mkv":
        boxes = top_level_boxes(path)
        assert boxes.index("moov") < boxes.index("mdat"), boxes  # plays while downloading


def test_a_slow_show_records_real_time_not_the_nominal_rate(tmp_path: Path) -> None:
    """A dream at 5 fps records 5 frames per second of real time, held on screen, not 60 fps."""
    path = tmp_path / "slow.mp4"
    times = [500.0 + i / 5 for i in range(20)]  # 5 fps for 4 s, captured at these times
    record(path, times, fps=60)  # the show's rate cap is 60
    frames, container = decode(path)
    assert abs(len(frames) - 20) <= 1
    duration = float(frames[-1].time - frames[0].time) + 1 / 5
    assert duration == pytest.approx(4.0, abs=1 / 5), "within one frame of the real show's 4 s"
    assert float(container.streams.video[0].average_rate) == pytest.approx(5, abs=0.5)
    # a frame the dream took twice as long over is held twice as long
    uneven = tmp_path / "uneven.mkv"
    record(uneven, [0.0, 0.2, 0.6, 0.8], fps=60)
    frames, _ = decode(uneven)
    assert [round(float(f.time), 2) for f in frames] == [0.0, 0.2, 0.6, 0.8]


def test_each_packet_lasts_the_real_gap_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that probes by packet durations (FFmpeg) counts real seconds: a packet lasts the
    gap between its frame and the one before, not 1/rate (docs/architecture.md, "Two paces")."""
    from live.outputs import encoder

    muxed: list[float] = []
    real_mux = encoder._Session._mux

    def spy(self, packets):
        size = real_mux(self, packets)
        muxed.extend(float(p.duration * p.time_base) for p in packets)
        return size

    monkeypatch.setattr(encoder._Session, "_mux", spy)
    record(tmp_path / "gaps.mkv", [10.0, 10.2, 10.4, 10.5, 10.6], fps=30)
    assert muxed == pytest.approx([1 / 30, 0.2, 0.2, 0.1, 0.1], abs=1e-3)  # Matroska counts milliseconds


def test_odd_sizes_are_cropped_to_even(tmp_path: Path) -> None:
    path = tmp_path / "odd.mkv"
    out = EncoderOutput(path)
    out.open(321, 241, 30)
    img = pattern(3, 321, 241)
    out.send(img, 1.0)
    out.close()
    frames, _ = decode(path)
    assert (frames[0].width, frames[0].height) == (320, 240)
    assert psnr(frames[0].to_ndarray(format="bgr24"), img[:240, :320]) >= 30  # cropped, not scaled


def test_bad_recording_targets_are_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.avi.*use \.mp4, \.mov or \.mkv"):
        EncoderOutput(tmp_path / "show.avi")
    with pytest.raises(OutputError, match="does not exist"):
        EncoderOutput(tmp_path / "missing" / "show.mp4").open(W, H, 30)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root may write anywhere
            with pytest.raises(OutputError, match="not writable"):
                EncoderOutput(locked / "show.mp4").open(W, H, 30)
    finally:
        locked.chmod(0o700)
    with pytest.raises(UsageError, match="not in this FFmpeg build"):
        EncoderOutput(tmp_path / "x.mp4", EncoderSettings(codec="no_such_codec")).open(W, H, 30)
    assert not list(tmp_path.glob("*.mp4"))


def test_a_slow_encoder_drops_frames_and_never_slows_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from live.outputs import encoder

    real = encoder._Session.encode
    resume = threading.Event()

    def stalled(self, bgr, timestamp):  # a disk or network that stalls until the test lets it go on
        assert resume.wait(60), "the test never let the encoder go on"
        return real(self, bgr, timestamp)

    monkeypatch.setattr(encoder._Session, "encode", stalled)
    out = EncoderOutput(tmp_path / "slow.mkv", queue_size=2)
    out.open(W, H, 30)
    frame = pattern(0)
    with caplog.at_level(logging.WARNING):
        loop = threading.Thread(target=lambda: [out.send(frame, float(i) / 30) for i in range(40)])  # the show
        loop.start()
        loop.join(30)
        stuck = loop.is_alive()
        resume.set()
        loop.join()
        assert not stuck, "send waited for the stalled encoder: it must queue or drop, never wait"
        out.close()
    # the queue and the frame in the encoder's hands were kept; the rest dropped and counted
    assert out.dropped >= 40 - 3 and out.written + out.dropped == 40
    assert any("falling behind" in r.getMessage() for r in caplog.records)


def test_the_fanout_hands_capture_times_to_outputs_that_take_them(tmp_path: Path) -> None:
    from live.outputs import Output

    class Old(Output):  # written before timestamps existed
        def open(self, width, height, fps): pass
        def send(self, frame): self.sent += 1
        def close(self): pass

    old = Old("old")
    path = tmp_path / "fan.mkv"
    rec = EncoderOutput(path)
    with Fanout([old, rec]) as fan:
        fan.open(W, H, 30)
        for i in range(10):
            fan.send(pattern(i), 10.0 + i * 0.5)
            wait_for(lambda: rec._handoff.queue.qsize() == 0, 10)
    assert old.sent == 10 and old.healthy
    frames, _ = decode(path)
    assert float(frames[-1].time - frames[0].time) == pytest.approx(4.5, abs=0.04)


def test_the_record_switch_starts_a_new_time_named_file_each_time(tmp_path: Path) -> None:
    switch = RecordSwitch(tmp_path, ".mkv")
    switch.open(W, H, 30)
    assert switch.summary() == "recording: off"
    switch.send(pattern(0), 0.0)  # nothing recording: nothing happens
    first = switch.start()
    for i in range(5):
        switch.send(pattern(i), 1.0 + i / 30)
    assert switch.stop() == first
    second = switch.start()
    switch.send(pattern(9), 2.0)
    switch.close()
    assert first != second and first.name.startswith("deepdream-") and second.suffix == ".mkv"
    assert len(decode(first)[0]) >= 1 and len(decode(second)[0]) == 1
    assert timed_name(tmp_path, ".mkv", now=time.time()) not in (first, second)


# ----------------------------------------------------------------------------- crash safety
CHILD = textwrap.dedent("""
    import sys, time
    from live.outputs.encoder import EncoderOutput
    from tests.streaming import pattern
    out = EncoderOutput(sys.argv[1])
    out.open(320, 240, 30)
    t0 = time.monotonic()
    i = 0
    while True:
        out.send(pattern(i), t0 + i / 30)
        while out._handoff.queue.qsize():
            time.sleep(0.002)
        print(i, out.written, flush=True)
        i += 1
        time.sleep(max(0.0, t0 + i / 30 - time.monotonic()))
""")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_sigkill_mid_recording_keeps_all_but_the_last_second(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"killed{suffix}"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    encoded = -1
    try:
        for line in proc.stdout:
            encoded = int(line.split()[1])
            if encoded >= 75:  # 2.5 s of show encoded
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    frames, _ = decode(path)
    numbers = [frame_number(f.to_ndarray(format="bgr24")) for f in frames]
    assert numbers == list(range(len(numbers))), "every frame kept is whole and in order"
    assert len(numbers) >= encoded - 30, f"{len(numbers)} of {encoded} frames kept: lost more than a second"


def test_sigterm_mid_show_leaves_a_finished_playable_recording(tmp_path: Path) -> None:
    out = tmp_path / "show.mp4"
    exe = Path(sys.executable).with_name("deepdream-live")
    proc = subprocess.Popen(
        [str(exe), "run", "--source", "test-scene", "--no-window", "--record", str(out), "--weights", "random",
         "--size", "96x64", "--capture-size", "96x64", "--steps", "1", "--status-every", "1", "--no-osc",
         "--no-midi", "--no-web"],  # the test scene is drawn at the capture size: the outputs' size
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        recorded = False  # a status line whose recording has frames ("30 frames" counts, "0 frames" not)
        for line in proc.stderr:
            recorded = re.search(r"recording show\.mp4: \w+, \d+ kb/s, [1-9]\d* frames", line) is not None
            if recorded or time.monotonic() > deadline:
                break
        assert recorded, "no status line counted a recorded frame in 120 s"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    frames, container = decode(out)
    assert len(frames) >= 1 and (frames[0].width, frames[0].height) == (96, 64)
    assert container.duration is not None and container.duration > 0  # finished: the index is written
    boxes = top_level_boxes(out)
    assert boxes[-1] == "mfra", "the fragment index is written on a clean stop"


# ----------------------------------------------------------------------------- secrets
def test_stream_keys_and_passwords_are_masked() -> None:
    assert redact_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl") == "rtmp://a.rtmp.youtube.com/live2/****"
    assert redact_url("rtmps://user:hunter22@host:443/app/inst/key") == "rtmps://user:****@host:443/app/****"
    assert redact_url("srt://10.0.0.5:9000?mode=caller&passphrase=verysecret1&latency=200000") == \
        "srt://10.0.0.5:9000?mode=caller&passphrase=****&latency=200000"
    assert redact_url("udp://127.0.0.1:5000?pkt_size=1316") == "udp://127.0.0.1:5000?pkt_size=1316"
    assert redact("failed on 'rtmp://h/app/SECRETKEY99': refused") == "failed on 'rtmp://h/app/****': refused"
    target = parse_target("rtmp://h/app/SECRETKEY99")
    assert "SECRETKEY99" not in target.shown


def test_no_log_line_or_status_shows_a_stream_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.streaming import free_port

    key = "live_4815162342_SECRET"
    url = f"rtmp://127.0.0.1:{free_port()}/app/{key}"  # nothing listens: refused, retried, logged
    out = EncoderOutput(url, backoff=(0.2, 0.4))
    with caplog.at_level(logging.DEBUG):
        out.open(W, H, 30)
        for i in range(20):
            out.send(pattern(i), i / 30)
            time.sleep(0.02)
        assert wait_for(lambda: out.state == "offline", 20)
        text = out.summary() + str(out.stats())
        out.close()
    lines = [r.getMessage() for r in caplog.records]
    assert any("cannot connect" in line for line in lines)
    assert key not in "\n".join(lines) and key not in text
    assert "rtmp://127.0.0.1" in text and "/app/****" in text


def test_bitrates_parse_and_refuse() -> None:
    assert parse_bitrate("4500k") == 4_500_000 and parse_bitrate("6M") == 6_000_000 and parse_bitrate(2_000_000) == 2_000_000
    with pytest.raises(UsageError, match="100k..100M"):
        parse_bitrate("5")
    with pytest.raises(UsageError, match="expected bits per second"):
        parse_bitrate("fast")


def test_a_5_fps_show_records_its_real_time(tmp_path: Path, model) -> None:
    """The live loop on a 5 fps camera, fps_cap 60: the file lasts as long as the show did, each
    frame at its capture time (held while the dream was slow), never squeezed to 60 fps."""
    import torch

    from live.app import LiveLoop
    from live.backends.torch_backend import TorchBackend
    from live.control.params import Registry
    from live.outputs import Output
    from live.sources.testscene import TestSceneSource

    class Stamps(Output):
        def open(self, width, height, fps): self.times = []
        def send(self, frame, timestamp=None): self.times.append(timestamp)
        def close(self): pass

    registry = Registry()
    registry.update({"width": 64, "height": 64, "steps": 1, "fps_cap": 60})
    path, stamps = tmp_path / "show.mp4", Stamps("stamps")
    fan = Fanout([EncoderOutput(path), stamps])
    fan.open(64, 64, 60)
    with TestSceneSource(64, 64, 5).start() as camera, fan:
        report = LiveLoop(camera, model, TorchBackend(model, torch.device("cpu")), registry, fan,
                          status_every=3600).run(max_frames=12)
    frames, container = decode(path)
    assert len(frames) == report.frames == len(stamps.times) == 12
    shown = [t - stamps.times[0] for t in stamps.times]
    assert all(abs(float(f.time) - t) <= 1 / 60 for f, t in zip(frames, shown)), "each frame at its capture time"
    # A 5 fps camera: 11 frame periods, 2.2 s, less however late the first frame came on a busy
    # machine (the camera then catches up); far longer than 12 frames at 60 fps in any case.
    assert shown[-1] > 1.0
    rate = float(container.streams.video[0].average_rate)
    assert rate == pytest.approx(12 / (shown[-1] + 1 / 60), rel=0.1) and rate < 12, "the show's rate, not 60"
