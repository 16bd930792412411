"""Where frames come from: cameras, files, streams and the built-in test scene."""
