"""The error tree (audiopolicyd.errors) end to end: every leaf's D-Bus name is the documented
one, the adapter sends a leaf as its name, and the client raises the leaf for that name; the
adapter's caller-aware dispatch (audiopolicyd.dbus) on a private dbus-daemon; who may decide
microphone permission (audiopolicyd.microphone.access)."""

from __future__ import annotations

import asyncio
import logging
import itertools
import os
import re
from pathlib import Path

import pytest
from dbus_fast import DBusError, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, method

from audiopolicyd import client as apc
from audiopolicyd import errors
from audiopolicyd.appsessions import AppSessions
from audiopolicyd.dbus import DBusApi
from audiopolicyd.dbus.service import CallerDispatch, caller_method
from audiopolicyd.identity import Identity, identify
from audiopolicyd.microphone.access import MicrophoneAccess
from audiopolicyd.microphone.broker import Agent, MicrophoneBroker
from audiopolicyd.microphone.stores import Decision
from audiopolicyd.names import BUS_NAME, ERROR_PREFIX, MANAGER_IFACE, OBJECT_PATH, SESSION_IFACE

DOCS = Path(__file__).resolve().parents[2] / "docs"
WAIT = 10.0  # seconds: an upper bound for a reply on the private bus, never a speed claim


def documented_error_names() -> set[str]:
    text = "\n".join(p.read_text() for p in [DOCS / "dbus-api.md", *DOCS.glob("dbus/*.xml")])
    return set(re.findall(r"Error\.([A-Z][A-Za-z]+)", text))


# -- the tree ------------------------------------------------------------------------------------

def test_every_leaf_the_daemon_sends_is_documented_under_its_name():
    documented = documented_error_names()
    for name, cls in errors.DAEMON_ERRORS.items():
        assert cls.name == name == cls.__name__
        assert errors.from_dbus(ERROR_PREFIX + name, "m").dbus_name == ERROR_PREFIX + name
        assert name in documented, f"Error.{name} is not in docs/dbus-api.md or docs/dbus/"


def test_every_documented_daemon_error_is_a_leaf():
    # the bus's own errors (org.freedesktop.DBus.Error.UnknownMethod) are not the daemon's
    ours = documented_error_names() - {"UnknownMethod"}
    assert ours <= set(errors.DAEMON_ERRORS), ours - set(errors.DAEMON_ERRORS)


def test_the_tree_is_drawn_in_the_docstring_as_it_is():
    drawn = set(re.findall(r"[├└]── (\w+)", errors.__doc__))
    leaves = {cls.__name__ for cls in errors.AudioPolicyError.__subclasses__()}
    leaves |= {cls.__name__ for cls in errors.SessionError.__subclasses__()}
    assert drawn == leaves
    for name in ("UnknownCategory", "NotOwner", "InsufficientPriority"):
        assert issubclass(errors.DAEMON_ERRORS[name], errors.SessionError)


def test_str_names_the_error_but_for_the_bounds_checks():
    assert str(errors.NotAllowed("no")) == "NotAllowed: no"
    assert str(errors.InvalidArgument("x is 3 characters long")) == "x is 3 characters long"
    assert str(errors.from_dbus(ERROR_PREFIX + "InvalidArgument", "x")) == "InvalidArgument: x"
    assert isinstance(errors.InvalidArgument("x"), ValueError)


def test_unknown_and_foreign_names_keep_their_name():
    newer = errors.from_dbus(ERROR_PREFIX + "SomethingNew", "new")
    assert type(newer) is errors.AudioPolicyError and newer.name == "SomethingNew"
    gone = errors.from_dbus("org.freedesktop.DBus.Error.NameHasNoOwner", "")
    assert type(gone) is errors.DaemonNotRunning and "not running" in gone.message


# -- a client call failing with a D-Bus error raises the matching leaf ---------------------------

class Refusing(ServiceInterface):
    """Answers ``Refuse(name)`` with the daemon's error of that name."""

    def __init__(self):
        super().__init__(MANAGER_IFACE)

    @method(name="Refuse")
    def refuse(self, name: "s"):  # noqa: F821 (a D-Bus signature)
        raise DBusError(ERROR_PREFIX + name, f"refused with {name}")


@pytest.fixture
async def buses(bus_address):
    made: list[MessageBus] = []

    async def connect() -> MessageBus:
        made.append(await MessageBus(bus_address=bus_address).connect())
        return made[-1]

    yield connect
    for bus in made:
        if bus.connected:
            bus.disconnect()
            await bus.wait_for_disconnect()


@pytest.mark.parametrize("name", sorted(errors.DAEMON_ERRORS))
async def test_a_client_call_raises_the_leaf_of_the_error_it_got(buses, name):
    service = await buses()
    service.export(OBJECT_PATH, Refusing())
    await service.request_name(BUS_NAME)
    client = await buses()
    with pytest.raises(errors.DAEMON_ERRORS[name]) as info:
        await asyncio.wait_for(apc.call(client, OBJECT_PATH, MANAGER_IFACE, "Refuse", "s",
                                        [name]), WAIT)
    assert info.value.dbus_name == ERROR_PREFIX + name
    assert info.value.message == f"refused with {name}"
    assert isinstance(info.value, apc.AudioSessionError)


# -- the adapter: caller-aware methods, errors by name ---------------------------------------------

class NoDaemon:
    microphone = None


@pytest.fixture
async def daemon_bus(buses, policies):
    """The adapter on the private bus, with the session layer and no microphone broker."""
    bus = await buses()
    sessions = AppSessions(lambda: policies, itertools.count(1))
    api = DBusApi(bus, NoDaemon(), sessions, MicrophoneAccess(None), identify)
    api.export()
    await bus.request_name(BUS_NAME)
    await api.start()
    return api


async def test_sessions_belong_to_their_caller_and_refusals_are_leaves(buses, daemon_bus):
    bus = await buses()
    session = await asyncio.wait_for(apc.AudioSession.create("t", bus=bus), WAIT)
    assert (await session.process_id()) == os.getpid()  # from the bus, not from arguments
    with pytest.raises(apc.UnknownCategory):
        await session.set_category("loud")
    with pytest.raises(errors.InvalidArgument):
        await session.set_category("c" * 65)
    other = await buses()
    with pytest.raises(apc.NotOwner):
        await apc.call(other, session.path, SESSION_IFACE, "Close")
    with pytest.raises(errors.NotSupported):  # no broker: --no-microphone-permission
        await apc.call(bus, session.path, SESSION_IFACE, "RequestRecordPermission")
    await session.set_category("playback")
    assert await session.set_active(True) == "active"
    await session.close()
    with pytest.raises(apc.NoSuchSession):
        await apc.call(bus, session.path, SESSION_IFACE, "Close")


async def test_a_wrong_signature_is_left_to_dbus_fast(buses, daemon_bus):
    bus = await buses()
    reply = await bus.call(Message(destination=BUS_NAME, path=OBJECT_PATH,
                                   interface=MANAGER_IFACE, member="CreateSession",
                                   signature="s", body=["x"]))
    assert reply.message_type == MessageType.ERROR
    assert reply.error_name == "org.freedesktop.DBus.Error.UnknownMethod"


# -- who may decide microphone permission ------------------------------------------------------

class Caller:
    def __init__(self, name: str, **identity):
        self.name = name
        self.asked = 0
        self._identity = Identity(**{"pid": os.getpid(), "uid": os.getuid(), **identity})

    async def identity(self) -> Identity:
        self.asked += 1
        return self._identity


class Store:
    where = "memory"

    def __init__(self):
        self.decisions: dict[str, Decision] = {}

    async def set(self, app_id, decision):
        self.decisions[app_id] = decision

    async def reset(self, app_id):
        self.decisions.pop(app_id, None)


def broker() -> MicrophoneBroker:
    b = MicrophoneBroker()
    b.store = Store()
    return b


async def test_only_the_users_unsandboxed_processes_decide():
    access = MicrophoneAccess(broker())
    with pytest.raises(errors.NotAllowed, match="only the user"):
        await access.register_agent(Caller(":1.5", uid=os.getuid() + 1), "/a")
    with pytest.raises(errors.NotAllowed, match="sandboxed"):
        await access.set_permission(Caller(":1.5", app_id="org.example.App", flatpak=True),
                                    "exe:/x", "granted")
    await access.set_permission(Caller(":1.6"), "exe:/usr/bin/pacat", "granted")
    assert access.broker.decision("exe:/usr/bin/pacat") is Decision.GRANTED


async def test_the_agent_decides_without_a_credentials_lookup():
    access = MicrophoneAccess(broker())
    access.broker.agent = Agent(":1.9", "/agent")
    agent = Caller(":1.9", uid=os.getuid() + 1)  # would be refused as a plain caller
    await access.set_permission(agent, "exe:/usr/bin/pacat", "denied")
    assert agent.asked == 0 and access.broker.decision("exe:/usr/bin/pacat") is Decision.DENIED


async def test_bad_decisions_and_no_broker_are_named():
    with pytest.raises(errors.InvalidArgument, match="must not be empty"):
        await MicrophoneAccess(None).set_permission(Caller(":1.5"), "", "granted")
    with pytest.raises(errors.InvalidArgument, match="unknown decision 'maybe'"):
        await MicrophoneAccess(broker()).set_permission(Caller(":1.5"), "exe:/x", "maybe")
    with pytest.raises(errors.NotSupported):
        await MicrophoneAccess(None).register_agent(Caller(":1.5"), "/a")
    with pytest.raises(errors.NoSuchAgent):
        await MicrophoneAccess(broker()).unregister_agent(Caller(":1.5"), "/a")
    with pytest.raises(errors.NotAllowed, match="cannot be granted"):
        await MicrophoneAccess(broker()).set_permission(Caller(":1.5"), "unverified:pacat",
                                                        "granted")


class FakeSession:
    def __init__(self, sid: str, category: str):
        self.id, self.name, self.category = sid, "rec", category
        self.identity = Identity(pid=os.getpid(), uid=os.getuid(), exe="/usr/bin/pacat")


async def test_a_recording_session_asks_once_on_its_first_activation():
    asked = []
    b = broker()

    async def request(app):
        asked.append(app.app_id)
        return Decision.UNDETERMINED

    b.request = request
    access = MicrophoneAccess(b, asks=lambda session: session.category == "record")
    access.activated(FakeSession("s1", "playback"))  # does not record: not asked
    rec = FakeSession("s2", "record")
    access.activated(rec)
    access.activated(rec)  # once per session
    await asyncio.sleep(0)
    assert asked == [access.app_of(rec).app_id]
    access.session_event(rec, "Removed", {})
    access.activated(FakeSession("s3", "record"))
    await asyncio.sleep(0)
    assert len(asked) == 2


class Declared(ServiceInterface):
    """Caller-aware methods as the adapter declares them."""

    def __init__(self):
        super().__init__("org.example.Declared")

    @caller_method("Greet")
    def greet(self, caller, name: "s") -> "s":  # noqa: F821 (a D-Bus signature)
        if name == "bug":
            raise RuntimeError("a bug")
        if name == "":
            raise errors.InvalidArgument("Greet name must not be empty")
        return f"{name} from {caller.name}"


def call_msg(member: str, signature: str, body: list) -> Message:
    return Message(destination=BUS_NAME, path="/x", interface="org.example.Declared",
                   member=member, signature=signature, body=body, serial=7, sender=":1.3")


def test_a_caller_method_is_declared_once_without_its_caller():
    (greet,) = Declared().introspect().methods
    assert [a.signature for a in greet.in_args] == ["s"]
    assert [a.signature for a in greet.out_args] == ["s"]
    dispatch = CallerDispatch(bus=None, identify=identify)
    dispatch.route("org.example.Declared", Declared, lambda path, sender: Declared())
    reply = dispatch.handle(call_msg("Greet", "s", ["Ada"]))
    assert reply.message_type == MessageType.METHOD_RETURN and reply.body == ["Ada from :1.3"]
    refused = dispatch.handle(call_msg("Greet", "s", [""]))
    assert (refused.error_name, refused.body) == (
        ERROR_PREFIX + "InvalidArgument", ["Greet name must not be empty"])
    internal = dispatch.handle(call_msg("Greet", "s", ["bug"]))
    assert (internal.error_name, internal.body) == (ERROR_PREFIX + "Internal",
                                                    ["RuntimeError: a bug"])
    assert dispatch.handle(call_msg("Greet", "i", [1])) is None  # dbus-fast: UnknownMethod
    assert dispatch.handle(call_msg("Other", "s", ["x"])) is None


def test_audiopolicyctl_says_when_nobody_owns_the_name(bus_address, capsys):
    from audiopolicyd import ctl
    assert ctl.main(["--bus", bus_address, "status"]) == 2
    assert capsys.readouterr().err == (f"audiopolicyctl: audiopolicyd is not running ({BUS_NAME} "
                                       "has no owner on the session bus)\n")


async def test_an_ask_on_activation_that_fails_is_logged_not_lost(caplog):
    b = broker()

    async def request(app):
        raise RuntimeError("the store broke")

    b.request = request
    access = MicrophoneAccess(b, asks=lambda session: True)
    with caplog.at_level(logging.ERROR, "audiopolicyd.microphone.access"):
        access.activated(FakeSession("s1", "record"))
        for _ in range(3):
            await asyncio.sleep(0)
    assert "asking for the microphone on activation failed: RuntimeError: the store broke" \
        in caplog.text
    assert not access._tasks
