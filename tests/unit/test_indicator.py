"""Issue 9 items 5 and 6 on the runtime: the recording indicator tells why an app records
silence, and a recording that may not hear the microphone does not act on anyone.

A runtime on :class:`~tests.support.fake_backend.FakeServer` with a real broker (decisions in
an in-memory SQLite store) and the shipped policies.
"""

from __future__ import annotations

import pytest

from audiopolicyd.journal import Journal
from audiopolicyd.microphone.broker import Gate, MicrophoneBroker, Silenced, silenced_by
from audiopolicyd.model import NEUTRAL, Effect, Reason, StreamKind
from audiopolicyd.microphone.stores import Decision, SqlitePermissionStore
from audiopolicyd.runtime import Runtime

from ..support.fake_backend import FakeServer
from .conftest import VERIFIED, make_stream
from .test_runtime import until

pytestmark = pytest.mark.usefixtures("collect_garbage")

MIC = "source-output:1"
MUSIC = "sink-input:2"


@pytest.fixture
async def daemon(tmp_path, policies, pm):
    server = FakeServer()
    broker = MicrophoneBroker()
    await broker.start(SqlitePermissionStore(":memory:"))
    journal = Journal(tmp_path / "journal.sqlite3")
    reconciler = Runtime(server.connection(), journal, lambda: policies, pm)
    reconciler.microphone = broker
    broker.on_decisions.append(reconciler.request_reconcile)
    failures: list[BaseException] = []
    reconciler.on_failure = failures.append
    import asyncio
    task = asyncio.ensure_future(reconciler.run())
    await until(reconciler.connected.is_set, "the reconciler to connect")
    yield server, reconciler, broker
    task.cancel()
    for t in list(reconciler.tasks.pending):
        t.cancel()
    journal.close()
    await broker.store.close()
    assert not failures


def recorder(**props):
    """pw-record as pipewire-pulse shows it: a recording that says media.role=music."""
    return make_stream(1, StreamKind.SOURCE_OUTPUT, role="music", app="pw-record",
                       extra=VERIFIED, **props)


def entry(broker):
    (rec,) = broker.recording
    return rec


async def test_an_ungranted_recording_does_not_silence_others_until_granted(daemon):
    server, reconciler, broker = daemon
    server.add(make_stream(2, role="music", app="mpv", pid=999999998))
    server.add(recorder())
    await until(lambda: broker.recording, "the recording listed")
    rec = entry(broker)
    assert rec.silenced and rec.reasons == ("permission",) and rec.keys == (MIC,)
    assert server.state[MIC].muted
    # Before: its implicit record session was active and muted the music.
    assert not server.state[MUSIC].muted
    session = next(s for s in reconciler.sessions if MIC in s.streams)
    assert session.category == "record" and not session.active

    await broker.decide(rec.app_id, Decision.GRANTED, "test")
    await until(lambda: not server.state[MIC].muted, "the recording unmuted")
    await until(lambda: server.state[MUSIC].muted, "the record policy to silence the music")
    await until(lambda: not entry(broker).silenced, "the indicator to say audible")
    assert entry(broker).reasons == ()

    await broker.decide(rec.app_id, Decision.DENIED, "test")
    await until(lambda: not server.state[MUSIC].muted, "the music back once denied")
    assert entry(broker).reasons == ("permission",)


async def test_the_switch_is_a_reason_and_stops_a_granted_recording_acting(daemon):
    server, reconciler, broker = daemon
    server.add(make_stream(2, role="music", app="mpv", pid=999999998))
    server.add(recorder())
    await until(lambda: broker.recording, "the recording listed")
    await broker.decide(entry(broker).app_id, Decision.GRANTED, "test")
    await until(lambda: server.state[MUSIC].muted, "the music silenced by the recording")
    broker.set_disabled(True)
    await until(lambda: entry(broker).reasons == ("switch",), "the switch named")
    assert entry(broker).silenced
    await until(lambda: server.state[MIC].muted, "the mute on the server")  # once answered
    await until(lambda: not server.state[MUSIC].muted, "the music back")
    await broker.decide(entry(broker).app_id, Decision.UNDETERMINED, "test")
    await until(lambda: entry(broker).reasons == ("permission", "switch"), "both reasons")


async def test_a_mute_the_daemon_did_not_make_is_named_muted(daemon):
    server, reconciler, broker = daemon
    server.add(recorder())
    await until(lambda: broker.recording, "the recording listed")
    await broker.decide(entry(broker).app_id, Decision.GRANTED, "test")
    # the server has our unmute (the mirror has it once sent): the user's mute comes after
    await until(lambda: not entry(broker).silenced and not server.state[MIC].muted, "audible")
    server._set(MIC, muted=True)  # the user, in pavucontrol
    await until(lambda: entry(broker).reasons == ("muted",), "the user's mute named")


async def test_an_app_is_silenced_only_while_none_of_its_streams_hears(daemon):
    server, reconciler, broker = daemon
    server.add(recorder())
    server.add(make_stream(3, StreamKind.SOURCE_OUTPUT, role="music", app="pw-record",
                           extra=VERIFIED))
    await until(lambda: broker.recording and entry(broker).streams == 2, "two streams")
    await broker.decide(entry(broker).app_id, Decision.GRANTED, "test")
    # the server has our unmutes (the mirror has them once sent): the user's mutes come after
    await until(lambda: not entry(broker).silenced and not server.state[MIC].muted
                and not server.state["source-output:3"].muted, "audible")
    server._set("source-output:3", muted=True)
    await until(lambda: server.state["source-output:3"].muted, "one stream muted")
    assert not entry(broker).silenced and entry(broker).reasons == ()  # the other one hears
    server._set(MIC, muted=True)
    await until(lambda: entry(broker).silenced, "both muted")
    assert entry(broker).reasons == ("muted",)


async def test_silenced_by_names_every_reason(daemon):
    _server, _reconciler, broker = daemon
    policy = Effect(mute=True, reasons=(Reason("mute", "s1", "playback", "playback.toml",
                                               "records"),))
    call = Effect(mute=True, reasons=(Reason("interrupt", "s2", "playAndRecord", "p.toml",
                                             "activation.others"),))
    assert silenced_by(broker, "app", Gate.BLOCKED, NEUTRAL) == (Silenced.PERMISSION,)
    assert silenced_by(broker, "app", Gate.ALLOWED, policy) == ("policy",)
    assert silenced_by(broker, "app", Gate.ALLOWED, call) == ("interruption",)
    assert silenced_by(broker, "app", Gate.ALLOWED, NEUTRAL) == ()
    broker.set_disabled(True)
    await broker.decide("app", Decision.GRANTED, "test")
    assert silenced_by(broker, "app", Gate.BLOCKED, policy) == ("switch", "policy")


def test_an_inert_stream_holds_no_session_active(policies):
    from audiopolicyd.engine import classify
    from audiopolicyd.model import Snapshot, freeze
    from audiopolicyd.sessions import ImplicitSessions
    rec = recorder()
    snap = Snapshot(freeze({rec.key: rec}), freeze({}), freeze({}))
    tracker = ImplicitSessions()
    (session,) = tracker.update(snap, classify(snap, policies), held={rec.key}, inert={rec.key})
    assert session.category == "record" and not session.active and session.streams == (MIC,)
    (session,) = tracker.update(snap, classify(snap, policies))
    assert session.active and session.seq == 1  # granted: it activates now


async def test_a_grant_does_not_unmute_a_recording_an_effect_mutes(daemon):
    server, reconciler, broker = daemon
    server.add(make_stream(3, role="phone", app="linphone", pid=999999997))  # a call
    server.add(recorder())
    await until(lambda: broker.recording, "the recording listed")
    assert entry(broker).reasons == ("interruption", "permission")
    await broker.decide(entry(broker).app_id, Decision.GRANTED, "test")
    await until(lambda: entry(broker).reasons == ("interruption",), "only the call's reason")
    # Before: the gate unmuted it and the interruption muted it again, two writes apart: a
    # moment of microphone for a stream that never should have heard it.
    assert (MIC, "muted", False) not in server.writes and server.state[MIC].muted
    server.remove("sink-input:3")  # the call ends
    await until(lambda: not server.state[MIC].muted, "the recording unmuted")
    assert not entry(broker).silenced
