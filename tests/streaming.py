"""Test helpers for encoders and streams: a moving test pattern that carries its own frame number,
clips written with PyAV, PSNR, free loopback ports, receivers made with PyAV, and an nginx-rtmp
server started here.

Everything listens on 127.0.0.1 only; every wait is on a condition with a generous deadline.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

BITS = 12  # frame numbers up to 4095, drawn as black/white blocks along the top
BLOCK = 16
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def pattern(i: int, width: int = 320, height: int = 240) -> np.ndarray:
    """Frame ``i`` of a moving test pattern (gradient, a moving disc, bars) with ``i`` encoded
    in the top row, so a receiver can tell which frame it decoded."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = ((x + 3 * i) % 256).astype(np.uint8)
    img[..., 1] = (y * 0.8 + 40).astype(np.uint8)
    img[..., 2] = ((x[::-1] * 0.5 + y * 0.5 + 5 * i) % 256).astype(np.uint8)
    cx = int(width * (0.2 + 0.6 * ((i * 7) % 100) / 100))
    cv2.circle(img, (cx, height * 2 // 3), height // 6, (255, 255, 255), -1)
    cv2.rectangle(img, (0, height - 20), (width, height), ((i * 40) % 256, 80, 200), -1)
    img[: BLOCK + 4, : BITS * BLOCK + 8] = 128
    for b in range(BITS):
        value = 255 if (i >> b) & 1 else 0
        img[2 : 2 + BLOCK, 4 + b * BLOCK : 4 + (b + 1) * BLOCK] = value
    return img


def frame_number(img: np.ndarray) -> int:
    """The number :func:`pattern` drew into ``img``."""
    n = 0
    for b in range(BITS):
        block = img[2 + 4 : 2 + BLOCK - 4, 4 + b * BLOCK + 4 : 4 + (b + 1) * BLOCK - 4]
        if block.mean() > 128:
            n |= 1 << b
    return n


def write_clip(path: Path, frames: list[np.ndarray], fps: int, *, sound: bool = True,
               codec: str = "libx264") -> Path:
    """``frames`` (BGR) as a clip at ``fps`` (``codec``: libx264 or mjpeg), with a 440 Hz AAC tone
    as long as the picture when ``sound``."""
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream(codec, rate=fps)
        v.width, v.height = frames[0].shape[1], frames[0].shape[0]
        v.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        a = None
        if sound:
            a = c.add_stream("aac", rate=48000)
            a.layout = "mono"
        for i, bgr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(bgr, format="bgr24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        if a is not None:
            samples = int(48000 * len(frames) / fps)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)[None]
            for start in range(0, samples, 1024):
                af = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts = 48000, start
                for p in a.encode(af):
                    c.mux(p)
        for stream in (v, a) if a is not None else (v,):
            for p in stream.encode(None):
                c.mux(p)
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 for ``kind`` (TCP or UDP) right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, step: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


class Receiver:
    """Decodes a stream on a thread, keeping (arrival time, frame number, picture) per frame."""

    def __init__(self, opener: Callable[[], object]) -> None:
        self.opener = opener
        self.frames: list[tuple[float, int, np.ndarray]] = []
        self.error: BaseException | None = None
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            container = self.opener()
            self.opened.set()
            with container:
                for frame in container.decode(video=0):
                    img = frame.to_ndarray(format="bgr24")
                    self.frames.append((time.monotonic(), frame_number(img), img))
        except BaseException as e:  # noqa: BLE001 - reported to the test
            self.error = e
            self.opened.set()

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout)


class Nginx:
    """nginx with the RTMP module on a loopback port, run as this user from ``root``."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.proc: subprocess.Popen[bytes] | None = None
        conf = root / "nginx.conf"
        conf.write_text(
            f"load_module {RTMP_MODULE};\n"
            "daemon off;\nmaster_process off;\n"
            f"pid {root}/nginx.pid;\nerror_log {root}/error.log info;\n"
            "events { worker_connections 64; }\n"
            "rtmp { server { listen 127.0.0.1:%d; chunk_size 4096;\n"
            "  application live { live on; record off; wait_key on; } } }\n" % port
        )
        self.conf = conf

    @staticmethod
    def missing() -> str | None:
        """Why nginx-rtmp cannot run here, or None."""
        if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
            return "nginx is not installed (apt install nginx-light libnginx-mod-rtmp)"
        if not RTMP_MODULE.exists():
            return f"nginx's RTMP module is not installed ({RTMP_MODULE}; apt install libnginx-mod-rtmp)"
        return None

    def start(self) -> None:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([exe, "-p", str(self.root), "-c", str(self.conf), "-e", str(self.root / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def accepting() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        assert wait_for(accepting, 30), "nginx-rtmp did not start listening"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
