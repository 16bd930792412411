"""``render`` in segments, on several processes or machines (docs/architecture.md, *Renders across
machines*): plan, run, join.

1. **Plan** (:mod:`live.render_plan`): segments at scene cuts and at most every
   ``--segment-seconds``, warm-ups at splits; printed, and saved beside the output.
2. **Run** the segments not already finished, on one of three runners, all rendering the same plan
   to the same frames:

   - in this process, one after another (no flag but ``--segments``);
   - ``--workers N``: N local processes (one per GPU, or a share of the CPU cores each); a
     process that dies has its segment run again by a new one;
   - ``--ray [ADDRESS|auto]``: Ray tasks, each reading its own frame range from the input and
     writing its segment to the segment folder (frames never go through Ray's object store);
     GPUs as task resources; Ray runs a task again when its worker dies. With no address Ray
     starts a local cluster on loopback; ``auto`` joins the one running here; Ray is the
     optional extra ``deepdream-live[cluster]``.

   A segment is finished once its file and checksum are in the folder (:mod:`live.render_segment`):
   any machine, the driver included, can die without losing finished work, and ``--resume``
   renders only what is missing or damaged. Ctrl-C abandons the segments in hand and keeps the
   rest. Progress: a bar (frames of the whole film, ETA, each worker's rate) and a JSON status file
   beside the output for a farm's dashboard.
3. **Join** (:mod:`live.render_join`): packets copied, the input's timestamps and sound.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from live.atomic import atomic_write
from live.errors import InputError, LiveError, SoftwareError, UnavailableError, UsageError
from live.render import RenderJob, dream_size, fingerprint
from live.render_plan import (DEFAULT_SEGMENT_SECONDS, Plan, Scan, load_plan, make_segments, plan_path, scan,
                              segment_dir, settle_frames, status_path)
from live.render_segment import SegmentCancelled, SegmentResult, SegmentTask, finished, run_segment

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4  # a segment whose workers die this often fails the render (Ray: max_retries = 3)
INSTALL_RAY = "pip install 'deepdream-live[cluster]'"


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


class Outcome(NamedTuple):
    index: int
    result: SegmentResult | None
    error: BaseException | None


# ----------------------------------------------------------------------------- the driver
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
        _import_ray(job.ray == "local")  # before any work: say how to install it
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

    from live.render_join import check_audio, join

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
        with _Interrupt(stop):
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


def _import_ray(local: bool) -> Any:
    """Ray, or UsageError saying how to install it. ``local``: the embedded cluster, started here.
    Ray reads these settings once, when it is imported: no usage statistics sent, and the
    embedded cluster takes a token (Ray >= 2.52 makes one in ~/.ray), because Ray's ports listen on
    every interface; a user's own RAY_AUTH_MODE stands."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray, which is not installed here: {INSTALL_RAY} (or render on local processes "
                         "with --workers N)") from None
    return ray


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
            raise UsageError(f"cannot resume {out}: the input, the settings, the seed, the weights or the encoder differ "
                             "from the broken-off render; use the same ones, or render again without --resume")
        asked = {"--segments": (job.segments, saved.mode), "--segment-seconds": (job.segment_seconds,
                 saved.segment_seconds), "--warmup": (job.warmup, saved.warmup), "--threads": (job.threads, saved.threads)}
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
    import av

    try:
        with av.open(str(source)) as c:
            if not c.streams.video:
                raise InputError(f"{source} has no video stream")
            cc = c.streams.video[0].codec_context
            return cc.width, cc.height
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"cannot read {source}: {e}") from None


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


class _Interrupt:
    """Ctrl-C (SIGINT) or SIGTERM stops the render: the segments in hand are abandoned, the finished
    ones kept; a second one stops at once."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("%s: stopping; finished segments are kept (again to stop at once)", signal.Signals(signum).name)
        self.stop.set()
        signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- progress and status
class Monitor:
    """The progress bar and the JSON status file, from the workers' progress files; notices a
    segment started again (its worker died) and logs it."""

    def __init__(self, plan: Plan, folder: Path, status_file: Path, kept: list[Any], *,
                 progress: bool | None = None) -> None:
        from tqdm import tqdm

        self.plan, self.folder, self.status_file = plan, folder, status_file
        self.runner = ""
        self.started = time.time()
        self.state: dict[int, dict[str, Any]] = {
            s.index: {"index": s.index, "start": s.start, "end": s.end, "warmup": s.warmup, "boundary": s.boundary,
                      "state": "kept" if s in kept else "pending", "attempts": 0, "worker": None, "frames": 0}
            for s in plan.segments}
        for s in kept:
            self.state[s.index]["frames"] = s.frames
        self.kept_frames = sum(s.frames for s in kept)
        self.events: list[dict[str, Any]] = []
        self.restarts = 0
        self.phase_name = "rendering"
        self._last_progress: dict[int, dict[str, Any]] = {}
        self._stamps: dict[str, tuple[int, int, int]] = {}
        self._written = 0.0
        self._refreshed = 0.0
        self.bar = tqdm(total=plan.frames, initial=self.kept_frames, desc="rendering", unit="frame",
                        disable=None if progress is None else not progress)
        self.write()

    def queued(self, index: int) -> None:
        self.state[index]["state"] = "pending"

    def done(self, index: int, result: SegmentResult | None) -> None:
        st = self.state[index]
        st["state"], st["frames"] = "done", st["end"] - st["start"]
        if result is not None:
            st["worker"] = f"{result.host}:{result.pid}"
            st["seconds"] = round(result.seconds, 3)
        self.refresh(force=True)

    def failed(self, index: int, error: BaseException) -> None:
        self.state[index]["state"] = "failed"
        self.state[index]["error"] = str(error)
        self.event(f"segment {index} failed: {error}", logging.DEBUG)

    def event(self, text: str, level: int = logging.INFO) -> None:
        log.log(level, "%s", text)
        self.events = [*self.events[-49:], {"time": time.time(), "text": text}]

    def phase(self, name: str) -> None:
        self.phase_name = name
        self.write()

    def refresh(self, force: bool = False) -> None:
        """Update the bar and (every second) the status file from the workers' progress and
        attempts files: one listing of the segment folder, then only the files that changed (a
        farm's shared storage sees a few reads a second, however many segments wait)."""
        now = time.time()
        if not force and now - self._refreshed < 0.25:
            return
        self._refreshed = now
        changed: list[tuple[int, str]] = []
        try:
            with os.scandir(self.folder) as entries:
                for e in entries:
                    stem, _, kind = e.name.partition(".")
                    if kind not in ("attempts", "progress") or not stem.startswith("seg-"):
                        continue
                    st = e.stat()
                    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                    if self._stamps.get(e.name) != stamp:
                        self._stamps[e.name] = stamp
                        changed.append((int(stem[4:]) if stem[4:].isdigit() else -1, kind))
        except OSError as e:
            log.debug("segment folder %s: %s", self.folder, e)
        for index, kind in sorted(changed, key=lambda c: (c[0], c[1] != "attempts")):  # attempts first
            st = self.state.get(index)
            if st is None or st["state"] in ("kept", "done", "failed"):
                continue
            if kind == "attempts":
                self._attempts_changed(index, st)
            else:
                self._progress_changed(index, st)
        self.bar.n = sum(st["frames"] for st in self.state.values())
        rates = [f"{st['fps']:.2f}" for st in self.state.values() if st["state"] == "running" and st.get("fps")]
        if rates:
            self.bar.set_postfix_str(f"{len(rates)} at work, frames/s each: {' '.join(rates)}", refresh=False)
        self.bar.refresh()
        if force or now - self._written >= 1.0:
            self.write()

    def _attempts_changed(self, index: int, st: dict[str, Any]) -> None:
        attempts = self._attempts(index)
        if len(attempts) > st["attempts"] >= 1:
            last = self._last_progress.get(index, {})
            before = attempts[st["attempts"] - 1]
            self.restarts += 1
            self.event(f"segment {index}: its worker (pid {before.get('pid')} on {before.get('host')}) stopped after "
                       f"{last.get('warmup_done', 0)} warm-up and {last.get('frames', 0)} of {st['end'] - st['start']} "
                       f"frames without finishing; started again by pid {attempts[-1].get('pid')} on "
                       f"{attempts[-1].get('host')} (attempt {len(attempts)})", logging.WARNING)
        st["attempts"] = len(attempts)
        st["pid"] = attempts[-1].get("pid") if attempts else None

    def _progress_changed(self, index: int, st: dict[str, Any]) -> None:
        p = self._progress(index)
        if p is None or p.get("pid") != st.get("pid"):
            return  # an earlier attempt's, or ahead of its attempts line: read again when it changes
        try:
            frames, warm = int(p.get("frames", 0)), int(p.get("warmup_done", 0))
            elapsed = max(1e-6, float(p["updated"]) - float(p["started"]))
        except (KeyError, TypeError, ValueError):
            return  # not a progress file this version wrote
        self._last_progress[index] = p
        st["state"], st["frames"] = "running", max(0, min(frames, st["end"] - st["start"]))
        st["worker"] = f"{str(p.get('host'))[:64]}:{p.get('pid')}"
        st["fps"] = round((frames + warm) / elapsed, 3)

    def _attempts(self, index: int) -> list[dict[str, Any]]:
        try:
            text = (self.folder / f"seg-{index:04d}.attempts").read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a worker killed as it wrote
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def _progress(self, index: int) -> dict[str, Any] | None:
        try:
            p = json.loads((self.folder / f"seg-{index:04d}.progress").read_text())
        except (OSError, ValueError):
            return None
        return p if isinstance(p, dict) else None

    def status(self, state: str | None = None, error: str | None = None) -> dict[str, Any]:
        """The status file's content: what a farm's dashboard reads."""
        frames = sum(st["frames"] for st in self.state.values())
        elapsed = time.time() - self.started
        made = frames - self.kept_frames
        rate = made / elapsed if elapsed > 0 and made > 0 else None
        left = self.plan.frames - frames
        workers = [{"worker": st["worker"], "segment": i, "frames": st["frames"], "fps": st.get("fps")}
                   for i, st in self.state.items() if st["state"] == "running"]
        return {
            "state": state or self.phase_name, "source": self.plan.source, "runner": self.runner,
            "frames_total": self.plan.frames, "frames_done": frames, "frames_kept": self.kept_frames,
            "segments_total": len(self.state),
            "segments_done": sum(1 for st in self.state.values() if st["state"] in ("done", "kept")),
            "fps": round(rate, 3) if rate else None,
            "eta_seconds": round(left / rate, 1) if rate and left > 0 else (0 if left == 0 else None),
            "started": self.started, "updated": time.time(), "restarted_segments": self.restarts,
            "workers": workers, "segments": list(self.state.values()), "events": self.events, "error": error,
            "unreadable_frame": self.plan.scan.unreadable,
        }  # fmt: skip

    def write(self, state: str | None = None, error: str | None = None) -> None:
        self._written = time.time()
        try:
            with atomic_write(self.status_file) as f:
                f.write(json.dumps(self.status(state, error), indent=1).encode())
        except OSError as e:
            log.debug("status file %s: %s", self.status_file, e)

    def close(self, state: str, error: str | None = None) -> None:
        if state == "done":
            self.bar.n = self.plan.frames
        self.bar.close()
        self.write(state, error)


# ----------------------------------------------------------------------------- runners
class Runner:
    """Runs segment tasks somewhere; the driver polls :meth:`wait` for what finished."""

    def describe(self) -> str:
        raise NotImplementedError

    def submit(self, tasks: list[SegmentTask]) -> None:
        raise NotImplementedError

    def wait(self, timeout: float) -> list[Outcome]:
        """Segments that finished (or failed) since the last call, waiting up to ``timeout`` s."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Abandon the segments in hand and those not started (Ctrl-C)."""

    def close(self) -> None:
        """Give back what the runner started."""


class SequentialRunner(Runner):
    """Every segment in this process, one after another: the reference the others must equal."""

    def __init__(self, stop: threading.Event, tick: Callable[[], None]) -> None:
        self.stop, self.tick = stop, tick
        self.queue: deque[SegmentTask] = deque()

    def describe(self) -> str:
        return "this process"

    def submit(self, tasks: list[SegmentTask]) -> None:
        self.queue.extend(tasks)

    def wait(self, timeout: float) -> list[Outcome]:
        if not self.queue:
            return []
        task = self.queue.popleft()

        def cancelled() -> bool:
            self.tick()
            return self.stop.is_set()

        try:
            return [Outcome(task.index, run_segment(task, cancelled=cancelled), None)]
        except LiveError as e:
            return [Outcome(task.index, None, e)]


class _Worker:
    def __init__(self, number: int, process: Any, conn: Any, device: str | None) -> None:
        self.number, self.process, self.conn, self.device = number, process, conn, device
        self.task: SegmentTask | None = None


class ProcessRunner(Runner):
    """``--workers N``: N local processes, each given one segment at a time. A process that dies
    has its segment given to a new process (at most MAX_ATTEMPTS tries a segment)."""

    def __init__(self, workers: int, devices: list[str | None], log_level: int) -> None:
        import multiprocessing

        self.ctx = multiprocessing.get_context("spawn")  # never fork a process that holds threads or CUDA
        self.devices, self.log_level = devices, log_level
        self.queue: deque[SegmentTask] = deque()
        self.tries: dict[int, int] = {}
        self.workers: list[_Worker] = []
        self._early: list[Outcome] = []
        self._started = 0
        for _ in range(workers):
            self.workers.append(self._start())

    def describe(self) -> str:
        devices = sorted({w.device or "cpu" for w in self.workers})
        return f"{len(self.workers)} local processes ({', '.join(devices)})"

    def _start(self, device: str | None = None) -> _Worker:
        number = self._started
        self._started += 1
        if device is None:
            device = self.devices[number % len(self.devices)]
        ours, theirs = self.ctx.Pipe()
        p = self.ctx.Process(target=_worker_main, args=(theirs, device, self.log_level), daemon=True,
                             name=f"render-worker-{number}")
        p.start()
        theirs.close()
        return _Worker(number, p, ours, device)

    def submit(self, tasks: list[SegmentTask]) -> None:
        self.queue.extend(tasks)
        self._early = self._dispatch()

    def _dispatch(self) -> list[Outcome]:
        outcomes = []
        for w in list(self.workers):
            if w.task is None and self.queue:
                w.task = self.queue.popleft()
                self.tries[w.task.index] = self.tries.get(w.task.index, 0) + 1
                try:
                    w.conn.send(w.task)
                except OSError:  # it died while idle: the task goes to its replacement
                    w.process.join(1)
                    outcomes += self._died(w)
        return outcomes

    def wait(self, timeout: float) -> list[Outcome]:
        from multiprocessing.connection import wait

        outcomes, self._early = self._early, []
        busy = [w for w in self.workers if w.task is not None]
        if not busy:
            return outcomes
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout))
        for w in busy:
            if w.conn in ready or w.conn.poll():
                try:
                    kind, value = w.conn.recv()
                except (EOFError, OSError):
                    kind, value = "died", None
                if kind != "died":
                    assert w.task is not None
                    outcomes.append(Outcome(w.task.index, value if kind == "ok" else None,
                                            value if kind == "error" else None))
                    w.task = None
                    continue
            if w.process.sentinel in ready or not w.process.is_alive():
                w.process.join(1)
                outcomes += self._died(w)
        return outcomes + self._dispatch()

    def _died(self, w: _Worker) -> list[Outcome]:
        task, code = w.task, w.process.exitcode
        how = f"exit code {code}"
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        self.workers[self.workers.index(w)] = self._start(w.device)
        w.conn.close()
        if task is None:
            return []
        tries = self.tries.get(task.index, 1)
        if tries >= MAX_ATTEMPTS:
            log.error("worker %d (pid %s) died (%s) in segment %d: giving up on it after %d tries", w.number,
                      w.process.pid, how, task.index, tries)
            return [Outcome(task.index, None, SoftwareError(f"segment {task.index}: its worker died {tries} times "
                                                            f"(last: {how})"))]
        log.warning("worker %d (pid %s) died (%s) while rendering segment %d: a new process renders it again "
                    "(try %d of %d)", w.number, w.process.pid, how, task.index, tries + 1, MAX_ATTEMPTS)
        self.queue.appendleft(task)
        return []

    def cancel(self) -> None:
        self.queue.clear()
        for w in self.workers:
            if w.process.is_alive():
                w.process.terminate()

    def close(self) -> None:
        for w in self.workers:
            if w.process.is_alive() and w.task is None:
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in self.workers:
            w.process.join(10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(5)
            w.conn.close()


def _worker_main(conn: Any, device: str | None, log_level: int) -> None:
    """A local worker process: segments in, results out, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the driver decides
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        if device is not None:
            task = dataclasses.replace(task, device=device)
        try:
            conn.send(("ok", run_segment(task)))
        except LiveError as e:
            conn.send(("error", e))
        except Exception as e:  # noqa: BLE001 - reported to the driver with its type, the worker lives on
            log.exception("segment %d", task.index)
            conn.send(("error", SoftwareError(f"segment {task.index}: {type(e).__name__}: {e}")))


class RayRunner(Runner):
    """``--ray``: each segment a Ray task with its own resources, run again by Ray when its worker
    dies (``max_retries``); an error the segment itself raises (an unreadable frame) is not
    retried. Tasks carry numbers, never frames."""

    def __init__(self, address: str, *, gpus_per_task: float | None, device: str, init: dict[str, Any]) -> None:
        ray = _import_ray(address == "local")
        self.ray = ray
        self.owned = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
            if address == "local":  # the embedded cluster: this machine's resources, no dashboard
                options["include_dashboard"] = False
            else:
                options["address"] = address
            options.update(init)
            t0 = time.perf_counter()
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UnavailableError(f"cannot reach the Ray cluster at {address}: {e}") from None
            self.owned = True
            log.info("Ray %s started in %.1f s", "local cluster" if address == "local" else f"at {address}",
                     time.perf_counter() - t0)
        resources = ray.cluster_resources()
        if gpus_per_task is None:
            gpus_per_task = 1.0 if device != "cpu" and resources.get("GPU", 0) > 0 else 0.0
        self.gpus = gpus_per_task
        self.cpus = 1  # with a GPU; on the CPU, the plan's threads (submit)
        self.device = "cpu" if gpus_per_task == 0 else device
        self.refs: dict[Any, int] = {}
        self.resources = resources

    def describe(self) -> str:
        r = self.resources
        return (f"Ray ({r.get('CPU', 0):g} CPUs, {r.get('GPU', 0):g} GPUs; a task takes {self.cpus} CPU"
                f"{'s' * (self.cpus != 1)}{f' and {self.gpus:g} GPU' if self.gpus else ''})")

    def submit(self, tasks: list[SegmentTask]) -> None:
        if tasks and self.gpus == 0:
            self.cpus = tasks[0].threads
        if self.cpus > self.resources.get("CPU", 0):
            raise UsageError(f"a segment asks for {self.cpus} CPUs; the Ray cluster has "
                             f"{self.resources.get('CPU', 0):g}: use --threads with fewer")
        remote = self.ray.remote(run_segment)
        for task in tasks:
            task = dataclasses.replace(task, device=self.device)
            ref = remote.options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=MAX_ATTEMPTS - 1,
                                 retry_exceptions=False, name=f"deepdream-live segment {task.index}").remote(task)
            self.refs[ref] = task.index

    def wait(self, timeout: float) -> list[Outcome]:
        ray = self.ray
        if not self.refs:
            return []
        ready, _ = ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        outcomes = []
        for ref in ready:
            index = self.refs.pop(ref)
            try:
                outcomes.append(Outcome(index, ray.get(ref), None))
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(e.cause, BaseException) else None
                error = cause if isinstance(cause, LiveError) else SoftwareError(f"segment {index}: {e}")
                outcomes.append(Outcome(index, None, error))
            except ray.exceptions.RayError as e:
                outcomes.append(Outcome(index, None, SoftwareError(
                    f"segment {index}: its worker died {MAX_ATTEMPTS} times ({type(e).__name__}: {e})")))
        return outcomes

    def cancel(self) -> None:
        for ref in list(self.refs):
            try:
                self.ray.cancel(ref, force=True)
            except Exception as e:  # noqa: BLE001 - a task that just finished cannot be cancelled
                log.debug("cancelling: %s", e)
        self.refs.clear()

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()


def _runner(job: FarmJob, stop: threading.Event, tick: Callable[[], None]) -> Runner:
    r = job.render
    if job.ray is not None:
        return RayRunner(job.ray, gpus_per_task=job.gpus_per_task, device=r.device, init=job.ray_init)
    if job.workers:
        return ProcessRunner(job.workers, _local_devices(r.device, job.workers), logging.getLogger().level)
    return SequentialRunner(stop, tick)


def _local_devices(device: str, workers: int) -> list[str | None]:
    """One GPU per local worker where there are GPUs (round robin), else the CPU for all."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return [f"cuda:{i % count}" for i in range(workers)]
    return [None]

