"""Integration tests: real dbus-daemon, PulseAudio, PipeWire and clients (support in tests/support)."""
