"""The server's events straight from libpulse's subscription callback, a few µs each.

What is slow upstream: pulsectl-asyncio 1.3's ``PulseAsync.subscribe_events`` awaits every
event through ``_wait_disconnect_or``, which creates two tasks and an ``asyncio.wait`` per event
(a quarter of a millisecond on this project's 2-core machine). A client that moves its stream in
a tight loop makes several events per round trip; the daemon fell behind that flood by tens of
milliseconds, and a new stream's ``new`` event waited behind it while its app recorded the
microphone ungranted (issue 9, ``bench/mic_race.py``: a tight loop of moves reopened after
each kill got up to 440 ms per stream on PulseAudio). Here the callback appends to a deque and
wakes the reader once; the reader takes what is queued without awaiting, and waits only when
nothing is (one future per wake-up, not per event).

It relies on three of pulsectl-asyncio's internals, as its own ``subscribe_events`` does: the
``event_callback`` attribute its libpulse callback calls with a ``PulseEventInfo``, the
coroutine ``_event_mask_set(*masks)``, and ``_disconnected``, the ``asyncio.Event`` it sets
when the connection fails. ``tests/unit/test_backends.py`` checks that the installed version has
them. When to delete this module: once a pulsectl-asyncio release yields events without a task
per event; then go back to ``subscribe_events``.
"""

from __future__ import annotations

import asyncio
import collections

import pulsectl
import pulsectl_asyncio

from .base import ServerGone


class RawEvents:
    """The events of one subscription of connection *pulse*, in the order they came.

    :param pulse: a connected ``PulseAsync``; its ``event_callback`` is this object's until
        :meth:`close`
    """

    def __init__(self, pulse: pulsectl_asyncio.PulseAsync):
        self.pulse = pulse
        self.queued: collections.deque[pulsectl.PulseEventInfo] = collections.deque()
        self._waiter: asyncio.Future | None = None
        self._gone = False
        if pulse.event_callback is not None:
            raise RuntimeError("the connection has an event subscription already")
        pulse.event_callback = self._put
        self._watch = asyncio.ensure_future(self._watch_connection())

    async def subscribe(self, *masks: str) -> None:
        """Ask the server for the events of *masks* (pulsectl's facility names)."""
        await self.pulse._event_mask_set(*masks)

    def take(self) -> pulsectl.PulseEventInfo | None:
        """The oldest event queued, None when none is.

        :raises ServerGone: when none is queued and the connection is gone
        """
        if self.queued:
            return self.queued.popleft()
        if self._gone:
            raise ServerGone("the audio server went away")
        return None

    async def wait(self, timeout: float | None) -> None:
        """Until an event is queued or the connection went, or *timeout* seconds passed."""
        if self.queued or self._gone:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._waiter, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiter = None

    async def close(self) -> None:
        """End the subscription (the server is told, while connected)."""
        self._watch.cancel()
        if self.pulse.event_callback == self._put:
            self.pulse.event_callback = None
            if self.pulse.connected:
                try:
                    await self.pulse._event_mask_set("null")
                except pulsectl.PulseError:
                    pass  # it went meanwhile: nothing to end

    def _put(self, event: pulsectl.PulseEventInfo) -> None:
        self.queued.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _watch_connection(self) -> None:
        await self.pulse._disconnected.wait()
        self._gone = True
        self._wake()
