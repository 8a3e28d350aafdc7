"""Suspend and resume, as systemd-logind tells them: the route changes that follow a resume
are ``wakeFromSleep`` (Apple's ``AVAudioSession.RouteChangeReason.wakeFromSleep``, 6).

logind's ``org.freedesktop.login1.Manager`` (object ``/org/freedesktop/login1``, on the system
bus) sends ``PrepareForSleep(b start)``: true just before the machine suspends or hibernates,
false once it has resumed. The daemon listens on its own connection to the system bus
(``$DBUS_SYSTEM_BUS_ADDRESS``, else ``/run/dbus/system_bus_socket``; a system-mode daemon's
API connection is another one). Only the bus's owner of ``org.freedesktop.login1`` can send
the signal the match rule lets through (the system bus's policy lets no other process own
that name).

Without a system bus (a container, a minimal kiosk image) the daemon runs on and says once
that no route change will be ``wakeFromSleep``; devices that came or went during a suspend are
then ``newDeviceAvailable`` and ``oldDeviceUnavailable``, as they would be awake.
"""

from __future__ import annotations

import logging
from typing import Callable

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import AuthError, DBusError, InvalidAddressError

logger = logging.getLogger(__name__)

LOGIN1 = "org.freedesktop.login1"
LOGIN1_PATH = "/org/freedesktop/login1"
LOGIN1_MANAGER = "org.freedesktop.login1.Manager"
MATCH = (f"type='signal',sender='{LOGIN1}',path='{LOGIN1_PATH}',interface='{LOGIN1_MANAGER}',"
         "member='PrepareForSleep'")


class SleepWatcher:
    """Calls ``on_sleep(start)`` for each of logind's ``PrepareForSleep(start)``: True before a
    suspend, False after the resume.

    :param bus: a connection to the system bus (:meth:`connect` makes one)
    :param on_sleep: what to call; an exception it raises is logged, never ends the watcher
    """

    def __init__(self, bus: MessageBus, on_sleep: Callable[[bool], None]):
        self.bus = bus
        self.on_sleep = on_sleep
        bus.add_message_handler(self._message)

    @classmethod
    async def connect(cls, on_sleep: Callable[[bool], None],
                      address: str | None = None) -> SleepWatcher | None:
        """A watcher on a new connection to the system bus (or *address*); None, logged,
        when there is no system bus or it refuses the match rule."""
        try:
            bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        except (OSError, AuthError, InvalidAddressError, DBusError) as exc:
            logger.info("no system bus (%s): a resume from suspend is not seen, and no route "
                        "change is reported as wakeFromSleep", exc)
            return None
        try:
            reply = await bus.call(Message(destination="org.freedesktop.DBus",
                                           path="/org/freedesktop/DBus",
                                           interface="org.freedesktop.DBus", member="AddMatch",
                                           signature="s", body=[MATCH]))
            refused = reply is None or reply.message_type is MessageType.ERROR
            why = f"{reply.error_name}: {reply.body}" if refused and reply is not None else ""
        except (OSError, DBusError) as exc:
            refused, why = True, str(exc)
        if refused:
            logger.warning("the system bus refused to pass logind's PrepareForSleep (%s): no "
                           "route change is reported as wakeFromSleep", why)
            bus.disconnect()
            return None
        logger.debug("following logind's PrepareForSleep on the system bus")
        return cls(bus, on_sleep)

    async def run(self) -> None:
        """Return when the system bus connection is gone (supervised: the daemon restarts)."""
        await self.bus.wait_for_disconnect()
        logger.error("lost the system bus connection (logind's PrepareForSleep)")

    def close(self) -> None:
        self.bus.disconnect()

    def _message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL or msg.member != "PrepareForSleep" \
                or msg.interface != LOGIN1_MANAGER or msg.path != LOGIN1_PATH \
                or msg.signature != "b":
            return
        start = bool(msg.body[0])
        logger.info("logind: %s", "the machine is going to sleep" if start
                    else "the machine woke from sleep")
        try:
            self.on_sleep(start)
        except Exception:  # a listener's bug must not stop the watcher
            logger.exception("a sleep listener failed")
