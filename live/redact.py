"""Secrets in URLs never reach a log, a status reply or ``check``: the one redaction helper.

A stream URL carries its credentials in three places, and each is replaced by ``****``:

- the user info: ``rtmp://user:pass@host/app`` → ``rtmp://user:****@host/app``;
- the stream key of RTMP, which is the path after the application name:
  ``rtmp://a.rtmp.youtube.com/live2/abcd-1234`` → ``rtmp://a.rtmp.youtube.com/live2/****``;
- query parameters that name a secret (``passphrase``, ``streamid``, ``key``, ``token``,
  ``password``, ``secret``, ``auth``, ``sig``…): ``srt://host:9000?passphrase=…`` → ``…passphrase=****``.

Everything that prints a URL goes through :func:`redact_url` (one URL) or :func:`redact`
(free text: an error message from FFmpeg quotes the URL it failed on). Secrets are also
remembered (:func:`remember`) so that a key quoted without its URL, as some servers do in their
error replies, is hidden as well; :class:`RedactingFilter` applies the same to every log record
as a last line of defence for messages written by libraries.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import parse_qsl, urlsplit

MASK = "****"
SECRET_PARAMS = frozenset(
    {"passphrase", "streamid", "key", "streamkey", "stream_key", "token", "access_token", "password", "pass",
     "pwd", "secret", "auth", "authorization", "sig", "signature", "apikey", "api_key"}
)  # fmt: skip
KEY_IN_PATH = frozenset({"rtmp", "rtmps", "rtmpt", "rtmpe", "rtmpts"})  # the path after the app is the key
PLAIN_PATH = frozenset({"udp", "rtp", "srt", "rtsp", "http", "https", "file"})  # paths that name, not authorise
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_MIN_SECRET = 4  # shorter strings ("live", "1") would mask ordinary words

_known: set[str] = set()
_lock = threading.Lock()


def _secrets_of(url: str) -> list[str]:
    """The secret parts of ``url``: password, RTMP stream key, secret query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    if parts.password:
        found.append(parts.password)
    if parts.scheme.lower() in KEY_IN_PATH:
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) > 1:
            found.append("/".join(segments[1:]))
            found.extend(segments[1:])
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if name.lower() in SECRET_PARAMS and value:
            found.append(value)
    return found


def redact_url(url: str) -> str:
    """``url`` with its password, RTMP stream key and secret query values replaced by ``****``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # not parseable: show nothing rather than something secret
    netloc = parts.netloc
    if parts.password:
        user, _, host = netloc.rpartition("@")
        name = user.split(":", 1)[0]
        netloc = f"{name}:{MASK}@{host}"
    path = parts.path
    scheme = parts.scheme.lower()
    if scheme in KEY_IN_PATH:
        segments = path.split("/")
        named = [i for i, s in enumerate(segments) if s]
        if len(named) > 1:
            path = "/".join(segments[: named[0] + 1]) + "/" + MASK
    elif scheme not in PLAIN_PATH and path.strip("/"):
        path = "/" + MASK  # an unknown scheme: its path may be anything, a key included
    query = parts.query
    if query:
        pieces = []
        for piece in query.split("&"):
            name, eq, value = piece.partition("=")
            pieces.append(f"{name}={MASK}" if eq and name.lower() in SECRET_PARAMS and value else piece)
        query = "&".join(pieces)
    out = f"{parts.scheme}://{netloc}{path}"
    if query:
        out += f"?{query}"
    if parts.fragment:
        out += f"#{MASK}"  # SRT stream ids sometimes ride here; nothing else does
    return out


def remember(url: str) -> None:
    """Remember ``url``'s secrets so :func:`redact` hides them even where quoted without the URL."""
    with _lock:
        _known.update(s for s in _secrets_of(url) if len(s) >= _MIN_SECRET)


def redact(text: str) -> str:
    """``text`` with every URL in it redacted and every remembered secret replaced by ``****``."""
    if not text:
        return text
    out = _URL.sub(lambda m: redact_url(m.group(0)), text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for secret in known:
        if secret in out:
            out = out.replace(secret, MASK)
    return out


class RedactingFilter(logging.Filter):
    """Rewrites every record's message through :func:`redact` (libraries log URLs too)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is the logging module's to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
        return True
