"""Per shown frame: the whole live loop against ordinary live loops, in the same run (same as
``deepdream-live bench``).

The project runs its default look (few steps per frame, the dream carried over by feedback);
the ordinary loops dream every camera frame from scratch with 4 steps: naive, frozen and the
best ordinary form (frozen, cut at the layer, channels-last; see ``live/benchmark.py``). Each
row prints frames per second and the dream strength reached (objective of the shown frame over
that of the camera frame, same network and weights), after a warm-up of 60 frames. Then the
cost of outputs at the camera's size rather than the dream's (the per-stage breakdown has the
compose stage: upsample the residual and add it to the full-size camera).

Targets (2-core CPU, same run, dream 640x352): project >= 2x the best ordinary loop's fps at a
strength >= its strength; 1280x720 output >= 90% of the fps of the 640x352 output. On CUDA:
dream 960x544, output 1920x1080 (target >= 120 fps on an H100/H200 class GPU; not measured yet).

Run: ``python bench/live_loop.py [--sizes 640x360] [--frames N] [--json FILE]``.
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

from live.benchmark import WARMUP_FRAMES, loop_benchmark  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=None, metavar="WxH[,WxH]",
                        help="camera sizes; the dream runs at each rounded to 32 (default: 640x360, CUDA 960x540)")
    parser.add_argument("--frames", type=int, default=20, help="frames timed per run (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=WARMUP_FRAMES, help="frames before timing (default: %(default)s)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    threads.apply()
    sizes = [tuple(int(v) for v in t.lower().split("x")) for t in args.sizes.split(",")] if args.sizes else None
    rows = loop_benchmark(sizes, frames=args.frames, warmup=args.warmup)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
