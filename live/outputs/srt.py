"""SRT for the encoder: MPEG-TS over libsrt, the system library, through ctypes.

PyAV's wheels carry FFmpeg without libsrt (its ``srt`` format is SubRip subtitles), and no
maintained Python binding of libsrt installs from PyPI; the C library itself is packaged
everywhere (``apt install libsrt1.5-gnutls``, ``brew install srt``). So the encoder muxes
MPEG-TS into a :class:`SrtWriter` (a file-like object PyAV writes to) and this module sends it
in 1316-byte messages (seven TS packets, SRT's live payload).

URLs follow FFmpeg's (and so OBS's) spelling: ``srt://host:port`` calls a listener;
``srt://:port?mode=listener`` waits for a receiver to call; ``latency`` is in microseconds;
``passphrase``, ``pbkeylen`` and ``streamid`` as in FFmpeg. Secrets never reach the log.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import socket
import struct
import threading
from functools import lru_cache
from urllib.parse import urlsplit

from live.errors import UnavailableError, UsageError
from live.outputs.targets import Target, srt_settings

log = logging.getLogger(__name__)

PAYLOAD = 1316  # 7 × 188-byte TS packets: SRT's live-mode payload
LIBRARIES = ("srt-gnutls", "srt-openssl", "srt")
INSTALL = "apt install libsrt1.5-gnutls (Debian, Ubuntu) or brew install srt"

# enum SRT_SOCKOPT from <srt/srt.h>
SRTO_SNDSYN, SRTO_RCVSYN = 1, 2
SRTO_SNDTIMEO, SRTO_RCVTIMEO = 13, 14
SRTO_SENDER = 21
SRTO_LATENCY = 23
SRTO_PASSPHRASE, SRTO_PBKEYLEN = 26, 27
SRTO_CONNTIMEO = 36
SRTO_STREAMID = 46
SRTO_TRANSTYPE = 50
SRTT_LIVE = 0
SRT_ERROR = -1
SRT_INVALID_SOCK = -1
SRT_EPOLL_IN, SRT_EPOLL_ERR = 0x1, 0x8


class SrtError(OSError):
    """An SRT call failed; the message is libsrt's own."""


class _Lib:
    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        lib.srt_startup.restype = ctypes.c_int
        lib.srt_create_socket.restype = ctypes.c_int
        lib.srt_setsockflag.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
        lib.srt_connect.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.srt_bind.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.srt_listen.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.srt_accept.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
        lib.srt_sendmsg2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
        lib.srt_recvmsg.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.srt_close.argtypes = [ctypes.c_int]
        lib.srt_getlasterror_str.restype = ctypes.c_char_p
        lib.srt_getlasterror.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.srt_getversion.restype = ctypes.c_uint32
        lib.srt_epoll_create.restype = ctypes.c_int
        lib.srt_epoll_add_usock.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.srt_epoll_wait.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                       ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        lib.srt_epoll_release.argtypes = [ctypes.c_int]
        lib.srt_setloglevel(3)  # LOG_ERR: libsrt writes straight to stderr; its warnings are noise here
        if lib.srt_startup() < 0:
            raise UnavailableError(f"libsrt did not start: {self.error()}")
        v = lib.srt_getversion()
        self.version = f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"

    def error(self) -> str:
        return (self.lib.srt_getlasterror_str() or b"unknown SRT error").decode(errors="replace")

    def check(self, result: int, what: str) -> int:
        if result == SRT_ERROR:
            raise SrtError(f"SRT {what}: {self.error()}")
        return result


@lru_cache(maxsize=1)
def load_libsrt() -> _Lib:
    """The system's libsrt, started once per process; UnavailableError saying how to install it."""
    for name in LIBRARIES:
        path = ctypes.util.find_library(name)
        if path is None:
            continue
        try:
            return _Lib(ctypes.CDLL(path))
        except OSError:
            continue
    raise UnavailableError(f"SRT needs libsrt, which is not installed: {INSTALL}")


def _sockaddr(host: str, port: int) -> bytes:
    """A struct sockaddr_in or sockaddr_in6 for libsrt."""
    family, _, _, _, addr = socket.getaddrinfo(host or "0.0.0.0", port, type=socket.SOCK_DGRAM)[0]
    if family == socket.AF_INET6:
        return struct.pack("=H", family) + struct.pack("!H", port) + struct.pack("=I", 0) + \
            socket.inet_pton(family, addr[0]) + struct.pack("=I", addr[3])
    return struct.pack("=H", family) + struct.pack("!H", port) + socket.inet_aton(addr[0]) + bytes(8)


class SrtSocket:
    """One SRT socket in live mode with the URL's options (caller, listener or accepted)."""

    def __init__(self, fd: int | None = None) -> None:
        self.srt = load_libsrt()
        self.fd = self.srt.check(self.srt.lib.srt_create_socket(), "socket") if fd is None else fd

    def set_int(self, opt: int, value: int) -> None:
        v = ctypes.c_int(value)
        self.srt.check(self.srt.lib.srt_setsockflag(self.fd, opt, ctypes.byref(v), ctypes.sizeof(v)), f"option {opt}")

    def set_bytes(self, opt: int, value: bytes) -> None:
        self.srt.check(self.srt.lib.srt_setsockflag(self.fd, opt, ctypes.c_char_p(value), len(value)), f"option {opt}")

    def configure(self, settings: dict[str, str]) -> None:
        """Live mode plus the URL's latency, passphrase, pbkeylen, streamid, connect_timeout."""
        self.set_int(SRTO_TRANSTYPE, SRTT_LIVE)
        try:
            if "latency" in settings:
                self.set_int(SRTO_LATENCY, max(0, int(settings["latency"]) // 1000))  # FFmpeg's µs → ms
            if "connect_timeout" in settings:
                self.set_int(SRTO_CONNTIMEO, int(settings["connect_timeout"]))
            if "pbkeylen" in settings:
                self.set_int(SRTO_PBKEYLEN, int(settings["pbkeylen"]))
        except ValueError:
            raise UsageError("SRT latency, connect_timeout and pbkeylen are whole numbers "
                             "(latency in microseconds, as in FFmpeg)") from None
        if settings.get("passphrase"):
            if not 10 <= len(settings["passphrase"]) <= 79:
                raise UsageError("an SRT passphrase has 10 to 79 characters")
            self.set_bytes(SRTO_PASSPHRASE, settings["passphrase"].encode())
        if settings.get("streamid"):
            self.set_bytes(SRTO_STREAMID, settings["streamid"].encode())

    def connect(self, host: str, port: int) -> None:
        addr = _sockaddr(host, port)
        self.srt.check(self.srt.lib.srt_connect(self.fd, addr, len(addr)), "connect")

    def listen(self, host: str, port: int) -> None:
        addr = _sockaddr(host, port)
        self.srt.check(self.srt.lib.srt_bind(self.fd, addr, len(addr)), f"bind to port {port}")
        self.srt.check(self.srt.lib.srt_listen(self.fd, 1), "listen")

    def accept(self, cancel: threading.Event | None = None, poll: float = 0.1) -> SrtSocket:
        """The first caller; returns early with SrtError when ``cancel`` is set."""
        lib = self.srt.lib
        eid = self.srt.check(lib.srt_epoll_create(), "epoll")
        try:
            events = ctypes.c_int(SRT_EPOLL_IN | SRT_EPOLL_ERR)
            self.srt.check(lib.srt_epoll_add_usock(eid, self.fd, ctypes.byref(events)), "epoll add")
            ready, count = (ctypes.c_int * 1)(), ctypes.c_int(1)
            while lib.srt_epoll_wait(eid, ready, ctypes.byref(count), None, None, int(poll * 1000),
                                     None, None, None, None) < 1:
                if cancel is not None and cancel.is_set():
                    raise SrtError("SRT: stopped while waiting for a receiver")
                count.value = 1
        finally:
            lib.srt_epoll_release(eid)
        addr, size = ctypes.create_string_buffer(128), ctypes.c_int(128)
        fd = lib.srt_accept(self.fd, addr, ctypes.byref(size))
        if fd == SRT_INVALID_SOCK:
            raise SrtError(f"SRT accept: {self.srt.error()}")
        return SrtSocket(fd)

    def send(self, data: bytes) -> None:
        for i in range(0, len(data), PAYLOAD):
            chunk = data[i : i + PAYLOAD]
            self.srt.check(self.srt.lib.srt_sendmsg2(self.fd, chunk, len(chunk), None), "send")

    def recv(self) -> bytes:
        buf = ctypes.create_string_buffer(1500)
        n = self.srt.check(self.srt.lib.srt_recvmsg(self.fd, buf, 1500), "receive")
        return buf.raw[:n]

    def close(self) -> None:
        if self.fd != SRT_INVALID_SOCK:
            self.srt.lib.srt_close(self.fd)
            self.fd = SRT_INVALID_SOCK


class SrtWriter:
    """A write-only file object that sends what PyAV's MPEG-TS muxer writes over SRT.

    Connects (caller) or waits for a receiver (``mode=listener``) when constructed; ``cancel``
    ends that wait. Raises SrtError (an OSError) when the connection cannot be made or is lost.
    """

    def __init__(self, target: Target, cancel: threading.Event | None = None) -> None:
        settings = srt_settings(target)
        parts = urlsplit(target.url)
        if parts.port is None:
            raise UsageError(f"{target.shown}: an SRT URL needs a port, e.g. srt://host:9000")
        self._listener: SrtSocket | None = None
        mode = settings.get("mode", "caller").lower()
        if mode not in ("caller", "listener"):
            raise UsageError(f"{target.shown}: SRT mode is caller or listener, got {mode!r}")
        sock = SrtSocket()
        try:
            sock.configure(settings)
            sock.set_int(SRTO_SNDTIMEO, 5000)  # a send blocked this long is a lost connection
            if mode == "listener":
                self._listener = sock
                sock.listen(parts.hostname or "0.0.0.0", parts.port)
                log.info("SRT: waiting for a receiver to call port %d", parts.port)
                self._sock = sock.accept(cancel)
            else:
                sock.connect(parts.hostname or "127.0.0.1", parts.port)
                self._sock = sock
        except BaseException:
            sock.close()
            raise
        self.listener = mode == "listener"

    def write(self, data: bytes) -> int:
        self._sock.send(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self._sock.close()
        if self._listener is not None and self._listener is not self._sock:
            self._listener.close()


class SrtReader:
    """A read-only file object over an SRT connection (for receivers and tests)."""

    def __init__(self, sock: SrtSocket) -> None:
        self._sock = sock
        self._pending = b""

    def read(self, n: int = -1) -> bytes:
        if not self._pending:
            try:
                self._pending = self._sock.recv()
            except SrtError:
                return b""  # the sender went away: end of stream
        out, self._pending = self._pending[:n] if n >= 0 else self._pending, self._pending[n:] if n >= 0 else b""
        return out

    def close(self) -> None:
        self._sock.close()
