"""How much microphone audio a hostile stream gets by fighting the gate (issue 9, item 3).

For each server and each loop interval, a hostile recorder
(``tests/support/programs/mic_fighter.py``: records ``mic`` and undoes the daemon's hold on
its own stream: unmute + volume up, optionally a move to another source and back) runs against
the real daemon, its app undetermined. Per stream it counts the ms of frames with a non-zero
sample it received. The daemon kills a stream that fights, so the attacker reopens: ``--streams``
streams per series. Prints the leak per stream (median, max) and the total per series; asserts
nothing. Run from the repository root:

    .venv/bin/python -m bench.mic_race [--servers pulseaudio,pipewire] [--intervals 0,1,10,100]
                                       [--streams 5] [--attacks unmute,volume] [--via own]

Everything runs in private directories through ``tests/support/`` (a private bus,
private servers, the daemon with its own state), never the user's session. The microphone is
the test servers' ``mic``, a ``module-pipe-source`` fed in 10 ms blocks as a capture device
delivers; the move attack moves the stream to ``mic2``, fed the same way, and back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

from tests.support.clients import MIC_FIGHTER
from tests.support.daemon import DaemonProcess
from tests.support.processes import child_env
from tests.support.servers import MIC, SERVERS, AudioServer, add_microphone, running


def fight(server: AudioServer, device: str, interval: float, streams: int, attacks: str,
          via: str, seconds: float, move_to: str) -> list[dict]:
    argv = [sys.executable, str(MIC_FIGHTER), "--device", device, "--interval", str(interval),
            "--streams", str(streams), "--attack", attacks, "--via", via,
            "--seconds", str(seconds), "--move-to", move_to]
    done = subprocess.run(argv, env=child_env(server.env), capture_output=True,
                          text=True, timeout=60 + streams * seconds)
    if done.returncode:
        raise RuntimeError(f"mic_fighter failed: {done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="pulseaudio,pipewire")
    parser.add_argument("--intervals", default="0,1,10,100",
                        help="ms between attacks; 0 is a tight loop")
    parser.add_argument("--streams", type=int, default=5)
    parser.add_argument("--attacks", default="unmute,volume",
                        help="any of unmute, volume, move (to a second microphone and back)")
    parser.add_argument("--via", choices=("own", "other"), default="own")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="longest a stream is recorded when it is not killed")
    args = parser.parse_args()
    print(f"attacks {args.attacks} via {args.via} connection; {args.streams} streams per "
          f"series; leak = ms of non-zero frames received per stream")
    print(f"{'server':<11} {'interval':>9} {'median':>7} {'max':>7} {'total':>7} "
          f"{'killed':>7} {'writes/stream':>13}")
    for name in args.servers.split(","):
        with tempfile.TemporaryDirectory(prefix="mic-race-") as tmp, \
                running(SERVERS[name]) as server, \
                DaemonProcess(server, tmp) as daemon:
            mic, other = MIC, add_microphone(server, "mic2")
            daemon.start()
            for interval in (float(i) for i in args.intervals.split(",")):
                rows = fight(server, mic, interval, args.streams, args.attacks, args.via,
                             args.seconds, other)
                leaks = [r["audible_ms"] for r in rows]
                label = "tight" if not interval else f"{interval:g} ms"
                print(f"{name:<11} {label:>9} {statistics.median(leaks):>7.1f} "
                      f"{max(leaks):>7.1f} {sum(leaks):>7.1f} "
                      f"{sum(r['killed'] for r in rows):>3}/{len(rows):<3} "
                      f"{statistics.median(r['writes'] for r in rows):>13.0f}", flush=True)
            fought = {e["App"]: e.get("Fought") for e in json.loads(
                daemon.ctl("permissions", "--json").stdout or "[]")}
            print(f"{name:<11} GetRecordPermissions Fought: {fought}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
