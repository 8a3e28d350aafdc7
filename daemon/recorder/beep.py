"""The beep before a recording (SWML's ``beep``): a short tone on the session's output.

Played with ``paplay`` (pulseaudio-utils, a dependency of the daemon's package set) on the
device the recording's session is routed to, *before* the recording's capture starts and its
session activates: it is not in the recording, and the ``record`` category's silencing of other
output does not silence it. Its stream says ``media.role=event`` (an event sound:
``ambient``, which mixes with whatever plays).

The tone: :data:`BEEP_HZ` Hz for :data:`BEEP_MS` ms at :data:`BEEP_DBFS` dBFS, with 5 ms
ramps (no click), 48 kHz mono.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile

import numpy as np
import soundfile

logger = logging.getLogger(__name__)

BEEP_HZ = 1000
BEEP_MS = 250
BEEP_DBFS = -12.0
#: Seconds ``paplay`` may take (it returns once the tone has played).
PLAY_TIMEOUT_S = 5.0


def tone(rate: int = 48000) -> np.ndarray:
    """The beep as int16 samples, shape ``(rate * BEEP_MS / 1000,)``."""
    n = rate * BEEP_MS // 1000
    t = np.arange(n) / rate
    wave = np.sin(2 * np.pi * BEEP_HZ * t) * 10 ** (BEEP_DBFS / 20)
    ramp = min(n // 2, rate * 5 // 1000)
    envelope = np.ones(n)
    envelope[:ramp] = np.linspace(0, 1, ramp)
    envelope[n - ramp:] = np.linspace(1, 0, ramp)
    return (wave * envelope * 32767).astype(np.int16)


async def play(sink: str, server: str | None = None) -> None:
    """Play the beep on *sink* and return once it has played.

    :param sink: the sink's name ('' for the server's default)
    :param server: the audio server's address (None: ``$PULSE_SERVER``, libpulse's default)
    :raises OSError: ``paplay`` is missing, failed, or took longer than
        :data:`PLAY_TIMEOUT_S`
    """
    fd, path = tempfile.mkstemp(prefix="audiopolicyd-beep-", suffix=".wav")
    os.close(fd)
    try:
        soundfile.write(path, tone(), 48000, subtype="PCM_16")
        argv = ["paplay", "--property=media.role=event",
                "--property=application.name=audiopolicyd recorder",
                "--property=media.name=beep"]
        if sink:
            argv.append(f"--device={sink}")
        if server:
            argv.append(f"--server={server}")
        process = await asyncio.create_subprocess_exec(
            *argv, path, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(process.communicate(), PLAY_TIMEOUT_S)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise OSError(f"paplay took longer than {PLAY_TIMEOUT_S} s to play the beep") \
                from None
        if process.returncode:
            raise OSError(f"paplay failed ({process.returncode}): "
                          f"{err.decode(errors='replace').strip()[:200]}")
    finally:
        os.unlink(path)
