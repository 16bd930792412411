"""``render`` in segments, on several processes or machines (docs/architecture.md, *Renders across
machines*): plan, run, join.

1. **Plan** (:mod:`live.render.plan`): segments at scene cuts and at most every
   ``--segment-seconds``, warm-ups at splits; printed, and saved beside the output.
2. **Run** the segments not already finished, on one of three runners, all rendering the same plan
   to the same frames:

   - in this process, one after another (no flag but ``--segments``);
   - ``--workers N``: N local processes (one per GPU, or a share of the CPU cores each); a
     process that dies has its segment run again by a new one;
   - ``--ray [ADDRESS|auto]``: Ray tasks, each reading its own frame range from the input and
     writing its segment to the segment folder (frames never go through Ray's object store);
     GPUs as task resources; Ray runs a task again when its worker dies. With no address Ray
     starts a local cluster for the render; ``auto`` joins the one running here; Ray is the
     optional extra ``deepdream-live[cluster]``.

   (:mod:`live.render.runners`; progress and the status file: :mod:`live.render.status`.)

   A segment is finished once its file and checksum are in the folder (:mod:`live.render.segment`):
   any machine, the driver included, can die without losing finished work, and ``--resume``
   renders only what is missing or damaged. Ctrl-C abandons the segments in hand and keeps the
   rest. Progress: a bar (frames of the whole film, ETA, each worker's rate) and a JSON status file
   beside the output for a farm's dashboard.
3. **Join** (:mod:`live.render.join`): packets copied, the input's timestamps and sound.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from live.errors import InputError, LiveError, SoftwareError, UsageError
from live.render import Interrupt, RenderJob, dream_size, fingerprint
from live.render.plan import (
    DEFAULT_SEGMENT_SECONDS,
    Plan,
    Scan,
    load_plan,
    make_segments,
    open_film,
    plan_path,
    scan,
    segment_dir,
    settle_frames,
    status_path,
)
from live.render.runners import Outcome, ProcessRunner, RayRunner, Runner, SequentialRunner, import_ray, local_devices
from live.render.segment import SegmentCancelled, SegmentResult, SegmentTask, finished
from live.render.status import Monitor

log = logging.getLogger(__name__)

@dataclass
class FarmJob:
    """A render in segments: the one-process job's settings plus how to split and where to run."""

    render: RenderJob
    segments: str | int = "auto"  # "auto" or a number of segments
    segment_seconds: float | None = None  # None: DEFAULT_SEGMENT_SECONDS, or the saved plan's on --resume
    warmup: int | None = None  # None: settle_frames(feedback), or the saved plan's
    workers: int | None = None  # local processes
    ray: str | None = None  # "local" (start one here), "auto" (the one running here) or an address
    threads: int | None = None  # intra-op CPU threads per segment (None: a share of the cores)
    gpus_per_task: float | None = None  # Ray; None: 1 where the cluster has GPUs and the device is not cpu
    keep_segments: bool = False
    ray_init: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra ray.init arguments


@dataclass(frozen=True)
class FarmReport:
    """What a render in segments did."""

    frames: int  # frames in the output (0 when interrupted)
    segments: int
    rendered: int  # segments rendered by this run
    kept: int  # finished segments found and kept (--resume)
    restarted: int  # segments started again after their worker died
    seconds: float
    interrupted: bool
    plan: Plan
    results: tuple[SegmentResult, ...] = ()  # what each segment rendered by this run reported


def render_farm(job: FarmJob) -> FarmReport:
    """Plan, run and join; see the module docstring. Raises InputError naming a frame that cannot
    be read (after the segments before it are finished and kept), UsageError (bad settings, a
    resume that does not match, Ray missing), OutputError."""
    from live.outputs.targets import check_record_path, parse_target

    started = time.monotonic()
    r = job.render
    target = parse_target(r.target)
    if target.network:
        raise UsageError(f"render writes a file (.mp4, .mov, .mkv), not a stream: {target.shown}")
    check_record_path(target)
    if job.ray is not None and job.workers is not None:
        raise UsageError("--workers runs local processes and --ray runs Ray tasks: give one of them")
    if job.ray is not None:
        import_ray(job.ray == "local")  # before any work: say how to install it
    if not r.source.is_file():
        raise InputError(f"cannot render {r.source}: no such file")
    out = target.path
    folder, plan_file = segment_dir(out), plan_path(out)
    if not r.resume and folder.is_dir() and any(folder.glob("seg-*.json")):
        raise UsageError(f"{folder} holds finished segments of an earlier render of {out.name}: add --resume to keep "
                         "them, or delete the folder to start over")
    if r.resume and not plan_file.exists():
        raise UsageError(f"nothing to resume: {plan_file.name} is missing; render without --resume")

    import av

    from live.render.join import check_audio, join

    try:
        check_audio(r.source, out)
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"cannot read {r.source}: {e}") from None
    stop = threading.Event()
    # The runner first: a Ray cluster that cannot be reached says so before the input is read, and
    # local workers start (PyTorch, the network) while it is.
    ticks: list[Callable[[], None]] = []
    runner = _runner(job, stop, lambda: ticks[0]() if ticks else None)
    try:
        plan = _plan(job, out, plan_file)
        for line in plan.describe():
            log.info("%s", line)
        folder.mkdir(exist_ok=True)
        todo, kept = _triage(plan, folder)
        monitor = Monitor(plan, folder, status_path(out), kept, progress=r.progress)
    except BaseException:
        runner.cancel()
        runner.close()
        raise
    ticks.append(monitor.refresh)
    monitor.runner = runner.describe()
    outcomes: dict[int, Outcome] = {}
    interrupted = False
    try:
        with Interrupt(stop, "stopping; finished segments are kept (again to stop at once)"):
            if todo:
                runner.submit([_task(job, plan, folder, s) for s in todo])
                monitor.runner = runner.describe()
                pending = {s.index for s in todo}
                for s in todo:
                    monitor.queued(s.index)
                while pending:
                    if stop.is_set():
                        interrupted = True
                        break
                    for o in runner.wait(0.5):
                        pending.discard(o.index)
                        outcomes[o.index] = o
                        if o.error is None:
                            monitor.done(o.index, o.result)
                        elif isinstance(o.error, SegmentCancelled):
                            interrupted = True
                        else:
                            monitor.failed(o.index, o.error)
                            log.error("segment %d: %s", o.index, o.error)
                    monitor.refresh()
                if interrupted:
                    runner.cancel()
    except BaseException as e:
        runner.cancel()
        monitor.close("failed" if not isinstance(e, KeyboardInterrupt) else "interrupted", str(e))
        raise
    finally:
        runner.close()
        _tidy(folder)
    rendered = sum(1 for o in outcomes.values() if o.error is None)
    results = tuple(o.result for _, o in sorted(outcomes.items()) if o.result is not None)
    report = FarmReport(0, len(plan.segments), rendered, len(kept), monitor.restarts, time.monotonic() - started,
                        interrupted, plan, results)
    if interrupted:
        monitor.close("interrupted")
        log.info("interrupted: %d of %d segments finished and kept in %s; continue with --resume",
                 len(kept) + rendered, len(plan.segments), folder)
        return report
    errors = [o for o in outcomes.values() if o.error is not None]
    if errors:
        first = min(errors, key=lambda o: o.index).error
        done = len(kept) + rendered
        monitor.close("failed", str(first))
        message = f"{first}; {done} of {len(plan.segments)} segments finished and kept in {folder}"
        raise (type(first) if isinstance(first, LiveError) else SoftwareError)(message)
    if not plan.complete:
        monitor.close("failed", f"frame {plan.scan.unreadable} cannot be read")
        raise InputError(f"cannot read frame {plan.scan.unreadable} of {r.source} (time "
                         f"{plan.seconds(plan.scan.unreadable):.3f} s): {plan.scan.reason}; the "
                         f"{len(plan.segments)} segments before it are finished and kept in {folder}: when the "
                         "file reads again, --resume renders the rest")
    monitor.phase("joining")
    try:
        joined = join(plan, [folder / f"seg-{s.index:04d}.mkv" for s in plan.segments], out)
    except LiveError as e:
        monitor.close("failed", str(e))
        raise
    if not job.keep_segments:
        _remove_segments(folder)
    monitor.close("done")
    seconds = time.monotonic() - started
    log.info("rendered %d frames to %s in %.0f s (%d segments: %d rendered now, %d kept; %d started again after a "
             "worker died)", joined.frames, out, seconds, len(plan.segments), rendered, len(kept), monitor.restarts)
    return dataclasses.replace(report, frames=joined.frames, seconds=seconds)


def _plan(job: FarmJob, out: Path, plan_file: Path) -> Plan:
    """The saved plan on --resume (checked against these settings; a plan cut short by an
    unreadable frame is made again), else a new one, saved."""
    r = job.render
    snap = r.registry.snapshot()
    width, height = _video_size(r.source)
    size = dream_size(snap, width, height)
    codec = _codec(r.codec)
    fp = hashlib.sha256(f"{fingerprint(r, snap, size)}:{codec}:{r.keyframe_seconds}".encode()).hexdigest()[:16]
    saved = load_plan(plan_file) if r.resume else None
    if saved is not None:
        if saved.fingerprint != fp:
            raise UsageError(f"cannot resume {out}: the input, the settings, the seed, the weights or the encoder "
                             "differ from the broken-off render; use the same ones, or render again without --resume")
        asked = {"--segments": (job.segments, saved.mode),
                 "--segment-seconds": (job.segment_seconds, saved.segment_seconds),
                 "--warmup": (job.warmup, saved.warmup), "--threads": (job.threads, saved.threads)}
        for flag, (given, was) in asked.items():
            if given is not None and given != was and not (flag == "--segments" and given == "auto"):
                raise UsageError(f"cannot resume {out} with {flag} {given}: its plan was made with {was}; leave the "
                                 "flag out, or render again without --resume")
        if saved.complete:
            log.info("resuming %s with its saved plan (%s)", out, plan_file.name)
            return saved
        log.info("the saved plan stopped at an unreadable frame %d: reading the input again", saved.scan.unreadable)
        mode, seconds, warmup, threads = saved.mode, saved.segment_seconds, saved.warmup, saved.threads
    else:
        mode = job.segments
        seconds = job.segment_seconds if job.segment_seconds is not None else DEFAULT_SEGMENT_SECONDS
        warmup = job.warmup if job.warmup is not None else settle_frames(snap.feedback)
        threads = job.threads or _default_threads(job)
    if not seconds > 0:
        raise UsageError(f"--segment-seconds must be above 0, got {seconds}")
    if warmup < 0:
        raise UsageError(f"--warmup must be 0 or more frames, got {warmup}")
    found = _scan(r)
    segment_frames = max(1, round(seconds * float(found.rate)))
    segments = tuple(make_segments(found, mode, segment_frames, warmup)) if found.frames else ()
    settings = {k: str(v) for k, v in sorted(snap.items()) if k not in ("reset", "freeze", "pause", "fps_cap",
                                                                        "morph_time")}
    settings.update(seed=r.seed, weights=str(r.weights), model=r.model, flow_preset=r.flow_preset,
                    dream_size=list(size), crf=r.crf, bitrate=r.bitrate, keyframe_seconds=r.keyframe_seconds)
    plan = Plan(str(r.source.resolve()), fp, found, segments, mode, seconds, warmup, threads, codec, settings)
    plan.save(plan_file)
    return plan


def _video_size(source: Path) -> tuple[int, int]:
    with open_film(source) as c:
        cc = c.streams.video[0].codec_context
        return cc.width, cc.height


def _codec(codec: str | None) -> str:
    """The segments' encoder: the one asked for, else libx264 (in every PyAV wheel, so every
    machine encodes alike: segments only join when one encoder made them all)."""
    import av

    codec = codec or "libx264"
    if codec not in av.codecs_available:
        raise UsageError(f"encoder {codec!r} is not in this FFmpeg build; try libx264")
    return codec


def _default_threads(job: FarmJob) -> int:
    """Threads per segment when nobody says: a share of this machine's cores per local worker;
    one per Ray task (a task per core); all of them in one process."""
    import torch

    from live import threads

    if job.ray is not None:
        return 1
    if job.workers:
        return max(1, threads.cores() // job.workers)
    return torch.get_num_threads()


def _scan(r: RenderJob) -> Scan:
    from tqdm import tqdm

    with tqdm(desc="reading the input", unit="frame", disable=None if r.progress is None else not r.progress) as bar:
        found = scan(r.source, progress=lambda n: bar.update(1))
    if found.unreadable is not None:
        log.warning("frame %d of %s cannot be read (%s): the plan stops there; the frames before it are rendered "
                    "and kept, then the render fails", found.unreadable, r.source, found.reason)
    return found


def _triage(plan: Plan, folder: Path) -> tuple[list[Any], list[Any]]:
    """Segments to render and segments finished and intact (kept)."""
    todo, kept, why = [], [], {}
    for s in plan.segments:
        ok, reason = finished(folder, s.index, plan.key(s), s.frames)
        if ok:
            kept.append(s)
            continue
        todo.append(s)
        why.setdefault(reason, []).append(s.index)
        if reason != "missing":
            for name in (f"seg-{s.index:04d}.mkv", f"seg-{s.index:04d}.json"):
                (folder / name).unlink(missing_ok=True)
    for s in todo:  # a fresh start for the attempts and progress of what is rendered now
        for suffix in ("attempts", "progress"):
            (folder / f"seg-{s.index:04d}.{suffix}").unlink(missing_ok=True)
    if kept:
        log.info("kept %d finished segments (checksums verified)", len(kept))
    for reason, indices in why.items():
        if reason != "missing":
            log.warning("rendering again: segment%s %s (%s)", "s" * (len(indices) > 1), ", ".join(map(str, indices)),
                        reason)
    return todo, kept


def _task(job: FarmJob, plan: Plan, folder: Path, s: Any) -> SegmentTask:
    r = job.render
    snap = r.registry.snapshot()
    sc = plan.scan
    return SegmentTask(
        index=s.index, start=s.start, end=s.end, warmup=s.warmup, lead=s.lead, fade=s.fade, key=plan.key(s),
        source=plan.source,
        folder=str(folder.resolve()), pts=tuple(sc.pts[s.first : s.end]),
        time_base=(sc.time_base.numerator, sc.time_base.denominator), rate=(sc.rate.numerator, sc.rate.denominator),
        size=(sc.width, sc.height), dream_size=tuple(plan.settings["dream_size"]), values=dict(snap.items()),
        seed=r.seed, flow_preset=r.flow_preset, weights=r.weights, model=r.model, backend=r.backend, device=r.device,
        threads=plan.threads, codec=plan.codec, crf=r.crf, bitrate=r.bitrate, keyframe_seconds=r.keyframe_seconds,
    )  # fmt: skip


def _tidy(folder: Path) -> None:
    """Remove what abandoned attempts left (never a finished segment)."""
    for part in folder.glob("*.part"):
        part.unlink(missing_ok=True)


def _remove_segments(folder: Path) -> None:
    for f in folder.glob("seg-*"):
        f.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # someone else's file in it: leave it


def _runner(job: FarmJob, stop: threading.Event, tick: Callable[[], None]) -> Runner:
    r = job.render
    if job.ray is not None:
        return RayRunner(job.ray, gpus_per_task=job.gpus_per_task, device=r.device, init=job.ray_init)
    if job.workers:
        return ProcessRunner(job.workers, local_devices(r.device, job.workers), logging.getLogger().level)
    return SequentialRunner(stop, tick)


