"""Temporal feedback for the live loop (docs/architecture.md, "Two paces": the dreamer, step 2).

Per frame::

    small = flows.grey(camera_bgr)
    if flows.previous is not None and is_scene_cut(flows.previous, small):
        flows.reset(); feedback.reset()
    flow = flows.estimate(camera_bgr, grey=small, out_size=camera_x.shape[-2:])  # CPU, DIS
    x = feedback.start(camera_x, None if flow is None else flow_to_tensor(flow, device), k, bounds)
    dreamed = dreamer.dream(x, objective, settings)        # x = camera + k · warp(last residual)
    feedback.finish(camera_x, dreamed)                     # keeps decay · (dream − camera)

The camera stays sharp because only the *residual* (what the dream added) is carried from frame
to frame; warping it with the optical flow makes the hallucination follow motion instead of
smearing across it.

Flow convention, used everywhere in this module: **backward flow**. ``flow[y, x] = (dx, dy)``
says where the pixel ``(x, y)`` of the *current* frame was in the *previous* frame, i.e.
``previous[y + dy, x + dx] ≈ current[y, x]``. Sampling the previous frame (or anything aligned
with it, such as its dream residual) at ``(x + dx, y + dy)`` — which is what :func:`warp` does —
lines it up with the current frame. Vectors are in pixels of the image they are applied to.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from live.errors import UsageError

log = logging.getLogger(__name__)

PRESETS: dict[str, int] = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

SCENE_CUT_THUMB_WIDTH = 32  # pixels; small enough that a few pixels of motion blur away
DEFAULT_SCENE_CUT_THRESHOLD = 0.12  # mean |difference| as a fraction of full scale (see is_scene_cut)


# ----------------------------------------------------------------------------- optical flow
class FlowEstimator:
    """Dense backward optical flow between consecutive camera frames (OpenCV DIS, CPU).

    Frames are converted to grey and shrunk to ``width`` pixels wide (aspect kept; never
    enlarged) before DIS runs: flow is smooth, so the full resolution buys little but costs
    quadratically. The flow of the previous call seeds the next one, so steady motion is found
    with fewer coarse-to-fine corrections. See the module docstring for the flow convention.

    Not thread-safe: one estimator per capture thread.
    """

    def __init__(self, preset: str = "fast", width: int = 320, *, repeatable: bool = False) -> None:
        if preset not in PRESETS:
            raise UsageError(f"unknown optical-flow preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if not 16 <= width <= 4096:
            raise UsageError(f"optical-flow width must be between 16 and 4096 pixels, got {width}")
        self.preset = preset
        self.width = width
        # repeatable: a new DIS instance per frame, seeded only by the previous flow (which
        # state() saves), so a broken-off render resumes with the very same fields.
        self.repeatable = repeatable
        self._dis = cv2.DISOpticalFlow_create(PRESETS[preset])
        self._prev_grey: np.ndarray | None = None
        self._prev_flow: np.ndarray | None = None  # at the small size, in small-image pixels
        self.last_ms = 0.0  # wall time of the last estimate(), for the per-stage budget

    @property
    def previous(self) -> np.ndarray | None:
        """The small grey image of the last frame seen (``None`` after :meth:`reset`)."""
        return self._prev_grey

    def reset(self) -> None:
        """Forget the previous frame and flow: the next :meth:`estimate` starts afresh."""
        self._prev_grey = None
        self._prev_flow = None
        # A DIS instance keeps its last field in internal buffers and, measured with OpenCV 5,
        # starts from it even when calc() gets no initial flow; only a new instance forgets.
        self._dis = cv2.DISOpticalFlow_create(PRESETS[self.preset])

    def state(self) -> dict[str, np.ndarray | None]:
        """What the next :meth:`estimate` depends on (copies), for :meth:`restore`."""
        return {"grey": None if self._prev_grey is None else self._prev_grey.copy(),
                "flow": None if self._prev_flow is None else self._prev_flow.copy()}

    def restore(self, state: dict[str, np.ndarray | None]) -> None:
        """Continue from a :meth:`state` (exactly so with ``repeatable=True``)."""
        self.reset()
        self._prev_grey, self._prev_flow = state["grey"], state["flow"]

    def grey(self, frame: np.ndarray) -> np.ndarray:
        """The checked frame as the small uint8 grey image the flow is computed on."""
        frame = _check_frame(frame)
        if frame.ndim == 3:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        h, w = frame.shape
        if w <= self.width:
            return np.ascontiguousarray(frame)
        small_h = max(1, round(h * self.width / w))
        return cv2.resize(frame, (self.width, small_h), interpolation=cv2.INTER_AREA)

    def estimate(
        self,
        frame: np.ndarray,
        *,
        grey: np.ndarray | None = None,
        out_size: tuple[int, int] | None = None,
    ) -> np.ndarray | None:
        """Flow from the previous frame to ``frame``: float32 ``(H, W, 2)`` of ``(dx, dy)`` pixels.

        ``frame`` is uint8 BGR ``(H, W, 3)`` or grey ``(H, W)``. ``grey`` may pass the result of
        :meth:`grey` when the caller already made it (for :func:`is_scene_cut`). The field is
        returned at ``out_size = (height, width)`` — by default the frame's own size — with the
        vectors scaled to that size's pixels, so it can be applied to the dream directly.
        Returns ``None`` for the first frame after construction or :meth:`reset`.
        """
        t0 = time.perf_counter()
        if grey is None:
            grey = self.grey(frame)
        else:
            _check_frame(frame)
        out_h, out_w = out_size if out_size is not None else frame.shape[:2]
        prev = self._prev_grey
        self._prev_grey = grey
        if prev is None or prev.shape != grey.shape:
            if prev is not None:
                self.reset()
                self._prev_grey = grey
            self.last_ms = (time.perf_counter() - t0) * 1e3
            return None
        # calc(I0=current, I1=previous): for each pixel of the current frame, its position in the
        # previous one (the backward flow warp() needs). DIS uses a same-sized CV_32FC2 flow
        # argument as its initial estimate and overwrites it in place with the new field.
        if self.repeatable:
            self._dis = cv2.DISOpticalFlow_create(PRESETS[self.preset])
        small = self._dis.calc(grey, prev, self._prev_flow)
        self._prev_flow = small
        sh, sw = small.shape[:2]
        if (sh, sw) == (out_h, out_w):
            flow = small.copy()
        else:
            flow = cv2.resize(small, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
            # Vectors are lengths in pixels: they grow with the image, per axis.
            flow[..., 0] *= out_w / sw
            flow[..., 1] *= out_h / sh
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return flow


def _check_frame(frame: np.ndarray) -> np.ndarray:
    expected = "a uint8 BGR image (H, W, 3) or a uint8 grey image (H, W)"
    if not isinstance(frame, np.ndarray):
        raise UsageError(f"optical flow needs {expected}, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise UsageError(f"optical flow needs {expected}, got dtype {frame.dtype} (scale to 0..255 and convert)")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[..., 0]
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)) or min(frame.shape[:2]) < 2:
        raise UsageError(f"optical flow needs {expected}, got shape {tuple(frame.shape)}")
    return frame


def is_scene_cut(
    prev_grey_small: np.ndarray, cur_grey_small: np.ndarray, threshold: float = DEFAULT_SCENE_CUT_THRESHOLD
) -> bool:
    """Whether two consecutive (small, grey uint8) frames belong to different scenes.

    Choice: the mean absolute difference of ~32-pixel-wide thumbnails, after removing each
    thumbnail's mean brightness, as a fraction of full scale. Shrinking to a thumbnail averages
    away the few pixels a pan or shake moves between frames (a histogram would ignore motion too,
    but also misses a cut between two scenes with similar tones), and removing the mean keeps
    auto-exposure and lights dimming from counting as cuts. It costs microseconds. A change of
    size is always a cut. ``threshold`` ≈ 0.12 separates real pans from real cuts (tests).
    """
    return change_score(prev_grey_small, cur_grey_small) > threshold


def change_score(prev_grey_small: np.ndarray, cur_grey_small: np.ndarray) -> float:
    """How different two consecutive frames look, 0 (same) upwards; infinite for a size change.

    The measure :func:`is_scene_cut` thresholds; also the motion measure of the idle mode
    (a still room scores ~0.00x, a person walking through ~0.02-0.05, a cut > 0.12).
    """
    if prev_grey_small.shape != cur_grey_small.shape:
        return math.inf
    a, b = _thumbnail(prev_grey_small), _thumbnail(cur_grey_small)
    a -= a.mean()
    b -= b.mean()
    return float(np.abs(a - b).mean())


def _thumbnail(grey: np.ndarray) -> np.ndarray:
    if grey.ndim == 3:
        grey = cv2.cvtColor(grey, cv2.COLOR_BGR2GRAY)
    h, w = grey.shape
    if w > SCENE_CUT_THUMB_WIDTH:
        size = (SCENE_CUT_THUMB_WIDTH, max(1, round(h * SCENE_CUT_THUMB_WIDTH / w)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return grey.astype(np.float32) / 255.0


# ----------------------------------------------------------------------------- warping on device
class _GridCache:
    """Small LRU of sampling grids keyed by (shape, device, dtype, ...), safe across threads.

    A grid is made once per size, not per frame; the LRU bound keeps a camera that changes
    resolution from leaking grids. On CUDA each stream gets its own copy (the dreamer and the
    presenter each have a stream; docs/architecture.md, "Two paces"): a grid is copied up
    asynchronously on the stream that first asks, so only that stream's order guarantees it is
    there, and only there is its memory safe from reuse while it is read.
    """

    def __init__(self, size: int = 8) -> None:
        self._grids: OrderedDict[tuple, Tensor] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple, make: Callable[[], Tensor], device: torch.device | None = None) -> Tensor:
        if device is not None and device.type == "cuda":
            key = (*key, torch.cuda.current_stream(device).stream_id)
        with self._lock:
            grid = self._grids.get(key)
            if grid is not None:
                self._grids.move_to_end(key)
                return grid
        grid = make()
        with self._lock:
            self._grids[key] = grid
            while len(self._grids) > self._size:
                self._grids.popitem(last=False)
        return grid


_BASE_GRIDS = _GridCache()
_AFFINE_GRIDS = _GridCache()


def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    def make() -> Tensor:
        # float64 then one rounding, so every coordinate is the float nearest the pixel centre.
        ys = torch.linspace(-1.0, 1.0, h, dtype=torch.float64) if h > 1 else torch.zeros(1, dtype=torch.float64)
        xs = torch.linspace(-1.0, 1.0, w, dtype=torch.float64) if w > 1 else torch.zeros(1, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return to_device(grid[None].to(dtype), device)

    return _BASE_GRIDS.get((h, w, device, dtype), make, device)


def warp(image: Tensor, flow: Tensor) -> Tensor:
    """Sample ``image`` (N, C, H, W) at ``pixel + flow`` (bilinear, border padding), on its device.

    ``flow`` is (N or 1, 2, H, W) in pixels, channel 0 = dx, 1 = dy, backward convention (module
    docstring): warping the previous frame's content by the flow lines it up with the current
    frame. Pixels whose flow is exactly zero keep their value exactly.
    """
    if image.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[-2:] != image.shape[-2:]:
        raise UsageError(
            f"warp needs an image (N, C, H, W) and a flow (N, 2, H, W) of the same H, W; "
            f"got {tuple(image.shape)} and {tuple(flow.shape)}"
        )
    h, w = image.shape[-2:]
    base = _base_grid(h, w, image.device, image.dtype)
    # Pixels to normalised units for align_corners=True: the corners -1 and 1 are pixel centres
    # 0 and n-1. The grid is the only per-frame allocation (grid_sample needs it).
    fx = flow.to(image.dtype).permute(0, 2, 3, 1)
    grid = torch.addcmul(base, fx, _pixel_scale(h, w, image.device, image.dtype))
    if grid.shape[0] != image.shape[0]:
        grid = grid.expand(image.shape[0], -1, -1, -1)  # one flow for the whole batch
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    # grid_sample unnormalises in float32, where ((c + 1) / 2) · (n − 1) lands up to ~1e-5 px off
    # the pixel centre for most n (no float c maps back exactly). Where the flow is exactly zero
    # the input is passed through, so a still camera cannot slowly blur a fed-back residual. This
    # is a device-side select, not a host check, so it never waits for the GPU.
    still = (flow == 0).all(dim=1, keepdim=True)
    return torch.where(still, image, out)


def _pixel_scale(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    def make() -> Tensor:
        return to_device(torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=dtype), device)

    return _BASE_GRIDS.get(("scale", h, w, device, dtype), make, device)


def flow_to_tensor(flow: np.ndarray, device: torch.device | str) -> Tensor:
    """A flow field ``(H, W, 2)`` from :meth:`FlowEstimator.estimate` as a (1, 2, H, W) float32 tensor on ``device``.

    On CUDA the copy goes through pinned memory without blocking, so the host does not wait for
    the GPU's previous frame.
    """
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise UsageError(f"a flow field is (H, W, 2) of (dx, dy); got shape {tuple(flow.shape)}")
    host = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1)[None]
    return to_device(host, torch.device(device))


def to_device(host: Tensor, device: torch.device) -> Tensor:
    """A host tensor, contiguous, on ``device`` without waiting for the device's queued work: on
    CUDA through pinned memory, asynchronously on the current stream (a plain copy from pageable
    memory waits for the whole stream: on the dreamer's, the dream in flight). The pinned block comes from PyTorch's caching
    host allocator, which hands it out again only once its copy has run."""
    if device.type == "cuda":
        pinned = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
        pinned.copy_(host)  # one host copy, laying out a permuted view as it goes
        return pinned.to(device, non_blocking=True)
    return host.contiguous().to(device)


# ----------------------------------------------------------------------------- feedback
class TemporalFeedback:
    """Carries the dream residual (dream − camera, model space, on device) from frame to frame.

    ``start`` gives the image to dream on: ``camera + feedback · warp(residual, flow)``;
    ``finish`` keeps ``decay · (dreamed − camera)`` for the next frame.

    Why this converges on a static scene instead of running to saturated colour: each frame's
    dream adds a bounded amount ``d`` (the ascent takes ``steps`` normalised steps of
    ``step_size`` grey levels), so the residual follows ``r ← decay · (feedback · r + d)``. With
    ``decay · feedback < 1`` that is a contraction whose fixed point ``decay · d / (1 − decay ·
    feedback)`` is finite (10·d at feedback 1 and decay 0.9). Without the decay, feedback 1 would
    add ``d`` every frame forever and only the clamp to valid pixels would stop it.
    """

    def __init__(self, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise UsageError(f"feedback decay must be at least 0 and below 1 (1 would never forget), got {decay}")
        self.decay = decay
        self._residual: Tensor | None = None

    @property
    def active(self) -> bool:
        """Whether a residual from the previous frame is held."""
        return self._residual is not None

    def reset(self) -> None:
        """Drop the residual (scene cut, or the operator's 'reset'): the next frame starts clean."""
        self._residual = None

    @property
    def residual(self) -> Tensor | None:
        """The carried residual (None when there is none); assign to continue from a saved one."""
        return self._residual

    @residual.setter
    def residual(self, value: Tensor | None) -> None:
        self._residual = value

    def start(
        self,
        camera_x: Tensor,
        flow: Tensor | None,
        feedback: float,
        bounds: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """The image to dream on for this frame (same shape as ``camera_x``, model space).

        ``flow`` (1 or N, 2, H, W) warps the previous residual onto this frame; ``None`` adds it
        unwarped. ``bounds = (lo, hi)`` (e.g. ``InputSpace.bounds``) clamps the result to valid
        pixels. Returns ``camera_x`` itself when there is nothing to add.
        """
        if not 0.0 <= feedback <= 1.0:
            raise UsageError(f"feedback must be between 0 and 1, got {feedback}")
        r = self._residual
        if r is not None and (r.shape != camera_x.shape or r.device != camera_x.device):
            log.debug("frame shape changed %s -> %s: temporal feedback reset", tuple(r.shape), tuple(camera_x.shape))
            self.reset()
            r = None
        if r is None or feedback == 0.0:
            return camera_x
        if flow is not None:
            r = warp(r, flow)
        x = torch.add(camera_x, r, alpha=feedback)
        if bounds is not None:
            x = torch.maximum(torch.minimum(x, bounds[1]), bounds[0])
        return x

    def finish(self, camera_x: Tensor, dreamed: Tensor) -> None:
        """Keep this frame's residual, ``decay · (dreamed − camera_x)``, for the next :meth:`start`."""
        if dreamed.shape != camera_x.shape:
            raise UsageError(f"dreamed {tuple(dreamed.shape)} and camera {tuple(camera_x.shape)} differ in shape")
        self._residual = (dreamed - camera_x).mul_(self.decay).detach()


def mix(dreamed: Tensor, camera_x: Tensor, mix: float) -> Tensor:
    """Blend for display: 0 shows the camera, 1 the dream, in between a straight blend."""
    if not 0.0 <= mix <= 1.0:
        raise UsageError(f"mix must be between 0 and 1, got {mix}")
    return torch.lerp(camera_x, dreamed, mix)


def carry(
    feedback: TemporalFeedback,
    camera_x: Tensor,
    flow: Tensor | None,
    amount: float,
    bounds: tuple[Tensor, Tensor],
    zoom: float = 0.0,
    rotate_deg: float = 0.0,
    drift_xy: tuple[float, float] = (0.0, 0.0),
) -> Tensor:
    """The image a frame dreams on, as the live loop and ``render`` both make it: the carried
    dream warped onto ``camera_x`` (:meth:`TemporalFeedback.start`), then, for the endless
    zoom, what it carried over (not the camera) moved by ``zoom`` (0: none), ``rotate_deg`` and
    ``drift_xy``, clamped to ``bounds = (lo, hi)``."""
    x = feedback.start(camera_x, flow, amount, bounds)
    if zoom or rotate_deg or drift_xy[0] or drift_xy[1]:
        moved = zoom_rotate_drift(x - camera_x, 1.0 + zoom, rotate_deg, drift_xy)
        x = torch.maximum(torch.minimum(camera_x + moved, bounds[1]), bounds[0])
    return x


def zoom_rotate_drift(
    x: Tensor, zoom: float = 1.0, rotate_deg: float = 0.0, drift_xy: tuple[float, float] = (0.0, 0.0)
) -> Tensor:
    """Move the picture about its centre, on its device: the classic endless-zoom transform.

    ``zoom`` > 1 magnifies, ``rotate_deg`` > 0 turns the picture counter-clockwise as seen on
    screen, ``drift_xy`` moves it by (dx, dy) pixels (right, down). Applied to the dream before
    it is fed back, repeated every frame, it gives an endless zoom/spin/drift. Edges are filled
    by repeating the border. The sampling grid is cached for the last few (size, parameters).
    """
    if zoom <= 0:
        raise UsageError(f"zoom must be positive, got {zoom}")
    if zoom == 1.0 and rotate_deg == 0.0 and drift_xy[0] == 0.0 and drift_xy[1] == 0.0:
        return x
    n, _, h, w = x.shape
    key = (n, h, w, x.device, x.dtype, float(zoom), float(rotate_deg), float(drift_xy[0]), float(drift_xy[1]))

    def make() -> Tensor:
        # Content at input pixel u (centred coordinates, y down) shows at output z·R·u + d, so the
        # output pixel u samples the input at R⁻¹(u − d)/z. R turns counter-clockwise on screen,
        # which with y pointing down is [[cos, sin], [−sin, cos]]; its inverse is the transpose.
        a = math.radians(rotate_deg)
        cos, sin = math.cos(a), math.sin(a)
        m = np.array([[cos, -sin], [sin, cos]], dtype=np.float64) / zoom
        t = -m @ np.asarray(drift_xy, dtype=np.float64)
        # affine_grid works in normalised units (align_corners=False: x_n = 2u / w), so
        # theta = S · M · S⁻¹ with S = diag(2/w, 2/h), translation S · t.
        s = np.array([2.0 / w, 2.0 / h])
        theta = np.zeros((2, 3))
        theta[:, :2] = (s[:, None] * m) / s[None, :]
        theta[:, 2] = s * t
        th = torch.tensor(theta, dtype=torch.float64)[None].expand(n, 2, 3)
        return to_device(F.affine_grid(th, [n, 1, h, w], align_corners=False).to(x.dtype), x.device)

    grid = _AFFINE_GRIDS.get(key, make, x.device)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
