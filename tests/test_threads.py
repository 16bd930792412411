"""The dream's CPU threads and how idle ones wait, set before PyTorch loads its OpenMP runtime.

libgomp prints the settings it really took when ``OMP_DISPLAY_ENV=VERBOSE``: these tests read
that, not our own bookkeeping, so a change that sets the variable too late fails here. (libgomp
prints ``OMP_WAIT_POLICY = 'PASSIVE'`` even when unset; the spin count tells: 0 when idle threads
sleep at once, 300000 by default.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from live import threads
from live.check import CheckOptions, check_threads

EXE = str(Path(sys.executable).with_name("deepdream-live"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", threads.ENV_THREADS)}
    return {**env, "OMP_DISPLAY_ENV": "VERBOSE", **extra}


def _run(argv: list[str], **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=_env(**extra), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("argv", [
    [EXE, "--version"],
    [sys.executable, "-m", "live", "--version"],
    [sys.executable, "-c", "import live.cli, torch; torch.ones(8, 8) @ torch.ones(8, 8)"],
], ids=["console-script", "python-m-live", "import-live.cli"])
def test_libgomp_starts_with_sleeping_threads(argv: list[str]) -> None:
    proc = _run(argv)
    assert proc.returncode == 0, proc.stderr
    assert "GOMP_SPINCOUNT = '0'" in proc.stderr, proc.stderr[-3000:]


def test_plain_torch_would_spin_so_the_check_above_can_fail() -> None:
    proc = _run([sys.executable, "-c", "import torch; torch.ones(8, 8) @ torch.ones(8, 8)"])
    assert "GOMP_SPINCOUNT = '" in proc.stderr and "GOMP_SPINCOUNT = '0'" not in proc.stderr


def test_a_wait_policy_the_user_set_is_kept_and_check_warns() -> None:
    proc = _run([EXE, "check", "--no-probe"], OMP_WAIT_POLICY="ACTIVE")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in proc.stderr
    assert "WARN  threads:" in proc.stdout and "spin when idle" in proc.stdout and "PASSIVE" in proc.stdout


@pytest.mark.parametrize("how", ["flag", "flag-after-command", "env"])
def test_thread_count_from_the_flag_or_the_environment(how: str) -> None:
    argv = {"flag": [EXE, "--threads", "1", "check", "--no-probe"],
            "flag-after-command": [EXE, "check", "--no-probe"],
            "env": [EXE, "check", "--no-probe"]}[how]
    extra = {"env": {threads.ENV_THREADS: "1"}}.get(how, {})
    if how == "flag-after-command":
        argv = [EXE, "run", "--threads", "1", "--source", "test-scene", "--capture-size", "96x64", "--size", "64x64",
                "--weights", "random", "--no-window", "--no-osc", "--no-midi", "--max-frames", "1"]
    proc = _run(argv, **extra)
    assert proc.returncode in (0, 69), proc.stderr[-2000:]  # check: 69 for the camera missing here
    text = proc.stdout + proc.stderr
    assert "1 dream thread on" in text, text[-2000:]
    if how == "env":
        assert "OMP_NUM_THREADS = '1'" in proc.stderr  # the OpenMP pool itself starts with one


def test_the_default_is_every_core_and_check_passes() -> None:
    proc = _run([EXE, "check", "--no-probe"])
    line = next(x for x in proc.stdout.splitlines() if "threads:" in x)
    n = threads.cores()
    assert line.startswith("PASS") and f"{n} dream thread{'s' if n > 1 else ''} on {n} core" in line
    assert "sleep when idle" in line


@pytest.mark.parametrize("value", ["0", "lots", "1000"])
def test_a_bad_thread_count_is_one_clear_line(value: str) -> None:
    proc = _run([EXE, "check", "--no-probe"], **{threads.ENV_THREADS: value})
    assert proc.returncode == 64
    assert f"{threads.ENV_THREADS} {value!r}: expected a thread count 1..256" in proc.stderr


def test_check_in_this_process() -> None:
    """The test suite sets the policy before torch too (tests/conftest.py), as the command line does."""
    result = check_threads(CheckOptions())
    assert result.ok is True and "OMP_WAIT_POLICY=PASSIVE" in result.detail


def test_prepare_environment_leaves_the_users_settings_alone() -> None:
    env = {"OMP_WAIT_POLICY": "ACTIVE", threads.ENV_THREADS: "3", "OMP_NUM_THREADS": "2"}
    threads.prepare_environment(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and env["OMP_NUM_THREADS"] == "2"
    env = {threads.ENV_THREADS: "3"}
    threads.prepare_environment(env)
    assert env == {threads.ENV_THREADS: "3", "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "3"}
