"""Objectives: the string form, algebra and cross-fades are arithmetic on per-channel weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from live.errors import UsageError
from live.objectives import Objective


def test_whole_layer_weights_every_channel_equally() -> None:
    w = Objective.parse("inception4c").weights("inception4c")
    assert w.shape == (512,) and np.allclose(w, 1 / 512)


def test_one_channel() -> None:
    w = Objective.parse("inception4c:97").weights("inception4c")
    assert w[97] == 1 and np.count_nonzero(w) == 1


def test_channel_lists_and_ranges() -> None:
    w = Objective.parse("mixed4c:1,5..7").weights("inception4c")
    assert list(np.flatnonzero(w)) == [1, 5, 6, 7] and np.allclose(w[[1, 5, 6, 7]], 0.25)


def test_weighted_sum_and_aliases() -> None:
    obj = Objective.parse("0.5*inception3b + inception_4c/output")
    assert obj.layers == ("inception3b", "inception4c")
    assert np.allclose(obj.weights("inception3b"), 0.5 / 480)
    assert obj == 0.5 * Objective.layer("inception3b") + Objective.layer("mixed4c")


def test_subtraction_and_trailing_coefficient() -> None:
    obj = Objective.parse("inception4c - conv1*2")
    assert np.allclose(obj.weights("conv1"), -2 / 64)


def test_string_form_round_trips() -> None:
    for text in ("inception4c", "inception4c:97", "0.5*inception3b + inception4c", "inception4c:1,2,3"):
        assert Objective.parse(str(Objective.parse(text))) == Objective.parse(text)


def test_lerp_keeps_both_layers_during_a_fade() -> None:
    a, b = Objective.parse("inception3b"), Objective.parse("inception4c")
    mid = a.lerp(b, 0.25)
    assert mid.layers == ("inception3b", "inception4c")
    assert np.allclose(mid.weights("inception3b"), 0.75 / 480) and np.allclose(mid.weights("inception4c"), 0.25 / 512)


def test_terms_are_copies() -> None:
    obj = Objective.parse("conv1")
    obj.terms["conv1"][:] = 0
    obj.weights("conv1")[:] = 0
    assert np.allclose(obj.weights("conv1"), 1 / 64)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("inception9z", "valid layers"),
        ("inception4c:512", "512 channels (0..511)"),
        ("0.5", "followed by '*'"),
        ("inception4c +", "after '+'"),
        ("inception4c inception3b", "'+' or '-'"),
        ("inception4c; rm -rf", "cannot read objective"),
        ("", "empty objective"),
        ("inception4c:9..1", "runs backwards; write it low to high, e.g. inception4c:1..9"),
        ("inception4c:0..999999999999", "512 channels (0..511)"),
        ("1e999*inception4c", "the weight 1e999 is not a finite number"),
        ("inception4c*1e999", "not a finite number"),
        ("2000*inception4c", "weights are at most 1000"),
        ("1000*inception4c*1000", "weights are at most 1000"),
    ],
)
def test_bad_objectives_say_what_was_expected(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as e:
        Objective.parse(text)
    assert fragment in str(e.value)


def test_non_finite_weights_are_refused_however_they_are_made() -> None:
    w = np.full(64, np.nan, np.float32)
    with pytest.raises(UsageError, match="finite"):
        Objective({"conv1": w})
    with pytest.raises(UsageError, match="finite"):
        Objective.layer("conv1") * float("inf")


def test_an_all_zero_objective_is_accepted_with_one_warning(caplog, monkeypatch) -> None:
    from live import objectives

    monkeypatch.setattr(objectives, "_ZERO_WARN_EVERY", 0.0)  # two texts in a row: both said
    caplog.set_level(logging.WARNING, logger="live.objectives")
    for _ in range(3):  # a controller sending it again and again: one line, not three
        zero = Objective.parse("0*inception4c:3")
    assert zero.is_zero and str(zero) == "0*inception4c"
    assert not Objective.parse("inception4c").is_zero
    assert Objective.parse("inception4c - inception4c").is_zero
    lines = [r.getMessage() for r in caplog.records if "all its weights at zero" in r.getMessage()]
    assert len(lines) == 2 and "leave the picture unchanged" in lines[0]  # one per objective


def test_the_weight_limit_holds_for_each_layer_after_the_terms_are_merged() -> None:
    with pytest.raises(UsageError, match="a weight for inception4c is 2000; .* add up to at most 1000"):
        Objective.parse("+".join(["1000*inception4c:0"] * 30))
    with pytest.raises(UsageError, match="at most 1000"):
        Objective.parse("600*inception4c + 600*inception4c:3")
    with pytest.raises(UsageError, match="a weight for conv1 is 15625; weights are at most 1000"):
        Objective.layer("conv1") * 1e6  # made in code: one channel's weight is still bounded
    assert Objective.parse("1000*inception4c + 1000*inception3b")  # each layer at the limit is fine
    assert Objective.parse("1000*inception4c").lerp(Objective.parse("1000*inception4c:7"), 0.5)


def test_the_work_a_channel_list_can_cause_is_bounded() -> None:
    import time

    ranges = ",".join(["0..511"] * 256)
    started = time.process_time()
    assert Objective.parse(f"inception4c:{ranges}") == Objective.layer("inception4c")  # 256 ranges: cheap
    assert time.process_time() - started < 0.05
    with pytest.raises(UsageError, match="lists 257 channels and ranges; at most 256"):
        Objective.parse(f"inception4c:{ranges},1")
    with pytest.raises(UsageError, match="33 terms; at most 32"):
        Objective.parse(" + ".join(["inception4c"] * 33))
    with pytest.raises(UsageError, match="at most 2048"):
        Objective.parse("inception4c:" + ",".join(["0..511"] * 1000))
    with pytest.raises(UsageError) as e:
        Objective.parse("inception4c:" + "9" * 1500)  # int() of so many digits would raise ValueError
    assert len(str(e.value)) < 300  # the error quotes a long text in part


def test_cycling_zero_objectives_is_not_a_log_flood(caplog, monkeypatch) -> None:
    from live import objectives

    monkeypatch.setattr(objectives, "_zero_warned_at", [float("-inf")])
    caplog.set_level(logging.WARNING, logger="live.objectives")
    for i in range(200):  # a sender making each one different
        assert Objective.parse(f"0*inception4c:{i}").is_zero
    assert len([r for r in caplog.records if "all its weights at zero" in r.getMessage()]) == 1
