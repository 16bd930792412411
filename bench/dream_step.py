"""Time per dream step: this project against a plain PyTorch DeepDream loop, in the same run.

The plain loop is what a DeepDream script usually looks like: the whole GoogLeNet (batch-norm
unfolded, classifier included) with a forward hook on the layer, fp32, weights requiring grad,
``loss.backward()``. This project: the folded network truncated at the layer, weights frozen,
the seeded backward of the torch backend.

CPU: 224x224, 640x360, 1280x720, one step at a time (target: >= 2x the plain loop at 640x360).
CUDA (when present): 4 steps per frame at 720p and 1080p - plain loop, eager torch backend, the
CUDA-graph torch backend - and the cosine of the fp16 gradient to a float64 reference (>= 0.99).

Random weights: speed does not depend on their values. Run: ``make bench`` or
``python bench/dream_step.py [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.backends.torch_backend import TorchBackend  # noqa: E402
from live.benchmark import median_seconds, plain_loop  # noqa: E402
from live.model import Model  # noqa: E402
from live.model.googlenet import TORCHVISION_SPACE, fold_batchnorm  # noqa: E402
from live.model.weights import WeightsInfo, random_reference  # noqa: E402
from live.objectives import Objective  # noqa: E402

LAYER = "inception4c"


def project_steps(backend: TorchBackend, objective: Objective):
    step = torch.full((1, 3, 1, 1), 0.01, device=backend.device)
    lo, hi = -torch.ones_like(step), torch.ones_like(step)
    gen = torch.Generator().manual_seed(0)

    def steps(x: torch.Tensor, n: int) -> torch.Tensor:
        return backend.ascend(x, objective, n, step, 0, lo, hi, gen if backend.device.type == "cpu" else None)

    return steps


def timed(fn, x: torch.Tensor, n_steps: int, repeats: int, device: torch.device) -> float:
    """Median seconds per call of fn(x, n_steps), after one warm-up call."""
    return median_seconds(lambda: fn(x, n_steps), repeats, device)


def cpu_table(model, sizes, repeats: int) -> list[dict]:
    device = torch.device("cpu")
    backend = TorchBackend(model, device)
    ours = project_steps(backend, Objective.parse(LAYER))
    plain = plain_loop(LAYER, device)
    rows = []
    print(f"\nCPU ({torch.get_num_threads()} threads), one step at {LAYER}, fp32, median of {repeats}")
    print(f"{'size':>10} {'plain ms/step':>14} {'project ms/step':>16} {'speed-up':>9}")
    for w, h in sizes:
        x = TORCHVISION_SPACE.to_model(torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)))
        t_plain = timed(plain, x, 1, repeats, device)
        t_ours = timed(ours, x, 1, repeats, device)
        rows.append({"device": "cpu", "size": f"{w}x{h}", "plain_ms": 1e3 * t_plain, "project_ms": 1e3 * t_ours,
                     "speedup": t_plain / t_ours})
        print(f"{w:>5}x{h:<4} {1e3 * t_plain:>14.1f} {1e3 * t_ours:>16.1f} {t_plain / t_ours:>8.2f}x")
    return rows


def cuda_table(model, repeats: int) -> list[dict]:
    device = torch.device("cuda")
    objective = Objective.parse(LAYER)
    eager = project_steps(TorchBackend(model, device, cuda_graphs=False), objective)
    graphed_backend = TorchBackend(model, device)
    graphed = project_steps(graphed_backend, objective)
    plain = plain_loop(LAYER, device)
    rows = []
    print(f"\n{torch.cuda.get_device_name()}: 4 steps per frame at {LAYER}, median of {repeats}")
    print(f"{'size':>10} {'plain fps':>10} {'eager fp16 fps':>15} {'graph fp16 fps':>15} {'graph/plain':>12}")
    for w, h in [(1280, 720), (1920, 1080)]:
        x = TORCHVISION_SPACE.to_model(torch.rand(1, 3, h, w, device=device))
        t_plain = timed(plain, x, 4, repeats, device)
        t_eager = timed(eager, x, 4, repeats, device)
        t_graph = timed(graphed, x, 4, repeats, device)
        rows.append({"device": torch.cuda.get_device_name(), "size": f"{w}x{h}", "plain_fps": 1 / t_plain,
                     "eager_fps": 1 / t_eager, "graph_fps": 1 / t_graph, "graph_vs_plain": t_plain / t_graph})
        print(f"{w:>5}x{h:<4} {1 / t_plain:>10.1f} {1 / t_eager:>15.1f} {1 / t_graph:>15.1f} {t_plain / t_graph:>11.2f}x")
    print(f"graph captures: {graphed_backend.stats.graph_captures}")

    x = TORCHVISION_SPACE.to_model(torch.rand(1, 3, 224, 224, device=device))
    g16, _ = TorchBackend(model, device, cuda_graphs=False).gradient(x, objective)
    g64, _ = TorchBackend(model, device, dtype=torch.float64).gradient(x.double(), objective)
    cos = torch.nn.functional.cosine_similarity(g16.double().flatten(), g64.flatten(), dim=0).item()
    print(f"fp16 gradient vs float64 reference at 224x224: cosine {cos:.4f} (target >= 0.99)")
    rows.append({"device": torch.cuda.get_device_name(), "fp16_cosine_224": cos})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip 1280x720 on CPU")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    repeats = 2 if args.quick else 5
    model = Model("torchvision", fold_batchnorm(random_reference(0)), TORCHVISION_SPACE, WeightsInfo("random", "seed 0"))
    sizes = [(224, 224), (640, 360)] + ([] if args.quick else [(1280, 720)])
    rows = cpu_table(model, sizes, repeats)
    if torch.cuda.is_available():
        rows += cuda_table(model, repeats)
    else:
        print("\nno CUDA device: the GPU table (eager vs CUDA graph, fp16 cosine) was not measured")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
