"""Which session a stream belongs to, and how long a stream that stopped still counts as
playing (the deactivation hold)."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from ..appsessions import AppSessions
from ..model import Stream

logger = logging.getLogger(__name__)

#: How long a stream that stops playing (corks) still holds its session active, in seconds;
#: also how long a new stream that pipewire-pulse shows linked but not started yet (corked at
#: volume 0) counts as playing. pipewire-pulse shows a new stream corked for a moment between
#: linking and starting it: without the hold a call would end and start again within
#: milliseconds (an unduck, and Pause, Play, Pause on the music player), or start late.
DEACTIVATION_HOLD = 0.1
#: How long the streams of a session that closed stay out of the implicit sessions, in seconds
#: (their removal usually follows the Close call by a few ms).
GHOST_SECONDS = 1.0


class Ownership:
    """Stream -> explicit session owners, and deactivation holds.

    :param schedule: asks for a decision pass soon (a hold or a ghost ends)
    """

    def __init__(self, schedule: Callable[[], None]):
        self.schedule = schedule
        #: The explicit sessions (:class:`~audiopolicyd.appsessions.AppSessions`), if any.
        self.app_sessions: AppSessions | None = None
        self._owners: dict[str, tuple[int, str | None]] = {}  # stream -> (version, session)
        self._ghosts: dict[str, float] = {}  # streams of a closed session -> loop time
        self._version = 0  # AppSessions.version of the last ownership pass
        self._hold_until: dict[str, float] = {}  # stream key -> loop time

    # -- deactivation holds -------------------------------------------------------------------

    def hold(self, key: str) -> None:
        """Count a stream that is not playing as playing for :data:`DEACTIVATION_HOLD`."""
        loop = asyncio.get_running_loop()
        self._hold_until[key] = loop.time() + DEACTIVATION_HOLD
        loop.call_later(DEACTIVATION_HOLD, self.schedule)

    def playing(self, key: str) -> None:
        """The stream plays again: no hold needed."""
        self._hold_until.pop(key, None)

    def held(self) -> set[str]:
        """The streams held now (expired holds are dropped)."""
        now = asyncio.get_running_loop().time()
        self._hold_until = {k: t for k, t in self._hold_until.items() if t > now}
        return set(self._hold_until)

    def forget(self, key: str) -> None:
        self._hold_until.pop(key, None)

    def lost(self) -> None:
        self._hold_until.clear()

    # -- owners -------------------------------------------------------------------------------

    def owners(self, streams: dict[str, Stream]) -> dict[str, str]:
        """Streams that belong to an explicit session: stream key -> session id (cached per
        stream until sessions are created or removed); ``""`` for a stream whose session just
        closed (for :data:`GHOST_SECONDS`: it is probably going too, and must not act as a
        legacy app meanwhile)."""
        if self.app_sessions is None:
            return {}
        version = self.app_sessions.version
        if not self.app_sessions.sessions and not self._ghosts and version == self._version:
            return {}  # no session, and none closed since the last pass
        self._version = version
        loop = asyncio.get_running_loop()
        out = {}
        for key, stream in streams.items():
            cached = self._owners.get(key)
            if cached is None or cached[0] != version:
                owner = self.app_sessions.owner_of(stream.properties, stream.pid)
                if owner is None and cached is not None and cached[1] is not None:
                    self._ghosts[key] = loop.time() + GHOST_SECONDS
                    loop.call_later(GHOST_SECONDS, self.schedule)
                cached = self._owners[key] = (version, owner.id if owner else None)
            if cached[1] is not None:
                out[key] = cached[1]
            elif self._ghosts.get(key, 0) > loop.time():
                out[key] = ""  # owned by no session, and no implicit session either
        for gone in set(self._owners) - set(streams):
            del self._owners[gone]
        self._ghosts = {k: t for k, t in self._ghosts.items() if k in streams}
        return out
