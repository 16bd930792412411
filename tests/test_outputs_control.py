"""Encoder outputs as an operator drives them: the site config's [outputs], OSC record start/stop
and stream enable, status and `check` listing each output (keys masked), and NDI out up to the
binding's boundary (a fake NDIlib: a real sender would announce itself beyond loopback)."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from pythonosc.udp_client import SimpleUDPClient

from live.app import ShowOptions, _output_actions, build_outputs, run_show
from live.check import CheckOptions, check_outputs
from live.control.osc import OscServer
from live.control.params import Registry
from live.errors import UsageError
from live.outputs import Fanout, Output
from live.outputs.encoder import EncoderOutput
from live.outputs.ndi import NdiOutput
from live.outputs.switch import RecordSwitch
from live.site import diff, parse_site
from tests.streaming import free_port, pattern, wait_for

KEY = "sk_live_SECRET_0042"


# ----------------------------------------------------------------------------- site config
def test_site_config_outputs_streams_and_ndi(tmp_path: Path) -> None:
    site = parse_site({"outputs": {"record": "rec/show.mkv", "record_dir": "rec", "record_bitrate": "8M",
                                   "stream": [f"rtmp://live.example/app/{KEY}", "udp://127.0.0.1:5000"],
                                   "stream_bitrate": "3500k", "keyframe_interval": 1, "ndi": "dream"}},
                      tmp_path / "site.toml")
    opts = site.show_options()
    assert opts["streams"] == (f"rtmp://live.example/app/{KEY}", "udp://127.0.0.1:5000")
    assert opts["stream_bitrate"] == 3_500_000 and opts["record_bitrate"] == 8_000_000
    assert opts["keyframe_seconds"] == 1.0 and opts["ndi"] == "dream"
    assert opts["record_dir"] == tmp_path / "rec"
    show = ShowOptions(**{k: v for k, v in opts.items()})
    assert show.streams[0].endswith(KEY)

    with pytest.raises(UsageError) as bad:
        parse_site({"outputs": {"stream": [f"ftp://host/app/{KEY}?token={KEY}"], "record_bitrate": "fast"}})
    assert "unsupported scheme ftp://" in str(bad.value) and "record_bitrate" in str(bad.value)
    assert KEY not in str(bad.value)

    other = parse_site({"outputs": {"stream": [f"rtmp://live.example/app/{KEY}x"]}})
    lines = diff(site, other)
    assert any(line.startswith("outputs.stream:") for line in lines)
    assert KEY not in "\n".join(lines), "the reload log masks keys"


# ----------------------------------------------------------------------------- OSC
def test_osc_starts_and_stops_recordings_and_switches_streams(tmp_path: Path) -> None:
    udp = free_port(kind=2)
    fan = build_outputs(ShowOptions(window=False, record_dir=tmp_path, streams=(f"udp://127.0.0.1:{udp}",)))
    switch = next(o for o in fan.outputs if isinstance(o, RecordSwitch))
    stream = next(o for o in fan.outputs if isinstance(o, EncoderOutput))
    registry = Registry()
    with fan, OscServer(registry, "127.0.0.1", 0, actions=_output_actions(fan), status_every=0) as osc:
        fan.open(160, 120, 30)
        client = SimpleUDPClient("127.0.0.1", osc.address[1])
        assert wait_for(lambda: stream.state == "live", 30)
        stop = threading.Event()

        def show() -> None:  # the loop: a frame every 20 ms, whatever happens
            i = 0
            while not stop.is_set():
                fan.send(pattern(i, 160, 120), time.monotonic())
                i += 1
                time.sleep(0.02)

        loop = threading.Thread(target=show)
        loop.start()
        try:
            client.send_message("/dream/record/start", [])
            assert wait_for(lambda: switch.recording is not None and switch.recording.written >= 5, 30)
            first = switch.recording.target.path
            client.send_message("/dream/record/start", 0)  # a button's release: no second take
            client.send_message("/dream/record/start", 1)
            assert wait_for(lambda: switch.recording is not None and switch.recording.target.path != first, 30)
            client.send_message("/dream/record/stop", [])
            assert wait_for(lambda: switch.recording is None, 30)
            client.send_message("/dream/stream/1/enable", 0)
            assert wait_for(lambda: stream.state == "disabled", 30), (stream.state, osc.stats)
            # frames queued before the switch are encoded or discarded; nothing is in flight after
            assert wait_for(lambda: stream.written + stream.discarded == stream.sent, 30)
            written = stream.written
            time.sleep(0.3)  # the show goes on sending meanwhile
            assert stream.written == written, "a disabled stream encodes nothing"
            client.send_message("/dream/stream/1/enable", "on")
            assert wait_for(lambda: stream.state == "live" and stream.written > written, 30)
            client.send_message("/dream/stream/2/enable", 1)  # no such stream: refused, counted
            client.send_message("/dream/stream/1/enable", "maybe")  # bad argument: refused, counted
            assert wait_for(lambda: osc.stats["errors"].get("unknown_address") == 1
                            and osc.stats["errors"].get("bad_args") == 1, 10)
        finally:
            stop.set()
            loop.join()
    files = sorted(tmp_path.glob("deepdream-*.mp4"))
    assert len(files) == 2 and all(f.stat().st_size > 0 for f in files)


# ----------------------------------------------------------------------------- status and check
def test_status_and_check_list_each_output_without_its_key(tmp_path: Path, checkpoint: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    dead = free_port()
    url = f"rtmp://127.0.0.1:{dead}/app/{KEY}"  # nothing listens: the stream is offline
    osc_port = free_port(kind=2)
    registry = Registry()
    registry.update({"width": 64, "height": 64, "steps": 1, "fps_cap": 10})
    opts = ShowOptions(source="test-scene", window=False, weights=str(checkpoint), streams=(url,),
                       record=tmp_path / "show.mkv", osc_port=osc_port, midi=False, status_every=0.5)
    stop = threading.Event()
    result: dict[str, object] = {}
    with caplog.at_level(logging.INFO):
        show = threading.Thread(target=lambda: result.update(report=run_show(opts, registry, stop)))
        show.start()
        try:
            lines: list[str] = []

            def listed() -> bool:
                lines[:] = [f"{r.name}: {r.detail}" for r in check_outputs(
                    CheckOptions(osc_port=osc_port, streams=(url,), record=tmp_path / "show.mkv"))]
                return any(line.startswith("running: stream 1") and "offline" in line for line in lines)

            assert wait_for(listed, 120, step=0.5), lines
        finally:
            stop.set()
            show.join(60)
    text = "\n".join(lines)
    # both paces: frames out and dreams made a second, the dream's age, the latency
    assert re.search(r"running: show: every camera frame: [\d.]+ fps out, dreaming [\d.]+ a second, dream age "
                     r"(-|\d+ ms), latency \d+ ms", text), text
    assert "running: recording show.mkv" in text and "kb/s" in text and "dropped" in text
    assert "stream 1: rtmp://127.0.0.1" in text and "/app/****" in text
    assert KEY not in text and KEY not in caplog.text, "no check line or log line holds the key"


def test_check_says_what_each_output_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    results = {r.name: r for r in check_outputs(CheckOptions(streams=("srt://10.0.0.5:9000?passphrase=0123456789abc",
                                                                      "gopher://x/y"), ndi="dream"))}
    assert results["encoder"].ok and "libx264 present" in results["encoder"].detail
    assert results["stream 2"].ok is False and "unsupported scheme" in results["stream 2"].detail
    srt = results["stream 1"]
    assert "passphrase=****" in srt.detail and "0123456789abc" not in srt.detail
    assert srt.ok is True and "libsrt" in srt.detail or srt.ok is False and "apt install libsrt" in srt.fix
    assert "ndi dream" in results


# ----------------------------------------------------------------------------- NDI
class FakeNdi(types.ModuleType):
    """The slice of ndi-python's API the output uses, keeping what it is handed."""

    FOURCC_VIDEO_TYPE_BGRX = "BGRX"
    FRAME_FORMAT_TYPE_PROGRESSIVE = "progressive"

    def __init__(self) -> None:
        super().__init__("NDIlib")
        self.created: list[object] = []
        self.sent: list[dict[str, object]] = []
        self.destroyed = 0

    def initialize(self) -> bool:
        return True

    class SendCreate:
        def __init__(self, p_ndi_name=None, p_groups=None, clock_video=True, clock_audio=True):
            self.p_ndi_name, self.clock_video = p_ndi_name, clock_video

    class VideoFrameV2:
        pass

    def send_create(self, settings):
        self.created.append(settings)
        return object()

    def send_send_video_v2(self, sender, frame):
        self.sent.append({k: getattr(frame, k) for k in ("xres", "yres", "FourCC", "frame_rate_N", "frame_rate_D",
                                                         "line_stride_in_bytes", "timecode")} | {"data": frame.data.copy()})

    def send_get_no_connections(self, sender, timeout):
        return 0

    def send_destroy(self, sender):
        self.destroyed += 1


def test_ndi_sends_bgrx_frames_at_the_show_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNdi()
    monkeypatch.setitem(sys.modules, "NDIlib", fake)
    out = NdiOutput("deepdream test")
    out.open(64, 48, 30)
    frame = pattern(5, 64, 48)
    out.send(frame, 100.0)
    assert wait_for(lambda: fake.sent, 10)
    out.close()
    assert fake.created[0].p_ndi_name == "deepdream test" and fake.created[0].clock_video is False
    sent = fake.sent[0]
    assert (sent["xres"], sent["yres"], sent["FourCC"]) == (64, 48, "BGRX")
    assert (sent["frame_rate_N"], sent["frame_rate_D"]) == (30, 1) and sent["line_stride_in_bytes"] == 64 * 4
    assert np.array_equal(sent["data"][..., :3], frame) and (sent["data"][..., 3] == 255).all()
    assert fake.destroyed == 1


def test_without_the_ndi_runtime_the_show_goes_on(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "NDIlib", None)  # not installed

    class Collect(Output):
        def open(self, width, height, fps): pass
        def send(self, frame, timestamp=None): self.sent += 1
        def close(self): pass

    other = Collect("window")
    with caplog.at_level(logging.WARNING), Fanout([NdiOutput("dream"), other]) as fan:
        fan.open(64, 48, 30)
        for i in range(3):
            fan.send(pattern(i, 64, 48), float(i))
    assert other.sent == 3
    ndi_lines = [r.getMessage() for r in caplog.records if "NDI" in r.getMessage()]
    assert len(ndi_lines) == 1 and "pip install 'deepdream-live[ndi]'" in ndi_lines[0]


def test_the_real_binding_has_what_the_output_uses() -> None:
    ndi = pytest.importorskip("NDIlib", reason="ndi-python is not installed (the ndi extra)")
    for name in ("initialize", "send_create", "send_send_video_v2", "send_destroy", "send_get_no_connections",
                 "SendCreate", "VideoFrameV2", "FOURCC_VIDEO_TYPE_BGRX", "FRAME_FORMAT_TYPE_PROGRESSIVE"):
        assert hasattr(ndi, name), name
    frame = ndi.VideoFrameV2()  # no sender is created: that would announce itself on the network
    for field in ("xres", "yres", "FourCC", "frame_rate_N", "frame_rate_D", "line_stride_in_bytes", "timecode", "data"):
        assert hasattr(frame, field), field


def test_the_readme_osc_table_is_the_generated_one() -> None:
    from live.control.osc_reference import address_table_markdown

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = address_table_markdown()
    assert table in readme, "README's OSC table is stale: regenerate it from live/control/osc_reference.py"
    for address in ("/dream/record/start", "/dream/record/stop", "/dream/stream/<n>/enable"):
        assert f"`{address}`" in table
