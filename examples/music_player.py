#!/usr/bin/env python3
"""A music player with an audio session: pauses when interrupted, resumes when told to.

It declares the ``playback`` category, activates its session and plays a tone through a
``paplay`` child process (the daemon counts the child's stream as the player's). When another
app interrupts it (a call: run ``examples/voip_call.py`` in another terminal) it gets
``InterruptionBegan`` and pauses (SIGSTOP to paplay); on ``InterruptionEnded`` it resumes
(reactivates, then SIGCONT) only when ``should_resume`` is true, as an iOS player does, and
otherwise stays paused. At the end it deactivates with ``notifyOthersOnDeactivation``.

    python examples/music_player.py --seconds 60
    python examples/music_player.py --wait   # wait out a call instead of failing

Needs a running audiopolicyd and ``paplay`` (pulseaudio-utils). Ctrl-C stops it.
"""

import argparse
import array
import asyncio
import math
import signal
import sys
import tempfile
import wave
from pathlib import Path

from audiopolicyd.client import AudioSession, AudioSessionError, InsufficientPriority

RATE = 44100


def write_tone(path: Path, seconds: int, freq: int = 440) -> None:
    """A mono 16-bit sine (one second repeated: 440 Hz fits it exactly)."""
    second = array.array("h", (int(9000 * math.sin(2 * math.pi * freq * i / RATE))
                               for i in range(RATE)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(second.tobytes() * seconds)


def log(text: str) -> None:
    print(f"music: {text}", flush=True)


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="music-") as tmp:
        tone = Path(tmp) / "tone.wav"
        write_tone(tone, args.seconds)
        return await play(args, tone)


async def play(args: argparse.Namespace, tone: Path) -> int:
    async with AudioSession.create(name="example music player",
                                   bus_address=args.bus) as session:
        await session.set_category("playback")
        try:
            state = await session.set_active(True, ["delayIfBusy"] if args.wait else [])
        except InsufficientPriority as exc:
            log(f"cannot play now: {exc}")
            return 1
        if state == "delayed":
            log("a call is going on; waiting for it to end")
            await session.wait_until_active()
        player = await asyncio.create_subprocess_exec(
            "paplay", "--property=media.role=music", "--client-name=music_player", str(tone))
        log(f"playing ({args.seconds} s, paplay pid {player.pid})")

        def send(*signals: int) -> None:
            for sig in signals:
                if player.returncode is None:
                    player.send_signal(sig)

        def began(info: dict) -> None:
            send(signal.SIGSTOP)
            log(f"interrupted by {info['interrupter_category']} ({info['interrupter']}): paused")

        async def ended(info: dict) -> None:
            if not info["should_resume"]:
                log("interruption ended, should_resume false: staying paused (Ctrl-C quits)")
                return
            try:
                await session.set_active(True)
            except AudioSessionError as exc:
                log(f"cannot resume: {exc}")
                return
            send(signal.SIGCONT)
            log(f"interruption ended after {info['duration_ms']} ms: resumed")

        session.on("InterruptionBegan", began)
        session.on("InterruptionEnded", ended)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # quit, even while paused
            loop.add_signal_handler(sig, send, signal.SIGTERM, signal.SIGCONT)
        try:
            await player.wait()
        finally:
            if player.returncode is None:
                player.kill()
                await player.wait()
        await session.set_active(False, ["notifyOthersOnDeactivation"])
        log("done")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=60, help="length of the tone (default 60)")
    p.add_argument("--wait", action="store_true",
                   help="wait while a higher-priority session is active (delayIfBusy)")
    p.add_argument("--bus", metavar="ADDRESS", help="D-Bus address (default: session bus)")
    sys.exit(asyncio.run(main(p.parse_args())))
