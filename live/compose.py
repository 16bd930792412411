"""The frame path at two resolutions: outputs at the output size, the dream at its own.

The outputs (window, virtual camera, recording) run at the *output size*: the source's own
resolution unless the operator names one. The dream runs at the *dream size* (a multiple of 32,
what the governor and ``calibrate`` trim). Per frame (docs/architecture.md, "Two paces" and
"Frame budget")::

    cam = compositor.upload(bgr, output_size, dream_size)  # the camera at the dream size, model space
    ...feedback and the dream, at the dream size...
    shown = compositor.compose(cam, dreamed, mix)          # camera at full size + mix · upsampled residual
    picture = compositor.download(shown)                   # BGR uint8 at the output size, a new array

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

Buffers are cached per size (a camera that changes resolution gets new ones, an LRU keeps a
handful). The shown frame itself is a new array every frame: outputs keep frames (a recorder's
queue, freeze, screenshots), so it cannot be a reused buffer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
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


class Compositor:
    """Camera frame in at the output size, dream at the dream size, shown frame out at the output size.

    Not thread-safe: the frame loop's thread only.
    """

    def __init__(self, space: InputSpace, device: torch.device) -> None:
        self.space = space
        self.device = device
        self._buffers = _Buffers()
        self.output_size: Size | None = None  # of the frame uploaded last
        # Grey levels per model unit for each model channel, and the model channels in BGR order.
        like = torch.zeros(1, 3, 1, 1, device=device)
        self._levels = (1.0 / space.per_grey_level(like)).view(3)
        self._to_bgr = [0, 1, 2] if space.bgr else [2, 1, 0]

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

    def compose(self, cam: Tensor, dreamed: Tensor, mix: float) -> Any:
        """The shown frame: the uploaded camera at the output size plus ``mix`` times the upsampled
        residual ``dreamed - cam``. Returns what :meth:`download` takes."""
        return self.compose_residual(dreamed - cam, mix)

    def compose_residual(self, residual: Tensor, mix: float) -> Any:
        """The shown frame: the kept camera at the output size plus ``mix`` times ``residual``
        (model space, (1, 3, dream h, dream w)) upsampled. Returns what :meth:`download` takes."""
        raise NotImplementedError

    def download(self, shown: Any) -> np.ndarray:
        """The shown frame as a new (H, W, 3) uint8 BGR array at the output size."""
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

    def compose(self, cam: Tensor, dreamed: Tensor, mix: float) -> np.ndarray:
        dh, dw = cam.shape[-2:]
        diff = self._buffers.get(("diff", dw, dh), lambda: torch.empty(3, dh, dw))
        torch.sub(dreamed[0], cam[0], out=diff)
        return self.compose_residual(diff[None], mix)

    def compose_residual(self, residual: Tensor, mix: float) -> np.ndarray:
        return self.compose_levels(self.levels(residual, mix, self._buffers.get(
            ("residual", residual.shape[-1], residual.shape[-2]),
            lambda: np.empty((residual.shape[-2], residual.shape[-1], 3), np.float32))))

    def levels(self, residual: Tensor, mix: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
        """``mix`` times ``residual`` (model space, (1, 3, h, w)) in BGR grey levels, laid out
        (h, w, 3) float32 for OpenCV (into ``out`` when given): what :meth:`compose_levels` adds.
        The presenter converts a dream once and moves it onto many camera frames in this form."""
        diff = residual[0]
        dh, dw = diff.shape[-2:]
        levels = np.empty((dh, dw, 3), np.float32) if out is None else out
        planes = torch.from_numpy(levels).permute(2, 0, 1)
        scale = self._residual_scale(mix)
        for out_c, model_c in enumerate(self._to_bgr):
            torch.mul(diff[model_c], scale[model_c], out=planes[out_c])
        return levels

    def compose_levels(self, levels: np.ndarray) -> np.ndarray:
        """The kept camera frame plus ``levels`` ((h, w, 3) float32 BGR grey levels, any size)
        upsampled to the output size: a new uint8 frame."""
        if self._cam_out is None or self.output_size is None:
            raise RuntimeError("compose() before upload()")
        dh, dw = levels.shape[:2]
        ow, oh = self.output_size
        if (ow, oh) != (dw, dh):
            up = self._buffers.get(("up", ow, oh), lambda: np.empty((oh, ow, 3), np.float32))
            levels = cv2.resize(levels, (ow, oh), dst=up, interpolation=cv2.INTER_LINEAR)
        shown = np.empty((oh, ow, 3), np.uint8)
        # uint8 + float32 -> uint8: rounded and saturated at 0 and 255, i.e. clamped to valid pixels
        cv2.add(self._cam_out, levels, dst=shown, dtype=cv2.CV_8U)
        return shown

    def download(self, shown: np.ndarray) -> np.ndarray:
        return shown


class DeviceCompositor(Compositor):
    """The GPU path: one pinned upload of the full-size frame, resizes and the add on the device,
    one download of the shown frame. Also runs on CPU tensors (the tests compare it with
    :class:`HostCompositor` there)."""

    def __init__(self, space: InputSpace, device: torch.device) -> None:
        super().__init__(space, device)
        self._cam_out: Tensor | None = None

    def keep_camera(self, bgr: np.ndarray, output_size: Size) -> None:
        self._keep(bgr, output_size)

    def _keep(self, bgr: np.ndarray, output_size: Size) -> Tensor:
        host = torch.from_numpy(np.ascontiguousarray(self._at_output_size(bgr, output_size)))
        ow, oh = output_size
        if self.device.type == "cuda":
            pinned = self._buffers.get(("pinned", output_size),
                                       lambda: torch.empty((oh, ow, 3), dtype=torch.uint8).pin_memory())
            # Safe to overwrite: the last copy from it finished before the last download returned.
            pinned.copy_(host)
            dev = self._buffers.get(("cam", output_size),
                                    lambda: torch.empty((oh, ow, 3), dtype=torch.uint8, device=self.device))
            dev.copy_(pinned, non_blocking=True)
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

    def compose_residual(self, residual: Tensor, mix: float) -> Tensor:
        if self._cam_out is None or self.output_size is None:
            raise RuntimeError("compose() before upload()")
        residual = residual * self._residual_scale(mix).view(1, 3, 1, 1)
        residual = residual[:, self._to_bgr]
        ow, oh = self.output_size
        if residual.shape[-2:] != (oh, ow):
            residual = F.interpolate(residual, size=(oh, ow), mode="bilinear", align_corners=False)
        shown = self._buffers.get(("shown", self.output_size),
                                  lambda: torch.empty((oh, ow, 3), dtype=torch.uint8, device=self.device))
        # +0.5 then truncation: rounded to the nearest level, as OpenCV's add on the host path
        shown.copy_(residual[0].permute(1, 2, 0).add(self._cam_out).clamp_(0.0, 255.0).add_(0.5))
        return shown

    def download(self, shown: Tensor) -> np.ndarray:
        # The one device-to-host copy; on the CPU a copy too, since ``shown`` is a reused buffer.
        if self.device.type != "cuda":
            return shown.to("cpu", copy=True).numpy()
        # On CUDA through a pinned buffer, waiting on an event recorded after this frame's compose:
        # the caller waits for its own stream's work only, never for a dream running on another
        # stream, and makes no stream-wide synchronisation (docs/architecture.md, "Two paces").
        host = self._buffers.get(("pinned-shown", tuple(shown.shape)),
                                 lambda: torch.empty(tuple(shown.shape), dtype=torch.uint8).pin_memory())
        host.copy_(shown, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        done.synchronize()
        return host.numpy().copy()


def make_compositor(space: InputSpace, device: torch.device) -> Compositor:
    """The compositor for ``device``: OpenCV on the host for the CPU, torch on the device otherwise."""
    return HostCompositor(space) if device.type == "cpu" else DeviceCompositor(space, device)
