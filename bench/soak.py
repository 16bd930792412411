"""Soak: thousands of frames through the real live loop at a small size on the CPU, switching
objectives and cross-fading now and then, reporting memory (RSS) growth after warm-up and fps
over time. A gallery runs for weeks: memory must stay flat. Target: < 40 MB growth.

Run: ``python bench/soak.py [--frames 5000] [--size 64x64]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.app import LiveLoop  # noqa: E402
from live.backends import open_backend  # noqa: E402
from live.benchmark import scene_source  # noqa: E402
from live.control.params import Registry  # noqa: E402
from live.model import load_model  # noqa: E402
from live.outputs import Fanout, NullOutput  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--chunk", type=int, default=250, help="frames between reports")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    model = load_model("random", progress=False)
    backend = open_backend("auto", model)
    registry = Registry()
    registry.update({"width": w, "height": h, "steps": 1, "fps_cap": 240, "morph_time": 0.5})
    outputs = Fanout([NullOutput()])
    outputs.open(w, h, 240)
    loop = LiveLoop(scene_source(w, h), model, backend, registry, outputs, seed=0, status_every=3600,  # type: ignore[arg-type]
                    present="dream")  # frames pulled as fast as the dream takes them, each dreamed
    loop.run(max_frames=args.chunk)  # warm-up
    start_rss, start = rss_mb(), time.monotonic()
    layers = ["inception3b", "inception4c", "conv3", "inception5a"]
    print(f"{'frames':>7} {'fps':>7} {'RSS MB':>8} {'growth':>7}")
    done = 0
    while done < args.frames:
        registry.set("objective", layers[(done // args.chunk) % len(layers)], source="soak")
        report = loop.run(max_frames=args.chunk)
        done += report.frames
        print(f"{done:>7} {report.fps:>7.1f} {rss_mb():>8.0f} {rss_mb() - start_rss:>+7.1f}")
    growth = rss_mb() - start_rss
    minutes = (time.monotonic() - start) / 60
    print(f"{done} frames in {minutes:.1f} min: RSS growth {growth:+.1f} MB after warm-up (target < 40 MB)")


if __name__ == "__main__":
    main()
