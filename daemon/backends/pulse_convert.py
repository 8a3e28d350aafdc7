"""What the PulseAudio protocol's objects become in the model (pure, no connection).

The ids the PulseAudio backend mints (``sink-input:42``, ``sink:0``, ``card:3``: public on
D-Bus and in logs since the first release), the servers' restore-key rule, and the conversion of
pulsectl's info objects (sinks, sources, cards, ports, profiles) into the model's frozen
values. Property values are bounded (:data:`MAX_PROPERTY_CHARS`) so a hostile client's 10 KB
names cannot bloat logs or D-Bus replies; values libpulse cannot give as UTF-8 text are
dropped.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from ..model import Card, Device, Port, Profile, StreamKind, freeze

logger = logging.getLogger(__name__)

#: Longest property value kept, in characters; longer values are cut and end in an ellipsis.
MAX_PROPERTY_CHARS = 1024
#: libpulse's PA_INVALID_INDEX.
INVALID_INDEX = 0xFFFFFFFF
#: The property keys that name the Bluetooth profile a device runs: PulseAudio's
#: module-bluez5-device, then PipeWire's bluez5 monitor.
BLUETOOTH_PROFILE_KEYS = ("bluetooth.protocol", "api.bluez5.profile")
#: The properties module-stream-restore and WirePlumber's restore-stream key a stream by, the
#: first one present wins.
RESTORE_KEY_PROPERTIES = ("media.role", "application.id", "application.name", "media.name")


def stream_id(kind: StreamKind, index: int) -> str:
    """The id of a sink-input or source-output: ``sink-input:42``."""
    return f"{kind.value}:{index}"


def parse_stream_id(stream_id: str) -> tuple[StreamKind, int]:
    """The kind and server index of a stream id :func:`stream_id` minted.

    :raises ValueError: for any other string
    """
    kind, sep, index = stream_id.partition(":")
    try:
        if sep and index.isdigit():
            return StreamKind(kind), int(index)
    except ValueError:
        pass
    raise ValueError(f"not a stream id of this backend: {stream_id[:64]!r}")


def object_id(facility: str, index: int) -> str:
    """The id of a device or card: ``sink:0``, ``source:3``, ``card:1``."""
    return f"{facility}:{index}"


def parse_device_id(device_id: str) -> tuple[str, int]:
    """The kind (``sink`` or ``source``) and server index of a device id :func:`object_id`
    minted.

    :raises ValueError: for any other string
    """
    kind, sep, index = device_id.partition(":")
    if kind in ("sink", "source") and sep and index.isdigit():
        return kind, int(index)
    raise ValueError(f"not a device id of this backend: {device_id[:64]!r}")


def device_id(kind: str, index: int) -> str:
    """The id of the sink or source at *index* (a stream's ``sink`` / ``source``, a monitor's
    ``monitor_of_sink``), '' for ``PA_INVALID_INDEX``: no device (a stream not linked yet, a
    source that is no sink's monitor)."""
    return "" if index == INVALID_INDEX else object_id(kind, index)


def restore_key(kind: StreamKind, properties: Mapping[str, str]) -> str:
    """The key under which the server remembers a stream's volume and mute.

    Mirrors module-stream-restore's and WirePlumber's restore-stream choice: role first,
    then application id, then application name, then media name.
    """
    for prop in RESTORE_KEY_PROPERTIES:
        if properties.get(prop):
            return f"{kind.value}-by-{prop}:{properties[prop]}"
    return f"{kind.value}:unnamed"


def props(proplist: dict | None) -> dict[str, str]:
    """A server property list, bounded (see the module docstring)."""
    out = {}
    for key, value in (proplist or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        if len(value) > MAX_PROPERTY_CHARS:
            value = value[:MAX_PROPERTY_CHARS - 1] + "\u2026"
        out[key[:MAX_PROPERTY_CHARS]] = value
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _enum(value: Any, default: str) -> str:
    # pulsectl's EnumValue compares equal to its name but does not str() to it
    for name in ("yes", "no", "unknown", "output", "input"):
        if value == name:
            return name
    return default


def port(info: Any, direction: str = "unknown", card_port: Port | None = None) -> Port:
    """A card's port (pulsectl's ``PulseCardPortInfo``: its own direction, profiles and
    properties) or a device's (``PulsePortInfo``: the device's *direction*, the rest from the
    card's port of the same name, *card_port*)."""
    own_direction = _enum(getattr(info, "direction", None), "")
    profiles = tuple(p.name for p in getattr(info, "profile_list", ()) or ())
    properties = props(getattr(info, "proplist", None))
    if card_port is not None:
        profiles = profiles or card_port.profiles
        properties = properties or dict(card_port.properties)
    return Port(_text(info.name), _text(info.description), own_direction or direction,
                _enum(info.available, "unknown"), int(info.priority or 0), profiles,
                freeze(properties))


def profile(info: Any) -> Profile:
    """A card profile (pulsectl's ``PulseCardProfileInfo``)."""
    return Profile(_text(info.name), _text(info.description), bool(info.available),
                   int(info.priority or 0))


def card(info: Any) -> Card:
    """A card (pulsectl's ``PulseCardInfo``)."""
    active = getattr(info, "profile_active", None)
    return Card(object_id("card", info.index), info.index, _text(info.name),
                tuple(profile(p) for p in info.profile_list), _text(getattr(active, "name", "")),
                tuple(port(p) for p in getattr(info, "port_list", ()) or ()),
                freeze(props(info.proplist)))


def device(kind: str, info: Any, cards: Mapping[int, Card]) -> Device:
    """A sink or source (pulsectl's ``PulseSinkInfo`` / ``PulseSourceInfo``); *cards* by
    index give the device's card name and its ports' profiles and properties; a source's
    ``monitor_of_sink`` becomes :attr:`Device.monitor_of <audiopolicyd.model.Device.monitor_of>`
    (the sink's id)."""
    properties = props(info.proplist)
    owner = cards.get(getattr(info, "card", INVALID_INDEX))
    card_ports = {p.name: p for p in owner.ports} if owner is not None else {}
    direction = "output" if kind == "sink" else "input"
    ports = tuple(port(p, direction, card_ports.get(_text(p.name)))
                  for p in getattr(info, "port_list", ()) or ())
    active = getattr(info, "port_active", None)
    bluetooth = next((properties[k] for k in BLUETOOTH_PROFILE_KEYS if properties.get(k)), "")
    monitor_of = device_id("sink", getattr(info, "monitor_of_sink", INVALID_INDEX)) \
        if kind == "source" else ""
    return Device(kind, info.index, info.name, info.description, freeze(properties), monitor_of,
                  id=object_id(kind, info.index), card=owner.name if owner is not None else None,
                  ports=ports, active_port=_text(active.name) if active is not None else None,
                  api=properties.get("device.api", ""), bus=properties.get("device.bus", ""),
                  form_factor=properties.get("device.form_factor", ""),
                  bluetooth_profile=bluetooth)
