"""Carrying the newest dream onto a newer camera frame (docs/architecture.md, "Two paces").

The dream is slower than the camera, so the frame shown is usually newer than the frame the
newest dream was made on. What the dream *changed* (its residual, dream − camera, at the dream
size) is moved along the optical flow from the dreamed frame to the shown one, as a VR runtime
reprojects a late frame along motion vectors, and laid on the shown camera frame by the
compositor as usual. Where the flow cannot be trusted the residual fades out instead of being
smeared: the forward-backward check (Sundaram et al. 2010, as Ruder et al. 2016 use it) fails
where a pixel of the shown frame was hidden in the dreamed one (disocclusion), at motion
boundaries, and where the flow points outside the picture.

Two ways to get the flow from the shown frame back to the dreamed one, both on the small grey
images the show's flow already uses (:class:`FlowEstimator`'s size):

- ``direct``: DIS between the two frames themselves, both ways, each seeded with the field of
  the previous shown frame while the dream stays the same.
- ``accumulated``: DIS between consecutive camera frames, both ways, chained from the dreamed
  frame to the shown one (each step samples the chain so far along the newest step), the
  check's verdicts multiplied along the chain.

``bench/two_paces.py`` compares their cost and accuracy; ``direct`` is the default (README,
*Two paces*).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from live.errors import UsageError
from live.handoff import Dream, Shot
from live.temporal import PRESETS, to_device, warp

log = logging.getLogger(__name__)

METHODS = ("direct", "accumulated")
# Forward-backward check (Sundaram et al. 2010): |b + f(p + b)|² > ALPHA (|b|² + |f(p + b)|²) + BETA,
# in pixels of the small flow image.
FB_ALPHA = 0.01
FB_BETA = 0.5
COVERAGE = 0.5  # of a pixel's worth of the dreamed frame landing on a shown pixel (bilinear splat)
PHOTO_TOLERANCE = 6.0  # grey levels (of 255) a carried pixel may differ by, camera noise and all
PHOTO_SLACK_PX = 0.5  # and the difference a flow off by this much makes at an edge
SAME = np.zeros((0, 0, 3), np.float32)  # Reprojector.field's answer for the dreamed frame itself
HISTORY = 240  # consecutive steps kept for ``accumulated`` (8 s at 30 fps: older dreams are not carried)


@dataclass
class _Chain:
    """The accumulated flow from the newest observed frame back to a dreamed frame."""

    dream: int  # the dream's number
    upto: int  # the sequence of the last frame chained in
    back: np.ndarray | None  # (h, w, 2) backward flow to the dreamed frame; None: the same frame
    valid: np.ndarray | None  # (h, w) float32, 1 where every step's check passed


class Reprojector:
    """Moves a dream's residual onto a newer camera frame of the same scene, at the dream size.

    Call :meth:`observe` with every camera frame the presenter takes (in order), then
    :meth:`carry` for the frame to show. Not thread-safe: the presenter's thread only.
    ``host_remap``: a residual on the CPU is moved with OpenCV (:meth:`move`); False moves it with
    ``grid_sample`` as on a GPU (the CPU rehearsal of the CUDA path, tests/test_frame_path.py).
    """

    def __init__(self, preset: str = "fast", method: str = "direct", *, host_remap: bool = True) -> None:
        if preset not in PRESETS:
            raise UsageError(f"unknown optical-flow preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if method not in METHODS:
            raise UsageError(f"unknown reprojection method {method!r}; choose one of {', '.join(METHODS)}")
        self.preset, self.method, self.host_remap = preset, method, host_remap
        self.flow_ms = 0.0  # summed wall time of flow and check, for the per-stage budget
        self._grids: dict[tuple[int, int], np.ndarray] = {}
        # direct: fields of the last carry, seeds for the next while the dream is the same
        self._direct_key: int | None = None
        self._seed_back: np.ndarray | None = None
        self._seed_fwd: np.ndarray | None = None
        self._dis_back = self._dis_fwd = None
        # accumulated: the steps between consecutive observed frames
        self._previous: Shot | None = None
        self._steps: deque[tuple[int, int, np.ndarray, np.ndarray]] = deque(maxlen=HISTORY)
        self._step_dis = (self._new_dis(), self._new_dis())
        self._step_seeds: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        self._chain: _Chain | None = None

    def _new_dis(self):
        return cv2.DISOpticalFlow_create(PRESETS[self.preset])

    def reset(self) -> None:
        """Forget every field (a scene cut or reset: the next frames start afresh)."""
        self._direct_key = None
        self._seed_back = self._seed_fwd = None
        self._previous = None
        self._steps.clear()
        self._step_dis = (self._new_dis(), self._new_dis())
        self._step_seeds = (None, None)
        self._chain = None

    # ----- every camera frame
    def observe(self, shot: Shot) -> None:
        """A camera frame the presenter took. ``accumulated`` measures the step from the last one."""
        if self.method != "accumulated":
            return
        prev, self._previous = self._previous, shot
        if prev is None or prev.epoch != shot.epoch or prev.grey.shape != shot.grey.shape:
            self._steps.clear()
            self._step_seeds = (None, None)
            self._chain = None
            return
        t0 = time.perf_counter()
        dis_back, dis_fwd = self._step_dis
        back = dis_back.calc(shot.grey, prev.grey, self._step_seeds[0])
        fwd = dis_fwd.calc(prev.grey, shot.grey, self._step_seeds[1])
        self._step_seeds = (back.copy(), fwd.copy())
        self._steps.append((prev.sequence, shot.sequence, back, fwd))
        self.flow_ms += (time.perf_counter() - t0) * 1e3

    # ----- the frame to show
    def field(self, dream: Dream, shot: Shot) -> np.ndarray | None:
        """How to move ``dream``'s residual onto ``shot``'s frame at the dream size: (dh, dw, 3)
        float32, the backward flow in dream pixels and the weight to keep (0 where the flow
        cannot be trusted). None when the residual cannot be carried (none, another scene, too
        old); :data:`SAME` when ``shot`` is the dreamed frame itself."""
        residual = dream.residual
        if residual is None or dream.shot.epoch != shot.epoch or dream.shot.grey.shape != shot.grey.shape:
            return None
        if dream.shot.sequence == shot.sequence:
            return SAME
        t0 = time.perf_counter()
        try:
            if self.method == "direct":
                back, valid = self._direct(dream, shot)
            else:
                got = self._accumulated(dream, shot)
                if got is None:
                    return None
                back, valid = got
            return self._at_dream_size(back, fade_weight(valid), residual.shape[-2:])
        finally:
            self.flow_ms += (time.perf_counter() - t0) * 1e3

    def move(self, planes: np.ndarray, field: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """``planes`` ((dh, dw, C) float32 on the host, aligned with the dreamed frame) moved along
        ``field`` and faded by its weight times ``scale``: OpenCV's remap, about a third of
        ``grid_sample``'s time on the CPU, on OpenCV's threads rather than the dream's OpenMP team."""
        where = self._grid(planes.shape[:2]) + field[..., :2]
        moved = cv2.remap(planes, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        weight = field[..., 2:3] if scale == 1.0 else field[..., 2:3] * np.float32(scale)
        moved *= weight
        return moved

    def carry(self, dream: Dream, shot: Shot) -> Tensor | None:
        """``dream``'s residual moved onto ``shot``'s frame and faded where the flow is unreliable:
        (1, 3, dream h, dream w) on the residual's device. The residual itself when ``shot`` is the
        dreamed frame; None when it cannot be carried (another scene, another size, too old)."""
        residual = dream.residual
        field = self.field(dream, shot)
        if field is None or residual is None:
            return None
        if field is SAME:
            return residual
        if self.host_remap and residual.device.type == "cpu" and residual.dtype == torch.float32:
            planes = np.ascontiguousarray(residual[0].permute(1, 2, 0).numpy())
            return torch.from_numpy(self.move(planes, field)).permute(2, 0, 1)[None]
        # one copy up, asynchronous on CUDA (pinned memory; never a wait on the presenter's path)
        dev = to_device(torch.from_numpy(field).permute(2, 0, 1)[None], residual.device)
        flow_t, weight_t = dev[:, :2], dev[:, 2:]
        return warp(residual, flow_t).mul_(weight_t.to(residual.dtype))

    def _direct(self, dream: Dream, shot: Shot) -> tuple[np.ndarray, np.ndarray]:
        if self._direct_key != dream.number:
            # A new dreamed frame: fresh instances (DIS keeps its last field inside and starts
            # from it; live/temporal.py, FlowEstimator.reset), no seeds.
            self._direct_key = dream.number
            self._dis_back, self._dis_fwd = self._new_dis(), self._new_dis()
            self._seed_back = self._seed_fwd = None
        back = self._dis_back.calc(shot.grey, dream.shot.grey, self._seed_back)
        fwd = self._dis_fwd.calc(dream.shot.grey, shot.grey, self._seed_fwd)
        self._seed_back, self._seed_fwd = back.copy(), fwd.copy()
        return back, reliable(back, fwd, shot.grey, dream.shot.grey, self._grid(back.shape[:2]))

    def _accumulated(self, dream: Dream, shot: Shot) -> tuple[np.ndarray, np.ndarray] | None:
        chain = self._chain
        if chain is None or chain.dream != dream.number or chain.upto > shot.sequence:
            chain = _Chain(dream.number, dream.shot.sequence, None, None)
        for start, end, back, fwd in self._steps:
            if start != chain.upto or end > shot.sequence:
                continue
            grid = self._grid(back.shape[:2])
            ok = agree(back, fwd, grid) * covered(fwd, grid)
            if chain.back is None or chain.valid is None:
                chain.back, chain.valid = back.copy(), ok
            else:
                # the chain so far, sampled where the newest step says each pixel came from
                where = grid + back
                chain.back = back + cv2.remap(chain.back, where, None, cv2.INTER_LINEAR,
                                              borderMode=cv2.BORDER_REPLICATE)
                chain.valid = ok * cv2.remap(chain.valid, where, None, cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
            chain.upto = end
        self._chain = chain
        if chain.back is None or chain.valid is None or chain.upto != shot.sequence:
            return None  # a step is missing: the dreamed frame was not observed, or is too old
        return chain.back, chain.valid * alike(chain.back, shot.grey, dream.shot.grey, self._grid(chain.back.shape[:2]))

    def _grid(self, shape: tuple[int, int]) -> np.ndarray:
        grid = self._grids.get(shape)
        if grid is None:
            grid = self._grids[shape] = pixel_grid(*shape)
        return grid

    @staticmethod
    def _at_dream_size(back: np.ndarray, weight: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """(dh, dw, 3): the backward flow in dream-size pixels and the fade weight, one array so
        it crosses to the device in one copy."""
        dh, dw = int(size[0]), int(size[1])
        sh, sw = back.shape[:2]
        small = np.dstack([back, weight])
        if (sh, sw) == (dh, dw):
            return np.ascontiguousarray(small)
        field = cv2.resize(small, (dw, dh), interpolation=cv2.INTER_LINEAR)
        field[..., 0] *= dw / sw  # vectors are lengths: they grow with the picture, per axis
        field[..., 1] *= dh / sh
        return field


def pixel_grid(height: int, width: int) -> np.ndarray:
    """(height, width, 2) float32: each pixel's own (x, y), what a flow is added to for a map."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return np.dstack([xs, ys])


def reliable(back: np.ndarray, fwd: np.ndarray, now: np.ndarray, then: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """1.0 where the flow from the shown frame ``now`` back to the dreamed frame ``then`` (small grey
    images) can carry the dream, else 0.0; (h, w) float32. ``grid``: :func:`pixel_grid` of their
    size. Each check answers a known failure: :func:`agree` (occlusions, motion boundaries),
    :func:`covered` (a region just uncovered, over which a smooth flow field drags the occluder's
    motion so that the forward-backward check passes), :func:`alike` (a match that does not look
    like the picture) and the flow pointing outside the picture."""
    where = grid + back
    return agree(back, fwd, grid, where) * covered(fwd, grid) * alike(back, now, then, grid, where)


def covered(fwd: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """1.0 where some pixel of the dreamed frame lands, moved along the forward flow ``fwd``
    (to the nearest pixel, counted over 3x3); 0.0 where none does: what was hidden then (a
    disocclusion), whatever the backward flow says."""
    h, w = fwd.shape[:2]
    lands = (grid + fwd + 0.5).astype(np.int32).reshape(-1, 2)
    x, y = lands[:, 0], lands[:, 1]
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    hits = np.bincount(y[keep] * w + x[keep], minlength=h * w).astype(np.float32).reshape(h, w)
    return (cv2.blur(hits, (3, 3)) >= COVERAGE).astype(np.float32)


def agree(back: np.ndarray, fwd: np.ndarray, grid: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """The forward-backward check (Sundaram et al. 2010): 1.0 where the backward flow ``back``
    (now → then) and the forward flow ``fwd`` (then → now), sampled where ``back`` points, cancel."""
    where = grid + back if where is None else where
    fwd_there = cv2.remap(fwd, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    total = back + fwd_there
    err = np.einsum("ijk,ijk->ij", total, total)
    tol = FB_ALPHA * (np.einsum("ijk,ijk->ij", back, back) + np.einsum("ijk,ijk->ij", fwd_there, fwd_there)) + FB_BETA
    return (err <= tol).astype(np.float32)


def alike(back: np.ndarray, now: np.ndarray, then: np.ndarray, grid: np.ndarray,
          where: np.ndarray | None = None) -> np.ndarray:
    """1.0 where ``then`` sampled along ``back`` looks like ``now`` (the mean brightness difference
    removed, so an exposure change does not count) and ``back`` points inside the picture."""
    h, w = back.shape[:2]
    where = grid + back if where is None else where
    seen = cv2.remap(then, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    diff = cv2.subtract(seen, now, dtype=cv2.CV_32F)
    diff -= float(diff.mean())
    # A flow off by a fraction of a pixel differs by that fraction of the local gradient: edges may
    # differ more than flat parts (Sobel is 8x the gradient per pixel; the slack is in pixels).
    slope = cv2.add(np.abs(cv2.Sobel(now, cv2.CV_32F, 1, 0)), np.abs(cv2.Sobel(now, cv2.CV_32F, 0, 1)))
    allowed = cv2.blur(slope, (3, 3)) * (PHOTO_SLACK_PX / 8.0) + PHOTO_TOLERANCE
    close = np.abs(cv2.blur(diff, (3, 3))) <= allowed
    x, y = where[..., 0], where[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return (close & inside).astype(np.float32)


def fade_weight(valid: np.ndarray) -> np.ndarray:
    """How much of the carried residual to keep per pixel: the checks' verdict with the failures
    grown by one pixel (bilinear sampling reaches one pixel across) and softened, so a failed
    region gets no residual at all and its border no hard seam."""
    grown = cv2.erode(valid, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return cv2.blur(grown, (3, 3), borderType=cv2.BORDER_REPLICATE) * grown
