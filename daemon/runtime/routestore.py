"""What the router remembers across restarts: the user's pins (a stream the user or its app
moved stays there, per app and category) and the user's preferences (``audiopolicyctl route
CATEGORY PORT-UID``). A table of its own beside the journal's, in the state directory.

Devices are remembered by their server name (a device's id is the server's index, which a
restarted server gives to another device); ports by their uid
(:func:`audiopolicyd.routing.ports.uid`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS route_pins (
    app_key TEXT NOT NULL, category TEXT NOT NULL, direction TEXT NOT NULL,
    device TEXT NOT NULL, PRIMARY KEY (app_key, category, direction));
CREATE TABLE IF NOT EXISTS route_preferences (
    category TEXT PRIMARY KEY, uid TEXT NOT NULL);
"""


def pin_key(app_key: str) -> str:
    """The key an app's pins are remembered by: its :attr:`Stream.app_key
    <audiopolicyd.model.Stream.app_key>` without the process id of an ``exe:`` key
    (``exe:linphone:4242`` -> ``exe:linphone``), so that a pin outlives the app's process."""
    kind, _, rest = app_key.partition(":")
    return f"exe:{rest.rsplit(':', 1)[0]}" if kind == "exe" and ":" in rest else app_key


class RouteStore:
    """Pins and preferences in SQLite (the journal's file: ``journal.sqlite3``; ``:memory:``
    for tests). Kept in memory as well; a write that fails is logged and kept in memory only
    (routing goes on, the choice is lost at the next restart).

    :param path: the database file
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        #: ``(app_key, category, direction)`` -> device name the user put that app's streams on.
        self.pins: dict[tuple[str, str, str], str] = {}
        #: category -> port uid the user prefers for it.
        self.preferences: dict[str, str] = {}
        # ":memory:" is a database per connection: the tests' stores keep one open
        self._memory = sqlite3.connect(":memory:") if self.path == ":memory:" else None
        try:
            with self._connect() as db:
                db.executescript(_SCHEMA)
                self.pins = {(a, c, d): dev for a, c, d, dev in db.execute(
                    "SELECT app_key, category, direction, device FROM route_pins")}
                self.preferences = dict(db.execute("SELECT category, uid FROM route_preferences"))
        except sqlite3.Error as exc:
            logger.error("the route store %s cannot be read (%s); the user's routes are kept "
                         "in memory only", self.path, exc)

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A connection for one read or write, closed after: pins are written seldom, and the
        runtime has no close of its own to call."""
        if self._memory is not None:
            return contextlib.nullcontext(self._memory)
        return contextlib.closing(sqlite3.connect(self.path, isolation_level=None))

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()

    def _run(self, what: str, sql: str, args: tuple) -> None:
        try:
            with self._connect() as db:
                db.execute(sql, args)
        except sqlite3.Error as exc:
            logger.error("the route store %s cannot be written (%s: %s); kept until the "
                         "daemon stops", self.path, what, exc)

    def pin(self, app_key: str, category: str, direction: str, device: str) -> None:
        """Remember that ``app_key``'s ``category`` streams of ``direction`` (``output`` |
        ``input``) stay on the device named ``device`` (by :func:`pin_key`)."""
        app_key = pin_key(app_key)
        self.pins[(app_key, category, direction)] = device
        self._run("pin", "INSERT OR REPLACE INTO route_pins VALUES (?, ?, ?, ?)",
                  (app_key, category, direction, device))

    def pinned(self, app_key: str, category: str, direction: str) -> str | None:
        """The device name ``app_key``'s streams are pinned to, None when not pinned."""
        return self.pins.get((pin_key(app_key), category, direction))

    def forget(self, app: str) -> int:
        """Forget every pin of an app, named by its :func:`pin_key` (``app:org.example.Call``,
        ``exe:linphone``) or by that key without its kind (``org.example.Call``, ``linphone``).

        :returns: how many pins were forgotten
        """
        keys = {k for k in self.pins if app in (k[0], k[0].split(":", 1)[-1])}
        for key in keys:
            del self.pins[key]
            self._run("forget", "DELETE FROM route_pins WHERE app_key = ? AND category = ? "
                      "AND direction = ?", key)
        return len(keys)

    def prefer(self, category: str, uid: str) -> None:
        """Put ``category``'s streams on the port ``uid`` when present; '' forgets it."""
        if uid:
            self.preferences[category] = uid
            self._run("prefer", "INSERT OR REPLACE INTO route_preferences VALUES (?, ?)",
                      (category, uid))
        elif self.preferences.pop(category, None) is not None:
            self._run("prefer", "DELETE FROM route_preferences WHERE category = ?", (category,))
