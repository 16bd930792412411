"""The CUDA frame path of both paces, rehearsed on the CPU (docs/architecture.md, "No host
synchronisation on the frame path"): the show runs here with CUDA's code paths on CPU tensors
(the device compositor for the dreamer's upload and the presenter's compose and download, the
carried dream warped with ``grid_sample`` as on a GPU), and every tensor operation of the
steady state is watched, on the presenter's thread and on the dreamer's, for what would make
the host wait for the GPU on CUDA:

- a tensor made from Python numbers (``torch.tensor(..., device=...)``, ``torch.as_tensor``),
  a blocking host-to-device copy behind everything queued on the stream;
- a Python list used as an index (PyTorch uploads it the same blocking way);
- a device value read on the host (``.item()``, ``bool(t)``), ``nonzero``, ``torch.equal``:
  all wait for the stream.

The presenter reads no value at all (its residuals were checked by the dreamer); the dreamer
reads one a dream: the finite flag, which on CUDA comes down into pinned memory with its one
wait, the hand-off. ``tests/test_cuda.py`` proves the same on a GPU under
``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from live.app import LiveLoop
from live.backends.torch_backend import TorchBackend
from live.benchmark import frames_source, scene_frames
from live.compose import DeviceCompositor
from live.control.params import Registry
from live.outputs import Fanout
from live.presenter import CARRY_PRESET
from live.reproject import Reprojector
from tests.conftest import Collect

# aten ops that, on CUDA, make the host wait for the queued GPU work
WAITS = {"aten.index.Tensor", "aten.nonzero.default", "aten.equal.default", "aten.item.default",
         "aten.allclose.default"}
HOST_READ = "aten._local_scalar_dense.default"
DREAMS = 3  # dreams each run goes on for (warm-up, then watched)


class Watch(TorchFunctionMode):
    """Counts, while active (on the thread that entered it only), tensors made from Python numbers,
    Python lists used as indices, and (one level down, :class:`_Ops`) ops that wait and values read
    on the host."""

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


def _cuda_paths_on_cpu(model, present: str) -> tuple[LiveLoop, Collect, list[np.ndarray]]:
    """The show with CUDA's code paths on CPU tensors: dream smaller than the output (both resizes
    run), jitter, feedback along the flow and the endless zoom on."""
    pictures = scene_frames(160, 96, frames=8)
    registry = Registry()
    registry.update({"width": 96, "height": 64, "steps": 1, "jitter": 4, "feedback": 0.8, "zoom": 0.01,
                     "fps_cap": 240})
    out = Collect()
    fan = Fanout([out])
    fan.open(160, 96, 240)
    loop = LiveLoop(frames_source(pictures, "test scene"), model, TorchBackend(model, torch.device("cpu")), registry,
                    fan, seed=0, status_every=3600, present=present)
    cpu = torch.device("cpu")
    loop.dream_loop.compositor = DeviceCompositor(model.space, cpu)
    loop.presenter.compositor = DeviceCompositor(model.space, cpu)
    loop.presenter.reprojector = Reprojector(CARRY_PRESET, "direct", host_remap=False)  # grid_sample, as on a GPU
    return loop, out, pictures


def _run_until_dreams(loop: LiveLoop, dreams: int, frames: int = 0):
    """Run the show until this run has made ``dreams`` dreams and sent ``frames`` frames (at most 120 s)."""
    stop = threading.Event()

    def enough(n: int) -> None:
        if loop.dream_clock.frames >= dreams and n >= frames:
            stop.set()

    report = loop.run(stop, duration=120, on_frame=enough)
    assert report.stopped_because == "stopped", f"not {dreams} dreams in 120 s: {report}"
    return report


@pytest.mark.parametrize("present", ["camera", "dream"])
def test_both_paces_make_no_tensor_from_python_numbers_and_only_the_dreamer_reads_its_flag(model, present) -> None:
    loop, out, pictures = _cuda_paths_on_cpu(model, present)
    # warm-up: grids, bounds and buffers are made once, here (the feedback's warp from the 2nd dream)
    _run_until_dreams(loop, DREAMS)

    dreamer = Watch()  # entered on the dreamer's thread, around each dream
    dream = loop.dream_loop._dream

    def watched(shot) -> None:
        with dreamer:
            dream(shot)

    loop.dream_loop._dream = watched  # type: ignore[method-assign]
    carried_ms = loop.presenter.reprojector.flow_ms
    presenter = Watch()  # the presenter runs on the thread that calls run()
    with presenter:
        report = _run_until_dreams(loop, DREAMS, frames=2 * DREAMS)
    dreams = loop.dream_clock.frames
    assert dreams >= DREAMS and report.frames >= 2 * DREAMS and loop.nonfinite == 0
    assert not presenter.seen, f"ops that would wait for the GPU on the presenter's path: {dict(presenter.seen)}"
    assert not dreamer.seen, f"ops that would wait for the GPU on the dreamer's path: {dict(dreamer.seen)}"
    assert presenter.reads == []  # the presenter reads nothing from a tensor
    # the finite flag, one 0-d bool a finished dream, is the only value the dreamer reads (a dream
    # cut short by the stop reads nothing)
    assert dreamer.reads == [((), torch.bool)] * dreams
    if present == "camera":
        assert loop.presenter.reprojector.flow_ms > carried_ms  # dreams were carried onto newer frames
    assert loop.clock.aged > 0 and out.frames[-1].shape == (96, 160, 3)
    dreamed = [min(np.abs(f.astype(int) - p).mean() for p in pictures) for f in out.frames[-report.frames:]]
    assert max(dreamed) > 1  # it did dream: frames out differ from every camera picture


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


def test_the_watch_is_blind_to_other_threads() -> None:
    """Each pace is watched on its own thread: a watch entered on one thread sees nothing another
    thread does (so the presenter's watch cannot be credited with, or blamed for, the dreamer's ops)."""
    watch = Watch()
    with watch:
        worker = threading.Thread(target=lambda: bool(torch.rand(2).sum() > 0))
        worker.start()
        worker.join()
    assert not watch.seen and watch.reads == []
