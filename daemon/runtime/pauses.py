"""MPRIS pause bookkeeping: which players an interruption paused (claims, journalled), the
user taking a player back, and resuming at the end (as Android's audio focus loss and gain)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from .. import effects as fx
from ..engine import players_to_pause
from ..journal import Journal
from ..model import Effect, Player, Session, Snapshot
from .mirror import Mirror
from .tasks import Tasks

logger = logging.getLogger(__name__)


class Pauses:
    """The players paused by the daemon, and the pause and play calls that follow a decision.

    :param journal: where claims are recorded (a pause it cannot record is not made)
    :param mirror: holds the players (:attr:`Mirror.players`)
    :param tasks: where pause and play calls run
    :param on_journal_failure: called when the journal cannot record a claim
    """

    def __init__(self, journal: Journal, mirror: Mirror, tasks: Tasks,
                 on_journal_failure: Callable[[], None]):
        self.journal = journal
        self.mirror = mirror
        self.tasks = tasks
        self.on_journal_failure = on_journal_failure
        #: Object with async ``pause(bus_name)`` / ``play(bus_name)``
        #: (:class:`~audiopolicyd.mpris.MprisWatcher`), or None where no session bus is reachable.
        self.pauser = None
        self.claims: dict[str, fx.Claim] = {}

    def recover(self) -> None:
        """Take the journalled claims (at a (re)connection)."""
        self.claims = dict(self.journal.pauses())

    def players_changed(self, players: dict[str, Player], changed: Player | None) -> None:
        """A player came, went or changed status: a user's change waives our claim."""
        self.mirror.players = dict(players)
        if changed is not None:
            claims = fx.observe_player(self.claims, changed)
            if claims is not self.claims:
                if claims[changed.bus_name].waived:
                    logger.info("user changed %s to %s during an interruption; "
                                "it will not be paused or resumed by us", changed.bus_name,
                                changed.status)
                self.claims = dict(claims)
                self.journal.write_pauses(self.claims)

    def apply(self, snap: Snapshot, desired: dict[str, Effect], sessions: list[Session]) -> None:
        """Pause and resume players as the effects just decided want."""
        if self.pauser is None:
            return
        active = {s.id for s in sessions if s.active}
        plan = fx.plan_pauses(self.claims, players_to_pause(snap, desired), self.mirror.players,
                              active)
        if plan.claims != self.claims:
            if not self.journal.write_pauses(plan.claims):
                # fail safe, as for effects: no pause the journal cannot record
                plan = fx.PausePlan({b: c for b, c in plan.claims.items() if b not in plan.pause},
                                    (), plan.resume)
                self.on_journal_failure()
            self.claims = dict(plan.claims)
        for bus in plan.pause:
            self.tasks.spawn(self.pauser.pause(bus))
        for bus in plan.resume:
            self.tasks.spawn(self.pauser.play(bus))

    def pause_for_good(self, bus: str) -> None:
        """Pause a player that nothing of ours will resume (the device it played on went:
        Apple's ``prefersInterruptionOnRouteDisconnect``, see :mod:`.disconnect`). No claim is
        taken; a claim held on it is waived, so that no interruption's end resumes it out of
        another device."""
        if self.pauser is None:
            return
        claim = self.claims.get(bus)
        if claim is not None and not claim.waived:
            self.claims = {**self.claims, bus: dataclasses.replace(claim, waived=True)}
            self.journal.write_pauses(self.claims)
        self.tasks.spawn(self.pauser.pause(bus))

    def resumes(self) -> list:
        """The play calls (coroutines, not started) that give back every player we paused
        and the user did not take back (shutdown)."""
        if self.pauser is None:
            return []
        out = []
        for bus, claim in self.claims.items():
            player = self.mirror.players.get(bus)
            if player is not None and fx.should_resume(claim, player):
                out.append(self.pauser.play(bus))
        return out
