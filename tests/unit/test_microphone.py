"""The microphone broker (one request per app, agents, timeouts, live decisions) and the
identity of recording streams, without a bus or a server: decisions in an in-memory SQLite
store, the agent a recording stand-in for the D-Bus adapter."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audiopolicyd.identity import (
    RecordingApp, audio_server_process, listens_on, recording_app, verified_pid,
)
from audiopolicyd.microphone.broker import (
    AgentExists, AgentFailed, Gate, MicrophoneBroker, NotGrantable, is_microphone,
    quiet_monitors, silenced_by,
)
from audiopolicyd.model import NEUTRAL, Device, Snapshot, StreamKind, freeze
from audiopolicyd.microphone.stores import Decision, SqlitePermissionStore

from .conftest import make_stream

# a connection a test leaves open fails that test (Python 3.13 warns when one is freed open)
pytestmark = pytest.mark.usefixtures("collect_garbage")

APP = RecordingApp("exe:/usr/bin/rec", "rec", "exe", 4242, "/usr/bin/rec")
OTHER = RecordingApp("exe:/usr/bin/other", "other", "exe", 4343, "/usr/bin/other")
#: A stream whose process nobody can check (pid from another pid namespace, or gone).
UNVERIFIED = recording_app({"application.process.id": "999999999", "application.name": "rec",
                            "application.process.binary": "rec"})


class Agent:
    """Stands in for the D-Bus adapter: records calls, answers when told."""

    def __init__(self):
        self.asked: list[tuple[str, str, dict]] = []
        self.cancelled: list[str] = []
        self.answers: dict[str, asyncio.Future] = {}

    async def ask(self, agent, request_id, app_id, info):
        self.asked.append((request_id, app_id, info))
        self.answers[request_id] = asyncio.get_running_loop().create_future()
        return await self.answers[request_id]

    def cancel(self, agent, request_id):
        self.cancelled.append(request_id)

    def answer(self, request_id, value):
        """Deliver the agent's reply (a decision string, or an exception to raise).

        A reply to a call the broker has withdrawn (its task cancelled) is dropped, as
        dbus-fast's reply handler drops it (it sets a call's future only while not done).
        How soon a cancelled task cancels the call it awaits depends on the Python:
        ``asyncio.wait_for`` awaits the call in the same task since 3.12, so the call is
        cancelled at once; before, in a task of its own, one loop turn later.
        Ref: https://github.com/python/cpython/issues/96764
        """
        future = self.answers[request_id]
        if future.done():
            return
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture
async def broker():
    b = MicrophoneBroker(caller=Agent(), prompt_timeout=0.2)
    await b.start(SqlitePermissionStore(":memory:"))
    yield b
    await b.store.close()  # as the daemon closes it at shutdown


async def test_streams_of_one_app_make_one_request_shown_to_the_agent_once(broker):
    broker.sync_streams({"source-output:1": APP, "source-output:2": APP})
    assert list(broker.requests) == [APP.app_id]
    assert broker.requests[APP.app_id].state == "pending"  # no agent yet
    broker.register_agent(":1.5", "/agent")
    await turns()
    assert [a[1] for a in broker.caller.asked] == [APP.app_id]
    assert broker.caller.asked[0][2]["Streams"] == 2
    broker.sync_streams({"source-output:1": APP, "source-output:2": APP,
                         "source-output:3": APP})
    await turns()
    assert len(broker.caller.asked) == 1


async def test_the_agents_answer_is_stored_applied_and_wakes_every_waiter(broker):
    changed = []
    broker.on_decisions.append(lambda: changed.append(broker.decision(APP.app_id)))
    broker.register_agent(":1.5", "/agent")
    waiters = [asyncio.ensure_future(broker.request(APP)) for _ in range(2)]
    await turns()
    assert len(broker.caller.asked) == 1
    broker.caller.answer(broker.caller.asked[0][0], "granted")
    assert await asyncio.gather(*waiters) == [Decision.GRANTED, Decision.GRANTED]
    assert await broker.store.get(APP.app_id) is Decision.GRANTED
    assert broker.allowed(APP.app_id) and Decision.GRANTED in changed
    assert not broker.requests
    assert await broker.request(APP) is Decision.GRANTED  # decided: no prompt
    assert len(broker.caller.asked) == 1


async def test_an_agent_that_never_answers_times_out_and_the_app_may_ask_again(broker):
    broker.register_agent(":1.5", "/agent")
    assert await broker.request(APP) is Decision.UNDETERMINED  # after prompt_timeout
    assert broker.caller.cancelled == [broker.caller.asked[0][0]]
    assert broker.decision(APP.app_id) is Decision.UNDETERMINED and not broker.requests
    assert not broker.allowed(APP.app_id)
    retry = asyncio.ensure_future(broker.request(APP))
    await turns()
    assert len(broker.caller.asked) == 2
    broker.caller.answer(broker.caller.asked[1][0], "denied")
    assert await retry is Decision.DENIED


async def test_a_stream_asks_once_a_new_stream_asks_again(broker):
    broker.register_agent(":1.5", "/agent")
    broker.sync_streams({"source-output:1": APP})
    await turns()
    broker.caller.answer(broker.caller.asked[0][0], "undetermined")  # dismissed
    await turns()
    assert not broker.requests
    broker.sync_streams({"source-output:1": APP})
    await turns()
    assert len(broker.caller.asked) == 1, "a dismissed stream must not prompt in a loop"
    broker.sync_streams({"source-output:1": APP, "source-output:9": APP})
    await turns()
    assert len(broker.caller.asked) == 2


async def test_an_agent_that_crashes_mid_prompt_leaves_the_request_to_the_next(broker):
    broker.register_agent(":1.5", "/agent")
    waiter = asyncio.ensure_future(broker.request(APP))
    await turns()
    first = broker.caller.asked[0][0]
    broker.unregister_agent(":1.5")  # NameOwnerChanged: the agent's connection left
    broker.caller.answer(first, AgentFailed("Disconnected", gone=True))
    await turns()
    assert broker.requests[APP.app_id].state == "pending" and not waiter.done()
    broker.register_agent(":1.6", "/agent")
    await turns()
    assert len(broker.caller.asked) == 2
    broker.caller.answer(broker.caller.asked[1][0], "granted")
    assert await waiter is Decision.GRANTED


async def test_garbage_from_an_agent_is_no_answer(broker):
    broker.register_agent(":1.5", "/agent")
    waiter = asyncio.ensure_future(broker.request(APP))
    await turns()
    broker.caller.answer(broker.caller.asked[0][0], "yes please")
    assert await waiter is Decision.UNDETERMINED
    assert broker.decision(APP.app_id) is Decision.UNDETERMINED


async def test_a_decision_made_elsewhere_withdraws_the_prompt(broker):
    broker.register_agent(":1.5", "/agent")
    waiter = asyncio.ensure_future(broker.request(APP))
    await turns()
    await broker.decide(APP.app_id, Decision.DENIED, "audiopolicyctl")
    assert await waiter is Decision.DENIED
    assert broker.caller.cancelled == [broker.caller.asked[0][0]]


async def test_a_request_whose_streams_went_is_moot(broker):
    broker.register_agent(":1.5", "/agent")
    broker.sync_streams({"source-output:1": APP, "source-output:2": OTHER})
    await turns()
    broker.sync_streams({"source-output:2": OTHER})
    assert list(broker.requests) == [OTHER.app_id]
    assert broker.caller.cancelled == [broker.caller.asked[0][0]]


async def test_reset_and_external_changes_apply_live(broker):
    fired = []
    broker.on_decisions.append(lambda: fired.append(1))
    broker.store._notify(APP.app_id, Decision.GRANTED)  # as a Changed signal would
    assert broker.allowed(APP.app_id) and fired
    await broker.decide(APP.app_id, Decision.UNDETERMINED, "audiopolicyctl")
    assert broker.decision(APP.app_id) is Decision.UNDETERMINED
    assert await broker.store.all() == {}


async def test_the_global_switch_blocks_everyone_and_asks_nobody(broker):
    await broker.decide(APP.app_id, Decision.GRANTED, "test")
    broker.register_agent(":1.5", "/agent")
    broker.set_disabled(True)
    assert not broker.allowed(APP.app_id)
    assert await broker.request(OTHER) is Decision.DENIED
    broker.sync_streams({"source-output:1": OTHER})
    assert not broker.requests and not broker.caller.asked
    broker.set_disabled(False)
    assert broker.allowed(APP.app_id)


async def test_one_agent_at_a_time(broker):
    broker.register_agent(":1.5", "/agent")
    with pytest.raises(AgentExists):
        broker.register_agent(":1.6", "/agent")
    assert not broker.unregister_agent(":1.6")
    assert broker.unregister_agent(":1.5", "/agent")
    broker.register_agent(":1.6", "/agent")


async def test_an_unverified_app_is_never_asked_for_nor_granted(broker):
    assert UNVERIFIED.app_id == "unverified:rec"
    broker.register_agent(":1.5", "/agent")
    broker.sync_streams({"source-output:1": UNVERIFIED})
    assert await broker.request(UNVERIFIED) is Decision.DENIED
    await turns()
    assert not broker.requests and not broker.caller.asked
    with pytest.raises(NotGrantable, match="cannot be granted"):
        await broker.decide(UNVERIFIED.app_id, Decision.GRANTED, "audiopolicyctl")
    await broker.decide(UNVERIFIED.app_id, Decision.DENIED, "audiopolicyctl")  # may be denied
    # a grant written into the store by anyone else counts for nothing
    broker.store._notify(UNVERIFIED.app_id, Decision.GRANTED)
    assert broker.decision(UNVERIFIED.app_id) is Decision.GRANTED
    assert not broker.allowed(UNVERIFIED.app_id)
    assert silenced_by(broker, UNVERIFIED.app_id, Gate.BLOCKED, NEUTRAL) == ("unverified",)


def test_fights_are_counted_for_a_bounded_number_of_apps(monkeypatch):
    import audiopolicyd.microphone.broker as microphone
    monkeypatch.setattr(microphone, "MAX_FOUGHT_APPS", 3)
    broker = MicrophoneBroker()
    for name in ("a", "b", "a", "c", "d"):  # a fighter claiming a new binary per stream
        broker.fought_gate(RecordingApp(f"unverified:{name}", name, "unverified"),
                           "source-output:1", name, "unmuted")
    assert broker.fought == {"unverified:a": 2, "unverified:c": 1, "unverified:d": 1}


def test_before_the_store_is_read_nobody_may_record():
    assert not MicrophoneBroker().allowed("anything")


# -- microphone paths (the server's graph) ------------------------------------------------------

def sink(index: int) -> str:
    """The id the PulseAudio backend gives the sink at *index*, '' for -1 (not linked)."""
    return f"sink:{index}" if index >= 0 else ""


def source(index: int) -> str:
    """The id the PulseAudio backend gives the source at *index*, '' for -1 (not linked)."""
    return f"source:{index}" if index >= 0 else ""


# A PulseAudio-like graph: sinks speaker (0) and trap (2), trap2 (4); sources speaker.monitor
# (0), mic (2), trap.monitor (3), a remapped mic (5), trap2.monitor (6), and a source whose
# loader set device.class=monitor on a remapped mic (7): only monitor_of_sink makes a monitor.
DEVICES = [Device("sink", 0, "speaker", id=sink(0)), Device("sink", 2, "trap", id=sink(2)),
           Device("sink", 4, "trap2", id=sink(4)),
           Device("source", 0, "speaker.monitor", monitor_of=sink(0), id=source(0)),
           Device("source", 2, "mic", id=source(2)),
           Device("source", 3, "trap.monitor", monitor_of=sink(2), id=source(3)),
           Device("source", 5, "remapped", id=source(5)),
           Device("source", 6, "trap2.monitor", monitor_of=sink(4), id=source(6)),
           Device("source", 7, "fake.monitor", freeze({"device.class": "monitor"}),
                  id=source(7))]
MIC, SPEAKER_MONITOR, TRAP_MONITOR, TRAP2_MONITOR = source(2), source(0), source(3), source(6)


def rec(index, device, module=-1, **props):
    """A source-output on the source of id *device*, owned by module index *module* (-1: a
    client)."""
    return replace(make_stream(index, StreamKind.SOURCE_OUTPUT, extra=props), device=device,
                   owner_module=module, module="module-loopback" if module >= 0 else "")


def out(index, into, module=-1):
    """A sink-input into the sink of id *into*, owned by module index *module* (-1: a
    client)."""
    return replace(make_stream(index, StreamKind.SINK_INPUT), device=into, owner_module=module,
                   module="module-loopback" if module >= 0 else "")


def graph(*streams, devices=DEVICES) -> Snapshot:
    """The mirror's snapshot: devices by their id, as the mirror keys them."""
    return Snapshot(freeze({s.key: s for s in streams}), freeze({d.id: d for d in devices}))


def test_only_monitors_of_sinks_no_microphone_feeds_are_quiet():
    assert quiet_monitors(graph()) == {SPEAKER_MONITOR, TRAP_MONITOR, TRAP2_MONITOR}
    quiet = quiet_monitors(graph())
    assert is_microphone(rec(1, MIC), quiet)
    assert is_microphone(rec(1, source(5)), quiet)  # a remapped mic is a source, not a monitor
    assert is_microphone(rec(1, source(7)), quiet)  # device.class=monitor is the loader's word
    assert not is_microphone(rec(1, SPEAKER_MONITOR), quiet)
    assert not is_microphone(make_stream(1, StreamKind.SINK_INPUT), quiet)
    assert Gate.BLOCKED.value == "blocked"


def test_a_self_declared_monitor_records_the_microphone():
    # issue 9 item 1: parecord --device=mic --property=stream.capture.sink=true
    claim = rec(1, MIC, **{"stream.capture.sink": "true"})
    assert is_microphone(claim, quiet_monitors(graph(claim)))


def test_fail_closed_a_stream_not_linked_or_on_a_source_not_known_yet():
    quiet = quiet_monitors(graph())
    assert is_microphone(rec(1, source(-1)), quiet)
    assert is_microphone(rec(1, ""), quiet)  # PA_INVALID_INDEX: the backend's '' too
    assert is_microphone(rec(1, source(42)), quiet)  # a new source: the device list comes later


def test_a_loopback_into_a_null_sink_makes_its_monitor_a_microphone_path():
    # issue 9 item 2: module-loopback source=mic sink=trap, then record trap.monitor
    loopback = (rec(1, MIC, module=6), out(1, sink(2), module=6))
    quiet = quiet_monitors(graph(*loopback))
    assert quiet == {SPEAKER_MONITOR, TRAP2_MONITOR}
    assert is_microphone(rec(2, TRAP_MONITOR), quiet)


def test_chains_of_loopbacks_are_followed_to_a_fixed_point():
    # mic -> trap (module 6), trap.monitor -> trap2 (module 7), listed in either order
    first = (rec(1, MIC, module=6), out(1, sink(2), module=6))
    second = (rec(2, TRAP_MONITOR, module=7), out(2, sink(4), module=7))
    for streams in (first + second, second + first):
        assert quiet_monitors(graph(*streams)) == {SPEAKER_MONITOR}
    # without the first link, the second carries a quiet monitor
    assert quiet_monitors(graph(*second)) == {SPEAKER_MONITOR, TRAP_MONITOR, TRAP2_MONITOR}


def test_a_module_capturing_a_quiet_monitor_feeds_no_microphone():
    streams = (rec(1, SPEAKER_MONITOR, module=6), out(1, sink(2), module=6))
    assert quiet_monitors(graph(*streams)) == {SPEAKER_MONITOR, TRAP_MONITOR, TRAP2_MONITOR}


def test_a_module_recording_not_linked_yet_feeds_a_microphone():
    streams = (rec(1, source(-1), module=6), out(1, sink(2), module=6))
    assert TRAP_MONITOR not in quiet_monitors(graph(*streams))


def test_a_clients_own_forwarding_is_its_own_microphone_stream():
    # a client recording mic and playing into trap is gated itself (its recording is a
    # microphone stream of its app): the rule follows modules only
    streams = (rec(1, MIC), out(1, sink(2)))
    assert is_microphone(streams[0], quiet_monitors(graph(*streams)))
    assert TRAP_MONITOR in quiet_monitors(graph(*streams))


def test_pipewire_pulse_sinks_and_monitors_share_an_index():
    devices = [Device("sink", 57, "trap", id=sink(57)),
               Device("source", 57, "trap.monitor", monitor_of=sink(57), id=source(57)),
               Device("source", 30, "mic", id=source(30))]
    streams = (rec(64, source(30), module=0x20000004), out(63, sink(57), module=0x20000004))
    assert quiet_monitors(graph(devices=devices)) == {source(57)}
    assert quiet_monitors(graph(*streams, devices=devices)) == frozenset()


def test_device_ids_are_opaque_to_the_microphone_paths():
    """The core compares device ids, never parses them (issue 10): ids of another shape than
    the PulseAudio backend's, on devices that all share one server index, make the same
    paths; a stream on no device ('') is not linked and records the microphone (fail closed)."""
    devices = [Device("sink", 1, "trap", id="dev-A"),
               Device("source", 1, "trap.monitor", monitor_of="dev-A", id="dev-B"),
               Device("source", 1, "mic", id="dev-C")]
    quiet = quiet_monitors(graph(devices=devices))
    assert quiet == {"dev-B"}
    assert not is_microphone(rec(1, "dev-B"), quiet)  # on the monitor
    assert is_microphone(rec(2, "dev-C"), quiet)  # on the plain source
    assert is_microphone(rec(3, "dev-Z"), quiet)  # on a source not listed yet
    unlinked = rec(4, "")
    assert rec(5, "dev-C").linked and not unlinked.linked and not unlinked.playing
    assert is_microphone(unlinked, quiet)
    # a module's loopback from the plain source into the sink: its monitor is a microphone path
    loopback = (rec(6, "dev-C", module=3), out(6, "dev-A", module=3))
    assert quiet_monitors(graph(*loopback, devices=devices)) == frozenset()
    # and a quiet set holding '' (no backend's) still leaves an unlinked stream a microphone's
    assert is_microphone(unlinked, frozenset({""}))


@given(st.lists(st.tuples(st.sampled_from(["rec", "out"]), st.integers(-1, 8),
                          st.integers(-1, 3)), max_size=12), st.randoms())
def test_paths_do_not_depend_on_order_and_more_modules_never_quiet_a_source(streams, rnd):
    made = [rec(i, source(device), module) if kind == "rec" else out(i, sink(device), module)
            for i, (kind, device, module) in enumerate(streams)]
    quiet = quiet_monitors(graph(*made))
    shuffled = list(made)
    rnd.shuffle(shuffled)
    assert quiet_monitors(graph(*shuffled)) == quiet
    assert quiet <= quiet_monitors(graph(*made[:-1])) if made else True
    assert quiet <= {SPEAKER_MONITOR, TRAP_MONITOR, TRAP2_MONITOR}


# -- identity --------------------------------------------------------------------------------

ME = {"application.process.id": str(os.getpid()),
      "application.process.binary": os.path.basename(os.readlink("/proc/self/exe"))}


def test_a_claimed_pid_is_believed_only_with_its_binary_and_user():
    assert verified_pid(ME) == (os.getpid(), os.readlink("/proc/self/exe"))
    assert verified_pid({**ME, "application.process.binary": "firefox"}) == (0, "")
    assert verified_pid(ME, uid=os.getuid() + 1) == (0, "")
    assert verified_pid({"application.process.id": "999999999"}) == (0, "")
    assert verified_pid({"application.process.id": "not a pid"}) == (0, "")


def test_recording_app_names_verified_processes_by_executable():
    app = recording_app({**ME, "application.name": "me"})
    assert app.app_id == "exe:" + os.readlink("/proc/self/exe") and app.source == "exe"
    assert app.pid == os.getpid() and not app.sandboxed


def test_stream_properties_cannot_make_an_unsandboxed_process_another_app():
    claims = {**ME, "pipewire.access.portal.app_id": "org.granted.App",
              "application.id": "org.granted.App"}
    app = recording_app(claims)
    assert app.app_id.startswith("exe:"), app
    gone = recording_app({"application.process.id": "999999999",
                          "application.process.binary": "rec"})
    assert gone.app_id == "unverified:rec" and gone.source == "unverified"


@pytest.mark.parametrize("pid", ["999999999", "1", "abc", "2", ""])
def test_a_portal_app_id_with_a_process_that_cannot_be_checked_is_unverified(pid):
    # the borrowed identity of issue 9 item 4: a pulse client's portal app id is its own word
    claims = {"application.process.id": pid, "application.process.binary": "pacat",
              "pipewire.access.portal.app_id": "org.granted.App",
              "pipewire.access": "flatpak", "pipewire.client.access": "flatpak"}
    app = recording_app(claims)
    assert (app.app_id, app.source, app.sandboxed, app.pid) == (
        "unverified:pacat", "unverified", False, 0)


def test_a_vouched_pid_names_the_app_whatever_the_stream_claims():
    claims = {"application.process.id": "999999999", "application.process.binary": "rec",
              "pipewire.access.portal.app_id": "org.granted.App"}
    app = recording_app(claims, vouched={"pipewire.sec.pid": str(os.getpid())})
    assert (app.app_id, app.source, app.pid) == (
        "exe:" + os.readlink("/proc/self/exe"), "exe", os.getpid())
    # a vouched process that is gone, or another user's, vouches for nothing: the claims
    # are checked as ever
    gone = recording_app(claims, vouched={"pipewire.sec.pid": "999999999"})
    assert gone.app_id == "unverified:rec"
    other_user = recording_app(claims, uid=os.getuid() + 1,
                               vouched={"pipewire.sec.pid": str(os.getpid())})
    assert other_user.app_id == "unverified:rec"


def test_a_vouched_flatpak_process_is_named_by_its_flatpak_info(monkeypatch):
    import audiopolicyd.identity as identity
    monkeypatch.setattr(identity, "flatpak_app_id",
                        lambda pid: "org.example.Sandboxed" if pid == os.getpid() else "")
    app = recording_app({"application.process.id": "2",
                         "pipewire.access.portal.app_id": "org.granted.App"},
                        vouched={"pipewire.sec.pid": str(os.getpid())})
    assert (app.app_id, app.source, app.sandboxed) == ("org.example.Sandboxed", "flatpak", True)


def test_a_stream_joins_a_session_owners_app_only_as_its_verified_process(monkeypatch):
    from audiopolicyd.identity import Identity, recording_member
    me = Identity(pid=os.getpid(), exe=os.readlink("/proc/self/exe"))
    binary = os.path.basename(me.exe)
    mine = {"application.process.id": str(os.getpid()), "application.process.binary": binary}
    assert recording_member(mine, None, me)
    # the owner's pid claimed by another binary, or the portal id of a Flatpak owner: no
    assert not recording_member({**mine, "application.process.binary": "pacat"}, None, me)
    flatpak = Identity(pid=os.getppid(), app_id="org.example.App", flatpak=True)
    claims = {"pipewire.access.portal.app_id": "org.example.App", "application.process.id": "2"}
    assert not recording_member(claims, None, flatpak)
    # the process the server vouches for is checked: its own Flatpak app, or not
    import audiopolicyd.identity as identity
    monkeypatch.setattr(identity, "flatpak_app_id",
                        lambda pid: "org.example.App" if pid == os.getpid() else "")
    assert recording_member(claims, {"pipewire.sec.pid": str(os.getpid())}, flatpak)
    assert not recording_member(claims, {"pipewire.sec.pid": str(os.getppid())}, flatpak)


@pytest.fixture
def listening(tmp_path):
    """A Unix socket this process listens on, and one it only bound."""
    import socket
    path, bound = str(tmp_path / "pipewire-0"), str(tmp_path / "bound")
    with socket.socket(socket.AF_UNIX) as server, socket.socket(socket.AF_UNIX) as idle:
        server.bind(path)
        server.listen()
        idle.bind(bound)
        yield path, bound


def test_listens_on_reads_proc(listening):
    path, bound = listening
    assert listens_on(os.getpid(), path)
    assert not listens_on(os.getpid(), bound)
    assert not listens_on(os.getppid(), path)
    assert not listens_on(999999999, path)
    assert not listens_on(os.getpid(), "")


def test_a_stream_of_the_pipewire_daemons_own_client_is_not_a_microphone(listening,
                                                                          monkeypatch):
    path, bound = listening
    monkeypatch.setenv("PIPEWIRE_REMOTE", path)
    ours = {"pipewire.sec.pid": str(os.getpid())}
    stream = replace(make_stream(1, StreamKind.SOURCE_OUTPUT), vouched=freeze(ours))
    none = frozenset()  # no quiet monitor: every source is a microphone path
    assert audio_server_process(os.getpid()) and not is_microphone(stream, none)
    # the same pid as a claim in the stream's properties counts for nothing
    assert is_microphone(make_stream(1, StreamKind.SOURCE_OUTPUT, extra=ours), none)
    # a process that does not listen on PipeWire's socket is a client like any other
    monkeypatch.setenv("PIPEWIRE_REMOTE", bound)
    assert not audio_server_process(os.getpid()) and is_microphone(stream, none)
    assert not audio_server_process(1)


def test_the_pulse_backend_vouches_only_for_native_pipewire_clients(listening):
    from audiopolicyd.backends.pulse import PulseBackend
    path, bound = listening
    claims = {"pipewire.access.portal.app_id": "org.x", "pipewire.access": "flatpak",
              "application.process.id": "1"}
    backend = PulseBackend(server=f"unix:{path}")
    backend._pipewire = True
    # a pulse client: its PipeWire connection is pipewire-pulse's (which serves our socket)
    assert backend._vouch({**claims, "pipewire.sec.pid": str(os.getpid())}) == {}
    native = {**claims, "pipewire.sec.pid": str(os.getppid()), "pipewire.sec.uid": "0"}
    assert backend._vouch(native) == {"pipewire.sec.pid": str(os.getppid()),
                                      "pipewire.sec.uid": "0"}
    assert backend._vouch(claims) == {}
    backend._pipewire = False  # PulseAudio: a client's properties are all its own
    assert backend._vouch(native) == {}
    backend = PulseBackend(server="tcp:localhost")
    backend._pipewire = True  # a pulse client could not be told apart: nothing
    assert backend._vouch(native) == {}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
