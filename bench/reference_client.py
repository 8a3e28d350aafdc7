"""The process around a reference client (``reference_reactor.py``, ``reference_mover.py``): one
pulsectl-asyncio connection subscribed to some event facilities, the graph read once after
subscribing, ``ready`` printed on stdout, events handed to the client until SIGTERM or SIGINT,
then the client's own ending (a reactor restores what it ducked).

A client is a :class:`Client` with ``read_all()`` (a coroutine: read the graph) and
``handle(event)`` (called for every event, in order).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any, Callable

import pulsectl_asyncio


class Client:
    """The base of a reference client: its connection, and tasks kept alive until done."""

    def __init__(self, pulse: pulsectl_asyncio.PulseAsync):
        self.pulse = pulse
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def finish(self) -> None:
        """Run before the connection closes (on SIGTERM): nothing to undo by default."""


async def serve(name: str, facilities: tuple[str, ...], make: Callable[[Any], Any]) -> int:
    """Run a reference client *make(pulse)* until SIGTERM or SIGINT; the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pulse = pulsectl_asyncio.PulseAsync(name, server=os.environ.get("PULSE_SERVER"))
    await pulse.connect()
    client = make(pulse)
    events = pulse.subscribe_events(*facilities)
    first = asyncio.ensure_future(events.__anext__())  # subscribes before the graph is read
    await asyncio.sleep(0)
    await client.read_all()
    print("ready", flush=True)

    async def follow() -> None:
        client.handle(await first)
        async for ev in events:
            client.handle(ev)

    follower = asyncio.ensure_future(follow())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({follower, stopper}, return_when=asyncio.FIRST_COMPLETED)
    follower.cancel()
    stopper.cancel()
    if follower.done() and not follower.cancelled() and follower.exception() is not None:
        print(f"{name}: {follower.exception()!r}", file=sys.stderr)
        return 1
    await client.finish()
    pulse.close()
    return 0
