"""`deepdream-live build-engines --config site.toml` (what the engines systemd unit runs) builds
exactly the plans that site's show asks for, through the code `run` uses; `--precision` reaches
every dreaming command; `run --no-build` (and `network.no_build`) never builds. TensorRT is the
stand-in of tests/standin_tensorrt.py, installed where the real toolchain would be created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import live.backends.tensorrt_backend as trt_backend
from live.cli import main
from live.dreamsize import dream_shape
from live.engines import weights_identity
from live.model import load_model
from tests.standin_tensorrt import StandInToolchain

BUILT: list[StandInToolchain] = []


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in where TensorRT would be, and an engines directory of the test's own."""
    engines = tmp_path / "engines"
    monkeypatch.setenv("DEEPDREAM_LIVE_ENGINES", str(engines))
    BUILT.clear()

    def toolchain(device: torch.device) -> StandInToolchain:
        tool = StandInToolchain()
        BUILT.append(tool)
        return tool

    monkeypatch.setattr(trt_backend, "TensorRTToolchain", toolchain)
    monkeypatch.setattr(trt_backend, "import_tensorrt", lambda: type("trt", (), {"__version__": "10.9.0"}))
    return engines


def _site(tmp_path: Path, extra: str = "") -> Path:
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "calm.toml").write_text('objective = "inception3a"\nsteps = 2\n')
    (presets / "eyes.toml").write_text('objective = "inception3a:1,2"\n')  # same layer set: same plans
    (presets / "deep.toml").write_text('objective = "inception4a"\nwidth = 160\nheight = 96\n')
    config = tmp_path / "site.toml"
    config.write_text(f"""
[source]
spec = "test-scene"
[dream]
objective = "conv3"
width = 100
height = 70
[network]
weights = "random:3"
device = "cpu"
precision = "fp32"
[presets]
directory = "presets"
start = "calm"
cycle = ["calm", "eyes", "deep"]
{extra}
[governor]
enabled = false
""")
    return config


def _manifests(engines: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(engines.glob("*.plan.json"))]


def test_build_engines_config_builds_what_the_show_will_ask_for(tmp_path, standin, capsys) -> None:
    config = _site(tmp_path)
    assert main(["build-engines", "--config", str(config)]) == 0
    built = {(tuple(m["layers"]), tuple(m["shape"])) for m in _manifests(standin)}
    # layer sets: the objective, the start preset and the cycle (eyes shares calm's layers);
    # sizes: the dream size and deep's own, rounded as the loop rounds them (100x70 -> 96x64)
    sizes = {dream_shape(100, 70), dream_shape(160, 96)}
    assert built == {(layers, shape) for layers in (("inception3a",), ("inception4a",)) for shape in sizes}
    # conv3 is the [dream] objective, but the start preset replaces it before the first frame
    model = load_model("random:3")
    for m in _manifests(standin):
        assert m["model"] == "torchvision" and m["weights"] == weights_identity(model)
        assert m["precision"] == "fp32" and m["verification"]["passed"]
    out = capsys.readouterr().out
    assert out.count("ok  ") == 4 and "cosine" in out
    assert all(p.name.startswith(f"torchvision-{weights_identity(model)[:12]}-") for p in standin.glob("*.plan"))

    # the engines unit runs again at the next login: everything valid, nothing rebuilt
    assert main(["build-engines", "--config", str(config)]) == 0
    assert sum(len(t.builds) for t in BUILT) == 4


def test_a_cross_fading_site_builds_the_fades_layer_sets_too(tmp_path, standin) -> None:
    config = _site(tmp_path, "morph_time = 2")
    assert main(["build-engines", "--config", str(config), "--sizes", "96x64"]) == 0
    layer_sets = {tuple(m["layers"]) for m in _manifests(standin)}
    assert layer_sets == {("inception3a",), ("inception4a",), ("inception3a", "inception4a")}


def test_the_show_uses_the_plans_built_ahead(tmp_path, standin, monkeypatch) -> None:
    """What build-engines built is what run's backend finds: same precision, shape and keys."""
    from live.backends.tensorrt_backend import TensorRTBackend

    config = _site(tmp_path)
    assert main(["build-engines", "--config", str(config)]) == 0
    builds = sum(len(t.builds) for t in BUILT)
    backend = TensorRTBackend(load_model("random:3"), torch.device("cpu"), no_build=True, toolchain=StandInToolchain())
    backend.prepare(dream_shape(100, 70), ("inception3a",))  # run's first frame: no build, plan valid
    assert sum(len(t.builds) for t in BUILT) == builds and backend.precision == "fp32"


def test_build_engines_without_sizes_or_config_says_what_it_needs(capsys) -> None:
    assert main(["build-engines"]) == 64
    assert "needs --sizes WxH" in capsys.readouterr().err


def test_build_engines_for_a_torch_site_builds_nothing_and_says_so(tmp_path, standin, capsys) -> None:
    config = _site(tmp_path).read_text().replace('precision = "fp32"', 'precision = "fp32"\nbackend = "torch"')
    (tmp_path / "torch.toml").write_text(config)
    assert main(["build-engines", "--config", str(tmp_path / "torch.toml")]) == 0
    assert "no TensorRT plans to build" in capsys.readouterr().err and not list(standin.glob("*.plan"))


def test_without_tensorrt_build_engines_config_exits_0_for_auto_and_69_when_tensorrt_is_asked_for(
        tmp_path, monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setenv("DEEPDREAM_LIVE_ENGINES", str(tmp_path / "engines"))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    config = _site(tmp_path)
    assert main(["build-engines", "--config", str(config)]) == 0  # auto: the show dreams on torch
    assert "nothing to build: TensorRT is not installed" in capsys.readouterr().err
    assert main(["build-engines", "--config", str(config), "--backend", "tensorrt"]) == 69


def test_precision_reaches_the_image_command_and_fp16_really_runs_on_the_cpu(tmp_path, capsys) -> None:
    from live.backends.torch_backend import TorchBackend

    seen = []
    real = TorchBackend._gradient

    def spy(self, x, weights):
        seen.append(self.net.conv1.conv.weight.dtype)
        return real(self, x, weights)

    out = tmp_path / "fp16.png"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TorchBackend, "_gradient", spy)
        assert main(["image", "test-scene", str(out), "--weights", "random", "--precision", "fp16", "--steps", "1",
                     "--octaves", "1", "--max-side", "96", "--no-progress", "--device", "cpu"]) == 0
    assert seen and set(seen) == {torch.float16} and out.stat().st_size > 1000
    assert "fp16 on the CPU runs about 8x slower" in capsys.readouterr().err  # the log (main configures it)


def test_run_no_build_and_its_site_key_reach_the_show(tmp_path) -> None:
    from live.cli import _build_parser, _show_setup

    config = _site(tmp_path, "").read_text().replace('precision = "fp32"', 'precision = "fp32"\nno_build = true\nmodel = "bvlc"')
    (tmp_path / "gallery.toml").write_text(config)
    opts, _, _ = _show_setup(_build_parser().parse_args(["run", "--config", str(tmp_path / "gallery.toml")]))
    assert opts.no_build is True and opts.precision == "fp32" and opts.model == "bvlc"
    opts, _, _ = _show_setup(_build_parser().parse_args(["run", "--no-build", "--precision", "fp16"]))
    assert opts.no_build is True and opts.precision == "fp16"
    opts, _, _ = _show_setup(_build_parser().parse_args(["run"]))
    assert opts.no_build is False and opts.precision is None
