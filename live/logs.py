"""The one place that sets the log format. Modules only call ``logging.getLogger(__name__)``."""

from __future__ import annotations

import logging

LEVELS = ("debug", "info", "warning", "error")


def configure(level: str = "info") -> None:
    """Log to stderr as ``time level module: message``; systemd's journal adds its own timestamps."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    # Stream keys and passwords never reach the log, whoever writes the line (live/redact.py).
    from live.redact import RedactingFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    # OpenCV prints its own warnings (a camera probe that fails, say) straight to stderr; the
    # modules that call it log what matters in words the operator can act on.
    import cv2

    levels = cv2.utils.logging
    levels.setLogLevel(levels.LOG_LEVEL_WARNING if level == "debug" else levels.LOG_LEVEL_ERROR)
