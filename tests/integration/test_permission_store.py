"""Microphone decisions in a REAL ``xdg-permission-store`` (xdg-desktop-portal 1.16+) on a private
bus: what audiopolicyd writes is what GNOME Settings / Flatseal see in table ``devices`` / id
``microphone``, and what they write reaches the daemon live.

Every bus here lists only the services the test gives it (``PrivateBus(service_dirs=...)``): with
the system's session configuration the store would be D-Bus-activated with the user's real data
directory.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from tests.support.bus import PrivateBus, busctl, busctl_json, name_has_owner, name_owner_pid
from tests.support.portal import PERMISSION_STORE, PermissionStoreProcess
from audiopolicyd.microphone.stores import (PORTAL_ID, PORTAL_IFACE, PORTAL_NAME, PORTAL_PATH,
                                      PORTAL_TABLE, Decision, PortalPermissionStore,
                                      SqlitePermissionStore, open_store)

pytestmark = pytest.mark.integration

STORE = (PORTAL_NAME, PORTAL_PATH, PORTAL_IFACE)


@pytest.fixture(autouse=True)
def _permission_store_binary() -> None:
    """A missing store fails these tests; it never skips them."""
    if not os.access(PERMISSION_STORE, os.X_OK):
        pytest.fail(f"{PERMISSION_STORE} is missing; install: apt-get install "
                    f"xdg-desktop-portal", pytrace=False)


@pytest.fixture
def bare_bus() -> Iterator[PrivateBus]:
    """A private bus on which nothing is D-Bus-activatable."""
    with PrivateBus(service_dirs=[]) as bus:
        yield bus


@pytest.fixture
def store_process(bare_bus: PrivateBus, tmp_path: Path,
                  ) -> Iterator[PermissionStoreProcess]:
    with PermissionStoreProcess(bare_bus, tmp_path / "data") as proc:
        yield proc


async def connect(bus: PrivateBus) -> MessageBus:
    return await MessageBus(bus_address=bus.address).connect()


@pytest.fixture
async def conn(bare_bus: PrivateBus) -> AsyncIterator[MessageBus]:
    connection = await connect(bare_bus)
    yield connection
    connection.disconnect()


@pytest.fixture
async def portal(store_process: PermissionStoreProcess, conn: MessageBus,
                 ) -> AsyncIterator[PortalPermissionStore]:
    store = PortalPermissionStore(conn)
    await store.start()
    yield store
    await store.close()


def call(bus: PrivateBus, member: str, signature: str, *args: str):
    """A call to the store by another client (busctl: one short-lived connection)."""
    done = busctl(bus.env, "--json=short", "call", *STORE, member, signature, *args)
    return busctl_json(done) if done.stdout else done


def lookup(bus: PrivateBus) -> dict[str, list[str]]:
    """The ``devices`` / ``microphone`` entry as another client reads it."""
    return call(bus, "Lookup", "ss", PORTAL_TABLE, PORTAL_ID)[0]


async def until(probe, what: str, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := probe()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def recorder(store) -> list[tuple[str, Decision]]:
    changes: list[tuple[str, Decision]] = []
    store.on_change(lambda app, decision: changes.append((app, decision)))
    return changes


async def test_set_get_reset_through_the_real_store(portal, bare_bus):
    assert portal.has_delete_permission  # interface version 2
    assert portal.where == "xdg-permission-store (table devices, id microphone)"
    assert await portal.all() == {}  # Lookup answers NotFound: nothing stored yet
    assert await portal.get("org.example.Rec") is Decision.UNDETERMINED

    await portal.set("org.example.Rec", Decision.GRANTED)
    await portal.set("exe:/usr/bin/arecord", Decision.DENIED)
    assert await portal.get("org.example.Rec") is Decision.GRANTED
    assert await portal.get("exe:/usr/bin/arecord") is Decision.DENIED
    # what GNOME Settings and Flatseal read
    assert lookup(bare_bus) == {"org.example.Rec": ["yes"], "exe:/usr/bin/arecord": ["no"]}

    await portal.set("org.example.Rec", Decision.UNDETERMINED)
    assert lookup(bare_bus)["org.example.Rec"] == ["ask"]
    await portal.reset("org.example.Rec")
    assert lookup(bare_bus) == {"exe:/usr/bin/arecord": ["no"]}  # the other app is untouched
    assert await portal.get("org.example.Rec") is Decision.UNDETERMINED
    await portal.reset("never.seen")  # nothing to delete: no error
    assert await portal.all() == {"exe:/usr/bin/arecord": Decision.DENIED}


async def test_reset_without_delete_permission_writes_ask(portal, bare_bus):
    portal.has_delete_permission = False  # as a version-1 store
    await portal.set("org.example.Rec", Decision.DENIED)
    await portal.reset("org.example.Rec")
    assert lookup(bare_bus) == {"org.example.Rec": ["ask"]}
    assert await portal.get("org.example.Rec") is Decision.UNDETERMINED


async def test_another_clients_set_permission_reaches_on_change_live(portal, bare_bus):
    changes = recorder(portal)
    # as GNOME Settings would: SetPermission from its own connection
    call(bare_bus, "SetPermission", "sbssas", PORTAL_TABLE, "true", PORTAL_ID, "org.example.Rec",
         "1", "yes")
    await until(lambda: changes, "on_change after a grant by another client")
    assert changes == [("org.example.Rec", Decision.GRANTED)]

    # a second dbus-fast connection revokes it
    other = await connect(bare_bus)
    reply = await other.call(Message(destination=PORTAL_NAME, path=PORTAL_PATH,
                                     interface=PORTAL_IFACE, member="SetPermission",
                                     signature="sbssas",
                                     body=[PORTAL_TABLE, True, PORTAL_ID, "org.example.Rec",
                                           ["no"]]))
    assert reply.error_name is None, reply.body
    await until(lambda: len(changes) == 2, "on_change after a revocation")
    assert changes[1] == ("org.example.Rec", Decision.DENIED)
    assert portal.decisions == {"org.example.Rec": Decision.DENIED}

    # another app changing leaves this one's decision alone: one callback, for that app
    call(bare_bus, "SetPermission", "sbssas", PORTAL_TABLE, "true", PORTAL_ID, "b.app", "1", "yes")
    await until(lambda: len(changes) == 3, "on_change for b.app")
    assert changes[2] == ("b.app", Decision.GRANTED)

    # DeletePermission by another client, then the whole entry deleted (Changed deleted=true)
    call(bare_bus, "DeletePermission", "sss", PORTAL_TABLE, PORTAL_ID, "b.app")
    await until(lambda: len(changes) == 4, "on_change after DeletePermission")
    call(bare_bus, "Delete", "ss", PORTAL_TABLE, PORTAL_ID)
    await until(lambda: len(changes) == 5, "on_change after Delete")
    assert changes[3:] == [("b.app", Decision.UNDETERMINED),
                           ("org.example.Rec", Decision.UNDETERMINED)]
    assert await portal.all() == {}
    other.disconnect()


async def test_our_own_write_is_reported_once(portal):
    changes = recorder(portal)
    await portal.set("org.example.Rec", Decision.GRANTED)
    await asyncio.sleep(0.3)  # let the store's Changed signal arrive too
    await portal.set("org.example.Rec", Decision.GRANTED)  # no change
    await asyncio.sleep(0.3)
    assert changes == [("org.example.Rec", Decision.GRANTED)]


async def test_forged_changed_signals_are_ignored(portal, conn, bare_bus, caplog):
    changes = recorder(portal)
    # The store's match rule names the sender, so the bus drops forged signals; a broader rule
    # that another part of the daemon may add delivers them anyway, to the same handler.
    reply = await conn.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="AddMatch", signature="s",
        body=[f"type='signal',interface='{PORTAL_IFACE}'"]))
    assert reply.error_name is None
    forger = await connect(bare_bus)
    await forger.send(Message.new_signal(
        PORTAL_PATH, PORTAL_IFACE, "Changed", "ssbva{sas}",
        [PORTAL_TABLE, PORTAL_ID, False, Variant("y", 0), {"evil.app": ["yes"]}]))
    await forger.send(Message.new_signal(
        PORTAL_PATH, PORTAL_IFACE, "Changed", "ssbvas", [PORTAL_TABLE, PORTAL_ID, False,
                                                         Variant("y", 0), ["yes"]]))
    # a real change after the forged ones still arrives, and the forged grant never did
    call(bare_bus, "SetPermission", "sbssas", PORTAL_TABLE, "true", PORTAL_ID, "real.app", "1",
         "no")
    await until(lambda: changes, "the real change")
    assert changes == [("real.app", Decision.DENIED)]
    assert await portal.get("evil.app") is Decision.UNDETERMINED
    assert "ignoring a permission-store Changed signal" in caplog.text
    forger.disconnect()


async def test_garbage_in_the_store_reads_undetermined(portal, bare_bus, caplog):
    await portal.set("good.app", Decision.GRANTED)
    changes = recorder(portal)
    call(bare_bus, "SetPermission", "sbssas", PORTAL_TABLE, "true", PORTAL_ID, "a.app", "1",
         "maybe")
    await until(lambda: "a.app" in lookup(bare_bus), "the garbage to be stored")
    assert await portal.get("a.app") is Decision.UNDETERMINED
    # Set (the whole entry) can store what SetPermission cannot: two values. (An empty list
    # is dropped by the store itself, like SetPermission with [].)
    call(bare_bus, "Set", "sbsa{sas}v", PORTAL_TABLE, "true", PORTAL_ID, "4",
         "a.app", "1", "maybe", "b.app", "0", "c.app", "2", "yes", "no", "good.app", "1", "YES",
         "y", "0")
    await until(lambda: ("good.app", Decision.UNDETERMINED) in changes,
                "good.app's garbage to arrive")
    assert "b.app" not in lookup(bare_bus)
    assert await portal.get("b.app") is Decision.UNDETERMINED
    assert await portal.all() == {"a.app": Decision.UNDETERMINED, "c.app": Decision.UNDETERMINED,
                                  "good.app": Decision.UNDETERMINED}
    assert changes == [("good.app", Decision.UNDETERMINED)]
    assert "garbage permissions ['maybe'] for a.app" in caplog.text
    # and it is overwritten like any other value
    await portal.set("a.app", Decision.GRANTED)
    assert lookup(bare_bus)["a.app"] == ["yes"]


async def test_a_restarted_store_is_read_again(portal, store_process, bare_bus):
    changes = recorder(portal)
    await portal.set("org.example.Rec", Decision.GRANTED)
    store_process.stop()
    store_process.start()  # same database file
    # the restarted store still has the grant; a change made while it restarts is found
    call(bare_bus, "SetPermission", "sbssas", PORTAL_TABLE, "true", PORTAL_ID, "org.example.Rec",
         "1", "no")
    await until(lambda: ("org.example.Rec", Decision.DENIED) in changes, "the revocation")
    assert await portal.get("org.example.Rec") is Decision.DENIED


async def test_open_store_picks_the_running_portal(store_process, conn, tmp_path):
    store = await open_store(conn, tmp_path / "state")
    try:
        assert isinstance(store, PortalPermissionStore)
        await store.set("org.example.Rec", Decision.GRANTED)
        assert not (tmp_path / "state" / "permissions.sqlite3").exists()
    finally:
        await store.close()


async def test_open_store_falls_back_to_sqlite_without_the_portal(conn, tmp_path):
    store = await open_store(conn, tmp_path / "state")
    try:
        assert isinstance(store, SqlitePermissionStore)
        assert store.where == str(tmp_path / "state" / "permissions.sqlite3")
        await store.set("org.example.Rec", Decision.DENIED)
        assert await store.get("org.example.Rec") is Decision.DENIED
    finally:
        await store.close()


@pytest.fixture
def activating_bus(tmp_path: Path) -> Iterator[PrivateBus]:
    """A private bus on which the permission store is D-Bus-activatable (with a private
    ``XDG_DATA_HOME``) but not running."""
    services = tmp_path / "services"
    services.mkdir()
    (services / f"{PORTAL_NAME}.service").write_text(
        f"[D-BUS Service]\nName={PORTAL_NAME}\n"
        f"Exec=/usr/bin/env XDG_DATA_HOME={tmp_path / 'data'} {PERMISSION_STORE}\n")
    with PrivateBus(service_dirs=[services]) as bus:
        pid = None
        try:
            yield bus
            if name_has_owner(bus.env, PORTAL_NAME):
                pid = name_owner_pid(bus.env, PORTAL_NAME)
        finally:
            if pid is not None:  # the store the bus started for the test: stop it by pid
                os.kill(pid, 15)


async def test_open_store_activates_an_activatable_portal(activating_bus, tmp_path):
    connection = await connect(activating_bus)
    assert not name_has_owner(activating_bus.env, PORTAL_NAME)
    store = await open_store(connection, tmp_path / "state")
    try:
        assert isinstance(store, PortalPermissionStore)
        assert name_has_owner(activating_bus.env, PORTAL_NAME)
        await store.set("org.example.Rec", Decision.GRANTED)
        assert lookup(activating_bus) == {"org.example.Rec": ["yes"]}
        assert (tmp_path / "data" / "flatpak" / "db" / "devices").exists()
    finally:
        await store.close()
        connection.disconnect()
