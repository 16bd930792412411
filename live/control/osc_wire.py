"""OSC datagrams checked byte by byte before any parser walks them (docs/architecture.md, *Doors*).

python-osc's parser is not a guard: a bundle element of size -4 (or 0) sends
``OscBundle._parse_contents`` round the same bytes forever, on the OSC thread, logging a warning
each time; a blob may claim a negative size; an unknown type tag is logged and skipped. So every
datagram is first walked here, with every size checked against what is really there, and only a
datagram that passes is handed to python-osc, one message at a time (its bundle parser never
runs: the show acts on every message at once, whatever a bundle's timetag says).

What is accepted (the OSC 1.0 wire format, strictly):

- a message: an address (printable ASCII, starting with ``/``, at most ``MAX_ADDRESS`` bytes),
  then optionally a type-tag string (``,`` and at most ``MAX_ARGS`` tags of ``i f s b h d t r m
  T F N [ ]``, arrays at most ``MAX_ARRAY_DEPTH`` deep and balanced), then exactly the arguments
  the tags promise: strings NUL-terminated and padded to 4 bytes and valid UTF-8, blobs with a
  size of 0 or more that fits, numbers whole; nothing left over;
- a bundle: ``#bundle\\0``, an 8-byte timetag (any value: it is ignored), then elements, each a
  size (a positive multiple of 4 that fits in what is left) and a message or a bundle, nested at
  most ``MAX_DEPTH`` deep, with at most ``MAX_ELEMENTS`` elements in the whole datagram.

The work is linear in the datagram's size (at most ``MAX_PACKET`` bytes) and the searches are
``bytes.find`` calls, so a hostile datagram costs microseconds.
"""

from __future__ import annotations

import struct

MAX_PACKET = 8192  # bytes; controllers send tens, a bundle of a whole page of faders a few hundred
MAX_DEPTH = 4  # bundles inside bundles
MAX_ELEMENTS = 64  # messages and bundles in one datagram, all levels together
MAX_ADDRESS = 128  # bytes in an address (pattern); the show's longest is about 25
MAX_ARGS = 32  # type tags in one message
MAX_ARRAY_DEPTH = 2  # [ [ ] ]
BUNDLE_TAG = b"#bundle\x00"

_FIXED = {"i": 4, "f": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8, "T": 0, "F": 0, "N": 0}
_TAGS = frozenset(_FIXED) | {"s", "b", "[", "]"}
_INT = struct.Struct(">i")


class WireError(ValueError):
    """A datagram that is not well-formed OSC; the message says what is wrong and where."""


def _string(data: bytes, start: int, end: int, what: str) -> tuple[bytes, int]:
    """The OSC string at ``start`` (without its NUL) and the offset after its padding."""
    nul = data.find(b"\x00", start, end)
    if nul < 0:
        raise WireError(f"{what} at byte {start} has no terminating NUL")
    after = start + (nul - start) // 4 * 4 + 4
    if after > end:
        raise WireError(f"{what} at byte {start} is not padded to 4 bytes")
    if data[nul:after].strip(b"\x00"):
        raise WireError(f"{what} at byte {start} has non-zero padding")
    return data[start:nul], after


def check_message(data: bytes, start: int = 0, end: int | None = None) -> None:
    """Raise :class:`WireError` unless ``data[start:end]`` is one well-formed OSC message."""
    end = len(data) if end is None else end
    address, pos = _string(data, start, end, "address")
    if not address.startswith(b"/"):
        raise WireError(f"address at byte {start} does not start with '/'")
    if len(address) > MAX_ADDRESS:
        raise WireError(f"address of {len(address)} bytes (limit {MAX_ADDRESS})")
    if not all(0x21 <= c <= 0x7E for c in address):  # printable ASCII, no spaces
        raise WireError("address holds a byte that is not printable ASCII")
    if pos == end:
        return  # no type tags: a message without arguments
    tags_raw, pos = _string(data, pos, end, "type tags")
    if not tags_raw.startswith(b","):
        raise WireError("type tags do not start with ','")
    try:
        tags = tags_raw[1:].decode("ascii")
    except UnicodeDecodeError:
        raise WireError("type tags are not ASCII") from None
    if len(tags) > MAX_ARGS:
        raise WireError(f"{len(tags)} type tags (limit {MAX_ARGS})")
    depth = 0
    for tag in tags:
        if tag not in _TAGS:
            raise WireError(f"type tag {tag!r} is not supported (expected one of i f s b h d t r m T F N [ ])")
        if tag == "[":
            depth += 1
            if depth > MAX_ARRAY_DEPTH:
                raise WireError(f"arrays nested deeper than {MAX_ARRAY_DEPTH}")
        elif tag == "]":
            depth -= 1
            if depth < 0:
                raise WireError("']' without '['")
        elif tag == "s":
            text, pos = _string(data, pos, end, "string argument")
            try:
                text.decode("utf-8")
            except UnicodeDecodeError:
                raise WireError(f"string argument before byte {pos} is not UTF-8") from None
        elif tag == "b":
            if pos + 4 > end:
                raise WireError(f"blob size at byte {pos} is cut off")
            (size,) = _INT.unpack_from(data, pos)
            if size < 0:
                raise WireError(f"blob at byte {pos} claims a negative size ({size})")
            pos += 4 + (size + 3) // 4 * 4
            if pos > end:
                raise WireError(f"blob of {size} bytes is longer than the datagram")
        else:
            pos += _FIXED[tag]
            if pos > end:
                raise WireError(f"argument {tag!r} is cut off")
    if depth:
        raise WireError("'[' without ']'")
    if pos != end:
        raise WireError(f"{end - pos} bytes after the last argument")


def split(data: bytes) -> list[tuple[int, int]]:
    """The (start, end) offsets of every message in the datagram ``data``, in order.

    Raises :class:`WireError` unless the whole datagram is well-formed (see the module docstring):
    one bad element refuses the datagram, so a bundle is applied whole or not at all.
    """
    if len(data) > MAX_PACKET:
        raise WireError(f"{len(data)} bytes (limit {MAX_PACKET})")
    messages: list[tuple[int, int]] = []
    elements = [0]

    def walk(start: int, end: int, depth: int) -> None:
        if data.startswith(BUNDLE_TAG, start):
            if depth >= MAX_DEPTH:
                raise WireError(f"bundles nested deeper than {MAX_DEPTH}")
            pos = start + len(BUNDLE_TAG) + 8  # the timetag: any value, ignored
            if pos > end:
                raise WireError(f"bundle at byte {start} is cut off before its timetag ends")
            while pos < end:
                if pos + 4 > end:
                    raise WireError(f"element size at byte {pos} is cut off")
                (size,) = _INT.unpack_from(data, pos)
                if size <= 0 or size % 4:
                    raise WireError(f"bundle element at byte {pos} has size {size} (a positive multiple of 4)")
                pos += 4
                if pos + size > end:
                    raise WireError(f"bundle element of {size} bytes at byte {pos} is longer than what is left")
                elements[0] += 1
                if elements[0] > MAX_ELEMENTS:
                    raise WireError(f"more than {MAX_ELEMENTS} elements in one datagram")
                walk(pos, pos + size, depth + 1)
                pos += size
        elif data.startswith(b"/", start):
            check_message(data, start, end)
            messages.append((start, end))
        else:
            raise WireError(f"byte {start} starts neither a message ('/') nor a bundle ('#bundle')")

    if not data:
        raise WireError("empty datagram")
    walk(0, len(data), 0)
    return messages
