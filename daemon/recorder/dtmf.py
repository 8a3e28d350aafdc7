"""DTMF detection for the recorder: which key was pressed, and where its tone began. Pure.

A DTMF key (ITU-T Q.23) sounds two sines at once, one of the low (row) group and one of the
high (column) group::

              1209 Hz  1336 Hz  1477 Hz  1633 Hz
    697 Hz       1        2        3        A
    770 Hz       4        5        6        B
    852 Hz       7        8        9        C
    941 Hz       *        0        #        D

There is no well-kept Python library for DTMF detection, so this module does it itself, the way
telephony stacks (spandsp, Asterisk) do: the power at the eight frequencies by the Goertzel
algorithm, then acceptance tests after ITU-T Q.24 (the receiver's side of Q.23). Goertzel's
recursion computes one term of the discrete Fourier transform, ``X(f) = sum x[n] e^(-j 2 pi f
n / rate)``; :func:`goertzel` evaluates that same sum as one numpy matrix product with
precomputed exponentials, which gives the same value faster than a per-sample Python loop. Each
frequency is probed at its nominal value and at +-1.5 % (:data:`TOLERANCE`, Q.24's frequency
tolerance for operation); a tone's power is that of its best probe.

Audio is analysed in hops of 10 ms; a decision looks at the last three hops (a 30 ms window,
33 Hz resolution: 697 and 770 Hz, the closest DTMF frequencies, lie 2.2 bins apart). A key is
recognised when, over that window:

* **level**: each of its two tones has a power of at least :data:`MIN_TONE_DBFS` (-40 dBFS, mean
  square re 32768²: a full-scale sine is -3 dBFS), so silence and faint noise never trigger;
* **twist** (the level difference of the two tones): the row tone at most
  :data:`NORMAL_TWIST_DB` (8 dB) above the column tone, the column tone at most
  :data:`REVERSE_TWIST_DB` (4 dB) above the row tone, the limits and directions spandsp and
  Asterisk use (line loss weakens the high group; sources name the two directions differently);
* **relative peak**: the row tone at least :data:`RELATIVE_PEAK_DB` (8 dB) above each other row
  frequency, the column tone likewise in its group;
* **purity**: the two tones carry at least :data:`TONE_FRACTION` (60 %) of the window's power,
  so speech (its energy spread over many harmonics) rarely passes;
* **duration**: the amplitude of the two tones in each of the three hops (a least-squares fit of
  the two sines over the hop) is within :data:`STEADY_DB` (2 dB) of the loudest: a hop counts
  only when the tones fill at least 79 % of it, so a key is recognised when its tone lasts 40 ms
  or more and never when it lasts less than 25.8 ms (Q.24: operate at 40 ms and more, do not
  operate at 23 ms and less).

**Latency**: a key is reported at the end of the hop that completes such a window: 28 to 38 ms
of audio after its tone began on a clean tone, depending on where the tone starts within a hop
(:data:`MAX_LATENCY_MS` bounds it; noise or speech over the tone's first hops may delay it by a
hop or more). A recording stopped at the key has that much of the tone; its :attr:`Tone.start`
(within about 1 ms on a clean tone) is where to cut it.

A key is reported once per press. The press ends after two hops in a row where its tones fell
:data:`DROP_DB` (10 dB) below their level, so an interruption of up to 10 ms is bridged (Q.24's
signal interruption) and a pause of 40 ms or more separates two presses of the same key; another
key ends it at once.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

logger = logging.getLogger(__name__)

#: Row (low group) and column (high group) frequencies, in Hz (ITU-T Q.23).
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
#: The keys, ``KEYS[row][col]``.
KEYS = ("123A", "456B", "789C", "*0#D")
#: Every digit this module reports.
DIGITS = "".join(KEYS)

#: Length of one analysis hop, in milliseconds.
HOP_MS = 10
#: Hops in one decision window (3 x 10 ms = 30 ms).
WINDOW_HOPS = 3
#: Longest delay, in ms of audio, between a clean tone's start and its report.
MAX_LATENCY_MS = 40

#: Minimum power of each tone, in dBFS (mean square re 32768²; full-scale sine: -3 dBFS).
MIN_TONE_DBFS = -40.0
#: The row tone may be this much louder than the column tone (dB).
NORMAL_TWIST_DB = 8.0
#: The column tone may be this much louder than the row tone (dB).
REVERSE_TWIST_DB = 4.0
#: Each tone must be this much above every other frequency of its group (dB).
RELATIVE_PEAK_DB = 8.0
#: Share of the window's power the two tones must carry (linear, 0..1).
TONE_FRACTION = 0.6
#: Largest amplitude difference between the hops of a window, in dB.
STEADY_DB = 2.0
#: A hop where the tones fell this far below their level is a miss (dB); two misses end a key.
DROP_DB = 10.0

#: Each tone is probed at its nominal frequency and this far (relative) either side of it, Q.24's
#: frequency tolerance for operation (+-1.5 %); a tone's power is that of its best probe.
TOLERANCE = 0.015

_PROBES = np.array([f * (1 + d) for f in ROWS + COLS for d in (-TOLERANCE, 0.0, TOLERANCE)])
_PER_TONE = 3  # probes per nominal frequency, consecutive in _PROBES
_FULL = 0.95  # a hop whose amplitude is this share of the tone's level is filled by the tone
_HISTORY = 8  # hops kept to find where a tone began


def goertzel(samples: np.ndarray, freqs: np.ndarray, rate: int) -> np.ndarray:
    """The Goertzel (single-bin DFT) value of ``samples`` at each frequency.

    :param samples: shape (n,), any real dtype
    :param freqs: shape (k,), in Hz; need not fall on a DFT bin
    :param rate: sample rate in Hz
    :returns: complex, shape (k,): ``sum x[n] exp(-2j pi f n / rate)``; a sine of amplitude A
        at f that fills the samples gives ``|X| ~ A n / 2``
    """
    n = np.arange(len(samples))
    return _dot(np.asarray(samples, dtype=np.float64), _basis(n, freqs, rate))


def _basis(n: np.ndarray, freqs: np.ndarray, rate: int) -> np.ndarray:
    return np.exp(-2j * np.pi * np.outer(n, freqs) / rate)


def _dot(vector: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``vector @ matrix`` by numpy's own loops: for matrices this small, a multi-threaded BLAS
    costs more in waking its threads than the product does (several times slower on a busy
    machine), and the detector runs every 10 ms."""
    return np.einsum("n,nk->k", vector, matrix)


@dataclass(frozen=True)
class Tone:
    """One key press, as reported by :meth:`DtmfDetector.feed`.

    :param digit: one of ``0-9 * # A B C D``
    :param start: index of the tone's first sample, counted from the first sample ever fed
        (within about 1 ms on a clean tone; cut the recording there)
    :param end: index one past the tone's last sample, or None when the tone had not yet ended
        at the end of the block that revealed it (the usual case: a key is reported while it
        still sounds)
    """

    digit: str
    start: int
    end: int | None = None


@dataclass(frozen=True)
class _Key:
    """A key as seen in a window: its row and column (0-3) and its two probes in _PROBES."""

    row: int
    col: int
    probes: tuple[int, int]


@dataclass
class _Press:
    tone: Tone
    key: _Key
    level: float  # amplitude of the two tones over a hop they fill
    misses: int = 0


class DtmfDetector:
    """Streaming DTMF detector, fed mono int16 blocks of any length.

    Stateful (it buffers to whole hops and remembers the key in progress): one detector per
    recording.

    :param rate: sample rate in Hz, a multiple of 100 from 8000 (the recorder uses 48000)
    :raises ValueError: any other rate (the message names it)
    """

    #: Length of one analysis hop, in milliseconds.
    hop_ms = HOP_MS

    def __init__(self, rate: int) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 8000 or rate % 100:
            raise ValueError(f"sample rate must be a whole number of Hz, a multiple of 100 "
                             f"from 8000, not {rate!r}")
        self.rate = rate
        self.hop = rate * HOP_MS // 1000
        self._basis = _basis(np.arange(self.hop), _PROBES, rate)
        # one hop later, a sine's DFT term has turned by this phase
        self._shift = np.exp(-2j * np.pi * _PROBES * self.hop / rate)
        self._pending = np.zeros(0, dtype=np.int16)
        # per hop: its samples, its Goertzel values at _PROBES, its energy (sum of squares)
        self._hops: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=_HISTORY)
        self._fits: dict[tuple[int, int], np.ndarray] = {}
        self._count = 0  # whole hops analysed
        self._press: _Press | None = None

    @property
    def samples(self) -> int:
        """Samples fed so far (analysed or buffered)."""
        return self._count * self.hop + len(self._pending)

    def feed(self, block: np.ndarray) -> list[Tone]:
        """Analyse the next samples; return the keys recognised in them, each once per press.

        :param block: int16 samples, shape (n,), any n (buffered to 10 ms hops)
        :returns: the keys first recognised in this block, in order (usually none)
        :raises ValueError: not a 1-D int16 array
        """
        if not isinstance(block, np.ndarray) or block.dtype != np.int16 or block.ndim != 1:
            raise ValueError(f"block must be a 1-D numpy int16 array (mono), not "
                             f"{getattr(block, 'dtype', type(block).__name__)} with shape "
                             f"{getattr(block, 'shape', None)}")
        data = np.concatenate((self._pending, block))
        whole = len(data) // self.hop * self.hop
        self._pending = data[whole:]
        found: list[Tone] = []
        for i in range(0, whole, self.hop):
            hop = data[i:i + self.hop].astype(np.float64)
            self._hops.append((hop, _dot(hop, self._basis), float(np.dot(hop, hop))))
            self._count += 1
            self._step(found)
        return found

    def _step(self, found: list[Tone]) -> None:
        """Judge the newest hop: end the key in progress, or recognise a new one."""
        press = self._press
        if press is not None:
            if self._amplitude(1, press.key) < press.level * 10 ** (-DROP_DB / 20):
                press.misses += 1
            else:
                press.misses = 0
            if press.misses >= 2:
                self._finish(found, self._end(press))
        key = self._judge()
        if key is None or (self._press is not None
                           and (key.row, key.col) == (self._press.key.row, self._press.key.col)):
            return
        amps = sorted(self._amplitude(k, key) for k in range(1, WINDOW_HOPS + 1))
        start = self._start(key, level=amps[WINDOW_HOPS // 2])
        if self._press is not None:  # another key with no pause: the first ends here
            self._finish(found, start)
        tone = Tone(KEYS[key.row][key.col], start)
        found.append(tone)
        self._press = _Press(tone, key, level=amps[WINDOW_HOPS // 2])
        logger.debug("DTMF %s from sample %d, recognised at sample %d", tone.digit, start,
                     self._count * self.hop)

    def _finish(self, found: list[Tone], end: int) -> None:
        """End the key in progress at sample ``end``; fill ``end`` in if the key was reported
        in this same block."""
        press = self._press
        assert press is not None
        self._press = None
        if press.tone in found:
            found[found.index(press.tone)] = replace(press.tone, end=end)

    def _end(self, press: _Press) -> int:
        """Where the key in progress ended, after its two missed hops: the hop before them and
        the older of them hold its last parts (their amplitudes, relative to its level, say
        how much of each)."""
        covers = [min(1.0, self._amplitude(back, press.key) / press.level) for back in (3, 2)]
        return (self._count - 3) * self.hop + round(sum(covers) * self.hop)

    def _amplitude(self, back: int, key: _Key) -> float:
        """Sum of the amplitudes of the key's two tones over the hop ``back`` hops from the end
        (1: the newest); 0.0 for a hop no longer held.

        A least-squares fit of two sines at the key's probes, not two Goertzel values: over
        10 ms, one tone leaks into the other's bin by up to 10 % (941 and 1209 Hz, 2.7 bins
        apart), which a joint fit removes. A hop the tones fill for a share c of its length
        gives about c times their amplitude.
        """
        if back > len(self._hops):
            return 0.0
        fit = self._fits.get(key.probes)
        if fit is None:
            t = np.arange(self.hop) * 2 * np.pi / self.rate
            f1, f2 = _PROBES[list(key.probes)]
            waves = np.stack([np.cos(f1 * t), np.sin(f1 * t), np.cos(f2 * t), np.sin(f2 * t)])
            fit = self._fits[key.probes] = np.linalg.pinv(waves.T)
        c = _dot(self._hops[-back][0], fit.T)
        return float(np.hypot(c[0], c[1]) + np.hypot(c[2], c[3]))

    def _judge(self) -> _Key | None:
        """The key the last :data:`WINDOW_HOPS` hops hold, or None: the acceptance tests of
        the module's docstring, in its order."""
        if len(self._hops) < WINDOW_HOPS:
            return None
        hops = list(self._hops)[-WINDOW_HOPS:]
        x = np.zeros(len(_PROBES), dtype=np.complex128)
        for _, values, _ in reversed(hops):  # X = X0 + X1 s + X2 s² (Horner)
            x = x * self._shift + values
        m = WINDOW_HOPS * self.hop
        # mean square of each probe's sine (A²/2 for amplitude A); each tone's best probe
        probes = (2 * np.abs(x) ** 2 / m**2).reshape(8, _PER_TONE)
        best = probes.argmax(axis=1)
        power = probes.max(axis=1)
        rows, cols = power[:4], power[4:]
        row, col = int(np.argmax(rows)), int(np.argmax(cols))
        p_row, p_col = rows[row], cols[col]
        floor = 32768.0**2 * 10 ** (MIN_TONE_DBFS / 10)
        if p_row < floor or p_col < floor:
            return None
        if p_row > p_col * _ratio(NORMAL_TWIST_DB) or p_col > p_row * _ratio(REVERSE_TWIST_DB):
            return None
        peak = _ratio(RELATIVE_PEAK_DB)
        if any(p * peak > p_row for i, p in enumerate(rows) if i != row) \
                or any(p * peak > p_col for i, p in enumerate(cols) if i != col):
            return None
        total = sum(energy for _, _, energy in hops) / m
        if p_row + p_col < TONE_FRACTION * total:
            return None
        key = _Key(row, col, (row * _PER_TONE + int(best[row]),
                              (4 + col) * _PER_TONE + int(best[4 + col])))
        amps = [self._amplitude(k, key) for k in range(1, WINDOW_HOPS + 1)]
        if min(amps) < max(amps) * 10 ** (-STEADY_DB / 20):
            return None
        return key

    def _start(self, key: _Key, level: float) -> int:
        """Where the key's tones began: walk back from the window's first hop over the hops
        they fill; the hop before those holds their first part (its amplitude, relative to
        ``level``, says how much of it)."""
        back = WINDOW_HOPS
        while back < len(self._hops) and self._amplitude(back, key) >= level * _FULL:
            back += 1
        cover = min(1.0, self._amplitude(back, key) / level)
        hop_end = (self._count - back + 1) * self.hop
        return max(0, hop_end - round(cover * self.hop))


def _ratio(db: float) -> float:
    """The power ratio of ``db`` decibels."""
    return 10 ** (db / 10)
