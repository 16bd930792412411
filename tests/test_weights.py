"""Weights: the cache, downloads over real HTTP on loopback, and every way a file can be wrong."""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from live.errors import DataError, InputError, UnavailableError, UsageError
from live.model import load_model
from live.model.weights import (
    CHECKPOINT_NAME,
    cache_dir,
    download_checkpoint,
    load_reference,
    read_bvlc_checkpoint,
    read_checkpoint,
)


@pytest.fixture()
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1; yields (directory, base URL)."""
    root = tmp_path / "served"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_first_use_downloads_verifies_and_caches(checkpoint: Path, http_dir, monkeypatch) -> None:
    root, base = http_dir
    (root / CHECKPOINT_NAME).write_bytes(checkpoint.read_bytes())
    monkeypatch.setenv("DEEPDREAM_LIVE_WEIGHTS_URL", f"{base}/{CHECKPOINT_NAME}")
    monkeypatch.setattr("live.model.weights.CHECKPOINT_SHA256_PREFIX", _sha256(checkpoint)[:8])

    model = load_model("imagenet", progress=False)
    cached = cache_dir() / CHECKPOINT_NAME
    assert cached.read_bytes() == checkpoint.read_bytes()
    assert model.weights.kind == "imagenet" and model.weights.source == str(cached)
    assert [p.name for p in cached.parent.iterdir()] == [CHECKPOINT_NAME]  # no temporary left behind

    # second use: no network needed
    (root / CHECKPOINT_NAME).unlink()
    assert load_model("imagenet").weights.source == str(cached)


def test_download_with_wrong_checksum_keeps_nothing(checkpoint: Path, http_dir, tmp_path: Path) -> None:
    root, base = http_dir
    (root / "w.pth").write_bytes(checkpoint.read_bytes())
    dest = tmp_path / "cache" / CHECKPOINT_NAME
    with pytest.raises(DataError, match="sha256"):
        download_checkpoint(f"{base}/w.pth", dest, sha256_prefix="00000000", progress=False)
    assert list(dest.parent.iterdir()) == []


def test_offline_without_cache_says_where_to_put_the_file(monkeypatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/{CHECKPOINT_NAME}"
    monkeypatch.setenv("DEEPDREAM_LIVE_WEIGHTS_URL", url)
    with pytest.raises(UnavailableError) as e:
        load_model("imagenet")
    message = str(e.value)
    assert url in message
    assert str(cache_dir() / CHECKPOINT_NAME) in message
    assert "--weights FILE" in message
    assert not (cache_dir() / CHECKPOINT_NAME).exists()


def test_auto_falls_back_to_random_weights_loudly(monkeypatch, caplog) -> None:
    monkeypatch.setenv("DEEPDREAM_LIVE_WEIGHTS_URL", f"http://127.0.0.1:{_closed_port()}/x.pth")
    with caplog.at_level(logging.WARNING):
        model = load_model("auto")
    assert model.weights.is_random
    assert "RANDOM weights" in caplog.text and "not a trained network" in caplog.text


def test_torch_hub_copy_is_used(checkpoint: Path, monkeypatch, tmp_path: Path) -> None:
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    hub.mkdir(parents=True)
    (hub / CHECKPOINT_NAME).write_bytes(checkpoint.read_bytes())
    assert load_model("imagenet").weights.source == str(hub / CHECKPOINT_NAME)


def test_random_weights_are_seeded_and_announced(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        a = load_model("random:3")
    b, c = load_model("random:3"), load_model("random:4")
    assert "RANDOM weights (seed 3)" in caplog.text
    assert a.weights.is_random and "not a trained network" in a.weights.describe()
    wa, wb, wc = (m.net.conv1.conv.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_bad_random_seed() -> None:
    with pytest.raises(UsageError, match="random:SEED"):
        load_model("random:abc")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")


def test_corrupt_file_names_the_file_and_what_was_expected(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"\x00not a checkpoint at all" * 100)
    with pytest.raises(DataError) as e:
        read_checkpoint(bad)
    assert str(bad) in str(e.value) and "corrupt or truncated" in str(e.value) and "googlenet" in str(e.value)
    assert "weights_only" not in str(e.value)


def test_truncated_file(checkpoint: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.pth"
    data = checkpoint.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_checkpoint(cut)


def test_wrong_architecture(tmp_path: Path) -> None:
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 512)}, other)
    with pytest.raises(DataError, match="not a torchvision GoogLeNet") as e:
        read_checkpoint(other)
    assert str(other) in str(e.value)


def test_wrong_shapes(reference, tmp_path: Path) -> None:
    state = dict(reference.state_dict())
    state["inception4c.branch1.conv.weight"] = torch.zeros(10, 512, 1, 1)
    path = tmp_path / "shapes.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"inception4c\.branch1\.conv\.weight \(10, 512, 1, 1\) \(expected \(128, 512, 1, 1\)\)"):
        read_checkpoint(path)


def test_non_finite_values(reference, tmp_path: Path) -> None:
    state = dict(reference.state_dict())
    state["conv3.bn.running_var"] = torch.full_like(state["conv3.bn.running_var"], float("nan"))
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match="NaN"):
        read_checkpoint(path)


def test_wrapped_and_dataparallel_checkpoints_load(reference, tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}, "epoch": 3}, path)
    loaded = read_checkpoint(path)
    assert torch.equal(loaded.conv1.conv.weight, reference.conv1.conv.weight)


def test_checkpoint_without_classifier_heads_loads(reference, tmp_path: Path) -> None:
    path = tmp_path / "trunk.pth"
    torch.save({k: v for k, v in reference.state_dict().items() if not k.startswith(("aux", "fc."))}, path)
    assert torch.equal(read_checkpoint(path).inception5b.branch1.conv.weight, reference.inception5b.branch1.conv.weight)


def test_damaged_cache_file_says_to_delete_it(monkeypatch) -> None:
    cached = cache_dir() / CHECKPOINT_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")
    with pytest.raises(DataError, match="delete"):
        load_reference("imagenet")


def test_download_that_breaks_off_keeps_nothing(tmp_path: Path) -> None:
    """A server that promises 10 MB and hangs up after a few bytes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1000)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    dest = tmp_path / "cache" / CHECKPOINT_NAME
    try:
        with pytest.raises(UnavailableError, match="broke off"):
            download_checkpoint(f"http://127.0.0.1:{server.getsockname()[1]}/w.pth", dest, progress=False)
    finally:
        server.close()
    assert list(dest.parent.iterdir()) == []


def test_written_files_get_ordinary_permissions(checkpoint: Path, http_dir, tmp_path: Path) -> None:
    root, base = http_dir
    (root / "w.pth").write_bytes(checkpoint.read_bytes())
    dest = download_checkpoint(f"{base}/w.pth", tmp_path / CHECKPOINT_NAME, sha256_prefix=_sha256(checkpoint)[:8],
                               progress=False)
    mask = os.umask(0)
    os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~mask


class _RunsCode:
    """Pickles as a call of ``Path.touch``: loading it unsafely would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize(
    ("kind", "seems"),
    [
        ("random bytes", "in no format PyTorch saves"),
        ("html page", "HTML or XML page"),
        ("git lfs pointer", "Git LFS pointer"),
        ("empty", "it is empty"),
        ("code in the pickle", "holds Python objects besides tensors (such as "),
    ],
)
def test_weights_errors_say_what_the_file_seems_to_be_and_never_suggest_unsafe_loading(
    tmp_path: Path, kind: str, seems: str
) -> None:
    bad = tmp_path / "weights.pth"
    marker = tmp_path / "code-ran"
    if kind == "random bytes":
        bad.write_bytes(os.urandom(4096))
    elif kind == "html page":
        bad.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    elif kind == "git lfs pointer":
        bad.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:1378be20\nsize 52147035\n")
    elif kind == "empty":
        bad.write_bytes(b"")
    else:
        torch.save({"conv1.conv.weight": torch.zeros(1), "trap": _RunsCode(marker)}, bad)
    for read in (read_checkpoint, read_bvlc_checkpoint):
        with pytest.raises(DataError) as e:
            read(bad)
        text = str(e.value)
        assert str(bad) in text and seems in text, text
        assert "weights_only" not in text and "will likely succeed" not in text
        assert "--weights imagenet" in text or "--model bvlc --weights imagenet" in text  # how to get a proper one
    assert not marker.exists()  # nothing in the file ran
