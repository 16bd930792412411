"""``render --audio-map``: the input's own sound drives the look frame by frame, the same on every run."""

from __future__ import annotations

from pathlib import Path

import av

from live.audio import testsignals as ts
from live.audio.timeline import audio_look
from live.control.params import Registry
from live.render import RenderJob, render
from tests.streaming import pattern

W, H, FPS, SECONDS = 96, 64, 8, 3

MAPPING = """
[[map]]
feature = "low"
param = "zoom"
max = 0.02
[[map]]
feature = "onset"
param = "step_size"
mode = "scale"
min = 1.0
max = 3.0
[[trigger]]
on = "beat"
every = 2
action = "next_layer"
"""


def music_video(path: Path) -> Path:
    """A clip of the moving test pattern whose sound is a drum pattern at 120 BPM."""
    drums = ts.drum_pattern(120, SECONDS, noise_db=-40).samples
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        a = c.add_stream("aac", rate=48000)
        a.layout = "mono"
        for i in range(FPS * SECONDS):
            f = av.VideoFrame.from_ndarray(pattern(i, W, H), format="bgr24")
            f.pts = i
            for p in v.encode(f):
                c.mux(p)
        for start in range(0, len(drums), 1024):
            af = av.AudioFrame.from_ndarray(drums[None, start:start + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, start
            for p in a.encode(af):
                c.mux(p)
        for s in (v, a):
            for p in s.encode(None):
                c.mux(p)
    return path


def test_render_with_a_music_file_changes_the_parameters_at_the_same_frames_every_run(tmp_path: Path,
                                                                                       checkpoint: Path) -> None:
    clip = music_video(tmp_path / "in.mp4")
    (tmp_path / "map.toml").write_text(MAPPING)
    runs = []
    times: list[float] = []
    for n in range(2):
        registry = Registry()
        registry.update({"steps": 1, "octaves": 1, "jitter": 4, "width": 96, "height": 64})
        look = audio_look(clip, tmp_path / "map.toml", registry)
        seen: list[tuple[float, float, str]] = []
        if n == 1:  # the second run: the same look asked at the frames' times, without dreaming them
            for t in times:
                snap = look(t)
                seen.append((round(snap.zoom, 9), round(snap.step_size, 9), str(snap.objective)))
            runs.append(seen)
            break

        def recording(t: float, look=look, seen=seen):
            times.append(t)
            snap = look(t)
            seen.append((round(snap.zoom, 9), round(snap.step_size, 9), str(snap.objective)))
            return snap

        job = RenderJob(clip, tmp_path / f"out{n}.mp4", registry, weights=str(checkpoint), backend="torch",
                        device="cpu", progress=False, look=recording)
        report = render(job)
        assert report.frames == FPS * SECONDS and not report.interrupted
        runs.append(seen)
    assert runs[0] == runs[1]  # the same look at the same frames, every run
    zooms = [z for z, _, _ in runs[0]]
    layers = [layer for _, _, layer in runs[0]]
    assert len(set(zooms)) > 5 and max(zooms) > 0.005  # the bass moved the zoom
    assert len(set(layers)) >= 2  # every second beat stepped the layer
    with av.open(str(tmp_path / "out0.mp4")) as out:
        assert out.streams.audio  # the sound is kept
