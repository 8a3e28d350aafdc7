"""The read side: what D-Bus and the CLI show of the runtime (streams with their category,
session and effect; ``Explain``), and the listeners told what each pass changed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Callable

from ..appsessions import AppSessions
from ..explain import session_explanation, stream_explanation
from ..logsetup import log_effect
from ..model import NEUTRAL, Effect, Stream
from .mirror import Mirror
from .passes import DecisionPass
from .routeview import session_route, stream_route

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StreamView:
    """What the read side (D-Bus, CLI) shows of one stream.

    :param stream: the stream as last read
    :param category: its category
    :param rule: the classification rule that chose it
    :param session: the id of its session
    :param effect: the effect in force
    """

    stream: Stream
    category: str
    rule: str
    session: str
    effect: Effect


class ReadModel:
    """Views of the mirror and the last pass; notifies listeners of what changed.

    :param mirror: the streams
    :param decisions: the last pass's classification, sessions and effects
    :param app_sessions: returns the explicit sessions, if any
    """

    def __init__(self, mirror: Mirror, decisions: DecisionPass,
                 app_sessions: Callable[[], AppSessions | None]):
        self.mirror = mirror
        self.decisions = decisions
        self.app_sessions = app_sessions
        #: Listeners: ``on_effects(changed: list[StreamView])``, ``on_streams(added, removed)``.
        #: Called on the event loop; must not block.
        self.on_effects: list[Callable[[list[StreamView]], None]] = []
        self.on_streams: list[Callable[[list[StreamView], list[str]], None]] = []
        self._added: list[str] = []
        self._changed: set[str] = set()
        self._scheduled = False

    # -- notifications ------------------------------------------------------------------------

    def added(self, key: str) -> None:
        """A stream came into the mirror: announced after the next pass."""
        self._added.append(key)

    def removed(self, keys: list[str]) -> None:
        """Streams left the mirror: announced now."""
        for cb in self.on_streams:
            cb([], keys)

    def changed(self, keys: list[str]) -> None:
        """A pass changed the effects of *keys*: announce them, and the streams added, soon."""
        self._changed.update(keys)
        if (self._added or self._changed) and not self._scheduled:
            # Two loop turns later: the write tasks the pass created run on the next turn and
            # queue their requests, which libpulse flushes from a deferred callback on the turn
            # after; signals and logs must not hold up that flush.
            self._scheduled = True
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._notify)

    def _notify(self) -> None:
        """Tell listeners (D-Bus signals, logs, systemd status) what the last passes did."""
        self._scheduled = False
        streams = self.mirror.streams
        added = [self.view(k) for k in self._added if k in streams]
        changed = [self.view(k) for k in sorted(self._changed) if k in streams]
        self._added.clear()
        self._changed.clear()
        if added:
            for cb in self.on_streams:
                cb(added, [])
        if changed:
            for view in changed:
                log_effect(logger, view)
            for cb in self.on_effects:
                cb(changed)

    # -- views --------------------------------------------------------------------------------

    def view(self, key: str) -> StreamView:
        """The read-side view of one stream.

        :raises KeyError: when no stream has that key
        """
        stream = self.mirror.streams[key]
        d = self.decisions
        category, rule = d.classified.get(key, ("", ""))
        session = next((s.id for s in d.sessions if key in s.streams), "")
        return StreamView(stream, category, rule, session, d.effects.get(key, NEUTRAL))

    def views(self) -> list[StreamView]:
        """Every stream, ordered by kind and index."""
        streams = self.mirror.streams
        return [self.view(k) for k in sorted(streams, key=lambda k: (
            streams[k].kind.value, streams[k].index))]

    def explain(self, target: str) -> dict:
        """Why a stream or a session is as it is.

        :param target: a stream key (``sink-input:12``), a session id (``s1``,
            ``session:s1``, ``implicit:...``) or a session object path
        :returns: a flat dictionary: what it is, its category and the rule or session that chose
            it, its effect, and every reason (session, policy file, key); ``Route``: for a
            stream why it is on its device, for a session ``output: ...`` and ``input: ...``
            (the router's reasons, empty when not routed)
        :raises KeyError: when nothing has that name
        """
        d = self.decisions
        policies = d.policies().policies
        if target in self.mirror.streams:
            view = self.view(target)
            return {**stream_explanation(target, view.stream, view.category, view.rule,
                                         view.session, view.effect, policies),
                    "Route": stream_route(d.router, target) if d.router else ""}
        sid = target.rsplit("/", 1)[-1]
        sid = sid if sid.startswith(("implicit:", "session:")) else f"session:{sid}"
        session = next((s for s in d.sessions if s.id == sid), None)
        if session is None:
            raise KeyError(target)
        sessions = self.app_sessions()
        app = (sessions.sessions.get(sid.split(":", 1)[1])
               if sessions is not None and session.explicit else None)
        return {**session_explanation(target, session, d.effects, policies,
                                      app.state if app else None,
                                      app.interrupted_by if app else ()),
                "Route": session_route(d.router, sid) if d.router else []}
