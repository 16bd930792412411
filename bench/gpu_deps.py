"""The project's small dependencies for `make gpu-check`, on a GPU machine that may have no network.

A GPU machine comes with its own Python and PyTorch (CUDA build), which must never be replaced.
What the project needs besides is mostly there already (numpy, OpenCV, onnx, onnxruntime,
Pillow, pytest, ...); the few small packages that are not (python-osc, tomli-w, mido, ...) are
installed into a private folder that `make gpu-check` puts on ``PYTHONPATH``:

- ``install --wheels DIR --target SITE``: for each dependency in pyproject.toml (torch excepted)
  whose module does not import, install it from the wheel folder ``DIR`` when it holds one
  (``pip --no-index``: no network needed), else try the registry once, quickly; a package that
  cannot be had is reported, and the check runs without it (its tests say what is missing).
- ``download --wheels DIR``: on a machine with a registry, fill ``DIR`` with wheels of those
  packages for the GPU machine's Python (``make wheels``; copy the folder along with the checkout).

Only ``--no-deps`` installs: nothing here may pull in another torch.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# distribution -> module it provides (what is checked for, without importing it)
MODULES = {
    "numpy": "numpy", "opencv-python": "cv2", "pyvirtualcam": "pyvirtualcam", "onnx": "onnx",
    "onnxruntime": "onnxruntime", "python-osc": "pythonosc", "tomli-w": "tomli_w", "packaging": "packaging",
    "pillow": "PIL", "tqdm": "tqdm", "mido": "mido", "python-rtmidi": "rtmidi", "pytest": "pytest",
    "scikit-image": "skimage", "av": "av", "tomlkit": "tomlkit", "aiohttp": "aiohttp", "zeroconf": "zeroconf",
    "jsonschema": "jsonschema", "playwright": "playwright",
}
# The ones worth carrying as wheels: small, and absent from a typical CUDA image (the large ones,
# numpy, OpenCV, onnxruntime, scikit-image, come with such images; carrying them would be 100+ MB).
# PyAV (35 MB, FFmpeg inside) is carried too: the GPU check records through it, with NVENC where
# the card has one. The web page's packages (aiohttp, zeroconf) are not: the check starts no page.
SMALL = ("python-osc", "tomli-w", "mido", "python-rtmidi", "pyvirtualcam", "tomlkit", "av")
NEVER = ("torch",)  # the machine's own CUDA build stays


def requirements() -> dict[str, str]:
    """distribution name -> requirement string, from pyproject.toml (dependencies, midi and test extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("midi", "test"):
        reqs += project["optional-dependencies"].get(extra, [])
    out = {}
    for req in reqs:
        name = re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower()
        if name not in NEVER:
            out[name] = req
    return out


def missing() -> dict[str, str]:
    """Requirements whose module is not importable by this Python."""
    return {name: req for name, req in requirements().items()
            if importlib.util.find_spec(MODULES.get(name, name.replace("-", "_"))) is None}


def _wheel_for(folder: Path, name: str) -> bool:
    stem = name.replace("-", "_").lower()
    return any(p.name.lower().startswith(stem + "-") for p in folder.glob("*.whl")) if folder.is_dir() else False


def install(wheels: Path, target: Path) -> int:
    need = missing()
    if not need:
        print("gpu-check: every dependency is already importable")
        return 0
    target.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--upgrade",
           "--target", str(target)]
    local = [req for name, req in need.items() if _wheel_for(wheels, name)]
    remote = [req for name, req in need.items() if not _wheel_for(wheels, name)]
    failed: list[str] = []
    if local and subprocess.run([*pip, "--no-index", "--find-links", str(wheels), *local], check=False).returncode:
        failed += local
    for req in remote:  # one quick try each: no network must cost seconds, not minutes
        if subprocess.run([*pip, "--retries", "0", "--timeout", "5", req], capture_output=True,
                          check=False).returncode:
            failed.append(req)
    done = [r for r in need.values() if r not in failed]
    if done:
        print(f"gpu-check: installed into {target}: {', '.join(done)}")
    if failed:
        print(f"gpu-check: could not install {', '.join(failed)} (no wheel in {wheels} and no registry); "
              f"the check runs without them. Fill {wheels} with `make wheels` on a machine with a registry.")
    return 0


def download(wheels: Path, python: str, names: list[str]) -> int:
    reqs = requirements()
    chosen = [reqs[n] for n in names]
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                                              "manylinux2014_x86_64", "manylinux1_x86_64")]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
           "--python-version", python, *platforms, "--dest", str(wheels), *chosen]
    print(" ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install what is missing, from the wheel folder first")
    inst.add_argument("--wheels", type=Path, default=ROOT / "wheels")
    inst.add_argument("--target", type=Path, default=ROOT / ".gpu-check" / "site")
    down = sub.add_parser("download", help="fill the wheel folder (needs a registry)")
    down.add_argument("--wheels", type=Path, default=ROOT / "wheels")
    down.add_argument("--python", default="3.12", help="the GPU machine's Python version (default: 3.12)")
    down.add_argument("names", nargs="*", default=list(SMALL), help=f"distributions (default: {' '.join(SMALL)})")
    args = parser.parse_args()
    if args.command == "install":
        return install(args.wheels, args.target)
    return download(args.wheels, args.python, args.names)


if __name__ == "__main__":
    sys.exit(main())
