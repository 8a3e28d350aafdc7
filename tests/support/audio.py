"""Audio files: a test tone to play, speech to speak, and the analysis of raw recordings.

A recording is raw s16le stereo at 44.1 kHz (:data:`RAW_FRAME_BYTES`, :data:`RAW_RATE`);
digital silence is peak 0, the test microphone's sine peaks near 16000.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
from pathlib import Path

import numpy as np

from .processes import wait_for
from .servers import AudioServer

logger = logging.getLogger(__name__)

@functools.lru_cache
def espeak(text: str, rate: int, peak: int | None = None) -> np.ndarray:
    """*text* spoken by espeak-ng and resampled by sox (no dither): int16, shape (n,),
    read-only; at espeak-ng's own peak (about -2 dBFS), or scaled to *peak*. A missing
    program fails the caller, it does not skip."""
    wav = subprocess.run(["espeak-ng", "--stdout", text], check=True,
                         capture_output=True).stdout
    raw = subprocess.run(["sox", "-D", "-t", "wav", "-", "-t", "raw", "-e", "signed", "-b", "16",
                          "-c", "1", "-r", str(rate), "-"],
                         input=wav, check=True, capture_output=True).stdout
    speech = np.frombuffer(raw, dtype=np.int16)
    if peak is not None:
        speech = (speech.astype(np.float64) * (peak / np.abs(speech).max())).astype(np.int16)
        speech.flags.writeable = False
    return speech


def make_tone(path: str | os.PathLike, seconds: float = 60, freq: int = 440) -> Path:
    """Write a 48 kHz stereo sine wav of *seconds* at *path* with sox; return the path."""
    path = Path(path)
    subprocess.run(["sox", "-n", "-r", "48000", "-c", "2", str(path), "synth", str(seconds),
                    "sine", str(freq), "vol", "0.3"], check=True, capture_output=True)
    return path


#: Bytes per frame of :func:`~.clients.record`'s raw output (s16le stereo), and frames per
#: second.
RAW_FRAME_BYTES, RAW_RATE = 4, 44100


def peak(path: str | os.PathLike, start: int = 0, end: int | None = None) -> int:
    """The largest absolute sample value in bytes ``[start, end)`` of a raw recording
    (0: digital silence; the test mic's sine peaks near 16000)."""
    import array
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(None if end is None else end - start)
    data = data[:len(data) - len(data) % 2]
    samples = array.array("h", data)
    return max((abs(v) for v in samples), default=0)


#: Milliseconds of microphone audio a new recording of an app that may not record can get
#: before the daemon's mute (sent on the stream's ``new`` event) takes hold, by server: the
#: bound the microphone gate promises for any stream (docs/microphone.md, "Limits").
#: PulseAudio posts each block the source captures to every stream linked by then: when the
#: daemon is slow (a flood of streams, a loaded machine) the first block after the ``new``
#: event can come before the mute (one 10 ms block of the test mic seen). pipewire-pulse
#: 0.3.65 sometimes runs a new stream's first processing cycle unmuted (11 ms seen, about 1
#: run in 20).
START_LEAK_MS = {"pulseaudio": 50.0, "pipewire": 50.0}


def audible_until_ms(path: str | os.PathLike) -> float:
    """Where the last non-silent frame of a raw recording (:func:`~.clients.record`) ends, in
    ms from its start: 0.0 for a recording that is digital silence throughout."""
    import array
    samples = array.array("h", Path(path).read_bytes()[:os.path.getsize(path) // 4 * 4])
    last = max((i for i, v in enumerate(samples) if v), default=-1)
    frames = last // (RAW_FRAME_BYTES // 2) + 1 if last >= 0 else 0
    return frames * 1000 / RAW_RATE


#: A sample above this (absolute) is sound: the test tone peaks near 9800, the servers add
#: no dither to silence.
AUDIBLE = 64


def audible_ms(path: str | os.PathLike, start: int = 0) -> float:
    """How long bytes ``[start:]`` of a raw recording (:func:`~.clients.record`) are audible:
    from the first frame with a sample above :data:`AUDIBLE` to the end of the last one, in
    ms; 0.0 when none is."""
    import array
    with open(path, "rb") as f:
        f.seek(start - start % RAW_FRAME_BYTES)
        data = f.read()
    samples = array.array("h", data[:len(data) - len(data) % RAW_FRAME_BYTES])
    loud = [i for i, v in enumerate(samples) if abs(v) > AUDIBLE]
    if not loud:
        return 0.0
    per_frame = RAW_FRAME_BYTES // 2
    frames = loud[-1] // per_frame - loud[0] // per_frame + 1
    return frames * 1000 / RAW_RATE


def assert_silenced_from_start(server: AudioServer, path: str | os.PathLike) -> None:
    """A recording of an app that may not record is silence, but for at most
    :data:`START_LEAK_MS` of the server at its very start."""
    leak = audible_until_ms(path)
    assert leak <= START_LEAK_MS[server.name], (
        f"{path}: microphone audio until {leak:.1f} ms (allowed on {server.name}: "
        f"{START_LEAK_MS[server.name]:.0f} ms at the start)")


def wait_recorded(path: str | os.PathLike, audible: bool, seconds: float = 0.2,
                  timeout: float = 10.0) -> int:
    """Wait until *seconds* of recording written after now are all audible (peak > 1000) or
    all silent (peak 0); returns the file offset where that stretch starts."""
    chunk = int(seconds * RAW_RATE) * RAW_FRAME_BYTES

    def probe() -> tuple[int, int] | None:
        start = os.path.getsize(path)
        wait_for(lambda: os.path.getsize(path) >= start + chunk, timeout,
                 f"{chunk} more bytes in {path}")
        return start, peak(path, start, start + chunk)

    start, _ = wait_for(probe, timeout, f"{path} {'audible' if audible else 'silent'}",
                        until=lambda r: (r[1] > 1000) if audible else (r[1] == 0))
    return start
