"""`make gpu-check`'s dependency step (bench/gpu_deps.py), rehearsed with wheels made here.

It must keep to the check's deadline and install what it can: wheels one at a time (a wheel for
another Python fails only itself), nothing twice (it looks in its own folder too), pure-Python
wheels unzipped where this Python has no pip, and one registry attempt that a subprocess timeout
bounds. No test here reaches a real registry: the index is a closed local port, or a stand-in
command that hangs.
"""

from __future__ import annotations

import sys
import time
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_deps  # noqa: E402

DEAD_INDEX = "http://127.0.0.1:9/simple"  # nothing listens on the discard port: refused at once


def make_wheel(folder: Path, dist: str, tag: str = "py3-none-any", version: str = "1.0") -> Path:
    """A minimal valid wheel of ``dist`` providing module ``dist`` with '-' as '_'."""
    folder.mkdir(parents=True, exist_ok=True)
    module = dist.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    path = folder / f"{module}-{version}-{tag}.whl"
    files = {
        f"{module}/__init__.py": f"NAME = {dist!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


REQS = {"ddl-probe-good": "ddl-probe-good", "ddl-probe-foreign": "ddl-probe-foreign"}


def test_wheels_install_one_by_one_and_nothing_twice(tmp_path: Path, capsys) -> None:
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    make_wheel(wheels, "ddl-probe-good")
    make_wheel(wheels, "ddl-probe-foreign", tag="cp27-cp27mu-manylinux1_x86_64")  # another Python's wheel
    report = gpu_deps.install(wheels, site, reqs=REQS, pip=True, index_url=DEAD_INDEX)
    assert report["installed"] == ["ddl-probe-good"]  # the foreign wheel failed alone, not the batch
    assert len(report["failed"]) == 1 and report["failed"][0].startswith("ddl-probe-foreign (wheel in ")
    assert (site / "ddl_probe_good" / "__init__.py").exists()
    assert gpu_deps.missing(REQS, site) == {"ddl-probe-foreign": "ddl-probe-foreign"}  # looks in its own folder
    assert gpu_deps.missing(REQS) == REQS  # and not without it
    capsys.readouterr()
    again = gpu_deps.install(wheels, site, reqs={"ddl-probe-good": "ddl-probe-good"}, pip=True)
    assert again == {"installed": [], "failed": []}
    assert "already importable" in capsys.readouterr().out


def test_without_pip_pure_wheels_are_unzipped_and_the_reasons_are_the_real_ones(tmp_path: Path, capsys) -> None:
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    make_wheel(wheels, "ddl-probe-good", tag="py2.py3-none-any")
    make_wheel(wheels, "ddl-probe-foreign", tag="cp311-cp311-manylinux_2_17_x86_64")
    reqs = {**REQS, "ddl-probe-absent": "ddl-probe-absent>=2"}
    report = gpu_deps.install(wheels, site, reqs=reqs, pip=False)
    assert report["installed"] == ["ddl-probe-good"]
    assert (site / "ddl_probe_good" / "__init__.py").exists() and (site / "ddl_probe_good-1.0.dist-info").is_dir()
    failed = dict(f.split(" ", 1) for f in report["failed"])
    assert "is a compiled wheel (only pure-Python wheels can be unzipped)" in failed["ddl-probe-foreign"]
    assert "pip is not available" in failed["ddl-probe-absent"] and "registry" in failed["ddl-probe-absent"]
    printed = capsys.readouterr().out
    assert "could not install" in printed and "network" not in printed


def test_the_registry_gets_one_attempt_bounded_by_a_timeout_and_only_time_the_check_can_spare(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reqs = {"ddl-probe-absent": "ddl-probe-absent"}
    hang = [sys.executable, "-c", "import time; time.sleep(60)"]  # a registry that never answers
    monkeypatch.setattr(gpu_deps, "REGISTRY_MAX", 1.0)
    monkeypatch.setattr(gpu_deps, "REGISTRY_MIN", 0.5)
    t0 = time.monotonic()
    report = gpu_deps.install(tmp_path / "wheels", tmp_path / "site", reqs=reqs, pip=True, registry_command=hang)
    assert time.monotonic() - t0 < 30
    assert report["failed"] == ["ddl-probe-absent (no wheel in " + str(tmp_path / "wheels")
                                + "; the registry did not answer within 1 s)"]
    # the deadline leaves the check its own minutes: the registry is not even asked
    t0 = time.monotonic()
    report = gpu_deps.install(tmp_path / "wheels", tmp_path / "site", time.time() + gpu_deps.CHECK_NEEDS + 0.2,
                              reqs=reqs, pip=True, registry_command=hang)
    assert time.monotonic() - t0 < 5 and "no time left for the registry" in report["failed"][0]
    # the real pip command, against an index that refuses at once
    report = gpu_deps.install(tmp_path / "wheels", tmp_path / "site", reqs=reqs, pip=True, index_url=DEAD_INDEX)
    assert report["installed"] == [] and report["failed"][0].startswith("ddl-probe-absent (no wheel in ")
