"""How many threads the dream computes with on the CPU, and how idle ones wait.

PyTorch's CPU kernels run on an OpenMP pool (GNU libgomp in the Linux wheels). By default its
threads *spin* for a while after each parallel region, waiting for the next one. On a machine
whose cores are shared (camera decode, optical flow, a window, another program) that collapses:
a spinning thread takes a core the others need, and a parallel region waits for the thread that
was descheduled. Measured on 2 busy cores: the same loop 4x slower with spinning threads than
with sleeping ones (docs/architecture.md, "Frame budget"; ``bench/threads.py`` repeats it).

The choice, made before PyTorch loads (libgomp reads its environment once, when it loads):

- ``OMP_WAIT_POLICY=PASSIVE``: a thread with no work sleeps at once.
- the dream's intra-op threads: every core this process may use (``DEFAULT_THREADS``).

Both can be overridden: ``DEEPDREAM_LIVE_THREADS=N`` or ``--threads N`` for the count, and any
``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT`` or ``OMP_NUM_THREADS`` the user set is left alone.
``KMP_BLOCKTIME`` is Intel OpenMP's knob; the PyTorch wheels use libgomp, which ignores it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass

from live.errors import UsageError

ENV_THREADS = "DEEPDREAM_LIVE_THREADS"
DEFAULT_WAIT_POLICY = "PASSIVE"
MAX_THREADS = 256

_state: dict[str, object] = {}  # what prepare_environment() did, for describe()


def cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """The dream's intra-op threads when nobody says otherwise: every core this process may use.

    Chosen from ``bench/threads.py`` (idle and with one core kept busy): with sleeping threads,
    using every core is fastest idle and still holds well above 40% of that when a core is taken.
    """
    return cores()


def _parse(text: str, what: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_THREADS:
        raise UsageError(f"{what} {text!r}: expected a thread count 1..{MAX_THREADS} (this machine has "
                         f"{cores()} cores)")
    return n


def prepare_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Put the OpenMP choice into the environment; call it before ``import torch``.

    Sets ``OMP_WAIT_POLICY`` (unless the user set it) and, when ``DEEPDREAM_LIVE_THREADS`` names
    a count, ``OMP_NUM_THREADS``. Records whether PyTorch had already loaded, in which case the
    wait policy cannot apply any more (:func:`describe` says so). Safe to call more than once.
    """
    env = os.environ if environ is None else environ
    if "torch_loaded_first" not in _state:
        _state["torch_loaded_first"] = "torch" in sys.modules
    if "OMP_WAIT_POLICY" not in env:
        env["OMP_WAIT_POLICY"] = DEFAULT_WAIT_POLICY
        _state.setdefault("wait_policy_from", "deepdream-live")
    else:
        _state.setdefault("wait_policy_from", "the environment")
    wanted = env.get(ENV_THREADS, "").strip()
    if wanted and "OMP_NUM_THREADS" not in env:
        try:
            env["OMP_NUM_THREADS"] = str(_parse(wanted, ENV_THREADS))
        except UsageError:
            pass  # reported with its fix by apply(), which the command line calls next


@dataclass(frozen=True)
class ThreadSettings:
    """What the dream runs with: intra-op threads, the OpenMP wait policy, and who chose them."""

    threads: int
    cores: int
    wait_policy: str  # PASSIVE, ACTIVE, or "spin (GOMP default)" when unset
    threads_from: str
    wait_policy_from: str
    policy_applies: bool  # False when PyTorch loaded before the policy was set

    def describe(self) -> str:
        """One line for ``check``, ``calibrate`` and the log."""
        how = "sleep when idle" if self.wait_policy == "PASSIVE" else "spin when idle"
        line = (f"{self.threads} dream thread{'s' if self.threads != 1 else ''} on {self.cores} core"
                f"{'s' if self.cores != 1 else ''} ({self.threads_from}); OpenMP threads {how} "
                f"(OMP_WAIT_POLICY={self.wait_policy}, {self.wait_policy_from})")
        if not self.policy_applies:
            line += "; PyTorch loaded before the policy was set, so it does not apply"
        return line

    @property
    def spinning(self) -> bool:
        """Whether idle OpenMP threads busy-wait (the case that collapses on shared cores)."""
        return self.wait_policy != "PASSIVE" or not self.policy_applies


def current() -> ThreadSettings:
    """The settings in force now (imports PyTorch)."""
    import torch

    policy = os.environ.get("OMP_WAIT_POLICY", "").strip().upper() or "spin (GOMP default)"
    return ThreadSettings(
        threads=torch.get_num_threads(),
        cores=cores(),
        wait_policy=policy,
        threads_from=str(_state.get("threads_from", "PyTorch's default")),
        wait_policy_from=str(_state.get("wait_policy_from", "the environment")),
        policy_applies=not _state.get("torch_loaded_first", False),
    )


def apply(threads: int | None = None) -> ThreadSettings:
    """Set the dream's intra-op thread count: ``threads`` (``--threads``), else
    ``DEEPDREAM_LIVE_THREADS``, else ``OMP_NUM_THREADS``, else :func:`default_threads`.

    Raises UsageError for a count that is not 1..256.
    """
    import torch

    if threads is not None:
        n, source = _parse(str(threads), "--threads"), "--threads"
    elif os.environ.get(ENV_THREADS, "").strip():
        n, source = _parse(os.environ[ENV_THREADS].strip(), ENV_THREADS), ENV_THREADS
    elif os.environ.get("OMP_NUM_THREADS", "").strip():
        n, source = _parse(os.environ["OMP_NUM_THREADS"].strip(), "OMP_NUM_THREADS"), "OMP_NUM_THREADS"
    else:
        n, source = default_threads(), "default: every core"
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _state["threads_from"] = source
    return current()
