"""Who may use the web page: the policy with exact request data, the real middleware with a
non-loopback peer, the token file, and a token that never reaches a log."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from live.control.osc import SenderFilter
from live.control.params import Registry
from live.errors import UsageError
from live.web.security import (
    TOKEN_COOKIE,
    AccessPolicy,
    announce_token,
    read_or_create_token,
    resolve_token,
)
from live.web.server import WebServer

TOKEN = "s3cret-token-for-tests-0123456789"
PHONE = "192.168.1.20"


def check(policy: AccessPolicy, remote: str = PHONE, *, headers: dict[str, str] | None = None,
          cookies: dict[str, str] | None = None, query: dict[str, str] | None = None, **kw):
    headers = {"Host": "192.168.1.5:8080", **(headers or {})}
    return policy.check(remote=remote, method=kw.pop("method", "GET"), headers=headers, cookies=cookies or {},
                        query=query or {}, **kw)


def test_beyond_loopback_every_request_needs_the_token() -> None:
    policy = AccessPolicy(TOKEN)
    refused = check(policy)
    assert (refused.allowed, refused.status) == (False, 401) and "token" in refused.reason
    assert not check(policy, headers={"Authorization": "Bearer wrong-token-0000000000"}).allowed
    assert not check(policy, cookies={TOKEN_COOKIE: TOKEN[:-1]}).allowed
    assert not check(policy, websocket=True).allowed
    assert not check(policy, oscquery=True).allowed  # an unknown network: not even the namespace
    assert check(policy, headers={"Authorization": f"Bearer {TOKEN}"}).allowed
    assert check(policy, cookies={TOKEN_COOKIE: TOKEN}, websocket=True,
                 headers={"Origin": "http://192.168.1.5:8080"}).allowed
    from_link = check(policy, query={"token": TOKEN})
    assert from_link.allowed and from_link.keep_token  # moved into a cookie, then redirected
    assert AccessPolicy(None).check(remote=PHONE, method="GET", headers={}, cookies={TOKEN_COOKIE: ""},
                                    query={}).status == 401
    # IPv4 clients of a dual-stack socket are not loopback either
    assert not check(policy, remote="::ffff:192.168.1.20").allowed
    assert check(policy, remote="::ffff:127.0.0.1", headers={"Host": "localhost:8080"}).allowed


def test_loopback_needs_no_token_but_a_real_host_name() -> None:
    policy = AccessPolicy(TOKEN)
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080", "192.168.1.5:8080"):
        assert check(policy, "127.0.0.1", headers={"Host": host}).allowed, host
    rebound = check(policy, "127.0.0.1", headers={"Host": "attacker.example:8080"})
    assert (rebound.allowed, rebound.status) == (False, 403)


def test_websockets_from_another_origin_are_refused_even_with_the_token() -> None:
    policy = AccessPolicy(TOKEN)
    for origin in ("http://evil.example", "null", "http://192.168.1.5:9999"):
        verdict = check(policy, cookies={TOKEN_COOKIE: TOKEN}, websocket=True, headers={"Origin": origin})
        assert (verdict.allowed, verdict.status) == (False, 403), origin
        assert not check(policy, "127.0.0.1", websocket=True,
                         headers={"Host": "localhost:8080", "Origin": origin}).allowed


def test_controllers_on_the_osc_allowlist_may_read_oscquery_only() -> None:
    policy = AccessPolicy(TOKEN, SenderFilter(["192.168.1.0/24"]))
    assert check(policy, oscquery=True).allowed
    assert not check(policy, oscquery=True, method="POST").allowed
    assert not check(policy).allowed and not check(policy, websocket=True).allowed
    assert not check(policy, "10.0.0.9", oscquery=True).allowed


def _request(server: WebServer, path: str, remote: str = PHONE, headers: dict[str, str] | None = None):
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: {
        "peername": (remote, 50000), "sockname": ("192.168.1.5", 8080)}.get(key, default)
    request = make_mocked_request("GET", path, headers={"Host": "192.168.1.5:8080", **(headers or {})},
                                  transport=transport)
    return server._guard(request, lambda r: server._api_status(r))


def test_the_real_middleware_refuses_a_network_client_without_the_token_and_never_logs_it(caplog) -> None:
    server = WebServer(Registry(), "127.0.0.1", 0, token=TOKEN, status=lambda: {"fps": 1.0})

    async def main() -> list:
        responses = []
        for path, headers in (("/api/status", {}), (f"/api/status?token={TOKEN}x", {}),
                              (f"/?token={TOKEN}&x=1", {}), ("/api/status", {"Cookie": f"{TOKEN_COOKIE}={TOKEN}"})):
            responses.append(await _request(server, path, headers=headers))
        return responses

    with caplog.at_level(logging.DEBUG):
        refused, wrong, link, cookie = asyncio.run(main())
    assert refused.status == 401 and wrong.status == 401
    assert link.status == 303 and link.headers["Location"] == "/?x=1"  # the token leaves the address bar
    cookie_set = link.cookies[TOKEN_COOKIE]
    assert cookie_set.value == TOKEN and cookie_set["httponly"] and cookie_set["samesite"] == "Strict"
    assert cookie.status == 200
    assert TOKEN not in caplog.text and "refused GET /api/status from 192.168.1.20" in caplog.text


def test_a_server_beyond_loopback_without_a_token_does_not_start() -> None:
    with pytest.raises(UsageError, match="token"):
        WebServer(Registry(), "0.0.0.0", 0)


def test_the_token_is_made_once_kept_private_and_reused(tmp_path: Path, caplog, capsys, monkeypatch) -> None:
    monkeypatch.setattr("live.web.security._interactive", lambda: True)  # started from a terminal
    config = tmp_path / "site.toml"
    config.write_text("")
    with caplog.at_level(logging.DEBUG):
        first = resolve_token(None, config=config)
        announce_token(first, 8080, "192.168.1.5")
        again = resolve_token(None, config=config)
        announce_token(again, 8080, "192.168.1.5")
    assert first.created and not again.created and again.token == first.token
    assert first.path == tmp_path / "web-token" and stat.S_IMODE(first.path.stat().st_mode) == 0o600
    printed = capsys.readouterr().err
    assert printed.count(first.token) == 1 and f"http://192.168.1.5:8080/?token={first.token}" in printed
    assert first.token not in caplog.text and str(first.path) in caplog.text

    os.chmod(first.path, 0o644)  # someone copied it around
    with caplog.at_level(logging.WARNING):
        assert read_or_create_token(first.path) == (first.token, False)
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600 and "readable by others" in caplog.text

    first.path.write_text("short\n")
    with pytest.raises(UsageError, match="delete the file"):
        resolve_token(None, config=config)
    assert resolve_token(TOKEN).token == TOKEN and resolve_token(TOKEN).path is None
    with pytest.raises(UsageError, match="at least 16"):
        resolve_token("abc")


def test_where_the_config_directory_cannot_hold_it_the_token_goes_to_the_user_config(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    # a config "directory" the show cannot write into (a file in the way works for root as well)
    (tmp_path / "etc").write_text("not a directory")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home"))
    choice = resolve_token(None, config=tmp_path / "etc" / "site.toml")
    assert choice.created and choice.path == tmp_path / "home" / "deepdream-live" / "web-token"


def test_a_show_on_the_network_prints_its_new_token_once_and_keeps_it(checkpoint: Path, tmp_path: Path, capfd,
                                                                     caplog, monkeypatch) -> None:
    import socket

    from live.app import ShowOptions, run_show

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr("live.web.security._interactive", lambda: True)  # started from a terminal
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    errors = []
    for _ in range(2):
        registry = Registry()
        registry.update({"width": 64, "height": 64, "steps": 0}, "test")
        opts = ShowOptions(source="test-scene", window=False, weights=str(checkpoint), web_host="0.0.0.0",
                           web_port=port, osc=False, midi=False, mdns=False, max_frames=2, status_every=3600)
        with caplog.at_level(logging.DEBUG):
            run_show(opts, registry)
        errors.append(capfd.readouterr().err)
    token_file = tmp_path / "config" / "deepdream-live" / "web-token"
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert errors[0].count(f":{port}/?token={token}") >= 1 and token not in errors[1]
    assert token not in caplog.text and f"web page token in {token_file}" in caplog.text


def test_the_site_config_web_section_reaches_the_show(tmp_path: Path) -> None:
    from live.cli import _build_parser, _show_setup

    site = tmp_path / "site.toml"
    site.write_text('[web]\nhost = "0.0.0.0"\nport = 8123\nmdns = false\ntoken_file = "secrets/token"\n')
    opts, _, _ = _show_setup(_build_parser().parse_args(["run", "--config", str(site)]))
    assert (opts.web, opts.web_host, opts.web_port, opts.mdns) == (True, "0.0.0.0", 8123, False)
    assert opts.web_token_path == tmp_path / "secrets" / "token" and opts.config == site
    opts, _, _ = _show_setup(_build_parser().parse_args(["run", "--config", str(site), "--no-web",
                                                         "--web-token", TOKEN]))
    assert opts.web is False and opts.web_token == TOKEN


def test_under_systemd_a_new_token_is_not_printed_into_the_journal(tmp_path: Path, capsys, caplog,
                                                                   monkeypatch) -> None:
    monkeypatch.setattr("live.web.security._interactive", lambda: False)  # stderr is the journal
    choice = resolve_token(None, path=tmp_path / "web-token")
    with caplog.at_level(logging.INFO):
        announce_token(choice, 8080)
    assert choice.created and choice.token not in capsys.readouterr().err and choice.token not in caplog.text
    assert str(tmp_path / "web-token") in caplog.text
