"""A minimal reference routing client: the floor for routing on the PulseAudio protocol.

It does the least a correct call router can do with pulsectl-asyncio, for the case
``bench/routing.py`` measures (a USB headset appears and goes while calls play):

* one connection, subscribed to sink and sink-input events, never polling;
* a mirror of the sink-inputs whose ``media.role`` is ``phone`` (the calls), kept by reading a
  stream on its ``new`` event;
* the sinks' ``device.bus`` and ``device.form_factor``, read at the start and on a sink's ``new``
  event;
* a call's sink: a USB one if there is one (``device.bus=usb``), else headphones
  (``device.form_factor`` ``headphone`` or ``headset``), else the server's default sink: the
  daemon's shipped ``playAndRecord`` route on the test servers' devices;
* on a sink's ``new`` or ``remove`` event, and on a call's ``new`` or ``change`` event (read to
  see where the call is: WirePlumber moves the streams of a vanished sink to the default sink
  some 15 ms after its removal, after the mover's own move), every call not on the call sink is
  moved there, all requests issued at once (``asyncio.gather``: pipelined).

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

from reference_client import Client, serve  # a sibling module: run as a script from bench/

CALL_ROLE = "phone"
HEADSET_BUS = "usb"
HEADPHONES = ("headphone", "headset")


class Mover(Client):
    """The reference mover's state and event handling."""

    def __init__(self, pulse: pulsectl_asyncio.PulseAsync):
        super().__init__(pulse)
        self.calls: dict[int, int] = {}  # call sink-input -> its sink
        self.sinks: dict[int, tuple[str, str]] = {}  # sink -> (device.bus, device.form_factor)

    async def read_all(self) -> None:
        for sink in await self.pulse.sink_list():
            self.sinks[sink.index] = self._kind(sink)
        for info in await self.pulse.sink_input_list():
            if info.proplist.get("media.role") == CALL_ROLE:
                self.calls[info.index] = info.sink

    @staticmethod
    def _kind(sink) -> tuple[str, str]:
        return sink.proplist.get("device.bus", ""), sink.proplist.get("device.form_factor", "")

    def handle(self, ev) -> None:
        if ev.facility == "sink":
            if ev.t == "new":
                self.spawn(self.sink_new(ev.index))
            elif ev.t == "remove":
                self.sinks.pop(ev.index, None)
                self.spawn(self.route())
        elif ev.facility == "sink_input":
            if ev.t == "new" or (ev.t == "change" and ev.index in self.calls):
                self.spawn(self.stream_seen(ev.index))
            elif ev.t == "remove":
                self.calls.pop(ev.index, None)

    async def sink_new(self, index: int) -> None:
        try:
            self.sinks[index] = self._kind(await self.pulse.sink_info(index))
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            return
        await self.route()

    async def stream_seen(self, index: int) -> None:
        try:
            info = await self.pulse.sink_input_info(index)
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            return
        if info.proplist.get("media.role") == CALL_ROLE:
            self.calls[index] = info.sink
            await self.route()

    async def call_sink(self) -> int | None:
        """Where calls go: USB, else headphones, else the default sink."""
        for wanted in (lambda bus, ff: bus == HEADSET_BUS, lambda bus, ff: ff in HEADPHONES):
            found = [i for i, (bus, ff) in self.sinks.items() if wanted(bus, ff)]
            if found:
                return found[-1]  # the newest
        try:
            server = await self.pulse.server_info()
            return (await self.pulse.get_sink_by_name(server.default_sink_name)).index
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            return None

    async def route(self) -> None:
        """Move every call that is not on the call sink there: all requests sent before any
        reply. (A call the server moved meanwhile, its rescue, is moved again: harmless.)"""
        sink = await self.call_sink()
        if sink is None:
            return
        moving = [i for i, on in self.calls.items() if on != sink]
        for i in moving:
            self.calls[i] = sink
        await asyncio.gather(*(self.pulse.sink_input_move(i, sink) for i in moving),
                             return_exceptions=True)



async def main() -> int:
    return await serve("audiopolicyd-bench-reference-mover", ("sink", "sink_input"), Mover)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
