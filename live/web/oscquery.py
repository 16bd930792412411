"""OSCQuery: the show's OSC address space as JSON, so controllers can build themselves from it.

Follows the OSCQuery proposal (Vidvox): a tree of nodes with ``FULL_PATH``, ``CONTENTS``,
``TYPE``, ``RANGE``, ``VALUE``, ``ACCESS`` and ``DESCRIPTION``; ``GET /path?ATTRIBUTE`` answers
``{"ATTRIBUTE": …}`` (204 when the node has none, 400 for an attribute this server does not
know); ``?HOST_INFO`` names the OSC port and transport.

Nothing here lists addresses of its own: parameters come from the registry, every other address
from :func:`live.control.osc_space.control_methods`, and values from
:func:`live.control.osc.value_messages`, the function that answers ``/dream/query`` over OSC.
The tree is built per request (about sixty nodes), so a ``VALUE`` is always the current one.

Conventions where the proposal leaves a choice: on/off parameters are ``T`` (clients send
T/F; the OSC server also takes 1/0); addresses that take no argument (``reset``, ``dump``,
``status``) are ``N`` with ACCESS 2, and a nil argument fires them; ``/dream/status/<field>``
nodes are read-only (ACCESS 1) and report the show's status.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

from live.control.osc import PREFIX, value_messages
from live.control.osc_space import FADER_KINDS, PARAM_TYPE_TAGS, control_methods
from live.control.params import Param, Registry
from live.model import catalog

ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "RANGE", "VALUE", "ACCESS", "DESCRIPTION")
HOST_INFO = "HOST_INFO"
EXTENSIONS = {  # what this server answers (HOST_INFO's EXTENSIONS)
    "ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "TAGS": False, "EXTENDED_TYPE": False,
    "UNIT": False, "CRITICAL": False, "CLIPMODE": False, "LISTEN": False, "PATH_CHANGED": False,
}  # fmt: skip

READ, WRITE, READ_WRITE = 1, 2, 3


def _status_type(value: Any) -> str:
    if isinstance(value, bool):
        return "T"
    if isinstance(value, int):
        return "i"
    if isinstance(value, float):
        return "f"
    return "s"


def _json_value(tag: str, value: Any) -> Any:
    """An OSC argument as JSON for a node of type ``tag`` (on/off as true/false)."""
    if tag in ("T", "F"):
        return bool(value)
    return value


class Namespace:
    """The OSCQuery view of one show.

    Args:
        registry: the live parameters.
        model: the network, for the layer list (``torchvision`` or ``bvlc``).
        osc: ``(host, port)`` the OSC server listens on, or None when OSC is off.
        status: the show's status fields (the same callable ``/dream/status`` answers from).
        presets: the preset names, for ``/dream/preset/load``'s choices.
        name: the show's name in ``HOST_INFO``.
        streams: how many ``--stream`` outputs the show has (one ``stream/<n>/enable`` each).
        audio: the sound's feature values by name (``/dream/audio/<feature>``, read-only), or
            None when the show has no sound (then no audio addresses either).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        model: str = "torchvision",
        osc: tuple[str, int] | None = None,
        status: Callable[[], Mapping[str, Any]] | None = None,
        presets: Callable[[], list[str]] | None = None,
        name: str | None = None,
        streams: int = 0,
        audio: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self.registry = registry
        self.audio = audio
        self.streams = streams
        self.catalog = catalog.for_model(model)
        self.osc = osc
        self.status = status
        self.presets = presets
        self.name = name or f"deepdream-live on {socket.gethostname()}"

    # ----- the tree
    def tree(self) -> dict[str, Any]:
        """The whole namespace from ``/``."""
        snap = self.registry.snapshot()
        values: dict[str, list[Any]] = {}
        for param in self.registry.params.values():
            values.update(value_messages(param, snap[param.name], triggers=True))
        dream: dict[str, Any] = {}
        for param in self.registry.params.values():
            self._insert(dream, param.name, self._param_node(param, values))
        sound = dict(self.audio()) if self.audio is not None else {}
        for method in control_methods(catalog.LAYERS, streams=self.streams, audio=self.audio is not None):
            node = {"FULL_PATH": method.address, "DESCRIPTION": method.meaning, "TYPE": method.type_tag,
                    "ACCESS": READ_WRITE if method.readable else WRITE}
            node.update(self._method_extras(method.name, snap))
            feature = method.name.removeprefix("audio/")
            if method.readable and method.name.startswith("audio/"):  # the sound's: read-only
                node.update(ACCESS=READ, VALUE=[float(sound.get(feature, 0.0))])
            elif method.readable and method.address in values:
                node["VALUE"] = [_json_value(method.type_tag, v) for v in values[method.address]]
            self._insert(dream, method.name, node)
        self._insert_status(dream)
        return {
            "FULL_PATH": "/",
            "ACCESS": 0,
            "DESCRIPTION": self.name,
            "CONTENTS": {PREFIX.strip("/"): {"FULL_PATH": PREFIX, "ACCESS": 0,
                                             "DESCRIPTION": "the live dream: every parameter and action",
                                             "CONTENTS": dream}},
        }  # fmt: skip

    def node(self, path: str) -> dict[str, Any] | None:
        """The node at ``path`` (``/dream/steps``), or None."""
        node = self.tree()
        for part in [p for p in path.split("/") if p]:
            node = node.get("CONTENTS", {}).get(part)
            if node is None:
                return None
        return node

    def host_info(self, local_ip: str | None = None) -> dict[str, Any]:
        """``?HOST_INFO``: the name, what this server answers, and where OSC goes.

        ``local_ip`` is the address the HTTP request came in on, reported as ``OSC_IP`` when the
        OSC server listens on every interface.
        """
        info: dict[str, Any] = {"NAME": self.name, "EXTENSIONS": dict(EXTENSIONS)}
        if self.osc is not None:
            host, port = self.osc
            if host in ("0.0.0.0", "::", "") and local_ip:
                host = local_ip
            info.update(OSC_IP=host, OSC_PORT=port, OSC_TRANSPORT="UDP")
        return info

    # ----- nodes
    @staticmethod
    def _insert(tree: dict[str, Any], relative: str, node: dict[str, Any]) -> None:
        """Put ``node`` at ``relative`` (``preset/load``) below ``/dream``, making containers on the way."""
        parts = relative.split("/")
        here = tree
        path = PREFIX
        for part in parts[:-1]:
            path += "/" + part
            parent = here.setdefault(part, {"FULL_PATH": path, "ACCESS": 0, "DESCRIPTION": part})
            here = parent.setdefault("CONTENTS", {})
        existing = here.get(parts[-1])
        if existing is not None and "CONTENTS" in existing:
            node = {**node, "CONTENTS": existing["CONTENTS"]}  # a container that is also a method
        here[parts[-1]] = node

    def _param_node(self, param: Param, values: Mapping[str, list[Any]]) -> dict[str, Any]:
        address = f"{PREFIX}/{param.name}"
        tag = PARAM_TYPE_TAGS[param.kind]
        description = param.help + (f" ({param.unit})" if param.unit else "")
        node: dict[str, Any] = {"FULL_PATH": address, "DESCRIPTION": description, "TYPE": tag,
                                "ACCESS": WRITE if param.kind == "trigger" else READ_WRITE}
        if param.kind in ("float", "int"):
            node["RANGE"] = [{"MIN": param.lo, "MAX": param.hi}]
        elif param.kind == "choice":
            node["RANGE"] = [{"VALS": list(param.choices)}]
        if param.kind != "trigger":
            node["VALUE"] = [_json_value(tag, v) for v in values[address]]
        if param.kind in FADER_KINDS:
            node["CONTENTS"] = {"norm": {
                "FULL_PATH": f"{address}/norm", "TYPE": "f", "ACCESS": READ_WRITE, "RANGE": [{"MIN": 0.0, "MAX": 1.0}],
                "VALUE": values[f"{address}/norm"],
                "DESCRIPTION": f"{param.name} as a fader position 0..1" + (" (log curve)" if param.curve == "log" else ""),
            }}  # fmt: skip
        return node

    def _method_extras(self, name: str, snap: Mapping[str, Any]) -> dict[str, Any]:
        """RANGE (and live choices) of the addresses that are not parameters."""
        if name == "layer":
            return {"RANGE": [{"VALS": [layer.name for layer in self.catalog.layers]}]}
        if name == "layer/norm":
            return {"RANGE": [{"MIN": 0.0, "MAX": 1.0}]}
        if name == "channel":
            layer = catalog.deepest(snap["objective"].layers) if "objective" in snap else catalog.LAYERS[0]
            return {"RANGE": [{"MIN": 0, "MAX": layer.channels - 1}]}
        if name == "preset/load" and self.presets is not None:
            return {"RANGE": [{"VALS": self.presets()}]}
        if name == "morph":
            hi = self.registry.params["morph_time"].hi if "morph_time" in self.registry.params else None
            return {"RANGE": [{"MIN": 0.0, "MAX": hi}]}
        if name == "learn":
            return {"RANGE": [{"VALS": list(self.registry.params)}]}
        if name == "query":
            return {"RANGE": [{"VALS": [*self.registry.params, "layer"]}]}
        return {}

    def _insert_status(self, dream: dict[str, Any]) -> None:
        if self.status is None:
            return
        try:
            fields = dict(self.status())
        except Exception:  # noqa: BLE001 - a status source failing must not break the namespace
            fields = {}
        contents = dream.setdefault("status", {}).setdefault("CONTENTS", {})
        for key, value in fields.items():
            if isinstance(value, (list, dict, tuple)) or value is None:
                continue  # structured fields are the page's, not OSC's
            tag = _status_type(value)
            osc_value = value if isinstance(value, (bool, int, float)) else str(value)
            contents[key] = {"FULL_PATH": f"{PREFIX}/status/{key}", "TYPE": tag, "ACCESS": READ,
                             "VALUE": [_json_value(tag, osc_value)], "DESCRIPTION": f"status: {key}"}


def attribute(node: Mapping[str, Any], name: str) -> tuple[int, dict[str, Any] | None]:
    """``(HTTP status, body)`` for ``?name`` on ``node``: 200 with ``{name: …}``, 204 when the
    node has no such attribute, 400 when this server does not know the attribute."""
    if name not in ATTRIBUTES:
        return 400, None
    if name not in node:
        return 204, None
    return 200, {name: node[name]}
