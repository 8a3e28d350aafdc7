"""The D-Bus adapter: model and domain <-> D-Bus types, errors -> named D-Bus errors.

Bus name ``io.github.audiopolicyd.AudioPolicy1``; the Manager lives at
``/io/github/audiopolicyd/AudioPolicy1``, one Session object per explicit session under
``.../session/``, one Recorder object per recording under ``.../recorder/``; errors are
``io.github.audiopolicyd.AudioPolicy1.Error.<Name>`` (:mod:`audiopolicyd.names`,
:mod:`audiopolicyd.errors`). Every member is documented in
docs/dbus-api.md and frozen in docs/dbus/.

No decisions here: who may do what is decided by the session layer
(:mod:`audiopolicyd.appsessions`) and microphone access
(:mod:`audiopolicyd.microphone.access`), which the methods call with the caller
(:mod:`.service`). One module per interface: :mod:`.manager`, :mod:`.session`,
:mod:`.recorder`; the agent round trip in :mod:`.agents`; value conversion and argument
bounds in :mod:`.convert`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from dbus_fast import Message, MessageType

from ..names import (
    BUS_DAEMON, MANAGER_IFACE, OBJECT_PATH, RECORDER_IFACE, RECORDER_PATH_PREFIX, SESSION_IFACE,
    SESSION_PATH_PREFIX,
)
from .agents import AgentClient
from .manager import ManagerInterface
from .recorder import RecorderInterface
from .service import CallerDispatch, close_fds
from .session import SessionInterface

logger = logging.getLogger(__name__)

__all__ = ["AgentClient", "DBusApi", "ManagerInterface", "RecorderInterface", "SessionInterface"]


class DBusApi:
    """The daemon's objects on the bus and the calls whose caller matters.

    Exports the Manager (:meth:`export`), one :class:`SessionInterface` per session an app
    creates (removed with it), answers the caller-aware methods (:meth:`start`), tells the
    session layer and microphone access when a connection leaves the bus, and lets the broker
    call prompt agents (:class:`AgentClient`).

    :param bus: the daemon's connection
    :param daemon: the composition root, for the Manager (:class:`ManagerInterface`)
    :param sessions: the :class:`~audiopolicyd.appsessions.AppSessions`
    :param access: the :class:`~audiopolicyd.microphone.access.MicrophoneAccess`
    :param identify: ``(pid, uid) -> Identity`` (:func:`audiopolicyd.identity.identify`)
    :param routes: the sessions' routes (:class:`~audiopolicyd.sessionroutes.SessionRoutes`);
        None: sessions show an empty route and refuse route calls with ``Error.NotSupported``
    :param recorders: the recordings (:class:`~audiopolicyd.recorder.recorders.Recorders`);
        None: ``Record`` answers ``Error.NotSupported``
    """

    def __init__(self, bus, daemon: Any, sessions, access, identify: Callable, routes=None,
                 recorders=None):
        self.bus = bus
        self.sessions = sessions
        self.access = access
        self.routes = routes
        self.recorders = recorders
        self.manager = ManagerInterface(daemon, self)
        self.objects: dict[str, SessionInterface] = {}
        self.recorder_objects: dict[str, RecorderInterface] = {}
        self.dispatch = CallerDispatch(bus, identify)
        self.dispatch.route(MANAGER_IFACE, ManagerInterface,
                            lambda path, sender: self.manager if path == OBJECT_PATH else None)
        self.dispatch.route(SESSION_IFACE, SessionInterface, self._session_object)
        self.dispatch.route(RECORDER_IFACE, RecorderInterface, self._recorder_object)
        sessions.listeners.append(self._on_session_event)
        if recorders is not None:
            recorders.on_created.append(self._export_recorder)
            recorders.on_dropped.append(self._unexport_recorder)
        if access.broker is not None:
            access.broker.caller = AgentClient(bus)
            access.broker.on_decisions.append(self._permissions_changed)

    def export(self) -> None:
        """Export the Manager (before the bus name is requested)."""
        self.bus.export(OBJECT_PATH, self.manager)

    async def start(self) -> None:
        """Answer the caller-aware methods and follow connections leaving the bus."""
        self.bus.add_message_handler(self._on_message)
        await self.bus.call(Message(
            **BUS_DAEMON, member="AddMatch", signature="s",
            body=["type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"]))

    def export_session(self, session) -> str:
        """Export a new session's object; its path."""
        path = SESSION_PATH_PREFIX + session.id
        self.objects[session.id] = SessionInterface(session, self)
        self.bus.export(path, self.objects[session.id])
        return path

    def _session_object(self, path: str, sender: str) -> SessionInterface | None:
        if not path.startswith(SESSION_PATH_PREFIX):
            return None
        # the session layer decides: NoSuchSession, NotOwner
        session = self.sessions.get(path[len(SESSION_PATH_PREFIX):], sender)
        return self.objects.get(session.id)

    def _export_recorder(self, recording) -> None:
        obj = self.recorder_objects[recording.control_id] = RecorderInterface(recording)
        self.bus.export(RECORDER_PATH_PREFIX + recording.control_id, obj)

    def _unexport_recorder(self, recording) -> None:
        if self.recorder_objects.pop(recording.control_id, None) is not None:
            self.bus.unexport(RECORDER_PATH_PREFIX + recording.control_id)

    def _recorder_object(self, path: str, sender: str) -> RecorderInterface | None:
        if not path.startswith(RECORDER_PATH_PREFIX) or self.recorders is None:
            return None
        # the recorders decide: NoSuchSession, NotOwner
        recording = self.recorders.get(path[len(RECORDER_PATH_PREFIX):], sender)
        return self.recorder_objects.get(recording.control_id)

    def _on_message(self, msg: Message):
        try:
            return self._handle(msg)
        finally:
            close_fds(msg)

    def _handle(self, msg: Message):
        if msg.message_type == MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.signature == "sss" \
                    and msg.sender == "org.freedesktop.DBus":
                name, old, new = msg.body
                if name.startswith(":") and old and not new:
                    self.sessions.drop_owner(name)
                    self.access.peer_gone(name)
                    if self.recorders is not None:
                        self.recorders.peer_gone(name)
            return None
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        return self.dispatch.handle(msg)

    def _permissions_changed(self) -> None:
        for obj in self.objects.values():
            obj.permissions_changed()

    def _on_session_event(self, session, what: str, payload) -> None:
        obj = self.objects.get(session.id)
        if obj is None:
            return
        if what == "Removed":
            del self.objects[session.id]
            self.bus.unexport(SESSION_PATH_PREFIX + session.id)
            return
        obj.emit(what, payload)
