"""Pause on route disconnect on the real servers: headphones unplugged while music plays on them.

mpv (MPRIS) and a legacy ``paplay`` (``media.role=music``, no player) play the test tone on fake
wired headphones (:mod:`tests.support.devices`), both ``playback``; the headphones' module is
unloaded. The server moves the stream to the default sink ``speaker`` by itself (PulseAudio in
the unload, WirePlumber about 15 ms later); the daemon mutes it on the earliest event and pauses
mpv. What reaches the speaker is measured on content, recording its monitor
(:mod:`tests.support.unplug`): at most 50 ms, the issue's bound. No timing of the daemon
itself is asserted; the figures are ``bench/unplug_leak.py``'s.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.support.clients import playerctl, wait_player
from tests.support.daemon import DaemonProcess
from tests.support.devices import WIRED_HEADPHONES, plug, unplug
from tests.support.processes import wait_for
from tests.support.servers import AudioServer, pulse
from tests.support.sessions import SessionClient
from tests.support.streams import stream_state, wait_muted
from tests.support.unplug import finish, unplug_while_playing, user_moves

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

#: The issue's bound: ms of the music that may reach the speakers after the unplug.
LEAK_BOUND_MS = 50.0


def _muted(server: AudioServer, proc) -> bool | None:
    state = stream_state(server, proc)
    return None if state is None else state[1]


def test_mpv_on_unplugged_headphones_leaks_at_most_50_ms_and_is_paused(
        server: AudioServer, daemon: DaemonProcess, tone: Path, tmp_path: Path) -> None:
    unplugged = unplug_while_playing(server, daemon, tone, "mpv", tmp_path / "speaker.raw")
    assert unplugged.leak_ms <= LEAK_BOUND_MS, (
        f"{unplugged.leak_ms:.1f} ms of the music reached the speaker on {server.name}")
    wait_player(server, "Paused")
    assert _muted(server, unplugged.player) is True, "muted until the user plays again"
    view = daemon.stream_view(unplugged.index)
    assert any("routeDisconnected" in r for r in view["Reasons"]), view

    playerctl(server.env, "-p", "mpv", "play")  # the user plays again: out of the speaker
    wait_player(server, "Playing")
    wait_for(lambda: _muted(server, unplugged.player), 10, "the mute lifted",
             until=lambda muted: muted is False)
    finish(server, unplugged)


def test_a_legacy_stream_on_unplugged_headphones_stays_muted_until_the_user_unmutes_it(
        server: AudioServer, daemon: DaemonProcess, tone: Path, tmp_path: Path) -> None:
    unplugged = unplug_while_playing(server, daemon, tone, "paplay", tmp_path / "speaker.raw")
    assert unplugged.leak_ms <= LEAK_BOUND_MS, (
        f"{unplugged.leak_ms:.1f} ms of the music reached the speaker on {server.name}")
    time.sleep(0.5)  # later passes (the device list read again...) keep the mute
    assert _muted(server, unplugged.player) is True
    view = daemon.stream_view(unplugged.index)
    assert "mute" in view["Effect"] and any("routeDisconnected" in r for r in view["Reasons"])

    with pulse(server) as p:  # the user unmutes it in a mixer: the user's act wins
        p.sink_input_mute(unplugged.index, False)
    wait_for(lambda: daemon.stream_view(unplugged.index), 10, "the daemon to drop the mute",
             until=lambda v: v is not None and "mute" not in v["Effect"])
    time.sleep(0.3)
    assert _muted(server, unplugged.player) is False, "not muted again by us"
    finish(server, unplugged)


def test_a_session_on_unplugged_headphones_is_interrupted_with_route_disconnected(
        server: AudioServer, daemon: DaemonProcess, tone: Path) -> None:
    app = SessionClient(server, "A")
    try:
        app.create("A", "playback")
        assert app.call("active", 1) == "active"
        loaded = plug(server, WIRED_HEADPHONES)
        child = app.play(tone)
        user_moves(server, child, loaded.name)
        mark = app.mark()
        unplug(server, loaded)
        began = app.wait_signal("InterruptionBegan", after=mark)["body"][0]
        assert (began["reason"], began["interrupter"]) == ("routeDisconnected", "")
        inactive = app.wait_signal("DidBecomeInactive", after=mark)["body"][0]
        assert (inactive["source"], inactive["reason"]) == ("system", "interruption")
        wait_muted(server, child, True)
        assert (app.call("get", "Active"), app.call("get", "State")) == (False, "inactive")
    finally:
        app.close()
