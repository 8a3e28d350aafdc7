"""Routing in the runtime, wired together: the :class:`~.router.Router` (each session's route,
the moves), :class:`~.disconnect.Disconnect` (pause on route disconnect),
:class:`~.processing.EchoCancel` (a call's echo canceller) and
:class:`~.headsets.HeadsetProfiles` (a headset's HFP profile while a call records). The runtime
hands them its events and passes through this one object.
"""

from __future__ import annotations

import logging
from typing import Callable

import pluggy

from ..backends.base import Backend, Event, ServerInfo
from ..journal import Journal
from ..microphone.gate import ModuleTrust
from ..model import Session, Stream
from ..policy import PolicySet
from .disconnect import Disconnect
from .headsets import HeadsetProfiles, configuration_change
from .mirror import Mirror
from .passes import DecisionPass
from .pauses import Pauses
from .processing import EchoCancel, route_masters, wants_echo_cancel
from .router import Router
from .routestore import RouteStore
from .tasks import Tasks

logger = logging.getLogger(__name__)


class Routing:
    """The routing parts of a runtime, wired to each other and to the decision pass.

    :param backend: the audio server connection
    :param journal: the effects journal (its file also keeps the route store, its own modules)
    :param tasks: where the parts' reads and writes run
    :param mirror: the graph
    :param trust: the microphone gate's module trust (the echo canceller is our own module)
    :param decisions: the decision pass (it runs the router after the effects)
    :param pauses: MPRIS pauses (a disconnect pauses a player for good)
    :param policies: returns the policy set in force
    :param pm: the plugin manager (routing hooks)
    :param schedule: asks for a decision pass soon
    :param app_sessions: returns the explicit sessions, if any
    :param server: returns the server connected to, if any
    """

    def __init__(self, backend: Backend, journal: Journal, tasks: Tasks, mirror: Mirror,
                 trust: ModuleTrust, decisions: DecisionPass, pauses: Pauses,
                 policies: Callable[[], PolicySet], pm: pluggy.PluginManager | None,
                 schedule: Callable[[], None], app_sessions: Callable,
                 server: Callable[[], ServerInfo | None]):
        self.router = decisions.router = Router(backend, tasks, policies, pm,
                                                RouteStore(journal.path), schedule, app_sessions)
        #: Pause on route disconnect; :meth:`Disconnect.rescued` tells a server's move.
        self.disconnect = decisions.disconnect = Disconnect(mirror, decisions, pauses, schedule)
        # a jack whose port was unplugged (no remove event) reacts on the router's change
        self.router.on_route_change.append(self.disconnect.route_changed)
        # WirePlumber moves a vanished device's streams again after the router's own move
        self.router.moves.server_moved = self.disconnect.rescued
        self.router.moves.read = mirror.reread  # a move's check read lands in the mirror
        self.echo = EchoCancel(backend, mirror, trust, journal, tasks, schedule,
                               lambda: getattr(server(), "cookie", 0))
        mirror.annotate = self.echo.annotate
        self.router.processing = self.echo.processing  # the router moves a call's streams
        self.echo.wants = wants_echo_cancel(pm, lambda: decisions.policies())
        self.echo.masters = route_masters(self.router)
        self.headsets = HeadsetProfiles(backend, mirror, tasks, server, journal)
        self.mirror = mirror
        self._gone_early: set[str] = set()  # sinks whose monitor's removal came first
        self.router.revise = lambda change, devices: configuration_change(
            change, self.headsets.switched, devices)

    async def resync(self, cookie: int) -> None:
        """A new connection, before the graph is read: unload a canceller a crash left, give
        back a headset's profile a crash left switched (once no call records)."""
        await self.echo.recover(cookie)
        self.headsets.recover(cookie)

    async def read_defaults(self) -> None:
        """After the graph is read: the server's default devices."""
        await self.router.read_defaults()

    async def stop(self) -> None:
        """The daemon stops: unload our canceller, give headsets their profile back."""
        await self.echo.stop()
        await self.headsets.stop()

    def event(self, event: Event) -> None:
        """A server event, before the mirror folds it in (it forgets a removed device)."""
        if event.facility == "card":
            self.headsets.card_event()  # a headset that connects during a call
        elif event.facility == "server":
            self.router.server_changed()
        if event.type == "new":
            self._gone_early.discard(event.id)  # pipewire-pulse reuses a removed one's index
        if event.type == "remove" and event.facility in ("sink", "source"):
            gone = self.mirror.devices.get(event.id)
            if gone is not None and gone.monitor_of in self.mirror.devices:
                # a sink's monitor goes just before the sink (PulseAudio's order, after its
                # rescue moved the sink's streams): the sink is going, and is gone for the
                # mirror from here (Mirror.handle): react for it now
                self._gone_early.add(gone.monitor_of)
                self.disconnect.device_removed(gone.monitor_of)
            elif event.id in self._gone_early:
                self._gone_early.discard(event.id)  # reacted for at its monitor's removal
            else:
                self.disconnect.device_removed(event.id)

    def folded(self, old: Stream | None, stream: Stream) -> None:
        self.disconnect.folded(old, stream)

    def passed(self, sessions: list[Session]) -> None:
        """After a decision pass (effects and routes decided)."""
        self.echo.update(sessions)
        self.headsets.update(sessions)

    def forget(self, key: str) -> None:
        """A stream went."""
        self.disconnect.forget(key)
        self.router.forget(key)

    def lost(self) -> None:
        """The connection is gone."""
        self.disconnect.lost()
        self.echo.lost()
        self.headsets.lost()
        self.router.lost()
