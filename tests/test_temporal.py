"""Temporal feedback: optical flow finds real motion, warping matches OpenCV, the fed-back dream
follows a pan more steadily than independent frames, a static scene settles instead of
saturating, and scene cuts and bad frames are caught."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from live.backends.torch_backend import TorchBackend
from live.dreamer import Dreamer, DreamSettings
from live.errors import UsageError
from live.objectives import Objective
from live.temporal import (
    FlowEstimator,
    TemporalFeedback,
    flow_to_tensor,
    is_scene_cut,
    mix,
    warp,
    zoom_rotate_drift,
)
from tests.conftest import photo_path

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bgr(photo: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)


def _epe(flow: np.ndarray, dx: float, dy: float, margin: int = 20) -> float:
    """Mean end-point error against a constant flow, over an interior crop (edges have no match)."""
    c = flow[margin:-margin, margin:-margin]
    return float(np.hypot(c[..., 0] - dx, c[..., 1] - dy).mean())


def _pan(
    image: np.ndarray, frames: int, step: int, height: int, width: int, top: int = 100, left: int = 40
) -> list[np.ndarray]:
    """A camera panning right by ``step`` px per frame: crops sliding across a still picture."""
    return [image[top : top + height, left + step * k : left + step * k + width].copy() for k in range(frames)]


# ----------------------------------------------------------------------------- optical flow
@pytest.mark.parametrize("preset", ["ultrafast", "fast", "medium"])
def test_flow_recovers_a_known_shift_of_a_photograph(bgr: np.ndarray, preset: str) -> None:
    h, w = bgr.shape[:2]
    # Content moves right 3 px and up 2 px, so each pixel of the new frame came from (x − 3, y + 2).
    moved = cv2.warpAffine(bgr, np.float32([[1, 0, 3.0], [0, 1, -2.0]]), (w, h), borderMode=cv2.BORDER_REFLECT)
    est = FlowEstimator(preset)
    assert est.estimate(bgr) is None  # nothing to compare the first frame with
    flow = est.estimate(moved)
    assert flow.shape == (h, w, 2) and flow.dtype == np.float32  # full resolution, though computed at 320 wide
    assert _epe(flow, -3.0, 2.0) < 0.5
    # Backward convention: the previous frame warped by the flow lines up with the current one.
    prev_x = torch.from_numpy(bgr).permute(2, 0, 1)[None].float()
    aligned = warp(prev_x, flow_to_tensor(flow, CPU))[0].permute(1, 2, 0).numpy()
    crop = (slice(20, -20), slice(20, -20))
    assert np.abs(aligned[crop] - moved[crop]).mean() < 0.25 * np.abs(bgr[crop].astype(np.float32) - moved[crop]).mean()


def test_flow_can_be_asked_for_at_the_dream_size(bgr: np.ndarray) -> None:
    h, w = bgr.shape[:2]
    moved = cv2.warpAffine(bgr, np.float32([[1, 0, 4.0], [0, 1, 0.0]]), (w, h), borderMode=cv2.BORDER_REFLECT)
    est = FlowEstimator("fast")
    est.estimate(bgr)
    flow = est.estimate(moved, out_size=(h // 2, w // 2))
    assert flow.shape == (h // 2, w // 2, 2)
    assert _epe(flow, -2.0, 0.0, margin=10) < 0.3  # half the size, half the pixels


def test_previous_flow_seeds_the_next_estimate_and_reset_forgets_it(bgr: np.ndarray) -> None:
    # 40 px per frame at 320 px wide is more than DIS's coarse-to-fine search finds from scratch.
    big = cv2.resize(bgr, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    frames = _pan(big, frames=5, step=40, height=180, width=320, left=20)
    est = FlowEstimator("fast")
    errors = [_epe(f, 40.0, 0.0, margin=40) for f in map(est.estimate, frames) if f is not None]
    assert errors[0] > 3.0, errors  # the first pair, started from nothing, misses much of the motion
    assert max(errors[1:]) < 0.5, errors  # later pairs start from the last flow and lock on

    est.reset()  # forgets frame and flow: the same pair as a fresh estimator, the same miss
    assert est.previous is None and est.estimate(frames[0]) is None
    fresh = FlowEstimator("fast")
    fresh.estimate(frames[0])
    again = est.estimate(frames[1])
    assert np.array_equal(again, fresh.estimate(frames[1])) and _epe(again, 40.0, 0.0, margin=40) > 3.0


@pytest.mark.parametrize(
    ("frame", "what"),
    [
        (np.zeros((48, 64, 3), np.float32), "dtype float32"),
        (np.zeros((48, 64, 4), np.uint8), "shape (48, 64, 4)"),
        (np.zeros((2, 48, 64, 3), np.uint8), "shape (2, 48, 64, 3)"),
    ],
)
def test_bad_frames_are_refused_with_what_was_expected(frame: np.ndarray, what: str) -> None:
    with pytest.raises(UsageError, match=r"uint8 BGR image \(H, W, 3\) or a uint8 grey image \(H, W\)") as e:
        FlowEstimator().estimate(frame)
    assert what in str(e.value)


def test_unknown_preset_names_the_choices() -> None:
    with pytest.raises(UsageError, match="ultrafast, fast, medium"):
        FlowEstimator("slow")


# ----------------------------------------------------------------------------- warping
def test_zero_flow_is_the_identity() -> None:
    for h, w in [(96, 160), (101, 77), (360, 640)]:
        x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h))
        assert torch.equal(warp(x, torch.zeros(1, 2, h, w)), x)


def test_warp_matches_opencv_remap(bgr: np.ndarray) -> None:
    h, w = bgr.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    # A smooth, non-uniform field with sub-pixel parts, like real motion.
    flow = np.stack([2.5 * np.sin(ys / 23.0) + 0.3, -1.7 * np.cos(xs / 31.0)], axis=-1).astype(np.float32)
    expected = cv2.remap(bgr, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    x = torch.from_numpy(bgr).permute(2, 0, 1)[None].float()
    got = warp(x, flow_to_tensor(flow, CPU))[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.int16)
    diff = np.abs(got - expected.astype(np.int16))[8:-8, 8:-8]
    assert diff.max() <= 1, np.bincount(diff.ravel())


def test_zoom_rotate_drift_moves_the_picture_the_documented_way() -> None:
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    assert zoom_rotate_drift(x) is x
    moved = zoom_rotate_drift(x, drift_xy=(3.0, 0.0))  # 3 px to the right
    assert (moved[..., 4:-4, 7:-4] - x[..., 4:-4, 4:-7]).abs().max() < 1e-5
    dot = torch.zeros(1, 1, 65, 65)
    dot[0, 0, 32, 50] = 1.0  # right of centre
    turned = zoom_rotate_drift(dot, rotate_deg=90.0)  # counter-clockwise on screen: to the top
    assert divmod(int(turned.flatten().argmax()), 65) == (14, 32)
    zoomed = zoom_rotate_drift(dot, zoom=1.5)  # magnified about the centre: further out
    assert divmod(int(zoomed.flatten().argmax()), 65) in {(32, 59), (32, 60)}


# ----------------------------------------------------------------------------- feedback
def _to_model(model, rgb: np.ndarray) -> torch.Tensor:
    return model.space.to_model(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)


def test_feedback_with_flow_makes_a_pan_steadier_than_independent_frames(model, photo: np.ndarray) -> None:
    """Frame-to-frame change of the dream, with the known pan compensated, in grey levels."""
    step, frames = 4, _pan(photo, frames=12, step=4, height=96, width=160)
    backend = TorchBackend(model, CPU)
    objective, settings = Objective.parse("inception4c"), DreamSettings(steps=2, octaves=1, jitter=2)
    lo, hi = model.space.bounds(_to_model(model, frames[0]))

    def residuals(feedback: float | None, use_flow: bool = True) -> list[torch.Tensor]:
        dreamer, flow_est, fb = Dreamer(backend, model.space, seed=0), FlowEstimator("fast"), TemporalFeedback()
        out = []
        for rgb in frames:
            camera = _to_model(model, rgb)
            x = camera
            if feedback is not None:
                flow = flow_est.estimate(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                flow_x = flow_to_tensor(flow, CPU) if flow is not None and use_flow else None
                x = fb.start(camera, flow_x, feedback, (lo, hi))
            dreamed = dreamer.dream(x, objective, settings)
            if feedback is not None:
                fb.finish(camera, dreamed)
            out.append((model.space.to_picture(dreamed) - model.space.to_picture(camera)) * 255)
        return out

    def change(res: list[torch.Tensor]) -> float:
        # The camera pans right, so content moves left: res[t][x] should equal res[t-1][x + step].
        m = 8
        diffs = [(a[..., m:-m, m : -m - step] - b[..., m:-m, m + step : -m]).abs().mean() for b, a in zip(res, res[1:])]
        return float(np.mean(diffs))

    def strength(res: list[torch.Tensor]) -> float:
        return float(np.mean([r.abs().mean() for r in res[len(res) // 2 :]]))

    independent, fed, unwarped = residuals(None), residuals(0.7), residuals(0.7, use_flow=False)
    print(
        f"\nmean |frame-to-frame change| of the dream, pan compensated (grey levels): "
        f"independent {change(independent):.3f}, feedback+flow {change(fed):.3f}, feedback without flow "
        f"{change(unwarped):.3f}; dream strength {strength(independent):.2f} vs {strength(fed):.2f}"
    )
    assert change(fed) < 0.9 * change(independent)
    assert strength(fed) > strength(independent)  # steadier although the dream is stronger
    assert change(fed) < change(unwarped)  # and it is the flow that keeps it in place


def test_a_static_scene_settles_instead_of_running_to_saturated_colour(model, photo: np.ndarray) -> None:
    camera = _to_model(model, cv2.resize(photo, (160, 96), interpolation=cv2.INTER_AREA))
    lo, hi = model.space.bounds(camera)
    # Stand-in for the dreamer: every frame pushes the same colourful pattern a bit further.
    pattern = torch.rand(1, 3, 12, 20, generator=torch.Generator().manual_seed(3)) * 2 - 1
    pattern = torch.nn.functional.interpolate(pattern, size=camera.shape[-2:], mode="bilinear")
    fb, pictures = TemporalFeedback(), []
    for _ in range(300):
        x = fb.start(camera, torch.zeros(1, 2, *camera.shape[-2:]), feedback=1.0, bounds=(lo, hi))
        dreamed = torch.maximum(torch.minimum(x + 0.05 * pattern, hi), lo)
        fb.finish(camera, dreamed)
        pictures.append(model.space.to_picture(dreamed)[0])

    def brightness_saturation(p: torch.Tensor) -> tuple[float, float]:
        top, bottom = p.max(dim=0).values, p.min(dim=0).values
        return float(p.mean()), float(((top - bottom) / top.clamp_min(1e-6)).mean())

    b0, s0 = brightness_saturation(model.space.to_picture(camera)[0])
    b, s = brightness_saturation(pictures[-1])
    # Without decay the pattern would add up to 15 × its size and pin every pixel to a bound.
    assert abs(b - b0) < 0.1 and s < s0 + 0.25, (b0, s0, b, s)
    assert float((pictures[-1] - model.space.to_picture(camera)[0]).abs().mean()) > 0.05  # it did dream
    settled = max(float((a - c).abs().max()) for a, c in zip(pictures[-50:], pictures[-51:]))
    assert settled < 1e-4  # converged, not drifting


def test_reset_and_size_changes_start_from_the_camera_frame() -> None:
    camera = torch.rand(1, 3, 32, 48)
    fb = TemporalFeedback()
    assert fb.start(camera, None, 0.7) is camera  # nothing held yet
    fb.finish(camera, camera + 0.3)
    assert fb.active and not torch.equal(fb.start(camera, None, 0.7), camera)
    fb.reset()
    assert torch.equal(fb.start(camera, None, 0.7), camera)

    fb.finish(camera, camera + 0.3)
    other = torch.rand(1, 3, 64, 96)
    assert torch.equal(fb.start(other, None, 0.7), other) and not fb.active


def test_feedback_without_flow_adds_the_scaled_residual_within_bounds() -> None:
    camera = torch.zeros(1, 3, 8, 8)
    fb = TemporalFeedback(decay=0.5)
    fb.finish(camera, camera + 0.8)  # residual kept: 0.5 × 0.8
    assert torch.allclose(fb.start(camera, None, 1.0), torch.full_like(camera, 0.4))
    lo, hi = torch.full((1, 3, 1, 1), -0.1), torch.full((1, 3, 1, 1), 0.1)
    assert torch.equal(fb.start(camera, None, 1.0, (lo, hi)), torch.full_like(camera, 0.1))
    with pytest.raises(UsageError, match="feedback must be between 0 and 1"):
        fb.start(camera, None, 1.5)


def test_mix_blends_dream_and_camera() -> None:
    camera, dreamed = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    assert torch.equal(mix(dreamed, camera, 0.0), camera)
    assert torch.equal(mix(dreamed, camera, 1.0), dreamed)
    assert torch.allclose(mix(dreamed, camera, 0.25), torch.full_like(camera, 0.25))


# ----------------------------------------------------------------------------- scene cuts
def test_scene_cuts_are_told_apart_from_motion_and_exposure(photo: np.ndarray) -> None:
    est = FlowEstimator()
    a, b = _pan(cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), frames=2, step=4, height=96, width=160)
    assert not is_scene_cut(est.grey(a), est.grey(b))

    cat = cv2.cvtColor(photo, cv2.COLOR_RGB2BGR)
    brighter = cv2.convertScaleAbs(cat, alpha=1.0, beta=30)  # auto-exposure, not a new scene
    assert not is_scene_cut(est.grey(cat), est.grey(brighter))
    for name in ["coffee.png", "motorcycle_left.png"]:
        other = np.array(Image.open(photo_path(name)).convert("L"))
        other = cv2.resize(other, cat.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert is_scene_cut(est.grey(cat), est.grey(other)), name
    assert is_scene_cut(est.grey(a), est.grey(cat))  # a change of size is a cut
