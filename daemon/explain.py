"""What ``Explain`` says of a stream or a session: one pure function each, no I/O.

The daemon's read side (``Manager.Explain``, ``audiopolicyctl explain``) and the offline
simulation (``audiopolicyctl policy simulate``, :mod:`audiopolicyd.simulate`) build their
answers here, so a simulated stream is explained with exactly the words of a live one. Keys are
the D-Bus ``a{sv}`` keys of ``Explain`` (PascalCase, see docs/dbus-api.md); values are plain
Python strings, booleans and lists of strings.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

from .model import NEUTRAL, Effect, Session, Stream
from .policy import Policy

logger = logging.getLogger(__name__)


def stream_explanation(target: str, stream: Stream, category: str, rule: str, session: str,
                       effect: Effect, policies: Mapping[str, Policy]) -> dict[str, Any]:
    """Why a stream has its effect.

    :param target: the name it was asked by (``sink-input:12``, or a scenario's stream name)
    :param stream: the stream
    :param category: its category (``""`` for a server module's infrastructure stream)
    :param rule: what chose the category (``playback.toml: classify[0]``, ``session s1``)
    :param session: the id of its session, ``""`` if in none
    :param effect: the effect in force
    :param policies: the policies in force, by category
    :returns: ``Target``, ``Kind`` (``sink-input`` | ``source-output``), ``Application``,
        ``Category``, ``ChosenBy``, ``Session``, ``Policy`` (the category's file, ``""`` if
        none), ``Effect`` (:attr:`Effect.summary`) and ``Reasons`` (one
        :class:`~audiopolicyd.model.Reason` string each: action, session, policy file, key)
    """
    return {"Target": target, "Kind": stream.kind.value, "Application": stream.app_name,
            "Category": category, "ChosenBy": rule, "Session": session,
            "Policy": policies[category].file if category in policies else "",
            "Effect": effect.summary, "Reasons": [str(r) for r in effect.reasons]}


def session_explanation(target: str, session: Session, effects: Mapping[str, Effect],
                        policies: Mapping[str, Policy], state: str | None = None,
                        interrupted_by: Iterable[str] = ()) -> dict[str, Any]:
    """Why a session is as it is.

    :param target: the name it was asked by (``s1``, an object path, ``implicit:...``)
    :param session: the engine's session
    :param effects: the effect in force on every stream, by stream key (a stream missing is
        taken as unaffected)
    :param policies: the policies in force, by category
    :param state: an explicit session's state (``active`` | ``delayed`` | ``interrupted`` |
        ``inactive``, as :attr:`~audiopolicyd.appsessions.AppSession.state`); None: from
        :attr:`Session.active`
    :param interrupted_by: ids of the sessions interrupting an explicit session
    :returns: ``Target``, ``Kind`` (``session``), ``Session``, ``Category``, ``Mode``,
        ``Options``, ``Active``, ``State``, ``InterruptedBy``, ``ChosenBy``, ``Policy``,
        ``Streams`` and ``Reasons`` (every distinct reason acting on its streams, sorted)
    """
    reasons = sorted({str(r) for k in session.streams for r in effects.get(k, NEUTRAL).reasons})
    return {"Target": target, "Kind": "session", "Session": session.id,
            "Category": session.category, "Mode": session.mode,
            "Options": sorted(session.options), "Active": session.active,
            "State": state or ("active" if session.active else "inactive"),
            "InterruptedBy": sorted(interrupted_by),
            "ChosenBy": session.rule, "Policy": policies[session.category].file,
            "Streams": list(session.streams), "Reasons": reasons}
