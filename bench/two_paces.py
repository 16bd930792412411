"""Two paces measured: the show at the camera's rate against the one-pace show, in the same run.

A real photograph panned 4 px a frame (to and fro), 1280x720, decoded once and played in real
time at 30 fps by a camera thread; the real show (presenter and dreamer threads), headless,
dream 640x352, the default look (the registry's defaults), random weights (speed and the
warping error do not depend on their values). Presentations, run in turns for ``--rounds``:

- ``camera``: every camera frame out, the newest dream carried onto it (the default);
- ``dream``: each frame waits for its own dream (``--present dream``, the one-pace show);
- ``unwarped``: every camera frame out with the newest residual laid on it as it is (not moved);
- ``camera, medium flow``: as ``camera``, the dream carried along DIS ``medium`` instead of ``fast``.

Columns, each named for what it is:

- presented ÷ camera: frames out over the frames the camera made meanwhile (target ≥ 0.95);
- dream rate camera ÷ dream mode: what the presenter costs the dream (target ≥ 0.8);
- glass-to-output latency p50/p95 in camera frames (target ≤ 1.5 at the camera's pace);
- warping error (Ruder et al. 2016): mean |O_t − warp(O_t−1)| over pixels where the camera's own
  flow is consistent both ways, the flow DIS ``medium`` at full resolution between the camera
  frames: (a) the dream mode's frames held at the camera's rate, (b) unwarped, (c) camera mode.
  Targets (c) ≤ 0.5 (a) and ≤ 0.8 (b), strength (mean |O − its camera frame|) within 10% of (a);
- repeated frames: the share of frames out identical to the one before (target 0 in camera mode);
- flow for carrying, measured directly vs accumulated frame to frame: end-point error against
  the full-resolution flow, and milliseconds per presented frame;
- receiver start-up: seconds from starting a receiver on a UDP MPEG-TS stream of the show until
  its first decoded frame, Debian's ``ffmpeg`` (5.1 on Debian 12) as it starts by default and with
  ``-scan_all_pmts 0``, and PyAV, for the camera's pace, the dream's pace, and the dream's pace
  declared at 60 fps (how every stream was opened before); the baseline is a stream FFmpeg makes
  itself at the same size, rate, keyframe interval and bitrate, received the same way.

``--receivers-only`` runs only the receivers' table (about two minutes).

Run: ``python bench/two_paces.py [--seconds 8] [--rounds 2] [--device cpu] [--json FILE]``; the GPU
case: ``--device cuda --camera 1920x1080 --fps 60 --dream 960x544 --steps 4``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from live import threads  # noqa: E402

threads.prepare_environment()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from live.backends.torch_backend import TorchBackend  # noqa: E402
from live.benchmark import PacedFrames, PacedFigures, bench_model, decode, paced_run, write_panning_clip  # noqa: E402
from live.control.params import Registry  # noqa: E402
from live.handoff import Dream, Shot  # noqa: E402
from live.reproject import SAME, Reprojector, agree, pixel_grid  # noqa: E402
from live.sources import Frame  # noqa: E402
from live.temporal import FlowEstimator  # noqa: E402

CAMERA = (1280, 720)
DREAM = (640, 352)
FPS = 30.0
LOOK_KEYS = ("steps", "feedback", "step_size", "octaves", "octave_scale", "jitter", "objective", "mix")


class Unwarped(Reprojector):
    """(b): the newest residual laid on the frame as it is, not moved (same scene only)."""

    def field(self, dream: Dream, shot: Shot):
        if dream.residual is None or dream.shot.epoch != shot.epoch:
            return None
        return SAME

    def carry(self, dream: Dream, shot: Shot):
        return dream.residual if self.field(dream, shot) is SAME else None


REPROJECTORS = {"unwarped": lambda: Unwarped(), "camera, medium flow": lambda: Reprojector("medium", "direct")}


# ----------------------------------------------------------------------------- warping error
class Judge:
    """The warping error and strength of shown frames against the camera, with the camera's own
    flow (DIS medium, full resolution) cached per pair of clip positions."""

    def __init__(self, source: PacedFrames) -> None:
        self.source = source
        self._flows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        h, w = source.frames[0].shape[:2]
        self.grid = pixel_grid(h, w)
        self.seconds = 0.0

    def _grey(self, index: int) -> np.ndarray:
        return cv2.cvtColor(self.source.frame(index), cv2.COLOR_BGR2GRAY)

    def flow(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Backward flow from camera frame ``index`` to ``index - 1`` and where it can be trusted."""
        if index not in self._flows:
            t = time.perf_counter()
            now, then = self._grey(index), self._grey(index - 1)
            back = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(now, then, None)
            fwd = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(then, now, None)
            where = self.grid + back
            h, w = now.shape
            inside = (where[..., 0] >= 0) & (where[..., 0] <= w - 1) & (where[..., 1] >= 0) & (where[..., 1] <= h - 1)
            self._flows[index] = (back, (agree(back, fwd, self.grid) > 0) & inside)
            self.seconds += time.perf_counter() - t
        return self._flows[index]

    def warping_error(self, shown: list[tuple[int, np.ndarray]]) -> float:
        """Mean masked |O_t − warp(O_t−1)| over consecutive camera positions (grey levels)."""
        errors = []
        for (i0, o0), (i1, o1) in zip(shown, shown[1:]):
            if i1 != i0 + 1:
                continue
            back, mask = self.flow(i1)
            warped = cv2.remap(o0, self.grid + back, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            diff = np.abs(o1.astype(np.float32) - warped.astype(np.float32)).mean(axis=2)
            errors.append(float(diff[mask].mean()))
        return float(np.mean(errors)) if errors else float("nan")

    def strength(self, shown: list[tuple[int, np.ndarray]]) -> float:
        """Mean |O − the camera frame O was composed on| (grey levels)."""
        return float(np.mean([np.abs(o.astype(np.float32) - self.source.frame(i).astype(np.float32)).mean()
                              for i, o in shown]))


def held_at_camera_rate(run: PacedFigures, kept: dict[int, np.ndarray]) -> list[tuple[int, np.ndarray, int]]:
    """(a): for each camera frame of the run, the dream-mode frame on screen while it was the
    newest (the last one sent before the next camera frame came), where that frame was kept:
    (camera position, frame shown, the position that frame was dreamed on)."""
    sent = sorted((t, i) for i, t in run.sent_at)
    if not sent:
        return []
    times = [t for t, _ in sent]
    held = []
    for (stamp, index), (next_stamp, _) in zip(run.published, run.published[1:]):
        if stamp < times[0] or stamp > times[-1]:
            continue  # before this run's first frame out, or after its last
        k = bisect.bisect_right(times, next_stamp) - 1
        shown = sent[k][1]
        if shown in kept:
            held.append((index, kept[shown], shown))
    return held


# ----------------------------------------------------------------------------- flow for carrying
def compare_flows(source: PacedFrames, gaps: tuple[int, ...] = (1, 3, 6, 10), starts: int = 5) -> dict:
    """Direct against accumulated: end-point error (dream-size pixels) against DIS medium at full
    resolution, over pixels where that flow is consistent both ways, and ms per presented frame."""
    greys = FlowEstimator("medium")
    full_w = source.frames[0].shape[1]
    ways = [(m, p) for m in ("direct", "accumulated") for p in ("fast", "medium")]
    errors: dict[tuple[str, str], dict[int, list[float]]] = {w: {g: [] for g in gaps} for w in ways}
    for gap in gaps:
        for s in range(starts):
            k = 7 + 13 * s
            now = cv2.cvtColor(source.frame(k + gap), cv2.COLOR_BGR2GRAY)
            then = cv2.cvtColor(source.frame(k), cv2.COLOR_BGR2GRAY)
            ref = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(now, then, None)
            fwd = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(then, now, None)
            grid = pixel_grid(*ref.shape[:2])
            trusted = agree(ref, fwd, grid)
            shots = [Shot(Frame(source.frame(i), i / FPS, i + 1), greys.grey(source.frame(i)), 0)
                     for i in range(k, k + gap + 1)]
            dream = Dream(torch.zeros(1, 3, 8, 8), shots[0], 1, 0.0, 0.0)
            for method, preset in errors:
                rp = Reprojector(preset, method)
                for shot in shots:
                    rp.observe(shot)
                got = rp._direct(dream, shots[-1]) if method == "direct" else rp._accumulated(dream, shots[-1])
                if got is None:
                    continue
                back = got[0]
                sh, sw = back.shape[:2]
                mask = cv2.resize(trusted, (sw, sh), interpolation=cv2.INTER_AREA) > 0.99
                ref_small = cv2.resize(ref, (sw, sh), interpolation=cv2.INTER_AREA) * (sw / full_w)
                errors[method, preset][gap].append(float(np.linalg.norm(back - ref_small, axis=2)[mask].mean()
                                                         * DREAM[0] / sw))
    out: dict[str, dict] = {}
    for method, preset in errors:
        way = f"{method}, DIS {preset}"
        out[way] = {g: float(np.mean(v)) if v else float("nan") for g, v in errors[method, preset].items()}
        # cost per presented frame: a new dream every 6 frames, 60 frames, a dream-size residual
        rp = Reprojector(preset, method)
        residual = torch.zeros(1, 3, DREAM[1], DREAM[0])
        dream = None
        wall, cpu = 0.0, 0.0
        for i in range(60):
            shot = Shot(Frame(source.frame(i), i / FPS, i + 1), greys.grey(source.frame(i)), 0)
            t, c = time.perf_counter(), time.process_time()  # OpenCV's own threads included
            rp.observe(shot)
            if dream is not None:
                rp.carry(dream, shot)
            wall += time.perf_counter() - t
            cpu += time.process_time() - c
            if i % 6 == 0:
                dream = Dream(residual, shot, i + 1, 0.0, 0.0)
        out[way]["ms_per_frame"] = 1e3 * wall / 60
        out[way]["cpu_ms_per_frame"] = 1e3 * cpu / 60
    return out


# ----------------------------------------------------------------------------- receivers
def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ffmpeg_version() -> str:
    """"ffmpeg 5.1.9" from ``ffmpeg -version``, or "ffmpeg" when it will not say."""
    exe = shutil.which("ffmpeg")
    try:
        first = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30).stdout.split()
        return f"ffmpeg {first[2].split('-')[0]}" if exe and len(first) > 2 else "ffmpeg"
    except (OSError, subprocess.SubprocessError, TypeError):
        return "ffmpeg"


def ffmpeg_startup(url: str, timeout: float, *options: str) -> float | None:
    """Seconds from starting the ``ffmpeg`` command line on ``url`` until it has decoded a frame.

    The command line (and ffplay) set ``scan_all_pmts`` on every MPEG-TS input, which keeps
    ``avformat_find_stream_info`` reading its whole analyze duration (5 s of stream) whatever the
    sender does; ``options`` such as ``-scan_all_pmts 0`` go before ``-i``."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    started = time.monotonic()
    try:
        subprocess.run([exe, "-hide_banner", "-loglevel", "error", *options, "-i", url, "-frames:v", "1", "-f", "null",
                        "-"], timeout=timeout, capture_output=True, check=False)
    except subprocess.TimeoutExpired:
        return float("inf")
    return time.monotonic() - started


def ffmpeg_made_stream(url: str) -> subprocess.Popen | None:
    """The baseline: a stream FFmpeg itself makes for the same receivers, 1280x720 at the camera's
    rate, libx264 ``veryfast``/``zerolatency``, a keyframe every 2 s and 4500 kb/s as the show's."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    return subprocess.Popen(
        [exe, "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i",
         f"testsrc2=s={CAMERA[0]}x{CAMERA[1]}:r={FPS:g}", "-c:v", "libx264", "-preset", "veryfast", "-tune",
         "zerolatency", "-g", str(round(2 * FPS)), "-b:v", "4500k", "-f", "mpegts", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def receivers_of(port: int, name: str, timeout: float) -> dict:
    """Each receiver joins the running stream in turn, as a venue's receiver joins a show."""
    url = f"udp://127.0.0.1:{port}"
    got = {"receivers": name, "ffmpeg": ffmpeg_startup(url, timeout),
           "ffmpeg_no_scan": ffmpeg_startup(url, timeout, "-scan_all_pmts", "0"), "pyav": pyav_startup(url, timeout)}
    print(f"  receivers, {name}: ffmpeg {got['ffmpeg']} s, ffmpeg -scan_all_pmts 0 {got['ffmpeg_no_scan']} s, "
          f"PyAV {got['pyav']} s", file=sys.stderr, flush=True)
    return got


def pyav_startup(url: str, timeout: float) -> float:
    import av

    started = time.monotonic()
    result: list[float] = []

    def receive() -> None:
        try:
            with av.open(url, timeout=timeout) as container:
                next(container.decode(video=0))
                result.append(time.monotonic() - started)
        except Exception:  # noqa: BLE001 - a receiver that gave up: no figure
            pass

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else float("inf")


def receiver_startup(model, backend, source: PacedFrames, look: dict, timeout: float) -> list[dict]:
    """Start-up of each receiver on the show's UDP stream, per presentation, and on a stream
    FFmpeg makes itself (the baseline, in the same run)."""
    from live.outputs.encoder import EncoderOutput

    rows = []
    port = free_udp_port()
    baseline = ffmpeg_made_stream(f"udp://127.0.0.1:{port}?pkt_size=1316")
    if baseline is not None:
        try:
            time.sleep(3.0)  # the stream runs before anyone listens
            rows.append(receivers_of(port, "made by ffmpeg itself (baseline)", timeout))
        finally:
            baseline.kill()
            baseline.wait()
    for name, present, declared in (("camera's pace", "camera", FPS), ("dream's pace", "dream", FPS),
                                    ("dream's pace declared at 60 fps (before)", "dream", 60.0)):
        port = free_udp_port()
        url = f"udp://127.0.0.1:{port}?pkt_size=1316"
        stream = EncoderOutput(url, name="bench stream")
        stop = threading.Event()
        holder: dict = {}

        def show() -> None:
            holder["figures"], _ = paced_run(model, backend, source, DREAM, 10 * timeout, present, look=look,
                                             outputs=[stream], rate=declared, stop=stop)

        thread = threading.Thread(target=show, daemon=True)
        thread.start()
        time.sleep(3.0)  # the stream runs before anyone listens, as a venue's receiver joins a show
        rows.append(receivers_of(port, name, timeout))
        stop.set()
        thread.join(60)
        stream.close()
    return rows


# ----------------------------------------------------------------------------- the run
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per run (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="turns of all presentations (default: %(default)s)")
    parser.add_argument("--keep", type=int, default=45, help="frames judged per camera-pace run (default: %(default)s)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--camera", default="1280x720", help="camera size (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=30.0, help="camera rate (default: %(default)s)")
    parser.add_argument("--dream", default="640x352", help="dream size (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="steps per dream (default: the look's)")
    parser.add_argument("--receiver-timeout", type=float, default=30.0)
    parser.add_argument("--no-receivers", action="store_true")
    parser.add_argument("--receivers-only", action="store_true", help="only the stream receivers' start-up table")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    global CAMERA, DREAM, FPS  # noqa: PLW0603 - the run's sizes, read by the helpers above
    CAMERA = tuple(int(v) for v in args.camera.split("x"))  # type: ignore[assignment]
    DREAM = tuple(int(v) for v in args.dream.split("x"))  # type: ignore[assignment]
    FPS = args.fps
    threads.apply()
    device = torch.device(args.device)
    model, _ = bench_model("random")
    backend = TorchBackend(model, device)
    defaults = Registry().snapshot()
    look = {k: defaults[k] for k in LOOK_KEYS}
    if args.steps is not None:
        look["steps"] = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        clip, kind = write_panning_clip(Path(tmp) / "pan.mp4", *CAMERA, frames=90, step=4, fps=FPS)
        frames = decode(clip)
    source = PacedFrames(frames, FPS, kind)
    print(f"Two paces: {kind} {CAMERA[0]}x{CAMERA[1]} at {FPS:g} fps in real time, dream {DREAM[0]}x{DREAM[1]}, "
          f"look {look}, {args.device}, {threads.current().describe()}; {args.rounds} rounds of {args.seconds:g} s "
          "per presentation, in turns", flush=True)
    started = time.monotonic()
    runs: dict[str, list[PacedFigures]] = {"camera": [], "dream": [], "unwarped": [], "camera, medium flow": []}
    loops: dict[str, object] = {}
    if args.receivers_only:
        with source:
            receivers = receiver_startup(model, backend, source, look, args.receiver_timeout)
        print_receivers(receivers)
        print(f"({time.monotonic() - started:.0f} s)")
        return
    with source:
        for r in range(args.rounds):
            for name in runs:
                present = "dream" if name == "dream" else "camera"
                after = 0.4 * args.seconds if present == "camera" else 0.0  # judged once dreams come
                keep = args.keep if present == "camera" else 10_000
                figures, loop = paced_run(model, backend, source, DREAM, args.seconds, present, look=look,
                                          judge_after=after, keep=keep, loop=loops.get(name),  # type: ignore[arg-type]
                                          reprojector=None if name in loops else REPROJECTORS.get(name, lambda: None)())
                loops[name] = loop
                runs[name].append(figures)
                print(f"  round {r + 1}, {name}: {figures.presented} out of {figures.delivered} camera frames, "
                      f"{figures.dreams} dreams ({figures.dream_fps:.2f}/s), latency p50 "
                      f"{figures.latency_frames(0.5):.2f} frames; {figures.breakdown}"
                      + (f"; GPU {figures.gpu_breakdown}" if figures.gpu_breakdown else ""), file=sys.stderr, flush=True)
        receivers = [] if args.no_receivers else receiver_startup(model, backend, source, look, args.receiver_timeout)
    judge = Judge(source)
    results = summarise(runs, judge)
    flows = compare_flows(source)  # the camera thread stopped: its process CPU time is the flows' alone
    print_tables(results, flows, receivers)
    print(f"({time.monotonic() - started:.0f} s; the judge's flows took {judge.seconds:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results, "flows": flows, "receivers": receivers}, indent=2,
                                        default=str))


def summarise(runs: dict[str, list[PacedFigures]], judge: Judge) -> dict:
    def pooled(name: str, what) -> float:
        return float(np.mean([what(f) for f in runs[name]]))

    out: dict[str, dict] = {}
    for name, figures in runs.items():
        latency = sorted(x for f in figures for x in f.latency_ms)
        period = figures[0].period
        out[name] = {
            "presented_over_camera": sum(f.presented for f in figures) / max(sum(f.delivered for f in figures), 1),
            "fps_out": pooled(name, lambda f: f.presented / f.seconds),
            "dream_fps": pooled(name, lambda f: f.dream_fps),
            "latency_p50_frames": latency[len(latency) // 2] / (1e3 * period) if latency else float("nan"),
            "latency_p95_frames": latency[int(0.95 * len(latency))] / (1e3 * period) if latency else float("nan"),
            "latency_p50_ms": latency[len(latency) // 2] if latency else float("nan"),
            "latency_p95_ms": latency[int(0.95 * len(latency))] if latency else float("nan"),
            "repeated_share": sum(f.repeats for f in figures) / max(sum(f.presented for f in figures), 1),
            "dream_age_ms": pooled(name, lambda f: f.dream_age_ms or float("nan")),
            "presenter_cpu_ms_per_frame": pooled(name, lambda f: 1e3 * f.presenter_cpu_s / max(f.presented, 1)),
            "process_cpu_share": pooled(name, lambda f: f.process_cpu_s / f.seconds),
        }
    # warping error and strength, judged on the kept frames of each run
    for name in ("camera", "unwarped", "camera, medium flow"):
        shown = [run.kept for run in runs[name]]
        out[name]["warping_error"] = float(np.mean([judge.warping_error(s) for s in shown]))
        out[name]["strength"] = float(np.mean([judge.strength(s) for s in shown]))
    held_errors, held_strengths = [], []
    for run in runs["dream"]:
        kept = dict(run.kept)
        held = held_at_camera_rate(run, kept)
        held_errors.append(judge.warping_error([(i, o) for i, o, _ in held]))
        held_strengths.append(judge.strength([(k, o) for _, o, k in held]))
        out["dream"]["held_repeated_share"] = float(np.mean([
            a[2] == b[2] for a, b in zip(held, held[1:])])) if len(held) > 1 else float("nan")
    out["dream"]["warping_error"] = float(np.nanmean(held_errors))
    out["dream"]["strength"] = float(np.nanmean(held_strengths))
    return out


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None or x != x else (f"{x:{fmt}}" if x != float("inf") else "no frame")


def print_tables(results: dict, flows: dict, receivers: list[dict]) -> None:
    c, d, u, cf = results["camera"], results["dream"], results["unwarped"], results["camera, medium flow"]
    print()
    print("| presentation | frames out ÷ camera frames | frames out a second | dreams a second | latency p50 / p95 "
          "(camera frames) | latency p50 / p95 (ms) | dream age (ms) | repeated frames | presenter thread CPU ms a frame "
          "| process CPU (cores) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label, r in (("camera's pace (c)", c), ("dream's pace", d), ("camera's pace, residual unwarped (b)", u),
                     ("camera's pace, carried along DIS medium (c')", cf)):
        print(f"| {label} | {_f(r['presented_over_camera'])} | {_f(r['fps_out'], '.1f')} | {_f(r['dream_fps'])} | "
              f"{_f(r['latency_p50_frames'])} / {_f(r['latency_p95_frames'])} | {_f(r['latency_p50_ms'], '.0f')} / "
              f"{_f(r['latency_p95_ms'], '.0f')} | {_f(r['dream_age_ms'], '.0f')} | {_f(r['repeated_share'])} | "
              f"{_f(r['presenter_cpu_ms_per_frame'], '.1f')} | {_f(r['process_cpu_share'])} |")
    print()
    print(f"dream rate, camera's pace ÷ dream's pace: {_f(c['dream_fps'] / d['dream_fps'])} (target ≥ 0.8; carried "
          f"along DIS medium {_f(cf['dream_fps'] / d['dream_fps'])}); frames "
          f"out ÷ camera frames at the camera's pace: {_f(c['presented_over_camera'])} (target ≥ 0.95); dream's pace "
          f"held at the camera's rate repeats {_f(d.get('held_repeated_share'))} of its frames")
    print()
    print("| presentation at the camera's rate | warping error (grey levels) | ÷ (a) | ÷ (b) | strength (grey levels) "
          "| ÷ (a) |")
    print("|---|---|---|---|---|---|")
    for label, r in (("(a) dream's pace, each dream held", d), ("(b) newest residual, unwarped", u),
                     ("(c) camera's pace, carried (DIS fast, the default)", c),
                     ("(c') camera's pace, carried along DIS medium", cf)):
        print(f"| {label} | {_f(r['warping_error'])} | {_f(r['warping_error'] / d['warping_error'])} | "
              f"{_f(r['warping_error'] / u['warping_error'])} | {_f(r['strength'])} | "
              f"{_f(r['strength'] / d['strength'])} |")
    print()
    gaps = [g for g in next(iter(flows.values())) if isinstance(g, int)]
    print("| flow for carrying | " + " | ".join(f"end-point error, {g} frame{'s' if g > 1 else ''} apart (px)"
                                             for g in gaps) + " | ms a frame | CPU ms a frame |")
    print("|---|" + "---|" * (len(gaps) + 2))
    for way, f in flows.items():
        print(f"| {way} | " + " | ".join(_f(f[g]) for g in gaps) + f" | {_f(f['ms_per_frame'], '.1f')} | "
              f"{_f(f['cpu_ms_per_frame'], '.1f')} |")
    print_receivers(receivers)


def print_receivers(receivers: list[dict]) -> None:
    if not receivers:
        return
    ff = ffmpeg_version()
    print()
    print(f"| stream (UDP, MPEG-TS, {CAMERA[0]}x{CAMERA[1]}) | {ff}: s to the first frame | {ff} -scan_all_pmts 0: "
          "s to the first frame | PyAV: s to the first frame |")
    print("|---|---|---|---|")
    for row in receivers:
        print(f"| {row['receivers']} | {_f(row['ffmpeg'], '.1f')} | {_f(row.get('ffmpeg_no_scan'), '.1f')} | "
              f"{_f(row['pyav'], '.1f')} |")


if __name__ == "__main__":
    main()
