"""Presets on disk and cross-fades: what a performer sees when moving between looks."""

from __future__ import annotations

from pathlib import Path

import pytest

from live.control.params import Registry
from live.control.presets import Morpher, PresetStore
from live.errors import DataError, InputError, OutputError, UsageError
from live.objectives import Objective


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    reg = Registry()
    store = PresetStore(reg, tmp_path)
    reg.update({"objective": "0.5*inception3b + inception4c:97", "steps": 7, "feedback": 0.25, "flow": False})
    path = store.save("cathedral")
    assert path == tmp_path / "cathedral.toml" and "steps = 7" in path.read_text()

    other = Registry()
    v0 = other.snapshot().version
    applied = PresetStore(other, tmp_path).load("cathedral")
    snap = other.snapshot()
    assert snap.version == v0 + 1  # one update: no frame sees half a preset
    assert snap.objective == Objective.parse("0.5*inception3b + inception4c:97")
    assert (snap.steps, snap.feedback, snap.flow) == (7, 0.25, False)
    assert "reset" not in applied and "morph_time" not in applied
    assert store.names() == ["cathedral"]


def test_preset_names_cannot_escape_the_directory(tmp_path: Path) -> None:
    store = PresetStore(Registry(), tmp_path / "presets")
    for bad in ("../etc/passwd", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(UsageError, match="preset name"):
            store.save(bad)
    assert not (tmp_path / "etc").exists()


def test_missing_preset_lists_the_ones_there_are(tmp_path: Path) -> None:
    store = PresetStore(Registry(), tmp_path)
    store.save("calm")
    with pytest.raises(InputError, match=r"no preset 'storm'.*calm"):
        store.load("storm")


def test_bad_preset_files_name_the_file_and_the_problem(tmp_path: Path) -> None:
    reg = Registry()
    store = PresetStore(reg, tmp_path)
    (tmp_path / "broken.toml").write_text("steps = [unclosed")
    (tmp_path / "typo.toml").write_text('stpes = 4\n')
    (tmp_path / "badlayer.toml").write_text('objective = "inception9z"\n')
    before = reg.snapshot()
    for name, fragment in (("broken", "not valid TOML"), ("typo", "unknown parameter 'stpes'"),
                           ("badlayer", "valid layers")):
        with pytest.raises(DataError) as e:
            store.load(name)
        assert str(tmp_path / f"{name}.toml") in str(e.value) and fragment in str(e.value)
    assert reg.snapshot() is before


def test_out_of_range_preset_values_are_refused_with_the_file_and_the_range(tmp_path: Path) -> None:
    (tmp_path / "wild.toml").write_text("feedback = 0.5\nsteps = 500\n")
    reg = Registry()
    before = reg.snapshot()
    with pytest.raises(DataError) as e:
        PresetStore(reg, tmp_path).load("wild")
    assert str(tmp_path / "wild.toml") in str(e.value)
    assert "steps 500 is out of range; allowed: an integer 0..50" in str(e.value)
    assert reg.snapshot() is before  # not even the good value: a preset applies whole or not at all


def test_layer_change_cross_fades_monotonically_without_an_empty_frame() -> None:
    reg, clock = Registry(), Clock()
    morph = Morpher(reg, clock)
    reg.update({"objective": "inception3b", "morph_time": 2.0})
    morph.view(reg.snapshot())
    clock.t += 10  # the first change was a fade too; let it finish
    assert morph.view(reg.snapshot()).objective == Objective.parse("inception3b")

    reg.set("objective", "inception4c", source="osc")
    w3b, w4c = [], []
    for _ in range(70):  # 30 fps for 2.3 s
        obj = morph.view(reg.snapshot()).objective
        a = obj.weights("inception3b").sum() if "inception3b" in obj.layers else 0.0
        b = obj.weights("inception4c").sum() if "inception4c" in obj.layers else 0.0
        assert a + b > 0.0  # never an all-zero objective
        w3b.append(a)
        w4c.append(b)
        clock.t += 1 / 30
    assert all(x >= y - 1e-7 for x, y in zip(w3b, w3b[1:]))  # 3b fades out
    assert all(x <= y + 1e-7 for x, y in zip(w4c, w4c[1:]))  # 4c fades in
    assert w3b[0] > 0.95 and w3b[30] == pytest.approx(0.5, abs=0.03) and w4c[-1] == pytest.approx(1.0)
    assert morph.view(reg.snapshot()).objective == Objective.parse("inception4c")
    assert not morph.active


def test_preset_numbers_glide_but_a_hand_on_a_fader_wins(tmp_path: Path) -> None:
    reg, clock = Registry(), Clock()
    store = PresetStore(reg, tmp_path)
    store.save("slow", {"steps": 10, "feedback": 0.2})
    reg.update({"steps": 2, "feedback": 0.8, "morph_time": 1.0})
    morph = Morpher(reg, clock)
    morph.view(reg.snapshot())
    store.load("slow")
    steps, feedback = [], []
    for i in range(12):
        snap = morph.view(reg.snapshot())
        steps.append(snap.steps)
        feedback.append(snap.feedback)
        if i == 5:
            reg.set("feedback", 0.6, source="osc")  # the performer grabs the fader mid-fade
        clock.t += 0.1
    assert steps[0] == 2 and steps[-1] == 10 and steps == sorted(steps)
    assert feedback[0] == pytest.approx(0.8) and 0.2 < feedback[5] < 0.8
    assert feedback[6:] == [0.6] * 6  # follows the hand at once, no fade


def test_no_morph_time_means_no_fade() -> None:
    reg = Registry()
    morph = Morpher(reg, Clock())
    reg.set("objective", "inception5a")
    assert morph.view(reg.snapshot()).objective == Objective.parse("inception5a")
    assert not morph.active


def test_a_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    store = PresetStore(Registry(), tmp_path)
    for bad in ("evil\n", "evil\r\n", "ok\nsecond"):
        with pytest.raises(UsageError, match="preset name"):
            store.save(bad)
    assert list(tmp_path.iterdir()) == []  # no file with a newline in its name
    (tmp_path / "evil\n.toml").write_text("steps = 3\n")  # one put there by hand is not listed either
    assert store.names() == []


def test_the_number_of_presets_is_capped_but_overwriting_one_is_fine(tmp_path: Path, monkeypatch) -> None:
    from live.control import presets

    monkeypatch.setattr(presets, "MAX_PRESETS", 5)
    store = PresetStore(Registry(), tmp_path)
    for i in range(5):
        store.save(f"look{i}")
    with pytest.raises(OutputError, match="holds 5 presets already"):
        store.save("one-more")
    store.save("look3", {"steps": 9})  # overwriting an existing one is not a new preset
    assert store.names() == [f"look{i}" for i in range(5)] and not (tmp_path / "one-more.toml").exists()


def test_saves_are_rate_limited(tmp_path: Path) -> None:
    store = PresetStore(Registry(), tmp_path)
    refused = 0
    for i in range(60):
        try:
            store.save("same")
        except OutputError as e:
            assert "saves a second" in str(e)
            refused += 1
    assert refused >= 30  # a burst of 20, then 5 a second


def test_an_oversized_preset_file_is_refused_unread(tmp_path: Path) -> None:
    store = PresetStore(Registry(), tmp_path)
    (tmp_path / "huge.toml").write_text("# padding\n" * 10_000 + "steps = 3\n")
    with pytest.raises(DataError, match="is 100010 bytes; a preset is at most 65536"):
        store.load("huge")
