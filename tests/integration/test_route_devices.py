"""What routing needs from the backend, on both real servers: fake devices with a real device's
properties (tests/support/devices.py) plugged in and out while streams play, as
:class:`~audiopolicyd.backends.pulse.PulseBackend` reads them and as the server itself lists
them; a stream the backend moves onto one is there per the server and is rescued by the server
when the device goes; the echo canceller the runtime will load for a call; a card profile
switch of a card that does not exist.

The facts measured here are written down in docs/routing.md, "What the servers do".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from audiopolicyd.backends.base import Event, NoSuchDevice
from audiopolicyd.backends.pulse import PulseBackend
from audiopolicyd.model import Card, Stream
from tests.integration.test_backend_contract import (  # noqa: F401 (the fixture backend)
    WAIT, backend, device, eventually,
)
from tests.support.clients import play, record
from tests.support.devices import ALL, USB_HEADSET, USB_HEADSET_MIC, plug, plugged, unplug
from tests.support.processes import wait_for
from tests.support.servers import MIC, AudioServer, pulse
from tests.support.streams import stream_of, wait_stream

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

#: The echo canceller's arguments that work on both servers (docs/routing.md): explicit
#: device names, because the servers' defaults differ (PulseAudio ``<master>.echo-cancel``,
#: pipewire-pulse ``echo-cancel-sink`` / ``echo-cancel-source``).
ECHO_CANCEL_ARGS = (f"source_master={USB_HEADSET_MIC.name} sink_master={USB_HEADSET.name} "
                    "aec_method=webrtc source_name=ec_source sink_name=ec_sink")


@contextlib.asynccontextmanager
async def collected(server: AudioServer, backend: PulseBackend):  # noqa: F811
    """The backend's events while the block runs, in a list that grows; it starts once the
    subscription is known to deliver (a probe sink's events arrived)."""
    events: list[Event] = []

    async def collect() -> None:
        async for event in backend.events():
            events.append(event)

    task = asyncio.create_task(collect())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not any(e.facility == "sink" for e in events):
            assert loop.time() < deadline, "the backend's events never came"
            with pulse(server) as p:
                p.module_unload(p.module_load("module-null-sink", "sink_name=route_probe"))
            await asyncio.sleep(0.1)
        events.clear()
        yield events
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def call_and_recording(server: AudioServer, tone: Path):
    """A call's playback (``media.role=phone``) on the default sink and its recording of
    ``mic``, both linked."""
    player = play(server, tone, role="phone")
    wait_stream(server, player)
    recorder = record(server, MIC, role="phone")
    wait_stream(server, recorder, "source-output")
    return player, recorder


async def backend_stream(backend: PulseBackend, server: AudioServer, proc,  # noqa: F811
                         kind: str = "sink-input") -> Stream:
    info = stream_of(server, proc, kind)
    assert info is not None, f"no {kind} of {proc.args[0]}"
    stream = await backend.stream(f"{kind}:{info.index}")
    assert stream is not None
    return stream


def server_device_of(server: AudioServer, proc, kind: str = "sink-input") -> int | None:
    """The index of the device client *proc*'s stream is on, per the server itself."""
    info = stream_of(server, proc, kind)
    return None if info is None else (info.sink if kind == "sink-input" else info.source)


async def test_fake_devices_read_with_the_properties_of_real_ones(
        server: AudioServer, backend: PulseBackend):  # noqa: F811 (the imported fixture)
    async with collected(server, backend) as events:
        for fake in ALL:
            loaded = plug(server, fake)
            found = await device(backend, fake.name)
            assert (found.kind, found.api, found.bus, found.form_factor,
                    found.bluetooth_profile, found.description) == (
                fake.kind, fake.api, fake.bus, fake.form_factor,
                fake.expected_profile(server.name), fake.description), fake
            # a null sink or a pipe source has no card and no port
            assert (found.card, found.ports, found.active_port) == (None, (), None)
            with pulse(server) as p:  # the server's own word
                listing = p.sink_list() if fake.kind == "sink" else p.source_list()
                (info,) = [d for d in listing if d.name == fake.name]
            for key, value in fake.properties(server.name).items():
                assert info.proplist.get(key) == value, (fake.name, key)
            await eventually(lambda: asyncio.sleep(0, list(events)),
                             lambda seen, d=found: Event("new", d.kind, d.index, d.id) in seen,
                             f"the new {fake.kind} event of {fake.name}")
            unplug(server, loaded)
            await eventually(
                lambda: asyncio.sleep(0, list(events)),
                lambda seen, d=found: Event("remove", d.kind, d.index, d.id) in seen,
                f"the remove {fake.kind} event of {fake.name}")


async def test_a_stream_moved_onto_a_fake_device_is_there_and_rescued_when_it_goes(
        server: AudioServer, backend: PulseBackend, tone: Path):  # noqa: F811
    player, recorder = call_and_recording(server, tone)
    speaker, mic = await device(backend, "speaker"), await device(backend, MIC)
    headset = plug(server, USB_HEADSET)
    headset_mic = plug(server, USB_HEADSET_MIC)
    sink, source = await device(backend, headset.name), await device(backend, headset_mic.name)
    await backend.move_stream(await backend_stream(backend, server, player), sink)
    await backend.move_stream(await backend_stream(backend, server, recorder, "source-output"),
                              source)
    wait_for(lambda: server_device_of(server, player), WAIT, "the call on the headset",
             until=lambda index: index == sink.index)
    wait_for(lambda: server_device_of(server, recorder, "source-output"), WAIT,
             "the recording on the headset's microphone", until=lambda index: index == source.index)
    unplug(server, headset)
    unplug(server, headset_mic)
    # PulseAudio rescues inside the unload, WirePlumber moves a moment later: to the default
    wait_for(lambda: server_device_of(server, player), WAIT, "the call rescued to the speaker",
             until=lambda index: index == speaker.index)
    wait_for(lambda: server_device_of(server, recorder, "source-output"), WAIT,
             "the recording rescued to the mic", until=lambda index: index == mic.index)


async def test_the_echo_canceller_on_the_test_beds_devices_comes_and_goes_whole(
        server: AudioServer, backend: PulseBackend, tone: Path):  # noqa: F811
    player, recorder = call_and_recording(server, tone)
    with plugged(server, USB_HEADSET), plugged(server, USB_HEADSET_MIC):
        before = {d.name for d in await backend.devices()}
        streams_before = {s.id for s in await backend.streams()}
        module = await backend.load_module("module-echo-cancel", ECHO_CANCEL_ARGS)
        devices = await eventually(
            backend.devices, lambda found: {"ec_sink", "ec_source"} <= {d.name for d in found},
            "the echo canceller's sink and source")
        by_name = {d.name: d for d in devices}
        ec_sink, ec_source = by_name["ec_sink"], by_name["ec_source"]
        assert (ec_sink.kind, ec_source.kind, ec_source.monitor_of) == ("sink", "source", "")
        # its own two streams, one on each master; who owns them differs (docs/routing.md)
        masters = {d.name: d.id for d in devices}  # a stream's device is a device id
        expected = [("sink-input", masters[USB_HEADSET.name]),
                    ("source-output", masters[USB_HEADSET_MIC.name])]

        def own(found: list[Stream]) -> list[Stream]:
            return sorted((s for s in found if s.id not in streams_before),
                          key=lambda s: s.kind.value)

        linked = await eventually(
            backend.streams, lambda found: [(s.kind.value, s.device) for s in own(found)]
            == expected, "the echo canceller's own streams on its masters")
        own_streams = own(linked)
        if server.name == "pulseaudio":
            assert {s.owner_module for s in own_streams} == {module.index}
        else:  # pipewire-pulse 0.3.65 names no owner: only the link group ties them
            assert {s.owner_module for s in own_streams} == {-1}
            assert {s.properties.get("node.link-group") for s in own_streams} == {
                ec_sink.properties["node.link-group"]}
        # nobody else moved the app's streams onto it (WirePlumber does not; PulseAudio's
        # stream-restore would only for a device name it remembers for the role)
        assert server_device_of(server, player) != ec_sink.index
        await backend.move_stream(await backend_stream(backend, server, player), ec_sink)
        await backend.move_stream(await backend_stream(backend, server, recorder,
                                                       "source-output"), ec_source)
        wait_for(lambda: server_device_of(server, player), WAIT, "the call on the canceller",
                 until=lambda index: index == ec_sink.index)
        wait_for(lambda: server_device_of(server, recorder, "source-output"), WAIT,
                 "the recording on the canceller", until=lambda index: index == ec_source.index)
        await backend.unload_module(module)
        await eventually(backend.devices,
                         lambda found: {d.name for d in found} == before,
                         "the echo canceller's devices gone and nothing else changed")
        await eventually(backend.streams,
                         lambda found: {s.id for s in found} == streams_before,
                         "the echo canceller's own streams gone")
        assert not [m for m in await backend.modules()
                    if m.index == module.index and m.name == "module-echo-cancel"]
        # the app's streams are on devices that exist
        existing = {d.index for d in await backend.devices() if d.kind == "sink"}
        wait_for(lambda: server_device_of(server, player), WAIT, "the call on a sink",
                 until=lambda index: index in existing)


async def test_a_profile_switch_of_a_card_that_is_not_there_is_named(
        backend: PulseBackend):  # noqa: F811
    # the test servers have no cards: any card is one that went away
    assert await backend.cards() == []
    gone = Card("card:4000", 4000, "bluez_card.00_00_00_00_00_00")
    with pytest.raises(NoSuchDevice):
        await backend.set_card_profile(gone, "headset-head-unit")
