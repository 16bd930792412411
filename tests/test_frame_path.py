"""The CUDA frame path, rehearsed on the CPU: the loop's pipelined path (the device compositor,
one frame in flight) runs here on CPU tensors, and every tensor operation of steady-state frames
is watched for what would make the host wait for the GPU on CUDA:

- a tensor made from Python numbers (``torch.tensor(..., device=...)``, ``torch.as_tensor``),
  a blocking host-to-device copy behind the dream in flight;
- a Python list used as an index (PyTorch uploads it the same blocking way);
- a device value read on the host (``.item()``, ``bool(t)``), ``nonzero``, ``torch.equal``:
  all wait for the stream. One read a frame is allowed: the finite flag, which on CUDA lands
  in pinned host memory with the frame's one download.

``tests/test_cuda.py`` proves the same on a GPU under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from live.app import LiveLoop
from live.backends.torch_backend import TorchBackend
from live.benchmark import frames_source
from live.compose import DeviceCompositor
from live.control.params import Registry
from live.outputs import Fanout
from live.sources.testscene import test_scene as draw_scene
from tests.conftest import Collect

# aten ops that, on CUDA, make the host wait for the queued GPU work
WAITS = {"aten.index.Tensor", "aten.nonzero.default", "aten.equal.default", "aten.item.default",
         "aten.allclose.default"}
HOST_READ = "aten._local_scalar_dense.default"


class Watch(TorchFunctionMode):
    """Counts, while active (this thread only), tensors made from Python numbers, Python lists used
    as indices, and (one level down, :class:`_Ops`) ops that wait and values read on the host."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()
        self.reads: list[tuple[tuple[int, ...], torch.dtype]] = []
        self._ops = _Ops(self)

    def __enter__(self):
        super().__enter__()
        self._ops.__enter__()
        return self

    def __exit__(self, *exc):
        self._ops.__exit__(*exc)
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name == "tensor" or (name == "as_tensor" and args and not isinstance(args[0], torch.Tensor)):
            self.seen[f"torch.{name} from Python numbers"] += 1
        if name == "__getitem__" and _has_list(args[1] if len(args) > 1 else None):
            self.seen["a Python list as an index"] += 1
        return func(*args, **(kwargs or {}))


class _Ops(TorchDispatchMode):
    def __init__(self, watch: Watch) -> None:
        super().__init__()
        self.watch = watch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name in WAITS:
            self.watch.seen[name] += 1
        if name == HOST_READ:
            self.watch.reads.append((tuple(args[0].shape), args[0].dtype))
        return func(*args, **(kwargs or {}))


def _has_list(index: object) -> bool:
    if isinstance(index, (list, np.ndarray)):
        return True
    return isinstance(index, tuple) and any(isinstance(i, (list, np.ndarray)) for i in index)


def test_the_pipelined_frame_path_makes_no_tensor_from_python_numbers_and_reads_one_flag(model) -> None:
    pictures = [cv2.cvtColor(draw_scene(160, 96, i / 30), cv2.COLOR_RGB2BGR) for i in range(8)]
    registry = Registry()
    # dream smaller than the output (both resizes run), jitter, feedback and the endless zoom on
    registry.update({"width": 96, "height": 64, "steps": 1, "jitter": 4, "feedback": 0.8, "zoom": 0.01,
                     "fps_cap": 240})
    out = Collect()
    fan = Fanout([out])
    fan.open(160, 96, 240)
    loop = LiveLoop(frames_source(pictures, "test scene"), model, TorchBackend(model, torch.device("cpu")), registry,
                    fan, seed=0, status_every=3600)
    loop.compositor, loop.pipelined = DeviceCompositor(model.space, torch.device("cpu")), True  # CUDA's path
    loop.run(max_frames=3)  # warm-up: grids, bounds and buffers are made once, here
    watch = Watch()
    with watch:
        report = loop.run(max_frames=4)
    assert report.frames == 4 and loop.nonfinite == 0
    assert not watch.seen, f"ops that would wait for the GPU on the frame path: {dict(watch.seen)}"
    # the finite flag, one 0-d bool a frame, is the only value the host reads
    assert watch.reads == [((), torch.bool)] * 4
    assert out.frames[-1].shape == (96, 160, 3)
    assert np.abs(out.frames[-1].astype(int) - pictures[0]).mean() > 1  # it did dream


def test_the_watch_sees_what_it_forbids() -> None:
    """The detector itself: each forbidden pattern is seen (else the test above proves nothing)."""
    x = torch.rand(1, 3, 4, 4)
    watch = Watch()
    with watch:
        torch.tensor([0.5, 0.5, 0.5])
        x[:, [2, 1, 0]]
        torch.as_tensor(3, dtype=torch.float32)
        bool(x.sum() > 0)
        x.flip(1)  # allowed: the channel flip as the frame path does it
    assert watch.seen == {"torch.tensor from Python numbers": 1, "torch.as_tensor from Python numbers": 1,
                          "a Python list as an index": 1, "aten.index.Tensor": 1}
    assert watch.reads == [((), torch.bool)]
