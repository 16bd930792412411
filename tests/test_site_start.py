"""A site config as the venue technician meets it: `run --config` and `check --config` side by side
on a table of configs, broken and not. Whatever `run` stops on, `check` fails on with the same
reason; whatever `run` starts with, `check` passes (optional parts missing are warnings). And the
exit codes tell systemd what to do: 64/65/66 (a mistake in a file) are not retried, 69 (a device
or port not there yet) is."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import pytest
import tomlkit
import torch

from live.cli import main
from tests.systemd_manager import FakeSystemd
from tests.xvfb import XVFB, running_xvfb

EXE = str(Path(sys.executable).with_name("deepdream-live"))
NO_RETRY = {64, 65, 66}  # systemd/deepdream-live.service: RestartPreventExitStatus=

BASE = """
[source]
spec = "test-scene"
[dream]
width = 96
height = 64
steps = 1
[network]
weights = "random"
device = "cpu"
[outputs]
window = false
[osc]
enabled = false
port = {port}
[midi]
enabled = false
[log]
level = "info"
"""


def free_udp_port() -> int:
    """A port nobody holds now (bound to 0, then let go): never a fixed number."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_keys(text: str, section: str, **keys: str) -> str:
    """``text`` with ``keys`` (TOML values, written as they go in the file) set in ``[section]``."""
    lines = [f"{k} = {v}" for k, v in keys.items()]
    head = f"[{section}]"
    if head not in text.splitlines():
        return text + "\n" + head + "\n" + "\n".join(lines) + "\n"
    out = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        if key in keys and out and _section_of(out) == section:
            continue  # replaced below
        out.append(line)
        if line.strip() == head:
            out.extend(lines)
    return "\n".join(out) + "\n"


def _section_of(lines: list[str]) -> str:
    for line in reversed(lines):
        m = re.match(r"\[([a-z.]+)\]", line.strip())
        if m:
            return m.group(1)
    return ""


@dataclass
class Case:
    """One config: what to change in the base, and what both commands must make of it."""

    name: str
    edit: Callable[[str, Path], str]
    run_exit: int  # 0: the show starts; else the exit code run stops with
    says: str = ""  # a piece of the reason, in run's error and in check's failing line
    display: bool = False  # run under the Xvfb screen
    probe: bool = False  # check starts each backend (its default); else --no-probe, to save time
    env: dict[str, str] = field(default_factory=dict)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _example(text: str, site: Path) -> str:
    """live/site-example.toml copied as systemd/README.md says, weights set to random (offline
    here), OSC and the web page on any free port (port 0: another show may hold the example's)."""
    example = tomlkit.parse(Path(str(files("live") / "site-example.toml")).read_text())
    example["network"]["weights"] = "random"
    example["osc"]["port"] = example["web"]["port"] = 0
    return tomlkit.dumps(example)


def _truncated_weights(text: str, site: Path) -> str:
    from live.model.weights import random_reference

    path = site.parent / "cut.pth"
    torch.save(random_reference(0).state_dict(), path)
    path.write_bytes(path.read_bytes()[:4000])
    return with_keys(text, "network", weights=f'"{path}"')


def _damaged_profile(text: str, site: Path) -> str:
    path = _write(site.parent / "cal.toml", "[calibration]\nformat = 99\n")
    return with_keys(text, "calibration", file=f'"{path}"')


def _cycle_with_a_missing_preset(text: str, site: Path) -> str:
    _write(site.parent / "presets" / "soft.toml", "feedback = 0.3\n")
    return with_keys(text, "presets", directory='"presets"', start='"soft"', cycle='["soft", "eyes"]')


def _preset_with_a_bad_key(text: str, site: Path) -> str:
    _write(site.parent / "presets" / "loud.toml", "warp = 3\n")
    return with_keys(text, "presets", directory='"presets"', start='"loud"')


def _text_file_source(text: str, site: Path) -> str:
    path = _write(site.parent / "notes.txt", "layers\n")
    return with_keys(text, "source", spec=f'"{path}"')


def _broken_mapping(text: str, site: Path) -> str:
    _write(site.parent / "midi.toml", '[[binding]]\ncc = 1\nparam = "warp"\n')
    return with_keys(text, "midi", enabled="true", mapping='"midi.toml"')


CASES = [
    Case("valid", lambda t, s: t, 0, probe=True),
    Case("the example config on a one-screen machine", _example, 0, display=True, probe=True),
    Case("the example's old monitor = 1 on one screen",
         lambda t, s: _example(t, s).replace("monitor = 0 ", "monitor = 1 "), 64, "no monitor 1", display=True),
    Case("window wanted, no display", lambda t, s: with_keys(t, "outputs", window="true"), 69, "DISPLAY",
         env={"DISPLAY": ""}),
    Case("unknown key", lambda t, s: t.replace("steps = 1", "stpes = 1"), 64, "did you mean dream.steps"),
    Case("not TOML", lambda t, s: t + "[dream\n", 65, "line"),
    Case("calibration profile missing", lambda t, s: with_keys(t, "calibration", site='"gallery"'), 66,
         "gallery.toml does not exist"),
    Case("calibration profile damaged", _damaged_profile, 65, "cal.toml"),
    Case("start preset missing", lambda t, s: with_keys(t, "presets", directory='"presets"', start='"gallery"'), 66,
         "no preset 'gallery'"),
    Case("a preset of the cycle missing (skipped, logged)", _cycle_with_a_missing_preset, 0),
    Case("preset with a bad key", _preset_with_a_bad_key, 65, "loud.toml"),
    Case("source file missing", lambda t, s: with_keys(t, "source", spec='"clips/opening.mp4"'), 66, "no such file"),
    Case("source not a video", _text_file_source, 66, "neither a video nor an image"),
    Case("weights file missing", lambda t, s: with_keys(t, "network", weights='"/nowhere/googlenet.pth"'), 66,
         "does not exist"),
    Case("weights file truncated", _truncated_weights, 65, "corrupt or truncated"),
    Case("ImageNet weights not cached, offline", lambda t, s: with_keys(t, "network", weights='"imagenet"'), 69,
         "127.0.0.1:9"),
    Case("backend tensorrt without TensorRT", lambda t, s: with_keys(t, "network", backend='"tensorrt"'), 69,
         "TensorRT is not installed" if shutil.which("nvidia-smi") is None else "tensorrt", probe=True),
    Case("backend tensorrt, --no-probe", lambda t, s: with_keys(t, "network", backend='"tensorrt"'), 69,
         "TensorRT is not installed" if shutil.which("nvidia-smi") is None else "tensorrt"),
    Case("device cuda without CUDA", lambda t, s: with_keys(t, "network", device='"cuda"'), 69, "CUDA", probe=True),
    Case("OSC on a free port", lambda t, s: with_keys(t, "osc", enabled="true"), 0),
    Case("OSC open to the network without an allowlist",
         lambda t, s: with_keys(t, "osc", enabled="true", host='"0.0.0.0"'), 64, "--osc-allow"),
    Case("MIDI mapping broken", _broken_mapping, 65, "midi.toml: binding 1"),
    Case("MIDI on, no MIDI system here (a warning)", lambda t, s: with_keys(t, "midi", enabled="true", api='"jack"'), 0,
         env={"JACK_DEFAULT_SERVER": f"nobody-runs-this-{os.getpid()}", "JACK_NO_START_SERVER": "1"}),
    Case("recording into a missing directory", lambda t, s: with_keys(t, "outputs", record='"nowhere/show.mp4"'), 73,
         "does not exist"),
    Case("recording to an unknown type", lambda t, s: with_keys(t, "outputs", record='"show.xyz"'), 64, ".xyz"),
]
if torch.cuda.is_available():
    CASES = [c for c in CASES if "CUDA" not in c.name]


@pytest.fixture(scope="module")
def screen() -> Iterator[str]:
    if not XVFB.exists():
        pytest.skip(f"{XVFB} is not installed: the one-screen cases need it (make test installs it)")
    with running_xvfb(1280, 720) as display:
        yield display


def _run(site: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, "run", "--config", str(site), "--max-frames", "2", "--status-every", "3600"],
                          capture_output=True, text=True, timeout=300, env=env, check=False)


def _environment(case: Case, display: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **case.env}
    env.pop("WAYLAND_DISPLAY", None)
    if case.display:
        env["DISPLAY"] = display or ""
    elif "DISPLAY" not in case.env:
        env.pop("DISPLAY", None)
    if not env.get("DISPLAY"):
        env.pop("DISPLAY", None)
    return env


def test_check_fails_exactly_where_run_stops(tmp_path: Path, screen: str, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    sites = []
    for i, case in enumerate(CASES):
        site = tmp_path / f"site{i}" / "site.toml"
        site.parent.mkdir()
        site.write_text(case.edit(BASE.format(port=free_udp_port()), site))
        sites.append(site)

    def check(case: Case, site: Path) -> tuple[int, str]:
        env = _environment(case, screen)
        with monkeypatch.context() as m:
            for key in ("DISPLAY", "WAYLAND_DISPLAY", *case.env):
                m.delenv(key, raising=False)
            for key, value in env.items():
                if key in ("DISPLAY", *case.env):
                    m.setenv(key, value)
            code = main(["check", "--config", str(site), *([] if case.probe else ["--no-probe"])])
        said = capsys.readouterr()
        return code, said.out + said.err

    # A config with OSC on is checked before its show runs: the running show holds the port.
    checked: dict[int, tuple[int, str]] = {}
    for i, (case, site) in enumerate(zip(CASES, sites, strict=True)):
        if "osc" in case.name.lower() or "example" in case.name:
            checked[i] = check(case, site)
    # `run` for every case, a few at a time: each is a fresh process, as systemd starts it. The
    # other checks run here meanwhile, in this process.
    with ThreadPoolExecutor(3) as pool:
        running = [pool.submit(_run, site, _environment(case, screen)) for case, site in zip(CASES, sites, strict=True)]
        for i, (case, site) in enumerate(zip(CASES, sites, strict=True)):
            if i not in checked:
                checked[i] = check(case, site)
        runs = [future.result() for future in running]

    problems = []
    for i, (case, ran) in enumerate(zip(CASES, runs, strict=True)):
        code, report = checked[i]
        # a config that does not load is one error message; otherwise the FAIL lines
        failing = report if "error:" in report else "\n".join(l for l in report.splitlines() if l.startswith("FAIL"))
        run_said = ran.stderr[-3000:]
        if ran.returncode != case.run_exit:
            problems.append(f"{case.name}: run exited {ran.returncode}, expected {case.run_exit}:\n{run_said}")
        if (code != 0) != (case.run_exit != 0):
            problems.append(f"{case.name}: check exited {code} where run exits {ran.returncode}:\n{report}")
        if case.says and (case.says not in run_said or case.says not in failing):
            problems.append(f"{case.name}: {case.says!r} should be in run's error and check's failing line;\n"
                            f"run: {run_said}\ncheck: {failing or report}")
    assert not problems, "\n\n".join(problems)


def test_config_errors_say_so_in_the_journal_and_to_systemd(tmp_path: Path) -> None:
    """Under systemd (NOTIFY_SOCKET set), the reason also becomes the unit's status line, so
    `systemctl status` says why the show is down and whether it comes back by itself."""
    manager = FakeSystemd(tmp_path / "n.sock")
    broken = tmp_path / "broken" / "site.toml"
    _write(broken, with_keys(BASE.format(port=free_udp_port()), "calibration", site='"gallery"'))
    missing_camera = tmp_path / "camera" / "site.toml"
    _write(missing_camera, BASE.format(port=free_udp_port()).replace('spec = "test-scene"', 'spec = "/dev/video63"'))
    try:
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "n.sock")}
        config_error, no_camera = _run(broken, env), _run(missing_camera, env)
    finally:
        manager.close()
    assert config_error.returncode == 66 and config_error.returncode in NO_RETRY
    assert "deepdream-live: error: calibration profile" in config_error.stderr
    status = [m for m in manager.messages if m.startswith("STATUS=stopped:")]
    assert len(status) == 2 and manager.barriers == 2
    assert status[0].startswith("STATUS=stopped: calibration profile")
    assert "not restarted until it is fixed" in status[0]
    # a camera that is not there (yet) is retried: exit 69, and the status says so
    assert no_camera.returncode == 69 and no_camera.returncode not in NO_RETRY
    assert "no camera at /dev/video63" in no_camera.stderr and "systemd starts it again" in status[1]
