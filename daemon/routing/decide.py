"""The routing decisions with the plugins a category's policy enables: the route, the
reactions to a route change, the processing of a session. Pure: plugins return decisions and
never touch the server; the runtime applies them.
"""

from __future__ import annotations

import logging
from typing import Iterable

from ..model import Session
from ..pluginmanager import PluginManager, call_for
from ..policy import Policy
from ..route import (
    DIRECTIONS, PROCESSING, PortChoice, RouteChange, RouteDecision, RoutedStream, RouteReaction,
    RouteRequest,
)
from .choose import default_choice, unrouted

logger = logging.getLogger(__name__)

#: The mode that never gets processing (Apple's ``measurement``).
NO_PROCESSING_MODE = "measurement"


def decide_route(pm: PluginManager, request: RouteRequest, policy: Policy) -> RouteDecision:
    """The output and input of ``request``'s category (the order of
    :mod:`audiopolicyd.routing.choose`): the directions the category does not use have none,
    then ``choose_route`` plugins, then the default rule.

    :param pm: the plugin manager
    :param request: what the route is decided from (:func:`~audiopolicyd.routing.choose.request`)
    :param policy: the category's policy
    :returns: the decision; a port is None where nothing suitable is present
    """
    out, into = (_choose(pm, d, request, policy) for d in DIRECTIONS)
    return RouteDecision(output=out, input=into)


def _choose(pm: PluginManager, direction: str, request: RouteRequest,
            policy: Policy) -> PortChoice:
    fixed = unrouted(direction, policy)
    if fixed is not None:
        return fixed
    choice = call_for(pm, "choose_route", policy, direction=direction, request=request,
                      policy=policy)
    if choice is not None:
        if isinstance(choice, PortChoice) and (choice.port is None
                                               or choice.port in request.ports(direction)):
            return choice
        logger.warning("a choose_route plugin answered %r for %s's %s, not a port present; "
                       "ignored", choice, policy.category, direction)
    return default_choice(direction, request, policy)


def react_to_route_change(pm: PluginManager, change: RouteChange,
                          streams: Iterable[RoutedStream],
                          policy: Policy) -> tuple[RouteReaction, ...]:
    """Every enabled plugin's reactions to a category's route change.

    :param streams: the category's streams, each with the device it was on before the change
    :returns: the reactions for those streams (a reaction naming another stream, or that is
        not a :class:`~audiopolicyd.route.RouteReaction`, is dropped with a warning)
    """
    streams = tuple(streams)
    keys = {s.key for s in streams}
    out = []
    for answer in call_for(pm, "react_to_route_change", policy, change=change,
                           streams=streams, policy=policy):
        for reaction in answer if isinstance(answer, (tuple, list)) else (answer,):
            if isinstance(reaction, RouteReaction) and reaction.stream in keys:
                out.append(reaction)
            else:
                logger.warning("a react_to_route_change plugin answered %r for %s; ignored",
                               reaction, policy.category)
    return tuple(out)


def propose_processing(pm: PluginManager, session: Session, policy: Policy) -> tuple[str, ...]:
    """The processing a session gets while active: none in mode ``measurement``, else the
    first ``propose_processing`` answer, its unknown names dropped with a warning.

    :returns: names of :data:`audiopolicyd.route.PROCESSING`, empty for none
    """
    if session.mode == NO_PROCESSING_MODE:
        return ()
    answer = call_for(pm, "propose_processing", policy, session=session, policy=policy) or ()
    if not isinstance(answer, (tuple, list)):
        answer = (answer,)
    unknown = [name for name in answer if name not in PROCESSING]
    if unknown:
        logger.warning("processing %r proposed for session %s is unknown; ignored",
                       unknown, session.id)
    return tuple(name for name in answer if name in PROCESSING)
