"""The whole live loop against the plain PyTorch loop, in the same run (same as
``deepdream-live bench``). On CPU: 320x180, 2 steps (target: < 15% of frame time outside the dream
step). On CUDA: 1280x720 and 1920x1080, 4 steps (target on an H100-class card: >= 100 fps at
720p, >= 60 fps at 1080p, latency <= 2 frames).

Run: ``python bench/live_loop.py [--frames N] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.benchmark import loop_benchmark  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = loop_benchmark(frames=args.frames)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
