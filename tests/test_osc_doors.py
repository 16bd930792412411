"""Hostile OSC: the datagram checks, the pattern matcher, and the two datagrams that once froze
the show (docs/architecture.md, *Doors*), retried against a real server."""

from __future__ import annotations

import logging
import re
import struct
import time

import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder, build_msg

from live.control import osc, osc_match, osc_wire
from live.control.osc import OscServer
from live.control.osc_match import AddressSpace, PatternError
from live.control.osc_space import accepted_addresses
from live.control.osc_wire import WireError, check_message, split
from live.control.params import Registry
from tests.test_osc import Controller


def _bundle(*elements: bytes, timetag: bytes = b"\x00" * 7 + b"\x01") -> bytes:
    return b"#bundle\x00" + timetag + b"".join(struct.pack(">i", len(e)) + e for e in elements)


STEPS_9 = build_msg("/dream/steps", [9]).dgram
NEGATIVE_ELEMENT = b"#bundle\0" + b"\0" * 8 + struct.pack(">i", -4) + b"abcd"  # the 24-byte datagram of issue 20
STARS = "/dream/" + "*" * 18 + "!"  # the 32-byte address of issue 20


# ----------------------------------------------------------------------------- the wire checks
def test_well_formed_messages_and_bundles_pass_whole() -> None:
    builder = OscMessageBuilder("/dream/objective")
    for value in ("inception4c", 1, 2.5, b"\x01\x02\x03", True, False, None):
        builder.add_arg(value)
    message = builder.build().dgram
    check_message(message)
    inner = _bundle(STEPS_9)
    datagram = _bundle(message, inner, STEPS_9)
    spans = split(datagram)
    assert [datagram[a:b] for a, b in spans] == [message, STEPS_9, STEPS_9]
    assert split(b"/dream/reset\x00\x00\x00\x00") == [(0, 16)]  # no type tags at all: no arguments


@pytest.mark.parametrize(
    ("datagram", "why"),
    [
        (NEGATIVE_ELEMENT, "size -4"),
        (_bundle(b""), "size 0"),
        (_bundle(STEPS_9)[:-4], "longer than what is left"),
        (b"#bundle\x00\x00\x00", "cut off before its timetag"),
        (_bundle(STEPS_9 + b"\x00\x00"), "positive multiple of 4"),
        (_bundle(_bundle(_bundle(_bundle(_bundle(STEPS_9))))), "nested deeper than 4"),
        (_bundle(*[STEPS_9] * 65), "more than 64 elements"),
        (b"/dream/steps\x00\x00\x00\x00,b\x00\x00" + struct.pack(">i", -8), "negative size"),
        (b"/dream/steps\x00\x00\x00\x00,b\x00\x00" + struct.pack(">i", 400) + b"abcd", "longer than the datagram"),
        (b"/dream/steps\x00\x00\x00\x00,i\x00\x00", "cut off"),
        (b"/dream/steps\x00\x00\x00\x00,c\x00\x00\x00\x00\x00A", "'c' is not supported"),
        (b"/dream/steps\x00\x00\x00\x00,[[[\x00\x00\x00\x00", "nested deeper than 2"),
        (b"/dream/steps\x00\x00\x00\x00,]\x00\x00", "without '['"),
        (b"/dream/steps\x00\x00\x00\x00,[\x00\x00", "without ']'"),
        (b"/dream/steps\x00\x00\x00\x00,i\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00", "after the last argument"),
        (b"/dream/steps\x00\x00\x00\x00,s\x00\x00\xff\xfe\x00\x00", "not UTF-8"),
        (b"/dream/st ps\x00\x00\x00\x00", "not printable ASCII"),
        (b"/dream/steps", "no terminating NUL"),
        (b"/" + b"a" * 200 + b"\x00" * 3, "limit 128"),
        (b"/dream/steps\x00\x00\x00\x00," + b"i" * 40 + b"\x00" * 3 + b"\x00" * 160, "limit 32"),
        (b"\x00\x00\x00\x00", "neither a message"),
        (b"", "empty"),
        (b"/" + b"x" * 9000, "limit 8192"),
    ],
)
def test_malformed_datagrams_are_refused_with_what_is_wrong(datagram: bytes, why: str) -> None:
    with pytest.raises(WireError, match=re.escape(why)):
        split(datagram)


def test_any_timetag_is_accepted_and_ignored() -> None:
    for timetag in (b"\xff" * 8, b"\x00" * 8, struct.pack(">Q", 2**63)):
        assert len(split(_bundle(STEPS_9, timetag=timetag))) == 1


# ----------------------------------------------------------------------------- the matcher
def test_patterns_match_the_show_addresses_as_osc_1_0_says() -> None:
    space = AddressSpace(accepted_addresses())
    assert space.match("/dream/steps") == ["/dream/steps"]
    assert space.match("/dream/nothing") == []
    assert space.match("/dream/{steps,jitter}") == ["/dream/steps", "/dream/jitter"]
    assert space.match("/dream/st?p_size") == ["/dream/step_size"]
    assert space.match("/dream/[dz]rift_x") == ["/dream/drift_x"]
    assert space.match("/dream/[!a-y]oom") == ["/dream/zoom"]
    norms = space.match("/dream/*/norm")
    assert "/dream/steps/norm" in norms and "/dream/layer/norm" in norms and "/dream/steps" not in norms
    assert space.match("/*/steps") == ["/dream/steps"] and space.match("/dream/ste**s") == ["/dream/steps"]
    for bad in ("/dream/[", "/dream/{a,", "/dream/a]", "dream/*", "/dream//*", "/dream/[z-a]"):
        with pytest.raises(PatternError):
            space.match(bad)


def _python_osc_match(space: list[str], pattern: str) -> list[str]:
    dispatcher = Dispatcher()
    for address in space:
        dispatcher.map(address, lambda *a, address=address: address)
    return [h.callback() for h in dispatcher.handlers_for_address(pattern)]


def test_the_matcher_agrees_with_python_osc_where_python_osc_is_quick() -> None:
    space = accepted_addresses()
    ours = AddressSpace(space)
    for pattern in ("/dream/*", "/dream/s*", "/dream/*_*", "/dream/*e*/norm", "/dream/?????", "/*/*/*",
                    "/dream/[a-f]*", "/dream/{mix,zoom,nothing}", "/dream/[!s]*/norm", "/dream/*x", "/d*/*p*"):
        assert ours.match(pattern) == _python_osc_match(space, pattern), pattern


def test_a_pattern_over_the_bounds_is_refused_before_any_matching() -> None:
    space = AddressSpace(accepted_addresses())
    for pattern, why in ((STARS, "18 wildcards"), ("/dream/" + "x" * 200, "limit 128"),
                         ("/dream/{a,b}{c,d}{e,f}{g,h}{i,j}", "spell more than 16"),
                         ("/dream/" + "?" * 9, "9 wildcards")):
        started = time.perf_counter()
        with pytest.raises(PatternError, match=re.escape(why)):
            space.match(pattern)
        assert time.perf_counter() - started < 0.05, pattern


def test_the_worst_pattern_within_the_bounds_is_quick() -> None:
    space = AddressSpace(accepted_addresses(streams=20))
    worst = "/" + "*a" * 4 + "/" + "*a" * 3 + "!" + "/*"  # eight stars that keep failing late
    assert osc_match.Pattern(worst)
    started = time.process_time()
    for _ in range(20):
        space.match(worst)
        space.match("/*/" + "*" * 7 + "!")
    assert (time.process_time() - started) / 40 < 0.02  # CPU seconds per match (about 0.1 ms measured)


# ----------------------------------------------------------------------------- a real server
@pytest.fixture
def server():
    servers = []

    def make(registry: Registry, **kw) -> OscServer:
        kw.setdefault("port", 0)
        s = OscServer(registry, **kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_the_negative_bundle_element_no_longer_silences_osc(server, caplog) -> None:
    reg = Registry()
    s = server(reg)
    c = Controller(("127.0.0.1", s.address[1]))
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(3):
                c.send_raw(NEGATIVE_ELEMENT)
                c.send_raw(_bundle(b""))  # size 0 loops as well
            c.send("/dream/steps", 9)
            assert c.value("steps") == 9  # still answering, in order, after the poison
        assert s.stats["errors"]["malformed"] == 6
        assert len(caplog.records) < 10 and "size -4" in caplog.text
    finally:
        c.close()


def test_eighteen_stars_no_longer_freeze_the_show(server) -> None:
    reg = Registry()
    s = server(reg)
    c = Controller(("127.0.0.1", s.address[1]))
    try:
        started = time.monotonic()
        for stars in (18, 30, 60):
            c.send("/dream/" + "*" * stars + "!", 1)
        c.send("/dream/steps", 9)
        errors = c.receive(until="/dream/error")
        assert errors[0][0] == "/dream/error" and "wildcards" in errors[0][1][1]
        assert c.value("steps") == 9 and time.monotonic() - started < 2.0
        assert s.stats["errors"]["bad_pattern"] == 3
    finally:
        c.close()


def test_dumps_are_answered_at_most_a_few_times_a_second_per_sender(server) -> None:
    reg = Registry()
    s = server(reg)
    c = Controller(("127.0.0.1", s.address[1]))
    try:
        for _ in range(20):
            c.send("/dream/dump")
        c.sync()
        time.sleep(0.2)
        got = []
        c.sock.settimeout(0.2)
        try:
            while True:
                got.append(c.sock.recv(65536))
        except TimeoutError:
            pass
        steps = [d for d in got if d.startswith(b"/dream/steps\x00")]
        assert 1 <= len(steps) <= 5  # a burst of 4 (plus what refilled meanwhile), not 20
        assert s.stats["errors"]["rate_limited"] >= 15
    finally:
        c.close()


def test_log_lines_about_hostile_datagrams_are_bounded(server, caplog) -> None:
    reg = Registry()
    s = server(reg)
    c = Controller(("127.0.0.1", s.address[1]))
    try:
        with caplog.at_level(logging.DEBUG):
            c.send("/dream/objective", "inception4c:" + "9" * 7000)
            c.send("/dream/preset/load", "x\n" * 3000)
            c.sync()
        assert caplog.records and max(len(r.getMessage()) for r in caplog.records) <= osc.MAX_LOG_LINE + 80
        assert all("\n" not in r.getMessage() for r in caplog.records)
    finally:
        c.close()


def test_the_bundle_builder_output_still_reaches_the_registry(server) -> None:
    reg = Registry()
    s = server(reg)
    c = Controller(("127.0.0.1", s.address[1]))
    try:
        bundle = OscBundleBuilder(IMMEDIATELY)
        bundle.add_content(build_msg("/dream/steps", [3]))
        bundle.add_content(build_msg("/dream/jitter", [5]))
        c.send_raw(bundle.build().dgram)
        assert c.value("jitter") == 5 and reg.get("steps") == 3
    finally:
        c.close()


def test_a_datagram_flood_is_refused_in_microseconds_per_datagram() -> None:
    """The checks themselves: the largest hostile datagrams cost little CPU each."""
    hostile = [NEGATIVE_ELEMENT, _bundle(*[STEPS_9] * 64), b"/" + b"a" * 8190, _bundle(b"/x\x00\x00" * 2000)]
    started = time.process_time()
    for _ in range(100):
        for datagram in hostile:
            try:
                split(datagram)
            except WireError:
                pass
    assert (time.process_time() - started) / 400 < 0.002  # CPU seconds per datagram
    assert osc_wire.MAX_PACKET == osc.MAX_PACKET
