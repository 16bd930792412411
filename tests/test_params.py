"""The parameter registry: typed, ranged, atomic per update, and safe to write from other threads."""

from __future__ import annotations

import threading

import pytest

from live.control.params import LIVE_PARAMS, OutOfRange, Registry
from live.errors import UsageError
from live.objectives import Objective


def test_defaults_are_in_the_first_snapshot() -> None:
    snap = Registry().snapshot()
    assert set(snap) == {p.name for p in LIVE_PARAMS}
    assert snap.steps == 1 and snap.objective == Objective.parse("inception4c") and snap.reset == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("feedback", 7.5, "feedback 7.5 is out of range; allowed: a number 0..1"),
        ("steps", -3, "steps -3 is out of range; allowed: an integer 0..50 steps"),
        ("steps", "100000", "steps 100000 is out of range; allowed: an integer 0..50 steps"),
        ("width", 10, "width 10 is out of range; allowed: an integer 64..3840 px"),
        ("width", 10**9, "allowed: an integer 64..3840 px"),
        ("step_size", 1e300, "allowed: a number 0.1..32 grey levels"),
    ],
)
def test_numbers_out_of_range_are_refused_never_clamped(name: str, value: object, message: str) -> None:
    reg = Registry()
    before = reg.snapshot()
    with pytest.raises(OutOfRange, match=message.replace(".", r"\.").replace("(", r"\(")):
        reg.set(name, value)
    assert reg.snapshot() is before  # nothing changed
    assert reg.set("steps", "12") == 12 and reg.set("feedback", 1.0) == 1.0  # in range, ends included


def test_a_fader_position_outside_0_1_is_refused_and_the_curve_ends_are_exact() -> None:
    reg = Registry()
    with pytest.raises(OutOfRange, match="0..1"):
        reg.set_norm("mix", 1.7)
    with pytest.raises(UsageError, match="fader position"):
        reg.set_norm("mix", float("nan"))
    assert reg.get("mix") == 1.0
    # the log curve's float rounding never lands outside the range at its ends
    assert reg.set_norm("step_size", 1.0) == 32.0 and reg.set_norm("step_size", 0.0) == pytest.approx(0.1)


def test_refusals_from_any_source_reach_the_refusal_listeners() -> None:
    reg = Registry()
    heard = []
    reg.subscribe_refusals(lambda what, reason, source: heard.append((what, reason, source)))
    with pytest.raises(OutOfRange):
        reg.set("steps", 51, source="midi")
    with pytest.raises(UsageError):
        reg.set_norm("mix", 2.0, source="web")
    assert heard[0] == ("steps", "steps 51 is out of range; allowed: an integer 0..50 steps", "midi")
    assert heard[1][0] == "mix/norm" and heard[1][2] == "web"


def test_a_rule_checks_the_whole_write_and_refuses_all_of_it() -> None:
    reg = Registry()

    def at_most_100k_pixels(values) -> None:
        if values["width"] * values["height"] > 100_000:
            raise UsageError(f"{values['width']}x{values['height']} is too large")

    reg.update({"width": 320, "height": 240})
    reg.add_rule(at_most_100k_pixels)
    with pytest.raises(UsageError, match="640x240 is too large"):
        reg.update({"width": 640, "steps": 7})
    assert (reg.get("width"), reg.get("steps")) == (320, reg.param("steps").default)  # neither applied
    reg.update({"width": 400, "height": 200})  # 80k: fine
    with pytest.raises(UsageError, match="too large"):
        reg.check({"height": 400})  # checked, not applied
    assert reg.get("height") == 200
    with pytest.raises(UsageError):
        Registry().add_rule(lambda values: (_ for _ in ()).throw(UsageError("the current values break it")))


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("steps", "many", "steps expects an integer 0..50"),
        ("steps", 2.5, "an integer"),
        ("feedback", float("nan"), "feedback expects a number 0..1"),
        ("feedback", True, "feedback expects a number 0..1"),
        ("flow", "maybe", "0/1, true/false or on/off"),
        ("objective", "inception9z", "valid layers"),
        ("warp_speed", 1, "unknown parameter 'warp_speed'; valid: objective, steps"),
    ],
)
def test_wrong_values_are_rejected_with_what_was_expected(name: str, value: object, fragment: str) -> None:
    reg = Registry()
    before = reg.snapshot()
    with pytest.raises(UsageError) as e:
        reg.set(name, value)
    assert fragment in str(e.value)
    assert reg.snapshot() is before  # nothing changed


def test_an_update_is_all_or_nothing_and_one_snapshot() -> None:
    reg = Registry()
    v0 = reg.snapshot().version
    reg.update({"width": 1280, "height": 720})
    assert reg.snapshot().version == v0 + 1
    with pytest.raises(UsageError):
        reg.update({"width": 320, "height": "tall"})
    assert (reg.snapshot().width, reg.snapshot().height) == (1280, 720)


def test_a_snapshot_never_changes_after_it_is_taken() -> None:
    reg = Registry()
    snap = reg.snapshot()
    reg.set("steps", 9)
    assert snap.steps == 1 and reg.snapshot().steps == 9
    with pytest.raises(TypeError):
        snap._values["steps"] = 1  # type: ignore[index]


def test_fader_mapping_linear_and_log() -> None:
    reg = Registry()
    assert reg.set_norm("feedback", 0.25) == pytest.approx(0.25)
    assert reg.set_norm("steps", 1.0) == 50
    # step size is logarithmic: the middle of the fader is the geometric mean of 0.1 and 32
    assert reg.set_norm("step_size", 0.5) == pytest.approx((0.1 * 32.0) ** 0.5)
    p = reg.param("step_size")
    assert p.to_norm(p.from_norm(0.3)) == pytest.approx(0.3)
    with pytest.raises(UsageError, match="no 0..1 fader mapping"):
        reg.set_norm("objective", 0.5)


def test_triggers_count_presses() -> None:
    reg = Registry()
    reg.set("reset", 1)
    reg.set("reset", True)
    reg.set("reset", 0)  # a release is not a press
    assert reg.snapshot().reset == 2


def test_listeners_hear_changes_and_a_broken_one_does_not_stop_the_writer() -> None:
    reg = Registry()
    heard = []
    reg.subscribe(lambda *a: 1 / 0)
    reg.subscribe(lambda name, value, source: heard.append((name, value, source)))
    assert reg.set("mix", 0.5, source="osc") == 0.5
    assert heard == [("mix", 0.5, "osc")]


def test_concurrent_writers_never_show_a_half_update() -> None:
    reg = Registry()
    stop = threading.Event()
    torn = []

    def reader() -> None:
        while not stop.is_set():
            snap = reg.snapshot()
            if snap.width != snap.height:
                torn.append(snap)

    def writer(offset: int) -> None:
        for k in range(500):
            size = 64 + (k * 7 + offset) % 1000
            reg.update({"width": size, "height": size}, source=f"writer{offset}")

    reg.update({"width": 64, "height": 64})
    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    r.join()
    assert torn == []
    assert reg.snapshot().version == 1 + 4 * 500  # no write lost


def test_readme_documents_every_parameter_with_its_range() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for p in LIVE_PARAMS:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{p.name}` |")), None)
        assert row is not None, f"README has no row for {p.name}"
        if p.kind in ("int", "float"):
            assert f"{p.lo:g}..{p.hi:g}" in row, row


def test_readme_osc_table_is_the_generated_one() -> None:
    from pathlib import Path

    from live.control.osc_reference import address_table_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert address_table_markdown().strip() in readme, (
        "README's OSC table is stale: paste the output of "
        "`python -c 'from live.control.osc_reference import address_table_markdown as t; print(t())'`"
    )
