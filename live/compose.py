"""The frame path at two resolutions: outputs at the output size, the dream at its own.

The outputs (window, virtual camera, recording) run at the *output size*: the source's own
resolution unless the operator names one. The dream runs at the *dream size* (a multiple of 32,
what the governor and ``calibrate`` trim). Per frame (docs/architecture.md, "Two paces" and
"Frame budget")::

    cam = compositor.upload(bgr, output_size, dream_size)  # the camera at the dream size, model space
    ...feedback and the dream, at the dream size...
    shown = compositor.compose(cam, dreamed, mix)          # camera at full size + mix · upsampled residual
    picture = compositor.download(shown)                   # BGR uint8 at the output size, a new array

The show's two paces split that in two: the dreamer uploads and dreams (``upload``), the
presenter lays a residual dreamed earlier, carried onto its own camera frame, on that frame
(``keep_camera``, then ``compose_residual`` and ``download``); each pace has a compositor of its own.

Only the *residual* (dream − camera) is upsampled, so the camera stays sharp and the
hallucination sits on it; ``mix`` scales the residual, which is a blend of camera and dream at
the output resolution. Feedback and flow never see the output size.

Two implementations, chosen by where the dream's tensors live:

- :class:`HostCompositor` (CPU): the frame never leaves the host. OpenCV resizes and adds at the
  output size with its SIMD kernels: measured 6-9 ms at 1280x720-1920x1080 on the 2-core CPU,
  against 75-95 ms for the same arithmetic in PyTorch there.
- :class:`DeviceCompositor` (CUDA, and any torch device): one host-to-device copy of the camera
  frame through a pinned buffer, the resizes and the add on the device, one device-to-host copy of
  the shown frame.

On CUDA nothing here waits for the GPU except :meth:`Compositor.download`, and that waits only
for its own frame: :meth:`Compositor.compose_residual` queues the shown frame's copy to pinned
host memory (with a finite flag, where one is given) and records an event behind it on the
caller's stream; the wait is for that event, never stream- or device-wide, so the presenter never
waits for a dream running on the dreamer's stream (docs/architecture.md, "Two paces"). No Python
list indexes a device tensor and no tensor is made from Python numbers per frame: either is a
blocking host-to-device copy that waits for everything queued on the stream.

Buffers are cached per size (a camera that changes resolution gets new ones, an LRU keeps a
handful). The shown frame itself is a new array every frame: outputs keep frames (a recorder's
queue, freeze, screenshots), so it cannot be a reused buffer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from live.errors import UsageError
from live.model.googlenet import InputSpace

Size = tuple[int, int]  # (width, height)
MIN_OUTPUT_SIDE, MAX_OUTPUT_SIDE = 16, 8192


class _Buffers:
    """A few arrays or tensors kept per key (kind and size); least recently used ones go first."""

    def __init__(self, keep: int = 8) -> None:
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._keep = keep

    def get(self, key: tuple, make: Callable[[], Any]) -> Any:
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = make()
            while len(self._items) > self._keep:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return item


def resize_interpolation(src: Size, dst: Size) -> int:
    """OpenCV's filter for resizing ``src`` to ``dst`` (width, height): INTER_AREA averages when
    shrinking (no aliasing of fine texture), INTER_LINEAR when enlarging."""
    return cv2.INTER_AREA if dst[0] * dst[1] < src[0] * src[1] else cv2.INTER_LINEAR


def check_output_size(size: Size) -> Size:
    """``size`` as ``(width, height)`` ints, or UsageError saying what an output size must be.

    Any size a display, call or stream wants: no rounding to multiples of 32 (only the dream needs that).
    """
    w, h = int(size[0]), int(size[1])
    if not (MIN_OUTPUT_SIDE <= w <= MAX_OUTPUT_SIDE and MIN_OUTPUT_SIDE <= h <= MAX_OUTPUT_SIDE):
        raise UsageError(f"output size {w}x{h}: each side must be {MIN_OUTPUT_SIDE}..{MAX_OUTPUT_SIDE} pixels, "
                         "e.g. 1920x1080")
    return w, h


@dataclass
class Composed:
    """A shown frame between :meth:`Compositor.compose` and :meth:`Compositor.download`.

    ``frame``: the picture (on CUDA the pinned host buffer its download lands in; else the host
    array or tensor, already complete); ``finite``: a 0-d bool tensor, whether the dream it was
    composed from was finite, on the host once the frame is downloaded (on CUDA it travels with
    the download, so reading it never waits), or None where nobody asked (the presenter's
    residuals were checked by the dreamer); ``composed`` and ``ready``: CUDA events after the
    compose kernels and after the download copy (None off CUDA), for the GPU stage times.
    """

    frame: Any
    finite: Tensor | None
    composed: Any = None
    ready: Any = None


class Compositor:
    """Camera frame in at the output size, dream at the dream size, shown frame out at the output size.

    Not thread-safe: one pace's thread only (each pace makes its own).
    """

    def __init__(self, space: InputSpace, device: torch.device) -> None:
        self.space = space
        self.device = device
        self._buffers = _Buffers()
        self.output_size: Size | None = None  # of the frame uploaded last
        # Grey levels per model unit for each model channel, and the model channels in BGR order.
        like = torch.zeros(1, 3, 1, 1, device=device)
        self._levels = (1.0 / space.per_grey_level(like)).view(3)
        # model channels to BGR: a flip for an RGB model (on a device a Python list as an index
        # would be a blocking host-to-device copy every frame), nothing for a BGR one
        self._flip_to_bgr = not space.bgr

    def _at_output_size(self, bgr: np.ndarray, size: Size) -> np.ndarray:
        """The camera frame at the output size: itself, or resized on the host (a source whose
        size differs from the output size the operator named)."""
        if (bgr.shape[1], bgr.shape[0]) == size:
            return bgr
        dst = self._buffers.get(("out", size), lambda: np.empty((size[1], size[0], 3), np.uint8))
        return cv2.resize(bgr, size, dst=dst, interpolation=resize_interpolation((bgr.shape[1], bgr.shape[0]), size))

    def upload(self, bgr: np.ndarray, output_size: Size, dream_size: Size) -> Tensor:
        """The camera frame as a (1, 3, dream h, dream w) model-space tensor on the device; the
        frame at the output size is kept for :meth:`compose`."""
        raise NotImplementedError

    def keep_camera(self, bgr: np.ndarray, output_size: Size) -> None:
        """Only keep the camera frame at the output size for :meth:`compose_residual` (the
        presenter's path: it shows a residual dreamed elsewhere, so needs no dream-size copy)."""
        raise NotImplementedError

    def compose(self, cam: Tensor, dreamed: Tensor, mix: float) -> Composed:
        """The shown frame: the uploaded camera at the output size plus ``mix`` times the upsampled
        residual ``dreamed - cam``, with whether ``dreamed`` was finite. Returns what
        :meth:`download` takes; on CUDA its copy to the host is already queued."""
        return self.compose_residual(dreamed - cam, mix, torch.isfinite(dreamed).all())

    def compose_residual(self, residual: Tensor, mix: float, finite: Tensor | None = None) -> Composed:
        """The shown frame: the kept camera at the output size plus ``mix`` times ``residual``
        (model space, (1, 3, dream h, dream w)) upsampled; ``finite`` (a 0-d bool tensor, or None)
        rides along to the host. Returns what :meth:`download` takes; on CUDA its copy to the host
        is already queued."""
        raise NotImplementedError

    def download(self, shown: Composed) -> np.ndarray:
        """The shown frame as a new (H, W, 3) uint8 BGR array at the output size; afterwards
        ``shown.finite`` is readable on the host without waiting."""
        raise NotImplementedError

    def _residual_scale(self, mix: float) -> Tensor:
        return self._levels * float(mix)


class HostCompositor(Compositor):
    """The CPU path: OpenCV resizes and adds on the host, where the dream's tensors already live."""

    def __init__(self, space: InputSpace, device: torch.device | None = None) -> None:
        super().__init__(space, torch.device("cpu"))
        self._cam_out: np.ndarray | None = None

    def keep_camera(self, bgr: np.ndarray, output_size: Size) -> None:
        self._cam_out, self.output_size = self._at_output_size(bgr, output_size), output_size

    def upload(self, bgr: np.ndarray, output_size: Size, dream_size: Size) -> Tensor:
        self.keep_camera(bgr, output_size)
        cam_out = self._cam_out
        if output_size == dream_size:
            small = cam_out
        else:
            dst = self._buffers.get(("dream", dream_size),
                                    lambda: np.empty((dream_size[1], dream_size[0], 3), np.uint8))
            small = cv2.resize(cam_out, dream_size, dst=dst, interpolation=resize_interpolation(output_size, dream_size))
        rgb01 = torch.from_numpy(small).permute(2, 0, 1).flip(0)[None].float().div_(255.0)
        return self.space.to_model(rgb01)

    def compose(self, cam: Tensor, dreamed: Tensor, mix: float) -> Composed:
        dh, dw = cam.shape[-2:]
        diff = self._buffers.get(("diff", dw, dh), lambda: torch.empty(3, dh, dw))
        torch.sub(dreamed[0], cam[0], out=diff)
        return self.compose_residual(diff[None], mix, torch.isfinite(dreamed).all())

    def compose_residual(self, residual: Tensor, mix: float, finite: Tensor | None = None) -> Composed:
        dh, dw = residual.shape[-2:]
        out = self._buffers.get(("residual", dw, dh), lambda: np.empty((dh, dw, 3), np.float32))
        return Composed(self.compose_levels(self.levels(residual, mix, out)), finite)

    def levels(self, residual: Tensor, mix: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
        """``mix`` times ``residual`` (model space, (1, 3, h, w)) in BGR grey levels, laid out
        (h, w, 3) float32 for OpenCV (into ``out`` when given): what :meth:`compose_levels` adds.
        The presenter converts a dream once and moves it onto many camera frames in this form."""
        diff = residual[0]
        dh, dw = diff.shape[-2:]
        levels = np.empty((dh, dw, 3), np.float32) if out is None else out
        planes = torch.from_numpy(levels).permute(2, 0, 1)
        scale = self._residual_scale(mix)
        for out_c in range(3):  # host tensors: indexing by a Python int costs nothing here
            model_c = 2 - out_c if self._flip_to_bgr else out_c
            torch.mul(diff[model_c], scale[model_c], out=planes[out_c])
        return levels

    def compose_levels(self, levels: np.ndarray) -> np.ndarray:
        """The kept camera frame plus ``levels`` ((h, w, 3) float32 BGR grey levels, any size)
        upsampled to the output size: a new uint8 frame."""
        if self._cam_out is None or self.output_size is None:
            raise RuntimeError("compose() before upload() or keep_camera()")
        dh, dw = levels.shape[:2]
        ow, oh = self.output_size
        if (ow, oh) != (dw, dh):
            up = self._buffers.get(("up", ow, oh), lambda: np.empty((oh, ow, 3), np.float32))
            levels = cv2.resize(levels, (ow, oh), dst=up, interpolation=cv2.INTER_LINEAR)
        shown = np.empty((oh, ow, 3), np.uint8)
        # uint8 + float32 -> uint8: rounded and saturated at 0 and 255, i.e. clamped to valid pixels
        cv2.add(self._cam_out, levels, dst=shown, dtype=cv2.CV_8U)
        return shown

    def download(self, shown: Composed) -> np.ndarray:
        return shown.frame


class _Ring:
    """A few pinned host slots used in turn, each with the CUDA event that says its last copy ran."""

    def __init__(self, make: Callable[[], dict[str, Any]], size: int = 2) -> None:
        self.slots = [make() for _ in range(size)]
        self.next = 0

    def take(self) -> dict[str, Any]:
        slot = self.slots[self.next]
        self.next = (self.next + 1) % len(self.slots)
        if slot["used"]:
            # The copy this slot took part in two frames ago: long finished in a running loop, so
            # this returns at once; it waits for that copy only, never for later work.
            slot["done"].synchronize()
        slot["used"] = True
        return slot


class DeviceCompositor(Compositor):
    """The GPU path: one pinned upload of the full-size frame, resizes and the add on the device,
    one download of the shown frame. Also runs on CPU tensors (the tests compare it with
    :class:`HostCompositor` there).

    On CUDA the host never waits here except in :meth:`download`, for its own frame: uploads go
    through two pinned slots used in turn (so the next frame's upload never overwrites memory a
    queued copy still reads), and :meth:`compose_residual` queues the download into one of two
    pinned slots behind an event on the caller's stream. Each pace has its own compositor, so
    slots and the device buffers they fill are only ever used on one stream and one thread.
    """

    def __init__(self, space: InputSpace, device: torch.device) -> None:
        super().__init__(space, device)
        self._cam_out: Tensor | None = None
        self._cuda = device.type == "cuda"

    def keep_camera(self, bgr: np.ndarray, output_size: Size) -> None:
        self._keep(bgr, output_size)

    def _keep(self, bgr: np.ndarray, output_size: Size) -> Tensor:
        """The camera frame at the output size on the device (uint8 BGR), kept for composing."""
        host = torch.from_numpy(np.ascontiguousarray(self._at_output_size(bgr, output_size)))
        ow, oh = output_size
        if self._cuda:
            ring = self._buffers.get(("upload", output_size), lambda: _Ring(lambda: {
                "pinned": torch.empty((oh, ow, 3), dtype=torch.uint8).pin_memory(),
                "done": torch.cuda.Event(), "used": False}))
            slot = ring.take()
            slot["pinned"].copy_(host)
            dev = self._buffers.get(("cam", output_size),
                                    lambda: torch.empty((oh, ow, 3), dtype=torch.uint8, device=self.device))
            # Stream order keeps this behind the last compose that read ``dev``.
            dev.copy_(slot["pinned"], non_blocking=True)
            slot["done"].record()
        else:
            dev = host
        self._cam_out, self.output_size = dev, output_size
        return dev

    def upload(self, bgr: np.ndarray, output_size: Size, dream_size: Size) -> Tensor:
        dev = self._keep(bgr, output_size)
        ow, oh = output_size
        full = dev.permute(2, 0, 1)[None].float()  # BGR 0..255
        if output_size != dream_size:
            shrinking = dream_size[0] * dream_size[1] < ow * oh
            full = F.interpolate(full, size=(dream_size[1], dream_size[0]), mode="bilinear", align_corners=False,
                                 antialias=shrinking)
        return self.space.to_model(full.flip(1).div_(255.0))

    def compose_residual(self, residual: Tensor, mix: float, finite: Tensor | None = None) -> Composed:
        if self._cam_out is None or self.output_size is None:
            raise RuntimeError("compose() before upload() or keep_camera()")
        residual = residual * self._residual_scale(mix).view(1, 3, 1, 1)
        if self._flip_to_bgr:
            residual = residual.flip(1)
        ow, oh = self.output_size
        if residual.shape[-2:] != (oh, ow):
            residual = F.interpolate(residual, size=(oh, ow), mode="bilinear", align_corners=False)
        shown = self._buffers.get(("shown", self.output_size),
                                  lambda: torch.empty((oh, ow, 3), dtype=torch.uint8, device=self.device))
        # +0.5 then truncation: rounded to the nearest level, as OpenCV's add on the host path
        shown.copy_(residual[0].permute(1, 2, 0).add(self._cam_out).clamp_(0.0, 255.0).add_(0.5))
        if not self._cuda:
            # nothing is asynchronous here: take the frame now (``shown`` is reused next frame)
            return Composed(shown.to("cpu", copy=True), finite)
        ring = self._buffers.get(("download", self.output_size), lambda: _Ring(lambda: {
            "staging": torch.empty((oh, ow, 3), dtype=torch.uint8).pin_memory(),
            "finite": torch.empty((), dtype=torch.bool).pin_memory(),
            "composed": torch.cuda.Event(enable_timing=True), "done": torch.cuda.Event(enable_timing=True),
            "used": False}))
        slot = ring.take()
        slot["composed"].record()
        # The frame's one device-to-host copy, queued now and waited for in download(); the
        # finite flag rides along, so reading it afterwards costs no second wait.
        slot["staging"].copy_(shown, non_blocking=True)
        if finite is not None:
            slot["finite"].copy_(finite, non_blocking=True)
        slot["done"].record()
        return Composed(slot["staging"], slot["finite"] if finite is not None else None, slot["composed"],
                        slot["done"])

    def download(self, shown: Composed) -> np.ndarray:
        if shown.ready is not None:
            shown.ready.synchronize()  # this frame's copy only; later frames may already be queued
            # a new array: outputs keep frames, and the pinned slot is reused two frames on
            return shown.frame.numpy().copy()
        return shown.frame.numpy()


def make_compositor(space: InputSpace, device: torch.device) -> Compositor:
    """The compositor for ``device``: OpenCV on the host for the CPU, torch on the device otherwise."""
    return HostCompositor(space) if device.type == "cpu" else DeviceCompositor(space, device)
