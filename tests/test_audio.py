"""Sound drives the dream: analysis, tempo, mappings and the doors, on generated and real sounds.

Generated drums (live/audio/testsignals.py) carry their own truth; real sounds come from
Debian's espeak-ng and sox where installed (the Makefile's APT_TEST_PACKAGES).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from live.audio import testsignals as ts
from live.audio.analysis import AnalysisSettings, Analyzer
from live.audio.engine import AudioEngine
from live.audio.mapper import Mapper
from live.audio.mapping import (
    AudioMapping,
    ContinuousMap,
    Trigger,
    load_mapping,
    parse_text,
    resolve_mapping,
    save_mapping,
    shipped_names,
)
from live.control.params import Registry
from live.errors import DataError, UsageError

BLOCK = 256


def run(samples: np.ndarray, analyzer: Analyzer | None = None):
    a = analyzer or Analyzer()
    return [a.process(samples[i:i + BLOCK]) for i in range(0, len(samples) - BLOCK + 1, BLOCK)]


def stream(samples: np.ndarray, analyzer: Analyzer):
    """Each block's features as it is analysed (so the analyzer's state is that block's)."""
    for i in range(0, len(samples) - BLOCK + 1, BLOCK):
        yield analyzer.process(samples[i:i + BLOCK])


def write_wav(path: Path, samples: np.ndarray, rate: int = 48000) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def feed(engine: AudioEngine, samples: np.ndarray) -> list:
    return [engine.process(samples[i:i + BLOCK]) for i in range(0, len(samples) - BLOCK + 1, BLOCK)]


# ----------------------------------------------------------------------------- analysis


def test_a_60_hz_tone_moves_low_only() -> None:
    quiet = ts.noise(3.0, -30)  # white noise: the low band is 21 dB below it, still above the gate
    tone = ts.tone(60, 1.0, amplitude=0.5) + ts.noise(1.0, -30, seed=2)
    features = run(np.concatenate([quiet, tone]))

    def mean(band: str, t0: float, t1: float) -> float:
        return float(np.mean([f.bands[band] for f in features if t0 <= f.time < t1]))

    for band in ("low", "mid", "high"):  # as loud as usual (the follower rides the noise's peaks)
        assert 0.6 < mean(band, 2.0, 3.0) < 2.5
    assert mean("low", 3.2, 4.0) > 10 * mean("low", 2.0, 3.0)  # the tone is far above the low band's usual
    for band in ("mid", "high"):  # mid and high do not move
        assert 0.75 < mean(band, 3.2, 4.0) / mean(band, 2.0, 3.0) < 1.3
    during = features[int(3.5 * 48000 / BLOCK)]
    assert during.level > 0.3 and during.peak > 0.45


def test_silence_reads_zero_and_a_band_average_is_held_through_it() -> None:
    a = Analyzer()
    run(ts.noise(3.0, -30), a)
    silent = run(np.zeros(2 * 48000, np.float32), a)[-1]
    assert silent.silent and silent.level < 1e-3 and all(v < 0.01 for v in silent.bands.values())
    back = run(ts.noise(0.2, -30, seed=5), a)[-1]
    assert 0.5 < back.bands["high"] < 2  # the same noise after the pause is "as usual", not a spike


@pytest.mark.parametrize("bpm", [90, 120, 174])
def test_onsets_of_drums_with_noise_score_f_at_least_0_9_within_30_ms(bpm: float) -> None:
    p = ts.drum_pattern(bpm, 8.0, noise_db=-30, seed=bpm, lead_in=1.0)  # the noise, then the drums
    a = Analyzer()
    found: dict[str, list[float]] = {"any": [], "low": [], "high": []}
    for f in stream(p.samples, a):
        for name in f.onsets:
            if name in found:
                found[name].append(a.onset_times()[[*a.names, "any"].index(name)])
    f_any = ts.f_measure(np.array(found["any"]), p.onsets())[0]
    f_kick = ts.f_measure(np.array(found["low"]), p.hits["kick"])[0]
    f_hat = ts.f_measure(np.array(found["high"]), p.hits["hat"])[0]
    assert f_any >= 0.9 and f_kick >= 0.9 and f_hat >= 0.9, (f_any, f_kick, f_hat)


@pytest.mark.parametrize("bpm", [90, 120, 174])
def test_tempo_is_within_one_bpm_within_four_seconds(bpm: float) -> None:
    p = ts.drum_pattern(bpm, 6.0, noise_db=-30, seed=bpm + 1)
    features = run(p.samples)
    at_four = [f for f in features if f.time <= 4.0][-1]
    assert abs(at_four.bpm - bpm) <= 1.0, at_four.bpm
    assert all(abs(f.bpm - bpm) <= 1.0 for f in features if f.time >= 4.0)
    assert at_four.confidence > 0.3 and at_four.tempo_source == "tracked"


def test_tempo_follows_a_ten_percent_change_without_wandering_and_beats_land_on_the_beat() -> None:
    p = ts.drum_pattern([(0, 120), (8, 132)], 16.0, noise_db=-30)
    a = Analyzer()
    rows, beats, seen = [], [], None
    for f in stream(p.samples, a):
        rows.append((f.time, f.bpm))
        if f.beat_index is not None and f.beat_index != seen:
            seen = f.beat_index
            beats.append(a.tempo.state(f.time).last_beat)
    rows_a = np.array(rows)
    after = rows_a[rows_a[:, 0] >= 8.0]
    assert after[:, 1].min() >= 119.0 and after[:, 1].max() <= 133.0  # between the two, no octave jumps
    settled = after[after[:, 0] >= 12.0]
    assert np.all(np.abs(settled[:, 1] - 132) <= 1.0)
    steady = [b for b in beats if 4 < b < 8 or 13 < b < 16]
    errors = [b - p.beats[np.argmin(np.abs(p.beats - b))] for b in steady]
    assert max(abs(e) for e in errors) < 0.02  # beats within 20 ms of the drums' own


def test_tap_tempo_sets_the_beat_and_the_first_tap_is_beat_zero() -> None:
    a = Analyzer()
    run(np.zeros(48000, np.float32), a)
    for k in range(4):
        a.tempo.tap(1.0 + k * 0.6)  # 100 BPM
    f = run(np.zeros(int(0.5 * 48000), np.float32), a)[-1]  # now about 1.5 s: after the 4th tap at 2.8? no: taps queue
    assert f.tempo_source == "tap" and abs(f.bpm - 100) < 1e-6 and f.confidence == 1.0
    state = a.tempo.state(1.0 + 3 * 0.6 + 0.3)
    assert state.beat_index == 3 and abs(state.phase - 0.5) < 1e-6
    a.tempo.follow()
    assert run(np.zeros(BLOCK, np.float32), a)[-1].tempo_source == "none"


def test_settings_refuse_what_cannot_work() -> None:
    with pytest.raises(UsageError, match="block"):
        AnalysisSettings(block=512)
    with pytest.raises(UsageError, match="within 0..24000"):
        AnalysisSettings(bands=(("low", 20.0, 30000.0),))
    with pytest.raises(UsageError, match="each edge must be above the one before"):
        AnalysisSettings.bands_from_edges([20, 200, 100])
    assert AnalysisSettings.bands_from_edges([20, 200, 2000, 16000])[1] == ("mid", 200.0, 2000.0)
    assert [b[0] for b in AnalysisSettings.bands_from_edges([20, 100, 400, 2000, 8000])] == \
        ["band1", "band2", "band3", "band4"]


# ----------------------------------------------------------------------------- mappings


def mapping(text: str, reg: Registry | None = None) -> AudioMapping:
    return parse_text(text, reg or Registry())


@pytest.mark.parametrize("text, message", [
    ('[[map]]\nfeature = "low"\nparam = "zoom"\nmode = "set"\nmin = 0\nmax = 0.5', r"max = 0.5: expected within zoom's range -0.05..0.05"),
    ('[[map]]\nfeature = "low"\nparam = "zoom"\nmax = 0.2', r"an amount within ±0.1"),
    ('[[map]]\nfeature = "bass"\nparam = "zoom"', r"feature = 'bass': expected one of low, mid, high"),
    ('[[map]]\nfeature = "low"\nparam = "objective"', r"expected a number parameter"),
    ('[[map]]\nfeature = "low"\nparam = "zoom"\nspeed = 3', r"unknown key 'speed'"),
    ('[[map]]\nfeature = "low"\nparam = "zoom"\nin_min = 1\nin_max = 1', r"in_min and in_max are both 1"),
    ('[[map]]\nfeature = "low"\nparam = "step_size"\nmode = "set"\nmin = 0\nmax = 4\ncurve = "log"', r"min = 0"),
    ('[[map]]\nfeature="low"\nparam="mix"\nmode="set"\n[[map]]\nfeature="high"\nparam="mix"\nmode="set"', r"two set maps drive mix"),
    ('[[trigger]]\non = "beat"\naction = "next_preset"', r"needs presets"),
    ('[[trigger]]\non = "beat"\naction = "morph"\npresets = ["../etc"]', r"no paths"),
    ('[[trigger]]\non = "snare"\naction = "reset"', r"on = 'snare': expected one of beat, onset, onset.low"),
    ('[[trigger]]\non = "beat"\naction = "reset"\nevery = 0', r"every = 0: expected an integer 1..1024"),
    ('confidence = 2', r"confidence = 2: expected 0..1"),
    ('[[map]]\nfeature = "low"\nparam = "zoom"\nmax = nan', r"max = nan"),
    ('map = 3', r"map must be a list of tables"),
])
def test_a_mapping_file_is_refused_whole_with_what_is_allowed(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        mapping(text)


def test_shipped_mappings_load_and_a_saved_mapping_reads_back(tmp_path: Path) -> None:
    reg = Registry()
    assert set(shipped_names()) >= {"bass-zoom", "breathe", "kick-reset"}
    bass = resolve_mapping("bass-zoom", reg)
    assert [m.param for m in bass.maps] == ["zoom", "step_size"] and bass.triggers[0].every == 16
    save_mapping(tmp_path / "m.toml", bass)
    assert load_mapping(tmp_path / "m.toml", reg) == bass
    big = tmp_path / "big.toml"
    big.write_text("#" * 70000)
    with pytest.raises(DataError, match="larger than 64 KiB"):
        load_mapping(big, reg)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.02  # every block may write
        return self.t


def test_silence_leaves_every_mapped_parameter_at_its_base() -> None:
    reg = Registry()
    reg.update({"zoom": 0.01, "mix": 0.7, "step_size": 3.0, "jitter": 12, "drift_x": 1.0, "rotate": 0.5}, "osc")
    before = dict(reg.snapshot())
    maps = [m for name in shipped_names() for m in resolve_mapping(name, reg).maps]
    maps.append(ContinuousMap("low", "feedback", mode="set", min=0.2, max=0.9, in_max=2.0))
    mapper = Mapper(reg, AudioMapping(tuple(m for m in maps if not (m.mode == "set" and m.param == "mix")) +
                                      (ContinuousMap("level", "mix", "set", 0.4, 1.0, 0.0, 0.3),)),
                    clock=FakeClock(), run_actions_inline=True)
    a = Analyzer()
    for f in stream(np.concatenate([np.zeros(48000, np.float32), ts.noise(1.0, -100)]), a):
        mapper.apply(f, a.tempo.state(f.time), 0.0)
    after = dict(reg.snapshot())
    assert after == before  # silence (and a noise floor far below the gate) changes nothing
    assert mapper.refused == 0


def test_music_moves_mapped_parameters_and_silence_brings_them_back() -> None:
    reg = Registry()
    reg.set("zoom", 0.005, "osc")
    mapper = Mapper(reg, resolve_mapping("bass-zoom", reg), clock=FakeClock(), run_actions_inline=True)
    a = Analyzer()
    zooms = []
    music = ts.drum_pattern(120, 4.0, noise_db=-40).samples
    for f in stream(np.concatenate([music, np.zeros(int(1.5 * 48000), np.float32)]), a):
        mapper.apply(f, a.tempo.state(f.time), 0.0)
        zooms.append((f.time, reg.get("zoom")))
    during = [z for t, z in zooms if 1.0 < t < 4.0]
    assert max(during) > 0.009 and min(during) >= 0.005  # the bass pushes the zoom above the operator's
    assert zooms[-1][1] == 0.005  # the music stopped: back to the operator's value
    reg.set("zoom", 0.02, "midi")  # a fader moved meanwhile: that is the new base
    mapper.close()
    assert reg.get("zoom") == 0.02


def test_a_clipped_burst_never_pushes_a_parameter_outside_its_range() -> None:
    reg = Registry()
    reg.update({"zoom": 0.045, "step_size": 30.0}, "osc")  # near the top of both ranges
    mapper = Mapper(reg, resolve_mapping("bass-zoom", reg), clock=FakeClock(), run_actions_inline=True)
    seen: list[tuple[str, float]] = []
    reg.subscribe(lambda name, value, source: seen.append((name, value)))
    a = Analyzer()
    burst = np.concatenate([ts.noise(2.0, -40), np.clip(ts.tone(50, 1.0, amplitude=4.0) + ts.noise(1.0, -6), -1, 1)])
    for f in stream(burst, a):
        mapper.apply(f, a.tempo.state(f.time), 0.0)
    for name in ("zoom", "step_size"):
        p = reg.params[name]
        assert all(p.lo <= v <= p.hi for n, v in seen if n == name)
    assert mapper.refused > 0  # refused, not clamped: counted and logged
    assert reg.get("zoom") <= 0.05


def test_a_map_added_at_run_time_keeps_the_operator_value_as_its_base() -> None:
    reg = Registry()
    mapper = Mapper(reg, AudioMapping(), clock=FakeClock(), run_actions_inline=True)
    reg.set("rotate", 1.0, "web")
    mapper.set_mapping(AudioMapping((ContinuousMap("level", "rotate", "add", 0.0, 2.0, 0.0, 0.5),)))
    a = Analyzer()
    for f in stream(ts.noise(0.5, -10), a):
        mapper.apply(f, a.tempo.state(f.time), 0.0)
    assert reg.get("rotate") > 2.0
    mapper.set_mapping(AudioMapping())  # unmapped: back to the operator's value
    assert reg.get("rotate") == 1.0


def layer_changes(reg: Registry) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    reg.subscribe(lambda name, value, source: out.append((str(value), source)) if name == "objective" else None)
    return out


def test_every_fourth_beat_steps_the_layer_early_by_the_lookahead() -> None:
    reg = Registry()
    changes = layer_changes(reg)
    at: list[float] = []
    trig = AudioMapping(triggers=(Trigger("beat", "next_layer", every=4),))
    mapper = Mapper(reg, trig, clock=FakeClock(), run_actions_inline=True)
    p = ts.drum_pattern(120, 12.0, noise_db=-30)
    a = Analyzer()
    count = 0
    for f in stream(p.samples, a):
        mapper.apply(f, a.tempo.state(f.time), 0.1)
        if len(changes) > count:
            count = len(changes)
            at.append(f.time)
    assert len(at) >= 3 and [c[1] for c in changes] == ["audio"] * len(changes)
    assert changes[0][0] == "inception4d"  # inception4c -> the next layer
    gaps = np.diff(at)
    assert np.all(np.abs(gaps - 2.0) < 0.03)  # every four beats at 120 BPM
    grid = np.arange(0.0, 14.0, 0.5)  # the drums' beats, and those just past the end
    for t in at:  # 100 ms before a beat of the drums
        assert np.min(np.abs(grid - (t + 0.1))) < 0.02


def test_onsets_quantised_fire_on_the_next_beat_and_silence_fires_nothing() -> None:
    reg = Registry()
    resets = []
    reg.subscribe(lambda name, value, source: resets.append(value) if name == "reset" else None)
    trig = AudioMapping(triggers=(Trigger("onset.low", "reset", every=2, quantise=True),
                                  Trigger("beat", "prev_layer", every=1)))
    mapper = Mapper(reg, trig, clock=FakeClock(), run_actions_inline=True)
    a = Analyzer()
    for f in stream(np.concatenate([np.zeros(48000 * 2, np.float32), ts.noise(1.0, -90)]), a):
        mapper.apply(f, a.tempo.state(f.time), 0.0)
    assert resets == [] and reg.get("objective").layers == ("inception4c",)
    p = ts.drum_pattern(120, 8.0, noise_db=-30)
    fired_at = []
    for f in stream(p.samples, a):
        n = len(resets)
        mapper.apply(f, a.tempo.state(f.time), 0.0)
        if len(resets) > n:
            fired_at.append(f.time - 2.0 - 1.0)
    tracked = [t for t in fired_at if t > 3.0]  # once the tempo is found (every 2nd kick: 3.5, 5.5, 7.5 s)
    assert len(tracked) >= 3
    for t in tracked:  # on a beat (within a block), not at the kick's own moment only
        assert np.min(np.abs(p.beats - t)) < 0.012


# ----------------------------------------------------------------------------- the engine and inputs


def test_a_sound_file_drives_a_mapping_end_to_end_in_real_time(tmp_path: Path) -> None:
    from live.audio.inputs import FileInput

    wav = write_wav(tmp_path / "drums.wav", ts.drum_pattern(120, 3.0, noise_db=-40).samples)
    reg = Registry()
    changed = []
    reg.subscribe(lambda name, value, source: changed.append((name, value, source)))
    with AudioEngine(reg, FileInput(wav), resolve_mapping("bass-zoom", reg)) as engine:
        deadline = time.monotonic() + 20
        while not any(n == "zoom" and v > 0.004 for n, v, _ in changed) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.features.level > 0.01
        assert engine.source.status == "live"
    assert any(n == "zoom" and v > 0.004 and s == "audio" for n, v, s in changed)
    assert reg.get("zoom") == 0.0  # closed: back to the operator's value


class FakeStream:
    def __init__(self, callback) -> None:
        self.callback = callback
        self.active = True
        self.latency = 0.01

    def start(self) -> None:
        pass

    def abort(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False


class FakeSoundDevice:
    """sounddevice's surface the input uses, with a device that can be unplugged."""

    def __init__(self) -> None:
        self.present = False
        self.streams: list[FakeStream] = []
        self.default = type("Default", (), {"device": (0, 0)})()

    def query_devices(self, index=None, kind=None):
        devices = [{"name": "USB Audio", "max_input_channels": 2, "default_samplerate": 48000.0, "hostapi": 0}] \
            if self.present else []
        if index is None and kind is None:
            return devices
        if not devices:
            raise OSError("no such device")
        return devices[0 if index is None else index]

    def check_input_settings(self, **kwargs) -> None:
        pass

    def InputStream(self, callback, **kwargs) -> FakeStream:
        if not self.present:
            raise OSError("Error opening InputStream: Invalid device")
        stream = FakeStream(callback)
        self.streams.append(stream)
        return stream


def test_a_missing_device_is_said_once_and_the_show_goes_on_until_it_returns(caplog) -> None:
    from live.audio.inputs import DeviceInput

    caplog.set_level(logging.INFO, logger="live.audio")
    sd = FakeSoundDevice()
    device = DeviceInput("USB", sd=sd, retry=0.02).start()
    try:
        time.sleep(0.2)
        assert device.status == "missing"
        assert caplog.text.count("no audio device") == 1
        sd.present = True
        deadline = time.monotonic() + 10
        while not sd.streams and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sd.streams and device.status == "live"
        sd.streams[-1].callback(np.full((BLOCK, 2), 0.25, np.float32), BLOCK, None, None)
        block, _ = device.queue.get(1.0)
        assert block.shape == (BLOCK,) and np.allclose(block, 0.25)  # mixed to mono
        sd.present = False
        sd.streams[-1].active = False  # unplugged
        deadline = time.monotonic() + 10
        while "audio device gone" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert caplog.text.count("audio device gone") == 1
        sd.present = True
        deadline = time.monotonic() + 10
        while "audio device back" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "audio device back: USB Audio" in caplog.text
    finally:
        device.close()


def test_without_a_sound_card_the_show_says_so_in_one_line_and_goes_on(caplog) -> None:
    """The real sounddevice and PortAudio on this machine, which has no sound card."""
    from live.audio.inputs import DeviceInput, describe_devices

    listing = describe_devices()
    if not listing.startswith("no audio"):
        pytest.skip(f"this machine has audio inputs: {listing}")
    reg = Registry()
    with AudioEngine(reg, DeviceInput("default", retry=0.05), resolve_mapping("breathe", reg)) as engine:
        time.sleep(0.4)
        assert engine.blocks > 0 and engine.features.silent  # the analysis runs on silence
    lines = [r.getMessage() for r in caplog.records if "no audio device" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "there is no default input device" in lines[0] and "goes on" in lines[0]
    assert reg.get("mix") == 1.0


def test_taps_from_the_registry_set_the_engine_tempo() -> None:
    reg = Registry()
    engine = AudioEngine(reg)
    feed(engine, np.zeros(4800, np.float32))
    start = time.monotonic()
    for k in range(4):
        engine.tap(start + 0.5 * k)  # 120 BPM
    reg.set("tap", True, "osc")  # the registry's tap is a tap too (OSC, MIDI, keys, the page)
    f = feed(engine, np.zeros(BLOCK, np.float32))[-1]
    assert f.tempo_source == "tap"
    engine.mapper.close()


# ----------------------------------------------------------------------------- real sounds


def sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True, timeout=60)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed (Debian: apt install sox)")
def test_sox_made_signals_through_the_file_decoder(tmp_path: Path) -> None:
    """A FLAC made by sox (pink noise, then a 60 Hz sine over it) decoded by PyAV like any file."""
    from live.audio.inputs import _decode

    sox("-n", "-r", "44100", str(tmp_path / "noise.flac"), "synth", "3", "pinknoise", "vol", "0.05")
    sox("-n", "-r", "44100", str(tmp_path / "sine.flac"), "synth", "1", "sine", "60", "vol", "0.5")
    sox("-m", str(tmp_path / "sine.flac"), str(tmp_path / "noise.flac"), str(tmp_path / "mix.flac"), "trim", "0", "1")
    sox(str(tmp_path / "noise.flac"), str(tmp_path / "mix.flac"), str(tmp_path / "all.flac"))
    samples = np.concatenate(list(_decode(str(tmp_path / "all.flac"), 48000)))
    assert abs(len(samples) / 48000 - 4.0) < 0.05  # resampled from 44.1 kHz
    features = run(samples)
    before, during = features[int(2.9 * 48000 / BLOCK)], features[int(3.5 * 48000 / BLOCK)]
    assert during.bands["low"] > 10 * before.bands["low"] and during.bands["mid"] < 1.5 * max(before.bands["mid"], 1)
    assert during.bands["high"] < 1.5


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (Debian: apt install espeak-ng)")
def test_speech_has_onsets_and_the_pause_after_it_rests_the_maps(tmp_path: Path) -> None:
    from live.audio.inputs import _decode

    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "one, two, three. The dream follows the sound."], check=True,
                   capture_output=True, timeout=60)
    speech = np.concatenate(list(_decode(str(wav), 48000)))
    reg = Registry()
    mapper = Mapper(reg, resolve_mapping("breathe", reg), clock=FakeClock(), run_actions_inline=True)
    a = Analyzer()
    onsets, mixes = 0, []
    for f in stream(np.concatenate([speech, np.zeros(3 * 48000, np.float32)]), a):
        mapper.apply(f, a.tempo.state(f.time), 0.0)
        onsets += "any" in f.onsets
        mixes.append(reg.get("mix"))
    assert onsets >= 5  # syllables
    assert min(mixes) < 0.9  # the voice moved the mix
    assert mixes[-1] == 1.0  # and the pause after it gave the operator's value back


# ----------------------------------------------------------------------------- a real audio stack: JACK


@pytest.mark.skipif(shutil.which("jackd") is None or shutil.which("jack_connect") is None,
                    reason="jackd is not installed (Debian: apt install jackd2)")
def test_a_jack_input_drives_a_mapping_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """jackd with the dummy driver; jack_metro plays beats into the show's PortAudio input."""
    import os

    sd = pytest.importorskip("sounddevice")
    server = f"ddaudio{os.getpid()}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server)
    monkeypatch.setenv("JACK_NO_AUDIO_RESERVATION", "1")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")  # libjack would start a server of its own, or abort
    jackd = subprocess.Popen(["jackd", "--no-realtime", "-n", server, "-d", "dummy", "-r", "48000", "-p", "256"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metro = None
    from live.audio.inputs import DeviceInput

    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["jack_lsp"], capture_output=True).returncode != 0 and time.monotonic() < deadline:
            assert jackd.poll() is None, "jackd with the dummy driver did not start"
            time.sleep(0.2)
        sd._terminate()
        sd._initialize()  # PortAudio reads its host APIs again: JACK is there now
        apis = [a["name"] for a in sd.query_hostapis()]
        if not any("JACK" in a for a in apis):
            pytest.skip(f"this PortAudio has no JACK host API ({apis})")
        metro = subprocess.Popen(["jack_metro", "-b", "120", "-f", "100", "-A", "0.9", "-D", "40"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reg = Registry()
        # louder is less camera: any sound takes mix below the operator's 1.0 (silence gives it back)
        mapping = AudioMapping((ContinuousMap("level", "mix", "set", 1.0, 0.2, 0.0, 0.05, smooth_ms=0),))
        device = DeviceInput("system", sd=sd, retry=0.2)
        with AudioEngine(reg, device, mapping) as engine:
            deadline = time.monotonic() + 30
            while device.status != "live" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert device.status == "live", "PortAudio's JACK input did not open"
            ports = subprocess.run(["jack_lsp"], capture_output=True, text=True).stdout.split()
            ours = [p for p in ports if p.startswith("PortAudio") and "in" in p.lower()]
            beeps = [p for p in ports if p.startswith("metro")]
            assert ours and beeps, ports
            for port in ours:
                subprocess.run(["jack_connect", beeps[0], port], capture_output=True)
            deadline = time.monotonic() + 20
            while reg.get("mix") == 1.0 and time.monotonic() < deadline:
                time.sleep(0.05)
            moved = reg.get("mix")
            onsets = engine.features
        assert moved != 1.0, "the beats from JACK never moved the mapped parameter"
        assert onsets.level >= 0.0
        assert reg.get("mix") == 1.0  # closed: the operator's value again
    finally:
        sd._terminate()  # PortAudio lets go of JACK while the server still runs (else it aborts)
        for p in (metro, jackd):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        sd._initialize()


# ----------------------------------------------------------------------------- Ableton Link


def test_link_alone_publishes_the_tempo_it_hears_and_with_peers_follows_them() -> None:
    pytest.importorskip("aalink", reason="aalink is not installed (the link extra)")
    from live.audio.link import LinkClock

    clock = LinkClock.open(enabled=False)  # a session of one: nothing goes on the network
    a = Analyzer()
    for f in stream(ts.drum_pattern(120, 6.0, noise_db=-30).samples, a):
        clock.feed(a.tempo, f)
    assert abs(clock.link.tempo - 120) < 1.0  # alone: the others would follow the music we hear
    clock.close()

    class Session:  # a session with a peer that plays at 128 BPM, beat 7.25 of its timeline
        num_peers, tempo, beat = 1, 128.0, 7.25

    peered = LinkClock(Session())
    peered.feed(a.tempo, a.last)
    f = a.process(np.zeros(BLOCK, np.float32))
    assert f.tempo_source == "link" and f.bpm == 128.0 and f.confidence == 1.0
    assert f.beat_index == 7 and abs(f.phase - (0.25 + BLOCK / 48000 / (60 / 128))) < 1e-6
