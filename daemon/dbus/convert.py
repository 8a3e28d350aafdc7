"""Model and domain values as D-Bus values, and D-Bus arguments checked against their bounds.

Pure: no bus. Every string and array a client sends is checked against its bound
(:mod:`audiopolicyd.limits`) before anything else is done with it: ``Error.InvalidArgument``
beyond it.
"""

from __future__ import annotations

import logging
from typing import Any

from dbus_fast import DBusError, Variant

from ..errors import InvalidArgument
from ..limits import (
    HINT_KEY_CHARS, HINTS_ITEMS, IDENTIFIER_CHARS, NAME_CHARS, OPTIONS_ITEMS, check_text,
    check_texts, quote,
)
from ..names import ERROR_PREFIX
from ..route import Route, RouteChangeReason, RoutePort

logger = logging.getLogger(__name__)


def error(name: str, message: str) -> DBusError:
    """A named D-Bus error: ``io.github.audiopolicyd.AudioPolicy1.Error.<name>``."""
    return DBusError(ERROR_PREFIX + name, message)


#: The hints ``CreateSession`` reads: D-Bus type and bound (characters, or items of ``as``).
SESSION_HINTS = {"Name": ("s", NAME_CHARS), "Category": ("s", IDENTIFIER_CHARS),
                 "Mode": ("s", IDENTIFIER_CHARS), "Options": ("as", OPTIONS_ITEMS)}


def session_hints(hints: dict[str, Variant]) -> dict[str, Any]:
    """``CreateSession``'s ``a{sv}`` as plain values, checked against their bounds.

    Known hints (:data:`SESSION_HINTS`) must have their type; other keys are ignored (a newer
    client may send hints this daemon does not know), but count against
    :data:`~audiopolicyd.limits.HINTS_ITEMS` and :data:`~audiopolicyd.limits.HINT_KEY_CHARS`.

    :returns: ``{"Name": str, "Category": str, "Mode": str, "Options": [str]}``, the given ones
    :raises InvalidArgument: too many hints, a long key, a known hint of another type or
        beyond its bound
    """
    if len(hints) > HINTS_ITEMS:
        raise InvalidArgument(f"CreateSession hints has {len(hints)} entries; the limit is "
                              f"{HINTS_ITEMS}")
    out: dict[str, Any] = {}
    for key, variant in hints.items():
        check_text("a CreateSession hint's key", key, HINT_KEY_CHARS)
        if key not in SESSION_HINTS:
            continue
        signature, bound = SESSION_HINTS[key]
        argument = f"CreateSession hint {key}"
        if variant.signature != signature:
            raise InvalidArgument(f"{argument} must be of type {signature}, not "
                                  f"{quote(variant.signature)}")
        out[key] = (check_text(argument, variant.value, bound) if signature == "s"
                    else check_texts(argument, variant.value, bound, IDENTIFIER_CHARS))
    return out


def category_arguments(category: str, mode: str, options: list[str]) -> None:
    """Check ``SetCategory``'s arguments against their bounds.

    :raises InvalidArgument: beyond a bound
    """
    check_text("SetCategory category", category, IDENTIFIER_CHARS)
    check_text("SetCategory mode", mode, IDENTIFIER_CHARS)
    check_texts("SetCategory options", options, OPTIONS_ITEMS, IDENTIFIER_CHARS)


def stream_dict(view) -> dict[str, Variant]:
    """A :class:`~audiopolicyd.runtime.StreamView` (``stream``, ``effect``, ``category``,
    ``rule``, ``session``) as ``a{sv}``.

    Keys: Key s, Kind s, Index u, Application s, Role s, Category s, Rule s, Session s,
    Effect s, Gain d (linear), Muted b, Corked b, Paused b, Volume au (raw, 65536 = 100 %),
    Reasons as.
    """
    s, e = view.stream, view.effect
    return {
        "Key": Variant("s", s.key),
        "Kind": Variant("s", s.kind.value),
        "Index": Variant("u", s.index),
        "Application": Variant("s", s.app_name),
        "Role": Variant("s", s.properties.get("media.role", "")),
        "Category": Variant("s", view.category),
        "Rule": Variant("s", view.rule),
        "Session": Variant("s", view.session),
        "Effect": Variant("s", e.summary),
        "Gain": Variant("d", e.gain),
        "Muted": Variant("b", s.muted),
        "Corked": Variant("b", s.corked),
        "Paused": Variant("b", e.pause),
        "Volume": Variant("au", list(s.volume)),
        "Reasons": Variant("as", [str(r) for r in e.reasons]),
    }


def port_dict(port: RoutePort) -> dict[str, Variant]:
    """A :class:`~audiopolicyd.route.RoutePort` as ``a{sv}``: Apple's
    ``AVAudioSessionPortDescription`` with snake_case keys: ``port_type`` s (Apple's port type,
    ``usbAudio``), ``port_name`` s (the device's description), ``uid`` s (device name ``/``
    active port name). The device's id stays inside the daemon."""
    return {"port_type": Variant("s", port.port_type), "port_name": Variant("s", port.port_name),
            "uid": Variant("s", port.uid)}


def ports_list(ports) -> list[dict[str, Variant]]:
    """Ports as ``aa{sv}`` (:func:`port_dict` each), in their order (``AvailableInputs``)."""
    return [port_dict(p) for p in ports]


def route_dict(route: Route) -> dict[str, Variant]:
    """A :class:`~audiopolicyd.route.Route` as ``a{sv}``: Apple's
    ``AVAudioSessionRouteDescription``: ``inputs`` and ``outputs``, each ``aa{sv}`` of ports
    (:func:`port_dict`), empty when the route has none (``CurrentRoute``)."""
    return {"inputs": Variant("aa{sv}", ports_list(route.inputs)),
            "outputs": Variant("aa{sv}", ports_list(route.outputs))}


def route_change_dict(reason: RouteChangeReason, previous: Route) -> dict[str, Variant]:
    """``RouteChanged``'s ``a{sv}``: ``reason`` s (Apple's name, ``newDeviceAvailable``),
    ``reason_value`` u (Apple's number, 1), ``previous_route`` a{sv} (:func:`route_dict`):
    ``AVAudioSession.routeChangeNotification``'s userInfo, keys in snake_case as
    ``InterruptionEnded``'s."""
    return {"reason": Variant("s", reason.name), "reason_value": Variant("u", int(reason)),
            "previous_route": Variant("a{sv}", route_dict(previous))}


#: Session properties whose core value is converted before ``PropertiesChanged``.
_SESSION_PROPERTIES = {"CurrentRoute": route_dict, "AvailableInputs": ports_list}


def session_properties(changed) -> dict:
    """A session's changed properties (:mod:`audiopolicyd.appsessions`,
    :mod:`audiopolicyd.sessionroutes`) as dbus-fast's ``emit_properties_changed`` takes them:
    a route and ports as their D-Bus values, the rest as they are."""
    return {k: _SESSION_PROPERTIES[k](v) if k in _SESSION_PROPERTIES else v
            for k, v in changed.items()}


def typed_dict(payload: dict[str, tuple[str, object]]) -> dict[str, Variant]:
    """``{key: (D-Bus signature, value)}`` as ``a{sv}``."""
    return {k: Variant(sig, v) for k, (sig, v) in payload.items()}


def plain_dict(payload) -> dict:
    """A ``{str: python value}`` payload as ``a{sv}``: bool b, int x, float d, a collection
    as (of its items' ``str``), a dictionary ``a{sv}`` (the same rules), anything else s."""
    out = {}
    for key, value in payload.items():
        if isinstance(value, dict):
            out[key] = Variant("a{sv}", plain_dict(value))
        elif isinstance(value, bool):
            out[key] = Variant("b", value)
        elif isinstance(value, int):
            out[key] = Variant("x", value)
        elif isinstance(value, float):
            out[key] = Variant("d", value)
        elif isinstance(value, (list, tuple, set, frozenset)):
            out[key] = Variant("as", [str(v) for v in value])
        else:
            out[key] = Variant("s", str(value))
    return out
