"""Which device a category's streams go to, and why: the default rule, and route changes.

The whole decision for one direction (output or input), in order (plugins first, see
:mod:`audiopolicyd.routing.decide`):

1. a category that does not play has no output, one that does not record no input;
2. the plugins the category's policy enables (``choose_route``; for ``playAndRecord`` the
   ``call_route`` plugin: Apple's speaker override, ``defaultToSpeaker``);
3. for an input, the session's preferred input (``SetPreferredInput``) when it is present; a
   preferred input that is gone is ignored and the reason says so;
4. the policy's ``[route]`` preferences (``route.output`` / ``route.input``), first present
   wins: a port type takes the first port of that type present (the user's default device
   when it is of that type), ``default`` takes the user's default device. Port types are
   Apple's (:mod:`audiopolicyd.routing.ports`): a ``builtInReceiver`` is taken only where one
   is present (almost no PC has one);
5. nothing present: no port (``noSuitableRouteForCategory``); the runtime leaves the streams
   where they are.

Bluetooth, as Apple: in a category that offers the option ``allowBluetooth`` (its policy's
``options``), ``bluetoothHFP`` ports are used only by sessions that take it; in a category that
offers ``allowBluetoothA2DP`` (``playAndRecord``), ``bluetoothA2DP`` outputs only by sessions
that take it. Other categories use both freely, also as the user's default. A legacy app's
streams take no options: a call from an app that knows nothing of the daemon does not go to
a Bluetooth headset unless the headset is the user's default and the category lets it.

Devices are named by their ids (:attr:`audiopolicyd.model.Device.id`); the user's default
sink and source are given by id too (the runtime maps the server's default names to ids).
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

from ..limits import quote
from ..model import Device, Session
from ..policy import Policy
from ..route import (
    BLUETOOTH_A2DP, BLUETOOTH_HFP, DEFAULT, INPUT, OUTPUT, OVERRIDE_NONE, PortChoice,
    RouteChange, RouteChangeReason, RouteDecision, RoutePort, RouteRequest,
)
from .ports import direction as direction_of
from .ports import route_port

logger = logging.getLogger(__name__)

#: The option a category may require before a port type is used, per direction (see the
#: module docstring).
GATED = {(BLUETOOTH_HFP, OUTPUT): "allowBluetooth", (BLUETOOTH_HFP, INPUT): "allowBluetooth",
         (BLUETOOTH_A2DP, OUTPUT): "allowBluetoothA2DP"}
_DEVICE_WORD = {OUTPUT: "sink", INPUT: "source"}


def request(devices: Mapping[str, Device] | Iterable[Device], category: str, *,
            default_output: str = "", default_input: str = "", session: Session | None = None,
            override: str = OVERRIDE_NONE, preferred_input: str = "") -> RouteRequest:
    """What a route is decided from, for a category (and one of its sessions).

    :param devices: every sink and source: ``Snapshot.devices`` (by id) or the devices
        themselves; monitors are left out of the inputs
    :param category: the category
    :param default_output: the id of the user's default sink, '' when unknown
    :param default_input: the id of the user's default source, '' when unknown
    :param session: the session whose route is decided (its mode and options count), None for
        a legacy app's streams (mode ``default``, no options)
    :param override: the session's output override (``none`` | ``speaker``)
    :param preferred_input: the uid of the session's preferred input, '' for none
    """
    outputs: list[RoutePort] = []
    inputs: list[RoutePort] = []
    for device in devices.values() if isinstance(devices, Mapping) else devices:
        port = route_port(device)
        if port is not None:
            (outputs if direction_of(device) == OUTPUT else inputs).append(port)
    return RouteRequest(category=category, outputs=tuple(outputs), inputs=tuple(inputs),
                        default_output=default_output, default_input=default_input,
                        mode=session.mode if session else "default",
                        options=session.options if session else frozenset(),
                        override=override, preferred_input=preferred_input)


def refusal(port: RoutePort, direction: str, request: RouteRequest, policy: Policy) -> str:
    """Why ``port`` may not be used by this request ('' when it may): an option the category
    offers and the session does not take (see the module docstring)."""
    option = GATED.get((port.port_type, direction))
    if option and option in policy.options and option not in request.options:
        return f"{port.port_type} needs the option {option}"
    return ""


def first_of_type(request: RouteRequest, direction: str, port_type: str) -> RoutePort | None:
    """The port of ``port_type`` present in ``direction``: the user's default device when it is
    of that type, else the first in the server's order; None when there is none."""
    ports = [p for p in request.ports(direction) if p.port_type == port_type]
    default = request.default(direction)
    return next((p for p in ports if p.device == default), ports[0] if ports else None)


def by_preference(direction: str, request: RouteRequest, policy: Policy,
                  preferences: Iterable[str] | None = None) -> PortChoice:
    """The first of ``preferences`` present and usable (rule 4 of the module docstring).

    :param preferences: port types and ``default``; None: the policy's ``route.output`` or
        ``route.input``
    :returns: the choice; its port is None when none is present (reason ``none: ...``)
    """
    prefs = tuple(policy.route.output if direction == OUTPUT else policy.route.input) \
        if preferences is None else tuple(preferences)
    notes = []
    for pref in prefs:
        if pref == DEFAULT:
            default = request.default(direction)
            port = next((p for p in request.ports(direction) if p.device == default), None)
            why = f"the user's default {_DEVICE_WORD[direction]} ({port.port_type})" if port \
                else ""
        else:
            port = first_of_type(request, direction, pref)
            why = f"first of {policy.category}'s route.{direction} present"
        if port is None:
            continue
        refused = refusal(port, direction, request, policy)
        if refused:
            notes.append(f"{pref} skipped: {refused}")
            continue
        return PortChoice(port, _with_notes(f"{pref}: {why}", notes))
    return PortChoice(None, _with_notes(
        f"none: nothing of {policy.category}'s route.{direction} ({', '.join(prefs)}) is "
        "present; the streams stay where they are", notes))


def default_choice(direction: str, request: RouteRequest, policy: Policy) -> PortChoice:
    """The choice when no plugin decides: the preferred input (inputs only), then the policy's
    preferences (rules 3 to 5 of the module docstring)."""
    notes = []
    wanted = request.preferred_input
    if direction == INPUT and wanted:
        port = next((p for p in request.inputs if p.uid == wanted), None)
        refused = refusal(port, direction, request, policy) if port else "it is not present"
        if port is not None and not refused:
            return PortChoice(port, f"{port.port_type}: the session's preferred input "
                                    f"{quote(wanted)}")
        notes.append(f"preferred input {quote(wanted)} ignored: {refused}")
    choice = by_preference(direction, request, policy)
    return PortChoice(choice.port, _with_notes(choice.reason, notes))


def unrouted(direction: str, policy: Policy) -> PortChoice | None:
    """The choice of a direction the category does not use (rule 1), else None."""
    if direction == OUTPUT and not policy.plays:
        return PortChoice(None, f"none: {policy.category} does not play")
    if direction == INPUT and not policy.records:
        return PortChoice(None, f"none: {policy.category} does not record")
    return None


def _with_notes(reason: str, notes: list[str]) -> str:
    return f"{reason} ({'; '.join(notes)})" if notes else reason


def unplugged(was: Device, now: Device) -> bool:
    """True when the port ``was`` used is unplugged in ``now`` (same device, the server says
    the port is not available: a laptop's headphones jack; the sink stays, its port changes)."""
    return bool(was.active_port) and now.active_port != was.active_port and any(
        p.name == was.active_port and p.available == "no" for p in now.ports)


def _gone(before: Mapping[str, Device], after: Mapping[str, Device]) -> frozenset[str]:
    return frozenset(i for i, was in before.items()
                     if i not in after or unplugged(was, after[i]))


def change_reason(previous: RouteDecision, current: RouteDecision,
                  before: Mapping[str, Device], after: Mapping[str, Device], *,
                  category_changed: bool = False,
                  override_changed: bool = False) -> RouteChangeReason | None:
    """Apple's reason for a route change, None when the route did not change.

    The first that holds, in this order:

    1. ``routeConfigurationChange``: a device of the previous route changed its Bluetooth
       profile, or went while a device of its card appeared (a profile switch: PulseAudio
       replaces a Bluetooth card's sink);
    2. ``oldDeviceUnavailable``: a device of the previous route went, or the port it used was
       unplugged (:func:`unplugged`);
    3. ``noSuitableRouteForCategory``: a direction that had a port has none now;
    4. ``categoryChange``: ``category_changed``;
    5. ``override``: ``override_changed``;
    6. ``newDeviceAvailable``: the current route uses a device that appeared, or a port that
       became available (a jack plugged in);
    7. ``routeConfigurationChange`` for any other change of a device's active port (the user
       chose another port), else ``unknown`` (the user changed the default device, an option
       changed...).

    ``wakeFromSleep`` is the runtime's to say (the server's devices came back after a
    suspend); this function never returns it.

    :param previous: the decision before
    :param current: the decision now
    :param before: the devices before, by id (``Snapshot.devices``)
    :param after: the devices now, by id
    :param category_changed: the session's category changed between the two decisions
    :param override_changed: the session's output override changed between them
    """
    if previous.route == current.route:
        return None
    appeared = set(after) - set(before)
    old = [d for d in (previous.output.device, previous.input.device) if d and d in before]
    for device_id in old:
        was, now = before[device_id], after.get(device_id)
        if now is not None and now.bluetooth_profile != was.bluetooth_profile:
            return RouteChangeReason.routeConfigurationChange
        if now is None and was.card and any(after[i].card == was.card for i in appeared):
            return RouteChangeReason.routeConfigurationChange
    if any(d in _gone(before, after) for d in old):
        return RouteChangeReason.oldDeviceUnavailable
    if (previous.output.port and not current.output.port) or \
            (previous.input.port and not current.input.port):
        return RouteChangeReason.noSuitableRouteForCategory
    if category_changed:
        return RouteChangeReason.categoryChange
    if override_changed:
        return RouteChangeReason.override
    for chosen in (current.output.device, current.input.device):
        if not chosen:
            continue
        if chosen in appeared:
            return RouteChangeReason.newDeviceAvailable
        prior, present = before.get(chosen), after.get(chosen)
        if prior is not None and present is not None \
                and present.active_port != prior.active_port:
            plugged = any(p.name == present.active_port and p.available == "yes"
                          for p in present.ports)
            return RouteChangeReason.newDeviceAvailable if plugged \
                else RouteChangeReason.routeConfigurationChange
    return RouteChangeReason.unknown


def route_change(category: str, previous: RouteDecision, current: RouteDecision,
                 before: Mapping[str, Device], after: Mapping[str, Device], *,
                 category_changed: bool = False,
                 override_changed: bool = False) -> RouteChange | None:
    """The :class:`RouteChange` between two decisions (:func:`change_reason`, with the devices
    that went, or whose port in use was unplugged, and those that appeared), None when the
    route did not change."""
    reason = change_reason(previous, current, before, after, category_changed=category_changed,
                           override_changed=override_changed)
    if reason is None:
        return None
    return RouteChange(category=category, reason=reason, previous=previous, current=current,
                       gone=_gone(before, after), appeared=frozenset(set(after) - set(before)))
