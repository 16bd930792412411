"""Where the segments of a farm render run (docs/architecture.md, *Renders across machines*):
one interface (:class:`Runner`: submit, wait for what finished, cancel, close) and three runners
that render a plan to the same frames: this process (:class:`SequentialRunner`), local processes
(:class:`ProcessRunner`, ``--workers``) and Ray tasks (:class:`RayRunner`, ``--ray``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from live.errors import LiveError, SoftwareError, UnavailableError, UsageError
from live.render.segment import SegmentResult, SegmentTask, run_segment

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4  # a segment whose workers die this often fails the render (Ray: max_retries = 3)
INSTALL_RAY = "pip install 'deepdream-live[cluster]'"


class Outcome(NamedTuple):
    """What a runner reports for one segment: its result, or the error that ended it."""

    index: int
    result: SegmentResult | None
    error: BaseException | None


def import_ray(local: bool) -> Any:
    """Ray, or UsageError saying how to install it. ``local``: the embedded cluster, started here.
    Ray reads these settings once, when it is imported: no usage statistics sent; the embedded
    cluster takes a token (Ray >= 2.52 makes one in ~/.ray), because Ray's ports listen on every
    interface, and starts its workers at the render's own priority (Ray's default is nice 15: on a
    busy machine its workers then get a fraction of what a one-process render gets). A user's own
    RAY_AUTH_MODE and RAY_worker_niceness stand."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        os.environ.setdefault("RAY_worker_niceness", str(os.nice(0)))
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray, which is not installed here: {INSTALL_RAY} (or render on local processes "
                         "with --workers N)") from None
    return ray


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
        ray = import_ray(address == "local")
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


def local_devices(device: str, workers: int) -> list[str | None]:
    """One GPU per local worker where there are GPUs (round robin), else the CPU for all."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return [f"cuda:{i % count}" for i in range(workers)]
    return [None]
