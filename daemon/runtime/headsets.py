"""A Bluetooth headset's profile follows the call (issue 11, "Bluetooth").

A headset offers A2DP (good playback, no microphone) and HSP/HFP (the headset's microphone, and
narrow-band playback). As iOS does for a call with ``allowBluetooth``, :class:`HeadsetProfiles`
switches a headset's card to its HSP/HFP profile only while an active ``playAndRecord`` session
whose options have ``allowBluetooth`` records (one of its recording streams runs), and back to
the profile it had (A2DP) when no such session records any more (it stops recording, is
deactivated, changes category or options, or goes with its client), and when the daemon stops.

Which card: a Bluetooth card (``device.api`` ``bluez``/``bluez5`` or ``device.bus=bluetooth``
on the card: :func:`bluetooth_card`) with an available HSP/HFP profile (:func:`head_unit`) that
is not in it already; the one whose device is the server's default sink first (the headset the
user listens on), else the first the server lists. In A2DP the headset has no microphone to
record from: the call's recording is what asks for it, and the route then takes the headset's
``bluetoothHFP`` input and output (the ``playAndRecord`` policy prefers them, and
``allowBluetooth`` lets the session use them).

The server replaces the card's devices on a switch (the A2DP sink goes, the headset sink and
source come; docs/routing.md); the session's route changes with reason
``routeConfigurationChange`` (Apple's: "the configuration for a set of I/O ports has changed"):
:func:`configuration_change` makes the router's :class:`~audiopolicyd.route.RouteChange` say so
when the new route uses a card this switched (the runtime gives it to the router as
``Router.revise``; the pure core's rule 1 already says it for a route whose device went while a
device of its card appeared: the switch back).

No Bluetooth adapter exists where this was written: it is tested on the fake backend with the
recorded headsets of both servers (tests/support/bluetooth.py), docs/routing.md says so.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Iterable, Mapping

from ..backends.base import (
    Backend, Capability, NoSuchDevice, ProfileUnavailable, ServerInfo, Unsupported,
)
from ..model import Card, Device, Session, StreamKind
from ..route import RouteChange, RouteChangeReason
from ..journal import Journal
from .mirror import Mirror
from .tasks import Tasks

logger = logging.getLogger(__name__)

#: The category and option whose recording switches a headset to HSP/HFP.
CALL_CATEGORY, OPTION = "playAndRecord", "allowBluetooth"


def bluetooth_card(card: Card) -> bool:
    """Whether the card is a Bluetooth device's (PulseAudio's ``module-bluez5-device`` says
    ``device.api=bluez``, PipeWire's ``bluez5``; both ``device.bus=bluetooth``)."""
    p = card.properties
    return p.get("device.api") in ("bluez", "bluez5") or p.get("device.bus") == "bluetooth"


def head_unit(profile: str) -> bool:
    """Whether a profile name is HSP/HFP (PulseAudio ``headset_head_unit``,
    ``handsfree_head_unit``; PipeWire ``headset-head-unit`` and its codec variants)."""
    return "head_unit" in profile or "head-unit" in profile


def call_profile(card: Card) -> str:
    """The card's HSP/HFP profile to switch to ('' when it offers none now): of the available
    ones, a profile that names no codec first (PipeWire's ``headset-head-unit``, whose codec
    the server picks, before ``headset-head-unit-msbc``), then the server's priority, then HFP
    before HSP (PulseAudio's ``handsfree_head_unit`` before ``headset_head_unit``)."""
    offered = [p for p in card.profiles if head_unit(p.name) and p.available]
    best = max(offered, default=None, key=lambda p: (
        p.name.endswith(("head_unit", "head-unit")), p.priority, "handsfree" in p.name))
    return best.name if best is not None else ""


def configuration_change(change: RouteChange, switched: Iterable[str],
                         devices: Mapping[str, Device]) -> RouteChange:
    """*change* with reason ``routeConfigurationChange`` when its new route uses a device of
    a card in *switched* (switched to HSP/HFP for a call), else *change* as it is.

    :param switched: names of the cards switched for calls
    :param devices: the devices now, by id
    """
    chosen = (change.current.output.device, change.current.input.device)
    cards = {devices[d].card for d in chosen if d and d in devices}
    if cards & set(switched) and change.reason is not RouteChangeReason.routeConfigurationChange:
        return dataclasses.replace(change, reason=RouteChangeReason.routeConfigurationChange)
    return change


class HeadsetProfiles:
    """Switches headsets to HSP/HFP for calls that record, and back (see the module
    docstring).

    :param backend: the connection (``cards``, ``set_card_profile``)
    :param mirror: the streams and devices as read
    :param tasks: where the switches run
    :param server: returns the server's info (its default sink's name), None when unknown
    :param journal: where each switch is recorded before it is made, and forgotten once the
        profile is given back: a daemon killed during a call gives it back at its next start
        (:meth:`recover`); None: not recorded
    """

    def __init__(self, backend: Backend, mirror: Mirror, tasks: Tasks,
                 server: Callable[[], ServerInfo | None], journal: Journal | None = None):
        self.backend = backend
        self.mirror = mirror
        self.tasks = tasks
        self.server = server
        self.journal = journal
        #: The cards switched for calls: name -> the profile they had (given back after).
        self.switched: dict[str, str] = {}
        self._calls: frozenset[str] = frozenset()  # sessions recording with allowBluetooth
        self._running = False
        self._again = False
        self._stopping = False  # the daemon stops: no more switching to HSP/HFP

    def calls(self, sessions: list[Session]) -> frozenset[str]:
        """The ids of the sessions that want a headset's microphone now."""
        out = set()
        for session in sessions:
            if not (session.explicit and session.active and session.category == CALL_CATEGORY
                    and OPTION in session.options):
                continue
            streams = (self.mirror.streams.get(k) for k in session.streams)
            if any(s is not None and s.kind is StreamKind.SOURCE_OUTPUT and s.playing
                   for s in streams):
                out.add(session.id)
        return frozenset(out)

    def update(self, sessions: list[Session]) -> None:
        """After each decision pass: switch when the set of calls that want a headset's
        microphone starts or ends."""
        if self._stopping or Capability.CARD_PROFILES not in self.backend.capabilities:
            return
        calls = self.calls(sessions)
        if bool(calls) != bool(self._calls):
            self._calls = calls
            self._sync()
        self._calls = calls

    def card_event(self) -> None:
        """A card came, went or changed: a headset that connects during a call is switched
        too."""
        if self._calls:
            self._sync()

    def _sync(self) -> None:
        if self._running:
            self._again = True
            return
        self._running = True
        self.tasks.spawn(self._switch())

    async def _switch(self) -> None:
        try:
            while True:
                self._again = False
                await self._switch_once()
                if not self._again:
                    return
        finally:
            self._running = False

    async def _switch_once(self) -> None:
        try:
            cards = await self.backend.cards()
        except Unsupported:
            return
        if self._calls:
            if not self.switched:
                card = self._headset(cards)
                if card is not None:
                    await self._set(card, call_profile(card), card.active_profile)
            return
        for card in cards:
            if card.name in self.switched:
                await self._set(card, self.switched[card.name], "")
        self.switched.clear()

    def _headset(self, cards: list[Card]) -> Card | None:
        """The headset to switch: a Bluetooth card with an HSP/HFP profile it is not in, the
        one of the default sink first."""
        candidates = [c for c in cards if bluetooth_card(c) and call_profile(c)
                      and not head_unit(c.active_profile)]
        info = self.server()
        default = info.default_sink if info is not None else ""
        listening = {d.card for d in self.mirror.devices.values() if d.name == default}
        return next((c for c in candidates if c.name in listening),
                    candidates[0] if candidates else None)

    async def _set(self, card: Card, profile: str, before: str) -> None:
        """Switch *card* to *profile*; *before*: the profile to give back later ('' when this
        is the giving back)."""
        if before:  # before the server's events: the route change they cause is ours
            self.switched[card.name] = before
            if self.journal is not None:
                info = self.server()
                self.journal.record_switched_card(info.cookie if info else 0, card.name, before)
        try:
            await self.backend.set_card_profile(card, profile)
        except (NoSuchDevice, ProfileUnavailable) as exc:
            logger.warning("Bluetooth card %s not switched to %s: %s", card.name, profile, exc)
            self.switched.pop(card.name, None)
            if before or isinstance(exc, NoSuchDevice):  # still in its own profile, or gone
                self._forget(card.name)
            return
        if not before:
            self._forget(card.name)
        logger.info("Bluetooth card %s switched to %s (%s)", card.name, profile,
                    "a call records" if before else "no call records any more")

    def _forget(self, card: str) -> None:
        if self.journal is not None:
            self.journal.forget_switched_card(card)

    def recover(self, cookie: int) -> None:
        """At a (re)connection: the cards a killed run of the daemon switched on this server
        instance are given back their profile once no call records (the next pass, unless a
        call that wants the headset records by then); the records of another instance are
        forgotten (its cards started afresh)."""
        if self.journal is None:
            return
        for record_cookie, card, profile in self.journal.switched_cards():
            if record_cookie != cookie:
                self._forget(card)
            elif card not in self.switched:
                logger.warning("Bluetooth card %s was switched for a call by an earlier run of "
                               "the daemon: %s is given back once no call records", card,
                               profile)
                self.switched[card] = profile
        if self.switched:
            self._calls = frozenset({"(recovered)"})

    async def stop(self) -> None:
        """The daemon is stopping: give every switched card its profile back, and switch no
        more."""
        self._stopping = True
        self._calls = frozenset()
        if self.switched:
            try:
                cards = await self.backend.cards()
            except Unsupported:
                return
            for card in cards:
                if card.name in self.switched:
                    await self._set(card, self.switched[card.name], "")
            self.switched.clear()

    def lost(self) -> None:
        """The connection is gone: a restarted server starts its cards afresh; the same server
        keeps the switch, given back once no call records (the next pass)."""
        self._calls = frozenset({"(reconnected)"}) if self.switched else frozenset()
