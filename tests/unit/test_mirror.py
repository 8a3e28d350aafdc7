"""The mirror (:mod:`audiopolicyd.runtime.mirror`) on a scripted server: write generations make
a stale read harmless, a new stream's volume 0 before pipewire-pulse's restore is never taken
for the user's, and device events refresh the devices. The first tests drive a bare
:class:`~audiopolicyd.runtime.mirror.Mirror`; the others the whole runtime with pipewire-pulse's
quirks on (:meth:`~tests.support.fake_backend.FakeServer.behave_as_pipewire_pulse`)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from audiopolicyd.backends.base import Event
from audiopolicyd.effects import scaled
from audiopolicyd.model import Device, StreamKind
from audiopolicyd.runtime.mirror import Mirror
from audiopolicyd.runtime.tasks import Tasks

from ..support.fake_backend import FakeServer
from .conftest import make_stream
from .test_mic_fight import KEY as RECORDER, recorder
from .test_runtime import USER, game, server, start, until  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("collect_garbage")

KEY = "sink-input:1"
OURS = (20000, 20000)


class Folds:
    """A bare mirror on its own connection, recording what it folds in."""

    def __init__(self, server: FakeServer):
        self.backend = server.connection()
        self.errors: list[BaseException] = []
        self.folded: list[tuple[tuple[int, ...], bool]] = []  # (volume kept, fresh)
        self.removed: list[str] = []
        self.device_reads = 0  # routings asked for (on_devices)
        self.passes = 0  # whole passes asked for by a device's read (on_streams)
        self.mirror = Mirror(self.backend, Tasks(self.errors.append), self._fold,
                             self.removed.append, self._devices, self._pass)

    def _pass(self) -> None:
        self.passes += 1

    def _fold(self, old, stream, fresh) -> None:
        self.folded.append((stream.volume, fresh))

    def _devices(self) -> None:
        self.device_reads += 1

    async def connect(self) -> Folds:
        await self.backend.connect()
        self.mirror.load(await self.backend.devices(), await self.backend.streams())
        self.mirror.connected.set()
        return self

    def write_volume(self, volume) -> asyncio.Task:
        stream = self.mirror.streams[KEY]
        return self.mirror.send(KEY, self.backend.set_volume(stream.key, volume),
                                volume=volume)

    def close(self) -> None:
        for task in list(self.mirror.tasks.pending):
            task.cancel()
        self.backend.close()


@pytest.fixture
async def bare(server):
    made: list[Folds] = []

    async def bare() -> Folds:
        made.append(await Folds(server).connect())
        return made[-1]

    yield bare
    for folds in made:
        folds.close()
        assert not folds.errors


async def test_a_write_is_in_the_mirror_before_the_server_answers_it(server, bare):
    server.add(game(1))
    folds = await bare()
    server.hold()
    folds.write_volume(OURS)
    assert folds.mirror.streams[KEY].volume == OURS
    assert folds.mirror.generation(KEY) == 1
    server.release()


async def test_a_read_answered_before_our_write_is_stale_and_read_again(server, bare):
    """pipewire-pulse answers a read pipelined behind a write with the old volume: the mirror
    keeps what it wrote, and reads the stream again once the write is answered."""
    server.add(game(1))
    server.stale_reads = True
    folds = await bare()
    server.hold()
    folds.write_volume(OURS)
    folds.mirror.read(KEY)  # pipelined behind the write
    await until(lambda: folds.folded, "the read answered")
    assert folds.folded == [(OURS, False)], "the old volume was not taken"
    server.release()
    await until(lambda: len(folds.folded) == 2, "the stream read again")
    assert folds.folded[1] == (OURS, True)
    assert server.volume(KEY) == OURS


async def test_a_fresh_read_shows_what_the_user_set(server, bare):
    server.add(game(1))
    folds = await bare()
    await folds.write_volume(OURS)
    server.user_volume(KEY, (30000, 30000))
    folds.mirror.handle(Event("change", "sink-input", 1, KEY))
    await until(lambda: folds.folded, "the read answered")
    assert folds.folded == [((30000, 30000), True)]
    assert folds.mirror.streams[KEY].volume == (30000, 30000)


async def test_a_stream_removed_while_its_read_is_in_flight_stays_removed(server, bare):
    """The answer to a read that was in flight when the stream's ``remove`` came (it still
    shows the stream) does not bring it back."""
    server.add(game(1))
    folds = await bare()
    folds.mirror.handle(Event("change", "sink-input", 1, KEY))
    await asyncio.sleep(0)  # the read is sent
    folds.mirror.handle(Event("remove", "sink-input", 1, KEY))
    await asyncio.sleep(0.02)
    assert folds.removed == [KEY] and KEY not in folds.mirror.streams and not folds.folded


async def test_device_events_refresh_the_devices(server, bare):
    folds = await bare()
    server.devices.append(Device("sink", 4, "headset"))
    assert folds.mirror.handle(Event("new", "sink", 4, "sink:4"))
    await until(lambda: folds.device_reads, "the devices read again")
    assert folds.mirror.devices["sink:4"].name == "headset"
    assert not folds.mirror.handle(Event("new", "module", 3)), "not the mirror's"


class ListsCounted:
    """Counts the backend's list reads of every device (a card's event needs one)."""

    def __init__(self, folds: Folds):
        self.lists = 0
        listing = folds.backend.devices

        async def devices():
            self.lists += 1
            return await listing()
        folds.backend.devices = devices  # type: ignore[method-assign]


async def test_a_devices_event_reads_that_device_alone(server, bare):
    """A sink's or source's event reads that device (one round trip), never every device and
    card (several, on every event of a plug: routing 4x slower than a reference mover);
    a read that finds the device unchanged (a sink's volume) asks for no pass."""
    folds = await bare()
    counted = ListsCounted(folds)
    server.devices.append(Device("sink", 4, "headset"))
    folds.mirror.handle(Event("new", "sink", 4, "sink:4"))
    folds.mirror.handle(Event("change", "sink", 4, "sink:4"))  # while the read is in flight
    await until(lambda: "sink:4" in folds.mirror.devices, "the headset read")
    await asyncio.sleep(0.02)  # the second read, for the change
    assert counted.lists == 0 and folds.device_reads == 1, "read again, unchanged: no pass"
    server.devices[-1] = Device("sink", 4, "headset", "USB Headset")
    folds.mirror.handle(Event("change", "sink", 4, "sink:4"))
    await until(lambda: folds.mirror.devices["sink:4"].description == "USB Headset",
                "the change read")
    assert counted.lists == 0 and folds.device_reads == 2
    folds.mirror.handle(Event("change", "card", 2, "card:2"))
    await until(lambda: counted.lists == 1, "a card's event reads every device")


async def test_a_device_removed_while_its_read_is_in_flight_stays_removed(server, bare):
    """A device's ``remove`` drops it at once, without a read; the answer of a read that was in
    flight then (it still shows the device) does not bring it back."""
    headset = Device("sink", 4, "headset")
    server.devices.append(headset)
    folds = await bare()
    assert "sink:4" in folds.mirror.devices
    folds.mirror.handle(Event("change", "sink", 4, "sink:4"))
    await asyncio.sleep(0)  # the read is sent, and answered on the next turn
    folds.mirror.handle(Event("remove", "sink", 4, "sink:4"))
    assert "sink:4" not in folds.mirror.devices and folds.device_reads == 1
    await asyncio.sleep(0.02)
    assert "sink:4" not in folds.mirror.devices and folds.device_reads == 1


async def test_a_monitors_removal_is_its_sinks_going_and_asks_for_one_pass(server, bare):
    """A sink's monitor goes just before its sink (after PulseAudio's rescue moved the sink's
    streams): the sink is gone for the mirror from then on, so a pass on the rescued streams'
    reads does not move them back there; the sink's own removal asks for no second pass."""
    server.devices += [Device("sink", 4, "headset"),
                       Device("source", 5, "headset.monitor", monitor_of="sink:4")]
    folds = await bare()
    folds.mirror.handle(Event("remove", "source", 5, "source:5"))
    assert "source:5" not in folds.mirror.devices and "sink:4" not in folds.mirror.devices
    assert folds.device_reads == 1
    folds.mirror.handle(Event("remove", "sink", 4, "sink:4"))
    assert folds.device_reads == 1


async def test_a_killed_stream_found_gone_is_read_no_more_until_its_remove(server, bare):
    """A killed fighter's change events queued before its ``remove`` (hundreds, from a stream
    moved in a tight loop): a read of each held up every later event; a ``new`` at its index
    (pipewire-pulse reuses them) is read again. A stream we did not kill that a read finds
    gone is read again on its next event (pipewire-pulse announces a stream before it can be
    read)."""
    server.add(game(1))
    server.add(game(2))
    folds = await bare()
    folds.mirror.guard = guard = NewStreams()
    reads = []
    stream = folds.backend.stream
    folds.backend.stream = lambda key: reads.append(key) or stream(key)
    other = "sink-input:2"
    guard.killed.add(KEY)
    for key in (KEY, other):
        del server.state[key]  # gone, its remove not seen yet
        await folds.mirror.reread(key)
        assert key not in folds.mirror.streams
    assert reads == [KEY, other]
    for _ in range(50):
        folds.mirror.handle(Event("change", "sink-input", 1, KEY))
    folds.mirror.handle(Event("change", "sink-input", 2, other))
    await until(lambda: reads.count(other) == 2, "the other stream read again")
    assert reads.count(KEY) == 1
    folds.mirror.handle(Event("remove", "sink-input", 1, KEY))
    server.add(game(1))  # a new stream at the index
    folds.mirror.handle(Event("new", "sink-input", 1, KEY))
    await until(lambda: KEY in folds.mirror.streams, "the new stream read")
    folds.mirror.handle(Event("change", "sink-input", 1, KEY))
    await until(lambda: reads.count(KEY) == 3, "its change read")


async def test_a_monitor_asks_for_a_pass_only_when_a_stream_records_it(server, bare):
    """A sink's monitor is no route's port; but a stream read before it, recording it, is a
    monitor's recording only once it is known (the gate, the engine): a whole pass."""
    server.add(dataclasses.replace(make_stream(3, kind=StreamKind.SOURCE_OUTPUT),
                                   device="source:6"))  # read before its device
    folds = await bare()
    assert "source-output:3" in folds.mirror.streams
    server.devices.append(Device("source", 5, "desk.monitor", monitor_of="sink:0"))
    folds.mirror.handle(Event("new", "source", 5, "source:5"))
    await until(lambda: "source:5" in folds.mirror.devices, "the monitor read")
    assert (folds.device_reads, folds.passes) == (0, 0)
    server.devices.append(Device("source", 6, "headset.monitor", monitor_of="sink:0"))
    folds.mirror.handle(Event("new", "source", 6, "source:6"))
    await until(lambda: "source:6" in folds.mirror.devices, "its monitor read")
    assert (folds.device_reads, folds.passes) == (0, 1)


async def test_a_monitor_whose_sink_is_unknown_asks_for_no_pass(server, bare):
    server.devices += [Device("source", 5, "headset.monitor", monitor_of="sink:4")]
    folds = await bare()
    folds.mirror.devices.pop("sink:4", None)
    folds.mirror.handle(Event("remove", "source", 5, "source:5"))
    assert "source:5" not in folds.mirror.devices and folds.device_reads == 0


async def test_a_stale_read_of_a_new_stream_keeps_what_we_wrote_before_it(server, start):
    """The gate mutes a new recording on its ``new`` event, ahead of the first read, which
    pipewire-pulse answers with the stream as it was before the mute (unmuted): the mirror
    keeps our mute, so nothing is written twice."""
    server.stale_reads = True
    await start(microphone=True)
    server.add(recorder())
    await until(lambda: (RECORDER, "volume", (0, 0)) in server.writes, "the stream held")
    await asyncio.sleep(0.05)
    assert server.writes == [(RECORDER, "muted", True), (RECORDER, "volume", (0, 0))]


async def test_volume_0_before_the_restore_is_not_the_users_volume(server, start):
    """pipewire-pulse links a new stream at volume 0 before WirePlumber restores its volume: a
    duck planned then would duck from 0 and "restore" 0. It is planned once the restore came,
    from the restored volume."""
    server.behave_as_pipewire_pulse(restore_late=0.05)
    daemon = await start()
    server.add(make_stream(2, role="phone"))
    await until(lambda: server.state["sink-input:2"].linked, "the call linked")
    server.add(game(1))
    await until(lambda: server.state[KEY].linked, "the game linked at 0")
    await asyncio.sleep(0.02)  # before the restore: nothing written to it
    assert server.volume(KEY) == (0, 0)
    assert not [w for w in server.writes if w[0] == KEY]
    await until(lambda: server.volume(KEY) == scaled(USER, 0.2), "ducked from the restore")
    assert daemon.reconciler.applied[KEY].base == USER
    server.remove("sink-input:2")
    await until(lambda: server.volume(KEY) == USER, "the user's volume back, not 0")


async def test_one_read_of_a_stream_at_a_time_and_one_more_after(server, bare):
    """Change events that come while a stream's read is in flight make one more read once it
    is answered, not one each (pipewire-pulse sends four for a move: with 50 calls moved, a
    read each slowed the server for every client); the last read sees the last change."""
    server.add(game(1))
    folds = await bare()
    reads = []
    reading = folds.backend.stream

    async def stream(key):
        reads.append(key)
        return await reading(key)
    folds.backend.stream = stream  # type: ignore[method-assign]
    for volume in (1000, 2000, 3000, 4000):
        server._set(KEY, volume=(volume, volume))
        folds.mirror.handle(Event("change", "sink-input", 1, KEY))
    await until(lambda: folds.mirror.streams[KEY].volume == (4000, 4000), "the last change")
    await asyncio.sleep(0.02)
    assert reads == [KEY, KEY]


class NewStreams:
    """A guard that only notes the streams announced to it."""

    def __init__(self):
        self.announced: list[str] = []
        self.killed: set[str] = set()

    def holds(self, key):
        return False

    def flooded(self, key):
        return False

    def killing(self, key):
        return key in self.killed

    def new_stream(self, kind, key):
        self.announced.append(key)

    def screen(self, stream, fresh, gen):
        return False

    def written(self, key, gen, values):
        pass


async def test_a_new_stream_at_a_reused_index_is_announced_while_the_old_ones_read_flies(
        server, bare):
    """pipewire-pulse gives a new stream the index of a removed one: its ``new`` is shown to
    the gate (which mutes a new recording at once) and read, even while a read of the removed
    stream is still in flight."""
    server.add(game(1))
    folds = await bare()
    folds.mirror.guard = guard = NewStreams()
    folds.mirror.handle(Event("change", "sink-input", 1, KEY))  # a read in flight
    server.remove(KEY)
    folds.mirror.handle(Event("remove", "sink-input", 1, KEY))
    server.add(game(1, volume=(1234, 1234)))
    folds.mirror.handle(Event("new", "sink-input", 1, KEY))
    assert guard.announced == [KEY]
    await until(lambda: KEY in folds.mirror.streams
                and folds.mirror.streams[KEY].volume == (1234, 1234), "the new stream read")


async def test_a_read_from_before_a_reset_leaves_later_events_read(server, bare):
    """A read spawned just before the connection went (the mirror reset) and answered after
    is dropped, and no longer counted in flight: counted, every later change event of a stream
    at that index went unread (pipewire-pulse reuses indices after a server restart: a
    respawned stream stayed ducked in CI)."""
    server.add(game(1))
    folds = await bare()
    folds.mirror.handle(Event("change", "sink-input", 1, KEY))  # spawned, not run yet
    folds.mirror.reset()
    folds.mirror.load(await folds.backend.devices(), await folds.backend.streams())
    await asyncio.sleep(0.02)  # the old read runs and ends
    server._set(KEY, volume=(4321, 4321))
    folds.mirror.handle(Event("change", "sink-input", 1, KEY))
    await until(lambda: folds.mirror.streams[KEY].volume == (4321, 4321), "the change read")
