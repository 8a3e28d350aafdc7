"""The effects journal: every effect and the value before it, written before it is applied.

Both servers *remember* volume and mute per app or role (module-stream-restore, WirePlumber's
restore-stream), so an effect left behind by a crash would outlive the daemon. The journal lets
a restarted daemon put every stream back exactly as the user had it:

* ``effects``: one row per stream we have touched (see :class:`~audiopolicyd.effects.Applied`);
* ``lingering``: rows of streams that vanished (or whose server went away) while an effect was
  on them, by the server's restore key, so every new stream that the server starts at our
  ducked volume (or a step of our ramp) or our mute is put back to the user's value;
* ``pauses``: MPRIS players we paused, so a restart can resume them;
* ``servers`` and ``trusted_modules``: the modules a server instance (by its cookie) had when
  the daemon first connected to it, the ones the microphone gate trusts (see
  docs/microphone.md): a restarted daemon must not trust a module loaded while it was down.

SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives a killed process (the data is
in the OS page cache), which is the failure this journal exists for.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterable

from .effects import Applied, Claim

logger = logging.getLogger(__name__)

#: How long a lingering row waits for a stream with its restore key, in seconds.
LINGER_SECONDS = 7 * 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY, restore_key TEXT NOT NULL, base TEXT NOT NULL, gain REAL NOT NULL,
    target TEXT, muted_by_us INTEGER NOT NULL, mute_waived INTEGER NOT NULL, updated REAL NOT NULL,
    ramp_from TEXT, ramp_ms INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS lingering (
    restore_key TEXT PRIMARY KEY, base TEXT NOT NULL, gain REAL NOT NULL, target TEXT,
    muted_by_us INTEGER NOT NULL, since REAL NOT NULL,
    ramp_from TEXT, ramp_ms INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS pauses (
    bus_name TEXT PRIMARY KEY, triggers TEXT NOT NULL, confirmed INTEGER NOT NULL,
    waived INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS servers (cookie INTEGER PRIMARY KEY, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trusted_modules (
    cookie INTEGER NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL, argument TEXT NOT NULL,
    PRIMARY KEY (cookie, idx));
CREATE TABLE IF NOT EXISTS own_modules (
    argument TEXT PRIMARY KEY, cookie INTEGER NOT NULL, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS switched_cards (
    card TEXT PRIMARY KEY, cookie INTEGER NOT NULL, profile TEXT NOT NULL);
"""
#: Columns added after the first release, added to a journal written by it.
_ADDED_COLUMNS = {"effects": ("ramp_from TEXT", "ramp_ms INTEGER NOT NULL DEFAULT 0"),
                  "lingering": ("ramp_from TEXT", "ramp_ms INTEGER NOT NULL DEFAULT 0")}

_EFFECT_COLUMNS = ("key, restore_key, base, gain, target, muted_by_us, mute_waived, ramp_from, "
                   "ramp_ms")


class JournalError(Exception):
    """The journal file cannot be opened (a read-only or missing state directory, a file
    that is not a journal)."""


def _json(volume: tuple[int, ...] | None) -> str | None:
    return None if volume is None else json.dumps(volume)


def _volume(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in json.loads(text))


def _tuple(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else _volume(text)


def _applied(key, restore_key, base, gain, target, muted, waived, ramp_from, ramp_ms) -> Applied:
    return Applied(key, restore_key, _volume(base), gain, _tuple(target), bool(muted),
                   bool(waived), _tuple(ramp_from), int(ramp_ms or 0))


class Journal:
    """The journal file. ``path`` may be ``:memory:`` for tests.

    Writes never raise: a write that fails (a full disk, an I/O error) returns False, is logged
    once, and :attr:`failure` says why until a write succeeds again. The caller decides what
    that means (the runtime applies no new effect while the journal cannot record it).

    :raises JournalError: when the file cannot be opened or is not a journal
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        #: Why the last write failed; '' while the journal is writable.
        self.failure = ""
        try:
            if self.path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"cannot open the effects journal {self.path}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            for table, columns in _ADDED_COLUMNS.items():
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column.split()[0] not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        except sqlite3.Error as exc:
            self._db.close()
            raise JournalError(f"cannot open the effects journal {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def _transaction(self, what: str, statements: Callable[[sqlite3.Connection], object]) -> bool:
        """Run ``statements`` in one transaction; False (logged once) when it fails."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                statements(self._db)
        except sqlite3.Error as exc:
            if not self.failure:
                logger.error("the effects journal %s cannot be written (%s: %s); no new effect "
                             "is applied until it can", self.path, what, exc)
            self.failure = str(exc)
            return False
        if self.failure:
            logger.warning("the effects journal %s can be written again", self.path)
            self.failure = ""
        return True

    def _read(self, query: str, args: tuple = ()) -> list[tuple]:
        """Rows of a query; none (logged) when the file cannot be read."""
        try:
            return self._db.execute(query, args).fetchall()
        except sqlite3.Error as exc:
            logger.error("the effects journal %s cannot be read: %s", self.path, exc)
            return []

    # -- effects ----------------------------------------------------------------------------

    def clear(self) -> bool:
        """Forget every effect and pause (after everything was restored)."""
        def run(db):
            db.execute("DELETE FROM effects")
            db.execute("DELETE FROM pauses")
        return self._transaction("clear", run)

    def write(self, upserts: Iterable[Applied], deletes: Iterable[str] = ()) -> bool:
        """Record new states and forget idle ones, in one transaction.

        :returns: False when nothing could be written (see :attr:`failure`)
        """
        now = time.time()
        upserts, deletes = list(upserts), list(deletes)

        def run(db):
            db.executemany(
                f"INSERT OR REPLACE INTO effects ({_EFFECT_COLUMNS}, updated) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(a.key, a.restore_key, _json(a.base), a.gain, _json(a.target),
                  int(a.muted_by_us), int(a.mute_waived), _json(a.ramp_from), a.ramp_ms, now)
                 for a in upserts])
            db.executemany("DELETE FROM effects WHERE key = ?", [(k,) for k in deletes])
        return self._transaction("write", run)

    def effects(self) -> dict[str, Applied]:
        """Every journalled stream state, by stream key."""
        return {row[0]: _applied(*row)
                for row in self._read(f"SELECT {_EFFECT_COLUMNS} FROM effects")}

    # -- lingering --------------------------------------------------------------------------

    def linger(self, applied: Iterable[Applied]) -> bool:
        """Move rows of vanished streams to ``lingering`` by restore key.

        A row stays there for :data:`LINGER_SECONDS`, or until :meth:`forget_lingering`: every
        new stream of the restore key that the server starts at one of our values meanwhile
        gets the user's value back.
        """
        applied = list(applied)
        now = time.time()

        def run(db):
            db.executemany(
                "INSERT OR REPLACE INTO lingering (restore_key, base, gain, target, muted_by_us, "
                "since, ramp_from, ramp_ms) VALUES (?,?,?,?,?,?,?,?)",
                [(a.restore_key, _json(a.base), a.gain, _json(a.target), int(a.muted_by_us), now,
                  _json(a.ramp_from), a.ramp_ms)
                 for a in applied if a.target is not None or a.muted_by_us])
            db.executemany("DELETE FROM effects WHERE key = ?", [(a.key,) for a in applied])
            db.execute("DELETE FROM lingering WHERE since < ?", (now - LINGER_SECONDS,))
        return self._transaction("linger", run)

    def lingering(self, restore_key: str) -> Applied | None:
        """The lingering state for a restore key, as an :class:`Applied` without a stream key."""
        rows = self._read("SELECT '', restore_key, base, gain, target, muted_by_us, 0, ramp_from, "
                          "ramp_ms FROM lingering WHERE restore_key = ?", (restore_key,))
        return _applied(*rows[0]) if rows else None

    def forget_lingering(self, restore_key: str) -> bool:
        """Forget the lingering row of a restore key (the server no longer shows our value)."""
        return self._transaction("forget", lambda db: db.execute(
            "DELETE FROM lingering WHERE restore_key = ?", (restore_key,)))

    def has_lingering(self) -> bool:
        return bool(self._read("SELECT 1 FROM lingering LIMIT 1"))

    # -- pauses -----------------------------------------------------------------------------

    def write_pauses(self, claims: dict[str, Claim]) -> bool:
        """Replace the recorded pause claims."""
        def run(db):
            db.execute("DELETE FROM pauses")
            db.executemany(
                "INSERT INTO pauses VALUES (?,?,?,?)",
                [(bus, json.dumps(sorted(c.triggers)), int(c.confirmed), int(c.waived))
                 for bus, c in claims.items()])
        return self._transaction("pauses", run)

    def pauses(self) -> dict[str, Claim]:
        rows = self._read("SELECT bus_name, triggers, confirmed, waived FROM pauses")
        return {bus: Claim(frozenset(json.loads(t)), bool(c), bool(w)) for bus, t, c, w in rows}

    # -- trusted modules ----------------------------------------------------------------------

    def trusted_instance(self) -> tuple[int, dict[int, tuple[str, str]]] | None:
        """The server instance recorded last and its trusted modules:
        ``(cookie, {index: (name, argument)})``; None when none was ever recorded."""
        rows = self._read("SELECT cookie FROM servers ORDER BY first_seen DESC LIMIT 1")
        if not rows:
            return None
        cookie = rows[0][0]
        return cookie, {idx: (name, argument) for idx, name, argument in self._read(
            "SELECT idx, name, argument FROM trusted_modules WHERE cookie = ?", (cookie,))}

    def trust_modules(self, cookie: int, modules: dict[int, tuple[str, str]]) -> bool:
        """Record the trusted modules of the server instance *cookie* at the daemon's first
        connection to it, forgetting every other instance's (a server has one at a time).

        :param modules: index -> (name, argument)
        :returns: False when nothing could be written (see :attr:`failure`)
        """
        now = time.time()

        def run(db):
            db.execute("DELETE FROM servers")
            db.execute("DELETE FROM trusted_modules")
            db.execute("INSERT INTO servers VALUES (?, ?)", (cookie, now))
            db.executemany("INSERT INTO trusted_modules VALUES (?,?,?,?)",
                           [(cookie, i, n, a) for i, (n, a) in modules.items()])
        return self._transaction("trust modules", run)

    def forget_trusted_module(self, cookie: int, index: int) -> bool:
        """A trusted module was unloaded: its index may be given to another module."""
        return self._transaction("forget module", lambda db: db.execute(
            "DELETE FROM trusted_modules WHERE cookie = ? AND idx = ?", (cookie, index)))

    def trust_module(self, cookie: int, index: int, name: str, argument: str) -> bool:
        """Add one module (one the daemon loaded itself) to the instance *cookie*'s record."""
        return self._transaction("trust module", lambda db: db.execute(
            "INSERT OR REPLACE INTO trusted_modules VALUES (?,?,?,?)",
            (cookie, index, name, argument)))

    # -- modules the daemon loads itself ------------------------------------------------------

    def record_own_module(self, cookie: int, name: str, argument: str) -> bool:
        """Record a module the daemon is about to load into the server instance *cookie*,
        **before** loading it: a daemon killed after the load finds it at its next start
        (:meth:`own_modules`) and unloads it. *argument* must be unique to this load (it
        carries device names made for it).

        :returns: False when nothing could be written (do not load it then)
        """
        return self._transaction("record own module", lambda db: db.execute(
            "INSERT OR REPLACE INTO own_modules VALUES (?,?,?)", (argument, cookie, name)))

    def forget_own_module(self, argument: str) -> bool:
        """The module loaded with *argument* is unloaded (or was never loaded)."""
        return self._transaction("forget own module", lambda db: db.execute(
            "DELETE FROM own_modules WHERE argument = ?", (argument,)))

    def own_modules(self) -> list[tuple[int, str, str]]:
        """The modules the daemon loaded and has not unloaded: ``(cookie, name, argument)``."""
        return [(c, n, a) for a, c, n in self._read(
            "SELECT argument, cookie, name FROM own_modules")]

    # -- cards the daemon switched to another profile -------------------------------------------

    def record_switched_card(self, cookie: int, card: str, profile: str) -> bool:
        """Record, **before** switching it, that the daemon switches card *card* of the server
        instance *cookie* away from *profile* (a headset to HSP/HFP for a call): a daemon
        killed meanwhile gives *profile* back at its next start (:meth:`switched_cards`).

        :returns: False when nothing could be written
        """
        return self._transaction("record switched card", lambda db: db.execute(
            "INSERT OR REPLACE INTO switched_cards VALUES (?,?,?)", (card, cookie, profile)))

    def forget_switched_card(self, card: str) -> bool:
        """Card *card* has its profile back (or is gone)."""
        return self._transaction("forget switched card", lambda db: db.execute(
            "DELETE FROM switched_cards WHERE card = ?", (card,)))

    def switched_cards(self) -> list[tuple[int, str, str]]:
        """The cards the daemon switched and has not given back: ``(cookie, card, profile
        to give back)``."""
        return [(c, n, p) for n, c, p in self._read(
            "SELECT card, cookie, profile FROM switched_cards")]
