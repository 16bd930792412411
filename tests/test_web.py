"""The web server over real sockets on loopback: what a page sends, sees and cannot do.

A websocket client (aiohttp's) stands in for the page here; the page itself, in Chromium, is
tested in test_web_page.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import torch

from live.app import LiveLoop
from live.backends.torch_backend import TorchBackend
from live.control.params import Registry
from live.control.presets import PresetStore
from live.outputs import Fanout
from live.sources import ImageSource
from live.web.preview import PreviewOutput
from live.web.server import APPLY_INTERVAL, FLOOD_BURST, WebServer
from tests.conftest import photo_path
from tests.streaming import wait_for


@pytest.fixture
def serve() -> Iterator[Callable[..., WebServer]]:
    """Start WebServers on free loopback ports; always closed, and no thread left behind."""
    servers: list[WebServer] = []

    def make(registry: Registry, **kw: Any) -> WebServer:
        kw.setdefault("port", 0)
        server = WebServer(registry, **kw).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
    assert not [t.name for t in threading.enumerate() if t.name in ("web-server", "web-mdns")]


def _ws_url(server: WebServer) -> str:
    return f"ws://127.0.0.1:{server.address[1]}/ws"


async def _receive_until(ws: aiohttp.ClientWebSocketResponse, want: Callable[[dict[str, Any]], bool],
                         timeout: float = 10.0) -> list[dict[str, Any]]:
    """Text messages up to and including the first that ``want`` accepts."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
        if msg.type == aiohttp.WSMsgType.TEXT:
            got.append(json.loads(msg.data))
            if want(got[-1]):
                return got
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            raise AssertionError(f"closed ({ws.close_code}) before the message; got {got[-5:]}")


def _value(name: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("type") == "values" and m["values"].get(name) == value


def test_a_page_opens_on_the_current_values_and_follows_every_change(serve) -> None:
    reg = Registry()
    reg.set("steps", 7, "osc")
    server = serve(reg)

    async def main() -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(_ws_url(server)) as ws:
            hello = (await _receive_until(ws, lambda m: m["type"] == "hello"))[-1]
            assert hello["values"]["steps"] == 7 and hello["values"]["layer"] == "inception4c"
            described = {p["name"]: p for p in hello["params"]}
            assert set(described) == set(reg.params)
            assert described["step_size"]["curve"] == "log" and described["steps"]["unit"] == "steps"
            assert [layer["name"] for layer in hello["layers"]][:2] == ["conv1", "conv2"]
            reg.set("feedback", 0.25, "midi")  # another controller moves a knob
            await _receive_until(ws, _value("feedback", 0.25))
            await ws.send_json({"op": "set", "name": "step_size", "norm": 1.0})
            await _receive_until(ws, _value("step_size", 32.0))
            await ws.send_json({"op": "channel", "value": 97})
            got = await _receive_until(ws, _value("channel", 97))
            assert got[-1]["values"]["objective"] == "inception4c:97"

    asyncio.run(main())
    assert reg.get("step_size") == 32.0 and str(reg.get("objective")) == "inception4c:97"


def test_refusals_come_back_to_the_page_and_change_nothing(serve, tmp_path: Path) -> None:
    reg = Registry()
    presets = PresetStore(reg, tmp_path / "presets")
    server = serve(reg, presets=presets)
    steps = reg.get("steps")

    async def main() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.ws_connect(_ws_url(server)) as ws:
            await _receive_until(ws, lambda m: m["type"] == "hello")
            errors = []
            for message in (
                {"op": "set", "name": "steps", "value": 99},  # out of range: refused, not clamped
                {"op": "set", "name": "stpes", "value": 2},
                {"op": "preset/save", "name": "../escape"},
                {"op": "preset/load", "name": "../../etc/passwd"},
                {"op": "layer", "value": "norm1"},  # a BVLC layer; this show runs torchvision
                {"op": "channel", "value": 512},
                {"op": "objective", "value": "inception9z"},
            ):
                await ws.send_json(message)
                errors.append((await _receive_until(ws, lambda m: m["type"] == "error"))[-1])
            await ws.send_str("not json")
            errors.append((await _receive_until(ws, lambda m: m["type"] == "error"))[-1])
            return errors

    errors = asyncio.run(main())
    text = [e["message"] for e in errors]
    assert "steps expects an integer 0..50 steps, got 99" in text[0]
    assert "unknown parameter 'stpes'" in text[1]
    assert "no paths" in text[2] and "no paths" in text[3]
    assert "norm1" in text[4] and "512" in text[5] and "inception9z" in text[6] and "JSON" in text[7]
    assert reg.get("steps") == steps and str(reg.get("objective")) == "inception4c"
    assert not any(tmp_path.rglob("*escape*")) and not (tmp_path / "escape.toml").exists()


def test_presets_saved_and_loaded_from_the_page(serve, tmp_path: Path) -> None:
    reg = Registry()
    presets = PresetStore(reg, tmp_path / "presets")
    server = serve(reg, presets=presets)

    async def main() -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(_ws_url(server)) as ws:
            await _receive_until(ws, lambda m: m["type"] == "hello")
            await ws.send_json({"op": "set", "name": "jitter", "value": 5})
            await _receive_until(ws, _value("jitter", 5))
            await ws.send_json({"op": "preset/save", "name": "calm"})
            await _receive_until(ws, lambda m: m["type"] == "presets" and "calm" in m["names"])
            reg.set("jitter", 30, "osc")
            await ws.send_json({"op": "preset/load", "name": "calm"})
            await _receive_until(ws, _value("jitter", 5))

    asyncio.run(main())
    assert (tmp_path / "presets" / "calm.toml").is_file()


def test_a_websocket_from_another_origin_is_refused(serve) -> None:
    reg = Registry()
    server = serve(reg)

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.ws_connect(_ws_url(server), origin="http://evil.example")
            assert refused.value.status == 403
            port = server.address[1]
            async with s.ws_connect(_ws_url(server), origin=f"http://127.0.0.1:{port}") as ws:
                await _receive_until(ws, lambda m: m["type"] == "hello")
            # DNS rebinding: a page from a name that resolves to 127.0.0.1
            async with s.get(f"http://127.0.0.1:{port}/api/status", headers={"Host": f"evil.example:{port}"}) as r:
                assert r.status == 403

    asyncio.run(main())
    assert server.counts["refused_403"] == 2


def _background_loop(model, registry: Registry, outputs: Fanout, on_frame: Callable[[int], None] | None = None
                     ) -> tuple[LiveLoop, threading.Event, threading.Thread]:
    loop = LiveLoop(ImageSource(photo_path()).start(), model, TorchBackend(model, torch.device("cpu")), registry, outputs,
                    status_every=3600)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), kwargs={"on_frame": on_frame}, daemon=True)
    thread.start()
    return loop, stop, thread


def test_a_flood_from_four_pages_leaves_the_show_dreaming_and_at_the_last_value(serve, model) -> None:
    """Four pages send 10,000 messages each at once, each within its own flood allowance: the loop
    goes on making frames while the web thread works through them (how many is up to the machine:
    none would be a frozen show), the writes are coalesced, and the last value sent wins."""
    reg = Registry()
    reg.update({"width": 64, "height": 64, "steps": 1, "fps_cap": 15}, "test")
    preview = PreviewOutput()
    outputs = Fanout([preview])
    outputs.open(64, 64, 15)
    server = serve(reg, preview=preview)
    handled: list[int] = []  # the messages handled so far, as each frame went out
    _, stop, thread = _background_loop(model, reg, outputs, on_frame=lambda n: handled.append(server.counts["messages"]))
    pages, each = 4, 10_000
    flood = pages * each
    try:
        assert wait_for(lambda: len(handled) >= 3, 60), "the show did not start"

        async def page(session: aiohttp.ClientSession, k: int) -> None:
            name = "feedback" if k == 0 else "mix"  # the others flood another fader
            async with session.ws_connect(_ws_url(server)) as ws:
                await _receive_until(ws, lambda m: m["type"] == "hello")
                for i in range(each):
                    await ws.send_str(json.dumps({"op": "set", "name": name, "norm": (i % 1000) / 1000}))
                while server.counts["messages"] < flood:  # all four floods handled
                    await asyncio.sleep(0.01)
                if k == 0:
                    await ws.send_json({"op": "set", "name": "feedback", "value": 0.123})
                    await _receive_until(ws, _value("feedback", 0.123), timeout=30)

        async def main() -> None:
            async with aiohttp.ClientSession() as session:
                await asyncio.gather(*(page(session, k) for k in range(pages)))

        began = time.monotonic()
        asyncio.run(main())
        took = time.monotonic() - began
        during = sum(1 for n in handled if 0 < n < flood)
        after = len(handled)
        assert wait_for(lambda: len(handled) >= after + 2, 60), "the show stopped after the flood"
    finally:
        stop.set()
        thread.join(30)
        outputs.close()
    assert reg.get("feedback") == 0.123  # the last value won
    assert server.counts["messages"] == flood + 1 and server.counts["dropped_flooding"] == 0
    # coalesced, not 40,001 registry writes: one round of writes per APPLY_INTERVAL at most, a write
    # per fader in each (the rounds a busy machine fits in are its own affair)
    assert server.counts["applied"] <= 2 * (took / APPLY_INTERVAL + 1)
    # frames went out while the web thread parsed the flood (about 5 here on a quiet machine)
    assert during >= 2, f"{during} frames while {flood} messages were handled"


def test_a_flooding_page_is_dropped(serve) -> None:
    reg = Registry()
    server = serve(reg)

    async def main() -> int | None:
        async with aiohttp.ClientSession() as s, s.ws_connect(_ws_url(server)) as ws:
            await _receive_until(ws, lambda m: m["type"] == "hello")
            message = json.dumps({"op": "set", "name": "jitter", "value": 3})
            try:
                for _ in range(3 * FLOOD_BURST):
                    await ws.send_str(message)
            except (ConnectionError, RuntimeError):
                pass
            while (await ws.receive(timeout=30)).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                pass
            return ws.close_code

    assert asyncio.run(main()) == 1008
    assert server.counts["dropped_flooding"] == 1 and reg.get("jitter") == 3


def test_a_page_that_stops_reading_is_dropped_and_others_go_on(serve) -> None:
    reg = Registry()
    preview = PreviewOutput()
    preview.send(np.full((90, 160, 3), 128, np.uint8))
    server = serve(reg, preview=preview, stall_seconds=1.0)

    async def main() -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(_ws_url(server)) as stalled, \
                s.ws_connect(_ws_url(server)) as healthy:
            await stalled.send_json({"op": "preview", "on": True})  # then never acknowledges a frame
            deadline = time.monotonic() + 20
            while server.counts["dropped_stalled"] < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert server.counts["dropped_stalled"] == 1
            reg.set("mix", 0.5, "osc")
            await _receive_until(healthy, _value("mix", 0.5))

    asyncio.run(main())


def test_the_preview_is_encoded_off_the_loop_only_while_a_page_watches(serve) -> None:
    reg = Registry()
    preview = PreviewOutput()
    preview.open(1280, 720, 30)
    server = serve(reg, preview=preview)
    big = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), np.uint8)
    threads: set[str] = set()

    async def main() -> list[bytes]:
        async with aiohttp.ClientSession() as s, s.ws_connect(_ws_url(server)) as ws:
            await _receive_until(ws, lambda m: m["type"] == "hello")
            for i in range(5):
                preview.send(big)
                assert preview.latest()[1] is big  # the loop hands over a reference: no copy, no encode
                await asyncio.sleep(0.1)
            assert server.counts["frames_encoded"] == 0  # no page asked for the preview
            await ws.send_json({"op": "preview", "on": True})
            frames = []
            while len(frames) < 3:
                preview.send(np.roll(big, len(frames) * 7, axis=1))
                msg = await ws.receive(timeout=20)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    frames.append(msg.data)
                    threads.update(t.name for t in threading.enumerate())
                    await ws.send_json({"op": "ack"})
            return frames

    import cv2

    frames = asyncio.run(main())
    decoded = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for f in frames]
    assert all(d.shape == (360, 640, 3) for d in decoded)  # reduced to 640 px wide
    assert not np.array_equal(decoded[0], decoded[1])
    assert any(name.startswith("web-encode") for name in threads)
    assert preview.sent == 8  # the loop's side only handed over references


def test_a_page_that_opens_later_gets_the_newest_frame_not_an_old_one(serve) -> None:
    import cv2

    reg = Registry()
    preview = PreviewOutput()
    server = serve(reg, preview=preview)
    old, new = np.zeros((90, 160, 3), np.uint8), np.full((90, 160, 3), 255, np.uint8)

    async def first_frame() -> np.ndarray:
        async with aiohttp.ClientSession() as s, s.ws_connect(_ws_url(server)) as ws:
            await ws.send_json({"op": "preview", "on": True})
            while True:
                msg = await ws.receive(timeout=20)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    return cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_GRAYSCALE)

    preview.send(old)
    assert asyncio.run(first_frame()).mean() < 10
    preview.send(new)  # the show moved on while no page watched
    time.sleep(0.5)
    assert asyncio.run(first_frame()).mean() > 245
    preview.send_placeholder("loading the network")  # a placeholder that stays: still sent to a new page
    time.sleep(0.5)
    assert 10 < asyncio.run(first_frame()).mean() < 100
