"""Where an encoder writes: a recording file or a stream URL, and how each is muxed.

=====================  ==========================  =================================================
target                 container                   what survives a crash
=====================  ==========================  =================================================
``show.mp4``/``.mov``  fragmented MP4 (moov first)  every fragment written: all but the last 0.5 s
``show.mkv``           Matroska, 0.5 s clusters     every cluster written: all but the last 0.5 s
``rtmp(s)://``         FLV over RTMP               (a stream; reconnects with backoff)
``srt://``             MPEG-TS over SRT (libsrt)   (a stream; caller or ``?mode=listener``)
``udp://``, ``rtp://`` MPEG-TS (RTP: RFC 2250)      (a stream; nothing to reconnect)
=====================  ==========================  =================================================

Only :func:`parse_target` knows these rules; the encoder asks the :class:`Target` what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from live.errors import OutputError, UsageError
from live.redact import redact_url

RECORD_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
STREAM_FORMATS = {"rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts", "rtp": "rtp_mpegts"}
FRAGMENT_SECONDS = 0.5  # crash safety: what a SIGKILL can cost at most, plus one frame
EXAMPLES = ("show.mp4", "show.mkv", "rtmp://host/app/KEY", "srt://host:9000", "udp://127.0.0.1:5000")


@dataclass(frozen=True)
class Target:
    """One parsed recording path or stream URL. ``url`` may hold a secret: print ``shown``."""

    url: str
    scheme: str  # "file" or the URL scheme
    format: str  # the libavformat muxer
    container_options: dict[str, str] = field(default_factory=dict)
    io_url: str = ""  # what FFmpeg opens: the URL with protocol options added to its query

    @property
    def open_url(self) -> str:
        """The URL or path handed to FFmpeg (protocol options ride in the query: PyAV passes none)."""
        return self.io_url or self.url

    @property
    def network(self) -> bool:
        """A stream (reconnects on failure), not a file (fails once)."""
        return self.scheme != "file"

    @property
    def shown(self) -> str:
        """The target as logs, status and ``check`` may print it (keys and passwords masked)."""
        return redact_url(self.url) if self.network else self.url

    @property
    def path(self) -> Path:
        """The recording's path (files only)."""
        return Path(self.url)


def parse_target(text: str | os.PathLike[str]) -> Target:
    """A recording path (``.mp4``, ``.mov``, ``.mkv``) or a stream URL; UsageError otherwise."""
    raw = os.fspath(text).strip()
    if "://" not in raw:
        suffix = Path(raw).suffix.lower()
        fmt = RECORD_FORMATS.get(suffix)
        if fmt is None:
            raise UsageError(f"cannot record to {raw}: unsupported extension {suffix or '(none)'!r}; "
                             f"use .mp4, .mov or .mkv (H.264)")
        if fmt == "matroska":
            options = {"cluster_time_limit": str(int(FRAGMENT_SECONDS * 1000)), "flush_packets": "1"}
        else:
            # Fragmented MP4 with the moov at the front: plays while it is still being written
            # and, killed, keeps every finished fragment (docs/architecture.md, *Encoders*).
            options = {"movflags": "+frag_keyframe+empty_moov+default_base_moof+delay_moov",
                       "frag_duration": str(int(FRAGMENT_SECONDS * 1e6)), "flush_packets": "1"}
        return Target(raw, "file", fmt, options)
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    shown = redact_url(raw)
    if scheme not in STREAM_FORMATS:
        raise UsageError(f"cannot stream to {shown}: unsupported scheme {scheme}://; use "
                         "rtmp:// or rtmps:// (FLV), srt:// or udp:// (MPEG-TS), rtp:// (RTP/MPEG-TS)")
    if not parts.hostname and not (scheme == "srt" and "listener" in parts.query):
        raise UsageError(f"cannot stream to {shown}: the URL names no host, e.g. {scheme}://192.168.1.20:9000")
    fmt = STREAM_FORMATS[scheme]
    container = {"flush_packets": "1"}  # every frame goes out at once: latency beats batching
    io_url = ""
    if fmt == "flv":
        container["flvflags"] = "no_duration_filesize"  # a live stream cannot seek back to fill them in
    elif scheme in ("udp", "rtp") and "pkt_size=" not in parts.query:
        # seven TS packets per datagram: under any Ethernet MTU, and whole TS packets each
        io_url = raw + ("&" if parts.query else "?") + "pkt_size=1316"
    if fmt in ("mpegts", "rtp_mpegts"):
        container["mpegts_flags"] = "+resend_headers"  # a receiver that joins late finds PAT/PMT
    return Target(raw, scheme, fmt, container, io_url)


def check_record_path(target: Target) -> None:
    """OutputError naming the path and the reason when a recording cannot be created there."""
    path = target.path
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot record to {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot record to {path}: directory {parent} is not writable")
    if path.is_dir():
        raise OutputError(f"cannot record to {path}: it is a directory")


def srt_settings(target: Target) -> dict[str, str]:
    """The query of an ``srt://`` URL as option names (FFmpeg's spelling, so OBS URLs work)."""
    return {k.lower(): v for k, v in parse_qsl(urlsplit(target.url).query)}
