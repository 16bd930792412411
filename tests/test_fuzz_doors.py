"""Property-based fuzzing of every door (docs/architecture.md, *Doors*): OSC datagrams (raw bytes
and structured messages and bundles with hostile sizes, types and patterns), the page's websocket
messages, HTTP requests (methods, paths, queries, headers), objectives and presets.

For every input: handled within a time bound (CPU time of the handling thread, so a busy machine
does not fail it; a wall-clock bound catches a hang), no exception escapes, no log line longer
than a bound, no secret in the log, and nothing reaches the registry that the registry refuses.

Hypothesis, not Atheris: it runs as ordinary tests in the suite on any Python (Atheris needs a
libFuzzer build and runs a process per target), it generates *structured* input (OSC bundles
with nested sizes, JSON messages, HTTP heads) rather than mutating bytes blindly, shrinks a
failure to a small reproduction, and is deterministic in CI (``derandomize``, no example
database). The budget: the ``ci`` profile (about a minute for the whole file, ``make test``);
``DDL_FUZZ=long`` (``make fuzz``) runs fifty times as many examples, randomised.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_message_builder import OscMessageBuilder

from live import limits
from live.control.osc import OscServer
from live.control.osc_space import accepted_addresses
from live.control.params import LIVE_PARAMS, Registry
from live.control.presets import PresetStore
from live.errors import LiveError
from live.model import catalog
from live.objectives import MAX_WEIGHT, Objective
from live.redact import MAX_LINE
from live.web import connections
from live.web.server import WebServer, _Client

TOKEN = "Fz9-kQ2_xW7pL4mN8vB3cR6tY1hJ5gD0"  # the web server's, in some requests: it must never reach the log
CPU_BOUND = 0.05  # s of CPU per input: the "no hang over 50 ms"
WALL_BOUND = 5.0  # s of wall clock per input: a hang, whatever the machine's load
LOG_LINE_BOUND = MAX_LINE + 200  # characters (a bounded line plus a logger's own prefix)

_LONG = os.environ.get("DDL_FUZZ") == "long"
settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("long", parent=settings.get_profile("ci"), derandomize=False)
PROFILE = settings.get_profile("long" if _LONG else "ci")


def budget(examples: int) -> settings:
    """``examples`` inputs in CI, fifty times as many with ``DDL_FUZZ=long``."""
    return settings(PROFILE, max_examples=examples * (50 if _LONG else 1))


class LogWatch(logging.Handler):
    """Every record logged anywhere while it is installed: the longest line, and any secret."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.longest = ""
        self.leaks: list[str] = []
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        text = self.format(record)
        for line in text.splitlines():
            if len(line) > len(self.longest):
                self.longest = line
        if TOKEN in text or TOKEN[:8] in text:
            self.leaks.append(text[:200])

    def check(self) -> None:
        assert len(self.longest) <= LOG_LINE_BOUND, self.longest[:300]
        assert not self.leaks, self.leaks[:2]


@pytest.fixture(scope="module")
def watch() -> Iterator[LogWatch]:
    handler = LogWatch()
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def _registry() -> Registry:
    reg = Registry()
    limits.guard(reg, limits.default_limit("cpu"))
    return reg


def _accepted_only(reg: Registry) -> None:
    """Nothing in the registry that the registry itself would refuse (each range, every rule)."""
    snap = reg.snapshot()
    reg.check(dict(snap))
    objective = snap.objective
    assert all(float(abs(objective.weights(layer)).sum()) <= MAX_WEIGHT * 1.001 for layer in objective.layers)


def _timed(fn, *args: Any) -> float:
    """CPU seconds ``fn(*args)`` took on a thread of its own; it must not raise, and a call still
    running after ``WALL_BOUND`` seconds is a hang (python-osc's loop on a -4 bundle element was
    one). The garbage collector is held off meanwhile: a full collection of the fuzzer's own
    objects is not the door's work."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        started = time.thread_time()
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test below
            outcome["error"] = e
        outcome["cpu"] = time.thread_time() - started

    worker = threading.Thread(target=work, name="fuzz-call", daemon=True)
    gc.disable()
    try:
        worker.start()
        worker.join(WALL_BOUND)
    finally:
        gc.enable()
    assert not worker.is_alive(), f"still running after {WALL_BOUND} s: a hang"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["cpu"]


# ----------------------------------------------------------------------------- OSC
ADDRESSES = accepted_addresses(streams=2)
_pattern_chars = st.sampled_from(list("*?[]{},!-/abcdefghijklmnopqrstuvwxyz_0123456789"))
hostile_addresses = st.one_of(
    st.sampled_from(ADDRESSES),
    st.sampled_from(ADDRESSES).map(lambda a: a[: len(a) // 2] + "*" + a[len(a) // 2 + 1 :]),
    st.builds(lambda n, tail: "/dream/" + "*" * n + tail, st.integers(0, 200),
              st.sampled_from(["!", "", "x", "/norm"])),
    st.text(_pattern_chars, max_size=60).map(lambda t: "/" + t),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300).map(lambda t: "/" + t),
)
osc_args = st.lists(st.one_of(
    st.integers(-(2**31), 2**31 - 1), st.floats(width=32), st.floats(), st.booleans(), st.none(),
    st.text(max_size=100), st.binary(max_size=64), st.integers(-(2**63), 2**63 - 1),
    st.sampled_from(["inception4c", "inception4c:0..511," * 20, "1000*inception4c:0+" * 30 + "conv1", "x\n" * 50,
                     "evil\n", "../../etc/passwd", "conv1:" + "9" * 40]),
), max_size=6)


@st.composite
def osc_messages(draw) -> bytes:
    builder = OscMessageBuilder(draw(hostile_addresses))
    for value in draw(osc_args):
        try:
            builder.add_arg(value)
        except Exception:  # noqa: BLE001 - a value python-osc cannot encode: leave it out
            pass
    try:
        return builder.build().dgram
    except Exception:  # noqa: BLE001
        return b"/dream/steps\x00\x00\x00\x00"


def _bundle(elements: list[bytes], timetag: bytes) -> bytes:
    return b"#bundle\x00" + timetag + b"".join(struct.pack(">i", len(e)) + e for e in elements)


osc_datagrams = st.recursive(
    osc_messages(),
    lambda inner: st.builds(_bundle, st.lists(inner, max_size=5), st.binary(min_size=8, max_size=8)),
    max_leaves=12,
)


@st.composite
def corrupted(draw) -> bytes:
    """A well-formed datagram with one of its bytes, sizes or lengths made hostile."""
    data = bytearray(draw(osc_datagrams))
    how = draw(st.sampled_from(["size", "truncate", "append", "flip", "prefix"]))
    if how == "size" and len(data) >= 4:
        at = draw(st.integers(0, len(data) - 4)) // 4 * 4
        data[at : at + 4] = struct.pack(">i", draw(st.sampled_from([-4, -8, 0, -1, 3, 2**31 - 1, -(2**31), 65536])))
    elif how == "truncate":
        del data[draw(st.integers(0, len(data))) :]
    elif how == "append":
        data += draw(st.binary(max_size=40))
    elif how == "flip" and data:
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    else:
        data[:0] = draw(st.sampled_from([b"#bundle\x00", b"\x00\x00\x00\x00", b"/"]))
    return bytes(data)


@pytest.fixture(scope="module")
def osc_server() -> Iterator[tuple[OscServer, Registry, tuple[str, int]]]:
    reg = _registry()
    actions = {"preset/load": lambda name: None, "preset/save": lambda name: None, "learn": lambda name: None,
               "record/start": lambda _: None, "record/stop": lambda _: None,
               "stream/1/enable": lambda on: None, "stream/2/enable": lambda on: None}
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where replies go; never read
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server = OscServer(reg, port=0, actions=actions, status=lambda: {"fps": 12.5, "layer": "inception4c"},
                       status_every=0).start()
    yield server, reg, sink.getsockname()
    server.close()
    sink.close()


def _osc_case(osc_server, watch: LogWatch, data: bytes) -> None:
    server, reg, client = osc_server
    cpu = _timed(server._handle_datagram, data, client)  # what the server thread does with a datagram
    assert cpu < CPU_BOUND, f"{cpu * 1000:.1f} ms CPU for {data[:80]!r}"
    _accepted_only(reg)


@budget(2500)
@given(data=st.binary(max_size=600))
def test_osc_raw_bytes(osc_server, watch: LogWatch, data: bytes) -> None:
    _osc_case(osc_server, watch, data)


@budget(1500)
@given(data=st.one_of(osc_datagrams, corrupted()))
def test_osc_structured_messages_and_bundles(osc_server, watch: LogWatch, data: bytes) -> None:
    _osc_case(osc_server, watch, data)


def test_osc_fuzzing_left_the_log_bounded_and_the_server_answering(osc_server, watch: LogWatch) -> None:
    server, reg, _ = osc_server
    watch.check()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(5)
        sock.sendto(OscMessageBuilder("/dream/query").build().dgram, ("127.0.0.1", server.address[1]))
        builder = OscMessageBuilder("/dream/query")
        builder.add_arg("steps")
        sock.sendto(builder.build().dgram, ("127.0.0.1", server.address[1]))
        while b"/dream/steps" not in sock.recv(65536):
            pass
    finally:
        sock.close()


# ----------------------------------------------------------------------------- websocket messages
OPS = ["set", "layer", "channel", "objective", "preset/load", "preset/save", "presets", "preview", "ack", "ping"]
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=10,
)
page_messages = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(OPS)},
                          optional={"name": st.one_of(st.sampled_from([p.name for p in LIVE_PARAMS]),
                                                      st.text(max_size=80)),
                                    "value": json_values, "norm": json_values, "on": json_values,
                                    "t": json_values}),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    json_values,
).map(lambda m: __import__("json").dumps(m))
raw_texts = st.one_of(
    st.text(max_size=300),
    st.builds(lambda c, n: c * n, st.sampled_from(["[", "{", "{\"a\":", "\"", "\\"]), st.integers(0, 70_000)),
    st.text(alphabet="[]{}\",:0123456789eE.-", max_size=2000),
)


@pytest.fixture(scope="module")
def web_server(tmp_path_factory) -> Iterator[tuple[WebServer, Registry, _Client]]:
    reg = _registry()
    presets = PresetStore(reg, tmp_path_factory.mktemp("presets"))
    server = WebServer(reg, port=0, token=TOKEN, presets=presets, status=lambda: {"fps": 1.0}).start()
    request = mock.Mock(remote="127.0.0.1")

    async def make() -> _Client:
        return _Client(mock.Mock(), request)

    client = asyncio.run_coroutine_threadsafe(make(), server._loop).result(5)
    yield server, reg, client
    server.close()


def _on_loop(server: WebServer, fn, *args: Any) -> float:
    """Run ``fn(*args)`` on the server's event loop thread; the CPU seconds it took there."""

    async def run() -> float:
        gc.disable()  # as in _timed
        try:
            started = time.thread_time()
            fn(*args)
            return time.thread_time() - started
        finally:
            gc.enable()

    started = time.monotonic()
    cpu = asyncio.run_coroutine_threadsafe(run(), server._loop).result(WALL_BOUND)
    assert time.monotonic() - started < WALL_BOUND
    return cpu


@budget(1500)
@given(text=st.one_of(page_messages, raw_texts))
def test_websocket_messages(web_server, watch: LogWatch, text: str) -> None:
    server, reg, client = web_server
    cpu = _on_loop(server, server._handle, client, text)
    assert cpu < CPU_BOUND, f"{cpu * 1000:.1f} ms CPU for {text[:80]!r}"
    client.messages.clear()
    _accepted_only(reg)


def test_websocket_fuzzing_left_the_registry_valid_and_the_log_bounded(web_server, watch: LogWatch) -> None:
    server, reg, _ = web_server
    time.sleep(0.1)  # the applier's last round
    _accepted_only(reg)
    watch.check()
    assert server.counts.get("refused_messages", 0) > 0


# ----------------------------------------------------------------------------- HTTP requests
header_names = st.one_of(st.sampled_from(["Host", "Cookie", "Authorization", "Origin", "Upgrade", "Connection",
                                          "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest", "Accept",
                                          "Content-Length", "Transfer-Encoding", "X-Forwarded-For"]),
                         st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
                                 min_size=1, max_size=20))
header_values = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"Bearer " + TOKEN.encode(), b"ddl_token=" + TOKEN.encode(), b"Bearer \xff\xfe",
                     b"ddl_token=" + b"\xc3" * 40, b"websocket", b"cross-site", b"localhost", b"evil.example",
                     b"x" * 9000, b"Bearer " + TOKEN.encode() * 300]),
)
paths = st.one_of(
    st.sampled_from(["/", "/ws", "/screenshot.png", "/api/status", "/dream", "/dream/steps", "/static/app.js",
                     "/static/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/dream/" + "*" * 40]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200).map(lambda t: "/" + t),
)
queries = st.one_of(st.just(""), st.sampled_from(["?HOST_INFO", "?VALUE", f"?token={TOKEN}", "?token=" + "a" * 9000,
                                                   "?" + "&".join(["a=b"] * 500), "?%ff%fe=%00"]),
                    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=100).map(lambda t: "?" + t))


@st.composite
def http_requests(draw) -> bytes:
    method = draw(st.sampled_from([b"GET", b"HEAD", b"POST", b"OPTIONS", b"PUT", b"DELETE", b"BREW", b"G\xffT"]))
    target = (draw(paths) + draw(queries)).encode("ascii", "replace")
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b""]))
    lines = [method + b" " + target + (b" " + version if version else b"")]
    for name, value in draw(st.lists(st.tuples(header_names, header_values), max_size=8)):
        lines.append(name.encode() + b": " + value)
    if draw(st.booleans()):
        lines.append(b"Host: " + draw(st.sampled_from([b"localhost", b"127.0.0.1", b"evil.example", b""])))
    return b"\r\n".join(lines) + b"\r\n\r\n"


@pytest.fixture(scope="module")
def http_server() -> Iterator[WebServer]:
    # every fuzzed request opens its own connection: lift the per-client opening rate so each
    # reaches the request handling (the rate limit itself is tested in test_web_doors.py)
    with mock.patch.object(connections, "OPENS_PER_SECOND", 1e9):
        server = WebServer(_registry(), port=0, token=TOKEN, status=lambda: {"fps": 1.0}).start()
    yield server
    server.close()


@budget(1200)
@given(raw=http_requests())
def test_http_requests(http_server: WebServer, watch: LogWatch, raw: bytes) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", http_server.address[1]), timeout=WALL_BOUND) as s:
        s.sendall(raw)
        head = b""
        try:
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
        except ConnectionResetError:
            head = b""  # refused at the connection (a websocket upgrade cut short, say)
    assert time.monotonic() - started < WALL_BOUND
    if head:
        status = int(head.split()[1])
        assert status < 500 or status == 503, head[:200]  # 503: no frame yet; never a server error


def test_http_fuzzing_left_no_secret_and_no_long_line(http_server: WebServer, watch: LogWatch) -> None:
    watch.check()
    assert not [r for r in http_server.counts if r == "refused_500"]


# ----------------------------------------------------------------------------- objectives and presets
objective_atoms = st.one_of(
    st.sampled_from([layer.name for layer in catalog.LAYERS] + ["mixed4c", "inception_4c/output", "norm1", "x"]),
    st.sampled_from(["0", "1", "511", "1000", "1e999", "0.5", ".5", "1e3", "9" * 30, "-"]),
    st.sampled_from(["*", "+", "-", ":", "..", ",", " ", "\n", "\x00"]),
)
objective_texts = st.one_of(st.lists(objective_atoms, max_size=60).map("".join), st.text(max_size=200))


@budget(3000)
@given(text=objective_texts)
def test_objective_parser(watch: LogWatch, text: str) -> None:
    result: list[Objective] = []

    def parse() -> None:
        try:
            result.append(Objective.parse(text))
        except LiveError:
            pass  # refused with a reason: fine

    assert _timed(parse) < CPU_BOUND
    for objective in result:
        for layer in objective.layers:
            w = objective.weights(layer)
            assert all(math.isfinite(x) for x in w) and float(abs(w).sum()) <= MAX_WEIGHT * 1.001


preset_names = st.one_of(st.text(max_size=80), st.sampled_from(["evil\n", "../x", "a/b", ".hidden", "ok", "x" * 65]))
preset_files = st.one_of(
    st.dictionaries(st.sampled_from([p.name for p in LIVE_PARAMS] + ["stpes", "morph_time"]), json_values.filter(
        lambda v: v is not None), max_size=6).map(lambda d: "\n".join(f"{k} = {__import__('json').dumps(v)}"
                                                                     for k, v in d.items())),
    st.text(max_size=300),
)


@budget(500)
@given(name=preset_names, body=preset_files)
def test_preset_names_and_files(tmp_path_factory, watch: LogWatch, name: str, body: str) -> None:
    directory = tmp_path_factory.getbasetemp() / "fuzz-presets"
    reg = _registry()
    store = PresetStore(reg, directory)
    try:
        path = store.path(name)
    except LiveError:
        path = None
    if path is not None:
        assert path.parent == directory and "\n" not in path.name and "/" not in name
    directory.mkdir(exist_ok=True)
    (directory / "fuzzed.toml").write_text(body)

    def load() -> None:
        try:
            store.load("fuzzed")
        except LiveError:
            pass

    assert _timed(load) < CPU_BOUND
    _accepted_only(reg)


def test_no_thread_was_left_stuck(watch: LogWatch) -> None:
    watch.check()
    stuck = [t.name for t in threading.enumerate() if t.name.startswith(("osc-", "web-")) and not t.daemon]
    assert not stuck
