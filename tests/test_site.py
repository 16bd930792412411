"""The site config: bad files fail with messages an operator can act on; good ones reach the registry."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from importlib.resources import files
from pathlib import Path

import pytest

from live.app import ShowOptions
from live.control.params import Registry
from live.errors import DataError, InputError, UsageError
from live.objectives import Objective
from live.site import apply_reload, diff, is_live, load_site, reload_plan

GOOD = """
[source]
spec = "/dev/video2"
capture_size = "1920x1080"
capture_fps = 30

[dream]
objective = "inception4c:97"
steps = 3
width = 960
height = 544
feedback = 0.9
flow = false

[network]
weights = "weights/googlenet.pth"
backend = "torch"
device = "cuda:0"

[outputs]
window = true
fullscreen = true
monitor = 1
vcam = true
vcam_device = "/dev/video10"
record = "recordings/show.mp4"

[osc]
enabled = true
host = "0.0.0.0"
port = 0
allow = ["192.168.1.0/24", "10.0.0.7/32"]
feedback = ["192.168.1.20:9001", "[::1]:9002"]

[midi]
enabled = true
mapping = "midi.toml"

[presets]
directory = "presets"
start = "gallery"
cycle = ["gallery", "eyes"]
cycle_minutes = 15
morph_time = 4

[schedule]
open = "10:00"
close = "18:00"
days = ["tue", "wed", "thu", "fri", "sat", "sun"]
outside = "placeholder"

[idle]
after_minutes = 5
motion_threshold = 0.03
preset = "sleepy"
[idle.dream]
zoom = 0.01

[governor]
target_fps = 25
min_steps = 1

[log]
level = "debug"

[calibration]
site = "foyer"
"""


def write(tmp_path: Path, text: str, name: str = "site.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_good_config_reaches_the_registry_and_the_show_options(tmp_path: Path) -> None:
    site = load_site(write(tmp_path, GOOD))
    registry = Registry()
    site.apply(registry)
    snap = registry.snapshot()
    assert snap.objective == Objective.parse("inception4c:97")
    assert (snap.steps, snap.width, snap.height, snap.feedback, snap.flow) == (3, 960, 544, 0.9, False)
    assert snap.jitter == 16, "keys the file leaves out keep their defaults"

    values = site.show_options()
    opts = ShowOptions(**values)  # every key is a ShowOptions field
    assert opts.source == "/dev/video2" and (opts.capture_width, opts.capture_height) == (1920, 1080)
    assert opts.fullscreen and opts.monitor == 1 and opts.vcam and opts.vcam_device == "/dev/video10"
    assert opts.record == tmp_path / "recordings" / "show.mp4", "relative paths are relative to the config file"
    assert opts.backend == "torch" and opts.device == "cuda:0"
    assert "overlay" not in values, "only what the file sets, so CLI flags can be layered on top"
    # CLI flags override: the caller merges explicit flags last
    assert ShowOptions(**{**values, "source": "test-scene"}).source == "test-scene"

    assert site.osc.port == 0, "port 0: any free one, as --osc-port 0"
    assert [str(n) for n in site.osc.allow] == ["192.168.1.0/24", "10.0.0.7/32"]
    assert site.osc.feedback == (("192.168.1.20", 9001), ("::1", 9002))
    assert site.midi.mapping == tmp_path / "midi.toml"
    assert site.presets.cycle == ("gallery", "eyes") and site.presets.morph_time == 4.0
    assert site.idle.dream["zoom"] == 0.01 and site.governor.target_fps == 25.0
    assert site.calibration_path == tmp_path / "calibration" / "foyer.toml"


def test_the_example_shipped_with_the_package_is_valid() -> None:
    site = load_site(Path(str(files("live") / "site-example.toml")))
    assert site.schedule.open == dt.time(10, 0) and site.osc.enabled


def test_schedule_opening_hours() -> None:
    from live.site import ScheduleSection

    day = ScheduleSection(open=dt.time(10), close=dt.time(18), days=("mon", "tue"))
    monday = dt.datetime(2024, 1, 1)  # a Monday
    assert day.is_open(monday.replace(hour=10)) and not day.is_open(monday.replace(hour=18))
    assert not day.is_open(monday.replace(hour=9, minute=59))
    assert not day.is_open(monday.replace(day=3, hour=12)), "Wednesday is not a show day"
    night = ScheduleSection(open=dt.time(20), close=dt.time(2), days=("fri",))
    friday = dt.datetime(2024, 1, 5, 23)
    assert night.is_open(friday) and night.is_open(friday + dt.timedelta(hours=2, minutes=59))
    assert not night.is_open(friday + dt.timedelta(hours=3)) and not night.is_open(friday - dt.timedelta(hours=4))
    assert ScheduleSection().is_open(monday), "no hours: always open"


BAD = [
    ("[dream]\nsteps = \"four\"\n", "dream.steps = 'four': expected an integer 0..50 steps"),
    ("[dream]\nsteps = 99\n", "dream.steps = 99: expected an integer 0..50 steps"),
    ("[dream]\nfeedback = 1.5\n", "dream.feedback = 1.5: expected a number 0..1"),
    ("[dream]\nsteps = 2.5\n", "dream.steps = 2.5: expected an integer"),
    ("[dream]\nflow = 1\n", "dream.flow = 1: expected true or false"),
    ("[dream]\nobjective = \"inception9z\"\n", "dream.objective = 'inception9z': unknown layer"),
    ("[dream]\nstpes = 2\n", "unknown key dream.stpes; did you mean dream.steps?"),
    ("[dream]\nreset = true\n", "unknown key dream.reset ('reset' is a button"),
    ("[outputs]\nfulscreen = true\n", "unknown key outputs.fulscreen; did you mean outputs.fullscreen?"),
    ("[ouputs]\nwindow = true\n", "unknown section [ouputs]; did you mean outputs?"),
    ("[banana]\nx = 1\n", "unknown section [banana]; expected one of: source, dream"),
    ("[outputs]\nwindow = \"yes\"\n", "outputs.window = 'yes': expected true or false"),
    ("[source]\ncapture_size = \"1280*720\"\n", "source.capture_size = '1280*720': expected a size \"WIDTHxHEIGHT\""),
    ("[schedule]\nopen = \"9am\"\nclose = \"18:00\"\n", "schedule.open = '9am': expected a time of day \"HH:MM\""),
    ("[schedule]\nopen = \"25:00\"\nclose = \"18:00\"\n", "schedule.open = '25:00'"),
    ("[schedule]\nopen = \"10:00\"\n", "[schedule] needs both open and close"),
    ("[schedule]\nopen = \"10:00\"\nclose = \"18:00\"\ndays = [\"monday\", \"funday\"]\n", "expected a non-empty list of days"),
    ("[osc]\nallow = [\"10.0.0.0/33\"]\n", "osc.allow = ['10.0.0.0/33']: expected networks in CIDR form"),
    ("[osc]\nallow = [\"192.168.1.5/24\"]\n", "did you mean 192.168.1.0/24?"),
    ("[osc]\nallow = \"192.168.1.0/24\"\n", "osc.allow = '192.168.1.0/24': expected a list of networks"),
    ("[osc]\nfeedback = [\"192.168.1.20\"]\n", "expected \"host:port\" with a port 1..65535"),
    ("[osc]\nfeedback = [\"192.168.1.20:70000\"]\n", "got port 70000"),
    ("[osc]\nport = 70000\n", "osc.port = 70000: expected an integer 0..65535"),
    ("[presets]\ncycle = [\"../../etc/passwd\"]\n", "expected a preset name"),
    ("[log]\nlevel = \"loud\"\n", "log.level = 'loud': expected one of 'debug', 'info', 'warning', 'error'"),
    ("[calibration]\nfile = \"a.toml\"\nsite = \"b\"\n", "[calibration] takes file or site, not both"),
    ("[idle.dream]\nzooom = 0.01\n", "unknown key idle.dream.zooom; did you mean idle.dream.zoom?"),
    ("dream = 3\n", "[dream] must be a table"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_a_bad_config_says_where_and_what_is_allowed(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as e:
        load_site(path)
    assert str(path) in str(e.value)
    assert message in str(e.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as e:
        load_site(write(tmp_path, "[dream]\nsteps = 99\nfeedback = -1\n[osc]\nport = \"x\"\n"))
    text = str(e.value)
    assert "3 problem(s)" in text and "dream.steps" in text and "dream.feedback" in text and "osc.port" in text


def test_missing_file_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere\.toml does not exist; copy live/site-example\.toml"):
        load_site(tmp_path / "nowhere.toml")
    path = write(tmp_path, "[dream]\nsteps = 2\n\n[outputs\nwindow = true\n")
    with pytest.raises(DataError) as e:
        load_site(path)
    assert str(path) in str(e.value) and "not valid TOML" in str(e.value) and "line 4" in str(e.value)


def test_diff_and_what_can_change_live(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    old = load_site(write(tmp_path, GOOD))
    edited = (GOOD.replace("steps = 3", "steps = 2").replace("feedback = 0.9\n", "")
              .replace('spec = "/dev/video2"', 'spec = "/dev/video4"').replace('level = "debug"', 'level = "info"'))
    new = load_site(write(tmp_path, edited, "site2.toml"))
    lines = diff(old, new)
    assert "dream.steps: 3 -> 2 (live)" in lines
    assert "dream.feedback: 0.9 -> (unset) (live)" in lines
    assert "source.spec: '/dev/video2' -> '/dev/video4' (needs a restart)" in lines
    assert "log.level: 'debug' -> 'info' (live)" in lines
    assert diff(old, old) == []
    assert is_live("presets.cycle") and is_live("schedule.open") and is_live("idle.after_minutes")
    assert not is_live("outputs.vcam") and not is_live("network.backend") and not is_live("osc.port")

    plan = reload_plan(old, new)
    assert any(x.startswith("source.spec") for x in plan.restart)
    assert dict(plan.dream) == {"steps": 2, "feedback": 0.9}, "a key taken out goes back to its default"

    registry = Registry()
    old.apply(registry)
    registry.set("mix", 0.5, source="osc")  # a live change since the show started
    with caplog.at_level(logging.INFO, logger="live.site"):
        apply_reload(old, new, registry)
    snap = registry.snapshot()
    assert (snap.steps, snap.feedback, snap.mix, snap.width) == (2, 0.9, 0.5, 960), "only what the file changed"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("source.spec" in w and "restart" in w for w in warnings)


def test_sites_are_frozen(tmp_path: Path) -> None:
    site = load_site(write(tmp_path, GOOD))
    with pytest.raises(dataclasses.FrozenInstanceError):
        site.log = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        site.dream["steps"] = 9  # type: ignore[index]
