"""Shared fixtures: random GoogLeNet weights written as a torchvision checkpoint and read back
through the real loader, isolated caches, and real photographs shipped by scikit-image."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from live.model import Model, load_model
from live.model.weights import random_reference


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's caches, or reaches the internet for weights."""
    root = tmp_path_factory.mktemp("caches")
    monkeypatch.setenv("DEEPDREAM_LIVE_CACHE", str(root / "deepdream-live"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    monkeypatch.setenv("DEEPDREAM_LIVE_WEIGHTS_URL", "http://127.0.0.1:9/no-weights-here.pth")


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


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (chelsea the cat), RGB uint8, 300×451."""
    return np.array(Image.open(photo_path()).convert("RGB"))
