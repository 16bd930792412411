"""Time per dream step: this project against three ordinary loops, all in the same run.

Per step (one gradient step at inception4c), each baseline named for what it is (see
``live/benchmark.py``):

- naive: the whole GoogLeNet with a forward hook, fp32, weights requiring grad, ``backward()``;
- frozen: the same with the weights frozen, ``autograd.grad`` for the input only;
- best ordinary: frozen, the network cut at the layer, channels-last on the CPU (on CUDA: fp16,
  the steps captured as one CUDA graph);
- project: the folded network cut at the layer, frozen, seeded backward (the torch backend).

The headline is "x best ordinary" (target on the 2-core CPU: >= 1.4x, about the limit: one
step already runs at ~70% of the CPU's matrix-product rate); the others are extra columns,
with "cut" (frozen and cut, default layout) to show what channels-last alone is worth. Each
ratio is also given in process CPU time, the steadier figure on a machine others keep busy.
Per-shown-frame figures (the whole live loop) are ``bench/live_loop.py``'s.

Random weights: speed does not depend on their values. Run: ``make bench`` or
``python bench/dream_step.py [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live import threads  # noqa: E402

threads.prepare_environment()  # before torch loads, as the command line does

import torch  # noqa: E402

from live.backends.torch_backend import TorchBackend  # noqa: E402
from live.benchmark import BASELINE_HELP, BASELINES, cut_loop, interleaved_times, project_steps  # noqa: E402
from live.model import Model  # noqa: E402
from live.model.googlenet import TORCHVISION_SPACE, fold_batchnorm  # noqa: E402
from live.model.weights import WeightsInfo, random_reference  # noqa: E402
from live.objectives import Objective  # noqa: E402

LAYER = "inception4c"


def table(device: torch.device, sizes: list[tuple[int, int]], n_steps: int, repeats: int) -> list[dict]:
    reference = random_reference(0)
    model = Model("torchvision", fold_batchnorm(reference), TORCHVISION_SPACE, WeightsInfo("random", "seed 0"))
    backend = TorchBackend(model, device)
    loops = {kind: make(LAYER, device, reference=reference) for kind, make in BASELINES.items()}
    loops["cut"] = cut_loop(LAYER, device, reference=reference)
    loops["project"] = project_steps(backend, Objective.parse(LAYER))
    sync = "" if device.type == "cpu" else f", {torch.cuda.get_device_name()}"
    print(f"\nPer step: {backend.describe()}{sync}, {torch.get_num_threads()} threads, {n_steps} step(s) per call "
          f"at {LAYER}, median of {repeats} timed in turns; weights random (speed does not depend on them)")
    for kind, text in BASELINE_HELP.items():
        print(f"  {kind}: {text}")
    print("  cut: frozen, cut at the layer, PyTorch's default layout (what channels-last alone is worth)")
    print()
    print("| size | naive ms/step | frozen ms/step | cut ms/step | best ordinary ms/step | project ms/step | "
          "x best ordinary | x best ordinary, CPU time | x cut | x frozen | x naive |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for w, h in sizes:
        gen = torch.Generator().manual_seed(1)
        x = TORCHVISION_SPACE.to_model(torch.rand(1, 3, h, w, generator=gen)).to(device)
        wall, cpu = interleaved_times({kind: (lambda fn=fn: fn(x, n_steps)) for kind, fn in loops.items()},
                                      repeats, device)
        ms = {kind: 1e3 * t / n_steps for kind, t in wall.items()}
        ours = ms["project"]
        row = {"device": str(device), "size": f"{w}x{h}", **{f"{k.replace(' ', '_')}_ms": v for k, v in ms.items()},
               "vs_best_ordinary": ms["best ordinary"] / ours, "vs_frozen": ms["frozen"] / ours,
               "vs_naive": ms["naive"] / ours, "vs_cut": ms["cut"] / ours, "threads": torch.get_num_threads(),
               "vs_best_ordinary_cpu_time": cpu["best ordinary"] / cpu["project"],
               "cpu_ms": {k: 1e3 * v / n_steps for k, v in cpu.items()}}
        rows.append(row)
        cpu_ratio = f" {row['vs_best_ordinary_cpu_time']:.2f}x |" if device.type == "cpu" else " - |"
        print(f"| {w}x{h} | {ms['naive']:.1f} | {ms['frozen']:.1f} | {ms['cut']:.1f} | {ms['best ordinary']:.1f} | "
              f"{ours:.1f} | **{row['vs_best_ordinary']:.2f}x** |{cpu_ratio} {row['vs_cut']:.2f}x | "
              f"{row['vs_frozen']:.2f}x | {row['vs_naive']:.2f}x |", flush=True)
    return rows


def fp16_cosine(model: Model) -> dict:
    device = torch.device("cuda")
    objective = Objective.parse(LAYER)
    x = TORCHVISION_SPACE.to_model(torch.rand(1, 3, 224, 224, device=device))
    g16, _ = TorchBackend(model, device, cuda_graphs=False).gradient(x, objective)
    g64, _ = TorchBackend(model, device, dtype=torch.float64).gradient(x.double(), objective)
    cos = torch.nn.functional.cosine_similarity(g16.double().flatten(), g64.flatten(), dim=0).item()
    print(f"fp16 gradient vs float64 reference at 224x224: cosine {cos:.4f} (target >= 0.99)")
    return {"device": torch.cuda.get_device_name(), "fp16_cosine_224": cos}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip 1280x720 on CPU")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    threads.apply()
    repeats = 3 if args.quick else 5
    sizes = [(224, 224), (640, 352)] + ([] if args.quick else [(1280, 720)])
    rows = table(torch.device("cpu"), sizes, 1, repeats)
    if torch.cuda.is_available():
        reference = random_reference(0)
        model = Model("torchvision", fold_batchnorm(reference), TORCHVISION_SPACE, WeightsInfo("random", "seed 0"))
        rows += table(torch.device("cuda"), [(1280, 720), (1920, 1080)], 4, repeats)
        rows.append(fp16_cosine(model))
    else:
        print("\nno CUDA device: the GPU table (fp16, CUDA graphs) was not measured")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
