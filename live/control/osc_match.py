"""OSC address patterns matched against the show's own addresses, in time linear in their size.

python-osc turns every ``*`` of a pattern into the regular expression ``[^/]*`` and lets Python's
backtracking engine try it against each mapped address: ``/dream/`` and 18 ``*`` then ``!`` took
12 s with the GIL held, and each further ``*`` multiplies that by more than two
(docs/architecture.md, *Doors*). Here a pattern is first bounded (``MAX_PATTERN`` bytes,
``MAX_WILDCARDS`` wildcards, ``MAX_ALTERNATIVES`` spellings of its ``{…}`` lists), then matched
part by part (between the ``/``) against the parts of the known addresses with the classic
two-pointer wildcard match: on a mismatch only the most recent ``*`` takes one more character,
so a part costs at most (pattern length × name length) steps and never backtracks
exponentially.

The OSC 1.0 pattern syntax: ``?`` one character, ``*`` any run of characters (not ``/``),
``[abc]``, ``[a-z]`` and ``[!abc]`` one character from (or not from) a set, ``{foo,bar}`` one of
the listed strings. Everything else stands for itself.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

MAX_PATTERN = 128  # bytes; the show's longest address is about 25
MAX_WILDCARDS = 8  # '*', '?', '[' and '{' together
MAX_ALTERNATIVES = 16  # spellings a pattern's {…} lists make together (their product)
SPECIAL = frozenset("*?[]{}")

# one token matches one character, except STAR (any run); ("set", chars, negated) a class
_STAR = ("*",)
_ANY = ("?",)
Token = tuple


class PatternError(ValueError):
    """A pattern that is malformed or over the bounds; the message says which."""


def is_pattern(address: str) -> bool:
    """Whether ``address`` holds any wildcard (else it names one address exactly)."""
    return not SPECIAL.isdisjoint(address)


def _parse_part(part: str) -> list[list[Token]]:
    """The spellings of one part of a pattern (between '/'), each a list of one-character tokens
    and stars; a ``{a,b}`` list multiplies the spellings."""
    pieces: list[list[list[Token]]] = []  # a sequence of choices, each choice a token list
    i = 0
    while i < len(part):
        c = part[i]
        if c == "*":
            pieces.append([[_STAR]])
        elif c == "?":
            pieces.append([[_ANY]])
        elif c == "[":
            close = part.find("]", i + 1)
            if close < 0:
                raise PatternError("'[' without ']'")
            body = part[i + 1 : close]
            negated = body.startswith("!")
            if negated:
                body = body[1:]
            chars: set[str] = set()
            j = 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == "-":
                    lo, hi = body[j], body[j + 2]
                    if ord(hi) < ord(lo):
                        raise PatternError(f"range {lo}-{hi} runs backwards")
                    chars.update(chr(k) for k in range(ord(lo), ord(hi) + 1))
                    j += 3
                else:
                    chars.add(body[j])
                    j += 1
            pieces.append([[("set", frozenset(chars), negated)]])
            i = close
        elif c == "{":
            close = part.find("}", i + 1)
            if close < 0:
                raise PatternError("'{' without '}'")
            words = part[i + 1 : close].split(",")
            if any(SPECIAL & set(w) for w in words):
                raise PatternError("a {…} list holds a wildcard")
            pieces.append([[("=", ch) for ch in w] for w in words])
            i = close
        elif c in "]}":
            raise PatternError(f"{c!r} without its opening bracket")
        else:
            pieces.append([[("=", c)]])
        i += 1
    if math.prod(len(choices) for choices in pieces) > MAX_ALTERNATIVES:  # before spelling them out
        raise PatternError(f"{{…}} lists that spell more than {MAX_ALTERNATIVES} names")
    spellings = []
    for combo in itertools.product(*pieces):
        tokens: list[Token] = []
        for chunk in combo:
            for token in chunk:
                if token is _STAR and tokens and tokens[-1] is _STAR:
                    continue  # '**' is '*'
                tokens.append(token)
        spellings.append(tokens)
    return spellings


def _one(token: Token, ch: str) -> bool:
    if token is _ANY:
        return True
    if token[0] == "=":
        return token[1] == ch
    return (ch in token[1]) != token[2]


def _match(tokens: list[Token], name: str) -> bool:
    """Whether the one-character tokens and stars match all of ``name``: the two-pointer wildcard
    match (on a mismatch the latest star takes one more character), O(len(tokens) × len(name))."""
    t = n = 0
    star_t, star_n = -1, 0
    while n < len(name):
        if t < len(tokens) and tokens[t] is not _STAR and _one(tokens[t], name[n]):
            t += 1
            n += 1
        elif t < len(tokens) and tokens[t] is _STAR:
            star_t, star_n = t, n
            t += 1
        elif star_t >= 0:
            star_n += 1
            n = star_n
            t = star_t + 1
        else:
            return False
    while t < len(tokens) and tokens[t] is _STAR:
        t += 1
    return t == len(tokens)


class Pattern:
    """One address pattern, checked against the bounds and compiled into its parts' spellings."""

    def __init__(self, pattern: str) -> None:
        if len(pattern) > MAX_PATTERN:
            raise PatternError(f"a pattern of {len(pattern)} characters (limit {MAX_PATTERN})")
        wildcards = sum(pattern.count(c) for c in "*?[{")
        if wildcards > MAX_WILDCARDS:
            raise PatternError(f"{wildcards} wildcards (limit {MAX_WILDCARDS})")
        if not pattern.startswith("/") or "//" in pattern:
            raise PatternError("a pattern starts with '/' and has no empty part")
        self.text = pattern
        self.parts: list[list[list[Token]]] = [_parse_part(p) for p in pattern[1:].split("/")]
        spellings = 1
        for part in self.parts:
            spellings *= len(part)
        if spellings > MAX_ALTERNATIVES:
            raise PatternError(f"{{…}} lists that spell {spellings} addresses (limit {MAX_ALTERNATIVES})")

    def matches(self, parts: list[str]) -> bool:
        """Whether this pattern matches the address split into ``parts``."""
        if len(parts) != len(self.parts):
            return False
        return all(any(_match(tokens, name) for tokens in choices) for choices, name in zip(self.parts, parts))


class AddressSpace:
    """The addresses a server answers on, for :meth:`match`; built once, read from one thread."""

    def __init__(self, addresses: Iterable[str]) -> None:
        self.addresses: list[str] = list(dict.fromkeys(addresses))
        self._exact = set(self.addresses)
        self._parts = [(a, a[1:].split("/")) for a in self.addresses]

    def match(self, pattern: str) -> list[str]:
        """The known addresses ``pattern`` matches, in the order they were given.

        A pattern without wildcards is looked up directly. Raises :class:`PatternError` for a
        malformed pattern or one over the bounds, before any matching is tried.
        """
        if not is_pattern(pattern):
            if len(pattern) > MAX_PATTERN:
                raise PatternError(f"an address of {len(pattern)} characters (limit {MAX_PATTERN})")
            return [pattern] if pattern in self._exact else []
        compiled = Pattern(pattern)
        return [address for address, parts in self._parts if compiled.matches(parts)]
