"""Progress of a farm render (docs/architecture.md, *Renders across machines*): the bar (frames
done of the whole film, ETA, each worker's rate) and ``OUT.status.json`` for a farm's dashboard,
both from the progress and attempts files the workers leave beside their segments
(``live/render/segment.py``). A segment started again means its worker died: logged here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from live.atomic import atomic_write
from live.render.plan import Plan
from live.render.segment import SegmentResult

log = logging.getLogger(__name__)


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
            if st is None or st["state"] == "kept":
                continue
            if kind == "attempts":  # read also once the segment is done: a quick retry can finish between two looks
                self._attempts_changed(index, st)
            elif st["state"] not in ("done", "failed"):
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
        # Every attempt after the first is a restart, also when the first was never seen here (a
        # busy driver can read the file only after the retry has written its line too).
        for k in range(max(st["attempts"], 1), len(attempts)):
            last = self._last_progress.get(index, {})
            before = attempts[k - 1]
            self.restarts += 1
            self.event(f"segment {index}: its worker (pid {before.get('pid')} on {before.get('host')}) stopped after "
                       f"{last.get('warmup_done', 0)} warm-up and {last.get('frames', 0)} of {st['end'] - st['start']} "
                       f"frames without finishing; started again by pid {attempts[k].get('pid')} on "
                       f"{attempts[k].get('host')} (attempt {k + 1})", logging.WARNING)
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
        else:  # what was in hand is lost: the status counts finished segments only
            for st in self.state.values():
                if st["state"] in ("running", "pending"):
                    st["state"], st["frames"] = "not finished", 0
        self.bar.close()
        self.write(state, error)
