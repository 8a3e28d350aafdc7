"""The connection to the audio server: connect, follow events, reconnect with backoff when the
server goes away (what was in force then is recorded as lingering by the runtime)."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from ..backends.base import Backend, Event, ServerGone, ServerInfo

logger = logging.getLogger(__name__)

#: Reconnect backoff: first delay and ceiling, in seconds. The delay starts again from the
#: first only after a connection that lasted :data:`STABLE_SECONDS`: a server that accepts us
#: and drops us at once (an object that breaks the protocol) is not hammered.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
STABLE_SECONDS = 10.0


class Backoff:
    """Reconnect delays, in seconds: doubling from :data:`BACKOFF_FIRST` to
    :data:`BACKOFF_MAX`, back to the first only after a connection that lasted
    :data:`STABLE_SECONDS` (a server that drops us at once is not hammered)."""

    def __init__(self) -> None:
        self._delay = BACKOFF_FIRST

    def next(self) -> float:
        """The delay before the next attempt (each call doubles the following one)."""
        delay, self._delay = self._delay, min(self._delay * 2, BACKOFF_MAX)
        return delay

    def lasted(self, seconds: float) -> None:
        """A connection ended after ``seconds``."""
        if seconds >= STABLE_SECONDS:
            self._delay = BACKOFF_FIRST


class Connection:
    """Runs the connection loop for the runtime.

    :param backend: the audio server connection
    :param connected: set while connected and the graph was read
    :param resync: reads the whole graph after a connection (raises ServerGone when lost)
    :param handle: folds one server event in
    :param lost: the connection ended: the runtime records what was in force as lingering
    """

    def __init__(self, backend: Backend, connected: asyncio.Event,
                 resync: Callable[[], Awaitable[None]], handle: Callable[[Event], None],
                 lost: Callable[[], None]):
        self.backend = backend
        self.connected = connected
        self.resync = resync
        self.handle = handle
        self.lost = lost
        self.server: ServerInfo | None = None
        #: Listeners ``on_server(connected: bool)``, called on the event loop.
        self.on_server: list[Callable[[bool], None]] = []
        #: True once the daemon stops: the loop ends instead of reconnecting.
        self.stopping = False

    async def run(self, on_first_attempt: Callable[[], None] | None = None) -> None:
        """Connect, follow events, reconnect with backoff when the server goes away. Forever.

        :param on_first_attempt: called once, after the first connection attempt succeeded
            (and the graph was read) or failed: the daemon is up either way (systemd READY)
        """
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        announced_wait = False
        while not self.stopping:
            try:
                self.server = await self.backend.connect()
            except ServerGone as exc:
                if not announced_wait:
                    logger.warning("%s; retrying with backoff up to %.0f s", exc, BACKOFF_MAX)
                    announced_wait = True
                if on_first_attempt is not None:
                    on_first_attempt()
                    on_first_attempt = None
                await asyncio.sleep(backoff.next())
                continue
            announced_wait = False
            since = loop.time()
            logger.info("connected to %s %s", self.server.server_name, self.server.server_version)
            events = self.backend.events()
            first = asyncio.ensure_future(events.__anext__())  # subscribe before reading
            try:
                await asyncio.sleep(0)
                await self.resync()
                self.connected.set()
                for cb in self.on_server:
                    cb(True)
                if on_first_attempt is not None:
                    on_first_attempt()
                    on_first_attempt = None
                self.handle(await first)
                async for event in events:
                    self.handle(event)
            except ServerGone as exc:
                if self.stopping:
                    return  # the daemon closed the connection after restoring everything
                logger.warning("%s; effects recorded as lingering, reconnecting", exc)
            finally:
                self.connected.clear()
                first.cancel()
            self.lost()
            for cb in self.on_server:
                cb(False)
            lasted = loop.time() - since
            backoff.lasted(lasted)
            if lasted < STABLE_SECONDS:
                delay = backoff.next()
                logger.info("the connection lasted %.1f s; reconnecting in %.1f s", lasted,
                            delay)
                await asyncio.sleep(delay)
