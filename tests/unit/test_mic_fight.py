"""The microphone gate's hold and fights (issue 9, item 3), on a scripted server
(:mod:`tests.support.fake_backend`): a stream of an app that may not record is held muted and
at volume 0; one that anybody unmutes or raises afterwards is killed and its app counted; the
daemon's own writes, the server's late restore, and granted apps never count as a fight."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from audiopolicyd.microphone import gate as gate_module
from audiopolicyd.identity import recording_app
from audiopolicyd.model import StreamKind
from audiopolicyd.microphone.stores import Decision

from ..support.fake_backend import UNLINKED, FakeServer
from .conftest import VERIFIED, make_stream
from .test_runtime import server, start, until  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("collect_garbage")

FULL = (65536, 65536)
ZERO = (0, 0)
KEY = "source-output:5"


def recorder(index: int = 5, **kw):
    return make_stream(index, StreamKind.SOURCE_OUTPUT, app="rec", extra=VERIFIED, **kw)


APP = recording_app(recorder().properties).app_id


def held(server: FakeServer, key: str = KEY) -> bool:
    stream = server.state.get(key)
    return stream is not None and stream.muted and stream.volume == ZERO


async def test_a_stream_of_an_app_that_may_not_record_is_held_muted_at_volume_0(server, start):
    daemon = await start(microphone=True)
    server.add(recorder())
    await until(lambda: held(server), "the stream held")
    await asyncio.sleep(0.05)
    assert server.killed == [] and daemon.reconciler.microphone.fought == {}


@pytest.mark.parametrize("undo", ["unmute", "volume"])
async def test_a_held_stream_that_is_unmuted_or_raised_is_killed_and_its_app_counted(
        server, start, caplog, undo):
    daemon = await start(microphone=True)
    server.add(recorder())
    await until(lambda: held(server), "the stream held")
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.WARNING, "audiopolicyd.microphone"):
        if undo == "unmute":
            server.user_mute(KEY, False)
        else:
            server.user_volume(KEY, FULL)
        await until(lambda: server.killed == [KEY], "the stream killed")
    assert daemon.reconciler.microphone.fought == {APP: 1}
    (warning,) = [r.getMessage() for r in caplog.records if "fought" in r.getMessage()]
    assert KEY in warning and APP in warning
    assert ("unmuted" if undo == "unmute" else "volume raised to 65536") in warning


async def test_every_stream_that_fights_is_killed_and_counted(server, start):
    daemon = await start(microphone=True)
    for index in (5, 6, 7):
        key = f"source-output:{index}"
        server.add(recorder(index))
        await until(lambda: held(server, key), f"{key} held")
        await asyncio.sleep(0.01)
        server.user_mute(key, False)
        await until(lambda: key in server.killed, f"{key} killed")
    assert daemon.reconciler.microphone.fought == {APP: 3}


async def test_the_daemons_own_mute_read_back_as_the_old_state_is_no_fight(server, start):
    """The read sent with the mute on ``new`` is answered before the mute lands: it shows the
    stream unmuted at full volume. That is our write not answered yet, not a fight."""
    daemon = await start(microphone=True)
    server.hold()
    server.add(recorder())
    await until(lambda: (KEY, "muted", True) in server.writes, "the mute on new sent")
    await asyncio.sleep(0.05)  # reads answered meanwhile show it unmuted
    assert server.state[KEY].muted is False
    server.release()
    await until(lambda: held(server), "the stream held")
    await asyncio.sleep(0.05)
    assert server.killed == [] and daemon.reconciler.microphone.fought == {}


async def test_a_server_that_restores_the_volume_after_linking_is_no_fight(server, start):
    """pipewire-pulse shows a new stream unlinked at volume 0, then linked at the volume
    WirePlumber restores: the hold (volume 0) starts only then."""
    daemon = await start(microphone=True)
    server.add(dataclasses.replace(recorder(), device=UNLINKED, volume=ZERO, corked=True))
    await until(lambda: server.state[KEY].muted, "the mute on new")
    await asyncio.sleep(0.01)
    server._set(KEY, device="source:1", volume=FULL, corked=False)  # linked, restored
    await until(lambda: held(server), "the stream held")
    await asyncio.sleep(0.05)
    assert server.killed == [] and daemon.reconciler.microphone.fought == {}


async def test_a_granted_apps_stream_may_be_unmuted_and_raised(server, start):
    daemon = await start(microphone=True)
    await daemon.reconciler.microphone.decide(APP, Decision.GRANTED, "test")
    server.add(recorder())
    await until(lambda: (KEY, "muted", False) in server.writes, "the mute on new lifted")
    server.user_mute(KEY, True)
    server.user_mute(KEY, False)
    server.user_volume(KEY, (30000, 30000))
    await asyncio.sleep(0.05)
    assert server.killed == [] and KEY in server.state


async def test_a_grant_lifts_the_hold_and_gives_the_volume_back_without_a_kill(server, start):
    daemon = await start(microphone=True)
    server.add(recorder(volume=(50000, 50000)))
    await until(lambda: held(server), "the stream held")
    await daemon.reconciler.microphone.decide(APP, Decision.GRANTED, "test")
    await until(lambda: not server.state[KEY].muted and server.volume(KEY) == (50000, 50000),
                "the stream unmuted at its volume")
    server.user_mute(KEY, True)  # the user may do as they like with a granted app's stream
    server.user_mute(KEY, False)
    await asyncio.sleep(0.05)
    assert server.killed == []


async def test_a_denial_holds_a_running_stream_and_a_fight_after_it_kills(server, start):
    daemon = await start(microphone=True)
    broker = daemon.reconciler.microphone
    await broker.decide(APP, Decision.GRANTED, "test")
    server.add(recorder())
    await until(lambda: (KEY, "muted", False) in server.writes, "recording")
    await asyncio.sleep(0.01)
    await broker.decide(APP, Decision.DENIED, "test")
    await until(lambda: held(server), "the stream held")
    await asyncio.sleep(0.01)
    assert server.killed == []
    server.user_volume(KEY, FULL)
    await until(lambda: server.killed == [KEY], "the stream killed")
    assert broker.fought == {APP: 1}


async def test_a_stream_the_server_starts_at_the_remembered_0_is_held_from_its_start(
        server, start):
    """Both servers remember the hold's volume 0 for the app: its next stream starts at 0
    (and nothing needs writing), and a volume above 0 after that is a fight."""
    daemon = await start(microphone=True)
    server.add(recorder(volume=ZERO, muted=True))
    await asyncio.sleep(0.05)
    assert server.killed == []
    server.user_volume(KEY, FULL)
    await until(lambda: server.killed == [KEY], "the stream killed")
    assert daemon.reconciler.microphone.fought == {APP: 1}


async def test_a_held_stream_flooded_with_writes_is_killed_whatever_the_reads_show(
        server, start):
    """A fighter in a loop makes the server answer reads late, but its change events come:
    more than FLOOD_EVENTS in FLOOD_WINDOW is a fight."""
    daemon = await start(microphone=True)
    server.add(recorder())
    await until(lambda: held(server), "the stream held")
    await asyncio.sleep(0.01)
    for i in range(gate_module.FLOOD_EVENTS + 2):
        server._set(KEY, corked=bool(i % 2))  # changes that leave the hold in place
    await until(lambda: server.killed == [KEY], "the stream killed")
    assert daemon.reconciler.microphone.fought == {APP: 1}


async def test_a_few_changes_of_a_held_stream_are_no_flood(server, start):
    daemon = await start(microphone=True)
    server.add(recorder())
    await until(lambda: held(server), "the stream held")
    for i in range(6):
        server._set(KEY, corked=bool(i % 2))
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    assert server.killed == [] and daemon.reconciler.microphone.fought == {}
