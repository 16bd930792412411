"""The largest dream size per device: a default per device kind, measured by calibrate, refused
above it from every way in with the reason and the size that fits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from live import limits
from live.backends import Backend
from live.calibrate import load_profile
from live.check import CheckOptions, check_dream_limit
from live.control.osc import OscServer
from live.control.params import Registry
from live.control.presets import PresetStore
from live.errors import UsageError
from live.limits import DreamLimit


def test_each_device_kind_has_a_conservative_default_that_the_registry_defaults_fit() -> None:
    cpu, cuda = limits.default_limit("cpu"), limits.default_limit("cuda:1")
    assert (cpu.max_pixels, cuda.max_pixels) == (960 * 544, 1920 * 1088)
    assert "960x544" in cpu.describe() and "uncalibrated cpu" in cpu.describe()
    registry = Registry()
    limits.guard(registry, cpu)  # 640x360, the default, fits
    assert limits.rule_of(registry) is not None


def test_above_the_limit_is_refused_with_the_reason_and_what_fits() -> None:
    registry = Registry()
    limits.guard(registry, limits.default_limit("cpu"))
    with pytest.raises(UsageError) as e:
        registry.update({"width": 1920, "height": 1080})
    text = str(e.value)
    assert "1920x1088 (2.09 Mpx) is above the largest this machine dreams with one frame in 2 s" in text
    assert "choose 960x544 or smaller" in text and "deepdream-live calibrate" in text
    assert (registry.get("width"), registry.get("height")) == (640, 360)  # nothing changed
    registry.update({"width": 3840, "height": 128})  # a wide strip under the same area is fine
    with pytest.raises(UsageError):
        registry.set("height", 192)  # one side at a time is checked against the other


def test_osc_and_presets_are_refused_above_the_limit_too(tmp_path: Path) -> None:
    registry = Registry()
    registry.update({"width": 320, "height": 192})
    limits.guard(registry, DreamLimit(320 * 192, "cpu", "a test"))
    with OscServer(registry, port=0) as server:
        server._dispatch(_message("/dream/width", 1280), ("127.0.0.1", 9))  # as if it came in a datagram
        assert server.stats["errors"] == {"out_of_range": 1}
    assert registry.get("width") == 320
    PresetStore(Registry(), tmp_path).save("big", {"width": 1280, "height": 720})
    with pytest.raises(UsageError, match="above the largest"):
        PresetStore(registry, tmp_path).load("big")


def _message(address: str, *args):
    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import build_msg

    return OscMessage(build_msg(address, list(args)).dgram)


def test_a_show_that_lands_on_a_slower_device_shrinks_to_fit_and_says_why(caplog) -> None:
    registry = Registry()
    limits.guard(registry, limits.default_limit("cuda"))
    registry.update({"width": 1920, "height": 1080})
    limits.enforce(registry, limits.default_limit("cpu"))
    assert (registry.get("width"), registry.get("height")) == (960, 544)
    assert "dreaming at 960x544 instead" in caplog.text
    with pytest.raises(UsageError):
        registry.update({"width": 1920, "height": 1080})  # the CPU's limit holds from now on


class Sleepy(Backend):
    """A backend whose step takes ``seconds_per_pixel`` × pixels on a simulated clock, and does
    nothing else: the timing is exact whatever else the machine is doing."""

    name = "sleepy"

    def __init__(self, seconds_per_pixel: float) -> None:
        super().__init__(torch.device("cpu"))
        self.k = seconds_per_pixel
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def gradient(self, x, objective):
        raise NotImplementedError

    def ascend(self, x, objective, steps, *args, **kwargs):
        self.now += self.k * x.shape[-1] * x.shape[-2] * steps
        return x


def test_calibrate_measures_the_size_whose_frame_takes_two_seconds(model) -> None:
    backend = Sleepy(1e-6)  # 4 steps at 500k pixels: 2 s
    # the sweep's estimate was too slow by 2x: the size it predicts (250k pixels) is timed, takes
    # half the time, and is kept (no extrapolating up)
    kept = limits.measure_limit(model, backend, seconds_per_pixel_step=2e-6, clock=backend.clock)
    assert kept.max_pixels == 250_000 and "measured by calibrate" in kept.source
    # too fast by 2x: the predicted size (1312x736, 0.97 Mpx) takes 3.9 s, so the limit shrinks in
    # proportion, to about 0.52 Mpx
    shrunk = limits.measure_limit(model, backend, seconds_per_pixel_step=0.5e-6, clock=backend.clock)
    w, h = limits.example_size(1_000_000)
    assert (w, h) == (1312, 736) and "4 steps at 1312x736 took 3.86 s" in shrunk.source
    assert shrunk.max_pixels == pytest.approx(1_000_000 * 2.0 / (4 * 1e-6 * w * h), abs=1)
    assert 500_000 < shrunk.max_pixels < 520_000


def test_the_profile_carries_the_limit_and_check_reports_it(tmp_path: Path) -> None:
    from live.calibrate import calibrate

    profile = calibrate(path=tmp_path / "here.toml", sizes=[(64, 64)], steps=[1], frames=1, target_fps=1.0,
                        device="cpu", backends=["torch"])
    assert profile.max_pixels is not None and "[limit]" in profile.path.read_text()
    again = load_profile(profile.path)
    limit = again.limit("cpu")
    assert limit is not None and limit.max_pixels == profile.max_pixels
    assert again.limit("cuda") is None  # measured on the CPU: says nothing about a GPU
    report = check_dream_limit(CheckOptions(device="cpu", calibration=profile.path, dream_size=(64, 64)))
    assert report.ok and "measured by calibrate" in report.detail and "configured 64x64 fits" in report.detail
    uncalibrated = check_dream_limit(CheckOptions(device="cpu", dream_size=(1920, 1080)))
    assert uncalibrated.ok is False and uncalibrated.required and "calibrate" in uncalibrated.fix


def test_a_show_starts_at_a_size_that_fits_and_refuses_a_flag_above_it(tmp_path: Path, caplog) -> None:
    """The default size (or a profile's) is nobody's explicit choice: above this machine's measured
    limit it is brought down, with a warning; a size the operator types is refused instead."""
    from live.calibrate import calibrate
    from live.cli import _build_parser, _show_setup

    profile = calibrate(path=tmp_path / "slow.toml", sizes=[(96, 64)], steps=[1], frames=1, target_fps=1.0,
                        device="cpu", backends=["torch"], measure_limit=False)
    text = profile.path.read_text() + '\n[limit]\nmax_pixels = 4096\nmeasured = "a slow machine"\n'
    profile.path.write_text(text)
    opts, registry, _ = _show_setup(_build_parser().parse_args(["run", "--calibration", str(profile.path),
                                                                "--device", "cpu"]))
    assert (registry.get("width"), registry.get("height")) == (64, 64)  # the profile's 96x64, brought down
    assert opts.dream_limit.max_pixels == 4096 and "dreaming at 64x64 instead" in caplog.text
    with pytest.raises(UsageError, match="above the largest"):
        _show_setup(_build_parser().parse_args(["run", "--calibration", str(profile.path), "--device", "cpu",
                                                "--size", "96x64"]))
