"""The microphone gate (:mod:`audiopolicyd.microphone.gate`) on a scripted server behaving as
pipewire-pulse (stale reads, a new stream linked at volume 0 before WirePlumber's restore):
the hold from the ``new`` event, the lift on a grant, a fight killed and counted, and which
modules are trusted. test_mic_fight holds the same promises on a server without quirks."""

from __future__ import annotations

import asyncio

import pytest

from audiopolicyd.backends.base import Module
from audiopolicyd.journal import Journal
from audiopolicyd.microphone.broker import Gate
from audiopolicyd.microphone.gate import ModuleTrust
from audiopolicyd.microphone.stores import Decision, SqlitePermissionStore
from audiopolicyd.microphone.broker import MicrophoneBroker
from audiopolicyd.model import StreamKind

from .test_mic_fight import APP, FULL, KEY, ZERO, held, recorder
from .test_runtime import Daemon, server, start, until  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("collect_garbage")


def held_after_restore(server) -> bool:
    """Held, with the volume 0 written over the restored volume (before the restore, a
    stream at 0 proves nothing: WirePlumber's restore may still change it)."""
    return held(server) and (KEY, "volume", ZERO) in server.writes


@pytest.fixture
async def pipewire(server, start):
    """A daemon with the gate on a server that behaves as pipewire-pulse."""
    server.behave_as_pipewire_pulse(restore_late=0.02)
    return await start(microphone=True)


async def test_a_new_recording_is_muted_before_anything_is_read(server, pipewire):
    backend = pipewire.backend
    writes_when_read: list[int] = []  # how many writes had arrived when each read answered
    read = backend.stream

    async def stream(stream_id):
        answer = await read(stream_id)
        writes_when_read.append(len(server.writes))
        return answer

    backend.stream = stream
    server.add(recorder(volume=(50000, 50000)))
    await until(lambda: writes_when_read, "the first read answered")
    assert writes_when_read[0] >= 1 and server.writes[0] == (KEY, "muted", True)
    await until(lambda: held_after_restore(server), "held muted at volume 0 once restored")
    assert pipewire.reconciler.gates[KEY] is Gate.BLOCKED


async def test_the_servers_late_restore_is_no_fight(server, pipewire):
    server.add(recorder())
    await until(lambda: held_after_restore(server), "the stream held")
    await asyncio.sleep(0.05)
    assert server.killed == [] and pipewire.reconciler.microphone.fought == {}


async def test_a_grant_lifts_the_hold_and_gives_the_restored_volume_back(server, pipewire):
    server.add(recorder(volume=(50000, 50000)))
    await until(lambda: held_after_restore(server), "the stream held")
    await pipewire.reconciler.microphone.decide(APP, Decision.GRANTED, "test")
    await until(lambda: not server.state[KEY].muted and server.volume(KEY) == (50000, 50000),
                "unmuted at its volume")
    assert pipewire.reconciler.gates[KEY] is Gate.ALLOWED
    await asyncio.sleep(0.05)
    assert server.killed == []


@pytest.mark.parametrize("undo", ["unmute", "volume"])
async def test_a_fight_is_killed_and_counted_despite_stale_reads(server, pipewire, undo):
    server.add(recorder())
    await until(lambda: held_after_restore(server), "the stream held")
    await asyncio.sleep(0.01)
    if undo == "unmute":
        server.user_mute(KEY, False)
    else:
        server.user_volume(KEY, FULL)
    await until(lambda: server.killed == [KEY], "the stream killed")
    assert pipewire.reconciler.microphone.fought == {APP: 1}
    await until(lambda: KEY not in pipewire.reconciler.gates, "the stream forgotten")


async def test_an_unmute_before_the_restore_is_held_again_not_killed(server, pipewire):
    """Linked at 0 before WirePlumber's restore, a stream's mute and volume may still be the
    server's to change: an unmute then proves no fight, and the hold is written again once the
    restore came."""
    server.add(recorder())
    await until(lambda: server.state[KEY].linked and server.state[KEY].muted, "muted at 0")
    server.user_mute(KEY, False)
    await until(lambda: held_after_restore(server), "held again after the restore")
    assert server.killed == [] and pipewire.reconciler.microphone.fought == {}


async def test_an_unreadable_recording_is_muted_at_connection(server, tmp_path, policies, pm):
    """A stream the backend cannot describe is not listed (pipewire-pulse with a property
    over 64 KiB) but named in ``unreadable``: muted, its app and source being unknowable."""
    server.add(recorder())
    server.add(recorder(6))
    daemon = Daemon(server, tmp_path / "journal.sqlite3", policies, pm)
    daemon.backend.unreadable[StreamKind.SOURCE_OUTPUT] = {6}
    listed = daemon.backend.streams

    async def streams():
        return [s for s in await listed() if s.key != "source-output:6"]

    daemon.backend.streams = streams
    broker = MicrophoneBroker()
    await broker.start(SqlitePermissionStore(":memory:"))
    daemon.reconciler.microphone = broker
    await daemon.started()
    await until(lambda: server.state["source-output:6"].muted, "the unreadable one muted")
    daemon.kill()
    await broker.store.close()


# -- module trust ---------------------------------------------------------------------------

LOOPBACK = Module(2, "module-loopback", "source=mic sink=speaker")
MINE = Module(8, "module-loopback", "source=mic sink=routed")


@pytest.fixture
def journal(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite3")
    yield journal
    journal.close()


def test_a_module_the_daemon_loads_stays_trusted_after_a_restart(journal):
    trust = ModuleTrust(journal)
    trust.load(1, [LOOPBACK])
    trust.trust_own_module(MINE)
    assert trust.trusted == {2, 8}
    restarted = ModuleTrust(journal)
    restarted.load(1, [LOOPBACK, MINE])
    assert restarted.trusted == {2, 8}


def test_an_unloaded_modules_index_is_not_trusted_again(journal):
    """pipewire-pulse gives a new module the index of an unloaded one."""
    trust = ModuleTrust(journal)
    trust.load(1, [LOOPBACK])
    trust.module_event(2)
    assert trust.trusted == set()
    restarted = ModuleTrust(journal)
    restarted.load(1, [LOOPBACK])  # at index 2 again, with the same arguments even
    assert restarted.trusted == set()


def test_no_module_is_trusted_when_the_journal_cannot_record_them(journal):
    journal._db.execute("PRAGMA query_only = 1")
    trust = ModuleTrust(journal)
    trust.load(1, [LOOPBACK])
    assert trust.trusted == set()
