"""The router on a scripted server (:mod:`tests.support.fake_backend`): a call moves to a USB
headset that appears and the music does not; it comes back when the headset goes (the server's
rescue is not the user's move); a stream the user moves stays there, across a route change and
a new runtime on the same state; route changes reach the listeners with Apple's reason."""

from __future__ import annotations

import dataclasses

import pytest

from audiopolicyd.errors import UnknownCategory
from audiopolicyd.identity import recording_app
from audiopolicyd.microphone.broker import Gate, MicrophoneBroker
from audiopolicyd.microphone.stores import Decision, SqlitePermissionStore
from audiopolicyd.model import Device, StreamKind
from audiopolicyd.route import RouteChangeReason
from audiopolicyd.runtime.moves import MAX_UNDOS
from audiopolicyd.runtime.router import ASLEEP_S, WAKE_S
from audiopolicyd.runtime.routestore import RouteStore
from audiopolicyd.runtime.routeview import route_table

from ..support.fake_backend import FakeServer
from .conftest import VERIFIED, make_stream
from .test_runtime import Daemon, until

pytestmark = pytest.mark.usefixtures("collect_garbage")

USB = Device("sink", 7, "usb_headset", "USB Headset", bus="usb", form_factor="headset")
DESK = Device("sink", 8, "desk", "Desk speakers")
CALL, MUSIC = "sink-input:1", "sink-input:2"


def plug(server: FakeServer, device: Device) -> None:
    server.devices.append(device)
    server.device_event("new", device.kind, device.index)


def unplug(server: FakeServer, device: Device) -> None:
    """As PulseAudio: the streams are rescued to the default, then the device's remove."""
    server.devices = [d for d in server.devices if d.name != device.name]
    server._rescue(device)
    server.device_event("remove", device.kind, device.index)


def user_move(server: FakeServer, key: str, device: Device) -> None:
    """The user moves a stream (pavucontrol, ``pactl move-sink-input``)."""
    server._set(key, device=server.device(device.name).id)


def on(server: FakeServer, key: str) -> str:
    """The id of the device a stream is on."""
    return server.state[key].device


@pytest.fixture
def server():
    fake = FakeServer()
    fake.devices.append(DESK)
    return fake


@pytest.fixture
async def start(server, tmp_path, policies, pm):
    daemons: list[Daemon] = []

    async def start() -> Daemon:
        daemon = Daemon(server, tmp_path / "journal.sqlite3", policies, pm)
        daemons.append(daemon)
        await daemon.started()
        await daemon.reconciler.answers(5.0)
        return daemon

    yield start
    for daemon in daemons:
        if not daemon.backend.severed:
            daemon.kill()


async def call_and_music(server, start):
    daemon = await start()
    server.add(make_stream(1, role="phone", app="linphone"))
    server.add(make_stream(2, role="music", app="mpv"))
    await until(lambda: {CALL, MUSIC} <= set(daemon.reconciler.router.reasons), "both routed")
    return daemon


def on_a_set_clock(daemon) -> tuple[list[float], list]:
    """Give the router a clock the test sets (``now[0]``, seconds) and collect its route
    changes; returns ``(now, changes)``."""
    router = daemon.reconciler.router
    now = [1000.0]
    router.clock = lambda: now[0]
    changes: list = []
    router.on_route_change.append(lambda sid, change, streams: changes.append(change))
    return now, changes


async def test_a_usb_headset_takes_the_call_not_the_music_and_gives_it_back(server, start):
    daemon = await call_and_music(server, start)
    router = daemon.reconciler.router
    changes = []
    router.on_route_change.append(lambda sid, change, streams: changes.append(
        (sid, change, streams)))
    plug(server, USB)
    await until(lambda: on(server, CALL) == "sink:7", "the call on the headset")
    await daemon.reconciler.answers(5.0)
    assert on(server, MUSIC) == "sink:0", "the music follows the default, not the headset"
    sid, change, streams = next(c for c in changes if c[0].endswith(":playAndRecord"))
    assert change.reason is RouteChangeReason.newDeviceAvailable
    assert change.current.output.port.uid == "usb_headset"
    assert [(s.key, s.device) for s in streams] == [(CALL, "sink:0")]
    assert router.routes[sid].output.port.port_type == "usbAudio"
    assert router.reasons[CALL].startswith("usbAudio")
    unplug(server, USB)
    await until(lambda: any(c[1].reason is RouteChangeReason.oldDeviceUnavailable
                            for c in changes), "the headset's going reported")
    gone = next(c for c in changes if c[1].reason is RouteChangeReason.oldDeviceUnavailable)
    assert gone[1].gone == {"sink:7"}
    assert [(s.key, s.device) for s in gone[2]] == [(CALL, "sink:7")], \
        "rescued before the removal was seen (PulseAudio's order), still named by the headset"

    await daemon.reconciler.answers(5.0)
    assert on(server, CALL) == "sink:0"
    assert router.store.pins == {}, "the server's rescue is not the user's move"
    assert server.default.sink == "speaker"
    assert not [w for w in server.writes if w[1] == "default"], "the default never changes"


async def test_a_device_that_comes_or_goes_is_routed_without_a_decision_pass(server, start):
    # what a pass decides does not depend on the devices: a plugged headset is routed at once
    daemon = await call_and_music(server, start)
    runtime = daemon.reconciler
    passes = []  # how many writes the server had received at each pass
    run = runtime.decisions.run
    runtime.decisions.run = lambda: passes.append(len(server.writes)) or run()
    mark = len(server.writes)
    plug(server, USB)
    await until(lambda: on(server, CALL) == "sink:7", "the call on the headset")
    moved = server.writes.index((CALL, "device", "sink:7"), mark)
    assert all(p > moved for p in passes), "moved by the routing after the device's read " \
        "alone; passes only for the call's own change after"
    await runtime.answers(5.0)  # the call's own change events ask for passes after
    unplug(server, USB)
    await until(lambda: on(server, CALL) == "sink:0", "the call back")


async def test_a_suspend_whose_resume_never_comes_is_forgotten(server, start):
    daemon = await call_and_music(server, start)
    now, changes = on_a_set_clock(daemon)
    daemon.reconciler.sleep_changed(True)
    now[0] += ASLEEP_S + 1  # (the monotonic clock stops while the machine sleeps)
    plug(server, USB)
    await until(lambda: changes, "the headset reported")
    assert changes[0].reason is RouteChangeReason.newDeviceAvailable


async def test_a_sinks_monitor_going_first_sends_its_rescued_call_on_and_never_back(
        server, start):
    # PulseAudio's order when a sink goes: its streams rescued to the default, its monitor's
    # remove, then its own: the monitor's removal is the sink's going
    daemon = await call_and_music(server, start)
    router = daemon.reconciler.router
    monitor = Device("source", 17, "usb_headset.monitor", monitor_of="sink:7")
    plug(server, USB)
    plug(server, monitor)
    await until(lambda: on(server, CALL) == "sink:7", "the call on the headset")
    await daemon.reconciler.answers(5.0)
    changes = []
    router.on_route_change.append(lambda sid, change, streams: changes.append(change))
    server.devices = [d for d in server.devices if d.name not in (USB.name, monitor.name)]
    mark = len(server.writes)
    server._rescue(USB)
    server.device_event("remove", "source", monitor.index)
    await until(lambda: changes, "the headset's going reported on its monitor's removal")
    assert changes[0].reason is RouteChangeReason.oldDeviceUnavailable
    assert "sink:7" in changes[0].gone
    await daemon.reconciler.answers(5.0)
    assert on(server, CALL) == "sink:0"
    assert (CALL, "device", "sink:7") not in server.writes[mark:], "never moved back"
    server.device_event("remove", "sink", USB.index)
    await daemon.reconciler.answers(5.0)
    assert len(changes) == 1 and on(server, CALL) == "sink:0"


async def test_after_a_resume_the_devices_changes_are_wake_from_sleep_for_a_while(server,
                                                                                 start):
    daemon = await call_and_music(server, start)
    now, changes = on_a_set_clock(daemon)
    plug(server, USB)
    await until(lambda: on(server, CALL) == "sink:7", "the call on the headset")
    assert [c.reason for c in changes] == [RouteChangeReason.newDeviceAvailable]
    daemon.reconciler.sleep_changed(True)
    # the server may see the headset go before logind says the machine woke
    unplug(server, USB)
    await until(lambda: len(changes) == 2, "the headset's going reported")
    assert changes[1].reason is RouteChangeReason.wakeFromSleep
    assert changes[1].gone == {"sink:7"}, "what went is told as for oldDeviceUnavailable"
    await daemon.reconciler.answers(5.0)
    assert on(server, CALL) == "sink:0"
    daemon.reconciler.sleep_changed(False)
    now[0] += WAKE_S - 1  # or after it, within the window
    plug(server, USB)
    await until(lambda: len(changes) == 3, "the headset's coming back reported")
    assert changes[2].reason is RouteChangeReason.wakeFromSleep
    unplug(server, USB)
    await until(lambda: len(changes) == 4, "the headset's going reported")
    now[0] += 2  # past the window: the devices' own reasons again
    plug(server, USB)
    await until(lambda: len(changes) == 5, "the headset reported")
    assert changes[4].reason is RouteChangeReason.newDeviceAvailable


async def test_a_stream_the_user_moves_stays_across_route_changes_and_a_restart(server, start):
    daemon = await call_and_music(server, start)
    user_move(server, CALL, DESK)
    await until(lambda: daemon.reconciler.router.store.pins, "the user's move remembered")
    assert daemon.reconciler.router.store.pins == {
        ("exe:linphone", "playAndRecord", "output"): "desk"}
    plug(server, USB)
    await until(lambda: "sink:7" in daemon.reconciler.devices, "the headset seen")
    await daemon.reconciler.answers(5.0)
    assert on(server, CALL) == "sink:8", "the user wins over a new device"
    assert daemon.reconciler.router.reasons[CALL].startswith("pinned")
    daemon.kill()
    server.remove(CALL)  # the app calls again, with a new stream, under a new daemon
    again = await start()
    server.add(make_stream(3, role="phone", app="linphone"))
    await until(lambda: "sink-input:3" in again.reconciler.router.reasons, "the call routed")
    await until(lambda: on(server, "sink-input:3") == "sink:8", "the new call on the desk")
    assert again.reconciler.router.store.forget("linphone") == 1
    again.reconciler.request_reconcile()
    await until(lambda: on(server, "sink-input:3") == "sink:7", "reset: the headset's again")


async def test_a_users_move_through_an_unlinked_moment_is_the_users(server, start):
    """pipewire-pulse unlinks a stream the user moves (no device) before linking it to the
    new one: a pass in between must not forget where it was, or the move is not told apart
    and the router moves the stream back (seen in tests/integration/test_routing.py)."""
    daemon = await call_and_music(server, start)
    await until(lambda: daemon.reconciler.router._seen.get(CALL) == "sink:0", "the call seen")
    server._set(CALL, device="")
    await until(lambda: daemon.reconciler.streams[CALL].device == "", "the unlinked moment")
    await daemon.reconciler.answers(5.0)  # a pass sees it unlinked
    user_move(server, CALL, DESK)
    await until(lambda: daemon.reconciler.router.store.pins, "the user's move remembered")
    assert on(server, CALL) == "sink:8"


async def test_a_move_the_server_refuses_is_tried_once_more_then_left(server, start):
    daemon = await call_and_music(server, start)
    moves = []
    backend = daemon.backend
    real = backend.move_stream

    async def stubborn(stream, device):
        moves.append(device.name)  # pipewire-pulse's quirk: the answer, but no move

    backend.move_stream = stubborn
    plug(server, USB)
    await until(lambda: len(moves) == 2, "the move sent twice")
    for _ in range(3):
        await daemon.reconciler.answers(5.0)
    assert moves == ["usb_headset", "usb_headset"]
    assert on(server, CALL) == "sink:0"
    backend.move_stream = real


async def test_a_recording_follows_the_input_and_a_monitor_recording_is_left(server, start,
                                                                            policies):
    daemon = await start()
    mic = Device("source", 9, "usb_mic", "USB Mic", bus="usb", form_factor="headset")
    plug(server, mic)
    await until(lambda: "source:9" in daemon.reconciler.devices, "the microphone seen")
    rec = dataclasses.replace(make_stream(4, StreamKind.SOURCE_OUTPUT, app="arecord",
                                          role="phone"), device="source:1")
    server.add(rec)
    monitor = dataclasses.replace(make_stream(5, StreamKind.SOURCE_OUTPUT, app="meter",
                                              role="phone"), device="source:10")
    server.devices.append(Device("source", 10, "desk.monitor", monitor_of="sink:8"))
    server.add(monitor)
    await until(lambda: on(server, "source-output:4") == "source:9",
                "the call's recording on the USB mic")
    await daemon.reconciler.answers(5.0)
    assert on(server, "source-output:5") == "source:10", "a monitor's recording stays"


def test_pins_and_preferences_survive_a_new_store(tmp_path):
    path = tmp_path / "journal.sqlite3"
    store = RouteStore(path)
    store.pin("app:org.example.Call", "playAndRecord", "output", "desk")
    store.prefer("playback", "usb_headset")
    again = RouteStore(path)
    assert again.pins == {("app:org.example.Call", "playAndRecord", "output"): "desk"}
    assert again.preferences == {"playback": "usb_headset"}
    assert again.forget("org.example.Call") == 1 and again.forget("nobody") == 0
    again.prefer("playback", "")
    assert RouteStore(path).pins == {} and RouteStore(path).preferences == {}


async def test_the_users_preference_puts_a_category_on_a_port(server, start):
    daemon = await call_and_music(server, start)
    daemon.reconciler.router.store.prefer("playback", "desk")
    daemon.reconciler.request_reconcile()
    await until(lambda: on(server, MUSIC) == "sink:8", "the music on the preferred port")
    assert "the user's preference" in daemon.reconciler.router.reasons[MUSIC]


async def test_wireplumbers_late_rescue_is_not_the_users_move(server, start):
    daemon = await call_and_music(server, start)
    changes = []
    daemon.reconciler.router.on_route_change.append(
        lambda sid, change, streams: changes.append((change, streams)))
    plug(server, USB)
    await until(lambda: on(server, CALL) == "sink:7", "the call on the headset")
    # pipewire-pulse: the node goes first, WirePlumber moves the stream ~15 ms later
    server.devices = [d for d in server.devices if d.name != USB.name]
    server.device_event("remove", "sink", USB.index)
    await until(lambda: "sink:7" not in daemon.reconciler.devices, "the headset gone")
    await daemon.reconciler.answers(5.0)
    server._rescue(USB)
    await until(lambda: daemon.reconciler.router._seen.get(CALL) == "sink:0", "the rescue seen")
    await daemon.reconciler.answers(5.0)
    assert daemon.reconciler.router.store.pins == {}
    (change, streams), = [c for c in changes
                          if c[0].reason is RouteChangeReason.oldDeviceUnavailable]
    assert [(s.key, s.device) for s in streams] == [(CALL, "sink:7")]


@pytest.mark.parametrize("pipewire", [False, True], ids=["pulseaudio", "pipewire-pulse"])
async def test_a_call_on_a_device_that_went_is_routed_on_the_remove(server, start, pipewire):
    """A stream on a device that goes is routed on the device's ``remove``, without waiting
    to read the server's rescue: PulseAudio moved it inside the unload, before the
    ``remove``; WirePlumber moves it to the default sink ~15 ms after, over the router's
    move: the server's undoing, not the user's move (no pin), and the router moves it back."""
    headphones = Device("sink", 9, "hp", "Headphones", form_factor="headphone")
    plug(server, headphones)
    daemon = await call_and_music(server, start)
    router = daemon.reconciler.router
    plug(server, USB)
    await until(lambda: daemon.reconciler.streams[CALL].device == "sink:7"
                and not router.moves.busy(CALL), "the call on the headset")
    server.devices = [d for d in server.devices if d.name != USB.name]
    server.device_event("remove", "sink", USB.index)  # no rescue read yet
    await until(lambda: on(server, CALL) == "sink:9", "the call on the headphones")
    if pipewire:
        await until(lambda: CALL in router.moves._landed and router._seen.get(CALL) == "sink:9",
                    "the move landed, and seen by a pass")
        user_move(server, CALL, server.device("speaker"))  # WirePlumber's rescue, late
        await until(lambda: router.moves._undos.get(CALL) == 1, "the server's undoing")
        await until(lambda: on(server, CALL) == "sink:9", "the call back on the headphones")
    await daemon.reconciler.answers(5.0)
    assert router.store.pins == {}


async def test_a_server_that_undoes_every_move_is_fought_three_times_and_never_pinned(
        server, start, caplog):
    """WirePlumber (pipewire-pulse, 50 calls rescued off a headset) moves a call back to the
    default sink about 1 s after each move of the router, for as long as it moves it: a move
    off the device less than UNDO_WINDOW after ours landed is the server's, never the user's;
    after MAX_UNDOS the router leaves the call there, and moves it again once its route
    changes. WirePlumber's own move back onto the route's device is no pin either."""
    headphones = Device("sink", 9, "hp", "Headphones", form_factor="headphone")
    plug(server, headphones)
    daemon = await call_and_music(server, start)
    router = daemon.reconciler.router
    await until(lambda: on(server, CALL) == "sink:9", "the call on the headphones")
    with caplog.at_level("WARNING", logger="audiopolicyd.runtime.moves"):
        for undo in range(1, MAX_UNDOS + 1):
            await until(lambda: on(server, CALL) == "sink:9" and CALL in router.moves._landed
                        and router._seen.get(CALL) == "sink:9",
                        "the router's move landed, and seen by a pass")
            user_move(server, CALL, server.device("speaker"))  # WirePlumber undoes it
            await until(lambda undo=undo: router.moves._undos.get(CALL) == undo,
                        f"undo {undo} counted")
        await daemon.reconciler.answers(5.0)
    assert f"right after each of our last {MAX_UNDOS} moves" in caplog.text
    assert on(server, CALL) == "sink:0" and router.store.pins == {}
    user_move(server, CALL, headphones)  # WirePlumber's own way back onto the route's device
    await until(lambda: router._seen.get(CALL) == "sink:9" and not router.moves.busy(CALL),
                "the move back seen and checked")
    await daemon.reconciler.answers(5.0)
    assert router.store.pins == {}
    plug(server, USB)  # the route changes: the call is moved again
    await until(lambda: on(server, CALL) == "sink:7", "the call on the headset")


async def test_wireplumbers_second_move_after_the_routers_is_not_the_users(server, start):
    # pipewire-pulse with many streams: WirePlumber moves a vanished headset's streams to the
    # default sink, the router moves them to their route, and WirePlumber moves them to the
    # default again (seconds later with 50 calls: bench/routing.py): the server's, no pin
    headphones = Device("sink", 9, "hp", "Headphones", form_factor="headphone")
    plug(server, headphones)
    daemon = await call_and_music(server, start)
    await until(lambda: on(server, CALL) == "sink:9", "the call on the headphones")
    plug(server, USB)
    await until(lambda: daemon.reconciler.streams[CALL].device == "sink:7"
                and not daemon.reconciler.router.moves.busy(CALL),
                "the call seen on the headset")
    server.devices = [d for d in server.devices if d.name != USB.name]
    server.device_event("remove", "sink", USB.index)
    await until(lambda: "sink:7" not in daemon.reconciler.devices, "the headset gone")
    server._rescue(USB)  # to the default sink
    await until(lambda: daemon.reconciler.router._seen.get(CALL) == "sink:9"
                and not daemon.reconciler.router.moves.busy(CALL),
                "the call seen back on the headphones")
    user_move(server, CALL, server.device("speaker"))  # WirePlumber, again
    await until(lambda: on(server, CALL) == "sink:9", "the call on its route again")
    await daemon.reconciler.answers(5.0)
    assert daemon.reconciler.router.store.pins == {}


async def test_the_read_side_shows_devices_routes_reasons_and_pins(server, start):
    daemon = await call_and_music(server, start)
    plug(server, USB)
    await until(lambda: on(server, CALL) == "sink:7", "the call on the headset")
    user_move(server, MUSIC, DESK)
    await until(lambda: daemon.reconciler.router.store.pins, "the music's move remembered")
    await daemon.reconciler.answers(5.0)  # the pass after the pin
    table = route_table(daemon.reconciler.router)
    usb = next(d for d in table["Devices"] if d["Name"] == "usb_headset")
    assert (usb["PortType"], usb["Direction"], usb["Uid"], usb["Default"]) == (
        "usbAudio", "output", "usb_headset", False)
    assert next(d for d in table["Devices"] if d["Name"] == "speaker")["Default"] is True
    call = next(c for c in table["Categories"] if c["Category"] == "playAndRecord")
    assert (call["Output"], call["OutputType"]) == ("usb_headset", "usbAudio")
    assert call["OutputReason"].startswith("usbAudio")
    assert table["Pins"] == [{"Application": "exe:mpv", "Category": "playback",
                              "Direction": "output", "Device": "desk"}]
    explained = daemon.reconciler.explain(CALL)
    assert explained["Route"] == call["OutputReason"]
    assert daemon.reconciler.explain(MUSIC)["Route"].startswith("pinned")
    session = daemon.reconciler.explain(explained["Session"])
    assert session["Route"][0] == f"output: {call['OutputReason']}"


async def test_a_preference_for_an_unknown_category_is_a_named_error(server, start):
    daemon = await start()
    with pytest.raises(UnknownCategory):
        daemon.reconciler.router.prefer("karaoke", "desk")
    assert daemon.reconciler.router.store.preferences == {}
    assert daemon.reconciler.router.reset("nobody") == 0


async def test_a_recording_the_microphone_gate_holds_is_moved_only_once_granted(
        server, tmp_path, policies, pm):
    # PulseAudio gives a moved recording its volume back: moving a held one would undo the
    # gate's volume 0, which the gate takes for the app's fight (and kills the stream)
    broker = MicrophoneBroker()
    await broker.start(SqlitePermissionStore(":memory:"))
    daemon = Daemon(server, tmp_path / "journal.sqlite3", policies, pm)
    daemon.reconciler.microphone = broker
    broker.on_decisions.append(daemon.reconciler.request_reconcile)
    try:
        await daemon.started()
        mic = Device("source", 9, "usb_mic", "USB Mic", bus="usb", form_factor="headset")
        plug(server, mic)
        await until(lambda: "source:9" in daemon.reconciler.devices, "the microphone seen")
        recording = dataclasses.replace(make_stream(
            4, StreamKind.SOURCE_OUTPUT, app="arecord", role="phone", extra=VERIFIED),
            device="source:1")
        server.add(recording)
        key = "source-output:4"
        await until(lambda: daemon.reconciler.gates.get(key) is Gate.BLOCKED, "held")
        await daemon.reconciler.answers(5.0)
        assert on(server, key) == "source:1", "a held recording stays where it is"
        assert "microphone gate" in daemon.reconciler.router.reasons[key]
        await broker.decide(recording_app(recording.properties).app_id, Decision.GRANTED,
                            "test")
        await until(lambda: on(server, key) == "source:9", "moved to the USB mic once granted")
    finally:
        daemon.kill()
        await broker.store.close()
