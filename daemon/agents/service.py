"""The agent on the bus: the object the daemon calls (:class:`PermissionAgentInterface`), the
registration with one daemon after another, :func:`run_agent` and :func:`main`. See
:mod:`audiopolicyd.agents`.

(No ``from __future__ import annotations`` here: dbus-fast reads D-Bus signatures from the
annotations at run time.)
"""

import asyncio
import logging
import sys
from typing import Any, TextIO

from dbus_fast import DBusError, Message, MessageType
from dbus_fast.service import ServiceInterface, method

from ..buswriter import MessageBus
from ..client import DaemonNotRunning, connect, plain
from ..names import ACCESS_DENIED, AGENT_IFACE, AGENT_PATH, BUS_DAEMON, INVALID_ARGS, MANAGER_IFACE
from ..names import BUS_NAME as MANAGER_NAME
from ..names import NO_OWNER_ERRORS as _NO_OWNER
from ..names import OBJECT_PATH as MANAGER_PATH
from .calls import _call, _error_text, _name_owner, _raw_call
from .notify import NotificationPrompter
from .prompter import DECISIONS, UNDETERMINED, AgentError, Prompter, _log_late_failure
from .terminal import TerminalPrompter

logger = logging.getLogger(__name__)

# Standard interfaces anyone may call on the agent's object (busctl introspect).
_OPEN_IFACES = ("org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer",
                "org.freedesktop.DBus.Properties")


class PermissionAgentInterface(ServiceInterface):
    """``io.github.audiopolicyd.AudioPolicy1.PermissionAgent``: the object the daemon calls.

    As ``org.bluez.Agent1`` (``RequestConfirmation`` + ``Cancel``) and polkit's
    ``AuthenticationAgent`` (``BeginAuthentication`` + ``CancelAuthentication``): each call
    waits for the user, ``Cancel`` withdraws one. Never answers with a traceback: a prompter
    failure answers ``undetermined`` and is logged. Who may call is checked by
    :func:`run_agent`, not here (dbus-fast handlers do not see the sender).

    :param prompter: the :class:`Prompter` that asks the user
    """

    def __init__(self, prompter: Prompter):
        super().__init__(AGENT_IFACE)
        self.prompter = prompter
        # request id -> (task running prompter.ask, future set when the request is withdrawn)
        self._pending: dict[str, tuple[asyncio.Task, asyncio.Future]] = {}

    @method(name="RequestRecordPermission")
    async def request_record_permission(self, request_id: "s", app_id: "s",
                                        info: "a{sv}") -> "sa{sv}":
        """``RequestRecordPermission(s request_id, s app_id, a{sv} info) -> (s, a{sv})``.

        :raises DBusError: ``org.freedesktop.DBus.Error.InvalidArgs`` when ``request_id`` is
            already pending
        """
        if request_id in self._pending:
            raise DBusError(INVALID_ARGS,
                            f"request {request_id!r} is already pending")
        return [await self.ask(request_id, app_id, plain(info)), {}]

    @method(name="Cancel")
    async def cancel_request(self, request_id: "s"):
        """``Cancel(s request_id)``: withdraw a pending request; unknown ids are ignored."""
        await self.withdraw(request_id)

    @property
    def pending(self) -> list[str]:
        """Ids of the requests being asked, oldest first."""
        return list(self._pending)

    async def ask(self, request_id: str, app_id: str, info: dict) -> str:
        """Ask the prompter, as ``RequestRecordPermission`` does.

        :returns: one of :data:`DECISIONS`; ``undetermined`` when withdrawn, when the prompter
            raised or returned something else
        """
        task = asyncio.ensure_future(self.prompter.ask(request_id, app_id, info))
        withdrawn = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (task, withdrawn)
        try:
            await asyncio.wait({task, withdrawn}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._pending.get(request_id, (None,))[0] is task:
                del self._pending[request_id]
            if not withdrawn.done() and not task.done():  # we were cancelled ourselves
                task.cancel()
        if withdrawn.done():
            logger.info("request %s for %s withdrawn", request_id, app_id)
            return UNDETERMINED
        try:
            decision = task.result()
        except (Exception, asyncio.CancelledError):
            logger.exception("asking about %s (request %s) failed; answering %s", app_id,
                             request_id, UNDETERMINED)
            return UNDETERMINED
        if decision not in DECISIONS:
            logger.error("prompter answered %r for %s; answering %s", decision, app_id,
                         UNDETERMINED)
            return UNDETERMINED
        logger.info("request %s: %s %s", request_id, app_id, decision)
        return decision

    async def withdraw(self, request_id: str) -> None:
        """Withdraw one pending request, as ``Cancel`` does: its call answers ``undetermined``,
        the prompter's :meth:`Prompter.cancel` runs, then its ask task is cancelled. Unknown ids
        are ignored."""
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        task, withdrawn = entry
        if not withdrawn.done():
            withdrawn.set_result(None)
        try:
            await self.prompter.cancel(request_id)
        except Exception:
            logger.exception("withdrawing request %s failed", request_id)
        finally:
            task.cancel()
            task.add_done_callback(_log_late_failure)

    async def withdraw_all(self) -> None:
        """Withdraw every pending request (the daemon that asked left the bus)."""
        for request_id in list(self._pending):
            await self.withdraw(request_id)


# -- registration ------------------------------------------------------------------------------

class _Registration:
    """The agent's side of the registration with one daemon after another."""

    def __init__(self, bus: MessageBus, interface: PermissionAgentInterface, path: str):
        self.bus = bus
        self.interface = interface
        self.path = path
        self.owner: str | None = None  # the daemon allowed to call us (registered or about to)
        self.registered = False
        self.latest: str | None = None  # the daemon name's latest owner, from NameOwnerChanged
        self.changed = asyncio.Event()
        self.rule = ("type='signal',sender='org.freedesktop.DBus',"
                     "interface='org.freedesktop.DBus',member='NameOwnerChanged',"
                     f"arg0='{MANAGER_NAME}'")

    def on_message(self, msg: Message) -> Message | None:
        if msg.message_type == MessageType.SIGNAL:
            if (msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus"
                    and msg.signature == "sss" and msg.body[0] == MANAGER_NAME):
                self.latest = msg.body[2] or None
                self.changed.set()
            return None
        if (msg.message_type == MessageType.METHOD_CALL and msg.path == self.path
                and msg.interface not in _OPEN_IFACES
                and (self.owner is None or msg.sender != self.owner)):
            logger.warning("call %s from %s refused: only audiopolicyd (%s) may ask", msg.member,
                           msg.sender, self.owner or "not on the bus")
            return Message.new_error(msg, ACCESS_DENIED,
                                     f"only {MANAGER_NAME} may call the permission agent")
        return None

    async def register(self, owner: str) -> None:
        # Both before the call: the daemon may ask as soon as it registered us, and a task
        # cancelled while waiting for the answer must still unregister.
        self.owner = owner
        self.registered = True
        reply = await _raw_call(self.bus, destination=owner, path=MANAGER_PATH,
                                interface=MANAGER_IFACE, member="RegisterPermissionAgent",
                                signature="o", body=[self.path])
        if reply.message_type == MessageType.ERROR:
            self.owner = None
            self.registered = False
            if reply.error_name in _NO_OWNER:
                raise AgentError(f"audiopolicyd is not running ({MANAGER_NAME} has no owner on "
                                 "this bus)", reply.error_name)
            raise AgentError(f"audiopolicyd refused the agent: {reply.error_name}: "
                             f"{_error_text(reply)}", reply.error_name or "")
        logger.info("registered as the microphone permission agent at %s with %s", self.path,
                    owner)

    async def unregister(self) -> None:
        if not (self.registered and self.owner and self.bus.connected):
            return
        self.registered = False
        try:
            await _call(self.bus, destination=self.owner, path=MANAGER_PATH,
                        interface=MANAGER_IFACE, member="UnregisterPermissionAgent",
                        signature="o", body=[self.path], timeout=5.0)
        except AgentError as exc:
            logger.debug("UnregisterPermissionAgent: %s", exc)

    async def daemon_left(self) -> None:
        logger.warning("audiopolicyd (%s) left the bus; waiting for it to come back", self.owner)
        self.registered = False
        self.owner = None
        await self.interface.withdraw_all()


# Tasks watching a bus for its disconnection, kept until it disconnects: cancelling one would
# cancel the bus's own disconnect future, and other code may be waiting on it.
_watches: set[asyncio.Task] = set()


async def run_agent(bus: MessageBus, prompter: Prompter, path: str = AGENT_PATH) -> None:
    """Be the daemon's microphone permission agent until told to stop.

    Starts the prompter, exports :class:`PermissionAgentInterface` at ``path``, calls
    ``RegisterPermissionAgent(path)`` on the daemon (D-Bus-activating it when it is
    activatable) and answers its requests, refusing calls from anyone else with
    ``org.freedesktop.DBus.Error.AccessDenied``. When the daemon leaves the bus (restart), its
    pending requests are withdrawn and the agent registers again with the next owner of
    ``io.github.audiopolicyd.AudioPolicy1`` once it appears, as BlueZ agents do after
    ``bluetoothd`` restarts.

    Returns when the prompter ends (end of input) or the bus is disconnected by its owner;
    cancelling the task also stops it. On the way out it calls
    ``UnregisterPermissionAgent(path)`` if still connected and registered, unexports the object
    and closes the prompter.

    :param bus: a connection to the bus the daemon is on (the session bus in user mode); not
        closed here
    :param prompter: how the user is asked; :func:`run_agent` calls its ``start`` and ``close``
    :param path: the object path to export the agent at
    :raises AgentError: the prompter cannot start; the daemon is not on the bus; the daemon
        refused the registration (``dbus_name``: ``...Error.AgentExists``, ``...Error.NotAllowed``,
        or ``org.freedesktop.DBus.Error.UnknownMethod`` from a daemon without agents), also when
        registering again after a restart; the bus connection was lost
    """
    await prompter.start()
    interface = PermissionAgentInterface(prompter)
    reg = _Registration(bus, interface, path)
    disconnected = asyncio.ensure_future(bus.wait_for_disconnect())
    _watches.add(disconnected)
    disconnected.add_done_callback(_watches.discard)
    waiters: list[asyncio.Task] = []
    try:
        bus.add_message_handler(reg.on_message)
        bus.export(path, interface)
        await _call(bus, **BUS_DAEMON, member="AddMatch", signature="s", body=[reg.rule])
        owner = await _name_owner(bus, MANAGER_NAME, activate=True)
        if owner is None:
            raise AgentError(f"audiopolicyd is not running ({MANAGER_NAME} has no owner on this "
                             "bus)")
        await reg.register(owner)

        ended = asyncio.ensure_future(prompter.wait_ended())
        waiters.append(ended)
        while True:
            changed = asyncio.ensure_future(reg.changed.wait())
            waiters.append(changed)
            await asyncio.wait({disconnected, ended, changed}, return_when=asyncio.FIRST_COMPLETED)
            if disconnected.done():
                reg.registered = False
                error = None if disconnected.cancelled() else disconnected.exception()
                if error is not None:
                    raise AgentError(f"the bus connection was lost: {error}")
                logger.info("the bus connection was closed; the agent stops")
                return
            if ended.done():
                logger.info("the prompter ended; the agent stops")
                return
            reg.changed.clear()
            if reg.owner is not None and reg.latest != reg.owner:
                await reg.daemon_left()
            if reg.latest is not None and reg.owner is None:
                try:
                    await reg.register(reg.latest)
                except AgentError as exc:
                    if exc.dbus_name not in _NO_OWNER:
                        raise
                    # gone again before it answered: wait for the next owner
                    logger.warning("audiopolicyd left again before the agent registered")
    except AgentError:
        # dbus-fast fails the calls in flight before it resolves the disconnect future, in the
        # same step: a call that failed because the bus's owner closed it is not an error.
        if (disconnected.done() and not disconnected.cancelled()
                and disconnected.exception() is None):
            logger.info("the bus connection was closed; the agent stops")
            return
        raise
    finally:
        for task in waiters:
            task.cancel()
        try:
            await reg.unregister()
        finally:
            bus.remove_message_handler(reg.on_message)
            bus.unexport(path, interface)
            if bus.connected:
                try:
                    await _call(bus, **BUS_DAEMON, member="RemoveMatch", signature="s",
                                body=[reg.rule], timeout=5.0)
                except AgentError as exc:
                    logger.debug("RemoveMatch: %s", exc)
            await prompter.close()


async def main(bus_address: str | None, notify: bool, inp: Any = None,
               out: TextIO | None = None) -> int:
    """``audiopolicyctl agent [--notify]``: run an agent on the session bus until end of input
    (terminal) or until stopped, as ``pkttyagent`` (polkit) and ``bluetoothctl``'s ``agent on``
    (BlueZ) do.

    :param bus_address: a D-Bus address; None: the session bus
    :param notify: ask with desktop notifications (:class:`NotificationPrompter`) instead of on
        the terminal (:class:`TerminalPrompter`)
    :param inp: the terminal prompter's input (default stdin)
    :param out: the terminal prompter's output (default stdout)
    :returns: exit code: 0 the agent ended normally, 1 it could not run (one line on stderr,
        ``audiopolicyctl agent: <why>``)
    """
    try:
        bus = await connect(bus_address)
    except DaemonNotRunning as exc:
        print(f"audiopolicyctl agent: {exc.message}", file=sys.stderr)
        return 1
    try:
        prompter: Prompter = NotificationPrompter(bus) if notify else TerminalPrompter(inp, out)
        await run_agent(bus, prompter)
        return 0
    except AgentError as exc:
        print(f"audiopolicyctl agent: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        if bus.connected:
            bus.disconnect()
            try:
                await bus.wait_for_disconnect()
            except Exception:
                pass
