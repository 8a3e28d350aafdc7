"""The microphone broker (one request per app, agents, timeouts, live decisions) and the
identity of recording streams, without a bus or a server: decisions in an in-memory SQLite
store, the agent a recording stand-in for the D-Bus adapter."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace

import pytest

from audiopolicyd.identity import audio_server_process, listens_on, recording_app, verified_pid
from audiopolicyd.microphone import (
    AgentExists, AgentFailed, Gate, MicrophoneBroker, is_microphone,
)
from audiopolicyd.model import StreamKind, freeze
from audiopolicyd.permissions import Decision, SqlitePermissionStore

from .conftest import make_stream

# a connection a test leaves open fails that test (Python 3.13 warns when one is freed open)
pytestmark = pytest.mark.usefixtures("collect_garbage")

APP = recording_app({"application.process.id": "999999999", "application.name": "rec",
                     "application.process.binary": "rec"})
OTHER = recording_app({"application.name": "other", "application.process.binary": "other"})


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


def test_before_the_store_is_read_nobody_may_record():
    assert not MicrophoneBroker().allowed("anything")


def test_what_counts_as_a_microphone():
    assert is_microphone(make_stream(1, StreamKind.SOURCE_OUTPUT))
    assert not is_microphone(make_stream(1, StreamKind.SOURCE_OUTPUT, monitor=True))
    assert not is_microphone(make_stream(1, StreamKind.SINK_INPUT))
    from dataclasses import replace
    assert not is_microphone(replace(make_stream(1, StreamKind.SOURCE_OUTPUT),
                                     module="module-loopback"))
    assert Gate.BLOCKED.value == "blocked"


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
    assert audio_server_process(os.getpid()) and not is_microphone(stream)
    # the same pid as a claim in the stream's properties counts for nothing
    assert is_microphone(make_stream(1, StreamKind.SOURCE_OUTPUT, extra=ours))
    # a process that does not listen on PipeWire's socket is a client like any other
    monkeypatch.setenv("PIPEWIRE_REMOTE", bound)
    assert not audio_server_process(os.getpid()) and is_microphone(stream)
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
