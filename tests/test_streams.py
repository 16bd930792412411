"""Streams out, against real servers started here on loopback: a UDP/MPEG-TS receiver and an SRT
listener made with PyAV (SRT through libsrt: PyAV's FFmpeg has no SRT), and nginx with its RTMP
module. The show streams a moving test pattern; the receiver decodes it back and checks the
count, the size, each picture (PSNR) and the glass-to-stream latency. Then the server goes away
in the middle, and comes back."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import av
import pytest

from live.outputs.encoder import EncoderOutput, EncoderSettings
from tests.streaming import Nginx, Receiver, free_port, pattern, psnr, wait_for

W, H, FPS = 320, 240, 30
N = 90  # three seconds of show


def play(out: EncoderOutput, first: int, count: int, fps: float = FPS,
         costs: list[float] | None = None) -> tuple[dict[int, float], float]:
    """Send frames ``first..first+count-1`` at ``fps`` in real time; returns when each frame the
    encoder took was shown (one it dropped, counted, because this busy machine starved its
    thread, is not expected at the receiver) and the longest ``send`` call (what the show pays).
    ``costs``, if given, gets every ``send`` call's duration."""
    shown, worst = {}, 0.0
    start = time.monotonic()
    for k in range(count):
        i = first + k
        due = start + k / fps
        time.sleep(max(0.0, due - time.monotonic()))
        now = time.monotonic()
        dropped = out.dropped
        t = time.perf_counter()
        out.send(pattern(i, W, H), now)
        cost = time.perf_counter() - t
        worst = max(worst, cost)
        if costs is not None:
            costs.append(cost)
        if out.dropped == dropped:
            shown[i] = now
    return shown, worst


def check_received(rx: Receiver, shown: dict[int, float]) -> float:
    """≥ 90 % of the frames, the right size, each matching what was sent; the median latency."""
    got = {n: (t, img) for t, n, img in rx.frames if n in shown}
    assert len(shown) >= 10, "the encoder took too few frames to judge"
    assert len(got) >= 0.9 * len(shown), f"{len(got)} of {len(shown)} frames arrived"
    for n, (_, img) in got.items():
        assert img.shape == (H, W, 3)
        assert psnr(img, pattern(n, W, H)) >= 30, f"frame {n} does not match what was sent"
    return statistics.median(t - shown[n] for n, (t, _) in got.items())


def assert_send_never_waits(costs: list[float]) -> None:
    """What a frame costs the show: typically well under a frame's time, and never a wait on the
    network (a connect or a timeout takes seconds). A single slow call is the machine's doing."""
    assert statistics.median(costs) < 1 / FPS, f"median send {1e3 * statistics.median(costs):.1f} ms"
    assert max(costs) < 1.0, f"a send took {max(costs):.2f} s: it waited"


def low_latency() -> EncoderSettings:
    return EncoderSettings(bitrate=3_000_000, keyframe_seconds=1.0)


# ----------------------------------------------------------------------------- UDP
def test_udp_mpegts_stream_is_received_whole_and_fast() -> None:
    port = free_port(kind=2)  # SOCK_DGRAM
    rx = Receiver(lambda: av.open(f"udp://127.0.0.1:{port}?fifo_size=100000&overrun_nonfatal=1", format="mpegts",
                                  options={"probesize": "32768", "analyzeduration": "0"},
                                  timeout=30))

    def bound() -> bool:
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return True
        return False

    assert wait_for(bound, 30), "the receiver did not bind"
    out = EncoderOutput(f"udp://127.0.0.1:{port}", low_latency())
    out.open(W, H, FPS)
    try:
        assert wait_for(lambda: out.state == "live", 30)
        costs: list[float] = []
        shown, worst = play(out, 0, N, costs=costs)
        assert wait_for(lambda: any(n >= N - 5 for _, n, _ in rx.frames), 30)  # the receiver holds the last one or two
    finally:
        out.close()
    latency = check_received(rx, {n: t for n, t in shown.items() if n >= FPS})  # after the receiver's probe
    print(f"\nUDP glass-to-stream latency (median) {1e3 * latency:.0f} ms; longest send {1e3 * worst:.1f} ms")
    assert latency <= 0.300
    assert_send_never_waits(costs)


# ----------------------------------------------------------------------------- SRT
SECRET = "averysecretphrase"


def _srt_listener(port: int):
    from live.outputs.srt import SrtReader, SrtSocket

    listener = SrtSocket()
    listener.configure({"latency": "20000", "passphrase": SECRET})  # encrypted, as over the Internet
    listener.listen("127.0.0.1", port)

    accepted = []

    def open_container():
        accepted.append(listener.accept())
        return av.open(SrtReader(accepted[-1]), format="mpegts", options={"probesize": "32768", "analyzeduration": "0"})

    def close() -> None:  # the receiver goes away: its connection and its port
        for conn in accepted:
            conn.close()
        listener.close()

    listener.close_all = close
    return listener, open_container


@pytest.fixture
def libsrt():
    from live.errors import UnavailableError
    from live.outputs.srt import load_libsrt

    try:
        return load_libsrt()
    except UnavailableError as e:
        pytest.skip(str(e))


def test_srt_stream_is_received_whole_fast_and_survives_the_receiver_leaving(libsrt, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port(kind=2)
    listener, opener = _srt_listener(port)
    rx = Receiver(opener)
    out = EncoderOutput(f"srt://127.0.0.1:{port}?latency=20000&passphrase={SECRET}", low_latency(),
                        backoff=(1.0, 4.0))
    out.open(W, H, FPS)
    try:
        assert wait_for(lambda: out.state == "live", 30)
        costs: list[float] = []
        shown, worst = play(out, 0, N, costs=costs)
        assert wait_for(lambda: any(n >= N - 3 for _, n, _ in rx.frames), 30)
        latency = check_received(rx, {n: t for n, t in shown.items() if n >= FPS // 2})
        print(f"\nSRT glass-to-stream latency (median) {1e3 * latency:.0f} ms; longest send {1e3 * worst:.1f} ms")
        assert latency <= 0.300
        assert_send_never_waits(costs)

        # the receiver goes away: the show goes on at its rate, the loss is logged once
        with caplog.at_level(logging.INFO, logger="live.outputs.encoder"):
            listener.close_all()
            rx.join(10)
            gone: list[float] = []
            play(out, N, 3 * FPS, costs=gone)
            assert_send_never_waits(gone)  # the show kept its frame rate
            assert wait_for(lambda: out.state == "offline", 20)
            # ... and comes back on the same port
            listener, opener = _srt_listener(port)
            rx2 = Receiver(opener)
            back = time.monotonic()
            while time.monotonic() - back < 30 and not rx2.frames:
                play(out, 1000, 10)
            assert rx2.frames, "streaming again within 30 s of the receiver's return"
        lost = [r for r in caplog.records if " lost: " in r.getMessage() or "cannot connect" in r.getMessage()]
        returned = [r for r in caplog.records if "is back after" in r.getMessage()]
        assert len(lost) == 1 and len(returned) == 1, [r.getMessage() for r in caplog.records]
        assert SECRET not in caplog.text and "passphrase=****" in caplog.text
    finally:
        out.close()
        listener.close_all()


# ----------------------------------------------------------------------------- RTMP
@pytest.fixture
def nginx(tmp_path: Path):
    why = Nginx.missing()
    if why:
        pytest.skip(why)
    server = Nginx(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


def test_rtmp_through_nginx_survives_a_server_restart(nginx: Nginx, caplog: pytest.LogCaptureFixture) -> None:
    key = "stream-key-0123456789"
    url = f"rtmp://127.0.0.1:{nginx.port}/live/{key}"
    rx = Receiver(lambda: av.open(url, options={"rtmp_live": "live"}, timeout=30))
    out = EncoderOutput(url, low_latency(), backoff=(1.0, 4.0))
    with caplog.at_level(logging.INFO):
        out.open(W, H, FPS)
        try:
            assert wait_for(lambda: out.state == "live", 30)
            costs: list[float] = []
            shown, _ = play(out, 0, N, costs=costs)
            # A show keeps sending while a player starts up (its probe reads seconds of stream
            # before the first picture): so does this one, half a second at a time, until the
            # player has caught up with what was sent.
            sent, deadline = N, time.monotonic() + 60
            while not wait_for(lambda: any(n >= sent - 3 for _, n, _ in rx.frames), 0.5):
                assert time.monotonic() < deadline, rx.error or "the player never caught up"
                more, _ = play(out, sent, FPS // 2, costs=costs)
                shown.update(more)
                sent += FPS // 2
            check_received(rx, {n: t for n, t in shown.items() if n >= 2 * FPS})  # after the player joined
            assert_send_never_waits(costs)

            nginx.stop()  # the server goes away mid-stream
            gone: list[float] = []
            play(out, N, 3 * FPS, costs=gone)
            assert_send_never_waits(gone)  # the show kept its frame rate while the server was gone
            assert wait_for(lambda: out.state == "offline", 20)
            nginx.start()
            returned = time.monotonic()
            assert wait_for(lambda: (play(out, 2000, 5) and out.state == "live"), 30), "back within 30 s"
            assert time.monotonic() - returned <= 30
            rx2 = Receiver(lambda: av.open(url, options={"rtmp_live": "live"}, timeout=30))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not rx2.frames:
                play(out, 3000, 10)
            assert rx2.frames, "a player sees the stream again"
        finally:
            out.close()
    lines = [r.getMessage() for r in caplog.records]
    assert sum(" lost: " in line for line in lines) == 1 and sum("is back after" in line for line in lines) == 1, lines
    assert key not in caplog.text, "the stream key never reaches the log"
    assert out.reconnects == 1
