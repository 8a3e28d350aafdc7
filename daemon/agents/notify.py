"""Asking with desktop notifications: :class:`NotificationPrompter`
(``audiopolicyctl agent --notify``)."""

from __future__ import annotations

import asyncio
import logging

from dbus_fast import Message, MessageFlag, MessageType, Variant

from ..buswriter import MessageBus
from ..names import BUS_DAEMON
from .calls import _call, _name_owner
from .prompter import DENIED, GRANTED, UNDETERMINED, AgentError, Prompter, describe

logger = logging.getLogger(__name__)

#: The desktop notification service (Desktop Notifications Specification 1.2).
NOTIFY_NAME = "org.freedesktop.Notifications"
NOTIFY_PATH = "/org/freedesktop/Notifications"
NOTIFY_IFACE = "org.freedesktop.Notifications"


def _markup_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Note:
    __slots__ = ("request_id", "future", "id", "open")

    def __init__(self, request_id: str, future: asyncio.Future):
        self.request_id = request_id
        self.future = future
        self.id = 0  # the server's notification id, once Notify answered
        self.open = True  # shown and not closed yet (by the server or by us)


class NotificationPrompter(Prompter):
    """Asks with a desktop notification, as GNOME Shell's polkit agent asks with a dialog.

    One notification per request (all shown at once; the server stacks them): summary ``Allow
    "parecord" to use the microphone?``, body the details (executable, pid), icon
    ``audio-input-microphone``, actions ``["allow", "Allow", "deny", "Deny"]``, hints
    ``urgency`` = 2 (critical: it stays until answered) and ``resident`` = true, no expiry.
    ``ActionInvoked(id, "allow")`` grants, ``"deny"`` denies; ``NotificationClosed`` before any
    action (dismissed, or the server went away) answers ``undetermined``. A withdrawn request
    closes its notification with ``CloseNotification``, as does an answered one (resident
    notifications stay otherwise). Only signals sent by the current owner of
    ``org.freedesktop.Notifications`` count: any connection can emit (or send us directly) an
    ``ActionInvoked`` with a guessed id.

    :param bus: the session bus connection (the agent's own: signals are received on it)
    :param app_name: the ``app_name`` given to ``Notify``
    """

    ACTIONS = ["allow", "Allow", "deny", "Deny"]
    ICON = "audio-input-microphone"

    def __init__(self, bus: MessageBus, app_name: str = "audiopolicyd"):
        super().__init__()
        self.bus = bus
        self.app_name = app_name
        self._owner: str | None = None
        self._markup = False
        self._notes: dict[str, _Note] = {}  # request id -> note
        self._by_id: dict[int, _Note] = {}  # notification id -> note
        # Signals for ids whose Notify reply we have received but not read yet: dbus-fast
        # dispatches the signals of one read before the awaiting coroutine resumes.
        self._early: dict[int, tuple[str, bool]] = {}
        self._notifying = 0
        self._rules = [
            f"type='signal',interface='{NOTIFY_IFACE}',path='{NOTIFY_PATH}',"
            "member='ActionInvoked'",
            f"type='signal',interface='{NOTIFY_IFACE}',path='{NOTIFY_PATH}',"
            "member='NotificationClosed'",
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
            f"member='NameOwnerChanged',arg0='{NOTIFY_NAME}'",
        ]
        self._started = False

    async def start(self) -> None:
        """Find the notification server (D-Bus-activating it when it is activatable) and check
        that it shows actions.

        :raises AgentError: no notification server, or one without the ``actions`` capability
        """
        self.bus.add_message_handler(self._on_message)
        self._started = True
        try:
            for rule in self._rules:
                await _call(self.bus, **BUS_DAEMON, member="AddMatch", signature="s", body=[rule])
            self._owner = await _name_owner(self.bus, NOTIFY_NAME, activate=True)
            if self._owner is None:
                raise AgentError(f"no notification server on the bus ({NOTIFY_NAME} has no "
                                 "owner and cannot be activated)")
            reply = await _call(self.bus, destination=self._owner, path=NOTIFY_PATH,
                                interface=NOTIFY_IFACE, member="GetCapabilities")
            capabilities = reply.body[0]
            if "actions" not in capabilities:
                raise AgentError(f"the notification server ({self._owner}) cannot show buttons "
                                 "(no 'actions' capability)")
            self._markup = "body-markup" in capabilities
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every open notification (pending asks answer ``undetermined``) and stop
        listening."""
        for note in list(self._notes.values()):
            self._settle(note, UNDETERMINED)
            await self._close_note(note)
        if not self._started:
            return
        self._started = False
        self.bus.remove_message_handler(self._on_message)
        if self.bus.connected:
            for rule in self._rules:
                try:
                    await _call(self.bus, **BUS_DAEMON, member="RemoveMatch", signature="s",
                                body=[rule])
                except (AgentError, OSError, EOFError) as exc:
                    logger.debug("RemoveMatch: %s", exc)

    async def ask(self, request_id: str, app_id: str, info: dict) -> str:
        """See :meth:`Prompter.ask`: show a notification and wait for its outcome.

        :raises AgentError: when ``Notify`` fails (answered ``undetermined`` by the agent)
        """
        if self._owner is None:
            raise AgentError(f"no notification server on the bus ({NOTIFY_NAME} has no owner)")
        note = _Note(request_id, asyncio.get_running_loop().create_future())
        self._notes[request_id] = note
        name, details = describe(app_id, info)
        body = _markup_escape(details) if self._markup else details
        hints = {"urgency": Variant("y", 2), "resident": Variant("b", True)}
        notify = asyncio.ensure_future(_call(
            self.bus, destination=self._owner, path=NOTIFY_PATH, interface=NOTIFY_IFACE,
            member="Notify", signature="susssasa{sv}i",
            body=[self.app_name, 0, self.ICON, f"Allow \"{name}\" to use the microphone?", body,
                  self.ACTIONS, hints, 0]))
        try:
            self._notifying += 1
            try:
                # Shielded: when this task is cancelled (Cancel, shutdown) before Notify answered,
                # the notification is still shown, and must be closed once its id is known.
                reply = await asyncio.shield(notify)
            except asyncio.CancelledError:
                notify.add_done_callback(self._close_when_shown)
                raise
            finally:
                self._notifying -= 1
            note.id = reply.body[0]
            early = self._early.pop(note.id, None)
            if not self._notifying:
                self._early.clear()
            if note.future.done():  # withdrawn while Notify was on its way
                await self._close_note(note)
                return UNDETERMINED
            self._by_id[note.id] = note
            if early is not None:
                self._on_outcome(note, *early)
            return await note.future
        finally:
            self._notes.pop(request_id, None)
            self._by_id.pop(note.id, None)
            if note.open and note.id:
                # answered (resident notifications stay after an action) or cancelled task
                note.open = False
                self._send_close(note.id)

    async def cancel(self, request_id: str) -> None:
        """See :meth:`Prompter.cancel`: ``CloseNotification`` for its notification."""
        note = self._notes.get(request_id)
        if note is None:
            return
        self._settle(note, UNDETERMINED)
        await self._close_note(note)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _settle(note: _Note, decision: str) -> None:
        if not note.future.done():
            note.future.set_result(decision)

    async def _close_note(self, note: _Note) -> None:
        if not (note.open and note.id and self._owner and self.bus.connected):
            return
        note.open = False
        try:
            await _call(self.bus, destination=self._owner, path=NOTIFY_PATH,
                        interface=NOTIFY_IFACE, member="CloseNotification", signature="u",
                        body=[note.id])
        except (AgentError, OSError, EOFError) as exc:
            logger.debug("CloseNotification(%d): %s", note.id, exc)

    def _send_close(self, notification_id: int) -> None:
        """CloseNotification without waiting (from a ``finally`` that may be cancelled)."""
        if self.bus.connected and self._owner:
            sent = self.bus.send(Message(destination=self._owner, path=NOTIFY_PATH,
                                         interface=NOTIFY_IFACE, member="CloseNotification",
                                         signature="u", body=[notification_id],
                                         flags=MessageFlag.NO_REPLY_EXPECTED))
            sent.add_done_callback(lambda f: f.cancelled() or f.exception())  # no GC warning

    def _close_when_shown(self, notify: asyncio.Future) -> None:
        """Done callback of a Notify whose ask was cancelled: close what it showed."""
        if not notify.cancelled() and notify.exception() is None:
            self._send_close(notify.result().body[0])

    def _on_outcome(self, note: _Note, decision: str, closed: bool) -> None:
        if closed:
            note.open = False
        self._settle(note, decision)

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return None
        if (msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus"
                and msg.signature == "sss" and msg.body[0] == NOTIFY_NAME):
            self._owner_changed(msg.body[1], msg.body[2])
            return None
        if msg.interface != NOTIFY_IFACE or msg.path != NOTIFY_PATH:
            return None
        if self._owner is None or msg.sender != self._owner:
            logger.debug("%s from %s ignored: %s is owned by %s", msg.member, msg.sender,
                         NOTIFY_NAME, self._owner)
            return None
        if msg.member == "ActionInvoked" and msg.signature == "us":
            outcome = {"allow": GRANTED, "deny": DENIED}.get(msg.body[1])
            if outcome is None:  # "default" (a click on the body) and the like
                return None
            event = (outcome, False)
        elif msg.member == "NotificationClosed" and msg.signature == "uu":
            event = (UNDETERMINED, True)
        else:
            return None
        note = self._by_id.get(msg.body[0])
        if note is not None:
            self._on_outcome(note, *event)
        elif self._notifying:
            self._early.setdefault(msg.body[0], event)
        return None

    def _owner_changed(self, old: str, new: str) -> None:
        if old and old == self._owner:
            # the server left (or was replaced): its notifications are gone with it
            logger.warning("the notification server %s left the bus", old)
            for note in list(self._notes.values()):
                note.open = False
                self._settle(note, UNDETERMINED)
        self._owner = new or None
