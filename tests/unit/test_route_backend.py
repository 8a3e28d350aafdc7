"""What routing needs from the backend, without a server: a Bluetooth headset's card and
devices as each server shows them (recorded, tests/data/bluetooth/) converted as the
PulseAudio backend does, the switch of a card's profile on the fake backend (the A2DP sink
goes, a headset sink and source appear, with events; a stream on the gone sink is rescued),
its named errors, and the test bed's module arguments (tests/support/devices.py). The servers'
side is tests/integration/test_route_devices.py."""

from __future__ import annotations

import dataclasses

import pytest

from audiopolicyd.backends.base import (
    Capability, Event, NoSuchDevice, ProfileUnavailable, Unsupported,
)
from audiopolicyd.backends.pulse import PulseBackend

from ..support.bluetooth import recorded_headset
from ..support.devices import (
    BT_A2DP, BT_HFP_SOURCE, USB_HEADSET, USB_HEADSET_MIC, FakeDevice, module_args,
    property_list,
)
from ..support.fake_backend import FakeBackend, FakeServer
from .conftest import make_stream

pytestmark = pytest.mark.usefixtures("collect_garbage")

#: The A2DP and the head-unit (HSP/HFP) profile of the recorded headset, per server.
PROFILES = {"pulseaudio": ("a2dp_sink", "headset_head_unit"),
            "pipewire": ("a2dp-sink", "headset-head-unit")}


# -- a Bluetooth headset's card and devices, as the backend reads them -------------------------

def test_a_pulseaudio_headset_reads_with_the_api_bus_form_factor_and_profile_of_each_device():
    headset = recorded_headset("pulseaudio")
    card = headset.card
    assert card.name == "bluez_card.74_D7_13_E4_27_D8" and card.active_profile == "a2dp_sink"
    assert [p.name for p in card.profiles] == ["a2dp_sink", "headset_head_unit",
                                               "handsfree_head_unit", "off"]
    # PulseAudio 16's module-bluez5-device says "bluez", not "bluez5" (PipeWire's word)
    assert card.properties["device.api"] == "bluez"
    (a2dp,) = headset.devices["a2dp_sink"]
    assert (a2dp.kind, a2dp.api, a2dp.bus, a2dp.form_factor, a2dp.bluetooth_profile,
            a2dp.card, a2dp.description) == (
        "sink", "bluez", "bluetooth", "headset", "a2dp_sink", card.name, "WH-1000XM3")
    for profile in ("headset_head_unit", "handsfree_head_unit"):
        sink, source = headset.devices[profile]
        assert (sink.kind, source.kind) == ("sink", "source")
        assert {sink.bluetooth_profile, source.bluetooth_profile} == {profile}
        assert source.properties["device.intended_roles"] == "phone"
        (port,) = source.ports
        # the device's port carries the profiles of the card's port of that name
        assert (port.name, port.direction, port.profiles) == (
            "headset-input", "input", ("headset_head_unit", "handsfree_head_unit"))
        assert source.active_port == "headset-input"


def test_a_pipewire_headset_names_its_profile_on_each_node_and_its_bus_on_the_card():
    headset = recorded_headset("pipewire")
    card = headset.card
    assert card.active_profile == "a2dp-sink"
    assert (card.properties["device.api"], card.properties["device.bus"],
            card.properties["device.form_factor"]) == ("bluez5", "bluetooth", "headset")
    (a2dp,) = headset.devices["a2dp-sink"]
    sink, source = headset.devices["headset-head-unit"]
    assert (a2dp.bluetooth_profile, sink.bluetooth_profile, source.bluetooth_profile) == (
        "a2dp-sink", "headset-head-unit", "headset-head-unit")
    # the node's own keys only (see tests/data/bluetooth/README.md): the api is the SPA
    # node's, the bus and form factor are the card's alone
    assert (a2dp.api, a2dp.bus, a2dp.form_factor, a2dp.card) == ("bluez5", "", "", card.name)
    assert (source.api, source.bus, source.form_factor) == ("bluez5", "", "")
    # WirePlumber names a node by its card-profile device id: the A2DP and the headset sink
    # are both bluez_output.<address>.1, one after the other
    assert a2dp.name == sink.name != source.name
    assert {p.name for p in source.ports} == {"headset-hf-input"}
    assert dict(card.ports[0].properties) == {"port.type": "headset"}


# -- switching a card's profile on the fake backend -------------------------------------------

async def _headset_on(fake: FakeServer, server: str) -> FakeBackend:
    headset = recorded_headset(server)
    backend = fake.connection()
    await backend.connect()
    fake.add_card(headset.card, headset.devices)
    return backend


def _drain(backend: FakeBackend) -> list[Event]:
    out = []
    while not backend._events.empty():
        out.append(backend._events.get_nowait())
    return out


@pytest.mark.parametrize("server", ["pulseaudio", "pipewire"])
async def test_switching_to_the_headset_profile_replaces_the_a2dp_sink_with_events(server):
    fake = FakeServer()
    backend = await _headset_on(fake, server)
    a2dp_name, hfp_name = PROFILES[server]
    (a2dp,) = [d for d in await backend.devices() if d.bluetooth_profile == a2dp_name]
    (card,) = await backend.cards()
    assert _drain(backend)[:2] == [Event("new", "card", card.index, card.id),
                                   Event("new", "sink", a2dp.index, a2dp.id)]
    music = dataclasses.replace(make_stream(7), device=a2dp.id)
    fake.add(music)
    _drain(backend)
    await backend.set_card_profile(card, hfp_name)
    events = _drain(backend)
    after = {d.name: d for d in await backend.devices()}
    new = [d for d in after.values() if d.card == card.name]
    assert sorted((d.kind, d.bluetooth_profile) for d in new) == [
        ("sink", hfp_name), ("source", hfp_name)]
    gone = Event("remove", "sink", a2dp.index, a2dp.id)
    card_change = Event("change", "card", card.index, card.id)
    assert gone in events and events[-1] == card_change
    assert {(e.type, e.facility) for e in events} >= {("new", "sink"), ("new", "source")}
    # the server moved the music off the gone sink, to the default one
    assert fake.state[music.id].device == fake.device("speaker").id  # its id, no more its index
    assert (await backend.cards())[0].active_profile == hfp_name
    assert (card.id, "profile", hfp_name) in fake.writes


async def test_switching_back_to_a2dp_and_to_the_active_profile():
    fake = FakeServer()
    backend = await _headset_on(fake, "pulseaudio")
    (card,) = await backend.cards()
    await backend.set_card_profile(card, "handsfree_head_unit")
    (card,) = await backend.cards()
    await backend.set_card_profile(card, "a2dp_sink")
    names = {d.name for d in await backend.devices()}
    assert "bluez_sink.74_D7_13_E4_27_D8.a2dp_sink" in names
    assert not any("handsfree" in n for n in names)
    _drain(backend)
    (card,) = await backend.cards()
    await backend.set_card_profile(card, "a2dp_sink")  # the active one: nothing happens
    assert _drain(backend) == []


async def test_a_profile_switch_names_a_missing_card_or_profile():
    fake = FakeServer()
    backend = await _headset_on(fake, "pipewire")
    (card,) = await backend.cards()
    with pytest.raises(ProfileUnavailable):
        await backend.set_card_profile(card, "no-such-profile")
    fake.cards[0] = dataclasses.replace(card, profiles=tuple(
        dataclasses.replace(p, available=p.name != "headset-head-unit") for p in card.profiles))
    with pytest.raises(ProfileUnavailable):
        await backend.set_card_profile(card, "headset-head-unit")
    fake.cards.clear()
    with pytest.raises(NoSuchDevice):
        await backend.set_card_profile(card, "a2dp-sink")
    assert not any(field == "profile" for _, field, _ in fake.writes)


def test_card_profiles_are_a_capability_of_both_backends():
    assert Capability.CARD_PROFILES in PulseBackend.capabilities
    assert Capability.CARD_PROFILES in FakeBackend.capabilities
    backend = FakeServer().connection()
    backend.capabilities = Capability.CARDS
    with pytest.raises(Unsupported, match="card profiles"):
        backend.require(Capability.CARD_PROFILES)


# -- the test bed's module arguments -----------------------------------------------------------

class _Server:
    def __init__(self, name: str):
        self.name = name


def test_fake_devices_carry_the_profile_key_of_each_server():
    assert BT_A2DP.properties("pulseaudio")["bluetooth.protocol"] == "a2dp_sink"
    assert BT_A2DP.properties("pipewire")["api.bluez5.profile"] == "a2dp-sink"
    assert "api.bluez5.profile" not in BT_A2DP.properties("pulseaudio")
    assert BT_HFP_SOURCE.expected_profile("pulseaudio") == "headset_head_unit"
    assert USB_HEADSET.properties("pipewire") == {
        "device.description": "USB Headset", "device.form_factor": "headset",
        "device.bus": "usb", "device.api": "alsa"}
    assert USB_HEADSET.expected_profile("pipewire") == ""


def test_module_arguments_quote_the_property_list_as_both_servers_parse_it():
    assert property_list({"device.description": "USB Headset", "device.bus": "usb"}) == \
        "'device.description=\"USB Headset\" device.bus=\"usb\"'"
    name, args = module_args(_Server("pulseaudio"), USB_HEADSET)
    assert name == "module-null-sink" and args.startswith("sink_name=usb_headset sink_properties='")
    name, args = module_args(_Server("pipewire"), USB_HEADSET_MIC, "/tmp/x.fifo")
    assert name == "module-pipe-source" and "file=/tmp/x.fifo" in args
    with pytest.raises(ValueError, match="quote"):
        property_list({"device.description": "it's"})
    with pytest.raises(ValueError, match="sink or a source"):
        module_args(_Server("pipewire"), FakeDevice("card", "x", "X", "headset", "usb"))
