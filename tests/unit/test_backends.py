"""The backend contract without a server: the choice of backend, the coalescing of device
changes, what libpulse's structures become in the model (cards, ports, profiles, ids, restore
keys), the bounds of a capture's shape, the event queue taken from libpulse's callback, and
the fake backend's side of the wider contract (the servers' side is
tests/integration/test_backend_contract.py)."""

from __future__ import annotations

import asyncio
import ctypes

import pytest
from pulsectl import (
    PulseCardInfo, PulseSinkInfo, PulseSinkInputInfo, PulseSourceInfo, PulseSourceOutputInfo,
)
from pulsectl import _pulsectl as c

from audiopolicyd import backends
from audiopolicyd.app import parse_args
from audiopolicyd.backends.base import (
    Capability, Event, ModuleLoadFailed, NoSuchDevice, ServerGone,
)
from audiopolicyd.backends.coalesce import DEVICE_CHANGE_WINDOW, Coalescer
from audiopolicyd.backends.pulse import PulseBackend
from audiopolicyd.backends.pulse_capture import check_format
from audiopolicyd.backends.pulse_convert import card, device, parse_stream_id, restore_key, stream_id
from audiopolicyd.model import Device, Port, Profile, StreamKind

from ..support.fake_backend import FakeServer
from .conftest import make_stream
from .test_runtime import server, start, until  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("collect_garbage")


# -- the choice ----------------------------------------------------------------------------------

def test_the_backend_is_chosen_by_name_and_auto_is_pulse():
    assert isinstance(backends.choose("auto", "unix:/x"), PulseBackend)
    chosen = backends.choose("pulse", "unix:/x")
    assert isinstance(chosen, PulseBackend) and chosen.server == "unix:/x"
    assert Capability.CAPTURE in chosen.capabilities
    with pytest.raises(backends.UnknownBackend, match="auto, pulse"):
        backends.choose("pipewire")


def test_the_command_line_takes_a_backend_name(capsys):
    assert parse_args([]).backend == "auto"
    assert parse_args(["--backend", "pulse"]).backend == "pulse"
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--backend", "jack"])
    assert exit_.value.code == 2 and "invalid choice: 'jack'" in capsys.readouterr().err


def test_a_missing_capability_is_a_named_error():
    backend = FakeServer().connection()
    backend.require(Capability.MODULES)
    backend.capabilities = Capability.CARDS
    with pytest.raises(backends.base.Unsupported, match="modules"):
        backend.require(Capability.MODULES)


# -- coalescing ------------------------------------------------------------------------------------

W = DEVICE_CHANGE_WINDOW


def test_a_devices_changes_are_folded_per_window_and_the_last_is_delivered():
    co = Coalescer()
    change = Event("change", "sink", 3, "sink:3")
    assert co.offer(change, 0.0) == [change]  # the first at once
    assert co.deadline() is None
    assert co.offer(change, 0.01) == [] and co.offer(change, 0.02) == []
    assert co.deadline() == pytest.approx(W)
    assert co.due(W / 2) == []
    assert co.due(W) == [change]  # the folded ones, as one, at the end of the window
    assert co.folded == 1
    assert co.offer(change, W + 0.01) == []  # a new window opened with that delivery
    assert co.due(2 * W) == [change]
    assert co.due(5 * W) == [] and co.deadline() is None
    assert co.offer(change, 6 * W) == [change]  # quiet for a window: at once again


def test_other_events_are_never_held_and_a_remove_drops_the_pending_change():
    co = Coalescer()
    sink, card_change = Event("change", "sink", 3), Event("change", "card", 3)
    stream = Event("change", "sink-input", 3)
    assert co.offer(sink, 0.0) == [sink] and co.offer(card_change, 0.0) == [card_change]
    assert co.offer(sink, 0.001) == []
    for _ in range(3):  # stream changes are never folded
        assert co.offer(stream, 0.002) == [stream]
    remove = Event("remove", "sink", 3)
    assert co.offer(remove, 0.003) == [remove]
    assert co.due(W) == []  # the sink is gone: its folded change with it
    new = Event("new", "sink", 3)  # a new sink at that index starts afresh
    assert co.offer(new, 0.004) == [new] and co.offer(sink, 0.005) == [sink]


# -- what libpulse's structures become ---------------------------------------------------------

def _profile(name: bytes, available: int = 1, priority: int = 10):
    return c.PA_CARD_PROFILE_INFO(name=name, description=name.upper(), n_sinks=1, n_sources=0,
                                  priority=priority, available=available)


def _pointers(kind, items):
    array = (ctypes.POINTER(kind) * len(items))(*(ctypes.pointer(i) for i in items))
    return ctypes.cast(array, ctypes.POINTER(ctypes.POINTER(kind)))


@pytest.fixture
def proplists():
    made = []

    def make(text: str):
        made.append(c.pa.proplist_from_string(text))
        return made[-1]

    yield make
    for proplist in made:
        c.pa.proplist_free(proplist)


def test_a_card_and_its_sinks_ports_read_from_libpulses_structures(proplists):
    speaker, a2dp, off = _profile(b"output:analog-stereo"), _profile(b"a2dp-sink", 0, 40), \
        _profile(b"off", priority=0)
    headphones = c.PA_CARD_PORT_INFO(
        name=b"analog-output-headphones", description=b"Headphones", priority=9000,
        available=2, direction=1, n_profiles=1, proplist=proplists("port.type=headphones"),
        profiles2=_pointers(c.PA_CARD_PROFILE_INFO, [speaker]))
    mic = c.PA_CARD_PORT_INFO(
        name=b"analog-input-mic", description=b"Microphone", priority=8700, available=1,
        direction=2, n_profiles=0, proplist=proplists(""))
    info = c.PA_CARD_INFO(
        index=4, name=b"alsa_card.pci-0000_00_1f.3", owner_module=7, driver=b"x", n_profiles=3,
        proplist=proplists("device.bus=pci device.form_factor=internal"), n_ports=2,
        ports=_pointers(c.PA_CARD_PORT_INFO, [headphones, mic]),
        profiles2=_pointers(c.PA_CARD_PROFILE_INFO, [speaker, a2dp, off]),
        active_profile2=ctypes.pointer(speaker))
    made = card(PulseCardInfo(info))
    assert (made.id, made.index, made.name) == ("card:4", 4, "alsa_card.pci-0000_00_1f.3")
    assert made.profiles == (Profile("output:analog-stereo", "OUTPUT:ANALOG-STEREO", True, 10),
                             Profile("a2dp-sink", "A2DP-SINK", False, 40),
                             Profile("off", "OFF", True, 0))
    assert made.active_profile == "output:analog-stereo"
    assert made.ports[0] == Port("analog-output-headphones", "Headphones", "output", "yes",
                                 9000, ("output:analog-stereo",),
                                 made.ports[0].properties)
    assert dict(made.ports[0].properties) == {"port.type": "headphones"}
    assert (made.ports[1].direction, made.ports[1].available) == ("input", "no")
    assert made.properties["device.form_factor"] == "internal"

    port = c.PA_PORT_INFO(name=b"analog-output-headphones", description=b"Headphones",
                          priority=9000, available=0)
    sink = c.PA_SINK_INFO(name=b"alsa_output.pci", index=2, description=b"Built-in", card=4,
                          proplist=proplists("device.api=alsa device.bus=pci "
                                             "device.form_factor=internal"),
                          n_ports=1, ports=_pointers(c.PA_PORT_INFO, [port]),
                          active_port=ctypes.pointer(port))
    made_sink = device("sink", PulseSinkInfo(sink), {4: made})
    assert (made_sink.id, made_sink.card, made_sink.active_port) == (
        "sink:2", "alsa_card.pci-0000_00_1f.3", "analog-output-headphones")
    # a device's port: the device's direction and availability, the card port's profiles and
    # properties
    (sink_port,) = made_sink.ports
    assert (sink_port.direction, sink_port.available, sink_port.profiles) == (
        "output", "unknown", ("output:analog-stereo",))
    assert dict(sink_port.properties) == {"port.type": "headphones"}
    assert (made_sink.api, made_sink.bus, made_sink.form_factor, made_sink.bluetooth_profile) \
        == ("alsa", "pci", "internal", "")
    lone = device("sink", PulseSinkInfo(c.PA_SINK_INFO(
        name=b"bluez_sink.x", index=3, description=b"Headset", card=c.PA_INVALID,
        proplist=proplists("bluetooth.protocol=a2dp_sink"))), {4: made})
    assert (lone.card, lone.ports, lone.active_port, lone.bluetooth_profile) == (
        None, (), None, "a2dp_sink")


def test_the_pulse_backend_gives_device_ids_never_indices(proplists):
    """A stream's device and a monitor's sink leave the Pulse backend as device ids, the ids
    its devices carry (issue 10); ``PA_INVALID_INDEX`` (a stream not linked yet, a source that
    is no sink's monitor) as ''. On pipewire-pulse a sink and its monitor share an index."""
    def source(name, index, monitor_of_sink):
        return device("source", PulseSourceInfo(c.PA_SOURCE_INFO(
            name=name, index=index, description=name, monitor_of_sink=monitor_of_sink,
            card=c.PA_INVALID, proplist=proplists(""))), {})

    monitor, mic = source(b"trap.monitor", 57, 57), source(b"mic", 30, c.PA_INVALID)
    assert (monitor.id, monitor.monitor_of, monitor.monitor) == ("source:57", "sink:57", True)
    assert (mic.id, mic.monitor_of, mic.monitor) == ("source:30", "", False)
    trap = device("sink", PulseSinkInfo(c.PA_SINK_INFO(
        name=b"trap", index=57, description=b"trap", card=c.PA_INVALID,
        proplist=proplists(""))), {})
    assert (trap.id, trap.monitor_of, trap.monitor) == ("sink:57", "", False)

    backend = PulseBackend()
    backend._monitors = {monitor.index}  # what its devices() read keeps (the backend's own)

    def stream(kind, index, on):
        struct = c.PA_SINK_INPUT_INFO if kind is StreamKind.SINK_INPUT \
            else c.PA_SOURCE_OUTPUT_INFO
        info_type = PulseSinkInputInfo if kind is StreamKind.SINK_INPUT \
            else PulseSourceOutputInfo
        where = {"sink" if kind is StreamKind.SINK_INPUT else "source": on}
        return backend._stream(kind, info_type(struct(
            index=index, client=c.PA_INVALID, owner_module=c.PA_INVALID,
            proplist=proplists(""), **where)))

    recording = stream(StreamKind.SOURCE_OUTPUT, 3, 57)
    assert (recording.device, recording.monitor, recording.linked) == (monitor.id, True, True)
    assert stream(StreamKind.SOURCE_OUTPUT, 4, 30).device == mic.id
    assert stream(StreamKind.SINK_INPUT, 5, 57).device == trap.id
    unlinked = stream(StreamKind.SOURCE_OUTPUT, 6, c.PA_INVALID)
    assert (unlinked.device, unlinked.monitor, unlinked.linked) == ("", False, False)


def test_the_restore_key_is_the_servers_rule():
    # role first, then application id, then application name, then media name
    assert restore_key(StreamKind.SINK_INPUT, {"media.role": "music", "application.id": "x"}) \
        == "sink-input-by-media.role:music"
    assert restore_key(StreamKind.SOURCE_OUTPUT, {"application.id": "org.x",
                                                  "application.name": "X"}) \
        == "source-output-by-application.id:org.x"
    assert restore_key(StreamKind.SINK_INPUT, {"application.name": "mpv", "media.name": "a"}) \
        == "sink-input-by-application.name:mpv"
    assert restore_key(StreamKind.SINK_INPUT, {"media.name": "song"}) \
        == "sink-input-by-media.name:song"
    assert restore_key(StreamKind.SINK_INPUT, {"media.role": ""}) == "sink-input:unnamed"
    stream = make_stream(3, role="game")
    assert (stream.id, stream.key, stream.restore_key) == (
        "sink-input:3", "sink-input:3", "sink-input-by-media.role:game")


@pytest.mark.parametrize("shape", [{"rate": 4000}, {"rate": 48000.0}, {"channels": 0},
                                   {"channels": 9}, {"block_ms": 2}, {"block_ms": True},
                                   {"rate": 44100, "block_ms": 15}])
def test_a_capture_shape_out_of_bounds_is_a_value_error(shape):
    full = {"rate": 48000, "channels": 1, "block_ms": 20, **shape}
    with pytest.raises(ValueError):
        check_format(**full)


def test_a_capture_block_is_whole_frames_of_s16le():
    assert check_format(48000, 2, 20) == 960 * 2 * 2
    assert check_format(44100, 1, 10) == 441 * 2


# -- the fake backend's side of the wider contract ---------------------------------------------

async def test_the_fake_moves_sets_defaults_loads_modules_and_captures():
    fake = FakeServer()
    backend = fake.connection()
    await backend.connect()
    fake.devices.append(Device("sink", 2, "headphones"))
    stream = make_stream(5)
    fake.add(stream)
    headphones = fake.device("headphones")
    assert headphones.id == "sink:2"
    await backend.move_stream(stream, headphones)
    assert fake.state[stream.id].device == headphones.id  # the device's id, no more its index
    with pytest.raises(ValueError):
        await backend.move_stream(stream, fake.device("mic"))
    with pytest.raises(NoSuchDevice):
        await backend.move_stream(stream, Device("sink", 9, "gone"))
    await backend.set_default_device("sink", headphones)
    assert (await backend.default_devices()).sink == "headphones"
    module = await backend.load_module("module-null-sink", "sink_name=x")
    assert module in await backend.modules()
    await backend.unload_module(module)
    assert module not in await backend.modules()
    fake.refused_modules.add("module-nope")
    with pytest.raises(ModuleLoadFailed):
        await backend.load_module("module-nope")
    fake.feed("mic", b"\x01\x00" * 4, b"\x02\x00" * 4)
    blocks = backend.capture(fake.device("mic"))
    assert [await blocks.__anext__(), await blocks.__anext__()] == [b"\x01\x00" * 4,
                                                                    b"\x02\x00" * 4]
    await blocks.aclose()
    backend.close()


async def test_device_and_card_events_reach_the_mirror(server, start):  # noqa: F811
    daemon = await start()
    assert set(daemon.reconciler.devices) == {"sink:0", "source:1"}
    for facility, name in (("sink", "speaker2"), ("card", "speaker3")):
        server.devices[0] = Device("sink", 0, name)
        server.device_event("change", facility, 0)
        await until(lambda name=name: daemon.reconciler.devices["sink:0"].name == name,
                    f"the mirror to read the devices again on a {facility} change")


def test_the_pulse_backend_reads_back_only_the_stream_ids_it_mints():
    """Ids are opaque to the core: the Pulse backend mints ``sink-input:N`` and takes back
    exactly those; anything else (another backend's id, a device's, a forged one) is a
    ValueError, not a write to some other object."""
    for kind in StreamKind:
        assert parse_stream_id(stream_id(kind, 42)) == (kind, 42)
    for foreign in ("sink:3", "sink-input:", "sink-input:-1", "sink-input:4x", "node:7", "",
                    "source-output:1:2"):
        with pytest.raises(ValueError, match="not a stream id of this backend"):
            parse_stream_id(foreign)


# -- events straight from libpulse's callback (backends/pulse_events.py) -----------------------

async def test_pulsectl_asyncio_still_has_what_raw_events_relies_on():
    """pulse_events uses three internals of pulsectl-asyncio (as its own subscribe_events
    does); an upgrade that drops one fails here, not at run time."""
    import inspect

    import pulsectl_asyncio

    pulse = pulsectl_asyncio.PulseAsync("audiopolicyd-test")
    try:
        assert pulse.event_callback is None
        assert isinstance(pulse._disconnected, asyncio.Event)
        assert inspect.iscoroutinefunction(pulse._event_mask_set)
        source = inspect.getsource(type(pulse)._pulse_subscribe_cb)
        assert "self.event_callback(PulseEventInfo(" in source
    finally:
        pulse.close()


class _Pulse:
    """What RawEvents uses of a PulseAsync connection."""

    def __init__(self) -> None:
        self.event_callback = None
        self._disconnected = asyncio.Event()
        self.connected = True
        self.masks: list[tuple[str, ...]] = []

    async def _event_mask_set(self, *masks: str) -> None:
        self.masks.append(masks)


async def test_raw_events_come_in_order_without_a_wait_and_end_with_the_connection():
    from audiopolicyd.backends.pulse_events import RawEvents

    pulse = _Pulse()
    raw = RawEvents(pulse)
    await raw.subscribe("sink", "source")
    assert pulse.masks == [("sink", "source")]
    for n in range(100):  # a flood: all queued, taken without awaiting
        pulse.event_callback(n)
    assert [raw.take() for _ in range(100)] == list(range(100))
    assert raw.take() is None
    await raw.wait(0.01)  # nothing came: the timeout
    waiting = asyncio.ensure_future(raw.wait(None))
    await asyncio.sleep(0)
    pulse.event_callback("late")
    await asyncio.wait_for(waiting, 5)
    assert raw.take() == "late"
    with pytest.raises(RuntimeError, match="has an event subscription already"):
        RawEvents(pulse)
    pulse._disconnected.set()
    await asyncio.wait_for(raw.wait(None), 5)
    with pytest.raises(ServerGone):
        raw.take()
    await raw.close()
    assert pulse.event_callback is None and pulse.masks[-1] == ("null",)
