"""The composition of the runtime's parts, and what the daemon (app.py, D-Bus) calls.

Each part has one job: :class:`~.connection.Connection` (connect, backoff, reconnect),
:class:`~.mirror.Mirror` (the graph, read and write generations), :class:`~.ownership.Ownership`
(session owners, deactivation holds), :class:`~.passes.DecisionPass` (decide and apply),
:class:`~.actuator.Actuator` (journal and write), :class:`~.recovery.Recovery` (journal rows,
lingering values, restore at shutdown), :class:`~.pauses.Pauses` (MPRIS), the microphone gate
(:mod:`audiopolicyd.microphone.gate`), :class:`~.routes.Routing` (the router, pause on route
disconnect, echo cancellation, headset profiles) and :class:`~.readmodel.ReadModel` (what D-Bus
shows).
The runtime folds events in, runs a decision pass once per loop turn whatever the number of
changes, and reports an internal error (a bug) instead of enforcing half.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Callable

import pluggy

from ..appsessions import AppSessions
from ..backends.base import Backend, Event, Module, ServerInfo
from ..journal import Journal
from ..microphone.broker import Gate, MicrophoneBroker
from ..microphone.gate import MicrophoneGate, ModuleTrust
from ..model import Player, Stream, StreamKind
from ..policy import PolicySet
from .actuator import Actuator
from .connection import Connection
from .mirror import Mirror
from .ownership import Ownership
from .passes import DecisionPass
from .pauses import Pauses
from .readmodel import ReadModel, StreamView
from .recovery import Recovery
from .routes import Routing
from .tasks import Tasks

logger = logging.getLogger(__name__)

#: Seconds: a decision pass (with its routing) that took this long or longer delays the next
#: one by as long (:meth:`Runtime._schedule`); a quicker one never does.
THROTTLE_FROM = 0.001


class Runtime:
    """The daemon's runtime state and the loop that enforces it.

    :param backend: the audio server connection
    :param journal: the effects journal
    :param policies: a callable returning the policy set in force
    :param pm: plugin manager (classification and interaction hooks)
    :param pauser: object with async ``pause(bus_name)`` / ``play(bus_name)``
        (:class:`~audiopolicyd.mpris.MprisWatcher`), or None where no session bus is reachable
    :param seq: the activation counter, shared with the explicit sessions
    """

    def __init__(self, backend: Backend, journal: Journal, policies: Callable[[], PolicySet],
                 pm: pluggy.PluginManager | None = None, pauser=None,
                 seq: itertools.count | None = None):
        self.backend = backend
        self.journal = journal
        #: ``on_failure(exc)``: an internal error stopped enforcement (a bug): the daemon must
        #: restore what it can and exit non-zero. Called once, on the event loop.
        self.on_failure: Callable[[BaseException], None] | None = None
        self.failed: BaseException | None = None
        self._app_sessions: AppSessions | None = None
        self._microphone: MicrophoneBroker | None = None
        self.tasks = Tasks(self._fail)
        self.mirror = Mirror(backend, self.tasks, self._folded, self._removed,
                             self._route_soon, self._schedule)
        self.connection = Connection(backend, self.mirror.connected, self.resync, self.handle,
                                     self._lost)
        self.ownership = Ownership(self._schedule)
        self.actuator = Actuator(backend, self.mirror, journal, self.tasks)
        self.recovery = Recovery(journal, self.mirror, self.actuator)
        self.trust = ModuleTrust(journal)
        self.gate: MicrophoneGate | None = None
        self.pauses = Pauses(journal, self.mirror, self.tasks,
                             lambda: self.decisions.retry_journal())
        self.pauses.pauser = pauser
        self.decisions = DecisionPass(policies, pm, seq or itertools.count(1), self.mirror,
                                      self.ownership, self.actuator, self.pauses, journal,
                                      self._schedule)
        self.routing = Routing(backend, journal, self.tasks, self.mirror, self.trust,
                               self.decisions, self.pauses, policies, pm, self._schedule,
                               lambda: self._app_sessions, lambda: self.connection.server)
        r = self.routing
        self.router, self.disconnect, self.echo, self.headsets = (
            r.router, r.disconnect, r.echo, r.headsets)
        self.read = ReadModel(self.mirror, self.decisions, lambda: self._app_sessions)
        #: Listeners: ``on_effects(changed: list[StreamView])``, ``on_streams(added, removed)``,
        #: ``on_server(connected: bool)``. Called on the event loop; must not block.
        self.on_effects = self.read.on_effects
        self.on_streams = self.read.on_streams
        self.on_server = self.connection.on_server
        #: ``on_pass()`` after every decision pass (effects and routes decided), on the event
        #: loop; must not block. A listener that raises is logged, never stops enforcement.
        self.on_pass: list[Callable[[], None]] = []
        self.connected = self.mirror.connected
        self._scheduled = False
        self._routing = False  # a route() is scheduled
        self._pass_cost = 0.0  # seconds the last pass and its routing took (loop time)
        self._pass_end = 0.0  # when they ended (loop time)
        self._probes: list[asyncio.Future] = []  # answers() waiting for the next pass

    # -- wiring (set before run) --------------------------------------------------------------

    @property
    def app_sessions(self) -> AppSessions | None:
        """The explicit sessions (:class:`~audiopolicyd.appsessions.AppSessions`), if any."""
        return self._app_sessions

    @app_sessions.setter
    def app_sessions(self, sessions: AppSessions | None) -> None:
        self._app_sessions = self.ownership.app_sessions = self.decisions.app_sessions = sessions

    @property
    def microphone(self) -> MicrophoneBroker | None:
        """Microphone permission (:class:`~audiopolicyd.microphone.broker.MicrophoneBroker`),
        enforced by the gate; None: recordings are not brokered."""
        return self._microphone

    @microphone.setter
    def microphone(self, broker: MicrophoneBroker | None) -> None:
        self._microphone = broker
        self.gate = None if broker is None else MicrophoneGate(
            broker, self.mirror, self.actuator, self.trust, lambda: self._app_sessions,
            self._restores_late)
        self.mirror.guard = self.decisions.gate = self.gate

    @property
    def pauser(self):
        return self.pauses.pauser

    @pauser.setter
    def pauser(self, pauser) -> None:
        self.pauses.pauser = pauser

    @property
    def policies(self) -> Callable[[], PolicySet]:
        return self.decisions.policies

    @policies.setter
    def policies(self, policies: Callable[[], PolicySet]) -> None:
        self.decisions.policies = self.router.policies = policies

    # -- state, read only ---------------------------------------------------------------------

    server = property(lambda self: self.connection.server)
    stopping = property(lambda self: self.connection.stopping)
    streams = property(lambda self: self.mirror.streams)
    devices = property(lambda self: self.mirror.devices)
    players = property(lambda self: self.mirror.players)
    applied = property(lambda self: self.actuator.applied)
    claims = property(lambda self: self.pauses.claims)
    effects = property(lambda self: self.decisions.effects)
    sessions = property(lambda self: self.decisions.sessions)
    classified = property(lambda self: self.decisions.classified)
    trusted_modules = property(lambda self: self.trust.trusted)

    @property
    def gates(self) -> dict[str, Gate]:
        """Source-output key -> the gate last enforced on it (empty without a broker)."""
        return self.gate.gates if self.gate is not None else {}

    # -- running ------------------------------------------------------------------------------

    async def run(self, on_first_attempt: Callable[[], None] | None = None) -> None:
        """Connect, follow events, reconnect with backoff when the server goes away. Forever
        (see :meth:`Connection.run <audiopolicyd.runtime.connection.Connection.run>`)."""
        await self.connection.run(on_first_attempt)

    def stop(self) -> None:
        """The daemon is stopping: :meth:`run` ends rather than reconnect when the connection
        closes."""
        self.connection.stopping = True

    async def restore_all(self) -> None:
        """Undo every effect and resume every player we paused (daemon shutdown); see
        :meth:`Recovery.restore_all <audiopolicyd.runtime.recovery.Recovery.restore_all>`."""
        await self.routing.stop()
        await self.recovery.restore_all(self.tasks, self.pauses)

    async def resync(self) -> None:
        """Re-read the whole graph, adopt the journal, and reconcile."""
        server = self.connection.server
        self.trust.load(server.cookie if server is not None else 0, await self.backend.modules())
        await self.routing.resync(server.cookie if server is not None else 0)
        devices = await self.backend.devices()
        streams = await self.backend.streams()
        self.mirror.load(devices, streams)
        await self.routing.read_defaults()
        self.recovery.adopt_journal()
        self.pauses.recover()
        if self.gate is not None:
            self.gate.mute_unreadable(self.backend.unreadable_ids(StreamKind.SOURCE_OUTPUT))
        self.reconcile()

    def handle(self, event: Event) -> None:
        """Fold one server event into the mirror (fetching what it names, concurrently)."""
        logger.debug("event %s %s %d", event.type, event.facility, event.index)
        self.routing.event(event)  # before the mirror forgets a removed device
        if not self.mirror.handle(event) and event.facility == "module" \
                and event.type in ("new", "remove"):
            self.trust.module_event(event.index, event.type)

    def trust_own_module(self, module: Module) -> None:
        """See :meth:`ModuleTrust.trust_own_module
        <audiopolicyd.microphone.gate.ModuleTrust.trust_own_module>`."""
        self.trust.trust_own_module(module)

    def players_changed(self, players: dict[str, Player], changed: Player | None) -> None:
        """MPRIS watcher callback: a player came, went or changed status."""
        self.pauses.players_changed(players, changed)
        self._schedule()

    def policies_changed(self) -> None:
        """The policy set in force changed: classify everything again."""
        self.decisions.class_cache.clear()
        self._schedule()

    def sleep_changed(self, start: bool) -> None:
        """logind's ``PrepareForSleep(start)`` (:mod:`audiopolicyd.sleep`): from a suspend to
        a while after the resume, the route changes the devices make are ``wakeFromSleep``
        (:meth:`Router.sleep_changed <audiopolicyd.runtime.router.Router.sleep_changed>`)."""
        self.routing.router.sleep_changed(start)

    def request_reconcile(self) -> None:
        """Decide again soon (sessions changed)."""
        self._schedule()

    def reconcile(self) -> None:
        """Decide, journal, then send every write at once; route once the writes are out (at
        once when the pass wrote nothing; a resync's pass routes once connected)."""
        spawned = self.tasks.spawned
        self.read.changed(self.decisions.run())
        if self._routing:
            return
        self._routing = True
        if self.tasks.spawned == spawned and self.connected.is_set():
            self._scheduled_route()
            return
        # Two loop turns later, as the read model's signals: the write tasks the pass created
        # run on the next turn and libpulse flushes their requests on the turn after; routing
        # (a few hundred µs) must not hold up a duck.
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.call_soon, self._scheduled_route)

    def route(self) -> None:
        """Route every session of the last decision pass, and tell the pass listeners."""
        self.decisions.route()
        self.routing.passed(self.decisions.sessions)
        for listener in list(self.on_pass):
            try:
                listener()
            except Exception:  # what a listener tells is not enforcement
                logger.exception("a decision-pass listener failed")

    async def answers(self, timeout: float) -> bool:
        """Whether a decision pass runs, and succeeds, within ``timeout`` seconds: the
        systemd watchdog is pinged only then (a loop blocked or a runtime that failed is
        not alive, whatever timers still fire).

        :param timeout: seconds
        """
        if self.failed is not None:
            return False
        probe = asyncio.get_running_loop().create_future()
        self._probes.append(probe)
        self._schedule()
        try:
            return await asyncio.wait_for(probe, timeout)
        except asyncio.TimeoutError:
            return False

    # -- read side ----------------------------------------------------------------------------

    def view(self, key: str) -> StreamView:
        return self.read.view(key)

    def views(self) -> list[StreamView]:
        return self.read.views()

    def explain(self, target: str) -> dict:
        """See :meth:`ReadModel.explain <audiopolicyd.runtime.readmodel.ReadModel.explain>`."""
        return self.read.explain(target)

    # -- inside -------------------------------------------------------------------------------

    def _folded(self, old: Stream | None, stream: Stream, fresh: bool) -> None:
        """A read was folded into the mirror: holds, recovery, the user's changes, a pass."""
        key = stream.key
        self.routing.folded(old, stream)
        if old is None:
            if stream.kind is StreamKind.SINK_INPUT and stream.linked and not stream.settled:
                self.ownership.hold(key)  # pipewire-pulse: linked, not started yet; react now
            if key not in self.actuator.applied and stream.settled:
                self.recovery.adopt_lingering(stream)
            self.read.added(key)
            self._schedule()
            return
        if fresh:
            self.actuator.observe(stream)
        if old.playing and not stream.playing:
            self.ownership.hold(key)
        elif stream.playing:
            self.ownership.playing(key)
        if not old.settled and stream.settled:
            # its volume is the user's now (pipewire-pulse delivers it after linking): decide
            if key not in self.actuator.applied:
                self.recovery.adopt_lingering(stream)
            self._schedule()
        if (old.corked != stream.corked or old.properties != stream.properties
                or old.muted != stream.muted or old.device != stream.device
                or (stream.kind is StreamKind.SOURCE_OUTPUT and old.volume != stream.volume)):
            self._schedule()

    def _removed(self, key: str) -> None:
        self.ownership.forget(key)
        self.actuator.forget(key)
        self.routing.forget(key)
        self.decisions.effects.pop(key, None)
        if self.gate is not None:
            self.gate.forget(key)
        self._schedule()
        self.read.removed([key])

    def _lost(self) -> None:
        self.actuator.lost()
        self.routing.lost()
        gone = self.mirror.reset()
        self.ownership.lost()
        if self.gate is not None:
            self.gate.lost()
        self.trust.reset()
        self.decisions.reset()
        self.backend.close()
        if gone:
            self.read.removed(gone)

    def _restores_late(self) -> bool:
        """Whether the server links a new stream at volume 0 before its restored volume
        arrives (pipewire-pulse with WirePlumber; PulseAudio restores before announcing)."""
        server: ServerInfo | None = self.connection.server
        return server is not None and server.pipewire

    def _schedule(self) -> None:
        """Reconcile once on the next loop iteration, however many changes come before it.

        When the last pass and its routing took :data:`THROTTLE_FROM` or more, not before as
        long again has gone by since they ended: in a burst of changes passes take at most half
        the loop's time. 50 calls moved at once bring one read, and so one pass, each: 1.7 ms
        apiece, back to back, they held up the reads and moves they were waiting for
        (bench/routing.py). A change after a quiet moment is decided on the next iteration."""
        if not self._scheduled:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            wait = self._pass_cost - (loop.time() - self._pass_end) \
                if self._pass_cost >= THROTTLE_FROM else 0
            if wait > 0:
                loop.call_later(wait, self._scheduled_reconcile)
            else:
                loop.call_soon(self._scheduled_reconcile)

    def _route_soon(self) -> None:
        """A device came, changed or went: route on the next loop iteration, without a
        decision pass (what a pass decides does not depend on the devices: a stream the server
        moves makes events of its own, a device's going reacts through :mod:`.disconnect`, a
        monitor a stream records asks for a pass). Nothing when a pass or a routing is coming:
        it routes on the graph as it is then."""
        if self._scheduled or self._routing:
            return
        self._routing = True
        asyncio.get_running_loop().call_soon(self._scheduled_route)

    def _scheduled_reconcile(self) -> None:
        self._scheduled = False
        if self.connected.is_set() or self.mirror.streams:
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                self.reconcile()
            except Exception as exc:  # a bug: never go on half-enforcing
                self._fail(exc)
            self._pass_end = loop.time()
            self._pass_cost = self._pass_end - start
            return  # the probes are answered once the pass has routed
        self._answer_probes()

    def _scheduled_route(self) -> None:
        self._routing = False
        if self.failed is not None:
            return
        if not self.connected.is_set():
            self._answer_probes()  # the pass itself ran; there is no graph to route now
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            self.route()
        except Exception as exc:  # a bug: never go on half-enforcing
            self._fail(exc)
            return
        self._pass_end = loop.time()
        self._pass_cost += self._pass_end - start
        self._answer_probes()

    def _answer_probes(self) -> None:
        probes, self._probes = self._probes, []
        for probe in probes:
            if not probe.done():
                probe.set_result(True)

    def _fail(self, exc: BaseException) -> None:
        """An internal error: enforcement cannot be trusted any more (see :attr:`on_failure`)."""
        logger.critical("internal error in the runtime; stopping", exc_info=exc)
        if self.failed is None:
            self.failed = exc
            if self.on_failure is not None:
                self.on_failure(exc)
