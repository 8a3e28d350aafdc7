"""The runtime: async, no policy of its own. It mirrors the audio graph, decides with the pure
core (:mod:`audiopolicyd.engine`, :mod:`audiopolicyd.effects`), journals and writes the
difference, recovers after a crash or a lost server, and shows what it did.

Parts, one job each: ``connection`` (run loop, backoff), ``mirror`` (the graph, read and write
generations), ``ownership`` (session owners, deactivation holds), ``passes`` (the decision
pass), ``actuator`` (journal and write: volume, mute, ramps, kill), ``recovery`` (journal rows,
lingering values, restore at shutdown), ``pauses`` (MPRIS), ``readmodel`` (what D-Bus and the
CLI show), ``tasks`` (background tasks whose failure is reported) and ``runtime`` (the
composition the daemon builds). Microphone enforcement is :mod:`audiopolicyd.microphone.gate`.
"""

from .readmodel import StreamView
from .runtime import Runtime

__all__ = ["Runtime", "StreamView"]
