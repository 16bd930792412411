"""The stand-in picture shown while there is nothing to dream on: network loading, camera lost."""

from __future__ import annotations

import cv2
import numpy as np

PLACEHOLDER_GREY = 24  # dark, so a projector shows "nothing" rather than a bright slab


def placeholder_frame(width: int, height: int, text: str) -> np.ndarray:
    """A dark (height, width, 3) BGR frame with ``text`` centred on it, scaled to fit small frames."""
    frame = np.full((height, width, 3), PLACEHOLDER_GREY, np.uint8)
    # Hershey fonts are ASCII only: an ellipsis or accent would print as '?'.
    text = text.replace("…", "...").encode("ascii", "replace").decode()
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = max(0.3, min(2.0, 0.8 * width / max(w, 1), 0.1 * height / max(h, 1)))
    thickness = max(1, round(2 * scale))
    (w, h), _ = cv2.getTextSize(text, font, scale, thickness)
    org = ((width - w) // 2, (height + h) // 2)
    cv2.putText(frame, text, org, font, scale, (200, 200, 200), thickness, cv2.LINE_AA)
    return frame
