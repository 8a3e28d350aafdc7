"""The effects journal: every effect and the value before it, written before it is applied.

Both servers *remember* volume and mute per app or role (module-stream-restore, WirePlumber's
restore-stream), so an effect left behind by a crash would outlive the daemon. The journal lets
a restarted daemon put every stream back exactly as the user had it:

* ``effects``: one row per stream we have touched (see :class:`~audiopolicyd.effects.Applied`);
* ``lingering``: rows of streams that vanished (or whose server went away) while an effect was
  on them, by the server's restore key, so a new stream that the server starts at our ducked
  volume or our mute is put back to the user's value;
* ``pauses``: MPRIS players we paused, so a restart can resume them.

SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives a killed process (the data is
in the OS page cache), which is the failure this journal exists for.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from .effects import Applied, Claim

logger = logging.getLogger(__name__)

#: How long a lingering row waits for a stream with its restore key, in seconds.
LINGER_SECONDS = 7 * 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY, restore_key TEXT NOT NULL, base TEXT NOT NULL, gain REAL NOT NULL,
    target TEXT, muted_by_us INTEGER NOT NULL, mute_waived INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lingering (
    restore_key TEXT PRIMARY KEY, base TEXT NOT NULL, gain REAL NOT NULL, target TEXT,
    muted_by_us INTEGER NOT NULL, since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pauses (
    bus_name TEXT PRIMARY KEY, triggers TEXT NOT NULL, confirmed INTEGER NOT NULL,
    waived INTEGER NOT NULL);
"""


def _tuple(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else tuple(int(v) for v in json.loads(text))


class Journal:
    """The journal file. ``path`` may be ``:memory:`` for tests.

    :raises sqlite3.Error: when the file cannot be opened or is not a journal
    """

    def __init__(self, path: str | Path):
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error:
            # a file that is not a database fails here, not in connect(): close what we
            # opened (Python 3.13 warns about a connection left open)
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    # -- effects ----------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every effect and pause (after everything was restored)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM effects")
            self._db.execute("DELETE FROM pauses")

    def write(self, upserts: Iterable[Applied], deletes: Iterable[str] = ()) -> None:
        """Record new states and forget idle ones, in one transaction."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO effects VALUES (?,?,?,?,?,?,?,?)",
                [(a.key, a.restore_key, json.dumps(a.base), a.gain,
                  None if a.target is None else json.dumps(a.target), int(a.muted_by_us),
                  int(a.mute_waived), now) for a in upserts])
            self._db.executemany("DELETE FROM effects WHERE key = ?", [(k,) for k in deletes])

    def effects(self) -> dict[str, Applied]:
        """Every journalled stream state, by stream key."""
        rows = self._db.execute("SELECT key, restore_key, base, gain, target, muted_by_us, "
                                "mute_waived FROM effects")
        return {k: Applied(k, rk, _tuple(b), g, _tuple(t), bool(m), bool(w))
                for k, rk, b, g, t, m, w in rows}

    # -- lingering --------------------------------------------------------------------------

    def linger(self, applied: Iterable[Applied]) -> None:
        """Move rows of vanished streams to ``lingering`` by restore key."""
        applied = list(applied)
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO lingering VALUES (?,?,?,?,?,?)",
                [(a.restore_key, json.dumps(a.base), a.gain,
                  None if a.target is None else json.dumps(a.target), int(a.muted_by_us), now)
                 for a in applied if a.target is not None or a.muted_by_us])
            self._db.executemany("DELETE FROM effects WHERE key = ?", [(a.key,) for a in applied])
            self._db.execute("DELETE FROM lingering WHERE since < ?", (now - LINGER_SECONDS,))

    def lingering(self, restore_key: str) -> Applied | None:
        """The lingering state for a restore key, as an :class:`Applied` without a stream key."""
        row = self._db.execute("SELECT base, gain, target, muted_by_us FROM lingering "
                               "WHERE restore_key = ?", (restore_key,)).fetchone()
        if row is None:
            return None
        base, gain, target, muted = row
        return Applied("", restore_key, _tuple(base), gain, _tuple(target), bool(muted))

    def forget_lingering(self, restore_key: str) -> None:
        self._db.execute("DELETE FROM lingering WHERE restore_key = ?", (restore_key,))

    def has_lingering(self) -> bool:
        return self._db.execute("SELECT 1 FROM lingering LIMIT 1").fetchone() is not None

    # -- pauses -----------------------------------------------------------------------------

    def write_pauses(self, claims: dict[str, Claim]) -> None:
        """Replace the recorded pause claims."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM pauses")
            self._db.executemany(
                "INSERT INTO pauses VALUES (?,?,?,?)",
                [(bus, json.dumps(sorted(c.triggers)), int(c.confirmed), int(c.waived))
                 for bus, c in claims.items()])

    def pauses(self) -> dict[str, Claim]:
        rows = self._db.execute("SELECT bus_name, triggers, confirmed, waived FROM pauses")
        return {bus: Claim(frozenset(json.loads(t)), bool(c), bool(w)) for bus, t, c, w in rows}
