"""The caffemodel reader: protobuf wire format, Caffe's messages by their real field numbers,
every way a file can be wrong, and the BVLC GoogLeNet converted, cached and downloaded."""

from __future__ import annotations

import hashlib
import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from live.errors import DataError, InputError, UnavailableError
from live.model import load_model
from live.model import weights as weights_module
from live.model.bvlc import CAFFE_PARAMS, BVLCGoogLeNet
from live.model.caffe import WireError, WireReader, parse_net, read_caffemodel
from live.model.weights import BVLC_CAFFEMODEL_NAME, BVLC_CONVERTED_NAME, cache_dir
from tests import caffe_writer as cw
from tests.conftest import photo_path

RNG = np.random.default_rng(7)


def small_net() -> dict[str, tuple[str, list[np.ndarray]]]:
    return {
        "conv1/7x7_s2": ("Convolution", [RNG.standard_normal((4, 3, 7, 7)).astype(np.float32),
                                         RNG.standard_normal(4).astype(np.float32)]),
        "conv1/relu_7x7": ("ReLU", []),
        "pool1/norm1": ("LRN", []),
        "loss3/classifier": ("InnerProduct", [RNG.standard_normal((10, 6)).astype(np.float32),
                                              RNG.standard_normal(10).astype(np.float32)]),
    }  # fmt: skip


def googlenet_blobs(extra: bool = True) -> dict[str, tuple[str, list[np.ndarray]]]:
    """Random blobs with the real shapes of every convolution of BVLC GoogLeNet."""
    targets = BVLCGoogLeNet().state_dict()
    layers = {}
    for caffe_name, path in CAFFE_PARAMS.items():
        w, b = targets[f"{path}.weight"], targets[f"{path}.bias"]
        fan_in = w[0].numel()
        layers[caffe_name] = ("Convolution", [
            (RNG.standard_normal(tuple(w.shape)) * (2.0 / fan_in) ** 0.5).astype(np.float32),
            (0.1 * RNG.standard_normal(tuple(b.shape))).astype(np.float32),
        ])  # fmt: skip
    if extra:  # the classifier the real file also holds, to be ignored
        layers["loss3/classifier"] = ("InnerProduct", [np.zeros((1000, 1024), np.float32), np.zeros(1000, np.float32)])
    return layers


@pytest.fixture(scope="module")
def googlenet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A GoogLeNet caffemodel in the 2014 V1 format the real bvlc_googlenet.caffemodel uses."""
    layers = googlenet_blobs()
    path = tmp_path_factory.mktemp("caffe") / "bvlc_googlenet.caffemodel"
    cw.write(path, layers, v1=True, legacy_shape=True)
    return path, layers


# ----- the wire format


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**40)])
def test_varints_round_trip(n: int) -> None:
    data = cw.varint(n)
    got = WireReader(data).varint()
    assert got == n % 2**64  # negative int64: ten-byte two's complement, read back unsigned
    assert len(data) <= 10


def test_an_over_long_varint_is_an_error() -> None:
    with pytest.raises(WireError, match="longer than 10 bytes"):
        WireReader(b"\xff" * 11).varint()


def test_fields_of_every_wire_type_and_skipping() -> None:
    data = (cw.key(1, cw.VARINT) + cw.varint(300) + cw.key(2, cw.I64) + b"\x01" * 8
            + cw.string(3, "abc") + cw.key(4, cw.I32) + b"\x02" * 4)  # fmt: skip
    got = [(n, w, bytes(v) if not isinstance(v, int) else v) for n, w, v, _ in WireReader(data).fields()]
    assert got == [(1, 0, 300), (2, 1, b"\x01" * 8), (3, 2, b"abc"), (4, 5, b"\x02" * 4)]


@pytest.mark.parametrize("bad", [cw.key(3, 3) + b"\x00", cw.key(3, 6), cw.string(1, "abc")[:-1], b"\x00"])
def test_malformed_fields_are_errors(bad: bytes) -> None:
    with pytest.raises(WireError):
        list(WireReader(bad).fields())


# ----- Caffe's messages


@pytest.mark.parametrize("v1", [False, True], ids=["layer=100", "V1 layers=2"])
@pytest.mark.parametrize(
    "options",
    [{}, {"packed": False}, {"legacy_shape": True}, {"packed_dims": False, "diff": True}, {"double": True},
     {"double": True, "packed": False}],
    ids=["packed", "unpacked", "legacy-shape", "unpacked-dims+diff", "double", "double-unpacked"],
)  # fmt: skip
def test_a_written_caffemodel_is_read_back_exactly(tmp_path: Path, v1: bool, options: dict) -> None:
    layers = small_net()
    path = cw.write(tmp_path / "small.caffemodel", layers, v1=v1, **options)
    got = read_caffemodel(path)
    assert list(got) == ["conv1/7x7_s2", "loss3/classifier"]  # layers without blobs are left out
    for name, blobs in got.items():
        want = layers[name][1]
        assert len(blobs) == len(want)
        for b, w in zip(blobs, want):
            shape = (1,) * (4 - w.ndim) + w.shape if options.get("legacy_shape") else w.shape
            assert b.shape == shape
            assert b.dtype == (np.float64 if options.get("double") else np.float32)
            assert np.array_equal(b.reshape(w.shape), w.astype(b.dtype))


def test_layer_names_and_types_in_both_formats() -> None:
    new = parse_net(cw.net(small_net()))
    old = parse_net(cw.net(small_net(), v1=True))
    assert [(x.name, x.type) for x in new] == [
        ("conv1/7x7_s2", "Convolution"), ("conv1/relu_7x7", "ReLU"), ("pool1/norm1", "LRN"),
        ("loss3/classifier", "InnerProduct"),
    ]  # fmt: skip
    assert [(x.name, x.type) for x in old] == [(x.name, x.type) for x in new]


def test_millions_of_unpacked_floats_read_quickly() -> None:
    values = RNG.standard_normal(2_000_000).astype(np.float32)
    data = cw.net({"fc": ("InnerProduct", [values])}, packed=False)
    (layer,) = parse_net(data)
    assert np.array_equal(layer.blobs[0], values)


@pytest.mark.parametrize("cut", [0.999, 0.5, 0.02])
def test_a_truncated_file_is_a_clear_error(googlenet_file, tmp_path: Path, cut: float) -> None:
    path, _ = googlenet_file
    data = path.read_bytes()
    short = tmp_path / "short.caffemodel"
    short.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(DataError) as e:
        read_caffemodel(short)
    message = str(e.value)
    assert str(short) in message and "truncated" in message and "offset" in message


def test_a_png_is_not_a_caffe_model() -> None:
    with pytest.raises(DataError) as e:
        read_caffemodel(photo_path("chelsea.png"))
    assert "not a Caffe model" in str(e.value) and "PNG" in str(e.value) and ".caffemodel" in str(e.value)


def test_a_torch_checkpoint_is_not_a_caffe_model(tmp_path: Path) -> None:
    pth = tmp_path / "googlenet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3)}, pth)
    with pytest.raises(DataError, match="not a Caffe model.*PyTorch"):
        read_caffemodel(pth)


@pytest.mark.parametrize("content", [b"\x00\x01\x02garbage", b"\xff" * 64, b"", b"hello world, not protobuf"])
def test_other_bytes_are_not_a_caffe_model(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.caffemodel"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_caffemodel(path)
    assert str(path) in str(e.value) and "expected a Caffe .caffemodel" in str(e.value)


def test_a_pre_2014_v0_model_is_refused_with_the_upgrade_tool_named() -> None:
    v0 = cw.length_delimited(2, cw.length_delimited(1, cw.string(1, "conv1")))
    with pytest.raises(DataError, match="V0 format.*upgrade_net_proto_binary"):
        parse_net(cw.string(1, "old") + v0, "old.caffemodel")


def test_a_blob_whose_shape_and_values_disagree_is_damaged() -> None:
    blob = cw.length_delimited(7, cw.length_delimited(1, cw.varint(3) + cw.varint(3)))
    blob += cw.length_delimited(5, np.zeros(8, "<f4").tobytes())
    data = cw.string(1, "net") + cw.length_delimited(100, cw.string(1, "conv") + cw.length_delimited(7, blob))
    with pytest.raises(DataError, match=r"shape \(3, 3\).*holds 8 values"):
        parse_net(data, "bad.caffemodel")


def test_missing_file() -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_caffemodel(Path("/nonexistent/bvlc_googlenet.caffemodel"))


# ----- BVLC GoogLeNet from a caffemodel


def test_a_googlenet_caffemodel_converts_and_loads(googlenet_file, monkeypatch) -> None:
    path, layers = googlenet_file
    model = load_model(str(path), model="bvlc")
    assert model.name == "bvlc" and model.weights.kind == "file" and model.weights.source == str(path)
    w, b = layers["conv1/7x7_s2"][1]
    assert torch.equal(model.net.conv1.conv.weight, torch.from_numpy(w))
    assert torch.equal(model.net.conv1.conv.bias, torch.from_numpy(b))  # stored as (1, 1, 1, 64)
    w5 = layers["inception_4c/5x5"][1][0]
    assert torch.equal(model.net.inception4c.branch3[1].conv.weight, torch.from_numpy(w5))
    assert not any(p.requires_grad for p in model.net.parameters())

    # the conversion is cached by content: the second load does not read the caffemodel
    cached = list(cache_dir().glob("bvlc_googlenet-*.pth"))
    assert len(cached) == 1
    monkeypatch.setattr("live.model.caffe.read_caffemodel", _must_not_be_called)
    again = load_model(str(path), model="bvlc")
    assert torch.equal(again.net.conv1.conv.weight, model.net.conv1.conv.weight)
    # and the converted file itself is accepted as --weights
    assert torch.equal(load_model(str(cached[0]), model="bvlc").net.conv3.conv.bias, model.net.conv3.conv.bias)


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("the caffemodel was read again instead of the cached conversion")


def test_a_caffemodel_of_another_network_lists_the_missing_layers(tmp_path: Path) -> None:
    alexnet = {"conv1": ("Convolution", [np.zeros((96, 3, 11, 11), np.float32), np.zeros(96, np.float32)]),
               "fc8": ("InnerProduct", [np.zeros((10, 4), np.float32), np.zeros(10, np.float32)])}  # fmt: skip
    path = cw.write(tmp_path / "bvlc_alexnet.caffemodel", alexnet)
    with pytest.raises(DataError) as e:
        load_model(str(path), model="bvlc")
    message = str(e.value)
    assert str(path) in message and "not the BVLC GoogLeNet" in message
    assert "conv1/7x7_s2, conv2/3x3_reduce, conv2/3x3" in message


def test_a_blob_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    layers = googlenet_blobs(extra=False)
    layers["conv2/3x3"] = ("Convolution", [np.zeros((192, 64, 5, 5), np.float32), np.zeros(192, np.float32)])
    path = cw.write(tmp_path / "odd.caffemodel", layers)
    with pytest.raises(DataError, match=r"conv2/3x3 weight has shape \(192, 64, 5, 5\), expected \(192, 64, 3, 3\)"):
        load_model(str(path), model="bvlc")


# ----- the ImageNet weights: cache, download, offline


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1; yields (directory, base URL)."""
    root = tmp_path / "served"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_first_use_downloads_checks_sha1_converts_and_caches(googlenet_file, served, monkeypatch) -> None:
    path, layers = googlenet_file
    root, base = served
    (root / BVLC_CAFFEMODEL_NAME).write_bytes(path.read_bytes())
    monkeypatch.setenv("DEEPDREAM_LIVE_BVLC_URL", f"{base}/{BVLC_CAFFEMODEL_NAME}")
    monkeypatch.setattr(weights_module, "BVLC_CAFFEMODEL_SHA1", _sha1(path))

    model = load_model(model="bvlc", progress=False)
    assert model.weights.kind == "imagenet"
    assert (cache_dir() / BVLC_CAFFEMODEL_NAME).read_bytes() == path.read_bytes()
    assert (cache_dir() / BVLC_CONVERTED_NAME).is_file()
    assert torch.equal(model.net.conv1.conv.weight, torch.from_numpy(layers["conv1/7x7_s2"][1][0]))

    (root / BVLC_CAFFEMODEL_NAME).unlink()  # second use: the conversion, no network, no parsing
    monkeypatch.setattr("live.model.caffe.read_caffemodel", _must_not_be_called)
    again = load_model("imagenet", model="bvlc")
    assert again.weights.source == str(cache_dir() / BVLC_CONVERTED_NAME)


def test_a_download_with_the_wrong_sha1_keeps_nothing(googlenet_file, served, monkeypatch) -> None:
    path, _ = googlenet_file
    root, base = served
    (root / "x.caffemodel").write_bytes(path.read_bytes())
    monkeypatch.setenv("DEEPDREAM_LIVE_BVLC_URL", f"{base}/x.caffemodel")
    with pytest.raises(DataError, match="sha1"):
        load_model(model="bvlc", progress=False)
    assert not (cache_dir() / BVLC_CAFFEMODEL_NAME).exists()


def test_offline_says_where_to_put_the_caffemodel() -> None:
    with pytest.raises(UnavailableError) as e:
        load_model("imagenet", model="bvlc")
    message = str(e.value)
    assert "http://127.0.0.1:9/no-weights-here.caffemodel" in message
    assert str(cache_dir() / BVLC_CAFFEMODEL_NAME) in message and "--weights FILE" in message


def test_the_recorded_url_and_checksum_are_bvlcs() -> None:
    assert weights_module.BVLC_CAFFEMODEL_URL == "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"
    assert weights_module.BVLC_CAFFEMODEL_SHA1 == "405fc5acd08a3bb12de8ee5e23a96bec22f08204"


def test_a_hand_placed_caffemodel_is_checked_and_converted(googlenet_file, monkeypatch) -> None:
    path, _ = googlenet_file
    cache_dir().mkdir(parents=True)
    (cache_dir() / BVLC_CAFFEMODEL_NAME).write_bytes(path.read_bytes())
    with pytest.raises(DataError, match="not BVLC's bvlc_googlenet.caffemodel: its sha1"):
        load_model(model="bvlc")  # not the official file: said so, with what to do
    monkeypatch.setattr(weights_module, "BVLC_CAFFEMODEL_SHA1", _sha1(path))
    assert load_model(model="bvlc").weights.kind == "imagenet"


def test_auto_falls_back_to_random_bvlc_weights_loudly(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        model = load_model("auto", model="bvlc")
    assert model.name == "bvlc" and model.weights.is_random
    assert "RANDOM weights" in caplog.text


def test_a_damaged_cached_conversion_says_to_delete_it() -> None:
    cache_dir().mkdir(parents=True)
    (cache_dir() / BVLC_CONVERTED_NAME).write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(DataError, match="delete .*bvlc_googlenet.pth"):
        load_model(model="bvlc")


def test_a_torchvision_checkpoint_is_not_a_bvlc_one(checkpoint: Path) -> None:
    with pytest.raises(DataError, match="not a converted BVLC GoogLeNet.*bvlc_googlenet.caffemodel"):
        load_model(str(checkpoint), model="bvlc")
