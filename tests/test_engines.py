"""The engine cache: a plan is used only when its manifest matches this machine (model and weights
included) and the plan itself is intact; anything else is rebuilt with the reason logged, or
refused with the command to rebuild. TensorRT is replaced by a stand-in toolchain (the cache
logic is what is tested here)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from live import engines
from live.backends.tensorrt_backend import build_engines
from live.engines import Manifest, build_engine, check, load_plan, manifest_path, rebuild_command, wanted_manifest
from live.errors import DataError, UnavailableError
from tests.standin_tensorrt import StandInToolchain

SHAPE = (1, 3, 64, 96)
LAYERS = ("inception4c",)


StandIn = StandInToolchain


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DEEPDREAM_LIVE_ENGINES", str(tmp_path / "engines"))
    onnx = tmp_path / "graph.onnx"
    onnx.write_bytes(b"an onnx graph" * 100)
    tool = StandIn()
    plan = engines.plan_path(LAYERS, SHAPE, "fp16", tool, "torchvision", "ab" * 32)
    wanted = wanted_manifest(tool, onnx, "fp16", SHAPE, LAYERS, "torchvision", "ab" * 32)
    return tool, onnx, plan, wanted


def test_first_use_builds_then_a_matching_plan_is_reused(setup, caplog) -> None:
    tool, onnx, plan, wanted = setup
    assert check(plan, wanted) == "no plan built yet"
    with caplog.at_level(logging.INFO, logger="live.engines"):
        assert build_engine(tool, onnx, plan, wanted) == plan
    assert "no plan built yet" in caplog.text and len(tool.builds) == 1
    saved = Manifest.from_json(manifest_path(plan).read_text())
    assert saved.plan_bytes == plan.stat().st_size and saved.tensorrt == "10.9.0" and saved.shape == SHAPE
    assert check(plan, wanted) is None
    build_engine(tool, onnx, plan, wanted)
    assert len(tool.builds) == 1  # matched: nothing rebuilt
    assert plan.parent == engines.engines_dir() and not list(plan.parent.glob("*.part"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tensorrt": "11.0.0"}, "built with TensorRT 10.9.0, this machine has 11.0.0"),
        ({"gpu": "NVIDIA Other GPU"}, "built for NVIDIA Test GPU (compute capability 9.0), this is NVIDIA Other GPU"),
        ({"compute_capability": "8.9"}, "compute capability 9.0), this is NVIDIA Test GPU (8.9)"),
        ({"shape": (1, 3, 96, 64)}, "built for shape 1x3x64x96, wanted 1x3x96x64"),
        ({"onnx_sha256": "0" * 64}, "the ONNX graph changed"),
        ({"model": "bvlc"}, "built for the torchvision model, wanted bvlc"),
        ({"weights": "cd" * 32}, "built for other weights (sha256 abababababab, these are cdcdcdcdcdcd)"),
        ({"precision": "fp32"}, "built in fp16, wanted fp32"),
        ({"project": "9.9.9"}, "built by deepdream-live 0.1.0, this is 9.9.9"),
    ],
)
def test_a_mismatching_manifest_rebuilds_and_says_why(setup, caplog, change, reason) -> None:
    tool, onnx, plan, wanted = setup
    build_engine(tool, onnx, plan, wanted)
    other = replace(wanted, **change)
    assert reason in check(plan, other)
    with caplog.at_level(logging.WARNING, logger="live.engines"):
        build_engine(tool, onnx, plan, other)
    assert len(tool.builds) == 2
    assert reason in caplog.text
    assert check(plan, other) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "no manifest", "bad manifest"])
def test_a_corrupt_or_truncated_plan_is_detected_and_rebuilt(setup, caplog, damage) -> None:
    tool, onnx, plan, wanted = setup
    build_engine(tool, onnx, plan, wanted)
    good = plan.read_bytes()
    if damage == "truncate":
        plan.write_bytes(good[: len(good) // 2])
        expected = "truncated"
    elif damage == "flip":
        plan.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
        expected = "corrupt"
    elif damage == "no manifest":
        manifest_path(plan).unlink()
        expected = "no manifest"
    else:
        manifest_path(plan).write_text("{not json")
        expected = "unreadable"
    assert expected in check(plan, wanted)
    with caplog.at_level(logging.WARNING, logger="live.engines"):
        build_engine(tool, onnx, plan, wanted)
    assert expected in caplog.text
    assert plan.read_bytes() == good and check(plan, wanted) is None


def test_no_build_refuses_with_the_command_to_rebuild(setup) -> None:
    tool, onnx, plan, wanted = setup
    with pytest.raises(UnavailableError) as info:
        build_engine(tool, onnx, plan, wanted, no_build=True)
    msg = str(info.value)
    assert "no plan built yet" in msg
    assert "deepdream-live build-engines --sizes 96x64 --layers inception4c" in msg
    assert tool.builds == []
    assert rebuild_command((1, 3, 720, 1280), ("conv2", "inception4c"), "fp32") == (
        "deepdream-live build-engines --sizes 1280x720 --layers conv2+inception4c --precision fp32"
    )


def test_a_plan_the_runtime_rejects_is_rebuilt_once(setup, caplog) -> None:
    tool, onnx, plan, wanted = setup
    calls = []

    def load(data: bytes) -> str:
        calls.append(data)
        if len(calls) == 1:
            raise RuntimeError("serialization assertion failed")
        return "engine"

    with caplog.at_level(logging.WARNING, logger="live.engines"):
        assert load_plan(tool, onnx, plan, wanted, load) == "engine"
    assert len(tool.builds) == 2 and "could not load it" in caplog.text

    with pytest.raises(DataError, match="cannot load the freshly built engine"):
        load_plan(tool, onnx, plan, wanted, lambda data: (_ for _ in ()).throw(RuntimeError("no")))


def test_build_engines_exports_builds_and_verifies_every_size_and_layer_set_with_progress(
        model, monkeypatch, tmp_path) -> None:
    from live.engines import weights_identity

    monkeypatch.setenv("DEEPDREAM_LIVE_ENGINES", str(tmp_path / "engines"))
    tool = StandIn()
    seen = []
    cpu = torch.device("cpu")
    results = build_engines(model, [(96, 64), (50, 40)], [["mixed3a"], ["conv3", "conv2"]], precision="fp32",
                            toolchain=tool, progress=lambda done, total, label: seen.append((done, total, label)),
                            device=cpu)
    # sizes rounded as the loop rounds them (live.dreamsize.round32): 50x40 dreams at 64x32
    assert [s for _, s in tool.builds] == [(1, 3, 64, 96), (1, 3, 32, 64), (1, 3, 64, 96), (1, 3, 32, 64)]
    who = f"torchvision-{weights_identity(model)[:12]}-"
    assert [r.plan.name for r in results][:2] == [f"{who}dream-inception3a-96x64-fp32-sm90.plan",
                                                  f"{who}dream-inception3a-64x32-fp32-sm90.plan"]
    assert results[2].plan.name.startswith(f"{who}dream-conv2+conv3-")
    assert seen[0] == (0, 4, "inception3a at 96x64 (fp32)") and seen[-1] == (4, 4, "done")
    for r in results:
        assert r.ok and r.verification is not None and r.verification.cosine >= 0.9999
        saved = json.loads(manifest_path(r.plan).read_text())
        assert saved["layers"] in (["inception3a"], ["conv2", "conv3"])
        assert saved["model"] == "torchvision" and saved["weights"] == weights_identity(model)
        assert saved["verification"]["passed"] is True
    # a second run ahead of the next show: everything matches, nothing is built (each is verified again)
    again = build_engines(model, [(96, 64), (50, 40)], [["mixed3a"], ["conv2", "conv3"]], precision="fp32",
                          toolchain=tool, device=cpu)
    assert len(tool.builds) == 4 and all(r.ok for r in again)
