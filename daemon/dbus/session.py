"""``io.github.audiopolicyd.AudioPolicy1.Session``: one app's audio session, one object each.

Only the session's owner may call its methods: the session layer
(:meth:`audiopolicyd.appsessions.AppSessions.get`) decides that, when the dispatcher resolves
the object a call is for (``NotOwner``, ``NoSuchSession``).

(No ``from __future__ import annotations`` here: dbus-fast reads D-Bus signatures from the
annotations at run time.)
"""

import logging
from typing import Any

from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, signal

from ..errors import NotSupported
from ..limits import IDENTIFIER_CHARS, OPTIONS_ITEMS, PORT_UID_CHARS, check_text, check_texts
from ..names import SESSION_IFACE
from ..route import Route
from .convert import (
    category_arguments, plain_dict, ports_list, route_change_dict, route_dict,
    session_properties,
)
from .service import caller_method

logger = logging.getLogger(__name__)


class SessionInterface(ServiceInterface):
    """``io.github.audiopolicyd.AudioPolicy1.Session``.

    :param session: the :class:`~audiopolicyd.appsessions.AppSession` (None only to
        introspect)
    :param api: the :class:`~audiopolicyd.dbus.DBusApi`: the session layer, the sessions'
        routes (:class:`~audiopolicyd.sessionroutes.SessionRoutes`, None: no routing) and
        microphone access
    """

    def __init__(self, session, api: Any = None):
        super().__init__(SESSION_IFACE)
        self.session = session
        self._api = api
        self._last_permission = self.record_permission_value if session is not None else ""

    def permissions_changed(self) -> None:
        """Emit ``PropertiesChanged`` for ``RecordPermission`` when it changed."""
        value = self.record_permission_value
        if value != self._last_permission:
            self._last_permission = value
            self.emit_properties_changed({"RecordPermission": value})

    @caller_method("SetCategory")
    def set_category(self, caller, category: "s", mode: "s", options: "as"):
        category_arguments(category, mode, options)
        self._api.sessions.set_category(self.session, category, mode, options)

    @caller_method("SetActive")
    def set_active(self, caller, active: "b", options: "as") -> "s":
        check_texts("SetActive options", options, OPTIONS_ITEMS, IDENTIFIER_CHARS)
        return self._api.sessions.set_active(self.session, active, options)

    @caller_method("Close")
    def close(self, caller):
        self._api.sessions.remove(self.session, "closed by its owner")

    @caller_method("SetPreferredInput")
    def set_preferred_input(self, caller, uid: "s"):
        check_text("SetPreferredInput uid", uid, PORT_UID_CHARS)
        self._routes().set_preferred_input(self.session, uid)

    @caller_method("OverrideOutputAudioPort")
    def override_output_audio_port(self, caller, port: "s"):
        check_text("OverrideOutputAudioPort port", port, IDENTIFIER_CHARS)
        self._routes().override_output(self.session, port)

    def _routes(self):
        routes = self._api.routes
        if routes is None:
            raise NotSupported("this daemon does not route (no router)")
        return routes

    @caller_method("RequestRecordPermission")
    async def request_record_permission(self, caller) -> "b":
        return await self._api.access.request(self.session)

    @dbus_property(access=PropertyAccess.READ, name="RecordPermission")
    def record_permission(self) -> "s":
        return self.record_permission_value

    @property
    def record_permission_value(self) -> str:
        """``undetermined`` | ``denied`` | ``granted`` (``AVAudioSession.RecordPermission``)."""
        if self._api is None:
            return "undetermined"
        return str(self._api.access.decision(self.session))

    @dbus_property(access=PropertyAccess.READ, name="Category")
    def category(self) -> "s":
        return self.session.category

    @dbus_property(access=PropertyAccess.READ, name="Mode")
    def mode(self) -> "s":
        return self.session.mode

    @dbus_property(access=PropertyAccess.READ, name="Options")
    def options(self) -> "as":
        return sorted(self.session.options)

    @dbus_property(access=PropertyAccess.READ, name="Active")
    def active(self) -> "b":
        return self.session.active

    @dbus_property(access=PropertyAccess.READ, name="State")
    def state(self) -> "s":
        return self.session.state

    @dbus_property(access=PropertyAccess.READ, name="Name")
    def name(self) -> "s":
        return self.session.name

    @dbus_property(access=PropertyAccess.READ, name="Owner")
    def owner(self) -> "s":
        return self.session.owner

    @dbus_property(access=PropertyAccess.READ, name="ProcessID")
    def process_id(self) -> "u":
        return self.session.identity.pid or 0

    @dbus_property(access=PropertyAccess.READ, name="AppID")
    def app_id(self) -> "s":
        return self.session.identity.key

    @dbus_property(access=PropertyAccess.READ, name="OtherAudioPlaying")
    def other_audio_playing(self) -> "b":
        return self.session.other_audio_playing

    @dbus_property(access=PropertyAccess.READ, name="SecondaryAudioShouldBeSilencedHint")
    def secondary_hint(self) -> "b":
        return self.session.secondary_hint

    @dbus_property(access=PropertyAccess.READ, name="CurrentRoute")
    def current_route(self) -> "a{sv}":
        routes = self._api.routes if self._api is not None else None
        return route_dict(routes.current_route(self.session) if routes is not None else Route())

    @dbus_property(access=PropertyAccess.READ, name="AvailableInputs")
    def available_inputs(self) -> "aa{sv}":
        routes = self._api.routes if self._api is not None else None
        return ports_list(routes.available_inputs(self.session) if routes is not None else ())

    @signal(name="RouteChanged")
    def route_changed(self, info) -> "a{sv}":
        return info

    @signal(name="InterruptionBegan")
    def interruption_began(self, info) -> "a{sv}":
        return info

    @signal(name="InterruptionEnded")
    def interruption_ended(self, info) -> "a{sv}":
        return info

    @signal(name="DidBecomeActive")
    def did_become_active(self, context) -> "a{sv}":
        return context

    @signal(name="DidBecomeInactive")
    def did_become_inactive(self, context) -> "a{sv}":
        return context

    @signal(name="SilenceSecondaryAudioHint")
    def silence_secondary_audio_hint(self, what) -> "s":
        return what

    @signal(name="MediaServicesWereLost")
    def media_services_were_lost(self) -> None:
        return None

    @signal(name="MediaServicesWereReset")
    def media_services_were_reset(self) -> None:
        return None

    def emit(self, what: str, payload) -> None:
        """Send a core event (:mod:`audiopolicyd.appsessions`) as its D-Bus signal, or as
        ``PropertiesChanged``."""
        if what == "PropertiesChanged":
            self.emit_properties_changed(session_properties(payload))
            return
        send = {
            "RouteChanged": lambda: self.route_changed(route_change_dict(
                payload["reason"], payload["previous_route"])),
            "InterruptionBegan": lambda: self.interruption_began(plain_dict(payload)),
            "InterruptionEnded": lambda: self.interruption_ended(plain_dict(payload)),
            "DidBecomeActive": lambda: self.did_become_active(plain_dict(payload)),
            "DidBecomeInactive": lambda: self.did_become_inactive(plain_dict(payload)),
            "SilenceSecondaryAudioHint": lambda: self.silence_secondary_audio_hint(
                payload["type"]),
            "MediaServicesWereLost": self.media_services_were_lost,
            "MediaServicesWereReset": self.media_services_were_reset,
        }.get(what)
        if send is not None:
            send()
