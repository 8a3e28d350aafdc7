"""Which device a category's streams go to and why (audiopolicyd.routing.choose and .decide,
with the shipped policies and built-in plugins), the route-change reasons, and the [route]
policy keys."""

from __future__ import annotations

import dataclasses

import pytest

from audiopolicyd.model import Device, Port, Session, Snapshot, freeze
from audiopolicyd.policy import PolicyError, RoutePolicy, parse_policy
from audiopolicyd.route import RouteChangeReason, RouteDecision
from audiopolicyd.routing.choose import (
    by_preference, change_reason, first_of_type, request, route_change,
)
from audiopolicyd.routing.decide import decide_route

R = RouteChangeReason


def sink(i, name, **kw):
    return Device("sink", i, name, kw.pop("description", name.title()), id=f"sink:{i}", **kw)


def source(i, name, **kw):
    return Device("source", i, name, kw.pop("description", name.title()), id=f"source:{i}", **kw)


SPEAKER = sink(0, "builtin", form_factor="internal", active_port="analog-output-speaker",
               card="alsa_card.pci")
MIC = source(0, "builtin-mic", form_factor="internal", active_port="analog-input-internal-mic")
MONITOR = Device("source", 9, "builtin.monitor", monitor_of="sink:0", id="source:9")
USB_OUT, USB_IN = sink(2, "usb-headset", bus="usb"), source(2, "usb-headset-mic", bus="usb")
A2DP = sink(3, "bt.a2dp", api="bluez5", bluetooth_profile="a2dp-sink", card="bluez_card.X")
HFP_OUT = sink(4, "bt.hfp", api="bluez5", bluetooth_profile="headset-head-unit",
               card="bluez_card.X")
HFP_IN = source(4, "bt.hfp-mic", api="bluez5", bluetooth_profile="headset-head-unit",
                card="bluez_card.X")
HEADPHONES = sink(5, "wired", form_factor="headphone")
RECEIVER = sink(6, "earpiece", form_factor="handset")


def session(category="playAndRecord", mode="voiceChat", options=()):
    return Session("s1", "app:x", category, mode, frozenset(options), active=True,
                   explicit=True)


def decide(pm, policies, category, devices, *, default_output="sink:0",
           default_input="source:0", **kw):
    req = request(devices, category, default_output=default_output,
                  default_input=default_input, **kw)
    return decide_route(pm, req, policies.policies[category])


def test_playback_follows_the_users_default_and_a_headset_that_appears_does_not_take_it(
        pm, policies):
    got = decide(pm, policies, "playback", [SPEAKER, MIC, MONITOR, USB_OUT, HEADPHONES])
    assert got.output.device == "sink:0"
    assert got.output.reason == "default: the user's default sink (builtInSpeaker)"
    assert got.input.port is None and got.input.reason == "none: playback does not record"
    assert decide(pm, policies, "playback", [SPEAKER, USB_OUT],
                  default_output="sink:2").output.device == "sink:2"


@pytest.mark.parametrize("category", ["soloAmbient", "ambient"])
def test_unclassified_apps_and_ambient_sound_follow_the_default(pm, policies, category):
    got = decide(pm, policies, category, [SPEAKER, USB_OUT, HEADPHONES],
                 default_output="sink:5")
    assert got.output.device == "sink:5"
    assert got.output.reason.startswith("default: ")


def test_a_call_goes_to_a_usb_headset_and_says_why(pm, policies):
    got = decide(pm, policies, "playAndRecord", [SPEAKER, MIC, USB_OUT, USB_IN, HEADPHONES])
    assert (got.output.device, got.input.device) == ("sink:2", "source:2")
    assert got.output.reason == "usbAudio: first of playAndRecord's route.output present"
    assert got.input.reason == "usbAudio: first of playAndRecord's route.input present"
    assert got.route.outputs[0].port_type == "usbAudio"


def test_a_call_without_a_headset_takes_wired_headphones_then_the_default(pm, policies):
    got = decide(pm, policies, "playAndRecord", [SPEAKER, MIC, HEADPHONES])
    assert got.output.device == "sink:5" and got.output.port.port_type == "headphones"
    assert got.input.reason == "default: the user's default source (builtInMic)"
    got = decide(pm, policies, "playAndRecord", [SPEAKER, MIC])
    assert got.output.reason == "default: the user's default sink (builtInSpeaker)"


def test_the_receiver_is_taken_only_where_there_is_one(pm, policies):
    got = decide(pm, policies, "playAndRecord", [SPEAKER, MIC, RECEIVER])
    assert got.output.device == "sink:6"
    assert got.output.reason == "builtInReceiver: first of playAndRecord's route.output present"


def test_default_to_speaker_uses_the_speaker_instead_of_the_receiver_without_a_headset(
        pm, policies):
    options = {"defaultToSpeaker"}
    got = decide(pm, policies, "playAndRecord", [RECEIVER, SPEAKER, MIC],
                 session=session(options=options), default_output="sink:6")
    assert got.output.device == "sink:0"
    assert got.output.reason.startswith("builtInSpeaker: defaultToSpeaker")
    got = decide(pm, policies, "playAndRecord", [RECEIVER, SPEAKER, MIC, USB_OUT],
                 session=session(options=options))
    assert got.output.device == "sink:2"  # a headset is present: it wins


def test_bluetooth_hfp_only_with_allow_bluetooth(pm, policies):
    devices = [SPEAKER, MIC, HFP_OUT, HFP_IN, USB_OUT, USB_IN]
    legacy = decide(pm, policies, "playAndRecord", devices)
    assert legacy.output.device == "sink:2"
    assert legacy.output.reason == ("usbAudio: first of playAndRecord's route.output present "
                                    "(bluetoothHFP skipped: bluetoothHFP needs the option "
                                    "allowBluetooth)")
    allowed = decide(pm, policies, "playAndRecord", devices,
                     session=session(options={"allowBluetooth"}))
    assert (allowed.output.device, allowed.input.device) == ("sink:4", "source:4")


def test_a2dp_for_a_call_only_with_allow_bluetooth_a2dp_and_freely_elsewhere(pm, policies):
    devices = [A2DP, MIC]
    call = decide(pm, policies, "playAndRecord", devices, default_output="sink:3")
    assert call.output.port is None
    assert call.output.reason.startswith("none: nothing of playAndRecord's route.output")
    assert "default skipped: bluetoothA2DP needs the option allowBluetoothA2DP" in \
        call.output.reason
    allowed = decide(pm, policies, "playAndRecord", devices, default_output="sink:3",
                     session=session(options={"allowBluetoothA2DP"}))
    assert allowed.output.device == "sink:3"
    assert decide(pm, policies, "playback", devices,
                  default_output="sink:3").output.device == "sink:3"


def test_the_speaker_override_forces_speaker_and_built_in_mic_for_a_call_only(pm, policies):
    devices = [SPEAKER, MIC, USB_OUT, USB_IN]
    got = decide(pm, policies, "playAndRecord", devices, session=session(), override="speaker")
    assert (got.output.device, got.input.device) == ("sink:0", "source:0")
    assert got.output.reason == "builtInSpeaker: the session's output override (speaker)"
    back = decide(pm, policies, "playAndRecord", devices, session=session(), override="none")
    assert back.output.device == "sink:2"
    no_speaker = decide(pm, policies, "playAndRecord", [USB_OUT, USB_IN], override="speaker")
    assert no_speaker.output.device == "sink:2"  # no speaker present: the preferences decide
    other = decide(pm, policies, "playback", devices, default_output="sink:2",
                   session=session("playback", "default"), override="speaker")
    assert other.output.device == "sink:2"  # playback does not take the override


def test_a_preferred_input_wins_and_one_that_is_gone_is_ignored_with_a_reason(pm, policies):
    devices = [SPEAKER, MIC, USB_IN]
    mic_uid = "builtin-mic/analog-input-internal-mic"
    got = decide(pm, policies, "record", devices, preferred_input=mic_uid)
    assert got.input.device == "source:0"
    assert got.input.reason == f"builtInMic: the session's preferred input '{mic_uid}'"
    gone = decide(pm, policies, "record", devices, preferred_input="unplugged/mic")
    assert gone.input.device == "source:2"
    assert gone.input.reason == ("usbAudio: first of record's route.input present (preferred "
                                 "input 'unplugged/mic' ignored: it is not present)")
    assert got.output.reason == "none: record does not play"


def test_a_monitor_is_never_chosen_as_an_input_and_nothing_suitable_says_so(pm, policies):
    got = decide(pm, policies, "record", [SPEAKER, MONITOR], default_input="source:9")
    assert got.input.port is None
    assert got.input.reason == ("none: nothing of record's route.input (headsetMic, usbAudio, "
                                "default) is present; the streams stay where they are")


def test_a_request_takes_the_snapshots_devices_by_id():
    snapshot = Snapshot(devices=freeze({d.id: d for d in (SPEAKER, MONITOR, MIC, USB_OUT)}))
    req = request(snapshot.devices, "playAndRecord")
    assert [p.device for p in req.outputs] == ["sink:0", "sink:2"]
    assert [p.device for p in req.inputs] == ["source:0"]  # the monitor is no input
    assert req == request(snapshot.devices.values(), "playAndRecord")


def test_among_ports_of_one_type_the_users_default_is_taken(policies):
    other = sink(7, "usb-dac", bus="usb")
    req = request([USB_OUT, other], "playAndRecord", default_output="sink:7")
    assert first_of_type(req, "output", "usbAudio").device == "sink:7"
    req = dataclasses.replace(req, default_output="sink:0")
    assert first_of_type(req, "output", "usbAudio").device == "sink:2"
    assert by_preference("output", req, policies.policies["playAndRecord"],
                         ["lineOut"]).port is None


# -- route changes ----------------------------------------------------------------------------

def by_id(*devices):
    return {d.id: d for d in devices}


def routed(pm, policies, category, devices, **kw):
    return decide(pm, policies, category, list(devices), **kw)


def test_a_device_that_appears_and_goes(pm, policies):
    before, after = by_id(SPEAKER, MIC), by_id(SPEAKER, MIC, USB_OUT, USB_IN)
    old = routed(pm, policies, "playAndRecord", before.values())
    new = routed(pm, policies, "playAndRecord", after.values())
    assert change_reason(old, new, before, after) is R.newDeviceAvailable
    change = route_change("playAndRecord", new, old, after, before)
    assert change.reason is R.oldDeviceUnavailable
    assert change.gone == {"sink:2", "source:2"} and change.appeared == frozenset()
    assert change.previous is new and change.current is old


def test_music_does_not_change_route_when_a_headset_appears(pm, policies):
    before, after = by_id(SPEAKER), by_id(SPEAKER, USB_OUT)
    old = routed(pm, policies, "playback", before.values())
    new = routed(pm, policies, "playback", after.values())
    assert change_reason(old, new, before, after) is None
    assert route_change("playback", old, new, before, after) is None


def test_category_override_no_suitable_and_unknown(pm, policies):
    devices = by_id(SPEAKER, MIC, USB_OUT, USB_IN)
    call = routed(pm, policies, "playAndRecord", devices.values())
    music = routed(pm, policies, "playback", devices.values())
    assert change_reason(music, call, devices, devices,
                         category_changed=True) is R.categoryChange
    speaker = routed(pm, policies, "playAndRecord", devices.values(), override="speaker")
    assert change_reason(call, speaker, devices, devices, override_changed=True) is R.override
    nothing = RouteDecision(dataclasses.replace(call.output, port=None), call.input)
    assert change_reason(call, nothing, devices, devices) is R.noSuitableRouteForCategory
    moved = routed(pm, policies, "playback", devices.values(), default_output="sink:2")
    assert change_reason(music, moved, devices, devices) is R.unknown  # the user's default


def test_a_bluetooth_profile_switch_is_a_configuration_change(pm, policies):
    options = {"allowBluetooth", "allowBluetoothA2DP"}
    before, after = by_id(A2DP, MIC), by_id(HFP_OUT, HFP_IN, MIC)
    old = routed(pm, policies, "playAndRecord", before.values(), default_output="sink:3",
                 session=session(options=options))
    new = routed(pm, policies, "playAndRecord", after.values(), default_output="sink:3",
                 session=session(options=options))
    assert (old.output.device, new.output.device) == ("sink:3", "sink:4")
    assert change_reason(old, new, before, after) is R.routeConfigurationChange
    # the same device changing profile (PipeWire keeps a node across some switches)
    same = dataclasses.replace(A2DP, bluetooth_profile="headset-head-unit")
    new = routed(pm, policies, "playAndRecord", [same, MIC], default_output="sink:3",
                 session=session(options=options))
    assert change_reason(old, new, before, by_id(same, MIC)) is R.routeConfigurationChange


def jack(active, headphones_available):
    return dataclasses.replace(SPEAKER, active_port=active, ports=(
        Port("analog-output-speaker", available="unknown"),
        Port("analog-output-headphones", available=headphones_available)))


def test_a_headphones_jack_unplugged_is_old_device_unavailable_on_the_same_sink(pm, policies):
    plugged, unplugged = jack("analog-output-headphones", "yes"), \
        jack("analog-output-speaker", "no")
    old = routed(pm, policies, "playback", [plugged])
    new = routed(pm, policies, "playback", [unplugged])
    assert old.output.port.port_type == "headphones"
    assert new.output.port.port_type == "builtInSpeaker"
    change = route_change("playback", old, new, by_id(plugged), by_id(unplugged))
    assert change.reason is R.oldDeviceUnavailable and change.gone == {"sink:0"}
    assert change_reason(new, old, by_id(unplugged), by_id(plugged)) is R.newDeviceAvailable
    chosen = jack("analog-output-speaker", "yes")  # the user chose the speaker
    assert change_reason(old, routed(pm, policies, "playback", [chosen]), by_id(plugged),
                         by_id(chosen)) is R.routeConfigurationChange


def test_reasons_have_apples_numbers():
    assert {r.name: r.value for r in R} == {
        "unknown": 0, "newDeviceAvailable": 1, "oldDeviceUnavailable": 2, "categoryChange": 3,
        "override": 4, "wakeFromSleep": 6, "noSuitableRouteForCategory": 7,
        "routeConfigurationChange": 8}


# -- the [route] policy keys ------------------------------------------------------------------

BASE = {"schema": 1, "category": "playAndRecord", "priority": 80, "mixes_with_others": False,
        "activation": {"others": "interrupt"}}


def test_route_keys_default_to_the_users_default_device():
    assert parse_policy(BASE, "p.toml").route == RoutePolicy(("default",), ("default",), True)


def test_shipped_route_preferences(policies):
    route = {c: p.route for c, p in policies.policies.items()}
    assert route["playAndRecord"].output == ("bluetoothHFP", "usbAudio", "headphones",
                                             "builtInReceiver", "default")
    assert route["playAndRecord"].input == ("bluetoothHFP", "usbAudio", "headsetMic",
                                            "default")
    assert route["record"].input == ("headsetMic", "usbAudio", "default")
    for category in ("playback", "soloAmbient", "ambient"):
        assert route[category].output == ("default",)
    assert route["playback"].interrupt_on_disconnect is True
    routing = {"pause_on_route_disconnect", "call_route", "echo_cancel_for_chat"}
    enabled = {c: routing & set(p.plugins) for c, p in policies.policies.items()}
    assert enabled == {"playback": {"pause_on_route_disconnect"},
                       "playAndRecord": {"call_route", "echo_cancel_for_chat"},
                       **{c: set() for c in ("ambient", "soloAmbient", "record", "multiRoute",
                                             "audioProcessing")}}


def test_every_bad_route_key_is_a_problem_in_one_pass():
    doc = {**BASE, "route": {"output": ["usbAudio", "builtInMic", "usbaudio", "usbAudio"],
                             "input": [], "interrupt_on_disconnect": "yes", "prefer": 1}}
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, "p.toml")
    lines = [str(p) for p in info.value.problems]
    assert "p.toml: route.prefer: unknown key (allowed: input, interrupt_on_disconnect, " \
           "output)" in lines
    assert "p.toml: route.input: [] should be non-empty" in lines
    assert "p.toml: route.interrupt_on_disconnect: 'yes' is not of type 'boolean'" in lines
    assert any(line.startswith("p.toml: route.output[1]: 'builtInMic' is not one of")
               for line in lines)  # an input type as an output
    assert any(line.startswith("p.toml: route.output[2]: 'usbaudio' is not one of")
               for line in lines)  # names are Apple's, case and all
    assert any(line.startswith("p.toml: route.output: ") and "non-unique" in line
               for line in lines)
    assert len(lines) == 6


def test_an_output_type_is_not_an_input():
    doc = {**BASE, "route": {"input": ["headphones"]}}
    with pytest.raises(PolicyError, match=r"route.input\[0\]: 'headphones' is not one of"):
        parse_policy(doc, "p.toml")
    ok = parse_policy({**BASE, "route": {"input": ["headsetMic", "default"],
                                         "interrupt_on_disconnect": False}}, "p.toml")
    assert ok.route == RoutePolicy(("default",), ("headsetMic", "default"), False)


def test_policy_freezes_its_route():
    policy = parse_policy({**BASE, "route": {"output": ["usbAudio"]}}, "p.toml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.route.output = ()  # type: ignore[misc]
    assert isinstance(policy.route.output, tuple)  # a tuple, not TOML's list
