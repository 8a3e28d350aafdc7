"""The router: after each decision pass, every session's route (explicit and implicit), and the
moves that make it so.

For each session of the pass (:attr:`DecisionPass.sessions
<audiopolicyd.runtime.passes.DecisionPass.sessions>`), in this order:

1. the route the category's policy and plugins decide (:func:`audiopolicyd.routing.decide.
   decide_route`, from :func:`audiopolicyd.routing.choose.request` with the server's default
   sink and source, the session's mode and options, and an explicit session's output override
   and preferred input);
2. the user's preference for the category (``audiopolicyctl route CATEGORY PORT-UID``), when
   that port is present;
3. the session's processing devices (:attr:`Router.processing`: an echo canceller's sink and
   source), when given.

Each stream of the session (a sink-input takes the output, a source-output the input; server
modules' streams, the daemon's own and monitor recordings are left alone) is moved to the
chosen device, unless the user pinned it: **the user wins**. A stream the user (or its app)
moved to another device stays there, remembered per app (:attr:`Stream.app_key
<audiopolicyd.model.Stream.app_key>`) and category in the state directory
(:class:`~.routestore.RouteStore`), and the app's new streams of that category go there too
while the device is present; how a user's move is told from a server's rescue:
:mod:`.moves`. Nothing suitable present: the streams stay where they are. **The router never
changes the user's default device.**

When a session's route changes, the :class:`~audiopolicyd.route.RouteChange` (Apple's reason,
:func:`audiopolicyd.routing.choose.route_change`) is logged at info and given to every
:attr:`Router.on_route_change` listener. From a suspend to :data:`WAKE_S` after the resume
(:meth:`Router.sleep_changed`, from logind: :mod:`audiopolicyd.sleep`) a change the devices made
(:data:`WAKE_REASONS`) is ``wakeFromSleep``, as on iOS; a change the app made (its category,
its override) or a route with nothing suitable keeps its own reason.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import AbstractSet as Set, Callable, Mapping

from ..backends.base import Backend, BackendError, DefaultDevices
from ..errors import UnknownCategory
from ..limits import quote
from ..model import Device, Session, Snapshot, Stream, StreamKind
from ..pluginmanager import PluginManager
from ..policy import PolicySet
from ..route import (
    INPUT, OUTPUT, OVERRIDE_NONE, PortChoice, RouteChange, RouteChangeReason, RouteDecision,
    RoutedStream,
)
from ..routing.choose import request, route_change
from ..routing.decide import decide_route
from ..routing.ports import route_port
from .moves import Moves
from .routestore import RouteStore
from .tasks import Tasks

logger = logging.getLogger(__name__)

#: ``listener(session_id, change, streams)``: a session's route changed; ``streams`` are the
#: session's streams, each with the device it was on before the change. Called on the event
#: loop, during the pass: must not block.
RouteListener = Callable[[str, RouteChange, "tuple[RoutedStream, ...]"], None]


#: How long after a resume a route change the devices made is ``wakeFromSleep``, in seconds:
#: devices come back (or do not) in the first seconds (USB re-enumerates, the audio server
#: reopens its cards; a Bluetooth headset reconnects within a few).
WAKE_S = 10.0
#: How long after logind's "going to sleep" the same holds without a resume, in seconds of
#: the monotonic clock, which stops while the machine sleeps: a suspend whose resume signal
#: never comes is forgotten after that.
ASLEEP_S = 60.0
#: The reasons a resume's change would otherwise have: what the devices did.
WAKE_REASONS = frozenset({
    RouteChangeReason.newDeviceAvailable, RouteChangeReason.oldDeviceUnavailable,
    RouteChangeReason.routeConfigurationChange, RouteChangeReason.unknown})


class Router:
    """Decides every session's route and moves its streams; keeps what it decided and why.

    :param backend: the connection moves and default-device reads go through
    :param tasks: where moves and reads run
    :param policies: returns the policy set in force
    :param pm: the plugin manager (``choose_route`` hooks); None: nothing is routed
    :param store: the pins and preferences (:class:`~.routestore.RouteStore`)
    :param schedule: asks for another pass soon
    :param app_sessions: returns the explicit sessions (:class:`~audiopolicyd.appsessions.
        AppSessions`) or None: their ``override`` and ``preferred_input``
    :param clock: monotonic seconds (tests)
    """

    def __init__(self, backend: Backend, tasks: Tasks, policies: Callable[[], PolicySet],
                 pm: PluginManager | None, store: RouteStore, schedule: Callable[[], None],
                 app_sessions: Callable[[], object] = lambda: None,
                 clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.clock = clock
        self.policies = policies
        self.pm = pm
        self.store = store
        self.schedule = schedule
        self.app_sessions = app_sessions
        #: Session id -> its route as last decided (explicit and implicit sessions).
        self.routes: dict[str, RouteDecision] = {}
        #: Stream key -> why it is where it is, a sentence (``audiopolicyctl explain``).
        self.reasons: dict[str, str] = {}
        #: Listeners of route changes (see :data:`RouteListener`).
        self.on_route_change: list[RouteListener] = []
        #: ``processing(session)`` -> (sink id, source id) the session's audio goes through
        #: (an echo canceller), or None; set by the processing part. None: no processing.
        self.processing: Callable[[Session], tuple[str, str] | None] | None = None
        #: ``revise(change, devices) -> change``: what the processing part knows of a route
        #: change that the devices do not show (a headset it switched to HFP for the call:
        #: ``routeConfigurationChange``, :mod:`~.headsets`); None: the change as decided.
        self.revise: Callable[[RouteChange, Mapping[str, Device]], RouteChange] | None = None
        #: The server's default sink and source, by name ('' until read).
        self.defaults = DefaultDevices("", "")
        #: The graph as of the last pass (what the read side shows).
        self.snapshot = Snapshot()
        self.moves = Moves(backend, tasks, schedule, self._user_moved)
        self._tasks = tasks
        self._devices: Mapping[str, Device] = {}  # as of the last pass
        self._seen: dict[str, str] = {}  # stream key -> device id as of the last pass
        self._left: dict[str, str] = {}  # stream key -> the device it was last seen leaving
        self._decided: dict[str, tuple] = {}  # session id -> (what it depends on, decision)
        self._categories: dict[str, str] = {}  # session id -> category as of the last pass
        self._overrides: dict[str, str] = {}  # session id -> override as of the last pass
        self._sessions: dict[str, Session] = {}  # stream key -> its session, last pass
        self._waking_until: float | None = None  # clock() until which a change is a resume's

    # -- the server's defaults ------------------------------------------------------------------

    def server_changed(self) -> None:
        """The server's info changed (a ``server`` event): read the default devices again."""
        self._tasks.spawn(self.read_defaults())

    async def read_defaults(self) -> None:
        """Read the server's default sink and source (:meth:`Backend.default_devices`); a
        server that cannot say leaves them unknown (''), and a pass is asked for."""
        try:
            defaults = await self.backend.default_devices()
        except BackendError as exc:
            logger.debug("the default devices cannot be read: %s", exc)
            return
        if defaults != self.defaults:
            self.defaults = defaults
            self.schedule()

    def sleep_changed(self, start: bool) -> None:
        """The machine goes to sleep (*start*) or resumed: from the one to :data:`WAKE_S`
        after the other (or :data:`ASLEEP_S` after a suspend with no resume), a route change
        the devices make is ``wakeFromSleep`` (the server may see a device go before logind
        says the machine woke); on the resume a pass is asked for."""
        self._waking_until = self.clock() + (ASLEEP_S if start else WAKE_S)
        if not start:
            self.schedule()

    def lost(self) -> None:
        """The connection is gone: forget the graph (the routes stay shown as last decided)."""
        self.moves.reset()
        self._devices, self._seen, self._sessions, self._left = {}, {}, {}, {}
        self._decided.clear()

    # -- the pass -------------------------------------------------------------------------------

    def run(self, snap: Snapshot, sessions: list[Session],
            held: Set[str] = frozenset()) -> None:
        """Route every session of a decision pass (see the module docstring). Moves are
        started, not awaited.

        :param held: keys of the recordings the microphone gate holds (muted, at volume 0):
            left where they are until their app may record (PulseAudio gives a moved
            recording its volume back, which the gate would take for the app's fight)
        """
        self.moves.devices_seen(self._devices, snap.devices)
        if not _same(self._devices, snap.devices):
            self._decided.clear()
        defaults = self.default_ids(snap)
        routes, sessions_of = {}, {}
        for session in sessions:
            decision = self._decide(snap, session, defaults)
            if decision is None:
                continue
            routes[session.id] = decision
            self._changed(snap, session, decision)
            for key in session.streams:
                sessions_of[key] = session
        self.routes = routes
        self._sessions = sessions_of
        seen = {}
        for key, session in sessions_of.items():
            stream = snap.streams.get(key)
            if stream is not None and _routable(stream):
                if key in held:
                    self.reasons[key] = "stays where it is: the microphone gate holds it"
                    continue
                seen[key] = self._route(snap, stream, session, routes[session.id], defaults)
            elif stream is not None and not stream.linked and key in self._seen:
                # unlinked for a moment (pipewire-pulse relinks a stream that is moved): the
                # device it left is still the one a move is told from
                seen[key] = self._seen[key]
        self.reasons = {k: v for k, v in self.reasons.items() if k in seen or k in held}
        self._left = {k: v for k, v in self._left.items() if k in seen}
        self._overrides = {k: v for k, v in self._overrides.items() if k in routes}
        self._decided = {k: v for k, v in self._decided.items() if k in routes}
        self._seen = seen
        self._devices = snap.devices
        self.snapshot = snap
        self._categories = {s.id: s.category for s in sessions}

    def default_ids(self, snap: Snapshot) -> dict[str, str]:
        """The ids of the server's default ``sink`` and ``source`` in ``snap`` (a kind is
        missing while its default is unknown or not in the graph)."""
        by_name = {d.name: d for d in snap.devices.values()}
        return {k: by_name[n].id for k, n in (("sink", self.defaults.sink),
                                              ("source", self.defaults.source))
                if n in by_name}

    def decide(self, snap: Snapshot, session: Session, *,
               processing: bool = True) -> RouteDecision | None:
        """A session's route in ``snap`` (steps 1-3 of the module docstring), without moving
        anything; None when no policy defines its category.

        :param processing: False: the route without the session's processing (where its echo
            canceller's masters go, :mod:`~.processing`); not kept for the next pass
        """
        return self._decide(snap, session, self.default_ids(snap), processing)

    def _decide(self, snap: Snapshot, session: Session, defaults: dict[str, str],
                processing: bool = True) -> RouteDecision | None:
        policy = self.policies().policies.get(session.category)
        if policy is None or self.pm is None:
            return None
        app = self._app_session(session)
        override = getattr(app, "override", OVERRIDE_NONE)
        preferred = getattr(app, "preferred_input", "")
        wanted = self.store.preferences.get(session.category)
        through = self.processing(session) if processing and self.processing is not None \
            else None
        # a pass runs on every change of any stream: decide again only when what the decision
        # depends on changed (the devices: the cache is cleared when they change)
        key = (policy, session.mode, session.options if session.explicit else None, override,
               preferred, defaults.get("sink"), defaults.get("source"), wanted, through)
        cached = self._decided.get(session.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        req = request(snap.devices, session.category, default_output=defaults.get("sink", ""),
                      default_input=defaults.get("source", ""),
                      session=session if session.explicit else None, override=override,
                      preferred_input=preferred)
        decision = decide_route(self.pm, req, policy)
        if wanted:
            for direction in (OUTPUT, INPUT):
                port = next((p for p in req.ports(direction) if p.uid == wanted), None)
                if port is not None and decision.choice(direction).port is not None:
                    choice = PortChoice(port, f"{port.port_type}: the user's preference for "
                                              f"{session.category} ({quote(wanted)})")
                    decision = _with(decision, direction, choice)
        if through is not None:
            for direction, dev in zip((OUTPUT, INPUT), through):
                device = snap.devices.get(dev)
                port = route_port(device) if device is not None else None
                if port is not None and decision.choice(direction).port is not None:
                    decision = _with(decision, direction, PortChoice(
                        port, f"{port.port_type}: the session's processing ({port.port_name})"))
        if processing:
            self._decided[session.id] = (key, decision)
        return decision

    def _changed(self, snap: Snapshot, session: Session, decision: RouteDecision) -> None:
        previous = self.routes.get(session.id)
        override = getattr(self._app_session(session), "override", OVERRIDE_NONE)
        category_changed = self._categories.get(session.id, session.category) != \
            session.category
        override_changed = self._overrides.get(session.id, override) != override
        self._overrides[session.id] = override
        if previous is None or previous is decision:
            return
        change = route_change(session.category, previous, decision, self._devices,
                              snap.devices, category_changed=category_changed,
                              override_changed=override_changed)
        if change is None:
            return
        if self.revise is not None:
            change = self.revise(change, snap.devices)
        if self._waking_until is not None and self.clock() < self._waking_until \
                and change.reason in WAKE_REASONS:
            change = dataclasses.replace(change, reason=RouteChangeReason.wakeFromSleep)
        port = decision.output.port or decision.input.port
        where = f"{port.port_type} {quote(port.port_name)}" if port else "nothing"
        logger.info("%s (%s) moves to %s: %s", _app_name(snap, session), session.id, where,
                    change.reason.name)
        # the device each was on before: on PulseAudio a stream rescued from a device that
        # went was seen on the default one pass before the device's removal was
        streams = tuple(RoutedStream(k, self._before(k, change), snap.streams[k].playing)
                        for k in session.streams if k in snap.streams)
        for listener in list(self.on_route_change):
            try:
                listener(session.id, change, streams)
            except Exception:  # a listener's bug must not stop routing
                logger.exception("a route-change listener failed for %s", session.id)

    def _before(self, key: str, change: RouteChange) -> str:
        """The device a stream was on before ``change``: one of the devices that went when it
        was seen leaving it (a rescue seen first) or was being moved there by us (its device
        went before the server's answer was read), else where it was last seen."""
        for was in (self._left.pop(key, None), self.moves.target.get(key)):
            if was in change.gone:
                return was
        return self._seen.get(key, "")

    def _route(self, snap: Snapshot, stream: Stream, session: Session,
               decision: RouteDecision, defaults: Mapping[str, str]) -> str:
        """Move one stream where its session's route (or its pin) says; returns the id of the
        device it is on."""
        key, on = stream.key, stream.device
        if on in snap.devices and snap.devices[on].monitor:
            return on  # it records a sink's monitor: not an input a route gives
        was = self._seen.get(key)
        if was is not None and was != on and on:
            self._left[key] = was
            kind = "sink" if stream.kind is StreamKind.SINK_INPUT else "source"
            self.moves.moved(stream, was, on, snap.devices, defaults.get(kind, ""))
        direction = OUTPUT if stream.kind is StreamKind.SINK_INPUT else INPUT
        choice = decision.choice(direction)
        pin = self.store.pinned(stream.app_key, session.category, direction)
        pinned = next((d for d in snap.devices.values() if d.name == pin
                       and d.kind == ("sink" if direction == OUTPUT else "source")), None)
        if pinned is not None:
            target, why = pinned, f"pinned: the user put {session.category} of this app on " \
                                  f"{quote(pinned.description or pinned.name)}"
        elif choice.port is not None:
            target, why = snap.devices.get(choice.port.device), choice.reason
        else:
            target, why = None, f"stays where it is: {choice.reason}"
        self.reasons[key] = why
        # a stream on a device the mirror has not read yet is left alone until it has; one on
        # a device that just went is routed at once: PulseAudio rescued it before the removal,
        # WirePlumber does ~15 ms after it (to the default, and a move of ours before that is
        # seen as undone by the server, not moved by the user: moves.UNDO_WINDOW)
        known = on in snap.devices or on in self._devices
        if target is not None and target.id != on and known and not self.moves.busy(key):
            self.moves.move(stream, target)
        return on

    def _user_moved(self, stream: Stream, device: Device) -> None:
        session = self._sessions.get(stream.key)
        if session is None:
            return
        direction = OUTPUT if stream.kind is StreamKind.SINK_INPUT else INPUT
        route = self.routes.get(session.id)
        if route is not None and route.choice(direction).port is not None \
                and route.choice(direction).port.device == device.id \
                and self.store.pinned(stream.app_key, session.category, direction) is None:
            # where its route puts it anyway: no preference to remember (WirePlumber moves a
            # stream back onto it after the router gave up a fight, moves.MAX_UNDOS)
            logger.debug("%s onto %s, its route's own device: not pinned", stream.key,
                         device.id)
            return
        logger.info("the user moved %s's %s stream %s to %s; it stays there",
                    stream.app_key, session.category, stream.key, quote(device.name))
        self.store.pin(stream.app_key, session.category, direction, device.name)

    def _app_session(self, session: Session):
        if not session.explicit:
            return None
        sessions = self.app_sessions()
        if sessions is None:
            return None
        return sessions.sessions.get(session.id.removeprefix("session:"))

    def forget(self, key: str) -> None:
        """A stream went."""
        self.moves.forget(key)
        self.reasons.pop(key, None)

    # -- the user's say ---------------------------------------------------------------------------

    def prefer(self, category: str, uid: str) -> None:
        """``audiopolicyctl route CATEGORY PORT-UID``: put ``category``'s streams on the port
        ``uid`` whenever it is present ('' forgets the preference); routes again.

        :raises UnknownCategory: for a category no policy in force defines
        """
        if category not in self.policies().policies:
            raise UnknownCategory(f"no policy defines the category {quote(category)}")
        self.store.prefer(category, uid)
        logger.info("the user routes %s to %s", category, quote(uid) if uid else "its default")
        self.schedule()

    def reset(self, app: str) -> int:
        """``audiopolicyctl route reset APP``: forget where the user put ``app``'s streams
        (see :meth:`RouteStore.forget <.routestore.RouteStore.forget>`); routes again.

        :returns: how many pins were forgotten (0: none had that app)
        """
        forgotten = self.store.forget(app)
        if forgotten:
            logger.info("forgot %d route(s) the user chose for %s", forgotten, quote(app))
            self.schedule()
        return forgotten


def _same(before: Mapping[str, Device], after: Mapping[str, Device]) -> bool:
    """The same devices, as the same objects (the mirror replaces them all when it reads
    them again)."""
    return len(before) == len(after) and all(before.get(k) is v for k, v in after.items())


def _routable(stream: Stream) -> bool:
    """Streams the router moves: a client's, linked, not a monitor recording."""
    return stream.linked and not stream.module and not stream.own and not stream.monitor


def _with(decision: RouteDecision, direction: str, choice: PortChoice) -> RouteDecision:
    return RouteDecision(output=choice, input=decision.input) if direction == OUTPUT \
        else RouteDecision(output=decision.output, input=choice)


def _app_name(snap: Snapshot, session: Session) -> str:
    for key in session.streams:
        stream = snap.streams.get(key)
        if stream is not None and stream.properties.get("application.name"):
            return quote(stream.properties["application.name"])
    return session.app_key
