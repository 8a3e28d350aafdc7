"""The recorder's figures (issue 12): cost of a long recording, clock drift, and the accuracy of
the silence rule and of ``max_length``.

For each server (a private PulseAudio, a private PipeWire + WirePlumber + pipewire-pulse, from
``tests/support/servers.py``), with the daemon (``audiopolicyd``, shipped policies) and a
scripted microphone ``voice`` (a pipe source fed in real time, 10 ms blocks, by
``tests/support/programs/mic_feeder.py``; the default source), through the real CLI
(``audiopolicyctl record --json``):

* **long**: one stereo MP3 recording of ``--seconds`` (default 600: ten minutes); every 5 s
  the daemon's CPU time (``/proc/PID/stat``) and RSS (``VmRSS``). Printed: CPU in % of one
  core over the recording, RSS at the start and the end and its peak; the recorded duration
  against the wall clock between the ``recording`` and the ``finished`` status (drift, %);
  blocks the capture dropped (the daemon logs every drop).
* **silence**: ``--trials`` recordings, each of espeak-ng speech then silence, with
  ``end_silence_timeout`` 1.0 s. Printed: the file's length after the speech's last sample
  above -40 dBFS, minus the timeout (the rule's error, in ms; target within 150 ms).
* **max_length**: ``--trials`` recordings of silence with ``max_length`` 2.0 s and no other
  rule. Printed: the file's duration minus 2.0 s, and the wall time from the ``recording`` to
  the ``finished`` status minus 2.0 s (target within 100 ms).

It asserts nothing. Run, from the repository root: ``.venv/bin/python -m bench.recording
[--servers pulseaudio,pipewire] [--seconds 600] [--trials 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from tests.support.audio import espeak
from tests.support.servers import AudioServer, add_microphone, pulse, speak_into

from .churn import cpu_seconds
from .reaction import BIN, DaemonReactor, rss_mb, run_on_servers

RATE = 48000
LOUD = 32768 * 10 ** (-40 / 20)  # -40 dBFS
SAMPLE_S = 5.0


@dataclass
class Figures:
    server: str
    cpu_percent: float = 0.0
    rss_mb: list[float] = field(default_factory=list)
    recorded_s: float = 0.0
    wall_s: float = 0.0
    dropped: int = 0
    silence_ms: list[float] = field(default_factory=list)
    max_length_file_ms: list[float] = field(default_factory=list)
    max_length_wall_ms: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.recording", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--servers", default="pulseaudio,pipewire",
                   type=lambda s: [x for x in s.split(",") if x])
    p.add_argument("--seconds", type=float, default=600.0,
                   help="length of the long stereo MP3 recording (default 600)")
    p.add_argument("--trials", type=int, default=5,
                   help="recordings for the silence rule and for max_length (default 5)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    return p.parse_args(argv)


async def record(daemon: DaemonReactor, args: list[str], during=None) -> list[dict]:
    """``audiopolicyctl record --json ARGS`` to its end; its statuses. ``during()`` is
    awaited once it records."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "audiopolicyctl"), "record", "--json", *args, env=daemon.env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    statuses = []
    try:
        async for line in proc.stdout:
            if not line.startswith(b'{"event_type"'):
                continue
            statuses.append(json.loads(line))
            if statuses[-1]["params"]["state"] == "recording" and during is not None:
                await during()
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if not statuses or statuses[-1]["params"]["state"] not in ("finished", "no_input"):
        raise RuntimeError(f"the recording failed: {statuses[-1:]}, "
                           f"{(await proc.stderr.read()).decode()[-500:]}")
    return statuses


async def run_server(server: AudioServer, sdir: Path, args: argparse.Namespace,
                     results: list[Figures]) -> None:
    voice = add_microphone(server, "voice", scripted=True)
    with pulse(server) as p:
        p.source_default_set(voice)
    config = sdir / "config"
    config.mkdir()
    daemon = DaemonReactor(server, sdir, config)
    await daemon.start()
    await daemon.wait_connected(0)
    figures = Figures(server.name)
    results.append(figures)
    app = "exe:" + os.path.realpath(sys.executable)
    subprocess.run([str(BIN / "audiopolicyctl"), "grant", app], env=daemon.env, check=True,
                   capture_output=True)

    # long: a stereo MP3, sampled every 5 s
    samples: list[tuple[float, float, float]] = []

    async def sample() -> None:
        while True:
            pid = daemon.proc.pid
            samples.append((time.monotonic(), cpu_seconds(pid), rss_mb(pid)))
            await asyncio.sleep(SAMPLE_S)

    sampler: asyncio.Task | None = None

    async def start_sampling() -> None:
        nonlocal sampler
        sampler = asyncio.ensure_future(sample())

    print(f"{server.name}: recording {args.seconds:.0f} s of stereo MP3", flush=True)
    statuses = await record(daemon, ["--stereo", "--format", "mp3", "--initial-timeout", "0",
                                     "--end-silence-timeout", "0", "--max-length",
                                     str(args.seconds), str(sdir / "long.mp3")],
                            start_sampling)
    if sampler is not None:
        sampler.cancel()
    samples.append((time.monotonic(), cpu_seconds(daemon.proc.pid), rss_mb(daemon.proc.pid)))
    final = statuses[-1]["params"]
    figures.recorded_s = final["duration"]
    figures.wall_s = final["end_time"] - final["start_time"]
    (t0, c0, _), (t1, c1, _) = samples[0], samples[-1]
    figures.cpu_percent = 100 * (c1 - c0) / (t1 - t0)
    figures.rss_mb = [s[2] for s in samples]
    figures.dropped = daemon.log.read_text(errors="replace").count("dropped")

    # silence rule
    voiced = espeak("Hello, please leave a message after the beep, and I will call you back.",
                    RATE, 16384)
    for trial in range(args.trials):
        out = sdir / f"silence{trial}.wav"

        async def speak() -> None:
            speak_into(server, voice, np.column_stack((voiced, voiced)).astype("<i2").tobytes())

        await record(daemon, ["--initial-timeout", "10", "--end-silence-timeout", "1",
                              str(out)], speak)
        data, _ = soundfile.read(out, dtype="int16")
        last = np.flatnonzero(np.abs(data) > LOUD)[-1]
        figures.silence_ms.append(((len(data) - last) / RATE - 1.0) * 1000)

    # max_length
    for trial in range(args.trials):
        out = sdir / f"max{trial}.wav"
        statuses = await record(daemon, ["--initial-timeout", "0", "--end-silence-timeout", "0",
                                         "--max-length", "2", str(out)])
        final = statuses[-1]["params"]
        figures.max_length_file_ms.append((soundfile.info(out).duration - 2.0) * 1000)
        figures.max_length_wall_ms.append((final["end_time"] - final["start_time"] - 2.0)
                                          * 1000)


def report(results: list[Figures], args: argparse.Namespace) -> None:
    print(f"\nrecorder figures ({args.seconds:.0f} s stereo MP3; {args.trials} trials each)")
    for f in results:
        drift = 100 * (f.recorded_s - f.wall_s) / f.wall_s if f.wall_s else float("nan")
        print(f"\n{f.server}")
        print(f"  long: CPU {f.cpu_percent:.1f} % of one core; RSS {f.rss_mb[0]:.1f} -> "
              f"{f.rss_mb[-1]:.1f} MB (peak {max(f.rss_mb):.1f}); recorded "
              f"{f.recorded_s:.3f} s in {f.wall_s:.3f} s of wall clock: drift {drift:+.3f} % "
              f"(target < 0.1 %); dropped-block log lines: {f.dropped} (target 0)")
        for name, values, target in (
                ("silence rule error", f.silence_ms, 150),
                ("max_length error (file)", f.max_length_file_ms, 100),
                ("max_length error (wall clock)", f.max_length_wall_ms, 100)):
            if values:
                print(f"  {name}: median {statistics.median(values):+.0f} ms, worst "
                      f"{max(values, key=abs):+.0f} ms (target within {target} ms)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: list[Figures] = []

    async def run(server: AudioServer, sdir: Path) -> None:
        await run_server(server, sdir, args, results)

    return run_on_servers(args.servers, "apd-bench-rec-", ("dbus-daemon", "espeak-ng", "sox"),
                          args.keep, run, lambda: report(results, args))


if __name__ == "__main__":
    sys.exit(main())
