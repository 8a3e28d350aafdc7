"""Voice activity detection for the recorder: is this 10 ms of audio someone speaking? Pure.

The decision is WebRTC's voice activity detector (the GMM detector of the WebRTC project, used
through the ``webrtcvad`` module of the ``webrtcvad-wheels`` package), not a home-made one,
gated by an energy floor:

* a 10 ms frame is *voiced* when its level is at or above the energy floor **and** WebRTC's
  VAD, at the aggressiveness below, calls it speech;
* a block of several frames is voiced when at least half of its frames are.

Both knobs come from one setting, SWML's ``record`` parameter ``input_sensitivity`` (0.0-100.0,
"how sensitive the recording voice activity detector is to background noise; a larger value is
more sensitive": a larger value lets quieter sounds count as voice):

=================  ==========================  ===================================
sensitivity        WebRTC aggressiveness       energy floor (dBFS, frame RMS)
=================  ==========================  ===================================
0.0 to < 25.0      3 (filters the most)        -30.0 at 0.0 ...
25.0 to < 50.0     2                           ... falling linearly: -30 - 0.4 x s
50.0 to < 75.0     1 (the default, 50.0)       -50.0 at the default 50.0 ...
75.0 to 100.0      0 (filters the least)       ... -70.0 at 100.0
=================  ==========================  ===================================

The floor is there because WebRTC's VAD judges the *shape* of the spectrum, not its level: it
calls some near-silent noise (hum, hiss a few dB above digital silence) speech, and a recording
that waits for silence would then never end. dBFS here is the frame's RMS relative to full scale
(32768): a full-scale square wave is 0 dBFS, a full-scale sine -3 dBFS. Digital silence (all
zeros) is never voiced.

No smoothing is added: WebRTC's VAD already holds its decision for a few frames after speech
(its own hangover), and the timeouts that turn frames into "silence for N seconds" belong to
the recording job, not to this module.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import webrtcvad

logger = logging.getLogger(__name__)

#: Sample rates WebRTC's VAD takes, in Hz.
RATES = (8000, 16000, 32000, 48000)

#: SWML's default ``input_sensitivity``.
DEFAULT_SENSITIVITY = 50.0

#: Energy floor at sensitivity 0.0 and 100.0, in dBFS (frame RMS re 32768).
FLOOR_AT_0_DBFS = -30.0
FLOOR_AT_100_DBFS = -70.0


def aggressiveness(sensitivity: float) -> int:
    """WebRTC VAD aggressiveness (0..3) for an SWML ``input_sensitivity`` (see the table).

    :raises ValueError: sensitivity not finite or outside 0.0-100.0
    """
    _check_sensitivity(sensitivity)
    return 3 - min(3, int(sensitivity // 25))


def energy_floor(sensitivity: float) -> float:
    """Energy floor in dBFS (frame RMS re 32768) for an SWML ``input_sensitivity``: linear
    from -30.0 at 0.0 to -70.0 at 100.0.

    :raises ValueError: sensitivity not finite or outside 0.0-100.0
    """
    _check_sensitivity(sensitivity)
    return FLOOR_AT_0_DBFS + (FLOOR_AT_100_DBFS - FLOOR_AT_0_DBFS) * sensitivity / 100.0


def level_dbfs(frame: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS re 32768; ``-inf`` for digital silence or no samples."""
    if frame.size == 0:
        return -math.inf
    mean_square = float(np.mean(np.square(frame, dtype=np.float64)))
    return 10.0 * math.log10(mean_square / 32768.0**2) if mean_square > 0 else -math.inf


def _check_sensitivity(sensitivity: float) -> None:
    if not isinstance(sensitivity, (int, float)) or isinstance(sensitivity, bool) \
            or not math.isfinite(sensitivity) or not 0.0 <= sensitivity <= 100.0:
        raise ValueError(f"input_sensitivity must be a number from 0.0 to 100.0, "
                         f"not {sensitivity!r}")


class VoiceDetector:
    """WebRTC's VAD plus an energy floor, fed mono blocks of whole 10 ms frames.

    Stateful (WebRTC's VAD adapts its noise model as it is fed): one detector per recording.

    :param rate: sample rate in Hz, one of :data:`RATES`
    :param sensitivity: SWML's ``input_sensitivity``, 0.0-100.0 (see the module's table)
    :raises ValueError: a rate WebRTC's VAD does not take, or a sensitivity not finite or
        outside 0.0-100.0 (the message names the value)
    """

    #: Length of one analysed frame, in milliseconds.
    frame_ms = 10

    def __init__(self, rate: int, sensitivity: float = DEFAULT_SENSITIVITY) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate not in RATES:
            raise ValueError(f"sample rate must be one of {', '.join(map(str, RATES))} Hz "
                             f"(WebRTC VAD), not {rate!r}")
        self.rate = rate
        self.aggressiveness = aggressiveness(sensitivity)
        self.floor_dbfs = energy_floor(sensitivity)
        self.sensitivity = float(sensitivity)
        self.frame_samples = rate * self.frame_ms // 1000
        self._vad = webrtcvad.Vad(self.aggressiveness)

    def frames(self, block: np.ndarray) -> list[bool]:
        """Whether each 10 ms frame of ``block`` is voiced, in order.

        :param block: int16 samples, shape (n,), n a multiple of :attr:`frame_samples`
        :raises ValueError: not a 1-D int16 array, or n not a multiple of 10 ms
        """
        block = self._checked(block)
        out = []
        for i in range(0, block.size, self.frame_samples):
            frame = block[i:i + self.frame_samples]
            out.append(level_dbfs(frame) >= self.floor_dbfs
                       and self._vad.is_speech(frame.tobytes(), self.rate))
        return out

    def feed(self, block: np.ndarray) -> bool:
        """Whether ``block`` is voiced: at least half of its 10 ms frames are.

        :param block: int16 samples, shape (n,), n a positive multiple of
            :attr:`frame_samples` (the recorder feeds one 10 ms frame at a time)
        :raises ValueError: not a 1-D int16 array, empty, or n not a multiple of 10 ms
        """
        voiced = self.frames(block)
        if not voiced:
            raise ValueError("block is empty: feed at least one 10 ms frame")
        return 2 * sum(voiced) >= len(voiced)

    def _checked(self, block: np.ndarray) -> np.ndarray:
        if not isinstance(block, np.ndarray) or block.dtype != np.int16 or block.ndim != 1:
            raise ValueError(f"block must be a 1-D numpy int16 array (mono), not "
                             f"{getattr(block, 'dtype', type(block).__name__)} with shape "
                             f"{getattr(block, 'shape', None)}")
        if block.size % self.frame_samples:
            raise ValueError(f"block of {block.size} samples is not a multiple of 10 ms "
                             f"({self.frame_samples} samples at {self.rate} Hz)")
        # WebRTC reads host-order int16 from a contiguous buffer
        return np.ascontiguousarray(block)
