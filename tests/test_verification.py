"""Plans and sessions prove themselves before they are trusted: verified once against the torch
gradient, quarantined with the reason when wrong, and the show falls back to torch instead of
dreaming garbage or building mid-show. TensorRT is a stand-in here (tests/standin_tensorrt.py):
its engines run the plan's ONNX graph on the CPU, or return a wrong gradient on purpose."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest
import torch

from live import backends
from live.backends import open_backend
from live.backends.tensorrt_backend import TensorRTBackend, use_timing_cache
from live.engines import VerificationError, manifest_path, read_manifest, timing_cache_path
from live.objectives import Objective
from tests.standin_tensorrt import StandInToolchain

CPU = torch.device("cpu")
SHAPE = (1, 3, 64, 96)
LAYERS = ("inception4c",)


@pytest.fixture
def engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DEEPDREAM_LIVE_ENGINES", str(tmp_path / "engines"))
    return tmp_path / "engines"


def _standin_registry(monkeypatch: pytest.MonkeyPatch, tool: StandInToolchain) -> None:
    """`--backend tensorrt` on the CPU, built and run by ``tool`` (the registry's own extension point)."""
    module = types.ModuleType("standin_tensorrt_backend")

    def create(model, device, *, precision=None, no_build=False):
        return TensorRTBackend(model, device, precision=precision, no_build=no_build, toolchain=tool)

    module.create = create  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(backends.BACKENDS, "tensorrt", module.__name__)


def test_a_plan_is_verified_when_built_and_again_when_loaded(model, engines, caplog) -> None:
    tool = StandInToolchain()
    backend = TensorRTBackend(model, CPU, precision="fp32", toolchain=tool)
    with caplog.at_level(logging.INFO, logger="live.engines"):
        backend.prepare(SHAPE, LAYERS)
    result = backend.verifications[(SHAPE, LAYERS)]
    assert result.passed and result.cosine >= 0.9999 and result.reference == "torch float64 on cpu"
    plan = backend.plan_for(SHAPE, LAYERS)
    saved = read_manifest(plan)
    assert saved.verification["passed"] is True and saved.quarantined is None
    assert "verification passed" in caplog.text

    # the dream it gives is the torch backend's
    x = model.space.to_model(torch.rand(SHAPE, generator=torch.Generator().manual_seed(4)))
    objective = Objective.parse("inception4c:1,5,9")
    got, _ = backend.gradient(x, objective)
    want, _ = backends.torch_backend.TorchBackend(model, CPU, dtype=torch.float64).gradient(x.double(), objective)
    assert torch.nn.functional.cosine_similarity(got.double().flatten(), want.flatten(), dim=0) > 0.9999

    # a new process finds the plan valid: loaded, verified again, not rebuilt
    again = TensorRTBackend(model, CPU, precision="fp32", toolchain=tool)
    again.prepare(SHAPE, LAYERS)
    assert len(tool.builds) == 1 and tool.loads == 2 and again.verifications[(SHAPE, LAYERS)].passed


def test_a_plan_with_a_wrong_gradient_is_quarantined_and_never_rebuilt_silently(model, engines, caplog) -> None:
    wrong = StandInToolchain(wrong=True)
    backend = TensorRTBackend(model, CPU, precision="fp32", toolchain=wrong)
    with caplog.at_level(logging.ERROR, logger="live.engines"), pytest.raises(VerificationError, match="quarantined"):
        backend.prepare(SHAPE, LAYERS)
    plan = backend.plan_for(SHAPE, LAYERS)
    saved = read_manifest(plan)
    assert saved.quarantined and "below 0.9999 for fp32" in saved.quarantined
    assert f"engine {plan.name} quarantined" in caplog.text

    # Next start (the toolchain fine again, as after a TensorRT update that left the version
    # string alone): the quarantined plan is neither used nor rebuilt behind the operator's back...
    fixed = StandInToolchain()
    later = TensorRTBackend(model, CPU, precision="fp32", toolchain=fixed)
    with pytest.raises(VerificationError) as info:
        later.prepare(SHAPE, LAYERS)
    assert "quarantined" in str(info.value) and "--force" in str(info.value) and fixed.builds == []
    # ...until a rebuild is asked for, which verifies again and lifts the quarantine.
    later.prepare(SHAPE, LAYERS, force=True)
    assert len(fixed.builds) == 1 and read_manifest(plan).quarantined is None


def test_run_falls_back_to_torch_with_the_reason_when_the_plan_fails(model, engines, monkeypatch, caplog) -> None:
    _standin_registry(monkeypatch, StandInToolchain(wrong=True))
    first = (SHAPE, LAYERS)
    with pytest.raises(VerificationError):  # named explicitly, outside a show: fail loudly
        open_backend("tensorrt", model, "cpu", precision="fp32", prepare=first)
    with caplog.at_level(logging.WARNING, logger="live.backends"):
        backend = open_backend("tensorrt", model, "cpu", precision="fp32", prepare=first, fallback=True)
    assert backend.name == "torch"
    assert "tensorrt cannot dream inception4c at 96x64" in caplog.text and "is quarantined: gradient cosine" in caplog.text
    assert "the show starts on torch on cpu" in caplog.text


def test_auto_puts_tensorrt_first_only_once_its_plan_has_passed(model, engines, monkeypatch, caplog) -> None:
    monkeypatch.setattr(backends, "AUTO_ORDER", (("tensorrt", "cpu"), ("torch", "cpu")))
    _standin_registry(monkeypatch, StandInToolchain(wrong=True))
    with caplog.at_level(logging.WARNING, logger="live.backends"):
        chosen = open_backend("auto", model, "cpu", precision="fp32", prepare=(SHAPE, LAYERS), fallback=True)
    assert chosen.name == "torch" and "backend skipped - tensorrt on cpu" in caplog.text

    _standin_registry(monkeypatch, StandInToolchain())
    chosen = open_backend("auto", model, "cpu", precision="fp32", prepare=((1, 3, 64, 64), LAYERS), fallback=True)
    assert chosen.name == "tensorrt" and chosen.verifications[((1, 3, 64, 64), LAYERS)].passed


def test_no_build_starts_on_torch_and_says_which_command_builds_the_plan(model, engines, monkeypatch, caplog) -> None:
    tool = StandInToolchain()
    _standin_registry(monkeypatch, tool)
    with caplog.at_level(logging.WARNING, logger="live.backends"):
        backend = open_backend("tensorrt", model, "cpu", precision="fp32", no_build=True, prepare=(SHAPE, LAYERS),
                               fallback=True)
    assert backend.name == "torch" and tool.builds == []
    assert "no plan built yet" in caplog.text
    assert "deepdream-live build-engines --sizes 96x64 --layers inception4c --precision fp32" in caplog.text


def test_mid_show_a_size_without_a_plan_dreams_on_torch_instead_of_building(model, engines, monkeypatch,
                                                                             caplog) -> None:
    tool = StandInToolchain()
    _standin_registry(monkeypatch, tool)
    backend = open_backend("tensorrt", model, "cpu", precision="fp32", prepare=(SHAPE, LAYERS), fallback=True)
    assert backend.name == "tensorrt" and len(tool.builds) == 1  # start-up may build (placeholder showing)
    objective = Objective.parse("inception4c")
    x = model.space.to_model(torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(1)))
    step = torch.full((1, 3, 1, 1), 0.01)
    with caplog.at_level(logging.WARNING, logger="live.backends"):
        y = backend.ascend(x, objective, 1, step, 0, -torch.ones_like(step) * 3, torch.ones_like(step) * 3)
        backend.gradient(x, objective)
    assert y.shape == x.shape and not torch.equal(y, x)
    assert len(tool.builds) == 1  # nothing built during the show
    assert list(backend.fell_back) == [((1, 3, 96, 128), LAYERS)]
    assert backend.describe().endswith("; torch for 1 size/layer set(s))")  # the status line says so
    assert caplog.text.count("dreaming it on torch on cpu") == 1  # said once, not every frame


def test_an_onnx_session_that_gives_a_wrong_gradient_is_quarantined(model, engines, monkeypatch, caplog) -> None:
    from live.backends.onnx_backend import OnnxBackend, quarantine_record

    real = OnnxBackend._run
    monkeypatch.setattr(OnnxBackend, "_run", lambda self, sess, x, o: tuple(-t for t in real(self, sess, x, o)))
    backend = OnnxBackend(model, CPU)
    backend.fallback_factory = lambda: backends.torch_backend.TorchBackend(model, CPU)
    x = model.space.to_model(torch.rand(SHAPE, generator=torch.Generator().manual_seed(2)))
    with caplog.at_level(logging.WARNING):
        grad, _ = backend.gradient(x, Objective.parse("inception4c"))
    (record,) = engines.glob("*.quarantined.json")
    assert json.loads(record.read_text())["passed"] is False
    assert list(engines.glob("*.onnx.quarantined")) and not list(engines.glob("*.onnx"))
    assert "quarantined" in caplog.text and "dreaming it on torch on cpu" in caplog.text
    want, _ = backends.torch_backend.TorchBackend(model, CPU).gradient(x, Objective.parse("inception4c"))
    torch.testing.assert_close(grad, want)  # the show got the fallback's gradient, not the wrong one
    # another process does not export the quarantined graph again
    monkeypatch.setattr(OnnxBackend, "_run", real)
    with pytest.raises(VerificationError, match="quarantined"):
        OnnxBackend(model, CPU).prepare(SHAPE, LAYERS)
    assert quarantine_record(record.with_name(record.name.removesuffix(".quarantined.json"))) == record


class FakeBuilderConfig:
    """The two calls of TensorRT's IBuilderConfig the timing cache uses, with its contract:
    ``set_timing_cache(cache, ignore_mismatch=False)`` returns False for another device's cache."""

    def __init__(self, device: str) -> None:
        self.device, self.calls, self.cache = device, [], None

    def create_timing_cache(self, data: bytes):
        if data == b"garbage":
            raise RuntimeError("timing cache deserialization failed")
        return {"made_on": data.decode() or self.device}

    def set_timing_cache(self, cache, ignore_mismatch: bool) -> bool:
        self.calls.append(ignore_mismatch)
        if cache["made_on"] != self.device and not ignore_mismatch:
            return False
        self.cache = cache
        return True


def test_timing_cache_per_gpu_and_version_and_a_foreign_one_is_rejected(tmp_path: Path, caplog) -> None:
    tool = StandInToolchain()
    path = timing_cache_path(tool, tmp_path)
    assert path.name == "timing-nvidia-test-gpu-sm90-trt10.9.0.cache"
    other = StandInToolchain()
    other.tensorrt = "10.10.0"
    assert timing_cache_path(other, tmp_path) != path  # another TensorRT version: another file

    path.write_bytes(b"gpu-a")
    config = FakeBuilderConfig("gpu-a")
    assert use_timing_cache(config, path) == {"made_on": "gpu-a"}  # ours: used
    config = FakeBuilderConfig("gpu-b")
    with caplog.at_level(logging.WARNING):
        assert use_timing_cache(config, path) == {"made_on": "gpu-b"}  # foreign: a fresh one instead
    assert "rejected the timing cache" in caplog.text and "another GPU" in caplog.text
    assert set(config.calls) == {False}  # a mismatch is never accepted
    path.write_bytes(b"garbage")
    assert use_timing_cache(FakeBuilderConfig("gpu-a"), path) == {"made_on": "gpu-a"}


def test_plans_of_other_models_or_weights_do_not_overwrite_each_other(model, engines) -> None:
    from live.model import load_model

    tool = StandInToolchain()
    paths = {TensorRTBackend(m, CPU, precision="fp32", toolchain=tool).plan_for(SHAPE, LAYERS)
             for m in (model, load_model("random:1"), load_model("random:1", model="bvlc"))}
    assert len(paths) == 3
    assert {p.name.split("-")[0] for p in paths} == {"torchvision", "bvlc"}
    assert manifest_path(next(iter(paths))).name.endswith(".plan.json")
