"""The router's hands: moving streams (checked, retried once) and telling the user's moves from
the router's own and from the server's rescues.

A stream's device that changed (between two passes, as the mirror says) is the **user's move**
(or its app's: pavucontrol, ``pactl move-sink-input``, the app's own device menu) when:

* the router did not move it there (no move of ours in flight, not our last target), and
* the device it left still exists, asked of the server after the change was seen: on
  PulseAudio a stream's rescue move arrives 0.5-2.3 ms *before* its sink's ``remove`` event,
  on pipewire-pulse WirePlumber moves it ~15 ms *after* (docs/routing.md, "What the servers
  do"); the server's device list, read after the stream's change, no longer has a device the
  server rescued from (a server does the rescue inside the unload, WirePlumber after the node
  went), and
* the device it went to did not appear within :data:`HOTPLUG_WINDOW` seconds before:
  PulseAudio's module-stream-restore moves streams onto a device that reappears under a name it
  remembers (``on_hotplug``), which is the server's doing, not the user's.

Moves are pipelined (never awaited by a pass). pipewire-pulse 0.3.65 sometimes ignores a move
to the default sink shortly after another move: every move is checked by reading the stream
again, and sent once more when the server kept it elsewhere. A stream or device that vanished
meanwhile is not an error.
"""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

from ..backends.base import Backend, BackendError
from ..model import Device, Stream
from .tasks import Tasks

logger = logging.getLogger(__name__)

#: A move onto a device that appeared less than this many seconds before is the server's
#: (stream-restore's hotplug move), never taken for the user's.
HOTPLUG_WINDOW = 0.1
#: A stream moved onto the server's default device, off the device a move of ours put it on,
#: less than this many seconds after that move landed was moved back by the server, not by the
#: user: WirePlumber, with 50 calls rescued off a headset, moves each one to the default sink
#: again about 1 s after every move of ours, for 2-4 s (bench/routing.py, pipewire-pulse
#: 0.3.65, WirePlumber 0.4.13); it also rescues a vanished device's streams ~15 ms after the
#: router routed them. A user's move elsewhere is the user's at once.
UNDO_WINDOW = 2.5
#: After this many such undoings in a row, the router leaves the stream where the server keeps
#: it (until its route changes).
MAX_UNDOS = 5


class Moves:
    """Moves in flight, the router's last target per stream, and user-move checks.

    :param backend: the connection moves go through
    :param tasks: where moves and checks run
    :param schedule: asks for another pass (a move or a check finished)
    :param on_user_move: ``on_user_move(stream, device)``: a check found the user's move of
        ``stream`` onto ``device`` (the router pins it)
    """

    def __init__(self, backend: Backend, tasks: Tasks, schedule: Callable[[], None],
                 on_user_move: Callable[[Stream, Device], None]):
        self.backend = backend
        self.tasks = tasks
        self.schedule = schedule
        self.on_user_move = on_user_move
        #: ``read(key)``: how a move is checked, the stream read again after it; the runtime
        #: reads into its mirror (:meth:`Mirror.reread <.mirror.Mirror.reread>`), so that the
        #: pass the move's end asks for sees the stream where the move put it, not where the
        #: last event's read did (moved again, a call was moved up to six times per plug:
        #: bench/routing.py, 50 calls on pipewire-pulse).
        self.read: Callable[[str], Awaitable[Stream | None]] = backend.stream
        #: ``server_moved(key)``: True when the stream's latest move is known to be the
        #: server's (a rescue off a device that went: :meth:`Disconnect.rescued
        #: <audiopolicyd.runtime.disconnect.Disconnect.rescued>`); never the user's then.
        self.server_moved: Callable[[str], bool] = lambda key: False
        self.moving: dict[str, str] = {}  # stream key -> device id being moved to
        self.target: dict[str, str] = {}  # stream key -> the last device id we moved it to
        self.failed: dict[str, str] = {}  # stream key -> target the server kept refusing
        self.checking: set[str] = set()  # stream keys whose device change is being checked
        self._landed: dict[str, tuple[str, float]] = {}  # key -> (device, when our move landed)
        self._undos: dict[str, int] = {}  # key -> our moves the server undid in a row
        self.appeared: dict[str, float] = {}  # device id -> when it appeared (monotonic)

    def busy(self, key: str) -> bool:
        """True while a move of ``key`` or a check of its last change is in flight."""
        return key in self.moving or key in self.checking

    def forget(self, key: str) -> None:
        for table in (self.moving, self.target, self.failed, self._landed, self._undos):
            table.pop(key, None)
        self.checking.discard(key)

    def reset(self) -> None:
        """The connection is gone."""
        for table in (self.moving, self.target, self.failed, self.appeared, self._landed,
                      self._undos):
            table.clear()
        self.checking.clear()

    def devices_seen(self, before, after) -> None:
        """Note the devices that appeared between two passes (``Snapshot.devices``); the
        first pass after a connection (``before`` empty) sees no device appear."""
        now = time.monotonic()
        for key in set(after) - set(before) if before else ():
            self.appeared[key] = now
        for key in [k for k, t in self.appeared.items() if now - t > HOTPLUG_WINDOW]:
            del self.appeared[key]

    def moved(self, stream: Stream, was: str, now: str, devices, default: str = "") -> None:
        """The mirror shows ``stream`` moved from device ``was`` to ``now`` (ids): check
        whether it was the user (see the module docstring).

        :param default: the id of the server's default device of the stream's kind ('' when
            unknown): where WirePlumber moves the streams it takes off their device
        """
        key = stream.key
        if key in self.moving or now == self.target.get(key):
            return  # ours
        self.target.pop(key, None)
        if self._undone(key, was, now, default):
            return
        self.failed.pop(key, None)
        if self.server_moved(key):
            logger.debug("%s onto %s: the server's move off a device that went", key, now)
            return
        if now in self.appeared or now not in devices:
            logger.debug("%s onto %s: a device that just appeared; the server's move", key, now)
            return
        self.checking.add(key)
        self.tasks.spawn(self._check(stream, was, devices[now]))

    def _undone(self, key: str, was: str, now: str, default: str) -> bool:
        """Whether ``key`` left ``was`` for the default device soon after a move of ours landed
        it there: the server's undoing (see :data:`UNDO_WINDOW`), counted; after
        :data:`MAX_UNDOS` the router stops moving it there."""
        device, when = self._landed.pop(key, ("", 0.0))
        if device != was or now != default or time.monotonic() - when > UNDO_WINDOW:
            self._undos.pop(key, None)
            return False
        undos = self._undos[key] = self._undos.get(key, 0) + 1
        if undos >= MAX_UNDOS:
            self.failed[key] = was
            logger.warning("the server moved %s off %s right after each of our last %d moves, "
                           "to %s; it stays there until its route changes", key, was, undos, now)
        else:
            logger.debug("%s moved off %s onto %s right after our move landed: the server's",
                         key, was, now)
        return True

    async def _check(self, stream: Stream, was: str, now: Device) -> None:
        try:
            present = {d.id for d in await self.backend.devices()}
        except BackendError as exc:
            logger.debug("checking the move of %s: %s", stream.key, exc)
            present = set()
        finally:
            self.checking.discard(stream.key)
        if was in present:
            self.on_user_move(stream, now)
        else:
            logger.debug("%s left %s, which is gone: the server's rescue", stream.key, was)
        self.schedule()

    def move(self, stream: Stream, device: Device) -> None:
        """Move ``stream`` to ``device`` (pipelined), unless the server refused that already."""
        key = stream.key
        if self.failed.get(key) == device.id:
            return
        self.moving[key] = self.target[key] = device.id
        logger.debug("moving %s from %s to %s", key, stream.device or "nowhere", device.id)
        self.tasks.spawn(self._move(stream, device))

    async def _move(self, stream: Stream, device: Device) -> None:
        key = stream.key
        try:
            for attempt in (1, 2):
                await self.backend.move_stream(stream, device)
                now = await self.read(key)
                if now is None or now.device == device.id:
                    self._landed[key] = (device.id, time.monotonic())
                    if self.failed.get(key) != device.id:
                        self.failed.pop(key, None)
                    break
                if attempt == 2:
                    logger.warning("the server kept %s off %s after two moves; leaving it",
                                   key, device.name)
                    self.failed[key] = device.id
        except (BackendError, ValueError) as exc:
            # the stream or the device went meanwhile, or the server went: not an error
            logger.debug("moving %s to %s: %s", key, device.name, exc)
        finally:
            if self.moving.get(key) == device.id:
                del self.moving[key]
        self.schedule()
