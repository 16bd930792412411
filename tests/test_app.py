"""The live loop end to end: real clips through to the recorder, parameter changes, keys, a
camera that drops out and returns, temporal behaviour over hundreds of frames, shutdown."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from live.app import LiveLoop, ShowOptions, open_show_source, round32, run_show
from live.backends.torch_backend import TorchBackend
from live.control.params import Registry
from live.errors import InputError
from live.outputs import Fanout, Output
from live.sources import CaptureSource, Frame, ImageSource, Status
from live.sources.testscene import TestSceneSource
from tests.conftest import Collect, photo_path

W, H = 128, 96  # dream size for these tests: multiples of 32, small enough for 2 CPU cores


def small_registry(**values) -> Registry:
    reg = Registry()
    reg.update({"width": W, "height": H, "steps": 1, "jitter": 4, "fps_cap": 240, **values})
    return reg


def loop_for(model, source, registry, *outputs: Output, **kw) -> LiveLoop:
    backend = TorchBackend(model, torch.device("cpu"))
    fan = Fanout(outputs)
    fan.open(W, H, 30)
    return LiveLoop(source, model, backend, registry, fan, seed=0, status_every=3600, **kw)


def panning_clip(path: Path, frames: int = 24, step: int = 6, fps: float = 30) -> Path:
    """A real photograph panned ``step`` px a frame, written as an mp4v clip."""
    photo = cv2.imread(str(photo_path("coffee.png")))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (192, 144))
    for i in range(frames):
        writer.write(np.ascontiguousarray(photo[40:184, i * step : i * step + 192]))
    writer.release()
    return path


def test_a_real_clip_through_the_whole_loop_to_the_recorder(checkpoint: Path, tmp_path: Path) -> None:
    clip = panning_clip(tmp_path / "pan.mp4", fps=6)  # 4 s: time for a few dreamed frames on a busy machine
    out = tmp_path / "dreamed.mp4"
    registry = small_registry(steps=2)
    opts = ShowOptions(source=str(clip), loop_video=False, window=False, record=out, weights=str(checkpoint),
                       status_every=3600, osc_port=0, midi=False)  # OSC on an ephemeral port, never 9000
    report = run_show(opts, registry)
    assert report.stopped_because == "source ended"
    # Played in real time: the newest frame wins, so how many of the 24 are dreamed depends on how
    # busy the machine is; what must hold is that every dreamed frame reached the recording.
    assert 1 <= report.frames <= 24

    video = cv2.VideoCapture(str(out))
    assert video.isOpened()
    # recorded at the clip's own size, not the 128x96 the dream ran at
    assert (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (192, 144)
    # ...and at its rate: every camera frame goes out, so the recording declares the clip's 6 fps (not fps_cap)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.framerate == 6
    decoded = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        decoded.append(frame)
    assert len(decoded) == report.frames
    camera = cv2.VideoCapture(str(clip)).read()[1]
    assert np.abs(decoded[0].astype(int) - camera).mean() > 2  # dreamed, not passed through


def test_parameter_change_takes_effect_on_the_next_frame(model) -> None:
    registry = small_registry()
    out = Collect()
    photo = ImageSource(photo_path("coffee.png"), fps=240).start()
    # each dream when it finishes: every frame out is a dreamed one (at the camera's pace the first
    # frames would be the camera, before any dream is done)
    loop = loop_for(model, photo, registry, out, present="dream")
    camera = cv2.imread(str(photo_path("coffee.png")))  # outputs run at the photo's own 600x400

    def change(n: int) -> None:
        if n == 3:
            registry.set("pause", True, source="test")
        if n == 5:
            registry.update({"pause": False, "mix": 0.0}, source="test")

    with photo:
        loop.run(max_frames=7, on_frame=change)
    diffs = [np.abs(f.astype(int) - camera).mean() for f in out.frames]
    assert all(d > 1.0 for d in diffs[:3])  # dreaming
    assert diffs[3] == 0 and diffs[4] == 0  # paused: the camera itself, from the very next frame
    assert diffs[5] < 1.0 and diffs[6] < 1.0  # mix 0: camera (within rounding)


def test_the_device_frame_path_delivers_every_frame_dreamed(model) -> None:
    # CUDA's frame path, its bookkeeping checked on CPU tensors: the device compositor in both paces
    # (the dreamer's upload through its ring, the presenter's compose into a Composed record and its
    # download), every frame waiting for its own dream (dream mode), so every frame out is dreamed.
    from live.compose import DeviceCompositor

    out = Collect()
    camera = cv2.imread(str(photo_path("coffee.png")))  # outputs at the photo's own size
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        loop = loop_for(model, photo, small_registry(), out, present="dream")
        loop.dream_loop.compositor = DeviceCompositor(model.space, torch.device("cpu"))
        loop.presenter.compositor = DeviceCompositor(model.space, torch.device("cpu"))
        report = loop.run(max_frames=5)
    assert report.frames == len(out.frames) == 5 and report.dreams >= 5
    assert all(f.shape == camera.shape and np.abs(f.astype(int) - camera).mean() > 1 for f in out.frames)


def test_keys_change_layer_freeze_screenshot_and_quit(model, tmp_path: Path) -> None:
    registry = small_registry()
    out = Collect(actions={2: ["next_layer"], 3: ["screenshot", "freeze"], 6: ["freeze", "prev_layer"], 8: ["quit"]})
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        loop = loop_for(model, photo, registry, out, screenshot_dir=tmp_path)
        objectives = []
        report = loop.run(max_frames=50, on_frame=lambda n: objectives.append(str(registry.get("objective"))))
    assert report.stopped_because == "quit key"
    assert objectives[1] == "inception4c" and objectives[2] == "inception4d" and objectives[6] == "inception4c"
    assert np.array_equal(out.frames[3], out.frames[4]) and np.array_equal(out.frames[4], out.frames[5])  # frozen
    shots = list(tmp_path.glob("deepdream-*.png"))
    assert len(shots) == 1 and np.array_equal(cv2.imread(str(shots[0])), out.frames[2])


class PhotoCamera:
    """A stand-in cv2.VideoCapture giving a panning photograph; can be unplugged and replugged."""

    def __init__(self, plugged: threading.Event) -> None:
        self.plugged = plugged
        self.photo = cv2.imread(str(photo_path("coffee.png")))
        self.reads = 0

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.plugged.is_set()

    def read(self):
        time.sleep(0.005)
        if not self.plugged.is_set():
            return False, None
        self.reads += 1
        x = (self.reads * 2) % 200
        return True, np.ascontiguousarray(self.photo[40:184, x : x + 192])

    def release(self) -> None:
        pass


def test_a_camera_that_drops_out_and_returns_does_not_stop_the_show(model, caplog) -> None:
    plugged = threading.Event()
    plugged.set()
    source = CaptureSource(lambda: PhotoCamera(plugged), name="stage camera", retry_initial=0.02, retry_max=0.05,
                           placeholder_fps=100)
    out = Collect()
    caplog.set_level(logging.INFO)
    stop = threading.Event()
    unplugged_at: list[int] = []
    replugged_at: list[int] = []

    def dark(frame: np.ndarray) -> bool:
        return frame.mean() < 60  # placeholder frames are dark with lettering

    def script(n: int) -> None:
        # Driven by what comes out, not by frame counts: a busy machine may take any number of
        # frames to notice the loss, or to reopen the camera.
        if n == 4:
            plugged.clear()
            unplugged_at.append(n)
        elif unplugged_at and not replugged_at and dark(out.frames[-1]):
            plugged.set()
            replugged_at.append(n)
        elif replugged_at and n >= replugged_at[0] + 2 and not dark(out.frames[-1]):
            stop.set()

    with source:
        loop = loop_for(model, source, small_registry(), out)
        report = loop.run(stop, duration=300, on_frame=script)
    assert report.stopped_because == "stopped", "the camera never came back within 300 s"
    shown = [dark(f) for f in out.frames]
    assert not any(shown[:4]) and any(shown[4:]) and not shown[-1]
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "stage camera lost" in messages and "stage camera is back" in messages


def _saturation(bgr: np.ndarray) -> float:
    return float(cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)[..., 1].mean())


def test_static_scene_stays_bounded_over_300_frames(model) -> None:
    registry = small_registry(width=64, height=64, feedback=1.0, steps=2, step_size=4.0)
    out = Collect()
    with ImageSource(photo_path("coffee.png"), fps=1000) as photo:
        loop = loop_for(model, photo, registry, out, output_size=(64, 64))  # the dream itself, unscaled
        loop.run(max_frames=300)
    camera = cv2.resize(cv2.imread(str(photo_path("coffee.png"))), (64, 64), interpolation=cv2.INTER_AREA)
    brightness = [f.mean() for f in out.frames]
    saturation = [_saturation(f) for f in out.frames]
    print(f"brightness camera {camera.mean():.1f}, frames 1/150/300: {brightness[0]:.1f} {brightness[149]:.1f} "
          f"{brightness[-1]:.1f}; saturation camera {_saturation(camera):.1f}, {saturation[0]:.1f} "
          f"{saturation[149]:.1f} {saturation[-1]:.1f}")
    assert abs(np.mean(brightness[-50:]) - camera.mean()) < 10
    assert np.mean(saturation[-50:]) < _saturation(camera) + 20
    # no run-away: the second half is no further from the camera than the first
    change = [np.abs(f.astype(int) - camera).mean() for f in out.frames]
    assert np.mean(change[-50:]) < 1.25 * np.mean(change[100:150]) + 1


class EveryFrame:
    """A source that hands out each frame of a clip exactly once, in order, then ends: the loop
    sees every frame however slow it is, so runs are comparable."""

    dropped = 0

    def __init__(self, clip: Path) -> None:
        video = cv2.VideoCapture(str(clip))
        self.frames = []
        while (got := video.read())[0]:
            self.frames.append(got[1])
        self.status = "live"
        self.n = 0

    def latest(self, timeout: float = 0.0) -> Frame | None:
        if self.n == len(self.frames):
            self.status = Status.ENDED
            return None
        self.n += 1
        return Frame(self.frames[self.n - 1], time.monotonic(), self.n)

    def describe(self) -> str:
        return "every frame"


def test_temporal_feedback_makes_a_panning_clip_steadier(model, tmp_path: Path) -> None:
    """Frame-to-frame change of the output, pan compensated: feedback+flow vs independent dreams."""
    clip = panning_clip(tmp_path / "pan.mp4", frames=16, step=4)
    changes = {}
    for name, values in {"independent": {"feedback": 0.0}, "feedback+flow": {"feedback": 0.8, "flow": True}}.items():
        out = Collect()
        registry = small_registry(steps=2, jitter=0, **values)
        registry.update({"width": 192, "height": 128})
        loop = loop_for(model, EveryFrame(clip), registry, out, present="dream")  # every frame dreamed, in step
        assert loop.run().frames == 16
        frames = [f.astype(int) for f in out.frames]
        # 4 px per frame at 192 wide stays 4 px at the dream's 192 width: compare shifted overlaps
        changes[name] = np.mean([np.abs(b[:, :-8] - a[:, 4:-4]).mean() for a, b in zip(frames, frames[1:])])
    print(changes)
    assert changes["feedback+flow"] < changes["independent"]


def test_auto_source_falls_back_to_the_test_scene_and_says_so(monkeypatch, caplog) -> None:
    def no_camera(spec, *a, **k):
        raise InputError("no camera at index 0: is it plugged in")

    monkeypatch.setattr("live.sources.open_source", no_camera)
    caplog.set_level(logging.WARNING)
    source = open_show_source(ShowOptions(source="auto", test_scene_size=(W, H)))
    try:
        assert isinstance(source, TestSceneSource) and source.latest(timeout=30.0).image.shape == (H, W, 3)
    finally:
        source.close()
    assert "showing the built-in test scene" in caplog.text


def test_an_explicit_source_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_show_source(ShowOptions(source=str(tmp_path / "nope.mp4")))


def test_round32() -> None:
    assert [round32(n) for n in (10, 100, 360, 720, 1080)] == [32, 96, 352, 704, 1088]


def test_sigterm_finalises_the_recording(tmp_path: Path) -> None:
    out = tmp_path / "show.mkv"
    exe = Path(sys.executable).with_name("deepdream-live")
    proc = subprocess.Popen(
        [str(exe), "run", "--source", "test-scene", "--no-window", "--record", str(out), "--weights", "random",
         "--size", "96x64", "--capture-size", "96x64", "--steps", "1", "--status-every", "1", "--osc-port", "0",
         "--no-midi", "--no-web"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        recorded = None
        for line in proc.stderr:  # wait for the show to have recorded a frame (status lines come
            # from a heartbeat, during the first frame too, and a stop abandons a frame in progress)
            recorded = re.search(r"fps, latency.*recording show\.mkv: live, [^;]*\b[1-9]\d* frames", line)
            if recorded or time.monotonic() > deadline:
                break
        assert recorded, "the status line never counted a recorded frame"
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, rest
    assert "SIGTERM" in rest and "stopped (stopped)" in rest
    video = cv2.VideoCapture(str(out))
    ok, frame = video.read()
    assert ok and frame.shape == (64, 96, 3)


def test_a_stop_while_the_network_loads_does_not_slow_the_load(checkpoint: Path, monkeypatch) -> None:
    """Ctrl-C during the load: the show waits for the load (it cannot be abandoned) without
    competing with it. The wait loop used to spin once stopped, holding the GIL the loading
    thread needs after each of its small tensor operations: a 0.1 s load took 10 s and more."""
    import live.model

    real_load = live.model.load_model
    stop = threading.Event()

    def gil_hungry_load(*args, **kwargs):  # many short operations, each releasing the GIL
        stop.set()  # the operator stops the show while the network loads
        x = torch.zeros(8)
        for _ in range(2000):
            x = x + 1
        return real_load(*args, **kwargs)

    began = time.process_time()
    torch_ops = torch.zeros(8)
    for _ in range(2000):
        torch_ops = torch_ops + 1
    alone = time.process_time() - began
    monkeypatch.setattr(live.model, "load_model", gil_hungry_load)
    opts = ShowOptions(source="test-scene", window=False, weights=str(checkpoint), status_every=3600, osc=False,
                       midi=False, web=False, output_size=(64, 48))
    began = time.monotonic()
    report = run_show(opts, small_registry(), stop)
    took = time.monotonic() - began
    assert report.stopped_because == "stopped while loading"
    assert took < 5.0 + 20 * alone, f"a stop during a {alone:.3f} s load took {took:.1f} s to end the show"


def test_virtual_camera_gets_placeholders_while_loading_then_the_dream(checkpoint: Path, fake_vcam, monkeypatch) -> None:
    """A video-call app keeps a device that never goes silent: placeholders first, then frames."""
    import live.model

    real_load = live.model.load_model

    def slow_load(*args, **kwargs):
        time.sleep(0.6)  # a download or an engine build
        return real_load(*args, **kwargs)

    monkeypatch.setattr(live.model, "load_model", slow_load)
    # the output size named: placeholders and dreamed frames alike, whatever the dream size (W x H)
    ow, oh = 160, 120
    opts = ShowOptions(source="test-scene", window=False, vcam=True, vcam_backend="live-test",
                       weights=str(checkpoint), max_frames=4, status_every=3600, osc_port=0, midi=False,
                       output_size=(ow, oh))
    report = run_show(opts, small_registry())
    cam = fake_vcam.instances[-1]
    assert (cam.width, cam.height) == (ow, oh) and all(f.size == oh * ow * 3 for _, f in cam.received)
    frames = [f.reshape(oh, ow, 3) for _, f in cam.received]  # pyvirtualcam hands backends flat BGR bytes
    placeholders = [f.mean() < 40 for f in frames]
    assert placeholders[0] and sum(placeholders) >= 1 and not any(placeholders[-report.frames:])
    assert len(frames) - sum(placeholders) == report.frames == 4
    assert cam.closed == 1


class Flaky(TorchBackend):
    """A backend that fails on command: out of memory above a size, or any error for a while."""

    def __init__(self, model, oom_above: int | None = None, fail_until: float = 0.0) -> None:
        super().__init__(model, torch.device("cpu"))
        self.oom_above, self.fail_until = oom_above, fail_until

    def ascend(self, x, *args, **kwargs):
        if self.oom_above and x.shape[-1] > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if time.monotonic() < self.fail_until:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().ascend(x, *args, **kwargs)


def test_out_of_memory_shrinks_the_dream_and_the_show_goes_on(model, caplog) -> None:
    registry = small_registry()
    registry.update({"width": 320, "height": 192})
    out = Collect()
    camera = cv2.imread(str(photo_path("coffee.png")))  # outputs at the photo's own size
    stop = threading.Event()

    def dreamed_again(_n: int) -> None:  # camera frames go out all along; stop once one carries a dream
        if out.frames and np.abs(out.frames[-1].astype(int) - camera).mean() > 1:
            stop.set()

    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        fan = Fanout([out])
        fan.open(320, 192, 30)
        loop = LiveLoop(photo, model, Flaky(model, oom_above=200), registry, fan, status_every=3600)
        report = loop.run(stop, duration=300, on_frame=dreamed_again)
    assert report.stopped_because == "stopped", "no dream within 300 s"
    assert (registry.get("width"), registry.get("height")) == (192, 96)  # 320 -> 224 -> 160 ... fits
    assert "out of memory dreaming at 320x192" in caplog.text


def test_a_failing_backend_passes_the_camera_through_then_recovers(model, caplog, monkeypatch) -> None:
    monkeypatch.setattr("live.dream_loop.RETRY_SECONDS", 0.3)
    registry = small_registry()
    out = Collect()
    backend = Flaky(model, fail_until=math.inf)  # down until the test has seen the camera shown
    camera = cv2.imread(str(photo_path("coffee.png")))  # outputs at the photo's own size
    top = slice(0, camera.shape[0] * 2 // 3)  # above the one-line notice at the bottom
    bottom = slice(camera.shape[0] * 2 // 3, None)

    def passthrough(frame: np.ndarray) -> bool:
        return np.abs(frame[top].astype(int) - camera[top]).mean() < 1

    def noticed(frame: np.ndarray) -> bool:  # the camera with a notice along the bottom
        return passthrough(frame) and np.abs(frame[bottom].astype(int) - camera[bottom]).mean() > 1

    stop = threading.Event()

    def script(n: int) -> None:
        if backend.fail_until and sum(map(noticed, out.frames)) >= 3:
            backend.fail_until = 0.0  # repaired; the next retry (after 0.3 s, or 0.6 s …) dreams
        elif not backend.fail_until and not passthrough(out.frames[-1]):
            stop.set()

    with ImageSource(photo_path("coffee.png"), fps=60) as photo:
        fan = Fanout([out])
        fan.open(W, H, 30)
        loop = LiveLoop(photo, model, backend, registry, fan, status_every=3600)
        report = loop.run(stop, duration=300, on_frame=script)
    assert report.stopped_because == "stopped", "the dream never came back within 300 s"
    shown = [passthrough(f) for f in out.frames]
    # the camera at first (no dream yet, then the failure with its notice), frames kept flowing, dreaming at the end
    assert shown[0] and sum(map(noticed, out.frames)) >= 3 and not shown[-1]
    assert "the dream failed (RuntimeError: CUDA error" in caplog.text


def test_a_full_garbage_collection_during_the_show_skips_what_start_up_made(checkpoint: Path) -> None:
    """The start-up objects (PyTorch, the network, the servers) sit out the collector while the
    show runs, so a full collection, which stops every thread, takes a fraction of what it took
    with them (here ~45 ms against ~0 on a quiet machine); the show gives them back when it ends."""
    import gc

    during: list[tuple[int, float]] = []

    def collect() -> float:
        began = time.perf_counter()
        gc.collect()
        return time.perf_counter() - began

    def on_tick() -> None:
        if not during:
            during.append((gc.get_freeze_count(), min(collect() for _ in range(3))))

    opts = ShowOptions(source="test-scene", window=False, weights=str(checkpoint), max_frames=3, status_every=3600,
                       osc=False, midi=False, web=False, output_size=(64, 48))
    run_show(opts, small_registry(), on_tick=on_tick)
    assert during, "the show ticked"
    frozen, in_show = during[0]
    assert frozen > 50_000, f"only {frozen} objects left out of the collector's walk"
    assert gc.get_freeze_count() == 0, "given back when the show ended"
    after = min(collect() for _ in range(3))
    print(f"full collection: {in_show * 1e3:.1f} ms in the show, {after * 1e3:.1f} ms after ({frozen} frozen)")
    assert in_show < 0.5 * after, f"a full collection took {in_show * 1e3:.1f} ms in the show, {after * 1e3:.1f} after"
