"""Apple's port type of a device, from what the server says (audiopolicyd.routing.ports): every
rule of the table in docs/routing.md, recorded property sets of real kinds of device (see
data/route_devices.json for where they come from), and devices with absurd properties."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from audiopolicyd.backends import pulse_convert
from audiopolicyd.model import Device, Port, freeze
from audiopolicyd.route import PORT_TYPES, VIRTUAL, RoutePort
from audiopolicyd.routing.ports import direction, port_type, route_port, uid

RECORDED = json.loads((Path(__file__).parent / "data" / "route_devices.json").read_text())


def from_server(entry: dict, index: int = 1) -> Device:
    """The Device the PulseAudio backend makes of a recorded sink or source."""
    ports = [SimpleNamespace(name=n, description=d, available={"yes": 2, "no": 1}.get(a, 0),
                             priority=0, available_state=None) for n, d, a in entry["ports"]]
    active = next((p for p in ports if p.name == entry["active_port"]), None)
    info = SimpleNamespace(index=index, name=entry["name"], description=entry["description"],
                           proplist=entry["proplist"], port_list=ports, port_active=active,
                           card=0xFFFFFFFF)
    return pulse_convert.device(entry["kind"], info, {})


@pytest.mark.parametrize("entry", RECORDED["devices"],
                         ids=lambda e: f"{e['server']}-{e['kind']}-{e['expect']}")
def test_recorded_devices_get_their_port_type(entry):
    assert port_type(from_server(entry)) == entry["expect"]


def dev(kind="sink", **kw) -> Device:
    props = kw.pop("properties", {})
    return Device(kind, 1, kw.pop("name", "d"), kw.pop("description", ""), freeze(props),
                  kw.pop("monitor_of", ""), id=f"{kind}:1", **kw)


RULES = [
    # 1. Bluetooth, by profile, before everything else
    ("sink", {"api": "bluez5", "bluetooth_profile": "a2dp-sink", "bus": "usb"}, "bluetoothA2DP"),
    ("sink", {"api": "bluez", "bluetooth_profile": "a2dp_sink"}, "bluetoothA2DP"),
    ("sink", {"api": "bluez5", "bluetooth_profile": "headset-head-unit"}, "bluetoothHFP"),
    ("source", {"api": "bluez5", "bluetooth_profile": "headset-head-unit"}, "bluetoothHFP"),
    ("sink", {"api": "bluez", "bluetooth_profile": "headset_head_unit"}, "bluetoothHFP"),
    ("source", {"api": "bluez", "bluetooth_profile": "handsfree_head_unit"}, "bluetoothHFP"),
    ("sink", {"api": "bluez5", "bluetooth_profile": "bap-sink"}, "bluetoothLE"),
    ("source", {"api": "bluez5", "bluetooth_profile": "bap-duplex"}, "bluetoothLE"),
    ("sink", {"bus": "bluetooth"}, "bluetoothA2DP"),       # no profile known: a sink plays music
    ("source", {"bus": "bluetooth"}, "bluetoothHFP"),      # ... a source is a headset's mic
    ("sink", {"properties": {"device.api": "bluez5", "api.bluez5.profile": "a2dp-sink"}},
     "bluetoothA2DP"),                                      # from the properties alone
    # 2. USB, before form factor and port
    ("sink", {"bus": "usb", "form_factor": "headset", "active_port": "analog-output-headphones"},
     "usbAudio"),
    ("source", {"bus": "usb"}, "usbAudio"),
    # 3. HDMI / DisplayPort, by the active port or the profile, before form factor
    ("sink", {"active_port": "hdmi-output-1", "form_factor": "internal"}, "HDMI"),
    ("sink", {"properties": {"device.profile.name": "hdmi-surround"}}, "HDMI"),
    ("sink", {"active_port": "[Out] DisplayPort1"}, "displayPort"),
    # 4. form factor
    ("sink", {"form_factor": "headphone"}, "headphones"),
    ("sink", {"form_factor": "headset"}, "headphones"),
    ("source", {"form_factor": "headset"}, "headsetMic"),
    ("sink", {"form_factor": "handset"}, "builtInReceiver"),
    ("sink", {"form_factor": "internal"}, "builtInSpeaker"),
    ("sink", {"form_factor": "speaker"}, "builtInSpeaker"),
    ("source", {"form_factor": "internal"}, "builtInMic"),
    ("sink", {"form_factor": "car"}, "carAudio"),
    ("source", {"form_factor": "car"}, "carAudio"),
    ("sink", {"form_factor": "headset", "active_port": "analog-output-speaker"}, "headphones"),
    # ... except that a whole card's "internal" yields to the jack in use
    ("sink", {"form_factor": "internal", "active_port": "analog-output-headphones"}, "headphones"),
    ("sink", {"form_factor": "internal", "active_port": "analog-output-lineout"}, "lineOut"),
    ("source", {"form_factor": "internal", "active_port": "analog-input-headset-mic"},
     "headsetMic"),
    ("source", {"form_factor": "internal", "active_port": "analog-input-linein"}, "lineIn"),
    ("sink", {"form_factor": "internal", "active_port": "analog-output-speaker"}, "builtInSpeaker"),
    # 5. the active port's name
    ("sink", {"active_port": "analog-output-headphones"}, "headphones"),
    ("sink", {"active_port": "analog-output-speaker"}, "builtInSpeaker"),
    ("sink", {"active_port": "analog-output-lineout"}, "lineOut"),
    ("source", {"active_port": "analog-input-mic"}, "builtInMic"),
    ("source", {"active_port": "analog-input-headset-mic"}, "headsetMic"),
    ("source", {"active_port": "analog-input-linein"}, "lineIn"),
    ("sink", {"active_port": "[Out] Headphones"}, "headphones"),
    # 6. otherwise virtual
    ("sink", {}, "virtual"),
    ("source", {}, "virtual"),
]


@pytest.mark.parametrize("kind,fields,expected", RULES)
def test_each_rule_of_the_table(kind, fields, expected):
    assert port_type(dev(kind, **fields)) == expected


@pytest.mark.parametrize("fields", [
    {"form_factor": "handset"},                       # no input type for a handset
    {"form_factor": "headphone"},                     # ... nor for headphones
    {"active_port": "analog-output-headphones"},      # an output port's name on a source
])
def test_an_output_fact_on_a_source_is_not_taken_for_an_input(fields):
    assert port_type(dev("source", **fields)) == VIRTUAL


@pytest.mark.parametrize("fields", [
    {"api": "bluez5\x00", "bus": "\u202eusb", "form_factor": "x" * 100_000},
    {"active_port": "", "properties": {"device.api": 42, "device.bus": None}},
    {"properties": {"device.profile.name": ["hdmi"], "device.form_factor": {"a": 1}}},
    {"active_port": 7},
    {"properties": None},
    {"form_factor": "HEADSET-ish"},
])
def test_absurd_or_missing_properties_are_virtual_and_never_an_error(fields):
    device = Device("sink", 1, "weird", **{k: v for k, v in fields.items()
                                           if k == "properties"},
                    **{k: v for k, v in fields.items() if k != "properties"})
    assert port_type(device) == VIRTUAL
    port = route_port(device)
    assert port is not None and port.port_type == VIRTUAL and port.uid == "weird"


def test_every_port_type_a_rule_gives_is_apples():
    assert {expected for _, _, expected in RULES} <= set(PORT_TYPES)
    assert {e["expect"] for e in RECORDED["devices"]} <= set(PORT_TYPES)


def test_a_port_names_its_device_and_its_active_port():
    sink = dev("sink", name="alsa_output.pci.analog-stereo", description="Built-in Audio",
               active_port="analog-output-headphones",
               ports=(Port("analog-output-headphones", available="yes"),))
    assert route_port(sink) == RoutePort("headphones", "Built-in Audio",
                                         "alsa_output.pci.analog-stereo/analog-output-headphones",
                                         "sink:1")
    null = dev("sink", name="speaker")
    assert uid(null) == "speaker"
    assert route_port(null).port_name == "speaker"  # no description: the name


def test_a_monitor_is_not_an_input_a_route_offers():
    monitor = dev("source", name="speaker.monitor", monitor_of="sink:3")
    assert direction(monitor) is None and route_port(monitor) is None
    assert direction(dev("source")) == "input" and direction(dev("sink")) == "output"
    assert route_port(Device("card", 1, "odd", id="x")) is None
