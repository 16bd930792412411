"""Command-line flags generated from the parameter registry, so CLI and OSC/MIDI never disagree."""

from __future__ import annotations

import argparse
from typing import Any

from live.control.params import LIVE_PARAMS, Param, Registry


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
    """Write the command line's parameters into the registry, all at once (UsageError on a bad one)."""
    values = param_values(args)
    if values:
        registry.update(values, source="cli")
