"""Coalescing a flood of device and card ``change`` events (pure: the caller gives the time).

A stream that moves itself between devices in a tight loop makes the server send two device
``change`` events per move, thousands a second; handed on one by one they buried the stream
events behind them, and a fighter of the microphone gate lived for seconds (git log db9b197,
bench/README.md). Dropping them all cost routing its view of ports and profiles. So each
device's and card's ``change`` events are throttled, as a UI throttles resize events: the first
goes on at once, those within :data:`DEVICE_CHANGE_WINDOW` after it are folded into one
delivered when the window ends (which opens the next window). Every other event goes on at
once, in order.
"""

from __future__ import annotations

import logging

from .base import Event

logger = logging.getLogger(__name__)

#: Seconds within which a device's or card's ``change`` events are folded into one.
DEVICE_CHANGE_WINDOW = 0.1
#: Facilities whose ``change`` events are coalesced.
COALESCED = frozenset({"sink", "source", "card"})


class Coalescer:
    """Folds ``change`` events of :data:`COALESCED` facilities per object.

    :param window: seconds of one window (:data:`DEVICE_CHANGE_WINDOW`)
    """

    def __init__(self, window: float = DEVICE_CHANGE_WINDOW) -> None:
        self.window = window
        self._open: dict[tuple[str, int], float] = {}  # object -> end of its window
        self._pending: dict[tuple[str, int], Event] = {}  # changes folded, not delivered yet
        #: How many ``change`` events were folded away (for logs and benchmarks).
        self.folded = 0

    def offer(self, event: Event, now: float) -> list[Event]:
        """Take an event from the server; return what to deliver now, in order."""
        key = (event.facility, event.index)
        if event.facility not in COALESCED:
            return [event]
        if event.type != "change":
            # a new or removed object starts afresh (the server may reuse its index)
            self._open.pop(key, None)
            self._pending.pop(key, None)
            return [event]
        if self._open.get(key, now) > now:
            if key in self._pending:
                self.folded += 1
            self._pending[key] = event
            return []
        self._open[key] = now + self.window
        return [event]

    def due(self, now: float) -> list[Event]:
        """The folded changes whose window has ended by *now*, oldest first; each opens a new
        window."""
        out = []
        for key, end in list(self._open.items()):
            if end > now:
                continue
            event = self._pending.pop(key, None)
            if event is None:
                del self._open[key]
            else:
                out.append(event)
                self._open[key] = now + self.window
        return out

    def deadline(self) -> float | None:
        """When the next folded change falls due, None when none is waiting."""
        ends = [self._open[key] for key in self._pending]
        return min(ends) if ends else None
