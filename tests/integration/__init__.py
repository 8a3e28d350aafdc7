"""Integration tests: real dbus-daemon, PulseAudio, PipeWire and clients (tests/support)."""
