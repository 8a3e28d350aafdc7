"""Pause on route disconnect in the runtime (:mod:`audiopolicyd.runtime.disconnect`), on the
scripted server: music on headphones that go is muted on the device's ``remove`` (PulseAudio's
rescue move just before it, or WirePlumber's move after it), its player paused without a claim
to resume, its explicit session interrupted with ``routeDisconnected``; the mute is journalled,
held until the user unmutes or the app plays again, off with ``[route] interrupt_on_disconnect
= false``, undone after a crash, and never left behind by a stream that goes."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os

import pytest

from audiopolicyd.appsessions import AppSessions
from audiopolicyd.identity import Identity
from audiopolicyd.model import Device, Player
from audiopolicyd.policy import build_policy_set
from audiopolicyd.route import (
    PortChoice, RouteChange, RouteChangeReason, RouteDecision, RoutedStream,
)
from audiopolicyd.runtime import disconnect

from ..support.fake_backend import FakeServer
from .conftest import make_stream
from . import test_runtime
from .test_runtime import Daemon, until

#: The runtime tests' fixture: ``await start()``, a :class:`Daemon` on the scripted server.
start = test_runtime.start

pytestmark = pytest.mark.usefixtures("collect_garbage")

HEADPHONES = Device("sink", 2, "headphones", id="sink:2")
MPV = "org.mpris.MediaPlayer2.mpv"
KEY = "sink-input:1"


class Pauser:
    """MPRIS as the runtime calls it: records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def pause(self, bus: str) -> bool:
        self.calls.append(("pause", bus))
        return True

    async def play(self, bus: str) -> bool:
        self.calls.append(("play", bus))
        return True


def music(index: int, device: str = "sink:0", **kw):
    """A ``media.role=music`` stream (``playback``) on *device*."""
    return dataclasses.replace(make_stream(index, role="music", **kw), device=device)


@pytest.fixture
async def server():
    fake = FakeServer()
    fake.devices.append(HEADPHONES)
    return fake


@pytest.fixture
def starter(start):
    """``await starter(policies=None)``: a started :class:`Daemon` (:data:`start`) with an
    MPRIS pauser, and *policies* in force instead of the shipped ones."""
    async def started(policies=None) -> Daemon:
        daemon = await start()
        daemon.pauser = daemon.reconciler.pauser = Pauser()
        if policies is not None:
            daemon.reconciler.policies = lambda: policies
            daemon.reconciler.policies_changed()
        return daemon
    return started


@pytest.fixture
async def daemon(starter) -> Daemon:
    return await starter()


async def playing(server, daemon, stream, on: str = "sink:2") -> None:
    """Add *stream* and wait until the daemon classified it; then the user moves it *on* a
    device ('' leaves it where it is)."""
    server.add(stream)
    await until(lambda: stream.key in daemon.reconciler.classified, f"{stream.key} classified")
    if on:
        server._set(stream.key, device=on)  # the user's move (a mixer's)
        await until(lambda: daemon.reconciler.streams[stream.key].device == on,
                    f"{stream.key} on {on}")


def muted(server, key: str = KEY) -> bool:
    return server.state[key].muted


@pytest.mark.parametrize("rescue_after", [None, 0.3], ids=["pulseaudio", "wireplumber"])
async def test_music_on_a_device_that_goes_is_muted_on_its_remove_event(server, daemon,
                                                                       rescue_after):
    await playing(server, daemon, music(1))
    game = make_stream(5, role="game")  # on the speaker: not touched
    await playing(server, daemon, game, on="")
    server.unplug("headphones", rescue_after=rescue_after)
    await until(lambda: muted(server), "the music muted")
    # the first write to it: muted on the remove event, before any move (WirePlumber's comes
    # later; a router's move of it is a later write)
    assert next(w for w in server.writes if w[0] == KEY) == (KEY, "muted", True)
    assert not muted(server, "sink-input:5")
    row = daemon.journal.effects()[KEY]
    assert row.muted_by_us, "journalled before the write, as every effect"
    assert any("routeDisconnected" in r.session for r in daemon.reconciler.effects[KEY].reasons)
    assert daemon.reconciler.disconnect.rescued(KEY), "the server's move, not the user's"
    assert not daemon.reconciler.disconnect.rescued("sink-input:5")
    await until(lambda: server.state[KEY].device == "sink:0", "the server's move")
    assert muted(server)


async def test_the_player_is_paused_without_a_claim_and_unmuted_when_played_again(server, daemon):
    daemon.reconciler.players_changed({MPV: Player(MPV, pid=4242, status="Playing")}, None)
    await playing(server, daemon, music(1, pid=4242))
    server.unplug("headphones")
    await until(lambda: muted(server) and daemon.pauser.calls, "muted and paused")
    assert daemon.pauser.calls == [("pause", MPV)]
    assert daemon.reconciler.claims == {}, "nothing of ours to resume: no headphones to give back"
    paused = {MPV: Player(MPV, pid=4242, status="Paused")}
    daemon.reconciler.players_changed(paused, paused[MPV])
    server._set(KEY, corked=True)  # the player paused: its stream corks
    await asyncio.sleep(disconnect.PAUSED_AT_LEAST + 0.05)
    assert muted(server), "muted while paused"
    server._set(KEY, corked=False)  # the user plays again, out of the speaker
    await until(lambda: not muted(server), "unmuted when played again")
    assert KEY not in daemon.reconciler.disconnect.holds
    assert daemon.pauser.calls == [("pause", MPV)], "never resumed by us"


async def test_a_legacy_stream_stays_muted_until_the_user_unmutes_it(server, daemon):
    await playing(server, daemon, music(1))
    server.unplug("headphones")
    await until(lambda: muted(server), "the music muted")
    for index in (7, 8):  # other streams come and go, passes run: the mute holds
        await playing(server, daemon, make_stream(index, role="game"), on="")
        server.remove(f"sink-input:{index}")
    server.device_event("change", "sink", 0)
    await asyncio.sleep(0.05)
    assert muted(server)
    server.user_mute(KEY, False)
    await until(lambda: KEY not in daemon.reconciler.disconnect.holds, "the hold ends")
    await until(lambda: KEY not in daemon.journal.effects(), "the row forgotten")
    await asyncio.sleep(0.05)
    assert not muted(server), "the user's act wins: not muted again"


async def test_the_servers_cork_during_its_move_is_no_play_again(server, daemon):
    """pipewire-pulse shows a moved stream corked for a moment, on its new device too."""
    await playing(server, daemon, music(1))
    server.unplug("headphones", rescue_after=0.01)
    await until(lambda: muted(server), "the music muted")
    await until(lambda: server.state[KEY].device == "sink:0", "the server's move")
    server._set(KEY, corked=True)
    await until(lambda: daemon.reconciler.streams[KEY].corked, "the cork read")
    server._set(KEY, corked=False)
    await until(lambda: not daemon.reconciler.streams[KEY].corked, "the uncork read")
    await asyncio.sleep(0.05)
    assert muted(server) and KEY in daemon.reconciler.disconnect.holds


async def test_a_profile_switch_the_daemon_makes_is_no_disconnect(server, daemon):
    """A headset's A2DP sink goes when the daemon switches its card to HSP/HFP for a call."""
    server.devices[-1] = dataclasses.replace(HEADPHONES, card="bluez_card.00_11")
    server.device_event("change", "sink", HEADPHONES.index)
    await until(lambda: daemon.reconciler.devices["sink:2"].card, "the card read")
    daemon.reconciler.disconnect.switching.add("bluez_card.00_11")
    await playing(server, daemon, music(1))
    server.unplug("headphones")
    await until(lambda: daemon.reconciler.streams[KEY].device == "sink:0", "the server's move")
    await asyncio.sleep(0.05)
    assert not muted(server) and daemon.reconciler.disconnect.rescued(KEY)


async def test_a_new_stream_of_the_app_is_not_muted(server, daemon):
    await playing(server, daemon, music(1, app="player"))
    server.unplug("headphones")
    await until(lambda: muted(server), "the music muted")
    await playing(server, daemon, music(2, app="player"), on="")
    await asyncio.sleep(0.05)
    assert not muted(server, "sink-input:2") and muted(server)


async def test_a_stream_that_was_not_playing_is_left_alone(server, daemon):
    await playing(server, daemon, music(1, corked=True))
    server.unplug("headphones")
    await asyncio.sleep(0.05)
    assert not muted(server) and not daemon.reconciler.disconnect.holds


async def test_off_with_the_policy_key(server, starter, policies):
    playback = policies.policies["playback"]
    off = dataclasses.replace(playback, route=dataclasses.replace(
        playback.route, interrupt_on_disconnect=False))
    daemon = await starter(build_policy_set([*(p for c, p in policies.policies.items()
                                               if c != "playback"), off]))
    daemon.reconciler.players_changed({MPV: Player(MPV, pid=4242, status="Playing")}, None)
    await playing(server, daemon, music(1, pid=4242))
    server.unplug("headphones")
    await until(lambda: server.state[KEY].device == "sink:0", "the server's move")
    await asyncio.sleep(0.05)
    assert not muted(server) and daemon.pauser.calls == []


async def test_a_crash_in_between_is_undone_by_recovery(server, daemon, starter):
    await playing(server, daemon, music(1))
    server.unplug("headphones")
    await until(lambda: muted(server) and KEY in daemon.journal.effects(), "muted, journalled")
    daemon.kill()
    await starter()  # a restarted daemon does not know the hold: the journal's row is ours
    await until(lambda: not muted(server), "the mute undone by recovery")


async def test_a_rescue_move_read_before_the_remove_event_is_remembered(server, daemon):
    """PulseAudio: the stream's move is seen (and read) before its sink's ``remove``."""
    await playing(server, daemon, music(1))
    server._set(KEY, device="sink:0")  # the server's rescue, inside the unload
    await until(lambda: daemon.reconciler.streams[KEY].device == "sink:0", "the move read")
    assert not daemon.reconciler.disconnect.rescued(KEY), "not known yet"
    server.devices.remove(HEADPHONES)
    server.device_event("remove", "sink", HEADPHONES.index)
    await until(lambda: muted(server), "the music muted")
    assert daemon.reconciler.disconnect.rescued(KEY)


async def test_the_user_move_is_not_a_rescue(server, daemon):
    gone = daemon.reconciler.disconnect
    now = [1000.0]
    gone.clock = lambda: now[0]
    await playing(server, daemon, music(1))
    server._set(KEY, device="sink:0")  # the user moves it to the speaker
    await until(lambda: daemon.reconciler.streams[KEY].device == "sink:0", "the move seen")
    now[0] += disconnect.MOVE_MEMORY + 1  # and pulls the headphones a second later
    server.unplug("headphones")
    await asyncio.sleep(0.05)
    assert not muted(server) and not gone.rescued(KEY)


async def test_a_stream_that_goes_meanwhile_leaves_nothing_muted(server, daemon):
    await playing(server, daemon, music(1, app="player"))
    server.hold()  # the mute is sent, not answered
    server.unplug("headphones")
    await until(lambda: (KEY, "muted", True) in server.writes, "the mute sent")
    server.remove(KEY)  # the app ends meanwhile
    server.release()
    await asyncio.sleep(0.05)
    assert not daemon.reconciler.disconnect.holds and KEY not in daemon.reconciler.applied
    await playing(server, daemon, music(3, app="player"), on="")
    await asyncio.sleep(0.05)
    assert not muted(server, "sink-input:3")


async def test_a_device_gone_while_the_mute_is_held_then_the_stream_too(server, daemon):
    """A device vanishing mid-switch (the server's answers held), and the stream with it."""
    await playing(server, daemon, music(1))
    server.hold()
    server.unplug("headphones", rescue_after=0.01)
    server.remove(KEY)  # gone before the daemon read anything of it
    await asyncio.sleep(0.05)
    server.release()
    await asyncio.sleep(0.05)
    assert not daemon.reconciler.disconnect.holds and not daemon.failures


async def test_an_explicit_session_is_interrupted_with_route_disconnected(server, daemon,
                                                                          policies, pm):
    sessions = AppSessions(lambda: policies, itertools.count(100), pm=pm)
    events = []
    sessions.listeners.append(lambda s, what, payload: events.append((what, dict(payload))))
    daemon.reconciler.app_sessions = sessions
    session = sessions.create(":1.5", Identity(pid=os.getpid()), {"Name": "player"})
    sessions.set_category(session, "playback", "default", ())
    sessions.set_active(session, True, ())
    pid = {"application.process.id": str(os.getpid())}
    await playing(server, daemon, music(1, extra=pid))
    await until(lambda: daemon.reconciler.classified[KEY][1].startswith("session"),
                "the stream is the session's")
    server.unplug("headphones")
    await until(lambda: muted(server), "the music muted")
    assert ("InterruptionBegan", {"reason": "routeDisconnected", "interrupter": "",
                                  "interrupter_category": ""}) in events
    assert not session.active and session.state == "inactive"
    assert ("DidBecomeInactive", {"source": "system", "reason": "interruption"}) in events
    assert not any(what == "InterruptionEnded" for what, _ in events)


@pytest.mark.parametrize("reason", [RouteChangeReason.oldDeviceUnavailable,
                                    RouteChangeReason.wakeFromSleep])
async def test_the_routers_old_device_unavailable_reacts_for_a_jack_unplugged(server, daemon,
                                                                             reason):
    """A laptop's headphones jack: the sink stays, its port goes (no remove event); the
    router's route change (a stand-in here) makes the reaction; so does a resume's change
    whose device went during the suspend."""
    await playing(server, daemon, music(1))
    was = RouteDecision(PortChoice(None, "headphones"), PortChoice(None, "none"))
    change = RouteChange("playback", reason, was, was, gone=frozenset({"sink:2"}))
    daemon.reconciler.disconnect.route_changed("implicit:x:playback", change,
                                               (RoutedStream(KEY, "sink:2", True),))
    await until(lambda: muted(server), "the music muted")
    other = dataclasses.replace(change, reason=RouteChangeReason.newDeviceAvailable)
    server.user_mute(KEY, False)
    await until(lambda: KEY not in daemon.reconciler.disconnect.holds, "the hold ends")
    daemon.reconciler.disconnect.route_changed("implicit:x:playback", other,
                                               (RoutedStream(KEY, "sink:2", True),))
    await asyncio.sleep(0.05)
    assert not muted(server), "only a device that went interrupts"
    woke = dataclasses.replace(change, reason=RouteChangeReason.wakeFromSleep,
                               gone=frozenset())
    daemon.reconciler.disconnect.route_changed("implicit:x:playback", woke,
                                               (RoutedStream(KEY, "sink:2", True),))
    await asyncio.sleep(0.05)
    assert not muted(server), "a resume whose devices all stayed interrupts nobody"


async def test_fake_server_unplug_of_a_device_it_lacks_is_an_error():
    with pytest.raises(ValueError, match="no device 'nothing'"):
        FakeServer().unplug("nothing")
