"""Crashes and restarts: no stream is left ducked, muted or paused by the daemon.

Both servers remember volume and mute per role, so an effect left behind would outlive the
daemon. The daemon journals every effect and the user's value before applying it; after
``kill -9`` a restart puts every stream back (or keeps a duck whose trigger still plays, with
the same target), and when the audio server itself restarts it reconnects, re-applies, and
gives a new stream that the server started at our ducked value the user's value back. A clean
SIGTERM restores everything before the process exits. Assertions read the servers (pulsectl,
playerctl).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest

from tests.support.clients import play, start_mpv, wait_mpris_player, wait_player
from tests.support.daemon import DaemonProcess
from tests.support.processes import wait_for
from tests.support.servers import AudioServer
from tests.support.streams import (
    ducked, end_client, remembered_volume, set_user_volume, stream_state, wait_muted, wait_stream,
    wait_volume,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

USER = 40000
CALL = 0.2


def _ducked_game(server: AudioServer, tone: Path):
    """A game stream at the user's volume, ducked by a phone stream: ``(game, phone)``."""
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)
    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))
    return game, phone


def test_kill_mid_duck_then_call_ends_then_restart_restores(server: AudioServer,
                                                            daemon: DaemonProcess,
                                                            tone: Path) -> None:
    game, phone = _ducked_game(server, tone)

    daemon.kill()
    end_client(server, phone)
    assert stream_state(server, game) == ([ducked(USER, CALL)] * 2, False), \
        "nobody restores while the daemon is dead"

    daemon.start()
    wait_volume(server, game, USER)
    assert stream_state(server, game) == ([USER, USER], False)


def test_kill_during_call_restart_keeps_duck_and_restores_at_end(server: AudioServer,
                                                                 daemon: DaemonProcess,
                                                                 tone: Path) -> None:
    game, phone = _ducked_game(server, tone)
    index = wait_stream(server, game).index

    daemon.kill()
    daemon.start()
    view = wait_for(lambda: daemon.stream_view(index), 10, "the game stream's duck again",
                    until=lambda v: v is not None and v["Effect"] == "duck 0.20")
    assert view["Volume"] == [ducked(USER, CALL)] * 2
    assert stream_state(server, game) == ([ducked(USER, CALL)] * 2, False), \
        "the same target: not restored, not ducked twice"

    end_client(server, phone)
    wait_volume(server, game, USER)  # the user's value from before the crash, not the duck
    assert stream_state(server, game) == ([USER, USER], False)


def test_kill_while_muted_then_call_ends_then_restart_unmutes(server: AudioServer,
                                                              daemon: DaemonProcess,
                                                              tone: Path) -> None:
    music = play(server, tone, role="music")  # paplay has no MPRIS player: muted, not paused
    wait_stream(server, music)
    phone = play(server, tone, role="phone")
    wait_muted(server, music, True)

    daemon.kill()
    end_client(server, phone)
    assert stream_state(server, music)[1] is True

    daemon.start()
    wait_muted(server, music, False)


def test_server_restart_during_duck(server: AudioServer, daemon: DaemonProcess,
                                    tone: Path) -> None:
    _ducked_game(server, tone)
    # The server must remember the ducked value (WirePlumber saves 1 s after a change), so
    # the next game stream really starts ducked and the daemon has something to undo.
    wait_for(lambda: remembered_volume(server, "game"), 10,
             "the server to remember the ducked game volume",
             until=lambda v: v == [ducked(USER, CALL)] * 2)

    server.restart()  # every client goes with the old server
    wait_for(lambda: daemon.log_text().count("connected to "), 20,
             "the daemon to connect a second time", until=lambda n: n >= 2)
    daemon.wait_connected()

    game = play(server, tone, role="game")
    wait_volume(server, game, USER)  # started at the remembered duck; given back

    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))
    end_client(server, phone)
    wait_volume(server, game, USER)

    end_client(server, game)
    later = play(server, tone, role="game")
    wait_volume(server, later, USER)
    assert stream_state(server, later) == ([USER, USER], False)


def test_sigterm_restores_everything_before_exit(server: AudioServer, daemon: DaemonProcess,
                                                 tone: Path) -> None:
    game, phone = _ducked_game(server, tone)
    music = play(server, tone, role="music")
    wait_stream(server, music)
    wait_muted(server, music, True)

    assert daemon.stop() == 0
    # Read at once: the restore was acknowledged by the server before the daemon exited.
    assert stream_state(server, game) == ([USER, USER], False)
    assert stream_state(server, music)[1] is False
    assert stream_state(server, phone) == ([65536, 65536], False)


def test_sigterm_resumes_the_player_it_paused(server: AudioServer, daemon: DaemonProcess,
                                              tone: Path) -> None:
    mpv = start_mpv(server, tone)
    wait_mpris_player(server.env)
    wait_player(server, "Playing")
    wait_stream(server, mpv)
    play(server, tone, role="phone")
    wait_player(server, "Paused")

    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
    wait_player(server, "Playing")
    assert stream_state(server, mpv)[1] is False
