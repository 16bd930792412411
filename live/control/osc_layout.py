"""The shipped Open Stage Control session, generated from the parameter registry.

``live/control/layouts/open-stage-control.json`` is written by :func:`write_layout`; a test
checks that the shipped file equals what this generates, so a new parameter cannot be forgotten.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from live.control.osc import PREFIX, STATUS_FIELDS
from live.control.params import LIVE_PARAMS, Param
from live.model import catalog

LAYOUT_PATH = Path(__file__).parent / "layouts" / "open-stage-control.json"


def _decimals(param: Param) -> int:
    if param.kind == "int":
        return 0
    span = param.hi - param.lo
    return 3 if span <= 0.2 else 2 if span <= 10 else 1


def _widget(kind: str, wid: str, address: str, **props: Any) -> dict[str, Any]:
    return {"type": kind, "id": wid, "address": address, "preArgs": "", "target": "", **props}


def _panel(wid: str, layout: str, widgets: list[dict[str, Any]], **props: Any) -> dict[str, Any]:
    # bypass: a scrolled panel would otherwise send its scroll position as an OSC message
    return {
        "type": "panel",
        "id": f"panel_{wid}",
        "layout": layout,
        "expand": True,
        "bypass": True,
        "widgets": widgets,
        **props,
    }


def open_stage_control_session(params: Iterable[Param] = LIVE_PARAMS) -> dict[str, Any]:
    """An Open Stage Control (v1) session: faders, toggles, layer menu, presets and status.

    Faders speak engineering units at ``/dream/<param>`` (log faders where the curve is log),
    so they show real values and follow the server's feedback. Start Open Stage Control with
    ``--send 127.0.0.1:9000`` and give the show ``--osc-feedback 127.0.0.1:<its osc port>``.
    """
    params = list(params)
    faders, toggles, buttons = [], [], []
    for p in params:
        address = f"{PREFIX}/{p.name}"
        label = f"{p.name} ({p.unit})" if p.unit else p.name
        if p.kind in ("float", "int"):
            faders.append(
                _widget(
                    "fader",
                    p.name,
                    address,
                    label=label,
                    comments=p.help,
                    range={"min": p.lo, "max": p.hi},
                    logScale=p.curve == "log",
                    decimals=_decimals(p),
                    default=p.default,
                    doubleTap=True,
                    expand=True,
                )
            )
        elif p.kind == "bool":
            toggles.append(
                _widget(
                    "button",
                    p.name,
                    address,
                    label=p.name,
                    comments=p.help,
                    mode="toggle",
                    on=1,
                    off=0,
                    default=int(p.default),
                )
            )
        elif p.kind == "trigger":
            buttons.append(_widget("button", p.name, address, label=p.name, comments=p.help, mode="tap", on=1, off=0))
    buttons.append(
        _widget(
            "button",
            "dump",
            f"{PREFIX}/dump",
            label="sync",
            mode="tap",
            on=None,
            comments="ask the show for every current value",
        )
    )

    objective = next((p for p in params if p.kind == "objective"), None)
    current = catalog.resolve(str(objective.default)).name if objective else catalog.LAYERS[0].name
    dream = [
        _widget(
            "dropdown",
            "layer",
            f"{PREFIX}/layer",
            label="layer",
            values={f"{layer.index + 1} {layer.name}": layer.name for layer in catalog.LAYERS},
            default=current,
        ),
        _widget("input", "channel", f"{PREFIX}/channel", label="channel", default=""),
    ]
    if objective is not None:
        dream.append(_widget("input", "objective", f"{PREFIX}/objective", label="objective", default=current))

    slots = [str(i) for i in range(1, 9)]
    presets = [
        _widget("input", "preset_load", f"{PREFIX}/preset/load", label="load preset", default=""),
        _widget("input", "preset_save", f"{PREFIX}/preset/save", label="save preset", default=""),
        *(
            _widget("button", f"load_{s}", f"{PREFIX}/preset/load", label=f"load {s}", mode="tap", on=s, off="")
            for s in slots
        ),
        # saving overwrites a preset: a double tap keeps a stray touch from doing it
        *(
            _widget(
                "button",
                f"save_{s}",
                f"{PREFIX}/preset/save",
                label=f"save {s}",
                mode="tap",
                on=s,
                off="",
                doubleTap=True,
            )
            for s in slots
        ),
    ]
    status = [_widget("text", f"status_{f}", f"{PREFIX}/status/{f}", label=f, default="") for f in STATUS_FIELDS]

    tab = {
        "type": "tab",
        "id": "dream",
        "label": "dream",
        "layout": "vertical",
        "bypass": True,
        "widgets": [
            _panel("status", "horizontal", status, height=60, expand=False),
            _panel("objective", "horizontal", dream, height=60, expand=False),
            _panel("faders", "horizontal", faders),
            _panel("switches", "horizontal", toggles + buttons, height=80, expand=False),
            _panel("presets", "grid", presets, gridTemplate=9, height=160, expand=False),
        ],
        "tabs": [],
    }
    return {
        "createdWith": "Open Stage Control",
        "version": "1.26.2",
        "type": "session",
        "content": {"type": "root", "id": "root", "bypass": True, "widgets": [], "tabs": [tab]},
    }


def write_layout(path: Path = LAYOUT_PATH, params: Iterable[Param] = LIVE_PARAMS) -> Path:
    """(Re)write the shipped Open Stage Control session from the registry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(open_stage_control_session(params), indent=2, ensure_ascii=False) + "\n")
    return path
