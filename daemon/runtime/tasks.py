"""The runtime's background tasks (reads, writes, ramps, MPRIS calls): each one watched, so
that an internal error stops enforcement instead of vanishing with its task."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from ..backends.base import ServerGone

logger = logging.getLogger(__name__)


class Tasks:
    """Spawn tasks and report the ones that fail with anything but a lost server.

    :param on_error: called on the event loop with the exception of a task that failed with
        an internal error (a bug); a :class:`~audiopolicyd.backends.base.ServerGone` is only
        logged (the connection's loop handles the server's going)
    """

    def __init__(self, on_error: Callable[[BaseException], None]):
        self.on_error = on_error
        #: The tasks not done yet (a daemon killed in a test cancels them all).
        self.pending: set[asyncio.Task] = set()
        #: How many tasks were spawned so far.
        self.spawned = 0

    def spawn(self, coro: Awaitable) -> asyncio.Task:
        """Run *coro* as a task on the running loop; returns the task."""
        task = asyncio.ensure_future(coro)
        self.spawned += 1
        self.pending.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, ServerGone):
                logger.debug("write or read lost with the server: %s", exc)
            else:
                self.on_error(exc)
