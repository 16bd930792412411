"""Opening hours, preset cycles and idle mode, on their own and inside the live loop."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import torch

from live.app import LiveLoop
from live.backends.torch_backend import TorchBackend
from live.control.params import Registry
from live.control.presets import PresetStore
from live.control.schedule import IdleWatcher, OpeningHours, PresetCycler
from live.outputs import Fanout, NullOutput
from live.sources import ImageSource
from tests.conftest import photo_path


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, 23 + day, hour, minute)  # 2026-11-23 is a Monday


def test_opening_hours_same_day() -> None:
    hours = OpeningHours(dt.time(10), dt.time(18), ["mon", "tue", "wed", "thu", "fri"])
    assert hours.is_open(at(0, 10)) and hours.is_open(at(4, 17, 59))
    assert not hours.is_open(at(0, 9, 59)) and not hours.is_open(at(0, 18)) and not hours.is_open(at(5, 12))


def test_opening_hours_past_midnight() -> None:
    hours = OpeningHours(dt.time(20), dt.time(2), ["fri", "sat"])
    assert hours.is_open(at(4, 23)) and hours.is_open(at(5, 1, 30))  # Friday night into Saturday
    assert hours.is_open(at(6, 1)) and not hours.is_open(at(6, 2, 30))  # Saturday's night ends Sunday 2:00
    assert not hours.is_open(at(4, 1))  # Friday 1:00 belongs to Thursday's night: closed


def test_preset_cycle_loads_in_turn_and_skips_a_broken_one(tmp_path: Path, caplog) -> None:
    reg, clock = Registry(), Clock()
    store = PresetStore(reg, tmp_path)
    store.save("a", {"steps": 3})
    store.save("b", {"steps": 5})
    (tmp_path / "broken.toml").write_text("steps = [")
    cycler = PresetCycler(store, ["a", "broken", "b"], minutes=10, clock=clock)
    loaded = []
    for minute in range(0, 45):
        clock.t = minute * 60.0
        if (name := cycler.tick()):
            loaded.append((minute, name, reg.get("steps")))
    assert loaded == [(0, "a", 3), (10, "b", 5), (20, "a", 3), (30, "b", 5), (40, "a", 3)]
    assert caplog.text.count("skipping broken") == 1


def test_idle_mode_after_stillness_and_back_on_motion() -> None:
    clock = Clock()
    idle = IdleWatcher(after_seconds=60, overrides={"zoom": 0.01}, clock=clock)
    for second in range(0, 59):
        clock.t = second
        idle.observe(0.001)
    assert not idle.idle
    clock.t = 61
    idle.observe(0.001)
    assert idle.idle and idle.apply({"zoom": 0.0, "steps": 4}) == {"zoom": 0.01, "steps": 4}
    idle.observe(0.05)  # someone walks in
    assert not idle.idle and idle.apply({"zoom": 0.0}) == {"zoom": 0.0}


def _loop(model, registry, **kw) -> tuple[LiveLoop, NullOutput, ImageSource]:
    out = NullOutput()
    fan = Fanout([out])
    fan.open(128, 96, 30)
    source = ImageSource(photo_path("coffee.png"), fps=200).start()
    loop = LiveLoop(source, model, TorchBackend(model, torch.device("cpu")), registry, fan, status_every=3600, **kw)
    return loop, out, source


def test_closed_hours_send_black_frames_and_do_not_dream(model) -> None:
    registry = Registry()
    registry.update({"width": 128, "height": 96, "steps": 1})
    hours = OpeningHours(dt.time(10), dt.time(11), now=lambda: at(0, 20))
    frames = []
    loop, out, source = _loop(model, registry, hours=hours)
    out.send = lambda f: frames.append(f.copy())  # type: ignore[method-assign]
    with source:
        report = loop.run(max_frames=3)
    # black at the source's own size (the photo's 600x400), not the dream's 128x96
    assert report.frames == 3 and all(f.max() == 0 and f.shape == (400, 600, 3) for f in frames)


def test_idle_overrides_reach_the_dream_in_the_loop(model) -> None:
    registry = Registry()
    registry.update({"width": 128, "height": 96, "steps": 1})
    clock = Clock()
    idle = IdleWatcher(after_seconds=0.0, overrides={"steps": 0}, clock=clock)  # idle at once: a still photo
    loop, out, source = _loop(model, registry, idle=idle, present="dream")  # each frame its own dream
    seen = []
    real = loop.dream_loop.snapshot
    loop.dream_loop.snapshot = lambda: (snap := real(), seen.append(snap.steps))[0]  # type: ignore[method-assign]
    with source:
        loop.run(max_frames=4)
    assert seen[0] == 1 and seen[-1] == 0 and registry.get("steps") == 1  # the registry is untouched
