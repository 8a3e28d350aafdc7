"""The echo canceller of a call, on the scripted server (:mod:`tests.support.fake_backend`):
loaded for an active explicit session in a chat mode on its route, unloaded when the session is
deactivated, changes mode, goes with its client, when the daemon stops; recorded in the journal
before the load and unloaded by the next start after a crash (same server instance) or
forgotten (another instance); never for ``measurement`` nor a legacy app's call. The trust of
our own module survives its own ``new`` event (PulseAudio sends it after ``load_module``
returned); pipewire-pulse's owner-less canceller streams are known by their devices' PipeWire
client, and a stream claiming the canceller's link group is not."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from audiopolicyd.appsessions import AppSessions
from audiopolicyd.backends.base import Module
from audiopolicyd.identity import Identity
from audiopolicyd.journal import Journal
from audiopolicyd.microphone.broker import Gate, MicrophoneBroker
from audiopolicyd.microphone.gate import ModuleTrust
from audiopolicyd.model import StreamKind, freeze
from audiopolicyd.runtime.processing import ECHO_CANCEL_MODULE, NAME_PREFIX

from ..support.fake_backend import FakeServer
from .conftest import make_stream
from .test_runtime import Daemon, until

pytestmark = pytest.mark.usefixtures("collect_garbage")


@pytest.fixture
async def server():
    return FakeServer()


@pytest.fixture
def daemons(server, tmp_path, policies, pm):
    """``await daemons()``: a started runtime with explicit sessions (``.sessions``)."""
    started: list[Daemon] = []

    async def start(microphone: bool = False) -> Daemon:
        daemon = Daemon(server, tmp_path / "journal.sqlite3", policies, pm)
        runtime = daemon.reconciler
        daemon.sessions = AppSessions(lambda: policies, itertools.count(1),
                                      runtime.request_reconcile, pm=pm)
        runtime.app_sessions = daemon.sessions
        if microphone:
            runtime.microphone = MicrophoneBroker()  # no store read: every app blocked
        started.append(daemon)
        return await daemon.started()

    yield start
    for daemon in started:
        if not daemon.backend.severed:
            daemon.kill()


def own_modules(path) -> list:
    """The own-module records of the journal at *path* (a connection of its own, closed)."""
    journal = Journal(path)
    try:
        return journal.own_modules()
    finally:
        journal.close()


def cancellers(server: FakeServer) -> list[Module]:
    return [m for m in server.modules if m.name == ECHO_CANCEL_MODULE]


def call(daemon: Daemon, mode: str = "voiceChat", owner: str = ":1.7"):
    session = daemon.sessions.create(owner, Identity(pid=4242, exe="/usr/bin/talk"),
                                     {"Name": "talk", "Category": "playAndRecord",
                                      "Mode": mode})
    daemon.sessions.set_active(session, True, ())
    return session


async def loaded(server: FakeServer) -> Module:
    await until(lambda: len(cancellers(server)) == 1, "the echo canceller loaded")
    return cancellers(server)[0]


async def unloaded(server: FakeServer) -> None:
    await until(lambda: not cancellers(server), "the echo canceller unloaded")
    assert not [d for d in server.devices if d.name.startswith(NAME_PREFIX)], \
        "its devices gone with it"


async def test_a_voice_chat_call_gets_an_echo_canceller_on_its_route_until_deactivated(
        server, daemons):
    daemon = await daemons()
    session = call(daemon)
    module = await loaded(server)
    args = dict(a.split("=", 1) for a in module.argument.split())
    assert (args["sink_master"], args["source_master"], args["aec_method"]) == \
        ("speaker", "mic", "webrtc")  # the call's route: the defaults here
    assert args["sink_name"].startswith(NAME_PREFIX) and args["source_name"].startswith(
        NAME_PREFIX)
    runtime = daemon.reconciler
    assert module.index in runtime.trusted_modules
    assert [name for _, name, _ in daemon.journal.own_modules()] == [ECHO_CANCEL_MODULE]
    model = next(s for s in runtime.sessions if s.explicit)
    await until(lambda: runtime.echo.processing(model) is not None,
                "the canceller's devices as the session's processing")
    sink, source = runtime.echo.processing(model)
    assert (runtime.devices[sink].name, runtime.devices[source].name) == \
        (args["sink_name"], args["source_name"])
    daemon.sessions.set_active(session, False, ())
    await unloaded(server)
    assert daemon.journal.own_modules() == []


@pytest.mark.parametrize("end", ["mode", "category", "client gone", "daemon stops"])
async def test_the_echo_canceller_goes_when_the_call_ends(server, daemons, end):
    daemon = await daemons()
    session = call(daemon)
    await loaded(server)
    if end == "mode":
        daemon.sessions.set_category(session, "playAndRecord", "default", ())
    elif end == "category":
        daemon.sessions.set_category(session, "record", "default", ())
    elif end == "client gone":
        daemon.sessions.drop_owner(":1.7")
    else:
        await daemon.reconciler.restore_all()
    await unloaded(server)
    assert daemon.journal.own_modules() == []


@pytest.mark.parametrize("mode", ["measurement", "default", "spokenAudio"])
async def test_no_echo_canceller_outside_the_chat_modes(server, daemons, mode):
    daemon = await daemons()
    call(daemon, mode)
    # a legacy app's call (an implicit session, mode default) gets none either
    server.add(make_stream(1, role="phone"))
    call(daemon, "videoChat", owner=":1.8")  # the proof that a pass looked: this one gets one
    await loaded(server)
    sessions = [s for s in daemon.reconciler.sessions if s.category == "playAndRecord"]
    assert {s.mode for s in sessions} >= {mode, "videoChat"}
    await until(lambda: daemon.reconciler.echo.cancellers, "the videoChat call's canceller")
    assert len(cancellers(server)) == 1
    assert [daemon.sessions.sessions[s].mode for s in (
        c.session.removeprefix("session:") for c in daemon.reconciler.echo.cancellers.values())
            ] == ["videoChat"]


async def test_a_server_restart_during_the_call_leaves_one_canceller_on_the_new_instance(
        server, daemons):
    daemon = await daemons()
    call(daemon)
    first = await loaded(server)
    server.die()  # the module dies with the server
    server.modules = []
    server.devices = [d for d in server.devices if not d.name.startswith(NAME_PREFIX)]
    server.start()  # a new instance: the daemon reconnects, the call is still active
    await until(lambda: daemon.reconciler.connected.is_set() and cancellers(server),
                "a canceller on the new instance", timeout=10.0)
    assert len(cancellers(server)) == 1 and cancellers(server)[0].argument != first.argument
    assert [(c, a) for c, _, a in daemon.journal.own_modules()] == \
        [(server.cookie, cancellers(server)[0].argument)], "the dead instance's record dropped"


async def test_a_canceller_left_by_a_killed_daemon_is_unloaded_at_the_next_start(
        server, daemons):
    daemon = await daemons()
    call(daemon)
    module = await loaded(server)
    daemon.kill()
    assert cancellers(server) == [module], "killed: nothing unloaded it"
    await daemons()  # the same server instance
    await unloaded(server)
    assert own_modules(daemon.journal.path) == []


async def test_a_canceller_record_of_another_server_instance_is_forgotten(server, daemons):
    daemon = await daemons()
    call(daemon)
    module = await loaded(server)
    daemon.kill()
    server.die()  # the module dies with the server...
    server.start()
    survivor = dataclasses.replace(module, index=module.index + 5)
    server.modules = [survivor]  # ...and another instance happens to have one with its args
    await daemons()
    await until(lambda: own_modules(daemon.journal.path) == [], "the record dropped")
    assert server.modules == [survivor], "not ours: that instance's own module is left alone"


async def test_a_failed_load_is_not_retried_for_the_same_route(server, daemons, caplog):
    server.refused_modules.add(ECHO_CANCEL_MODULE)
    daemon = await daemons()
    call(daemon)
    await until(lambda: "no echo canceller for session" in caplog.text, "the refusal logged")
    await until(lambda: not daemon.reconciler.echo.cancellers, "nothing kept for it")
    assert daemon.journal.own_modules() == []
    assert daemon.failures == []


async def test_own_modules_trust_survives_its_own_late_new_event(server, daemons):
    """PulseAudio 16 sends a loaded module's ``new`` event 0.4-2.4 ms after ``load_module``
    returned (docs/routing.md): that event must not drop the trust given at the return."""
    daemon = await daemons()
    session = call(daemon)
    module = await loaded(server)
    runtime = daemon.reconciler
    await until(lambda: module.index in runtime.trusted_modules, "our module trusted")
    server.device_event("new", "module", module.index)  # its own, late
    server.device_event("change", "module", module.index)
    await until(lambda: runtime.tasks.pending == set(), "the events handled")
    await runtime.answers(1.0)
    assert module.index in runtime.trusted_modules
    daemon.sessions.set_active(session, False, ())
    await unloaded(server)
    server.device_event("remove", "module", module.index)
    await runtime.answers(1.0)
    assert module.index not in runtime.trusted_modules
    # pipewire-pulse gives the next module that index: its new event finds no trust to keep
    server.device_event("new", "module", module.index)
    await runtime.answers(1.0)
    assert module.index not in runtime.trusted_modules


def test_module_trust_keeps_an_own_module_across_its_first_new_event_only(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    try:
        trust = ModuleTrust(journal)
        trust.load(7, [])
        own = Module(536870918, ECHO_CANCEL_MODULE, "source_master=mic sink_master=speaker")
        trust.trust_own_module(own)
        trust.module_event(own.index, "new")
        assert own.index in trust.trusted
        trust.module_event(own.index, "new")  # a second new: only after a remove
        assert own.index not in trust.trusted
        trust.trust_own_module(own)
        trust.module_event(own.index, "remove")
        assert own.index not in trust.trusted
    finally:
        journal.close()


async def test_pipewire_pulse_canceller_streams_are_ours_by_client_and_a_claim_is_not(
        server, daemons):
    """pipewire-pulse shows the canceller's streams without an owner module; they carry the
    PipeWire ``client.id`` of the canceller's devices (PipeWire sets it; a client's claim is
    overwritten: the integration test shows that on the real server). A stream claiming the
    canceller's ``node.link-group`` with a client id of its own stays gated."""
    server.name = "PulseAudio (on PipeWire 0.3.65)"
    daemon = await daemons(microphone=True)
    call(daemon)
    module = await loaded(server)
    runtime = daemon.reconciler
    await until(lambda: runtime.echo.cancellers and next(
        iter(runtime.echo.cancellers.values())).client, "the canceller's client pinned")
    client = str(1000 + module.index)
    group = {"node.link-group": "echo-cancel-4711-13", "node.group": "echo-cancel-4711-13"}
    capture = dataclasses.replace(
        make_stream(40, StreamKind.SOURCE_OUTPUT, extra={
            **group, "client.id": client, "node.name": "echo-cancel-capture",
            "media.name": "Echo-Cancel Capture"}), device="source:1")
    claimer = dataclasses.replace(
        make_stream(41, StreamKind.SOURCE_OUTPUT, app="parecord", extra={
            **group, "client.id": "77", "node.name": "echo-cancel-capture",
            "media.name": "Echo-Cancel Capture"}), device="source:1")
    server.add(capture)
    server.add(claimer)
    await until(lambda: runtime.gates.get("source-output:40") is Gate.EXEMPT,
                "the canceller's capture exempt")
    await until(lambda: runtime.gates.get("source-output:41") is Gate.BLOCKED,
                "the claimer gated")
    assert runtime.streams["source-output:40"].owner_module == module.index
    assert runtime.streams["source-output:41"].owner_module == -1
    await until(lambda: not server.state["source-output:40"].muted, "the capture unmuted")
    assert server.state["source-output:41"].muted
    # a server module's stream no rule names: in no category, it neither acts nor is acted on
    assert runtime.classified["source-output:40"][0] == ""
    assert runtime.classified["source-output:41"][0] == "record"


def test_a_stream_of_no_client_id_or_with_an_owner_is_never_annotated(tmp_path):
    from audiopolicyd.runtime.processing import Canceller, EchoCancel

    echo = EchoCancel(None, None, None, None, None, lambda: None, lambda: 0)  # type: ignore
    echo.cancellers["s"] = Canceller("s", ("sink:0", "source:1"), "x", "a", Module(9, "m"),
                                     client="53")
    plain = make_stream(1, StreamKind.SOURCE_OUTPUT)
    assert echo.annotate(plain) is plain
    owned = dataclasses.replace(plain, properties=freeze({"client.id": "53"}), owner_module=4,
                                module="module-loopback")
    assert echo.annotate(owned) is owned
    ours = dataclasses.replace(plain, properties=freeze({"client.id": "53"}))
    assert (echo.annotate(ours).module, echo.annotate(ours).owner_module) == \
        (ECHO_CANCEL_MODULE, 9)


@pytest.mark.parametrize("pipewire, client, owner", [
    (True, 78, ("", -1)), (True, 0xFFFFFFFF, (ECHO_CANCEL_MODULE, 536870918)),
    # PulseAudio sets the owner itself; module-simple-protocol-tcp's stream has a client too
    (False, 78, (ECHO_CANCEL_MODULE, 536870918))])
def test_a_stream_with_a_client_is_the_clients_whatever_owner_it_shows(pipewire, client,
                                                                       owner):
    """pipewire-pulse takes ``owner_module`` from a node's ``pulse.module.id``, which a client
    may set on its own stream (``parecord --property=pulse.module.id=N``, 0.3.65): there a
    stream with a client is never a module's (a module's stream has none)."""
    from types import SimpleNamespace

    from audiopolicyd.backends.pulse import PulseBackend

    backend = PulseBackend()
    backend._reset_clients(pipewire)
    backend._modules = {536870918: ECHO_CANCEL_MODULE}
    info = SimpleNamespace(client=client, owner_module=536870918,
                           proplist={"pulse.module.id": "536870918"})
    assert backend._owner(info) == owner
