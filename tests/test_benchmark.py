"""The benchmarks' baselines do the same work as the project (no strawman), dream strength and
flicker measure what they say, and the default is chosen by the rule the README states."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from live.backends.torch_backend import TorchBackend
from live.benchmark import (
    BASELINES,
    StrengthMeter,
    choose_default,
    cut_loop,
    flicker,
    frames_source,
    ordinary_live_loop,
    ordinary_trunk,
    project_steps,
    run_loop,
)
from live.model import Model
from live.model.googlenet import TORCHVISION_SPACE, fold_batchnorm
from live.model.weights import WeightsInfo
from live.objectives import Objective
from tests.conftest import photo_path


@pytest.fixture(scope="module")
def bench(reference) -> tuple[Model, torch.nn.Module]:
    model = Model("torchvision", fold_batchnorm(reference), TORCHVISION_SPACE, WeightsInfo("random", "test"))
    return model, reference


def test_every_baseline_takes_the_same_step_as_the_project(bench) -> None:
    """Same objective, same normalised step: the baselines differ in how they compute, not in what."""
    model, reference = bench
    x = TORCHVISION_SPACE.to_model(torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(3)))
    cpu = torch.device("cpu")
    moved = {kind: make("inception4c", cpu, reference=reference, step=0.05)(x.clone(), 1) - x
             for kind, make in BASELINES.items()}
    moved["cut"] = cut_loop("inception4c", cpu, reference=reference, step=0.05)(x.clone(), 1) - x
    moved["project"] = project_steps(TorchBackend(model, cpu), Objective.parse("inception4c"), 0.05)(x.clone(), 1) - x
    for kind, d in moved.items():
        cos = torch.nn.functional.cosine_similarity(d.flatten(), moved["naive"].flatten(), dim=0).item()
        assert cos > 0.999, (kind, cos)
        assert d.abs().mean().item() == pytest.approx(0.05, rel=0.05)  # the step is the step asked for


def test_the_best_ordinary_trunk_stops_at_the_layer(reference) -> None:
    trunk = ordinary_trunk(reference, "inception3b")
    assert list(trunk)[-1] is reference.inception3b and reference.inception4a not in list(trunk)
    with pytest.raises(ValueError, match="not a layer"):
        ordinary_trunk(reference, "fc")


def test_strength_is_one_for_the_camera_and_grows_with_the_dream(bench) -> None:
    model, reference = bench
    camera = cv2.resize(cv2.imread(str(photo_path("coffee.png"))), (160, 96), interpolation=cv2.INTER_AREA)
    meter = StrengthMeter(model, "inception4c", (160, 96))
    assert meter.strength([camera], [camera]) == pytest.approx(1.0)
    step = 2.0 * float(TORCHVISION_SPACE.per_grey_level(torch.zeros(1, 3, 1, 1)).flatten()[0])
    strengths = []
    for n in (1, 4):
        fn = BASELINES["best ordinary"]("inception4c", torch.device("cpu"), reference=reference, step=step, jitter=4)
        f = ordinary_live_loop(fn, frames_source([camera], "photo"), model.space, (160, 96), n, 2, meter=meter)
        strengths.append(f.strength)
    assert 1.0 < strengths[0] < strengths[1]


def test_flicker_is_the_mean_frame_to_frame_change() -> None:
    a = np.zeros((4, 4, 3), np.uint8)
    assert flicker([a, a, a]) == 0.0
    assert flicker([a, a + 10, a]) == pytest.approx(10.0)


def test_run_loop_measures_strength_on_the_frames_it_showed(bench) -> None:
    model, _ = bench
    camera = cv2.imread(str(photo_path("coffee.png")))  # 600x400: output at its size, dream 128x96
    meter = StrengthMeter(model, "inception4c", (128, 96))
    f = run_loop(model, TorchBackend(model, torch.device("cpu")), frames_source([camera], "photo"), 128, 96, 1, 3,
                 "inception4c", warmup=3, look={"feedback": 0.8, "jitter": 4}, meter=meter)
    assert f.output == "600x400" and f.size == "128x96"
    assert f.strength > 1.0 and f.camera_flicker == 0.0 and f.flicker > 0.0


def _rows(strengths: dict[tuple[int, float], tuple[float, float]]) -> list[dict]:
    return [{"scene": scene, "steps": s, "feedback": f, "strength": v[i]}
            for (s, f), v in strengths.items() for i, scene in enumerate(("pan", "still"))]


def test_the_default_is_the_cheapest_setting_as_strong_as_four_independent_steps() -> None:
    table = {(1, 0.0): (1.0, 1.0), (1, 0.9): (1.2, 1.5), (2, 0.0): (1.1, 1.1), (2, 0.8): (1.3, 1.6),
             (4, 0.0): (1.25, 1.3), (4, 0.8): (1.5, 1.9)}
    assert choose_default(_rows(table)) == (2, 0.8)  # (1, 0.9) is too weak on the pan
    table[(1, 0.9)] = (1.26, 1.5)
    assert choose_default(_rows(table)) == (1, 0.9)
    assert choose_default(_rows({(1, 0.0): (1.0, 1.0)})) is None  # no reference measured
