"""Sound drives the dream: audio-reactive parameters and tempo sync (docs/architecture.md, *Sound*).

- :mod:`live.audio.inputs`: a device (PortAudio through ``sounddevice``), a sound file played in
  real time, or a video source's own sound.
- :mod:`live.audio.analysis` and :mod:`live.audio.tempo`: levels, bands relative to their
  long-term average, per-band onsets, tempo, beat phase and tap tempo, in numpy.
- :mod:`live.audio.mapping` and :mod:`live.audio.mapper`: what drives what (a TOML file like the
  MIDI mapping), written through the registry's one validation path.
- :mod:`live.audio.engine`: all of it on one thread for the show; :mod:`live.audio.oscdoor` and
  :mod:`live.audio.webdoor`: its OSC addresses and its side of the web page;
  :mod:`live.audio.timeline`: the same analysis for ``render``; :mod:`live.audio.link`: Ableton Link.

Nothing here needs a sound card to import or to run: without one the show says "no audio
device" once and goes on.
"""
