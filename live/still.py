"""The classic still-image DeepDream: read a picture, dream on it, write it back at its size.

Checks come first and cost nothing: the output path must be writable and the objective valid
before the picture is read, the weights loaded or a step taken. The result is written to a
temporary file beside the target and renamed into place, so a failure leaves no partial file.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from live import __version__
from live.atomic import atomic_write
from live.backends import open_backend
from live.dreamer import MIN_OCTAVE_SIDE, Dreamer, DreamSettings, resize
from live.errors import InputError, OutputError
from live.model import load_model
from live.objectives import Objective
from live.sources.testscene import test_scene

log = logging.getLogger(__name__)

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
TEST_SCENE = "test-scene"  # IN value for the built-in synthetic picture


def check_output(path: Path) -> str:
    """Fail early, with the reason, if ``path`` cannot be written; returns the Pillow format."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(f"cannot write {path}: the name must end in .png, .jpg or .jpeg")
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {parent} does not exist")
    try:  # the only reliable test (read-only mounts, ACLs): actually create a file there
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".deepdream-check-"):
            pass
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror} in {parent}") from e
    return fmt


def read_picture(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB uint8 (H, W, 3) and the alpha channel if any; phone-photo EXIF rotation applied."""
    if str(path) == TEST_SCENE:
        return test_scene(640, 360), None
    if not path.exists():
        raise InputError(f"input image {path} does not exist")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            alpha = np.asarray(im.getchannel("A")) if im.mode in ("RGBA", "LA", "PA") else None
            rgb = np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as an image ({e}); expected a PNG or JPEG file") from e
    return rgb, alpha


def write_picture(path: Path, fmt: str, rgb: np.ndarray, alpha: np.ndarray | None, metadata: dict[str, str]) -> None:
    """Write atomically (see :func:`live.atomic.atomic_write`), metadata included."""
    im = Image.fromarray(rgb, "RGB")
    options: dict[str, object] = {}
    if fmt == "PNG":
        if alpha is not None:
            im.putalpha(Image.fromarray(alpha, "L"))
        info = PngImagePlugin.PngInfo()
        for key, value in metadata.items():
            info.add_text(key, value)
        options["pnginfo"] = info
    else:
        options.update(quality=95, comment=json.dumps(metadata).encode())
    try:
        with atomic_write(path) as f:
            im.save(f, format=fmt, **options)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e}") from e


@dataclass(frozen=True)
class StillJob:
    """Everything the ``image`` command needs, as given on the command line."""

    source: Path
    target: Path
    objective: str = "inception4c"
    settings: DreamSettings = DreamSettings()
    weights: str | None = None
    model: str = "torchvision"
    backend: str = "auto"
    device: str = "auto"
    seed: int | None = 0
    max_side: int = 1024  # dream at most this large; detail is upsampled onto the full picture
    progress: bool | None = None  # None: a bar when stderr is a terminal
    precision: str | None = None  # None: fp16 on CUDA, fp32 on the CPU


def working_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """The size dreamed at: the picture's, shrunk to ``max_side`` (0 = no cap), at least 32 px."""
    scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
    scale = max(scale, MIN_OCTAVE_SIDE / min(height, width))
    return max(MIN_OCTAVE_SIDE, round(height * scale)), max(MIN_OCTAVE_SIDE, round(width * scale))


def dream_still(job: StillJob) -> Path:
    """Run one still-image dream; returns the written path. Raises :class:`live.errors.LiveError`."""
    objective = Objective.parse(job.objective)
    fmt = check_output(job.target)
    rgb, alpha = read_picture(job.source)
    model = load_model(job.weights, model=job.model, progress=job.progress is not False)
    backend = open_backend(job.backend, model, job.device, precision=job.precision)
    dreamer = Dreamer(backend, model.space, seed=job.seed)

    picture = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255.0)
    h, w = rgb.shape[:2]
    work = resize(picture, working_shape(h, w, job.max_side)).to(backend.device)
    log.info("dreaming %s (%dx%d, at %dx%d) on %s with %s", job.source, w, h, work.shape[-1], work.shape[-2], objective, backend.describe())

    from tqdm import tqdm

    total = dreamer.total_steps(work.shape[-2], work.shape[-1], job.settings)
    with tqdm(total=total, desc="dreaming", unit="step", disable=None if job.progress is None else not job.progress) as bar:
        x = model.space.to_model(work)
        with torch.inference_mode(False):
            y = dreamer.dream(x, objective, job.settings, progress=bar.update)
    # Add the dream's residual, upsampled, to the untouched full-size picture: full-resolution
    # detail survives even when the dream ran smaller.
    residual = (model.space.to_picture(y) - work).cpu()
    out = (picture + resize(residual, (h, w))).clamp(0.0, 1.0)
    out_rgb = (out[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)

    metadata = {
        "Software": f"deepdream-live {__version__}",
        "deepdream-live": json.dumps(
            {
                "objective": str(objective),
                **asdict(job.settings),
                "seed": job.seed,
                "weights": model.weights.describe(),
                "backend": backend.describe(),
            }
        ),
    }
    write_picture(job.target, fmt, out_rgb, alpha, metadata)
    log.info("wrote %s", job.target)
    return job.target
