"""Journal, then write: the effects in force on the server (volume, mute, ramps) and the
kill of a stream that fights the microphone gate.

What is applied to a stream is an :class:`~audiopolicyd.effects.Applied` row, journalled
before its writes go out and forgotten only once the server answered every write that undoes
it (a crash in between finds the row and undoes it again). A ramp's path is journalled while it
runs, so a crash in the middle of it finds every step to be ours.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging

from .. import effects as fx
from ..backends.base import Backend
from ..journal import Journal
from ..model import Stream, StreamKind
from .mirror import Mirror
from .tasks import Tasks

logger = logging.getLogger(__name__)


class Actuator:
    """The writes of the daemon, and the journal rows of the effects they apply.

    :param backend: the connection the writes go through
    :param mirror: holds the written values at once (:meth:`Mirror.send`)
    :param journal: the effects journal
    :param tasks: where writes and ramps run
    """

    def __init__(self, backend: Backend, mirror: Mirror, journal: Journal, tasks: Tasks):
        self.backend = backend
        self.mirror = mirror
        self.journal = journal
        self.tasks = tasks
        #: What is applied per stream key (each row journalled).
        self.applied: dict[str, fx.Applied] = {}
        #: The volumes written lately per stream (a ramp's steps): ours if the server shows them.
        self.recent: dict[str, collections.deque] = {}
        #: Streams we gave the user's values back, until they go: what we had set on them is
        #: still ours if the server hands it to them again (see Recovery.adopt_lingering).
        self.restored: dict[str, fx.Applied] = {}
        self.ramps: dict[str, asyncio.Task] = {}
        # Streams whose journal row waits for the server to acknowledge the writes that undo
        # it (a row is forgotten only then): key -> [writes not answered yet, the row].
        self._undoing: dict[str, list] = {}

    # -- single writes (also the microphone gate's) -------------------------------------------

    def mute(self, key: str, mute: bool) -> asyncio.Task:
        """Set the mute flag of the stream of id *key* (it may not be in the mirror yet)."""
        return self.mirror.send(key, self.backend.set_mute(key, mute), muted=mute)

    def volume(self, stream: Stream, volume: tuple[int, ...]) -> asyncio.Task:
        """Set a stream's volume (raw, per channel)."""
        return self.mirror.send(stream.key, self.backend.set_volume(stream.key, volume),
                                volume=volume)

    def kill(self, stream: Stream) -> asyncio.Task:
        """Kill a stream (:meth:`Backend.kill <audiopolicyd.backends.base.Backend.kill>`)."""
        return self.tasks.spawn(self.backend.kill(stream.key))

    # -- effects ------------------------------------------------------------------------------

    def apply(self, stream: Stream, before: fx.Applied | None, after: fx.Applied | None,
              ops: fx.Ops) -> None:
        """Make *after* the applied row of *stream* (journalled already) and start the writes of
        *ops*; an undone row (*after* None) is forgotten once they are answered."""
        key = stream.key
        if after is None:
            self.applied.pop(key, None)
        else:
            self.applied[key] = after
        writes = self._start(stream, ops)
        if after is None and before is not None:
            self._forget_when_answered(before, writes)
            self.restored[key] = before

    def observe(self, stream: Stream) -> None:
        """A fresh read of *stream*: a volume or mute the user set during an effect is kept,
        and restored at its end (:func:`~audiopolicyd.effects.observe`)."""
        key = stream.key
        applied = self.applied.get(key)
        if applied is None:
            return
        seen = fx.observe(applied, stream, self.recent.get(key, ()))
        if seen is not applied:
            logger.info("user changed %s (%s) during an effect: volume %s, muted %s; "
                        "kept, and restored at the end", key, stream.label, stream.volume,
                        stream.muted)
            if seen.ramp_from is None and applied.ramp_from is not None:
                self.stop_ramp(key)  # the user's volume is not overwritten by later steps
            self.applied[key] = seen
            self.journal.write([seen])

    def forget(self, key: str) -> None:
        """A stream went: its row lingers (the server may remember our value, and our undoing
        write may not have landed)."""
        self.stop_ramp(key)
        applied = self.applied.pop(key, None)
        undoing = self._undoing.pop(key, None)
        if applied is not None or undoing is not None:
            self.journal.linger([applied if applied is not None else undoing[1]])
        self.recent.pop(key, None)
        self.restored.pop(key, None)

    def lost(self) -> None:
        """The server went: every row lingers (the server may remember our values)."""
        self.stop_ramps()
        self._undoing.clear()  # unanswered: their rows stay, and linger below
        self.journal.linger(self.applied.values())
        self.applied.clear()
        self.recent.clear()
        self.restored.clear()

    def stop_ramps(self) -> None:
        for task in self.ramps.values():
            task.cancel()
        self.ramps.clear()

    def stop_ramp(self, key: str) -> None:
        ramp = self.ramps.pop(key, None)
        if ramp is not None:
            ramp.cancel()

    def _forget_when_answered(self, row: fx.Applied, writes: list[asyncio.Task]) -> None:
        """Delete the journal row of a stream once the server has answered every write that
        undoes it: a crash before then finds the row and undoes it again (killed 0-6 ms after
        a call ended, a row deleted first left the streams ducked for good)."""
        key = row.key
        if not writes:
            if key not in self.applied:
                self.journal.write([], [key])
            return
        self._undoing[key] = [len(writes), row]

        def answered(task: asyncio.Task) -> None:
            pending = self._undoing.get(key)
            if pending is None or pending[1] is not row:
                return  # the stream or the connection went meanwhile: the row lingers
            if task.cancelled() or task.exception() is not None:
                del self._undoing[key]
                return  # not undone: the row stays for recovery
            pending[0] -= 1
            if pending[0]:
                return
            del self._undoing[key]
            if key not in self.applied:  # no new effect meanwhile (its row replaced this one)
                self.journal.write([], [key])

        for write in writes:
            write.add_done_callback(answered)

    def _start(self, stream: Stream, ops: fx.Ops) -> list[asyncio.Task]:
        """Start the writes of ``ops``; the tasks of the ones sent at once (a ramp's steps
        follow on their own)."""
        self.stop_ramp(stream.key)
        writes = []
        if ops.volume is not None:
            if ops.ramp_ms > 0 and ops.ramp_from is not None:
                self.ramps[stream.key] = self.tasks.spawn(self._ramp(stream, ops))
            else:
                writes.append(self._write_volume(stream, ops.volume))
        if ops.mute is not None:
            writes.append(self.mute(stream.key, ops.mute))
        return writes

    def _write_volume(self, stream: Stream, volume: tuple[int, ...]) -> asyncio.Task:
        self.recent.setdefault(stream.key, collections.deque(maxlen=16)).append(volume)
        return self.volume(stream, volume)

    async def _ramp(self, stream: Stream, ops: fx.Ops) -> None:
        """Write the steps of a ramp (:func:`~audiopolicyd.effects.ramp_steps`), then record
        that it ended.

        Before each step after the first, the stream is read once the previous step was
        answered (pipewire-pulse answers a read sent behind a write with the old volume): a
        volume the user set meanwhile is seen there, which ends the ramp (see :meth:`observe`)
        before a later step could overwrite it.
        """
        key = stream.key
        steps = fx.ramp_steps(ops.ramp_from, ops.volume, ops.ramp_ms)
        for i, step in enumerate(steps):
            if i:
                await asyncio.sleep(ops.ramp_ms / len(steps) / 1000)
                # shielded, as every libpulse operation the ramp waits for: cancelling one
                # from outside frees its callback while libpulse still holds it (a crash)
                await asyncio.shield(self.mirror.read(key))
            last = self._write_volume(stream, step)
            await asyncio.shield(last)
        self.ramps.pop(key, None)
        applied = self.applied.get(stream.key)
        if applied is not None and applied.ramp_from is not None \
                and applied.target == ops.volume:
            self.applied[stream.key] = dataclasses.replace(applied, ramp_from=None, ramp_ms=0)
            self.journal.write([self.applied[stream.key]])
