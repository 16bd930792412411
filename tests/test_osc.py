"""OSC control over real UDP on loopback: what a performer's controller sends, sees and survives."""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder, build_msg
from pythonosc.osc_packet import OscPacket

from live.control import osc
from live.control.osc import OscServer, SenderFilter
from live.control.osc_reference import address_table_markdown
from live.control.params import LIVE_PARAMS, Param, Registry
from live.errors import UnavailableError, UsageError
from live.objectives import Objective

Messages = list[tuple[str, list[Any]]]


class Controller:
    """A controller on its own UDP socket: sends messages, reads what comes back."""

    def __init__(self, server: tuple[str, int], local_ip: str = "127.0.0.1") -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_ip, 0))

    def close(self) -> None:
        self.sock.close()

    def send(self, address: str, *args: Any) -> None:
        self.sock.sendto(build_msg(address, list(args)).dgram, self.server)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def receive(self, until: str, timeout: float = 30.0) -> Messages:
        """Every message received up to and including the first one at ``until``."""
        out: Messages = []
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no {until} within {timeout} s; got {out}") from None
            for timed in OscPacket(data).messages:
                out.append((timed.message.address, list(timed.message.params)))
            if any(address == until for address, _ in out):
                return out

    def query(self, name: str) -> dict[str, list[Any]]:
        """Ask for one parameter; the server answers in order, so a second query marks the end."""
        marker = "steps" if name == "reset" else "reset"
        self.send("/dream/query", name)
        self.send("/dream/query", marker)
        got = self.receive(until=f"/dream/{marker}")
        return dict(got[: next(i for i, (a, _) in enumerate(got) if a == f"/dream/{marker}")])

    def value(self, name: str) -> Any:
        return self.query(name)[f"/dream/{name}"][0]

    def sync(self) -> None:
        """Return once the server has handled everything sent before (it handles in order)."""
        self.query("steps")


class Listener:
    """A feedback target: a controller's listening port."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.got: Messages = []

    def wait_for(self, address: str, args: list[Any] | None = None, timeout: float = 30.0) -> Messages:
        """Read until ``address`` (with ``args`` if given) arrives; returns everything read."""
        deadline = time.monotonic() + timeout
        while True:
            for a, v in self.got:
                if a == address and (args is None or v == args):
                    return self.got
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no {address} {args} within {timeout} s; got {self.got[-10:]}") from None
            self.got.append((OscMessage(data).address, list(OscMessage(data).params)))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def reg() -> Registry:
    return Registry()


@pytest.fixture
def start() -> Iterator[Callable[..., OscServer]]:
    """Start OscServers that are always closed, and check none left a thread behind."""
    servers: list[OscServer] = []

    def make(registry: Registry, **kw: Any) -> OscServer:
        kw.setdefault("port", 0)
        server = OscServer(registry, **kw).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("osc-")]


@pytest.fixture
def controllers() -> Iterator[Callable[..., Controller]]:
    made: list[Controller] = []

    def make(server: OscServer, local_ip: str = "127.0.0.1") -> Controller:
        c = Controller(("127.0.0.1", server.address[1]), local_ip)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


def _send_fast(c: Controller, server: OscServer, dgrams: list[bytes]) -> None:
    """Send as fast as the socket takes them, pausing only where the OS would drop datagrams.

    The server asks for a 4 MiB receive buffer; where net.core.rmem_max grants less, the
    kernel drops what does not fit, whatever the server does, so send in chunks that fit.
    """
    chunk = max(server.receive_buffer // 1024, 100)  # the kernel books ~0.8 KiB per small datagram
    for i in range(0, len(dgrams), chunk):
        for d in dgrams[i : i + chunk]:
            c.send_raw(d)
        if i + chunk < len(dgrams):
            c.sync()


def _other_value(p: Param) -> tuple[Any, Any]:
    """A value to send for ``p`` that differs from its default, and what the server then reports."""
    if p.kind == "float":
        v = p.lo + 0.3 * (p.hi - p.lo)
        return v, v
    if p.kind == "int":
        v = int(p.lo + 0.3 * (p.hi - p.lo))
        return v, v
    if p.kind == "bool":
        return (not p.default), int(not p.default)
    if p.kind == "trigger":
        return 1, 1  # one press
    if p.kind == "objective":
        return "inception3b:5", "inception3b:5"
    raise AssertionError(f"no test value for kind {p.kind}")


def test_every_parameter_is_set_and_read_back_over_osc(reg: Registry, start, controllers) -> None:
    server = start(reg)
    c = controllers(server)
    for p in reg.params.values():
        sent, shown = _other_value(p)
        c.send(f"/dream/{p.name}", sent)
        got = c.value(p.name)
        assert got == pytest.approx(shown, rel=1e-6) if isinstance(shown, float) else got == shown, p.name
    assert reg.get("objective") == Objective.parse("inception3b:5") and reg.get("reset") == 1
    assert reg.get("flow") is False and reg.get("steps") == 15
    assert server.stats["errors"] == {}


def test_faders_map_0_to_1_along_each_curve(reg: Registry, start, controllers) -> None:
    c = controllers(start(reg))
    c.send("/dream/step_size/norm", 0.5)  # log curve: the middle is the geometric mean
    c.send("/dream/feedback/norm", 0.25)
    c.send("/dream/steps/norm", 0.5)
    c.send("/dream/flow/norm", 0.0)
    reply = c.query("step_size")
    assert reply["/dream/step_size"][0] == pytest.approx(math.sqrt(0.1 * 32.0), rel=1e-5)
    assert reply["/dream/step_size/norm"][0] == pytest.approx(0.5, abs=1e-5)
    assert c.value("feedback") == pytest.approx(0.25) and c.value("steps") == 25 and c.value("flow") == 0
    c.send("/dream/steps", 12.6)  # a fader with an engineering range sends floats to an int
    assert c.value("steps") == 13


def test_layer_by_name_alias_and_index(reg: Registry, start, controllers) -> None:
    c = controllers(start(reg))
    for sent, layer in [
        ("inception3b", "inception3b"),
        ("mixed4a", "inception4a"),
        ("inception_5a/output", "inception5a"),
        (12, "inception5b"),
        ("3", "conv3"),
        (8.0, "inception4c"),
    ]:
        c.send("/dream/layer", sent)
        reply = c.query("layer")
        assert reply["/dream/layer"] == [layer], sent
        assert reg.get("objective") == Objective.layer(layer)
    c.send("/dream/layer/norm", 1.0)
    assert c.query("layer")["/dream/layer"] == ["inception5b"]


def test_channel_focuses_the_deepest_layer(reg: Registry, start, controllers) -> None:
    server = start(reg)
    c = controllers(server)
    c.send("/dream/objective", "0.5*inception3b + inception4c")
    c.send("/dream/channel", 97)
    assert c.value("objective") == "inception4c:97"
    c.send("/dream/channel", "12")  # an Open Stage Control input widget sends text
    reply = c.query("objective")
    assert reply["/dream/objective"] == ["inception4c:12"] and reply["/dream/channel"] == [12]
    for bad in (-1, 512, 3.5, "twelve"):
        c.send("/dream/channel", bad)
    c.sync()
    assert reg.get("objective") == Objective.parse("inception4c:12")
    assert server.stats["errors"] == {"out_of_range": 2, "bad_args": 2}


def test_wildcard_addresses_reach_every_matching_parameter(reg: Registry, start, controllers) -> None:
    c = controllers(start(reg))
    c.send("/dream/{steps,jitter}", 7)
    c.sync()
    assert (reg.get("steps"), reg.get("jitter")) == (7, 7)
    c.send("/dream/st?p_size", 4.0)
    c.send("/dream/[dz]rift_x", 3.0)
    c.sync()
    assert reg.get("step_size") == 4.0 and reg.get("drift_x") == 3.0
    c.send("/dream/*/norm", 0.0)
    c.sync()
    snap = reg.snapshot()
    assert (snap.steps, snap.feedback, snap.mix, snap.flow, snap.width) == (0, 0.0, 0.0, False, 64)
    assert snap.objective == Objective.layer("conv1")  # /dream/layer/norm matched too


def test_a_fader_burst_ends_at_its_last_value(reg: Registry, start, controllers, listener: Listener) -> None:
    server = start(reg, feedback=[listener.target])
    c = controllers(server)
    n = 2000
    positions = [i / (n - 1) for i in range(n)]
    random.Random(1).shuffle(positions)
    positions[-1] = 0.3125
    began = time.monotonic()
    _send_fast(c, server, [build_msg("/dream/jitter/norm", [x]).dgram for x in positions])
    assert c.value("jitter") == 20  # round(0.3125 * 64)
    assert server.stats["received"] >= n  # the larger receive buffer held the whole burst
    listener.wait_for("/dream/jitter", [20])
    took = time.monotonic() - began
    feedback = [v for a, v in listener.got if a == "/dream/jitter"]
    assert feedback[-1] == [20]
    # coalesced, not one datagram per fader step: one flush per FEEDBACK_INTERVAL at most (on a busy
    # machine the burst takes longer, and fits in more flushes: bounded by its own duration)
    assert len(feedback) <= took / osc.FEEDBACK_INTERVAL + 1


def test_garbage_is_counted_and_changes_nothing(reg: Registry, start, controllers, caplog) -> None:
    server = start(reg)
    c = controllers(server)
    c.sync()
    before = reg.snapshot()
    rng = random.Random(7)

    for _ in range(50):  # random bytes
        c.send_raw(rng.randbytes(rng.randint(1, 200)))
    good = build_msg("/dream/steps", [9]).dgram
    for cut in range(1, len(good)):  # truncated packets
        if cut % 4:  # OSC pads to 4 bytes; some cuts still parse as a message with fewer args
            c.send_raw(good[:cut])
    c.send_raw(b"/dream/steps\x00\x00\x00\x00,i\x00\x00")  # type tag promises an int that is not there
    wrong_types: list[tuple[str, list[Any]]] = [
        ("/dream/steps", ["many"]),
        ("/dream/steps", [b"\x00\x01"]),
        ("/dream/steps", [None]),
        ("/dream/steps", [1, 2]),
        ("/dream/steps", []),
        ("/dream/steps", [float("inf")]),
        ("/dream/feedback", [float("nan")]),
        ("/dream/flow", ["maybe"]),
        ("/dream/objective", ["inception9z"]),
        ("/dream/layer", [99]),
        ("/dream/layer", [True]),
        ("/dream/steps/norm", ["x"]),
        ("/dream/query", ["warp"]),
        ("/dream/reset", ["x"]),
    ]
    for address, args in wrong_types:
        c.send(address, *args)
    for address in ("/dream/warp_speed", "/dream/steps/norm/extra", "/elsewhere", "/dream/[", "/dream/{a,"):
        c.send(address, 1)
    big = OscMessageBuilder("/dream/steps")
    big.add_arg("x" * 60_000)
    c.send_raw(big.build().dgram)  # 60 KB
    _send_fast(c, server, [rng.randbytes(rng.randint(1, 64)) for _ in range(5000)])  # a flood of junk
    c.sync()

    assert reg.snapshot().version == before.version  # not one value changed
    errors = server.stats["errors"]
    assert errors["bad_args"] == len(wrong_types)
    assert errors["unknown_address"] == 3 and errors["bad_pattern"] == 2  # "/dream/[", "/dream/{a,"
    assert errors["oversized"] == 1
    assert errors["malformed"] >= 5000  # the random bytes are not OSC (a few could parse by chance)
    assert server.stats["received"] >= 5000 + 50 + len(wrong_types)
    # logged without flooding: one line per kind, not one per packet
    lines = [r for r in caplog.records if r.name == osc.__name__ and r.levelno >= logging.WARNING]
    assert 0 < len(lines) <= 10
    c.send("/dream/steps", 11)  # and the server still listens
    assert c.value("steps") == 11


def test_a_future_timetag_does_not_hold_the_queue(reg: Registry, start, controllers) -> None:
    c = controllers(start(reg))
    bundle = OscBundleBuilder(time.time() + 3600)
    bundle.add_content(build_msg("/dream/steps", [3]))
    c.send_raw(bundle.build().dgram)
    t0 = time.monotonic()
    assert c.value("steps") == 3
    assert time.monotonic() - t0 < 10.0  # applied now, not held for the hour its timetag names


def test_out_of_range_values_are_refused_and_answered_on_dream_error(
    reg: Registry, start, controllers, listener: Listener, caplog
) -> None:
    server = start(reg, feedback=[listener.target])
    c = controllers(server)
    c.send("/dream/steps", 7)
    c.sync()
    before = reg.snapshot()
    c.send("/dream/width", 1e9)  # was a 3840-wide frame that took a minute
    got = c.receive(until="/dream/error")
    reason = "width 1000000000 is out of range; allowed: an integer 64..3840 px"
    assert got[-1] == ("/dream/error", ["/dream/width", reason])
    listener.wait_for("/dream/error", ["/dream/width", got[-1][1][1]])  # the controller's own port hears it too
    for address, value in [("/dream/steps", 500), ("/dream/steps", -1), ("/dream/mix/norm", 1.7),
                           ("/dream/feedback", 2.0), ("/dream/layer/norm", -0.5),
                           ("/dream/objective", "1e999*inception4c")]:
        c.send(address, value)
    c.sync()
    assert reg.snapshot().version == before.version and reg.get("steps") == 7  # nothing applied, nothing clamped
    assert server.stats["errors"] == {"out_of_range": 6, "bad_args": 1}
    assert "out of range" in caplog.text and "clamped" not in server.stats


def test_a_flood_of_refused_values_changes_nothing_and_is_not_echoed_in_full(reg: Registry, start, controllers) -> None:
    server = start(reg)
    c = controllers(server)
    c.sync()
    before = reg.snapshot()
    rng = random.Random(3)
    started = time.monotonic()
    absurd = [build_msg(f"/dream/{rng.choice(['steps', 'width', 'octaves'])}", [rng.randint(10**3, 10**9)]).dgram
              for _ in range(200)]  # a valid prefix, absurd values
    _send_fast(c, server, absurd)
    c.sync()
    elapsed = time.monotonic() - started
    assert reg.snapshot().version == before.version and reg.get("steps") == before.steps
    stats = server.stats
    assert stats["errors"]["out_of_range"] == 200
    assert stats["error_replies"] + stats["error_replies_held"] == 200
    # rate-limited: at most ERROR_REPLIES_PER_SECOND in each second the burst spanned (one, normally)
    assert stats["error_replies"] <= osc.ERROR_REPLIES_PER_SECOND * (int(elapsed) + 2)


def test_refusals_of_other_sources_reach_the_feedback_targets(reg: Registry, start, listener: Listener) -> None:
    start(reg, feedback=[listener.target])
    with pytest.raises(UsageError):
        reg.set("steps", 99, source="midi")
    listener.wait_for("/dream/error", ["midi: steps", "steps 99 is out of range; allowed: an integer 0..50 steps"])


def test_the_receive_buffer_asks_past_the_cap_as_root_and_says_how_to_raise_it(reg: Registry, start, caplog) -> None:
    rmem_max = int(open("/proc/sys/net/core/rmem_max").read()) if os.path.exists("/proc/sys/net/core/rmem_max") else 0
    caplog.set_level(logging.INFO, logger=osc.__name__)
    asked = max(4 * rmem_max, 1 << 20)
    server = start(reg, rcvbuf=asked)
    line = next(r.getMessage() for r in caplog.records if "OSC listening" in r.getMessage())
    assert f"receive buffer {server.receive_buffer} bytes" in line
    if server.receive_buffer < asked:  # not root, or a container without CAP_NET_ADMIN
        assert "by SO_RCVBUF" in line
        assert f"sudo sysctl -w net.core.rmem_max={asked}" in caplog.text and osc.SYSCTL_CONF in caplog.text
    else:  # SO_RCVBUFFORCE went past net.core.rmem_max
        assert "by SO_RCVBUFFORCE" in line and "sysctl" not in caplog.text


def test_sender_filter_allows_loopback_and_listed_networks() -> None:
    f = SenderFilter(["192.168.1.0/24", "10.0.0.7", "fd00::/8"])
    assert f("127.0.0.1") and f("127.0.0.2") and f("::1")
    assert f("192.168.1.42") and f("10.0.0.7") and f("::ffff:192.168.1.9") and f("fd00::1")
    assert not f("192.168.2.1") and not f("10.0.0.8") and not f("8.8.8.8") and not f("fe80::1%eth0")
    assert not f("not-an-ip")
    with pytest.raises(UsageError, match="CIDR"):
        SenderFilter(["192.168.1.0/33"])


def _lan_ip() -> str | None:
    """This machine's non-loopback IPv4 address, if it has one (no packet is sent)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.123", 9))  # TEST-NET-1: only asks the kernel for the route's source address
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


def test_the_allowlist_rejects_other_senders(reg: Registry, start, controllers) -> None:
    ip = _lan_ip()
    if ip is None:
        pytest.skip("no non-loopback address to send from")
    server = start(reg, host="0.0.0.0", allow=["198.51.100.0/24"])
    stranger = controllers(server, local_ip=ip)  # arrives on the LAN address, not loopback
    stranger.send("/dream/steps", 33)
    local = controllers(server)
    local.sync()
    assert reg.get("steps") == 1 and server.stats["rejected_senders"] == 1
    trusted = start(reg, host="0.0.0.0", allow=[f"{ip}/32"])
    friend = controllers(trusted, local_ip=ip)
    friend.send("/dream/steps", 33)
    assert friend.value("steps") == 33 and trusted.stats["rejected_senders"] == 0


def test_listening_beyond_loopback_needs_an_allowlist(reg: Registry) -> None:
    with pytest.raises(UsageError, match="--osc-allow"):
        OscServer(reg, host="0.0.0.0", port=0)
    with pytest.raises(UsageError, match="host:port"):
        OscServer(reg, port=0, feedback=["localhost"])
    with pytest.raises(UsageError, match="unknown OSC actions"):
        OscServer(reg, port=0, actions={"preset/delete": print})


def test_a_busy_port_says_what_to_do(reg: Registry, start) -> None:
    server = start(reg)
    with pytest.raises(UnavailableError, match="--osc-port"):
        OscServer(reg, port=server.address[1]).start()


def test_feedback_follows_changes_from_osc_midi_and_presets(
    reg: Registry, start, controllers, listener: Listener
) -> None:
    presets = {"calm": {"steps": 2, "objective": "inception3a", "flow": False}}
    server = start(
        reg, feedback=[listener.target], actions={"preset/load": lambda name: reg.update(presets[name], "preset")}
    )
    c = controllers(server)
    c.send("/dream/feedback", 0.5)  # from OSC
    listener.wait_for("/dream/feedback", [0.5])
    listener.wait_for("/dream/feedback/norm", [0.5])

    reg.set("jitter", 32, "midi")  # from MIDI or a key: no OSC involved
    listener.wait_for("/dream/jitter", [32])
    listener.wait_for("/dream/jitter/norm", [0.5])

    c.send("/dream/preset/load", "calm")  # from a preset
    listener.wait_for("/dream/objective", ["inception3a"])
    listener.wait_for("/dream/layer", ["inception3a"])
    listener.wait_for("/dream/steps", [2])
    listener.wait_for("/dream/flow", [0])  # toggles match 1/0, not OSC True/False


def test_replies_also_reach_the_feedback_targets(reg: Registry, start, controllers, listener: Listener) -> None:
    # TouchOSC listens on its own port, not the one it sends from: a dump must reach it there too
    server = start(reg, feedback=[listener.target])
    c = controllers(server)
    c.send("/dream/dump")
    got = dict(c.receive(until=f"/dream/{list(reg.params)[-1]}"))
    assert {f"/dream/{name}" for name in reg.params} <= set(got)
    assert got["/dream/layer"] == ["inception4c"] and got["/dream/steps/norm"][0] == pytest.approx(1 / 50)
    listener.wait_for("/dream/width", [640])


def test_status_replies_one_message_per_field(reg: Registry, start, controllers, listener: Listener) -> None:
    status = {"fps": 29.5, "layer": "inception4c", "backend": "torch-cuda", "size": "640x352"}
    server = start(reg, status=lambda: status, feedback=[listener.target], status_every=0.05)
    c = controllers(server)
    c.send("/dream/status")
    got = dict(c.receive(until="/dream/status/size"))
    assert got["/dream/status/fps"] == [29.5] and got["/dream/status/backend"] == ["torch-cuda"]
    assert got["/dream/status/layer"] == ["inception4c"] and got["/dream/status/size"] == ["640x352"]
    status["fps"] = 12.0  # and the status label follows on its own
    listener.wait_for("/dream/status/fps", [12.0])


def test_missing_or_failing_actions_are_counted_not_fatal(reg: Registry, start, controllers) -> None:
    calls: list[tuple[str, Any]] = []

    def save(name: str) -> None:
        raise UsageError(f"preset name {name!r}: no paths")

    def learn(name: str) -> None:
        raise RuntimeError("no MIDI")

    server = start(
        reg,
        actions={
            "preset/save": save,
            "learn": learn,
            "morph": lambda s: calls.append(("morph", s)),
            "preset/load": lambda n: calls.append(("load", n)),
        },
    )
    c = controllers(server)
    c.send("/dream/preset/save", "../etc")
    c.send("/dream/learn", "steps")
    c.send("/dream/learn", "warp")  # not a parameter: refused before the action runs
    c.send("/dream/morph", 2.5)
    c.send("/dream/morph", -1.0)
    c.send("/dream/preset/load", 3)  # a TouchOSC button sends a number
    c.sync()
    assert calls == [("morph", 2.5), ("load", "3")]
    assert server.stats["errors"] == {"action_failed": 2, "bad_args": 1, "out_of_range": 1}

    bare = start(reg)
    b = controllers(bare)
    b.send("/dream/preset/load", "calm")
    b.send("/dream/status")
    b.send("/dream/steps", 6)
    assert b.value("steps") == 6
    assert bare.stats["errors"] == {"unsupported": 2}


def test_morph_without_an_action_sets_the_morph_time() -> None:
    params = (
        *[p for p in LIVE_PARAMS if p.name != "morph_time"],
        Param("morph_time", "float", 0.0, "fade", 0.0, 60.0, "s"),
    )
    reg = Registry(params)
    with OscServer(reg, port=0) as server:
        c = Controller(("127.0.0.1", server.address[1]))
        try:
            c.send("/dream/morph", 4.0)
            assert c.value("morph_time") == 4.0
        finally:
            c.close()


def test_close_releases_threads_and_the_port(reg: Registry) -> None:
    threads_before = set(threading.enumerate())
    server = OscServer(reg, port=0, feedback=["127.0.0.1:9"], status=dict).start()
    port = server.address[1]
    assert {t.name for t in set(threading.enumerate()) - threads_before} == {"osc-server", "osc-feedback"}
    server.close()
    server.close()  # twice is fine
    assert set(threading.enumerate()) <= threads_before
    reg.set("steps", 9, "midi")  # a change after close goes nowhere and breaks nothing
    with OscServer(reg, port=port) as again:  # the port is free again
        assert again.address[1] == port


def test_throttle_logs_once_per_kind_per_interval(caplog) -> None:
    now = [0.0]
    throttle = osc._Throttle(every=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=osc.__name__):
        for _ in range(100):
            throttle("malformed", "bad packet")
        throttle("oversized", "big packet")
        now[0] = 11.0
        throttle("malformed", "bad packet")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["OSC bad packet", "OSC big packet", "OSC bad packet (99 more malformed since the last report)"]


def test_the_readme_table_lists_every_address() -> None:
    table = address_table_markdown(LIVE_PARAMS)
    for p in LIVE_PARAMS:
        assert f"`/dream/{p.name}`" in table
    for address in (
        "/dream/layer",
        "/dream/channel",
        "/dream/preset/load",
        "/dream/query",
        "/dream/dump",
        "/dream/status",
    ):
        assert f"`{address}`" in table
    assert "0.1..32 grey levels (log fader)" in table
