"""The backend contract's wider half on both real servers: ids and restore keys, cards and
ports, moving a stream, the default devices, loading and unloading a module, capture of the
test microphone and of a sink's monitor, and device change events coalesced.

Each test drives :class:`~audiopolicyd.backends.pulse.PulseBackend` alone (no daemon) and
checks the server's own state through a second connection (pulsectl), never the backend's word.
The test servers have no sound hardware, so they list no cards and their devices no ports:
the conversion of a card's profiles and ports is tested on libpulse's own structures in
tests/unit/test_backends.py.
"""

from __future__ import annotations

import array
import asyncio
import logging
from pathlib import Path

import pytest

from audiopolicyd.backends.base import (
    CaptureFailed, Event, ModuleLoadFailed, NoSuchDevice, ServerGone,
)
from audiopolicyd.backends.pulse import PulseBackend
from audiopolicyd.backends.pulse_convert import stream_id
from audiopolicyd.model import Device, StreamKind
from tests.support.clients import play, record
from tests.support.processes import wait_for
from tests.support.servers import MIC, AudioServer, pulse
from tests.support.streams import sink_inputs, source_outputs, wait_stream

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

#: How long a test waits for the server (seconds): a bound on a wait, never an assertion.
WAIT = 10.0


@pytest.fixture
async def backend(server: AudioServer):
    """A :class:`PulseBackend` connected to *server*."""
    instance = PulseBackend(server.pulse_server, client_name="audiopolicyd-contract")
    await instance.connect()
    try:
        yield instance
    finally:
        instance.close()


async def device(backend: PulseBackend, name: str) -> Device:
    found = [d for d in await backend.devices() if d.name == name]
    assert len(found) == 1, f"no single device {name}: {found}"
    return found[0]


async def eventually(read, predicate, what: str):
    """Read (``await read()``) until ``predicate(value)``; fail naming *what* after
    :data:`WAIT` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not predicate(value := await read()):
        assert loop.time() < deadline, f"timed out waiting for {what}: {value}"
        await asyncio.sleep(0.01)
    return value


def peak(block: bytes) -> int:
    return max((abs(v) for v in array.array("h", block)), default=0)


async def test_streams_and_devices_carry_the_ids_and_restore_keys_of_today(
        server: AudioServer, backend: PulseBackend, tone: Path):
    proc = play(server, tone, role="music")
    wait_stream(server, proc)
    (info,) = sink_inputs(server)
    (stream,) = [s for s in await backend.streams() if s.index == info.index]
    assert stream.id == stream.key == f"sink-input:{info.index}"
    assert stream.restore_key == "sink-input-by-media.role:music"
    with pulse(server) as p:
        sinks = {s.name: s.index for s in p.sink_list()}
        sources = {s.name: s.index for s in p.source_list()}
    devices = {d.name: d for d in await backend.devices()}
    assert {n: d.id for n, d in devices.items() if d.kind == "sink"} == {
        n: f"sink:{i}" for n, i in sinks.items()}
    assert {n: d.id for n, d in devices.items() if d.kind == "source"} == {
        n: f"source:{i}" for n, i in sources.items()}


async def test_a_streams_device_and_a_monitors_sink_are_device_ids(
        server: AudioServer, backend: PulseBackend, tone: Path):
    """Where a stream is and which sink a monitor carries leave the backend as the ids its
    devices have, never the server's indices (on pipewire-pulse a sink and its monitor share
    one index: their ids differ)."""
    player = play(server, tone, device="speaker")
    wait_stream(server, player)
    recorder = record(server, "speaker.monitor", latency_ms=20)
    wait_stream(server, recorder, kind="source-output")
    speaker, monitor, mic = [await device(backend, n) for n in ("speaker", "speaker.monitor",
                                                                 MIC)]
    assert (monitor.monitor, monitor.monitor_of) == (True, speaker.id)
    assert (mic.monitor, mic.monitor_of, speaker.monitor_of) == (False, "", "")
    streams = {s.kind: s for s in await backend.streams() if not s.own}
    assert streams[StreamKind.SINK_INPUT].device == speaker.id
    assert streams[StreamKind.SOURCE_OUTPUT].device == monitor.id
    assert streams[StreamKind.SOURCE_OUTPUT].monitor


async def test_one_device_reads_as_the_device_list_shows_it(server: AudioServer,
                                                           backend: PulseBackend):
    """``Backend.device(id)`` (the mirror's read on a device's event) gives what
    ``devices()`` lists for that id, sinks and monitors alike; None once it is gone;
    ValueError for an id that is not a device's."""
    listed = await backend.devices()
    assert listed
    for want in listed:
        assert await backend.device(want.id) == want
    module = await backend.load_module("module-null-sink", "sink_name=contract_gone")
    gone = await device(backend, "contract_gone")
    await backend.unload_module(module)
    await eventually(lambda: backend.device(gone.id), lambda d: d is None, "the sink gone")
    for foreign in ("sink-input:1", "card:0", "sink:", "speaker"):
        with pytest.raises(ValueError):
            await backend.device(foreign)


async def test_cards_and_ports_read_as_the_server_lists_them(server: AudioServer,
                                                             backend: PulseBackend):
    with pulse(server) as p:
        cards = {c.name: ([x.name for x in c.profile_list], c.profile_active.name,
                          [x.name for x in c.port_list]) for c in p.card_list()}
        ports = {(kind, d.name): ([x.name for x in d.port_list],
                                  d.port_active.name if d.port_active else None)
                 for kind, listing in (("sink", p.sink_list()), ("source", p.source_list()))
                 for d in listing}
    assert {c.name: ([x.name for x in c.profiles], c.active_profile, [x.name for x in c.ports])
            for c in await backend.cards()} == cards
    assert {(d.kind, d.name): ([x.name for x in d.ports], d.active_port)
            for d in await backend.devices()} == ports
    # the test servers' devices are virtual: no card, no bus
    assert (await device(backend, "speaker")).card is None


async def test_a_stream_is_moved_to_another_sink(server: AudioServer, backend: PulseBackend,
                                                 tone: Path):
    proc = play(server, tone, device="speaker")
    wait_stream(server, proc)
    (info,) = sink_inputs(server)
    stream = await backend.stream(stream_id(StreamKind.SINK_INPUT, info.index))
    headphones = await device(backend, "headphones")
    await backend.move_stream(stream, headphones)
    wait_for(lambda: sink_inputs(server)[0].sink == headphones.index, WAIT,
             "the stream on headphones")
    with pytest.raises(ValueError):
        await backend.move_stream(stream, await device(backend, MIC))
    gone = Device("sink", 4000, "no-such-sink", id="sink:4000")
    with pytest.raises(NoSuchDevice):
        await backend.move_stream(stream, gone)
    assert sink_inputs(server)[0].sink == headphones.index


async def test_the_default_sink_and_source_are_set_and_restored(server: AudioServer,
                                                                backend: PulseBackend):
    def defaults() -> tuple[str, str]:
        with pulse(server) as p:
            info = p.server_info()
            return info.default_sink_name, info.default_source_name

    before = await backend.default_devices()
    assert (before.sink, before.source) == defaults() == ("speaker", MIC)
    await backend.set_default_device("sink", await device(backend, "headphones"))
    wait_for(lambda: defaults()[0] == "headphones", WAIT, "headphones the default sink")
    # pipewire-pulse reports the new default a moment after the call (WirePlumber picks it),
    # and keeps each connection's own copy of it: a connection made moments before the change
    # may never see it (docs/routing.md, "What the servers do"), so a backend connected now
    # reads it
    reader = PulseBackend(server.pulse_server, client_name="audiopolicyd-contract-reader")
    await reader.connect()
    try:
        await eventually(reader.default_devices, lambda d: d.sink == "headphones",
                         "the backend to read headphones as the default sink")
    finally:
        reader.close()
    with pytest.raises(ValueError):
        await backend.set_default_device("source", await device(backend, "speaker"))
    with pytest.raises(NoSuchDevice):
        await backend.set_default_device("sink", Device("sink", 4000, "no-such-sink"))
    await backend.set_default_device("sink", await device(backend, before.sink))
    wait_for(lambda: defaults() == ("speaker", MIC), WAIT, "speaker the default sink again")


async def test_a_module_is_loaded_and_unloaded(server: AudioServer, backend: PulseBackend):
    def state() -> tuple[dict[int, str], set[str]]:
        with pulse(server) as p:
            return {m.index: m.name for m in p.module_list()}, {s.name for s in p.sink_list()}

    module = await backend.load_module("module-null-sink", "sink_name=contract_sink")
    assert module.name == "module-null-sink" and module.argument == "sink_name=contract_sink"
    modules, sinks = state()
    assert modules.get(module.index) == "module-null-sink" and "contract_sink" in sinks
    await backend.unload_module(module)
    wait_for(lambda: module.index not in state()[0] and "contract_sink" not in state()[1],
             WAIT, "the module and its sink gone")
    await backend.unload_module(module)  # gone already: not an error
    with pytest.raises(ModuleLoadFailed):
        await backend.load_module("module-that-does-not-exist")


async def capture(backend: PulseBackend, target: Device, blocks: int, loud: int = 0,
                  **shape) -> list[bytes]:
    """*blocks* blocks of *target*, counted from the first whose peak is over *loud* (a test
    source may start a moment after the server: what comes before is kept, not counted)."""
    out: list[bytes] = []
    heard = None
    source = backend.capture(target, **shape)
    try:
        async for block in source:
            logger.debug("captured a block, peak %d", peak(block))
            out.append(block)
            if heard is None and peak(block) > loud:
                heard = len(out) - 1
            if heard is not None and len(out) - heard == blocks:
                break
    finally:
        await source.aclose()
    return out[heard:]


async def test_captured_blocks_carry_the_microphones_audio(server: AudioServer,
                                                          backend: PulseBackend):
    mic = await device(backend, MIC)
    # another client's recording: not ours. Small fragments: beside a recorder of parecord's
    # default 2 s, this capture heard only silence on pipewire-pulse in every run here
    # (presumably the pipe source is then read in large quanta, and the test mic's feeder
    # drops what waits unread: tests/support/programs/mic_feeder.py)
    recorder = record(server, MIC, latency_ms=20)
    wait_stream(server, recorder, kind="source-output")
    source = backend.capture(mic, rate=48000, channels=2, block_ms=20)
    first = await asyncio.wait_for(source.__anext__(), WAIT)
    # the capture is a recording stream of the backend's own connection, and says so
    recordings = {s.own: s for s in await backend.streams()
                  if s.kind is StreamKind.SOURCE_OUTPUT}
    await source.aclose()
    assert set(recordings) == {True, False}
    assert recordings[True].properties["application.name"] == "audiopolicyd-contract"
    assert recordings[False].properties["application.name"] != "audiopolicyd-contract"
    assert len(first) == 48000 * 20 // 1000 * 2 * 2
    # the test microphone's sine, peak 16384, once it sounds (a block of another format or
    # byte order would peak elsewhere; a loaded machine may starve the feeder for a block)
    blocks = await asyncio.wait_for(capture(backend, mic, 20, loud=15000, rate=48000,
                                            channels=2, block_ms=20), WAIT)
    assert {len(b) for b in blocks} == {48000 * 20 // 1000 * 2 * 2}
    assert max(peak(b) for b in blocks) <= 16384
    assert sum(peak(b) > 15000 for b in blocks) >= len(blocks) // 2
    # gone when the reader stops (the server answers our next request after removing it)
    assert not [s for s in await backend.streams() if s.own]
    assert [s for s in await backend.streams() if s.kind is StreamKind.SOURCE_OUTPUT]
    with pytest.raises(NoSuchDevice):
        await capture(backend, Device("source", 4000, "no-such-source"), 1)


async def test_a_capture_ends_with_a_named_error_when_killed_or_when_the_server_goes(
        server: AudioServer, backend: PulseBackend):
    blocks = backend.capture(await device(backend, MIC))
    await asyncio.wait_for(blocks.__anext__(), WAIT)
    (ours,) = [o for o in source_outputs(server)
               if o.proplist.get("application.name") == "audiopolicyd-contract"]
    killer = PulseBackend(server.pulse_server, client_name="killer")  # another client
    await killer.connect()
    try:
        await killer.kill(stream_id(StreamKind.SOURCE_OUTPUT, ours.index))  # as the gate kills a fighter
    finally:
        killer.close()
    with pytest.raises(CaptureFailed):
        await asyncio.wait_for(_drain(blocks), WAIT)
    blocks = backend.capture(await device(backend, MIC))
    await asyncio.wait_for(blocks.__anext__(), WAIT)
    server.stop()
    with pytest.raises(ServerGone):
        await asyncio.wait_for(_drain(blocks), WAIT)


async def _drain(blocks) -> None:
    async for _ in blocks:
        pass


async def test_a_sinks_monitor_is_captured(server: AudioServer, backend: PulseBackend,
                                          tone: Path):
    proc = play(server, tone, device="speaker")
    wait_stream(server, proc)
    speaker = await device(backend, "speaker")
    # stereo, as played: a downmix to mono differs by server (PipeWire sums at -3 dB)
    blocks = await asyncio.wait_for(capture(backend, speaker, 10, loud=3000, rate=16000,
                                            channels=2, block_ms=10), WAIT)
    # the tone, at 0.3 of full scale (peak 9830), once it sounds
    assert {len(b) for b in blocks} == {16000 * 10 // 1000 * 2 * 2}
    assert max(peak(b) for b in blocks) < 11000
    assert sum(peak(b) > 8000 for b in blocks) >= len(blocks) // 2


async def test_a_flood_of_device_changes_is_coalesced_and_stream_events_still_flow(
        server: AudioServer, backend: PulseBackend, tone: Path):
    events: list[Event] = []
    speaker = await device(backend, "speaker")
    changes = 400

    async def follow():
        async for event in backend.events():
            events.append(event)

    def flood():
        with pulse(server) as p:
            sink = p.get_sink_by_name("speaker")
            for i in range(changes):
                p.volume_set_all_chans(sink, 0.5 + (i % 2) * 0.25)

    follower = asyncio.ensure_future(follow())
    try:
        await asyncio.sleep(0.2)  # subscribed
        await asyncio.to_thread(flood)
        proc = play(server, tone, device="headphones")
        await asyncio.to_thread(wait_stream, server, proc)
        await asyncio.sleep(0.5)  # the last folded change's window ends
    finally:
        follower.cancel()
        await asyncio.wait({follower})  # unsubscribed before the connection closes
    ours = [e for e in events if e.facility == "sink" and e.index == speaker.index]
    logger.info("%d sink change events delivered for %d volume changes", len(ours), changes)
    assert all(e.type == "change" and e.id == speaker.id for e in ours)
    # the first change at once and the last one folded in at the end of its window: never
    # one per change
    assert 2 <= len(ours) < changes // 4
    (info,) = sink_inputs(server)
    assert Event("new", "sink-input", info.index, f"sink-input:{info.index}") in events
