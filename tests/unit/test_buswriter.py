"""audiopolicyd.buswriter on a private dbus-daemon: big messages while the socket is full.

A service emits signals larger than its socket's send buffer (the sizes of the reproduction
of python-dbus-next issue #153), each twice as a reload does (``PropertiesChanged`` and a
signal), while the dbus-daemon reads nothing (it is stopped with SIGSTOP for the burst, so the
socket is surely full, whatever the machine's load). dbus-fast 5.2.0's own ``MessageBus``
drops the connection at the first EAGAIN (this test, parametrized over it, shows that it can
fail);
:class:`audiopolicyd.buswriter.MessageBus` stays connected and every signal arrives whole and
in order.

Every wait has a generous timeout and nothing is asserted about how long anything took.

(No ``from __future__ import annotations``: dbus-fast reads the service's D-Bus signatures
from its annotations at run time.)
"""

import asyncio
import os
import signal as signals
import socket

import dbus_fast.aio
import pytest
from dbus_fast import Message, MessageType
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, signal

from audiopolicyd.buswriter import MessageBus

WAIT = 20.0  # seconds: an upper bound for things that happen at once, never a speed claim
#: Sizes of the strings emitted (characters): python-dbus-next #153's reproduction, twice over.
SIZES = [0, 300_000, 700_000, 1_000_000] * 2
IFACE = "test.audiopolicyd.Probe"


class Probe(ServiceInterface):
    """A service whose property and signal carry what the test makes them carry."""

    def __init__(self):
        super().__init__(IFACE)
        self.problems: list[str] = []

    @dbus_property(access=PropertyAccess.READ)
    def Problems(self) -> "as":
        return self.problems

    @signal()
    def Reloaded(self, applied, problems) -> "bas":
        return [applied, problems]


@pytest.mark.parametrize("bus_class, survives", [
    (MessageBus, True),
    # Upstream 5.2.0: proves the scenario fails without the correction. When this case fails
    # because upstream stays connected, upstream is fixed: see audiopolicyd.buswriter.
    (dbus_fast.aio.MessageBus, False),
], ids=["audiopolicyd.buswriter", "dbus_fast.aio-5.2.0"])
async def test_big_signals_while_the_socket_is_full_keep_the_connection(
        private_bus, bus_class, survives):
    bus_address, daemon = private_bus.address, private_bus.proc.pid
    service = await bus_class(bus_address=bus_address).connect()
    peer = await dbus_fast.aio.MessageBus(bus_address=bus_address).connect()
    ended = asyncio.ensure_future(service.wait_for_disconnect())
    try:
        # A small send buffer makes every big message a partial write, as on a busy machine
        # where the dbus-daemon reads more slowly than the service writes.
        service._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        received: list[int] = []
        everything = asyncio.Event()

        def on_message(msg: Message):
            if msg.message_type == MessageType.SIGNAL and msg.member == "Reloaded":
                received.append(len(msg.body[1][0]) if msg.body[1] else 0)
                if len(received) == len(SIZES):
                    everything.set()
        peer.add_message_handler(on_message)
        reply = await peer.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s",
            body=[f"type='signal',sender='{service.unique_name}'"]))
        assert reply.message_type == MessageType.METHOD_RETURN

        probe = Probe()
        service.export("/probe", probe)
        # The whole burst is emitted synchronously while the dbus-daemon is stopped: nothing
        # drains the socket, so a write meets EAGAIN on any machine, busy or idle.
        emit_error = None
        os.kill(daemon, signals.SIGSTOP)
        try:
            for size in SIZES:
                probe.problems = ["x" * size] if size else []
                probe.emit_properties_changed({"Problems": probe.problems})
                probe.Reloaded(not size, probe.problems)
        except OSError as exc:  # upstream, once it has closed the socket: EBADF
            emit_error = exc
        finally:
            os.kill(daemon, signals.SIGCONT)

        arrived = asyncio.ensure_future(everything.wait())
        await asyncio.wait({ended, arrived}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        arrived.cancel()

        assert service.connected is survives
        if survives:
            assert emit_error is None
            assert received == SIZES, "every signal arrives, whole and in order"
            owner = await service.call(Message(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus", member="GetNameOwner", signature="s",
                body=[service.unique_name]))
            assert owner.body == [service.unique_name], "the connection still answers"
    finally:
        for bus in (service, peer):
            if bus.connected:
                bus.disconnect()
        await asyncio.gather(ended, peer.wait_for_disconnect(), return_exceptions=True)
