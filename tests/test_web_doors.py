"""The web server's doors under attack from loopback, as someone on the venue network would try:
slow and idle connections, credentials that leak into logs or crash the check, hostile page
messages, cross-site screenshots, and the token's own file and strength (docs/architecture.md,
*Doors*)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from live.control.params import Registry
from live.errors import UsageError
from live.redact import MAX_LINE, LogGuard, redact_credentials
from live.web import connections
from live.web.connections import ConnectionGuard
from live.web.preview import PreviewOutput
from live.web.security import AccessPolicy, read_or_create_token, resolve_token
from live.web.server import WebServer
from tests.test_web_security import PHONE, TOKEN

NETWORK_HOST = {"Host": "192.168.1.5:8080"}


@pytest.fixture
def serve() -> Iterator[Callable[..., WebServer]]:
    servers: list[WebServer] = []

    def make(registry: Registry | None = None, **kw: Any) -> WebServer:
        kw.setdefault("port", 0)
        server = WebServer(registry or Registry(), **kw).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _connect(server: WebServer, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", server.address[1]))
    return s


def _closed_by_server(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _get(port: int, path: str = "/api/status", timeout: float = 5.0) -> tuple[int, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        head = s.recv(64)
    return int(head.split()[1]), time.monotonic() - started


# ----------------------------------------------------------------------------- connections
def test_slow_loris_connections_are_closed_after_the_header_timeout(serve, monkeypatch) -> None:
    monkeypatch.setattr(connections, "HEADER_TIMEOUT", 0.5)
    server = serve()
    lorises = [_connect(server) for _ in range(10)]
    try:
        for s in lorises:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # never finishes its head
        assert all(_closed_by_server(s, 10.0) for s in lorises)
        assert server.connections.counts["timed_out"] == 10 and server.connections.open == 0
        assert _get(server.address[1])[0] == 200  # and the server still answers
    finally:
        for s in lorises:
            s.close()


def test_idle_floods_cannot_keep_the_operators_page_out(serve, monkeypatch) -> None:
    monkeypatch.setattr(connections, "MAX_CONNECTIONS", 24)
    monkeypatch.setattr(connections, "MAX_PER_CLIENT", 12)
    server = serve()
    port = server.address[1]
    idle = [_connect(server, "127.0.0.1" if i % 2 else "127.0.0.2") for i in range(60)]
    try:
        time.sleep(0.3)
        assert server.connections.open <= 24
        assert max(server.connections.per_client("127.0.0.1"), server.connections.per_client("127.0.0.2")) <= 12

        async def page() -> float:
            started = time.monotonic()
            async with aiohttp.ClientSession() as s, s.ws_connect(f"ws://127.0.0.1:{port}/ws") as ws:
                hello = json.loads((await ws.receive(timeout=5)).data)
                assert hello["type"] == "hello"
                return time.monotonic() - started

        assert asyncio.run(page()) < 2.0  # the oldest idle connection made room
        status, seconds = _get(port)
        assert status == 200 and seconds < 2.0
        counts = server.connections.counts
        assert counts["evicted"] >= 36 and counts["refused"] == 0  # evicted, not refused: none was busy
    finally:
        for s in idle:
            s.close()


def test_busy_connections_are_never_evicted_and_the_new_one_is_refused_instead() -> None:
    guard = ConnectionGuard(max_total=8, max_per_client=8, open_files=1 << 16)

    class Transport:
        def __init__(self) -> None:
            self.aborted = False

        def get_extra_info(self, key: str, default: Any = None) -> Any:
            return ("10.0.0.9", 1234) if key == "peername" else default

        def abort(self) -> None:
            self.aborted = True

        def get_write_buffer_size(self) -> int:
            return 0

    class Request:
        def __init__(self, transport: Transport) -> None:
            self.transport = transport

    busy = [Transport() for _ in range(8)]
    for t in busy:
        assert guard._opened(t) is not None
        guard.started(Request(t))  # a websocket page: busy for its whole life
    newcomer = Transport()
    assert guard._opened(newcomer) is None and newcomer.aborted
    assert not any(t.aborted for t in busy) and guard.counts["refused"] == 1
    guard.finished(Request(busy[0]))
    assert guard._opened(Transport()) is not None and busy[0].aborted  # now idle: it makes room
    assert guard.sweep(now=time.monotonic() + 3600) == 1  # the silent newcomer; the busy ones stay


def test_the_connection_cap_stays_below_the_open_file_limit() -> None:
    assert ConnectionGuard(open_files=100).max_total == 25  # a quarter: the show keeps the rest
    assert ConnectionGuard(open_files=1 << 20).max_total == connections.MAX_CONNECTIONS


def test_event_loop_errors_are_one_line_not_a_traceback_each(serve, caplog) -> None:
    server = serve()
    with caplog.at_level(logging.DEBUG):
        for _ in range(7000):
            server._loop_error(server._loop, {"message": "socket.accept() out of system resource",
                                              "exception": OSError(24, "Too many open files")})
    lines = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert len(lines) == 1 and not lines[0].exc_info and server.counts["loop_errors"] == 7000


# ----------------------------------------------------------------------------- credentials and logs
def test_overlong_requests_never_put_the_token_in_the_log(serve, caplog, monkeypatch) -> None:
    monkeypatch.setattr(connections, "OPENS_PER_SECOND", 1e6)  # a hundred connections at once: all answered
    server = serve(token=TOKEN)
    port = server.address[1]
    attacks = [
        b"GET /?token=" + TOKEN.encode() + b"&" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nCookie: x=" + b"y" * 8170 + b"; ddl_token=" + TOKEN.encode()
        + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nCookie: ddl_token=" + TOKEN.encode() + b"z" * 9000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + TOKEN.encode() * 300 + b"\r\n\r\n",
        b"GET /?token=" + TOKEN[:12].encode() + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",  # cut inside the token
    ]
    with caplog.at_level(logging.DEBUG):
        for raw in attacks * 20:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(raw)
                assert s.recv(12).startswith(b"HTTP/1.")
        time.sleep(0.2)
    text = caplog.text
    assert TOKEN not in text and TOKEN[:8] not in text
    assert all(len(line) <= MAX_LINE + 200 for line in text.splitlines())
    aiohttp_lines = [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert len(aiohttp_lines) <= 8  # a burst of three, then one every two seconds: not a hundred tracebacks


def test_credentials_that_are_not_text_get_401_not_500(serve, monkeypatch, caplog) -> None:
    monkeypatch.setattr(connections, "OPENS_PER_SECOND", 1e6)
    policy = AccessPolicy(TOKEN)
    assert not policy.token_valid("\udcff\udcfe" + TOKEN) and not policy.token_valid("é" * 20)
    monkeypatch.setattr("live.web.security.is_loopback", lambda host: False)  # as if from the venue network
    server = serve(token=TOKEN)
    statuses = []
    with caplog.at_level(logging.DEBUG):
        for header in (b"Authorization: Bearer \xff\xfe" + TOKEN.encode(), b"Cookie: ddl_token=\xff\xfe\xc3",
                       b"Authorization: Bearer " + b"\xff" * 5000) * 10:
            with socket.create_connection(("127.0.0.1", server.address[1]), timeout=5) as s:
                s.sendall(b"GET /api/status HTTP/1.1\r\nHost: 192.168.1.5:8080\r\n" + header + b"\r\n\r\n")
                statuses.append(int(s.recv(64).split()[1]))
    assert set(statuses) == {401}
    assert "Traceback" not in caplog.text and len(caplog.records) <= 5


def test_the_log_guard_masks_credentials_cut_anywhere() -> None:
    for text in ("b'GET /?x=1&token=abcdefghijk", "Cookie: ddl_token=abcdef0123", "Authorization: Bearer abcdefgh",
                 "authorization: basic dXNlcjpwYXNz"):
        assert "****" in redact_credentials(text) and "abcdef" not in redact_credentials(text), text
    assert redact_credentials("needs its token: open the link") == "needs its token: open the link"
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error: %s", ("x" * 5000,), None)
    guard = LogGuard()
    assert guard.filter(record) and len(record.getMessage()) <= MAX_LINE


# ----------------------------------------------------------------------------- page messages
def test_hostile_page_messages_are_refused_with_one_line_and_the_page_stays(serve, caplog) -> None:
    reg = Registry()
    server = serve(reg)
    messages = ["[" * 60_000, "{" * 20 + "}" * 20, "x" * 10_000, json.dumps({"op": "nope" * 1000}),
                '{"op": "set", "name": "steps", "value": ' + "[" * 10 + "]" * 10 + "}", "1" * 5000, '{"op": "\\ud800"}']

    async def main() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"ws://127.0.0.1:{server.address[1]}/ws") as ws:
            await ws.receive(timeout=5)  # hello
            errors = []
            for _ in range(5):
                for m in messages:
                    await ws.send_str(m)
            await ws.send_bytes(b"\x00\x01")
            await ws.send_str(json.dumps({"op": "set", "name": "steps", "value": 9}))
            while not any(e.get("type") == "values" and e["values"].get("steps") == 9 for e in errors):
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                errors.append(json.loads(msg.data))
            return errors

    with caplog.at_level(logging.DEBUG):
        got = asyncio.run(main())
    refusals = [m for m in got if m["type"] == "error"]
    assert len(refusals) >= 5 * len(messages) - 5 and reg.get("steps") == 9  # answered, and still listening
    assert any("brackets" in m["message"] for m in refusals) and any("characters" in m["message"] for m in refusals)
    assert all(len(m["message"]) < 300 for m in refusals)
    lines = [r for r in caplog.records if "refused a message" in r.getMessage()]
    assert len(lines) <= 6  # one per kind for this page, not one per message
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text


# ----------------------------------------------------------------------------- screenshots
def test_screenshots_refuse_other_sites_and_a_flood(serve) -> None:
    preview = PreviewOutput()
    preview.send(np.zeros((72, 128, 3), np.uint8))
    server = serve(preview=preview)
    base = f"http://127.0.0.1:{server.address[1]}/screenshot.png"

    async def main() -> tuple[int, int, list[int]]:
        async with aiohttp.ClientSession() as s:
            async def get(headers: dict[str, str]) -> int:
                async with s.get(base, headers=headers) as r:
                    await r.read()
                    return r.status

            img = await get({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"})
            same_site = await get({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"})
            own = [await get({"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}) for _ in range(10)]
            return img, same_site, own

    img, same_site, own = asyncio.run(main())
    assert img == 403 and same_site == 403
    assert own[0] == 200 and own.count(200) <= 5 and 429 in own  # a burst of 3 (plus refill), then 429


# ----------------------------------------------------------------------------- OSCQuery and the token
def test_the_oscquery_exception_needs_osc_beyond_loopback() -> None:
    loopback_osc = WebServer(Registry(), "0.0.0.0", 0, token=TOKEN, osc=("127.0.0.1", 9000),
                             osc_allow=["192.168.1.0/24"])
    assert loopback_osc.policy.osc_senders is None
    assert not loopback_osc.policy.check(remote=PHONE, method="GET", headers=NETWORK_HOST, cookies={}, query={},
                                         oscquery=True).allowed
    exposed_osc = WebServer(Registry(), "0.0.0.0", 0, token=TOKEN, osc=("0.0.0.0", 9000),
                            osc_allow=["192.168.1.0/24"])
    assert exposed_osc.policy.check(remote=PHONE, method="GET", headers=NETWORK_HOST, cookies={}, query={},
                                    oscquery=True).allowed


def test_a_symlinked_token_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("Zq8-xY2_kP5wR9tL3mN7vB1cF4hJ6gD0\n")
    os.chmod(target, 0o644)
    link = tmp_path / "web-token"
    link.symlink_to(target)
    with pytest.raises(UsageError, match="symbolic link"):
        read_or_create_token(link)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not chmodded through the link
    dangling = tmp_path / "dangling-token"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="symbolic link"):
        read_or_create_token(dangling)
    assert not (tmp_path / "nowhere").exists()  # nothing created where the link points


@pytest.mark.parametrize("weak", ["a" * 16, "abababababababab", "abcdefghijklmnop", "0123456789abcdef",
                                  "password12345678", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"])
def test_easily_guessed_tokens_are_refused(weak: str) -> None:
    with pytest.raises(UsageError, match="too easy to guess"):
        resolve_token(weak)


def test_random_tokens_are_accepted() -> None:
    import random
    import string

    rng = random.Random(20)  # fixed: about 3 in a million random 16-character tokens score under 40 bits
    alphabet = string.ascii_letters + string.digits + "-_"
    for _ in range(2000):
        token = "".join(rng.choices(alphabet, k=16))  # the shortest allowed
        assert resolve_token(token).token == token
    from live.web.security import generate_token

    assert all(resolve_token(t).token == t for t in (generate_token() for _ in range(2000)))  # 32 characters


def test_the_token_can_come_from_a_file_and_the_flag_warns_it_shows_in_ps(tmp_path: Path, caplog) -> None:
    from live.cli import _build_parser, _show_setup

    token_file = tmp_path / "token"
    opts, _, _ = _show_setup(_build_parser().parse_args(["run", "--web-token-file", str(token_file)]))
    assert opts.web_token_path == token_file and opts.web_token is None
    with caplog.at_level(logging.WARNING):
        opts, _, _ = _show_setup(_build_parser().parse_args(["run", "--web-token", TOKEN]))
    assert opts.web_token == TOKEN and "shows the web token to every user of this machine" in caplog.text
    assert TOKEN not in caplog.text


def test_a_client_reconnecting_in_a_loop_is_held_not_served(serve, monkeypatch) -> None:
    monkeypatch.setattr(connections, "OPENS_PER_SECOND", 5.0)
    monkeypatch.setattr(connections, "HEADER_TIMEOUT", 1.0)
    server = serve()
    socks = [socket.create_connection(("127.0.0.1", server.address[1])) for _ in range(40)]
    try:
        time.sleep(0.3)
        counts = server.connections.counts
        assert counts["refused"] >= 25 and counts["accepted"] <= 15  # a burst of 10, then 5 a second
        assert server.connections.held == counts["refused"]  # held unread: the reconnect loop waits on them
        held = socks[-1]
        held.settimeout(0.2)
        with pytest.raises(TimeoutError):
            held.recv(1)  # not closed at once (that would invite the next try)
        assert _closed_by_server(held, 5.0) and server.connections.held == 0  # closed at the head timeout
        assert _get(server.address[1])[0] == 200  # and the budget refilled meanwhile
    finally:
        for s in socks:
            s.close()


def test_making_room_is_budgeted_so_many_addresses_cannot_churn_the_server() -> None:
    guard = ConnectionGuard(max_total=8, max_per_client=8, open_files=1 << 16)

    class Transport:
        def __init__(self, client: str) -> None:
            self.client = client

        def get_extra_info(self, key: str, default: Any = None) -> Any:
            return (self.client, 1234) if key == "peername" else default

        def abort(self) -> None:
            pass

        def get_write_buffer_size(self) -> int:
            return 0

    admitted = 0
    for i in range(200):  # 200 addresses, each opening once: none is over its own rate
        client = f"10.0.{i // 250}.{i % 250}"
        sock = socket.socket()
        if guard._admit(client, sock):
            admitted += 1
            assert guard._opened(Transport(client)) is not None
        else:
            assert guard.held or sock.fileno() < 0
    assert guard.open == 8 and 8 + 30 <= admitted <= 8 + 45  # 8 places, then a burst of 40 evictions
    guard.close_all()
    assert guard.held == 0
