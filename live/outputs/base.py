"""The output interface and the fan-out that sends each dreamed frame to every output.

Step 7 of the frame loop: the same BGR frame goes to the window, the virtual camera and the
recorder. An output that fails (window closed, virtual camera gone, disk full) is switched off
with one log line saying why; the others go on, and so does the loop. With no outputs at all
the loop still runs (headless) and the counters still report.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

DROP_WARNING_EVERY_S = 5.0  # an output that falls behind keeps falling behind: say so, not every frame


def check_frame(frame: np.ndarray) -> None:
    """Raise ValueError unless ``frame`` is an (H, W, 3) uint8 BGR image."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"outputs take (H, W, 3) uint8 BGR frames, got {got}")


def fit(frame: np.ndarray, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
    """``frame`` at ``width``×``height``: unchanged when it already is, else resized (into ``out``
    when given) so an output opened at one size survives the loop changing its dream size."""
    if frame.shape[0] == height and frame.shape[1] == width:
        if out is None:
            return frame
        np.copyto(out, frame)
        return out
    return cv2.resize(frame, (width, height), dst=out, interpolation=cv2.INTER_AREA)


class FrameHandoff:
    """Frames from the loop's thread to an output's worker thread, the loop never waiting.

    A fixed set of buffers, allocated once at open: one per queue slot plus the one the worker
    holds. :meth:`offer` fills a free buffer and queues it with its extras; when every buffer is
    in flight it returns False and the frame is dropped (latency beats completeness). The worker
    takes items with :meth:`get`, ``(buffer, *extras)`` or None (the end), and gives each buffer
    back with :meth:`release` when done with it.
    """

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError(f"queue_size must be at least 1, got {slots}")
        self.slots = slots
        self.queue: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=slots)
        self._free: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()

    def allocate(self, shape: tuple[int, ...]) -> None:
        """The buffers, each ``shape`` uint8: all the frame memory this output will use."""
        for _ in range(self.slots + 1):
            self._free.put(np.empty(shape, np.uint8))

    def offer(self, fill: Callable[[np.ndarray], object], *extras: Any) -> bool:
        """``fill`` a free buffer and queue it with ``extras``; False (nothing queued) when none is free."""
        try:
            buf = self._free.get_nowait()
        except queue.Empty:
            return False
        fill(buf)
        try:
            self.queue.put_nowait((buf, *extras))
        except queue.Full:  # only if buffers and slots disagree; drop rather than wait
            self._free.put(buf)
            return False
        return True

    def get(self) -> tuple[Any, ...] | None:
        """The next item for the worker (blocks); None once the output is closing."""
        return self.queue.get()

    def release(self, buf: np.ndarray) -> None:
        """Give ``buf`` back for the next frame."""
        self._free.put(buf)

    def finish(self, thread: threading.Thread, timeout: float, abandon: threading.Event,
               queued: Callable[[], object] = lambda: None) -> str:
        """Queue the end and wait up to ``timeout`` s for ``thread`` to work through what is
        queued (``queued`` runs once the end is in line). Past that, ``abandon`` is set and the end
        queued again for a worker that checks it after the item in hand. Returns "done",
        "abandoned" (queued frames given up) or "stuck" (the thread still runs)."""
        deadline = time.monotonic() + timeout
        try:
            self.queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass
        queued()
        thread.join(max(0.0, deadline - time.monotonic()))
        if not thread.is_alive():
            return "done"
        abandon.set()
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
        thread.join(5.0)
        return "stuck" if thread.is_alive() else "abandoned"


class Output(ABC):
    """Somewhere dreamed frames go. Open once, ``send`` every frame from the loop's thread,
    close once (or use ``with``).

    ``send`` must return within a frame's time: an output that could block (disk, network)
    queues and drops instead. ``sent`` and ``dropped`` count frames; ``failure`` says why the
    output stopped, and ``healthy`` is False from then on.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.sent = 0
        self.dropped = 0
        self.failure: str | None = None
        self._last_drop_warning = float("-inf")

    def count_drop(self) -> None:
        """Count a frame this output had no room for; say so in the log at most every few seconds."""
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_drop_warning >= DROP_WARNING_EVERY_S:
            self._last_drop_warning = now
            log.warning("%s is falling behind: %d frames dropped so far", self.name, self.dropped)

    @property
    def healthy(self) -> bool:
        """False once the output has failed or been closed by the user."""
        return self.failure is None

    @abstractmethod
    def open(self, width: int, height: int, fps: float) -> None:
        """Acquire the device or file for frames of ``width``×``height`` at about ``fps``.
        Raises a :class:`~live.errors.LiveError` the operator can act on."""

    @abstractmethod
    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Show, stream or queue one (H, W, 3) uint8 BGR frame. ``timestamp`` is when its camera
        frame was captured (``time.monotonic()`` seconds; None: now): encoders time the video by
        it. Outputs written before it existed may leave it out of their signature; the fan-out
        then calls them with the frame only."""

    @abstractmethod
    def close(self) -> None:
        """Release everything; safe to call twice and after a failure."""

    def send_placeholder(self, text: str) -> None:
        """Show ``text`` while no dream frame is ready; outputs that need not, ignore it."""

    def poll_keys(self) -> list[str]:
        """Actions the user asked for since the last call (only the window has keys)."""
        return []

    def summary(self) -> str:
        """One line for the loop's periodic report."""
        state = f"failed ({self.failure})" if self.failure else "ok"
        return f"{self.name}: {self.sent} sent, {self.dropped} dropped, {state}"

    def __enter__(self) -> Output:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class NullOutput(Output):
    """Headless: frames go nowhere but are counted, so the loop runs and reports."""

    def __init__(self, name: str = "headless") -> None:
        super().__init__(name)

    def open(self, width: int, height: int, fps: float) -> None:
        log.info("headless: no window, virtual camera or recorder; dreaming %dx%d at up to %g fps", width, height, fps)

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        self.sent += 1

    def close(self) -> None:
        pass


def takes_timestamp(out: Output) -> bool:
    """Whether ``out.send`` accepts the capture timestamp (outputs older than it do not)."""
    cls = type(out)
    known = _TAKES_TIMESTAMP.get(cls)
    if known is None:
        import inspect

        try:
            params = inspect.signature(out.send).parameters
        except (TypeError, ValueError):
            params = {}
        known = "timestamp" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
        _TAKES_TIMESTAMP[cls] = known
    return known


_TAKES_TIMESTAMP: dict[type, bool] = {}


def _reason(exc: BaseException) -> str:
    from live.errors import LiveError

    # Operator errors carry their own wording; anything else needs its type to make sense.
    if isinstance(exc, LiveError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Fanout:
    """Several outputs driven as one: the same frame to each, a failure in one switches off
    that one only.

    Not thread-safe: call it from the frame loop's thread (OpenCV windows require that anyway).
    """

    def __init__(self, outputs: Iterable[Output] = ()) -> None:
        self.outputs: list[Output] = list(outputs)
        self.failed: dict[str, str] = {}
        self._closed: set[int] = set()
        self._pending: list[str] = []

    @property
    def active(self) -> list[Output]:
        """The outputs still receiving frames."""
        # A failed output is closed at once, so "not closed" is "still running".
        return [o for o in self.outputs if id(o) not in self._closed]

    def open(self, width: int, height: int, fps: float) -> None:
        """Open every output. An output asked for that cannot start is an error at startup:
        the ones already open are closed again and the error propagates."""
        opened: list[Output] = []
        try:
            for out in self.outputs:
                out.open(width, height, fps)
                opened.append(out)
        except BaseException:
            for out in reversed(opened):
                self._close_one(out)
            raise
        for out in opened:
            if not out.healthy:
                # An optional output that could not start (NDI without its runtime) said why
                # itself, once; the show goes on without it.
                self.failed[out.name] = out.failure or "did not start"
                self._close_one(out)

    def send(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Send ``frame``, captured at ``timestamp`` (monotonic seconds), to every active output.
        A wrong frame is the loop's bug and raises ValueError; an output that raises is logged
        once and switched off."""
        check_frame(frame)
        for out in self.active:
            try:
                if timestamp is not None and takes_timestamp(out):
                    out.send(frame, timestamp)
                else:
                    out.send(frame)
            except Exception as exc:  # noqa: BLE001 - one output must not stop the show
                self._fail(out, exc)
                continue
            if not out.healthy:
                self._keep_actions(out)
                self._fail(out, None)

    def _keep_actions(self, out: Output) -> None:
        # An output that stopped during send (window closed) has an action for the loop.
        try:
            self._pending.extend(out.poll_keys())
        except Exception:  # noqa: BLE001 - it is being switched off anyway
            pass

    def send_placeholder(self, text: str) -> None:
        """Ask every active output to show ``text`` while no dream is ready."""
        for out in self.active:
            try:
                out.send_placeholder(text)
            except Exception as exc:  # noqa: BLE001
                self._fail(out, exc)
                continue
            if not out.healthy:
                self._keep_actions(out)
                self._fail(out, None)

    def poll_keys(self) -> list[str]:
        """Every action asked for since the last call, from all outputs, in order."""
        actions, self._pending = self._pending, []
        for out in self.active:
            try:
                actions.extend(out.poll_keys())
            except Exception as exc:  # noqa: BLE001
                self._fail(out, exc)
                continue
            if not out.healthy:
                self._fail(out, None)
        return actions

    def summary(self) -> str:
        """One line covering every output, for the loop's periodic report."""
        if not self.outputs:
            return "headless: no outputs"
        return "; ".join(o.summary() for o in self.outputs)

    def close(self) -> None:
        """Close every output, even when one of them raises (each failure is logged)."""
        for out in self.outputs:
            self._close_one(out)

    def _fail(self, out: Output, exc: BaseException | None) -> None:
        reason = _reason(exc) if exc is not None else (out.failure or "stopped")
        if out.failure is None:
            out.failure = reason
        self.failed[out.name] = reason
        self._close_one(out)
        others = len(self.active)
        log.error("%s output stopped: %s (%d other output%s go on)", out.name, reason, others, "" if others == 1 else "s")
        if exc is not None:
            # The traceback helps a developer, not the operator watching the log scroll by.
            log.debug("%s output failure", out.name, exc_info=exc)

    def _close_one(self, out: Output) -> None:
        if id(out) in self._closed:
            return
        self._closed.add(id(out))
        try:
            out.close()
        except Exception as exc:  # noqa: BLE001 - closing the rest matters more
            log.error("%s output did not close cleanly: %s", out.name, _reason(exc))
            log.debug("%s close failure", out.name, exc_info=exc)

    def __enter__(self) -> Fanout:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
