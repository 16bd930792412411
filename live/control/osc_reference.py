"""The OSC address space as documentation: the Markdown table in the README, from the registry.

Kept apart from the server (:mod:`live.control.osc`) so the server holds only what runs; a test
checks that the README's table equals what this renders.
"""

from __future__ import annotations

from collections.abc import Iterable

from live.control.osc import ERROR_ADDRESS, PREFIX
from live.control.osc_space import control_methods
from live.control.params import LIVE_PARAMS, Param


def _range_text(param: Param) -> str:
    if param.kind in ("float", "int"):
        text = f"{param.lo:g}..{param.hi:g}"
        if param.unit:
            text += f" {param.unit}"
        if param.curve == "log":
            text += " (log fader)"
        return text
    if param.kind == "bool":
        return "0/1, T/F, true/false; no argument toggles"
    if param.kind == "trigger":
        return "non-zero or no argument fires"
    if param.kind == "choice":
        return ", ".join(param.choices)
    if param.kind == "objective":
        return "e.g. `inception4c:97`, `0.5*inception3b + mixed4c`"
    return ""


_ARG_TYPE = {
    "float": "float",
    "int": "int",
    "bool": "bool",
    "trigger": "—",
    "objective": "string",
    "choice": "string",
    "str": "string",
}


def address_table_markdown(params: Iterable[Param] = LIVE_PARAMS) -> str:
    """The OSC address space as a Markdown table (address, argument, range/unit, meaning)."""
    rows = [("Address", "Argument", "Range / unit", "Meaning")]
    for p in params:
        rows.append((f"`{PREFIX}/{p.name}`", _ARG_TYPE.get(p.kind, p.kind), _range_text(p), p.help))
    rows.append(
        (
            f"`{PREFIX}/<param>/norm`",
            "float",
            "0..1",
            "fader position along the parameter's curve, for every number and on/off parameter",
        )
    )
    rows += [(f"`{m.address}`", m.argument, m.accepts, m.meaning) for m in control_methods()]
    rows.append((
        f"`{ERROR_ADDRESS}` (sent)",
        "2 strings",
        "address, reason",
        "answer to a refused message, to its sender and feedback targets; nothing changed",
    ))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines) + "\n"
