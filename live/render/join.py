"""The finished segments of a farm render joined into the output, with the input's sound
(docs/architecture.md, *Renders across machines*).

Nothing is re-encoded: every segment opens with an IDR frame carrying its parameter sets and has
no B-frames, so its packets follow the previous segment's as they are. Each video packet gets the
input's own presentation time for its frame (from the plan, not from the segment file's
container), so the output has the input's frame count and timestamps exactly; audio packets are
copied from the input, interleaved by time. The output is written beside its name and renamed
into place, so a failed join leaves no half file under it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from live.errors import DataError, OutputError, UsageError
from live.outputs.targets import parse_target
from live.render.plan import Plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JoinReport:
    frames: int
    audio_packets: int
    bytes: int


def check_audio(source: Path, target: Path) -> None:
    """UsageError now, before hours of dreaming, when the input's sound cannot be copied into the
    output's container (the join would fail at the end)."""
    import io

    import av

    out_target = parse_target(target)
    with av.open(str(source)) as src:
        for a in src.streams.audio:
            probe = av.open(io.BytesIO(), "w", format=out_target.format)
            try:
                probe.add_stream_from_template(a)
                probe.start_encoding()  # the muxer's header: where a container refuses a codec
            except (av.FFmpegError, ValueError) as e:
                raise UsageError(f"the audio ({a.codec_context.name}) cannot be copied into {target.suffix}: {e}; "
                                 "render to .mkv, which takes any codec") from None
            finally:
                try:
                    probe.close()
                except av.FFmpegError:
                    pass  # a header never written has nothing to finish


def join(plan: Plan, segments: list[Path], target: Path) -> JoinReport:
    """Write ``target`` from ``segments`` (in plan order) and the plan's input's audio."""
    import av

    if not plan.complete:
        raise UsageError("a plan cut short by an unreadable frame cannot be joined")
    out_target = parse_target(target)
    tmp = target.with_name(f".{target.name}.joining{target.suffix}")
    first = av.open(str(segments[0]))
    source = av.open(plan.source)
    try:
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        out = av.open(str(tmp), "w", format=out_target.format, container_options=out_target.container_options)
        try:
            vout = out.add_stream_from_template(template)
            vout.time_base = plan.scan.time_base
            vout.codec_context.framerate = plan.scan.rate
            audio_out = {}
            for a in source.streams.audio:
                try:
                    audio_out[a.index] = out.add_stream_from_template(a)
                except (av.FFmpegError, ValueError) as e:
                    raise UsageError(f"the audio ({a.codec_context.name}) cannot be copied into {target.suffix}: "
                                     f"{e}; render to .mkv, which takes any codec") from None
            video = _video_packets(plan, segments, extradata)
            audio = _audio_packets(source, audio_out)
            frames = audio_packets = 0
            a = next(audio, None)
            for packet, seconds in video:
                while a is not None and a[1] <= seconds:
                    out.mux(a[0])
                    audio_packets += 1
                    a = next(audio, None)
                packet.stream = vout
                out.mux(packet)
                frames += 1
            while a is not None:
                out.mux(a[0])
                audio_packets += 1
                a = next(audio, None)
        finally:
            out.close()
    except (av.FFmpegError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {e}; the segments are kept: --resume joins them again") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        first.close()
        source.close()
    if frames != plan.frames:
        tmp.unlink(missing_ok=True)
        raise DataError(f"the segments hold {frames} frames, the plan {plan.frames}; render again with --resume")
    try:
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {target}: {e}") from None
    return JoinReport(frames, audio_packets, target.stat().st_size)


def _video_packets(plan: Plan, segments: list[Path], extradata: bytes | None) -> Iterator[tuple[Any, float]]:
    """Every segment's packets in order, each stamped with its frame's time from the plan."""
    import av

    scan = plan.scan
    tb = scan.time_base
    index = 0
    for seg, path in zip(plan.segments, segments):
        with av.open(str(path)) as c:
            v = c.streams.video[0]
            if v.codec_context.extradata != extradata:
                raise DataError(f"{path.name} was encoded with other parameters than the first segment "
                                f"({v.codec_context.name}, {v.codec_context.profile}); segments join without "
                                "re-encoding only when one encoder made them all: delete it and --resume")
            count = 0
            for packet in c.demux(v):
                if packet.size == 0:
                    continue
                if count == 0 and not packet.is_keyframe:
                    raise DataError(f"{path.name} does not start with a keyframe; delete it and --resume")
                i = index + count
                packet.pts = packet.dts = scan.pts[i]
                packet.duration = (scan.pts[i + 1] - scan.pts[i]) if i + 1 < scan.frames else scan.last_duration
                packet.time_base = tb
                count += 1
                yield packet, float(scan.pts[i] * tb)
        if count != seg.frames:
            raise DataError(f"{path.name} holds {count} frames, the plan says {seg.frames}; delete it and --resume")
        index += count


def _audio_packets(source: Any, audio_out: dict[int, Any]) -> Iterator[tuple[Any, float]]:
    streams = [s for s in source.streams.audio if s.index in audio_out]
    if not streams:
        return
    for packet in source.demux(streams):
        if packet.dts is None or packet.pts is None:
            continue
        seconds = float(packet.pts * packet.time_base)
        packet.stream = audio_out[packet.stream.index]
        yield packet, seconds
