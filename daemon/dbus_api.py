"""The D-Bus adapter: model <-> D-Bus types, errors -> named D-Bus errors. No logic.

Bus name ``io.github.audiopolicyd.AudioPolicy1``; the Manager lives at
``/io/github/audiopolicyd/AudioPolicy1`` with interface
``io.github.audiopolicyd.AudioPolicy1.Manager``. Errors are
``io.github.audiopolicyd.AudioPolicy1.Error.<Name>``. Every member is documented in
docs/dbus-api.md.

Every string and array a client sends is checked against its bound
(:mod:`audiopolicyd.limits`) before anything else is done with it: ``Error.InvalidArgument``
beyond it.

(No ``from __future__ import annotations`` here: dbus-fast reads D-Bus signatures from the
annotations at run time.)
"""

import asyncio
import functools
import logging
import os
from typing import Any, Callable

from dbus_fast import DBusError, Message, MessageType, Variant
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method, signal

from . import __version__
from .appsessions import SessionError
from .identity import caller_app, snap_name
from .limits import (
    AGENT_DETAILS_ITEMS, APP_ID_CHARS, HINT_KEY_CHARS, HINTS_ITEMS, IDENTIFIER_CHARS, NAME_CHARS,
    OBJECT_PATH_CHARS, OPTIONS_ITEMS, TARGET_CHARS, InvalidArgument, check_text, check_texts,
    quote,
)
from .microphone.broker import AgentExists, AgentFailed, MicrophoneBroker, NotGrantable
from .microphone.stores import Decision, PermissionStoreError

logger = logging.getLogger(__name__)

BUS_NAME = "io.github.audiopolicyd.AudioPolicy1"
OBJECT_PATH = "/io/github/audiopolicyd/AudioPolicy1"
MANAGER_IFACE = BUS_NAME + ".Manager"
AGENT_IFACE = BUS_NAME + ".PermissionAgent"
ERROR_PREFIX = BUS_NAME + ".Error."
#: D-Bus errors that mean the agent's connection is gone.
_GONE_ERRORS = {"org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Disconnected",
                "org.freedesktop.DBus.Error.ServiceUnknown",
                "org.freedesktop.DBus.Error.NameHasNoOwner"}


def error(name: str, message: str) -> DBusError:
    """A named D-Bus error: ``io.github.audiopolicyd.AudioPolicy1.Error.<name>``."""
    return DBusError(ERROR_PREFIX + name, message)


#: The hints ``CreateSession`` reads: D-Bus type and bound (characters, or items of ``as``).
SESSION_HINTS = {"Name": ("s", NAME_CHARS), "Category": ("s", IDENTIFIER_CHARS),
                 "Mode": ("s", IDENTIFIER_CHARS), "Options": ("as", OPTIONS_ITEMS)}


def session_hints(hints: dict[str, Variant]) -> dict[str, Any]:
    """``CreateSession``'s ``a{sv}`` as plain values, checked against their bounds.

    Known hints (:data:`SESSION_HINTS`) must have their type; other keys are ignored (a newer
    client may send hints this daemon does not know), but count against
    :data:`~audiopolicyd.limits.HINTS_ITEMS` and :data:`~audiopolicyd.limits.HINT_KEY_CHARS`.

    :returns: ``{"Name": str, "Category": str, "Mode": str, "Options": [str]}``, the given ones
    :raises InvalidArgument: too many hints, a long key, a known hint of another type or
        beyond its bound
    """
    if len(hints) > HINTS_ITEMS:
        raise InvalidArgument(f"CreateSession hints has {len(hints)} entries; the limit is "
                              f"{HINTS_ITEMS}")
    out: dict[str, Any] = {}
    for key, variant in hints.items():
        check_text("a CreateSession hint's key", key, HINT_KEY_CHARS)
        if key not in SESSION_HINTS:
            continue
        signature, bound = SESSION_HINTS[key]
        argument = f"CreateSession hint {key}"
        if variant.signature != signature:
            raise InvalidArgument(f"{argument} must be of type {signature}, not "
                                  f"{quote(variant.signature)}")
        out[key] = (check_text(argument, variant.value, bound) if signature == "s"
                    else check_texts(argument, variant.value, bound, IDENTIFIER_CHARS))
    return out


def category_arguments(category: str, mode: str, options: list[str]) -> None:
    """Check ``SetCategory``'s arguments against their bounds.

    :raises InvalidArgument: beyond a bound
    """
    check_text("SetCategory category", category, IDENTIFIER_CHARS)
    check_text("SetCategory mode", mode, IDENTIFIER_CHARS)
    check_texts("SetCategory options", options, OPTIONS_ITEMS, IDENTIFIER_CHARS)


def _guarded(func: Callable) -> Callable:
    """Turn any unexpected exception into a named ``Error.Internal``: never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DBusError:
            raise
        except Exception as exc:
            logger.exception("D-Bus method %s failed", func.__name__)
            raise error("Internal", f"{type(exc).__name__}: {exc}") from None

    return wrapper


def stream_dict(view) -> dict[str, Variant]:
    """A :class:`~audiopolicyd.runtime.StreamView` as ``a{sv}``.

    Keys: Key s, Kind s, Index u, Application s, Role s, Category s, Rule s, Session s,
    Effect s, Gain d (linear), Muted b, Corked b, Paused b, Volume au (raw, 65536 = 100 %),
    Reasons as.
    """
    s, e = view.stream, view.effect
    return {
        "Key": Variant("s", s.key),
        "Kind": Variant("s", s.kind.value),
        "Index": Variant("u", s.index),
        "Application": Variant("s", s.app_name),
        "Role": Variant("s", s.properties.get("media.role", "")),
        "Category": Variant("s", view.category),
        "Rule": Variant("s", view.rule),
        "Session": Variant("s", view.session),
        "Effect": Variant("s", e.summary),
        "Gain": Variant("d", e.gain),
        "Muted": Variant("b", s.muted),
        "Corked": Variant("b", s.corked),
        "Paused": Variant("b", e.pause),
        "Volume": Variant("au", list(s.volume)),
        "Reasons": Variant("as", [str(r) for r in e.reasons]),
    }


class ManagerInterface(ServiceInterface):
    """``io.github.audiopolicyd.AudioPolicy1.Manager``: the daemon's read side and reload.

    :param daemon: the composition root (:class:`audiopolicyd.app.Daemon`): gives
        ``runtime``, ``store``, ``status()`` and ``reload()``
    """

    def __init__(self, daemon: Any):
        super().__init__(MANAGER_IFACE)
        self._daemon = daemon
        self._announced: tuple[list, dict] = ([], {})  # Recording, SilencedBy last announced

    @method(name="GetStreams")
    @_guarded
    def get_streams(self) -> "aa{sv}":
        return [stream_dict(v) for v in self._daemon.runtime.views()]

    @method(name="GetStatus")
    @_guarded
    def get_status(self) -> "a{sv}":
        return {k: Variant(sig, v) for k, (sig, v) in self._daemon.status().items()}

    @method(name="CreateSession")
    def create_session(self, hints: "a{sv}") -> "o":
        raise error("Internal", "dispatched by the caller-aware handler")

    @method(name="Explain")
    @_guarded
    def explain(self, target: "s") -> "a{sv}":
        try:
            check_text("Explain target", target, TARGET_CHARS)
        except InvalidArgument as exc:
            raise error(exc.name, str(exc)) from None
        return plain_dict(self._daemon.explain(target))

    @method(name="GetRecordPermissions")
    @_guarded
    def get_record_permissions(self) -> "aa{sv}":
        return [{k: Variant(sig, v) for k, (sig, v) in entry.items()}
                for entry in self._daemon.record_permissions()]

    @method(name="SetRecordPermission")
    def set_record_permission(self, app_id: "s", decision: "s"):
        raise error("Internal", "dispatched by the caller-aware handler")

    @method(name="RegisterPermissionAgent")
    def register_permission_agent(self, path: "o"):
        raise error("Internal", "dispatched by the caller-aware handler")

    @method(name="UnregisterPermissionAgent")
    def unregister_permission_agent(self, path: "o"):
        raise error("Internal", "dispatched by the caller-aware handler")

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
    @_guarded
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


# -- explicit sessions ---------------------------------------------------------------------------

SESSION_IFACE = BUS_NAME + ".Session"
SESSION_PATH_PREFIX = OBJECT_PATH + "/session/"


def plain_dict(payload) -> dict:
    """A ``{str: python value}`` payload as ``a{sv}``."""
    out = {}
    for key, value in payload.items():
        if isinstance(value, bool):
            out[key] = Variant("b", value)
        elif isinstance(value, int):
            out[key] = Variant("x", value)
        elif isinstance(value, float):
            out[key] = Variant("d", value)
        elif isinstance(value, (list, tuple, set, frozenset)):
            out[key] = Variant("as", [str(v) for v in value])
        else:
            out[key] = Variant("s", str(value))
    return out


class SessionInterface(ServiceInterface):
    """``io.github.audiopolicyd.AudioPolicy1.Session``: one app's audio session.

    Methods are dispatched by :class:`CallerAwareCalls` (only the owner may call them); the
    declarations here give introspection. Properties and signals are served from here.
    """

    def __init__(self, session, broker: MicrophoneBroker | None = None):
        super().__init__(SESSION_IFACE)
        self.session = session
        self.broker = broker
        #: The app microphone permission knows the session's owner as.
        self.app = caller_app(session.identity, session.name) if session is not None else None
        self.asked = False  # asked automatically on first activation in a recording category
        self._last_permission = self.record_permission_value

    def permissions_changed(self) -> None:
        """Emit ``PropertiesChanged`` for ``RecordPermission`` when it changed."""
        value = self.record_permission_value
        if value != self._last_permission:
            self._last_permission = value
            self.emit_properties_changed({"RecordPermission": value})

    @method(name="SetCategory")
    def set_category(self, category: "s", mode: "s", options: "as"):
        raise error("Internal", "dispatched by the caller-aware handler")

    @method(name="SetActive")
    def set_active(self, active: "b", options: "as") -> "s":
        raise error("Internal", "dispatched by the caller-aware handler")

    @method(name="Close")
    def close(self):
        raise error("Internal", "dispatched by the caller-aware handler")

    @method(name="RequestRecordPermission")
    def request_record_permission(self) -> "b":
        raise error("Internal", "dispatched by the caller-aware handler")

    @dbus_property(access=PropertyAccess.READ, name="RecordPermission")
    def record_permission(self) -> "s":
        return self.record_permission_value

    @property
    def record_permission_value(self) -> str:
        """``undetermined`` | ``denied`` | ``granted`` (``AVAudioSession.RecordPermission``)."""
        if self.broker is None or self.app is None:
            return "undetermined"
        return str(self.broker.decision(self.app.app_id))

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
            self.emit_properties_changed(dict(payload))
            return
        send = {
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


class CallerAwareCalls:
    """Dispatches the calls whose caller matters: ``CreateSession`` and every Session method.

    dbus-fast method handlers do not see the sender, so these go through a low-level message
    handler: the caller's unique name owns the sessions it creates, its pid and uid come from
    the bus (``GetConnectionCredentials``), never from arguments. Wrong signatures are left to
    dbus-fast, which answers ``org.freedesktop.DBus.Error.UnknownMethod``.

    Microphone permission (:mod:`audiopolicyd.microphone.broker`) goes through here too:
    ``RegisterPermissionAgent``, ``UnregisterPermissionAgent`` and ``SetRecordPermission`` are
    allowed only to the user's own unsandboxed processes (same uid as the daemon, not Flatpak,
    not snap) and, for ``SetRecordPermission``, to the registered agent; ``NotAllowed``
    otherwise. ``RequestRecordPermission`` on a session is allowed to its owner, sandboxed or
    not, and answers when the user has.

    :param bus: the daemon's connection
    :param sessions: the :class:`~audiopolicyd.appsessions.AppSessions`
    :param identify: ``(pid, uid) -> Identity`` (:func:`audiopolicyd.identity.identify`)
    :param broker: microphone permission, None when recordings are not brokered
    :param records: ``category -> bool``: whether a category records (policy ``records``)
    """

    def __init__(self, bus, sessions, identify, broker: MicrophoneBroker | None = None,
                 records: Callable[[str], bool] = lambda category: False):
        self.bus = bus
        self.sessions = sessions
        self.identify = identify
        self.broker = broker
        self.records = records
        self.objects: dict[str, SessionInterface] = {}
        self._tasks: set = set()
        sessions.listeners.append(self._on_session_event)
        if broker is not None:
            broker.caller = self
            broker.on_decisions.append(self._permissions_changed)

    async def start(self) -> None:
        self.bus.add_message_handler(self._on_message)
        await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=["type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"]))

    def _on_message(self, msg: Message):
        if msg.message_type == MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.signature == "sss" \
                    and msg.sender == "org.freedesktop.DBus":
                name, old, new = msg.body
                if name.startswith(":") and old and not new:
                    self.sessions.drop_owner(name)
                    if self.broker is not None:
                        self.broker.unregister_agent(name)
            return None
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if msg.path == OBJECT_PATH and msg.interface == MANAGER_IFACE:
            handler = {("CreateSession", "a{sv}"): self._create,
                       ("RegisterPermissionAgent", "o"): self._register_agent,
                       ("UnregisterPermissionAgent", "o"): self._unregister_agent,
                       ("SetRecordPermission", "ss"): self._set_permission,
                       }.get((msg.member, msg.signature))
            if handler is None:
                return None
            self._spawn(self._answer(msg, handler))
            return True
        if msg.interface != SESSION_IFACE or not (msg.path or "").startswith(SESSION_PATH_PREFIX):
            return None
        expected = {"SetCategory": "ssas", "SetActive": "bas", "Close": "",
                    "RequestRecordPermission": ""}.get(msg.member)
        if expected is None or msg.signature != expected:
            return None
        session_id = msg.path[len(SESSION_PATH_PREFIX):]
        try:
            session = self.sessions.get(session_id, msg.sender)
            if msg.member == "SetCategory":
                category_arguments(*msg.body)
                self.sessions.set_category(session, msg.body[0], msg.body[1], msg.body[2])
                return Message.new_method_return(msg)
            if msg.member == "RequestRecordPermission":
                self._spawn(self._answer(msg, lambda m: self._request_permission(m, session)))
                return True
            if msg.member == "SetActive":
                check_texts("SetActive options", msg.body[1], OPTIONS_ITEMS, IDENTIFIER_CHARS)
                result = self.sessions.set_active(session, msg.body[0], msg.body[1])
                if msg.body[0] and result == "active":
                    self._auto_ask(session)
                return Message.new_method_return(msg, "s", [result])
            self.sessions.remove(session, "closed by its owner")
            return Message.new_method_return(msg)
        except (SessionError, InvalidArgument) as exc:
            return Message.new_error(msg, ERROR_PREFIX + exc.name, str(exc))
        except Exception as exc:  # never a traceback on the bus
            logger.exception("session call %s failed", msg.member)
            return Message.new_error(msg, ERROR_PREFIX + "Internal",
                                     f"{type(exc).__name__}: {exc}")

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Message, handler) -> None:
        """Run ``handler(msg) -> reply`` and send its reply; errors become named errors."""
        try:
            reply = await handler(msg)
        except (SessionError, InvalidArgument) as exc:
            reply = Message.new_error(msg, ERROR_PREFIX + exc.name, str(exc))
        except DBusError as exc:
            reply = Message.new_error(msg, exc.type, exc.text)
        except Exception as exc:
            logger.exception("%s failed", msg.member)
            reply = Message.new_error(msg, ERROR_PREFIX + "Internal",
                                      f"{type(exc).__name__}: {exc}")
        if self.bus.connected:
            self.bus.send(reply)

    async def _caller(self, msg: Message):
        """The caller's identity, from the bus's credentials for its connection."""
        reply = await self.bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="GetConnectionCredentials",
            signature="s", body=[msg.sender]))
        creds = reply.body[0] if reply.message_type == MessageType.METHOD_RETURN else {}
        pid = creds["ProcessID"].value if "ProcessID" in creds else None
        uid = creds["UnixUserID"].value if "UnixUserID" in creds else None
        return self.identify(pid, uid)

    async def _create(self, msg: Message) -> Message:
        hints = session_hints(msg.body[0])
        identity = await self._caller(msg)
        session = self.sessions.create(msg.sender, identity, hints)
        path = SESSION_PATH_PREFIX + session.id
        self.objects[session.id] = SessionInterface(session, self.broker)
        self.bus.export(path, self.objects[session.id])
        return Message.new_method_return(msg, "o", [path])

    # -- microphone permission ----------------------------------------------------------------

    def _broker(self) -> MicrophoneBroker:
        if self.broker is None:
            raise error("NotSupported", "microphone permission is not brokered by this daemon "
                                        "(started with --no-microphone-permission)")
        return self.broker

    async def _check_trusted(self, msg: Message, what: str) -> str:
        """Refuse sandboxed callers and other users; returns a description of the caller."""
        identity = await self._caller(msg)
        if identity.uid is None or identity.uid != os.getuid():
            raise error("NotAllowed", f"{what}: only the user the daemon runs for may do this")
        if identity.flatpak or (identity.pid and snap_name(identity.pid)):
            raise error("NotAllowed", f"{what}: a sandboxed app may request microphone "
                                      "permission, never decide it")
        return f"{identity.exe or 'pid ' + str(identity.pid)} (pid {identity.pid}, {msg.sender})"

    async def _register_agent(self, msg: Message) -> Message:
        check_text("RegisterPermissionAgent path", msg.body[0], OBJECT_PATH_CHARS)
        broker = self._broker()
        await self._check_trusted(msg, "RegisterPermissionAgent")
        try:
            broker.register_agent(msg.sender, msg.body[0])
        except AgentExists as exc:
            raise error("AgentExists", str(exc)) from None
        return Message.new_method_return(msg)

    async def _unregister_agent(self, msg: Message) -> Message:
        check_text("UnregisterPermissionAgent path", msg.body[0], OBJECT_PATH_CHARS)
        if not self._broker().unregister_agent(msg.sender, msg.body[0]):
            raise error("NoSuchAgent", f"{msg.sender} has no agent registered at "
                                       f"{quote(msg.body[0])}")
        return Message.new_method_return(msg)

    async def _set_permission(self, msg: Message) -> Message:
        app_id, decision = msg.body
        check_text("SetRecordPermission app_id", app_id, APP_ID_CHARS)
        check_text("SetRecordPermission decision", decision, IDENTIFIER_CHARS)
        if not app_id:
            raise InvalidArgument("SetRecordPermission app_id must not be empty")
        try:
            decision = Decision(decision)
        except ValueError:
            raise InvalidArgument(f"unknown decision {quote(decision)}: use granted, denied or "
                                  "undetermined") from None
        broker = self._broker()
        if broker.agent is not None and broker.agent.owner == msg.sender:
            who = f"agent {msg.sender}"
        else:
            who = await self._check_trusted(msg, "SetRecordPermission")
        try:
            await broker.decide(app_id, decision, who)
        except PermissionStoreError as exc:
            raise error("StoreFailed", str(exc)) from None
        except NotGrantable as exc:
            raise error("NotAllowed", str(exc)) from None
        return Message.new_method_return(msg)

    async def _request_permission(self, msg: Message, session) -> Message:
        obj = self.objects.get(session.id)
        broker = self._broker()
        decision = await broker.request(obj.app if obj else caller_app(session.identity))
        return Message.new_method_return(msg, "b", [decision is Decision.GRANTED])

    def _auto_ask(self, session) -> None:
        """A session in a category that records asks once, on its first activation (Apple:
        the first time the app's session attempts to record)."""
        obj = self.objects.get(session.id)
        if self.broker is None or obj is None or obj.asked or not self.records(session.category):
            return
        obj.asked = True
        if self.broker.decision(obj.app.app_id) is Decision.UNDETERMINED:
            self._spawn(self.broker.request(obj.app))

    def _permissions_changed(self) -> None:
        for obj in self.objects.values():
            obj.permissions_changed()

    # -- the agent side (audiopolicyd.microphone.broker.AgentCaller) ----------------------------------

    async def ask(self, agent, request_id: str, app_id: str, info: dict) -> str:
        """Call the agent's ``RequestRecordPermission``; its decision string.

        :raises AgentFailed: on an error reply (``gone`` when its connection is)
        """
        body_info = {k: Variant({bool: "b", int: "u"}.get(type(v), "s"),
                                v if isinstance(v, (bool, int)) else str(v))
                     for k, v in info.items()}
        try:
            reply = await self.bus.call(Message(
                destination=agent.owner, path=agent.path, interface=AGENT_IFACE,
                member="RequestRecordPermission", signature="ssa{sv}",
                body=[request_id, app_id, body_info]))
        except (OSError, EOFError) as exc:
            raise AgentFailed(str(exc), gone=True) from None
        if reply is None:
            raise AgentFailed("no reply", gone=True)
        if reply.message_type == MessageType.ERROR:
            detail = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise AgentFailed(f"{reply.error_name}: {quote(detail)}",
                              gone=reply.error_name in _GONE_ERRORS)
        if reply.signature != "sa{sv}":
            raise AgentFailed(f"reply of signature {quote(reply.signature)}, not 'sa{{sv}}'")
        try:
            check_text("the agent's decision", reply.body[0], IDENTIFIER_CHARS)
            if len(reply.body[1]) > AGENT_DETAILS_ITEMS:
                raise InvalidArgument(f"the agent's details has {len(reply.body[1])} entries; "
                                      f"the limit is {AGENT_DETAILS_ITEMS}")
        except InvalidArgument as exc:
            raise AgentFailed(str(exc)) from None
        return reply.body[0]

    def cancel(self, agent, request_id: str) -> None:
        """Send the agent ``Cancel(request_id)`` (its reply is not awaited)."""
        if self.bus.connected:
            self.bus.send(Message(destination=agent.owner, path=agent.path,
                                  interface=AGENT_IFACE, member="Cancel", signature="s",
                                  body=[request_id]))

    def _on_session_event(self, session, what: str, payload) -> None:
        obj = self.objects.get(session.id)
        if obj is None:
            return
        if what == "Removed":
            del self.objects[session.id]
            self.bus.unexport(SESSION_PATH_PREFIX + session.id)
            return
        obj.emit(what, payload)
