"""MPRIS media players on the session bus: who they are, whether they play, pause and play.

The PulseAudio protocol cannot cork another client's stream, and pipewire-pulse implements
neither module-role-cork nor request-cork, so a real pause goes through the player's own
``org.mpris.MediaPlayer2.Player.Pause`` / ``Play`` (as GNOME's and KDE's media keys do).

Event-driven: ``NameOwnerChanged`` for players coming and going, ``PropertiesChanged`` for their
``PlaybackStatus``; nothing is polled. A player's process id comes from the bus
(``GetConnectionUnixProcessID``), which, unlike a stream's ``application.process.id``, the
player cannot forge.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Callable

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from .model import Player

logger = logging.getLogger(__name__)

PREFIX = "org.mpris.MediaPlayer2."
PATH = "/org/mpris/MediaPlayer2"
ROOT_IFACE = "org.mpris.MediaPlayer2"
PLAYER_IFACE = "org.mpris.MediaPlayer2.Player"
#: Timeout of calls to players, in seconds: a hung player must not hold up the daemon.
CALL_TIMEOUT = 2.0


def _dbus(member: str, signature: str = "", body: list | None = None) -> Message:
    return Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                   interface="org.freedesktop.DBus", member=member, signature=signature,
                   body=body or [])


class MprisWatcher:
    """Keeps :attr:`players` current and calls ``on_change(player_or_None)`` on every change.

    :param bus: a connected session-bus connection (shared with the D-Bus API)
    :param on_change: called with the changed :class:`~audiopolicyd.model.Player` (None when
        one left the bus); must not block
    """

    def __init__(self, bus: MessageBus, on_change: Callable[[Player | None], None]):
        self.bus = bus
        self.on_change = on_change
        self.players: dict[str, Player] = {}
        self._owners: dict[str, str] = {}  # unique name -> player bus name
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Subscribe, then read the players already on the bus."""
        self.bus.add_message_handler(self._on_message)
        for rule in (f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
                     f"arg0namespace='{PREFIX.rstrip('.')}'",
                     f"type='signal',interface='org.freedesktop.DBus.Properties',"
                     f"member='PropertiesChanged',path='{PATH}',arg0='{PLAYER_IFACE}'"):
            await self.bus.call(_dbus("AddMatch", "s", [rule]))
        reply = await self.bus.call(_dbus("ListNames"))
        names = [n for n in (reply.body[0] if reply.body else []) if n.startswith(PREFIX)]
        await asyncio.gather(*(self._add(n) for n in names))

    def stop(self) -> None:
        self.bus.remove_message_handler(self._on_message)
        for task in self._tasks:
            task.cancel()

    async def _call(self, msg: Message) -> Message | None:
        try:
            reply = await asyncio.wait_for(self.bus.call(msg), CALL_TIMEOUT)
        except (asyncio.TimeoutError, OSError, EOFError) as exc:
            logger.warning("MPRIS call %s to %s failed: %s", msg.member, msg.destination, exc)
            return None
        if reply is None or reply.message_type == MessageType.ERROR:
            logger.debug("MPRIS call %s to %s: %s", msg.member, msg.destination,
                         reply.body if reply else "no reply")
            return None
        return reply

    async def _add(self, bus_name: str) -> None:
        owner = await self._call(_dbus("GetNameOwner", "s", [bus_name]))
        pid = await self._call(_dbus("GetConnectionUnixProcessID", "s", [bus_name]))
        root = await self._call(Message(destination=bus_name, path=PATH,
                                        interface="org.freedesktop.DBus.Properties",
                                        member="GetAll", signature="s", body=[ROOT_IFACE]))
        status = await self._call(Message(destination=bus_name, path=PATH,
                                          interface="org.freedesktop.DBus.Properties",
                                          member="Get", signature="ss",
                                          body=[PLAYER_IFACE, "PlaybackStatus"]))
        if owner is None:
            return  # gone already
        props = root.body[0] if root else {}

        def text(name: str) -> str:
            value = props.get(name)
            return value.value if isinstance(value, Variant) and isinstance(value.value, str) \
                else ""

        player = Player(bus_name=bus_name, pid=pid.body[0] if pid else None,
                        desktop_entry=text("DesktopEntry"), identity=text("Identity"),
                        status=status.body[0].value if status else "Stopped")
        self._owners[owner.body[0]] = bus_name
        self.players[bus_name] = player
        logger.info("MPRIS player %s (pid %s, %s) is %s", bus_name, player.pid,
                    player.desktop_entry or player.identity, player.status)
        self.on_change(player)

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged" and msg.signature == "sss":
            name, _old, new = msg.body
            if not name.startswith(PREFIX):
                return
            if new:
                task = asyncio.ensure_future(self._add(name))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif self.players.pop(name, None) is not None:
                self._owners = {u: n for u, n in self._owners.items() if n != name}
                logger.info("MPRIS player %s left the bus", name)
                self.on_change(None)
        elif msg.member == "PropertiesChanged" and msg.path == PATH and msg.signature == "sa{sv}as":
            bus_name = self._owners.get(msg.sender or "")
            status = msg.body[1].get("PlaybackStatus")
            if bus_name in self.players and isinstance(status, Variant):
                player = replace(self.players[bus_name], status=status.value)
                self.players[bus_name] = player
                logger.debug("MPRIS player %s is %s", bus_name, player.status)
                self.on_change(player)

    async def pause(self, bus_name: str) -> bool:
        """Call ``Pause`` on a player. :returns: True when the player accepted the call."""
        return await self._player_call(bus_name, "Pause")

    async def play(self, bus_name: str) -> bool:
        """Call ``Play`` on a player. :returns: True when the player accepted the call."""
        return await self._player_call(bus_name, "Play")

    async def _player_call(self, bus_name: str, member: str) -> bool:
        logger.info("MPRIS %s %s", member, bus_name)
        reply = await self._call(Message(destination=bus_name, path=PATH,
                                         interface=PLAYER_IFACE, member=member))
        return reply is not None
