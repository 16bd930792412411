"""``render`` in segments on Ray against one process, on the same clip, in the same run
(README, *Renders across machines*; docs/architecture.md, *Renders across machines*).

The clip: two shots of real photographs (scikit-image), a pan and a still one with sensor noise,
``--shot-seconds`` each at 24 fps, dreamed at the clip's size with the default look (1 step a
frame, feedback 0.9), lossless (CRF 0) so frames compare bit for bit.

- **Overhead** (target: >= 0.95x the throughput of one process): one process (the ordinary
  ``render``, 2 threads) against a local Ray cluster of 2 CPUs running 2 tasks of 1 thread, the
  same total threads. Runs take turns; wall and CPU time (Ray's: the driver's, its daemons' and its
  workers', every process below the bench) are both given, the CPU figure being the steadier one
  on a shared machine. Two plans: segments at the cut only, and segments every
  ``--shot-seconds / 2`` with warm-ups (the warm-up frames are dreamed twice, and count against
  the farm).
- **Ray's own costs**: ``ray.init`` of the local cluster, a first trivial task, and the
  cost of one more segment, from the same clip cut into 2 and into 16 segments without warm-up.
- **Seams** (target: the change from frame to frame at a split <= 1.2x the median change inside
  segments): per shot, with the default warm-up and cross-fade, and with none.
- **Identity**: the plan run in one process, one segment after another, against the same plan on
  Ray: frames equal bit for bit.
- **Faults**: one Ray worker killed (SIGKILL) mid-segment: frames present, and the log line.

Run: ``python bench/render_farm.py [--size 320x192] [--shot-seconds 5] [--json FILE]`` (needs the
test and cluster extras: ``pip install -e '.[test,cluster]'``). Random weights: speed does not
depend on their values.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live import threads  # noqa: E402

threads.prepare_environment()

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from live.control.params import Registry  # noqa: E402
from live.model.weights import random_reference  # noqa: E402
from live.render import RenderJob, render  # noqa: E402
from live.render.farm import FarmJob, render_farm  # noqa: E402
from live.render.plan import segment_dir, settle_frames  # noqa: E402

FPS = 24
log = logging.getLogger("bench.render_farm")


def photo(name: str, width: int) -> np.ndarray:
    from importlib.resources import files

    picture = cv2.imread(str(files("skimage") / "data" / name))
    size = (width, round(picture.shape[0] * width / picture.shape[1]))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def write_clip(path: Path, w: int, h: int, frames: int) -> Path:
    """Shot 1: a pan across the cat, 1 px a frame; shot 2: the coffee, still, with sensor noise."""
    pan = photo("chelsea.png", w + frames + 8)
    still = photo("coffee.png", w + 40)
    rng = np.random.default_rng(0)
    pictures = [np.ascontiguousarray(pan[8 : 8 + h, i : i + w]) for i in range(frames)]
    for _ in range(frames):
        noisy = still[10 : 10 + h, 20 : 20 + w].astype(np.int16) + rng.integers(-2, 3, (h, w, 3))
        pictures.append(np.clip(noisy, 0, 255).astype(np.uint8))
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.codec_context.options = {"crf": "12"}
        for i, bgr in enumerate(pictures):
            f = av.VideoFrame.from_ndarray(bgr, format="bgr24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    return path


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


class Setup:
    def __init__(self, clip: Path, weights: Path, size: tuple[int, int], work: Path) -> None:
        self.clip, self.weights, self.size, self.work = clip, weights, size, work
        self.n = 0

    def job(self, name: str, **kw: object) -> RenderJob:
        registry = Registry()
        registry.update({"width": self.size[0], "height": self.size[1]})  # the default look otherwise
        self.n += 1
        return RenderJob(self.clip, self.work / f"{self.n:02d}-{name}.mkv", registry, weights=str(self.weights),
                         backend="torch", device="cpu", progress=False, crf=0, **kw)


def one_process(s: Setup) -> dict:
    threads.apply(2)
    job = s.job("one-process")
    w0, c0 = time.perf_counter(), time.process_time()
    report = render(job)
    return {"frames": report.frames, "dreamed": report.frames, "wall": time.perf_counter() - w0,
            "cpu": time.process_time() - c0, "out": job.target}


def tree_cpu() -> float:
    """CPU seconds (user + system) of every process below this one: Ray's daemons and workers
    (started by ``ray.init`` here), local workers. Linux /proc; a process that ends in between
    takes its seconds with it."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    me, total = os.getpid(), 0.0
    for pid in cpu:
        p = pid
        while p in parents and p != me and p > 1:
            p = parents[p]
        if p == me and pid != me:
            total += cpu[pid]
    return total


def farm(s: Setup, name: str, **kw: object) -> dict:
    threads.apply(2)  # the driver's own work (reading the input, joining) as in the one-process run
    fj = FarmJob(s.job(name), **kw)
    w0, c0, t0 = time.perf_counter(), time.process_time(), tree_cpu()
    report = render_farm(fj)
    wall, driver_cpu, others = time.perf_counter() - w0, time.process_time() - c0, tree_cpu() - t0
    dreamed = sum(seg.frames + seg.warmup + seg.lead for seg in report.plan.segments)
    # The driver's CPU and that of every process below it (Ray's daemons and workers); at least
    # what the tasks themselves reported.
    cpu = driver_cpu + max(others, sum(r.cpu_seconds for r in report.results))
    return {"frames": report.frames, "dreamed": dreamed, "wall": wall, "cpu": cpu,
            "out": fj.render.target, "report": report,
            "setup": statistics.mean(r.setup_seconds for r in report.results) if report.results else 0.0}


def seams(frames: list[np.ndarray], report, shots: list[tuple[int, int]]) -> list[dict]:
    """Per shot: the change at each split against the median change inside segments."""
    starts = {seg.start for seg in report.plan.segments if seg.boundary == "split"}
    change = {i: float(np.abs(frames[i].astype(np.int16) - frames[i - 1]).mean()) for i in range(1, len(frames))}
    out = []
    for a, b in shots:
        at = [change[i] for i in range(a + 1, b) if i in starts]
        inside = [change[i] for i in range(a + 1, b) if i not in starts]
        median = statistics.median(inside)
        out.append({"shot": (a, b), "seams": len(at), "max_at_seam": max(at) if at else None, "median_inside": median,
                    "ratio": max(at) / median if at else None, "max_inside": max(inside)})
    return out


class Killer(threading.Thread):
    """SIGKILLs the first worker seen mid-segment (from its progress file), once it has made
    ``after`` frames: as a machine dies, with no warning to anyone. Gives up after ``timeout`` s
    or when ``stop`` is set; ``killed`` is (segment, pid) or None."""

    def __init__(self, folder: Path, after: int = 5, timeout: float = 300.0) -> None:
        super().__init__(daemon=True)
        self.folder, self.after, self.timeout = folder, after, timeout
        self.killed: tuple[int, int] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.stop.is_set() and self.killed is None and time.monotonic() < deadline:
            for p in self.folder.glob("seg-*.progress") if self.folder.is_dir() else []:
                try:
                    info = json.loads(p.read_text())
                except (OSError, ValueError):
                    continue
                if info["frames"] >= self.after and not info["done"] and info["pid"] != os.getpid():
                    os.kill(info["pid"], signal.SIGKILL)
                    self.killed = (info["segment"], info["pid"])
                    return
            time.sleep(0.005)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="320x192", help="clip and dream size, multiples of 32 (default: %(default)s)")
    ap.add_argument("--shot-seconds", type=float, default=5.0, help="length of each of the two shots")
    ap.add_argument("--turns", type=int, default=2, help="turns of the timed runs (default: %(default)s)")
    ap.add_argument("--throughput-only", action="store_true", help="only the overhead table and Ray's start-up")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    lines = Lines()
    logging.getLogger("live").addHandler(lines)
    logging.getLogger("live").setLevel(logging.INFO)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before Ray is imported: it reads these once
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ["RAY_worker_niceness"] = str(os.nice(0))  # as `render --ray` starts its cluster (Ray's default: 15)
    import ray

    w, h = (int(x) for x in args.size.split("x"))
    per_shot = round(args.shot_seconds * FPS)
    shots = [(0, per_shot), (per_shot, 2 * per_shot)]
    work = Path(tempfile.mkdtemp(prefix="render-farm-bench-"))
    results: dict = {"size": args.size, "frames": 2 * per_shot, "fps": FPS, "cores": threads.cores(),
                     "warmup": settle_frames(0.9)}
    try:
        weights = work / "random.pth"
        torch.save(random_reference(seed=0).state_dict(), weights)
        clip = write_clip(work / "clip.mkv", w, h, per_shot)
        s = Setup(clip, weights, (w, h), work)

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        results["ray_init_s"] = time.perf_counter() - t0
        noop = ray.remote(lambda: os.getpid()).options(num_cpus=1)
        ray.get([noop.remote() for _ in range(4)])  # the workers Ray started with the cluster answer
        trips = []
        for _ in range(20):
            t0 = time.perf_counter()
            ray.get(noop.remote())
            trips.append(time.perf_counter() - t0)
        results["task_round_trip_s"] = statistics.median(trips)

        cuts = {"segment_seconds": 10 * args.shot_seconds, "ray": "local", "threads": 1}  # the cut only
        splits = {"segment_seconds": args.shot_seconds / 2, "ray": "local", "threads": 1}
        runs: dict[str, list[dict]] = {"one": [], "cold": [], "cuts": [], "splits": []}
        runs["cold"].append(farm(s, "ray-cold", **cuts))
        for _ in range(args.turns):  # taking turns, so a load that drifts falls on all
            runs["one"].append(one_process(s))
            runs["cuts"].append(farm(s, "ray-cuts", **cuts))
            runs["splits"].append(farm(s, "ray-splits", **splits))
        base_wall = statistics.mean(r["frames"] / r["wall"] for r in runs["one"])
        base_cpu = statistics.mean(r["frames"] / r["cpu"] for r in runs["one"])
        rows = []
        for key, name in (("one", "one process, `render`, 2 threads"),
                          ("cold", "Ray, 2 tasks x 1 thread, cut only, workers starting"),
                          ("cuts", "Ray, 2 tasks x 1 thread, cut only, warm workers"),
                          ("splits",
                           f"Ray, 2 tasks x 1 thread, split every {args.shot_seconds / 2:g} s, warm workers")):
            rs = runs[key]
            fps = statistics.mean(r["frames"] / r["wall"] for r in rs)
            cfps = statistics.mean(r["frames"] / r["cpu"] for r in rs)
            rows.append({"run": name, "segments": len(rs[0]["report"].plan.segments) if "report" in rs[0] else 1,
                         "frames": rs[0]["frames"], "dreamed": rs[0]["dreamed"], "wall_s": [r["wall"] for r in rs],
                         "fps": fps, "x_wall": fps / base_wall, "cpu_s": [r["cpu"] for r in rs],
                         "x_cpu": cfps / base_cpu})
        results["throughput"] = rows
        results["fresh_workers_s"] = runs["cold"][0]["wall"] - statistics.mean(r["wall"] for r in runs["cuts"])
        if not args.throughput_only:  # the checks: per-segment cost, seams, identity, a killed worker
            few = farm(s, "ray-2", segments=2, warmup=0, ray="local", threads=1)
            many = farm(s, "ray-16", segments=16, warmup=0, ray="local", threads=1)
            results["per_segment_s"] = (many["wall"] - few["wall"]) * 2 / 14
            results["per_segment_cpu_s"] = (many["cpu"] - few["cpu"]) / 14
            results["task_setup_s"] = many["setup"]

            split_run = runs["splits"][0]
            bare = farm(s, "ray-no-warmup", segment_seconds=args.shot_seconds / 2, warmup=0, ray="local", threads=1)
            results["seams"] = {"default warm-up and fade":
                                seams(decoded(split_run["out"]), split_run["report"], shots),
                                "no warm-up, no fade": seams(decoded(bare["out"]), bare["report"], shots)}

            sequential = farm(s, "sequential", segment_seconds=args.shot_seconds / 2, threads=1)
            a, b = decoded(sequential["out"]), decoded(split_run["out"])
            results["identity"] = {"frames": len(a), "equal": sum(np.array_equal(x, y) for x, y in zip(a, b)),
                                   "same_count": len(a) == len(b)}

            killed_out = work / "killed.mkv"
            killer = Killer(segment_dir(killed_out))
            killer.start()
            lines.lines.clear()
            job = s.job("killed")
            job.target = killed_out
            report = render_farm(FarmJob(job, segments=2, ray="local", threads=1))
            killer.stop.set()
            logged = [line for line in lines.lines if "stopped after" in line and "started again" in line]
            results["fault"] = {"killed": killer.killed, "frames": len(decoded(killed_out)), "expected": 2 * per_shot,
                                "restarted": report.restarted, "log": logged[:1]}
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print_tables(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


def print_tables(r: dict) -> None:
    print(f"\nClip {r['size']}, {r['frames']} frames at {FPS} fps (a pan and a still shot), default look, "
          f"{r['cores']} cores; Ray local cluster of 2 CPUs.\n")
    print("| run | segments | frames dreamed | wall s (each run) | frames/s | x one process | CPU s (each run) | "
          "x one process, CPU time |")
    print("|---|---|---|---|---|---|---|---|")
    for row in r["throughput"]:
        walls = ", ".join(f"{x:.1f}" for x in row["wall_s"])
        cpus = ", ".join(f"{x:.1f}" for x in row["cpu_s"])
        print(f"| {row['run']} | {row['segments']} | {row['dreamed']} | {walls} | {row['fps']:.2f} | "
              f"**{row['x_wall']:.2f}x** | {cpus} | {row['x_cpu']:.2f}x |")
    print(f"\nRay start-up: ray.init {r['ray_init_s']:.1f} s; a first render on fresh workers (PyTorch imported, "
          f"the network loaded) {r['fresh_workers_s']:.1f} s longer than on warm ones; an empty task's round trip "
          f"{1000 * r['task_round_trip_s']:.1f} ms")
    if "per_segment_cpu_s" not in r:
        return
    print(f"One more segment (16 segments against 2, no warm-up): {r['per_segment_cpu_s']:.3f} s of CPU, "
          f"{r['per_segment_s']:.2f} s of a worker's wall time; set-up inside a task {r['task_setup_s']:.3f} s\n")
    print("| warm-up | shot | seams | largest change at a seam | median change inside | ratio | largest inside |")
    print("|---|---|---|---|---|---|---|")
    for name, per_shot in r["seams"].items():
        for kind, row in zip(("pan", "still"), per_shot):
            if row["seams"]:
                print(f"| {name} | {kind} | {row['seams']} | {row['max_at_seam']:.2f} | {row['median_inside']:.2f} | "
                      f"**{row['ratio']:.2f}x** | {row['max_inside']:.2f} |")
    i = r["identity"]
    print(f"\nIdentity, one process (one segment after another) vs Ray, same plan: {i['equal']} of {i['frames']} "
          "frames equal bit for bit")
    f = r["fault"]
    print(f"Fault: worker pid {f['killed'][1] if f['killed'] else '?'} killed in segment "
          f"{f['killed'][0] if f['killed'] else '?'}: {f['frames']} of {f['expected']} frames "
          f"({100 * f['frames'] / f['expected']:.0f}%), segments started again: {f['restarted']}; log: "
          f"{f['log'][0] if f['log'] else '(none)'}")


if __name__ == "__main__":
    main()
