"""What the read side shows of routing (``Manager.GetRoutes``, ``audiopolicyctl routes`` and
``explain``): every device with its port type, where each category and each session routes and
why, and what the user chose. Pure: reads the :class:`~.router.Router`'s state.
"""

from __future__ import annotations

import logging
from typing import Any

from ..model import Session
from ..route import INPUT, OUTPUT, PortChoice, RouteDecision
from ..routing.ports import direction, route_port
from .router import Router

logger = logging.getLogger(__name__)


def _choice(prefix: str, choice: PortChoice) -> dict[str, str]:
    port = choice.port
    return {prefix: port.uid if port else "", f"{prefix}Type": port.port_type if port else "",
            f"{prefix}Reason": choice.reason}


def _decision(decision: RouteDecision) -> dict[str, str]:
    return {**_choice("Output", decision.output), **_choice("Input", decision.input)}


def route_table(router: Router) -> dict[str, list[dict[str, Any]]]:
    """Routing as of the router's last pass.

    :returns: ``Devices`` (``Id``, ``Name``, ``Description``, ``Direction`` (``output`` |
        ``input``), ``PortType``, ``Uid``, ``Default`` (bool)); ``Categories`` (``Category``,
        then ``Output``, ``OutputType``, ``OutputReason``, ``Input``, ``InputType``,
        ``InputReason`` as a legacy app's stream of that category would be routed, and
        ``Preference``: the port uid the user chose, '' for none); ``Sessions`` (``Session``,
        ``Category``, the same six route keys); ``Pins`` (``Application``, ``Category``,
        ``Direction``, ``Device``: where the user put an app's streams). Every value is a
        string but ``Default``.
    """
    snap = router.snapshot
    defaults = set(router.default_ids(snap).values())
    devices = []
    for device in snap.devices.values():
        port = route_port(device)
        if port is not None:
            devices.append({"Id": device.id, "Name": device.name,
                            "Description": port.port_name, "Direction": direction(device),
                            "PortType": port.port_type, "Uid": port.uid,
                            "Default": device.id in defaults})
    categories = []
    for category in sorted(router.policies().policies):
        decision = router.decide(snap, Session(id=f"category:{category}", app_key="",
                                               category=category))
        if decision is not None:
            categories.append({"Category": category, **_decision(decision),
                               "Preference": router.store.preferences.get(category, "")})
    sessions = [{"Session": sid, **_decision(decision)}
                for sid, decision in sorted(router.routes.items())]
    pins = [{"Application": app, "Category": category, "Direction": way, "Device": device}
            for (app, category, way), device in sorted(router.store.pins.items())]
    return {"Devices": devices, "Categories": categories, "Sessions": sessions, "Pins": pins}


def stream_route(router: Router, key: str) -> str:
    """Why a stream is on its device ('' when the router does not route it)."""
    return router.reasons.get(key, "")


def session_route(router: Router, session_id: str) -> list[str]:
    """A session's route and why: ``output: <reason>``, ``input: <reason>`` (empty when the
    router has not routed it)."""
    decision = router.routes.get(session_id)
    if decision is None:
        return []
    return [f"{way}: {decision.choice(way).reason}" for way in (OUTPUT, INPUT)]
