"""Recovery: the journal's rows after a crash or a lost server, the values of ours the server
hands to new streams, and the restore of everything at shutdown.

A row of a stream that is still there (same index, same restore key) is adopted: the effect
goes on from it, or is undone by the next pass. Any other row *lingers*: the server may
remember our value for that restore key (both servers remember volume and mute per role or
app), and every new stream it starts at that value gets the user's back
(:meth:`Recovery.adopt_lingering`), until a stream of the key starts at another value.
"""

from __future__ import annotations

import asyncio
import logging

from .. import effects as fx
from ..journal import Journal
from ..model import Stream
from .actuator import Actuator
from .mirror import READ_TIMEOUT, Mirror
from .pauses import Pauses
from .tasks import Tasks

logger = logging.getLogger(__name__)


class Recovery:
    """Adopts journal rows and lingering values; restores everything at shutdown.

    :param journal: the effects journal
    :param mirror: the streams as read
    :param actuator: what is applied now (rows adopted go there)
    """

    def __init__(self, journal: Journal, mirror: Mirror, actuator: Actuator):
        self.journal = journal
        self.mirror = mirror
        self.actuator = actuator

    def adopt_journal(self) -> None:
        """After the graph was read at a (re)connection: adopt the rows of streams still
        there, let the others linger, and give every stream the server started at a value of
        ours the user's back."""
        applied = self.actuator.applied
        streams = self.mirror.streams
        for key, row in self.journal.effects().items():
            stream = streams.get(key)
            if stream is not None and stream.restore_key == row.restore_key:
                applied[key] = fx.observe(row, stream)
                logger.info("recovered journalled state of %s (%s)", key, stream.label)
            else:
                self.journal.linger([row])
        for stream in streams.values():
            if stream.key not in applied:
                self.adopt_lingering(stream)

    def adopt_lingering(self, stream: Stream) -> None:
        """A new stream the server started at a volume or mute we had set gets the user's back.

        Both servers remember volume and mute per role or app, so every new stream of a role we
        are ducking (or ducked when its streams vanished, or when the server went away) starts
        at our value. The values of ours are those of the live streams of that restore key we
        act on, and those of its lingering journal row (our target, every step of a ramp, our
        mute). The row is kept while the server may still hand our value out, so every stream
        of the key gets the user's value back, and is forgotten when a stream of the key starts
        at none of them (the server remembers another value now).
        """
        actuator = self.actuator
        sources = [(a, actuator.recent.get(a.key, ())) for a in actuator.applied.values()
                   if a.restore_key == stream.restore_key and a.key != stream.key]
        restored = actuator.restored.pop(stream.key, None)
        if restored is not None and restored.restore_key == stream.restore_key:
            # pipewire-pulse shows a stream it sets up unlinked again for a moment, and
            # WirePlumber hands it the value it remembers (ours) when it links again, over the
            # user's value we had given back (seen right after a restart of the server)
            sources.append((restored, ()))
        lingering = (self.journal.lingering(stream.restore_key)
                     if self.journal.has_lingering() else None)
        if lingering is not None:
            sources.append((lingering, ()))
        for source, recent in sources:
            at_ours = source.target is not None and source.at_ours(stream.volume, recent)
            muted = source.muted_by_us and stream.muted
            if not (at_ours or muted):
                continue
            # the gain in force is unknown (a ramp step may have been remembered): the next
            # plan writes base x the gain wanted now
            applied = fx.Applied(stream.key, stream.restore_key,
                                 base=source.base if at_ours else stream.volume,
                                 gain=fx.UNKNOWN_GAIN if at_ours else 1.0,
                                 target=stream.volume if at_ours else None,
                                 muted_by_us=muted)
            actuator.applied[stream.key] = applied
            self.journal.write([applied])
            logger.info("%s (%s) started with a value we had set on %s; it gets the user's back",
                        stream.key, stream.label, stream.restore_key)
            return
        if lingering is not None:
            self.journal.forget_lingering(stream.restore_key)
            logger.info("%s (%s) started at a value that is not ours: the server no longer "
                        "remembers our value for %s", stream.key, stream.label,
                        stream.restore_key)

    async def restore_all(self, tasks: Tasks, pauses: Pauses) -> None:
        """Undo every effect and resume every player we paused (daemon shutdown).

        Waits for the writes in flight first (an undo sent just before must be answered before
        its journal row goes). The journal is cleared only when every write succeeded; a row
        kept is undone again at the next start.
        """
        actuator = self.actuator
        actuator.stop_ramps()
        pending = [t for t in tasks.pending if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=READ_TIMEOUT)
        backend = actuator.backend
        writes = []
        for key, applied in actuator.applied.items():
            stream = self.mirror.streams.get(key)
            ops = fx.restore_ops(applied)
            if stream is None:
                continue
            if ops.volume is not None:
                writes.append(backend.set_volume(stream.key, ops.volume))
            if ops.mute is not None:
                writes.append(backend.set_mute(stream.key, ops.mute))
        writes += pauses.resumes()
        results = await asyncio.gather(*writes, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            logger.warning("%d restore write(s) failed at shutdown (%s); the journal keeps them "
                           "for the next start", len(failed), failed[0])
            return
        actuator.applied.clear()
        pauses.claims.clear()
        if self.journal.clear():
            logger.info("every effect restored (%d write(s))", len(writes))
        else:
            logger.warning("every effect restored (%d write(s)); the journal could not be "
                           "cleared: the next start finds the streams as the user had them",
                           len(writes))
