"""The OSC address space as documentation: the Markdown table in the README, from the registry.

Kept apart from the server (:mod:`live.control.osc`) so the server holds only what runs; a test
checks that the README's table equals what this renders.
"""

from __future__ import annotations

from collections.abc import Iterable

from live.control.osc import ERROR_ADDRESS, PREFIX, STATUS_FIELDS
from live.control.params import LIVE_PARAMS, Param
from live.model import catalog


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
    layers = catalog.LAYERS
    rows += [
        (
            f"`{PREFIX}/<param>/norm`",
            "float",
            "0..1",
            "fader position along the parameter's curve, for every number and on/off parameter",
        ),
        (
            f"`{PREFIX}/layer`",
            "string or int",
            f"name, alias or 1..{len(layers)}",
            "dream on the whole layer (`inception4c`, `mixed4c`, `8`)",
        ),
        (f"`{PREFIX}/layer/norm`", "float", "0..1", f"layer by fader position, {layers[0].name} to {layers[-1].name}"),
        (f"`{PREFIX}/channel`", "int", "0..channels-1", "one channel of the deepest layer in the objective"),
        (f"`{PREFIX}/preset/load`", "string", "preset name", "load a preset (morphs when morph time > 0)"),
        (f"`{PREFIX}/preset/save`", "string", "preset name", "save the current look as a preset"),
        (f"`{PREFIX}/morph`", "float", "seconds ≥ 0", "cross-fade time for layer and preset changes"),
        (f"`{PREFIX}/learn`", "string", "parameter name", "MIDI learn: the next moved control drives this parameter"),
        (
            f"`{PREFIX}/query`",
            "string",
            "parameter name or `layer`",
            f"replies `{PREFIX}/<param> <value>` (and `/norm`)",
        ),
        (f"`{PREFIX}/dump`", "—", "", "replies with every parameter"),
        (f"`{PREFIX}/status`", "—", "", f"replies `{PREFIX}/status/<field> <value>` for {', '.join(STATUS_FIELDS)}"),
        (
            f"`{ERROR_ADDRESS}` (sent)",
            "2 strings",
            "address, reason",
            "answer to a refused message, to its sender and feedback targets; nothing changed",
        ),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines) + "\n"
