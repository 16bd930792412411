"""Command-line flags generated from the parameter registry, so CLI and OSC/MIDI never disagree."""

from __future__ import annotations

import argparse
from typing import Any

from live.control.params import LIVE_PARAMS, Param, Registry
from live.errors import UsageError


def flag(param: Param) -> str:
    return "--" + param.name.replace("_", "-")


def add_param_flags(parser: argparse.ArgumentParser, params: tuple[Param, ...] = LIVE_PARAMS) -> None:
    """One flag per parameter (``--step-size``, ``--no-flow``); unset flags keep the registry default."""
    group = parser.add_argument_group("live parameters (also settable over OSC and MIDI)")
    for p in params:
        if p.kind == "trigger":
            continue
        dest = f"param_{p.name}"
        text = f"{p.help} ({p.expects()}; default {p.default})"
        if p.kind == "bool":
            group.add_argument(flag(p), dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif p.kind == "objective":
            group.add_argument(flag(p), "--layer", dest=dest, default=None, metavar="OBJECTIVE", help=text)
        else:
            group.add_argument(flag(p), dest=dest, default=None, metavar=p.unit.upper().replace(" ", "_") or "VALUE",
                               help=text)


def param_values(args: argparse.Namespace) -> dict[str, Any]:
    """The parameters given on the command line (raw strings: the registry checks them)."""
    prefix = "param_"
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def apply_flags(registry: Registry, args: argparse.Namespace) -> None:
    """Write the command line's parameters into the registry, all at once.

    A bad one is a UsageError that names the flag as typed (``--steps 51 is out of range;
    allowed: an integer 0..50 steps``); nothing is applied then.
    """
    values = param_values(args)
    if not values:
        return
    for name, value in values.items():  # one at a time first, so the message names the flag at fault
        try:
            registry.param(name).coerce(value)
        except UsageError as e:
            raise UsageError(as_flag(str(e), registry.param(name))) from None
    registry.update(values, source="cli")


def as_flag(message: str, param: Param) -> str:
    """A registry message about ``param`` reworded for the command line: its flag instead of its name."""
    if message.startswith(param.name + " ") or message.startswith(param.name + ":"):
        return flag(param) + message[len(param.name):]
    return f"{flag(param)}: {message}"
