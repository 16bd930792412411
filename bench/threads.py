"""Threads that share the machine: the live loop idle and with one core kept busy, per setting.

Each candidate (intra-op thread count x OpenMP wait policy) runs in a fresh process, because
libgomp reads its environment once, when PyTorch loads it. Each runs the real live loop
headless (default look, dream 640x352, the test scene as camera, frames in memory) twice:
idle, and while a second process keeps one core busy (``while True: pass``, as a camera
decoder, a browser or a video call would). Candidates run in turns, ``--repeats`` times, and
the table shows medians.

Idle runs also show the show at the camera's pace (a 1280x720 camera at 30 fps, the presenter's
thread beside the dream's): frames out over camera frames, and its dreams a second over the idle
fps of the one-pace loop (what the presenter costs the dream at that thread setting).

Target (2-core CPU): contended >= 40% of idle fps for the chosen setting. What ``run`` uses:
``OMP_WAIT_POLICY=PASSIVE`` and every core (live/threads.py); this table is the reason.

Run: ``python bench/threads.py [--frames 12] [--repeats 2] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "KMP_BLOCKTIME", "DEEPDREAM_LIVE_THREADS")


def candidates(cores: int) -> list[tuple[str, dict[str, str], int]]:
    """(name, OpenMP environment, threads)."""
    fewer = max(1, cores - 1)
    return [
        ("PyTorch's default: spin, every core", {}, cores),
        ("spin always (ACTIVE), every core", {"OMP_WAIT_POLICY": "ACTIVE"}, cores),
        ("short spin (GOMP_SPINCOUNT=10000), every core", {"GOMP_SPINCOUNT": "10000"}, cores),
        (f"sleep (PASSIVE), {fewer} thread{'s' if fewer > 1 else ''}", {"OMP_WAIT_POLICY": "PASSIVE"}, fewer),
        ("sleep (PASSIVE), every core [chosen]", {"OMP_WAIT_POLICY": "PASSIVE"}, cores),
    ]


def child(args: argparse.Namespace) -> None:
    """One measurement in this process, whose OpenMP environment the parent set."""
    sys.path.insert(0, str(ROOT))
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    from live.backends.torch_backend import TorchBackend
    from live.benchmark import PacedFrames, bench_model, frames_source, paced_run, run_loop
    from live.control.params import Registry
    from live.sources.testscene import test_scene

    model, _ = bench_model("random")
    backend = TorchBackend(model, torch.device("cpu"))
    dw, dh = (int(v) for v in args.size.split("x"))
    look = {k: p.default for k, p in Registry().params.items() if k in ("steps", "feedback", "step_size", "octaves",
                                                                          "jitter")}
    pictures = [cv2.cvtColor(test_scene(dw, dh + 8, i / 30), cv2.COLOR_RGB2BGR) for i in range(16)]
    f = run_loop(model, backend, frames_source(pictures, "test scene"), dw, dh, None, args.frames, "inception4c",
                 warmup=args.warmup, look=look)
    result = {"fps": f.fps, "breakdown": f.breakdown, "threads": torch.get_num_threads(), "steps": f.steps}
    if args.present_seconds > 0:
        # the show at the camera's pace: the presenter's thread beside the dream's (docs/architecture.md, "Two paces")
        camera = [cv2.cvtColor(test_scene(1280, 720, i / 30), cv2.COLOR_RGB2BGR) for i in range(16)]
        source = PacedFrames(camera, 30.0, "test scene")
        with source:
            paced_run(model, backend, source, (dw, dh), 2.0, "camera", look=look)  # warm-up
            figures, _ = paced_run(model, backend, source, (dw, dh), args.present_seconds, "camera", look=look)
        result.update(presented=figures.presented_share, camera_dream_fps=figures.dream_fps)
    print(json.dumps(result))


def measure(env_extra: dict[str, str], threads: int, args: argparse.Namespace, contended: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OMP_KEYS}
    env.update(env_extra)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if contended else None
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--threads", str(threads), "--frames", str(args.frames),
             "--warmup", str(args.warmup), "--size", args.size, "--present-seconds", str(args.present_seconds)],
            env=env, capture_output=True, text=True, check=True, timeout=3600,
        ).stdout
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12, help="frames timed per run (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=4, help="frames before timing (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of all candidates (default: %(default)s)")
    parser.add_argument("--size", default="640x352", help="dream size (default: %(default)s)")
    parser.add_argument("--present-seconds", type=float, default=6.0,
                        help="seconds of the show at the camera's pace per run, 0: none (default: %(default)s)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cands = candidates(cores)
    results: dict[str, dict[str, list[float]]] = {name: {"idle": [], "contended": [], "presented": [], "dreams": []}
                                                  for name, _, _ in cands}
    print(f"Threads that share the machine: live loop, default look, dream {args.size}, {args.frames} frames after "
          f"{args.warmup}, {cores} cores; contended = one more process spinning on a core; median of {args.repeats} "
          "rounds in turns", flush=True)
    started = time.monotonic()
    for r in range(args.repeats):
        for name, env, threads in cands:
            for contended in (False, True):
                got = measure(env, threads, args, contended)
                results[name]["contended" if contended else "idle"].append(got["fps"])
                if not contended and "presented" in got:
                    results[name]["presented"].append(got["presented"])
                    results[name]["dreams"].append(got["camera_dream_fps"] / got["fps"])
                print(f"  round {r + 1}: {name}, {'contended' if contended else 'idle'}: {got['fps']:.2f} fps "
                      f"({got['breakdown']})", file=sys.stderr, flush=True)
    best_idle = max(statistics.median(v["idle"]) for v in results.values())
    print()
    print("| setting | threads | idle fps | contended fps | contended / idle | idle vs best idle | camera's pace: frames "
          "out ÷ camera frames | camera's pace: dreams a second ÷ idle fps |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name, env, threads in cands:
        idle, busy = statistics.median(results[name]["idle"]), statistics.median(results[name]["contended"])
        rows.append({"setting": name, "env": env, "threads": threads, "idle_fps": idle, "contended_fps": busy,
                     "contended_over_idle": busy / idle, "idle_runs": results[name]["idle"],
                     "contended_runs": results[name]["contended"]})
        shown = f"{statistics.median(results[name]['presented']):.2f}" if results[name]["presented"] else "—"
        dreams = f"{statistics.median(results[name]['dreams']):.2f}" if results[name]["dreams"] else "—"
        rows[-1].update(presented=results[name]["presented"], dreams_over_idle=results[name]["dreams"])
        print(f"| {name} | {threads} | {idle:.2f} | {busy:.2f} | {100 * busy / idle:.0f}% | "
              f"{100 * idle / best_idle:.0f}% | {shown} | {dreams} |")
    print(f"({time.monotonic() - started:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
