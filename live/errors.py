"""Errors an operator can act on, each with the exit code the command line returns.

Exit codes follow BSD ``sysexits.h`` so scripts and systemd can tell causes apart.
Library code raises these; only the command line turns them into exit codes.
"""

from __future__ import annotations

# Exit codes of mistakes in a file or on the command line, which only a person can fix: the
# systemd unit does not restart the show on them (RestartPreventExitStatus=); every other failure
# (a camera or port not there yet, 69; an unexpected error, 70) is retried.
CONFIG_EXIT_CODES = (64, 65, 66)


class LiveError(Exception):
    """Base for errors whose message is meant for the operator, not a traceback."""

    exit_code = 1


class UsageError(LiveError):
    """A wrong name or value on the command line, in a config file or from a controller."""

    exit_code = 64  # EX_USAGE


class DataError(LiveError):
    """An input file exists but its contents are not what was expected (corrupt weights)."""

    exit_code = 65  # EX_DATAERR


class InputError(LiveError):
    """An input (image, camera, weights file) is missing or cannot be read."""

    exit_code = 66  # EX_NOINPUT


class DeviceMissingError(InputError):
    """A camera or stream that is not there now but may come back (unplugged, the server down).

    Still an InputError to callers (``--source auto`` falls back to the test scene on it), but
    it exits 69 like UnavailableError: the systemd unit starts the show again until the device
    answers, while 64/65/66 (a mistake in a file, which only a person can fix) are not retried.
    """

    exit_code = 69  # EX_UNAVAILABLE


class UnavailableError(LiveError):
    """Something needed is not reachable here: offline download, missing backend."""

    exit_code = 69  # EX_UNAVAILABLE


class SoftwareError(LiveError):
    """Something in the program itself went wrong (a dream that came back NaN): not the input's fault."""

    exit_code = 70  # EX_SOFTWARE


class OutputError(LiveError):
    """An output path cannot be created or written."""

    exit_code = 73  # EX_CANTCREAT
