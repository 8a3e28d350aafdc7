#!/usr/bin/env python3
"""A VoIP-like call with an audio session: ``playAndRecord`` in ``voiceChat`` mode.

It activates its session (which interrupts music, ducks game and event sounds), plays a "call"
tone with ``media.role=phone`` through ``paplay`` and records the microphone with ``parecord``
for N seconds, then deactivates with ``notifyOthersOnDeactivation`` so the music player it
interrupted (``examples/music_player.py``) is told it may resume.

When a session of higher priority is active, activation fails with ``InsufficientPriority``;
with ``--wait`` it is delayed instead (``delayIfBusy``) and the call starts when it can.

    python examples/voip_call.py --seconds 5
    python examples/voip_call.py --seconds 5 --wait --record call.wav

Needs a running audiopolicyd, ``paplay`` and ``parecord`` (pulseaudio-utils).
"""

import argparse
import asyncio
import math
import struct
import sys
import tempfile
import wave
from pathlib import Path

from audiopolicyd.client import AudioSession, InsufficientPriority


def write_ring(path: Path, seconds: int, rate: int = 8000) -> None:
    """A 16-bit mono 440+480 Hz tone (the North American ring), 1 s on, 1 s off."""
    frames = b"".join(
        struct.pack("<h", int(6000 * (math.sin(2 * math.pi * 440 * i / rate)
                                      + math.sin(2 * math.pi * 480 * i / rate)))
                    if (i // rate) % 2 == 0 else 0)
        for i in range(rate * seconds))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


def log(text: str) -> None:
    print(f"call: {text}", flush=True)


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="voip-") as tmp:
        ring, recording = Path(tmp) / "ring.wav", Path(args.record or Path(tmp) / "call.wav")
        write_ring(ring, args.seconds)
        return await call(args, ring, recording)


async def call(args: argparse.Namespace, ring: Path, recording: Path) -> int:
    async with AudioSession.create(name="example VoIP call", bus_address=args.bus) as session:
        await session.set_category("playAndRecord", mode="voiceChat")
        session.on("InterruptionBegan", lambda info: log(f"interrupted: {info}"))
        session.on("InterruptionEnded", lambda info: log(f"interruption ended: {info}"))
        try:
            state = await session.set_active(True, ["delayIfBusy"] if args.wait else [])
        except InsufficientPriority as exc:
            log(f"cannot start the call: {exc}")
            return 1
        if state == "delayed":
            log("busy: the call starts when the higher-priority session ends")
            await session.wait_until_active()
        log(f"call active (other audio playing: {await session.other_audio_playing()})")
        procs = [await asyncio.create_subprocess_exec(
                     "paplay", "--property=media.role=phone", "--client-name=voip_call",
                     str(ring)),
                 await asyncio.create_subprocess_exec(
                     "parecord", "--property=media.role=phone", "--client-name=voip_call",
                     "--file-format=wav", str(recording))]
        try:
            await asyncio.sleep(args.seconds)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
                await proc.wait()
        await session.set_active(False, ["notifyOthersOnDeactivation"])
        log(f"call ended; recorded {recording.stat().st_size} bytes"
            + (f" to {recording}" if args.record else " (--record FILE keeps them)"))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=10, help="call length (default 10)")
    p.add_argument("--wait", action="store_true",
                   help="wait while a higher-priority session is active (delayIfBusy)")
    p.add_argument("--record", metavar="FILE", help="where to save the recording (WAV)")
    p.add_argument("--bus", metavar="ADDRESS", help="D-Bus address (default: session bus)")
    sys.exit(asyncio.run(main(p.parse_args())))
