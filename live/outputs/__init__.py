"""Where dreamed frames go: a window, a virtual camera, recordings and streams, NDI, or nowhere
(headless).

Every output has the same small interface (:class:`Output`); :class:`Fanout` drives any
combination at once and keeps the others going when one fails. The concrete outputs import
their heavy or optional dependencies (pyvirtualcam, PyAV, NDI) only when opened.
"""

from __future__ import annotations

from live.outputs.base import Fanout, NullOutput, Output, check_frame
from live.outputs.encoder import EncoderOutput, EncoderSettings
from live.outputs.recorder import RecorderOutput
from live.outputs.vcam import VirtualCamOutput
from live.outputs.window import ACTIONS, WindowOutput, key_action

__all__ = [
    "ACTIONS",
    "EncoderOutput",
    "EncoderSettings",
    "Fanout",
    "NullOutput",
    "Output",
    "RecorderOutput",
    "VirtualCamOutput",
    "WindowOutput",
    "check_frame",
    "key_action",
]
