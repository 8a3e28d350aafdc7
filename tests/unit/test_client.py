"""audiopolicyd.client without a bus (error mapping, event delivery) and ``audiopolicyctl run``
driven through a fake session (order of calls, exit codes, the child's environment)."""

from __future__ import annotations

import asyncio
import sys

import pytest
from dbus_fast import Message, MessageType, Variant

from audiopolicyd import ctl as cli
from audiopolicyd import client as apc

DAEMON = ":1.7"
PATH = apc.OBJECT_PATH + "/session/s3"


def error_reply(name: str, text: str = "because") -> Message:
    return Message(message_type=MessageType.ERROR, error_name=name, reply_serial=1,
                   signature="s", body=[text])


def signal_msg(member: str, signature: str, body: list, interface: str = apc.SESSION_IFACE,
               sender: str = DAEMON, path: str = PATH) -> Message:
    return Message(message_type=MessageType.SIGNAL, sender=sender, path=path,
                   interface=interface, member=member, signature=signature, body=body)


class FakeBus:
    connected = True

    def __init__(self):
        self.handlers = []

    def add_message_handler(self, handler):
        self.handlers.append(handler)

    def remove_message_handler(self, handler):
        self.handlers.remove(handler)

    def disconnect(self):
        self.connected = False


# -- errors --------------------------------------------------------------------------------------

def test_daemon_errors_map_to_subclasses_named_as_the_dbus_error():
    exc = apc.error_from_reply(error_reply(apc.ERROR_PREFIX + "InsufficientPriority", "a call"))
    assert type(exc) is apc.InsufficientPriority
    assert isinstance(exc, apc.AudioSessionError)
    assert exc.name == "InsufficientPriority"
    assert exc.dbus_name == apc.ERROR_PREFIX + "InsufficientPriority"
    assert exc.message == "a call"
    assert str(exc) == "InsufficientPriority: a call"


@pytest.mark.parametrize("name", ["UnknownCategory", "UnknownMode", "UnknownOption",
                                  "IncompatibleCategoryOption", "CannotInterruptOthers",
                                  "TooManySessions", "NoSuchSession", "NotOwner", "Internal"])
def test_every_session_error_has_its_class(name):
    exc = apc.error_from_reply(error_reply(apc.ERROR_PREFIX + name))
    assert type(exc).__name__ == name and exc.name == name


def test_unknown_names_keep_their_name():
    ours = apc.error_from_reply(error_reply(apc.ERROR_PREFIX + "SomethingNew", "new"))
    assert type(ours) is apc.AudioSessionError and ours.name == "SomethingNew"
    other = apc.error_from_reply(error_reply("org.freedesktop.DBus.Error.UnknownMethod"))
    assert other.name == other.dbus_name == "org.freedesktop.DBus.Error.UnknownMethod"


def test_no_owner_is_daemon_not_running():
    exc = apc.error_from_reply(error_reply("org.freedesktop.DBus.Error.ServiceUnknown"))
    assert isinstance(exc, apc.DaemonNotRunning)
    assert "not running" in exc.message


# -- events --------------------------------------------------------------------------------------

def make_session() -> apc.AudioSession:
    bus = FakeBus()
    session = apc.AudioSession(bus, PATH, DAEMON, own_bus=False)
    bus.add_message_handler(session._on_message)
    return session


async def test_signals_reach_callbacks_and_event_streams_as_plain_dicts():
    session = make_session()
    got = []
    session.on("InterruptionEnded", got.append)
    with session.events() as events:
        session._on_message(signal_msg("InterruptionEnded", "a{sv}", [{
            "should_resume": Variant("b", True), "options": Variant("as", ["shouldResume"]),
            "duration_ms": Variant("x", 1500)}]))
        session._on_message(signal_msg("SilenceSecondaryAudioHint", "s", ["begin"]))
        session._on_message(signal_msg("MediaServicesWereLost", "", []))
        session._on_message(signal_msg(
            "PropertiesChanged", "sa{sv}as",
            [apc.SESSION_IFACE, {"State": Variant("s", "active")}, []],
            interface="org.freedesktop.DBus.Properties"))
        # not ours: another session's path, another sender
        session._on_message(signal_msg("InterruptionBegan", "a{sv}", [{}], path=PATH + "0"))
        session._on_message(signal_msg("InterruptionBegan", "a{sv}", [{}], sender=":1.99"))
        seen = [await events.__anext__() for _ in range(4)]
    assert got == [{"should_resume": True, "options": ["shouldResume"], "duration_ms": 1500}]
    assert seen == [("InterruptionEnded", got[0]),
                    ("SilenceSecondaryAudioHint", {"type": "begin"}),
                    ("MediaServicesWereLost", {}),
                    ("PropertiesChanged", {"State": "active"})]
    assert [e async for e in events] == []  # closed: iteration ends


async def test_coroutine_callbacks_run_and_unsubscribe_works():
    session = make_session()
    got = []

    async def began(info):
        got.append(info)

    off = session.on("InterruptionBegan", began)
    session._on_message(signal_msg("InterruptionBegan", "a{sv}", [{"reason": Variant("s", "x")}]))
    await asyncio.sleep(0)
    off()
    session._on_message(signal_msg("InterruptionBegan", "a{sv}", [{}]))
    await asyncio.sleep(0)
    assert got == [{"reason": "x"}]
    with pytest.raises(ValueError, match="unknown event"):
        session.on("InteruptionBegan", print)


async def test_daemon_leaving_the_bus_ends_the_session():
    session = make_session()
    lost = []
    session.on("SessionLost", lost.append)
    events = session.events()
    session._on_message(signal_msg("NameOwnerChanged", "sss", [apc.BUS_NAME, DAEMON, ""],
                                   interface="org.freedesktop.DBus", sender="org.freedesktop.DBus",
                                   path="/org/freedesktop/DBus"))
    await asyncio.sleep(0)
    assert lost and session.closed
    assert [e async for e in events] == [("SessionLost", lost[0])]
    assert session.bus.handlers == []
    with pytest.raises(apc.NoSuchSession):
        await session.set_active(True)


async def test_closing_a_lost_session_still_closes_its_own_connection():
    bus = FakeBus()
    session = apc.AudioSession(bus, PATH, DAEMON, own_bus=True)
    session._on_message(signal_msg("NameOwnerChanged", "sss", [apc.BUS_NAME, DAEMON, ""],
                                   interface="org.freedesktop.DBus", sender="org.freedesktop.DBus",
                                   path="/org/freedesktop/DBus"))
    await session.close()  # no Close call to a daemon that is gone
    assert session.closed and not bus.connected


async def test_wait_until_active_listens_before_it_reads():
    session = make_session()

    async def get(prop):
        assert prop == "Active"
        # the signal arrives while the Get is in flight: it must not be missed
        session._on_message(signal_msg("DidBecomeActive", "a{sv}", [{
            "source": Variant("s", "system"), "reason": Variant("s", "delayedActivation")}]))
        return False

    session.get = get
    await asyncio.wait_for(session.wait_until_active(), 1)
    assert session._streams == []


# -- audiopolicyctl ------------------------------------------------------------------------------

def test_run_arguments():
    args = cli.parse_args(["--bus", "unix:path=/x", "run", "--category", "playAndRecord",
                           "--mode", "voiceChat", "--option", "duckOthers", "--delay-if-busy",
                           "--", "paplay", "--property=media.role=game", "t.wav"])
    assert args.bus == "unix:path=/x"
    assert (args.category, args.mode, args.option, args.delay_if_busy) == (
        "playAndRecord", "voiceChat", ["duckOthers"], True)
    assert args.argv == ["--", "paplay", "--property=media.role=game", "t.wav"]
    assert cli.parse_args(["status", "--bus", "B"]).bus == "B"
    assert cli.parse_args(["--bus", "B", "status"]).bus == "B"  # not reset by the subcommand
    with pytest.raises(SystemExit):
        cli.parse_args(["run", "--category", "loud", "--", "true"])


def test_exit_codes():
    assert cli._exit_code(3) == 3
    assert cli._exit_code(-15) == 143


class FakeSession:
    """Stands in for apc.AudioSession in ``run``: records calls, refuses when told to."""

    calls: list = []
    refuse: apc.AudioSessionError | None = None
    first_state = "active"

    def __init__(self):
        self.closed = False
        self.callbacks = {}

    @classmethod
    def create(cls, **kwargs):
        cls.calls.append(("create", kwargs["name"]))
        session = cls()

        class Ctx:
            async def __aenter__(self):
                return session

            async def __aexit__(self, *exc):
                cls.calls.append(("close",))

        return Ctx()

    def on(self, event, callback):
        self.callbacks[event] = callback

    async def set_category(self, category, mode, options):
        self.calls.append(("set_category", category, mode, list(options)))

    async def set_active(self, active, options=()):
        self.calls.append(("set_active", active, list(options)))
        if active and self.refuse is not None:
            raise self.refuse
        return self.first_state if active else "inactive"

    async def wait_until_active(self):
        self.calls.append(("wait_until_active",))


@pytest.fixture
def fake(monkeypatch):
    FakeSession.calls = []
    FakeSession.refuse = None
    FakeSession.first_state = "active"
    monkeypatch.setattr(cli.apc, "AudioSession", FakeSession)
    return FakeSession


def test_run_activates_runs_and_deactivates_with_notification(fake, capfd):
    code = cli.main(["run", "--category", "playAndRecord", "--mode", "voiceChat", "--",
                     sys.executable, "-c", "print('child ran'); raise SystemExit(7)"])
    assert code == 7
    assert "child ran" in capfd.readouterr().out
    assert fake.calls[1:] == [("set_category", "playAndRecord", "voiceChat", []),
                              ("set_active", True, []),
                              ("set_active", False, ["notifyOthersOnDeactivation"]),
                              ("close",)]
    assert fake.calls[0][1].startswith("python")


def test_run_refused_exits_1_with_the_named_error_and_no_child(fake, capfd):
    fake.refuse = apc.InsufficientPriority("playAndRecord session s1 is active")
    code = cli.main(["run", "--category", "playback", "--", sys.executable, "-c",
                     "print('child ran')"])
    out, err = capfd.readouterr()
    assert code == 1 and "child ran" not in out
    assert "InsufficientPriority: playAndRecord session s1 is active" in err
    assert ("set_active", False, ["notifyOthersOnDeactivation"]) not in fake.calls


def test_run_delay_if_busy_waits_for_activation(fake, capfd):
    fake.first_state = "delayed"
    code = cli.main(["run", "--category", "playback", "--delay-if-busy", "--", "true"])
    assert code == 0
    assert fake.calls[2:4] == [("set_active", True, ["delayIfBusy"]), ("wait_until_active",)]
    assert "delayed" in capfd.readouterr().err


def test_run_missing_command_is_127(fake):
    assert cli.main(["run", "--category", "playback", "--", "/nonexistent/prog"]) == 127
