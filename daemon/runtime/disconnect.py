"""Pause on route disconnect: Apple's ``prefersInterruptionOnRouteDisconnect`` in the runtime.

When the device a playing stream is on goes away, the categories whose policy enables the
``pause_on_route_disconnect`` plugin (``playback``) have the stream muted at once, its player
paused through MPRIS, and the explicit session it belongs to interrupted with reason
``routeDisconnected`` (as iOS 17 interrupts the Now Playing session). The decision is the
plugins' (:func:`audiopolicyd.routing.decide.react_to_route_change`); this module applies it.

*At once* means on the earliest event that says the device is going, because the server moves
the stream to another device by itself (measured in docs/routing.md, "What the servers do"):

* PulseAudio rescues the stream inside the unload: the stream's ``change`` (now on the default
  sink) arrives 0.5-2.3 ms **before** the sink's ``remove``. So every device change of a
  stream is remembered for :data:`MOVE_MEMORY` s, and a ``remove`` of the device it came from
  within that time makes the move the server's rescue;
* WirePlumber moves it about 15 ms **after** the ``remove``: the stream is still on the
  device when the ``remove`` arrives.

Either way the reaction is taken on the device's ``remove`` event, and the mute goes out in the
decision pass of the same loop turn. A route change the router reports later
(:meth:`Disconnect.route_changed`, ``oldDeviceUnavailable``: also a jack whose port was
unplugged while the sink stays) reacts for the streams not handled yet.

The mute is an effect like the engine's (a :class:`Hold` merged into the decision,
:meth:`Disconnect.effects`): journalled before the write, undone by recovery after a crash (a
restarted daemon does not know the hold: the stream is unmuted), lingering for a stream that
goes. It holds until:

* the user unmutes the stream (the effects' ``mute_waived``: the user's act wins);
* the app plays it again: the stream was corked (paused: the player we paused, or the app
  itself) for at least :data:`PAUSED_AT_LEAST` s and is uncorked;
* the stream goes.

A new stream of the same app is not muted: the app played again (the old stream keeps its mute
until one of the above). The pause is not claimed for a resume (:meth:`Pauses.pause_for_good
<audiopolicyd.runtime.pauses.Pauses.pause_for_good>`): nothing gives the headphones back, as
on iOS, where the app must not resume on ``oldDeviceUnavailable``.

The router must not take the server's rescue move for the user's: :meth:`Disconnect.rescued`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Iterable

from ..model import Action, Effect, Reason, Session, Stream
from ..pluginmanager import PluginManager
from ..policy import Policy
from ..route import (
    INPUT, OUTPUT, PortChoice, RouteChange, RouteChangeReason, RouteDecision, RoutedStream,
)
from ..routing.choose import unrouted
from ..routing.decide import react_to_route_change
from ..routing.ports import route_port
from .mirror import Mirror
from .passes import DecisionPass
from .pauses import Pauses

logger = logging.getLogger(__name__)

#: Seconds a stream's move from a device is remembered: a ``remove`` of that device within
#: them makes the move the server's rescue (PulseAudio: the move comes 0.5-2.3 ms before the
#: ``remove``; generous for a loaded machine, short beside a user's move then unplug).
MOVE_MEMORY = 0.25
#: Seconds after a device's ``remove`` during which a move of a stream that was on it is the
#: server's (WirePlumber moves it 12-69 ms after; PulseAudio before: see :data:`MOVE_MEMORY`;
#: with 50 streams WirePlumber moves them to the default device again, after the router's own
#: move, for up to ~3.5 s: bench/routing.py).
RESCUE_WINDOW = 5.0
#: Seconds a held stream must stay corked for its uncorking to be its app playing again:
#: pipewire-pulse shows a stream corked for a moment while WirePlumber moves it (its node is not
#: running), also on the new device (seen in 2 of 10 unplugs), and uncorks it after.
PAUSED_AT_LEAST = 0.2
#: The plugin table whose reactions this module applies (``Reason.rule``).
RULE = "plugins.pause_on_route_disconnect"


@dataclasses.dataclass
class Hold:
    """A stream muted because its device went, until the user unmutes it or it plays again.

    :param device: the id of the device that went
    :param reason: why, as the stream's effect shows it (``explain``)
    :param applied: True once our mute was seen in force (the effects' ``muted_by_us``)
    :param corked: when (monotonic s) the stream was seen corked since, None while it was not
        (paused: uncorking after :data:`PAUSED_AT_LEAST` is playing again)
    """

    device: str
    reason: Reason
    applied: bool = False
    corked: float | None = None


class Disconnect:
    """Mutes, pauses and interrupts what played on a device that went.

    :param mirror: the graph (streams, devices, players)
    :param decisions: the decision pass (policies, plugins, the streams' categories and
        sessions, the explicit sessions); its :meth:`~DecisionPass.run` merges
        :meth:`effects`
    :param pauses: where the players are paused
    :param schedule: asks for a decision pass (on the next loop turn)
    :param clock: monotonic seconds (tests)
    """

    def __init__(self, mirror: Mirror, decisions: DecisionPass, pauses: Pauses,
                 schedule: Callable[[], None], clock: Callable[[], float] = time.monotonic):
        self.mirror = mirror
        self.decisions = decisions
        self.pauses = pauses
        self.schedule = schedule
        self.clock = clock
        #: Streams muted because their device went, by stream id.
        self.holds: dict[str, Hold] = {}
        #: Names of the cards whose profile the daemon is switching (a headset to HSP/HFP for
        #: a call and back): their devices that go are a ``routeConfigurationChange``, not a
        #: disconnect (a call's music, interrupted already, must be resumed after it).
        self.switching: set[str] = set()
        self._moves: dict[str, tuple[str, float]] = {}  # stream -> (device it left, when)
        self._rescues: dict[str, float] = {}  # stream -> when its device went

    # -- what the router asks ---------------------------------------------------------------

    def rescued(self, key: str) -> bool:
        """Whether the stream's latest move is the server's, off a device that went (PulseAudio's
        rescue, WirePlumber's move), not the user's: True from its device's ``remove`` event
        for :data:`RESCUE_WINDOW` s.

        On PulseAudio the move is seen 0.5-2.3 ms before the ``remove``: a pass in between
        sees a move off a device still listed; the router should take a move for the user's
        only once the device list read after it still has the old device.

        :param key: the stream's id
        """
        when = self._rescues.get(key)
        return when is not None and self.clock() - when <= RESCUE_WINDOW

    # -- events (from the runtime) ------------------------------------------------------------

    def device_removed(self, device: str) -> None:
        """A sink's or source's ``remove`` event (before the mirror forgets it): react for the
        streams on it, and those the server moved off it just before.

        :param device: the device's id
        """
        now = self.clock()
        on_it = [s for k, s in self.mirror.streams.items()
                 if s.device == device or (k in self._moves and self._moves[k][0] == device
                                           and now - self._moves[k][1] <= MOVE_MEMORY)]
        for stream in on_it:
            self._rescues[stream.key] = now
        if not on_it:
            return
        gone = self.mirror.devices.get(device)
        if gone is not None and gone.card is not None and gone.card in self.switching:
            logger.debug("%s goes with the profile switch of card %s: no disconnect", device,
                         gone.card)
            return
        port = route_port(gone) if gone is not None else None
        way = INPUT if gone is not None and gone.kind == "source" else OUTPUT
        by_category: dict[str, list[Stream]] = {}
        for stream in on_it:
            category = self.decisions.classified.get(stream.key, ("", ""))[0]
            by_category.setdefault(category, []).append(stream)
        for category, streams in by_category.items():
            policy = self.decisions.policies().policies.get(category)
            if policy is None:
                continue  # not classified yet, or a server module's stream
            previous = _decision(policy, way, PortChoice(
                port, f"{port.port_type if port else 'unknown'}: the device the streams were on"))
            current = _decision(policy, way, PortChoice(None, "none: the device went; the "
                                                              "server moves its streams"))
            change = RouteChange(category, RouteChangeReason.oldDeviceUnavailable, previous,
                                 current, gone=frozenset({device}))
            self._react(change, policy, [RoutedStream(s.key, device, s.playing)
                                         for s in streams])

    def route_changed(self, session_id: str, change: RouteChange,
                      streams: tuple[RoutedStream, ...]) -> None:
        """A listener of the router's route changes (``Router.on_route_change``): an
        ``oldDeviceUnavailable`` change (or a ``wakeFromSleep`` one whose device went during
        the suspend) reacts for the streams not held already (a jack whose port was unplugged,
        the sink staying, has no ``remove`` event).

        :param session_id: the session whose route changed
        :param change: the change
        :param streams: the session's streams, each with the device it was on before
        """
        if change.reason is not RouteChangeReason.oldDeviceUnavailable and not (
                change.reason is RouteChangeReason.wakeFromSleep and change.gone):
            return
        policy = self.decisions.policies().policies.get(change.category)
        if policy is not None:
            self._react(change, policy, [s for s in streams if s.key not in self.holds])

    def folded(self, old: Stream | None, stream: Stream) -> None:
        """A read of a stream was folded in: remember a move, and see it corked or played
        again."""
        key = stream.key
        if old is not None and old.device != stream.device and old.device:
            self._moves[key] = (old.device, self.clock())
        hold = self.holds.get(key)
        if hold is None:
            return
        if stream.corked:
            if hold.corked is None:
                hold.corked = self.clock()
        elif hold.corked is not None and self.clock() - hold.corked < PAUSED_AT_LEAST:
            hold.corked = None  # the server's moment (see PAUSED_AT_LEAST), not a pause
        elif hold.corked is not None:
            logger.info("%s (%s) plays again after its device %s went; unmuted", key,
                        stream.label, hold.device)
            del self.holds[key]
            self.schedule()

    def forget(self, key: str) -> None:
        """A stream went (its row, if muted, lingers with the actuator's)."""
        self.holds.pop(key, None)
        self._moves.pop(key, None)
        self._rescues.pop(key, None)

    def lost(self) -> None:
        """The server went: every stream with it."""
        self.holds.clear()
        self._moves.clear()
        self._rescues.clear()

    # -- the decision pass --------------------------------------------------------------------

    def effects(self, decided: dict[str, Effect]) -> dict[str, Effect]:
        """The engine's decision with the holds' mutes merged in (a hold the user waived by
        unmuting ends here).

        :param decided: stream id -> the engine's effect, for every stream
        :returns: the same, a held stream's effect muted with the hold's reason
        """
        applied = self.decisions.actuator.applied
        for key, hold in list(self.holds.items()):
            row = applied.get(key)
            if row is None:
                ended = hold.applied  # our mute was undone
            else:  # the user unmuted: before or after we saw our mute in force
                ended = row.mute_waived or (hold.applied and not row.muted_by_us)
            if ended:
                logger.info("the user unmuted %s after its device %s went; the mute ends",
                            key, hold.device)
                del self.holds[key]
                continue
            hold.applied = row is not None and row.muted_by_us
            effect = decided.get(key)
            if effect is not None:
                decided[key] = dataclasses.replace(effect, mute=True,
                                                   reasons=(*effect.reasons, hold.reason))
        self._expire()
        return decided

    # -- inside -------------------------------------------------------------------------------

    def _react(self, change: RouteChange, policy: Policy,
               streams: Iterable[RoutedStream]) -> None:
        """Ask the plugins, then mute, pause and interrupt as they say."""
        pm = self.decisions.pm
        streams = tuple(streams)
        if not isinstance(pm, PluginManager) or not streams:
            return
        reactions = react_to_route_change(pm, change, streams, policy)
        if not reactions:
            return
        snap = self.mirror.snapshot()
        owners = _explicit_owners(self.decisions.sessions)
        interrupted: set[str] = set()
        device = next(iter(change.gone), "")
        for reaction in reactions:
            stream = self.mirror.streams.get(reaction.stream)
            if stream is None:
                continue  # went meanwhile: nothing to mute
            logger.info("%s (%s): %s", stream.key, stream.label, reaction.reason)
            row = self.decisions.actuator.applied.get(stream.key)
            users = stream.muted and not (row is not None and row.muted_by_us)
            if reaction.mute and not users and stream.key not in self.holds:
                self.holds[stream.key] = Hold(device, Reason(
                    Action.SILENCE.value, f"routeDisconnected:{device}", change.category,
                    policy.file, RULE))
            player = snap.player_for(stream) if reaction.pause else None
            if player is not None and player.status == "Playing":
                self.pauses.pause_for_good(player.bus_name)
            if stream.key in owners:
                interrupted.add(owners[stream.key])
        sessions = self.decisions.app_sessions
        if sessions is not None:
            for session_id in sorted(interrupted):
                sessions.route_disconnected(session_id)
        self.schedule()

    def _expire(self) -> None:
        now = self.clock()
        self._moves = {k: m for k, m in self._moves.items() if now - m[1] <= MOVE_MEMORY}
        self._rescues = {k: t for k, t in self._rescues.items() if now - t <= RESCUE_WINDOW}


def _decision(policy: Policy, way: str, choice: PortChoice) -> RouteDecision:
    """A route decision of *policy*'s category with *choice* in direction *way* (the other
    direction as the category has it, unknown here)."""
    unknown = PortChoice(None, "unknown")
    out, into = (choice, unknown) if way == OUTPUT else (unknown, choice)
    return RouteDecision(output=unrouted(OUTPUT, policy) or out,
                         input=unrouted(INPUT, policy) or into)


def _explicit_owners(sessions: Iterable[Session]) -> dict[str, str]:
    """Stream id -> the id of the explicit session it belongs to."""
    return {key: s.id for s in sessions if s.explicit for key in s.streams}
