"""MIDI control as a performer meets it: mapping files, knobs along curves, buttons, soft takeover,
14-bit faders, encoders, MIDI learn, a controller unplugged and replugged, and a machine without MIDI.

Messages are real mido ``Message`` objects; ports are fakes passed through MidiControl's own
``list_ports``/``open_port`` arguments, so everything up to the MIDI library is exercised.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from live.control import midi as midi_module
from live.control.midi import (
    Binding,
    MidiControl,
    load_mapping,
    midi_available,
    port_prefix,
)
from live.control.params import Registry
from live.errors import DataError, InputError, UsageError

mido = pytest.importorskip("mido", reason="the midi extra (mido, python-rtmidi) is not installed")

EXAMPLE = Path(__file__).resolve().parent.parent / "live" / "control" / "layouts" / "midi-example.toml"
NANO = "nanoKONTROL2:nanoKONTROL2 _ CTRL 20:0"  # an ALSA port name: client:port numbers at the end


def cc(control: int, value: int, channel: int = 1) -> Any:
    return mido.Message("control_change", channel=channel - 1, control=control, value=value)


def note_on(note: int, velocity: int = 100, channel: int = 1) -> Any:
    return mido.Message("note_on", channel=channel - 1, note=note, velocity=velocity)


def note_off(note: int, channel: int = 1) -> Any:
    return mido.Message("note_off", channel=channel - 1, note=note)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


class FakePort:
    """What mido.open_input returns, minus the MIDI: a test calls ``send`` to play a message in."""

    def __init__(self, name: str, callback: Callable[[Any], None]) -> None:
        self.name, self.callback, self.closed = name, callback, False

    def send(self, message: Any) -> None:
        self.callback(message)

    def close(self) -> None:
        self.closed = True


class FakeMidi:
    """The ports a machine has right now; tests plug and unplug by editing ``names``."""

    def __init__(self, *names: str) -> None:
        self.names = list(names)
        self.ports: dict[str, FakePort] = {}
        self.opened: list[str] = []
        self.listings = 0  # how often the poller has looked

    def list_ports(self) -> list[str]:
        self.listings += 1
        return list(self.names)

    def polled(self, times: int = 3) -> bool:
        """Wait until the poller has looked ``times`` more times (a busy machine polls late)."""
        now = self.listings
        return wait_for(lambda: self.listings >= now + times)

    def open_port(self, name: str, callback: Callable[[Any], None]) -> FakePort:
        self.opened.append(name)
        self.ports[name] = FakePort(name, callback)
        return self.ports[name]

    def port(self, name: str) -> FakePort:
        assert wait_for(lambda: name in self.ports and not self.ports[name].closed), f"{name} never opened"
        return self.ports[name]


def _registry() -> Registry:
    """The knob arithmetic below counts from steps 4 and feedback 0.8, whatever the defaults."""
    registry = Registry()
    registry.update({"steps": 4, "feedback": 0.8})
    return registry


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., MidiControl]]:
    """Build a MidiControl from mapping text (no ports unless given); closed after the test."""
    made: list[MidiControl] = []

    def build(text: str | None = None, registry: Registry | None = None, **kw: Any) -> MidiControl:
        path = tmp_path / "midi.toml"
        if text is not None:
            path.write_text(text, encoding="utf-8")
        kw.setdefault("list_ports", list)
        ctl = MidiControl(registry or _registry(), path, **kw)
        made.append(ctl)
        return ctl

    yield build
    for ctl in made:
        ctl.close()


def binding(**keys: Any) -> str:
    """One ``[[binding]]`` table in TOML."""
    lines = ["[[binding]]"]
    for k, v in keys.items():
        lines.append(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, str) else v}")
    return "\n".join(lines).replace("'", '"') + "\n"


# --- the mapping file ------------------------------------------------------------------------


def test_the_example_mapping_loads_and_covers_the_show_controls(make) -> None:
    bindings = load_mapping(EXAMPLE, Registry())
    params = {b.param for b in bindings}
    assert {"steps", "step_size", "feedback", "mix", "zoom", "octaves", "jitter",
            "pause", "freeze", "reset", "flow"} <= params
    # and it drives the registry: S1 pauses, R1 resets, a fader picks feedback up and follows
    fake = FakeMidi(NANO, "Midi Through:Midi Through Port-0 14:0")
    ctl = make(EXAMPLE.read_text(), list_ports=fake.list_ports, open_port=fake.open_port, poll_interval=0.02)
    port = fake.port(NANO)
    assert fake.opened == [NANO]  # only ports a binding names
    port.send(cc(32, 127)), port.send(cc(32, 0))
    port.send(cc(64, 127)), port.send(cc(64, 0))
    for v in (100, 102, 120):
        port.send(cc(0, v))
    snap = ctl.registry.snapshot()
    assert snap.pause is True and snap.reset == 1 and snap.feedback == pytest.approx(120 / 127)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (binding(cc=1, param="mix", colour="red"), ["binding 1", "unknown key 'colour'", "allowed keys: port"]),
        (binding(cc=1), ["binding 1", "missing key 'param'", "steps"]),
        (binding(cc=1, param="warp"), ["param = \"warp\"", "not a parameter; valid: objective, steps"]),
        (binding(cc=1, param="objective"), ["param = \"objective\"", "no knob or button", "bindable: steps"]),
        (binding(cc=1, note=2, param="mix"), ["exactly one of cc", "got both"]),
        (binding(param="mix"), ["exactly one of cc", "got neither"]),
        (binding(cc=128, param="mix"), ["cc = 128", "integer 0..127"]),
        (binding(note=-1, param="pause"), ["note = -1", "integer 0..127"]),
        (binding(cc=1, channel=0, param="mix"), ["channel = 0", "integer 1..16"]),
        (binding(cc=1, channel=17, param="mix"), ["channel = 17", "integer 1..16"]),
        (binding(cc=1, port="", param="mix"), ["port = \"\"", "start of a port name"]),
        (binding(cc=1, param="steps", min=-1), ["min = -1", "within steps's range 0..50"]),
        (binding(cc=1, param="mix", max=2.5), ["max = 2.5", "within mix's range 0..1"]),
        (binding(cc=1, param="pause", min=0), ["min = 0", "needs a number parameter; pause is bool"]),
        (binding(cc=1, param="mix", min=0.5, max=0.5), ["min and max are both 0.5"]),
        (binding(cc=1, param="mix", curve="exp"), ["curve = \"exp\"", "one of lin, log"]),
        (binding(cc=1, param="feedback", curve="log"), ["curve = \"log\"", "range above 0", "0..1"]),
        (binding(cc=1, param="mix", mode="toggle"), ["mode = \"toggle\"", "cc 1 -> mix (float) is a knob"]),
        (binding(note=1, param="pause", mode="flip"), ["mode = \"flip\"", "toggle, momentary, trigger"]),
        (binding(note=1, param="pause", mode="trigger"), ["mode = \"trigger\"", "pause is bool: use toggle or"]),
        (binding(note=1, param="reset", mode="toggle"), ["mode = \"toggle\"", "reset is a trigger: use trigger"]),
        (binding(cc=40, param="mix", cc14=True), ["cc14 = true", "give cc = 0..31"]),
        (binding(note=4, param="mix", cc14=True), ["cc14 = true", "give cc = 0..31"]),
        (binding(cc=1, param="mix", cc14="yes"), ["cc14 = \"yes\"", "true or false"]),
        (binding(cc=1, param="mix", relative="gray"), ["relative = \"gray\"", "twos-complement, binary-offset"]),
        (binding(cc=1, param="pause", relative="binary-offset"), ["relative = \"binary-offset\"", "encoders"]),
        (binding(cc=1, param="mix", step=0.1), ["step = 0.1", "add relative"]),
        (binding(cc=1, param="mix", relative="binary-offset", step=2), ["step = 2", "above 0 and at most 1"]),
        (binding(cc=1, param="mix", takeover="maybe"), ["takeover = \"maybe\"", "true or false"]),
        (binding(cc=1, param="mix") + binding(cc=33, param="pause"), ["binding 2: cc = 33"]),  # no clash: 7-bit
        (binding(cc=1, param="mix", cc14=True) + binding(cc=33, param="pause"),
         ["binding 2: cc = 33", "fine (LSB) half of binding 1's 14-bit cc 1"]),
        (binding(note=1, param="pause") * 2, ["binding 2 repeats binding 1", "note 1 on any port -> pause"]),
        ("[[binding]\ncc = 1", ["not valid TOML"]),
        ("[midi]\nspeed = 1\n", ["unknown key 'midi'", "only [[binding]] tables"]),
        ("binding = 3\n", ["array of tables"]),
    ],
)
def test_mapping_errors_name_the_file_binding_key_value_and_what_is_allowed(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = tmp_path / "desk.toml"
    path.write_text(text, encoding="utf-8")
    if fragments == ["binding 2: cc = 33"]:  # the control case: two 7-bit CCs 32 apart are fine
        assert len(load_mapping(path, Registry())) == 2
        return
    with pytest.raises(DataError) as e:
        load_mapping(path, Registry())
    message = str(e.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_a_missing_mapping_file_is_an_input_error_but_a_show_may_start_without_one(make, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no MIDI mapping file"):
        load_mapping(tmp_path / "nope.toml", Registry())
    ctl = make(None)  # learn will create it
    assert ctl.bindings == ()


def test_a_broken_mapping_stops_the_start_with_the_reason(make) -> None:
    with pytest.raises(DataError, match="channel = 99"):
        make(binding(cc=1, channel=99, param="mix"))


def test_reload_takes_an_edited_mapping_and_keeps_the_old_one_if_the_new_is_wrong(make, tmp_path: Path) -> None:
    ctl = make(binding(cc=1, param="mix"))
    (tmp_path / "midi.toml").write_text(binding(cc=2, param="jitter"), encoding="utf-8")
    ctl.reload()
    assert ctl.bindings == (Binding(param="jitter", cc=2),)
    (tmp_path / "midi.toml").write_text(binding(cc=2, param="jitter", channel="one"), encoding="utf-8")
    with pytest.raises(DataError, match='channel = "one"'):
        ctl.reload()
    assert ctl.bindings == (Binding(param="jitter", cc=2),)


# --- knobs and faders ------------------------------------------------------------------------


def test_ccs_move_parameters_along_linear_and_log_curves_within_sub_ranges(make) -> None:
    text = (binding(cc=1, param="mix", takeover=False)
            + binding(cc=2, param="feedback", min=0.5, max=1.0, takeover=False)
            + binding(cc=3, param="step_size", takeover=False)  # the parameter's own log curve
            + binding(cc=4, param="step_size", min=1.0, max=10.0, curve="log", takeover=False)
            + binding(cc=5, param="steps", min=2, max=12, takeover=False)
            + binding(cc=6, param="zoom", min=0.02, max=-0.02, takeover=False)  # turned round
            + binding(cc=7, param="step_size", curve="lin", takeover=False))
    ctl = make(text)
    reg = ctl.registry

    def after(control: int, value: int, name: str) -> Any:
        ctl.handle(cc(control, value), NANO)
        return reg.get(name)

    assert after(1, 0, "mix") == 0.0 and after(1, 127, "mix") == 1.0
    assert after(1, 64, "mix") == pytest.approx(64 / 127)
    assert after(2, 0, "feedback") == 0.5 and after(2, 127, "feedback") == 1.0
    assert after(2, 64, "feedback") == pytest.approx(0.5 + 0.5 * 64 / 127)
    assert after(3, 0, "step_size") == pytest.approx(0.1) and after(3, 127, "step_size") == pytest.approx(32.0)
    assert after(3, 64, "step_size") == pytest.approx(0.1 * 320 ** (64 / 127))  # ~2.3, not the linear ~16
    assert after(4, 64, "step_size") == pytest.approx(10 ** (64 / 127))
    assert after(7, 64, "step_size") == pytest.approx(0.1 + 31.9 * 64 / 127)
    assert after(5, 0, "steps") == 2 and after(5, 127, "steps") == 12 and after(5, 64, "steps") == 7
    assert after(6, 0, "zoom") == pytest.approx(0.02) and after(6, 127, "zoom") == pytest.approx(-0.02)


def test_every_knob_position_of_every_bindable_parameter_is_within_its_range(make) -> None:
    """A CC maps 0..127 along the binding's range and curve: no position can be refused as out of
    range (the curves' float rounding at the ends included)."""
    reg = Registry()
    numeric = [p for p in reg.params.values() if p.kind in ("float", "int")]
    ctl = make("".join(binding(cc=i, param=p.name, takeover=False) for i, p in enumerate(numeric)), registry=reg)
    heard = []
    reg.subscribe_refusals(lambda *a: heard.append(a))
    for i, p in enumerate(numeric):
        for value in range(128):
            ctl.handle(cc(i, value), NANO)
        assert reg.get(p.name) == p.hi, p.name  # and the top of the travel is exactly the top of the range
    assert heard == [] and ctl.refused == 0


def test_a_value_the_registry_refuses_is_counted_logged_once_and_heard_by_osc(make, caplog) -> None:
    reg = Registry()

    def narrow(values) -> None:  # a rule such as this machine's largest dream size
        if values["width"] > 640:
            raise UsageError(f"dream width {values['width']} is above this machine's largest, 640")

    reg.add_rule(narrow)
    heard = []
    reg.subscribe_refusals(lambda what, reason, source: heard.append((what, source)))
    ctl = make(binding(cc=1, param="width", takeover=False), registry=reg)
    caplog.set_level(logging.WARNING, logger=midi_module.__name__)
    for value in (0, 127, 126, 125, 10):  # three positions above 640 px, two below
        ctl.handle(cc(1, value), NANO)
    assert reg.get("width") == round(64 + 10 / 127 * (3840 - 64))  # the last good position applied
    assert ctl.refused == 3 and heard == [("width", "midi")] * 3
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and "above this machine's largest, 640" in lines[0]  # rate-limited


def test_channel_and_port_prefix_pick_which_controller_moves_what(make) -> None:
    text = (binding(port="nanoKONTROL2", channel=2, cc=1, param="mix", takeover=False)
            + binding(port="launch", cc=1, param="feedback", takeover=False))
    ctl = make(text)
    reg = ctl.registry
    ctl.handle(cc(1, 0, channel=1), NANO)  # wrong channel
    ctl.handle(cc(1, 0, channel=2), "Other:Other MIDI 1 24:0")  # wrong port
    assert reg.get("mix") == 1.0 and reg.get("feedback") == 0.8
    ctl.handle(cc(1, 0, channel=2), NANO)
    ctl.handle(cc(1, 127, channel=9), "Launch Control XL:Launch Control XL MIDI 1 28:0")  # prefix, any case
    assert reg.get("mix") == 0.0 and reg.get("feedback") == 1.0


def test_soft_takeover_ignores_a_far_knob_until_it_reaches_the_value_then_follows(make) -> None:
    ctl = make(binding(cc=0, param="feedback"))
    reg = ctl.registry
    seen: list[tuple[str, Any, str]] = []
    reg.subscribe(lambda name, value, source: seen.append((name, value, source)))

    ctl.handle(cc(0, 0), NANO)  # the knob sits at the bottom; feedback is 0.8: no jump
    ctl.handle(cc(0, 90), NANO)
    assert reg.get("feedback") == 0.8 and seen == []
    ctl.handle(cc(0, 101), NANO)  # within a hair of 0.8 (101.6/127): picked up
    assert reg.get("feedback") == pytest.approx(101 / 127)
    ctl.handle(cc(0, 30), NANO)  # now it follows, big moves included
    assert reg.get("feedback") == pytest.approx(30 / 127)

    reg.set("feedback", 0.9, source="preset")  # a preset moves it away from the knob
    ctl.handle(cc(0, 40), NANO)
    ctl.handle(cc(0, 100), NANO)
    assert reg.get("feedback") == 0.9
    ctl.handle(cc(0, 120), NANO)  # a fast move jumps over 0.9 (114.3/127) in one message: crossed
    assert reg.get("feedback") == pytest.approx(120 / 127)
    ctl.handle(cc(0, 10), NANO)
    assert reg.get("feedback") == pytest.approx(10 / 127)
    assert {source for _, _, source in seen} == {"midi", "preset"}


def test_takeover_false_jumps_to_the_knob(make) -> None:
    ctl = make(binding(cc=0, param="feedback", takeover=False))
    ctl.handle(cc(0, 0), NANO)
    assert ctl.registry.get("feedback") == 0.0


def test_a_14_bit_fader_combines_coarse_and_fine_halves(make, monkeypatch: pytest.MonkeyPatch) -> None:
    # The show waits 5 ms for an MSB's LSB; a busy machine can pause this test that long between
    # two calls, so here the wait is 0.5 s: the same rule, a window no scheduler hiccup closes.
    monkeypatch.setattr(midi_module, "MSB_WAIT_S", 0.5)
    ctl = make(binding(cc=7, param="mix", cc14=True, takeover=False)
               + binding(port="Coarse", cc=8, param="feedback", cc14=True, takeover=False))
    reg = ctl.registry
    values: list[float] = []
    reg.subscribe(lambda name, value, source: values.append(value) if name == "mix" else None)

    ctl.handle(cc(7, 64), NANO)
    ctl.handle(cc(39, 0), NANO)
    assert reg.get("mix") == pytest.approx(64 * 128 / 16383)
    values.clear()
    ctl.handle(cc(7, 100), NANO)  # MSB then LSB, as the spec orders them
    ctl.handle(cc(39, 37), NANO)
    assert reg.get("mix") == pytest.approx((100 * 128 + 37) / 16383)
    assert values == [pytest.approx((100 * 128 + 37) / 16383)]  # no coarse in-between value shown
    ctl.handle(cc(39, 38), NANO)  # a fine adjustment sends only the LSB
    assert reg.get("mix") == pytest.approx((100 * 128 + 38) / 16383)
    ctl.handle(cc(7, 127), NANO)
    ctl.handle(cc(39, 127), NANO)
    assert reg.get("mix") == 1.0

    # An MSB whose LSB never comes is applied alone (LSB 0) once the wait is over.
    ctl.handle(cc(7, 10), NANO)
    assert wait_for(lambda: reg.get("mix") == pytest.approx(10 * 128 / 16383))

    # A controller that only ever sends the coarse half still reaches both ends and the middle.
    for v, expected in ((0, 0.0), (64, 64 / 127), (127, 1.0)):
        ctl.handle(cc(8, v), "Coarse Fader 1")
        assert reg.get("feedback") == pytest.approx(expected)


def test_relative_encoders_step_up_and_down_from_wherever_the_value_is(make) -> None:
    ctl = make(binding(cc=10, param="feedback", relative="twos-complement")
               + binding(cc=11, param="mix", relative="binary-offset", step=0.1)
               + binding(cc=12, param="zoom", relative="sign-magnitude")
               + binding(cc=13, param="steps", relative="twos-complement"))
    reg = ctl.registry

    ctl.handle(cc(10, 1), NANO)
    assert reg.get("feedback") == pytest.approx(0.8 + 1 / 127)
    ctl.handle(cc(10, 127), NANO)  # -1
    ctl.handle(cc(10, 126), NANO)  # -2
    assert reg.get("feedback") == pytest.approx(0.8 - 2 / 127)
    ctl.handle(cc(10, 3), NANO)  # an accelerated turn: three detents in one message
    assert reg.get("feedback") == pytest.approx(0.8 + 1 / 127)
    reg.set("feedback", 0.2, source="osc")  # no takeover needed: it carries on from the new value
    ctl.handle(cc(10, 1), NANO)
    assert reg.get("feedback") == pytest.approx(0.2 + 1 / 127)

    ctl.handle(cc(11, 63), NANO)  # binary offset: 64 is rest
    assert reg.get("mix") == pytest.approx(0.9)
    for _ in range(5):
        ctl.handle(cc(11, 65), NANO)
    assert reg.get("mix") == 1.0  # clamped at the end

    ctl.handle(cc(12, 65), NANO)  # sign-magnitude: 65 is -1
    assert reg.get("zoom") == pytest.approx(-0.1 / 127)
    ctl.handle(cc(12, 2), NANO)
    assert reg.get("zoom") == pytest.approx(0.1 / 127)

    # An integer parameter moves even though one detent (1/127 of 0..50) is under one step.
    for _ in range(6):
        ctl.handle(cc(13, 1), NANO)
    assert reg.get("steps") == 6


# --- buttons and pads ------------------------------------------------------------------------


def test_notes_toggle_hold_and_trigger(make) -> None:
    ctl = make(binding(note=36, param="pause")  # toggle is the default for switches
               + binding(note=37, param="freeze", mode="momentary")
               + binding(note=38, param="reset")  # trigger is the default for triggers
               + binding(note=39, param="mix", mode="momentary", min=0.25))  # a held kill-switch
    reg = ctl.registry

    ctl.handle(note_on(36), NANO)
    assert reg.get("pause") is True
    ctl.handle(note_off(36), NANO)
    assert reg.get("pause") is True
    ctl.handle(note_on(36), NANO)
    ctl.handle(note_on(36, velocity=0), NANO)  # velocity 0 is a release
    assert reg.get("pause") is False

    ctl.handle(note_on(37), NANO)
    assert reg.get("freeze") is True
    ctl.handle(note_on(37, velocity=0), NANO)
    assert reg.get("freeze") is False
    ctl.handle(note_on(37, velocity=1), NANO)
    ctl.handle(note_off(37), NANO)
    assert reg.get("freeze") is False

    for _ in range(3):
        ctl.handle(note_on(38), NANO)
        ctl.handle(note_off(38), NANO)
    assert reg.get("reset") == 3

    ctl.handle(note_on(39), NANO)
    assert reg.get("mix") == 1.0
    ctl.handle(note_off(39), NANO)
    assert reg.get("mix") == 0.25


def test_cc_buttons_toggle_once_per_press(make) -> None:
    ctl = make(binding(cc=32, param="pause") + binding(cc=64, param="reset") + binding(cc=48, param="freeze",
                                                                                      mode="momentary"))
    reg = ctl.registry
    for _ in range(3):
        ctl.handle(cc(32, 127), NANO)
        ctl.handle(cc(32, 127), NANO)  # some controllers repeat: still one press
        ctl.handle(cc(32, 0), NANO)
        ctl.handle(cc(64, 127), NANO)
        ctl.handle(cc(64, 0), NANO)
    assert reg.get("pause") is True and reg.get("reset") == 3
    ctl.handle(cc(48, 127), NANO)
    assert reg.get("freeze") is True
    ctl.handle(cc(48, 0), NANO)
    assert reg.get("freeze") is False


def test_messages_that_map_to_nothing_change_nothing(make) -> None:
    ctl = make(binding(cc=1, param="mix"))
    before = ctl.registry.snapshot()
    for message in (mido.Message("clock"), mido.Message("pitchwheel", pitch=100), cc(2, 5), note_on(1),
                    mido.Message("sysex", data=[1, 2, 3])):
        ctl.handle(message, NANO)
    assert ctl.registry.snapshot() is before


# --- MIDI learn ------------------------------------------------------------------------------


def test_learn_binds_the_next_control_and_saves_it(make, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="live.control.midi")
    fake = FakeMidi(NANO)
    ctl = make(binding(port="nanoKONTROL2", cc=5, param="mix"), list_ports=fake.list_ports,
               open_port=fake.open_port, poll_interval=0.02)
    port = fake.port(NANO)
    ctl.learn("zoom")
    assert ctl.learning == "zoom"
    port.send(cc(5, 64, channel=3))  # the knob moved to bind it does not set anything yet
    assert ctl.learning is None and ctl.registry.get("zoom") == 0.0

    learned = Binding(param="zoom", port="nanoKONTROL2:nanoKONTROL2 _ CTRL", channel=3, cc=5)
    assert ctl.bindings == (learned,)  # the older binding of this control (any channel) is replaced
    assert load_mapping(tmp_path / "midi.toml", Registry()) == [learned]
    assert "MIDI learn: cc 5 ch 3" in caplog.text and "saved to" in caplog.text

    port.send(cc(5, 65, channel=3))  # 0.0 is the middle of the knob: picked up at once
    port.send(cc(5, 127, channel=3))
    assert ctl.registry.get("zoom") == pytest.approx(0.05)

    ctl.learn("pause")  # a pad
    port.send(note_off(40))  # a release from before arming is not a choice
    port.send(note_on(41, channel=10))
    assert ctl.bindings[-1] == Binding(param="pause", port=learned.port, channel=10, note=41)
    port.send(note_on(41, channel=10))
    assert ctl.registry.get("pause") is True

    reloaded = MidiControl(Registry(), tmp_path / "midi.toml", list_ports=list)
    with reloaded:
        assert reloaded.bindings == ctl.bindings


def test_learn_keeps_the_mapping_files_comments_and_layout(tmp_path: Path) -> None:
    """The example, learned into twice: one control re-bound (its old table goes, the heading
    after it stays), one new control; every other line of the file is as it was."""
    path = tmp_path / "midi.toml"
    shutil.copy(EXAMPLE, path)
    original = path.read_text(encoding="utf-8").splitlines()
    fake = FakeMidi(NANO)
    with MidiControl(Registry(), path, list_ports=fake.list_ports, open_port=fake.open_port,
                     poll_interval=0.02) as ctl:
        port = fake.port(NANO)
        ctl.learn("mix")
        port.send(cc(3, 10))  # the rotate fader, last before the "knobs" heading: now mix
        ctl.learn("octaves")
        port.send(cc(90, 5))  # a control the example does not use
        assert wait_for(lambda: len(ctl.bindings) == len(load_mapping(EXAMPLE, Registry())) + 1)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    comments = [line for line in original if line.lstrip().startswith("#")]
    assert [line for line in comments if line not in lines] == []  # every comment and heading stays
    inline = [line for line in original if "#" in line and not line.lstrip().startswith("#")]
    assert [line for line in inline if line not in lines] == []  # and the keys' own comments
    import difflib

    removed = [d[2:] for d in difflib.ndiff(original, lines) if d.startswith("- ")]
    assert removed == ["", "[[binding]]", 'port = "nanoKONTROL2"', "channel = 1", "cc = 3", 'param = "rotate"',
                       "min = -1.0", "max = 1.0"]  # the rotate table and one of the blank lines around it
    assert lines[:10] == original[:10] and text.index("# --- knobs") < text.index('cc = 3\nparam = "mix"')
    learned = load_mapping(path, Registry())
    assert learned[-2:] == [Binding(param="mix", port="nanoKONTROL2:nanoKONTROL2 _ CTRL", channel=1, cc=3),
                            Binding(param="octaves", port="nanoKONTROL2:nanoKONTROL2 _ CTRL", channel=1, cc=90)]
    assert [b for b in learned if b.cc == 3 and b.param == "rotate"] == []


def test_a_new_mapping_file_gets_a_head_and_a_file_of_other_layout_is_rewritten(tmp_path: Path) -> None:
    from live.control.midi import mapping_text

    one = Binding(param="mix", cc=1)
    fresh = mapping_text([one])
    assert fresh.startswith("# deepdream-live MIDI mapping") and "keeps" in fresh
    assert "[[binding]]\ncc = 1\nparam = \"mix\"" in fresh
    inline = 'binding = [{cc = 1, param = "mix"}]  # tables written inline: not editable line by line\n'
    rewritten = mapping_text([one, Binding(param="zoom", cc=2)], inline)
    (tmp_path / "m.toml").write_text(rewritten)
    assert load_mapping(tmp_path / "m.toml", Registry()) == [one, Binding(param="zoom", cc=2)]


def test_learn_can_be_cancelled_and_refuses_what_cannot_be_bound(make) -> None:
    ctl = make(None)
    with pytest.raises(UsageError, match="unknown parameter 'warp'; valid: objective, steps"):
        ctl.learn("warp")
    with pytest.raises(UsageError, match="objective takes .* learnable: steps"):
        ctl.learn("objective")
    ctl.learn("mix")
    assert ctl.cancel_learn() is True and ctl.cancel_learn() is False
    ctl.handle(cc(1, 1), NANO)
    assert ctl.bindings == ()


def test_learn_opens_every_port_even_with_no_mapping_yet(tmp_path: Path) -> None:
    fake = FakeMidi(NANO, "Arturia BeatStep:Arturia BeatStep MIDI 1 24:0")
    with MidiControl(Registry(), tmp_path / "new" / "midi.toml", list_ports=fake.list_ports,
                     open_port=fake.open_port, poll_interval=60) as ctl:
        assert ctl.open_ports == []  # nothing bound: nothing opened
        ctl.learn("jitter")
        fake.port("Arturia BeatStep:Arturia BeatStep MIDI 1 24:0").send(cc(20, 3))
        assert ctl.bindings == (Binding(param="jitter", port="Arturia BeatStep:Arturia BeatStep MIDI 1",
                                        channel=1, cc=20),)
        assert (tmp_path / "new" / "midi.toml").is_file()


def test_port_prefix_drops_the_numbers_that_change_on_replug() -> None:
    assert port_prefix("nanoKONTROL2:nanoKONTROL2 _ CTRL 20:0") == "nanoKONTROL2:nanoKONTROL2 _ CTRL"
    assert port_prefix("nanoKONTROL2 1") == "nanoKONTROL2"  # Windows
    assert port_prefix("IAC Driver Bus 1") == "IAC Driver Bus"
    assert port_prefix("Launchpad") == "Launchpad"


# --- ports come and go -----------------------------------------------------------------------


def test_a_controller_unplugged_and_replugged_works_again(make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="live.control.midi")
    fake = FakeMidi(NANO, "Midi Through:Midi Through Port-0 14:0")
    ctl = make(binding(port="nanoKONTROL2", cc=1, param="mix", takeover=False),
               list_ports=fake.list_ports, open_port=fake.open_port, poll_interval=0.01)
    first = fake.port(NANO)
    first.send(cc(1, 0))
    assert ctl.registry.get("mix") == 0.0 and ctl.open_ports == [NANO]

    fake.names.remove(NANO)  # unplugged
    assert wait_for(lambda: first.closed)
    assert fake.polled()  # several polls with it gone
    assert ctl.open_ports == []
    assert caplog.text.count("MIDI port gone") == 1

    replugged = "nanoKONTROL2:nanoKONTROL2 _ CTRL 24:0"  # ALSA often gives it a new client number
    fake.names.append(replugged)
    second = fake.port(replugged)
    assert fake.polled()  # several polls with it back
    assert caplog.text.count("MIDI port back") == 1 and fake.opened.count(replugged) == 1
    second.send(cc(1, 127))
    assert ctl.registry.get("mix") == 1.0
    assert "Midi Through" not in " ".join(fake.opened)  # no binding names it


def test_a_port_that_cannot_be_opened_is_retried_and_logged_once(make, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeMidi(NANO)
    failures = {"left": 5}

    def flaky_open(name: str, callback: Callable[[Any], None]) -> FakePort:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("device busy")
        return fake.open_port(name, callback)

    make(binding(port="nano", cc=1, param="mix"), list_ports=fake.list_ports, open_port=flaky_open,
         poll_interval=0.01)
    fake.port(NANO)
    assert caplog.text.count("cannot open MIDI port") == 1 and "device busy" in caplog.text


def test_a_message_that_fails_does_not_escape_into_the_midi_library(make, caplog) -> None:
    fake = FakeMidi(NANO)
    make(binding(port="nano", cc=1, param="mix"), list_ports=fake.list_ports, open_port=fake.open_port,
         poll_interval=0.01)
    port = fake.port(NANO)
    port.send(object())  # not a message at all
    port.send(object())
    assert caplog.text.count("MIDI message") == 1


# --- no MIDI here ----------------------------------------------------------------------------


def no_midi_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("no MIDI")]


def test_without_a_midi_system_the_show_goes_on_and_says_so_once(caplog: pytest.LogCaptureFixture,
                                                                  capfd: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The real mido here: this machine has no ALSA sequencer, so listing ports raises. The log
    says so once; ALSA's own complaint never reaches stderr."""
    ok, why = midi_available()
    if ok:
        pytest.skip(f"MIDI works on this machine ({why}); the fake-failure test below covers the rest")
    calls: list[int] = []
    ports = midi_module.MidoPorts()

    def real_listing() -> list[str]:
        calls.append(1)
        return ports.list_ports()

    reg = Registry()
    ctl = MidiControl(reg, None, list_ports=real_listing, poll_interval=0.01)
    assert wait_for(lambda: len(calls) >= 4)
    ctl.learn("mix")  # arming works too; it just says there is no MIDI
    ctl.close()
    assert no_midi_records(caplog) == [f"no MIDI: {why.removeprefix('no MIDI: ')}"]
    assert not ctl._thread.is_alive()

    looks: list[int] = []  # each poll asks whether MIDI may be back
    real_blocked = midi_module.MidoPorts.blocked
    monkeypatch.setattr(midi_module.MidoPorts, "blocked", lambda self: looks.append(1) or real_blocked(self))
    with MidiControl(reg, None, poll_interval=0.01):  # mido's own listing, lazily imported
        assert wait_for(lambda: len(no_midi_records(caplog)) == 2)
        seen = len(looks)
        assert wait_for(lambda: len(looks) >= seen + 3)  # several polls more, none of them logged
    assert len(no_midi_records(caplog)) == 2
    assert "ALSA lib" not in capfd.readouterr().err


@pytest.mark.skipif(os.path.exists("/dev/snd/seq"), reason="this machine has an ALSA sequencer: ALSA stays quiet")
def test_alsas_complaint_is_held_back_and_other_stderr_lines_are_not(capfd: pytest.CaptureFixture[str]) -> None:
    rtmidi = pytest.importorskip("rtmidi")
    capfd.readouterr()
    with pytest.raises(rtmidi.SystemError):  # the control: asked directly, ALSA prints its seq_hw.c line
        mido.Backend("mido.backends.rtmidi/LINUX_ALSA", load=True).get_input_names()
    assert "ALSA lib seq_hw.c" in capfd.readouterr().err
    with midi_module.quiet_native_stderr():
        with pytest.raises(rtmidi.SystemError):
            mido.Backend("mido.backends.rtmidi/LINUX_ALSA", load=True).get_input_names()
        os.write(2, b"a line of the show's own\n")
    err = capfd.readouterr().err
    assert "ALSA lib" not in err and "a line of the show's own" in err
    ok, why = midi_available(api="alsa")  # the program's own probe does not even ask ALSA
    assert not ok and "/dev/snd/seq is missing" in why and "--midi-api jack" in why


def test_jack_without_a_server_says_how_to_start_one_quietly(monkeypatch: pytest.MonkeyPatch,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    rtmidi = pytest.importorskip("rtmidi")
    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        pytest.skip("python-rtmidi was built without JACK")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"nobody-runs-this-{os.getpid()}")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    capfd.readouterr()
    ok, why = midi_available(api="jack")
    assert not ok and "JACK server not running" in why and "start the JACK server" in why
    assert capfd.readouterr().err == ""
    with pytest.raises(UsageError, match="expected one of alsa, jack"):
        MidiControl(Registry(), None, api="coremidi")


def test_listing_errors_of_every_kind_mean_no_midi(caplog: pytest.LogCaptureFixture) -> None:
    for error in (SystemError("MidiInAlsa::initialize: error creating ALSA sequencer client object."),
                  OSError("no such device"), RuntimeError("backend gone")):
        calls: list[int] = []

        def broken(error: Exception = error, calls: list[int] = calls) -> list[str]:
            calls.append(1)
            raise error

        assert midi_available(broken) == (False, f"no MIDI: {error}")
        caplog.clear()
        with MidiControl(Registry(), None, list_ports=broken, poll_interval=0.005):
            assert wait_for(lambda: no_midi_records(caplog) != [])
            seen = len(calls)
            assert wait_for(lambda seen=seen, calls=calls: len(calls) >= seen + 3)  # more polls, not logged again
        assert no_midi_records(caplog) == [f"no MIDI: {error}"]


def test_without_mido_installed_it_says_how_to_get_it(monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "mido", None)  # import mido now raises ImportError
    ok, why = midi_available()
    assert not ok and "no MIDI: install deepdream-live[midi]" in why
    with MidiControl(Registry(), None, poll_interval=0.01):
        assert wait_for(lambda: no_midi_records(caplog) != [])
    assert no_midi_records(caplog)[0].startswith("no MIDI: install deepdream-live[midi]")


def test_the_module_imports_without_the_midi_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mido", None)
    monkeypatch.setitem(sys.modules, "rtmidi", None)
    spec = importlib.util.spec_from_file_location("midi_without_mido", Path(midi_module.__file__))
    fresh = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "midi_without_mido", fresh)  # dataclasses look their module up
    spec.loader.exec_module(fresh)  # a fresh copy of live.control.midi, imported with mido missing
    assert fresh.midi_available()[1].startswith("no MIDI: install deepdream-live[midi]")


def test_midi_available_lists_the_ports_when_it_works() -> None:
    assert midi_available(lambda: [NANO]) == (True, f"MIDI input ports: {NANO}")
    assert midi_available(list)[0] is True


# --- a real MIDI stack, where JACK is installed ----------------------------------------------


@pytest.mark.skipif(shutil.which("jackd") is None, reason="jackd is not installed (Debian: apt install jackd2); "
                    "no virtual MIDI port to test with")
def test_midi_api_jack_drives_a_parameter_from_a_virtual_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rtmidi = pytest.importorskip("rtmidi")
    if rtmidi.API_UNIX_JACK not in rtmidi.get_compiled_api():
        pytest.skip("python-rtmidi was built without JACK")
    server = f"ddtest{os.getpid()}"  # a server of its own: parallel runs and a real JACK stay apart
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server)
    monkeypatch.setenv("JACK_NO_AUDIO_RESERVATION", "1")
    jackd = subprocess.Popen(["jackd", "--no-realtime", "-n", server, "-d", "dummy", "-r", "48000", "-p", "256"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
        out = None
        deadline = time.monotonic() + 30  # jackd takes a moment to come up, longer on a busy machine
        while out is None and time.monotonic() < deadline and jackd.poll() is None:
            try:
                with midi_module.quiet_native_stderr():
                    out = backend.open_output("dd-test-knobs", virtual=True)
            except (OSError, SystemError, RuntimeError):
                time.sleep(0.2)
        assert out is not None, f"jackd with the dummy driver did not come up (exit code {jackd.poll()})"
        path = tmp_path / "midi.toml"
        path.write_text(binding(cc=1, param="mix", takeover=False), encoding="utf-8")  # JACK names: client:port
        reg = Registry()
        # The show's own ports on JACK, as --midi-api jack chooses them: listing, opening, messages.
        with MidiControl(reg, path, api="jack", poll_interval=0.05) as ctl:
            assert wait_for(lambda: any("dd-test-knobs" in n for n in ctl.open_ports), timeout=30)
            assert ctl.ports.label == "JACK"
            for value in (0, 127, 0):  # JACK connects the ports on its next cycle: send until heard
                deadline = time.monotonic() + 30
                while not wait_for(lambda v=value: reg.get("mix") == v / 127, timeout=0.5):
                    out.send(cc(1, value))
                    assert time.monotonic() < deadline, "the JACK port never delivered a message"
        from live import check

        result = check.check_midi(check.CheckOptions(midi=True, midi_api="jack"))
        assert result.ok is True and result.detail.startswith("JACK:") and "dd-test-knobs" in result.detail
        out.close()
    finally:
        jackd.terminate()
        jackd.wait(timeout=10)
