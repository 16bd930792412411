"""Steps spent across frames: dream strength, flicker and fps for steps x feedback.

With feedback ``f`` the dream residual is carried to the next frame, so ``s`` steps per frame
accumulate: on a still scene the carried dream settles near ``s / (1 - 0.9 f)`` steps' worth
(the decay is 0.9). This measures what that buys, on a panning clip (a real photograph swept
4 px a frame, encoded and decoded) and on a still photograph:

- strength: objective of the shown frame / objective of the camera frame (same network and
  weights), averaged over the measured frames;
- flicker: mean absolute frame-to-frame change of the shown frames, in grey levels (the
  camera's own change is printed below each table: on the pan, motion alone);
- fps: the real live loop, headless, on this machine.

Every setting starts fresh and is measured after a warm-up of 60 frames (2 s of a 30 fps
camera), counted in frames so the table repeats. It ends with the cheapest (steps, feedback)
whose strength reaches that of 4 independent steps per frame (feedback 0) on both scenes: the
defaults in live/control/params.py come from this table.

Run: ``python bench/steps_across_frames.py [--frames 30] [--json FILE]`` (about half an hour on
the 2-core CPU; ``--quick`` for a small dream).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live import threads  # noqa: E402

threads.prepare_environment()  # before torch loads, as the command line does

from live.benchmark import WARMUP_FRAMES, steps_across_frames  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="frames measured per setting (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=WARMUP_FRAMES, help="frames before measuring (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="dream 320x192 from a 320x180 camera")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    threads.apply()
    sizes = {"dream": (320, 192), "camera": (320, 180)} if args.quick else {}
    rows = steps_across_frames(frames=args.frames, warmup=args.warmup, **sizes)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
