"""Interrupting a real MPRIS player (mpv with mpv-mpris), checked with playerctl.

Shipped policies: mpv sets no ``media.role`` but its binary makes it ``playback``; a
``media.role=phone`` stream (``playAndRecord``) interrupts it. mpv has an MPRIS player with
the stream's process id, so the daemon pauses it through MPRIS (and does not mute its
stream), and when the call ends resumes it, but only if it paused it and the user did not
touch the player meanwhile (as Android's audio focus resumes only what it paused).

``playerctl --follow status`` records every PlaybackStatus mpv announces, so "was not
re-paused" is checked on the player's own history. mpv-mpris batches its PropertiesChanged
(a state shorter than its flush interval is never announced), so the user acts only once the
state the test depends on was announced to everyone on the bus.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from tests.support.clients import (
    collapse, follow_player, play, player_status, playerctl, start_mpv, wait_mpris_player,
    wait_player,
)
from tests.support.daemon import DaemonProcess
from tests.support.processes import wait_for
from tests.support.servers import AudioServer
from tests.support.streams import end_client, stream_state, wait_stream

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration


def _start_player(server: AudioServer, daemon: DaemonProcess, tone: Path):
    """Start mpv, wait until it plays and the daemon knows its player; follow its status."""
    mpv = start_mpv(server, tone)
    wait_mpris_player(server.env)
    wait_player(server, "Playing")
    index = wait_stream(server, mpv).index
    wait_for(lambda: daemon.status().get("Players", []), 10, "the daemon to see mpv's player",
             until=lambda players: "org.mpris.MediaPlayer2.mpv" in players)
    follower, history = follow_player(server)
    wait_for(lambda: history.lines, 10, "playerctl --follow to print the first status")
    return mpv, index, history


def _announced(history, states: list[str]) -> None:
    """Wait until mpv has announced exactly *states* (consecutive repeats collapsed)."""
    wait_for(lambda: collapse(history.lines), 10, f"mpv to announce {states}",
             until=lambda h: h == states)


def _view(daemon: DaemonProcess, index: int, what: str, until) -> dict:
    return wait_for(lambda: daemon.stream_view(index), 10, what,
                    until=lambda v: v is not None and until(v))


def test_call_pauses_player_and_resumes_it(server: AudioServer, daemon: DaemonProcess,
                                           tone: Path) -> None:
    mpv, index, history = _start_player(server, daemon, tone)

    phone = play(server, tone, role="phone")
    wait_player(server, "Paused")
    _view(daemon, index, "mpv's effect 'pause'", lambda v: v["Effect"] == "pause")
    assert stream_state(server, mpv)[1] is False, "a paused player's stream is not muted"

    end_client(server, phone)
    wait_player(server, "Playing")
    assert stream_state(server, mpv)[1] is False
    _announced(history, ["Playing", "Paused", "Playing"])
    # one Pause and one Play: the call's stream being set up (pipewire-pulse shows it corked
    # for a moment) must not end and restart the interruption
    calls = re.findall(r"MPRIS (Pause|Play) ", daemon.log.read_text())
    assert calls == ["Pause", "Play"]


def test_short_call_resumes_player_before_it_announced_the_pause(
        server: AudioServer, daemon: DaemonProcess, tone: Path) -> None:
    """The call ends before mpv-mpris announces Paused: the daemon must resume it anyway."""
    mpv, index, history = _start_player(server, daemon, tone)

    phone = play(server, tone, role="phone")
    wait_player(server, "Paused")  # asked directly (Get), not announced yet
    end_client(server, phone)
    wait_player(server, "Playing")
    assert stream_state(server, mpv)[1] is False


def test_user_resuming_during_call_wins(server: AudioServer, daemon: DaemonProcess,
                                        tone: Path) -> None:
    mpv, index, history = _start_player(server, daemon, tone)
    phone = play(server, tone, role="phone")
    wait_player(server, "Paused")
    _announced(history, ["Playing", "Paused"])

    assert playerctl(server.env, "-p", "mpv", "play").returncode == 0
    wait_player(server, "Playing")
    _announced(history, ["Playing", "Paused", "Playing"])
    # The daemon has seen the stream run again: where it would pause it again, if it did.
    _view(daemon, index, "the daemon to see mpv's stream running",
          lambda v: not v["Corked"])
    assert stream_state(server, mpv)[1] is False, "the user's choice is not muted either"

    end_client(server, phone)
    _view(daemon, index, "mpv's effect to end", lambda v: v["Effect"] == "none")
    assert player_status(server) == "Playing"
    assert collapse(history.lines) == ["Playing", "Paused", "Playing"], \
        "mpv was paused again after the user resumed it"


def test_player_the_user_paused_stays_paused(server: AudioServer, daemon: DaemonProcess,
                                             tone: Path) -> None:
    mpv, index, history = _start_player(server, daemon, tone)
    assert playerctl(server.env, "-p", "mpv", "pause").returncode == 0
    wait_player(server, "Paused")
    _announced(history, ["Playing", "Paused"])
    _view(daemon, index, "the daemon to see mpv's stream corked", lambda v: v["Corked"])

    phone = play(server, tone, role="phone")
    _view(daemon, index, "mpv's effect 'pause'", lambda v: v["Effect"] == "pause")
    end_client(server, phone)
    _view(daemon, index, "mpv's effect to end", lambda v: v["Effect"] == "none")

    assert player_status(server) == "Paused"
    assert collapse(history.lines) == ["Playing", "Paused"], "the daemon resumed mpv"
    assert "MPRIS Play " not in daemon.log_text()
