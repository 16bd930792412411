"""OSCQuery over real HTTP and OSC over real UDP on loopback, and the mDNS advertisement."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from live.control.osc import OscServer
from live.control.osc_space import accepted_addresses
from live.control.params import Registry
from live.web import mdns
from live.web.server import WebServer
from tests.test_osc import Controller

# The OSCQuery proposal's node structure (Vidvox/OSCQueryProposal, README): FULL_PATH and
# DESCRIPTION on every node, CONTENTS of nodes, TYPE a type-tag string, VALUE and RANGE arrays
# with one entry per type tag, RANGE entries of MIN/MAX/VALS, ACCESS 0..3.
NODE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$ref": "#/$defs/node",
    "$defs": {
        "node": {
            "type": "object",
            "required": ["FULL_PATH", "DESCRIPTION"],
            "properties": {
                "FULL_PATH": {"type": "string", "pattern": "^/"},
                "DESCRIPTION": {"type": "string"},
                "TYPE": {"type": "string", "pattern": r"^[ifsbhtdScrmTFNI\[\]]+$"},
                "ACCESS": {"enum": [0, 1, 2, 3]},
                "VALUE": {"type": "array"},
                "RANGE": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"MIN": {"type": ["number", "null"]}, "MAX": {"type": ["number", "null"]},
                                   "VALS": {"type": "array"}},
                }},
                "CONTENTS": {"type": "object", "additionalProperties": {"$ref": "#/$defs/node"}},
            },
            "additionalProperties": False,
        }
    },
}  # fmt: skip
HOST_INFO_SCHEMA = {
    "type": "object",
    "required": ["NAME", "EXTENSIONS", "OSC_IP", "OSC_PORT", "OSC_TRANSPORT"],
    "properties": {
        "NAME": {"type": "string"},
        "EXTENSIONS": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "OSC_IP": {"type": "string"},
        "OSC_PORT": {"type": "integer", "minimum": 1, "maximum": 65535},
        "OSC_TRANSPORT": {"enum": ["UDP", "TCP"]},
    },
}


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
            return r.status, json.loads(body) if body else None
    except urllib.error.HTTPError as e:
        return e.code, None


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("CONTENTS", {}).values():
        yield from _walk(child)


@pytest.fixture
def show() -> Iterator[tuple[Registry, OscServer, WebServer]]:
    reg = Registry()
    status = {"fps": 12.5, "layer": "inception4c", "backend": "torch on cpu (float32)", "size": "640x352",
              "outputs": [{"name": "window", "sent": 3, "dropped": 0, "failure": None}]}
    with OscServer(reg, port=0, status=lambda: status) as osc:
        with WebServer(reg, port=0, osc=osc.address, status=lambda: status) as web:
            yield reg, osc, web


def test_the_namespace_follows_the_proposal_and_names_every_address_the_show_accepts(show) -> None:
    reg, osc, web = show
    base = web.url.rstrip("/")
    status, tree = _get(base + "/")
    assert status == 200
    jsonschema.validate(tree, NODE_SCHEMA)
    nodes = {n["FULL_PATH"]: n for n in _walk(tree)}
    for path, node in nodes.items():
        for name, child in node.get("CONTENTS", {}).items():
            assert child["FULL_PATH"] == f"{path.rstrip('/')}/{name}"
        if "TYPE" in node and node["TYPE"] != "N":
            arity = len(node["TYPE"])
            assert len(node.get("VALUE", [None] * arity)) == arity and len(node.get("RANGE", [{}] * arity)) == arity

    routed = set(osc.routes)  # every address the OSC server acts on
    assert routed == set(accepted_addresses(reg.params.values()))
    for address in routed:
        node = nodes.get(address)
        assert node is not None, f"{address} is routed by the OSC server but missing from OSCQuery"
        assert "TYPE" in node and "ACCESS" in node and node["DESCRIPTION"], address
        if node["TYPE"] in ("i", "f"):
            assert "MIN" in node["RANGE"][0] or "VALS" in node["RANGE"][0], address
    assert nodes["/dream/steps"]["RANGE"] == [{"MIN": 0, "MAX": 50}] and nodes["/dream/steps"]["TYPE"] == "i"
    assert nodes["/dream/step_size"]["TYPE"] == "f" and nodes["/dream/flow"]["TYPE"] == "T"
    assert "inception4c" in nodes["/dream/layer"]["RANGE"][0]["VALS"]
    assert nodes["/dream/channel"]["RANGE"] == [{"MIN": 0, "MAX": 511}]
    assert nodes["/dream/status/fps"]["VALUE"] == [12.5] and nodes["/dream/status/fps"]["ACCESS"] == 1
    assert "/dream/status/outputs" not in nodes  # structured status is the page's


def test_value_queries_match_what_osc_query_answers(show) -> None:
    reg, osc, web = show
    reg.update({"steps": 9, "flow": False, "objective": "inception4b:17", "step_size": 3.5}, "test")
    c = Controller(("127.0.0.1", osc.address[1]))
    try:
        for name in [*reg.params, "layer"]:
            if reg.params.get(name) is not None and reg.params[name].kind == "trigger":
                assert _get(f"{web.url}dream/{name}?VALUE")[0] == 204  # a button has no value
                continue
            answered = c.query(name)  # /dream/query over UDP: {address: [args]}
            assert answered, name
            for address, args in answered.items():
                status, body = _get(f"{web.url.rstrip('/')}{address}?VALUE")
                assert status == 200, address
                # OSC floats are 32-bit; JSON keeps the double they came from
                expected = [pytest.approx(a, rel=1e-6) if isinstance(a, float) else a for a in args]
                assert [type(a)(v) for a, v in zip(args, body["VALUE"])] == expected, (address, args, body)
    finally:
        c.close()


def test_host_info_and_attribute_queries(show) -> None:
    reg, osc, web = show
    status, info = _get(web.url + "?HOST_INFO")
    assert status == 200
    jsonschema.validate(info, HOST_INFO_SCHEMA)
    assert info["OSC_PORT"] == osc.address[1] and info["OSC_TRANSPORT"] == "UDP" and info["OSC_IP"] == "127.0.0.1"
    assert info["EXTENSIONS"]["VALUE"] and not info["EXTENSIONS"]["LISTEN"]
    assert _get(web.url + "dream/steps?RANGE") == (200, {"RANGE": [{"MIN": 0, "MAX": 50}]})
    assert _get(web.url + "dream/steps?TYPE") == (200, {"TYPE": "i"})
    assert _get(web.url + "dream/preset?TYPE")[0] == 204  # a container has no type
    assert _get(web.url + "dream/steps?GABBAGABBAHEY")[0] == 400
    assert _get(web.url + "dream/nothing")[0] == 404
    reg.set("steps", 3, "osc")
    assert _get(web.url + "dream/steps?VALUE") == (200, {"VALUE": [3]})


def test_a_controller_can_fire_a_no_argument_method_with_nil() -> None:
    reg = Registry()
    with OscServer(reg, port=0) as osc:
        c = Controller(("127.0.0.1", osc.address[1]))
        try:
            c.send("/dream/reset", None)  # what an OSCQuery client sends to a TYPE "N" method
            c.sync()
        finally:
            c.close()
    assert reg.get("reset") == 1


def test_the_advertisement_goes_where_the_servers_listen() -> None:
    services, notes = mdns.plan_services("show", ("127.0.0.1", 8080), ("127.0.0.1", 9000))
    assert [(s.type, s.port, s.addresses) for s in services] == [
        ("_oscjson._tcp.local.", 8080, ("127.0.0.1",)),
        ("_osc._udp.local.", 9000, ("127.0.0.1",)),
    ]
    services, notes = mdns.plan_services("show", ("0.0.0.0", 8080), ("127.0.0.1", 9000))
    assert all(s.type != "_osc._udp.local." for s in services) and "OSC listens on 127.0.0.1 only" in notes[0]
    assert all("127.0.0.1" not in s.addresses for s in services)  # beyond loopback: the network's addresses
    infos = mdns.Advertiser(mdns.plan_services("show", ("127.0.0.1", 8080), None)[0], "127.0.0.1").service_infos()
    assert infos[0].type == "_oscjson._tcp.local." and infos[0].port == 8080 and infos[0].parsed_addresses() == ["127.0.0.1"]


def test_a_browser_on_loopback_finds_the_show_over_mdns() -> None:
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    try:
        browser_zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    except OSError as e:
        pytest.skip(f"no multicast on loopback here ({e}); the advertisement plan is tested above")
    found: dict[str, Any] = {}
    seen = threading.Event()
    mine = f"deepdream-live test {socket.gethostname()} {os.getpid()} {time.monotonic_ns()}"

    def changed(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        # Only this show: another show (another test run) on the machine advertises too.
        if state_change is ServiceStateChange.Added and name.startswith(mine):
            found[name] = service_type
            seen.set()

    reg = Registry()
    try:
        with OscServer(reg, port=0) as osc, WebServer(reg, port=0, osc=osc.address, mdns=True, name=mine) as web:
            ServiceBrowser(browser_zc, "_oscjson._tcp.local.", handlers=[changed])
            if not seen.wait(20):
                pytest.skip("mDNS on loopback did not deliver within 20 s here (multicast filtered)")
            full = next(iter(found))
            info = browser_zc.get_service_info("_oscjson._tcp.local.", full, timeout=5000)
            assert info is not None and info.port == web.address[1]
            status, host_info = _get(f"http://{info.parsed_addresses()[0]}:{info.port}/?HOST_INFO")
            assert host_info["OSC_PORT"] == osc.address[1]
    finally:
        browser_zc.close()
