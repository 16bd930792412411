"""The sound of a file as a look per moment, for ``render``: the same analysis and mapping as the
live show, run over the input's own sound in step with its frames.

:class:`AudioLook` is called with each frame's time (seconds into the file, increasing); it
analyses the sound up to that moment, block by block, applying the mapping to a registry of its
own, and returns that registry's snapshot: the look the frame is dreamed with. It is
deterministic: no threads, no wall clock (the mapper's clock is the sound's own time), no
lookahead (a file has no latency), so the same file and mapping change the same parameters at
the same frames on every run, and a resumed render finds them again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from live.audio.analysis import Analyzer
from live.audio.inputs import RATE, _decode
from live.audio.mapper import Mapper
from live.audio.mapping import AudioMapping
from live.control.params import Registry, Snapshot
from live.errors import InputError

log = logging.getLogger(__name__)


class AudioLook:
    """``look(t)`` → the snapshot to dream the frame at ``t`` seconds with."""

    def __init__(self, path: Path, mapping: AudioMapping, registry: Registry, settings: Any = None,
                 presets_dir: Path | None = None) -> None:
        from dataclasses import replace

        from live.audio.analysis import AnalysisSettings
        from live.control.presets import PresetStore

        self.path = Path(path)
        self.registry = Registry(tuple(registry.params.values()))
        snap = registry.snapshot()
        self.registry.update({k: snap[k] for k in snap if registry.params[k].kind != "trigger"}, "render")
        settings = replace(settings or AnalysisSettings(), rate=RATE)
        self.analyzer = Analyzer(settings)
        self.mapper = Mapper(self.registry, mapping, presets=PresetStore(self.registry, presets_dir),
                             clock=lambda: self.analyzer.time, run_actions_inline=True)
        self._blocks = self._read()
        self.ended = False
        text = repr((mapping, settings, str(self.path)))
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]

    def _read(self) -> Iterator[np.ndarray]:
        block = self.analyzer.settings.block
        carry = np.zeros(0, np.float32)
        for chunk in _decode(str(self.path), RATE):
            data = np.concatenate((carry, chunk)) if len(carry) else chunk
            whole = len(data) // block * block
            for i in range(0, whole, block):
                yield data[i:i + block]
            carry = data[whole:]
        if not self.ended:
            log.info("%s: the sound ended at %.1f s; silence from there on", self.path.name, self.analyzer.time)
        self.ended = True
        silence = np.zeros(block, np.float32)
        while True:
            yield silence

    def __call__(self, t: float) -> Snapshot:
        while self.analyzer.time < t:
            f = self.analyzer.process(next(self._blocks))
            self.mapper.apply(f, self.analyzer.tempo.state(f.time), 0.0)
        return self.registry.snapshot()


def audio_look(source: Path, mapping: str | Path, registry: Registry, settings: Mapping[str, Any] | None = None,
               presets: Any = None) -> AudioLook:
    """The look of ``render``'s input under ``mapping`` (a file or a shipped name); InputError
    when the input has no sound."""
    from live.audio.inputs import probe_sound
    from live.audio.mapping import load_mapping
    from live.audio.show import analysis_settings, mapping_source

    analysis = analysis_settings(settings or {})
    path, _ = mapping_source(mapping)
    chosen = load_mapping(path, registry, analysis.band_names)
    try:
        probe_sound(str(source))
    except InputError as e:
        raise InputError(f"render --audio-map uses the input's own sound: {e}") from None
    return AudioLook(Path(source), chosen, registry, analysis,
                     getattr(presets, "directory", None))
