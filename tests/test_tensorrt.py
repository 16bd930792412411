"""The tensorrt backend. Without TensorRT and a CUDA GPU it must say which is missing and how to
get it (and ``auto`` must say why it skipped it); where both exist, a small engine is built
through the real cache and compared with torch."""

from __future__ import annotations

import importlib.util
import logging
import sys

import pytest
import torch

from live.backends import open_backend
from live.errors import UnavailableError
from live.objectives import Objective

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
HAVE_CUDA = torch.cuda.is_available()


def test_module_imports_without_tensorrt_and_create_says_how_to_install(model, monkeypatch) -> None:
    import live.backends.tensorrt_backend as trt_backend

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as if it were not installed
    with pytest.raises(UnavailableError, match=r"pip install 'deepdream-live\[tensorrt\]'"):
        trt_backend.create(model, torch.device("cpu"))
    with pytest.raises(UnavailableError, match="TensorRT is not installed"):
        open_backend("tensorrt", model, "cpu")


def test_auto_logs_why_each_faster_backend_was_skipped(model, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="live.backends"):
        backend = open_backend("auto", model, "auto")
    assert backend.name == "torch" and backend.device.type == "cpu"
    assert "tensorrt on cuda: PyTorch" in caplog.text and "torch on cuda: PyTorch" in caplog.text


def test_auto_with_cpu_asked_for_skips_the_gpu_backends_and_says_so(model, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="live.backends"):
        backend = open_backend("auto", model, "cpu")
    assert backend.name == "torch" and "tensorrt on cuda: --device cpu was asked for" in caplog.text


@pytest.mark.cuda
@pytest.mark.skipif(not (HAVE_TRT and HAVE_CUDA), reason=(
    "needs TensorRT and a CUDA GPU: " + ", ".join(
        m for m, ok in (("tensorrt is not installed", HAVE_TRT), ("PyTorch sees no CUDA device", HAVE_CUDA)) if not ok
    ) or "present"
))
def test_tensorrt_engine_matches_torch(model, tmp_path, monkeypatch) -> None:
    from live.backends.tensorrt_backend import TensorRTBackend
    from live.backends.torch_backend import TorchBackend

    monkeypatch.setenv("DEEPDREAM_LIVE_ENGINES", str(tmp_path / "engines"))
    device = torch.device("cuda")
    backend = TensorRTBackend(model, device)
    objective = Objective.parse("conv3 + 0.5*inception4c:3,7")
    x = model.space.to_model(torch.rand(1, 3, 64, 96, device=device))
    backend.prepare(tuple(x.shape), objective.layers)
    assert backend.verifications[(tuple(x.shape), objective.layers)].passed  # verified before it dreams
    assert backend.precision == "fp16"
    got, score = backend.gradient(x, objective)
    want, want_score = TorchBackend(model, device, dtype=torch.float64).gradient(x.double(), objective)
    cos = torch.nn.functional.cosine_similarity(got.double().flatten(), want.flatten(), dim=0).item()
    assert cos >= 0.99
    assert score.item() == pytest.approx(want_score.item(), rel=1e-2)
    assert list((tmp_path / "engines").glob("*.plan.json"))
    # a second backend reuses the verified plan; switching weights does not rebuild
    again = TensorRTBackend(model, device)
    again.gradient(x, Objective.parse("conv3 + inception4c"))
    again.gradient(x, objective)
    assert again.stats.net_builds == 1
    step = torch.full((1, 3, 1, 1), 0.01, device=device)
    y = again.ascend(x, objective, 2, step, 4, -torch.ones_like(step), torch.ones_like(step))
    assert y.shape == x.shape and torch.isfinite(y).all()
