"""``render`` in segments (``--segments``, ``--workers``, ``--ray``): a film planned at its scene
cuts and every few seconds with warm-ups, rendered by any runner to the same frames, joined with
the input's frame times and sound; a worker killed mid-segment, Ctrl-C and an unreadable frame
lose no finished work.

Films here are 64x48 pans across real photographs (one shot per photograph), 8 fps, dreamed at
64x64 with one step a frame: a segment takes a fraction of a second. The Ray tests share one
local cluster for the session (tests/conftest.py, ``ray_cluster``)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from bench.render_farm import Killer
from live.cli import main
from live.control.params import Registry
from live.errors import InputError, UsageError
from live.render import RenderJob, render
from live.render.farm import FarmJob, render_farm
from live.render.plan import load_plan, plan_path, segment_dir, split, status_path
from tests.conftest import photo_path
from tests.streaming import write_clip

W, H, FPS = 64, 48, 8
SHOT1, SHOT2 = 20, 12  # frames of the two shots of FILM


def film(path: Path, shots: list[tuple[str, int, int]], *, sound: bool = True, codec: str = "libx264") -> Path:
    """A clip of real photographs, one shot each (a cut between them): (photograph, frames, pixels
    panned a frame; 0 holds it still, with a camera's noise), with a 440 Hz tone as long as the
    picture."""
    frames = []
    rng = np.random.default_rng(0)
    for name, count, pan in shots:
        picture = cv2.resize(cv2.imread(str(photo_path(name))), (128, 96), interpolation=cv2.INTER_AREA)
        for i in range(count):
            crop = picture[20 : 20 + H, pan * i : pan * i + W].astype(np.int16)
            noise = rng.integers(-2, 3, crop.shape) if pan == 0 else 0
            frames.append(np.clip(crop + noise, 0, 255).astype(np.uint8))
    return write_clip(path, frames, FPS, sound=sound, codec=codec)


@pytest.fixture(scope="module")
def two_shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-second film: a pan across the cat (20 frames), a cut, the coffee held still (12)."""
    return film(tmp_path_factory.mktemp("film") / "two-shots.mkv",
                [("chelsea.png", SHOT1, 1), ("coffee.png", SHOT2, 0)])


def job(source: Path, target: Path, checkpoint: Path, **kw: object) -> RenderJob:
    registry = Registry()
    registry.update({"steps": 1, "octaves": 1, "jitter": 4, "feedback": 0.9, "width": 64, "height": 64})
    return RenderJob(source, target, registry, weights=str(checkpoint), backend="torch", device="cpu", progress=False,
                     crf=0, **kw)  # lossless: equal frames decode equal


def farm(source: Path, target: Path, checkpoint: Path, *, resume: bool = False, **kw: object) -> FarmJob:
    """Segments of 1 s (8 frames) with a 4-frame warm-up, one thread each."""
    kw = {"segment_seconds": 1.0, "warmup": 4, "threads": 1, **kw}
    return FarmJob(job(source, target, checkpoint, resume=resume), **kw)


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def times(path: Path) -> tuple[list[float], list[float], int]:
    """Video frame times and audio packet times (seconds), and the audio packet count."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        video = sorted(float(p.pts * v.time_base) for p in c.demux(v) if p.pts is not None)
    with av.open(str(path)) as c:
        audio = [float(p.pts * p.time_base) for p in c.demux(*c.streams.audio) if p.pts is not None]
    return video, audio, len(audio)


def test_plan_cuts_at_scene_cuts_and_every_segment_seconds_with_warmups(two_shots: Path, tmp_path: Path,
                                                                         checkpoint: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="live.render.farm")
    out = tmp_path / "out.mkv"
    report = render_farm(farm(two_shots, out, checkpoint, keep_segments=True))
    plan = report.plan
    assert plan.scan.cuts == (SHOT1,), "the loop's own detector finds the one cut, and no cut inside a pan"
    assert [(s.start, s.end, s.boundary, s.warmup) for s in plan.segments] == [
        (0, 7, "start", 0), (7, 13, "split", 4), (13, 20, "split", 4), (20, 26, "cut", 0), (26, 32, "split", 4)]
    # a segment followed by a split dreams the next one's warm-up and fades into it; before a cut, nothing
    assert [(s.lead, s.fade) for s in plan.segments] == [(4, 2), (4, 2), (0, 0), (4, 2), (0, 0)]
    assert load_plan(plan_path(out)) == plan, "the plan is saved beside the output"
    printed = "\n".join(r.getMessage() for r in caplog.records)
    assert "32 frames in 5 segments (2 shots" in printed and "   26-31 " in printed, "and printed"
    sidecars = sorted(segment_dir(out).glob("seg-*.json"))
    assert len(sidecars) == 5 and all(len(json.loads(p.read_text())["sha256"]) == 64 for p in sidecars)
    # N segments: at cuts where there are enough, the longest split where there are not
    assert split(32, (20,), 1, 8) == [(0, 32)]
    assert split(32, (20,), 2, 8) == [(0, 20), (20, 32)]
    assert split(32, (20,), 3, 8) == [(0, 10), (10, 20), (20, 32)]
    assert split(32, (5, 10, 20), 2, 8) == [(0, 20), (20, 32)]  # the better balance of 20|12 and 10|22


def test_joined_film_has_the_inputs_frames_times_and_sound_and_cut_segments_equal_one_run(
        two_shots: Path, tmp_path: Path, checkpoint: Path, capsys) -> None:
    import torch

    threads = torch.get_num_threads()
    whole = tmp_path / "whole.mkv"
    render(job(two_shots, whole, checkpoint))
    out = tmp_path / "segmented.mp4"
    j = farm(two_shots, out, checkpoint, threads=threads)  # the one-process run's threads: its very arithmetic
    j.render.progress = True
    report = render_farm(j)
    assert not report.interrupted and report.frames == SHOT1 + SHOT2 and report.rendered == 5

    video_in, audio_in, n_audio_in = times(two_shots)
    video_out, audio_out, n_audio_out = times(out)
    assert video_out == video_in, "every frame, at the input's own time"
    assert n_audio_out == n_audio_in > 0 and audio_out == pytest.approx(audio_in, abs=1e-3), "the sound, as it was"

    one, seg = decoded(whole), decoded(out)
    assert len(seg) == len(one) == SHOT1 + SHOT2
    # Segments that start at the film's start or at a cut dream exactly what one run dreams, up
    # to the fade into the next segment's warm-up: frames 0-4 and 20-23.
    for i in [*range(0, 5), *range(20, 24)]:
        assert np.array_equal(one[i], seg[i]), f"frame {i}"
    # The split in the still shot (frame 26), where a jump in the dream would show (a pan's own
    # motion hides one): no bigger a change than inside the shot (without the warm-up and the
    # fade it measures about 2x here).
    change = [np.abs(seg[i].astype(int) - seg[i - 1]).mean() for i in range(len(seg))]
    inside = np.median([change[i] for i in range(SHOT1 + 1, SHOT1 + SHOT2) if i != 26])
    assert change[26] <= 1.2 * inside, f"seam: {change[26]:.2f} against {inside:.2f} inside"

    status = json.loads(status_path(out).read_text())
    assert status["state"] == "done" and status["frames_done"] == status["frames_total"] == SHOT1 + SHOT2
    assert not segment_dir(out).exists(), "segments go once the film is joined"
    assert "rendering" in capsys.readouterr().err


def test_local_workers_give_the_sequential_frames_and_survive_a_killed_worker(
        two_shots: Path, tmp_path: Path, checkpoint: Path, caplog) -> None:
    """About 10 s: two worker processes start (PyTorch imported, the network loaded) and one is
    started again after the kill."""
    caplog.set_level(logging.INFO)
    reference = tmp_path / "sequential.mkv"
    render_farm(farm(two_shots, reference, checkpoint, segments=2, segment_seconds=None, warmup=None))
    out = tmp_path / "workers.mkv"
    killer = Killer(segment_dir(out), after=1)
    killer.start()
    try:
        report = render_farm(farm(two_shots, out, checkpoint, segments=2, segment_seconds=None, warmup=None,
                                  workers=2))
    finally:
        killer.stop.set()
    assert killer.killed is not None
    segment, pid = killer.killed
    assert report.frames == SHOT1 + SHOT2 and report.restarted == 1, "the killed worker's segment, done again"
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert f"(pid {pid}) died (killed by SIGKILL) while rendering segment {segment}" in log
    assert f"segment {segment}: its worker (pid {pid} on" in log and "started again" in log
    a, b = decoded(reference), decoded(out)
    assert len(a) == len(b) == SHOT1 + SHOT2
    assert all(np.array_equal(x, y) for x, y in zip(a, b)), "the same plan, the same frames, bit for bit"


def test_ray_tasks_give_the_sequential_frames_bit_for_bit(ray_cluster: object, two_shots: Path, tmp_path: Path,
                                                          checkpoint: Path) -> None:
    reference = tmp_path / "sequential.mkv"
    render_farm(farm(two_shots, reference, checkpoint))
    out = tmp_path / "ray.mkv"
    report = render_farm(farm(two_shots, out, checkpoint, ray="local"))
    assert report.frames == SHOT1 + SHOT2 and report.rendered == 5
    a, b = decoded(reference), decoded(out)
    assert len(b) == SHOT1 + SHOT2 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert times(out)[0] == times(two_shots)[0]
    status = json.loads(status_path(out).read_text())
    assert status["runner"].startswith("Ray (2 CPUs") and status["state"] == "done"


def test_ray_runs_a_killed_workers_segment_again_and_says_so(ray_cluster: object, two_shots: Path, tmp_path: Path,
                                                            checkpoint: Path, caplog) -> None:
    """Several seconds: Ray starts a new worker process (PyTorch, the network) for the retry."""
    caplog.set_level(logging.INFO)
    out = tmp_path / "ray.mkv"
    killer = Killer(segment_dir(out), after=1)
    killer.start()
    try:
        report = render_farm(farm(two_shots, out, checkpoint, segments=2, segment_seconds=None, ray="local"))
    finally:
        killer.stop.set()
    assert killer.killed is not None
    segment, pid = killer.killed
    assert report.frames == SHOT1 + SHOT2 == len(decoded(out)), "100% of the frames"
    assert report.restarted == 1
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert f"segment {segment}: its worker (pid {pid} on" in log and "started again" in log
    events = json.loads(status_path(out).read_text())["events"]
    assert any(f"pid {pid}" in e["text"] for e in events), "the dashboard hears of it too"


def test_ctrl_c_keeps_finished_segments_and_resume_redoes_only_missing_or_damaged(
        two_shots: Path, tmp_path: Path, checkpoint: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    whole = tmp_path / "whole.mkv"
    render_farm(farm(two_shots, whole, checkpoint))
    out = tmp_path / "out.mkv"
    folder = segment_dir(out)

    def ctrl_c_after_two() -> None:  # Ctrl-C once two segments are finished
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(list(folder.glob("seg-*.json"))) < 2:
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_after_two, daemon=True).start()
    report = render_farm(farm(two_shots, out, checkpoint))
    assert report.interrupted and not out.exists()
    finished = sorted(folder.glob("seg-*.json"))
    assert 2 <= len(finished) < 5, "the finished segments are kept"
    status = json.loads(status_path(out).read_text())
    assert status["state"] == "interrupted" and status["segments_done"] == len(finished)
    assert status["frames_done"] == sum(json.loads(p.read_text())["frames"] for p in finished), "finished work only"
    assert not list(folder.glob("*.part")), "nothing half-written is left to look finished"

    with pytest.raises(UsageError, match="add --resume to keep them"):  # a plain rerun does not throw them away
        render_farm(farm(two_shots, out, checkpoint))

    damaged = folder / "seg-0000.mkv"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(data)
    caplog.clear()
    resumed = render_farm(farm(two_shots, out, checkpoint, resume=True))
    assert resumed.kept == len(finished) - 1 and resumed.rendered == 5 - resumed.kept
    assert "segment 0 (checksum differs (damaged))" in "\n".join(r.getMessage() for r in caplog.records)
    a, b = decoded(whole), decoded(out)
    assert len(b) == SHOT1 + SHOT2 and all(np.array_equal(x, y) for x, y in zip(a, b)), "as if never stopped"

    with pytest.raises(UsageError, match="differ from the broken-off render"):
        render_farm(FarmJob(job(two_shots, out, checkpoint, resume=True, seed=5), threads=1))


def test_an_unreadable_frame_is_named_and_the_segments_before_it_are_kept(tmp_path: Path, checkpoint: Path,
                                                                          capsys) -> None:
    clip = film(tmp_path / "damaged.mkv", [("chelsea.png", 24, 1)], sound=False, codec="mjpeg")
    with av.open(str(clip)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    pos, size = packets[17]
    data = bytearray(clip.read_bytes())
    data[pos + size // 4 : pos + size] = b"\xff" * (size - size // 4)  # frame 17: not a JPEG any more
    clip.write_bytes(data)
    out = tmp_path / "out.mkv"
    code = main(["render", str(clip), str(out), "--weights", str(checkpoint), "--backend", "torch", "--device", "cpu",
                 "--steps", "1", "--octaves", "1", "--size", "64x64", "--segments", "auto", "--segment-seconds", "1",
                 "--warmup", "2", "--threads", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == InputError.exit_code, err
    assert "error: cannot read frame 17 of" in err and "segments before it are finished and kept" in err
    kept = sorted(p.name for p in segment_dir(out).glob("seg-*.mkv"))
    assert kept == ["seg-0000.mkv", "seg-0001.mkv", "seg-0002.mkv"], "frames 0-16, in three segments"
    assert not out.exists()


def test_ray_not_installed_says_how_to_install_it_and_exits_64(two_shots: Path, tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as where it is not installed
    code = main(["render", str(two_shots), str(tmp_path / "out.mkv"), "--ray"])
    err = capsys.readouterr().err
    assert code == 64, err
    assert "pip install 'deepdream-live[cluster]'" in err and not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def saved_plan(two_shots: Path, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The plan file of a finished render of ``two_shots`` in 2 segments."""
    out = tmp_path_factory.mktemp("plan") / "out.mkv"
    render_farm(farm(two_shots, out, checkpoint, segments=2, segment_seconds=None))
    return plan_path(out).read_text()


@pytest.mark.parametrize("damage", ["not json {", "[]", '{"version": 1}', "truncate", "segments overlap",
                                    "frames beyond the input", "negative warm-up", "a string for a number"])
def test_a_damaged_plan_is_refused_in_one_line(two_shots: Path, tmp_path: Path, checkpoint: Path, capsys,
                                                 saved_plan: str, damage: str) -> None:
    """A plan is read back from shared storage on --resume: what does not hold together is
    refused before any worker reads a frame range from it."""
    out = tmp_path / "out.mkv"
    path = plan_path(out)
    text = saved_plan
    data = json.loads(text)
    if damage == "truncate":
        text = text[: len(text) // 2]
    elif damage == "segments overlap":
        data["segments"][1]["start"] = 5
    elif damage == "frames beyond the input":
        data["segments"][-1]["end"] = 10**9
    elif damage == "negative warm-up":
        data["segments"][1]["warmup"] = -3
    elif damage == "a string for a number":
        data["scan"]["pts"][3] = "3; rm -rf /"
    else:
        text = damage
    path.write_text(text if damage in ("truncate", "not json {", "[]", '{"version": 1}') else json.dumps(data))
    capsys.readouterr()  # what the first render said
    code = main(["render", str(two_shots), str(out), "--weights", str(checkpoint), "--backend", "torch", "--device",
                 "cpu", "--segments", "2", "--threads", "1", "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 65, err
    assert err.count("deepdream-live: error: cannot read the render plan") == 1 and "Traceback" not in err


def test_a_restart_is_counted_when_the_driver_first_reads_the_segment_after_its_retry_began(tmp_path: Path) -> None:
    """A busy driver may read a segment's attempts file only once the retry has added its line
    too: the first attempt was never seen running, yet its worker died and that is reported."""
    from types import SimpleNamespace

    from live.render.status import Monitor

    segment = SimpleNamespace(index=0, start=0, end=8, warmup=0, boundary="start", frames=8)
    plan = SimpleNamespace(segments=(segment,), frames=8, source="film.mkv", scan=SimpleNamespace(unreadable=None))
    folder = tmp_path / "segments"
    folder.mkdir()
    (folder / "seg-0000.attempts").write_text(
        json.dumps({"pid": 11, "host": "a"}) + "\n" + json.dumps({"pid": 12, "host": "b"}) + "\n")
    monitor = Monitor(plan, folder, tmp_path / "status.json", [], progress=False)  # type: ignore[arg-type]
    monitor.refresh(force=True)
    assert monitor.restarts == 1
    assert "its worker (pid 11 on a)" in monitor.events[-1]["text"] and "pid 12 on b" in monitor.events[-1]["text"]
    monitor.refresh(force=True)  # read again, nothing new: counted once
    assert monitor.restarts == 1


def test_a_restart_is_counted_when_the_retry_finished_before_the_driver_looked(tmp_path: Path) -> None:
    """A retry of a short segment can start and finish between two looks of the driver: the
    segment is reported done first, and its worker's death is still counted and said."""
    from types import SimpleNamespace

    from live.render.status import Monitor

    segment = SimpleNamespace(index=0, start=0, end=8, warmup=0, boundary="start", frames=8)
    plan = SimpleNamespace(segments=(segment,), frames=8, source="film.mkv", scan=SimpleNamespace(unreadable=None))
    folder = tmp_path / "segments"
    folder.mkdir()
    monitor = Monitor(plan, folder, tmp_path / "status.json", [], progress=False)  # type: ignore[arg-type]
    (folder / "seg-0000.attempts").write_text(
        json.dumps({"pid": 11, "host": "a"}) + "\n" + json.dumps({"pid": 12, "host": "a"}) + "\n")
    monitor.done(0, None)
    assert monitor.restarts == 1
    assert "its worker (pid 11 on a)" in monitor.events[-1]["text"]
    assert json.loads((tmp_path / "status.json").read_text())["restarted_segments"] == 1
