"""The decision pass: snapshot -> classification and sessions -> :func:`~audiopolicyd.engine.decide`
-> :func:`~audiopolicyd.effects.plan` -> journal -> actuator, all at once (the writes are
pipelined). Pure planning stays in :mod:`audiopolicyd.engine` and :mod:`audiopolicyd.effects`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from typing import TYPE_CHECKING, Callable

import pluggy

from .. import effects as fx
from ..appsessions import AppSessions
from ..engine import classify, decide
from ..journal import Journal
from ..microphone.broker import Gate
from ..microphone.gate import MicrophoneGate
from ..model import NEUTRAL, Effect, Session, Snapshot, freeze
from ..policy import PolicySet
from ..sessions import ImplicitSessions
from .actuator import Actuator
from .mirror import Mirror
from .ownership import Ownership
from .pauses import Pauses
from .router import Router

if TYPE_CHECKING:  # disconnect imports this module
    from .disconnect import Disconnect

logger = logging.getLogger(__name__)

#: While the journal cannot be written, how often a decision is tried again, in seconds.
JOURNAL_RETRY = 5.0


class DecisionPass:
    """Decides what every stream gets and makes it so; keeps what the last pass decided.

    :param policies: returns the policy set in force
    :param pm: plugin manager (classification and interaction hooks)
    :param seq: the activation counter, shared with the explicit sessions
    :param mirror: the graph the pass decides on
    :param ownership: stream owners and deactivation holds
    :param actuator: journals and writes what is planned
    :param pauses: pauses and resumes players as the effects want
    :param journal: the effects journal
    :param schedule: asks for another pass soon (the journal may be writable again)
    """

    def __init__(self, policies: Callable[[], PolicySet], pm: pluggy.PluginManager | None,
                 seq: itertools.count, mirror: Mirror, ownership: Ownership, actuator: Actuator,
                 pauses: Pauses, journal: Journal, schedule: Callable[[], None]):
        self.policies = policies
        self.pm = pm
        self.mirror = mirror
        self.ownership = ownership
        self.actuator = actuator
        self.pauses = pauses
        self.journal = journal
        self.schedule = schedule
        self.gate: MicrophoneGate | None = None
        self.app_sessions: AppSessions | None = None
        #: Merges the route-disconnect mutes into the decision (:mod:`.disconnect`).
        self.disconnect: Disconnect | None = None
        #: Routes every session after the decisions (:class:`~.router.Router`), if set.
        self.router: Router | None = None
        self.sessions: list[Session] = []
        self.classified: dict[str, tuple[str, str]] = {}  # key -> (category, rule)
        self.effects: dict[str, Effect] = {}  # what each stream is shown to get
        self.class_cache: dict = {}
        self._tracker = ImplicitSessions(seq)
        self._journal_retry: asyncio.TimerHandle | None = None

    def reset(self) -> None:
        """The connection is gone."""
        self.effects.clear()
        self.classified.clear()
        self.class_cache.clear()
        self.sessions = []

    def run(self) -> list[str]:
        """Decide, journal, then send every write at once.

        :returns: the keys of the streams whose effect changed
        """
        policies, gate = self.policies(), self.gate
        owned = self.ownership.owners(self.mirror.streams)
        if gate is not None:
            gate.enforce(owned)
        snap = self.mirror.snapshot()
        self._sessions(snap, owned, policies)
        decided = decide(snap, self.sessions, policies, self.pm)
        if self.disconnect is not None:
            decided = self.disconnect.effects(decided)
        if gate is not None:
            gate.lift(decided)
        desired = self._apply(snap, decided)
        changed = [k for k, e in desired.items() if self.effects.get(k, NEUTRAL) != e]
        self.effects = desired
        if gate is not None:
            gate.publish(owned, decided)
        self.pauses.apply(snap, desired, self.sessions)
        if self.app_sessions is not None:
            self.app_sessions.update(self.sessions)
        return changed

    def route(self) -> None:
        """Route the sessions of the last pass (:class:`~.router.Router`), on the graph as it
        is now; the recordings the microphone gate holds stay where they are."""
        if self.router is not None:
            self.router.run(self.mirror.snapshot(), self.sessions,
                            {k for k, g in self._gates().items() if g is Gate.BLOCKED})

    def _sessions(self, snap: Snapshot, owned: dict[str, str], policies: PolicySet) -> None:
        """Classify the streams of no explicit session into implicit sessions; add the
        explicit sessions with their streams."""
        legacy = Snapshot(freeze({k: s for k, s in snap.streams.items() if k not in owned}),
                          snap.devices, snap.players) if owned else snap
        self.classified = classify(legacy, policies, self.pm, self.class_cache)
        # a microphone stream the gate silences does not act on others (issue 9 item 6)
        inert = {k for k, gate in self._gates().items() if gate is Gate.BLOCKED}
        self.sessions = self._tracker.update(legacy, self.classified, self.ownership.held(),
                                             inert)
        if self.app_sessions is None:
            return
        members: dict[str, list[str]] = {}
        for key, sid in owned.items():
            if sid:
                members.setdefault(sid, []).append(key)
        for sid, session in self.app_sessions.sessions.items():
            self.sessions.append(session.model(sorted(members.get(sid, ()))))
            for key in members.get(sid, ()):
                self.classified[key] = (session.category, f"session {sid}")

    def _apply(self, snap: Snapshot, decided: dict[str, Effect]) -> dict[str, Effect]:
        """Plan, journal and start the writes; returns what is applied now (a stream that is
        not settled yet shows no effect: its volume is not the user's yet)."""
        desired = dict(decided)
        applied, gates = self.actuator.applied, self._gates()
        plans: dict[str, tuple[fx.Applied | None, fx.Applied | None, fx.Ops]] = {}
        for key, effect in decided.items():
            stream = snap.streams[key]
            before = applied.get(key)
            if before is None and not stream.settled:
                desired[key] = NEUTRAL  # planned, and reported, once settled
                continue
            after, ops = fx.plan(before, stream, effect)
            if ops.mute is False and gates.get(key) is Gate.BLOCKED:
                ops = dataclasses.replace(ops, mute=None)  # permission keeps it muted
            if after != before or not ops.empty:
                plans[key] = (before, after, ops)
        upserts = {k: after for k, (before, after, _) in plans.items()
                   if after is not None and after != before}
        if upserts and not self.journal.write(upserts.values()):
            # Fail safe: what the journal cannot record is not applied (a crash would leave it
            # for good); undoing goes on. Tried again by the next decision.
            for key in upserts:
                del plans[key]
                desired[key] = self.effects.get(key, NEUTRAL)
            self.retry_journal()
        for key, (before, after, ops) in plans.items():
            self.actuator.apply(snap.streams[key], before, after, ops)
        return desired

    def _gates(self) -> dict[str, Gate]:
        return self.gate.gates if self.gate is not None else {}

    def retry_journal(self) -> None:
        """Decide again in :data:`JOURNAL_RETRY` s (the journal may be writable by then)."""
        if self._journal_retry is None:
            def retry() -> None:
                self._journal_retry = None
                self.schedule()
            self._journal_retry = asyncio.get_running_loop().call_later(JOURNAL_RETRY, retry)
