"""A Bluetooth headset's profile follows the call, on the scripted server with the recorded
headsets of both servers (tests/support/bluetooth.py; no Bluetooth adapter exists here): HSP/HFP
only while an active ``playAndRecord`` session with ``allowBluetooth`` records, A2DP again
after (the recording stops, the session goes, the daemon stops); never for a session without
the option; a card that vanishes mid-switch is logged, nothing else. The route change that
follows says ``routeConfigurationChange``."""

from __future__ import annotations

import dataclasses
import os

import pytest

from audiopolicyd.backends.base import NoSuchDevice
from audiopolicyd.identity import Identity
from audiopolicyd.model import Card, Profile, StreamKind
from audiopolicyd.route import (
    PortChoice, RouteChange, RouteChangeReason, RouteDecision, RoutePort,
)
from audiopolicyd.runtime.headsets import call_profile, configuration_change, head_unit

from ..support.bluetooth import recorded_headset
from ..support.fake_backend import FakeServer
from .conftest import VERIFIED, make_stream
from .test_echo_cancel import daemons, server  # noqa: F401 (fixtures)
from .test_runtime import until

pytestmark = pytest.mark.usefixtures("collect_garbage")

ME = Identity(pid=os.getpid(), exe=os.readlink("/proc/self/exe"))


def profile(fake: FakeServer) -> str:
    """The active profile of the fake server's (only) card."""
    return fake.cards[0].active_profile


def call(daemon, options=("allowBluetooth",), category="playAndRecord"):
    session = daemon.sessions.create(":1.7", ME, {"Name": "talk", "Category": category,
                                                  "Mode": "default", "Options": list(options)})
    daemon.sessions.set_active(session, True, ())
    return session


def recording(index: int = 1):
    return dataclasses.replace(make_stream(index, StreamKind.SOURCE_OUTPUT, app="talk",
                                           extra=VERIFIED), device="source:1")


@pytest.fixture(params=["pulseaudio", "pipewire"])
def headset(request, server):  # noqa: F811
    recorded = recorded_headset(request.param)
    server.add_card(recorded.card, recorded.devices)
    return recorded


async def test_hfp_only_while_a_call_with_allow_bluetooth_records(server, daemons,  # noqa: F811
                                                                   headset):
    a2dp = headset.card.active_profile
    daemon = await daemons()
    session = call(daemon)
    server.add(dataclasses.replace(make_stream(2, app="talk", extra=VERIFIED)))  # it plays
    await daemon.reconciler.answers(1.0)
    await daemon.reconciler.answers(1.0)
    assert profile(server) == a2dp, "a call that does not record keeps A2DP"
    server.add(recording())
    await until(lambda: head_unit(profile(server)), "the headset switched to HSP/HFP")
    assert profile(server) in {"handsfree_head_unit", "headset-head-unit"}  # HFP, codec free
    names = {d.name for d in server.devices}
    assert {d.name for d in headset.devices[profile(server)]} <= names
    assert not {d.name for d in headset.devices[a2dp]} - {
        d.name for d in headset.devices[profile(server)]} & names, "the A2DP sink went"
    server.remove(recording().key)  # the call stops recording
    await until(lambda: profile(server) == a2dp, "the headset back on A2DP")
    server.add(recording(3))
    await until(lambda: head_unit(profile(server)), "switched again")
    daemon.sessions.drop_owner(":1.7")  # the call's client goes
    await until(lambda: profile(server) == a2dp, "back on A2DP with the session gone")
    assert daemon.failures == []
    assert session.id not in daemon.sessions.sessions


async def test_the_daemon_stopping_gives_the_headset_back_its_profile(server, daemons,  # noqa: F811
                                                                       headset):
    a2dp = headset.card.active_profile
    daemon = await daemons()
    call(daemon)
    server.add(recording())
    await until(lambda: head_unit(profile(server)), "the headset switched")
    await daemon.reconciler.restore_all()
    assert profile(server) == a2dp


@pytest.mark.parametrize("options, category", [((), "playAndRecord"),
                                               (("allowBluetooth",), "record")])
async def test_no_switch_without_allow_bluetooth_in_a_call(server, daemons, headset,  # noqa: F811
                                                           options, category):
    a2dp = headset.card.active_profile
    daemon = await daemons()
    call(daemon, options, category)
    server.add(recording())
    await until(lambda: daemon.reconciler.sessions and any(
        s.explicit and s.streams for s in daemon.reconciler.sessions), "the session records")
    await daemon.reconciler.answers(1.0)
    await until(lambda: not daemon.reconciler.tasks.pending, "nothing under way")
    assert profile(server) == a2dp
    assert not [w for w in server.writes if w[1] == "profile"]


async def test_a_card_that_vanishes_mid_switch_is_logged_and_nothing_else(
        server, daemons, headset, caplog, monkeypatch):  # noqa: F811
    daemon = await daemons()
    call(daemon)

    async def vanished(card, profile):
        raise NoSuchDevice(f"no card {card.name!r} (#{card.index})")
    monkeypatch.setattr(daemon.backend, "set_card_profile", vanished)
    server.add(recording())
    await until(lambda: "not switched to" in caplog.text, "the failure logged")
    assert daemon.failures == [] and daemon.reconciler.headsets.switched == {}


def test_the_call_profile_is_hfp_without_a_codec_and_none_when_unavailable():
    pipewire = recorded_headset("pipewire").card
    assert call_profile(pipewire) == "headset-head-unit"
    assert call_profile(recorded_headset("pulseaudio").card) == "handsfree_head_unit"
    gone = dataclasses.replace(pipewire, profiles=tuple(
        dataclasses.replace(p, available=not head_unit(p.name)) for p in pipewire.profiles))
    assert call_profile(gone) == ""
    assert call_profile(Card("card:1", 1, "x", (Profile("a2dp-sink"),))) == ""


def test_a_route_onto_a_switched_headset_is_a_configuration_change():
    headset = recorded_headset("pulseaudio")
    hfp = {d.id: d for d in headset.devices["handsfree_head_unit"]}
    sink, source = (next(d for d in hfp.values() if d.kind == k) for k in ("sink", "source"))
    speaker = RoutePort("builtInSpeaker", "Speaker", "speaker", "sink:0")
    mic = RoutePort("builtInMic", "Mic", "mic", "source:1")
    before = RouteDecision(PortChoice(speaker, ""), PortChoice(mic, ""))
    after = RouteDecision(PortChoice(RoutePort("bluetoothHFP", "", sink.name, sink.id), ""),
                          PortChoice(RoutePort("bluetoothHFP", "", source.name, source.id), ""))
    change = RouteChange("playAndRecord", RouteChangeReason.newDeviceAvailable, before, after)
    assert configuration_change(change, {headset.card.name}, hfp).reason is \
        RouteChangeReason.routeConfigurationChange
    assert configuration_change(change, set(), hfp) is change  # not switched by us
    back = RouteChange("playAndRecord", RouteChangeReason.unknown, after, before)
    assert configuration_change(back, {headset.card.name}, hfp) is back


@pytest.mark.parametrize("which", ["pulseaudio", "pipewire"])
async def test_a_headset_that_connects_during_a_call_is_switched(server, daemons,  # noqa: F811
                                                                 which):
    daemon = await daemons()
    call(daemon)
    server.add(recording())
    await until(lambda: any(s.explicit and s.streams for s in daemon.reconciler.sessions),
                "the call records")
    recorded = recorded_headset(which)
    server.add_card(recorded.card, recorded.devices)  # its card's new event
    await until(lambda: head_unit(profile(server)), "the new headset switched to HSP/HFP")


@pytest.mark.parametrize("which", ["pulseaudio", "pipewire"])
async def test_the_call_is_told_routeConfigurationChange_when_its_headset_switches(
        server, daemons, which):  # noqa: F811
    recorded = recorded_headset(which)
    server.add_card(recorded.card, recorded.devices)
    daemon = await daemons()
    changes = []
    daemon.reconciler.router.on_route_change.append(
        lambda session, change, streams: changes.append((session, change)))
    session = call(daemon)
    server.add(recording())
    await until(lambda: head_unit(profile(server)), "the headset switched to HSP/HFP")
    await until(lambda: changes, "the call's route change")
    sid, change = changes[-1]
    assert sid == f"session:{session.id}"
    assert change.reason is RouteChangeReason.routeConfigurationChange
    hfp = {d.name for d in recorded.devices[profile(server)]}
    assert {change.current.output.port.uid.split("/")[0],
            change.current.input.port.uid.split("/")[0]} <= hfp


async def test_a_headset_a_killed_daemon_left_in_hfp_gets_its_profile_back_at_the_next_start(
        server, daemons, headset):  # noqa: F811
    """The switch is journalled before it is made: a daemon killed during the call (its
    session dies with it) leaves the card in HSP/HFP; the next start on the same server
    instance gives A2DP back and forgets the record."""
    a2dp = headset.card.active_profile
    daemon = await daemons()
    call(daemon)
    server.add(recording())
    await until(lambda: head_unit(profile(server)), "the headset switched")
    assert [(c, p) for _, c, p in daemon.journal.switched_cards()] == [
        (headset.card.name, a2dp)]
    daemon.kill()
    assert head_unit(profile(server)), "killed: nothing gave it back"
    restarted = await daemons()
    await until(lambda: profile(server) == a2dp, "A2DP given back at the next start")
    await until(lambda: restarted.journal.switched_cards() == [], "the record forgotten")


async def test_a_switch_recorded_on_another_server_instance_is_forgotten(
        server, daemons, headset):  # noqa: F811
    daemon = await daemons()
    call(daemon)
    server.add(recording())
    await until(lambda: head_unit(profile(server)), "the headset switched")
    daemon.kill()
    server.die()
    server.start()  # a new instance: its cards start afresh
    restarted = await daemons()
    await until(lambda: restarted.journal.switched_cards() == [], "the record forgotten")
    assert not [w for w in server.writes if w[1] == "profile"][1:], "nothing switched back"
