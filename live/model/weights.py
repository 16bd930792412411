"""Where GoogLeNet's weights come from: the on-disk cache, a download, a local file, or random.

Weights are never committed. The first use downloads torchvision's ImageNet checkpoint into the
cache (progress on stderr, checksum checked, written atomically); ``--weights FILE`` loads a
local file; ``--weights random[:SEED]`` makes a seeded random network for tests and offline
demos, announced as such wherever its output goes.

The BVLC (Caffe) network (:func:`load_bvlc`) takes the same ``--weights`` values. Its ImageNet
weights are BVLC's original ``bvlc_googlenet.caffemodel`` (downloaded into the cache, or put
there by hand), converted once into ``bvlc_googlenet.pth`` beside it; a ``.caffemodel`` given
as FILE is converted on the fly and its conversion cached too.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from live.atomic import atomic_write
from live.errors import DataError, InputError, UnavailableError, UsageError
from live.model import bvlc, caffe
from live.model.googlenet import BasicConv2d, TorchvisionGoogLeNet

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "googlenet-1378be20.pth"
CHECKPOINT_URL = f"https://download.pytorch.org/models/{CHECKPOINT_NAME}"
# torchvision names its files after the first 8 hex digits of their sha256 (torch.hub checks the same).
CHECKPOINT_SHA256_PREFIX = "1378be20"

BVLC_CAFFEMODEL_NAME = "bvlc_googlenet.caffemodel"
BVLC_CAFFEMODEL_URL = f"http://dl.caffe.berkeleyvision.org/{BVLC_CAFFEMODEL_NAME}"
# From BVLC's model zoo entry (caffe/models/bvlc_googlenet/readme.md); about 53 MB (51 MiB).
BVLC_CAFFEMODEL_SHA1 = "405fc5acd08a3bb12de8ee5e23a96bec22f08204"
BVLC_CONVERTED_NAME = "bvlc_googlenet.pth"  # the caffemodel converted to this package's module names


@dataclass(frozen=True)
class WeightsInfo:
    """What the network was loaded from, for logs and output metadata."""

    kind: str  # "imagenet" | "file" | "random"
    source: str  # path, or "seed N"

    @property
    def is_random(self) -> bool:
        return self.kind == "random"

    def describe(self) -> str:
        if self.is_random:
            return f"RANDOM weights ({self.source}) - not a trained network, for tests and demos only"
        return f"{self.kind} weights from {self.source}"


def cache_dir() -> Path:
    """The weights cache: ``$DEEPDREAM_LIVE_CACHE``, else ``$XDG_CACHE_HOME/deepdream-live``."""
    if os.environ.get("DEEPDREAM_LIVE_CACHE"):
        return Path(os.environ["DEEPDREAM_LIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deepdream-live"


def _torch_hub_copy() -> Path:
    # A user who ever ran torchvision's googlenet(weights=...) already has the file here.
    return Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINT_NAME


def find_cached_checkpoint() -> Path | None:
    """The cached ImageNet checkpoint (ours, else torch hub's), or None."""
    for candidate in (cache_dir() / CHECKPOINT_NAME, _torch_hub_copy()):
        if candidate.is_file():
            return candidate
    return None


def checkpoint_url() -> str:
    """Where the ImageNet checkpoint is downloaded from; ``$DEEPDREAM_LIVE_WEIGHTS_URL`` names a mirror."""
    return os.environ.get("DEEPDREAM_LIVE_WEIGHTS_URL") or CHECKPOINT_URL


def download_checkpoint(
    url: str | None = None,
    dest: Path | None = None,
    sha256_prefix: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (default: the cache), verify its sha256 prefix, write atomically.

    Raises :class:`UnavailableError` when offline (with the URL and where to put the file by
    hand) and :class:`DataError` when the download does not match its checksum.
    """
    return download_file(
        url or checkpoint_url(),
        dest or cache_dir() / CHECKPOINT_NAME,
        algorithm="sha256",
        checksum=sha256_prefix or CHECKPOINT_SHA256_PREFIX,
        what="GoogLeNet weights",
        timeout=timeout,
        progress=progress,
    )


def download_file(
    url: str,
    dest: Path,
    *,
    algorithm: str,
    checksum: str,
    what: str,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest``, check that its ``algorithm`` digest starts with ``checksum``
    (a whole digest or a prefix), and write it atomically: a failure leaves nothing behind.

    Raises :class:`UnavailableError` when offline (with the URL and where to put the file by
    hand) and :class:`DataError` when the download does not match its checksum.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UnavailableError(f"cannot create the weights cache {dest.parent}: {e.strerror}") from e
    log.info("downloading %s to %s", url, dest)
    digest = hashlib.new(algorithm)
    with atomic_write(dest) as out:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise UnavailableError(
                f"no cached {what} and the download failed ({reason}).\n"
                f"  Download {url} on a machine with internet access and put it at {dest}\n"
                f"  (or pass --weights FILE; --weights random runs an untrained network for demos)."
            ) from e
        expected, received = _length(response), 0
        try:
            with response, _progress_bar(expected, dest.name, progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
            if expected is not None and received < expected:
                # http.client's read(n) returns short data, not an error, when the peer hangs up
                raise http.client.IncompleteRead(b"", expected - received)
        except (OSError, http.client.HTTPException) as e:
            raise UnavailableError(
                f"the download of {url} broke off after {received} bytes ({e!r}); nothing was kept, run again"
            ) from e
        got = digest.hexdigest()
        if not got.startswith(checksum):
            raise DataError(
                f"downloaded {url} but its {algorithm} is {got[:16]}…, expected {checksum[:16]}…; "
                f"the download was corrupted or the file changed upstream. Nothing was kept; try again."
            )
    log.info("saved %s (%s %s)", dest, algorithm, got)
    return dest


def _length(response) -> int | None:
    return int(response.headers.get("Content-Length") or 0) or None


def _progress_bar(total: int | None, name: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not enabled, file=sys.stderr)


def random_seed(spec: str) -> int | None:
    """The seed of a ``random`` or ``random:SEED`` weights value, None for any other value."""
    if spec != "random" and not spec.startswith("random:"):
        return None
    seed_text = spec.partition(":")[2] or "0"
    if not seed_text.isdigit():
        raise UsageError(f"--weights {spec!r}: expected 'random' or 'random:SEED' with an integer SEED")
    return int(seed_text)


def _torch_load(path: Path, expected: str, get_one: str = "") -> object:
    """``torch.load`` a weights file (tensors only), with errors that name the file and what was expected.

    A file that holds more than tensors is refused: unpickling arbitrary objects runs code from
    the file. The error says what the file seems to be and ``get_one`` (how to get a proper one);
    it never passes on PyTorch's hint to load it with ``weights_only=False``.
    """
    if not path.exists():
        raise InputError(f"weights file {path} does not exist")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise InputError(f"weights file {path} is not a readable file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file; all mean the same to the operator
        what = _code_in_pickle(e) or f"{_what_it_seems(path)}; it is corrupt or truncated, or not PyTorch weights"
        get_one = get_one or _GET_TORCHVISION
        raise DataError(f"weights file {path} cannot be loaded: {what}. Expected {expected}; {get_one}") from None


_GET_TORCHVISION = (f"get a proper one with --weights imagenet (downloads {CHECKPOINT_NAME} and checks it) or from "
                    f"{CHECKPOINT_URL}; weights you trained: save only the tensors, "
                    "torch.save(model.state_dict(), 'file.pth')")
_GET_BVLC = (f"get a proper one with --model bvlc --weights imagenet (downloads {BVLC_CAFFEMODEL_NAME}) or from "
             f"{BVLC_CAFFEMODEL_URL}, and pass the .caffemodel itself")


def _code_in_pickle(error: Exception) -> str | None:
    """The reason when PyTorch's safe loader refused objects other than tensors (never its hint)."""
    found = re.search(r"GLOBAL\s+([\w.]+)", str(error))  # "Unsupported global: GLOBAL module.name"
    if found is None:
        return None
    return (f"it holds Python objects besides tensors (such as {found.group(1)}), which could only be loaded by "
            "running code from the file, so it is refused")


def _what_it_seems(path: Path) -> str:
    """What a file that is not loadable weights seems to be, from its first bytes."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        return "an unreadable file"
    start = head.lstrip()[:64].lower()
    if size == 0:
        return "it is empty (a download that never started?)"
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights themselves (run `git lfs pull`)"
    if start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "it is an HTML or XML page (a download that saved an error or login page?)"
    if head.startswith(b"PK\x03\x04"):
        return f"it is a zip archive, as PyTorch saves weights, of {size} bytes"
    if head.startswith(b"\x80"):
        return f"it is a pickle, as older PyTorch saved weights, of {size} bytes"
    if head.startswith(b"\x1f\x8b"):
        return "it is gzip-compressed: unpack it first"
    if path.suffix.lower() == ".caffemodel":
        return "it looks like a Caffe model, which the torchvision network does not read: use --model bvlc"
    if path.suffix.lower() == ".onnx":
        return "it is an ONNX graph, not a weights file"
    printable = sum(32 <= b < 127 or b in b"\r\n\t" for b in head) / len(head)
    if printable > 0.95:
        return f"it is a text file of {size} bytes"
    return f"its {size} bytes are in no format PyTorch saves"


def read_checkpoint(path: Path) -> TorchvisionGoogLeNet:
    """Load a torchvision-format GoogLeNet checkpoint into the reference network.

    Every error names the file and what was expected: missing, unreadable, not a PyTorch file
    (corrupt or truncated), not GoogLeNet (missing or mis-shaped keys), or non-finite values.
    """
    expected = f"a torchvision GoogLeNet ImageNet checkpoint such as {CHECKPOINT_NAME} ({CHECKPOINT_URL})"
    obj = _torch_load(path, expected)
    state = obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):  # common training-script wrappers
            if isinstance(obj.get(key), dict):
                state = obj[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DataError(f"weights file {path} holds a {type(obj).__name__}, not a state dict; expected {expected}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}

    net = TorchvisionGoogLeNet()
    wanted = {k: v.shape for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    optional = {k for k in wanted if k.startswith(("aux1.", "aux2.", "fc."))}  # not used for dreaming
    missing = sorted(k for k in wanted if k not in state and k not in optional)
    if missing:
        raise DataError(
            f"weights file {path} is not a torchvision GoogLeNet: {len(missing)} of its keys are missing "
            f"(first: {', '.join(missing[:3])}); expected {expected}"
        )
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(s)})" for k, s in wanted.items() if k in state and state[k].shape != s]
    if wrong:
        raise DataError(f"weights file {path} has tensors of the wrong shape: {'; '.join(wrong[:3])}; expected {expected}")
    unexpected = sorted(set(state) - set(wanted))
    if unexpected:
        log.warning("weights file %s has %d keys GoogLeNet does not use (ignored), e.g. %s", path, len(unexpected), unexpected[0])
    bad = [k for k in wanted if k in state and not torch.isfinite(state[k]).all()]
    if bad:
        raise DataError(f"weights file {path} contains NaN or infinite values in {bad[0]}; the file is damaged")
    net.load_state_dict({k: state[k] for k in wanted if k in state}, strict=False)
    return net.eval()


def random_reference(seed: int = 0) -> TorchvisionGoogLeNet:
    """A seeded, untrained GoogLeNet whose activations keep their scale through depth.

    He-initialised convolutions and non-trivial batch-norm statistics, so folding is exercised and
    every layer's activations (and gradients) are of ordinary size - torchvision's own init
    (std 0.01) fades to nothing by inception5b.
    """
    gen = torch.Generator().manual_seed(seed)
    net = TorchvisionGoogLeNet()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            elif isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / module.in_features**0.5)
                module.bias.zero_()
            elif isinstance(module, BasicConv2d):
                c = module.bn.num_features
                module.bn.weight.copy_(0.8 + 0.4 * torch.rand(c, generator=gen))
                module.bn.bias.copy_(0.1 * torch.randn(c, generator=gen))
                module.bn.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                module.bn.running_var.copy_(0.5 + torch.rand(c, generator=gen))
    return net.eval()


def load_reference(spec: str | None = None, *, progress: bool = True) -> tuple[TorchvisionGoogLeNet, WeightsInfo]:
    """Resolve a ``--weights`` value to the unfolded reference network.

    ``None``/``"imagenet"``: the cached ImageNet checkpoint, downloaded on first use.
    ``"auto"``: like ``imagenet``, but offline with no cache falls back to random weights, loudly.
    ``"random"`` or ``"random:SEED"``: a seeded untrained network. Anything else: a file path.
    """
    spec = (spec or "imagenet").strip()
    seed = random_seed(spec)
    if seed is not None:
        info = WeightsInfo("random", f"seed {seed}")
        log.warning("using %s", info.describe())
        return random_reference(seed), info
    if spec in ("imagenet", "auto"):
        path = find_cached_checkpoint()
        if path is None:
            try:
                path = download_checkpoint(progress=progress)
            except UnavailableError as e:
                if spec == "imagenet":
                    raise
                log.warning("%s\nfalling back to random weights", e)
                return load_reference("random")
        try:
            return read_checkpoint(path), WeightsInfo("imagenet", str(path))
        except DataError as e:
            raise DataError(f"{e}\n  The cached file is damaged: delete {path} and run again to download it anew.") from e
    path = Path(spec).expanduser()
    return read_checkpoint(path), WeightsInfo("file", str(path))


# ----- the BVLC (Caffe) GoogLeNet


def bvlc_url() -> str:
    """Where the BVLC caffemodel is downloaded from; ``$DEEPDREAM_LIVE_BVLC_URL`` names a mirror."""
    return os.environ.get("DEEPDREAM_LIVE_BVLC_URL") or BVLC_CAFFEMODEL_URL


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_torch_file(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(4)
    return head.startswith((b"PK\x03\x04", b"\x80"))  # zip (torch.save since 1.6) or pickle


def _save_converted(net: bvlc.BVLCGoogLeNet, dest: Path) -> None:
    """Cache a conversion; a cache that cannot be written only costs a re-conversion next time."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dest) as f:
            torch.save(net.state_dict(), f)
        log.info("cached the converted weights at %s", dest)
    except OSError as e:
        log.warning("could not cache the converted weights at %s (%s); they will be converted again next time", dest, e)


def convert_caffemodel(path: Path, dest: Path | None = None) -> bvlc.BVLCGoogLeNet:
    """Read a BVLC GoogLeNet ``.caffemodel`` into the network; save the conversion to ``dest``."""
    log.info("converting %s", path)
    net = bvlc.from_caffe(caffe.read_caffemodel(path), str(path))
    if dest is not None:
        _save_converted(net, dest)
    return net


def read_bvlc_checkpoint(path: Path) -> bvlc.BVLCGoogLeNet:
    """Load a converted BVLC GoogLeNet (``bvlc_googlenet.pth``, written by this package).

    Every error names the file and what was expected, as :func:`read_checkpoint`'s do.
    """
    expected = f"{BVLC_CAFFEMODEL_NAME} ({BVLC_CAFFEMODEL_URL}) or its conversion {BVLC_CONVERTED_NAME}"
    state = _torch_load(path, expected, _GET_BVLC)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DataError(f"weights file {path} holds a {type(state).__name__}, not a state dict; expected {expected}")
    net = bvlc.BVLCGoogLeNet()
    wanted = {k: v.shape for k, v in net.state_dict().items()}
    missing = sorted(k for k in wanted if k not in state)
    if missing:
        raise DataError(
            f"weights file {path} is not a converted BVLC GoogLeNet: {len(missing)} of its keys are missing "
            f"(first: {', '.join(missing[:3])}); expected {expected}"
        )
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(s)})" for k, s in wanted.items() if state[k].shape != s]
    if wrong:
        raise DataError(
            f"weights file {path} has tensors of the wrong shape: {'; '.join(wrong[:3])}; expected {expected}"
        )
    bad = [k for k in wanted if not torch.isfinite(state[k]).all()]
    if bad:
        raise DataError(f"weights file {path} contains NaN or infinite values in {bad[0]}; the file is damaged")
    net.load_state_dict({k: state[k].float() for k in wanted}, strict=True)
    return net.eval()


def _bvlc_imagenet(progress: bool) -> tuple[bvlc.BVLCGoogLeNet, WeightsInfo]:
    converted = cache_dir() / BVLC_CONVERTED_NAME
    if converted.is_file():
        try:
            return read_bvlc_checkpoint(converted), WeightsInfo("imagenet", str(converted))
        except DataError as e:
            raise DataError(
                f"{e}\n  The cached file is damaged: delete {converted} and run again to convert it anew."
            ) from e
    original = cache_dir() / BVLC_CAFFEMODEL_NAME
    if original.is_file():
        got = _sha1(original)
        if got != BVLC_CAFFEMODEL_SHA1:
            raise DataError(
                f"{original} is not BVLC's {BVLC_CAFFEMODEL_NAME}: its sha1 is {got[:16]}…, expected "
                f"{BVLC_CAFFEMODEL_SHA1[:16]}…. Delete it and run again to download it ({bvlc_url()}), "
                f"or pass it as --weights {original} to use it anyway."
            )
    else:
        download_file(
            bvlc_url(), original, algorithm="sha1", checksum=BVLC_CAFFEMODEL_SHA1,
            what="BVLC GoogLeNet weights", progress=progress,
        )  # fmt: skip
    return convert_caffemodel(original, converted), WeightsInfo("imagenet", str(original))


def load_bvlc(spec: str | None = None, *, progress: bool = True) -> tuple[bvlc.BVLCGoogLeNet, WeightsInfo]:
    """Resolve a ``--weights`` value for the BVLC network, as :func:`load_reference` does.

    ``None``/``"imagenet"``: BVLC's caffemodel from the cache (downloaded on first use, sha1
    checked), converted once. ``"auto"``: the same, falling back to random weights, loudly,
    when offline. ``"random[:SEED]"``: a seeded untrained network. Anything else: a file, either
    a ``.caffemodel`` (converted, the conversion cached by content) or a converted ``.pth``.
    """
    spec = (spec or "imagenet").strip()
    seed = random_seed(spec)
    if seed is not None:
        info = WeightsInfo("random", f"seed {seed}")
        log.warning("using %s (BVLC GoogLeNet)", info.describe())
        return bvlc.random_bvlc(seed), info
    if spec in ("imagenet", "auto"):
        try:
            return _bvlc_imagenet(progress)
        except UnavailableError as e:
            if spec == "imagenet":
                raise
            log.warning("%s\nfalling back to random weights", e)
            return load_bvlc("random", progress=progress)
    path = Path(spec).expanduser()
    if not path.exists():
        raise InputError(f"weights file {path} does not exist")
    if not path.is_file():
        raise InputError(f"weights file {path} is not a file")
    if _is_torch_file(path):
        return read_bvlc_checkpoint(path), WeightsInfo("file", str(path))
    converted = cache_dir() / f"{path.stem}-{_sha1(path)[:12]}.pth"
    if converted.is_file():
        try:
            return read_bvlc_checkpoint(converted), WeightsInfo("file", str(path))
        except DataError as e:  # a damaged cache entry is ours to replace
            log.warning("%s; converting %s again", e, path)
    return convert_caffemodel(path, converted), WeightsInfo("file", str(path))
