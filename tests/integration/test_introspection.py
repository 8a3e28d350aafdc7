"""The live D-Bus export equals the frozen API (docs/dbus/io.github.audiopolicyd.AudioPolicy1.xml)
and sessions are enumerable through org.freedesktop.DBus.ObjectManager."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.introspection import Node

from tests.support.daemon import DaemonProcess
from tests.support.servers import AudioServer
from tests.unit.test_dbus_api import FROZEN, shape  # one definition of "shape"

pytestmark = pytest.mark.integration

NAME = "io.github.audiopolicyd.AudioPolicy1"
ROOT = "/io/github/audiopolicyd/AudioPolicy1"


async def _call(bus, path, interface, member, signature="", body=()):
    reply = await bus.call(Message(destination=NAME, path=path, interface=interface,
                                   member=member, signature=signature, body=list(body)))
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    return reply.body


async def _live(address: str) -> tuple[dict, dict, dict]:
    bus = await MessageBus(bus_address=address).connect()
    try:
        (root_xml,) = await _call(bus, ROOT, "org.freedesktop.DBus.Introspectable", "Introspect")
        (path,) = await _call(bus, ROOT, NAME + ".Manager", "CreateSession", "a{sv}",
                              [{"Name": Variant("s", "introspection test")}])
        (session_xml,) = await _call(bus, path, "org.freedesktop.DBus.Introspectable",
                                     "Introspect")
        (managed,) = await _call(bus, ROOT, "org.freedesktop.DBus.ObjectManager",
                                 "GetManagedObjects")
        return shape(Node.parse(root_xml)), shape(Node.parse(session_xml)), {
            "path": path, "managed": {p: sorted(ifaces) for p, ifaces in managed.items()}}
    finally:
        bus.disconnect()


def test_live_export_equals_frozen_api_and_sessions_are_managed_objects(
        server: AudioServer, daemon: DaemonProcess) -> None:
    frozen = shape(Node.parse(FROZEN.read_text()))
    root, session, objects = asyncio.run(_live(server.env["DBUS_SESSION_BUS_ADDRESS"]))
    assert root[NAME + ".Manager"] == frozen[NAME + ".Manager"]
    assert session[NAME + ".Session"] == frozen[NAME + ".Session"]
    assert "org.freedesktop.DBus.ObjectManager" in root
    assert NAME + ".Session" in objects["managed"][objects["path"]]
