"""Hostile and heavy D-Bus traffic (issue 8): the daemon keeps its name, answers every call
with a valid return or a named error, and keeps enforcing.

* big writes under load: large replies in bursts, which cost dbus-fast 5.2.0's own writer the
  connection (A1, fixed by ``audiopolicyd.buswriter``);
* the hostile storm: over 2,000 calls from five connections at once (A2's limits, wrong
  signatures, other connections' and removed sessions, 17 sessions per connection);
* creation hints without ``Category`` (D13).

The clients are dbus-fast connections in the test process (``audiopolicyd.buswriter``'s
``MessageBus``, so that the test's own 1 MiB calls do not cost the *client* its connection).
Every call's reply is collected; none may be missing, none may be ``Error.Internal`` or carry
a traceback. Afterwards the daemon still owns its name (``NameHasOwner``, asked by busctl),
answers ``GetStatus``, and a call still ducks a game (the enforcement path is alive).

Shipped policies: a ``media.role=phone`` stream is ``playAndRecord``, which ducks a
``media.role=game`` stream (``ambient``) to 0.2.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType, Variant

from audiopolicyd.buswriter import MessageBus
from tests.support.bus import name_has_owner
from tests.support.clients import play, start_in_batches
from tests.support.daemon import BUS_NAME, MANAGER_IFACE, OBJECT_PATH, DaemonProcess
from tests.support.processes import wait_for
from tests.support.servers import AudioServer
from tests.support.sessions import SESSION_IFACE, SESSION_PATH_PREFIX
from tests.support.streams import ducked, end_client, wait_volume

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

ERROR = BUS_NAME + ".Error."
MIB = 1 << 20
WAIT = 60.0  # seconds: an upper bound for replies under load, never a speed claim
#: Characters of a long stream property: as many as the daemon keeps of one.
LONG = 1024
#: Calls one connection has in flight at once: below dbus-daemon's default
#: ``max_replies_per_connection`` (128), beyond which the bus itself answers LimitsExceeded.
PIPELINED = 100


async def connect(daemon: DaemonProcess) -> MessageBus:
    """A new client connection to the daemon's bus."""
    return await MessageBus(bus_address=daemon.env["DBUS_SESSION_BUS_ADDRESS"]).connect()


async def disconnect(*buses: MessageBus) -> None:
    """Close client connections and wait until they are closed."""
    for bus in buses:
        if bus.connected:
            bus.disconnect()
    await asyncio.gather(*(bus.wait_for_disconnect() for bus in buses), return_exceptions=True)


def manager_call(member: str, signature: str = "", body: list | None = None) -> Message:
    """A call to the daemon's Manager."""
    return Message(destination=BUS_NAME, path=OBJECT_PATH, interface=MANAGER_IFACE,
                   member=member, signature=signature, body=body or [])


async def replies(bus: MessageBus, calls: list[Message]) -> list[Message]:
    """Send every call at once (pipelined on one connection); their replies, in order."""
    return await asyncio.wait_for(asyncio.gather(*(bus.call(c) for c in calls)), WAIT)


def error_name(reply: Message) -> str:
    """The D-Bus error name of a reply ('' for a method return)."""
    return reply.error_name if reply.message_type == MessageType.ERROR else ""


def assert_daemon_alive(daemon: DaemonProcess) -> None:
    """The daemon runs, owns its name and answers ``GetStatus``."""
    daemon.assert_running()
    assert name_has_owner(daemon.env, BUS_NAME), f"the daemon lost its name\n{daemon.log_tail()}"
    assert daemon.status()["ServerConnected"] is True


def assert_still_ducks(server: AudioServer, tone: Path) -> None:
    """A call (``media.role=phone``) ducks a game to 0.2 and gives it back: enforcement works."""
    game = play(server, tone, role="game")
    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(65536, 0.2))
    end_client(server, phone)
    wait_volume(server, game, 65536)
    end_client(server, game)


async def test_big_writes_under_load_keep_the_daemon_on_the_bus(server: AudioServer,
                                                                daemon: DaemonProcess,
                                                                tone: Path) -> None:
    """Issue 8 A1: ``CreateSession`` with a 1 MiB ``Name`` while 30 ``GetStatus`` calls are in
    flight, and large ``GetStreams`` replies to a client that pipelines 40 of them, cost
    dbus-fast 5.2.0's writer the connection (EAGAIN); audiopolicyd.buswriter waits instead.
    The 1 MiB name itself is refused (``InvalidArgument``), and its reply stays small."""
    streams = start_in_batches(server, 20, lambda i: play(
        server, tone, props={"application.name": f"{i:02}" + "A" * (LONG - 2),
                             "media.role": "R" * LONG}))
    wait_for(daemon.streams, 20, "the daemon to list 20 streams",
             until=lambda views: len(views) >= len(streams))

    buses = [await connect(daemon) for _ in range(3)]
    try:
        status = [manager_call("GetStatus") for _ in range(30)]
        status.insert(15, manager_call("CreateSession", "a{sv}",
                                       [{"Name": Variant("s", "N" * MIB)}]))
        answered = await asyncio.gather(replies(buses[0], status), *(
            replies(bus, [manager_call("GetStreams") for _ in range(PIPELINED)])
            for bus in buses[1:]))
    finally:
        await disconnect(*buses)

    errors = [[error_name(r) for r in rs] for rs in answered]
    assert_daemon_alive(daemon)
    assert errors[0][15] == ERROR + "InvalidArgument", errors[0][15]
    create = answered[0][15].body[0]
    assert "Name" in create and len(create) < 1024, create[:200]
    del errors[0][15]
    assert errors == [[""] * 30, [""] * PIPELINED, [""] * PIPELINED], errors
    assert all(len(r.body[0]) >= len(streams) for r in answered[1] + answered[2]), \
        "every GetStreams lists every stream"
    for proc in streams:
        end_client(server, proc)
    assert_still_ducks(server, tone)


# -- the hostile storm ---------------------------------------------------------------------------

#: Reply names: "" for a method return, else the D-Bus error name.
OK = ""
BUS_ERROR = "org.freedesktop.DBus.Error."
UNKNOWN_METHOD = BUS_ERROR + "UnknownMethod"
#: Connections of the storm, and rounds of calls each sends after creating its sessions.
CLIENTS = 5
ROUNDS = 12
#: Valid SetCategory arguments under the shipped policies.
CATEGORIES = [("playback", "moviePlayback", ["mixWithOthers"]), ("ambient", "default", []),
              ("soloAmbient", "default", []), ("playAndRecord", "voiceChat", ["defaultToSpeaker"]),
              ("multiRoute", "default", ["duckOthers"]), ("playback", "default", [])]
#: SetActive(true) may be refused while another client's session outranks this one.
ACTIVATION = {OK, ERROR + "InsufficientPriority", ERROR + "CannotInterruptOthers"}


@dataclass
class Call:
    """A call and the replies it may get (:data:`OK` and/or error names)."""

    message: Message
    expected: set[str]


def session_call(path: str, member: str, signature: str = "", body: list | None = None,
                 interface: str = SESSION_IFACE) -> Message:
    """A call to a session object."""
    return Message(destination=BUS_NAME, path=path, interface=interface, member=member,
                   signature=signature, body=body or [])


def expect(message: Message, *names: str) -> Call:
    """A call expecting one of ``names`` (``OK`` or error names without the daemon's prefix
    for the daemon's errors)."""
    return Call(message, {n if n == OK or "." in n else ERROR + n for n in names})


def creations(client: int) -> list[Call]:
    """17 valid CreateSession calls (the 17th: TooManySessions) after three refused ones."""
    calls = [
        expect(manager_call("CreateSession", "a{sv}", [{"Name": Variant("s", "N" * MIB)}]),
               "InvalidArgument"),
        expect(manager_call("CreateSession", "a{sv}", [{"Options": Variant(
            "as", ["mixWithOthers"] * 100_000)}]), "InvalidArgument"),
        expect(manager_call("CreateSession", "a{sv}", [{"Name": Variant("as", ["x"])}]),
               "InvalidArgument"),
        expect(manager_call("CreateSession", "a{sv}", [{"Mode": Variant("s", "karaoke")}]),
               "UnknownMode"),
    ]
    for i in range(16):
        category, mode, options = CATEGORIES[i % len(CATEGORIES)]
        calls.append(expect(manager_call("CreateSession", "a{sv}", [{
            "Name": Variant("s", f"hostile {client}.{i}"), "Category": Variant("s", category),
            "Mode": Variant("s", mode), "Options": Variant("as", options),
            "Unknown": Variant("ay", b"\xff" * 1000)}]), OK))
    calls.append(expect(manager_call("CreateSession", "a{sv}", [{}]), "TooManySessions"))
    return calls


def storm_round(n: int, own: list[str], closed: list[str], others: list[str]) -> list[Call]:
    """One round of one client: good calls, wrong signatures, huge values, other clients'
    sessions, removed sessions. ``n`` varies what is sent; ``closed`` are this client's
    sessions it closed before (so ``NoSuchSession``), ``others`` other clients' sessions (which
    their owners may have closed meanwhile)."""
    mine, gone, theirs = own[n % len(own)], closed[n % len(closed)], others[n % len(others)]
    category, mode, options = CATEGORIES[n % len(CATEGORIES)]
    huge = "x" * (MIB if n % 3 == 0 else 5000)  # beyond every limit
    props = "org.freedesktop.DBus.Properties"
    calls = [
        # what an honest app does
        expect(session_call(mine, "SetCategory", "ssas", [category, mode, options]), OK),
        expect(session_call(mine, "SetActive", "bas", [True, []]), *ACTIVATION),
        expect(session_call(mine, "SetActive", "bas", [False, ["notifyOthersOnDeactivation"]]),
               OK),
        expect(session_call(mine, "Get", "ss", [SESSION_IFACE, "State"], props), OK),
        expect(session_call(mine, "GetAll", "s", [SESSION_IFACE], props), OK),
        expect(manager_call("GetStatus"), OK),
        expect(manager_call("GetStreams"), OK),
        expect(manager_call("GetRecordPermissions"), OK),
        expect(manager_call("Explain", "s", [mine]), OK),
        expect(session_call(OBJECT_PATH, "GetManagedObjects", interface=
                            "org.freedesktop.DBus.ObjectManager"), OK),
        # names that are not AVAudioSession's, values beyond the limits
        expect(session_call(mine, "SetCategory", "ssas", ["karaoke", "default", []]),
               "UnknownCategory"),
        expect(session_call(mine, "SetCategory", "ssas", ["playback", "loud", []]),
               "UnknownMode"),
        expect(session_call(mine, "SetCategory", "ssas", ["ambient", "default",
                                                          ["duckOthers"]]),
               "IncompatibleCategoryOption"),
        expect(session_call(mine, "SetCategory", "ssas", [huge, "default", []]),
               "InvalidArgument"),
        expect(session_call(mine, "SetCategory", "ssas", ["playback", "default",
                                                          ["mixWithOthers"] * (17 + n * 500)]),
               "InvalidArgument"),
        expect(session_call(mine, "SetActive", "bas", [True, ["bogus"]]), "UnknownOption"),
        expect(session_call(mine, "SetActive", "bas", [True, [huge]]), "InvalidArgument"),
        expect(manager_call("Explain", "s", [huge]), "InvalidArgument"),
        expect(manager_call("Explain", "s", ["sink-input:999999"]), "UnknownTarget"),
        expect(manager_call("SetRecordPermission", "ss", [huge, "granted"]), "InvalidArgument"),
        expect(manager_call("SetRecordPermission", "ss", ["exe:/x", "maybe"]),
               "InvalidArgument"),
        expect(manager_call("SetRecordPermission", "ss", ["", "granted"]), "InvalidArgument"),
        expect(manager_call("RegisterPermissionAgent", "o", ["/" + "a" * 300]),
               "InvalidArgument"),
        expect(manager_call("RegisterPermissionAgent", "o", ["/agent"]), OK, "AgentExists"),
        expect(manager_call("UnregisterPermissionAgent", "o", ["/nobody"]), "NoSuchAgent"),
        # routing (issue 11): ports that are not there, overrides that are not Apple's
        expect(session_call(mine, "Get", "ss", [SESSION_IFACE, "CurrentRoute"], props), OK),
        expect(session_call(mine, "Get", "ss", [SESSION_IFACE, "AvailableInputs"], props), OK),
        expect(session_call(mine, "SetPreferredInput", "s", [""]), OK),
        expect(session_call(mine, "SetPreferredInput", "s", ["no-such-port"]),
               "InputUnavailable"),
        expect(session_call(mine, "SetPreferredInput", "s", [huge]), "InvalidArgument"),
        expect(session_call(mine, "OverrideOutputAudioPort", "s", ["none"]), OK,
               "IncompatibleCategoryOption"),
        expect(session_call(mine, "OverrideOutputAudioPort", "s", ["earpiece"]),
               "UnknownPortOverride"),
        expect(session_call(mine, "OverrideOutputAudioPort", "s", [huge]), "InvalidArgument"),
        expect(manager_call("GetRoutes"), OK),
        expect(manager_call("SetCategoryRoute", "ss", ["karaoke", "speaker"]),
               "UnknownCategory"),
        expect(manager_call("SetCategoryRoute", "ss", [huge, "speaker"]), "InvalidArgument"),
        expect(manager_call("SetCategoryRoute", "ss", ["playback", huge]), "InvalidArgument"),
        expect(manager_call("ResetRoutes", "s", [huge]), "InvalidArgument"),
        expect(manager_call("ResetRoutes", "s", [""]), "InvalidArgument"),
        expect(manager_call("ResetRoutes", "s", ["exe:nobody"]), OK),
        # wrong signatures and members
        expect(session_call(mine, "SetPreferredInput", "u", [1]), UNKNOWN_METHOD),
        expect(manager_call("SetCategoryRoute", "s", ["playback"]), UNKNOWN_METHOD),
        expect(manager_call("CreateSession", "s", ["playback"]), UNKNOWN_METHOD),
        expect(manager_call("GetStatus", "s", ["x"]), UNKNOWN_METHOD),
        expect(manager_call("Explain", "u", [7]), UNKNOWN_METHOD),
        expect(manager_call("SetRecordPermission", "s", ["granted"]), UNKNOWN_METHOD),
        expect(session_call(mine, "SetCategory", "s", ["playback"]), UNKNOWN_METHOD),
        expect(session_call(mine, "SetActive", "", []), UNKNOWN_METHOD),
        expect(session_call(mine, "Close", "b", [True]), UNKNOWN_METHOD),
        expect(session_call(mine, "Shutdown"), UNKNOWN_METHOD),
        expect(session_call(mine, "Set", "ssv", [SESSION_IFACE, "Category",
                                                 Variant("s", "record")], props),
               BUS_ERROR + "PropertyReadOnly"),
        # another client's sessions, removed sessions, sessions that never were
        expect(session_call(theirs, "SetCategory", "ssas", ["playback", "default", []]),
               "NotOwner", "NoSuchSession"),
        expect(session_call(theirs, "SetActive", "bas", [True, []]), "NotOwner",
               "NoSuchSession"),
        expect(session_call(theirs, "Close"), "NotOwner", "NoSuchSession"),
        expect(session_call(theirs, "RequestRecordPermission"), "NotOwner", "NoSuchSession"),
        expect(session_call(theirs, "SetPreferredInput", "s", [""]), "NotOwner",
               "NoSuchSession"),
        expect(session_call(theirs, "OverrideOutputAudioPort", "s", ["none"]), "NotOwner",
               "NoSuchSession"),
        expect(session_call(gone, "SetActive", "bas", [True, []]), "NoSuchSession"),
        expect(session_call(gone, "Close"), "NoSuchSession"),
        expect(session_call(gone, "RequestRecordPermission"), "NoSuchSession"),
        expect(session_call(SESSION_PATH_PREFIX + f"s{10**6 + n}", "Close"), "NoSuchSession"),
    ]
    return calls


async def run_calls(bus: MessageBus, calls: list[Call]) -> list[tuple[Call, Message]]:
    """Send ``calls`` pipelined, in chunks below the bus's limit of pending replies."""
    out = []
    for start in range(0, len(calls), PIPELINED):
        chunk = calls[start:start + PIPELINED]
        answered = await replies(bus, [c.message for c in chunk])
        out += list(zip(chunk, answered))
    return out


def unexpected(results: list[tuple[Call, Message]]) -> list[str]:
    """Every reply that is not one its call may get, or that carries a traceback or a long
    echo of what was sent."""
    bad = []
    for call, reply in results:
        name = error_name(reply)
        text = str(reply.body[0]) if name and reply.body else ""
        if name not in call.expected or "Traceback" in text or len(text) > 512:
            bad.append(f"{call.message.member} on {call.message.path[-12:]} "
                       f"({call.message.signature}): {name or 'return'} {text[:200]!r}, "
                       f"expected {sorted(call.expected)}")
    return bad


async def test_hostile_clients_get_named_errors_and_the_daemon_keeps_working(
        server: AudioServer, daemon: DaemonProcess, tone: Path) -> None:
    """Issue 8's hostile D-Bus test: over 2,000 calls from five connections at once (wrong
    signatures, 1 MiB strings, arrays of 100,000 options, other connections' sessions, removed
    sessions, 17 sessions per connection); every call gets a valid return or a named error,
    the daemon keeps its name, forgets every session of the clients when they leave, and
    still ducks a game during a call."""
    buses = [await connect(daemon) for _ in range(CLIENTS)]
    results: list[tuple[Call, Message]] = []
    try:
        created = await asyncio.gather(*(run_calls(bus, creations(i))
                                         for i, bus in enumerate(buses)))
        results += [r for rs in created for r in rs]
        paths = [[reply.body[0] for call, reply in rs if reply.message_type ==
                  MessageType.METHOD_RETURN] for rs in created]
        assert [len(p) for p in paths] == [16] * CLIENTS, unexpected(results)[:10]
        closes = await asyncio.gather(*(run_calls(bus, [
            expect(session_call(path, "Close"), OK) for path in own[8:]])
            for bus, own in zip(buses, paths)))
        results += [r for rs in closes for r in rs]

        def rounds(i: int) -> list[Call]:
            others = [p for j, own in enumerate(paths) if j != i for p in own]
            return [call for n in range(ROUNDS)
                    for call in storm_round(n, paths[i][:8], paths[i][8:], others)]
        stormed = await asyncio.gather(*(run_calls(bus, rounds(i))
                                         for i, bus in enumerate(buses)))
        results += [r for rs in stormed for r in rs]
    finally:
        await disconnect(*buses)

    assert len(results) >= 2000
    bad = unexpected(results)
    assert not bad, f"{len(bad)} unexpected replies, the first ones:\n" + "\n".join(bad[:10])
    assert_daemon_alive(daemon)
    wait_for(lambda: daemon.ctl("sessions", "--json"), 10, "every session to be forgotten",
             until=lambda done: done.returncode == 0 and json.loads(done.stdout) == [])
    assert_still_ducks(server, tone)


async def test_creation_hints_without_category_fail_as_set_category_does(
        daemon: DaemonProcess) -> None:
    """Issue 8 D13 over the bus: Mode/Options hints without Category apply to soloAmbient,
    with SetCategory's errors, and create nothing."""
    bus = await connect(daemon)
    try:
        hints = [{"Options": Variant("as", ["bogus"])}, {"Mode": Variant("s", "karaoke")},
                 {"Options": Variant("as", ["mixWithOthers"])}, {"Mode": Variant("s", "voiceChat")}]
        answered = await replies(bus, [manager_call("CreateSession", "a{sv}", [h]) for h in hints])
        assert [error_name(r) for r in answered] == [
            ERROR + "UnknownOption", ERROR + "UnknownMode", ERROR + "IncompatibleCategoryOption",
            ""]
        assert "soloAmbient does not take option 'mixWithOthers'" in answered[2].body[0]
        created = answered[3].body[0]
        mode = await bus.call(session_call(created, "Get", "ss", [SESSION_IFACE, "Mode"],
                                           "org.freedesktop.DBus.Properties"))
        assert mode.body[0].value == "default"  # voiceChat does not suit soloAmbient (Apple)
        managed = await bus.call(session_call(OBJECT_PATH, "GetManagedObjects",
                                              interface="org.freedesktop.DBus.ObjectManager"))
        assert list(managed.body[0]) == [created]
    finally:
        await disconnect(bus)
