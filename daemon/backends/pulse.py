"""The PulseAudio-protocol backend (PulseAudio 16 and pipewire-pulse), on pulsectl-asyncio.

Event-driven: one subscription to sink-input, source-output, sink, source, card, module and
server events (and client events on pipewire-pulse), taken straight from libpulse's callback
(:mod:`~audiopolicyd.backends.pulse_events`); a device's or card's ``change`` events are
coalesced (:mod:`~audiopolicyd.backends.coalesce`). Requests are pipelined: callers issue many
writes concurrently and libpulse sends them without waiting for each reply. What the protocol's
objects become in the model (ids, restore keys, bounded properties, cards and ports) is
:mod:`~audiopolicyd.backends.pulse_convert`; who a stream's
client is, :mod:`~audiopolicyd.backends.pulse_clients`; moves, defaults, modules and capture,
:mod:`~audiopolicyd.backends.pulse_routing`.

Objects the server cannot describe. pipewire-pulse 0.3.65 sends a stream with a binary property
over 64 KiB in a reply that libpulse rejects (``PA_ERR_PROTOCOL``, "Protocol error": libpulse
caps a tag at 64 KiB) and libpulse then drops the whole connection; ``pactl list`` fails the
same way. Reading such a stream, or any list holding it, costs the connection. So the backend
remembers which read broke it (replies come in order: the oldest read not answered), never
reads that object again while it exists, and lists streams of that kind one index at a time
(every index up to a bound above the highest index the server shows) until it is gone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Sequence

import pulsectl
import pulsectl_asyncio
from pulsectl import _pulsectl as c

from ..model import VOLUME_NORM, Card, Device, Stream, StreamKind, freeze
from . import pulse_capture
from .base import Backend, Capability, Event, Module, ServerGone, ServerInfo
from .coalesce import Coalescer
from .pulse_clients import ClientVouching
from .pulse_convert import (
    INVALID_INDEX, card, device, device_id, object_id, parse_device_id, parse_stream_id, props,
    restore_key,
    stream_id,
)
from .pulse_events import RawEvents
from .pulse_routing import PulseRouting

logger = logging.getLogger(__name__)

#: How long connecting (and the first server-info reply) may take, in seconds.
CONNECT_TIMEOUT = 5.0
#: Listing one index at a time: indices tried above the highest index the server shows
#: (devices, clients, streams; pipewire-pulse's module indices carry a flag bit and are left
#: out), and the most indices ever tried.
INDEX_MARGIN, INDEX_LIMIT = 256, 16384
#: libpulse's PA_ERR_PROTOCOL: the connection failed on a reply libpulse could not parse.
PA_ERR_PROTOCOL = 7

_FACILITIES = {"sink_input": "sink-input", "source_output": "source-output", "sink": "sink",
               "source": "source", "card": "card", "module": "module", "server": "server"}
_KINDS = {k.value: k for k in StreamKind}
# pulsectl(-asyncio) wraps no kill of a stream; its own wrapper factory over libpulse's
# pa_context_kill_source_output (which pulsectl's ctypes table declares; it declares no
# pa_context_kill_sink_input) gives the same error handling as its setters.
_KILL_SOURCE_OUTPUT = pulsectl_asyncio.PulseAsync._pulse_method_call(
    c.pa.context_kill_source_output, None)


class _RawVolume:
    """A per-channel raw volume for pulsectl's setters, without its clamp at
    PA_VOLUME_UI_MAX (153 %): a user's 200 % must be restored as 200 %."""

    def __init__(self, volume: Sequence[int]):
        self.volume = tuple(volume)

    def to_struct(self):
        return c.PA_CVOLUME(len(self.volume), self.volume)


def _volume(info) -> tuple[int, ...]:
    return tuple(round(v * VOLUME_NORM) for v in info.volume.values)


class PulseBackend(ClientVouching, PulseRouting, Backend):
    """:class:`~audiopolicyd.backends.base.Backend` over the PulseAudio native protocol.

    :param server: server address (``unix:/run/user/1000/pulse/native``), None for libpulse's
        default lookup (``$PULSE_SERVER``, then the user's runtime dir)
    :param client_name: the ``application.name`` we show the server
    """

    capabilities = (Capability.CARDS | Capability.MOVE_STREAMS | Capability.DEFAULT_DEVICES
                    | Capability.MODULES | Capability.CAPTURE | Capability.KILL_RECORDINGS
                    | Capability.PLAYBACK | Capability.CARD_PROFILES)

    def __init__(self, server: str | None = None, client_name: str = "audiopolicyd"):
        self.server = server
        self.client_name = client_name
        self._pulse: pulsectl_asyncio.PulseAsync | None = None
        self._monitors: set[int] = set()  # sources that are a sink's monitor
        self._sources: set[int] = set()  # every source the last source list showed
        self._modules: dict[int, str] = {}  # module index -> name, for stream owners
        #: Streams whose read broke the connection, by kind: skipped while they exist.
        self.unreadable: dict[StreamKind, set[int]] = {k: set() for k in StreamKind}
        self._list_broken: set[StreamKind] = set()  # listing this kind broke the connection
        self._reads: list[tuple[StreamKind, int | None]] = []  # reads in flight, in send order
        self._highest = 0  # highest index the server has shown, of any object
        self._cookie: int | None = None  # the server instance the indices above belong to
        self._reset_clients(pipewire=False)
        self._own_client = INVALID_INDEX  # our connection's client index (own streams)
        self._starting_captures = 0  # captures of ours not yet giving blocks (Event.maybe_own)

    async def connect(self) -> ServerInfo:
        self.close()
        self._pulse = pulsectl_asyncio.PulseAsync(self.client_name, server=self.server)
        self._reads = []
        try:
            await self._pulse.connect(timeout=CONNECT_TIMEOUT)
            # never cancel a libpulse operation (its callback would be freed while libpulse
            # holds it): on timeout it is left to fail when the context closes
            reading = asyncio.ensure_future(self._pulse.server_info())
            reading.add_done_callback(lambda t: t.cancelled() or t.exception())
            info = await asyncio.wait_for(asyncio.shield(reading), CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            self.close()
            raise ServerGone(f"the audio server did not answer within {CONNECT_TIMEOUT:.0f} s"
                             ) from None
        except (pulsectl.PulseError, OSError) as exc:
            self.close()
            raise ServerGone(f"cannot connect to the audio server: {exc}") from None
        self._reset_clients(pipewire="PipeWire" in (info.server_name or ""))
        self._own_client = pulse_capture.client_index(self._pulse)
        if info.cookie != self._cookie:  # another server instance: indices start afresh
            self._cookie = info.cookie
            self.unreadable = {k: set() for k in StreamKind}
            self._list_broken.clear()
            self._highest = 0
        return ServerInfo(info.server_name, info.server_version,
                          info.default_sink_name or "", info.default_source_name or "",
                          int(info.cookie or 0))

    def close(self) -> None:
        if self._pulse is not None:
            try:
                self._pulse.close()
            except Exception:  # closing a dead context must never take the daemon down
                logger.debug("closing the pulse context failed", exc_info=True)
            self._pulse = None

    @property
    def _p(self) -> pulsectl_asyncio.PulseAsync:
        if self._pulse is None:
            raise ServerGone("not connected")
        return self._pulse

    async def events(self) -> AsyncIterator[Event]:
        raw = RawEvents(self._p)  # not subscribe_events: a task pair per event (pulse_events)
        coalescer = Coalescer()
        loop = asyncio.get_running_loop()
        try:
            await self._call(raw.subscribe(*_FACILITIES, *self.client_facilities()))
            while True:
                for event in coalescer.due(loop.time()):
                    yield event
                ev = raw.take()
                if ev is None:
                    # folded device changes wait for their window (Coalescer.deadline)
                    deadline = coalescer.deadline()
                    await raw.wait(None if deadline is None else max(0.0,
                                                                     deadline - loop.time()))
                    continue
                came = self._event(ev)
                if came is not None:
                    for out in coalescer.offer(came, loop.time()):
                        yield out
        finally:
            await raw.close()

    def _event(self, ev) -> Event | None:
        """A server event in the model's terms, None for one only the backend uses."""
        # pulsectl's EnumValue compares equal to its name but does not str() to it
        etype = next(t for t in ("new", "change", "remove") if ev.t == t)
        if ev.facility == "client":
            self.client_event(etype, ev.index)
            return None
        facility = next((v for k, v in _FACILITIES.items() if ev.facility == k), None)
        if facility is None:
            return None
        if etype == "remove" and facility in _KINDS:
            self._forget_unreadable(_KINDS[facility], ev.index)
        if etype == "remove" and facility == "source":
            # pipewire-pulse gives a new source the index of a removed one
            self._sources.discard(ev.index)
            self._monitors.discard(ev.index)
        if facility == "module":
            # pipewire-pulse gives a new module the index of an unloaded one
            self._modules.pop(ev.index, None)
        if facility in _KINDS:
            oid = stream_id(_KINDS[facility], ev.index)
        else:
            oid = object_id(facility, ev.index) if facility in ("sink", "source", "card") else ""
        maybe_own = etype == "new" and facility == "source-output" \
            and self._starting_captures > 0
        return Event(etype, facility, ev.index, oid, maybe_own)

    async def _call(self, coro):
        try:
            return await coro
        except pulsectl.PulseDisconnected:
            raise ServerGone("the audio server went away") from None

    async def _read(self, kind: StreamKind, index: int | None, coro):
        """Await a read of stream ``kind:index`` (a list of that kind when ``index`` is None);
        when the connection breaks under it, blame the oldest read not answered."""
        what = (kind, index)
        self._reads.append(what)
        try:
            return await self._call(coro)
        except (pulsectl.PulseOperationFailed, ServerGone):
            if self._pulse is not None and not self._pulse.connected:
                if self._protocol_error():
                    self._blame()
                raise ServerGone("the audio server went away") from None
            raise
        finally:
            if what in self._reads:
                self._reads.remove(what)

    def _protocol_error(self) -> bool:
        """Whether the connection failed on a reply libpulse could not parse (not on the
        server going away)."""
        try:
            return c.pa.context_errno(self._p._ctx) == PA_ERR_PROTOCOL
        except Exception:  # no context any more: not a protocol error we can name
            return False

    def _blame(self) -> None:
        if not self._reads:
            return
        kind, index = self._reads[0]
        self._reads.clear()  # once per connection: the rest failed with it
        if index is None:
            self._list_broken.add(kind)
            logger.warning("listing %ss broke the connection to the audio server (an object it "
                           "cannot describe); listing them one index at a time", kind.value)
        else:
            self.unreadable[kind].add(index)
            logger.warning("%s:%d cannot be read: the audio server's description of it breaks "
                           "the protocol (a property over 64 KiB?); it is skipped while it "
                           "exists", kind.value, index)

    def _forget_unreadable(self, kind: StreamKind, index: int) -> None:
        if index in self.unreadable[kind]:
            self.unreadable[kind].discard(index)
            logger.info("%s:%d, which could not be read, is gone", kind.value, index)
            if not self.unreadable[kind]:
                self._list_broken.discard(kind)

    def _stream(self, kind: StreamKind, info) -> Stream:
        on = info.sink if kind is StreamKind.SINK_INPUT else info.source  # a server index
        properties = props(info.proplist)
        # from the server's source list only: stream.capture.sink is the client's claim
        # (pipewire-pulse honours it by linking the stream to a monitor; PulseAudio ignores it)
        monitor = kind is StreamKind.SOURCE_OUTPUT and on in self._monitors
        module, owner = self._owner(info)
        client = getattr(info, "client", INVALID_INDEX)
        own = client == self._own_client and client != INVALID_INDEX
        device = device_id("sink" if kind is StreamKind.SINK_INPUT else "source", on)
        return Stream(kind, info.index, freeze(properties), _volume(info), bool(info.mute),
                      bool(getattr(info, "corked", False)), device, monitor, module, owner,
                      id=stream_id(kind, info.index), restore_key=restore_key(kind, properties),
                      own=own)

    def _owner(self, info) -> tuple[str, int]:
        """The owning server module's name and index, ``('', -1)`` for a client's stream.
        PulseAudio names the native-protocol module as the owner of every client stream;
        pipewire-pulse none, but it takes a stream's ``owner_module`` from the node's
        ``pulse.module.id`` property, which a client may set on its own stream (verified on
        0.3.65: ``parecord --property=pulse.module.id=<a module's index>`` shows that
        module as its owner). A pipewire-pulse module's stream has no client, so there a
        stream with a client is a client's, whatever owner it shows. (PulseAudio sets the
        owner itself, and a protocol module's streams, ``module-simple-protocol-tcp``'s,
        have both the module and the client it made.)"""
        index = getattr(info, "owner_module", INVALID_INDEX)
        name = self._modules.get(index, "")
        if getattr(self, "_pipewire", False) \
                and getattr(info, "client", INVALID_INDEX) not in (None, INVALID_INDEX):
            return "", -1
        if not name or name.startswith("module-native-protocol"):
            return "", -1
        return name, index

    async def _learn_module(self, info) -> None:
        """Fetch the name of a stream's owner module when it is not known yet."""
        index = getattr(info, "owner_module", None)
        if index is None or index == INVALID_INDEX or index in self._modules:
            return
        try:
            module = await self._call(self._p.module_info(index))
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            return
        self._modules[index] = module.name

    async def streams(self) -> list[Stream]:
        await self.devices()  # monitor flags of source-outputs need the source list
        self._modules = {m.index: m.name for m in await self.modules()}
        clients = await self._call(self._p.client_list())
        self._highest = max([self._highest, *(c.index for c in clients)])
        self._learn_clients(clients)
        out = []
        for kind in StreamKind:
            for info in await self._list(kind):
                self._highest = max(self._highest, info.index)
                out.append(self._vouched(self._stream(kind, info), info))
        return out

    async def _list(self, kind: StreamKind) -> list:
        """Every stream of a kind: one list read, or one read per index while listing them
        breaks the connection (see the module docstring)."""
        if kind not in self._list_broken:
            lister = (self._p.sink_input_list if kind is StreamKind.SINK_INPUT
                      else self._p.source_output_list)
            return await self._read(kind, None, lister())
        found = await asyncio.gather(*(
            self._info(kind, i) for i in range(min(self._highest + INDEX_MARGIN, INDEX_LIMIT))
            if i not in self.unreadable[kind]))
        return [info for info in found if info is not None]

    async def _info(self, kind: StreamKind, index: int):
        """One stream's info, None when there is none at that index."""
        getter = (self._p.sink_input_info if kind is StreamKind.SINK_INPUT
                  else self._p.source_output_info)
        try:
            return await self._read(kind, index, getter(index))
        except pulsectl.PulseIndexError:
            return None
        except pulsectl.PulseOperationFailed as exc:
            logger.debug("reading %s:%d failed: %r", kind.value, index, exc)
            return None

    async def devices(self) -> list[Device]:
        # the three lists pipelined: one round trip, not three (a device that appears is
        # routed after this read)
        sinks, sources, card_list = await asyncio.gather(
            self._call(self._p.sink_list()), self._call(self._p.source_list()), self.cards())
        cards = {c.index: c for c in card_list}
        self._highest = max([self._highest, *(d.index for d in (*sinks, *sources))])
        found = [device("source", s, cards) for s in sources]
        self._monitors = {d.index for d in found if d.monitor}
        self._sources = {d.index for d in found}
        return [device("sink", s, cards) for s in sinks] + found

    async def device(self, device_id: str) -> Device | None:
        kind, index = parse_device_id(device_id)
        getter = self._p.sink_info if kind == "sink" else self._p.source_info
        try:
            info = await self._call(getter(index))
            cards = {}
            if info.card != INVALID_INDEX:
                cards[info.card] = card(await self._call(self._p.card_info(info.card)))
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            return None  # gone meanwhile (its card too)
        found = device(kind, info, cards)
        self._highest = max(self._highest, index)
        if kind == "source":
            self._sources.add(index)
            if found.monitor:
                self._monitors.add(index)
            else:
                self._monitors.discard(index)
        return found

    async def cards(self) -> list[Card]:
        return [card(info) for info in await self._call(self._p.card_list())]

    async def modules(self) -> list[Module]:
        return [Module(m.index, m.name, m.argument or "")
                for m in await self._call(self._p.module_list())]

    def unreadable_ids(self, kind: StreamKind) -> set[str]:
        return {stream_id(kind, i) for i in self.unreadable[kind]}

    async def stream(self, stream_id: str) -> Stream | None:
        kind, index = parse_stream_id(stream_id)
        if index in self.unreadable[kind]:
            return None
        self._highest = max(self._highest, index)
        info = await self._info(kind, index)
        if info is None:
            return None
        await self._learn_module(info)
        if kind is StreamKind.SOURCE_OUTPUT and info.source not in self._sources \
                and info.source != INVALID_INDEX:
            await self.device(device_id("source", info.source))  # is it a monitor?
        await self._learn_client(info)
        return self._vouched(self._stream(kind, info), info)

    async def set_volume(self, stream_id: str, volume: Sequence[int]) -> None:
        kind, index = parse_stream_id(stream_id)
        setter = (self._p.sink_input_volume_set if kind is StreamKind.SINK_INPUT
                  else self._p.source_output_volume_set)
        try:
            await self._call(setter(index, _RawVolume(volume)))
        except pulsectl.PulseOperationFailed:
            logger.debug("%s:%d vanished before its volume was set", kind.value, index)

    async def set_mute(self, stream_id: str, mute: bool) -> None:
        kind, index = parse_stream_id(stream_id)
        setter = (self._p.sink_input_mute if kind is StreamKind.SINK_INPUT
                  else self._p.source_output_mute)
        try:
            await self._call(setter(index, mute))
        except pulsectl.PulseOperationFailed:
            logger.debug("%s:%d vanished before its mute was set", kind.value, index)

    async def kill(self, stream_id: str) -> None:
        kind, index = parse_stream_id(stream_id)
        try:
            if kind is not StreamKind.SOURCE_OUTPUT:
                raise ValueError(f"only source-outputs are killed, not a {kind.value}")
            await self._call(_KILL_SOURCE_OUTPUT(self._p, index))
        except pulsectl.PulseOperationFailed:
            logger.debug("%s:%d vanished before it was killed", kind.value, index)
