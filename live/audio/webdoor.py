"""The sound on the web page: meters and a beat light, tap and follow, the mapping to edit.

The web server (:mod:`live.web.server`) hands every ``audio/…`` op from a page to
:meth:`AudioWeb.handle` and sends :meth:`AudioWeb.payload` to each page ``METER_RATE`` times a
second, newest only (a slow page gets fewer, never a queue). Ops, each checked before use:

- ``{"op": "audio/tap"}``, ``{"op": "audio/follow"}``;
- ``{"op": "audio/map", "map": {feature, param, mode, min, max, …}}`` (checked as a file's map);
- ``{"op": "audio/unmap", "param": "zoom"}``; ``{"op": "audio/mapping", "name": "bass-zoom"}``;
- ``{"op": "audio/save"}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from live.audio.features import FEATURES, NODE_FEATURES
from live.audio.mapping import ACTIONS, MAP_KEYS, MODES, replace_map, shipped_names, without_param
from live.audio.oscdoor import AudioOsc
from live.errors import UsageError

METER_RATE = 20.0  # meter updates a second per page


class AudioWeb:
    """The page's side of one show's :class:`~live.audio.engine.AudioEngine`."""

    def __init__(self, engine: Any, door: AudioOsc | None = None) -> None:
        self.engine = engine
        self.door = door or AudioOsc(engine)

    def values(self) -> dict[str, float]:
        """Every feature by name (OSCQuery's read-only nodes)."""
        return self.engine.features.values()

    def hello(self) -> dict[str, Any]:
        """What a page needs to draw the sound panel."""
        mappable = [p.name for p in self.engine.registry.params.values() if p.kind in ("float", "int")]
        return {"features": [{"name": n, "help": FEATURES[n][0]} for n in NODE_FEATURES],
                "bands": list(self.engine.settings.band_names), "params": mappable, "modes": list(MODES),
                "actions": list(ACTIONS), "shipped": shipped_names(), "mapping": self.mapping(),
                "input": self.engine.status()["input"], "saving": self.engine.mapping_path is not None}

    def mapping(self) -> dict[str, Any]:
        m = self.engine.mapper.mapping
        return {"maps": [{k: getattr(x, k) for k in MAP_KEYS} for x in m.maps],
                "triggers": [t.describe() for t in m.triggers]}

    def payload(self) -> dict[str, Any]:
        """The meters: every feature, the onsets, the beat count and the tempo's source."""
        out = self.engine.features.as_json()
        status = self.engine.status()
        out["input_status"] = status["input_status"]
        out["refused"] = status["refused"]
        return out

    def handle(self, op: str, data: Mapping[str, Any]) -> dict[str, Any] | None:
        """Act on one page op; returns a message for that page, or raises UsageError."""
        if op == "audio/tap":
            self.engine.registry.set("tap", True, "web")  # the one tap door: MIDI, OSC and keys share it
            return None
        if op == "audio/follow":
            self.engine.follow()
            return {"type": "notice", "message": "tempo: following the sound"}
        if op == "audio/map":
            entry = data.get("map")
            if not isinstance(entry, dict) or len(entry) > len(MAP_KEYS):
                raise UsageError("audio/map expects a map: feature, param, mode, min, max")
            new = self.door.check_map({str(k)[:32]: v for k, v in entry.items()}, "the page")
            self.engine.set_mapping(replace_map(self.engine.mapper.mapping, new))
            return {"type": "audio_mapping", "mapping": self.mapping()}
        if op == "audio/unmap":
            name = data.get("param")
            if not isinstance(name, str) or name not in self.engine.mapper.mapping.params:
                raise UsageError(f"audio/unmap: the sound drives no {str(name)[:40]!r}")
            self.engine.set_mapping(without_param(self.engine.mapper.mapping, name))
            return {"type": "audio_mapping", "mapping": self.mapping()}
        if op == "audio/mapping":
            name = data.get("name")
            if not isinstance(name, str):
                raise UsageError("audio/mapping expects a mapping name")
            self.door.load(name)
            return {"type": "audio_mapping", "mapping": self.mapping()}
        if op == "audio/save":
            path = self.engine.save()
            return {"type": "notice", "message": f"audio mapping saved to {path.name}"}
        raise UsageError(f"unknown op {op[:40]!r}")
