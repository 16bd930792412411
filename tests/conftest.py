"""Shared fixtures: random GoogLeNet weights written as a torchvision checkpoint and read back
through the real loader, isolated caches, and real photographs shipped by scikit-image."""

from __future__ import annotations

import struct
import time
import zlib
from importlib.resources import files
from pathlib import Path

from live import threads

# Before PyTorch loads, as the command line does: the tests share busy cores too (live/threads.py).
threads.prepare_environment()

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from live.model import Model, load_model
from live.model.weights import random_reference
from live.outputs import Output


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's caches, or reaches the internet for weights."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("DEEPDREAM_LIVE_CACHE", str(root / "deepdream-live"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    monkeypatch.setenv("DEEPDREAM_LIVE_WEIGHTS_URL", "http://127.0.0.1:9/no-weights-here.pth")
    monkeypatch.setenv("DEEPDREAM_LIVE_BVLC_URL", "http://127.0.0.1:9/no-weights-here.caffemodel")


@pytest.fixture(autouse=True)
def _root_logging_restored() -> object:
    """A test that runs the command line sets up logging to the stderr pytest captured for that
    test; the stream is closed after it, so later tests' log lines would fail with "I/O operation
    on closed file". Remove the handlers a test added (never pytest's own) and put the level back."""
    import logging

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in before and type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def reference() -> torch.nn.Module:
    """An untrained torchvision-layout GoogLeNet with non-trivial batch-norm statistics."""
    return random_reference(seed=1234)


@pytest.fixture(scope="session")
def checkpoint(reference: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference network saved the way torchvision saves its checkpoints."""
    path = tmp_path_factory.mktemp("weights") / "googlenet-test.pth"
    torch.save(reference.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def model(checkpoint: Path) -> Model:
    """The dreaming model loaded from ``checkpoint`` through the real loading code."""
    return load_model(str(checkpoint))


def photo_path(name: str = "chelsea.png") -> Path:
    """A real photograph from scikit-image's bundled data (chelsea.png, coffee.png, rocket.jpg …)."""
    return Path(str(files("skimage") / "data" / name))


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG that claims ``width`` × ``height`` (1-bit grey): a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (chelsea the cat), RGB uint8, 300×451."""
    return np.array(Image.open(photo_path()).convert("RGB"))


class FakeLoopback:
    """A pyvirtualcam backend that keeps what pyvirtualcam hands it."""

    instances: list[FakeLoopback] = []
    fail_with: str | None = None

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw: object) -> None:
        if FakeLoopback.fail_with:
            raise RuntimeError(FakeLoopback.fail_with)
        self.width, self.height, self.fps, self.fourcc, self._device = width, height, fps, fourcc, device
        self.received: list[tuple[float, np.ndarray]] = []
        self.closed = 0
        FakeLoopback.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        self.received.append((time.perf_counter(), frame.copy()))

    def device(self) -> str:
        return self._device or "/dev/video-fake"

    def native_fourcc(self) -> int | None:
        return None

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def fake_vcam() -> type[FakeLoopback]:
    from pyvirtualcam import register_backend
    from pyvirtualcam.camera import BACKENDS

    FakeLoopback.instances = []
    FakeLoopback.fail_with = None
    register_backend("live-test", FakeLoopback)
    yield FakeLoopback
    BACKENDS.pop("live-test", None)


class Collect(Output):
    """Keeps every frame it is sent; can play back scripted key actions."""

    def __init__(self, actions: dict[int, list[str]] | None = None) -> None:
        super().__init__("collect")
        self.frames: list[np.ndarray] = []
        self.placeholders: list[str] = []
        self.actions = actions or {}

    def open(self, width: int, height: int, fps: float) -> None:
        self.size = (width, height)

    def send(self, frame: np.ndarray) -> None:
        self.frames.append(frame.copy())
        self.sent += 1

    def send_placeholder(self, text: str) -> None:
        self.placeholders.append(text)

    def poll_keys(self) -> list[str]:
        return self.actions.pop(len(self.frames), [])

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def ray_cluster() -> object:
    """One local Ray cluster for the whole test session (its start-up is paid once): 2 CPUs, no
    dashboard, no usage statistics, token authentication with a token of its own (Ray's ports
    listen on every interface; the token is passed in the environment, so nothing is written to
    ~/.ray), its files in a short temporary folder; shut down at the end, so no Ray process
    outlives the tests. Skips where Ray (the cluster extra) is not installed."""
    import logging
    import os
    import secrets
    import shutil
    import tempfile

    # Before Ray is imported: it reads its authentication mode once, then.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ["RAY_worker_niceness"] = str(os.nice(0))  # the tests' own priority, not Ray's nice 15
    ray = pytest.importorskip("ray", reason="Ray is the optional cluster extra: pip install -e '.[cluster]'")
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             object_store_memory=80 * 1024 * 1024, _temp_dir=temp)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
