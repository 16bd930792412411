"""Write Caffe ``.caffemodel`` bytes with the real field numbers of Caffe's ``caffe.proto``.

For tests only: the reader under test (:mod:`live.model.caffe`) must read back exactly what
this writes, in both layer formats Caffe ever saved weights in (V1 ``layers = 2`` with enum
types, and ``layer = 100`` with string types) and with packed or unpacked floats.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

VARINT, I64, LEN, I32 = 0, 1, 2, 5
V1_TYPES = {"Convolution": 4, "InnerProduct": 14, "LRN": 15, "Pooling": 17, "ReLU": 18}


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # protobuf writes negative int64 as ten-byte two's complement
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length_delimited(number: int, payload: bytes) -> bytes:
    return key(number, LEN) + varint(len(payload)) + payload


def string(number: int, text: str) -> bytes:
    return length_delimited(number, text.encode())


def blob(
    array: np.ndarray,
    *,
    packed: bool = True,
    legacy_shape: bool = False,
    double: bool = False,
    packed_dims: bool = True,
    diff: bool = False,
) -> bytes:
    """A BlobProto: shape = 7 (BlobShape dim = 1) or legacy num/channels/height/width = 1..4,
    data = 5 (float) or double_data = 8, packed or one field per value; diff = 6 if asked."""
    out = bytearray()
    if legacy_shape:
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        for number, d in zip((1, 2, 3, 4), dims):
            out += key(number, VARINT) + varint(d)
    else:
        if packed_dims:
            shape = length_delimited(1, b"".join(varint(d) for d in array.shape))
        else:
            shape = b"".join(key(1, VARINT) + varint(d) for d in array.shape)
        out += length_delimited(7, shape)
    number, dtype, wire = (8, "<f8", I64) if double else (5, "<f4", I32)
    values = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
    if packed:
        out += length_delimited(number, values.tobytes())
    else:
        # one field per value: a one-byte key, then the value (numpy, so millions write quickly)
        records = np.empty((values.size, 1 + values.itemsize), np.uint8)
        records[:, 0] = key(number, wire)[0]
        records[:, 1:] = values.view(np.uint8).reshape(values.size, values.itemsize)
        out += records.tobytes()
    if diff:
        out += length_delimited(6, np.zeros(values.size, "<f4").tobytes())
    return bytes(out)


def layer(name: str, kind: str, blobs: Iterable[bytes], *, v1: bool = False) -> bytes:
    """One layer message as NetParameter field 2 (V1LayerParameter) or 100 (LayerParameter)."""
    blobs = list(blobs)
    if v1:  # V1LayerParameter: bottom = 2, top = 3, name = 4, type = 5 (enum), blobs = 6
        body = string(2, "data") + string(3, name) + string(4, name) + key(5, VARINT) + varint(V1_TYPES[kind])
        body += b"".join(length_delimited(6, b) for b in blobs)
        body += key(7, I32) + struct.pack("<f", 1.0)  # blobs_lr: an unrelated field to skip
        return length_delimited(2, body)
    # LayerParameter: name = 1, type = 2, bottom = 3, top = 4, blobs = 7, phase = 10
    body = string(1, name) + string(2, kind) + string(3, "data") + string(4, name)
    body += b"".join(length_delimited(7, b) for b in blobs) + key(10, VARINT) + varint(1)
    return length_delimited(100, body)


def net(
    layers: Mapping[str, tuple[str, list[np.ndarray]]],
    *,
    name: str = "GoogleNet",
    v1: bool = False,
    **blob_options: bool,
) -> bytes:
    """A NetParameter: name = 1, input = 3, input_dim = 4, then every layer."""
    out = string(1, name) + string(3, "data") + b"".join(key(4, VARINT) + varint(d) for d in (10, 3, 224, 224))
    for layer_name, (kind, arrays) in layers.items():
        out += layer(layer_name, kind, [blob(a, **blob_options) for a in arrays], v1=v1)
    return out


def write(path: Path, layers: Mapping[str, tuple[str, list[np.ndarray]]], **options) -> Path:
    path.write_bytes(net(layers, **options))
    return path
