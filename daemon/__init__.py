"""audiopolicyd: AVAudioSession categories enforced on PipeWire and PulseAudio.

Plugins mark their hook implementations with :data:`hookimpl`.
"""

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@audiopolicyd.hookimpl``.
hookimpl = pluggy.HookimplMarker("audiopolicyd")

__all__ = ["__version__", "hookimpl"]
