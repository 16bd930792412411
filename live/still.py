"""The classic still-image DeepDream: read a picture, dream on it, write it back at its size.

Checks come first and cost nothing: the output path must be writable and the objective valid
before the picture is read, the weights loaded or a step taken. The result is written to a
temporary file beside the target and renamed into place, so a failure leaves no partial file.

Memory is bounded. A picture above ``MAX_PICTURE_PIXELS`` is refused from its header, before it
is decoded (a 48 KB PNG can hold 20000×20000 pixels). The dream runs at ``--max-side``; the
full-size picture is only ever held as 8-bit values, and the dream's detail is upsampled onto it
a strip of rows at a time, so the peak stays near 8 bytes a pixel above the program's own (a
12000×8000 picture: 1.17 GB against 0.42 GB for a small one; full-size float tensors peaked at
5.1 GB). A dream that comes back NaN or infinite is an error, never a black picture.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from live import __version__
from live.atomic import atomic_write
from live.backends import open_backend
from live.dreamer import MIN_OCTAVE_SIDE, Dreamer, DreamSettings
from live.errors import DataError, InputError, OutputError, SoftwareError
from live.model import load_model
from live.objectives import Objective
from live.sources.testscene import test_scene

log = logging.getLogger(__name__)

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
TEST_SCENE = "test-scene"  # IN value for the built-in synthetic picture
# 128 Mpx: a 100-megapixel camera's picture fits (11648x8736), about 1 GB at the peak (8 bytes a
# pixel). Pillow's own decompression-bomb warning starts at 89 Mpx and its refusal at 179 Mpx; this
# limit decides first.
MAX_PICTURE_PIXELS = 128_000_000
STRIP_ROWS = 256  # rows of the full-size picture composed at a time


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size check below decides
            with Image.open(path) as im:
                check_picture_size(path, *im.size)  # from the header, before anything is decoded
                ImageOps.exif_transpose(im, in_place=True)  # no copy of the whole picture
                alpha = np.asarray(im.getchannel("A")) if im.mode in ("RGBA", "LA", "PA") else None
                # read-only views of one copy of the pixels: no second full-size array
                rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except Image.DecompressionBombError as e:  # above Pillow's own hard limit (179 Mpx)
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(pixels.group(1)) / 1e6:.0f} Mpx" if pixels else "more than Pillow opens"
        raise DataError(f"{path} is too large to dream: {size}; {_picture_limit_advice()}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as an image ({e}); expected a PNG or JPEG file") from e
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode it; {_picture_limit_advice()}") from None
    return rgb, alpha


def _picture_limit_advice() -> str:
    return (f"at most {MAX_PICTURE_PIXELS / 1e6:.0f} Mpx can be dreamed; scale it down first, e.g. "
            "`convert IN -resize 8000x8000 OUT` or `vips resize IN OUT 0.5`")


def check_picture_size(path: Path, width: int, height: int) -> None:
    """DataError if a ``width`` × ``height`` picture is above :data:`MAX_PICTURE_PIXELS`."""
    if width * height > MAX_PICTURE_PIXELS:
        raise DataError(f"{path} is {width}x{height} ({width * height / 1e6:.0f} Mpx), too large to dream: "
                        f"{_picture_limit_advice()}")


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


def compose(rgb: np.ndarray, residual: np.ndarray, rows: int = STRIP_ROWS) -> np.ndarray:
    """``rgb`` (H, W, 3 uint8) plus ``residual`` (h, w, 3 float32, grey levels) upsampled to H × W
    bilinearly (half-pixel centres, edges clamped, as ``F.interpolate(align_corners=False)``), as
    uint8. Done ``rows`` rows at a time: no full-size float image is ever made."""
    height, width = rgb.shape[:2]
    src_h = residual.shape[0]
    out = np.empty_like(rgb)
    # source row of each output row, and the weight between it and the next
    sy = np.clip((np.arange(height) + 0.5) * (src_h / height) - 0.5, 0.0, src_h - 1)
    i0 = np.floor(sy).astype(np.int64)
    i1 = np.minimum(i0 + 1, src_h - 1)
    t = (sy - i0).astype(np.float32)[:, None, None]
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        lo, hi = int(i0[y0]), int(i1[y1 - 1]) + 1
        # only the source rows this strip needs, widened to the full width (a horizontal pass)
        wide = residual[lo:hi]
        if wide.shape[1] != width:
            wide = cv2.resize(wide, (width, hi - lo), interpolation=cv2.INTER_LINEAR)
        a, b = wide[i0[y0:y1] - lo], wide[i1[y0:y1] - lo]
        strip = a + (b - a) * t[y0:y1]
        strip += rgb[y0:y1]
        np.clip(strip, 0.0, 255.0, out=strip)
        strip += 0.5
        out[y0:y1] = strip.astype(np.uint8)
    return out


def dream_still(job: StillJob) -> Path:
    """Run one still-image dream; returns the written path. Raises :class:`live.errors.LiveError`."""
    objective = Objective.parse(job.objective)
    fmt = check_output(job.target)
    rgb, alpha = read_picture(job.source)
    model = load_model(job.weights, model=job.model, progress=job.progress is not False)
    backend = open_backend(job.backend, model, job.device, precision=job.precision)
    dreamer = Dreamer(backend, model.space, seed=job.seed)

    h, w = rgb.shape[:2]
    wh, ww = working_shape(h, w, job.max_side)
    # shrunk as 8-bit (area filter), so the full-size picture never exists as floats
    small = rgb if (wh, ww) == (h, w) else cv2.resize(
        rgb, (ww, wh), interpolation=cv2.INTER_AREA if ww <= w else cv2.INTER_LINEAR)
    work = torch.from_numpy(np.array(small)).permute(2, 0, 1)[None].float().div(255.0)
    work = work.to(backend.device)
    log.info("dreaming %s (%dx%d, at %dx%d) on %s with %s", job.source, w, h, work.shape[-1], work.shape[-2], objective, backend.describe())

    from tqdm import tqdm

    total = dreamer.total_steps(work.shape[-2], work.shape[-1], job.settings)
    with tqdm(total=total, desc="dreaming", unit="step", disable=None if job.progress is None else not job.progress) as bar:
        x = model.space.to_model(work)
        with torch.inference_mode(False):
            y = dreamer.dream(x, objective, job.settings, progress=bar.update)
    if not bool(torch.isfinite(y).all()):
        raise SoftwareError(
            f"the dream produced NaN or infinite values on {backend.describe()} (an fp16 overflow, weights that "
            "overflow, or a backend fault); nothing was written. Try --backend torch --device cpu, or other weights"
        )
    # Add the dream's residual, upsampled, to the untouched full-size picture: full-resolution
    # detail survives even when the dream ran smaller.
    residual = (model.space.to_picture(y) - work).mul_(255.0)[0].permute(1, 2, 0).contiguous().cpu().numpy()
    out_rgb = compose(rgb, residual)
    del rgb, small  # the input's pixels are not needed while the output is encoded

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
