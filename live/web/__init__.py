"""The show's web page: control, live preview and status in any browser, and OSCQuery.

One aiohttp server on its own thread (:mod:`live.web.server`) serves the page
(``live/web/static/``, plain HTML/CSS/JS, no build step, nothing from the internet), its
websocket, preview frames taken by :class:`~live.web.preview.PreviewOutput` from the show's
fan-out, screenshots, and the OSCQuery namespace (:mod:`live.web.oscquery`), advertised over
mDNS (:mod:`live.web.mdns`). Who may connect is decided by :mod:`live.web.security`.

This package imports aiohttp only in :mod:`live.web.server`, so the loop can hold a preview
output without starting anything.
"""
