"""Live control: the parameter registry that CLI, config files, OSC, MIDI and keys all go through."""
