"""A Bluetooth headset as each server shows it, from the recorded property sets in
tests/data/bluetooth/ (where they come from: its README.md).

:func:`recorded_headset` builds libpulse's own structures (``pa_card_info``, ``pa_sink_info``,
``pa_source_info``) from a recording and converts them as the PulseAudio backend does
(:mod:`audiopolicyd.backends.pulse_convert`), so the card and devices it returns are what
:class:`~audiopolicyd.backends.pulse.PulseBackend` would give for that headset. A test gives
them to the fake backend (:meth:`FakeServer.add_card
<tests.support.fake_backend.FakeServer.add_card>`) to switch profiles as a real headset does.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pulsectl import PulseCardInfo, PulseSinkInfo, PulseSourceInfo
from pulsectl import _pulsectl as c

from audiopolicyd.backends.pulse_convert import card as convert_card
from audiopolicyd.backends.pulse_convert import device as convert_device
from audiopolicyd.model import Card, Device

logger = logging.getLogger(__name__)

#: The recordings, by server name (``pulseaudio``, ``pipewire``).
RECORDINGS = {
    "pulseaudio": Path(__file__).parent.parent / "data" / "bluetooth" / "pulseaudio-16.json",
    "pipewire": Path(__file__).parent.parent / "data" / "bluetooth" / "pipewire-0.3.json",
}
#: libpulse's ``pa_port_available_t`` and ``pa_direction_t`` values.
_AVAILABLE = {"unknown": 0, "no": 1, "yes": 2}
_DIRECTION = {"output": 1, "input": 2}


@dataclasses.dataclass(frozen=True)
class RecordedHeadset:
    """A headset's card and the devices each of its profiles gives, as the backend reads
    them; *raw* is the recording itself."""

    card: Card
    devices: dict[str, list[Device]]
    raw: dict[str, Any]


def load(server: str) -> dict[str, Any]:
    """The recording of *server* (``pulseaudio`` | ``pipewire``)."""
    return json.loads(RECORDINGS[server].read_text())


def _pointers(kind, items):
    array = (ctypes.POINTER(kind) * len(items))(*(ctypes.pointer(i) for i in items))
    return ctypes.cast(array, ctypes.POINTER(ctypes.POINTER(kind)))


class _Proplists:
    """libpulse property lists made for the structures, freed together."""

    def __init__(self) -> None:
        self.made: list[Any] = []

    def __call__(self, properties: dict[str, str]):
        # pa_proplist_from_string's syntax: key="value" pairs (no recorded value has a quote)
        text = " ".join(f'{key}="{value}"' for key, value in properties.items())
        self.made.append(c.pa.proplist_from_string(text.encode()))
        return self.made[-1]

    def free(self) -> None:
        for proplist in self.made:
            c.pa.proplist_free(proplist)


def _card_info(raw: dict[str, Any], proplist: _Proplists) -> PulseCardInfo:
    profiles = {p["name"]: c.PA_CARD_PROFILE_INFO(
        name=p["name"].encode(), description=p["description"].encode(), n_sinks=0,
        n_sources=0, priority=p["priority"], available=p["available"])
        for p in raw["profiles"]}
    ports = [c.PA_CARD_PORT_INFO(
        name=p["name"].encode(), description=p["description"].encode(),
        priority=p["priority"], available=_AVAILABLE[p["available"]],
        direction=_DIRECTION[p["direction"]], n_profiles=len(p["profiles"]),
        profiles2=_pointers(c.PA_CARD_PROFILE_INFO, [profiles[n] for n in p["profiles"]]),
        proplist=proplist(p.get("properties", {}))) for p in raw["ports"]]
    return PulseCardInfo(c.PA_CARD_INFO(
        index=raw["index"], name=raw["name"].encode(), owner_module=c.PA_INVALID,
        driver=b"module-bluez5-device.c", n_profiles=len(profiles),
        profiles2=_pointers(c.PA_CARD_PROFILE_INFO, list(profiles.values())),
        active_profile2=ctypes.pointer(profiles[raw["active_profile"]]),
        n_ports=len(ports), ports=_pointers(c.PA_CARD_PORT_INFO, ports),
        proplist=proplist(raw["properties"])))


def _device_info(raw: dict[str, Any], card: dict[str, Any], merge: bool,
                 proplist: _Proplists):
    properties = {**card["properties"], **raw["properties"]} if merge else raw["properties"]
    ports = [c.PA_PORT_INFO(name=name.encode(), description=b"Headset", priority=0,
                            available=0) for name in raw["ports"]]
    active = next(p for p in ports if p.name == raw["active_port"].encode())
    fields = {"name": raw["name"].encode(), "index": raw["index"],
              "description": raw["description"].encode(), "card": card["index"],
              "proplist": proplist(properties), "n_ports": len(ports),
              "ports": _pointers(c.PA_PORT_INFO, ports), "active_port": ctypes.pointer(active)}
    if raw["kind"] == "sink":
        return PulseSinkInfo(c.PA_SINK_INFO(**fields))
    return PulseSourceInfo(c.PA_SOURCE_INFO(monitor_of_sink=c.PA_INVALID, **fields))


@contextlib.contextmanager
def _structures() -> Iterator[_Proplists]:
    proplists = _Proplists()
    try:
        yield proplists
    finally:
        proplists.free()


def recorded_headset(server: str) -> RecordedHeadset:
    """The recorded headset of *server* (``pulseaudio`` | ``pipewire``), converted by the
    PulseAudio backend's conversion: its card (active profile A2DP) and the devices of each
    profile that has some."""
    raw = load(server)
    with _structures() as proplist:
        card = convert_card(_card_info(raw["card"], proplist))
        devices = {profile: [convert_device(d["kind"], _device_info(
            d, raw["card"], raw["merge_card_properties"], proplist), {card.index: card})
            for d in listed] for profile, listed in raw["devices"].items()}
    return RecordedHeadset(card, devices, raw)
