"""deepdream-live calibrate: measure on the CPU (random weights, tiny sizes), choose, write, read back."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Self

import pytest

from live.calibrate import (
    Measurement,
    Profile,
    calibrate,
    choose,
    format_report,
    load_profile,
    machine_description,
    measure_camera,
    write_profile,
)
from live.control.params import Registry
from live.errors import DataError, InputError, UsageError

HERE = machine_description()


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    """One real, tiny calibration: two sizes × steps 1..2, shallow layer, few frames."""
    path = tmp_path_factory.mktemp("calibration") / "foyer.toml"
    return calibrate(site="foyer", path=path, target_fps=0.5, sizes=[(96, 64), (64, 64)], steps=[1, 2],
                     layers=["inception3a"], frames=2, device="cpu", backends=["torch"])  # fmt: skip


def test_calibrate_writes_a_profile_that_loads_back(measured: Profile) -> None:
    assert measured.path is not None and measured.path.is_file()
    data = tomllib.loads(measured.path.read_text())
    assert data["calibration"]["target_fps"] == 0.5 and data["calibration"]["site"] == "foyer"
    assert data["machine"]["torch"] and "backend" in data["machine"] and data["chosen"]["backend"] == "torch"
    assert len(data["measurement"]) == len(measured.table) >= 2
    again = load_profile(measured.path)
    assert again.chosen == measured.chosen
    assert again.table == measured.table
    assert again.mismatch == ()
    registry = Registry()
    registry.update(again.registry_values(), source="calibration")
    snap = registry.snapshot()
    assert (snap.steps, snap.width, snap.height) == (measured.chosen.steps, measured.chosen.width, measured.chosen.height)
    assert again.sizes()[0] == (96, 64)
    assert not list(measured.path.parent.glob(".*.part")), "atomic write leaves no temporary file"


def test_the_chosen_setting_fits_the_target_given_the_measured_table(measured: Profile) -> None:
    need = measured.target_fps / measured.headroom
    c = measured.chosen
    fits = [m for m in measured.table if m.fps >= need]
    if fits:
        assert c.fits
        row = next(m for m in measured.table if (m.width, m.height, m.steps) == (c.width, c.height, c.steps))
        assert row.fps >= need
        # nothing larger, and nothing with more steps at the same size, also fits
        assert all(m.width * m.height <= c.width * c.height for m in fits)
        assert all(m.steps <= c.steps for m in fits if (m.width, m.height) == (c.width, c.height))
    else:  # a very slow or very busy machine: the cheapest is chosen and flagged
        assert not c.fits and c.fps == max(m.fps for m in measured.table)
    report = format_report(measured)
    assert "chosen:" in report and "foyer" in report and "64x64" in report


def _m(w: int, h: int, steps: int, fps: float, layer: str = "inception4c", backend: str = "torch") -> Measurement:
    return Measurement(backend, layer, w, h, steps, fps, 1e3 / fps, 1e3 / fps)


def test_choose_prefers_size_then_steps_and_needs_every_layer_to_fit() -> None:
    table = [
        _m(640, 352, 1, 31.0), _m(640, 352, 2, 20.0),
        _m(320, 192, 1, 90.0), _m(320, 192, 4, 40.0), _m(320, 192, 6, 29.0),
    ]  # fmt: skip
    c = choose(table, target_fps=25, headroom=0.8)  # needs 31.25 fps
    assert (c.width, c.steps, c.fits) == (320, 4, True)
    c = choose(table, target_fps=24, headroom=0.8)  # needs 30 fps: 640x352 at 1 step now fits
    assert (c.width, c.steps) == (640, 1)
    # a deeper layer that is slower at 640x352 rules that size out
    c = choose([*table, _m(640, 352, 1, 26.0, layer="inception5b")], target_fps=24, headroom=0.8)
    assert (c.width, c.steps) == (320, 4)
    nothing = choose(table, target_fps=200)
    assert not nothing.fits and (nothing.width, nothing.steps) == (320, 1)
    with pytest.raises(UsageError, match="nothing was measured"):
        choose([], 25)


def test_a_profile_from_another_machine_warns_and_is_still_used(measured: Profile, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = dict(HERE, gpu="NVIDIA H200", gpu_capability="9.0")
    with caplog.at_level(logging.WARNING, logger="live.calibrate"):
        profile = load_profile(measured.path, here=elsewhere)
    assert profile.mismatch and "NVIDIA H200" in profile.mismatch[0]
    assert profile.registry_values() == measured.registry_values()
    assert any("another machine" in r.getMessage() and "calibrate" in r.getMessage() for r in caplog.records)
    # on CPU-only machines the CPU model is what matters
    other_cpu = dict(HERE, cpu="Some Other CPU 9000")
    assert load_profile(measured.path, here=other_cpu).mismatch == (f"CPU {HERE['cpu']!r} there, 'Some Other CPU 9000' here",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is = = not toml", "not valid TOML"),
        ("[calibration]\nformat = 1\ntarget_fps = 25.0\n", "[chosen]"),
        ("[calibration]\nformat = 99\ntarget_fps = 25.0\n", "format 99"),
        ('[calibration]\nformat = 1\ntarget_fps = 25.0\n[machine]\ngpu = "none"\n'
         '[chosen]\nbackend = "torch"\nwidth = "wide"\nheight = 192\nsteps = 2\nfps = 30.0\nfits = true\n', "width"),
        ('[calibration]\nformat = 1\ntarget_fps = 25.0\n[machine]\ngpu = "none"\n'
         '[chosen]\nbackend = "torch"\nheight = 192\nsteps = 2\nfps = 30.0\nfits = true\n', "lacks width"),
    ],
)
def test_a_corrupt_profile_is_an_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_profile(path, here=HERE)
    assert str(path) in str(e.value) and message in str(e.value) and "deepdream-live calibrate" in str(e.value)


def test_a_missing_profile_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere\.toml does not exist.*deepdream-live calibrate"):
        load_profile(tmp_path / "nowhere.toml")


def test_profile_round_trip_without_measuring(tmp_path: Path, measured: Profile) -> None:
    path = write_profile(measured, tmp_path / "sub" / "copy.toml")
    assert load_profile(path, here=HERE).chosen == measured.chosen


def test_bad_arguments_fail_before_any_timing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="site name"):
        calibrate(site="../etc", path=tmp_path / "x.toml")
    with pytest.raises(UsageError, match="unknown layer|inception"):
        calibrate(site="x", path=tmp_path / "x.toml", layers=["inception9z"])
    with pytest.raises(UsageError, match="target fps"):
        calibrate(site="x", path=tmp_path / "x.toml", target_fps=0)


def test_camera_measurement_reads_real_frames_or_says_why_not() -> None:
    # How many frames a second a busy machine hands over is its own affair: what is checked
    # here is that the real source was read; the figures are checked exactly below.
    cam = measure_camera("test-scene", seconds=1.0, width=160, height=96, fps=60)
    assert not cam.skipped, cam.skipped
    assert cam.frames >= 3 and cam.fps > 0 and cam.size == "160x96"
    gone = measure_camera("/dev/video63", seconds=0.5)
    assert gone.skipped and gone.frames == 0


class ScriptedCamera:
    """A source handing out frames captured at given times, each taken 10 ms after its capture,
    on a clock of its own (the measurement reads the same clock)."""

    def __init__(self, stamps: list[float], placeholder_at: int | None = None) -> None:
        import numpy as np

        from live.sources import Frame

        self.now = 100.0
        image = np.zeros((96, 160, 3), np.uint8)
        self.frames = [Frame(image, 100.0 + t, n + 1, placeholder=n == placeholder_at) for n, t in enumerate(stamps)]
        self.message = "camera lost - reconnecting"

    def start(self) -> Self:
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def latest(self, timeout: float = 0.0):
        if not self.frames:
            self.now += timeout
            return None
        frame = self.frames.pop(0)
        self.now = frame.timestamp + 0.010
        return frame


def test_camera_measurement_figures_come_from_the_frames_own_times(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import live.calibrate
    import live.sources

    def measure(camera: ScriptedCamera, seconds: float = 5.0):
        monkeypatch.setattr(live.sources, "open_source", lambda *a, **k: camera)
        monkeypatch.setattr(live.calibrate, "time", types.SimpleNamespace(monotonic=lambda: camera.now))
        return measure_camera("stage", seconds=seconds, width=160, height=96, fps=20)

    # 20 fps with one frame dropped (a 100 ms gap): 6 frames over 0.30 s
    cam = measure(ScriptedCamera([0.0, 0.05, 0.10, 0.15, 0.25, 0.30]))
    assert not cam.skipped and cam.frames == 6 and cam.size == "160x96"
    assert cam.fps == pytest.approx(5 / 0.30)
    assert cam.max_interval_ms == pytest.approx(100.0) and cam.jitter_ms == pytest.approx(20.0)
    assert cam.read_latency_ms == pytest.approx(10.0)
    few = measure(ScriptedCamera([0.0, 0.05]))
    assert few.skipped == "only 2 frame(s) in 5 s" and few.frames == 2
    lost = measure(ScriptedCamera([0.0, 0.05, 0.10, 0.15], placeholder_at=2))
    assert lost.skipped == "the camera dropped out while measuring (camera lost - reconnecting)"


def test_command_line_options_are_checked_before_timing(tmp_path: Path) -> None:
    import argparse

    from live.calibrate import add_arguments, calibrate_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(UsageError, match="--sizes '640\\*352'"):
        calibrate_from_args(parser.parse_args(["--output", str(tmp_path / "x.toml"), "--sizes", "640*352"]))
    with pytest.raises(UsageError, match="--steps"):
        calibrate_from_args(parser.parse_args(["--output", str(tmp_path / "x.toml"), "--steps", "1,two"]))


def test_outputs_are_measured_at_the_show_size_and_threads_are_recorded(measured: Profile) -> None:
    """calibrate chooses the dream size only; its frames go out at the size the show sends."""
    assert measured.output_size == "1280x720"
    again = load_profile(measured.path)
    assert again.output_size == "1280x720" and "dream thread" in again.machine["threads"]
    assert "outputs at 1280x720" in format_report(again)
