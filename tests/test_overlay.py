"""The stage overlay's lettering: outline and letters from one layout, on any background, at any
size. Glyph boxes are measured on rendered pictures: each outlined blob must hold its letters
in the middle, a ring of the same width on every side."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from live.outputs import overlay

LINE = "12.3 fps  inception4cc  steps 4  feedback 0.80  float32)2)"
GREY = 128


def glyph_boxes(picture: np.ndarray) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int] | None]]:
    """(blob box, letters box) for every connected blob of drawing (outline or letters) on a mid-grey
    picture; boxes as (x0, y0, x1, y1) inclusive, letters None when a blob holds no letter pixel."""
    v = picture.astype(int)
    drawn = (np.abs(v - GREY).max(axis=2) > 20).astype(np.uint8)
    letters = (v > 150).all(axis=2)  # mostly covered by a letter (anti-aliased edges blend into the ring)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(drawn, connectivity=8)
    boxes = []
    for i in range(1, n):
        x, y, w, h, _ = stats[i]
        ys, xs = np.nonzero((labels == i) & letters)
        inner = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else None
        boxes.append(((int(x), int(y), int(x + w - 1), int(y + h - 1)), inner))
    return boxes


def misdrawn(picture: np.ndarray, ring: int) -> list[str]:
    """Blobs whose letters are not centred in an outline 1..ring+2 px wide on every side."""
    bad = []
    for blob, inner in glyph_boxes(picture):
        if inner is None:
            bad.append(f"outline without letters at {blob}")
            continue
        left, right = inner[0] - blob[0], blob[2] - inner[2]
        top, bottom = inner[1] - blob[1], blob[3] - inner[3]
        margins = (left, right, top, bottom)
        if min(margins) < 1 or max(margins) > ring + 2 or abs(left - right) > 1 or abs(top - bottom) > 1:
            bad.append(f"letters {inner} in outline {blob}: margins l{left} r{right} t{top} b{bottom}")
    return bad


@pytest.mark.parametrize("scale", [0.35, 0.5, 0.8, 1.2, 2.0])
def test_outline_and_letters_share_one_layout(scale: float) -> None:
    picture = np.full((140, 1700, 3), GREY, np.uint8)
    overlay.draw_lines(picture, [LINE], [(10, 80)], scale)
    boxes = glyph_boxes(picture)
    assert len(boxes) >= 5, "the line was not drawn"
    assert misdrawn(picture, overlay.outline_px(scale)) == []


def test_the_measure_catches_an_outline_drawn_as_thicker_text() -> None:
    """The control: OpenCV 5 spaces thickness-3 glyphs wider than thickness-1 ones, so drawing the
    outline as a second, thicker putText (the old way) doubles the letters; the measure sees it."""
    if cv2.getTextSize(LINE, overlay.FONT, 0.8, 3)[0][0] == cv2.getTextSize(LINE, overlay.FONT, 0.8, 1)[0][0]:
        pytest.skip("this OpenCV spaces thick and thin text alike")
    picture = np.full((140, 1700, 3), GREY, np.uint8)
    cv2.putText(picture, LINE, (10, 80), overlay.FONT, 0.8, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(picture, LINE, (10, 80), overlay.FONT, 0.8, (255, 255, 255), 1, cv2.LINE_AA)
    assert len(misdrawn(picture, 1)) > 5


def test_letters_are_white_outlined_in_black_on_any_background() -> None:
    for background in (0, 255):
        picture = np.full((60, 400, 3), background, np.uint8)
        overlay.draw_lines(picture, ["inception4c"], [(10, 40)], 1.0)
        values = picture.reshape(-1, 3)
        assert (values == 255).all(axis=1).any() and (values == 0).all(axis=1).any()
        if background == 0:  # white letters on black: the letters stand out
            assert (picture > 200).all(axis=2).sum() > 100
        else:  # on white, the black ring is what shows the letters' shape
            assert (picture < 50).all(axis=2).sum() > 100


def line_bands(frame: np.ndarray) -> list[np.ndarray]:
    """The runs of picture rows that hold any drawing, top to bottom."""
    rows = np.nonzero((np.abs(frame.astype(int) - GREY) > 20).any(axis=(1, 2)))[0]
    return np.split(rows, np.nonzero(np.diff(rows) > 1)[0] + 1) if len(rows) else []


STATUS = ["12.3 fps  inception4c", "steps 4  feedback 0.80  torch on cpu", "RANDOM WEIGHTS (demo)", "jpg quality (gy)"]


@pytest.mark.parametrize("width", [640, 1280, 1920, 3840])
def test_status_overlay_draws_every_line_and_only_around_the_text(width: int) -> None:
    height = width * 9 // 16
    frame = np.full((height, width, 3), GREY, np.uint8)
    out = overlay.status_overlay(frame, STATUS)
    assert out is frame
    bands = line_bands(frame)
    assert len(bands) == len(STATUS)  # every line apart, none run into the next
    scale = max(0.4, width / 1600)
    assert bands[-1].max() < 200 * scale and (frame[int(220 * scale):] == GREY).all()  # the rest untouched
    assert misdrawn(frame, overlay.outline_px(scale)) == []


def test_status_lines_stay_apart_when_the_glyphs_grow_30_percent() -> None:
    """A font whose glyphs are 30% taller (a scale 1.3x the usual stands in for a future OpenCV
    font change): the lines are spaced by their measured height, so they still never touch."""
    for base in (0.4, 0.8, 1.2):
        frame = np.full((400, 2000, 3), GREY, np.uint8)
        overlay.status_overlay(frame, STATUS, scale=1.3 * base)
        bands = line_bands(frame)
        assert len(bands) == len(STATUS), f"lines ran together at scale {1.3 * base:.2f}"
        assert all(b[-1] + 2 <= nxt[0] for b, nxt in zip(bands, bands[1:]))  # a clear row between lines


def test_line_pitch_follows_the_measured_text_not_a_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where getTextSize reports taller glyphs (another font), the lines move apart by as much."""
    plain = overlay.line_origins(STATUS, 0.8)
    measure = cv2.getTextSize
    monkeypatch.setattr(overlay.cv2, "getTextSize", lambda *a: ((measure(*a)[0][0], 2 * measure(*a)[0][1]), measure(*a)[1]))
    tall = overlay.line_origins(STATUS, 0.8)
    h = measure(STATUS[1], overlay.FONT, 0.8, overlay.thickness(0.8))[0][1]
    assert tall[1][1] - tall[0][1] == plain[1][1] - plain[0][1] + h


def test_notice_sits_at_the_bottom_of_a_copy() -> None:
    picture = np.full((360, 640, 3), GREY, np.uint8)
    shown = overlay.notice(picture, "dream paused (RuntimeError: CUDA error); retrying")
    assert (picture == GREY).all()  # the caller's frame is left alone
    rows = np.nonzero((np.abs(shown.astype(int) - GREY) > 20).any(axis=(1, 2)))[0]
    assert rows.min() > 300 and rows.max() < 360
    assert misdrawn(shown, overlay.outline_px(max(0.35, 640 / 1800))) == []


def test_text_past_the_edge_is_clipped_not_an_error() -> None:
    picture = np.full((40, 100, 3), GREY, np.uint8)
    overlay.draw_lines(picture, ["a line much longer than the picture is wide"], [(-20, 30)], 1.0)
    overlay.draw_lines(picture, ["off the picture"], [(500, 500)], 1.0)
    assert (picture != GREY).any()
