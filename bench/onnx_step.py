"""Time per dream step of the forward-ops-only graph against the torch backend, in the same run.

CPU: one gradient step at 640x360 (inception4c), onnxruntime (fp32 graph) vs torch autograd
(fp32, channels-last), and the cosine between their gradients.
CUDA (when present): 4 steps per frame at 720p and 1080p - the torch CUDA-graph path, the
onnxruntime CUDA provider (when installed) and TensorRT (when installed; target >= 2x the torch
CUDA-graph path on an H100-class card).

Random weights: speed does not depend on their values. Run:
``python bench/onnx_step.py [--quick] [--json FILE]``. ONNX files and plans go to a temporary
engines directory unless $DEEPDREAM_LIVE_ENGINES is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.backends import Backend  # noqa: E402
from live.backends.onnx_backend import OnnxBackend  # noqa: E402
from live.backends.torch_backend import TorchBackend  # noqa: E402
from live.benchmark import median_seconds  # noqa: E402
from live.errors import LiveError  # noqa: E402
from live.model import Model  # noqa: E402
from live.model.googlenet import TORCHVISION_SPACE, fold_batchnorm  # noqa: E402
from live.model.weights import WeightsInfo, random_reference  # noqa: E402
from live.objectives import Objective  # noqa: E402

LAYER = "inception4c"


def steps_of(backend: Backend, objective: Objective, n: int):
    step = torch.full((1, 3, 1, 1), 0.01, device=backend.device)
    lo, hi = -torch.ones_like(step), torch.ones_like(step)
    gen = torch.Generator().manual_seed(0)
    return lambda x: backend.ascend(x, objective, n, step, 0, lo, hi, gen if backend.device.type == "cpu" else None)


def cpu_table(model: Model, repeats: int) -> list[dict]:
    device = torch.device("cpu")
    objective = Objective.parse(LAYER)
    w, h = 640, 352  # 360 rounded to the multiple of 32 the graph backends dream at
    x = TORCHVISION_SPACE.to_model(torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1)))
    torch_backend, onnx_backend = TorchBackend(model, device), OnnxBackend(model, device)
    t0 = time.perf_counter()
    onnx_backend.prepare(tuple(x.shape), objective.layers)
    t_prepare = time.perf_counter() - t0
    t_torch = median_seconds(lambda: steps_of(torch_backend, objective, 1)(x), repeats, device)
    t_onnx = median_seconds(lambda: steps_of(onnx_backend, objective, 1)(x), repeats, device)
    g_t, _ = torch_backend.gradient(x, objective)
    g_o, _ = onnx_backend.gradient(x, objective)
    cos = torch.nn.functional.cosine_similarity(g_t.double().flatten(), g_o.double().flatten(), dim=0).item()
    print(f"\nCPU ({torch.get_num_threads()} threads), one step at {LAYER}, {w}x{h}, fp32, median of {repeats}")
    print(f"  export + session (first use, then cached on disk): {t_prepare:.1f} s")
    print(f"  torch autograd: {1e3 * t_torch:8.1f} ms/step")
    print(f"  onnxruntime:    {1e3 * t_onnx:8.1f} ms/step   ({t_torch / t_onnx:.2f}x torch)")
    print(f"  gradient cosine onnx vs torch: {cos:.6f}")
    return [{"device": "cpu", "size": f"{w}x{h}", "torch_ms": 1e3 * t_torch, "onnx_ms": 1e3 * t_onnx,
             "onnx_vs_torch": t_torch / t_onnx, "cosine": cos, "prepare_s": t_prepare}]


def cuda_table(model: Model, repeats: int) -> list[dict]:
    device = torch.device("cuda")
    objective = Objective.parse(LAYER)
    candidates: dict[str, Backend] = {"torch CUDA graph": TorchBackend(model, device)}
    for name, make in (("onnxruntime CUDA", lambda: OnnxBackend(model, device)), ("TensorRT", lambda: _trt(model, device))):
        try:
            candidates[name] = make()
        except LiveError as e:
            print(f"  {name}: not measured - {e}")
    rows = []
    print(f"\n{torch.cuda.get_device_name()}: 4 steps per frame at {LAYER}, median of {repeats}")
    for w, h in [(1280, 720), (1920, 1088)]:
        x = TORCHVISION_SPACE.to_model(torch.rand(1, 3, h, w, device=device))
        fps = {}
        for name, backend in candidates.items():
            if hasattr(backend, "prepare"):
                backend.prepare(tuple(x.shape), objective.layers)
            fps[name] = 1 / median_seconds(lambda b=backend: steps_of(b, objective, 4)(x), repeats, device)
        base = fps["torch CUDA graph"]
        print(f"{w:>5}x{h:<4} " + "  ".join(f"{n}: {f:6.1f} fps ({f / base:.2f}x)" for n, f in fps.items()))
        rows.append({"device": torch.cuda.get_device_name(), "size": f"{w}x{h}", **{f"{n} fps": f for n, f in fps.items()}})
    return rows


def _trt(model: Model, device: torch.device) -> Backend:
    from live.backends.tensorrt_backend import create

    return create(model, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    model = Model("torchvision", fold_batchnorm(random_reference(0)), TORCHVISION_SPACE, WeightsInfo("random", "seed 0"))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("DEEPDREAM_LIVE_ENGINES", tmp)
        rows = cpu_table(model, repeats)
        if torch.cuda.is_available():
            rows += cuda_table(model, repeats)
        else:
            print("\nno CUDA device: torch CUDA graph vs onnxruntime CUDA vs TensorRT was not measured")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
