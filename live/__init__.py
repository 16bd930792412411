"""deepdream-live: real-time DeepDream for cameras and streams."""

__version__ = "0.1.0"
