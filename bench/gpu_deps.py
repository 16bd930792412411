"""The project's small dependencies for `make gpu-check`, on a GPU machine that may have no network.

A GPU machine comes with its own Python and PyTorch (CUDA build), which must never be replaced.
What the project needs besides is mostly there already (numpy, OpenCV, onnx, onnxruntime,
Pillow, pytest, ...); the few small packages that are not (python-osc, tomli-w, mido, ...) are
installed into a private folder that `make gpu-check` puts on ``PYTHONPATH``:

- ``install --wheels DIR --target SITE [--deadline EPOCH]``: for each dependency in
  pyproject.toml (torch excepted) whose module imports neither from this Python nor from SITE
  (a second run installs nothing), install it from the wheel folder ``DIR`` when that holds one
  (``pip --no-index``, one package at a time, so a wheel for another Python fails only itself);
  then one attempt at the registry for the rest, bounded by a subprocess timeout (pip's own
  ``--timeout`` does not cover name lookups). Where this Python has no pip, pure-Python wheels
  (``*-none-any.whl``) are unzipped into SITE. A package that cannot be had is reported with the
  real reason, and the check runs without it (its tests say what is missing). The deadline is
  the one `make gpu-check` gives the whole target: the registry gets only time the check can spare.
- ``download --wheels DIR``: on a machine with a registry, fill ``DIR`` with wheels of those
  packages for the GPU machine's Python (``make wheels``; copy the folder along with the checkout).

Only ``--no-deps`` installs: nothing here may pull in another torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
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
# numpy, OpenCV, onnxruntime, come with such images; carrying them would be 100+ MB).
# PyAV (35 MB, FFmpeg inside) is carried too: the GPU check records through it, with NVENC where
# the card has one. The web page's packages (aiohttp, zeroconf) are not: the check starts no page.
# pytest too (with the two packages it needs, all pure Python): without it the CUDA tests cannot run.
SMALL = ("python-osc", "tomli-w", "mido", "python-rtmidi", "pyvirtualcam", "tomlkit", "av", "pytest", "pluggy",
         "iniconfig")
# what a requirement needs besides (installs are --no-deps), checked and installed with it
COMPANIONS = {"pytest": {"pluggy": "pluggy>=1.5", "iniconfig": "iniconfig>=1"}}
NEVER = ("torch",)  # the machine's own CUDA build stays
# Test extras only the CPU suite uses (real photographs, the web page's browser tests, OSCQuery's
# schema): the check runs none of those tests, and a --no-deps install of them would be broken anyway.
NOT_FOR_THE_CHECK = ("scikit-image", "playwright", "jsonschema")
CHECK_NEEDS = 360.0  # seconds of the deadline kept for the check itself: the registry gets only the rest
REGISTRY_MAX = 60.0  # the longest the one registry attempt may take
REGISTRY_MIN = 5.0  # with less time than this to spare, the registry is not asked at all
LOCAL_TIMEOUT = 60.0  # one local wheel install


def requirements() -> dict[str, str]:
    """distribution name -> requirement string, from pyproject.toml (dependencies, midi and test extras)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("midi", "test"):
        reqs += project["optional-dependencies"].get(extra, [])
    out = {}
    for req in reqs:
        name = _name(req)
        if name not in NEVER and name not in NOT_FOR_THE_CHECK:
            out[name] = req
            out.update(COMPANIONS.get(name, {}))
    return out


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower()


def module_of(name: str) -> str:
    return MODULES.get(name, name.replace("-", "_"))


def missing(reqs: Mapping[str, str] | None = None, target: Path | None = None) -> dict[str, str]:
    """Requirements whose module is importable neither by this Python nor from ``target`` (the
    private folder the check runs with), so a second run reinstalls nothing."""
    reqs = requirements() if reqs is None else reqs
    added = target is not None and str(target) not in sys.path
    if added:
        sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        return {name: req for name, req in reqs.items() if importlib.util.find_spec(module_of(name)) is None}
    finally:
        if added:
            sys.path.remove(str(target))


def _wheels_for(folder: Path, name: str) -> list[Path]:
    stem = re.sub(r"[-_.]+", "_", name).lower()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.whl") if re.sub(r"[-_.]+", "_", p.name.split("-")[0]).lower() == stem)


def pip_available(python: str = sys.executable) -> bool:
    try:
        return subprocess.run([python, "-m", "pip", "--version"], capture_output=True, timeout=60,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def unzip_wheel(wheel: Path, target: Path) -> None:
    """Install a pure-Python wheel by unpacking it (what pip does for one, less scripts and data):
    the package and its ``.dist-info`` land in ``target``; a ``.data/purelib`` or ``platlib`` tree
    is moved to the top, other ``.data`` parts are left out."""
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            parts = Path(info.filename).parts
            if not parts or info.is_dir() or ".." in parts or Path(info.filename).is_absolute():
                continue
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            dest = target.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)


def _pure(wheel: Path) -> bool:
    """``name-version(-build)-py3-none-any.whl`` (or ``py2.py3``): runs on any Python 3."""
    tags = wheel.name[:-4].split("-")[-3:]
    return len(tags) == 3 and tags[1] == "none" and tags[2] == "any" and "py3" in tags[0].split(".")


def install(wheels: Path, target: Path, deadline: float | None = None, *, reqs: Mapping[str, str] | None = None,
            pip: bool | None = None, index_url: str | None = None,
            registry_command: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Install what is missing (see the module docstring); returns what happened, by outcome:
    ``installed``, ``failed`` (each with its reason). Prints one line per outcome.

    ``reqs``, ``pip``, ``index_url`` and ``registry_command`` are for the rehearsal tests: the
    requirements to look at (default: pyproject's), whether pip is there (default: asked), the
    registry (default: pip's own), and a stand-in for the registry's pip command.
    """
    reqs = requirements() if reqs is None else dict(reqs)
    need = missing(reqs, target)
    report: dict[str, list[str]] = {"installed": [], "failed": []}
    if not need:
        print(f"gpu-check: every dependency is already importable (this Python, or {target})")
        return report
    target.mkdir(parents=True, exist_ok=True)
    have_pip = pip_available() if pip is None else pip
    base = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--upgrade",
            "--disable-pip-version-check", "--target", str(target)]
    remote: list[str] = []
    for name, req in need.items():
        local = _wheels_for(wheels, name)
        if not local:
            remote.append(name)
            continue
        if have_pip:
            why = _run([*base, "--no-index", "--find-links", str(wheels), req], LOCAL_TIMEOUT)
        else:
            pure = [w for w in local if _pure(w)]
            why = "" if pure else (f"pip is not available for {sys.executable} and {local[-1].name} is a compiled "
                                   "wheel (only pure-Python wheels can be unzipped)")
            if pure:
                try:
                    unzip_wheel(pure[-1], target)
                except (OSError, zipfile.BadZipFile) as e:
                    why = f"{pure[-1].name} could not be unzipped: {e}"
        if why:
            report["failed"].append(f"{name} (wheel in {wheels}: {why})")
        else:
            report["installed"].append(name)
    if remote:
        reason = _registry(remote, need, base, have_pip, deadline, index_url, registry_command)
        for name in remote:
            if reason is None and name not in missing({name: need[name]}, target):
                report["installed"].append(name)
            else:
                report["failed"].append(f"{name} (no wheel in {wheels}; {reason or 'the registry install did not provide it'})")
    if report["installed"]:
        print(f"gpu-check: installed into {target}: {', '.join(report['installed'])}")
    if report["failed"]:
        print(f"gpu-check: could not install {'; '.join(report['failed'])}. The check runs without them; fill "
              f"{wheels} with `make wheels` on a machine with a registry.")
    return report


def _registry(names: list[str], need: Mapping[str, str], base: list[str], have_pip: bool, deadline: float | None,
              index_url: str | None, command: Sequence[str] | None) -> str | None:
    """One bounded attempt at the registry for ``names``; None on success, else the reason."""
    if not have_pip and command is None:
        return f"pip is not available for {sys.executable}, so the registry cannot be asked"
    timeout = REGISTRY_MAX
    if deadline is not None:
        timeout = min(timeout, deadline - time.time() - CHECK_NEEDS)
    if timeout < REGISTRY_MIN:
        return "no time left for the registry (the check keeps its own 6 minutes of the 8)"
    cmd = list(command) if command is not None else [
        *base, "--retries", "0", "--timeout", "5", *(["--index-url", index_url] if index_url else []),
        *(need[n] for n in names)]
    return _run(cmd, timeout, what="the registry") or None


def _run(cmd: Sequence[str], timeout: float, what: str = "pip") -> str:
    """Run ``cmd``; "" on success, else a one-line reason."""
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"{what} did not answer within {timeout:.0f} s"
    except OSError as e:
        return f"{what} could not start: {e}"
    if done.returncode == 0:
        return ""
    said = [ln.strip() for ln in (done.stderr + "\n" + done.stdout).splitlines() if ln.strip()]
    unreachable = re.search(r"Connection refused|Name or service not known|Temporary failure in name resolution|"
                            r"Network is unreachable|NewConnectionError|timed out", done.stderr + done.stdout)
    if what == "the registry" and unreachable:
        return f"the registry could not be reached ({unreachable.group(0)})"
    errors = [ln for ln in said if ln.startswith("ERROR")]
    return " ".join((errors[-1] if errors else said[-1] if said else f"exit {done.returncode}").split())[:200]


def download(wheels: Path, python: str, names: list[str]) -> int:
    reqs = requirements()
    chosen = [reqs.get(n, n) for n in names]
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                                              "manylinux2014_x86_64", "manylinux1_x86_64")]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--implementation", "cp",
           "--python-version", python, *platforms, "--dest", str(wheels), *chosen]
    print(" ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install what is missing, from the wheel folder first")
    inst.add_argument("--wheels", type=Path, default=ROOT / "wheels")
    inst.add_argument("--target", type=Path, default=ROOT / ".gpu-check" / "site")
    inst.add_argument("--deadline", type=float, default=None, help="wall-clock seconds since the epoch by which "
                      "the whole gpu-check must end (make passes its start plus 8 minutes)")
    down = sub.add_parser("download", help="fill the wheel folder (needs a registry)")
    down.add_argument("--wheels", type=Path, default=ROOT / "wheels")
    down.add_argument("--python", default="3.12", help="the GPU machine's Python version (default: 3.12)")
    down.add_argument("names", nargs="*", default=list(SMALL), help=f"distributions (default: {' '.join(SMALL)})")
    args = parser.parse_args(argv)
    if args.command == "install":
        install(args.wheels.resolve(), args.target.resolve(), args.deadline)
        return 0  # what could not be had is said above; the check says what it missed
    return download(args.wheels, args.python, args.names)


if __name__ == "__main__":
    sys.exit(main())
