"""Test support, by concern, for the unit tests, the integration tests and bench/.

Importable as ``tests.support.<module>`` from the repository root; no module has an import-time
side effect. Everything that starts a program runs it for real in private temporary directories
(never the user's session), keeps its :class:`subprocess.Popen` handle and stops it by pid,
never by name.

* :mod:`.fake_backend`: a scripted audio server for the unit tests of the runtime.
* :mod:`.processes`: the child environment, :func:`~.processes.wait_for` (the one polling
  helper), stopping by pid, log tails, line readers; the client programs' directory.
* :mod:`.bus`: a private ``dbus-daemon`` (:class:`~.bus.PrivateBus`) and busctl calls on it;
  :mod:`.private_bus`: the same bus as a fixture for the unit tests.
* :mod:`.servers`: private PulseAudio and PipeWire (+ WirePlumber + pipewire-pulse) with the
  same virtual devices (``speaker``, ``headphones``, ``mic``), and clients tracked by them.
* :mod:`.streams`: the server's streams as the tests read and set them (pulsectl), per client.
* :mod:`.clients`: paplay, parecord, mpv with MPRIS, playerctl.
* :mod:`.audio`: a tone to play; the analysis of raw recordings (peak, silence, leaks).
* :mod:`.daemon`: the real ``audiopolicyd`` under test, ``audiopolicyctl``, its D-Bus names.
* :mod:`.sessions`: client apps holding explicit sessions over D-Bus, one process each.
* :mod:`.portal`: xdg-desktop-portal's real permission store on a private bus.
* :mod:`.microphone`: helpers of the microphone-gate tests (recordings, permission entries,
  server modules loaded as a client would).
* :mod:`.devices`: fake devices with a real device's properties (headsets, USB, Bluetooth),
  plugged in and out of a real server as modules.
* :mod:`.unplug`: headphones unplugged while music plays on them, and how much of it reaches
  the speaker (pause on route disconnect's leak, for its test and ``bench/unplug_leak.py``).
* :mod:`.bluetooth`: a Bluetooth headset's card and devices as each server shows them
  (recorded in tests/data/bluetooth/), converted as the PulseAudio backend does.
* ``programs/``: the programs those clients run (``session_client.py``, ``mic_feeder.py``,
  ``mic_fighter.py``, ``binary_property.py``).

Imports among them point one way: ``processes <- bus <- servers <- streams <- clients``;
``audio``, ``daemon``, ``sessions``, ``portal``, ``microphone`` and ``devices`` build on
those, ``unplug`` on them; ``bluetooth`` needs only the backend's conversion.
"""
