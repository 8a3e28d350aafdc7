"""Where microphone decisions live: the desktop's permission store, or our own SQLite file.

Decisions are named as Apple names them on the app side (``AVAudioApplication.recordPermission``):
``granted``, ``denied``, ``undetermined``. Two stores keep them, behind one contract
(:class:`PermissionStore`):

* :class:`PortalPermissionStore`: xdg-desktop-portal's permission store
  (``org.freedesktop.impl.portal.PermissionStore``, served by ``xdg-permission-store``) on the
  session bus, table ``devices``, id ``microphone``: the entry GNOME Settings and Flatseal show
  and edit. Values ``yes`` / ``no`` / ``ask`` (as xdg-desktop-portal's device portal writes
  them). Written only with ``SetPermission`` (and ``DeletePermission`` for a reset), never with
  ``Set`` or ``Delete``, which would replace or drop every other app's entry. Live changes made
  by anyone come through its ``Changed`` signal.
* :class:`SqlitePermissionStore`: a SQLite file in the state directory, for desktops without the
  portal (WAL, like :mod:`~audiopolicyd.journal`).

:func:`open_store` picks one. Garbage in either store (unknown values, empty or multi-value
lists, wrong types) reads as ``undetermined`` with a warning, never as an error: the
enforcement built on this fails closed.

Mapping between the two vocabularies::

    store value        Decision
    ["yes"]            granted
    ["no"]             denied
    ["ask"]            undetermined
    missing / other    undetermined

Errors::

    PermissionStoreError        the store could not be read or written (D-Bus error, timeout,
                                SQLite error); the message names the store and the cause
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.introspection import Node

logger = logging.getLogger(__name__)

#: Well-known name, object path and interface of xdg-desktop-portal's permission store.
PORTAL_NAME = "org.freedesktop.impl.portal.PermissionStore"
PORTAL_PATH = "/org/freedesktop/impl/portal/PermissionStore"
PORTAL_IFACE = "org.freedesktop.impl.portal.PermissionStore"
#: Table and resource id of the microphone entry (as xdg-desktop-portal's device portal).
PORTAL_TABLE = "devices"
PORTAL_ID = "microphone"
#: The error ``Lookup`` returns while nothing is stored for the id (or the table is missing).
PORTAL_NOT_FOUND = "org.freedesktop.portal.Error.NotFound"
#: Timeout of a call to the permission store, in seconds (covers D-Bus activation).
CALL_TIMEOUT = 10.0
#: File name of the SQLite store in the state directory.
SQLITE_FILE = "permissions.sqlite3"


class Decision(str, enum.Enum):
    """A recording decision, as ``AVAudioApplication.recordPermission`` names it."""

    GRANTED = "granted"
    DENIED = "denied"
    UNDETERMINED = "undetermined"

    def __str__(self) -> str:
        return self.value


#: Permission-store value -> decision.
_FROM_PORTAL = {"yes": Decision.GRANTED, "no": Decision.DENIED, "ask": Decision.UNDETERMINED}
#: Decision -> permission-store value.
_TO_PORTAL = {d: v for v, d in _FROM_PORTAL.items()}


def decision_from_store(value: Any) -> Decision | None:
    """The decision a permission-store value means.

    :param value: one app's permissions as stored: normally a one-element list of ``yes``,
        ``no`` or ``ask``; anything may come out of the store
    :returns: the decision, or None when *value* is garbage (other strings, an empty or
        multi-element list, non-strings); the caller reads None as ``undetermined``
    """
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], str):
        return _FROM_PORTAL.get(value[0])
    return None


def store_value(decision: Decision) -> list[str]:
    """The permission-store value of *decision*: ``["yes"]``, ``["no"]`` or ``["ask"]``."""
    return [_TO_PORTAL[Decision(decision)]]


class PermissionStoreError(RuntimeError):
    """The permission store could not be read or written."""


#: ``callback(app_id, decision)``: an app's decision changed (by us or anyone else).
ChangeCallback = Callable[[str, Decision], None]


def _check_app_id(app_id: str) -> None:
    if not isinstance(app_id, str) or not app_id:
        raise ValueError(f"app id must be a non-empty string, not {app_id!r}")


class PermissionStore(abc.ABC):
    """The contract of a microphone-decision store. Methods run on the event loop.

    An app with no entry is ``undetermined``. :meth:`on_change` callbacks fire once per app
    whose decision changed, whoever changed it (this process or, for stores that can tell,
    another one); they must not block, and one that raises is logged and skipped.

    :ivar where: a human description of where decisions live, for ``audiopolicyctl
        permissions`` (e.g. ``xdg-permission-store (table devices, id microphone)`` or the
        SQLite path)
    """

    where: str

    def __init__(self) -> None:
        self._callbacks: list[ChangeCallback] = []

    async def start(self) -> None:  # noqa: B027 (optional: a store may have nothing to start)
        """Connect, subscribe to live changes and read the current decisions.

        :raises PermissionStoreError: when the store cannot be reached
        """

    async def close(self) -> None:  # noqa: B027 (optional: nothing to release by default)
        """Stop following changes and release the store."""

    @abc.abstractmethod
    async def get(self, app_id: str) -> Decision:
        """The decision for *app_id* (``undetermined`` when none or garbage is stored).

        :raises PermissionStoreError: when the store cannot be read; callers fail closed
        :raises ValueError: when *app_id* is empty
        """

    @abc.abstractmethod
    async def set(self, app_id: str, decision: Decision) -> None:
        """Store *decision* for *app_id*. ``undetermined`` is stored explicitly (``ask``).

        :raises PermissionStoreError: when the store cannot be written
        :raises ValueError: when *app_id* is empty or *decision* is not a :class:`Decision`
        """

    @abc.abstractmethod
    async def reset(self, app_id: str) -> None:
        """Forget *app_id*'s entry: it reads as ``undetermined`` and is asked again.

        :raises PermissionStoreError: when the store cannot be written
        :raises ValueError: when *app_id* is empty
        """

    @abc.abstractmethod
    async def all(self) -> dict[str, Decision]:
        """Every app with an entry, and its decision (garbage entries read ``undetermined``).

        :raises PermissionStoreError: when the store cannot be read
        """

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(app_id, decision)`` whenever an app's decision changes.

        :returns: a function that removes the callback
        """
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
        return remove

    def _notify(self, app_id: str, decision: Decision) -> None:
        logger.info("microphone permission of %s is now %s (%s)", app_id, decision, self.where)
        for callback in list(self._callbacks):
            try:
                callback(app_id, decision)
            except Exception:
                logger.exception("permission change callback %r failed", callback)


# -- SQLite ---------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS microphone (
    app_id TEXT PRIMARY KEY, decision TEXT, updated REAL);
"""


class SqlitePermissionStore(PermissionStore):
    """Decisions in a SQLite file, table ``microphone(app_id, decision, updated)``.

    ``decision`` holds :class:`Decision` values (``granted`` / ``denied`` / ``undetermined``);
    ``updated`` is the UNIX time of the last write, in seconds. Every read goes to the file,
    so a second instance (``audiopolicyctl`` reading the daemon's file) sees committed writes;
    :meth:`on_change` only reports writes made through this instance.

    :param path: the database file (its directory is created), or ``:memory:`` for tests
    :raises PermissionStoreError: when the file cannot be opened or is not a database
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = str(path)
        self.where = self.path
        self._warned: set[tuple[str, Any]] = set()
        try:
            if self.path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise PermissionStoreError(f"cannot open the permission store {self.path}: {exc}"
                                       ) from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            # connect() opens any file; a file that is not a database fails only here, and
            # the connection must not outlive the error (Python 3.13 warns when one does)
            self._db.close()
            raise PermissionStoreError(f"cannot open the permission store {self.path}: {exc}"
                                       ) from exc

    async def close(self) -> None:
        self._db.close()

    def _decision(self, app_id: str, raw: Any) -> Decision:
        try:
            return Decision(raw)
        except ValueError:
            if (app_id, raw) not in self._warned:
                self._warned.add((app_id, raw))
                logger.warning("%s: garbage decision %r for %s, reading it as undetermined",
                               self.path, raw, app_id)
            return Decision.UNDETERMINED

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise PermissionStoreError(f"cannot read the permission store {self.path}: {exc}"
                                       ) from exc

    def _write(self, sql: str, args: tuple) -> None:
        try:
            self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise PermissionStoreError(f"cannot write the permission store {self.path}: {exc}"
                                       ) from exc

    async def get(self, app_id: str) -> Decision:
        _check_app_id(app_id)
        rows = self._query("SELECT decision FROM microphone WHERE app_id = ?", (app_id,))
        return self._decision(app_id, rows[0][0]) if rows else Decision.UNDETERMINED

    async def all(self) -> dict[str, Decision]:
        rows = self._query("SELECT app_id, decision FROM microphone ORDER BY app_id")
        return {app: self._decision(app, raw) for app, raw in rows if isinstance(app, str)}

    async def set(self, app_id: str, decision: Decision) -> None:
        _check_app_id(app_id)
        decision = Decision(decision)
        before = await self.get(app_id)
        self._write("INSERT OR REPLACE INTO microphone VALUES (?,?,?)",
                    (app_id, decision.value, time.time()))
        if decision != before:
            self._notify(app_id, decision)

    async def reset(self, app_id: str) -> None:
        _check_app_id(app_id)
        before = await self.get(app_id)
        self._write("DELETE FROM microphone WHERE app_id = ?", (app_id,))
        if before != Decision.UNDETERMINED:
            self._notify(app_id, Decision.UNDETERMINED)


# -- xdg-desktop-portal's permission store ---------------------------------------------------

def _bus_call(member: str, signature: str = "", body: list | None = None) -> Message:
    return Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                   interface="org.freedesktop.DBus", member=member, signature=signature,
                   body=body or [])


class PortalPermissionStore(PermissionStore):
    """A client of ``org.freedesktop.impl.portal.PermissionStore``, entry ``devices`` /
    ``microphone``.

    Calls (interface version 2, as xdg-desktop-portal 1.16 serves it)::

        Lookup(s table, s id) -> (a{sas} permissions, v data)   NotFound: nothing stored yet
        SetPermission(s table, b create, s id, s app, as permissions)
        DeletePermission(s table, s id, s app)                   version 2; else ["ask"]
        signal Changed(s table, s id, b deleted, v data, a{sas} permissions)

    Reads always go to the store (it may be edited by GNOME Settings, Flatseal or
    ``flatpak permission-set``); :attr:`decisions` is the last state seen, kept current by
    ``Changed`` and used to tell which apps a change touched. Only ``Changed`` signals sent by
    the current owner of the store's name count (any client can emit a signal with its
    interface and path). When the store restarts (a new owner of its name), the entry is read
    again and differences are reported.

    :param bus: a connected session-bus connection (shared with the D-Bus API)
    """

    where = f"xdg-permission-store (table {PORTAL_TABLE}, id {PORTAL_ID})"

    def __init__(self, bus: MessageBus):
        super().__init__()
        self.bus = bus
        #: The last decisions seen, by app id.
        self.decisions: dict[str, Decision] = {}
        #: Whether the store has ``DeletePermission`` (interface version 2), from introspection.
        self.has_delete_permission = False
        self._owner: str | None = None  # unique name of the store; only it may report changes
        self._rules: list[str] = []
        self._tasks: set[asyncio.Task] = set()
        self._warned: set[tuple[str, str]] = set()

    async def start(self) -> None:
        """Subscribe to ``Changed`` and to the store's name, introspect it, read the entry.

        Activates the store when it is D-Bus-activatable and not running.

        :raises PermissionStoreError: when the store cannot be reached
        """
        self.bus.add_message_handler(self._on_message)
        self._rules = [
            f"type='signal',sender='{PORTAL_NAME}',interface='{PORTAL_IFACE}',member='Changed',"
            f"path='{PORTAL_PATH}',arg0='{PORTAL_TABLE}',arg1='{PORTAL_ID}'",
            f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
            f"arg0='{PORTAL_NAME}'",
        ]
        for rule in self._rules:
            await self._checked(_bus_call("AddMatch", "s", [rule]))
        self.decisions = await self.all()  # activates the store when it is not running
        owner = await self._checked(_bus_call("GetNameOwner", "s", [PORTAL_NAME]), ok_errors=True)
        if owner.message_type == MessageType.METHOD_RETURN:
            self._owner = owner.body[0]
        reply = await self._call_store(
            "Introspect", interface="org.freedesktop.DBus.Introspectable", ok_errors=True)
        if reply.message_type == MessageType.METHOD_RETURN:
            try:
                node = Node.parse(reply.body[0])
                self.has_delete_permission = any(
                    m.name == "DeletePermission"
                    for i in node.interfaces if i.name == PORTAL_IFACE for m in i.methods)
            except Exception as exc:  # a store whose XML we cannot parse still works
                logger.warning("cannot parse the permission store's introspection: %s", exc)
        logger.info("permission store: %s, %d decision(s), DeletePermission %s", self.where,
                    len(self.decisions), "available" if self.has_delete_permission else
                    "missing (reset writes ask)")

    async def close(self) -> None:
        self.bus.remove_message_handler(self._on_message)
        for task in self._tasks:
            task.cancel()
        if self.bus.connected:
            for rule in self._rules:
                try:
                    await asyncio.wait_for(self.bus.call(_bus_call("RemoveMatch", "s", [rule])),
                                           CALL_TIMEOUT)
                except (asyncio.TimeoutError, OSError, EOFError):
                    pass
        self._rules = []

    # -- calls ------------------------------------------------------------------------------

    async def _checked(self, msg: Message, ok_errors: bool = False) -> Message:
        try:
            reply = await asyncio.wait_for(self.bus.call(msg), CALL_TIMEOUT)
        except (asyncio.TimeoutError, OSError, EOFError) as exc:
            raise PermissionStoreError(
                f"{msg.member} on {msg.destination} failed: {exc or type(exc).__name__}"
            ) from exc
        if reply is None:
            raise PermissionStoreError(f"{msg.member} on {msg.destination}: no reply")
        if reply.message_type == MessageType.ERROR and not ok_errors:
            detail = reply.body[0] if reply.body else ""
            raise PermissionStoreError(
                f"{msg.member} on {msg.destination} failed: {reply.error_name}: {detail}")
        return reply

    async def _call_store(self, member: str, signature: str = "", body: list | None = None,
                          interface: str = PORTAL_IFACE, ok_errors: bool = False) -> Message:
        return await self._checked(
            Message(destination=PORTAL_NAME, path=PORTAL_PATH, interface=interface,
                    member=member, signature=signature, body=body or []), ok_errors)

    def _parse(self, permissions: Any) -> dict[str, Decision]:
        if not isinstance(permissions, dict):
            logger.warning("%s: permissions are %r, not a map; reading none", self.where,
                           type(permissions).__name__)
            return {}
        decisions = {}
        for app, value in permissions.items():
            if not isinstance(app, str):
                continue
            decision = decision_from_store(value)
            if decision is None:
                if (app, repr(value)) not in self._warned:
                    self._warned.add((app, repr(value)))
                    logger.warning("%s: garbage permissions %r for %s, reading them as "
                                   "undetermined", self.where, value, app)
                decision = Decision.UNDETERMINED
            decisions[app] = decision
        return decisions

    def _update(self, new: dict[str, Decision]) -> None:
        """Replace :attr:`decisions` with *new*; report every app whose decision changed."""
        old, self.decisions = self.decisions, dict(new)
        for app in sorted(old.keys() | new.keys()):
            before = old.get(app, Decision.UNDETERMINED)
            after = new.get(app, Decision.UNDETERMINED)
            if before != after:
                self._notify(app, after)

    # -- the contract -----------------------------------------------------------------------

    async def all(self) -> dict[str, Decision]:
        reply = await self._call_store("Lookup", "ss", [PORTAL_TABLE, PORTAL_ID], ok_errors=True)
        if reply.message_type == MessageType.ERROR:
            if reply.error_name == PORTAL_NOT_FOUND:  # no entry (or no table) yet
                return {}
            detail = reply.body[0] if reply.body else ""
            raise PermissionStoreError(f"Lookup on {PORTAL_NAME} failed: "
                                       f"{reply.error_name}: {detail}")
        return self._parse(reply.body[0] if reply.body else None)

    async def get(self, app_id: str) -> Decision:
        _check_app_id(app_id)
        return (await self.all()).get(app_id, Decision.UNDETERMINED)

    async def set(self, app_id: str, decision: Decision) -> None:
        _check_app_id(app_id)
        decision = Decision(decision)
        await self._call_store("SetPermission", "sbssas",
                               [PORTAL_TABLE, True, PORTAL_ID, app_id, store_value(decision)])
        # Changed may arrive before or after this reply; whichever comes first reports it.
        self._update({**self.decisions, app_id: decision})

    async def reset(self, app_id: str) -> None:
        _check_app_id(app_id)
        if self.has_delete_permission:
            reply = await self._call_store("DeletePermission", "sss",
                                           [PORTAL_TABLE, PORTAL_ID, app_id], ok_errors=True)
            if reply.message_type == MessageType.ERROR and reply.error_name != PORTAL_NOT_FOUND:
                detail = reply.body[0] if reply.body else ""
                raise PermissionStoreError(f"DeletePermission on {PORTAL_NAME} failed: "
                                           f"{reply.error_name}: {detail}")
        else:
            await self._call_store("SetPermission", "sbssas",
                                   [PORTAL_TABLE, True, PORTAL_ID, app_id, ["ask"]])
        self._update({a: d for a, d in self.decisions.items() if a != app_id})

    # -- live changes -----------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if (msg.member == "Changed" and msg.interface == PORTAL_IFACE
                and msg.path == PORTAL_PATH and msg.signature == "ssbva{sas}"):
            # Any client can emit a signal with this interface and path: believe only the
            # store's owner, or an app could grant itself.
            if self._owner is None or msg.sender != self._owner:
                logger.warning("ignoring a permission-store Changed signal from %s, which does "
                               "not own %s", msg.sender, PORTAL_NAME)
                return
            table, res_id, deleted, _data, permissions = msg.body
            if (table, res_id) != (PORTAL_TABLE, PORTAL_ID):
                return
            # deleted: the whole entry went (Delete); the body holds its last values.
            self._update({} if deleted else self._parse(permissions))
        elif (msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus"
              and msg.body and msg.body[0] == PORTAL_NAME):
            self._owner = msg.body[2] or None
            if not self._owner:
                return
            task = asyncio.get_running_loop().create_task(self._reread())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _reread(self) -> None:
        """Read the entry again after the store restarted, and report differences."""
        try:
            self._update(await self.all())
        except PermissionStoreError as exc:
            logger.warning("cannot re-read the permission store after it restarted: %s", exc)


# -- choosing -------------------------------------------------------------------------------

async def _names(bus: MessageBus, member: str) -> Iterable[str]:
    try:
        reply = await asyncio.wait_for(bus.call(_bus_call(member)), CALL_TIMEOUT)
    except (asyncio.TimeoutError, OSError, EOFError) as exc:
        logger.warning("%s failed: %s", member, exc)
        return ()
    if reply is None or reply.message_type == MessageType.ERROR or not reply.body:
        return ()
    return reply.body[0]


async def open_store(bus: MessageBus, state_dir: str | Path) -> PermissionStore:
    """The store decisions should live in, started.

    xdg-desktop-portal's permission store when ``org.freedesktop.impl.portal.PermissionStore``
    is on *bus* or D-Bus-activatable (``ListActivatableNames``); otherwise, or when it cannot
    be reached, a :class:`SqlitePermissionStore` at ``state_dir/permissions.sqlite3``.
    Logs which, and why.

    :param bus: a connected session-bus connection
    :param state_dir: the daemon's state directory (created when missing)
    :raises PermissionStoreError: when neither store can be opened
    """
    running = PORTAL_NAME in await _names(bus, "ListNames")
    activatable = not running and PORTAL_NAME in await _names(bus, "ListActivatableNames")
    if running or activatable:
        store = PortalPermissionStore(bus)
        try:
            await store.start()
        except PermissionStoreError as exc:
            await store.close()
            logger.warning("%s is %s but failed (%s); microphone decisions go to SQLite",
                           PORTAL_NAME, "running" if running else "activatable", exc)
        else:
            logger.info("microphone decisions: %s (%s)", store.where,
                        "running" if running else "activated")
            return store
    else:
        logger.info("%s is not on the session bus", PORTAL_NAME)
    sqlite_store = SqlitePermissionStore(Path(state_dir) / SQLITE_FILE)
    await sqlite_store.start()
    logger.info("microphone decisions: %s", sqlite_store.where)
    return sqlite_store
