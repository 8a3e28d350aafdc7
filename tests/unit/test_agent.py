"""audiopolicyd.agents on a private dbus-daemon: a stand-in daemon registers the agent and asks it,
the terminal prompter is fed through a pipe, the notification prompter talks to a stand-in
``org.freedesktop.Notifications``.

Every wait has a generous timeout and nothing is asserted about how long anything took.

(No ``from __future__ import annotations``: dbus-fast reads the stand-in server's D-Bus
signatures from its annotations at run time.)
"""

import asyncio
import os
import select

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, method, signal

from audiopolicyd import agents as ag

WAIT = 10.0  # seconds: an upper bound for things that happen at once, never a speed claim

APP = "exe:/usr/bin/pacat"
INFO = {"AppName": Variant("s", "parecord"), "Executable": Variant("s", "/usr/bin/pacat"),
        "Pid": Variant("u", 123), "Sandboxed": Variant("b", False),
        "Streams": Variant("u", 1), "Requester": Variant("s", "stream"),
        "SomethingNew": Variant("s", "ignored")}
PROMPT = ('Allow "parecord" (/usr/bin/pacat, pid 123) to use the microphone? '
          '[y]es / [n]o / [l]ater: ')


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture
async def connect(bus_address):
    """``await connect()``: a new connection to the private bus, disconnected at the end."""
    buses: list[MessageBus] = []

    async def _connect() -> MessageBus:
        bus = await MessageBus(bus_address=bus_address).connect()
        buses.append(bus)
        return bus

    yield _connect
    for bus in buses:
        if bus.connected:
            bus.disconnect()
            await bus.wait_for_disconnect()


async def within(awaitable, timeout: float = WAIT):
    return await asyncio.wait_for(awaitable, timeout)


class FakeDaemon:
    """Owns ``io.github.audiopolicyd.AudioPolicy1`` and serves the agent half of its Manager:
    records (Un)RegisterPermissionAgent with the caller, may refuse with ``refuse``, and asks
    the registered agent."""

    def __init__(self, bus: MessageBus, refuse: str | None = None):
        self.bus = bus
        self.refuse = refuse
        self.calls: list[tuple[str, str, str]] = []  # (member, sender, path)
        self.agent: tuple[str, str] | None = None  # (unique name, path)
        self.registered = asyncio.Event()
        self.unregistered = asyncio.Event()

    @classmethod
    async def start(cls, bus: MessageBus, refuse: str | None = None) -> "FakeDaemon":
        daemon = cls(bus, refuse)
        bus.add_message_handler(daemon._on_message)
        await bus.request_name(ag.MANAGER_NAME)
        return daemon

    def _on_message(self, msg: Message):
        if (msg.message_type != MessageType.METHOD_CALL or msg.path != ag.MANAGER_PATH
                or msg.interface != ag.MANAGER_IFACE):
            return None
        if msg.member not in ("RegisterPermissionAgent", "UnregisterPermissionAgent"):
            return None
        self.calls.append((msg.member, msg.sender, msg.body[0]))
        if msg.member == "RegisterPermissionAgent":
            if self.refuse:
                return Message.new_error(msg, ag.ERROR_PREFIX + self.refuse,
                                         "another permission agent is registered")
            self.agent = (msg.sender, msg.body[0])
            self.registered.set()
        else:
            self.agent = None
            self.unregistered.set()
        return Message.new_method_return(msg)

    async def request(self, request_id: str, app_id: str = APP, info=None) -> str:
        reply = await self.call("RequestRecordPermission", "ssa{sv}",
                                [request_id, app_id, INFO if info is None else info])
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body
        decision, details = reply.body
        assert details == {}
        return decision

    async def cancel(self, request_id: str) -> None:
        reply = await self.call("Cancel", "s", [request_id])
        assert reply.message_type == MessageType.METHOD_RETURN, reply.body

    async def call(self, member: str, signature: str, body: list) -> Message:
        assert self.agent, "no agent registered"
        return await within(self.bus.call(Message(
            destination=self.agent[0], path=self.agent[1], interface=ag.AGENT_IFACE,
            member=member, signature=signature, body=body)))


class Screen:
    """The terminal prompter's output, awaitable."""

    def __init__(self):
        self.text = ""
        self._changed = asyncio.Event()

    def write(self, text: str) -> None:
        self.text += text
        self._changed.set()

    def flush(self) -> None:
        pass

    async def wait_for(self, needle: str, count: int = 1) -> None:
        async def _wait():
            while self.text.count(needle) < count:
                self._changed.clear()
                await self._changed.wait()
        try:
            await within(_wait())
        except asyncio.TimeoutError:
            raise AssertionError(f"{needle!r} x{count} never shown; screen:\n{self.text}")


class Keyboard:
    """The write end of the prompter's input pipe."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()

    def type(self, text: str) -> None:
        os.write(self.write_fd, text.encode())

    async def drained(self) -> None:
        """Wait until the prompter has read everything typed so far."""
        async def _wait():
            while select.select([self.read_fd], [], [], 0)[0]:
                await asyncio.sleep(0.01)
        await within(_wait())

    def eof(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.eof()
        os.close(self.read_fd)


class Observed(ag.TerminalPrompter):
    """A terminal prompter that tells when a request reached it."""

    def __init__(self, *args):
        super().__init__(*args)
        self.asked: list[str] = []
        self._changed = asyncio.Event()

    async def ask(self, request_id, app_id, info):
        self.asked.append(request_id)
        self._changed.set()
        return await super().ask(request_id, app_id, info)  # queued before anything else runs

    async def wait_asked(self, request_id: str) -> None:
        async def _wait():
            while request_id not in self.asked:
                self._changed.clear()
                await self._changed.wait()
        await within(_wait())


class Terminal:
    """A running agent with a terminal prompter on a pipe, and the daemon it registered with."""

    def __init__(self, daemon: FakeDaemon, keyboard: Keyboard, screen: Screen,
                 prompter: Observed, task: asyncio.Task, bus: MessageBus):
        self.daemon, self.keyboard, self.screen, self.prompter, self.task, self.bus = (
            daemon, keyboard, screen, prompter, task, bus)

    def ask(self, request_id: str, **kwargs) -> asyncio.Task:
        return asyncio.ensure_future(self.daemon.request(request_id, **kwargs))


@pytest.fixture
async def terminal(connect):
    keyboard, screen = Keyboard(), Screen()
    daemon = await FakeDaemon.start(await connect())
    bus = await connect()
    prompter = Observed(keyboard.read_fd, screen)
    task = asyncio.ensure_future(ag.run_agent(bus, prompter))
    await within(daemon.registered.wait())
    yield Terminal(daemon, keyboard, screen, prompter, task, bus)
    keyboard.eof()
    try:
        await within(task)
    finally:
        keyboard.close()


# -- registration -------------------------------------------------------------------------------

async def test_registers_its_path_from_its_own_connection(terminal):
    assert terminal.daemon.calls == [("RegisterPermissionAgent", terminal.bus.unique_name,
                                      ag.AGENT_PATH)]


async def test_refusal_is_an_agent_error_with_the_dbus_name_and_message(connect):
    await FakeDaemon.start(await connect(), refuse="AgentExists")
    keyboard = Keyboard()
    try:
        with pytest.raises(ag.AgentError) as info:
            await within(ag.run_agent(await connect(),
                                      ag.TerminalPrompter(keyboard.read_fd, Screen())))
    finally:
        keyboard.close()
    assert info.value.dbus_name == ag.ERROR_PREFIX + "AgentExists"
    assert str(info.value) == ("audiopolicyd refused the agent: io.github.audiopolicyd."
                               "AudioPolicy1.Error.AgentExists: another permission agent is "
                               "registered")


async def test_main_reports_a_refusal_on_one_line_and_exits_1(connect, bus_address, capsys):
    daemon = await FakeDaemon.start(await connect(), refuse="NotAllowed")
    keyboard = Keyboard()
    try:
        code = await within(ag.main(bus_address, notify=False, inp=keyboard.read_fd,
                                     out=Screen()))
    finally:
        keyboard.close()
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("audiopolicyctl agent: audiopolicyd refused the agent: ")
    assert "Error.NotAllowed" in err
    assert [c[0] for c in daemon.calls] == ["RegisterPermissionAgent"]


async def test_no_daemon_on_the_bus(connect, bus_address, capsys):
    keyboard = Keyboard()
    try:
        with pytest.raises(ag.AgentError, match="audiopolicyd is not running"):
            await within(ag.run_agent(await connect(),
                                      ag.TerminalPrompter(keyboard.read_fd, Screen())))
        assert await within(ag.main(bus_address, notify=False, inp=keyboard.read_fd,
                                    out=Screen())) == 1
    finally:
        keyboard.close()
    assert "audiopolicyd is not running" in capsys.readouterr().err


async def test_main_without_a_bus_exits_1(tmp_path, capsys):
    assert await within(ag.main(f"unix:path={tmp_path}/nobus", notify=False)) == 1
    assert capsys.readouterr().err.startswith("audiopolicyctl agent: cannot connect")


async def test_end_of_input_unregisters_and_ends(connect, bus_address):
    daemon = await FakeDaemon.start(await connect())
    keyboard = Keyboard()
    screen = Screen()
    main = asyncio.ensure_future(ag.main(bus_address, notify=False, inp=keyboard.read_fd,
                                         out=screen))
    try:
        await within(daemon.registered.wait())
        pending = asyncio.ensure_future(daemon.request("r1"))
        await screen.wait_for(PROMPT)
        keyboard.eof()
        assert await within(pending) == ag.UNDETERMINED
        assert await within(main) == 0
    finally:
        keyboard.close()
    assert "Input closed" in screen.text
    assert [c[0] for c in daemon.calls] == ["RegisterPermissionAgent",
                                            "UnregisterPermissionAgent"]
    assert daemon.calls[1][2] == ag.AGENT_PATH


async def test_end_of_input_from_a_non_pipe_ends_the_agent(connect, bus_address):
    """``/dev/null`` cannot go through ``connect_read_pipe``: the reader thread serves it."""
    daemon = await FakeDaemon.start(await connect())
    with open(os.devnull, "rb") as devnull:
        assert await within(ag.main(bus_address, notify=False, inp=devnull, out=Screen())) == 0
    assert [c[0] for c in daemon.calls] == ["RegisterPermissionAgent",
                                            "UnregisterPermissionAgent"]


async def test_cancelling_the_task_unregisters(connect):
    daemon = await FakeDaemon.start(await connect())
    keyboard = Keyboard()
    try:
        task = asyncio.ensure_future(ag.run_agent(await connect(),
                                                  ag.TerminalPrompter(keyboard.read_fd, Screen())))
        await within(daemon.registered.wait())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await within(task)
        await within(daemon.unregistered.wait())
    finally:
        keyboard.close()


async def test_closing_the_agents_connection_ends_it(connect):
    daemon = await FakeDaemon.start(await connect())
    keyboard = Keyboard()
    try:
        bus = await connect()
        task = asyncio.ensure_future(ag.run_agent(bus, ag.TerminalPrompter(keyboard.read_fd,
                                                                          Screen())))
        await within(daemon.registered.wait())
        bus.disconnect()
        assert await within(task) is None
    finally:
        keyboard.close()


async def test_only_the_daemon_may_call_the_agent(terminal, connect):
    intruder = await connect()
    reply = await within(intruder.call(Message(
        destination=terminal.bus.unique_name, path=ag.AGENT_PATH, interface=ag.AGENT_IFACE,
        member="RequestRecordPermission", signature="ssa{sv}", body=["x", APP, INFO])))
    assert reply.message_type == MessageType.ERROR
    assert reply.error_name == "org.freedesktop.DBus.Error.AccessDenied"
    assert PROMPT not in terminal.screen.text


async def test_daemon_restart_withdraws_its_requests_and_registers_again(terminal, connect):
    pending = terminal.ask("r1")
    await terminal.screen.wait_for(PROMPT)
    terminal.daemon.bus.disconnect()  # the daemon crashes
    await terminal.screen.wait_for("withdrawn")
    with pytest.raises(Exception):
        await within(pending)
    restarted = await FakeDaemon.start(await connect())
    await within(restarted.registered.wait())
    assert restarted.agent == (terminal.bus.unique_name, ag.AGENT_PATH)
    second = asyncio.ensure_future(restarted.request("r2"))
    await terminal.screen.wait_for(PROMPT, 2)
    terminal.keyboard.type("y\n")
    assert await within(second) == ag.GRANTED


# -- the terminal prompter ----------------------------------------------------------------------

@pytest.mark.parametrize("typed, decision", [
    ("y\n", ag.GRANTED), ("yes\n", ag.GRANTED), ("N\n", ag.DENIED), ("no\n", ag.DENIED),
    ("l\n", ag.UNDETERMINED), ("later\n", ag.UNDETERMINED)])
async def test_answers(terminal, typed, decision):
    pending = terminal.ask("r1")
    await terminal.screen.wait_for(PROMPT)
    terminal.keyboard.type(typed)
    assert await within(pending) == decision


async def test_garbage_asks_again(terminal):
    pending = terminal.ask("r1")
    await terminal.screen.wait_for(PROMPT)
    terminal.keyboard.type("maybe\n\n")
    await terminal.screen.wait_for(PROMPT, 3)
    assert terminal.screen.text.count("Please answer y (yes), n (no) or l (later).") == 2
    assert not pending.done()
    terminal.keyboard.type("l\n")
    assert await within(pending) == ag.UNDETERMINED


async def test_concurrent_requests_are_asked_one_after_the_other(terminal):
    info_b = dict(INFO, AppName=Variant("s", "arecord"),
                  Executable=Variant("s", "/usr/bin/arecord"), Pid=Variant("u", 0))
    first = terminal.ask("r1")
    await terminal.screen.wait_for(PROMPT)
    second = terminal.ask("r2", app_id="exe:/usr/bin/arecord", info=info_b)
    await terminal.prompter.wait_asked("r2")
    assert '"arecord"' not in terminal.screen.text
    terminal.keyboard.type("y\n")
    await terminal.screen.wait_for('Allow "arecord" (/usr/bin/arecord) to use the microphone?')
    assert await within(first) == ag.GRANTED
    assert not second.done()
    terminal.keyboard.type("n\n")
    assert await within(second) == ag.DENIED


async def test_an_answer_typed_before_the_prompt_is_not_consent(terminal):
    terminal.keyboard.type("y\n")
    await terminal.keyboard.drained()
    pending = terminal.ask("r1")
    await terminal.screen.wait_for(PROMPT)
    terminal.keyboard.type("n\n")
    assert await within(pending) == ag.DENIED


async def test_one_line_answers_only_the_prompt_on_screen(terminal):
    first, second = terminal.ask("r1"), terminal.ask("r2")
    await terminal.screen.wait_for(PROMPT)
    terminal.keyboard.type("y\ny\n")  # the second "y" was typed before prompt 2 was shown
    assert await within(first) == ag.GRANTED
    await terminal.screen.wait_for(PROMPT, 2)
    await terminal.keyboard.drained()
    assert not second.done()
    terminal.keyboard.type("n\n")
    assert await within(second) == ag.DENIED


async def test_cancel_withdraws_the_prompt_on_screen_and_shows_the_next(terminal):
    first, second = terminal.ask("r1"), terminal.ask("r2")
    await terminal.screen.wait_for(PROMPT)
    await terminal.daemon.cancel("r1")
    assert await within(first) == ag.UNDETERMINED
    assert 'The request for "parecord" was withdrawn' in terminal.screen.text
    await terminal.screen.wait_for(PROMPT, 2)
    terminal.keyboard.type("y\n")
    assert await within(second) == ag.GRANTED


async def test_cancel_of_a_queued_request_never_shows_it(terminal):
    info_b = dict(INFO, AppName=Variant("s", "arecord"))
    first, second = terminal.ask("r1"), terminal.ask("r2", info=info_b)
    await terminal.screen.wait_for(PROMPT)
    await terminal.daemon.cancel("r2")
    assert await within(second) == ag.UNDETERMINED
    await terminal.daemon.cancel("unknown")  # a no-op
    terminal.keyboard.type("y\n")
    assert await within(first) == ag.GRANTED
    assert '"arecord"' not in terminal.screen.text


async def test_app_names_cannot_put_escape_sequences_on_the_terminal(terminal):
    pending = terminal.ask("r1", info={"AppName": Variant("s", "evil\x1b[2K\rAllow")})
    await terminal.screen.wait_for("[l]ater: ")
    assert "\x1b" not in terminal.screen.text
    assert 'Allow "evil\\x1b[2K\\rAllow" (exe:/usr/bin/pacat)' in terminal.screen.text
    terminal.keyboard.type("n\n")
    assert await within(pending) == ag.DENIED


async def test_a_duplicate_request_id_is_refused(terminal):
    first = terminal.ask("r1")
    await terminal.screen.wait_for(PROMPT)
    reply = await terminal.daemon.call("RequestRecordPermission", "ssa{sv}", ["r1", APP, INFO])
    assert reply.error_name == "org.freedesktop.DBus.Error.InvalidArgs"
    terminal.keyboard.type("y\n")
    assert await within(first) == ag.GRANTED


# -- the interface's guarantees, with scripted prompters ----------------------------------------

class Scripted(ag.Prompter):
    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.cancelled: list[str] = []
        self.asked = asyncio.Event()

    async def ask(self, request_id, app_id, info):
        self.asked.set()
        self.info = info
        if isinstance(self.answer, Exception):
            raise self.answer
        if self.answer is None:
            await asyncio.Event().wait()  # until cancelled
        return self.answer

    async def cancel(self, request_id):
        self.cancelled.append(request_id)


async def run_scripted(connect, prompter):
    daemon = await FakeDaemon.start(await connect())
    task = asyncio.ensure_future(ag.run_agent(await connect(), prompter))
    await within(daemon.registered.wait())
    return daemon, task


async def stop(task):
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(task)


async def test_a_failing_prompter_answers_undetermined_and_logs(connect, caplog):
    daemon, task = await run_scripted(connect, Scripted(RuntimeError("no display")))
    assert await daemon.request("r1") == ag.UNDETERMINED
    assert "asking about exe:/usr/bin/pacat (request r1) failed" in caplog.text
    assert "no display" in caplog.text
    await stop(task)


async def test_a_prompter_answer_outside_the_three_is_undetermined(connect, caplog):
    daemon, task = await run_scripted(connect, Scripted("yes please"))
    assert await daemon.request("r1") == ag.UNDETERMINED
    assert "prompter answered 'yes please'" in caplog.text
    await stop(task)


async def test_the_prompter_gets_plain_values_and_cancel_cancels_its_ask(connect):
    prompter = Scripted(None)
    daemon, task = await run_scripted(connect, prompter)
    pending = asyncio.ensure_future(daemon.request("r1"))
    await within(prompter.asked.wait())
    assert prompter.info["Pid"] == 123 and prompter.info["AppName"] == "parecord"
    await daemon.cancel("r1")
    assert await within(pending) == ag.UNDETERMINED
    assert prompter.cancelled == ["r1"]
    await stop(task)


# -- the notification prompter ------------------------------------------------------------------

class FakeNotifications(ServiceInterface):
    """A notification server that records what it is asked."""

    def __init__(self, capabilities=("actions", "body", "body-markup", "persistence")):
        super().__init__(ag.NOTIFY_IFACE)
        self.capabilities = list(capabilities)
        self.notes: list[dict] = []
        self.closed: list[int] = []
        self.notified = asyncio.Event()
        self.closing = asyncio.Event()
        self.hold: asyncio.Event | None = None  # when set: Notify answers once it is set

    async def _answer_when_released(self) -> None:
        if self.hold is not None:
            await self.hold.wait()

    @method(name="GetCapabilities")
    def get_capabilities(self) -> "as":
        return self.capabilities

    @method(name="GetServerInformation")
    def get_server_information(self) -> "ssss":
        return ["fake", "test", "1", "1.2"]

    @method(name="Notify")
    async def notify(self, app_name: "s", replaces_id: "u", app_icon: "s", summary: "s",
                     body: "s", actions: "as", hints: "a{sv}", expire_timeout: "i") -> "u":
        note = dict(app_name=app_name, replaces_id=replaces_id, app_icon=app_icon,
                    summary=summary, body=body, actions=actions, hints=hints,
                    expire_timeout=expire_timeout, id=len(self.notes) + 41)
        self.notes.append(note)
        self.notified.set()
        await self._answer_when_released()
        return note["id"]

    @method(name="CloseNotification")
    def close_notification(self, id: "u"):
        self.closed.append(id)
        self.closing.set()
        self.notification_closed(id, 3)

    @signal(name="ActionInvoked")
    def action_invoked(self, id, action_key) -> "us":
        return [id, action_key]

    @signal(name="NotificationClosed")
    def notification_closed(self, id, reason) -> "uu":
        return [id, reason]

    async def wait_notes(self, count: int = 1) -> list[dict]:
        async def _wait():
            while len(self.notes) < count:
                self.notified.clear()
                await self.notified.wait()
        await within(_wait())
        return self.notes

    async def wait_closed(self, id: int) -> None:
        async def _wait():
            while id not in self.closed:
                self.closing.clear()
                await self.closing.wait()
        await within(_wait())


class Desktop:
    def __init__(self, daemon, server, server_bus, task, bus):
        self.daemon, self.server, self.server_bus, self.task, self.bus = (
            daemon, server, server_bus, task, bus)

    def ask(self, request_id: str, **kwargs) -> asyncio.Task:
        return asyncio.ensure_future(self.daemon.request(request_id, **kwargs))

    async def ping(self, bus: MessageBus) -> None:
        """A round trip through the bus: what ``bus`` sent before has been routed."""
        await within(bus.call(Message(destination="org.freedesktop.DBus",
                                      path="/org/freedesktop/DBus",
                                      interface="org.freedesktop.DBus", member="GetId")))


async def start_server(connect, **kwargs):
    server_bus = await connect()
    server = FakeNotifications(**kwargs)
    server_bus.export(ag.NOTIFY_PATH, server)
    await server_bus.request_name(ag.NOTIFY_NAME)
    return server, server_bus


@pytest.fixture
async def desktop(connect):
    server, server_bus = await start_server(connect)
    daemon = await FakeDaemon.start(await connect())
    bus = await connect()
    task = asyncio.ensure_future(ag.run_agent(bus, ag.NotificationPrompter(bus)))
    await within(daemon.registered.wait())
    yield Desktop(daemon, server, server_bus, task, bus)
    await stop(task)
    await within(daemon.unregistered.wait())


async def test_notify_arguments(desktop):
    pending = desktop.ask("r1", info=dict(INFO, AppName=Variant("s", "<b>parecord</b>")))
    (note,) = await desktop.server.wait_notes()
    assert note["app_icon"] == "audio-input-microphone"
    assert note["actions"] == ["allow", "Allow", "deny", "Deny"]
    assert note["hints"] == {"urgency": Variant("y", 2), "resident": Variant("b", True)}
    assert note["expire_timeout"] == 0 and note["replaces_id"] == 0
    assert note["summary"] == 'Allow "<b>parecord</b>" to use the microphone?'
    assert note["body"] == "/usr/bin/pacat, pid 123"
    desktop.server.action_invoked(note["id"], "deny")
    assert await within(pending) == ag.DENIED


@pytest.mark.parametrize("action, decision", [("allow", ag.GRANTED), ("deny", ag.DENIED)])
async def test_an_action_answers_and_closes_the_resident_notification(desktop, action, decision):
    pending = desktop.ask("r1")
    (note,) = await desktop.server.wait_notes()
    desktop.server.action_invoked(note["id"], action)
    assert await within(pending) == decision
    await desktop.server.wait_closed(note["id"])


async def test_a_dismissed_notification_is_undetermined(desktop):
    pending = desktop.ask("r1")
    (note,) = await desktop.server.wait_notes()
    desktop.server.notification_closed(note["id"], 2)
    assert await within(pending) == ag.UNDETERMINED


async def test_concurrent_requests_each_have_their_notification(desktop):
    first, second = desktop.ask("r1"), desktop.ask("r2")
    notes = await desktop.server.wait_notes(2)
    desktop.server.action_invoked(notes[1]["id"], "allow")
    desktop.server.action_invoked(notes[0]["id"], "deny")
    assert await within(first) == ag.DENIED
    assert await within(second) == ag.GRANTED


async def test_cancel_closes_the_notification(desktop):
    pending = desktop.ask("r1")
    (note,) = await desktop.server.wait_notes()
    await desktop.daemon.cancel("r1")  # may come before the agent has read Notify's reply
    assert await within(pending) == ag.UNDETERMINED
    await desktop.server.wait_closed(note["id"])


async def test_cancel_before_notify_answered_still_closes_the_notification(desktop):
    desktop.server.hold = asyncio.Event()
    pending = desktop.ask("r1")
    (note,) = await desktop.server.wait_notes()
    await desktop.daemon.cancel("r1")
    assert await within(pending) == ag.UNDETERMINED
    desktop.server.hold.set()
    await desktop.server.wait_closed(note["id"])


async def test_signals_from_anyone_but_the_server_are_ignored(desktop, connect):
    pending = desktop.ask("r1")
    (note,) = await desktop.server.wait_notes()
    impostor = await connect()
    for destination in (None, desktop.bus.unique_name):  # broadcast, then sent to the agent
        impostor.send(Message.new_signal(ag.NOTIFY_PATH, ag.NOTIFY_IFACE, "ActionInvoked", "us",
                                         [note["id"], "allow"]) if destination is None else
                      Message(message_type=MessageType.SIGNAL, destination=destination,
                              path=ag.NOTIFY_PATH, interface=ag.NOTIFY_IFACE,
                              member="ActionInvoked", signature="us", body=[note["id"], "allow"]))
    await desktop.ping(impostor)  # both routed before the server's own signal below
    desktop.server.action_invoked(note["id"], "deny")
    assert await within(pending) == ag.DENIED


async def test_the_server_leaving_answers_undetermined(desktop):
    pending = desktop.ask("r1")
    await desktop.server.wait_notes()
    desktop.server_bus.disconnect()
    assert await within(pending) == ag.UNDETERMINED


async def test_no_notification_server_is_an_agent_error(connect, bus_address, capsys):
    daemon = await FakeDaemon.start(await connect())
    bus = await connect()
    with pytest.raises(ag.AgentError, match="no notification server on the bus"):
        await within(ag.run_agent(bus, ag.NotificationPrompter(bus)))
    assert await within(ag.main(bus_address, notify=True)) == 1
    assert "no notification server" in capsys.readouterr().err
    assert daemon.calls == []  # it never registered


async def test_a_server_without_actions_is_an_agent_error(connect):
    await start_server(connect, capabilities=("body",))
    await FakeDaemon.start(await connect())
    bus = await connect()
    with pytest.raises(ag.AgentError, match="cannot show buttons"):
        await within(ag.run_agent(bus, ag.NotificationPrompter(bus)))
