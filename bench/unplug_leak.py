"""How much music reaches the speakers when the headphones it plays on are unplugged (issue 11,
"Pause on route disconnect").

For each server and each player (mpv with MPRIS, a legacy ``paplay`` with
``media.role=music``), ``--unplugs`` times: fake wired headphones are plugged, the player plays
the test tone and the user moves it onto them (a mixer's move), the daemon follows its stream,
the headphones are unplugged (their module unloaded: the server moves the stream to the default
sink ``speaker``), and the speaker's monitor is recorded; the leak is how long the tone is
audible there after the unplug (:mod:`tests.support.unplug`, measured on content). Prints p50
and max per server and player; asserts nothing (``tests/integration/test_route_disconnect.py``
asserts the bound, 50 ms). ``--without-daemon`` measures the same with no daemon running: what
the server's move alone lets through. Run from the repository root:

    .venv/bin/python -m bench.unplug_leak [--servers pulseaudio,pipewire] [--unplugs 10]
                                          [--players mpv,paplay] [--without-daemon]

Everything runs in private directories through ``tests/support/`` (a private bus, private
servers, the daemon with its own state), never the user's session.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from tests.support.audio import make_tone
from tests.support.daemon import DaemonProcess
from tests.support.servers import SERVERS, running
from tests.support.unplug import PLAYERS, finish, unplug_while_playing


class _NoDaemon:
    """Stands in for the daemon with ``--without-daemon``: answers as if it followed every
    stream."""

    def stream_view(self, index: int) -> dict:
        return {"Category": "playback"}

    def status(self) -> dict:
        return {"Players": ["org.mpris.MediaPlayer2.mpv"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="pulseaudio,pipewire")
    parser.add_argument("--players", default=",".join(PLAYERS))
    parser.add_argument("--unplugs", type=int, default=10)
    parser.add_argument("--without-daemon", action="store_true")
    args = parser.parse_args()
    print(f"{args.unplugs} unplugs per row; leak = ms of the tone the speaker's monitor "
          f"recorded after the unplug{' (no daemon)' if args.without_daemon else ''}")
    print(f"{'server':<11} {'player':<7} {'p50':>7} {'max':>7}  every unplug")
    for name in args.servers.split(","):
        with tempfile.TemporaryDirectory(prefix="unplug-leak-") as tmp, \
                running(SERVERS[name]) as server, \
                DaemonProcess(server, tmp) as daemon:
            tone = make_tone(Path(tmp) / "tone.wav")
            if not args.without_daemon:
                daemon.start()
            watcher = _NoDaemon() if args.without_daemon else daemon
            for player in args.players.split(","):
                leaks = []
                for i in range(args.unplugs):
                    done = unplug_while_playing(server, watcher, tone, player,
                                                Path(tmp) / f"{player}{i}.raw")
                    leaks.append(done.leak_ms)
                    finish(server, done)
                print(f"{name:<11} {player:<7} {statistics.median(leaks):>7.1f} "
                      f"{max(leaks):>7.1f}  {' '.join(f'{x:.0f}' for x in leaks)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
