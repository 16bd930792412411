"""What the performer's screen costs per frame: the overlay lettering and the black letterbox,
each against what a competent OpenCV user would write, measured in the same run.

- overlay, baseline: the usual outlined text, ``putText`` twice per line (thickness 3 in black,
  then 1 in white) straight onto the frame - the drawing that doubles the letters on OpenCV 5;
  this project: one ``putText`` per line into a mask of the text's rectangle, dilated for the
  outline, blended there (``live.outputs.overlay``).
- letterbox, baseline: ``cv2.copyMakeBorder`` with black borders, a new frame each time;
  this project: the frame copied into a black canvas kept from frame to frame
  (``WindowOutput._letterboxed``), here through ``letterbox_size`` and the same copy.

Run: ``python bench/stage_picture.py [--repeats 200]``. Prints milliseconds per frame (median)
and the ratio to the baseline, the two taking turns frame by frame.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.outputs import overlay  # noqa: E402
from live.outputs.window import letterbox_size  # noqa: E402

LINES = ["24.3 fps  inception4c", "steps 4  feedback 0.80  torch on cuda (float16)", "RANDOM WEIGHTS (demo)"]


def paired_ms(*calls: Callable[[], object], repeats: int) -> list[float]:
    """Median milliseconds of each call, the calls taking turns so a busy machine slows all alike."""
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for call, spent in zip(calls, times, strict=True):
            t = time.perf_counter()
            call()
            spent.append(time.perf_counter() - t)
    return [1e3 * statistics.median(spent) for spent in times]


def put_text_twice(frame: np.ndarray) -> np.ndarray:
    scale = max(0.4, frame.shape[1] / 1600)
    for i, text in enumerate(LINES):
        org = (8, int((i + 1) * 28 * scale * 1.2))
        cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(frame, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'what':<34} {'frame':>9} {'baseline ms':>12} {'this ms':>9} {'ratio':>6}")
    for w, h in ((1280, 720), (1920, 1080)):
        frame = rng.integers(0, 256, (h, w, 3), np.uint8)
        base, ours, copy = paired_ms(lambda f=frame: put_text_twice(f.copy()),
                                     lambda f=frame: overlay.status_overlay(f.copy(), LINES),
                                     lambda f=frame: f.copy(),  # both include one frame copy
                                     repeats=args.repeats)
        print(f"{'overlay, 3 lines (incl. 1 copy)':<34} {w}x{h:<5} {base:>12.3f} {ours:>9.3f} {ours / base:>6.2f}"
              f"   (the copy alone: {copy:.3f} ms)")
    for (w, h), (sw, sh) in (((640, 480), (1920, 1080)), ((1280, 720), (2560, 1600)), ((1920, 1080), (1920, 1200))):
        frame = rng.integers(0, 256, (h, w, 3), np.uint8)
        cw, ch = letterbox_size(w, h, sw, sh)
        x, y = (cw - w) // 2, (ch - h) // 2

        def baseline(f: np.ndarray = frame, x: int = x, y: int = y, cw: int = cw, ch: int = ch) -> np.ndarray:
            h, w = f.shape[:2]
            return cv2.copyMakeBorder(f, y, ch - h - y, x, cw - w - x, cv2.BORDER_CONSTANT, value=(0, 0, 0))

        canvas = np.zeros((ch, cw, 3), np.uint8)

        def ours(f: np.ndarray = frame, x: int = x, y: int = y, c: np.ndarray = canvas) -> np.ndarray:
            c[y : y + f.shape[0], x : x + f.shape[1]] = f
            return c

        b, o = paired_ms(baseline, ours, repeats=args.repeats)
        label = f"letterbox on {sw}x{sh} -> {cw}x{ch}"
        print(f"{label:<34} {w}x{h:<5} {b:>12.3f} {o:>9.3f} {o / b:>6.2f}")


if __name__ == "__main__":
    main()
