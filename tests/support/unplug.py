"""Unplug headphones while music plays on them, and measure how much reaches the speakers.

The measurement of the issue's bound for pause on route disconnect ("at most 50 ms of the
music may reach the speakers"), on content as the microphone tests measure theirs: the
default sink ``speaker``'s monitor is recorded (``parecord``, raw, 10 ms fragments) while a
player plays the test tone on fake wired headphones (:data:`~.devices.WIRED_HEADPHONES`, a
null sink with a real headphone's properties); the headphones are unplugged (their module
unloaded: the server moves the stream to ``speaker``, PulseAudio inside the unload,
WirePlumber about 15 ms later); whatever of the tone the monitor then records is the leak
(:func:`~.audio.audible_ms`). The player starts on the default sink and the user moves it to
the headphones (as with a mixer: a router keeps a stream the user moved where it is). The
daemon's own timing is not measured.

Used by ``tests/integration/test_route_disconnect.py`` (asserts the bound) and
``bench/unplug_leak.py`` (prints the figures).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import time
from pathlib import Path

from .audio import RAW_FRAME_BYTES, RAW_RATE, audible_ms
from .clients import play, record, start_mpv, wait_mpris_player, wait_player
from .daemon import DaemonProcess
from .devices import WIRED_HEADPHONES, plug, unplug
from .processes import stop_process, wait_for
from .servers import AudioServer, pulse
from .streams import end_client, stream_of, stream_state, wait_stream

logger = logging.getLogger(__name__)

#: The players measured: ``mpv`` (MPRIS: muted, then paused) and ``paplay`` (a legacy stream
#: with ``media.role=music``, no player: muted, and stays muted).
PLAYERS = ("mpv", "paplay")
#: Seconds of recording kept after the unplug (the leak is whatever is audible in them).
AFTER = 1.0


@dataclasses.dataclass
class Unplugged:
    """One unplug measured.

    :param leak_ms: ms of the tone the speaker's monitor recorded after the unplug
    :param player: the player's process (still running: paused or muted)
    :param index: its stream's index
    """

    leak_ms: float
    player: subprocess.Popen
    index: int


def _wait_recorded(path: Path, start: int, seconds: float) -> None:
    want = start + int(seconds * RAW_RATE) * RAW_FRAME_BYTES
    wait_for(lambda: os.path.getsize(path) >= want, 10 + seconds,
             f"{seconds} s more recorded in {path}")


def user_moves(server: AudioServer, proc, sink: str) -> None:
    """The user moves client *proc*'s stream to *sink* (as a mixer does), and it is there.

    pipewire-pulse 0.3.65 sometimes ignores a move made right after the stream was linked
    (WirePlumber's own target wins): the move is made again until it holds (is still there
    0.2 s later).
    """
    with pulse(server) as p:
        index = p.get_sink_by_name(sink).index

        def moved():
            info = stream_of(server, proc)
            if info is not None and info.sink != index:
                p.sink_input_move(info.index, index)
                return None
            return info
        for _ in range(2):
            wait_for(moved, 10, f"{proc.args[0]} pid {proc.pid} on {sink}")
            time.sleep(0.2)


def unplug_while_playing(server: AudioServer, daemon: DaemonProcess, tone: Path, player: str,
                         path: Path) -> Unplugged:
    """Play *tone* with *player* (one of :data:`PLAYERS`) on fake headphones, wait until the
    daemon follows its stream, unplug the headphones and measure the leak into the speaker.

    :param path: where the speaker's monitor is recorded (raw)
    :returns: the leak, and the player left running (the caller ends it)
    """
    loaded = plug(server, WIRED_HEADPHONES)
    recorder = record(server, device="speaker.monitor", path=path, latency_ms=10)
    try:
        wait_stream(server, recorder, "source-output")
        if player == "mpv":
            proc = start_mpv(server, tone)
            wait_mpris_player(server.env)
            wait_player(server, "Playing")
        else:
            proc = play(server, tone, role="music")
        index = wait_stream(server, proc).index
        user_moves(server, proc, loaded.name)
        wait_for(lambda: daemon.stream_view(index), 10, f"the daemon to follow {player}",
                 until=lambda v: v is not None and v.get("Category") == "playback")
        # a stream of an app we muted before starts muted where the server remembers it
        # (PulseAudio's stream-restore) until the daemon gives it the user's value back
        wait_for(lambda: stream_state(server, proc), 10, f"{player} unmuted",
                 until=lambda state: state is not None and state[1] is False)
        if player == "mpv":
            wait_for(lambda: daemon.status().get("Players", []), 10,
                     "the daemon to see mpv's player",
                     until=lambda players: "org.mpris.MediaPlayer2.mpv" in players)
        start = os.path.getsize(path)
        _wait_recorded(path, start, 0.2)  # the speaker is silent before: nothing plays there
        start = os.path.getsize(path)
        unplug(server, loaded)
        _wait_recorded(path, start, AFTER)
        leak = audible_ms(path, start)
        logger.info("%s on %s: %.1f ms of the tone reached the speaker", player, server.name,
                    leak)
        return Unplugged(leak, proc, index)
    finally:
        stop_process(recorder)
        if recorder in server.clients:
            server.clients.remove(recorder)


def finish(server: AudioServer, unplugged: Unplugged) -> None:
    """End the player of an unplug (and wait until its stream is gone)."""
    end_client(server, unplugged.player)
