"""An app's session and its route (audiopolicyd.sessionroutes): the route and the available
inputs as Apple shows them, SetPreferredInput and OverrideOutputAudioPort with their errors,
RouteChanged from the router's listener (a stand-in gives the decisions here; the router itself
in test_runtime_session_routes.py and the integration tests), their D-Bus values, and the
whole round trip through the adapter and the Python client on a private bus."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from dbus_fast import Variant

from audiopolicyd import client as apc
from audiopolicyd import errors, limits
from audiopolicyd.appsessions import AppSessions
from audiopolicyd.dbus import DBusApi
from audiopolicyd.dbus.convert import (
    port_dict, route_change_dict, route_dict, session_properties,
)
from audiopolicyd.identity import Identity, identify
from audiopolicyd.microphone.access import MicrophoneAccess
from audiopolicyd.model import Device
from audiopolicyd.names import BUS_NAME, SESSION_IFACE
from audiopolicyd.route import (
    PortChoice, Route, RouteChange, RouteChangeReason, RouteDecision, RoutePort,
)
from audiopolicyd.routing.ports import route_port
from audiopolicyd.sessionroutes import SessionRoutes

from .test_errors import NoDaemon, buses, daemon_bus  # noqa: F401 (private-bus fixtures)

WAIT = 10.0  # seconds: an upper bound for a reply on the private bus, never a speed claim


def sink(i, name, **kw):
    return Device("sink", i, name, kw.pop("description", name.title()), id=f"sink:{i}", **kw)


def source(i, name, **kw):
    return Device("source", i, name, kw.pop("description", name.title()), id=f"source:{i}",
                  **kw)


SPEAKER = sink(0, "builtin", form_factor="internal", active_port="analog-output-speaker")
MIC = source(0, "builtin-mic", form_factor="internal", active_port="analog-input-internal-mic")
MONITOR = Device("source", 9, "builtin.monitor", monitor_of="sink:0", id="source:9")
USB_OUT = sink(2, "usb-headset", bus="usb", description="USB Headset")
USB_IN = source(2, "usb-headset-mic", bus="usb", description="USB Headset")
HFP_IN = source(4, "bt.hfp-mic", api="bluez5", bluetooth_profile="headset-head-unit",
                card="bluez_card.X")
DEVICES = {d.id: d for d in (SPEAKER, MIC, MONITOR, USB_OUT, USB_IN, HFP_IN)}


def decision(output: Device | None, input: Device | None) -> RouteDecision:
    def choice(device):
        return PortChoice(route_port(device) if device else None, "test")
    return RouteDecision(output=choice(output), input=choice(input))


class Stand:
    """The runtime's side as the session routes see it: the devices and the router's
    decisions, set by the test."""

    def __init__(self):
        self.devices = dict(DEVICES)
        self.routes: dict[str, RouteDecision] = {}
        self.reconciles = 0


@pytest.fixture
def stand():
    return Stand()


@pytest.fixture
def core(policies, pm, stand):
    def on_change():
        stand.reconciles += 1
    sessions = AppSessions(lambda: policies, itertools.count(1), on_change, pm=pm)
    events = []
    sessions.listeners.append(lambda s, what, payload: events.append((s.id, what, dict(payload))))
    sessions.events = events
    return sessions


@pytest.fixture
def routes(core, policies, stand):
    return SessionRoutes(core, lambda: policies, lambda: stand.devices, lambda: stand.routes)


def app(core, category, options=(), pid=10):
    s = core.create(f":1.{pid}", Identity(pid=pid, exe=f"/usr/bin/app{pid}"), {"Name": "t"})
    core.set_category(s, category, "default", options)
    core.events.clear()
    return s


def uids(ports):
    return [p.uid for p in ports]


# -- what an app reads ---------------------------------------------------------------------------

def test_available_inputs_are_the_inputs_the_category_could_use(core, routes):
    call = app(core, "playAndRecord")
    # no monitor; HFP only with allowBluetooth, which playAndRecord offers (Apple's rule)
    assert uids(routes.available_inputs(call)) == [
        "builtin-mic/analog-input-internal-mic", "usb-headset-mic"]
    bluetooth = app(core, "playAndRecord", ["allowBluetooth"], pid=11)
    assert uids(routes.available_inputs(bluetooth)) == [
        "builtin-mic/analog-input-internal-mic", "usb-headset-mic", "bt.hfp-mic"]
    assert routes.available_inputs(app(core, "playback", pid=12)) == ()  # does not record
    port = routes.available_inputs(call)[1]
    assert (port.port_type, port.port_name, port.device) == ("usbAudio", "USB Headset",
                                                             "source:2")


def test_current_route_is_the_routers_decision_and_empty_before_it(core, routes, stand):
    call = app(core, "playAndRecord")
    assert routes.current_route(call) == Route()
    stand.routes[call.session_id] = decision(USB_OUT, USB_IN)
    assert uids(routes.current_route(call).outputs) == ["usb-headset"]
    assert uids(routes.current_route(call).inputs) == ["usb-headset-mic"]


# -- SetPreferredInput ---------------------------------------------------------------------------

def test_a_preferred_input_must_be_available_and_empty_clears(core, routes, stand):
    call = app(core, "playAndRecord")
    stand.reconciles = 0
    routes.set_preferred_input(call, "usb-headset-mic")
    assert call.preferred_input == "usb-headset-mic" and stand.reconciles == 1
    routes.set_preferred_input(call, "usb-headset-mic")  # the same: nothing to decide again
    assert stand.reconciles == 1
    for uid in ("gone/mic", "bt.hfp-mic", "builtin.monitor", "builtin"):
        with pytest.raises(errors.InputUnavailable) as info:
            routes.set_preferred_input(call, uid)  # absent, refused, a monitor, an output
        assert "AvailableInputs" in info.value.message
    assert call.preferred_input == "usb-headset-mic"  # a refused call changes nothing
    routes.set_preferred_input(call, "")
    assert call.preferred_input == "" and stand.reconciles == 2


def test_a_preferred_input_is_kept_when_its_port_goes(core, routes, stand):
    call = app(core, "record")
    routes.set_preferred_input(call, "usb-headset-mic")
    del stand.devices["source:2"]
    routes.refresh()
    assert call.preferred_input == "usb-headset-mic"  # the router ignores it while absent
    with pytest.raises(errors.InputUnavailable):
        routes.set_preferred_input(call, "usb-headset-mic")  # but it cannot be set anew


def test_a_category_that_does_not_record_prefers_no_input(core, routes):
    music = app(core, "playback")
    with pytest.raises(errors.InputUnavailable):
        routes.set_preferred_input(music, "builtin-mic/analog-input-internal-mic")
    routes.set_preferred_input(music, "")  # clearing always works


# -- OverrideOutputAudioPort ---------------------------------------------------------------------

def test_override_is_for_play_and_record_and_speaker_or_none(core, routes, stand):
    call = app(core, "playAndRecord")
    stand.reconciles = 0
    routes.override_output(call, "speaker")
    assert call.override == "speaker" and stand.reconciles == 1
    with pytest.raises(errors.UnknownPortOverride) as info:
        routes.override_output(call, "Speaker")
    assert info.value.name == "UnknownPortOverride" and "'Speaker'" in info.value.message
    assert call.override == "speaker"
    routes.override_output(call, "none")
    assert call.override == "none" and stand.reconciles == 2
    for category in ("playback", "record", "soloAmbient", "ambient", "multiRoute"):
        other = app(core, category, pid=20)
        with pytest.raises(errors.IncompatibleCategoryOption) as info:
            routes.override_output(other, "speaker")
        assert "playAndRecord" in info.value.message and other.override == "none"
        core.remove(other, "test")


def test_a_category_change_ends_the_override(core, routes):
    call = app(core, "playAndRecord")
    routes.override_output(call, "speaker")
    core.set_category(call, "playAndRecord", "voiceChat", [])  # the same category: kept
    assert call.override == "speaker"
    core.set_category(call, "playback", "default", [])
    assert call.override == "none"


# -- what the router tells -----------------------------------------------------------------------

def change(reason, previous, current):
    return RouteChange(category="playAndRecord", reason=reason, previous=previous,
                       current=current)


def test_route_change_announces_the_route_then_route_changed(core, routes, stand):
    call = app(core, "playAndRecord")
    before, after = decision(SPEAKER, MIC), decision(USB_OUT, USB_IN)
    stand.routes[call.session_id] = after
    routes.route_changed(call.session_id, change(RouteChangeReason.newDeviceAvailable,
                                                 before, after))
    (sid, what, props), (_, signal, payload) = core.events
    assert (sid, what, signal) == (call.id, "PropertiesChanged", "RouteChanged")
    assert props["CurrentRoute"] == after.route
    assert payload == {"reason": RouteChangeReason.newDeviceAvailable,
                       "previous_route": before.route}
    core.events.clear()
    routes.refresh()  # after the pass: already told
    assert core.events == []


def test_implicit_sessions_and_gone_sessions_get_nothing(core, routes):
    call = app(core, "playAndRecord")
    c = change(RouteChangeReason.oldDeviceUnavailable, decision(USB_OUT, USB_IN),
               decision(SPEAKER, MIC))
    routes.route_changed("implicit:exe:/usr/bin/pw-play:4242:playAndRecord", c)
    routes.route_changed("session:s99", c)
    core.remove(call, "test")
    core.events.clear()
    routes.route_changed(call.session_id, c)
    assert core.events == []


def test_refresh_announces_a_first_route_and_inputs_that_come_and_go(core, routes, stand):
    call = app(core, "playAndRecord")
    routes.refresh()
    assert core.events == [(call.id, "PropertiesChanged", {
        "AvailableInputs": routes.available_inputs(call)})]  # no route decided yet
    core.events.clear()
    stand.routes[call.session_id] = decision(SPEAKER, MIC)
    del stand.devices["source:2"]
    routes.refresh()
    assert core.events == [(call.id, "PropertiesChanged", {
        "CurrentRoute": decision(SPEAKER, MIC).route,
        "AvailableInputs": (route_port(MIC),)})]
    core.events.clear()
    routes.refresh()
    assert core.events == []


# -- D-Bus values ----------------------------------------------------------------------------------

def test_ports_routes_and_route_changes_as_dbus_values():
    port = RoutePort("usbAudio", "USB Headset", "usb-headset", "sink:2")
    assert port_dict(port) == {"port_type": Variant("s", "usbAudio"),
                               "port_name": Variant("s", "USB Headset"),
                               "uid": Variant("s", "usb-headset")}  # no device id
    route = Route(inputs=(), outputs=(port,))
    assert route_dict(route) == {"inputs": Variant("aa{sv}", []),
                                 "outputs": Variant("aa{sv}", [port_dict(port)])}
    signal = route_change_dict(RouteChangeReason.override, route)
    assert signal == {"reason": Variant("s", "override"), "reason_value": Variant("u", 4),
                      "previous_route": Variant("a{sv}", route_dict(route))}
    assert session_properties({"CurrentRoute": route, "AvailableInputs": (port,),
                               "Active": True}) == {
        "CurrentRoute": route_dict(route), "AvailableInputs": [port_dict(port)],
        "Active": True}


@pytest.mark.parametrize("reason, value", [
    ("newDeviceAvailable", 1), ("oldDeviceUnavailable", 2), ("categoryChange", 3),
    ("override", 4), ("wakeFromSleep", 6), ("noSuitableRouteForCategory", 7),
    ("routeConfigurationChange", 8), ("unknown", 0)])
def test_route_changed_carries_apples_name_and_number(reason, value):
    signal = route_change_dict(RouteChangeReason[reason], Route())
    assert (signal["reason"].value, signal["reason_value"].value) == (reason, value)


# -- through the adapter and the client, on a private bus -----------------------------------------

@pytest.fixture
async def api(buses, core, routes):
    """The adapter on the private bus with the session layer and its routes."""
    bus = await buses()
    api = DBusApi(bus, NoDaemon(), core, MicrophoneAccess(None), identify, routes)
    api.export()
    await bus.request_name(BUS_NAME)
    await api.start()
    return api


async def test_a_client_reads_routes_sets_them_and_hears_route_changed(buses, api, core,
                                                                        routes, stand):
    bus = await buses()
    session = await asyncio.wait_for(
        apc.AudioSession.create("call", category="playAndRecord", bus=bus), WAIT)
    app_session = core.sessions[session.id]
    assert await session.current_route() == {"inputs": [], "outputs": []}
    assert await session.available_inputs() == [
        {"port_type": "builtInMic", "port_name": "Builtin-Mic",
         "uid": "builtin-mic/analog-input-internal-mic"},
        {"port_type": "usbAudio", "port_name": "USB Headset", "uid": "usb-headset-mic"}]
    await session.set_preferred_input("usb-headset-mic")
    assert app_session.preferred_input == "usb-headset-mic"
    await session.set_preferred_input(None)
    assert app_session.preferred_input == ""
    with pytest.raises(apc.InputUnavailable):
        await session.set_preferred_input("bt.hfp-mic")
    with pytest.raises(errors.InvalidArgument) as info:
        await session.set_preferred_input("x" * (1 << 20))  # 1 MiB: named, never echoed
    assert "limit is 1024" in info.value.message and len(info.value.message) < 200
    with pytest.raises(apc.InputUnavailable) as unavailable:
        await session.set_preferred_input("y" * 1024)
    assert "yyy\u2026" in unavailable.value.message and len(unavailable.value.message) < 250
    await session.override_output_audio_port("speaker")
    assert app_session.override == "speaker"
    with pytest.raises(apc.UnknownPortOverride):
        await session.override_output_audio_port("bluetooth")
    with pytest.raises(errors.InvalidArgument):
        await session.override_output_audio_port("s" * 65)

    before, after = decision(SPEAKER, MIC), decision(USB_OUT, USB_IN)
    stand.routes[app_session.session_id] = after
    with session.events() as events:
        routes.route_changed(app_session.session_id,
                             change(RouteChangeReason.newDeviceAvailable, before, after))

        async def two():
            return [await events.__anext__(), await events.__anext__()]
        (first, props), (name, info) = await asyncio.wait_for(two(), WAIT)
    assert (first, name) == ("PropertiesChanged", "RouteChanged")
    usb = {"outputs": [{"port_type": "usbAudio", "port_name": "USB Headset",
                        "uid": "usb-headset"}],
           "inputs": [{"port_type": "usbAudio", "port_name": "USB Headset",
                       "uid": "usb-headset-mic"}]}
    assert props["CurrentRoute"] == usb
    assert info == {"reason": "newDeviceAvailable", "reason_value": 1, "previous_route": {
        "outputs": [{"port_type": "builtInSpeaker", "port_name": "Builtin",
                     "uid": "builtin/analog-output-speaker"}],
        "inputs": [{"port_type": "builtInMic", "port_name": "Builtin-Mic",
                    "uid": "builtin-mic/analog-input-internal-mic"}]}}
    assert await session.current_route() == usb
    await session.close()


async def test_a_playback_session_cannot_override_and_others_cannot_call(buses, api):
    bus = await buses()
    session = await asyncio.wait_for(
        apc.AudioSession.create("music", category="playback", bus=bus), WAIT)
    with pytest.raises(apc.IncompatibleCategoryOption):
        await session.override_output_audio_port("speaker")
    assert await session.available_inputs() == []
    other = await buses()
    with pytest.raises(apc.NotOwner):
        await apc.call(other, session.path, SESSION_IFACE, "OverrideOutputAudioPort", "s",
                       ["none"])
    await session.close()


def test_follow_reads_the_routers_routes_and_hears_its_changes(core, policies, stand):
    class Router:  # the interface of audiopolicyd.runtime.router.Router it uses
        routes: dict = {}
        on_route_change: list = []

    router = Router()
    routes = SessionRoutes(core, lambda: policies, lambda: stand.devices)
    routes.follow(router)
    call = app(core, "playAndRecord")
    router.routes = {call.session_id: decision(USB_OUT, USB_IN)}
    assert uids(routes.current_route(call).outputs) == ["usb-headset"]
    assert router.on_route_change == [routes.route_changed]


def test_the_docs_give_the_bounds_the_code_checks():
    doc = (Path(__file__).resolve().parents[2] / "docs/dbus-api.md").read_text()
    limits_section = doc[doc.index("## Limits"):doc.index("## Errors")]
    assert (f"`SetPreferredInput`'s uid {limits.PORT_UID_CHARS} characters, "
            f"`OverrideOutputAudioPort`'s port {limits.IDENTIFIER_CHARS}.") in \
        " ".join(limits_section.split())
    assert f"longer than {limits.PORT_UID_CHARS} characters is `Error.InvalidArgument`" in \
        " ".join(doc.split())


async def test_an_adapter_without_routes_shows_none_and_refuses_by_name(buses, daemon_bus):
    bus = await buses()
    session = await asyncio.wait_for(
        apc.AudioSession.create("call", category="playAndRecord", bus=bus), WAIT)
    assert await session.current_route() == {"inputs": [], "outputs": []}
    assert await session.available_inputs() == []
    with pytest.raises(errors.NotSupported):
        await session.override_output_audio_port("speaker")
    await session.close()
