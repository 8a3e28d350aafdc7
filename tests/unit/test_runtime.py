"""The runtime's promises under faults, on a scripted server (:mod:`tests.support.fake_backend`):
the journal row of an effect outlives it until the server has answered the write that undoes it;
a ramp's path is journalled; every stream the server starts at a value of ours gets the user's
value back; a journal that cannot be written stops new effects, never the undoing; an internal
error is reported, never swallowed."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from audiopolicyd.runtime import passes
from audiopolicyd.effects import Applied, ramp_steps, scaled
from audiopolicyd.backends.base import Module
from audiopolicyd.journal import Journal
from audiopolicyd.microphone.broker import Gate, MicrophoneBroker
from audiopolicyd.model import Device, StreamKind
from audiopolicyd.microphone.stores import SqlitePermissionStore
from audiopolicyd.runtime import Runtime
from audiopolicyd.runtime.connection import BACKOFF_FIRST, BACKOFF_MAX, STABLE_SECONDS, Backoff
from audiopolicyd.runtime.runtime import THROTTLE_FROM

from ..support.fake_backend import UNLINKED, FakeServer
from .conftest import make_stream

# a connection a test leaves open fails that test (Python 3.13 warns when one is freed open)
pytestmark = pytest.mark.usefixtures("collect_garbage")

USER = (40000, 40000)
GAME_KEY = "sink-input-by-media.role:game"


async def until(predicate, what: str, timeout: float = 5.0):
    """Wait (on the loop) until ``predicate()`` is true; fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


class Daemon:
    """A runtime on its own connection to ``server``, with a journal file."""

    def __init__(self, server: FakeServer, path, policies, pm):
        self.server = server
        self.backend = server.connection()
        self.journal = Journal(path)
        self.reconciler = Runtime(self.backend, self.journal, lambda: policies, pm)
        self.failures: list[BaseException] = []
        self.reconciler.on_failure = self.failures.append
        self.task = asyncio.ensure_future(self.reconciler.run())

    async def started(self) -> Daemon:
        await until(self.reconciler.connected.is_set, "the reconciler to connect")
        return self

    def kill(self) -> None:
        """As ``kill -9``: nothing more reaches the server, nothing is restored."""
        self.backend.sever()
        self.task.cancel()
        for task in [*self.reconciler.tasks.pending, *self.reconciler.actuator.ramps.values()]:
            task.cancel()
        self.journal.close()


@pytest.fixture
async def server():
    return FakeServer()


@pytest.fixture
async def start(server, tmp_path, policies, pm):
    """``await start(microphone=False)``: a started :class:`Daemon`; with *microphone*, with
    a permission broker (decisions in memory, every app undetermined) enforcing the gate."""
    daemons: list[Daemon] = []
    brokers: list[MicrophoneBroker] = []

    async def start(microphone: bool = False) -> Daemon:
        daemon = Daemon(server, tmp_path / "journal.sqlite3", policies, pm)
        if microphone:
            broker = MicrophoneBroker()
            await broker.start(SqlitePermissionStore(":memory:"))
            brokers.append(broker)
            daemon.reconciler.microphone = broker
            broker.on_decisions.append(daemon.reconciler.request_reconcile)
        daemons.append(daemon)
        return await daemon.started()

    yield start
    for daemon in daemons:
        if not daemon.backend.severed:
            daemon.kill()
    for broker in brokers:
        await broker.store.close()


def game(index: int, volume=USER):
    return make_stream(index, role="game", volume=volume)


async def ducked_game(server, start):
    daemon = await start()
    server.add(game(1))
    server.add(make_stream(2, role="phone"))
    await until(lambda: server.volume("sink-input:1") == scaled(USER, 0.2), "the game ducked")
    return daemon


async def test_a_journal_row_is_forgotten_only_after_the_server_answers_the_undo(server, start):
    daemon = await ducked_game(server, start)
    server.hold()
    server.remove("sink-input:2")  # the call ends
    await until(lambda: ("sink-input:1", "volume", USER) in server.writes, "the restore sent")
    await asyncio.sleep(0.05)
    assert "sink-input:1" in daemon.journal.effects(), \
        "a crash now must find the row: the restore is not applied yet"
    server.release()
    await until(lambda: "sink-input:1" not in daemon.journal.effects(), "the row forgotten")
    assert server.volume("sink-input:1") == USER


async def test_killed_before_the_undo_arrives_then_restarted_restores(server, start):
    daemon = await ducked_game(server, start)
    server.hold()
    server.remove("sink-input:2")
    await until(lambda: ("sink-input:1", "volume", USER) in server.writes, "the restore sent")
    daemon.kill()
    server.drop()  # killed before the restore left the process
    assert server.volume("sink-input:1") == scaled(USER, 0.2)
    await start()
    await until(lambda: server.volume("sink-input:1") == USER, "the user's volume back")


async def test_killed_inside_a_ramp_restores_the_users_volume(server, start):
    daemon = await start()
    server.add(game(1))
    server.add(make_stream(2, role="phone"))
    end = scaled(USER, 0.2)
    await until(lambda: end[0] < server.volume("sink-input:1")[0] < USER[0], "a ramp step")
    daemon.kill()
    step = server.volume("sink-input:1")
    journal = Journal(daemon.journal.path)
    row = journal.effects()["sink-input:1"]
    journal.close()
    assert row.ramp_from == USER and row.target == end and row.base == USER
    server.remove("sink-input:2")  # the call ends while the daemon is dead
    assert server.volume("sink-input:1") == step

    await start()
    await until(lambda: server.volume("sink-input:1") == USER, "the user's volume back")


async def test_a_user_volume_during_a_ramp_ends_the_ramp_and_is_restored(server, start):
    await start()
    server.add(game(1))
    server.add(make_stream(2, role="phone"))
    await until(lambda: server.volume("sink-input:1")[0] < USER[0], "the ramp under way")
    server.user_volume("sink-input:1", (30000, 30000))
    await asyncio.sleep(0.3)  # longer than the ramp
    assert server.volume("sink-input:1") == (30000, 30000), "later steps left it alone"
    server.remove("sink-input:2")
    await asyncio.sleep(0.05)
    assert server.volume("sink-input:1") == (30000, 30000)


async def test_every_stream_the_server_starts_at_our_value_gets_the_users_back(
        server, start, tmp_path):
    journal = Journal(tmp_path / "journal.sqlite3")
    ducked = scaled(USER, 0.2)
    journal.linger([Applied("sink-input:1", GAME_KEY, USER, 0.2, ducked)])
    journal.close()
    daemon = await start()
    for index in (11, 12, 13):  # the server remembered our duck for the role
        server.add(game(index, ducked))  # one after the other, as apps respawn
        await until(lambda: server.volume(f"sink-input:{index}") == USER,
                    f"sink-input:{index} at the user's volume")

    server.add(make_stream(20, role="phone"))  # a new call ducks from the user's volume
    for index in (11, 12, 13):
        await until(lambda: server.volume(f"sink-input:{index}") == ducked,
                    f"sink-input:{index} ducked once, not twice")
    server.remove("sink-input:20")
    for index in (11, 12, 13):
        await until(lambda: server.volume(f"sink-input:{index}") == USER,
                    f"sink-input:{index} restored")

    server.add(game(14, (50000, 50000)))  # the server remembers another value now
    await until(lambda: daemon.journal.lingering(GAME_KEY) is None, "the row forgotten")
    await asyncio.sleep(0.05)
    assert server.volume("sink-input:14") == (50000, 50000)


async def test_a_stream_the_server_hands_our_value_again_on_relinking_gets_the_users_back(
        server, start, tmp_path):
    """pipewire-pulse shows a stream it sets up unlinked again for a moment, and WirePlumber
    hands it the value it remembers (our duck) when it links again, over the user's value we
    had given back (seen after a restart of the server, in test_kill_points)."""
    journal = Journal(tmp_path / "journal.sqlite3")
    ducked = scaled(USER, 0.2)
    journal.linger([Applied("sink-input:1", GAME_KEY, USER, 0.2, ducked)])
    journal.close()
    await start()
    for index in (11, 12):
        server.add(game(index, ducked))
        await until(lambda: server.volume(f"sink-input:{index}") == USER,
                    f"sink-input:{index} at the user's volume")
    server.add(game(13, (50000, 50000)))  # the server remembers another value now
    await until(lambda: server.volume("sink-input:13") == (50000, 50000), "13 as it started")
    server._set("sink-input:11", device=UNLINKED, corked=True)  # unlinked for a moment
    await asyncio.sleep(0.02)
    server._set("sink-input:11", device="sink:0", corked=False, volume=ducked)  # relinked at ours
    await until(lambda: server.volume("sink-input:11") == USER, "the user's volume again")


async def test_a_journal_that_cannot_be_written_stops_new_effects_not_the_undoing(
        server, start, monkeypatch):
    monkeypatch.setattr(passes, "JOURNAL_RETRY", 0.05)
    daemon = await ducked_game(server, start)
    daemon.journal._db.execute("PRAGMA query_only = 1")  # every write now fails
    server.add(game(3))
    await until(lambda: daemon.journal.failure != "", "the journal failure noticed")
    await asyncio.sleep(0.05)
    assert server.volume("sink-input:3") == USER, "no effect the journal cannot record"

    server.remove("sink-input:2")
    await until(lambda: server.volume("sink-input:1") == USER, "the duck undone anyway")

    daemon.journal._db.execute("PRAGMA query_only = 0")
    server.add(make_stream(4, role="phone"))
    for index in (1, 3):
        await until(lambda: server.volume(f"sink-input:{index}") == scaled(USER, 0.2),
                    f"sink-input:{index} ducked once the journal works")
    assert daemon.journal.failure == ""


async def test_an_internal_error_is_reported_and_the_loop_stops_answering(server, start):
    daemon = await start()
    assert await daemon.reconciler.answers(1.0)
    daemon.reconciler.policies = lambda: 1 / 0
    server.add(game(1))
    await until(lambda: daemon.failures, "the failure reported")
    assert isinstance(daemon.failures[0], ZeroDivisionError)
    assert not await daemon.reconciler.answers(0.1)


def test_backoff_doubles_until_a_connection_lasts():
    backoff = Backoff()
    first = [backoff.next() for _ in range(4)]
    assert first == [BACKOFF_FIRST * 2 ** i for i in range(4)]
    backoff.lasted(0.01)  # a server that accepts and drops us at once is not hammered
    assert backoff.next() == BACKOFF_FIRST * 2 ** 4
    for _ in range(20):
        backoff.next()
    assert backoff.next() == BACKOFF_MAX
    backoff.lasted(STABLE_SECONDS)
    assert backoff.next() == BACKOFF_FIRST


async def test_killed_before_the_last_step_of_a_ramp_arrives(server, start):
    daemon = await start()
    server.add(game(1))
    server.add(make_stream(2, role="phone"))
    steps = ramp_steps(USER, scaled(USER, 0.2), 100)
    await until(lambda: server.volume("sink-input:1") == steps[-2], "the last step but one")
    server.hold()
    await until(lambda: ("sink-input:1", "volume", steps[-1]) in server.writes, "the last step")
    daemon.kill()
    server.drop()  # the last step never arrived; the ramp's path must still be in the journal
    server.remove("sink-input:2")
    await start()
    await until(lambda: server.volume("sink-input:1") == USER, "the user's volume back")


NULL_SINK = Module(1, "module-null-sink", "sink_name=speaker")
LOOPBACK = Module(2, "module-loopback", "source=mic sink=speaker")


async def test_modules_are_trusted_as_the_server_instance_had_them_first(server, start):
    server.modules = [NULL_SINK, LOOPBACK]
    daemon = await start()
    assert daemon.reconciler.trusted_modules == {1, 2}  # the first connection: its own
    daemon.kill()
    # loaded while the daemon was down, and at the index of one unloaded meanwhile
    # (pipewire-pulse reuses indices): neither is trusted by the restarted daemon
    server.modules = [NULL_SINK, Module(2, "module-loopback", "source=mic sink=trap"),
                      Module(3, "module-loopback", "source=mic sink=trap2")]
    daemon = await start()
    assert daemon.reconciler.trusted_modules == {1}
    daemon.kill()
    # the server restarts (a new cookie): its configuration comes back and is trusted, but
    # not a module a client loaded before the daemon reconnected (any PulseAudio client may
    # make the server exit, and the first to connect starts the next one)
    server.die()
    server.start()
    server.modules = [NULL_SINK, Module(7, "module-loopback", "source=mic sink=trap3"),
                      dataclasses.replace(LOOPBACK, index=9)]
    daemon = await start()
    assert daemon.reconciler.trusted_modules == {1, 9}
    daemon.kill()
    daemon = await start()  # and the daemon restarted again keeps that record
    assert daemon.reconciler.trusted_modules == {1, 9}


async def test_the_gate_works_on_opaque_device_ids(server, start, caplog):
    """The mirror, the gate and the microphone paths take a backend's device ids as they come
    (issue 10): ids of another shape than ``sink:N``, a sink and its monitor at one index (as
    on pipewire-pulse). A recording of the monitor is exempt, one of the microphone is held;
    a loopback loaded at run time from the microphone into the sink makes the monitor's
    recording a microphone stream, and the gate names the source it captures."""
    server.devices = [Device("sink", 0, "speaker", id="dev-speaker"),
                      Device("source", 1, "mic", id="dev-mic"),
                      Device("sink", 4, "trap", id="dev-trap"),
                      Device("source", 4, "trap.monitor", monitor_of="dev-trap",
                             id="dev-trap-monitor")]
    daemon = await start(microphone=True)
    assert set(daemon.reconciler.devices) == {"dev-speaker", "dev-mic", "dev-trap",
                                              "dev-trap-monitor"}
    gates = daemon.reconciler.gates

    def on(index, kind, device, module=-1, **kw):
        return dataclasses.replace(make_stream(index, kind, **kw), device=device,
                                   owner_module=module,
                                   module="module-loopback" if module >= 0 else "")

    server.add(on(1, StreamKind.SOURCE_OUTPUT, "dev-trap-monitor", app="rec"))
    server.add(on(2, StreamKind.SOURCE_OUTPUT, "dev-mic", app="rec2"))
    await until(lambda: gates.get("source-output:1") is Gate.EXEMPT
                and gates.get("source-output:2") is Gate.BLOCKED, "the two recordings gated")
    # muted on `new` until known (fail closed), then lifted for the monitor's
    await until(lambda: not server.state["source-output:1"].muted, "the monitor's unmuted")
    assert server.state["source-output:2"].muted
    server.modules.append(Module(5, "module-loopback", "source=mic sink=trap"))
    with caplog.at_level("WARNING", logger="audiopolicyd.microphone.gate"):
        server.add(on(3, StreamKind.SOURCE_OUTPUT, "dev-mic", module=5))
        server.add(on(3, StreamKind.SINK_INPUT, "dev-trap", module=5))
        await until(lambda: gates.get("source-output:1") is Gate.BLOCKED,
                    "the monitor's recording gated once the microphone feeds the sink")
        await until(lambda: server.state["source-output:1"].muted, "the monitor's muted")
    assert "module-loopback #5 loaded at run time captures mic: gated" in caplog.text


async def test_an_untrusted_modules_microphone_stream_is_gated_as_the_module(server, tmp_path,
                                                                          policies, pm):
    # the graph of issue 9 item 2: a trusted loopback (module 2) from mic into speaker, one
    # loaded later (module 5) from mic into trap, and a client recording trap.monitor
    server.devices += [Device("sink", 4, "trap"), Device("source", 6, "trap.monitor",
                                                         monitor_of="sink:4")]
    server.modules = [NULL_SINK, LOOPBACK]

    def module_stream(index, kind, device, module, name="module-loopback"):
        return dataclasses.replace(make_stream(index, kind), device=device, owner_module=module,
                                   module=name)

    server.add(module_stream(1, StreamKind.SOURCE_OUTPUT, "source:1", 2))
    server.add(module_stream(1, StreamKind.SINK_INPUT, "sink:0", 2))
    daemon = Daemon(server, tmp_path / "journal.sqlite3", policies, pm)
    daemon.reconciler.microphone = broker = MicrophoneBroker()  # no store read: all blocked
    await daemon.started()
    await until(lambda: daemon.reconciler.gates.get("source-output:1") is Gate.EXEMPT,
                "the trusted loopback's recording exempt")
    server.modules.append(Module(5, "module-loopback", "source=mic sink=trap"))
    server.add(module_stream(2, StreamKind.SOURCE_OUTPUT, "source:1", 5))
    server.add(module_stream(2, StreamKind.SINK_INPUT, "sink:4", 5))
    recorder = dataclasses.replace(make_stream(3, StreamKind.SOURCE_OUTPUT, app="rec"),
                                   device="source:6")
    server.add(recorder)
    await until(lambda: {r.app_id for r in broker.recording} >= {"module:module-loopback"}
                and len(broker.recording) == 2, "the module and the recorder recording")
    assert server.state["source-output:2"].muted and server.state["source-output:3"].muted
    assert not server.state["source-output:1"].muted
    assert daemon.reconciler.gates["source-output:3"] is Gate.BLOCKED  # trap.monitor: the mic
    # the loopback goes: trap.monitor is quiet again, and its recorder is not gated
    server.remove("source-output:2")
    server.remove("sink-input:2")
    await until(lambda: daemon.reconciler.gates.get("source-output:3") is Gate.EXEMPT,
                "the recorder of a quiet monitor exempt")
    await until(lambda: not server.state["source-output:3"].muted, "the recorder unmuted")
    daemon.kill()


async def test_a_slow_pass_delays_the_next_by_as_long(server, start):
    """A pass (with its routing) that took THROTTLE_FROM or more delays the next by as long
    again since it ended (in a burst of changes, passes take at most half the loop's time); a
    quick one never does."""
    daemon = await start()
    runtime, loop = daemon.reconciler, asyncio.get_running_loop()
    passes: list[float] = []
    runtime.on_pass.append(lambda: passes.append(loop.time()))
    runtime._pass_cost, runtime._pass_end = 0.3, loop.time()  # as if it just took 300 ms
    runtime.request_reconcile()
    await asyncio.sleep(0.05)
    assert passes == [], "not before 300 ms have gone by since the last pass"
    await until(lambda: passes, "the delayed pass")
    runtime._pass_cost, runtime._pass_end = THROTTLE_FROM / 2, loop.time()
    runtime.request_reconcile()
    for _ in range(5):  # the pass, and its routing two turns later if it wrote
        await asyncio.sleep(0)
    assert len(passes) == 2, "a quick pass: the next runs on the next loop turns"
