"""The OSC address space described once: what every address takes, means and answers.

The server (:mod:`live.control.osc`) routes these addresses; the README's table
(:mod:`live.control.osc_reference`) and the OSCQuery namespace (:mod:`live.web.oscquery`) are
both rendered from this description, so a controller that builds itself from OSCQuery sees the
same addresses a person reads about. A test checks that every address the server routes is
described here (docs/architecture.md, *Live control*).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from live.control.osc import _FADER_KINDS as FADER_KINDS  # kinds with a /norm address (0..1 along the curve)
from live.control.osc import ACTIONS, PREFIX, STATUS_FIELDS
from live.control.params import LIVE_PARAMS, Param
from live.model import catalog

# OSC type tags an OSCQuery client should send to a parameter's address ("N": no argument)
PARAM_TYPE_TAGS = {"float": "f", "int": "i", "bool": "T", "trigger": "N", "objective": "s", "choice": "s", "str": "s"}


@dataclass(frozen=True)
class Method:
    """One OSC address that is not a registry parameter's own.

    ``name`` is below the prefix (``preset/load``); ``argument`` and ``accepts`` are for people
    (the README's columns); ``type_tag`` is the OSC type tag a controller should send (``N``: no
    argument); ``readable``: the show reports a current value for it (``/dream/query``, OSCQuery
    ``?VALUE``).
    """

    name: str
    argument: str
    accepts: str
    meaning: str
    type_tag: str
    readable: bool = False

    @property
    def address(self) -> str:
        return f"{PREFIX}/{self.name}"


def audio_methods() -> tuple[Method, ...]:
    """The sound's addresses (:mod:`live.audio.oscdoor`): read-only feature nodes, queries, maps."""
    from live.audio.oscdoor import AUDIO_METHODS

    return tuple(Method(name, argument, accepts, meaning, tag, readable)
                 for name, argument, accepts, meaning, tag, readable in AUDIO_METHODS)


def control_methods(layers: Sequence[catalog.Layer] = catalog.LAYERS, streams: int | None = None,
                    audio: bool = True) -> tuple[Method, ...]:
    """Every address besides ``/dream/<param>`` and ``/dream/<param>/norm``, in the README's order.

    ``streams``: how many ``--stream`` outputs the show has, one ``stream/<n>/enable`` address
    each; None describes the pattern once (``stream/<n>/enable``), as the README does.
    ``audio``: with the sound's addresses (a show without ``--audio`` has none).
    """
    stream_names = ["stream/<n>/enable"] if streams is None else [f"stream/{n}/enable" for n in range(1, streams + 1)]
    assert set(ACTIONS) == {"preset/load", "preset/save", "morph", "learn", "record/start", "record/stop"}, (
        "describe every OSC action here"
    )
    return (
        Method("layer", "string or int", f"name, alias or 1..{len(layers)}",
               "dream on the whole layer (`inception4c`, `mixed4c`, `8`)", "s", readable=True),
        Method("layer/norm", "float", "0..1", f"layer by fader position, {layers[0].name} to {layers[-1].name}",
               "f", readable=True),
        Method("channel", "int", "0..channels-1", "one channel of the deepest layer in the objective", "i",
               readable=True),
        Method("preset/load", "string", "preset name", "load a preset (morphs when morph time > 0)", "s"),
        Method("preset/save", "string", "preset name", "save the current look as a preset", "s"),
        Method("morph", "float", "seconds ≥ 0", "cross-fade time for layer and preset changes", "f"),
        Method("learn", "string", "parameter name", "MIDI learn: the next moved control drives this parameter", "s"),
        Method("record/start", "—", "", "record to a new file named by the time (a take in progress is finished)", "N"),
        Method("record/stop", "—", "", "finish the recording in progress", "N"),
        *(Method(name, "bool", "0/1, T/F, true/false", "switch the n-th `--stream` off or on", "T")
          for name in stream_names),
        Method("query", "string", "parameter name or `layer`", f"replies `{PREFIX}/<param> <value>` (and `/norm`)",
               "s"),
        Method("dump", "—", "", "replies with every parameter", "N"),
        Method("status", "—", "", f"replies `{PREFIX}/status/<field> <value>` for {', '.join(STATUS_FIELDS)}", "N"),
        *(audio_methods() if audio else ()),
    )  # fmt: skip


def param_addresses(params: Iterable[Param] = LIVE_PARAMS) -> list[str]:
    """The addresses the registry's parameters answer on: ``/dream/<name>`` and, for faders,
    ``/dream/<name>/norm``."""
    out = []
    for p in params:
        out.append(f"{PREFIX}/{p.name}")
        if p.kind in FADER_KINDS:
            out.append(f"{PREFIX}/{p.name}/norm")
    return out


def accepted_addresses(params: Iterable[Param] = LIVE_PARAMS, streams: int = 0, audio: bool = False) -> list[str]:
    """Every address the OSC server acts on, parameters first (with ``audio``: the sound's too)."""
    return param_addresses(params) + [m.address for m in control_methods(streams=streams, audio=audio)]
