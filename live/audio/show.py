"""Setting up the sound for a show: input, mapping, engine and its doors, from the show's options.

``run`` calls :func:`start_audio` (``live/app.py``) with what ``--audio``, ``--audio-map``,
``--audio-link`` and the site config's ``[audio]`` table say; everything it opens is closed
by the show's exit stack.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from live.audio.analysis import AnalysisSettings
from live.audio.engine import AudioEngine
from live.audio.inputs import open_input
from live.audio.mapping import AudioMapping, load_mapping, shipped_names, shipped_path
from live.audio.oscdoor import AudioOsc
from live.audio.webdoor import AudioWeb
from live.control.params import Registry
from live.errors import UsageError

log = logging.getLogger(__name__)


@dataclass
class AudioShow:
    """The running sound and its doors (OSC routes, the page's side)."""

    engine: AudioEngine
    door: AudioOsc
    web: AudioWeb

    def routes(self) -> dict[str, Any]:
        return self.door.routes()


def analysis_settings(values: Mapping[str, Any]) -> AnalysisSettings:
    """AnalysisSettings from the ``[audio]`` keys (``bands`` as a list of edges in Hz)."""
    values = dict(values)
    if "bands" in values:
        values["bands"] = AnalysisSettings.bands_from_edges(list(values["bands"]))
    known = {"bands", "attack_ms", "release_ms", "average_s", "gate_db", "sensitivity", "min_bpm", "max_bpm"}
    unknown = set(values) - known
    if unknown:
        raise UsageError(f"audio settings: unknown {sorted(unknown)}; known: {', '.join(sorted(known))}")
    return AnalysisSettings(**values)


def mapping_source(spec: str | Path) -> tuple[Path, bool]:
    """The file a ``--audio-map`` names and whether it is a shipped one (a name without a path)."""
    text = str(spec)
    path = Path(text).expanduser()
    if not path.exists() and path.name in shipped_names() and path.suffix == "":
        return shipped_path(path.name), True
    return path, False


def read_mapping(spec: str | Path | None, registry: Registry, settings: AnalysisSettings) -> tuple[AudioMapping, Path | None]:
    """The mapping a show starts with, and the file OSC and the page save to (None for a shipped one)."""
    if spec is None:
        return AudioMapping(), None
    path, shipped = mapping_source(spec)
    if not shipped and not path.exists():
        log.info("no audio mapping at %s yet: nothing mapped; OSC and the page save there", path)
        return AudioMapping(), path
    return load_mapping(path, registry, settings.band_names), None if shipped else path


def start_audio(stack: contextlib.ExitStack, registry: Registry, presets: Any, *, audio: str | None,
                mapping: str | Path | None, settings: Mapping[str, Any], link: bool, video: str,
                position: Callable[[], float | None], latency: Callable[[], float]) -> AudioShow:
    """Open the input, read the mapping, start the engine (its thread) and its doors."""
    analysis = analysis_settings(settings)
    initial, path = read_mapping(mapping, registry, analysis)
    source = None
    if audio:
        video_spec = None
        if audio.strip() == "source":
            from live.sources.files import VIDEO_EXTENSIONS

            spec = video.strip()
            if "://" in spec or Path(spec).suffix.lower() in VIDEO_EXTENSIONS:
                video_spec = spec
        source = open_input(audio, video=video_spec, position=position)
    clock = None
    if link:
        from live.audio.link import LinkClock

        clock = LinkClock.open()
    engine = AudioEngine(registry, source, initial, analysis, presets=presets, mapping_path=path, latency=latency,
                         link=clock)
    stack.enter_context(engine)
    door = AudioOsc(engine)
    stack.callback(door.close)
    return AudioShow(engine, door, AudioWeb(engine, door))
