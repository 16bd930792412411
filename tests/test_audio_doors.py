"""The sound's doors: OSC (read-only nodes, queries, feedback on request, map editing), OSCQuery,
the web page, the mapping file, the site config and the command line; fuzzed where hostile."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg

from live.audio import testsignals as ts
from live.audio.engine import AudioEngine
from live.audio.features import NODE_FEATURES
from live.audio.mapping import MAX_FILE_BYTES, AudioMapping, parse_text, resolve_mapping
from live.audio.oscdoor import AUDIO_METHODS, AudioOsc
from live.audio.webdoor import AudioWeb
from live.control.osc import OscServer
from live.control.osc_space import accepted_addresses
from live.control.params import Registry
from live.errors import DataError, LiveError, UsageError
from live.web.oscquery import Namespace
from live.web.server import WebServer

BLOCK = 256


def engine_with_music(tmp_path: Path | None = None) -> AudioEngine:
    reg = Registry()
    engine = AudioEngine(reg, None, resolve_mapping("bass-zoom", reg),
                         mapping_path=tmp_path / "audio.toml" if tmp_path else None)
    samples = ts.drum_pattern(120, 2.0, noise_db=-40).samples
    for i in range(0, len(samples) - BLOCK + 1, BLOCK):
        engine.process(samples[i:i + BLOCK])
    return engine


class Client:
    """A controller: sends from its own port, listens there for replies."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)

    def send(self, address: str, *args: Any) -> None:
        self.sock.sendto(build_msg(address, list(args)).dgram, self.server)

    def receive(self, want, timeout: float = 10.0) -> list[tuple[str, list[Any]]]:
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            m = OscMessage(data)
            got.append((m.address, list(m.params)))
            if want(got[-1]):
                return got
        raise AssertionError(f"no such reply; got {got[-5:]}")


@pytest.fixture
def show(tmp_path: Path):
    engine = engine_with_music(tmp_path)
    door = AudioOsc(engine)
    with OscServer(engine.registry, "127.0.0.1", 0, routes=door.routes(), status_every=0) as osc:
        yield engine, door, osc
    door.close()
    engine.mapper.close()


def test_every_audio_address_is_routed_and_described(show) -> None:
    engine, door, osc = show
    routed = set(osc.routes)
    assert routed == set(accepted_addresses(engine.registry.params.values(), audio=True))
    assert {f"/dream/audio/{n}" for n in NODE_FEATURES} <= routed
    assert len(AUDIO_METHODS) == len(door.routes())


def test_feature_nodes_are_read_only_and_answer_queries(show) -> None:
    engine, door, osc = show
    c = Client(osc.address)
    c.send("/dream/audio/bpm")
    _, args = c.receive(lambda m: m[0] == "/dream/audio/bpm")[-1]
    assert abs(args[0] - engine.features.bpm) < 1e-3
    c.send("/dream/audio/low", 3.0)  # read-only: refused and answered
    address, why = c.receive(lambda m: m[0] == "/dream/error")[-1]
    assert why[0] == "/dream/audio/low" and "read-only" in why[1]
    c.send("/dream/audio/query")
    got = c.receive(lambda m: m[0] == "/dream/audio/confidence")
    assert {a for a, _ in got} >= {f"/dream/audio/{n}" for n in NODE_FEATURES}
    c.send("/dream/audio/query", "bass")
    assert "no feature 'bass'" in c.receive(lambda m: m[0] == "/dream/error")[-1][1][1]


def test_feedback_on_request_streams_the_features_until_stopped(show) -> None:
    engine, door, osc = show
    c = Client(osc.address)
    c.send("/dream/audio/feedback", 30.0)
    got = c.receive(lambda m: m[0] == "/dream/audio/confidence")  # the last of a round
    assert {a for a, _ in got} >= {f"/dream/audio/{n}" for n in NODE_FEATURES}
    c.send("/dream/audio/feedback", 0)
    time.sleep(0.3)
    c.sock.settimeout(0.3)
    drained = 0
    try:
        while True:
            c.sock.recvfrom(65536)
            drained += 1
    except TimeoutError:
        pass
    sent = door.sent
    time.sleep(0.3)
    assert door.sent == sent  # stopped
    c.sock.settimeout(5)
    c.send("/dream/audio/feedback", 1000.0)
    assert "out of range" in c.receive(lambda m: m[0] == "/dream/error")[-1][1][1]


def test_maps_are_edited_over_osc_and_refused_out_of_range(show, tmp_path: Path) -> None:
    engine, door, osc = show
    c = Client(osc.address)
    c.send("/dream/audio/map", "mid", "rotate", "add", 0.0, 2.0)
    c.send("/dream/audio/query", "level")  # a reply after the map: the map was handled by then
    c.receive(lambda m: m[0] == "/dream/audio/level")
    assert any(m.param == "rotate" and m.max == 2.0 for m in engine.mapper.mapping.maps)
    c.send("/dream/audio/map", "mid", "rotate", "set", 0.0, 50.0)
    assert "expected within rotate's range -5..5" in c.receive(lambda m: m[0] == "/dream/error")[-1][1][1]
    c.send("/dream/audio/unmap", "zoom")
    c.send("/dream/audio/save")
    c.send("/dream/audio/query", "level")
    c.receive(lambda m: m[0] == "/dream/audio/level")
    saved = (tmp_path / "audio.toml").read_text()
    assert "rotate" in saved and '"zoom"' not in saved
    c.send("/dream/audio/mapping", "../../etc/passwd")
    assert "no paths" in c.receive(lambda m: m[0] == "/dream/error")[-1][1][1]
    c.send("/dream/audio/mapping", "kick-reset")
    c.send("/dream/audio/query", "level")
    c.receive(lambda m: m[0] == "/dream/audio/level")
    assert engine.mapper.mapping.triggers[0].action == "reset"


osc_args = st.lists(st.one_of(st.none(), st.booleans(), st.integers(-2**31, 2**31 - 1),
                              st.floats(allow_nan=True, allow_infinity=True, width=32), st.text(max_size=80),
                              st.binary(max_size=40)), max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from([m[0] for m in AUDIO_METHODS]), args=osc_args)
def test_fuzz_the_audio_osc_door_refuses_cleanly(name: str, args: list[Any]) -> None:
    """Every handler, any arguments an OSC message can carry: a reply, nothing, or a UsageError;
    never another exception, and the mapping in force always still checks."""
    engine = FUZZ_ENGINE
    handler = FUZZ_DOOR.routes()[name]
    try:
        reply = handler(("127.0.0.1", 9), f"/dream/{name}", tuple(args))
    except UsageError:
        reply = None
    except LiveError as e:  # saving without a file, a mapping file missing: said, not crashed
        assert isinstance(e, (UsageError, DataError)) or "audio mapping" in str(e)
        reply = None
    if reply:
        assert all(isinstance(v[0], float) and np.isfinite(v[0]) for v in reply.values())
    mapping = engine.mapper.mapping
    assert len(mapping.maps) <= 64
    parse_text("", engine.registry)  # the registry is still whole
    for m in mapping.maps:
        p = engine.registry.params[m.param]
        assert p.kind in ("float", "int")


FUZZ_ENGINE = engine_with_music()
FUZZ_DOOR = AudioOsc(FUZZ_ENGINE)


def test_fuzz_raw_datagrams_at_the_audio_addresses_never_stop_the_server(show) -> None:
    engine, door, osc = show
    rng = np.random.default_rng(7)
    c = Client(osc.address)
    for k in range(300):
        name = AUDIO_METHODS[k % len(AUDIO_METHODS)][0]
        head = build_msg(f"/dream/{name}", []).dgram
        c.sock.sendto(head[: rng.integers(0, len(head))] + rng.bytes(int(rng.integers(0, 64))), osc.address)
    c.send("/dream/audio/bpm")
    assert c.receive(lambda m: m[0] == "/dream/audio/bpm", timeout=20)


# ----------------------------------------------------------------------------- the mapping file door

toml_values = st.recursive(
    st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, width=32), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
keys = st.sampled_from(["feature", "param", "mode", "min", "max", "in_min", "in_max", "curve", "smooth_ms", "on",
                        "every", "action", "presets", "seconds", "quantise", "confidence", "map", "trigger", "x"])


@settings(max_examples=120, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["map", "trigger", "confidence", "other"]),
                           st.one_of(toml_values, st.lists(st.dictionaries(keys, toml_values, max_size=8), max_size=5)),
                           max_size=3))
def test_fuzz_the_mapping_document_is_checked_or_refused_never_crashes(doc: dict[str, Any]) -> None:
    import tomli_w

    reg = Registry()
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return  # not expressible in TOML
    try:
        mapping = parse_text(text, reg)
    except DataError as e:
        assert str(e).startswith("audio mapping") and "\n" not in str(e)
        return
    for m in mapping.maps:  # what is accepted is usable: in range, finite, of a number parameter
        p = reg.params[m.param]
        assert np.isfinite([m.min, m.max, m.in_min, m.in_max]).all()
        if m.mode == "set":
            assert p.lo <= m.min <= p.hi and p.lo <= m.max <= p.hi


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=400))
def test_fuzz_mapping_text_of_any_shape(text: str) -> None:
    try:
        parse_text(text, Registry())
    except DataError:
        pass


def test_a_huge_or_deep_mapping_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(DataError, match="larger than 64 KiB"):
        parse_text("x = 1\n" * (MAX_FILE_BYTES // 4), Registry())
    with pytest.raises(DataError):
        parse_text("a = " + "[" * 5000 + "]" * 5000, Registry())
    many = '[[map]]\nfeature = "low"\nparam = "zoom"\n' * 65
    with pytest.raises(DataError, match="at most 64"):
        parse_text(many, Registry())


# ----------------------------------------------------------------------------- OSCQuery and the page


def test_oscquery_lists_the_features_read_only_with_their_values() -> None:
    engine = engine_with_music()
    ns = Namespace(engine.registry, audio=AudioWeb(engine).values)
    for name in NODE_FEATURES:
        node = ns.node(f"/dream/audio/{name}")
        assert node is not None and node["ACCESS"] == 1 and node["TYPE"] == "f", name
        assert abs(node["VALUE"][0] - engine.features.values()[name]) < 1e-9
    assert ns.node("/dream/audio/map")["ACCESS"] == 2
    assert Namespace(engine.registry).node("/dream/audio") is None  # a show without sound has none


def test_the_page_gets_meters_and_edits_the_mapping() -> None:
    engine = engine_with_music()
    web = WebServer(engine.registry, port=0, audio=AudioWeb(engine)).start()

    async def main() -> None:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"ws://127.0.0.1:{web.address[1]}/ws") as ws:
            async def until(want) -> dict[str, Any]:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    msg = await ws.receive(timeout=10)
                    data = json.loads(msg.data)
                    if want(data):
                        return data
                raise AssertionError("no such message")

            hello = await until(lambda m: m["type"] == "hello")
            assert [f["name"] for f in hello["audio"]["features"]] == list(NODE_FEATURES)
            assert "bass-zoom" in hello["audio"]["shipped"] and hello["audio"]["mapping"]["maps"][0]["param"] == "zoom"
            meters = await until(lambda m: m["type"] == "audio")
            assert set(meters["audio"]["values"]) >= set(NODE_FEATURES)
            await ws.send_json({"op": "audio/map", "map": {"feature": "high", "param": "jitter", "mode": "add",
                                                           "min": 0, "max": 10}})
            changed = await until(lambda m: m["type"] == "audio_mapping")
            assert any(m["param"] == "jitter" for m in changed["mapping"]["maps"])
            await ws.send_json({"op": "audio/map", "map": {"feature": "high", "param": "jitter", "mode": "set",
                                                           "min": 0, "max": 1000}})
            refused = await until(lambda m: m["type"] == "error")
            assert "expected within jitter's range 0..64" in refused["message"]
            await ws.send_json({"op": "audio/tap"})
            await ws.send_json({"op": "audio/save"})
            refused = await until(lambda m: m["type"] == "error")
            assert "no audio mapping file to save to" in refused["message"]

    try:
        asyncio.run(main())
    finally:
        web.close()
        engine.mapper.close()
    assert engine.registry.get("tap") == 1


# ----------------------------------------------------------------------------- config and command line


def test_the_site_config_audio_table_is_checked_whole(tmp_path: Path) -> None:
    from live.site import parse_site

    site = parse_site({"audio": {"input": "default", "mapping": "maps/show.toml", "bands": [20, 120, 4000, 16000],
                                 "release_ms": 500}}, tmp_path / "site.toml")
    assert site.audio.mapping == str(tmp_path / "maps/show.toml") and site.audio.settings["release_ms"] == 500
    assert parse_site({"audio": {"mapping": "bass-zoom"}}).audio.mapping == "bass-zoom"
    with pytest.raises(UsageError, match=r"audio.attack_ms = 0: expected"):
        parse_site({"audio": {"attack_ms": 0}})
    with pytest.raises(UsageError, match=r"unknown key audio.gian; did you mean audio.gain|unknown key audio.gian"):
        parse_site({"audio": {"gian": 1}})


def test_audio_list_prints_the_devices_or_why_there_are_none(capsys: pytest.CaptureFixture[str]) -> None:
    from live.cli import main

    assert main(["run", "--audio-list"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("no audio") or "Hz)" in out  # here, without a sound card: one line that says so
    assert "Traceback" not in out


def test_a_mapping_refused_at_start_names_the_file(tmp_path: Path) -> None:
    from live.audio.analysis import AnalysisSettings
    from live.audio.show import read_mapping

    bad = tmp_path / "m.toml"
    bad.write_text('[[map]]\nfeature = "low"\nparam = "zoom"\nmode = "set"\nmin = 0\nmax = 1\n')
    with pytest.raises(DataError, match=rf"audio mapping {bad}: map 1: max = 1: expected within zoom's range"):
        read_mapping(str(bad), Registry(), AnalysisSettings())
    empty, path = read_mapping(str(tmp_path / "new.toml"), Registry(), AnalysisSettings())
    assert empty == AudioMapping() and path == tmp_path / "new.toml"  # made by the first save
