"""`make gpu-check`'s script, rehearsed on the CPU (`--device cpu --quick`).

The full reduced run: every part runs at a tiny size, writes gpu-check.json and the Markdown
table, prints the table and a last verdict line, and exits 0. Then the ways it must *fail*,
each with a one-line reason naming the part: pytest missing (with an earlier run's passing
result file left in the folder), a conftest that fails to import, the result file gone after
pytest wrote it, a failing CUDA test and a skip for something that is not truly absent, `image`
exiting nonzero, and parts that do not fit the deadline. These pick the parts they need
(`--parts`), so each takes a few seconds. Without CUDA the real run says so in one line and
exits 69. The GPU run itself needs a GPU (make gpu-check).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from live.app import STAGES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
STALE = ('<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="7" failures="0" errors="0" '
         'skipped="0"/></testsuites>')


def check(out: Path, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
          timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), "--device", "cpu", "--quick", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False, env=env)


def verdict(done: subprocess.CompletedProcess) -> str:
    """The last line printed: the one-line verdict."""
    return done.stdout.strip().splitlines()[-1]


def test_quick_cpu_run_writes_the_json_and_the_table(tmp_path: Path) -> None:
    # a relative output folder, from a directory that is not the repository: the child pytest runs
    # in the repository, and must still write where the parent reads
    done = check(Path("rel") / "check", cwd=tmp_path)
    out = tmp_path / "rel" / "check"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert verdict(done).startswith("gpu-check: passed: every part asked for ran and passed")
    result = json.loads((out / "gpu-check.json").read_text())
    table = (out / "gpu-check.md").read_text()
    assert table in done.stdout  # printed as written
    assert result["passed"] and result["problems"] == [] and "**Result: PASSED**" in table
    assert {p: s["status"] for p, s in result["parts"].items()} == dict.fromkeys(
        ("tests", "image", "loop", "baselines", "cosines"), "passed")
    assert result["machine"]["torch"] == torch.__version__ and "tensorrt" in result["machine"]
    tests = result["tests"]
    assert tests["tests"] >= 1 and tests["failures"] == 0 and (out / "cuda-tests.xml").exists()
    assert all("NVIDIA GPU" in r for r in tests["skip_reasons"])  # skipped here for the one allowed reason
    assert result["image"]["exit_code"] == 0 and result["image"]["backend"].startswith("torch on cpu")
    rows = result["loop"]
    assert [(r["outputs"], r["layout"]) for r in rows] == [("off", "default"), ("recorder", "default"),
                                                           ("off", "other")]
    for row in rows:
        assert row["fps"] > 0 and row["latency_ms"] > 0 and row["stages_ms"]["dream"] > 0
        assert set(row["stages_ms"]) == set(STAGES)
        assert row["gpu_stages_ms"] == {} and "dream_gpu_share" not in row  # no CUDA events on the CPU
        assert row["graph_captures"] == row["graph_failures"] == 0
        assert row["vs_plain"] > 0 and row["vs_best_ordinary"] > 0
    assert rows[2]["backend"] == "torch on cpu (float32, NCHW)"  # the other layout, measured beside
    assert result["layout"] and "channels-last (the CPU default)" in result["layout"][0]
    assert [b["key"] for b in result["baselines"]] == ["plain", "best"] and all(b["fps"] > 0 for b in result["baselines"])
    cos = {(c["backend"], c["layer"]): c["cosine"] for c in result["cosines"]}
    assert set(cos) == {("torch", "inception3b"), ("onnx", "inception3b")}
    assert all(0.99 <= c <= 1.0 for c in cos.values())  # fp16 against float64, on both backends
    assert "| torch on cpu (float32) | 96x64 | 1 | recorder |" in table and "fp16 cosine to float64" in table
    # the host's stages of both paces, and the GPU's (CUDA events) of both: the dreamer's and the presenter's
    assert "host ms capture/flow/upload/dream/carry/compose/download/output" in table
    assert "GPU ms upload/dream/carry/compose/download" in table and "× plain (TF32 off)" in table
    # the two paces: the show at the camera's pace against the scene published in real time
    [paced] = result["paces"]
    assert paced["size"] == "96x64" and paced["camera_fps"] == 30 and paced["dream"] == "96x64"
    assert paced["presented"] > 0 and paced["presented_fps"] > 0 and 0 < paced["presented_share"] <= 1.05
    assert paced["dream_fps"] > 0 and paced["latency_p50_frames"] > 0
    assert set(paced["stages_ms"]["shown"]) == {"capture", "carry", "compose", "download", "output"}
    assert set(paced["stages_ms"]["dream"]) == {"flow", "upload", "dream"}
    assert paced["gpu_stages_ms"] == {} and paced["graph_failures"] == 0  # no CUDA events on the CPU
    assert "GPU ms shown carry/compose/download | GPU ms dream upload/dream" in table
    assert "| torch on cpu (float32) | 96x64 @ 30 fps | 96x64 | 1 |" in table


def _fake_tests(folder: Path, conftest: str = "", tests: str = "") -> Path:
    folder.mkdir()
    (folder / "conftest.py").write_text(conftest)
    (folder / "test_fake_cuda.py").write_text("import pytest\n\n" + (tests or (
        "@pytest.mark.cuda\ndef test_passes():\n    pass\n")))
    return folder / "test_fake_cuda.py"


def test_pytest_missing_fails_the_check_and_an_earlier_result_file_is_not_read(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "pytest"  # first on the path: `python -m pytest` cannot import it
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'pytest'\", name='pytest')\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "cuda-tests.xml").write_text(STALE)  # 7 passed, from some earlier run
    done = check(out, "--parts", "tests", env={**_env(), "PYTHONPATH": str(shadow.parent)})
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert verdict(done).startswith("gpu-check: FAILED: CUDA tests: pytest wrote no result file (exit 1): "
                                    "pytest is not installed")
    result = json.loads((out / "gpu-check.json").read_text())
    assert result["tests"] == {} and not (out / "cuda-tests.xml").exists()  # the stale counts were never read
    assert result["parts"]["image"]["status"] == "not asked for"
    assert "| CUDA tests | failed | pytest wrote no result file" in (out / "gpu-check.md").read_text()


@pytest.mark.parametrize(("case", "conftest", "tests", "reason"), [
    ("conftest import fails", "import deepdream_live_missing_dependency\n", "",
     "pytest wrote no result file (exit 4): ImportError while loading conftest"),
    ("result file deleted after pytest wrote it",
     "import os\nimport pytest\n\n\n@pytest.hookimpl(trylast=True)\ndef pytest_unconfigure(config):\n"
     "    os.remove(config.option.xmlpath)\n", "", "pytest wrote no result file (exit 0)"),
    ("a test fails and one skips for a missing package",
     "", "@pytest.mark.cuda\ndef test_breaks():\n    assert 1 == 2\n\n\n@pytest.mark.cuda\ndef test_needs_it():\n"
         "    pytest.skip('needs scikit-image')\n",
     "1 failed, 0 errors: test_breaks; 1 skipped for something other than a missing TensorRT: needs scikit-image"),
])
def test_cuda_tests_that_did_not_run_or_failed_fail_the_check(tmp_path: Path, case: str, conftest: str, tests: str,
                                                              reason: str) -> None:
    test_file = _fake_tests(tmp_path / "fake", conftest, tests)
    done = check(Path("out"), "--parts", "tests", "--tests", str(test_file), cwd=tmp_path)
    assert done.returncode == 1, (case, done.stdout[-2000:] + done.stderr[-2000:])
    line = verdict(done)
    assert line.startswith(f"gpu-check: FAILED: CUDA tests: {reason}"), (case, line)
    if "conftest" in case:
        assert "No module named 'deepdream_live_missing_dependency'" in line


def test_image_exiting_nonzero_fails_the_check(tmp_path: Path) -> None:
    done = check(tmp_path / "out", "--parts", "image", "--weights", str(tmp_path / "no-such-weights.pth"))
    assert done.returncode == 1
    assert verdict(done) == (f"gpu-check: FAILED: image: `image` exited 66: deepdream-live: error: weights file "
                             f"{tmp_path / 'no-such-weights.pth'} does not exist")


def test_parts_that_do_not_fit_the_deadline_fail_the_check(tmp_path: Path) -> None:
    done = check(tmp_path / "out", "--parts", "tests,image,loop", "--budget", "0")
    assert done.returncode == 1
    result = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert {p: s["status"] for p, s in result["parts"].items() if s["status"] != "not asked for"} == {
        "tests": "did not run", "image": "did not run", "loop": "did not run"}
    assert verdict(done) == ("gpu-check: FAILED: CUDA tests: time budget: 0 s left, about 30 s needed for the "
                             "CUDA tests (+2 more, see gpu-check.md)")


def test_a_two_paces_run_that_makes_no_dream_fails_the_loop(model) -> None:
    """The two paces' row cannot pass by mistake: a show that sends the camera out but makes no
    dream (every dream raises here) raises the part's failure, with the reason, instead of a row
    of figures (the loop part then fails, as for any row that raised)."""
    import importlib.util

    from live.backends.torch_backend import TorchBackend
    from live.benchmark import scene_frames

    spec = importlib.util.spec_from_file_location("gpu_check_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)

    class Broken(TorchBackend):
        def ascend(self, *args, **kwargs):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(gpu_check.PartFailed, match=r"^the two paces: no dream was made in 1 s$"):
        gpu_check.two_paces(model, Broken(model, torch.device("cpu")), scene_frames(96, 64, frames=4), 30.0,
                            (96, 64), 1, 1.0)


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the real check would run")
def test_without_cuda_it_says_so_in_one_line_and_exits_69(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 69
    assert len(done.stdout.strip().splitlines()) == 1 and "no CUDA device" in done.stdout
    assert not (tmp_path / "out").exists()
