"""Explicit sessions: what apps declare over D-Bus, with AVAudioSession's semantics.

An app creates a session, sets its category, mode and options, activates and deactivates it,
and is told of interruptions. No D-Bus here: :mod:`audiopolicyd.dbus` adapts this module,
:mod:`audiopolicyd.runtime` feeds it the sessions after every decision.

Semantics (Apple's AVAudioSession where it speaks; Android's audio focus where it is better):

* ``set_category``: unknown names are errors; an option the category's policy does not take is
  ``IncompatibleCategoryOption``; a mode the category does not take falls back to ``default``,
  as Apple does.
* ``set_active(True)``: fails with ``InsufficientPriority`` (``CannotInterruptOthers`` for a
  mixable session) while a higher-priority active session would interrupt it, unless the caller
  passes ``delayIfBusy``: then it returns ``delayed`` and activates when it can (Android's
  delayed focus grant), with ``DidBecomeActive`` (reason ``delayedActivation``).
* Activation interrupts what the policies say it interrupts; an interrupted explicit session is
  deactivated and gets ``InterruptionBegan`` (and ``DidBecomeInactive``, source ``system``).
* When the interruption ends, ``InterruptionEnded`` is always sent (unlike iOS); its
  ``should_resume`` is true only when every interrupter ended with notification (an explicit
  session deactivated with ``notifyOthersOnDeactivation``, or an app without a session whose
  streams stopped) and the interruption lasted at most :attr:`AppSessions.resume_limit` seconds.
* The device a session played on went (:meth:`AppSessions.route_disconnected`, Apple's
  ``prefersInterruptionOnRouteDisconnect``): ``InterruptionBegan`` with reason
  ``routeDisconnected``, deactivated; no ``InterruptionEnded`` follows.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from . import engine
from .errors import (  # noqa: F401  (SessionError: the root of what this module raises)
    CannotInterruptOthers, IncompatibleCategoryOption, InsufficientPriority, NoSuchSession,
    NotOwner, SessionError, TooManySessions, UnknownCategory, UnknownMode, UnknownOption,
)
from .identity import Identity, stream_belongs
from .limits import quote
from .model import CATEGORIES, MODES, OPTIONS, Session
from .pluginmanager import PluginManager
from .policy import PolicySet
from .route import OVERRIDE_NONE

logger = logging.getLogger(__name__)

#: Options of ``SetActive``, as AVAudioSession.SetActiveOptions plus Android's delay.
ACTIVE_OPTIONS = ("notifyOthersOnDeactivation", "delayIfBusy")
#: Sessions one D-Bus connection may hold at once.
MAX_SESSIONS_PER_CLIENT = 16
#: Interruptions longer than this end with ``should_resume`` false, in seconds.
RESUME_LIMIT = 600.0
#: Categories that take an output override (``OverrideOutputAudioPort``): Apple's
#: ``overrideOutputAudioPort(_:)`` acts on ``playAndRecord`` alone.
OVERRIDE_CATEGORIES = ("playAndRecord",)


@dataclass(eq=False)
class AppSession:
    """One explicit session (mutable: its owner changes it).

    :param id: short id, also the last component of its object path (``s1``)
    :param owner: the D-Bus unique name of the connection that created it
    :param identity: the owner's process identity (from the bus and /proc)
    :param name: a human name from the creation hints
    :param override: the output override the router applies, ``none`` or ``speaker``
        (``OverrideOutputAudioPort``; :mod:`audiopolicyd.sessionroutes`); back to ``none`` when
        the category changes
    :param preferred_input: the uid of the input port the router prefers for the session's
        recordings, '' for none (``SetPreferredInput``)
    """

    id: str
    owner: str
    identity: Identity
    name: str = ""
    category: str = "soloAmbient"
    mode: str = "default"
    options: frozenset[str] = frozenset()
    active: bool = False
    delayed: bool = False
    seq: int = 0
    interrupted_by: set[str] = field(default_factory=set)
    interrupted_at: float = 0.0
    other_audio_playing: bool = False
    secondary_hint: bool = False
    override: str = OVERRIDE_NONE
    preferred_input: str = ""

    @property
    def session_id(self) -> str:
        """The id the engine knows it by: ``session:<id>``."""
        return f"session:{self.id}"

    @property
    def state(self) -> str:
        """``active`` | ``delayed`` | ``interrupted`` | ``inactive``."""
        if self.active:
            return "active"
        if self.delayed:
            return "delayed"
        return "interrupted" if self.interrupted_by else "inactive"

    def model(self, streams: Iterable[str] = ()) -> Session:
        """The engine's view of the session."""
        return Session(id=self.session_id, app_key=self.identity.key, category=self.category,
                       mode=self.mode, options=self.options, active=self.active, seq=self.seq,
                       streams=tuple(streams), explicit=True,
                       rule=f"session {self.id} of {self.owner}")


Listener = Callable[[AppSession, str, Mapping[str, Any]], None]


class AppSessions:
    """Every explicit session, and the rules above.

    :param policies: returns the policy set in force
    :param seq: the activation counter shared with the implicit sessions
    :param on_change: called when a decision must be taken again (schedule a reconcile)
    :param pm: the plugin manager (mixability and interactions by the plugins the policies
        enable: Apple's category options); None: the policies alone
    """

    def __init__(self, policies: Callable[[], PolicySet], seq: itertools.count,
                 on_change: Callable[[], None] = lambda: None,
                 pm: PluginManager | None = None):
        self.policies = policies
        self.pm = pm
        self.seq = seq
        self.on_change = on_change
        self.sessions: dict[str, AppSession] = {}
        self.resume_limit = RESUME_LIMIT
        #: ``listener(session, what, payload)``: ``what`` is a signal name
        #: (``InterruptionBegan``...), ``PropertiesChanged`` or ``Removed``.
        self.listeners: list[Listener] = []
        #: ``listener(session)`` after an app's ``set_active(True)`` left its session active
        #: (also when it already was): asking for the microphone hangs on it.
        self.on_app_activated: list[Callable[[AppSession], None]] = []
        #: Changes whenever a session is created or removed (stream ownership may change).
        self.version = 0
        self._ids = itertools.count(1)
        self._notified: set[str] = set()  # session ids that deactivated with notification
        self._current: list[Session] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def create(self, owner: str, identity: Identity, hints: Mapping[str, Any]) -> AppSession:
        """A new inactive session in ``soloAmbient`` (Apple's default category).

        :param hints: ``Name`` (str), and optionally ``Category`` (str), ``Mode`` (str),
            ``Options`` (list of str), applied as by :meth:`set_category`; a missing
            ``Category`` is ``soloAmbient``, a missing ``Mode`` is ``default`` (so
            ``{"Mode": "karaoke"}`` fails as ``SetCategory("soloAmbient", "karaoke", [])``
            would). Bounds and types are the adapter's (:mod:`audiopolicyd.limits`).
        :raises SessionError: ``TooManySessions`` past :data:`MAX_SESSIONS_PER_CLIENT`, or a
            category error from the hints (no session is created then)
        """
        if sum(1 for s in self.sessions.values() if s.owner == owner) >= MAX_SESSIONS_PER_CLIENT:
            raise TooManySessions(f"a client may hold at most {MAX_SESSIONS_PER_CLIENT} "
                                  "sessions")
        session = AppSession(f"s{next(self._ids)}", owner, identity, str(hints.get("Name", "")))
        if hints.keys() & {"Category", "Mode", "Options"}:
            self._set_category(session, str(hints.get("Category", session.category)),
                               str(hints.get("Mode", session.mode)),
                               [str(o) for o in hints.get("Options", [])])
        self.sessions[session.id] = session
        self.version += 1
        self.on_change()
        logger.info("session %s created by %s (pid %s, %s): %s", session.id, owner,
                    identity.pid, identity.key, session.category)
        return session

    def get(self, session_id: str, caller: str | None = None) -> AppSession:
        """The session, checked against its owner when ``caller`` is given.

        :raises SessionError: ``NoSuchSession``; ``NotOwner`` when another connection asks
        """
        session = self.sessions.get(session_id)
        if session is None:
            raise NoSuchSession(f"no session {quote(session_id)} (it was removed)")
        if caller is not None and caller != session.owner:
            raise NotOwner(f"session {session_id} belongs to {session.owner}; "
                           "only that connection may change it")
        return session

    def remove(self, session: AppSession, why: str) -> None:
        """Deactivate and forget a session; its effects are undone by the next decision."""
        if self.sessions.pop(session.id, None) is None:
            return
        self.version += 1
        if session.active:
            self._notified.add(session.session_id)  # a closed session does not hold others
        logger.info("session %s removed (%s)", session.id, why)
        self._emit(session, "Removed", {})
        self.on_change()

    def drop_owner(self, owner: str) -> None:
        """The owner left the bus: remove its sessions, undoing everything they caused."""
        for session in [s for s in self.sessions.values() if s.owner == owner]:
            self.remove(session, f"{owner} left the bus")

    # -- the app's calls ---------------------------------------------------------------------

    def set_category(self, session: AppSession, category: str, mode: str,
                     options: Iterable[str]) -> None:
        """AVAudioSession.setCategory(_:mode:options:); see the module rules.

        :raises SessionError: ``UnknownCategory``, ``UnknownMode``, ``UnknownOption``,
            ``IncompatibleCategoryOption``
        """
        self._set_category(session, category, mode, list(options))
        self._emit(session, "PropertiesChanged", {"Category": session.category,
                                                  "Mode": session.mode,
                                                  "Options": sorted(session.options)})
        self.on_change()

    def _set_category(self, session: AppSession, category: str, mode: str,
                      options: list[str]) -> None:
        if category not in CATEGORIES:
            raise UnknownCategory(f"{quote(category)} is not a category (one of: "
                                  + ", ".join(CATEGORIES) + ")")
        policy = self.policies().policies.get(category)
        if policy is None:
            raise UnknownCategory(f"no policy defines category {quote(category)}")
        if mode not in MODES:
            raise UnknownMode(f"{quote(mode)} is not a mode (one of: "
                              + ", ".join(MODES) + ")")
        for option in options:
            if option not in OPTIONS:
                raise UnknownOption(f"{quote(option)} is not a category option "
                                    "(one of: " + ", ".join(OPTIONS) + ")")
            if option not in policy.options:
                raise IncompatibleCategoryOption(
                    f"{category} does not take option {quote(option)} (it takes: "
                    + (", ".join(sorted(policy.options)) or "none") + ")")
        if mode not in policy.modes:
            logger.info("session %s: mode %s does not suit %s; using default, as Apple does",
                        session.id, mode, category)
            mode = "default"
        if category != session.category and session.override != OVERRIDE_NONE:
            # a category change is a route change: Apple's override lasts until the next one
            logger.info("session %s: output override %s ends with the category change",
                        session.id, session.override)
            session.override = OVERRIDE_NONE
        session.category, session.mode, session.options = category, mode, frozenset(options)

    def set_active(self, session: AppSession, active: bool, options: Iterable[str]) -> str:
        """AVAudioSession.setActive(_:options:), plus ``delayIfBusy``.

        :returns: ``active``, ``delayed`` or ``inactive``
        :raises SessionError: ``UnknownOption``, ``InsufficientPriority``,
            ``CannotInterruptOthers``
        """
        options = set(options)
        for option in options - set(ACTIVE_OPTIONS):
            raise UnknownOption(f"{quote(option)} is not an activation option "
                                "(one of: " + ", ".join(ACTIVE_OPTIONS) + ")")
        if not active:
            was = session.active
            session.active = session.delayed = False
            if was and "notifyOthersOnDeactivation" in options:
                self._notified.add(session.session_id)
            self._changed(session, "app", "deactivated" if was else "")
            return "inactive"
        if session.active:
            self._app_activated(session)
            return "active"
        policies = self.policies()
        blockers = engine.activation_blockers(session.model(), self._current, policies,
                                              self.pm)
        if blockers:
            if "delayIfBusy" in options:
                session.delayed = True
                logger.info("session %s: activation delayed by %s", session.id,
                            ", ".join(b.id for b in blockers))
                self._emit(session, "PropertiesChanged", {"State": session.state})
                return "delayed"
            refused = (CannotInterruptOthers
                       if engine.mixable(session.model(), policies.policies[session.category],
                                         self.pm)
                       else InsufficientPriority)
            raise refused(f"{session.category} cannot become active while "
                          + ", ".join(f"{b.category} session {b.id}" for b in blockers)
                          + " of higher priority is active; pass delayIfBusy to wait")
        self._activate(session, "app", "")
        self._app_activated(session)
        return "active"

    def _app_activated(self, session: AppSession) -> None:
        for listener in list(self.on_app_activated):
            listener(session)

    def _activate(self, session: AppSession, source: str, reason: str) -> None:
        session.active, session.delayed = True, False
        session.seq = next(self.seq)
        self._notified.discard(session.session_id)
        self._changed(session, source, reason)

    def _changed(self, session: AppSession, source: str, reason: str) -> None:
        signal = "DidBecomeActive" if session.active else "DidBecomeInactive"
        if reason or source == "app":
            self._emit(session, signal, {"source": source, "reason": reason or "app"})
        self._emit(session, "PropertiesChanged", {"Active": session.active,
                                                  "State": session.state})
        self.on_change()

    # -- after every decision ------------------------------------------------------------------

    def owner_of(self, properties: Mapping[str, str], pid: int | None) -> AppSession | None:
        """The session a stream belongs to (see :func:`audiopolicyd.identity.stream_belongs`);
        the oldest session of its app wins."""
        for session in self.sessions.values():
            if stream_belongs(dict(properties), pid, session.identity):
                return session
        return None

    def update(self, sessions: list[Session], now: float | None = None) -> None:
        """Fold a decision in: interruptions, delayed activations, audio hints.

        :param sessions: every session of the decision, implicit and explicit
        """
        self._current = sessions
        now = time.monotonic() if now is None else now
        policies = self.policies()
        by_id = {s.id: s for s in sessions}
        hits = engine.interruptions(sessions, policies, self.pm)
        for session in list(self.sessions.values()):
            now_by = hits.get(session.session_id, set())
            if now_by and not session.interrupted_by and not session.active:
                pass  # only an active session is interrupted (a silent app is not told)
            elif now_by and not session.interrupted_by:
                session.interrupted_by = set(now_by)
                session.interrupted_at = now
                triggers = [by_id[t] for t in sorted(now_by)]
                self._emit(session, "InterruptionBegan", {
                    "reason": "default", "interrupter": triggers[0].id,
                    "interrupter_category": triggers[0].category})
                if session.active:
                    session.active = False
                    self._changed(session, "system", "interruption")
                else:
                    self._emit(session, "PropertiesChanged", {"State": session.state})
            elif now_by:
                session.interrupted_by |= now_by
            elif session.interrupted_by:
                self._end_interruption(session, by_id, now)
            if session.delayed and not engine.activation_blockers(session.model(), sessions,
                                                                  policies, self.pm):
                self._activate(session, "system", "delayedActivation")
            other, secondary = engine.audio_hints(session.model(), sessions, policies, self.pm)
            changed = {}
            if other != session.other_audio_playing:
                session.other_audio_playing = changed["OtherAudioPlaying"] = other
            if secondary != session.secondary_hint:
                session.secondary_hint = changed["SecondaryAudioShouldBeSilencedHint"] = secondary
                self._emit(session, "SilenceSecondaryAudioHint",
                           {"type": "begin" if secondary else "end"})
            if changed:
                self._emit(session, "PropertiesChanged", changed)
        # keep a closed interrupter's notice while a session it interrupted still waits
        self._notified &= ({s.session_id for s in self.sessions.values()}
                           | {t for s in self.sessions.values() for t in s.interrupted_by})

    def route_disconnected(self, session_id: str) -> None:
        """The device an active session played on went (Apple's
        ``prefersInterruptionOnRouteDisconnect``): ``InterruptionBegan`` with reason
        ``routeDisconnected``, and the session is deactivated, as iOS 17 interrupts the Now
        Playing session. Nothing ends this interruption (no ``InterruptionEnded``): the app
        activates again when its user plays.

        :param session_id: the engine's id of the session (``session:s1``); an inactive or
            unknown session is left alone
        """
        session = next((s for s in self.sessions.values() if s.session_id == session_id), None)
        if session is None or not session.active:
            return
        self._emit(session, "InterruptionBegan", {"reason": "routeDisconnected",
                                                  "interrupter": "", "interrupter_category": ""})
        session.active = False
        self._changed(session, "system", "interruption")

    def _end_interruption(self, session: AppSession, by_id: Mapping[str, Session],
                          now: float) -> None:
        def ended_with_notice(trigger_id: str) -> bool:
            trigger = by_id.get(trigger_id)
            if trigger_id.startswith("implicit:"):
                return trigger is None or not trigger.active  # its streams stopped
            return trigger_id in self._notified
        took = now - session.interrupted_at
        resume = (not session.active and took <= self.resume_limit
                  and all(ended_with_notice(t) for t in session.interrupted_by))
        session.interrupted_by = set()
        self._emit(session, "InterruptionEnded", {
            "should_resume": resume, "options": ["shouldResume"] if resume else [],
            "duration_ms": int(took * 1000)})
        self._emit(session, "PropertiesChanged", {"State": session.state})

    def media_services(self, available: bool) -> None:
        """The audio server went away (``MediaServicesWereLost``) or came back (``...Reset``);
        sessions survive and are applied again."""
        for session in self.sessions.values():
            self._emit(session, "MediaServicesWereReset" if available
                       else "MediaServicesWereLost", {})

    def emit(self, session: AppSession, what: str, payload: Mapping[str, Any]) -> None:
        """Tell the listeners of an event of the session raised beside this module (its route:
        :mod:`audiopolicyd.sessionroutes`)."""
        self._emit(session, what, payload)

    def _emit(self, session: AppSession, what: str, payload: Mapping[str, Any]) -> None:
        for listener in self.listeners:
            listener(session, what, payload)
