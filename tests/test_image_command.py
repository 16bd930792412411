"""The `image` command end to end: a real photograph in, a dreamed picture of the same size out;
every bad input gives one clear message, its exit code and no file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from live.cli import main
from tests.conftest import photo_path

FAST = ["--steps", "2", "--octaves", "2", "--max-side", "256", "--no-progress"]


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_dreams_a_photo_at_its_own_size(checkpoint: Path, tmp_path: Path, capsys) -> None:
    src = photo_path("chelsea.png")
    out = tmp_path / "cat.png"
    code, err = _run(capsys, "image", str(src), str(out), "--weights", str(checkpoint), "--layer", "inception4a", *FAST)
    assert code == 0, err
    before = np.asarray(Image.open(src).convert("RGB")).astype(int)
    after_im = Image.open(out)
    after = np.asarray(after_im.convert("RGB")).astype(int)
    assert after.shape == before.shape
    assert np.abs(after - before).mean() > 2.0  # visibly dreamed
    meta = json.loads(after_im.text["deepdream-live"])
    assert meta["objective"] == "inception4a" and meta["steps"] == 2
    assert "file weights" in meta["weights"]
    assert list(tmp_path.iterdir()) == [out]


def test_jpeg_in_jpeg_out_with_random_weights_announced(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rocket.jpg"
    code, err = _run(capsys, "image", str(photo_path("rocket.jpg")), str(out), "--weights", "random", *FAST)
    assert code == 0, err
    im = Image.open(out)
    assert im.format == "JPEG" and im.size == Image.open(photo_path("rocket.jpg")).size
    assert b"RANDOM weights" in im.info["comment"]
    assert "RANDOM weights" in err


def test_alpha_channel_survives(tmp_path: Path, capsys) -> None:
    src, out = tmp_path / "rgba.png", tmp_path / "out.png"
    rgba = np.zeros((70, 90, 4), np.uint8)
    rgba[..., :3] = np.asarray(Image.open(photo_path("coffee.png")).convert("RGB").resize((90, 70)))
    rgba[..., 3] = np.linspace(0, 255, 90, dtype=np.uint8)[None, :]
    Image.fromarray(rgba, "RGBA").save(src)
    assert _run(capsys, "image", str(src), str(out), "--weights", "random", *FAST)[0] == 0
    got = np.asarray(Image.open(out))
    assert got.shape == (70, 90, 4) and np.array_equal(got[..., 3], rgba[..., 3])


def test_the_console_script_runs(tmp_path: Path) -> None:
    out = tmp_path / "scene.png"
    exe = Path(sys.executable).with_name("deepdream-live")
    result = subprocess.run([str(exe), "image", "test-scene", str(out), "--weights", "random", *FAST],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (640, 360)


def test_layers_lists_catalog_and_aliases(capsys) -> None:
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "inception4c" in out and "512" in out and "inception_4c/output" in out and "mixed4c" in out


def _unreadable(tmp_path: Path) -> Path:
    p = tmp_path / "broken.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return p


def _corrupt_weights(tmp_path: Path) -> Path:
    p = tmp_path / "weights.pth"
    p.write_bytes(os.urandom(4096))
    return p


@pytest.mark.parametrize(
    ("case", "code", "fragment"),
    [
        ("missing image", 66, "does not exist"),
        ("unreadable image", 66, "expected a PNG or JPEG"),
        ("unknown layer", 64, "valid layers: conv1, conv2"),
        ("corrupt weights", 65, "corrupt or truncated"),
        ("missing output directory", 73, "does not exist"),
        ("output under a file", 73, "cannot write"),
        ("unsupported output type", 73, "must end in .png, .jpg or .jpeg"),
        ("bad setting", 64, "steps must be between"),
    ],
)
def test_bad_input_gives_one_clear_message_and_no_file(tmp_path: Path, capsys, case: str, code: int, fragment: str) -> None:
    src, out = str(photo_path("chelsea.png")), tmp_path / "out" / "dream.png"
    out.parent.mkdir()
    args = {"weights": "random", "layer": "inception4c", "steps": "2"}
    if case == "missing image":
        src = str(tmp_path / "no-such.png")
    elif case == "unreadable image":
        src = str(_unreadable(tmp_path))
    elif case == "unknown layer":
        args["layer"] = "inception6a"
    elif case == "corrupt weights":
        args["weights"] = str(_corrupt_weights(tmp_path))
    elif case == "missing output directory":
        out = tmp_path / "nowhere" / "dream.png"
    elif case == "output under a file":
        out = Path(src) / "dream.png"
    elif case == "unsupported output type":
        out = out.with_suffix(".gif")
    elif case == "bad setting":
        args["steps"] = "-3"
    got, err = _run(capsys, "image", src, str(out), "--weights", args["weights"], "--layer", args["layer"],
                    "--steps", args["steps"], "--octaves", "1", "--max-side", "128", "--no-progress")
    assert got == code, err
    errors = [line for line in err.splitlines() if line.startswith("deepdream-live: error:")]
    assert len(errors) == 1 and fragment in err, err
    assert "Traceback" not in err
    assert list((tmp_path / "out").iterdir()) == []  # nothing written, not even a temporary


def test_unwritable_output_is_found_before_any_work(tmp_path: Path, capsys, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr("live.still.load_model", lambda *a, **k: calls.append(a))
    code, err = _run(capsys, "image", str(photo_path()), str(tmp_path / "missing" / "x.png"), "--weights", "random")
    assert code == 73 and calls == []
