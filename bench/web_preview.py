"""What the web page costs the show: live-loop fps with no page, with one page receiving the
preview (a websocket client in its own process), and with the real page open in headless
Chromium, measured in the same run, interleaved (A B C A B C …) so a busy machine's drift hits
every column alike. Target: with one page open and the preview on, fps drops <= 5%.

Also times the loop's side of the preview, ``PreviewOutput.send`` (a reference assignment).

Run: ``python bench/web_preview.py [--size 320x192] [--steps 2] [--seconds 10] [--rounds 3]``.
The Chromium column needs Debian's chromium and Playwright (the test extra); it is skipped,
and says so, without them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from live.app import LiveLoop  # noqa: E402
from live.backends import open_backend  # noqa: E402
from live.benchmark import scene_source  # noqa: E402
from live.control.params import Registry  # noqa: E402
from live.model import load_model  # noqa: E402
from live.outputs import Fanout  # noqa: E402
from live.web.preview import PreviewOutput  # noqa: E402
from live.web.server import WebServer  # noqa: E402

WS_CLIENT = """
import asyncio, sys, aiohttp
async def main():
    async with aiohttp.ClientSession() as s, s.ws_connect(sys.argv[1]) as ws:
        await ws.send_json({"op": "preview", "on": True})
        async for m in ws:
            if m.type == aiohttp.WSMsgType.BINARY:
                await ws.send_json({"op": "ack"})
asyncio.run(main())
"""

CHROMIUM_PAGE = """
import sys, tempfile, time
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    ctx = p.chromium.launch_persistent_context(tempfile.mkdtemp(), executable_path="/usr/bin/chromium", headless=True,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run"])
    page = ctx.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(sys.argv[1])
    page.wait_for_selector(".connection.live", timeout=60000)
    print("open", flush=True)
    while True:
        time.sleep(1)
"""


def _window(loop: LiveLoop, seconds: float, cpu: list[float] | None = None) -> float:
    """The loop's fps over ``seconds``; appends the process's CPU ms per frame to ``cpu``."""
    start, t0, c0 = loop.clock.frames, time.monotonic(), time.process_time()
    time.sleep(seconds)
    frames = loop.clock.frames - start
    if cpu is not None:
        cpu.append(1e3 * (time.process_time() - c0) / max(frames, 1))
    return frames / (time.monotonic() - t0)


def _web_cpu() -> float:
    """CPU seconds used so far by the web server's threads (server loop and JPEG encoder)."""
    total = 0.0
    for t in threading.enumerate():
        if t.name.startswith("web-") and t.ident is not None:
            try:
                total += time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            except OSError:
                pass  # the thread just ended
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="320x192")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    preview = PreviewOutput()
    frame = np.zeros((h, w, 3), np.uint8)
    n = 200_000
    t = time.perf_counter()
    for _ in range(n):
        preview.send(frame)
    send_ns = (time.perf_counter() - t) / n * 1e9

    model = load_model("random")
    backend = open_backend("torch", model, "cpu")
    registry = Registry()
    registry.update({"width": w, "height": h, "steps": args.steps, "fps_cap": 240.0, "objective": "inception4c"},
                    "bench")
    outputs = Fanout([preview])
    outputs.open(w, h, 30)
    loop = LiveLoop(scene_source(w, h), model, backend, registry, outputs, status_every=3600,
                    present="dream")  # frames pulled as fast as the dream takes them, each dreamed
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    chromium = Path("/usr/bin/chromium").exists()
    try:
        import playwright  # noqa: F401
    except ImportError:
        chromium = False

    columns: dict[str, list[float]] = {"no page": [], "one websocket client, preview on": []}
    if chromium:
        columns["Chromium page (phone size), preview on"] = []
    frames_sent: dict[str, list[float]] = {k: [] for k in columns}
    web_share: dict[str, list[float]] = {k: [] for k in columns}  # web threads' CPU / the process's
    cpu_per_frame: dict[str, list[float]] = {k: [] for k in columns}  # the show process's CPU ms a frame
    with WebServer(registry, port=0, preview=preview, status=loop.status) as web:
        url = web.url
        _window(loop, 3.0)  # warm-up: first frames, allocator, threads
        names = list(columns)
        for round_ in range(args.rounds):
            # rotate the order so no column always follows the teardown of the same other one
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                proc = None
                if name.startswith("one websocket"):
                    proc = subprocess.Popen([sys.executable, "-c", WS_CLIENT, url.replace("http", "ws") + "ws"])
                    time.sleep(1.0)
                elif name.startswith("Chromium"):
                    proc = subprocess.Popen([sys.executable, "-c", CHROMIUM_PAGE, url], stdout=subprocess.PIPE,
                                            text=True)
                    proc.stdout.readline()  # "open": the page is connected
                    time.sleep(1.0)
                sent = web.counts["frames_sent"]
                t0, cpu0, web0 = time.monotonic(), time.process_time(), _web_cpu()
                columns[name].append(_window(loop, args.seconds, cpu_per_frame[name]))
                frames_sent[name].append((web.counts["frames_sent"] - sent) / (time.monotonic() - t0))
                web_share[name].append((_web_cpu() - web0) / max(time.process_time() - cpu0, 1e-9))
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
                    time.sleep(3.0)  # Chromium's teardown takes CPU: let it finish outside every window
    stop.set()
    thread.join(60)
    outputs.close()

    base = columns["no page"]
    print(f"live loop {w}x{h}, {args.steps} steps, inception4c, torch on cpu ({torch.get_num_threads()} threads), "
          f"{args.rounds} rounds of {args.seconds:g} s, interleaved in rotating order; ratios are per round "
          "against that round's no-page window, then the median")
    print(f"{'':<40} {'loop fps':>9} {'vs no page':>11} {'CPU ms/frame':>13} {'vs no page':>11} "
          f"{'preview fps':>12} {'web threads CPU':>16}")
    for name, values in columns.items():
        ratio = statistics.median(v / b for v, b in zip(values, base))
        cpu = statistics.median(c / b for c, b in zip(cpu_per_frame[name], cpu_per_frame["no page"]))
        print(f"{name:<40} {statistics.median(values):>9.2f} {ratio:>10.1%} "
              f"{statistics.median(cpu_per_frame[name]):>13.1f} {cpu:>10.1%} "
              f"{statistics.median(frames_sent[name]):>12.1f} {statistics.median(web_share[name]):>15.1%}")
    print("(CPU ms/frame: the show process's CPU time per loop frame, all threads; on a CPU-bound show fps "
          "goes as its inverse, and it is far less disturbed by other jobs than fps is.\n web threads CPU: the "
          "web server's and encoder's CPU time as a share of the whole process's)")
    if not chromium:
        print("(Chromium column skipped: /usr/bin/chromium or playwright missing)")
    print(f"PreviewOutput.send on the loop's thread: {send_ns:.0f} ns a frame")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
