"""The graph as the daemon knows it: streams, devices and players, fed by the server's events
(never polled), with the generations that tell a fresh read from a stale one.

Every stream event starts a read of that stream (its reply is folded in, in order: one
connection answers in order, and during a burst of events, pipewire-pulse announcing, linking
and starting a new stream within ~7 ms, the first answer already lets a policy act); change
events that come while a read of the stream is in flight make one more read once it is
answered. A write
(:meth:`Mirror.send`) counts in the stream's write generation and puts the written values in
the mirror at once, so a decision taken before the server echoes it starts from it.

A read is *fresh* when every write to the stream scheduled before it had been answered when it
went out and none was scheduled after it: pipewire-pulse answers a read pipelined behind a
volume write with the old volume. A stale read's volume and mute are ignored (the mirror keeps
the written values) and the stream is read again once the writes are answered. A stream
written before its first read (the microphone gate's mute on ``new``) keeps those values too
when that read is stale.

A sink's or source's ``new`` or ``change`` event reads that device (one read in flight per
device, and one more once it is answered when events came meanwhile); its ``remove`` drops it
at once, without a read. A card's event reads every device again (a profile switch replaces a
card's devices and changes its ports). A device read answered after the device's ``remove``
is dropped.

A :class:`Guard` (the microphone gate) may watch streams: it sees each read before it is
folded in, and each write, and may ask to read a held stream on every change.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from typing import Awaitable, Callable, Protocol

from ..backends.base import Backend, Event
from ..model import Device, Player, Snapshot, Stream, StreamKind, freeze
from .tasks import Tasks

logger = logging.getLogger(__name__)

#: How long a read of one stream may take before it is sent again, in seconds.
READ_TIMEOUT = 2.0
#: Killed streams found gone whose ``remove`` event has not come yet, at most (the oldest
#: forgotten).
MAX_GONE = 1024

KINDS = {"sink-input": StreamKind.SINK_INPUT, "source-output": StreamKind.SOURCE_OUTPUT}


class Guard(Protocol):
    """What the mirror asks of the microphone gate (:mod:`audiopolicyd.microphone.gate`)."""

    def holds(self, key: str) -> bool:
        """Whether *key* is held: read on every change, also while writes are in flight."""

    def flooded(self, key: str) -> bool:
        """Count a change event of a held stream; True when it is being killed for it."""

    def killing(self, key: str) -> bool:
        """Whether *key* is being killed for fighting the gate."""

    def new_stream(self, kind: StreamKind, key: str) -> None:
        """A stream was announced (``new``), before its first read is sent."""

    def screen(self, stream: Stream, fresh: bool, gen: int) -> bool:
        """A read of *stream* before it is folded in; True: it proved a fight, drop it."""

    def written(self, key: str, gen: int, values: dict) -> None:
        """A write of *values* to *key* was scheduled as generation *gen*."""


class Mirror:
    """The streams, devices and players as last read, with read and write generations.

    :param backend: the connection reads and writes go through
    :param tasks: where reads and writes run
    :param on_fold: ``on_fold(old, stream, fresh)``: a read was folded in (*old* is None for a
        stream new to the mirror)
    :param on_remove: ``on_remove(key)``: a stream left the mirror
    :param on_devices: called when a device came, changed or went (after its read): the
        routes are decided again
    :param on_streams: called when a device's read changes what a stream is (a monitor that
        a stream records, read after it): a whole pass; default ``on_devices``
    """

    def __init__(self, backend: Backend, tasks: Tasks,
                 on_fold: Callable[[Stream | None, Stream, bool], None],
                 on_remove: Callable[[str], None], on_devices: Callable[[], None],
                 on_streams: Callable[[], None] | None = None):
        self.backend = backend
        self.tasks = tasks
        self.on_fold = on_fold
        self.on_remove = on_remove
        self.on_devices = on_devices
        self.on_streams = on_streams or on_devices
        self.guard: Guard | None = None
        #: ``annotate(stream) -> stream``: what the runtime knows of a stream beyond the read
        #: (the echo canceller's streams on pipewire-pulse, :mod:`.processing`), applied to
        #: every read before it is folded in; None: none.
        self.annotate: Callable[[Stream], Stream] | None = None
        self.streams: dict[str, Stream] = {}
        self.devices: dict[str, Device] = {}
        self.players: dict[str, Player] = {}
        #: Set while connected and the graph was read.
        self.connected = asyncio.Event()
        self._wgen: dict[str, int] = {}  # writes scheduled per stream
        self._inflight: collections.Counter[str] = collections.Counter()  # not answered yet
        self._stale: set[str] = set()  # last read discarded as older than our writes
        self._unread: dict[str, dict] = {}  # values written before the stream's first read
        self._reads: collections.Counter[str] = collections.Counter()  # reads in flight
        self._removals: dict[str, int] = {}  # key -> removals seen while reads were in flight
        self._reread: set[str] = set()  # held streams to read again once their read answers
        self._epoch = 0  # connections reset so far: a read counts in _reads of its own only
        self._device_reads: dict[str, bool] = {}  # device id -> read again once answered
        self._device_removals: collections.Counter[str] = collections.Counter()  # meanwhile
        # streams we killed that a read found gone, whose `remove` has not come yet (oldest
        # first): their change events, queued before it, are read no more
        self._gone: dict[str, None] = {}

    def load(self, devices: list[Device], streams: list[Stream]) -> None:
        """Take the whole graph as read at a (re)connection."""
        self.devices = {d.id: d for d in devices}
        annotate = self.annotate or (lambda s: s)
        self.streams = {s.key: annotate(s) for s in streams}

    def reset(self) -> list[str]:
        """The connection is gone: forget the graph; returns the keys of the streams dropped."""
        gone = list(self.streams)
        self._epoch += 1  # reads spawned before this are the old connection's
        self._reads.clear()
        self._removals.clear()
        self.streams.clear()
        self._wgen.clear()
        self._stale.clear()
        self._unread.clear()
        self._reread.clear()
        self._device_reads.clear()
        self._device_removals.clear()
        self._gone.clear()
        self.devices.clear()
        return gone

    def snapshot(self) -> Snapshot:
        return Snapshot(freeze(self.streams), freeze(self.devices), freeze(self.players))

    def generation(self, key: str) -> int:
        """How many writes to *key* were scheduled (since it came, or since the connection)."""
        return self._wgen.get(key, 0)

    # -- events and reads ---------------------------------------------------------------------

    def handle(self, event: Event) -> bool:
        """Fold one server event about a stream or a device in; False when it is about neither.
        Reads what it names, concurrently."""
        kind = KINDS.get(event.facility)
        if kind is None:
            # a device's or card's changes come coalesced (Backend.events)
            if event.facility in ("sink", "source"):
                if event.type == "remove":
                    if event.id in self._device_reads:
                        self._device_removals[event.id] += 1
                    gone = self.devices.pop(event.id, None)
                    if gone is not None and gone.monitor:
                        # a monitor goes just before its sink (on both servers): the sink is
                        # going; without it now, the streams the server moved off it are not
                        # moved back there in the meantime (PulseAudio's rescue comes first)
                        gone = self.devices.pop(gone.monitor_of, None)
                        if gone is not None and gone.id in self._device_reads:
                            self._device_removals[gone.id] += 1
                    if gone is not None:
                        self.on_devices()
                else:
                    self.read_device(event.id)
                return True
            if event.facility == "card":
                self.tasks.spawn(self._refresh_devices())
                return True
            return False
        key = event.id
        if event.type == "change" and key in self._gone:
            # a killed fighter's change events queued before its `remove`: a read of each
            # (hundreds, from a stream moved in a tight loop) held up every later event, a
            # new stream's among them
            return True
        self._gone.pop(key, None)  # its `remove`, or a `new` at a reused index
        held = self.guard is not None and self.guard.holds(key)
        if event.type == "remove":
            if self._reads[key]:
                self._removals[key] = self._removals.get(key, 0) + 1
            self.remove(key)
        elif held and self.guard.flooded(key):
            pass  # killed
        elif held and self._reads[key]:
            # a fighter floods us with change events: one read of a held stream at a time,
            # and one more once it is answered (a read queued behind hundreds of others
            # would see the fight late)
            self._reread.add(key)
            if self._inflight[key]:
                self._stale.add(key)
        elif self._inflight[key]:
            # a read now would be answered before our write: read once it is answered
            self._stale.add(key)
            if held:
                # but a fight shows in any read (see the gate): read now too; a server
                # flooded by the fighter can take 0.5 s to answer our writes
                self.read(key)
        elif self._reads[key] and event.type != "new":
            # one read of a stream at a time, and one more once it is answered: a stream
            # moved on pipewire-pulse makes four change events in a few ms (unlinked, corked,
            # linked, running); a read each, for 50 calls, slowed the server for every client.
            # (A `new` is always read at once, and shown to the gate: pipewire-pulse reuses
            # the index of a removed stream, whose read may still be in flight.)
            self._reread.add(key)
        else:
            # (a stream that may be our own capture, starting, is written to after its first
            # read only: Event.maybe_own; the gate holds another app's then)
            if event.type == "new" and self.guard is not None and not event.maybe_own:
                self.guard.new_stream(kind, key)
            self.read(key)
        return True

    def read(self, key: str) -> asyncio.Task:
        """Read one stream by its id (as of the writes scheduled so far) and fold it in."""
        removals = self._removals.get(key, 0)
        self._reads[key] += 1  # in flight from now: events meanwhile ask for one more
        return self.tasks.spawn(self._refresh(key, self._wgen.get(key, 0), removals,
                                              self._epoch))

    async def reread(self, key: str) -> Stream | None:
        """Read one stream now, fold it in, and return it as the mirror then has it (None
        when it is gone)."""
        await self.read(key)
        return self.streams.get(key)

    def read_device(self, device_id: str) -> None:
        """Read one device by its id and fold it in (or drop it when it is gone)."""
        if device_id in self._device_reads:
            self._device_reads[device_id] = True  # once this read is answered
            return
        self._device_reads[device_id] = False
        self.tasks.spawn(self._refresh_device(device_id, self._epoch))

    async def _refresh_device(self, device_id: str, epoch: int) -> None:
        try:
            found = await self.backend.device(device_id)
        finally:
            old = epoch != self._epoch  # the connection went meanwhile: not this one's read
            again = not old and self._device_reads.pop(device_id, False)
            removed = old or self._device_removals.pop(device_id, 0)
        # else it went after the read went out: dropped already. A device read again unchanged
        # (a sink's change event is mostly its volume, which a Device does not hold) asks
        # for no pass.
        if not removed and found != self.devices.get(device_id):
            if found is not None:
                self.devices[device_id] = found
            else:
                del self.devices[device_id]
            if found is not None and found.monitor:
                # a sink's monitor is no route's port; what a stream that records it is (the
                # gate's and the engine's view) needs a whole pass
                if any(s.device == device_id for s in self.streams.values()):
                    self.on_streams()
            else:
                self.on_devices()
        if again and self.connected.is_set():
            # an event came meanwhile: read again, after the pass this read asked for (its
            # moves go out first: a plugged headset's sink has a new and a change event)
            asyncio.get_running_loop().call_soon(self.read_device, device_id)

    async def _refresh_devices(self) -> None:
        devices = await self.backend.devices()
        self.devices = {d.id: d for d in devices}
        self.on_devices()

    async def _refresh(self, key: str, gen: int, removals: int, epoch: int) -> None:
        """Read one stream and fold it into the mirror (see the module docstring). An answer
        for a stream removed meanwhile is dropped.

        :param gen: the stream's write count when the read was scheduled (tasks start in the
            order they are created, so a read goes out after the writes scheduled before it)
        :param removals: the stream's removals seen while reads were in flight, then
        :param epoch: the mirror's resets then: a read spawned before a reset (the connection
            went) is dropped and no longer counted in flight (counted, it would leave the
            count at -1 and every later change event of a stream at that index unread)
        """
        writes_answered = not self._inflight[key]
        overdue: list[bool] = []

        def read_again() -> None:
            # never cancel a libpulse operation from outside: read again, ignore this one
            overdue.append(True)
            logger.warning("reading %s got no answer in %.0f s; reading it again",
                           key, READ_TIMEOUT)
            self.read(key)

        timer = asyncio.get_running_loop().call_later(READ_TIMEOUT, read_again)
        try:
            stream = await self.backend.stream(key)
            if overdue:
                return
            if logger.isEnabledFor(logging.DEBUG):
                if stream is None:
                    logger.debug("read %s: no such stream", key)
                else:
                    logger.debug("read %s: volume %s, muted %s, corked %s, device %r", key,
                                 stream.volume, stream.muted, stream.corked, stream.device)
        finally:
            timer.cancel()
            if epoch != self._epoch:
                removed = True  # the old connection's
            else:
                self._reads[key] -= 1
                removed = self._removals.get(key, 0) != removals
                if not self._reads[key]:
                    del self._reads[key]
                    self._removals.pop(key, None)
        if removed:
            return
        if stream is None:
            if self.guard is not None and self.guard.killing(key):
                # gone as we killed it: a fighter's change events queued before its
                # `remove` are read no more (any other stream may only seem gone: a
                # pipewire-pulse stream announced before it can be read)
                self._gone[key] = None
                while len(self._gone) > MAX_GONE:
                    del self._gone[next(iter(self._gone))]
            self.remove(key)
            return
        self.fold(stream, writes_answered and self._wgen.get(key, 0) == gen, gen)
        if key in self._reread and not self._reads[key] and key in self.streams \
                and self.connected.is_set():
            self._reread.discard(key)
            self.read(key)

    def fold(self, stream: Stream, fresh: bool, gen: int = 0) -> None:
        """Fold a read into the mirror.

        :param fresh: False when the read's volume and mute may predate our writes: the
            mirror keeps its own (our writes), and the stream is read again once they are
            answered.
        :param gen: the stream's write count when the read was scheduled
        """
        key = stream.key
        if self.annotate is not None:
            stream = self.annotate(stream)
        if self.guard is not None and self.guard.screen(stream, fresh, gen):
            return
        old = self.streams.get(key)
        written = self._unread.pop(key, None)
        if not fresh:
            if old is not None:
                stream = dataclasses.replace(stream, volume=old.volume, muted=old.muted)
            elif written:  # read before our first write to it was answered
                stream = dataclasses.replace(stream, **written)
            self._stale.add(key)
        self.streams[key] = stream
        self.on_fold(old, stream, fresh)

    def remove(self, key: str) -> None:
        """A stream went (its ``remove`` event, or a read finding nothing)."""
        self._unread.pop(key, None)
        if self.streams.pop(key, None) is None:
            return
        self._wgen.pop(key, None)
        self._stale.discard(key)
        self._reread.discard(key)
        self.on_remove(key)

    # -- writes -------------------------------------------------------------------------------

    def send(self, key: str, write: Awaitable, **values) -> asyncio.Task:
        """Schedule a write to a stream, and make the mirror hold the written values at once.

        A decision taken before the server echoes the write must start from it, not from the
        value it replaces: a duck planned right after a restore (one trigger ending as another
        starts, or pipewire-pulse showing a new trigger stream corked for a moment) would
        otherwise take a ramp step or the ducked volume for the user's volume, and "restore" it.

        :param key: the stream's key (it may not be in the mirror yet: a mute on ``new``)
        :param write: the backend coroutine
        :param values: the :class:`~audiopolicyd.model.Stream` fields it sets
        :returns: the write's task
        """
        current = self.streams.get(key)
        if current is not None:
            self.streams[key] = dataclasses.replace(current, **values)
        else:
            self._unread.setdefault(key, {}).update(values)
        self._wgen[key] = self._wgen.get(key, 0) + 1
        if self.guard is not None:
            self.guard.written(key, self._wgen[key], values)
        self._inflight[key] += 1
        task = self.tasks.spawn(write)
        task.add_done_callback(lambda _task: self._answered(key))
        return task

    def _answered(self, key: str) -> None:
        """A write to ``key`` was answered: once none is pending, re-read a stream whose
        last read was discarded, so a change the user made meanwhile is not missed."""
        self._inflight[key] -= 1
        if self._inflight[key] > 0:
            return
        del self._inflight[key]
        stream = self.streams.get(key)
        if key in self._stale and stream is not None and self.connected.is_set():
            self._stale.discard(key)
            self.read(key)
