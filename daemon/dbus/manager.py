"""``io.github.audiopolicyd.AudioPolicy1.Manager``: the daemon's read side, reload, sessions,
microphone permission, routing (the user's routes) and recordings.

(No ``from __future__ import annotations`` here: dbus-fast reads D-Bus signatures from the
annotations at run time.)
"""

import logging
import os
from typing import Any

from dbus_fast import Variant
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method, signal

from .. import __version__
from ..errors import InvalidArgument, NotAllowed, NotSupported
from ..limits import (
    APP_ID_CHARS, IDENTIFIER_CHARS, OBJECT_PATH_CHARS, PORT_UID_CHARS, TARGET_CHARS, check_text,
)
from ..names import MANAGER_IFACE, RECORDER_PATH_PREFIX
from ..recorder.params import parse as parse_params
from .convert import plain_dict, session_hints, stream_dict, typed_dict
from ..runtime.routeview import route_table
from .service import caller_method, guarded

logger = logging.getLogger(__name__)


class ManagerInterface(ServiceInterface):
    """``io.github.audiopolicyd.AudioPolicy1.Manager``.

    :param daemon: the composition root (:class:`audiopolicyd.app.Daemon`): gives
        ``runtime``, ``store``, ``microphone``, ``status()``, ``explain()``,
        ``record_permissions()`` and ``reload()``
    :param api: the :class:`~audiopolicyd.dbus.DBusApi` that exports sessions and holds the
        session layer and microphone access (None only to introspect)
    """

    def __init__(self, daemon: Any, api: Any = None):
        super().__init__(MANAGER_IFACE)
        self._daemon = daemon
        self._api = api
        self._announced: tuple[list, dict] = ([], {})  # Recording, SilencedBy last announced

    @method(name="GetStreams")
    @guarded
    def get_streams(self) -> "aa{sv}":
        return [stream_dict(v) for v in self._daemon.runtime.views()]

    @method(name="GetStatus")
    @guarded
    def get_status(self) -> "a{sv}":
        return typed_dict(self._daemon.status())

    @caller_method("CreateSession")
    async def create_session(self, caller, hints: "a{sv}") -> "o":
        hints = session_hints(hints)
        session = self._api.sessions.create(caller.name, await caller.identity(), hints)
        return self._api.export_session(session)

    @method(name="Explain")
    @guarded
    def explain(self, target: "s") -> "a{sv}":
        check_text("Explain target", target, TARGET_CHARS)
        return plain_dict(self._daemon.explain(target))

    @method(name="GetRecordPermissions")
    @guarded
    def get_record_permissions(self) -> "aa{sv}":
        return [typed_dict(entry) for entry in self._daemon.record_permissions()]

    @caller_method("SetRecordPermission")
    async def set_record_permission(self, caller, app_id: "s", decision: "s"):
        check_text("SetRecordPermission app_id", app_id, APP_ID_CHARS)
        check_text("SetRecordPermission decision", decision, IDENTIFIER_CHARS)
        await self._api.access.set_permission(caller, app_id, decision)

    @caller_method("RegisterPermissionAgent")
    async def register_permission_agent(self, caller, path: "o"):
        check_text("RegisterPermissionAgent path", path, OBJECT_PATH_CHARS)
        await self._api.access.register_agent(caller, path)

    @caller_method("UnregisterPermissionAgent")
    async def unregister_permission_agent(self, caller, path: "o"):
        check_text("UnregisterPermissionAgent path", path, OBJECT_PATH_CHARS)
        await self._api.access.unregister_agent(caller, path)

    @method(name="GetRoutes")
    @guarded
    def get_routes(self) -> "a{sv}":
        table = route_table(self._daemon.runtime.router)
        return {key: Variant("aa{sv}", [plain_dict(row) for row in rows])
                for key, rows in table.items()}

    @caller_method("SetCategoryRoute")
    async def set_category_route(self, caller, category: "s", port_uid: "s"):
        check_text("SetCategoryRoute category", category, IDENTIFIER_CHARS)
        check_text("SetCategoryRoute port_uid", port_uid, PORT_UID_CHARS)
        await self._users_own(caller, "SetCategoryRoute")
        self._daemon.runtime.router.prefer(category, port_uid)

    @caller_method("ResetRoutes")
    async def reset_routes(self, caller, app: "s") -> "u":
        check_text("ResetRoutes app", app, APP_ID_CHARS)
        if not app:
            raise InvalidArgument("ResetRoutes app must not be empty")
        await self._users_own(caller, "ResetRoutes")
        return self._daemon.runtime.router.reset(app)

    @caller_method("Record")
    async def record(self, caller, params: "a{sv}") -> "o":
        return await self._record(caller, params, None)

    @caller_method("RecordToFile")
    async def record_to_file(self, caller, params: "a{sv}", fd: "h") -> "o":
        return await self._record(caller, params, fd)

    async def _record(self, caller, params: dict, fd) -> str:
        """Start a recording (:class:`~audiopolicyd.recorder.recorders.Recorders`); in the
        foreground (``background`` false, SWML's ``record``) answer when it has ended."""
        try:
            recorders = self._api.recorders
            if recorders is None:
                raise NotSupported("this daemon does not record (no audio server connection)")
            checked = parse_params({key: variant.value for key, variant in params.items()})
            identity = await caller.identity()
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        recording = await recorders.record(caller.name, identity, checked, fd)
        if not checked.background:
            await recording.job.done.wait()
        return RECORDER_PATH_PREFIX + recording.control_id

    async def _users_own(self, caller, what: str) -> None:
        """Routes are the user's: refuse sandboxed callers and other users (as microphone
        decisions are refused them), with a message about routes."""
        try:
            await self._api.access.trusted(caller, what)
        except NotAllowed:
            raise NotAllowed(f"{what}: only the user's own unsandboxed processes may choose "
                             "routes") from None

    @dbus_property(access=PropertyAccess.READ, name="Recording")
    def recording(self) -> "a(ssbu)":
        return self._recording()

    def _recording(self) -> list:
        broker = self._daemon.microphone
        recording = broker.recording if broker is not None else ()
        return [[r.app_id, r.name, r.silenced, r.streams] for r in recording]

    # Why each silenced app records silence. A property of its own: ``Recording``'s struct
    # keeps its shape (and RecordingChanged its signature) for the indicators reading it.
    @dbus_property(access=PropertyAccess.READ, name="SilencedBy")
    def silenced_by(self) -> "a{sas}":
        return self._silenced_by()

    def _silenced_by(self) -> dict:
        broker = self._daemon.microphone
        recording = broker.recording if broker is not None else ()
        return {r.app_id: list(r.reasons) for r in recording if r.silenced}

    @signal(name="RecordingChanged")
    def recording_changed(self, recording) -> "a(ssbu)":
        return recording

    @method(name="Reload")
    @guarded
    def reload(self) -> "(bas)":
        applied = self._daemon.reload("D-Bus Reload")
        return [applied, self._problems()]

    @dbus_property(access=PropertyAccess.READ, name="Version")
    def version(self) -> "s":
        return __version__

    @dbus_property(access=PropertyAccess.READ, name="PolicyProblems")
    def policy_problems(self) -> "as":
        return self._problems()

    @dbus_property(access=PropertyAccess.READ, name="ServerConnected")
    def server_connected(self) -> "b":
        return self._daemon.runtime.connected.is_set()

    def _problems(self) -> list[str]:
        return [str(p) for p in self._daemon.store.problems]

    @signal(name="EffectsChanged")
    def effects_changed(self, streams) -> "aa{sv}":
        return streams

    @signal(name="StreamAdded")
    def stream_added(self, stream) -> "a{sv}":
        return stream

    @signal(name="StreamRemoved")
    def stream_removed(self, key) -> "s":
        return key

    @signal(name="PoliciesReloaded")
    def policies_reloaded(self, applied, problems) -> "bas":
        return [applied, problems]

    # -- hooks for the composition root -------------------------------------------------------

    def notify_effects(self, views) -> None:
        self.effects_changed([stream_dict(v) for v in views])

    def notify_streams(self, added, removed) -> None:
        for view in added:
            self.stream_added(stream_dict(view))
        for key in removed:
            self.stream_removed(key)

    def notify_server(self, connected: bool) -> None:
        self.emit_properties_changed({"ServerConnected": connected})

    def notify_recording(self, _recording) -> None:
        recording, silenced_by = self._recording(), self._silenced_by()
        changed = {}
        if recording != self._announced[0]:
            self.recording_changed(recording)
            changed["Recording"] = recording
        if silenced_by != self._announced[1]:
            changed["SilencedBy"] = silenced_by  # only a reason changed: no RecordingChanged
        self._announced = (recording, silenced_by)
        if changed:
            self.emit_properties_changed(changed)

    def notify_reload(self, applied: bool) -> None:
        problems = self._problems()
        self.policies_reloaded(applied, problems)
        self.emit_properties_changed({"PolicyProblems": problems})
