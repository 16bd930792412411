"""Segment plans for renders spread over processes or machines (docs/architecture.md, *Renders
across machines*).

Temporal feedback makes every frame depend on the one before it, so a film is cut where that
dependence is weak or absent:

- at **scene cuts**, found by the live loop's own detector (:func:`live.temporal.is_scene_cut` on
  :meth:`live.temporal.FlowEstimator.grey`, the very images the dream compares): the dream
  clears its feedback there anyway, so a segment that starts at a cut dreams exactly the frames a
  whole run dreams;
- inside a shot longer than ``--segment-seconds``, at a **split** with a warm-up: the segment
  dreams ``warmup`` frames before its first one and throws them away, so the carried dream at the
  seam has settled as it would have in one run (:func:`settle_frames`).

A plan is a JSON file beside the output (``OUT.plan.json``): the input's frame times, the cuts,
the segments and everything that decides their frames. ``--resume`` reuses it; every runner
(one process, local processes, Ray) renders the same plan to the same frames.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from live import temporal
from live.atomic import atomic_write
from live.errors import DataError, InputError, UsageError
from live.outputs.encoder import even_size

log = logging.getLogger(__name__)

PLAN_VERSION = 1
DEFAULT_SEGMENT_SECONDS = 10.0
# The carried dream's memory of where it started has shrunk below this share (see settle_frames).
SETTLED = 0.05
MAX_WARMUP = 240
MAX_PLAN_BYTES = 64 << 20  # a plan holds every frame's time: about 10 bytes a frame


def plan_path(target: Path) -> Path:
    """Where the plan of a render to ``target`` is saved."""
    return target.with_name(target.name + ".plan.json")


def segment_dir(target: Path) -> Path:
    """The folder that holds the finished segments of a render to ``target``, with their checksums."""
    return target.with_name(target.name + ".segments")


def status_path(target: Path) -> Path:
    """The JSON status file of a render to ``target`` (for a farm's dashboard)."""
    return target.with_name(target.name + ".status.json")


def settle_frames(feedback: float, decay: float = temporal.TemporalFeedback().decay) -> int:
    """Warm-up frames for the feedback to settle: each frame keeps ``decay · feedback`` of the
    carried dream (docs/architecture.md, *Two paces*), so after ``n`` frames what a segment's
    empty start contributes has shrunk to ``(decay · feedback)ⁿ``; enough frames for that to fall
    below :data:`SETTLED`. With no feedback nothing is carried and no warm-up is needed.
    ``bench/render_farm.py`` measures the seams this gives."""
    keep = decay * feedback
    if keep <= 0:
        return 0
    return min(MAX_WARMUP, max(1, math.ceil(math.log(SETTLED) / math.log(keep))))


@dataclass(frozen=True)
class Segment:
    """Output frames ``start`` to ``end - 1``, dreamed after ``warmup`` frames thrown away.

    Where the next segment starts at a split, this one also dreams the next one's warm-up
    (``lead`` frames before ``end``, from the same empty start, so the very frames the next
    segment dreams) and cross-fades its own last ``fade`` frames into them: the seam is then a
    dissolve into what the next segment continues, not a jump between two dreams."""

    index: int
    start: int
    end: int
    warmup: int
    boundary: str  # "start" (the film's first frame), "cut" (a scene cut) or "split" (inside a shot)
    lead: int = 0  # the next segment's warm-up, dreamed here too
    fade: int = 0  # last frames cross-faded into it

    @property
    def first(self) -> int:
        """The first frame this segment reads (its warm-up's first, or the next one's)."""
        return min(self.start - self.warmup, self.end - self.lead)

    @property
    def frames(self) -> int:
        """Output frames in the segment."""
        return self.end - self.start


@dataclass(frozen=True)
class Scan:
    """What planning learned from one pass over the input's frames."""

    frames: int  # readable frames, from the first
    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    pts: tuple[int, ...]  # each frame's presentation time, in time_base
    last_duration: int  # the last frame's length, in time_base
    cuts: tuple[int, ...]  # frames that begin a new shot (never 0)
    unreadable: int | None = None  # the frame that could not be read, where the scan stopped
    reason: str = ""


def open_film(source: Path) -> Any:
    """``source`` opened with PyAV (use it in ``with``), its first video stream there: a one-line
    :class:`InputError` when it cannot be read or has no picture."""
    import av

    try:
        container = av.open(str(source))
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"cannot read {source}: {e}") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{source} has no video stream")
    return container


def scan(source: Path, *, flow_width: int = 320, progress: Callable[[int], None] | None = None) -> Scan:
    """Decode every frame of ``source`` once: frame times and scene cuts, the latter exactly as the
    dream will see them (the same crop to even size, grey image and detector). A frame that cannot
    be read ends the scan there (``unreadable``) instead of raising, so the frames before it can
    still be rendered."""
    import av

    with open_film(source) as container:
        vin = container.streams.video[0]
        vin.thread_type = "AUTO"
        width, height = vin.codec_context.width, vin.codec_context.height
        w, h = even_size(width, height)
        rate = vin.average_rate or vin.guessed_rate or Fraction(30)
        ticks = max(1, round(1 / (float(rate) * vin.time_base)))
        greys = temporal.FlowEstimator(width=flow_width)
        pts: list[int] = []
        cuts: list[int] = []
        previous = None
        last_duration = ticks
        unreadable, reason = None, ""
        try:
            for packet in container.demux(vin):
                for frame in packet.decode():
                    if frame.pts is None:
                        raise UsageError(f"{source} has frames without timestamps (frame {len(pts)}); a render in "
                                         "segments places frames by time: remux it first (ffmpeg -i IN -c copy "
                                         "OUT.mkv), or render without --segments/--workers/--ray")
                    if pts and frame.pts <= pts[-1]:
                        raise UsageError(f"{source}: frame {len(pts)} has time {frame.pts} after {pts[-1]}; a render "
                                         "in segments needs increasing frame times: remux it first, or render "
                                         "without --segments/--workers/--ray")
                    grey = greys.grey(frame.to_ndarray(format="bgr24")[:h, :w])
                    if previous is not None and temporal.is_scene_cut(previous, grey):
                        cuts.append(len(pts))
                    previous = grey
                    pts.append(frame.pts)
                    last_duration = frame.duration or ticks
                    if progress is not None:
                        progress(len(pts))
        except (av.FFmpegError, OSError) as e:
            unreadable, reason = len(pts), str(e)
        if not pts and unreadable is None:
            raise InputError(f"{source} has no video frames")
        expected = vin.frames
    if unreadable is None and expected and expected > len(pts):
        log.warning("%s says it has %d frames; %d decode (the end is missing or damaged): rendering those",
                    source, expected, len(pts))
    return Scan(len(pts), w, h, Fraction(rate), Fraction(vin.time_base), tuple(pts), int(last_duration),
                tuple(cuts), unreadable, reason)


def _shots(frames: int, cuts: tuple[int, ...]) -> list[tuple[int, int]]:
    edges = [0, *[c for c in cuts if 0 < c < frames], frames]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def split(frames: int, cuts: tuple[int, ...], segments: str | int, segment_frames: int) -> list[tuple[int, int]]:
    """Frame ranges ``[start, end)`` covering ``frames``.

    ``"auto"``: every shot (cut to cut), and shots longer than ``segment_frames`` in equal parts no
    longer than that. ``N``: N segments about equal in length, at cuts where there are enough of
    them (the smallest neighbouring pair merged until N are left: a segment then holds a cut,
    which the dream handles itself), else the longest split in two until there are N (or every
    frame is its own segment)."""
    shots = _shots(frames, cuts)
    if segments == "auto":
        if segment_frames < 1:
            raise UsageError(f"segments must be at least one frame long, got {segment_frames}")
        pieces = []
        for a, b in shots:
            k = math.ceil((b - a) / segment_frames)
            edges = [a + round(j * (b - a) / k) for j in range(k + 1)]
            pieces += [(x, y) for x, y in zip(edges, edges[1:]) if y > x]
        return pieces
    if not isinstance(segments, int) or segments < 1:
        raise UsageError(f"--segments takes auto or a number of segments (1 or more), got {segments!r}")
    pieces = list(shots)
    while len(pieces) > segments:
        i = min(range(len(pieces) - 1), key=lambda j: pieces[j + 1][1] - pieces[j][0])
        pieces[i : i + 2] = [(pieces[i][0], pieces[i + 1][1])]
    while len(pieces) < segments:
        i = max(range(len(pieces)), key=lambda j: pieces[j][1] - pieces[j][0])
        a, b = pieces[i]
        if b - a < 2:
            break
        m = a + (b - a) // 2
        pieces[i : i + 1] = [(a, m), (m, b)]
    return pieces


def make_segments(scan_: Scan, segments: str | int, segment_frames: int, warmup: int) -> list[Segment]:
    """The segments of a plan: :func:`split`, each given its warm-up. A segment that starts at the
    film's start or at a cut needs none; one that starts inside a shot gets ``warmup`` frames, never
    reaching back across the cut that began its shot."""
    cuts = set(scan_.cuts)
    shot_starts = sorted({0, *cuts})
    out = []
    for i, (a, b) in enumerate(split(scan_.frames, scan_.cuts, segments, segment_frames)):
        if a == 0:
            kind, w = "start", 0
        elif a in cuts:
            kind, w = "cut", 0
        else:
            shot_start = max(s for s in shot_starts if s <= a)
            kind, w = "split", min(warmup, a - shot_start)
        out.append(Segment(i, a, b, w, kind))
    for i, s in enumerate(out[:-1]):
        following = out[i + 1]
        if following.boundary == "split" and following.warmup:
            out[i] = dataclasses.replace(s, lead=following.warmup,
                                         fade=min(s.frames, fade_frames(following.warmup)))
    return out


def fade_frames(warmup: int) -> int:
    """Frames of the cross-fade into a warm-up of ``warmup`` frames: its second half, so the
    dream faded into has built up for the first half (``bench/render_farm.py`` measures seams)."""
    return max(1, warmup // 2) if warmup else 0


@dataclass(frozen=True)
class Plan:
    """A render's segments and everything that decides their frames. Saved as JSON beside the
    output; ``key`` of a segment names exactly what its finished file holds."""

    source: str
    fingerprint: str  # render.fingerprint + the settings below: what a --resume must match
    scan: Scan
    segments: tuple[Segment, ...]
    mode: str | int  # "auto" or N
    segment_seconds: float
    warmup: int
    threads: int  # intra-op CPU threads per segment: CPU results depend on it, so the plan fixes it
    codec: str
    settings: dict[str, Any] = field(default_factory=dict)  # the rest, for people reading the file

    @property
    def complete(self) -> bool:
        """Whether the plan covers the whole input (no frame stopped the scan)."""
        return self.scan.unreadable is None

    @property
    def frames(self) -> int:
        return self.scan.frames

    def key(self, segment: Segment) -> str:
        """What a finished segment's checksum file must name to be kept."""
        import hashlib

        text = (f"{self.fingerprint}:{self.threads}:{segment.start}:{segment.end}:{segment.warmup}:{segment.lead}:"
                f"{segment.fade}")
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def seconds(self, frame: int) -> float:
        """Presentation time of ``frame``, in seconds from the first frame."""
        if not self.scan.pts:
            return 0.0
        return float((self.scan.pts[frame] - self.scan.pts[0]) * self.scan.time_base) if frame < self.frames else (
            float((self.scan.pts[-1] - self.scan.pts[0] + self.scan.last_duration) * self.scan.time_base))

    def describe(self) -> list[str]:
        """The plan in a few lines for the log: totals, then one line per segment."""
        warm = sum(s.warmup + s.lead for s in self.segments)
        shots = len(self.scan.cuts) + 1
        rule = (f"at most {self.segment_seconds:g} s each" if self.mode == "auto" else f"{self.mode} asked for")
        lines = [f"plan: {self.frames} frames in {len(self.segments)} segments ({shots} shot{'s' * (shots != 1)}, "
                 f"{rule}; warm-up {self.warmup} frames at splits, dreamed on both sides: {warm} extra frames "
                 f"dreamed, {100 * warm / max(1, self.frames):.0f}%; {self.threads} "
                 f"thread{'s' * (self.threads != 1)} a segment, {self.codec})"]
        lines.append("    #  frames           time                  starts at  warm-up  fades out")
        for s in self.segments:
            lines.append(f"  {s.index:3d}  {s.start:6d}-{s.end - 1:<6d}  {_clock(self.seconds(s.start))}-"
                         f"{_clock(self.seconds(s.end))}  {s.boundary:<9s}  {s.warmup:7d}  {s.fade:9d}")
        if not self.complete:
            lines.append(f"  frame {self.scan.unreadable} cannot be read ({self.scan.reason}): the plan stops there")
        return lines

    def to_json(self) -> dict[str, Any]:
        scan_ = asdict(self.scan)
        scan_["rate"] = [self.scan.rate.numerator, self.scan.rate.denominator]
        scan_["time_base"] = [self.scan.time_base.numerator, self.scan.time_base.denominator]
        scan_["pts"] = list(self.scan.pts)
        scan_["cuts"] = list(self.scan.cuts)
        return {"version": PLAN_VERSION, "source": self.source, "fingerprint": self.fingerprint,
                "mode": self.mode, "segment_seconds": self.segment_seconds, "warmup": self.warmup,
                "threads": self.threads, "codec": self.codec, "settings": self.settings,
                "segments": [asdict(s) for s in self.segments], "scan": scan_}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """A plan from its JSON form, checked (ValueError saying what is wrong): a plan file is read
        back from shared storage, and every number in it becomes a frame range a worker reads."""
        s = data["scan"]
        scan_ = Scan(_int(s["frames"]), _int(s["width"]), _int(s["height"]), Fraction(*map(_int, s["rate"])),
                     Fraction(*map(_int, s["time_base"])), tuple(map(_int, s["pts"])), _int(s["last_duration"]),
                     tuple(map(_int, s["cuts"])), None if s["unreadable"] is None else _int(s["unreadable"]),
                     str(s["reason"]))
        segments = tuple(Segment(_int(x["index"]), _int(x["start"]), _int(x["end"]), _int(x["warmup"]),
                                 str(x["boundary"]), _int(x.get("lead", 0)), _int(x.get("fade", 0)))
                         for x in data["segments"])
        mode = data["mode"] if data["mode"] == "auto" else _int(data["mode"])
        plan = cls(str(data["source"]), str(data["fingerprint"]), scan_, segments, mode,
                   float(data["segment_seconds"]), _int(data["warmup"]), _int(data["threads"]), str(data["codec"]),
                   dict(data.get("settings", {})))
        plan.check()
        return plan

    def check(self) -> None:
        """ValueError unless the segments cover the readable frames in order, each within its
        bounds, and the frame times rise."""
        sc = self.scan
        if sc.frames != len(sc.pts) or any(b <= a for a, b in zip(sc.pts, sc.pts[1:])):
            raise ValueError("the frame times do not match the frame count or do not rise")
        if not 1 <= self.threads <= 256 or sc.time_base <= 0 or sc.rate <= 0:
            raise ValueError("threads, time base or rate out of range")
        at = 0
        for i, seg in enumerate(self.segments):
            if seg.index != i or seg.start != at or seg.end <= seg.start or seg.first < 0:
                raise ValueError(f"segment {i} does not follow the one before it")
            if min(seg.warmup, seg.lead, seg.fade) < 0 or seg.fade > min(seg.lead, seg.frames):
                raise ValueError(f"segment {i}: warm-up, lead or fade out of range")
            at = seg.end
        if at != sc.frames:
            raise ValueError(f"the segments cover {at} frames of {sc.frames}")

    def save(self, path: Path) -> None:
        """Write the plan atomically (a reader sees the old plan or the whole new one)."""
        with atomic_write(path) as f:
            f.write(json.dumps(self.to_json(), indent=1).encode())


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a whole number, got {value!r:.40}")
    return value


def load_plan(path: Path) -> Plan:
    """A saved plan; DataError when the file is not one this version wrote, or does not hold together."""
    try:
        if path.stat().st_size > MAX_PLAN_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes, more than a plan of {MAX_PLAN_BYTES >> 20} MiB")
        data = json.loads(path.read_text())
        if data.get("version") != PLAN_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {PLAN_VERSION}")
        return Plan.from_json(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError, RecursionError) as e:
        raise DataError(f"cannot read the render plan {path}: {e}; delete it and render again without "
                        "--resume") from None


def _clock(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m)}:{s:06.3f}"
