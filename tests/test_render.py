"""``deepdream-live render``: a clip with sound in, every frame dreamed out at the same rate and
length with the sound untouched; Ctrl-C leaves a playable file and --resume finishes it with the
very frames an unbroken run makes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from live.control.params import Registry
from live.errors import UsageError
from live.render import RenderJob, render, state_path
from tests.streaming import pattern, write_clip

W, H, FPS, FRAMES = 96, 64, 8, 16


def clip_with_sound(path: Path, frames: int = FRAMES, fps: int = FPS) -> Path:
    """An H.264 clip of the moving test pattern with an AAC tone as long as the picture."""
    return write_clip(path, [pattern(i, W, H) for i in range(frames)], fps)


def probe(path: Path) -> tuple[list[np.ndarray], Fraction, float, int]:
    """Decoded frames, average rate, duration (s) and audio packets of a file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        rate = v.average_rate
        audio = sum(1 for p in c.demux(*c.streams.audio) if p.dts is not None) if c.streams.audio else 0
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
        times = [float(f.time) for f in av.open(str(path)).decode(video=0)]
    return frames, rate, times[-1] - times[0] + 1 / float(rate), audio


def job(source: Path, target: Path, checkpoint: Path, **kw) -> RenderJob:
    registry = Registry()
    registry.update({"steps": 1, "octaves": 1, "jitter": 4, "feedback": 0.8})
    return RenderJob(source, target, registry, weights=str(checkpoint), backend="torch", device="cpu", progress=False,
                     **kw)


def test_render_dreams_every_frame_and_keeps_rate_length_and_sound(tmp_path: Path, checkpoint: Path) -> None:
    clip = clip_with_sound(tmp_path / "in.mp4")
    out = tmp_path / "out.mp4"
    exe = Path(sys.executable).with_name("deepdream-live")
    done = subprocess.run([str(exe), "render", str(clip), str(out), "--weights", str(checkpoint), "--steps", "1",
                           "--octaves", "1", "--backend", "torch", "--device", "cpu", "--no-progress"],
                          check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    frames_in, rate_in, duration_in, audio_in = probe(clip)
    frames_out, rate_out, duration_out, audio_out = probe(out)
    assert len(frames_out) == len(frames_in) == FRAMES, "every frame, none dropped"
    assert rate_out == rate_in == FPS and duration_out == pytest.approx(duration_in, abs=1e-3)
    assert audio_out == audio_in > 0, "the sound is copied packet for packet"
    assert frames_out[0].shape == (H, W, 3)
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(frames_in, frames_out)]) > 2, "dreamed"
    assert not state_path(out).exists()


def test_ctrl_c_leaves_a_playable_file_and_resume_gives_the_unbroken_frames(tmp_path: Path, checkpoint: Path) -> None:
    clip = clip_with_sound(tmp_path / "in.mkv")
    whole = tmp_path / "whole.mkv"
    render(job(clip, whole, checkpoint, crf=0))  # lossless: equal frames decode equal

    broken = tmp_path / "broken.mkv"

    def ctrl_c(n: int) -> None:
        if n == 6:
            os.kill(os.getpid(), signal.SIGINT)

    report = render(job(clip, broken, checkpoint, crf=0, on_frame=ctrl_c))
    assert report.interrupted and report.frames in (6, 7)
    partial, _, _, _ = probe(broken)
    assert len(partial) == report.frames, "Ctrl-C leaves a playable file of what was done"
    assert state_path(broken).exists()

    resumed = render(job(clip, broken, checkpoint, crf=0, resume=True))
    assert not resumed.interrupted and resumed.frames == FRAMES and resumed.dreamed == FRAMES - report.frames
    a, rate_a, dur_a, audio_a = probe(whole)
    b, rate_b, dur_b, audio_b = probe(broken)
    assert len(a) == len(b) == FRAMES and rate_a == rate_b and dur_a == pytest.approx(dur_b)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "the same frames as the unbroken run"
    assert audio_a == audio_b
    assert not state_path(broken).exists() and not list(tmp_path.glob("*.resuming"))


def test_resume_refuses_other_settings(tmp_path: Path, checkpoint: Path) -> None:
    clip = clip_with_sound(tmp_path / "in.mkv", frames=8)
    out = tmp_path / "out.mkv"

    def ctrl_c(n: int) -> None:
        if n == 3:
            os.kill(os.getpid(), signal.SIGINT)

    render(job(clip, out, checkpoint, on_frame=ctrl_c))
    with pytest.raises(UsageError, match="differ from the broken-off render"):
        render(job(clip, out, checkpoint, seed=7, resume=True))
    with pytest.raises(UsageError, match="nothing to resume"):
        render(job(clip, tmp_path / "never.mkv", checkpoint, resume=True))
