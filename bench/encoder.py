"""What recording or streaming costs the show: CPU of the H.264 encoder at 1280x720, 30 fps, and
the time ``send`` takes from the frame loop, each against a baseline measured in the same run.

- **Encoder CPU** (target: <= 15% of one core for libx264 at 720p30). The frames are paced in
  real time (30 fps, a panning photograph, as detailed as a dream) and the encoder thread's own
  CPU time is measured (``time.thread_time``; libx264 runs on that thread, one thread). Baseline:
  what a competent PyAV user writes, libx264 ``veryfast`` with FFmpeg's defaults (frame threads,
  look-ahead, B-frames) encoding the same frames in a plain loop, measured as process CPU time.
- **Cost to the loop** (target: <= 1 frame): the frame loop's ``Fanout.send`` with the stream
  among its outputs against the same fan-out without it (a headless ``NullOutput`` only).

Run: ``python bench/encoder.py [--seconds S] [--json FILE]``. CPU figures are CPU time, not wall
time, because the machine may be shared: they hold however busy the other cores are.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.outputs import Fanout, NullOutput  # noqa: E402
from live.outputs.encoder import EncoderOutput, EncoderSettings  # noqa: E402

W, H, FPS = 1280, 720, 30


def frames(n: int) -> list[np.ndarray]:
    """A photograph panned and zoomed slowly: real detail, real motion."""
    from importlib.resources import files

    photo = cv2.imread(str(files("skimage") / "data" / "astronaut.png"))
    if photo is None:
        rng = np.random.default_rng(0)
        photo = cv2.GaussianBlur(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), (9, 9), 0)
    big = cv2.resize(photo, (W + 400, H + 300), interpolation=cv2.INTER_CUBIC)
    return [np.ascontiguousarray(big[(i * 2) % 300 : (i * 2) % 300 + H, (i * 3) % 400 : (i * 3) % 400 + W])
            for i in range(n)]


def plain_pyav(pictures: list[np.ndarray]) -> float:
    """CPU seconds per frame of a plain PyAV libx264 veryfast encode of the same frames."""
    import io

    import av

    out = av.open(io.BytesIO(), "w", format="mpegts")
    s = out.add_stream("libx264", rate=FPS)
    s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    s.options = {"preset": "veryfast"}
    t = time.process_time()
    start = time.monotonic()
    for i, img in enumerate(pictures):
        time.sleep(max(0.0, start + i / FPS - time.monotonic()))  # paced like a show, as ours is
        f = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
        f.pts = i
        for p in s.encode(f):
            out.mux(p)
    for p in s.encode(None):
        out.mux(p)
    cpu = time.process_time() - t
    out.close()
    return cpu / len(pictures)


def ours(pictures: list[np.ndarray], preset: str) -> dict[str, float]:
    """This project's stream encoder, paced at 30 fps: its thread's CPU share and the loop's
    send time with and without it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:  # a receiver that reads nothing
        sink.bind(("127.0.0.1", 0))
        port = sink.getsockname()[1]
        out = EncoderOutput(f"udp://127.0.0.1:{port}", EncoderSettings(bitrate=4_500_000, preset=preset),
                            queue_size=4)
        with_stream, alone = Fanout([NullOutput(), out]), Fanout([NullOutput()])
        with_stream.open(W, H, FPS)
        alone.open(W, H, FPS)
        while out.state != "live":
            time.sleep(0.05)
        out.cpu_seconds, out._opened_at = 0.0, time.monotonic()  # count the paced part only
        sends, base = [], []
        start = time.monotonic()
        for i, img in enumerate(pictures):
            time.sleep(max(0.0, start + i / FPS - time.monotonic()))
            t = time.perf_counter()
            alone.send(img, time.monotonic())
            base.append(time.perf_counter() - t)
            t = time.perf_counter()
            with_stream.send(img, time.monotonic())
            sends.append(time.perf_counter() - t)
        share = out.cpu_share
        encoded, dropped = out.written, out.dropped
        with_stream.close()
        alone.close()
    return {"cpu_share": share, "cpu_ms_per_frame": 1e3 * out.cpu_seconds / max(encoded, 1),
            "send_ms": 1e3 * statistics.median(sends), "send_p99_ms": 1e3 * sorted(sends)[int(0.99 * len(sends))],
            "baseline_send_ms": 1e3 * statistics.median(base), "encoded": encoded, "dropped": dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pictures = frames(int(args.seconds * FPS))
    plain = plain_pyav(pictures)
    rows = {"plain_pyav_veryfast_cpu_ms_per_frame": 1e3 * plain}
    print(f"1280x720 @ {FPS} fps, {len(pictures)} frames; CPU time, not wall time")
    print(f"{'encoder':<44} {'CPU ms/frame':>12} {'% of a core at 30 fps':>22}")
    print(f"{'plain PyAV libx264 veryfast (FFmpeg defaults)':<44} {1e3 * plain:>12.2f} {100 * plain * FPS:>21.1f}%")
    for preset in ("veryfast", "superfast", "ultrafast"):
        r = ours(pictures, preset)
        rows[preset] = r
        label = f"this stream encoder, libx264 {preset}"
        print(f"{label:<44} {r['cpu_ms_per_frame']:>12.2f} {100 * r['cpu_share']:>21.1f}%"
              f"   ({r['encoded']} encoded, {r['dropped']} dropped)")
    v = rows["veryfast"]
    print(f"\nthe loop's send: {v['send_ms']:.2f} ms median, {v['send_p99_ms']:.2f} ms p99 with the stream, "
          f"{v['baseline_send_ms']:.3f} ms without; a frame is {1e3 / FPS:.1f} ms "
          f"({v['send_p99_ms'] / (1e3 / FPS):.2f} frames at p99)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
