"""fp16 gradients against float64, layer by layer: the forward-ops graph on onnxruntime and, for
comparison, PyTorch's own fp16 autograd, for both networks (docs/architecture.md, "The
forward-ops-only gradient graph").

One fp16 graph over all nine inception layers per model and size; each layer's gradient is taken
alone by zeroing the other layers' weights (graph inputs). Random weights (``--weights``).

Run: ``python bench/fp16_cosine.py [--sizes 64x96,83x115] [--models torchvision,bvlc] [--autograd]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.backends.onnx_backend import OnnxBackend  # noqa: E402
from live.backends.torch_backend import TorchBackend  # noqa: E402
from live.backends.verify import cosine  # noqa: E402
from live.model import load_model  # noqa: E402
from live.objectives import Objective  # noqa: E402

INCEPTION = ("inception3a", "inception3b", "inception4a", "inception4b", "inception4c", "inception4d",
             "inception4e", "inception5a", "inception5b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x96,83x115", help="HxW[,HxW…] (default: %(default)s)")
    parser.add_argument("--models", default="torchvision,bvlc")
    parser.add_argument("--weights", default="random:0")
    parser.add_argument("--autograd", action="store_true", help="also PyTorch fp16 autograd on the CPU (slow)")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    print(f"fp16 cosine to float64, {args.weights} weights; columns: {' '.join(INCEPTION)}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("DEEPDREAM_LIVE_ENGINES", tmp)
        for name in args.models.split(","):
            model = load_model(args.weights, model=name, progress=False)
            graph = OnnxBackend(model, cpu, precision="fp16", verify_sessions=False)
            reference = TorchBackend(model, cpu, dtype=torch.float64)
            autograd = TorchBackend(model, cpu, dtype=torch.float16) if args.autograd else None
            for size in args.sizes.split(","):
                h, w = (int(v) for v in size.split("x"))
                x = model.space.to_model(torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(7)))
                rows: dict[str, list[float]] = {"onnxruntime graph": []}
                if autograd is not None:
                    rows["torch autograd"] = []
                for layer in INCEPTION:
                    one = Objective({n: (np.ones if n == layer else np.zeros)(model.catalog.by_name[n].channels,
                                                                                np.float32) for n in INCEPTION})
                    want, _ = reference.gradient(x.double(), Objective.parse(layer))
                    rows["onnxruntime graph"].append(cosine(graph.gradient(x, one)[0], want))
                    if autograd is not None:
                        rows["torch autograd"].append(cosine(autograd.gradient(x, Objective.parse(layer))[0], want))
                for label, values in rows.items():
                    print(f"{name:<12} {h}x{w:<4} {label:<18} " + " ".join(f"{v:.4f}" for v in values), flush=True)


if __name__ == "__main__":
    main()
