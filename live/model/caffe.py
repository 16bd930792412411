"""Read the weights out of a Caffe ``.caffemodel`` without Caffe or the ``protobuf`` package.

A ``.caffemodel`` is one serialised ``NetParameter`` message of Caffe's ``caffe.proto``. Only
the parts that hold weights are decoded, by their field numbers in ``caffe.proto`` (checked
against BVLC/caffe's ``src/caffe/proto/caffe.proto``)::

    NetParameter      name = 1 (string)  layers = 2 (V1LayerParameter, 2014 files)
                      layer = 100 (LayerParameter, 2015 on)
    LayerParameter    name = 1 (string)  type = 2 (string)  blobs = 7 (BlobProto)
    V1LayerParameter  layer = 1 (V0LayerParameter, pre-2014: refused)  name = 4 (string)
                      type = 5 (enum)    blobs = 6 (BlobProto)
    BlobProto         num = 1  channels = 2  height = 3  width = 4 (int, legacy 4-D shape)
                      data = 5 (float, packed or not)  diff = 6 (float, ignored)
                      shape = 7 (BlobShape: dim = 1, int64, packed or not)
                      double_data = 8 (double)  double_diff = 9 (ignored)

Everything else is skipped by its wire type, as any protobuf reader does. The wire format
itself (varints, 64-bit, length-delimited and 32-bit fields) is decoded by :class:`WireReader`.
Errors name the file and the byte offset, and say what was expected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from live.errors import DataError, InputError

log = logging.getLogger(__name__)

# Wire types (protobuf encoding): the low three bits of every field key.
VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5

# NetParameter's fields and the wire types they may use (a repeated scalar may be packed).
_NET_FIELDS: dict[int, tuple[int, ...]] = {
    1: (LEN,),  # name
    2: (LEN,),  # layers (V1LayerParameter)
    3: (LEN,),  # input
    4: (VARINT, LEN),  # input_dim
    5: (VARINT,),  # force_backward
    6: (LEN,),  # state
    7: (VARINT,),  # debug_info
    8: (LEN,),  # input_shape
    100: (LEN,),  # layer (LayerParameter)
}

# V1LayerParameter.LayerType numbers of the layer kinds that carry weights or matter here.
_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 15: "LRN", 17: "Pooling", 18: "ReLU", 3: "Concat"}

EXPECTED = "a Caffe .caffemodel (a serialised caffe.NetParameter), such as bvlc_googlenet.caffemodel"

# Leading bytes of files people mistake for weights, to name what the file is instead.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a zip archive (a PyTorch .pth checkpoint is one)"),
    (b"\x80\x02", "a Python pickle (an old-style PyTorch checkpoint)"),
    (b"\x89HDF", "an HDF5 file (Keras or Caffe's HDF5 snapshot)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"name:", "a text prototxt (the network description, not its weights)"),
    (b"layer {", "a text prototxt (the network description, not its weights)"),
)


class WireError(ValueError):
    """The bytes are not valid protobuf wire format at ``offset``."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class WireReader:
    """Decodes protobuf fields from ``data[start:end]``; offsets are absolute, for messages."""

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None) -> None:
        self.data = memoryview(data)
        self.pos = start
        self.end = len(self.data) if end is None else end

    def varint(self) -> int:
        """One base-128 varint (at most 10 bytes, as protobuf allows)."""
        result = shift = 0
        start = self.pos
        while True:
            if self.pos >= self.end:
                raise WireError(f"a varint starting at offset {start} runs past the end at {self.end}", start)
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift >= 70:
                raise WireError(f"a varint starting at offset {start} is longer than 10 bytes", start)

    def _take(self, n: int, what: str) -> memoryview:
        start = self.pos
        if n < 0 or start + n > self.end:
            raise WireError(f"{what} at offset {start} needs {n} bytes but only {self.end - start} remain", start)
        self.pos += n
        return self.data[start : start + n]

    def fields(self) -> Iterator[tuple[int, int, int | memoryview, int]]:
        """Yield ``(field number, wire type, value, offset of the key)`` until the end.

        Varints come as int; 64- and 32-bit fields as their 8 or 4 raw bytes; length-delimited
        fields as a view of their payload. Groups (deprecated wire types 3 and 4) and the
        unused wire types 6 and 7 are errors: Caffe never writes them.
        """
        while self.pos < self.end:
            at = self.pos
            key = self.varint()
            number, wire = key >> 3, key & 7
            if number == 0:
                raise WireError(f"field number 0 at offset {at} (key byte {key:#x}) is not valid protobuf", at)
            if wire == VARINT:
                value: int | memoryview = self.varint()
            elif wire == I64:
                value = self._take(8, f"a 64-bit field {number}")
            elif wire == LEN:
                length = self.varint()
                value = self._take(length, f"field {number} (length {length})")
            elif wire == I32:
                value = self._take(4, f"a 32-bit field {number}")
            else:
                raise WireError(f"wire type {wire} (field {number}) at offset {at} is not used by Caffe models", at)
            yield number, wire, value, at

    def sub(self, payload: memoryview) -> WireReader:
        """A reader over the length-delimited payload :meth:`fields` just yielded.

        Call it before the iteration moves on: the payload is the bytes just before ``pos``,
        which keeps every offset absolute (errors point into the file).
        """
        start = self.pos - len(payload)
        return WireReader(self.data, start, self.pos)


@dataclass
class CaffeLayer:
    """A layer that carries weights: name, type (string or V1 enum number) and blobs in order."""

    name: str
    type: str
    blobs: list[np.ndarray]


def read_caffemodel(path: Path) -> dict[str, list[np.ndarray]]:
    """The weight blobs of every layer in a ``.caffemodel``: ``{layer name: [blob, …]}``.

    Blobs are float32 (float64 when the file holds ``double_data``) with Caffe's shapes:
    ``shape`` when present, else the legacy ``(num, channels, height, width)``. Layers without
    blobs (ReLU, pooling, LRN …) are left out. Raises :class:`InputError` for a missing file
    and :class:`DataError` for a truncated, corrupt or foreign one.
    """
    if not path.exists():
        raise InputError(f"Caffe model {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read Caffe model {path}: {e.strerror}") from e
    return {layer.name: layer.blobs for layer in parse_net(data, str(path)) if layer.blobs}


def parse_net(data: bytes, source: str = "<bytes>") -> list[CaffeLayer]:
    """Decode a serialised ``NetParameter``; ``source`` names the file in errors."""
    for magic, what in _SIGNATURES:
        if data.startswith(magic):
            raise DataError(f"{source} is not a Caffe model: it looks like {what}; expected {EXPECTED}")
    if not data:
        raise DataError(f"{source} is empty; expected {EXPECTED}")
    if not _starts_like_a_net(data):
        raise DataError(
            f"{source} is not a Caffe model (its first bytes {data[:8].hex(' ')} do not start a "
            f"caffe.NetParameter field); expected {EXPECTED}"
        )
    reader = WireReader(data)
    layers: list[CaffeLayer] = []
    try:
        for number, wire, value, at in reader.fields():
            if number == 2 and wire == LEN:
                layers.append(_v1_layer(reader.sub(value), at))
            elif number == 100 and wire == LEN:
                layers.append(_layer(reader.sub(value)))
            elif number not in _NET_FIELDS:
                # Caffe forks add their own fields; skipping them is what protobuf would do.
                log.debug("%s: skipping unknown NetParameter field %d at offset %d", source, number, at)
    except WireError as e:
        raise DataError(
            f"{source} is truncated or corrupt: {e} (file size {len(data)} bytes). "
            f"Download it again; expected {EXPECTED}"
        ) from None
    except _BadLayer as e:
        raise DataError(f"{source}: {e}; expected {EXPECTED}") from None
    if not layers:
        raise DataError(f"{source} holds no layers, so it is not a trained Caffe model; expected {EXPECTED}")
    log.debug("read %d layers from %s", len(layers), source)
    return layers


def _starts_like_a_net(data: bytes) -> bool:
    """Whether the first field key is one of NetParameter's, with a wire type it may use."""
    try:
        key = WireReader(data[:10]).varint()
    except WireError:
        return False
    return key >> 3 in _NET_FIELDS and key & 7 in _NET_FIELDS[key >> 3]


class _BadLayer(ValueError):
    pass


def _layer(reader: WireReader) -> CaffeLayer:
    name, kind, blobs = "", "", []
    for number, wire, value, _ in reader.fields():
        if number == 1 and wire == LEN:
            name = bytes(value).decode("utf-8", "replace")
        elif number == 2 and wire == LEN:
            kind = bytes(value).decode("utf-8", "replace")
        elif number == 7 and wire == LEN:
            blobs.append(_blob(reader.sub(value), name))
    return CaffeLayer(name, kind, blobs)


def _v1_layer(reader: WireReader, at: int) -> CaffeLayer:
    name, kind, blobs = "", "", []
    for number, wire, value, _ in reader.fields():
        if number == 4 and wire == LEN:
            name = bytes(value).decode("utf-8", "replace")
        elif number == 5 and wire == VARINT:
            kind = _V1_TYPES.get(int(value), f"V1 type {value}")
        elif number == 6 and wire == LEN:
            blobs.append(_blob(reader.sub(value), name))
        elif number == 1 and wire == LEN:
            raise _BadLayer(
                f"the layer at offset {at} is in Caffe's pre-2014 V0 format, which is not supported; "
                f"upgrade it with Caffe's upgrade_net_proto_binary tool"
            )
    return CaffeLayer(name, kind, blobs)


def _floats(value: memoryview, dtype: str, at: int, layer: str) -> np.ndarray:
    size = np.dtype(dtype).itemsize
    if len(value) % size:
        raise WireError(
            f"packed {dtype} data of layer {layer!r} at offset {at} is {len(value)} bytes, not a multiple of {size}", at
        )
    return np.frombuffer(value, dtype)


def _unpacked_run(reader: WireReader, first: memoryview, key: int, size: int, dtype: str) -> np.ndarray:
    """``first`` and the run of identical-key fixed-width fields after it, read in one go.

    Unpacked repeated floats are a 5-byte record per value; a Python loop over millions of
    them would take seconds, numpy takes milliseconds.
    """
    raw = np.frombuffer(reader.data[reader.pos : reader.end], np.uint8)
    step = size + 1  # one key byte (field numbers below 16) and the value
    n = len(raw) // step
    records = raw[: n * step].reshape(n, step)
    mismatch = np.flatnonzero(records[:, 0] != key)
    run = int(mismatch[0]) if len(mismatch) else n
    reader.pos += run * step
    values = np.concatenate([np.frombuffer(first, np.uint8), records[:run, 1:].reshape(-1)])
    return values.view(dtype)


def _ints(reader: WireReader, wire: int, value: int | memoryview) -> list[int]:
    if wire == VARINT:
        return [int(value)]
    inner = reader.sub(value)
    out = []
    while inner.pos < inner.end:
        out.append(inner.varint())
    return out


def _blob(reader: WireReader, layer: str) -> np.ndarray:
    legacy = {1: 0, 2: 0, 3: 0, 4: 0}
    shape: list[int] | None = None
    chunks: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    start = reader.pos
    for number, wire, value, at in reader.fields():
        if number in legacy and wire == VARINT:
            legacy[number] = int(value)
        elif number == 5:  # data
            if wire == LEN:
                chunks.append(_floats(value, "<f4", at, layer))
            elif wire == I32:
                chunks.append(_unpacked_run(reader, value, (5 << 3) | I32, 4, "<f4"))
        elif number == 8:  # double_data
            if wire == LEN:
                doubles.append(_floats(value, "<f8", at, layer))
            elif wire == I64:
                doubles.append(_unpacked_run(reader, value, (8 << 3) | I64, 8, "<f8"))
        elif number == 7 and wire == LEN:  # shape: BlobShape { repeated int64 dim = 1 }
            shape = []
            dims = reader.sub(value)
            for dim_number, dim_wire, dim_value, _ in dims.fields():
                if dim_number == 1:
                    shape.extend(_ints(dims, dim_wire, dim_value))
    if chunks:
        values = np.concatenate(chunks) if len(chunks) > 1 else chunks[0].copy()
    elif doubles:
        values = np.concatenate(doubles) if len(doubles) > 1 else doubles[0].copy()
    else:
        values = np.zeros(0, np.float32)
    if shape is None:
        if any(legacy.values()):
            shape = [legacy[1], legacy[2], legacy[3], legacy[4]]
        else:
            shape = [len(values)]
    if int(np.prod(shape)) != len(values):
        raise _BadLayer(
            f"a blob of layer {layer!r} at offset {start} has shape {tuple(shape)} "
            f"({int(np.prod(shape))} values) but holds {len(values)} values: the file is damaged"
        )
    return values.astype(values.dtype.newbyteorder("="), copy=False).reshape(shape)
