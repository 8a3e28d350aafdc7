"""Who may decide microphone permission, and who is asked when: the broker's side of a call.

The D-Bus adapter (:mod:`audiopolicyd.dbus`) hands every call whose caller matters to this
module with a :class:`Caller`; the rules are here, in the domain, not in the adapter:

* ``RegisterPermissionAgent``, ``UnregisterPermissionAgent`` and ``SetRecordPermission`` are
  allowed only to the user's own unsandboxed processes (the daemon's uid, not Flatpak, not
  snap; as polkit lets only the session's user register an authentication agent) and, for
  ``SetRecordPermission``, to the registered agent: ``NotAllowed`` otherwise;
* ``RequestRecordPermission`` on a session is allowed to its owner (the session layer checks
  the owner), sandboxed or not, and answers when the user has;
* a session whose category asks on activation asks once, on its first activation, as Apple
  asks the first time an app's session attempts to record (:meth:`MicrophoneAccess.activated`).
  Whether a category asks is a plugin's decision (``plugins/ask_microphone_on_activation.py``,
  enabled per category); the asking (the broker's agent round trip, once per session) is here.
* what D-Bus shows of the microphone: ``GetRecordPermissions``' entries
  (:meth:`MicrophoneAccess.record_permissions`) and the microphone's part of ``GetStatus``.

Errors (:mod:`audiopolicyd.errors`)::

    NotSupported      the daemon does not broker the microphone (--no-microphone-permission)
    InvalidArgument   an empty app id, an unknown decision
    NotAllowed        a caller that may not decide, a grant of an app id nobody vouches for
    AgentExists       another connection's agent is registered
    NoSuchAgent       the caller has no agent at that path
    StoreFailed       the permission store could not be written
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable, Protocol

from ..errors import InvalidArgument, NoSuchAgent, NotAllowed, NotSupported, StoreFailed
from ..identity import Identity, RecordingApp, caller_app, snap_name
from ..limits import quote
from .broker import MicrophoneBroker
from .stores import Decision, PermissionStoreError

logger = logging.getLogger(__name__)


class Caller(Protocol):
    """Who calls: what the D-Bus adapter knows of a method call's sender."""

    #: The caller's unique bus name (``:1.42``): it owns the sessions and agent it creates.
    name: str

    async def identity(self) -> Identity:
        """The caller's process identity from the bus's credentials (pid, uid), never from
        arguments."""


class SessionLike(Protocol):
    """What this module reads of an explicit session
    (:class:`audiopolicyd.appsessions.AppSession`)."""

    id: str
    name: str
    category: str
    identity: Identity


class MicrophoneAccess:
    """The microphone calls of D-Bus callers, decided against the broker.

    :param broker: microphone permission; None when recordings are not brokered (every call
        then fails with ``NotSupported``, the read side answers ``undetermined``)
    :param asks: ``asks(session) -> bool``: whether an app's session asks on its first
        activation (the ``ask_microphone_on_activation`` hook, which the composition root
        calls for the session's category)
    """

    def __init__(self, broker: MicrophoneBroker | None,
                 asks: Callable[[SessionLike], bool] = lambda session: False):
        self.broker = broker
        self.asks = asks
        self._apps: dict[str, RecordingApp] = {}  # session id -> its owner's app
        self._asked: set[str] = set()  # session ids that asked on activation
        self._tasks: set[asyncio.Task] = set()

    def _brokered(self) -> MicrophoneBroker:
        if self.broker is None:
            raise NotSupported("microphone permission is not brokered by this daemon (started "
                               "with --no-microphone-permission)")
        return self.broker

    # -- sessions -----------------------------------------------------------------------------

    def app_of(self, session: SessionLike) -> RecordingApp:
        """The app microphone permission knows a session's owner as (read once per session:
        the owner's process does not change)."""
        app = self._apps.get(session.id)
        if app is None:
            app = self._apps[session.id] = caller_app(session.identity, session.name)
        return app

    def decision(self, session: SessionLike) -> Decision:
        """A session's ``RecordPermission`` (``AVAudioSession.RecordPermission``)."""
        if self.broker is None:
            return Decision.UNDETERMINED
        return self.broker.decision(self.app_of(session).app_id)

    async def request(self, session: SessionLike) -> bool:
        """``RequestRecordPermission``: ask for the session's app, wait for the user.

        :returns: whether the app is granted
        :raises NotSupported:
        """
        decision = await self._brokered().request(self.app_of(session))
        return decision is Decision.GRANTED

    def activated(self, session: SessionLike) -> None:
        """An app's ``SetActive(true)`` left its session active: if its category asks
        (:attr:`asks`), ask once per session (the request runs on; the activation does not
        wait for it; a request that fails is logged). A listener of
        :attr:`AppSessions.on_app_activated
        <audiopolicyd.appsessions.AppSessions.on_app_activated>`."""
        if self.broker is None or session.id in self._asked or \
                not self.asks(session):
            return
        self._asked.add(session.id)
        app = self.app_of(session)
        if self.broker.decision(app.app_id) is Decision.UNDETERMINED:
            task = asyncio.ensure_future(self.broker.request(app))
            self._tasks.add(task)
            task.add_done_callback(self._asked_done)

    def _asked_done(self, task: asyncio.Task) -> None:
        """An ask on activation ended: a failure (the store, a bug) is logged, not lost with
        the task; the app stays undetermined and is asked again when it records."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            logger.error("asking for the microphone on activation failed: %s: %s",
                         type(exc).__name__, exc, exc_info=exc)

    def session_event(self, session: SessionLike, what: str, _payload: object) -> None:
        """A listener of :class:`~audiopolicyd.appsessions.AppSessions`: forget a removed
        session."""
        if what == "Removed":
            self._apps.pop(session.id, None)
            self._asked.discard(session.id)

    # -- the read side -----------------------------------------------------------------------

    def record_permissions(self) -> list[dict[str, tuple[str, object]]]:
        """``GetRecordPermissions``: every app with a decision, a request or a recording.

        Each entry, as ``name -> (D-Bus signature, value)``: App s, Name s, Decision s
        (granted | denied | undetermined), StoredIn s, Request s ('' | pending | prompting),
        RequestID s, Recording u (streams recording now), Streams as (their keys), Silenced b
        (every one of them records silence, for any reason), SilencedBy as (why:
        :class:`~audiopolicyd.microphone.broker.Silenced` values; empty while not silenced),
        Fought u (its streams killed for fighting the gate since the daemon started).
        """
        broker = self.broker
        if broker is None:
            return []
        recording = {r.app_id: r for r in broker.recording}
        names = {a: r.app.name for a, r in broker.requests.items()}
        names.update({a: r.name for a, r in recording.items()})
        out = []
        for app_id in sorted(set(broker.decisions) | set(broker.requests) | set(recording)
                             | set(broker.fought)):
            request = broker.requests.get(app_id)
            rec = recording.get(app_id)
            out.append({
                "App": ("s", app_id), "Name": ("s", names.get(app_id, "")),
                "Decision": ("s", str(broker.decision(app_id))),
                "StoredIn": ("s", broker.store.where if broker.store else ""),
                "Request": ("s", request.state if request else ""),
                "RequestID": ("s", request.id if request else ""),
                "Recording": ("u", rec.streams if rec else 0),
                "Streams": ("as", list(rec.keys) if rec else []),
                "Silenced": ("b", rec.silenced if rec else False),
                "Fought": ("u", broker.fought.get(app_id, 0)),
                "SilencedBy": ("as", list(rec.reasons) if rec else []),
            })
        return out

    def status(self) -> dict[str, tuple[str, object]]:
        """The microphone's part of ``GetStatus``, as ``name -> (D-Bus signature, value)``:
        MicrophonePermission b, PermissionStore s, PermissionAgent s (its bus name),
        MicrophoneDisabled b (the desktop's switch)."""
        broker = self.broker
        return {
            "MicrophonePermission": ("b", broker is not None),
            "PermissionStore": ("s", broker.store.where if broker and broker.store else ""),
            "PermissionAgent": ("s", broker.agent.owner if broker and broker.agent else ""),
            "MicrophoneDisabled": ("b", bool(broker and broker.disabled)),
        }

    # -- deciding -----------------------------------------------------------------------------

    async def trusted(self, caller: Caller, what: str) -> str:
        """Refuse sandboxed callers and other users.

        :returns: a description of the caller for the log
        :raises NotAllowed:
        """
        identity = await caller.identity()
        if identity.uid is None or identity.uid != os.getuid():
            raise NotAllowed(f"{what}: only the user the daemon runs for may do this")
        if identity.flatpak or (identity.pid and snap_name(identity.pid)):
            raise NotAllowed(f"{what}: a sandboxed app may request microphone permission, "
                             "never decide it")
        return f"{identity.exe or 'pid ' + str(identity.pid)} (pid {identity.pid}, {caller.name})"

    async def register_agent(self, caller: Caller, path: str) -> None:
        """``RegisterPermissionAgent``: the caller's object at *path* becomes the agent.

        :raises NotSupported:
        :raises NotAllowed:
        :raises AgentExists:
        """
        broker = self._brokered()
        await self.trusted(caller, "RegisterPermissionAgent")
        broker.register_agent(caller.name, path)

    async def unregister_agent(self, caller: Caller, path: str) -> None:
        """``UnregisterPermissionAgent``.

        :raises NotSupported:
        :raises NoSuchAgent: the caller has no agent at *path*
        """
        if not self._brokered().unregister_agent(caller.name, path):
            raise NoSuchAgent(f"{caller.name} has no agent registered at {quote(path)}")

    def peer_gone(self, name: str) -> None:
        """A connection left the bus: its agent, if any, is dropped."""
        if self.broker is not None:
            self.broker.unregister_agent(name)

    async def set_permission(self, caller: Caller, app_id: str, decision: str) -> None:
        """``SetRecordPermission``: store and apply a decision, for the agent or the user.

        :raises InvalidArgument: an empty app id, an unknown decision
        :raises NotSupported:
        :raises NotAllowed: a caller that is neither the agent nor trusted
            (:meth:`trusted`), a grant nobody vouches for
        :raises StoreFailed: the store could not be written
        """
        if not app_id:
            raise InvalidArgument("SetRecordPermission app_id must not be empty")
        try:
            chosen = Decision(decision)
        except ValueError:
            raise InvalidArgument(f"unknown decision {quote(decision)}: use granted, denied or "
                                  "undetermined") from None
        broker = self._brokered()
        if broker.agent is not None and broker.agent.owner == caller.name:
            who = f"agent {caller.name}"
        else:
            who = await self.trusted(caller, "SetRecordPermission")
        try:
            await broker.decide(app_id, chosen, who)
        except PermissionStoreError as exc:
            raise StoreFailed(str(exc)) from None
