"""Every command, every kind of bad input: one line on stderr that says what was wrong and what
is allowed, the sysexits code for it, no traceback, and no file left behind.

Commands run in-process through ``live.cli.main`` (what the console script calls), each in an
empty working directory that must still be empty, apart from the inputs made for it, afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from live.cli import main, one_line
from tests.conftest import photo_path, png_header

USAGE, DATA, NO_INPUT, UNAVAILABLE, SOFTWARE, CANT_CREATE = 64, 65, 66, 69, 70, 73
QUIET_RUN = ["--no-osc", "--no-midi", "--no-window", "--weights", "random"]  # nothing bound, nothing shown


def _inputs(d: Path) -> dict[str, str]:
    """Bad (and good) inputs, made in ``d``; their names for the table below."""
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (d / "bomb.png").write_bytes(png_header(20000, 20000))  # 48 bytes that decode to 400 Mpx
    (d / "huge.png").write_bytes(png_header(15000, 10000))  # 150 Mpx: above the picture limit
    (d / "random.pth").write_bytes(os.urandom(4096))
    (d / "bad-site.toml").write_text("[dream]\nsteps = 99\nwidht = 640\n")
    (d / "big-site.toml").write_text("[dream]\nwidth = 3840\nheight = 2160\n")
    (d / "a-file").write_text("not a directory")
    (d / "out").mkdir()
    return {"photo": str(photo_path("chelsea.png"))}


# (command line, exit code, fragment of the message). Paths are relative to the test's directory.
CASES: list[tuple[str, list[str], int, str]] = [
    # image
    ("missing image", ["image", "nope.png", "out/x.png"], NO_INPUT, "does not exist"),
    ("unreadable image", ["image", "broken.jpg", "out/x.png"], NO_INPUT, "expected a PNG or JPEG"),
    ("decompression bomb", ["image", "bomb.png", "out/x.png"], DATA, "too large to dream: 400 Mpx"),
    ("picture over the limit", ["image", "huge.png", "out/x.png"], DATA, "15000x10000 (150 Mpx), too large"),
    ("unknown layer", ["image", "{photo}", "out/x.png", "--layer", "inception6a"], USAGE, "valid layers: conv1"),
    ("backwards channel range", ["image", "{photo}", "out/x.png", "--layer", "inception4c:9..1"], USAGE,
     "runs backwards"),
    ("infinite weight", ["image", "{photo}", "out/x.png", "--layer", "1e999*inception4c"], USAGE,
     "not a finite number"),
    ("absurd weight", ["image", "{photo}", "out/x.png", "--layer", "1e6*inception4c"], USAGE, "at most 1000"),
    ("random-bytes weights", ["image", "{photo}", "out/x.png", "--weights", "random.pth"], DATA,
     "corrupt or truncated"),
    ("missing output directory", ["image", "{photo}", "nowhere/x.png"], CANT_CREATE, "does not exist"),
    ("output under a file", ["image", "{photo}", "a-file/x.png"], CANT_CREATE, "cannot write"),
    ("unsupported output type", ["image", "{photo}", "out/x.gif"], CANT_CREATE, "must end in .png"),
    ("negative steps", ["image", "{photo}", "out/x.png", "--steps", "-3"], USAGE, "steps must be between"),
    ("negative max side", ["image", "{photo}", "out/x.png", "--max-side", "-5"], USAGE,
     "allowed: 0 (no limit) or 32 or more"),
    ("not a number", ["image", "{photo}", "out/x.png", "--steps", "many"], USAGE, "invalid int value: 'many'"),
    ("NaN step size", ["image", "{photo}", "out/x.png", "--step-size", "nan"], USAGE, "step_size must be between"),
    # run: refused before anything opens
    ("steps below", ["run", "--steps", "-1"], USAGE, "--steps -1 is out of range; allowed: an integer 0..50"),
    ("steps above", ["run", "--steps", "51"], USAGE, "--steps 51 is out of range"),
    ("steps absurd", ["run", "--steps", "100000"], USAGE, "--steps 100000 is out of range"),
    ("width too small", ["run", "--width", "10"], USAGE, "--width 10 is out of range; allowed: an integer 64..3840"),
    ("feedback above 1", ["run", "--feedback", "2"], USAGE, "--feedback 2 is out of range; allowed: a number 0..1"),
    ("size absurd", ["run", "--size", "100000x100000"], USAGE, "width 100000 is out of range"),
    ("size above this machine's", ["run", "--size", "3840x2160", "--device", "cpu"], USAGE,
     "is above the largest this machine dreams"),
    ("size not a size", ["run", "--size", "12x"], USAGE, "expected WIDTHxHEIGHT"),
    ("port out of range", ["run", "--osc-port", "70000"], USAGE, "70000 is out of range; allowed: an integer 0..65535"),
    ("port not a number", ["run", "--osc-port", "ninety"], USAGE, "'ninety' is not an integer"),
    ("backwards channel range (run)", ["run", "--layer", "inception4c:9..1"], USAGE, "runs backwards"),
    ("infinite weight (run)", ["run", "--layer", "1e999*inception4c"], USAGE, "not a finite number"),
    ("status every 0 s", ["run", "--status-every", "0"], USAGE, "allowed: a number above 0"),
    ("no frames", ["run", "--max-frames", "0"], USAGE, "allowed: an integer of at least 1"),
    ("missing config", ["run", "--config", "nope.toml"], NO_INPUT, "does not exist"),
    ("bad config", ["run", "--config", "bad-site.toml"], USAGE, "dream.steps = 99: expected an integer 0..50"),
    ("config above this machine's", ["run", "--config", "big-site.toml", "--device", "cpu"], USAGE,
     "[dream] dream size 3840x2176"),
    ("missing calibration", ["run", "--calibration", "nope.toml"], NO_INPUT,
     "write it with `deepdream-live calibrate`"),
    ("missing preset", ["run", "--preset", "calm", "--presets", "out"], NO_INPUT, "no preset 'calm'"),
    # run: refused once the network is loaded
    ("missing source", ["run", "--source", "nope.mp4", *QUIET_RUN], NO_INPUT, "no such file"),
    ("no CUDA here", ["run", "--device", "cuda", *QUIET_RUN], UNAVAILABLE, "sees no CUDA device"),
    ("unknown backend", ["run", "--backend", "warp", *QUIET_RUN], USAGE, "unknown backend 'warp'"),
    ("unwritable recording", ["run", "--record", "nowhere/show.mp4", "--source", "test-scene", *QUIET_RUN],
     CANT_CREATE, "does not exist"),
    # bench
    ("bench size", ["bench", "--sizes", "12x"], USAGE, "expected WIDTHxHEIGHT"),
    ("bench size absurd", ["bench", "--sizes", "99999x64"], USAGE, "width 99999 is out of range"),
    ("bench layer", ["bench", "--layer", "inception9z"], USAGE, "valid layers"),
    ("bench steps", ["bench", "--steps", "-1"], USAGE, "-1 is out of range; allowed: an integer 0..50"),
    ("bench frames", ["bench", "--frames", "0"], USAGE, "allowed: an integer of at least 1"),
    # check
    ("check missing config", ["check", "--config", "nope.toml"], NO_INPUT, "does not exist"),
    ("check bad config", ["check", "--config", "bad-site.toml"], USAGE, "did you mean dream.width?"),
    # calibrate
    ("calibrate sizes", ["calibrate", "--sizes", "64"], USAGE, "expected WIDTHxHEIGHT"),
    ("calibrate size absurd", ["calibrate", "--sizes", "100000x64"], USAGE, "width 100000 is out of range"),
    ("calibrate steps", ["calibrate", "--steps", "99"], USAGE, "each count must be 0..50"),
    ("calibrate target", ["calibrate", "--target-fps", "0"], USAGE, "target fps must be above 0"),
    ("calibrate headroom", ["calibrate", "--headroom", "2"], USAGE, "headroom in (0, 1]"),
    ("calibrate frames", ["calibrate", "--frames", "-1"], USAGE, "1 or more frames"),
    ("calibrate layer", ["calibrate", "--layers", "inception9z"], USAGE, "valid layers"),
    ("calibrate site name", ["calibrate", "--site", "../up"], USAGE, "site name '../up'"),
    ("calibrate output is a directory", ["calibrate", "--output", "out"], CANT_CREATE, "is a directory"),
    # build-engines (TensorRT is not needed to refuse these)
    ("engine sizes", ["build-engines", "--sizes", "big"], USAGE, "expected WIDTHxHEIGHT"),
    ("engine size absurd", ["build-engines", "--sizes", "99999x64"], USAGE, "width 99999 is out of range"),
    ("engine layers", ["build-engines", "--sizes", "640x352", "--layers", "inception9z"], USAGE, "valid layers"),
    ("engine precision", ["build-engines", "--sizes", "640x352", "--precision", "fp8"], USAGE, "invalid choice"),
    # (a bad --weights file for build-engines surfaces only where TensorRT is installed: without it there
    # is nothing to build and the command says so before loading anything)
    # render in segments: refused before anything is read or written
    ("render segments word", ["render", "in.mkv", "out/x.mkv", "--segments", "many"], USAGE,
     "'many' is not auto or a number of segments"),
    ("render no segments", ["render", "in.mkv", "out/x.mkv", "--segments", "0"], USAGE,
     "allowed: auto, or 1..100000 segments"),
    ("render segment seconds", ["render", "in.mkv", "out/x.mkv", "--segment-seconds", "0"], USAGE,
     "allowed: a number above 0"),
    ("render workers 0", ["render", "in.mkv", "out/x.mkv", "--workers", "0"], USAGE, "allowed: an integer 1..256"),
    ("render by its sound, in segments", ["render", "in.mkv", "out/x.mkv", "--audio-map", "bass-zoom", "--workers", "2"],
     USAGE, "runs in one process for now: drop --segments, --workers and --ray"),
    ("render workers and ray", ["render", "in.mkv", "out/x.mkv", "--workers", "2", "--ray"], USAGE,
     "give one of them"),
    ("render missing input, in segments", ["render", "nope.mkv", "out/x.mkv", "--workers", "2"], NO_INPUT,
     "no such file"),
    ("render segments, missing output directory", ["render", "in.mkv", "nowhere/x.mkv", "--segments", "2"],
     CANT_CREATE, "does not exist"),
    ("resume what never started", ["render", "{photo}", "out/x.mkv", "--segments", "auto", "--resume"], USAGE,
     "nothing to resume"),
    # layers, and the command line itself
    ("layers model", ["layers", "--model", "alexnet"], USAGE, "invalid choice: 'alexnet'"),
    ("no command", [], USAGE, "the following arguments are required: COMMAND"),
    ("unknown command", ["dream"], USAGE, "invalid choice: 'dream'"),
    ("unknown flag", ["run", "--warp-speed", "9"], USAGE, "unrecognized arguments: --warp-speed"),
    ("log level", ["--log-level", "loud", "layers"], USAGE, "invalid choice: 'loud'"),
]


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.mark.parametrize(("case", "argv", "code", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_its_exit_code_and_no_file(tmp_path: Path, monkeypatch, capsys, case: str,
                                                            argv: list[str], code: int, fragment: str) -> None:
    monkeypatch.chdir(tmp_path)
    names = _inputs(tmp_path)
    before = _tree(tmp_path)
    got = main([a.format(**names) for a in argv])
    err = capsys.readouterr().err
    assert got == code, err
    errors = [line for line in err.splitlines() if line.startswith("deepdream-live: error:")]
    assert len(errors) == 1, err  # one line, and the only error line
    assert fragment in errors[0], err
    assert "Traceback" not in err and "weights_only" not in err
    assert _tree(tmp_path) == before  # nothing written, not even a temporary or an empty directory


def test_several_lines_become_one() -> None:
    assert one_line("site.toml: 2 problem(s) in the site config:\n  a = 1: bad\n  b = 2: worse") == (
        "site.toml: 2 problem(s) in the site config: a = 1: bad; b = 2: worse")
    assert one_line("no weights.\n  Download them.\n  (or pass --weights FILE)") == (
        "no weights. Download them. (or pass --weights FILE)")
