"""A deliberately slow backend, registered as ``slow`` in a show started for a test.

Every dream step waits ``DEEPDREAM_TEST_STEP_SECONDS`` (default 0.25 s), so a frame of 40 steps
lasts 10 s whatever the machine; with ``DEEPDREAM_TEST_COMPUTE=1`` it also does the real (tiny)
work first, which on a loaded machine can take seconds of its own. With
``DEEPDREAM_TEST_FREEZE_AFTER=N`` the step after the N-th never returns (a hung driver call).

Run a show with it: ``python -m tests.slow_backend run --backend slow ...`` (the arguments of
``deepdream-live``), from the repository root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import torch

from live.backends.torch_backend import TorchBackend


def read_until(proc: subprocess.Popen, pattern: str, seen: list[str], timeout: float = 180.0) -> str:
    """The first line of the show's log (its stderr) matching ``pattern``; every line read is
    kept in ``seen``. Fails, with the log's tail, when the log ends or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if re.search(pattern, line):
            return line
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no {pattern!r} in the show's log:\n" + "".join(seen[-30:]))


class SlowBackend(TorchBackend):
    """The torch backend on the CPU, ``step_seconds`` slower per step; may freeze for good."""

    name = "slow"

    def __init__(self, model, device, step_seconds: float = 0.25, freeze_after: int | None = None,
                 compute: bool = False) -> None:
        super().__init__(model, torch.device("cpu"))
        self.step_seconds = step_seconds
        self.freeze_after = freeze_after
        self.compute = compute
        self.steps_done = 0
        self.release = threading.Event()  # set it to let a frozen step return (tests clean up)

    def ascend(self, x, objective, steps, *args, **kwargs):
        for _ in range(steps):
            if self.freeze_after is not None and self.steps_done >= self.freeze_after:
                self.release.wait()  # frozen: no progress, no return
            if self.compute:
                x = super().ascend(x, objective, 1, *args, **kwargs)
            time.sleep(self.step_seconds)
            self.steps_done += 1
        return x


def create(model, device, *, precision=None, no_build=False) -> SlowBackend:  # the registry's signature
    freeze = os.environ.get("DEEPDREAM_TEST_FREEZE_AFTER")
    return SlowBackend(model, device, float(os.environ.get("DEEPDREAM_TEST_STEP_SECONDS", "0.25")),
                       int(freeze) if freeze else None, os.environ.get("DEEPDREAM_TEST_COMPUTE") == "1")


if __name__ == "__main__":
    from live import backends
    from live.cli import main

    backends.BACKENDS["slow"] = __name__
    sys.exit(main(sys.argv[1:]))
