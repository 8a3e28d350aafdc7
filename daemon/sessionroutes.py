"""An app's session and its route, as AVAudioSession shows it: the current route, the inputs it
may prefer, the preferred input, the speaker override, and the route-change events.

No D-Bus and no server here: the router (:class:`audiopolicyd.runtime.router.Router`) decides
every session's route and moves the streams; this module reads what it decided, gives an app's
wishes to it (:attr:`AppSession.override <audiopolicyd.appsessions.AppSession.override>`,
:attr:`AppSession.preferred_input <audiopolicyd.appsessions.AppSession.preferred_input>`, then a
new decision), and tells the session's listeners (:attr:`AppSessions.listeners
<audiopolicyd.appsessions.AppSessions.listeners>`, the D-Bus adapter among them) what changed.

Semantics, Apple's where it speaks:

* ``current_route``: ``AVAudioSession.currentRoute``: the route the router last decided for
  the session (its inputs and outputs, each a :class:`~audiopolicyd.route.RoutePort`), kept
  while the audio server is away; empty before the first decision.
* ``available_inputs``: ``AVAudioSession.availableInputs``: every input port present that the
  session's category could use: none for a category that does not record; a Bluetooth HFP
  input only when the session takes ``allowBluetooth`` in a category that offers it (the
  router's own rule, :func:`audiopolicyd.routing.choose.refusal`). Never a sink's monitor.
* ``set_preferred_input``: ``setPreferredInput(_:)``: the uid must be one of the available
  inputs now (``InputUnavailable`` otherwise, as Apple rejects a port not in
  ``availableInputs``); '' clears. Once set, it is kept when the port goes (the router ignores
  it while it is absent and says so in its reason) and used again when it comes back.
* ``override_output``: ``overrideOutputAudioPort(_:)``: ``speaker`` or ``none``, for
  ``playAndRecord`` only (``IncompatibleCategoryOption`` for the others, as Apple); another
  value is ``UnknownPortOverride``. The override holds until ``none``, a change of category,
  or the session's end. Apple also ends it at any other route change (a headset plugged in)
  and at an interruption; here the speaker stays until the app says ``none``.
* ``RouteChanged`` (``AVAudioSession.routeChangeNotification``): sent when the router's
  decision for the session changes, with Apple's reason and the previous route; the new route
  is announced first (``PropertiesChanged`` of ``CurrentRoute``), so a client reading it on
  ``RouteChanged`` sees the new one.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from .appsessions import OVERRIDE_CATEGORIES, AppSession, AppSessions
from .errors import IncompatibleCategoryOption, InputUnavailable, UnknownPortOverride
from .limits import quote
from .model import Device
from .policy import PolicySet
from .route import (
    INPUT, OVERRIDES, Route, RouteChange, RouteDecision, RoutedStream, RoutePort,
)
from .routing.choose import refusal, request

logger = logging.getLogger(__name__)

#: The prefix of an explicit session's id in the engine and the router (``session:s1``).
_EXPLICIT = "session:"


class SessionRoutes:
    """The routes of the apps' sessions, and the app's calls that change them.

    :param sessions: the explicit sessions; their listeners get ``RouteChanged`` (payload
        ``{"reason": RouteChangeReason, "previous_route": Route}``) and ``PropertiesChanged``
        (``{"CurrentRoute": Route}``, ``{"AvailableInputs": tuple[RoutePort, ...]}``)
    :param policies: returns the policy set in force
    :param devices: returns every sink and source present, by id (``Runtime.devices``)
    :param routes: returns the router's decisions by session id (``Router.routes``)
    """

    def __init__(self, sessions: AppSessions, policies: Callable[[], PolicySet],
                 devices: Callable[[], Mapping[str, Device]] = dict,
                 routes: Callable[[], Mapping[str, RouteDecision]] = dict):
        self.sessions = sessions
        self.policies = policies
        self.devices = devices
        self.routes = routes
        # what each session's listeners were last told: session id -> (route, inputs)
        self._announced: dict[str, tuple[Route, tuple[RoutePort, ...]]] = {}

    def attach(self, runtime) -> None:
        """Follow ``runtime`` (:class:`~audiopolicyd.runtime.Runtime`): its devices, its
        router's routes and route changes (:meth:`follow`), and :meth:`refresh` after each of
        its decision passes (``on_pass``)."""
        self.devices = lambda: runtime.devices
        self.follow(runtime.router)
        runtime.on_pass.append(self.refresh)

    def follow(self, router) -> None:
        """Read the routes of ``router`` (:class:`~audiopolicyd.runtime.router.Router`: its
        ``routes``) and hear its route changes (its ``on_route_change``). Call
        :meth:`refresh` after every decision pass as well."""
        self.routes = lambda: router.routes
        router.on_route_change.append(self.route_changed)

    # -- what an app reads ----------------------------------------------------------------------

    def current_route(self, session: AppSession) -> Route:
        """The session's route as last decided (``AVAudioSession.currentRoute``); an empty
        route before the first decision."""
        decision = self.routes().get(session.session_id)
        return decision.route if decision is not None else Route()

    def available_inputs(self, session: AppSession) -> tuple[RoutePort, ...]:
        """Every input port present the session's category could use, in the server's order
        (``AVAudioSession.availableInputs``; see the module docstring)."""
        policy = self.policies().policies.get(session.category)
        if policy is None or not policy.records:
            return ()
        req = request(self.devices(), session.category, session=session.model())
        return tuple(p for p in req.inputs if not refusal(p, INPUT, req, policy))

    # -- what an app asks -----------------------------------------------------------------------

    def set_preferred_input(self, session: AppSession, uid: str) -> None:
        """``setPreferredInput(_:)``: record from the input of that uid; '' clears.

        :param uid: a :attr:`RoutePort.uid <audiopolicyd.route.RoutePort.uid>` of
            :meth:`available_inputs`, or ''
        :raises InputUnavailable: the uid is not among the available inputs now
        """
        if uid and all(p.uid != uid for p in self.available_inputs(session)):
            raise InputUnavailable(
                f"no input {quote(uid)} is available to session {session.id} "
                f"({session.category}) now; AvailableInputs lists those it may prefer")
        if uid != session.preferred_input:
            session.preferred_input = uid
            logger.info("session %s: preferred input %s", session.id,
                        quote(uid) if uid else "cleared")
            self.sessions.on_change()

    def override_output(self, session: AppSession, port: str) -> None:
        """``overrideOutputAudioPort(_:)``: ``speaker`` puts the session's output on the
        built-in speaker (and its input on the built-in microphone), ``none`` ends it.

        :raises UnknownPortOverride: neither ``speaker`` nor ``none``
        :raises IncompatibleCategoryOption: the session's category is not ``playAndRecord``
        """
        if port not in OVERRIDES:
            raise UnknownPortOverride(f"{quote(port)} is not an output override (one of: "
                                      + ", ".join(OVERRIDES) + ")")
        if session.category not in OVERRIDE_CATEGORIES:
            raise IncompatibleCategoryOption(
                f"{session.category} does not take an output override (only "
                + ", ".join(OVERRIDE_CATEGORIES) + " does, as on Apple's platforms)")
        if port != session.override:
            session.override = port
            logger.info("session %s: output override %s", session.id, port)
            self.sessions.on_change()

    # -- what the runtime tells -----------------------------------------------------------------

    def route_changed(self, session_id: str, change: RouteChange,
                      streams: tuple[RoutedStream, ...] = ()) -> None:
        """A :attr:`Router.on_route_change <audiopolicyd.runtime.router.Router.on_route_change>`
        listener: announce the new route, then ``RouteChanged`` with Apple's reason and the
        previous route, to an explicit session's listeners (implicit sessions have none)."""
        session = self._session(session_id)
        if session is None:
            return
        self._announce(session, change.current.route)
        payload: dict[str, Any] = {"reason": change.reason,
                                   "previous_route": change.previous.route}
        self.sessions.emit(session, "RouteChanged", payload)

    def refresh(self) -> None:
        """After a decision pass: ``PropertiesChanged`` for each session whose route or
        available inputs changed since its listeners were last told (a first route, a device
        that came or went)."""
        self._announced = {i: v for i, v in self._announced.items()
                           if i in self.sessions.sessions}
        for session in list(self.sessions.sessions.values()):
            self._announce(session, self.current_route(session))

    def _announce(self, session: AppSession, route: Route) -> None:
        inputs = self.available_inputs(session)
        was_route, was_inputs = self._announced.get(session.id, (Route(), ()))
        self._announced[session.id] = (route, inputs)
        changed: dict[str, Any] = {}
        if route != was_route:
            changed["CurrentRoute"] = route
        if inputs != was_inputs:
            changed["AvailableInputs"] = inputs
        if changed:
            self.sessions.emit(session, "PropertiesChanged", changed)

    def _session(self, session_id: str) -> AppSession | None:
        if not session_id.startswith(_EXPLICIT):
            return None
        return self.sessions.sessions.get(session_id[len(_EXPLICIT):])
