"""OSC under a flood: one sender at N messages a second for S seconds, while the show dreams.

Target: 2,000 messages a second for 10 s from one sender, every datagram received (none dropped
by the kernel) and the show ending at the last value sent, on the 2-core machine while it dreams.
The baseline, measured in the same run, is the same flood at an idle show (no dream loop): the
columns compare how far the OSC thread falls behind (the backlog it drains after the last send)
with and without the dream competing for the cores.

Run: ``python bench/osc_flood.py [--rate 2000] [--seconds 10] [--size 320x192] [--steps 2]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.control.osc import OscServer  # noqa: E402
from live.control.params import Registry  # noqa: E402

LAST = 0.3125  # the final value sent (exact in float32): the show must end on it

# The sender runs in its own process, as a controller would: its pacing does not share the GIL
# with the show. It sends in 10 ms batches, catching up at once when the machine made it late.
SENDER = """
import socket, sys, time
from pythonosc.osc_message_builder import build_msg
host, port = sys.argv[1], int(sys.argv[2])
rate, seconds, last = (float(v) for v in sys.argv[3:6])
n = int(rate * seconds)
dgrams = [build_msg("/dream/mix", [((i * 7919) % 1000) / 1000.0]).dgram for i in range(n - 1)]
dgrams.append(build_msg("/dream/mix", [last]).dgram)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
batch = max(1, int(rate / 100))
start = time.monotonic()
for i in range(0, n, batch):
    wait = start + i / rate - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    for d in dgrams[i:i + batch]:
        sock.sendto(d, (host, port))
print(n, time.monotonic() - start)
"""


def udp_drops(port: int) -> int | None:
    """The kernel's count of datagrams dropped for the UDP socket bound to ``port`` (Linux), or None."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            return int(fields[-1])
    return None


def flood(rate: float = 2000.0, seconds: float = 10.0, *, dream: tuple[int, int, int] | None = (320, 192, 2),
          model=None) -> dict[str, float]:
    """Send ``rate`` × ``seconds`` messages to a fresh show's OSC port; returns the figures.

    ``dream``: (width, height, steps) of a live loop dreaming on the test scene meanwhile, or None.
    """
    registry = Registry()
    stop = threading.Event()
    loop = thread = None
    if dream is not None:
        import torch

        from live.app import LiveLoop
        from live.backends.torch_backend import TorchBackend
        from live.benchmark import scene_source
        from live.model import load_model
        from live.outputs import Fanout, NullOutput

        w, h, steps = dream
        model = model or load_model("random", progress=False)
        registry.update({"width": w, "height": h, "steps": steps, "fps_cap": 240})
        outputs = Fanout([NullOutput()])
        outputs.open(w, h, 240)
        loop = LiveLoop(scene_source(w, h), model, TorchBackend(model, torch.device("cpu")), registry, outputs,
                        status_every=3600, present="dream")  # frames pulled as the dream takes them
        thread = threading.Thread(target=loop.run, args=(stop,), name="dream")
        thread.start()
    try:
        with OscServer(registry, port=0) as server:
            port = server.address[1]
            drops_before = udp_drops(port) or 0
            frames_before = loop.clock.frames if loop else 0
            done = subprocess.run([sys.executable, "-c", SENDER, "127.0.0.1", str(port), str(rate), str(seconds),
                                   str(LAST)], capture_output=True, text=True, check=True, timeout=seconds * 10 + 60)
            sent_n, sending = done.stdout.split()
            sent, finished = int(sent_n), time.monotonic()
            # drain: the OSC thread works through what the kernel queued; stop when all arrived or
            # nothing has arrived for 5 s (the rest was dropped)
            last_count, last_change = -1, time.monotonic()
            while server.stats["received"] < sent and time.monotonic() - last_change < 5.0:
                count = server.stats["received"]
                if count != last_count:
                    last_count, last_change = count, time.monotonic()
                time.sleep(0.01)
            drained = time.monotonic() - finished
            received = server.stats["received"]
            drops = (udp_drops(port) or 0) - drops_before
            frames = (loop.clock.frames - frames_before) if loop else 0
            buffer = server.receive_buffer
    finally:
        stop.set()
        if thread is not None:
            thread.join()
    return {
        "sent": sent, "received": received, "kernel_drops": drops, "send_seconds": float(sending),
        "drain_seconds": drained if received == sent else float("nan"), "last_value_ok": registry.get("mix") == LAST,
        "frames_dreamed": frames, "receive_buffer": buffer,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="320x192")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    idle = flood(args.rate, args.seconds, dream=None)
    busy = flood(args.rate, args.seconds, dream=(w, h, args.steps))
    print(f"OSC flood: one sender, {args.rate:g} messages/s for {args.seconds:g} s, receive buffer "
          f"{busy['receive_buffer']} bytes")
    print(f"{'show':>22} {'sent':>7} {'received':>9} {'kernel drops':>13} {'backlog drained':>16} "
          f"{'ends at last value':>19} {'frames dreamed':>15}")
    for name, r in (("idle (baseline)", idle), (f"dreaming {w}x{h} x{args.steps}", busy)):
        print(f"{name:>22} {r['sent']:>7} {r['received']:>9} {r['kernel_drops']:>13} {r['drain_seconds']:>14.2f} s "
              f"{'yes' if r['last_value_ok'] else 'NO':>19} {r['frames_dreamed']:>15}")


if __name__ == "__main__":
    main()
