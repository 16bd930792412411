"""The run-time governor against a simulated backend: frame time ∝ steps × pixels, with noise."""

from __future__ import annotations

import logging
import random

import pytest

from live.control.params import Registry
from live.governor import Adjustment, Governor, Setting, default_sizes

TARGET = 25.0  # fps: a budget of 40 ms
SIZES = [(640, 352), (576, 320), (512, 288), (448, 256), (384, 224), (320, 192)]


class SimBackend:
    """Seconds per frame = ``k`` × steps × pixels × ``slowdown`` + 1 ms, times (1 ± ``noise``)."""

    def __init__(self, k: float, noise: float = 0.05, seed: int = 0) -> None:
        self.k, self.noise, self.slowdown = k, noise, 1.0
        self.rng = random.Random(seed)

    def cost(self, steps: int, width: int, height: int) -> float:
        return self.k * max(steps, 0.5) * width * height * self.slowdown + 0.001

    def frame(self, steps: int, width: int, height: int) -> float:
        return self.cost(steps, width, height) * (1.0 + self.rng.gauss(0.0, self.noise))


def k_for(ms: float, steps: int, size: tuple[int, int]) -> float:
    """The constant that makes ``steps`` at ``size`` take ``ms`` milliseconds."""
    return (ms / 1e3 - 0.001) / (steps * size[0] * size[1])


class Show:
    """The loop's side: a registry, the governor fed the registry's values, adjustments written back."""

    def __init__(self, governor: Governor, backend: SimBackend, steps: int = 4, size: tuple[int, int] = (640, 352)):
        self.registry = Registry()
        self.registry.update({"steps": steps, "width": size[0], "height": size[1]}, source="cli")
        self.governor, self.backend = governor, backend
        self.registry.subscribe(governor.registry_listener)
        self.adjustments: list[tuple[int, Adjustment]] = []
        self.frames = 0

    def setting(self) -> Setting:
        snap = self.registry.snapshot()
        return Setting(snap.steps, snap.width, snap.height)

    def run(self, frames: int) -> list[Setting]:
        seen = []
        for _ in range(frames):
            snap = self.registry.snapshot()
            seconds = self.backend.frame(snap.steps, snap.width, snap.height)
            adj = self.governor.observe(seconds, snap)
            if adj is not None:
                self.registry.update(adj.values(), source="governor")
                self.adjustments.append((self.frames, adj))
            self.frames += 1
            seen.append(self.setting())
        return seen

    def true_fps(self) -> float:
        s = self.setting()
        return 1.0 / self.backend.cost(s.steps, s.width, s.height)


def direction_changes(settings: list[Setting]) -> int:
    """How often the cost trend flips (down then up, or up then down)."""
    moves = []
    for a, b in zip(settings, settings[1:]):
        if a != b:
            moves.append(1 if b.work > a.work else -1)
    return sum(1 for a, b in zip(moves, moves[1:]) if a != b)


def test_starting_too_high_it_converges_by_trimming_steps_and_keeps_the_size() -> None:
    # 4 steps at 640x352 take 64 ms; 2 steps there take ~32 ms: fits with 15% headroom
    backend = SimBackend(k_for(64, 4, (640, 352)))
    show = Show(Governor(TARGET, sizes=SIZES), backend)
    show.run(600)
    final = show.setting()
    assert (final.width, final.height) == (640, 352), "the size must not shrink while fewer steps fit"
    assert final.steps == 2
    assert show.true_fps() >= TARGET
    after = show.run(3000)
    assert direction_changes(after) <= 1
    assert all(s == final for s in after), "it must stay put once it fits"


def test_size_shrinks_only_when_min_steps_at_this_size_cannot_fit() -> None:
    # even 1 step at 640x352 takes 50 ms: the size has to go
    backend = SimBackend(k_for(200, 4, (640, 352)))
    show = Show(Governor(TARGET, sizes=SIZES), backend)
    show.run(1000)
    final = show.setting()
    assert show.true_fps() >= TARGET
    assert final.pixels < 640 * 352
    # each size reduction happened only when 1 step at the old size was over the budget
    previous = Setting(4, 640, 352)
    for _, adj in show.adjustments:
        if adj.width * adj.height < previous.pixels:
            assert 1 / backend.cost(1, previous.width, previous.height) < TARGET
        previous = Setting(adj.steps, adj.width, adj.height)
    # it uses the largest size that holds the target, then the most steps there
    fits = [s for s in Governor(TARGET, sizes=SIZES).ladder(Setting(4, 640, 352))
            if backend.cost(s.steps, s.width, s.height) <= 0.85 / TARGET]
    assert final.pixels == fits[0].pixels
    assert direction_changes(show.run(3000)) <= 1


def test_slowdown_mid_run_steps_down_then_restores_without_passing_the_ceiling() -> None:
    backend = SimBackend(k_for(64, 4, (640, 352)), seed=3)
    show = Show(Governor(TARGET, sizes=SIZES), backend)
    show.run(600)
    settled = show.setting()
    assert settled == Setting(2, 640, 352)

    backend.slowdown = 2.5  # another process takes the GPU
    slow = show.run(1500)
    assert show.setting().work < settled.work
    assert show.true_fps() >= TARGET
    assert direction_changes(slow[300:]) <= 1

    backend.slowdown = 1.0
    restored = show.run(3000)
    assert show.setting() == settled, "back to the best setting that fits, not beyond"
    ceiling = Setting(4, 640, 352)
    assert all(s.steps <= ceiling.steps and s.pixels <= ceiling.pixels for s in slow + restored)
    assert direction_changes(restored[1000:]) == 0


def test_plenty_of_room_never_goes_above_the_operators_setting() -> None:
    backend = SimBackend(k_for(5, 4, (640, 352)))  # 200 fps possible
    show = Show(Governor(TARGET, sizes=SIZES), backend, steps=3, size=(512, 288))
    show.run(2000)
    assert show.setting() == Setting(3, 512, 288)
    assert show.adjustments == []


def test_operator_raising_steps_by_hand_is_the_new_ceiling() -> None:
    backend = SimBackend(k_for(20, 4, (640, 352)))  # 4 steps fit; 12 do not
    show = Show(Governor(TARGET, sizes=SIZES), backend)
    show.run(300)
    assert show.setting() == Setting(4, 640, 352)
    show.registry.set("steps", 12, source="osc")  # the performer wants more
    show.run(1500)
    s = show.setting()
    assert 4 < s.steps < 12 and (s.width, s.height) == (640, 352)
    assert show.governor.ceiling == Setting(12, 640, 352)
    assert show.true_fps() >= TARGET
    # and lowering by hand is obeyed too: the governor never raises it back
    show.registry.set("steps", 2, source="midi")
    show.run(1500)
    assert show.setting() == Setting(2, 640, 352)


def test_operator_setting_the_value_the_governor_chose_still_pins_the_ceiling() -> None:
    backend = SimBackend(k_for(64, 4, (640, 352)))
    show = Show(Governor(TARGET, sizes=SIZES), backend)
    show.run(600)
    assert show.setting().steps == 2
    show.registry.set("steps", 2, source="osc")  # same number: no visible change in the snapshot
    show.run(10)
    assert show.governor.ceiling is not None and show.governor.ceiling.steps == 2


def test_a_wrong_prediction_backs_off_instead_of_see_sawing() -> None:
    # a backend whose cost jumps at 3 steps (e.g. a cache cliff): the linear model says 3 fits
    class Cliff(SimBackend):
        def cost(self, steps: int, width: int, height: int) -> float:
            base = super().cost(steps, width, height)
            return base * (1.6 if steps >= 3 else 1.0)

    backend = Cliff(k_for(50, 4, (640, 352)) / 1.6, noise=0.03)
    show = Show(Governor(TARGET, sizes=SIZES), backend)
    show.run(500)
    after = show.run(3000)
    flips = direction_changes(after)
    # each failed try doubles the wait: at most a handful of retries in 3000 frames (~2 minutes)
    assert flips <= 6
    assert sum(1 / backend.cost(s.steps, s.width, s.height) >= TARGET for s in after) > 0.95 * len(after)


def test_each_change_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    backend = SimBackend(k_for(64, 4, (640, 352)))
    show = Show(Governor(TARGET, sizes=SIZES), backend)
    with caplog.at_level(logging.INFO, logger="live.governor"):
        show.run(400)
    lines = [r.getMessage() for r in caplog.records if r.name == "live.governor"]
    assert len(lines) == len(show.adjustments) >= 1
    assert "fps < 25 target" in lines[0] and "4 steps at 640x352 -> 2 steps at 640x352" in lines[0]


def test_default_sizes_are_multiples_of_32_shrinking() -> None:
    sizes = default_sizes(1280, 720)
    assert sizes[0] == (1280, 736) or sizes[0] == (1280, 704)
    assert all(w % 32 == 0 and h % 32 == 0 for w, h in sizes)
    areas = [w * h for w, h in sizes]
    assert areas == sorted(areas, reverse=True) and len(set(areas)) == len(areas)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="target_fps"):
        Governor(0)
    with pytest.raises(ValueError, match="headroom"):
        Governor(25, headroom=1.2)


def test_min_size_is_a_floor() -> None:
    backend = SimBackend(k_for(400, 4, (640, 352)))  # nothing reasonable fits
    show = Show(Governor(TARGET, sizes=SIZES, min_size=(512, 288)), backend)
    show.run(800)
    assert show.setting() == Setting(1, 512, 288), "as cheap as allowed, and no smaller"
