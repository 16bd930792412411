"""The show as `deepdream-live run` sets it up: config, calibration and flags in the right
order, SIGHUP reload, systemd notifications from the real process, the governor in the loop,
and memory that stays flat over many frames."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from live.app import LiveLoop
from live.backends.torch_backend import TorchBackend
from live.calibrate import calibrate
from live.cli import _build_parser, _show_setup
from live.control.params import Registry
from live.control.presets import PresetStore
from live.governor import Governor
from live.outputs import Fanout, NullOutput
from live.sources import ImageSource
from tests.conftest import photo_path

EXE = str(Path(sys.executable).with_name("deepdream-live"))

SITE = """
[source]
spec = "test-scene"
[dream]
steps = {steps}
feedback = 0.5
width = 96
height = 64
[network]
weights = "random"
[outputs]
window = false
[osc]
enabled = false
[midi]
enabled = false
[log]
level = "info"
"""


def _args(*argv: str):
    return _build_parser().parse_args(["run", *argv])


def test_profile_then_config_then_preset_then_flags(tmp_path: Path) -> None:
    profile = calibrate(path=tmp_path / "here.toml", sizes=[(96, 64)], steps=[1, 2], frames=2, target_fps=1.0,
                        measure_limit=False)  # the size limit is tests/test_limits.py's business
    presets = tmp_path / "presets"
    PresetStore(Registry(), presets).save("soft", {"feedback": 0.3, "jitter": 3})
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(steps=3) + f'[presets]\ndirectory = "{presets}"\nstart = "soft"\n'
                    f'[calibration]\nfile = "{profile.path}"\n')
    opts, registry, _ = _show_setup(_args("--config", str(site), "--jitter", "9", "--no-governor"))
    snap = registry.snapshot()
    assert snap.steps == 3  # the config's [dream] over the profile's choice
    assert (snap.width, snap.height) == (96, 64)
    assert snap.feedback == 0.3  # the preset over the config
    assert snap.jitter == 9  # a flag over everything
    assert opts.source == "test-scene" and opts.window is False and opts.osc is False and opts.target_fps is None

    opts, _, _ = _show_setup(_args("--calibration", str(profile.path)))
    assert opts.target_fps == 1.0 and opts.governor_sizes  # the profile's target turns the governor on


def _start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([EXE, *argv], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def _wait_for(proc: subprocess.Popen, text: str, seconds: float = 120.0) -> list[str]:
    seen, deadline = [], time.monotonic() + seconds
    for line in proc.stderr:
        seen.append(line)
        if text in line or time.monotonic() > deadline:
            break
    assert any(text in line for line in seen), "".join(seen[-20:])
    return seen


def test_sighup_reloads_the_config_without_stopping(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(steps=1))
    proc = _start(["run", "--config", str(site), "--status-every", "1"])
    try:
        _wait_for(proc, "running:")
        site.write_text(SITE.format(steps=2))
        proc.send_signal(signal.SIGHUP)
        lines = _wait_for(proc, "dream.steps")
        assert any("1 -> 2" in line for line in lines if "dream.steps" in line)
        _wait_for(proc, " x2 at 96x64")  # the status line shows the new steps: still running
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, rest


def test_systemd_hears_ready_and_watchdog_pings_from_the_real_show(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    site = tmp_path / "site.toml"
    site.write_text(SITE.format(steps=1))
    proc = _start(["run", "--config", str(site)], env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in messages) < 3:
            messages.append(sock.recv(4096).decode())
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        sock.settimeout(2)
        try:
            while True:
                messages.append(sock.recv(4096).decode())
        except TimeoutError:
            pass
    finally:
        proc.kill()
        sock.close()
    text = "\n".join(messages)
    assert "READY=1" in text and text.count("WATCHDOG=1") >= 3 and "STOPPING=1" in text
    assert text.index("EXTEND_TIMEOUT_USEC") < text.index("READY=1")  # loading extended the start timeout


class SlowBackend(TorchBackend):
    """Costs 40 ms per step per 10k pixels on top of the real work: a machine too slow for the setting."""

    def ascend(self, x, objective, steps, *args, **kwargs):
        time.sleep(0.04 * steps * x.shape[-1] * x.shape[-2] / 1e4)
        return super().ascend(x, objective, steps, *args, **kwargs)


def test_governor_in_the_loop_trims_steps_to_hold_the_target(model) -> None:
    registry = Registry()
    registry.update({"width": 128, "height": 96, "steps": 8, "fps_cap": 240})
    out = NullOutput()
    fan = Fanout([out])
    fan.open(128, 96, 240)
    governor = Governor(4.0, window_seconds=0.5, min_frames=3, down_cooldown=0.2)
    stop = threading.Event()

    def trimmed(_n: int) -> None:
        if registry.get("steps") < 8:
            stop.set()

    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        loop = LiveLoop(photo, model, SlowBackend(model, torch.device("cpu")), registry, fan, governor=governor,
                        status_every=3600)
        report = loop.run(stop, duration=300, on_frame=trimmed)  # until trimmed; a busy machine only trims sooner
    assert report.stopped_because == "stopped", f"no trim in 300 s ({report.frames} frames)"
    assert registry.get("steps") < 8  # trimmed: 8 steps at 128x96 take ~4 s a frame against a 4 fps target
    assert governor.changes >= 1


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to read memory use")
def test_short_soak_memory_stays_flat(model) -> None:
    """600 frames at 64x64 (bench/soak.py runs thousands): RSS grows under 40 MB after warm-up."""
    registry = Registry()
    registry.update({"width": 64, "height": 64, "steps": 1, "fps_cap": 240})
    fan = Fanout([NullOutput()])
    fan.open(64, 64, 240)
    with ImageSource(photo_path("coffee.png"), fps=1000) as photo:
        loop = LiveLoop(photo, model, TorchBackend(model, torch.device("cpu")), registry, fan, status_every=3600)
        loop.run(max_frames=100)
        before = _rss_mb()
        for k in range(5):
            registry.set("objective", ["inception3b", "inception4c", "conv3"][k % 3])  # switching too
            loop.run(max_frames=100)
        after = _rss_mb()
    print(f"RSS {before:.0f} MB -> {after:.0f} MB over 500 frames")
    assert after - before < 40
    assert np.isfinite(after)
