"""systemd-logind's suspend and resume signal, stood in on a private bus (no systemd runs in
the tests): ``PrepareForSleep(b)`` from a connection that owns ``org.freedesktop.login1``, as
logind sends it (daemon/sleep.py follows it; the test daemon's ``DBUS_SYSTEM_BUS_ADDRESS`` is
its private bus: :class:`~.daemon.DaemonProcess`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from dbus_fast import Message
from dbus_fast.aio import MessageBus

from audiopolicyd.sleep import LOGIN1, LOGIN1_MANAGER, LOGIN1_PATH

from .bus import address_of


def prepare_for_sleep(env: Mapping[str, str], start: bool) -> None:
    """Send ``PrepareForSleep(start)`` on the bus of *env* as logind: True before a suspend,
    False after the resume."""
    async def send() -> None:
        bus = await MessageBus(bus_address=address_of(env)).connect()
        try:
            await bus.request_name(LOGIN1)
            await bus.send(Message.new_signal(LOGIN1_PATH, LOGIN1_MANAGER, "PrepareForSleep",
                                              "b", [start]))
            await bus.call(Message(destination="org.freedesktop.DBus",  # flushed: answered
                                   path="/org/freedesktop/DBus",
                                   interface="org.freedesktop.DBus", member="GetId"))
        finally:
            bus.disconnect()

    asyncio.run(send())
