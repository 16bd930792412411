"""Text over the picture: the performer's status overlay and the one-line notices of the loop.

White letters with a black outline, readable on any dream. Both come from one rendering of the
text: it is drawn once into a grey mask with OpenCV's ``putText``, and the outline is that mask
dilated. Drawing the outline as a second, thicker ``putText`` does not work: OpenCV 5 spaces the
glyphs of thicker text wider (at scale 0.8, "inception4cc float32" is 220 px wide at thickness 1
and 235 px at 3), so the outline drifts away from the letters along the line and the text
reads doubled ("inception4cc", "float32)2)"). See docs/architecture.md, *The performer's screen*.

Only the rectangle under the text is touched, so the cost does not grow with the frame size.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX


def outline_px(scale: float) -> int:
    """Outline width in pixels for a font ``scale``: one pixel at small sizes, growing with it."""
    return max(1, round(1.2 * scale))


def thickness(scale: float) -> int:
    """Stroke width of the letters for a font ``scale``."""
    return max(1, round(scale))


def draw_lines(frame: np.ndarray, lines: Sequence[str], origins: Sequence[tuple[int, int]], scale: float) -> np.ndarray:
    """Draw each of ``lines`` at its baseline origin (x, y) into ``frame`` (BGR uint8, in place),
    outlined; returns ``frame``. Lines may reach past the frame's edges; they are clipped."""
    if not lines:
        return frame
    t, r = thickness(scale), outline_px(scale)
    pad = r + t + 2  # anti-aliasing reaches a pixel beyond the stroke, the outline r more
    boxes = []
    for text, (x, y) in zip(lines, origins, strict=True):
        (w, h), base = cv2.getTextSize(text, FONT, scale, t)
        boxes.append((x - pad, y - h - pad, x + w + pad, y + base + pad))
    fh, fw = frame.shape[:2]
    x0, y0 = max(0, min(b[0] for b in boxes)), max(0, min(b[1] for b in boxes))
    x1, y1 = min(fw, max(b[2] for b in boxes)), min(fh, max(b[3] for b in boxes))
    if x1 <= x0 or y1 <= y0:
        return frame
    # The text once, as coverage 0..255 in a mask the size of the text's rectangle.
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for text, (x, y) in zip(lines, origins, strict=True):
        cv2.putText(mask, text, (x - x0, y - y0), FONT, scale, 255, t, cv2.LINE_AA)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    ring = cv2.dilate(mask, kernel)  # grey-level dilation keeps the anti-aliased edge
    # Blend in 8 bits with OpenCV's saturating arithmetic (a float blend of the same rectangle
    # measured 8-36x slower in one run of bench/stage_picture.py): darken by the ring (the black outline),
    # then lighten by the letters (white): picture * (1 - ring) + (255 - that) * letters.
    roi = frame[y0:y1, x0:x1]
    channels = roi.shape[2] if roi.ndim == 3 else 1
    spread = (lambda m: cv2.merge([m] * channels)) if channels > 1 else (lambda m: m)
    dark = cv2.multiply(roi, spread(cv2.bitwise_not(ring)), scale=1 / 255)
    frame[y0:y1, x0:x1] = cv2.add(dark, cv2.multiply(cv2.bitwise_not(dark), spread(mask), scale=1 / 255))
    return frame


def line_origins(lines: Sequence[str], scale: float, x: int = 8, top: int = 0) -> list[tuple[int, int]]:
    """Baseline origins for ``lines`` stacked from ``top`` down, each placed by its own measured
    height and depth (``cv2.getTextSize``, whose box covers the stroke), plus the outline and the
    anti-aliased edge on both sides and a gap, so outlined lines never touch, whatever the font's
    metrics (OpenCV 5.1 drew taller glyphs than a fixed line pitch allowed for)."""
    t, r = thickness(scale), outline_px(scale)
    ink = r + 1  # the outline, and the anti-aliased pixel beyond it
    gap = max(2, r + 1)
    origins = []
    y = top
    for text in lines:
        (_, h), base = cv2.getTextSize(text, FONT, scale, t)
        y += ink + h
        origins.append((x, y))
        y += base + ink + gap
    return origins


def status_overlay(frame: np.ndarray, lines: Sequence[str], scale: float | None = None) -> np.ndarray:
    """The performer's overlay (fps, objective, steps, backend …): ``lines`` at the top left,
    sized to the frame's width unless ``scale`` is given; drawn into ``frame`` in place, which is
    returned."""
    if scale is None:
        scale = max(0.4, frame.shape[1] / 1600)
    return draw_lines(frame, lines, line_origins(lines, scale, top=4), scale)


def notice(picture: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``picture`` with a one-line notice along its bottom (the show stays watchable)."""
    picture = picture.copy()
    scale = max(0.35, picture.shape[1] / 1800)
    return draw_lines(picture, [text], [(6, picture.shape[0] - 8)], scale)
