"""Who may use the web page: loopback freely, everyone else with the show's token.

The rules (docs/architecture.md, *The web page*), as one pure function of the request's data so
they can be tested with exact requests:

- **Loopback** clients (the show's own machine) need no token. Their ``Host`` header must name
  this machine (``localhost``, an IP literal, its host name): a web page elsewhere that points a
  DNS name at 127.0.0.1 ("DNS rebinding") is refused.
- **Any other address** must carry the token: ``Authorization: Bearer <token>``, the
  ``ddl_token`` cookie, or ``?token=<token>`` in the URL (the page's link). A URL token is moved
  into an HttpOnly, SameSite=Strict cookie and the browser is redirected to the address without
  it, so it does not stay in the address bar or the history. Without it: 401, whatever the path.
  The one exception is reading the OSCQuery namespace from a network the OSC allowlist already
  lets drive the show (OSCQuery-aware controllers cannot send a token, and such a sender can
  already ask for every value with ``/dream/dump``), and only while OSC itself listens beyond
  loopback: with OSC on loopback the allowlist lets nobody in, so it opens nothing here either.
- Credentials that are not even text (invalid UTF-8 in ``Authorization`` or the cookie) are a
  wrong token: 401, never a server error.
- **Websockets** must come from the page's own origin (``Origin`` equal to ``http://<Host>``):
  another site open in the operator's browser cannot drive the show.

The token is generated once (:func:`resolve_token`), kept in a 0600 file beside the site config
or in the user's config directory, printed once when it is made, and never logged. A token file
that is a symbolic link is refused, not followed (and nothing it points to is ever chmodded);
a token given by hand must look random (:func:`_check_token`: 16 characters or more, not a
repetition or a run such as ``aaaa…`` or ``abcd…``). It is given in a file
(``--web-token-file``) or the environment (``$DEEPDREAM_LIVE_WEB_TOKEN``); ``--web-token`` still
works but every user of the machine can read it in ``ps``, which the show says once.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import os
import secrets
import socket
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from live.errors import OutputError, UsageError

log = logging.getLogger(__name__)

TOKEN_COOKIE = "ddl_token"
TOKEN_QUERY = "token"
TOKEN_FILE = "web-token"
TOKEN_ENV = "DEEPDREAM_LIVE_WEB_TOKEN"
MIN_TOKEN_LENGTH = 16
MIN_TOKEN_BITS = 40.0  # estimated from the token alone: random 16-character tokens score 45-64, "password12345678" 39
MIN_DISTINCT = 8  # different characters in a token


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an IP address, as a socket reports it) is this machine's loopback."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d
    return ip.is_loopback


def is_loopback_bind(host: str) -> bool:
    """Whether listening on ``host`` keeps the server to this machine (``127.0.0.1``, ``::1``, ``localhost``)."""
    return host.strip("[]").lower() == "localhost" or is_loopback(host.strip("[]"))


def generate_token() -> str:
    """A new random token: 32 URL-safe characters (192 bits)."""
    return secrets.token_urlsafe(24)


def default_token_path(config: Path | None = None) -> Path:
    """``web-token`` beside the site config, else in ``$XDG_CONFIG_HOME/deepdream-live``."""
    if config is not None:
        return config.expanduser().resolve().parent / TOKEN_FILE
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "deepdream-live" / TOKEN_FILE


def token_strength(token: str) -> float:
    """A rough estimate of a token's randomness in bits, from the token alone: its length times the
    entropy of its letter frequencies, counting nothing for a character that continues a run
    (``aaaa``, ``abcd``, ``9876``). A random 32-character token scores over 120; ``aaaa…`` 0."""
    if not token:
        return 0.0
    counts: dict[str, int] = {}
    for c in token:
        counts[c] = counts.get(c, 0) + 1
    n = len(token)
    per_char = -sum(k / n * math.log2(k / n) for k in counts.values())
    steps = [ord(b) - ord(a) for a, b in zip(token, token[1:])]
    predictable = sum(1 for d0, d1 in zip(steps, steps[1:]) if d0 == d1)
    return per_char * (n - predictable)


def _check_token(token: str, where: str) -> str:
    token = token.strip()
    how = ("leave it out and the show makes one, or make one with "
           "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'")
    if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not all(c.isalnum() or c in "-_." for c in token):
        raise UsageError(
            f"web token from {where}: expected at least {MIN_TOKEN_LENGTH} letters, digits, '-', '_' or '.'; {how}"
        )
    bits = token_strength(token)
    if len(set(token)) < MIN_DISTINCT or bits < MIN_TOKEN_BITS:
        raise UsageError(f"web token from {where} is too easy to guess (about {bits:.0f} bits, "
                         f"{len(set(token))} different characters; at least {MIN_TOKEN_BITS:.0f} bits and "
                         f"{MIN_DISTINCT} different characters are needed); {how}")
    return token


def read_or_create_token(path: Path) -> tuple[str, bool]:
    """The token stored at ``path``, or a new one written there with mode 0600.

    Returns ``(token, created)``. A token file others can read is made private again, with a
    warning; an unreadable or malformed one is an error that says to delete it. A symbolic link
    is refused, never followed: whoever could place it could point it at another file, which the
    show would then read as its token or chmod.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        # O_EXCL never follows a link (a dangling one is "exists"); O_NOFOLLOW says so twice
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise OutputError(f"cannot create the web token file {path}: {e.strerror or e}") from None
    else:
        token = generate_token()
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token, True
    if path.is_symlink():
        raise UsageError(f"the web token file {path} is a symbolic link; the show does not follow links to its "
                         "token: replace the link by the file itself (or delete it for a new token)")
    try:
        fd = os.open(path, os.O_RDONLY | nofollow)
    except OSError as e:
        raise UsageError(f"cannot read the web token file {path}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"the web token file {path} is not a regular file; delete it for a new token")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("web token file %s was readable by others (mode %o); made it private (0600)",
                        path, stat.S_IMODE(info.st_mode))
            os.fchmod(f.fileno(), 0o600)  # the file opened, never a path that could be swapped meanwhile
        raw = f.read(4096)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = ""  # _check_token says what a token is
    return _check_token(text, f"{path} (delete the file for a new token)"), False


@dataclass(frozen=True)
class TokenChoice:
    """Where the token came from: ``given`` (flag or environment), or a ``path`` it is stored in."""

    token: str
    path: Path | None = None
    created: bool = False


def resolve_token(given: str | None, config: Path | None = None, path: Path | None = None) -> TokenChoice:
    """The token for a server beyond loopback: ``given`` (``--web-token`` or
    ``$DEEPDREAM_LIVE_WEB_TOKEN``), else the stored one, else a new one stored for next time.

    The stored file is ``path``, else ``web-token`` beside the site config; where that directory
    is not writable (a config under /etc), the user's config directory.
    """
    if given:
        return TokenChoice(_check_token(given, "--web-token or $" + TOKEN_ENV))
    candidates = [path] if path is not None else [default_token_path(config)]
    if path is None and config is not None:
        candidates.append(default_token_path(None))
    problem: Exception | None = None
    for candidate in candidates:
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            token, created = read_or_create_token(candidate)
            return TokenChoice(token, candidate, created)
        except (OutputError, OSError) as e:
            problem = e
            log.info("web token not kept in %s: %s", candidate, e)
    raise OutputError(f"no place to keep the web token ({problem}); pass one with --web-token")


# ----------------------------------------------------------------------------- requests
def _host_name(host_header: str) -> str:
    """``Host`` header without its port: ``[::1]:8080`` → ``::1``, ``pi.local:8080`` → ``pi.local``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _machine_names() -> frozenset[str]:
    names = {"localhost"}
    try:
        hostname = socket.gethostname().lower()
        names.update({hostname, f"{hostname}.local", socket.getfqdn().lower()})
    except OSError:
        pass
    return frozenset(names)


@dataclass(frozen=True)
class Verdict:
    """What to do with a request: ``allowed``, else answer ``status`` with ``reason``.
    ``keep_token``: the token came in the URL; set the cookie and redirect without it."""

    allowed: bool
    status: int = 200
    reason: str = ""
    keep_token: bool = False


def _same_origin(origin: str, host_header: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host_header) and parts.netloc.lower() == host_header.lower()


class AccessPolicy:
    """Decides every request the web server gets (see the module docstring for the rules).

    Args:
        token: the token required from non-loopback clients; None refuses every such client.
        osc_senders: the OSC server's sender filter (a callable taking an IP); networks it
            allows may read the OSCQuery namespace without the token.
    """

    def __init__(self, token: str | None, osc_senders: Callable[[str], bool] | None = None) -> None:
        self.token = token
        self.osc_senders = osc_senders
        self.names = _machine_names()

    def token_valid(self, presented: str | None) -> bool:
        """Whether ``presented`` is the token. Anything that is not ASCII text (aiohttp hands on
        invalid UTF-8 as surrogates, which ``encode`` refuses) is simply not the token."""
        if not self.token or not isinstance(presented, str) or not presented or not presented.isascii():
            return False
        return hmac.compare_digest(presented.encode("ascii"), self.token.encode("ascii"))

    def _host_allowed(self, host_header: str) -> bool:
        name = _host_name(host_header)
        try:
            ipaddress.ip_address(name)
            return True  # an address typed by hand; rebinding needs a name
        except ValueError:
            return name in self.names or name.endswith(".localhost")

    def check(
        self,
        *,
        remote: str,
        method: str,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        query: Mapping[str, str],
        websocket: bool = False,
        oscquery: bool = False,
    ) -> Verdict:
        """The verdict for one request from ``remote`` (its IP) with these headers, cookies and
        query parameters. ``websocket``: an upgrade request; ``oscquery``: a namespace read."""
        host = headers.get("Host", "")
        origin = headers.get("Origin")
        if websocket and origin is not None and not _same_origin(origin, host):
            return Verdict(False, 403, f"websocket from another origin ({origin}) refused")
        if is_loopback(remote):
            if host and not self._host_allowed(host):
                return Verdict(False, 403, f"unexpected Host {host!r}: use http://localhost or the machine's address")
            return Verdict(True)
        auth = headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if self.token_valid(bearer) or self.token_valid(cookies.get(TOKEN_COOKIE)):
            return Verdict(True)
        if self.token_valid(query.get(TOKEN_QUERY)):
            return Verdict(True, keep_token=method in ("GET", "HEAD") and not websocket)
        if oscquery and method in ("GET", "HEAD") and self.osc_senders is not None and self.osc_senders(remote):
            return Verdict(True)
        return Verdict(False, 401, "this show's web page needs its token: open the link printed when the show "
                       "started (http://…/?token=…), or see the web-token file beside the site config")


def _interactive() -> bool:
    """Whether stderr is a person's terminal (not systemd's journal or a log file)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def announce_token(choice: TokenChoice, port: int, host: str = "0.0.0.0") -> None:
    """Show the page's address with a newly made token, once, on the terminal that started the show.

    This is the only place a token is ever written out besides its file. It goes to stderr only
    when that is a terminal: under systemd stderr is the journal, which is a log, so there the
    log says where the file is instead (``cat`` it). A stored or given token is never shown again.
    """
    where = f"in {choice.path}" if choice.path is not None else "given with --web-token"
    if not choice.created or not _interactive():
        log.info("web page token %s (not logged; open http://<this machine>:%d/?token=<it> on a phone)", where, port)
        return
    addresses = _reachable_addresses(host)
    links = "\n".join(f"    http://{a}:{port}/?{TOKEN_QUERY}={choice.token}" for a in addresses)
    sys.stderr.write(
        f"deepdream-live: the web page is open to the network with this token (shown once; kept {where}):\n"
        f"{links}\n"
    )
    sys.stderr.flush()


def _reachable_addresses(host: str) -> list[str]:
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    try:
        import ifaddr  # python-zeroconf's own dependency

        found = sorted({ip.ip for a in ifaddr.get_adapters() for ip in a.ips
                        if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback})
    except Exception:  # noqa: BLE001 - the host name is a fine fallback
        found = []
    return found or [socket.gethostname()]
