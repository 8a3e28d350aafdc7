"""The beep before a recording (SWML's ``beep``): a short tone on the session's output.

Played by the backend on its own connection (:meth:`Backend.play
<audiopolicyd.backends.base.Backend.play>`: the daemon's own stream, which no policy silences
and no category's route moves) on the device the recording's session is routed to, *before*
the recording's capture starts: it is not in the recording.

The tone: :data:`BEEP_HZ` Hz for :data:`BEEP_MS` ms at :data:`BEEP_DBFS` dBFS, with 5 ms
ramps (no click), :data:`RATE` Hz mono.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

BEEP_HZ = 1000
BEEP_MS = 250
BEEP_DBFS = -12.0
RATE = 48000


def tone(rate: int = RATE) -> np.ndarray:
    """The beep as int16 samples, shape ``(rate * BEEP_MS / 1000,)``."""
    n = rate * BEEP_MS // 1000
    t = np.arange(n) / rate
    wave = np.sin(2 * np.pi * BEEP_HZ * t) * 10 ** (BEEP_DBFS / 20)
    ramp = min(n // 2, rate * 5 // 1000)
    envelope = np.ones(n)
    envelope[:ramp] = np.linspace(0, 1, ramp)
    envelope[n - ramp:] = np.linspace(1, 0, ramp)
    return (wave * envelope * 32767).astype(np.int16)


async def play(backend, sink) -> None:
    """Play the beep on *sink* (a :class:`~audiopolicyd.model.Device`) and return once it has
    played (:meth:`Backend.play <audiopolicyd.backends.base.Backend.play>`).

    :raises: what :meth:`Backend.play` raises (``NoSuchDevice``, ``ServerGone``)
    """
    await backend.play(sink, tone(RATE).astype("<i2").tobytes(), rate=RATE, channels=1)
