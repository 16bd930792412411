"""``run --audio source --audio-map …``: the whole show with the sound of its own video driving the look."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from live.app import ShowOptions, run_show
from live.control.params import Registry
from tests.test_audio_render import music_video


def test_a_video_with_music_drives_the_show_through_its_own_sound(checkpoint: Path, tmp_path: Path) -> None:
    clip = music_video(tmp_path / "music.mp4")
    registry = Registry()
    registry.update({"width": 64, "height": 64, "steps": 1, "jitter": 4, "zoom": 0.001}, "test")
    zooms: list[tuple[float, str]] = []
    registry.subscribe(lambda name, value, source: zooms.append((value, source)) if name == "zoom" else None)
    opts = ShowOptions(source=str(clip), window=False, weights=str(checkpoint), status_every=3600, osc_port=0,
                       midi=False, web=False, audio="source", audio_map="bass-zoom")
    stop = threading.Event()
    result: list[object] = []
    show = threading.Thread(target=lambda: result.append(run_show(opts, registry, stop)), daemon=True)
    show.start()
    deadline = time.monotonic() + 60
    while not any(source == "audio" and value > 0.004 for value, source in zooms) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    show.join(timeout=60)
    assert not show.is_alive() and result
    assert any(source == "audio" and value > 0.004 for value, source in zooms), zooms[-5:]  # the bass pushed it
    assert registry.get("zoom") == 0.001  # the show is over: the operator's value again
