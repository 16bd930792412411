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


def _peak_mb(args: list[str]) -> float:
    """Peak resident memory of a fresh process running ``deepdream-live`` with ``args``."""
    code = ("import resource, sys\nfrom live.cli import main\ncode = main(sys.argv[1:])\n"
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.rsplit("PEAK ", 1)[1].split()[0]) / 1024


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_a_12000x8000_picture_is_dreamed_in_bounded_memory(tmp_path: Path) -> None:
    """96 Mpx peaked at 5.1 GB when the full-size picture went through float tensors; now it is held
    as 8-bit and composed a strip at a time: under 16 bytes a pixel above a small picture's peak."""
    big = tmp_path / "big.png"
    Image.new("RGB", (12000, 8000), (120, 90, 60)).save(big, compress_level=1)
    common = ["--weights", "random", "--steps", "1", "--octaves", "1", "--max-side", "128", "--no-progress"]
    small = _peak_mb(["image", "test-scene", str(tmp_path / "small.jpg"), *common])
    large = _peak_mb(["image", str(big), str(tmp_path / "big.jpg"), *common])
    print(f"peak RSS: {small:.0f} MB for 640x360, {large:.0f} MB for 12000x8000")
    assert large - small < 96 * 16  # MB: 16 bytes a pixel; float tensors needed over 50
    with Image.open(tmp_path / "big.jpg") as out:
        assert out.size == (12000, 8000)


def test_composing_the_dream_onto_the_full_picture_matches_bilinear_upsampling() -> None:
    import torch
    import torch.nn.functional as F

    from live.still import compose

    rng = np.random.default_rng(0)
    for height, width, h, w in [(300, 451, 100, 150), (1000, 700, 333, 233), (64, 64, 64, 64), (37, 1000, 32, 900)]:
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        residual = rng.normal(0, 20, (h, w, 3)).astype(np.float32)
        up = F.interpolate(torch.from_numpy(residual).permute(2, 0, 1)[None], size=(height, width), mode="bilinear",
                           align_corners=False)[0].permute(1, 2, 0).numpy()
        expected = (np.clip(rgb + up, 0, 255) + 0.5).astype(np.uint8)
        got = compose(rgb, residual, rows=64)
        diff = np.abs(got.astype(int) - expected.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # rounding only
