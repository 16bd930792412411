"""``deepdream-live check`` on this machine's reality (no camera, display, GPU or MIDI here):
the right checks fail or skip, each with its fix, and the exit code follows the configuration."""

from __future__ import annotations

import dataclasses

import os
import socket
from pathlib import Path

import pytest
import torch

from live import check
from live.check import CheckOptions, CheckResult, exit_code, format_results, run_checks
from live.model.weights import CHECKPOINT_NAME, cache_dir
from tests.conftest import photo_path

no_camera = pytest.mark.skipif(os.path.exists("/dev/video0"), reason="this machine has /dev/video0")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
no_seq = pytest.mark.skipif(os.path.exists("/dev/snd/seq"), reason="this machine has an ALSA sequencer")


@pytest.fixture
def no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def by_name(results: list[CheckResult], name: str) -> CheckResult:
    found = [r for r in results if r.name == name]
    assert found, f"no check {name!r} in {[r.name for r in results]}"
    return found[0]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@no_camera
def test_camera_auto_warns_and_an_explicit_camera_fails() -> None:
    auto = check.check_camera(CheckOptions(source="auto"))[0]
    assert auto.ok is False and not auto.required  # the test scene stands in
    assert "test scene stands in" in auto.detail and "v4l2-ctl --list-devices" in auto.fix
    explicit = check.check_camera(CheckOptions(source="0"))[0]
    assert explicit.ok is False and explicit.required
    assert "/dev/video0 does not exist" in explicit.detail


def test_non_camera_sources(tmp_path: Path) -> None:
    assert check.check_camera(CheckOptions(source="test-scene"))[0].ok is None
    assert check.check_camera(CheckOptions(source="rtsp://user:pw@cam/stream"))[0].ok is None
    missing = check.check_camera(CheckOptions(source=str(tmp_path / "clip.mp4")))[0]
    assert missing.ok is False and missing.required
    (tmp_path / "clip.mp4").write_bytes(b"x")  # there, but run could not decode it: so neither can check
    broken = check.check_camera(CheckOptions(source=str(tmp_path / "clip.mp4")))[0]
    assert broken.ok is False and broken.required and "could not decode" in broken.detail
    (tmp_path / "notes.txt").write_text("a list of layers")
    text = check.check_camera(CheckOptions(source=str(tmp_path / "notes.txt")))[0]
    assert text.ok is False and "neither a video nor an image" in text.detail
    photo = check.check_camera(CheckOptions(source=str(photo_path("coffee.png"))))[0]
    assert photo.ok is True and "readable (image)" in photo.detail


@pytest.mark.skipif(os.path.isdir("/sys/module/v4l2loopback"), reason="v4l2loopback is loaded here")
def test_virtual_camera_without_v4l2loopback() -> None:
    wanted = check.check_virtual_camera(CheckOptions(vcam=True))
    assert wanted.ok is False and wanted.required
    assert "v4l2loopback module not loaded" in wanted.detail
    assert "modprobe v4l2loopback" in wanted.fix and "v4l2loopback-dkms" in wanted.fix
    unused = check.check_virtual_camera(CheckOptions(vcam=False))
    assert unused.ok is False and not unused.required


def test_display_required_only_when_a_window_is_configured(no_display: None) -> None:
    window = check.check_display(CheckOptions(window=True))
    assert window.ok is False and window.required
    assert "DISPLAY is not set" in window.detail and "--no-window" in window.fix
    assert "import-environment DISPLAY" in window.fix
    default = check.check_display(CheckOptions(window=None))
    assert default.ok is False and not default.required
    assert check.check_display(CheckOptions(window=False)).ok is None


def test_unreachable_display_fails_without_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    from live.outputs import x11

    monkeypatch.setenv("DISPLAY", ":97")
    result = check.check_display(CheckOptions(window=True))
    if x11.can_connect(":97") is None:
        assert result.ok is None  # no libX11 here: not probed
    else:
        assert result.ok is False and "does not accept a connection" in result.detail


def test_display_passes_on_a_real_x_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.xvfb import XVFB, running_xvfb

    if not XVFB.exists():
        pytest.skip("Xvfb not installed (make test installs it)")
    with running_xvfb(800, 600) as display:
        monkeypatch.setenv("DISPLAY", display)
        result = check.check_display(CheckOptions(window=True))
    assert result.ok is True and "800x600" in result.detail


@no_cuda
def test_gpu_fails_only_when_cuda_is_asked_for() -> None:
    asked = check.check_gpu(CheckOptions(device="cuda"))
    assert asked.ok is False and asked.required and asked.fix
    auto = check.check_gpu(CheckOptions(device="auto"))
    assert auto.ok is False and not auto.required and "CPU" in auto.detail


def test_backends_report_each_with_its_reason() -> None:
    from live.backends import BACKENDS

    results = check.check_backends(CheckOptions(device="cpu", probe_backends=False))
    assert [r.name for r in results] == [f"backend {name}" for name in BACKENDS]
    assert by_name(results, "backend torch").ok is True
    assert all(r.ok or r.detail for r in results)
    unknown = check.check_backends(CheckOptions(backend="warp-drive", probe_backends=False))
    assert by_name(unknown, "backend warp-drive").ok is False and exit_code(unknown) != 0


def test_backends_start_on_random_weights() -> None:
    results = check.check_backends(CheckOptions(device="cpu", backend="torch"))
    torch_result = by_name(results, "backend torch")
    assert torch_result.ok is True and torch_result.required and "cpu" in torch_result.detail


def test_weights_missing_cached_damaged_and_random(checkpoint: Path) -> None:
    missing = check.check_weights(CheckOptions())  # the download server of the tests does not answer
    assert missing.ok is False and missing.required and "does not answer" in missing.detail
    assert str(cache_dir() / CHECKPOINT_NAME) in missing.fix
    auto = check.check_weights(CheckOptions(weights="auto"))
    assert auto.ok is False and not auto.required and "RANDOM" in auto.detail
    assert check.check_weights(CheckOptions(weights="random:3")).ok is None
    cache_dir().mkdir(parents=True)
    (cache_dir() / CHECKPOINT_NAME).write_bytes(b"\0" * 1000)  # run would stop on it (exit 65): so does check
    damaged = check.check_weights(CheckOptions())
    assert damaged.ok is False and damaged.required and "damaged" in damaged.detail
    (cache_dir() / CHECKPOINT_NAME).write_bytes(checkpoint.read_bytes())
    cached = check.check_weights(CheckOptions())
    assert cached.ok is True and "torchvision GoogLeNet, read" in cached.detail


def test_weights_file_is_read_as_run_reads_it(tmp_path: Path, checkpoint: Path) -> None:
    assert check.check_weights(CheckOptions(weights=str(checkpoint))).ok is True
    absent = check.check_weights(CheckOptions(weights=str(tmp_path / "nope.pth")))
    assert absent.ok is False and absent.required and "does not exist" in absent.detail
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    cut = check.check_weights(CheckOptions(weights=str(truncated)))
    assert cut.ok is False and cut.required and "corrupt or truncated" in cut.detail


def test_weights_not_cached_pass_when_the_server_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    class Head(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "49731090")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Head)  # an ephemeral port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("DEEPDREAM_LIVE_WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}/w.pth")
        result = check.check_weights(CheckOptions())
    finally:
        server.shutdown()
    assert result.ok is True and "the first start downloads them" in result.detail


def test_osc_port_free_passes_and_bound_fails_with_the_fix() -> None:
    port = free_udp_port()
    assert check.check_osc(CheckOptions(osc_port=port)).ok is True
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = check.check_osc(CheckOptions(osc_port=taken.getsockname()[1]))
    assert busy.ok is False and busy.required
    assert "in use" in busy.detail
    assert busy.fix == "another deepdream-live running? choose --osc-port"
    assert exit_code([busy]) == check.EXIT_UNAVAILABLE
    assert check.check_osc(CheckOptions(osc_port=None)).ok is None


@no_seq
def test_no_midi_is_a_warning_with_the_fix_for_the_midi_system(tmp_path: Path) -> None:
    unused = check.check_midi(CheckOptions())
    assert unused.ok is None and unused.detail.startswith("no MIDI over ALSA: ")
    wanted = check.check_midi(CheckOptions(midi=True))  # run goes on without MIDI: a warning, not a failure
    assert wanted.ok is False and not wanted.required
    assert "snd-seq" in wanted.fix and "--midi-api jack" in wanted.fix and "pip install" not in wanted.fix
    assert format_results([wanted]).startswith("WARN  midi: no MIDI over ALSA")
    assert exit_code([wanted]) == 0
    broken = tmp_path / "midi.toml"  # but a mapping run would stop on (exit 65) fails
    broken.write_text('[[binding]]\ncc = 1\nparam = "warp"\n')
    bad = check.check_midi(CheckOptions(midi=True, midi_map=broken))
    assert bad.ok is False and bad.required and "param" in bad.detail and str(broken) in bad.fix


def test_midi_without_the_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mido", None)
    result = check.check_midi(CheckOptions(midi=True))
    assert result.ok is False and not result.required and "pip install 'deepdream-live[midi]'" in result.fix


def test_disk_for_recordings(tmp_path: Path) -> None:
    ok = check.check_disk(CheckOptions(record=tmp_path / "show.mp4", min_free_gb=0.001))
    assert ok.ok is True and ok.required and "GB free" in ok.detail
    full = check.check_disk(CheckOptions(record=tmp_path / "show.mp4", min_free_gb=1e9))
    assert full.ok is False and full.required and "free space" in full.fix
    nowhere = check.check_disk(CheckOptions(record=tmp_path / "missing" / "show.mp4"))
    assert nowhere.ok is False and "mkdir -p" in nowhere.fix
    assert not check.check_disk(CheckOptions(screenshot_dir=tmp_path)).required


def test_service_check_with_a_stub_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stub = tmp_path / "systemctl"
    stub.write_text("#!/bin/sh\ncase $2 in is-enabled) echo enabled;; is-active) echo failed; exit 3;; esac\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = check.check_service(CheckOptions())
    assert result.ok is False and not result.required
    assert result.detail == "enabled, failed" and "journalctl --user -u deepdream-live" in result.fix
    stub.write_text("#!/bin/sh\necho active\n")
    assert check.check_service(CheckOptions()).ok is True
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert check.check_service(CheckOptions()).ok is None


def test_whole_run_formatting_and_exit_code(no_display: None, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_udp_port()
    headless = run_checks(CheckOptions(window=False, osc_port=port, weights="random", probe_backends=False))
    names = [r.name for r in headless]
    for name in ("display", "gpu", "backend torch", "weights", "engines", "osc", "midi", "disk"):
        assert name in names
    assert names[-1].startswith("service ")
    text = format_results(headless)
    lines = text.splitlines()
    assert len(lines) == len(headless) + 1
    assert all(line[:6] in ("PASS  ", "FAIL  ", "WARN  ", "SKIP  ") for line in lines[:-1])
    for r, line in zip(headless, lines, strict=False):
        assert ("→ fix: " in line) == (r.ok is not True and bool(r.fix)), line
    assert exit_code(headless) == 0  # headless, random weights: nothing required is missing here
    assert lines[-1] == "ready: every required check passed"

    # The same machine configured for a projector: the display is now required.
    projector = run_checks(CheckOptions(window=True, osc_port=port, weights="random", probe_backends=False))
    display = by_name(projector, "display")
    assert display.ok is False and display.required
    assert exit_code(projector) == check.EXIT_UNAVAILABLE
    assert "FAIL  display: DISPLAY is not set → fix: run inside the graphical session" in format_results(projector)
    assert format_results(projector).splitlines()[-1].endswith("required check(s) failed")


def test_a_crashing_check_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_opts: CheckOptions) -> CheckResult:
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(check, "check_gpu", broken)
    results = run_checks(CheckOptions(probe_backends=False, weights="random"))
    gpu = by_name(results, "gpu")
    assert gpu.ok is False and "driver exploded" in gpu.detail


def test_engines_are_validated_against_their_manifests_not_their_existence(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from live import engines

    monkeypatch.setenv("DEEPDREAM_LIVE_ENGINES", str(tmp_path))
    assert check.check_engines(CheckOptions()).ok is None
    assert check.check_engines(CheckOptions(backend="tensorrt")).required
    # A 4-byte plan whose manifest has no size or sha256 is not a plan, whatever the GPU.
    manifest = engines.Manifest("10.0", "NVIDIA H200", "9.0", "fp16", (1, 3, 352, 640), ("inception4c",), "ab" * 32)
    plan = tmp_path / "inception4c-640x352-fp16.plan"
    plan.write_bytes(b"plan")
    engines.manifest_path(plan).write_text(manifest.to_json())
    bad = check.check_engines(CheckOptions())
    assert bad.ok is False and plan.name in bad.detail and "truncated" in bad.detail
    assert "build-engines" in bad.fix

    # The same plan recorded properly: now what decides is this machine and the verification.
    data = b"a real plan's bytes" * 10
    plan.write_bytes(data)
    import hashlib

    good = dataclasses.replace(manifest, plan_bytes=len(data), plan_sha256=hashlib.sha256(data).hexdigest(),
                               model="torchvision", weights="cd" * 32,
                               verification={"passed": True, "cosine": 0.9981, "threshold": 0.99})
    engines.manifest_path(plan).write_text(good.to_json())
    (report,) = engines.validate_all(tmp_path, tensorrt="10.0", gpu="NVIDIA H200", compute_capability="9.0")
    assert report.ok and "verified, cosine 0.9981" in report.detail
    (other,) = engines.validate_all(tmp_path, tensorrt="10.0", gpu="NVIDIA H100 80GB HBM3", compute_capability="9.0")
    assert not other.ok and "this GPU is NVIDIA H100 80GB HBM3" in other.detail
    (old,) = engines.validate_all(tmp_path, tensorrt="10.9", gpu="NVIDIA H200", compute_capability="9.0")
    assert not old.ok and "this machine has TensorRT 10.9" in old.detail
    (none,) = engines.validate_all(tmp_path, tensorrt=None, gpu=None)
    assert not none.ok and "TensorRT is not installed here" in none.detail and "no CUDA GPU" in none.detail
    quarantined = dataclasses.replace(good, verification={"passed": False, "cosine": 0.01, "reason": "cosine 0.01"})
    engines.manifest_path(plan).write_text(quarantined.to_json())
    (q,) = engines.validate_all(tmp_path, tensorrt="10.0", gpu="NVIDIA H200", compute_capability="9.0")
    assert not q.ok and "quarantined: cosine 0.01" in q.detail

    plan.unlink()
    stale = check.check_engines(CheckOptions())
    assert stale.ok is False and "manifest without its plan" in stale.detail


def test_osc_buffer_says_what_was_granted_and_the_sysctl_that_raises_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from live.control import osc

    assert check.check_osc_buffer(CheckOptions(osc_port=None)).ok is None
    monkeypatch.setattr(osc, "RCVBUF", 1 << 30)  # more than any system grants
    result = check.check_osc_buffer(CheckOptions(osc_port=0))
    assert result.ok is False and not result.required  # a warning: the show runs, bursts may drop
    assert "of 1073741824 asked" in result.detail and "fader bursts may drop datagrams" in result.detail
    assert "sudo sysctl -w net.core.rmem_max=1073741824" in result.fix and "/etc/sysctl.d/" in result.fix
    assert "osc buffer" in {r.name for r in run_checks(CheckOptions(osc_port=0, weights="random",
                                                                     probe_backends=False))}
