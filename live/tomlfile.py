"""Reading the project's TOML files (site config, presets, MIDI mappings, calibration profiles)
with errors that name the file and what to do."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from live.errors import DataError, InputError


def read_toml(path: Path, what: str, missing: str, hint: str = "") -> dict[str, Any]:
    """The parsed file. ``missing`` is the whole message for a file that is not there; ``what``
    names the file's kind in the other errors ("site config"); ``hint`` says how to fix a bad one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(missing) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{what} {path} cannot be read: {e}") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"{what} {path} is not valid TOML: {e}" + (f"; {hint}" if hint else "")) from e
