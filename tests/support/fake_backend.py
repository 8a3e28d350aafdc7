"""A scripted audio server behind the backend contract, for fast tests of the runtime.

:class:`FakeServer` keeps streams in memory; each :class:`FakeBackend` is one client connection
to it (the daemon's), receiving the events a PulseAudio-protocol server sends: ``new`` when a
stream appears, ``change`` when a write or the user changes it, ``remove`` when it goes. The
test plays the server's other clients (:meth:`FakeServer.add`, :meth:`FakeServer.user_volume`,
:meth:`FakeServer.remove`), can hold the server's answers to writes (:meth:`FakeServer.hold`:
writes are received, not yet applied or answered), can make the server go away
(:meth:`FakeServer.die`), and can cut the daemon's connection as a ``kill -9`` of the daemon
would (:meth:`FakeBackend.sever`: nothing it sends afterwards arrives). A stream the daemon
kills (:meth:`FakeBackend.kill`) goes, with a ``remove`` event, and is listed in
:attr:`FakeServer.killed`. Every write that
arrived is recorded in :attr:`FakeServer.writes`.

The wider contract (cards, moves, default devices, modules, capture) is scripted in memory
too: :attr:`FakeServer.cards`, :attr:`FakeServer.default`, :attr:`FakeServer.modules`,
:meth:`FakeServer.device_event` (a device's or card's event, as the server sends it) and
:meth:`FakeServer.feed` (PCM blocks a capture of a device yields). A card with profiles that
give devices (:meth:`FakeServer.add_card`, e.g. a Bluetooth headset's recorded card from
:mod:`tests.support.bluetooth`) switches as a real one does
(:meth:`FakeBackend.set_card_profile`): the old profile's devices go, their streams are moved
to the default device, the new profile's devices appear, then the card changes, each with its
event. Ids and restore keys are
the PulseAudio backend's (:func:`fake_ids`): the fake plays a PulseAudio-protocol server.

pipewire-pulse's quirks that the runtime works around are scriptable, off by default (PulseAudio
behaves without them): :attr:`FakeServer.stale_reads` (a read pipelined behind a write is
answered with the stream as it was before the write) and :attr:`FakeServer.restore_late` (a new
stream is announced unlinked at volume 0, linked at volume 0, and gets WirePlumber's restored
volume only then); :meth:`FakeServer.behave_as_pipewire_pulse` turns both on.

It stands in for a server only in unit tests of the runtime's logic; the integration tests run
the real servers.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from typing import AsyncIterator, Mapping, Sequence

from audiopolicyd.backends.base import (
    Backend, Capability, DefaultDevices, Event, Module, ModuleLoadFailed, NoSuchDevice,
    ProfileUnavailable, ServerGone, ServerInfo,
)
from audiopolicyd.backends.pulse_convert import object_id, restore_key, stream_id
from audiopolicyd.model import Card, Device, Stream, StreamKind, freeze


def fake_ids(kind: StreamKind, index: int, properties: Mapping[str, str]) -> dict[str, str]:
    """The ``id`` and ``restore_key`` a PulseAudio-protocol backend gives a stream (keyword
    arguments for :class:`~audiopolicyd.model.Stream`)."""
    return {"id": stream_id(kind, index), "restore_key": restore_key(kind, properties)}


def _listed(device: Device) -> Device:
    """*device* as a backend lists it: with the id the PulseAudio backend gives it, unless the
    test gave it one."""
    return device if device.id else dataclasses.replace(
        device, id=object_id(device.kind, device.index))


#: The device of a stream not linked yet (the backend's '' for ``PA_INVALID_INDEX``).
UNLINKED = ""


class FakeServer:
    """An audio server in memory. Streams are :class:`~audiopolicyd.model.Stream` values."""

    def __init__(self) -> None:
        self.state: dict[str, Stream] = {}
        #: ``(key, field, value)`` of every write that arrived, in order.
        self.writes: list[tuple[str, str, object]] = []
        #: Keys of the streams the daemon killed, in order.
        self.killed: list[str] = []
        self.up = True
        #: The modules loaded (``pactl list modules``), and this instance's cookie.
        self.modules: list[Module] = []
        #: The sinks and sources.
        self.devices = [Device("sink", 0, "speaker"), Device("source", 1, "mic")]
        self.cookie = 1
        self.connections: list[FakeBackend] = []
        self._held: list[asyncio.Future] | None = None
        self._init_contract()
        self._quirks_init()

    def connection(self) -> FakeBackend:
        """A new client connection (give it to the daemon under test)."""
        return FakeBackend(self)

    # -- what other clients and the user do --------------------------------------------------

    def add(self, stream: Stream) -> None:
        """Another client creates a stream (see :attr:`restore_late` for how it appears)."""
        if self.restore_late is not None:
            self._add_restored_late(stream)
            return
        self.state[stream.key] = stream
        self._emit("new", stream)

    def remove(self, key: str) -> None:
        """A stream goes."""
        self._emit("remove", self.state.pop(key))

    def user_volume(self, key: str, volume: Sequence[int]) -> None:
        """The user sets a stream's volume (in a mixer)."""
        self._set(key, volume=tuple(volume))

    def user_mute(self, key: str, muted: bool) -> None:
        """The user (or the stream's own client) sets a stream's mute flag."""
        self._set(key, muted=muted)

    def volume(self, key: str) -> tuple[int, ...]:
        return self.state[key].volume

    # -- faults ------------------------------------------------------------------------------

    def hold(self) -> None:
        """From now on, writes are received but neither applied nor answered until
        :meth:`release`."""
        if self._held is None:
            self._held = []

    def release(self) -> None:
        """Apply and answer the held writes, in order; stop holding."""
        held, self._held = self._held or [], None
        for future in held:
            if not future.done():
                future.set_result(None)

    def drop(self) -> None:
        """Forget the held writes, as if they never arrived (their sender was killed before
        they left it); stop holding."""
        held, self._held = self._held or [], None
        for future in held:
            if not future.done():
                future.set_exception(ServerGone("the write never arrived"))

    def die(self) -> None:
        """The server goes away: every stream with it, held writes unanswered."""
        self.drop()
        self.state.clear()
        self.up = False
        for connection in self.connections:
            connection._gone()

    def start(self) -> None:
        """The server comes back (empty, a new instance: another cookie)."""
        self.up = True
        self.cookie += 1

    # -- the wider contract: cards, moves, defaults, modules, capture ----------------------------

    def _init_contract(self) -> None:
        #: The cards (none: a machine without sound hardware, as the test servers).
        self.cards: list[Card] = []
        #: The default sink and source, by name.
        self.default = DefaultDevices("speaker", "mic")
        #: Module names :meth:`FakeBackend.load_module` refuses.
        self.refused_modules: set[str] = set()
        #: The devices each profile of a card gives, by card name and profile name.
        self.card_devices: dict[str, dict[str, list[Device]]] = {}
        self._feeds: dict[str, asyncio.Queue[bytes]] = {}
        #: What :meth:`FakeBackend.play` played: ``(sink name, pcm)``.
        self.played: list[tuple[str, bytes]] = []

    def add_card(self, card: Card, devices: Mapping[str, Sequence[Device]]) -> None:
        """A card appears with the devices of its active profile (*devices*: the devices each
        profile gives, by profile name; a profile without devices, ``off``, may be left out)."""
        self.card_devices[card.name] = {name: list(given) for name, given in devices.items()}
        self.cards.append(card)
        self.device_event("new", "card", card.index)
        for device in self.card_devices[card.name].get(card.active_profile, ()):
            self.devices.append(device)
            self.device_event("new", device.kind, device.index)

    def switch_profile(self, card: Card, profile: str) -> None:
        """Switch *card* (which must be in :attr:`cards`) to *profile*, as the server does:
        the old profile's devices go (their streams moved to the default device), the new
        one's appear, then the card changes."""
        position = self.cards.index(card)
        given = self.card_devices.get(card.name, {})
        for device in given.get(card.active_profile, ()):
            self.devices = [d for d in self.devices if d.name != device.name]
            self._rescue(device)
            self.device_event("remove", device.kind, device.index)
        for device in given.get(profile, ()):
            self.devices.append(device)
            self.device_event("new", device.kind, device.index)
        self.cards[position] = dataclasses.replace(card, active_profile=profile)
        self.device_event("change", "card", card.index)

    def unplug(self, name: str, rescue_after: float | None = None) -> None:
        """The device called *name* goes (headphones pulled, a module unloaded), and its
        streams move to the default device: as PulseAudio by default (moved first, then the
        device's ``remove``), or as WirePlumber with *rescue_after* (the ``remove``, then the
        move that many seconds later)."""
        gone = self.device(name)
        if gone is None:
            raise ValueError(f"no device {name!r}")
        self.devices = [d for d in self.devices if d.name != name]
        if rescue_after is None:
            self._rescue(gone)
        self.device_event("remove", gone.kind, gone.index)
        if rescue_after is not None:
            asyncio.get_running_loop().call_later(rescue_after, self._rescue, gone)

    def _rescue(self, gone: Device) -> None:
        """Move the streams on *gone* to the default device of its kind (PulseAudio's rescue;
        WirePlumber moves them a moment later)."""
        default = self.device(self.default.sink if gone.kind == "sink" else self.default.source)
        for key, stream in list(self.state.items()):
            on_kind = (stream.kind is StreamKind.SINK_INPUT) == (gone.kind == "sink")
            if on_kind and stream.device == _listed(gone).id and default is not None:
                self._set(key, device=default.id)

    def module_devices(self, module: Module, loaded: bool) -> None:
        """The devices a module makes appear (*loaded*) or go, as the servers'
        ``module-echo-cancel`` does: a sink ``sink_name=`` and a source ``source_name=``, each
        with its event; streams on them are rescued to the default devices when they go. As
        pipewire-pulse (:attr:`name`), the devices carry the ``client.id`` of the PipeWire
        client the module runs on (``1000 + index``)."""
        if module.name != "module-echo-cancel":
            return
        args = dict(a.split("=", 1) for a in module.argument.split() if "=" in a)
        for kind in ("sink", "source"):
            name = args.get(f"{kind}_name", "")
            if loaded:
                index = max((d.index for d in self.devices), default=0) + 1
                props = {"client.id": str(1000 + module.index)} if "PipeWire" in self.name \
                    else {"device.class": "filter"}
                self.devices.append(Device(kind, index, name, "Echo-Cancel", freeze(props)))
                self.device_event("new", kind, index)
            else:
                gone = next((d for d in self.devices if d.name == name), None)
                if gone is not None:
                    self.devices.remove(gone)
                    self._rescue(gone)
                    self.device_event("remove", kind, gone.index)

    def device(self, name: str) -> Device | None:
        """The device called *name* as a backend lists it (with its id), None if none."""
        found = next((d for d in self.devices if d.name == name), None)
        return found if found is None else _listed(found)

    def device_event(self, etype: str, facility: str, index: int) -> None:
        """The server reports a device's or card's ``new``, ``change`` or ``remove``."""
        for connection in self.connections:
            connection._events.put_nowait(Event(etype, facility, index,
                                                object_id(facility, index)))

    def feed(self, device: str, *blocks: bytes) -> None:
        """PCM blocks the capture of *device* (a source's name, or a sink's for its monitor)
        yields next."""
        for block in blocks:
            self._feeds.setdefault(device, asyncio.Queue()).put_nowait(block)

    # -- inside ------------------------------------------------------------------------------

    async def _write(self, key: str, field: str, value: object) -> None:
        """Receive a write; :attr:`writes` lists it even while held (or dropped later)."""
        self.writes.append((key, field, value))
        self._writing[key] += 1
        try:
            if self._held is not None:
                future = asyncio.get_running_loop().create_future()
                self._held.append(future)
                await future
            else:
                await asyncio.sleep(0)
            if key in self.state:
                self._set(key, **{field: value})
        finally:
            self._writing[key] -= 1

    def _set(self, key: str, **values) -> None:
        stream = self.state[key]
        new = dataclasses.replace(stream, **values)
        if new != stream:
            self.state[key] = new
            self._emit("change", new)

    def _emit(self, etype: str, stream: Stream) -> None:
        for connection in self.connections:
            connection._events.put_nowait(Event(etype, stream.kind.value, stream.index,
                                                stream.id))

    # -- pipewire-pulse's quirks (scriptable; see the module docstring) ----------------------

    def _quirks_init(self) -> None:
        #: The server's name as it reports it (pipewire-pulse: ``PulseAudio (on PipeWire x)``,
        #: which tells the runtime that restored volumes arrive late).
        self.name = "fake"
        #: pipewire-pulse answers a read pipelined behind a volume or mute write with the
        #: stream as it was before the write: a read received while a write to the stream is
        #: not answered yet shows the state it had when the read arrived.
        self.stale_reads = False
        #: Seconds, or None (PulseAudio: a stream is announced with its restored volume).
        #: pipewire-pulse announces a new stream unlinked (no device) at volume 0 and corked,
        #: links it a loop turn later still at volume 0, and WirePlumber's restored volume
        #: (the one given to :meth:`add`) arrives this many seconds after that.
        self.restore_late: float | None = None
        self._writing: collections.Counter[str] = collections.Counter()

    def behave_as_pipewire_pulse(self, restore_late: float = 0.01) -> None:
        """Turn on pipewire-pulse's quirks: its name, stale reads, late restores."""
        self.name = "PulseAudio (on PipeWire 1.0.5)"
        self.stale_reads = True
        self.restore_late = restore_late

    def _stale_answer(self, key: str) -> Stream | None:
        """The answer a read of *key* gets if it is answered stale, else None."""
        return self.state.get(key) if self.stale_reads and self._writing[key] else None

    def _add_restored_late(self, stream: Stream) -> None:
        loop = asyncio.get_running_loop()
        zero = (0,) * len(stream.volume)
        self.state[stream.key] = dataclasses.replace(stream, device=UNLINKED, volume=zero,
                                                     corked=True)
        self._emit("new", self.state[stream.key])

        def link() -> None:
            if stream.key in self.state:
                self._set(stream.key, device=stream.device, corked=stream.corked)
                loop.call_later(self.restore_late, restore)

        def restore() -> None:
            if stream.key in self.state:
                self._set(stream.key, volume=stream.volume)

        loop.call_soon(link)


class FakeBackend(Backend):
    """One connection to a :class:`FakeServer`, implementing the backend contract."""

    capabilities = (Capability.CARDS | Capability.MOVE_STREAMS | Capability.DEFAULT_DEVICES
                    | Capability.MODULES | Capability.CAPTURE | Capability.KILL_RECORDINGS
                    | Capability.CARD_PROFILES | Capability.PLAYBACK)

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.unreadable = {kind: set() for kind in StreamKind}
        self.connected = False
        self.severed = False
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()

    def sever(self) -> None:
        """The daemon is killed: its connection closes; nothing it sends arrives any more."""
        self.severed = True
        self._gone()

    # -- the contract -----------------------------------------------------------------------

    async def connect(self) -> ServerInfo:
        if not self.server.up or self.severed:
            raise ServerGone("the fake server does not answer")
        self.connected = True
        self._events = asyncio.Queue()
        self.server.connections.append(self)
        return ServerInfo(self.server.name, "1.0", self.server.default.sink,
                          self.server.default.source, self.server.cookie)

    def close(self) -> None:
        self._gone()

    async def events(self) -> AsyncIterator[Event]:
        while True:
            event = await self._events.get()
            if event is None:
                raise ServerGone("the fake server went away")
            yield event

    async def streams(self) -> list[Stream]:
        self._check()
        return list(self.server.state.values())

    async def devices(self) -> list[Device]:
        self._check()
        return [_listed(d) for d in self.server.devices]

    async def device(self, device_id: str) -> Device | None:
        self._check()
        await asyncio.sleep(0)  # an answer takes a loop turn, as a real reply does
        self._check()
        return next((d for d in map(_listed, self.server.devices) if d.id == device_id), None)

    async def modules(self) -> list[Module]:
        self._check()
        return list(self.server.modules)

    def unreadable_ids(self, kind: StreamKind) -> set[str]:
        return {f"{kind.value}:{i}" for i in self.unreadable[kind]}

    async def stream(self, stream_id: str) -> Stream | None:
        self._check()
        key = stream_id
        before = self.server._stale_answer(key)
        await asyncio.sleep(0)  # an answer takes a loop turn, as a real reply does
        self._check()
        now = self.server.state.get(key)
        return before if before is not None and now is not None else now

    async def set_volume(self, stream_id: str, volume: Sequence[int]) -> None:
        self._check()
        await self.server._write(stream_id, "volume", tuple(volume))

    async def set_mute(self, stream_id: str, mute: bool) -> None:
        self._check()
        await self.server._write(stream_id, "muted", mute)

    async def kill(self, stream_id: str) -> None:
        self._check()
        stream = self.server.state.get(stream_id)
        if stream is not None and stream.kind is not StreamKind.SOURCE_OUTPUT:
            raise ValueError(f"only source-outputs are killed, not a {stream.kind.value}")
        key = stream_id
        self.server.writes.append((key, "kill", True))
        await asyncio.sleep(0)
        if key in self.server.state:
            self.server.killed.append(key)
            self.server.remove(key)

    # -- the wider contract ------------------------------------------------------------------

    async def cards(self) -> list[Card]:
        self._check()
        return list(self.server.cards)

    async def set_card_profile(self, card: Card, profile: str) -> None:
        self._check()
        now = next((c for c in self.server.cards
                    if c.index == card.index and c.name == card.name), None)
        if now is None:
            raise NoSuchDevice(f"no card {card.name!r} (#{card.index})")
        offered = {p.name: p for p in now.profiles}
        if profile not in offered or not offered[profile].available:
            raise ProfileUnavailable(f"the card {card.name!r} cannot switch to {profile!r}")
        self.server.writes.append((card.id, "profile", profile))
        await asyncio.sleep(0)  # an answer takes a loop turn, as a real reply does
        if profile != now.active_profile:
            self.server.switch_profile(now, profile)

    async def move_stream(self, stream: Stream, device: Device) -> None:
        want = "sink" if stream.kind is StreamKind.SINK_INPUT else "source"
        if device.kind != want:
            raise ValueError(f"a {stream.kind.value} moves to a {want}, not to a {device.kind}")
        self._device(device)
        await self.server._write(stream.id, "device", self.server.device(device.name).id)

    async def default_devices(self) -> DefaultDevices:
        self._check()
        return self.server.default

    async def set_default_device(self, direction: str, device: Device) -> None:
        if direction not in ("sink", "source") or direction != device.kind:
            raise ValueError(f"the default {direction!r} cannot be the {device.kind}")
        self._device(device)
        self.server.default = dataclasses.replace(self.server.default, **{direction: device.name})
        self.server.writes.append((device.id, "default", direction))

    async def load_module(self, name: str, args: str = "") -> Module:
        self._check()
        if name in self.server.refused_modules:
            raise ModuleLoadFailed(f"the audio server refused to load {name!r}")
        module = Module(max((m.index for m in self.server.modules), default=0) + 1, name, args)
        self.server.modules.append(module)
        self.server.module_devices(module, True)
        return module

    async def unload_module(self, module: Module) -> None:
        self._check()
        if any(m.index == module.index for m in self.server.modules):
            self.server.module_devices(module, False)
        self.server.modules = [m for m in self.server.modules if m.index != module.index]

    async def capture(self, device: Device, *, rate: int = 48000, channels: int = 1,
                      block_ms: int = 20) -> AsyncIterator[bytes]:
        self._device(device)
        feed = self.server._feeds.setdefault(device.name, asyncio.Queue())
        while True:
            block = await feed.get()
            self._check()
            yield block

    async def play(self, device: Device, pcm: bytes, *, rate: int = 48000,
                   channels: int = 1) -> None:
        """Kept in the server's ``played`` as ``(sink name, pcm)``."""
        self._device(device)
        self.server.played.append((device.name, pcm))

    # -- inside -----------------------------------------------------------------------------

    def _device(self, device: Device) -> None:
        self._check()
        if self.server.device(device.name) is None:
            raise NoSuchDevice(f"no {device.kind} {device.name!r}")

    def _check(self) -> None:
        if not self.connected:
            raise ServerGone("not connected")

    def _gone(self) -> None:
        if self.connected:
            self.connected = False
            self._events.put_nowait(None)
        if self in self.server.connections:
            self.server.connections.remove(self)
