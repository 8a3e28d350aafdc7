"""A minimal reference routing client: the floor for routing on the PulseAudio protocol.

It does the least a correct call router can do with pulsectl-asyncio, for the case
``bench/routing.py`` measures (a USB headset appears and goes while calls play):

* one connection, subscribed to sink and sink-input events, never polling;
* a mirror of the sink-inputs whose ``media.role`` is ``phone`` (the calls), kept by reading a
  stream on its ``new`` event;
* on a sink's ``new`` event: read it; if its ``device.bus`` is ``usb``, every call is moved to it,
  all requests issued at once (``asyncio.gather``: pipelined), and a call that starts later is
  moved on its ``new`` event;
* on that sink's ``remove`` event: every call is moved to the server's default sink, pipelined
  (the server may have moved them there already: PulseAudio's rescue).

No policies, port types, user preferences, journal or D-Bus: what is left is the protocol's
cost and pulsectl-asyncio's. ``bench/routing.py`` runs it as a separate process and compares the
daemon's router with it.

Run: ``PULSE_SERVER=unix:/run/user/1000/pulse/native python bench/reference_mover.py``.
Prints ``ready`` on stdout once subscribed and the graph is read; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio

import pulsectl
import pulsectl_asyncio

from reference_client import serve  # a sibling module: run as a script from bench/

CALL_ROLE = "phone"
HEADSET_BUS = "usb"


class Mover:
    """The reference mover's state and event handling."""

    def __init__(self, pulse: pulsectl_asyncio.PulseAsync):
        self.pulse = pulse
        self.calls: set[int] = set()
        self.headset: int | None = None
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def read_all(self) -> None:
        for info in await self.pulse.sink_input_list():
            if info.proplist.get("media.role") == CALL_ROLE:
                self.calls.add(info.index)

    def handle(self, ev) -> None:
        if ev.facility == "sink":
            if ev.t == "new":
                self.spawn(self.sink_new(ev.index))
            elif ev.t == "remove" and ev.index == self.headset:
                self.headset = None
                self.spawn(self.to_default())
        elif ev.facility == "sink_input":
            if ev.t == "new":
                self.spawn(self.stream_new(ev.index))
            elif ev.t == "remove":
                self.calls.discard(ev.index)

    async def sink_new(self, index: int) -> None:
        try:
            info = await self.pulse.sink_info(index)
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            return
        if info.proplist.get("device.bus") == HEADSET_BUS:
            self.headset = index
            await self.move(self.calls, index)

    async def stream_new(self, index: int) -> None:
        try:
            info = await self.pulse.sink_input_info(index)
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            return
        if info.proplist.get("media.role") == CALL_ROLE:
            self.calls.add(index)
            if self.headset is not None and info.sink != self.headset:
                await self.move({index}, self.headset)

    async def to_default(self) -> None:
        server = await self.pulse.server_info()
        sink = await self.pulse.get_sink_by_name(server.default_sink_name)
        await self.move(self.calls, sink.index)

    async def finish(self) -> None:
        """Nothing to undo: moves are left where they are, as the user's routing would be."""

    async def move(self, streams, sink: int) -> None:
        """Move every stream of *streams* to *sink*: all requests sent before any reply."""
        await asyncio.gather(*(self.pulse.sink_input_move(i, sink) for i in list(streams)),
                             return_exceptions=True)


async def main() -> int:
    return await serve("audiopolicyd-bench-reference-mover", ("sink", "sink_input"), Mover)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
