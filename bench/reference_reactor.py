"""A minimal reference policy client: the floor for any policy client on the PulseAudio protocol.

It does the least a correct ducking client can do with pulsectl-asyncio:

* one connection, subscribed to sink-input events, never polling;
* a mirror ``{sink-input index: raw per-channel volume}``, kept current by fetching a stream's
  info on its ``new`` and ``change`` events (a real client must follow the user's volume, so the
  duck starts from the current value, not a stale one), and set to what it writes;
* on the ``new`` event of a stream whose ``media.role`` is ``phone``: every other known
  sink-input is set to ``round(0.2 * raw)`` per channel (the daemon's arithmetic with its default
  duck level), all writes issued at once (``asyncio.gather``: pipelined, not one round trip after
  another), no ramp;
* on that stream's ``remove`` event: the volumes from before the duck are written back, pipelined.

No policy files, no classification, no journal, no D-Bus: what is left is the protocol's cost and
pulsectl-asyncio's. ``bench/reaction.py`` runs it as a separate process and compares the daemon
with it.

Run: ``PULSE_SERVER=unix:/run/user/1000/pulse/native python bench/reference_reactor.py``.
Prints ``ready`` on stdout once subscribed and the graph is read; stops on SIGTERM or SIGINT,
restoring what it ducked.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Awaitable, Sequence

import pulsectl
import pulsectl_asyncio
from pulsectl import _pulsectl as c

from reference_client import Client, serve  # a sibling module: run as a script from bench/

#: Raw volume of 100 % (``PA_VOLUME_NORM``).
VOLUME_NORM = 0x10000
#: Linear gain of a duck (the shipped policies' ``duck_level``).
DUCK_LEVEL = 0.2
#: ``media.role`` of a trigger stream.
TRIGGER_ROLE = "phone"


class RawVolume:
    """A per-channel raw volume for pulsectl's setters (no float round trip, no clamp)."""

    def __init__(self, volume: Sequence[int]):
        self.volume = tuple(volume)

    def to_struct(self):
        return c.PA_CVOLUME(len(self.volume), self.volume)


def raw_volume(info) -> tuple[int, ...]:
    """The per-channel raw volume of a pulsectl info object."""
    return tuple(int(round(v * VOLUME_NORM)) for v in info.volume.values)


class Reactor(Client):
    """The reference reactor's state and event handling."""

    def __init__(self, pulse: pulsectl_asyncio.PulseAsync):
        super().__init__(pulse)
        self.volumes: dict[int, tuple[int, ...]] = {}
        #: index of the phone stream in force -> {victim index: volume before the duck}
        self.ducks: dict[int, dict[int, tuple[int, ...]]] = {}
        self._pending: dict[int, object] = {}
        #: sink-inputs read at least once (a phone stream ducks the others on its first read)
        self._known: set[int] = set()
        #: volume writes not answered yet, per sink-input
        self._writing: collections.Counter[int] = collections.Counter()

    async def read_all(self) -> None:
        for info in await self.pulse.sink_input_list():
            self.volumes[info.index] = raw_volume(info)
            self._known.add(info.index)

    def handle(self, ev) -> None:
        if ev.t == "remove":
            self._pending.pop(ev.index, None)
            self._known.discard(ev.index)
            self.volumes.pop(ev.index, None)
            saved = self.ducks.pop(ev.index, None)
            if saved:
                self.spawn(self.write(
                    {i: v for i, v in saved.items() if i in self.volumes}))
        elif ev.t in ("new", "change"):
            self.spawn(self.refresh(ev.index))

    async def refresh(self, index: int) -> None:
        token = object()
        self._pending[index] = token
        try:
            info = await self.pulse.sink_input_info(index)
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            return
        if self._pending.get(index) is not token:
            return  # a newer read is on its way, or the stream is gone
        del self._pending[index]
        new = index not in self._known  # first read of it, whichever event it answers
        self._known.add(index)
        if not self._writing[index]:
            # with a write in flight the read may have gone out first (gather starts its
            # tasks a loop turn later) and show the volume from before it: keep the mirror's
            self.volumes[index] = raw_volume(info)
        if new and info.proplist.get("media.role") == TRIGGER_ROLE:
            saved = {i: v for i, v in self.volumes.items()
                     if i != index and not any(i in d for d in self.ducks.values())}
            self.ducks[index] = saved
            await self.write({i: tuple(int(round(DUCK_LEVEL * x)) for x in v)
                              for i, v in saved.items()})

    def write(self, volumes: dict[int, tuple[int, ...]]) -> Awaitable[None]:
        """Set every volume at once: all requests are sent before the first reply is awaited.

        The mirror takes the written values now, when the writes are decided (not when the
        returned awaitable starts), and reads answered while a write to the stream is in flight
        leave it alone: otherwise a call that starts while the previous one's restore is on its
        way would save the ducked volume as the user's and duck it again (``bench/churn.py``
        plays overlapping calls).
        """
        for i, v in volumes.items():
            self.volumes[i] = v
            self._writing[i] += 1
        return self._send(volumes)

    async def _send(self, volumes: dict[int, tuple[int, ...]]) -> None:
        try:
            await asyncio.gather(*(self.pulse.sink_input_volume_set(i, RawVolume(v))
                                   for i, v in volumes.items()), return_exceptions=True)
        finally:
            self._writing.subtract(volumes.keys())
            for i in volumes:
                if self._writing[i] <= 0:
                    del self._writing[i]

    async def finish(self) -> None:
        """Restore what is ducked (on SIGTERM)."""
        await self.restore_all()

    async def restore_all(self) -> None:
        saved: dict[int, tuple[int, ...]] = {}
        for duck in self.ducks.values():
            saved.update(duck)
        self.ducks.clear()
        await self.write({i: v for i, v in saved.items() if i in self.volumes})


async def main() -> int:
    return await serve("audiopolicyd-bench-reference", ("sink_input",), Reactor)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
