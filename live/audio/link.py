"""Ableton Link (optional extra ``deepdream-live[link]``): share tempo and beat with the stage.

Through ``aalink`` (GPL-3.0-or-later, wheels for Linux, macOS and Windows, maintained; Link
itself is GPL-2.0-or-later or proprietary, and this project is GPL-3.0-or-later, so the two
combine). Each block :meth:`LinkClock.feed` reads the session: with other peers in it, their
tempo and beat drive the show's beat (``tempo_source`` ``link``); alone, the show's own tracked
or tapped tempo is published to the session, so other software follows the music.

Link finds its peers by multicast on the local network; it is off until ``--audio-link`` or
``[audio] link = true`` asks for it. Without the extra, asking for it is a one-line error.
"""

from __future__ import annotations

import logging
from typing import Any

from live.errors import UnavailableError

log = logging.getLogger(__name__)

INSTALL_HINT = "install deepdream-live[link] (aalink)"


class LinkClock:
    """An Ableton Link session read and written once per analysis block."""

    def __init__(self, link: Any) -> None:
        self.link = link
        self._peers = -1
        self._published = 0.0

    @classmethod
    def open(cls, bpm: float = 120.0, enabled: bool = True) -> LinkClock:
        """Join the local Link session (UnavailableError without the extra)."""
        try:
            import asyncio

            from aalink import Link
        except ImportError as e:
            raise UnavailableError(f"Ableton Link needs the link extra: {INSTALL_HINT} ({e})") from None
        import warnings

        with warnings.catch_warnings():  # aalink wants a loop for its sync(); we only read and set
            warnings.simplefilter("ignore", DeprecationWarning)
            link = Link(bpm, asyncio.new_event_loop())
        link.enabled = enabled
        log.info("Ableton Link %s", "on: joining the local session" if enabled else "ready (not enabled)")
        return cls(link)

    def feed(self, tracker: Any, features: Any) -> None:
        """Follow the session's peers, or publish our tempo to it when alone."""
        peers = int(self.link.num_peers)
        if peers != self._peers:
            log.info("Ableton Link: %d peer(s)", peers)
            self._peers = peers
        if peers > 0:
            tracker.external(float(self.link.tempo), float(self.link.beat), features.time)
        elif features.bpm > 0 and features.confidence > 0.3 and abs(features.bpm - self._published) > 0.05:
            self.link.tempo = float(features.bpm)  # alone: the others follow the music we hear
            self._published = features.bpm

    def close(self) -> None:
        try:
            self.link.enabled = False
        except Exception as e:  # noqa: BLE001 - leaving the session on exit
            log.debug("Ableton Link: %s", e)
