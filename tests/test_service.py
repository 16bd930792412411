"""systemd integration: the unit files verify cleanly, the installer substitutes the executable,
and sd_notify messages reach a stand-in NOTIFY_SOCKET the way systemd would read them."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from live.service import notify
from tests.streaming import wait_for

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD = ROOT / "systemd"
INSTALL = SYSTEMD / "install.sh"
UNITS = sorted(p.name for p in SYSTEMD.iterdir() if p.suffix in (".service", ".timer", ".target"))


def _executable() -> str:
    """An existing deepdream-live command (the venv's), else any executable for ExecStart."""
    found = shutil.which("deepdream-live", path=os.path.dirname(sys.executable))
    return found or "/bin/true"


def _stub_systemctl(tmp: Path) -> Path:
    """A directory holding a ``systemctl`` that logs its arguments to $HOME/systemctl.log."""
    bin_dir = tmp / "stub-bin"
    bin_dir.mkdir()
    stub = bin_dir / "systemctl"
    stub.write_text('#!/bin/sh\necho "$*" >> "$HOME/systemctl.log"\n')
    stub.chmod(0o755)
    return bin_dir


def _install(home: Path, *args: str, stub: Path | None = None, login: bool = True) -> subprocess.CompletedProcess[str]:
    """install.sh as the user would run it: ``login`` True is a login shell (XDG_RUNTIME_DIR set),
    False a shell from ``sudo -iu``, which does not set it."""
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "XDG_RUNTIME_DIR")}
    env["HOME"] = str(home)
    if login:
        runtime = home / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    if stub is not None:
        env["PATH"] = f"{stub}{os.pathsep}{env['PATH']}"
    return subprocess.run(["sh", str(INSTALL), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


# ----------------------------------------------------------------------------- unit files
def _verify(home: Path, files: list[Path]) -> str:
    runtime = home / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    done = subprocess.run(
        ["systemd-analyze", "--user", "verify", *map(str, files)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    return (done.stdout + done.stderr).strip() + ("" if done.returncode == 0 else f"\n(exit code {done.returncode})")


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (Debian: apt install systemd)"
)


@needs_analyze
def test_every_installed_unit_verifies_without_a_word(tmp_path: Path) -> None:
    # The installed copies: ExecStart then names an executable that exists, as on a real machine.
    done = _install(tmp_path, "--hours", "10:00-18:00", _executable(), stub=_stub_systemctl(tmp_path))
    assert done.returncode == 0, done.stderr
    installed = sorted((tmp_path / ".config/systemd/user").iterdir())
    assert [p.name for p in installed] == UNITS
    # systemd-analyze exits 0 on unknown keys and typos, printing a warning: any output fails.
    assert _verify(tmp_path, installed) == ""


@needs_analyze
def test_verify_does_catch_a_typo(tmp_path: Path) -> None:
    # The control for the test above: the checker is not silent about everything.
    unit = tmp_path / "typo.service"
    unit.write_text("[Service]\nTyp=notify\nExecStart=/bin/true\n")
    assert "Unknown key" in _verify(tmp_path, [unit])


def test_show_unit_has_the_promised_settings() -> None:
    text = (SYSTEMD / "deepdream-live.service").read_text()
    for line in (
        "Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=always", "RestartSec=5",
        "StartLimitIntervalSec=0", "After=graphical-session.target deepdream-live-engines.service",
        "PartOf=graphical-session.target", "WantedBy=graphical-session.target", "Wants=deepdream-live-engines.service",
        "ExecStart=%h/.local/bin/deepdream-live run --config %h/.config/deepdream-live/site.toml",
        "Environment=PYTHONUNBUFFERED=1",
        "LimitNOFILE=8192",  # room for the web server's connection cap and the show's own files
    ):  # fmt: skip
        assert line in text.splitlines(), line
    assert "options v4l2loopback devices=1 video_nr=10" in (SYSTEMD / "modprobe.d/v4l2loopback.conf").read_text()
    assert (SYSTEMD / "modules-load.d/v4l2loopback.conf").read_text().strip() == "v4l2loopback"


def test_mistakes_in_files_stop_the_unit_and_missing_devices_are_retried() -> None:
    from live.errors import CONFIG_EXIT_CODES, DataError, DeviceMissingError, InputError, UnavailableError, UsageError

    lines = (SYSTEMD / "deepdream-live.service").read_text().splitlines()
    prevent = [line.split("=", 1)[1].split() for line in lines if line.startswith("RestartPreventExitStatus=")]
    assert len(prevent) == 1 and sorted(map(int, prevent[0])) == sorted(CONFIG_EXIT_CODES)
    assert "Restart=always" in lines  # everything else is still retried
    for error in (UsageError, DataError, InputError):  # a file or a flag only a person can fix
        assert error.exit_code in CONFIG_EXIT_CODES
    for error in (DeviceMissingError, UnavailableError):  # a camera, stream, GPU or port not there yet
        assert error.exit_code == 69 and error.exit_code not in CONFIG_EXIT_CODES
    assert issubclass(DeviceMissingError, InputError)  # still what `--source auto` falls back on
    assert 70 not in CONFIG_EXIT_CODES  # run's exit after a source crashed: restarted


# ----------------------------------------------------------------------------- install.sh
def test_install_dry_run_prints_the_plan_and_touches_nothing(tmp_path: Path) -> None:
    exe = _executable()
    done = _install(tmp_path, "--dry-run", exe, stub=_stub_systemctl(tmp_path))
    assert done.returncode == 0, done.stderr
    dest = tmp_path / ".config/systemd/user"
    assert f"deepdream-live executable: {exe}" in done.stdout
    assert f"would install: {SYSTEMD}/deepdream-live.service -> {dest}/deepdream-live.service" in done.stdout
    assert "would run: systemctl --user enable deepdream-live.service" in done.stdout
    assert not dest.exists()
    assert not (tmp_path / "systemctl.log").exists()


def test_install_writes_units_with_the_absolute_executable_and_is_idempotent(tmp_path: Path) -> None:
    exe = _executable()
    stub = _stub_systemctl(tmp_path)
    done = _install(tmp_path, exe, stub=stub)
    assert done.returncode == 0, done.stderr
    unit = (tmp_path / ".config/systemd/user/deepdream-live.service").read_text()
    assert f"ExecStart={exe} run --config %h/.config/deepdream-live/site.toml" in unit.splitlines()
    engines = (tmp_path / ".config/systemd/user/deepdream-live-engines.service").read_text()
    assert f"ExecStart={exe} build-engines --config %h/.config/deepdream-live/site.toml" in engines.splitlines()
    assert not (tmp_path / ".config/systemd/user/deepdream-live-open.timer").exists()  # timers only with --hours
    calls = (tmp_path / "systemctl.log").read_text().splitlines()
    assert calls == ["--user daemon-reload", "--user enable deepdream-live.service"]
    assert "skipped: /etc/modules-load.d" in done.stdout  # no sudo unless asked

    again = _install(tmp_path, exe, stub=stub)
    assert again.returncode == 0, again.stderr
    assert "install:" not in again.stdout
    assert again.stdout.count("unchanged:") == 3


def test_install_with_hours_sets_timers_and_the_hours_check(tmp_path: Path) -> None:
    stub = _stub_systemctl(tmp_path)
    done = _install(tmp_path, "--hours", "09:30-17:45", _executable(), stub=stub)
    assert done.returncode == 0, done.stderr
    dest = tmp_path / ".config/systemd/user"
    assert "OnCalendar=Mon..Sun 09:30" in (dest / "deepdream-live-open.timer").read_text()
    assert "OnCalendar=Mon..Sun 17:45" in (dest / "deepdream-live-close.timer").read_text()
    opener = (dest / "deepdream-live-open.service").read_text()
    assert '-ge 930 ] && [ "$$now" -lt 1745 ]' in opener
    calls = (tmp_path / "systemctl.log").read_text()
    assert "--user enable deepdream-live-open.service deepdream-live-open.timer deepdream-live-close.timer" in calls
    # Back to always-on: the timers go again.
    done = _install(tmp_path, _executable(), stub=stub)
    assert done.returncode == 0, done.stderr
    assert not (dest / "deepdream-live-open.timer").exists()


def test_install_from_a_sudo_shell_finds_the_user_manager_or_says_how(tmp_path: Path) -> None:
    """`sudo -iu gallery` leaves XDG_RUNTIME_DIR unset, and systemctl --user then fails with
    "Failed to connect to bus": install.sh uses /run/user/UID where the manager runs (linger),
    and otherwise stops before systemctl with the two ways to get a shell that works."""
    done = _install(tmp_path, _executable(), stub=_stub_systemctl(tmp_path), login=False)
    runtime = Path(f"/run/user/{os.getuid()}")
    if runtime.is_dir():
        assert done.returncode == 0, done.stderr
        assert f"XDG_RUNTIME_DIR is not set (sudo -iu does not set it): using {runtime}" in done.stdout
    else:
        assert done.returncode != 0
        assert "enable-linger" in done.stderr and "machinectl shell" in done.stderr and "step 5" in done.stderr
        assert not (tmp_path / "systemctl.log").exists()  # stopped before systemctl's own bus error
        assert (tmp_path / ".config/systemd/user/deepdream-live.service").exists()  # the units are in place


def test_install_refuses_a_missing_executable_and_bad_hours(tmp_path: Path) -> None:
    done = _install(tmp_path, str(tmp_path / "nope"))
    assert done.returncode != 0 and "not an executable" in done.stderr
    done = _install(tmp_path, "--hours", "18:00-10:00", _executable())
    assert done.returncode != 0 and "opening must come before closing" in done.stderr


# ----------------------------------------------------------------------------- sd_notify
class Listener:
    """A stand-in for systemd's end of NOTIFY_SOCKET: collects datagrams with arrival times.

    A unix datagram is in this socket's queue once ``sendto`` has returned, so after a sender
    has finished (its call returned, its thread ended) one sweep of the queue reads everything
    it sent: no test here needs to guess how long delivery takes.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []

    def _keep(self, data: bytes) -> str:
        self.messages.append((time.monotonic(), data.decode()))
        return data.decode()

    def sweep(self) -> list[str]:
        """What is queued right now, without waiting."""
        got = []
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    got.append(self._keep(self.sock.recv(4096)))
                except BlockingIOError:
                    return got
        finally:
            self.sock.settimeout(0.05)

    def drain(self, seconds: float = 0.1) -> list[str]:
        """Read for ``seconds``, then whatever is queued; return what arrived in that time."""
        end = time.monotonic() + seconds
        got = []
        while time.monotonic() < end:
            try:
                got.append(self._keep(self.sock.recv(4096)))
            except TimeoutError:
                continue
        return got + self.sweep()

    def until(self, done: Callable[[list[str]], bool], timeout: float = 30.0) -> list[str]:
        """Read until ``done(what arrived so far)`` holds; fail after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        got: list[str] = []
        while not done(got):
            assert time.monotonic() < end, f"not within {timeout} s; got {got}"
            try:
                got.append(self._keep(self.sock.recv(4096)))
            except TimeoutError:
                continue
        return got


def extend_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sd-extend-timeout"]


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    # A short directory: unix socket paths are limited to 107 bytes.
    where = Path(tempfile.mkdtemp(prefix="ddl-"))
    path = where / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield Listener(sock)
    shutil.rmtree(where, ignore_errors=True)


def test_ready_status_and_stopping_arrive(listener: Listener) -> None:
    assert notify.ready("dreaming at 30 fps")
    assert notify.status("line one\nline two")
    assert notify.stopping()
    assert notify.extend_timeout(90)
    assert listener.drain() == [
        "READY=1\nSTATUS=dreaming at 30 fps",
        "STATUS=line one line two",  # a newline would start a new field
        "STOPPING=1",
        "EXTEND_TIMEOUT_USEC=90000000",
    ]


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"deepdream-live-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.ready()
        assert Listener(sock).drain() == ["READY=1"]


def test_without_notify_socket_everything_is_a_silent_noop(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert not any([notify.ready(), notify.watchdog(), notify.status("x"), notify.extend_timeout(5), notify.stopping()])
    assert notify.watchdog_interval() is None
    dog = notify.Watchdog()
    assert not dog.enabled
    dog.on_frame(1)
    with notify.extending(0.01):
        time.sleep(0.02)
    assert not [t.name for t in threading.enumerate() if t.name == "sd-extend-timeout"]
    assert caplog.records == []


def test_a_vanished_socket_is_logged_once_not_raised(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    monkeypatch.setattr(notify, "_failed_once", False)
    assert not notify.watchdog()
    assert not notify.watchdog()
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1


def test_watchdog_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert notify.watchdog_interval() is None


def test_watchdog_pings_at_most_every_half_interval_and_only_on_new_frames() -> None:
    now = [100.0]
    sent: list[float] = []
    dog = notify.Watchdog(10.0, clock=lambda: now[0], send=lambda: sent.append(now[0]) or True)
    for frame in range(1, 200):  # 20 s of frames at 10 fps
        dog.on_frame(frame)
        now[0] += 0.1
    assert len(sent) == 4  # every 5 s: at 100, 105, 110, 115
    assert all(b - a >= 5.0 - 1e-9 for a, b in itertools.pairwise(sent))
    now[0] += 60
    dog.on_frame(199)  # later, and a frame newer than the last ping: due
    assert len(sent) == 5
    now[0] += 60
    dog.on_frame(199)  # the same frame again (nothing advanced since the ping): no ping
    assert len(sent) == 5
    dog.on_frame(200)
    assert len(sent) == 6


def test_watchdog_pings_while_frames_flow_and_stops_when_the_loop_stalls(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: pings every 0.1 s at most
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    dog = notify.Watchdog()
    assert dog.interval == 0.2
    stalled = threading.Event()

    def frame_loop() -> None:
        n = 0
        while not stalled.is_set():
            n += 1
            dog.on_frame(n)
            time.sleep(0.01)
        # The loop now hangs (a driver call that never returns): no more on_frame calls.

    began = time.monotonic()
    loop = threading.Thread(target=frame_loop)
    loop.start()
    flowing = listener.until(lambda got: len(got) >= 3)  # it pings, again and again, while frames flow
    stalled.set()
    loop.join()
    flowed = time.monotonic() - began
    flowing += listener.sweep()  # every ping sent before the stall is queued by now
    quiet = listener.drain(0.6)  # nothing pings for a hung loop: no thread of its own
    assert set(flowing) == {"WATCHDOG=1"}
    assert len(flowing) == dog.pings
    assert len(flowing) <= flowed / 0.1 + 1  # at most one per half interval, however fast the frames
    assert quiet == []


def test_a_slow_loop_still_pings(listener: Listener) -> None:
    dog = notify.Watchdog(0.2)
    for n in range(1, 5):  # 4 fps against a 0.2 s watchdog: slow, but alive
        dog.on_frame(n)
        time.sleep(0.25)  # never shorter on a busy machine: every frame is past the 0.1 s ping period
    assert listener.sweep() == ["WATCHDOG=1"] * 4


def test_extending_sends_extend_timeout_but_never_watchdog(listener: Listener) -> None:
    began = time.monotonic()
    with notify.extending(0.3, status_text="building engines"):  # every 0.1 s while the step runs
        during = listener.until(lambda got: got.count("EXTEND_TIMEOUT_USEC=300000") >= 3)
    lasted = time.monotonic() - began
    assert wait_for(lambda: not extend_threads(), 10, step=0.01), "the thread outlived its step"
    during += listener.sweep()  # what it sent before the step ended
    after = listener.drain(0.3)
    assert during[0] == "STATUS=building engines"
    extends = during[1:]
    assert set(extends) == {"EXTEND_TIMEOUT_USEC=300000"}  # never WATCHDOG=1
    assert len(extends) <= lasted / 0.1 + 1  # one per seconds / 3, not a tight loop
    assert after == []


def test_extending_stops_at_its_limit(listener: Listener, caplog: pytest.LogCaptureFixture) -> None:
    with notify.extending(0.3, limit=0.45):  # sends at 0, 0.1 … 0.4 s at the earliest, then stops
        # The step runs on past the limit: the thread stops on its own, says so, and sends no more.
        assert wait_for(lambda: not extend_threads(), 20, step=0.01), "still extending past its limit"
        during = listener.sweep()
        assert "no longer extending systemd's timeout" in caplog.text
        assert listener.drain(0.3) == []
    assert set(during) == {"EXTEND_TIMEOUT_USEC=300000"}
    # at least the first, and none due after the limit: a slower machine sends fewer, never more
    assert 1 <= len(during) <= 5


def test_barrier_returns_once_the_manager_has_read_what_came_before(listener: Listener) -> None:
    """A status sent just before the process exits (a config error) must reach `systemctl status`:
    BARRIER=1 hands systemd a pipe it closes once it has read every earlier message."""
    assert notify.status("stopped: the site config has a mistake")
    reader = threading.Thread(target=listener.until, args=(lambda got: "BARRIER=1" in got,))
    reader.start()
    started = time.monotonic()
    assert notify.barrier(timeout=30)
    assert time.monotonic() - started < 25
    reader.join()
    texts = [text for _, text in listener.messages]
    assert texts[0] == "STATUS=stopped: the site config has a mistake" and texts[1] == "BARRIER=1"


def test_barrier_gives_up_when_nobody_reads(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    assert notify.barrier(timeout=0.3) is False  # the message sits unread: no hang-up comes
    assert time.monotonic() - started < 10
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify.barrier() is False
