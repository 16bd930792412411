"""`make gpu-check`'s script, in its reduced CPU run (`--device cpu --quick`): every part runs at
a tiny size, writes gpu-check.json and the Markdown table, and prints the table; without CUDA
the real run says so in one line and exits 69. The GPU run itself needs a GPU (make gpu-check)."""

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


def test_quick_cpu_run_writes_the_json_and_the_table(tmp_path: Path) -> None:
    out = tmp_path / "check"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--device", "cpu", "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((out / "gpu-check.json").read_text())
    table = (out / "gpu-check.md").read_text()
    assert table in done.stdout  # printed as written
    assert result["machine"]["torch"] == torch.__version__ and "tensorrt" in result["machine"]
    assert result["tests"]["tests"] >= 1 and result["tests"]["failures"] == 0  # the CUDA tests ran (skipped here)
    assert result["image"]["exit_code"] == 0 and result["image"]["backend"].startswith("torch on cpu")
    (off, recorded) = result["loop"]
    assert off["outputs"] == "off" and recorded["outputs"] == "recorder"
    for row in (off, recorded):
        assert row["fps"] > 0 and row["latency_ms"] > 0 and row["stages_ms"]["dream"] > 0
        assert set(row["stages_ms"]) == set(STAGES)
        assert row["vs_plain"] > 0 and row["vs_best_ordinary"] > 0
    assert {b["form"].split(" ")[0] for b in result["baselines"]} == {"plain", "best"}
    assert all(b["fps"] > 0 for b in result["baselines"])
    cos = {(c["backend"], c["layer"]): c["cosine"] for c in result["cosines"]}
    assert set(cos) == {("torch", "inception3b"), ("onnx", "inception3b")}
    assert all(0.99 <= c <= 1.0 for c in cos.values())  # fp16 against float64, on both backends
    assert "| torch on cpu (float32) | 96x64 | 1 | recorder |" in table and "fp16 cosine to float64" in table
    assert result["problems"] == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the real check would run")
def test_without_cuda_it_says_so_in_one_line_and_exits_69(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 69
    assert len(done.stdout.strip().splitlines()) == 1 and "no CUDA device" in done.stdout
    assert not (tmp_path / "out").exists()
