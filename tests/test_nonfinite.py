"""A dream that comes back NaN or infinite never blackens the show: that frame shows the camera,
the carried dream is cleared, the event is logged once with its cause and counted, and the next
frame dreams again. At the edge, objectives that would overflow are refused before they run."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from live.app import LiveLoop
from live.backends.torch_backend import TorchBackend
from live.cli import main
from live.control.params import Registry
from live.errors import UsageError
from live.outputs import Fanout
from live.sources import ImageSource
from tests.conftest import Collect, photo_path

W, H = 128, 96


class Poisoned(TorchBackend):
    """The torch backend, except that the gradient of the dreams it is told to spoil overflows:
    infinite (an fp16 overflow) or NaN (weights gone bad) in part of the picture."""

    def __init__(self, model, value: float = float("nan")) -> None:
        super().__init__(model, torch.device("cpu"))
        self.spoil_next = 0  # how many of the next gradients come back non-finite
        self.value = value

    def _gradient(self, x, weights):
        g, score = super()._gradient(x, weights)
        if self.spoil_next > 0:
            self.spoil_next -= 1
            g = g.clone()
            g[..., : g.shape[-2] // 2, :] = self.value  # one bad pixel is enough to blacken a frame
        return g, score


def _camera() -> np.ndarray:
    return cv2.resize(cv2.imread(str(photo_path("coffee.png"))), (W, H), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_dream_shows_the_camera_for_that_frame_and_the_next_frame_dreams(model, caplog, value) -> None:
    registry = Registry()
    registry.update({"width": W, "height": H, "steps": 1, "jitter": 4, "fps_cap": 240, "feedback": 0.9})
    backend = Poisoned(model, value)
    out = Collect()
    fan = Fanout([out])
    fan.open(W, H, 30)
    cleared = []

    def script(n: int) -> None:
        if n == 4:
            backend.spoil_next = 1  # frame 5 comes back non-finite
            cleared.append(loop.feedback)

    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        loop = LiveLoop(photo, model, backend, registry, fan, seed=0, status_every=3600, output_size=(W, H),
                        present="dream")  # frame by frame: each frame out is its own dream
        report = loop.run(max_frames=9, on_frame=script)
    assert report.frames == 9
    camera = _camera()
    diffs = [np.abs(f.astype(int) - camera).mean() for f in out.frames]
    assert min(f.mean() for f in out.frames) > 40  # never a black frame
    assert diffs[4] == 0  # the spoilt frame is the camera itself
    assert all(d > 1.0 for d in diffs[:4]) and all(d > 1.0 for d in diffs[5:])  # dreaming before and after
    assert loop.nonfinite == 1 and loop.status()["nonfinite"] == 1
    assert "1 non-finite dream(s) shown as the camera" in loop.status_line()
    lines = [r.getMessage() for r in caplog.records if "not finite" in r.getMessage()]
    assert len(lines) == 1 and "the dream step on torch on cpu" in lines[0] and "clearing the carried dream" in lines[0]


def test_a_stretch_of_non_finite_dreams_is_logged_once_and_counted(model, caplog) -> None:
    registry = Registry()
    registry.update({"width": W, "height": H, "steps": 1, "fps_cap": 240})
    backend = Poisoned(model)
    backend.spoil_next = 6
    out = Collect()
    fan = Fanout([out])
    fan.open(W, H, 30)
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        loop = LiveLoop(photo, model, backend, registry, fan, seed=0, status_every=3600, output_size=(W, H),
                        present="dream")  # frame by frame: each frame out is its own dream
        loop.run(max_frames=8)
    assert loop.nonfinite == 6
    assert all(f.mean() > 40 for f in out.frames)
    assert np.abs(out.frames[-1].astype(int) - _camera()).mean() > 1.0  # dreaming again at the end
    assert sum("not finite" in r.getMessage() for r in caplog.records) == 1


def test_a_carried_dream_gone_bad_is_named_as_the_cause(model, caplog) -> None:
    registry = Registry()
    registry.update({"width": W, "height": H, "steps": 1, "fps_cap": 240, "feedback": 1.0, "flow": False})
    out = Collect()
    fan = Fanout([out])
    fan.open(W, H, 30)
    with ImageSource(photo_path("coffee.png"), fps=240) as photo:
        loop = LiveLoop(photo, model, TorchBackend(model, torch.device("cpu")), registry, fan, seed=0,
                        status_every=3600, present="dream")
        real_start = loop.feedback.start

        def spoilt_start(cam, *args, **kwargs):
            x = real_start(cam, *args, **kwargs)
            return x if len(out.frames) != 3 else torch.full_like(x, float("nan"))

        loop.feedback.start = spoilt_start
        loop.run(max_frames=6)
    assert loop.nonfinite == 1 and all(f.mean() > 40 for f in out.frames)
    assert "the carried dream (temporal feedback) was already NaN or infinite" in caplog.text


def test_objectives_that_overflow_are_refused_at_the_edge() -> None:
    registry = Registry()
    for text in ("1e999*inception4c", "inception4c*1e400", "1e30*inception4c"):
        with pytest.raises(UsageError):
            registry.set("objective", text)
    assert str(registry.get("objective")) == "inception4c"


def test_the_image_command_writes_no_picture_from_a_non_finite_dream(tmp_path: Path, capsys, monkeypatch,
                                                                     model) -> None:
    import live.still

    backend = Poisoned(model)
    backend.spoil_next = 10**6
    monkeypatch.setattr(live.still, "open_backend", lambda *a, **k: backend)
    out = tmp_path / "dream.png"
    code = main(["image", str(photo_path("chelsea.png")), str(out), "--weights", "random", "--steps", "1",
                 "--octaves", "1", "--max-side", "64", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 70, err
    errors = [line for line in err.splitlines() if line.startswith("deepdream-live: error:")]
    assert len(errors) == 1 and "NaN or infinite" in errors[0] and "nothing was written" in errors[0]
    assert list(tmp_path.iterdir()) == []
