"""A stand-in for TensorRT where there is no GPU: a toolchain whose "plans" are the ONNX bytes with
a header, and whose engines run that ONNX graph with onnxruntime on the CPU. It goes through the
real cache, manifests, verification and fallback; ``wrong=True`` makes its engines return a
wrong gradient (mirrored left to right, as a broken routing would), which verification must catch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from live.backends.forward_graph import INPUT, OUTPUTS, weight_input
from live.engines import timing_cache_path

HEADER = b"PLAN"


class StandInEngine:
    def __init__(self, onnx: bytes, layers: Sequence[str], wrong: bool) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])
        self.layers, self.wrong = tuple(layers), wrong
        self.objective = None
        self.score = torch.zeros(())

    def load_objective(self, objective) -> None:
        self.objective = objective

    def run(self, x: torch.Tensor) -> torch.Tensor:
        feeds = {INPUT: np.ascontiguousarray(x.detach().cpu().float().numpy())}
        for name in self.layers:
            feeds[weight_input(name)] = self.objective.weights(name)
        grad, score = self.session.run(list(OUTPUTS), feeds)
        self.score = torch.from_numpy(np.asarray(score))
        g = torch.from_numpy(grad)
        return torch.flip(g, dims=[-1]) if self.wrong else g


class StandInToolchain:
    """Counts builds and loads; keeps a timing cache file where TensorRT would."""

    tensorrt = "10.9.0"
    gpu = "NVIDIA Test GPU"
    compute_capability = "9.0"

    def __init__(self, wrong: bool = False) -> None:
        self.wrong = wrong
        self.builds: list[tuple[Path, tuple]] = []
        self.loads = 0

    def build(self, onnx: Path, shape: tuple, engines: Path) -> bytes:
        self.builds.append((onnx, tuple(shape)))
        timing_cache_path(self, engines).write_bytes(b"cache")
        return HEADER + onnx.read_bytes()

    def load(self, data: bytes, shape: tuple, layers: Sequence[str]) -> StandInEngine:
        if not data.startswith(HEADER):
            raise RuntimeError("not a plan")
        self.loads += 1
        return StandInEngine(data[len(HEADER):], layers, self.wrong)
