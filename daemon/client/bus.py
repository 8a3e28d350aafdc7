"""The client's connection to the daemon: connecting, calling, errors, plain values.

The one D-Bus client code of the project: :mod:`audiopolicyd.client`'s sessions,
``audiopolicyctl`` (:mod:`audiopolicyd.ctl`) and the prompt agents (:mod:`audiopolicyd.agents`)
call the daemon through it.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from dbus_fast import BusType, Message, MessageType, Variant

from ..buswriter import MessageBus
from ..errors import AudioPolicyError, DaemonNotRunning, from_dbus
from ..names import (
    BUS_DAEMON, BUS_NAME, MANAGER_IFACE, NO_OWNER_ERRORS, OBJECT_MANAGER_IFACE, OBJECT_PATH,
    SESSION_IFACE, SESSION_PATH_PREFIX,
)

logger = logging.getLogger(__name__)


def error_from_reply(reply: Message) -> AudioPolicyError:
    """The exception for an error reply (:func:`audiopolicyd.errors.from_dbus`): the leaf
    named as the D-Bus error when the daemon defines it, :class:`DaemonNotRunning` when nobody
    owns the name, else :class:`AudioPolicyError` with ``name`` set to the D-Bus name."""
    return from_dbus(reply.error_name or "", str(reply.body[0]) if reply.body else "")


def plain(value: Any) -> Any:
    """D-Bus values (Variants, nested; structs as lists) as plain Python values."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def bus_kind(system: bool) -> str:
    """``system`` or ``session``, for messages."""
    return "system" if system else "session"


async def connect(bus_address: str | None = None, system: bool = False,
                  negotiate_unix_fd: bool = False) -> MessageBus:
    """A new connection to the session bus (or ``bus_address``, or the system bus).

    :param negotiate_unix_fd: able to pass file descriptors (``RecordToFile``)
    :raises DaemonNotRunning: when no bus answers
    """
    try:
        return await MessageBus(bus_address=bus_address,
                                bus_type=BusType.SYSTEM if system else BusType.SESSION,
                                negotiate_unix_fd=negotiate_unix_fd).connect()
    except Exception as exc:
        raise DaemonNotRunning(f"cannot connect to the {bus_kind(system)} bus: {exc}") from None


async def call(bus: MessageBus, path: str, interface: str, member: str, signature: str = "",
               body: list | None = None) -> Message:
    """Call a method of the daemon and return its reply.

    :raises AudioPolicyError: (a leaf of :mod:`audiopolicyd.errors`) when it answers an error
    :raises DaemonNotRunning: when the bus connection is gone
    """
    try:
        reply = await bus.call(Message(destination=BUS_NAME, path=path, interface=interface,
                                       member=member, signature=signature, body=body or []))
    except (EOFError, ConnectionError, OSError) as exc:
        raise DaemonNotRunning(f"the bus connection is gone: {exc}") from None
    if reply.message_type == MessageType.ERROR:
        raise error_from_reply(reply)
    return reply


async def add_match(bus: MessageBus, rule: str) -> None:
    """Ask the bus for the signals *rule* matches."""
    await bus.call(Message(**BUS_DAEMON, member="AddMatch", signature="s", body=[rule]))


class DaemonClient:
    """A connection to the daemon's Manager for tools (``audiopolicyctl``): calls answered as
    plain values, the Manager's signals, the sessions. Use as ``async with``.

    :param bus_address: D-Bus address; default: the session bus (the system bus with
        ``system``)
    :raises DaemonNotRunning: (entering) no bus; (calls) nobody owns the daemon's name, with
        the bus named in the message
    """

    def __init__(self, bus_address: str | None = None, system: bool = False):
        self.bus_address = bus_address
        self.system = system
        self.bus: MessageBus | None = None

    async def __aenter__(self) -> "DaemonClient":
        self.bus = await connect(self.bus_address, self.system)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.bus is not None:
            self.bus.disconnect()

    async def call(self, member: str, signature: str = "", body: list | None = None,
                   interface: str = MANAGER_IFACE) -> list:
        """Call a Manager method (or another *interface* at the Manager's path).

        :returns: the reply's body as plain values
        """
        try:
            reply = await call(self.bus, OBJECT_PATH, interface, member, signature, body)
        except DaemonNotRunning as exc:
            if exc.dbus_name not in NO_OWNER_ERRORS:  # the bus connection is gone: as it says
                raise
            raise DaemonNotRunning(f"audiopolicyd is not running ({BUS_NAME} has no owner on "
                                   f"the {bus_kind(self.system)} bus)", exc.dbus_name) from None
        return plain(reply.body)

    async def sessions(self) -> list[dict]:
        """Every explicit session, from ``ObjectManager.GetManagedObjects`` on the Manager's
        path: ``{"Id", "Path", <every Session property>}``, in the daemon's order."""
        (objects,) = await self.call("GetManagedObjects", interface=OBJECT_MANAGER_IFACE)
        return [{"Id": path[len(SESSION_PATH_PREFIX):], "Path": path,
                 **interfaces[SESSION_IFACE]}
                for path, interfaces in objects.items()
                if SESSION_IFACE in interfaces and path.startswith(SESSION_PATH_PREFIX)]

    async def routes(self) -> dict[str, list[dict]]:
        """``GetRoutes``: ``{"Devices", "Categories", "Sessions", "Pins"}``, each a list of
        dictionaries (docs/dbus-api.md, "Routing")."""
        (table,) = await self.call("GetRoutes")
        return table

    async def set_category_route(self, category: str, port_uid: str) -> None:
        """``SetCategoryRoute``: put ``category``'s streams on the port ``port_uid`` when
        present; '' forgets the preference.

        :raises UnknownCategory: no policy defines ``category``
        :raises NotAllowed: the caller is sandboxed or another user
        """
        await self.call("SetCategoryRoute", "ss", [category, port_uid])

    async def reset_routes(self, app: str) -> int:
        """``ResetRoutes``: forget where the user moved ``app``'s streams.

        :returns: how many remembered routes were forgotten
        :raises InvalidArgument: an empty ``app``
        """
        (forgotten,) = await self.call("ResetRoutes", "s", [app])
        return forgotten

    async def follow(self, on_signal: Callable[[Message], None]) -> None:
        """Call ``on_signal(msg)`` for the Manager's signals and for ``NameOwnerChanged`` of
        the daemon's name (the daemon left or came)."""
        self.bus.add_message_handler(on_signal)
        for rule in (f"type='signal',sender='{BUS_NAME}',interface='{MANAGER_IFACE}'",
                     f"type='signal',member='NameOwnerChanged',arg0='{BUS_NAME}'"):
            await add_match(self.bus, rule)
