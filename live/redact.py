"""Secrets in URLs never reach a log, a status reply or ``check``: the one redaction helper.

A stream URL carries its credentials in three places, and each is replaced by ``****``:

- the user info: ``rtmp://user:pass@host/app`` → ``rtmp://user:****@host/app``;
- the stream key of RTMP, which is the path after the application name:
  ``rtmp://a.rtmp.youtube.com/live2/abcd-1234`` → ``rtmp://a.rtmp.youtube.com/live2/****``;
- query parameters that name a secret (``passphrase``, ``streamid``, ``key``, ``token``,
  ``password``, ``secret``, ``auth``, ``sig``…): ``srt://host:9000?passphrase=…`` → ``…passphrase=****``.

Everything that prints a URL goes through :func:`redact_url` (one URL) or :func:`redact`
(free text: an error message from FFmpeg quotes the URL it failed on). Secrets are also
remembered (:func:`remember`, or :func:`remember_secret` for one without a URL, such as the web
page's token) so that a key quoted without its URL, as some servers do in their error replies,
is hidden as well; :class:`RedactingFilter` applies the same to every log record as a last line
of defence for messages written by libraries.

Web servers quote requests in their error lines, and a request carries credentials in a query
(``?token=``), a cookie or an ``Authorization`` header, cut anywhere by the quoting. So
:func:`redact_credentials` masks the value after each of those keys whatever it is, and the
:class:`LogGuard` filter, installed on the web server's loggers and its libraries'
(:func:`guard_loggers`), runs every record through both, cuts each line to ``MAX_LINE``
characters, and lets at most one warning every two seconds through per logger (a burst of
three; the rest are counted and the count said on the next line): a flood of bad requests costs
the log a line now and then, not a traceback each.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
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
_PREFIX = 8  # a remembered secret's first characters mask the rest of a cut quotation
# key=value (a query, a cookie), "Authorization: …", "Cookie: …" and "Bearer value" as requests carry
# credentials (prose such as "needs its token: open the link" is left alone); the value runs to the
# next separator, so a value cut off by a quotation's end is masked as well
_CREDENTIAL = re.compile(
    r"(?i)(\b(?:ddl_token|access_token|token|password|passphrase|secret|api_?key|sig)\b\s*=\s*"
    r"|\bauthorization\b\s*:\s*(?:bearer\s+|basic\s+)?|\bbearer\s+|\bcookie\b\s*:\s*)"
    r"([^\s&;,'\"<>)]+)"
)
MAX_LINE = 500  # characters of one guarded log line (a traceback: each of its lines, and 40 lines)
MAX_TRACEBACK_LINES = 40

_known: set[str] = set()
_raw: set[str] = set()  # secrets remembered without a URL; their prefixes are masked too
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


def remember_secret(secret: str) -> None:
    """Remember one secret that has no URL (the web page's token) so no log line shows it, nor
    (past its first ``_PREFIX`` characters) a quotation that cuts it short."""
    if len(secret) >= max(_MIN_SECRET, _PREFIX):
        with _lock:
            _known.add(secret)
            _raw.add(secret)


def redact(text: str) -> str:
    """``text`` with every URL in it redacted and every remembered secret replaced by ``****``."""
    if not text:
        return text
    out = _URL.sub(lambda m: redact_url(m.group(0)), text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
        prefixes = [s[:_PREFIX] for s in _raw]
    for secret in known:
        if secret in out:
            out = out.replace(secret, MASK)
    for prefix in prefixes:
        if prefix in out:
            out = re.sub(re.escape(prefix) + r"[A-Za-z0-9_.~-]*", MASK, out)
    return out


def redact_credentials(text: str) -> str:
    """``text`` with the value after every credential key (``token=``, ``Cookie:``,
    ``Authorization: Bearer``…) replaced by ``****``, whether or not the value is known."""
    return _CREDENTIAL.sub(lambda m: m.group(1) + MASK, text) if text else text


def _bounded(text: str, limit: int = MAX_LINE) -> str:
    return text if len(text) <= limit else text[: limit - 30] + f"… ({len(text)} characters)"


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


class LogGuard(logging.Filter):
    """Redacts (URLs, remembered secrets, any credential value), bounds and rate-limits records.

    Installed on a logger with :func:`guard_loggers`. Every record's message becomes one
    redacted line of at most ``MAX_LINE`` characters; its traceback, if any, is redacted and cut
    to ``MAX_TRACEBACK_LINES`` lines of at most ``MAX_LINE``; an aiohttp client error (a request
    that was refused as malformed) keeps its one-line reason and loses its traceback. Warnings
    and worse pass at most ``rate`` a second (``burst`` at once; ``rate=None``: all, for a logger
    whose writer limits itself); the ones held back are counted and the count is added to the
    next line that passes.
    """

    def __init__(self, rate: float | None = 0.5, burst: float = 3.0) -> None:
        super().__init__()
        self.rate, self.burst = rate, burst
        self._level = burst
        self._stamp = time.monotonic()
        self._held = 0
        self._lock = threading.Lock()

    def _allow(self) -> tuple[bool, int]:
        with self._lock:
            now = time.monotonic()
            self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._level < 1.0:
                self._held += 1
                return False, 0
            self._level -= 1.0
            held, self._held = self._held, 0
            return True, held

    def filter(self, record: logging.LogRecord) -> bool:
        held = 0
        if record.levelno >= logging.WARNING and self.rate is not None:
            allowed, held = self._allow()
            if not allowed:
                return False
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: say so rather than lose the record
            message = f"(unformattable log message {record.msg!r:.100})"
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _client_error(exc):
            message += f": {type(exc).__name__}: {exc}"
            record.exc_info, record.exc_text = None, None
        line = _bounded(" ".join(redact_credentials(redact(message)).splitlines()))
        if held:
            line += f" ({held} similar lines held back)"
        record.msg, record.args = line, None
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            lines = [_bounded(redact_credentials(redact(t))) for t in text.splitlines()]
            if len(lines) > MAX_TRACEBACK_LINES:
                lines = lines[:5] + [f"… ({len(lines) - MAX_TRACEBACK_LINES + 5} lines left out)"] + \
                    lines[-(MAX_TRACEBACK_LINES - 6):]
            record.exc_text = "\n".join(lines)
            record.exc_info = None  # the text above is the traceback now; a handler must not redo it
        return True


def _client_error(exc: BaseException) -> bool:
    """Whether ``exc`` is aiohttp refusing a malformed request (a client's fault, not the show's)."""
    return any(cls.__name__ in ("HttpProcessingError", "BadHttpMessage", "LineTooLong", "BadStatusLine")
               for cls in type(exc).__mro__)


def guard_loggers(names: Iterable[str], rate: float | None = 0.5) -> None:
    """Put a :class:`LogGuard` on each named logger (once; a second call adds nothing)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, LogGuard) for f in logger.filters):
            logger.addFilter(LogGuard(rate))
