"""Outputs at the camera's resolution (or a size the operator names), the dream at its own:
the shown frame is the full-size camera plus the upsampled dream residual. The governor and
out-of-memory recovery trim the dream, never the output; every kind of frame (paused,
placeholder, closed) goes out at the output size."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from live.app import LiveLoop, ShowOptions, run_show
from live.backends.torch_backend import TorchBackend
from live.cli import _build_parser, _show_setup, main
from live.compose import DeviceCompositor, HostCompositor, check_output_size
from live.control.params import Registry
from live.control.schedule import OpeningHours
from live.errors import UsageError
from live.governor import Governor
from live.model.bvlc import BVLC_SPACE
from live.model.googlenet import TORCHVISION_SPACE
from live.outputs import Fanout, Output
from live.site import load_site
from live.sources import Frame, ImageSource, Status
from tests.conftest import photo_path

DW, DH = 128, 96  # the dream size in these tests


class Keep(Output):
    """Keeps references to the frames it is sent (as a recorder's queue does), and a copy of each."""

    def __init__(self) -> None:
        super().__init__("keep")
        self.frames: list[np.ndarray] = []
        self.copies: list[np.ndarray] = []
        self.size: tuple[int, int] | None = None

    def open(self, width: int, height: int, fps: float) -> None:
        self.size = (width, height)

    def send(self, frame: np.ndarray) -> None:
        self.frames.append(frame)
        self.copies.append(frame.copy())
        self.sent += 1

    def close(self) -> None:
        pass


class ShapeSpy(TorchBackend):
    """Records the shape of every image the dream runs on."""

    def __init__(self, model) -> None:
        super().__init__(model, torch.device("cpu"))
        self.shapes: list[tuple[int, ...]] = []

    def ascend(self, x, *args, **kwargs):
        self.shapes.append(tuple(x.shape))
        return super().ascend(x, *args, **kwargs)


def registry(**values) -> Registry:
    reg = Registry()
    reg.update({"width": DW, "height": DH, "steps": 1, "jitter": 4, "fps_cap": 240, **values})
    return reg


def loop(model, source, reg, out: Output, backend=None, **kw) -> LiveLoop:
    fan = Fanout([out])
    fan.open(*(kw.get("output_size") or (600, 400)), 30)
    return LiveLoop(source, model, backend or TorchBackend(model, torch.device("cpu")), reg, fan, seed=0,
                    status_every=3600, **kw)


def sharpness(bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the grey picture: fine detail."""
    return float(cv2.Laplacian(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


# ----------------------------------------------------------------------------- the whole loop
def test_outputs_run_at_the_source_size_and_the_camera_stays_sharp(model) -> None:
    camera = cv2.imread(str(photo_path("coffee.png")))  # 600x400
    out, spy = Keep(), ShapeSpy(model)
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        loop(model, photo, registry(steps=2), out, backend=spy, present="dream").run(max_frames=4)  # each dreamed
    assert spy.shapes and all(s[-2:] == (DH, DW) for s in spy.shapes)  # the dream at its own size
    assert all(f.shape == camera.shape for f in out.frames)  # the picture at the camera's
    last = out.frames[-1]
    assert np.abs(last.astype(int) - camera).mean() > 1.0  # dreamed, not passed through
    # The camera's detail survives: the old way (the dream's 128x96 frame blown up to 600x400)
    # loses most of it; camera + upsampled residual keeps it.
    blown_up = cv2.resize(cv2.resize(camera, (DW, DH), interpolation=cv2.INTER_AREA), (600, 400))
    print(f"sharpness: camera {sharpness(camera):.0f}, shown {sharpness(last):.0f}, "
          f"dream-size frame enlarged {sharpness(blown_up):.0f}")
    assert sharpness(last) > 0.8 * sharpness(camera) > 2 * sharpness(blown_up)


def test_a_named_output_size_holds_for_every_kind_of_frame(model) -> None:
    """333x201 (not a multiple of 32): dreamed, paused, degraded-notice and closed frames alike."""
    size = (333, 201)
    out = Keep()
    reg = registry()
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        lp = loop(model, photo, reg, out, output_size=size)

        def script(n: int) -> None:
            if n == 2:
                reg.set("pause", True)
            if n == 3:
                reg.set("pause", False)
                lp.dream_loop._degraded_until = time.monotonic() + 0.5
                lp.dream_loop._degraded_reason = "test notice"

        lp.run(max_frames=5, on_frame=script)
        closed = loop(model, photo, reg, out, output_size=size,
                      hours=OpeningHours(dt.time(3, 0), dt.time(3, 1), now=lambda: dt.datetime(2024, 1, 1, 12)))
        closed.run(max_frames=2)
    assert len(out.frames) == 7
    assert all(f.shape == (201, 333, 3) for f in out.frames), [f.shape for f in out.frames]
    assert out.frames[-1].max() == 0  # closed: black, at the output size


class LostCamera:
    """A source whose camera is gone: placeholder frames at the size it last had."""

    dropped = 0
    size = (320, 240)
    status = Status.RECONNECTING

    def latest(self, timeout: float = 0.0) -> Frame:
        return Frame(np.full((240, 320, 3), 24, np.uint8), time.monotonic(), 1, placeholder=True)

    def describe(self) -> str:
        return "lost camera"


def test_placeholder_frames_go_out_at_the_output_size(model) -> None:
    out = Keep()
    loop(model, LostCamera(), registry(), out, output_size=(640, 360)).run(max_frames=2)
    assert [f.shape for f in out.frames] == [(360, 640, 3)] * 2


def test_mix_blends_camera_and_dream_at_the_output_size(model) -> None:
    camera = cv2.imread(str(photo_path("coffee.png")))
    residuals = {}
    for mix in (1.0, 0.5, 0.0):
        out = Keep()
        with ImageSource(photo_path("coffee.png"), fps=240) as photo:
            loop(model, photo, registry(mix=mix), out, present="dream").run(max_frames=1)  # its own dream
        residuals[mix] = out.frames[0].astype(float) - camera
    assert np.array_equal(residuals[0.0], np.zeros_like(residuals[0.0]))  # the camera itself, full size
    assert np.abs(residuals[1.0]).mean() > 1.0
    full = camera + residuals[1.0]
    inside = (full > 0) & (full < 255)  # where the full dream was not clipped at black or white
    assert np.abs(residuals[0.5] - 0.5 * residuals[1.0])[inside].max() <= 1.0  # half the dream, to rounding


def test_frames_sent_are_never_overwritten_by_later_frames(model) -> None:
    """An output that keeps frames (a recorder's queue, freeze) must find them as they were sent."""
    out = Keep()
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        loop(model, photo, registry(), out, output_size=(400, 300)).run(max_frames=4)
    for kept, copy in zip(out.frames, out.copies):
        assert np.array_equal(kept, copy)
    assert len({id(f) for f in out.frames}) == len(out.frames)


def test_the_governor_and_recovery_trim_the_dream_never_the_output(model) -> None:
    class Slow(TorchBackend):
        def ascend(self, x, objective, steps, *args, **kwargs):
            time.sleep(0.05 * steps * x.shape[-1] * x.shape[-2] / 1e4)
            return super().ascend(x, objective, steps, *args, **kwargs)

    reg = registry(steps=1, width=256, height=192)
    out = Keep()
    governor = Governor(8.0, window_seconds=0.3, min_frames=3, down_cooldown=0.1, min_steps=1)
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        lp = loop(model, photo, reg, out, backend=Slow(model, torch.device("cpu")), governor=governor,
                  output_size=(600, 400), present="dream")  # runs of 3 frames are 3 dreams
        deadline = time.monotonic() + 60
        while reg.get("width") == 256 and time.monotonic() < deadline:
            lp.run(max_frames=3)
    assert reg.get("width") < 256  # the dream shrank...
    assert {f.shape for f in out.frames} == {(400, 600, 3)}  # ...the output did not


# ----------------------------------------------------------------------------- the compositors
def _residual(cam: torch.Tensor, space, seed: int) -> torch.Tensor:
    """A dream-like residual: about 20 grey levels of noise in model units."""
    gen = torch.Generator().manual_seed(seed)
    return 20 * space.per_grey_level(cam) * torch.randn(cam.shape, generator=gen)


@pytest.mark.parametrize("space", [TORCHVISION_SPACE, BVLC_SPACE], ids=["torchvision", "bvlc"])
@pytest.mark.parametrize("output", [(333, 201), (128, 96), (96, 64)], ids=["larger-odd", "same", "smaller"])
def test_host_and_device_compositors_show_the_same_picture(space, output) -> None:
    """The CPU path (OpenCV) and the GPU path (torch, run here on the CPU) agree to rounding."""
    camera = cv2.resize(cv2.imread(str(photo_path("chelsea.png"))), output, interpolation=cv2.INTER_AREA)
    shown = {}
    for name, comp in (("host", HostCompositor(space)), ("device", DeviceCompositor(space, torch.device("cpu")))):
        cam = comp.upload(camera, output, (DW, DH))
        assert cam.shape == (1, 3, DH, DW)
        assert np.array_equal(comp.download(comp.compose(cam, cam, 1.0)), camera)  # no residual: the camera
        delta = _residual(cam, space, 0)
        shown[name] = comp.download(comp.compose(cam, cam + delta, 1.0)).astype(int)
        assert shown[name].shape == camera.shape
    diff = np.abs(shown["host"] - shown["device"])
    assert diff.mean() < 0.2 and diff.max() <= 2
    assert np.abs(shown["host"] - camera).mean() > 5  # and the residual is really there


def test_output_size_is_checked_with_a_clear_message() -> None:
    assert check_output_size((1920, 1080)) == (1920, 1080)
    assert check_output_size((333, 201)) == (333, 201)  # no rounding to 32
    with pytest.raises(UsageError, match=r"each side must be 16\.\.8192 pixels"):
        check_output_size((8, 8))


# ----------------------------------------------------------------------------- flags, config, run_show
def test_output_size_flag_and_site_key(tmp_path: Path, capsys) -> None:
    args = _build_parser().parse_args(["run", "--output-size", "1366x768", "--size", "640x352"])
    opts, reg, _ = _show_setup(args)
    assert opts.output_size == (1366, 768) and (reg.get("width"), reg.get("height")) == (640, 352)
    assert main(["run", "--output-size", "1366by768", "--no-osc", "--no-midi"]) == 64
    assert "--output-size '1366by768': expected WIDTHxHEIGHT" in capsys.readouterr().err

    site = tmp_path / "site.toml"
    site.write_text('[outputs]\nsize = "1920x1080"\n')
    assert load_site(site).show_options()["output_size"] == (1920, 1080)
    site.write_text('[outputs]\nsize = "8x8"\n')
    with pytest.raises(UsageError, match=r"outputs\.size.*16\.\.8192"):
        load_site(site)


def test_run_show_opens_outputs_at_the_source_size(checkpoint: Path, fake_vcam) -> None:
    """No output size named: the virtual camera opens at the test scene's size, which follows the
    size a camera would be asked for, while the dream runs at 128x96."""
    opts = ShowOptions(source="test-scene", window=False, vcam=True, vcam_backend="live-test", weights=str(checkpoint),
                       max_frames=2, status_every=3600, capture_width=200, capture_height=150, osc=False, midi=False)
    report = run_show(opts, registry())
    cam = fake_vcam.instances[-1]
    assert report.frames == 2
    assert (cam.width, cam.height) == (200, 150) and all(f.size == 200 * 150 * 3 for _, f in cam.received)
