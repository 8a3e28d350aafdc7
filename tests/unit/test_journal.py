"""The effects journal: what is written is what a restarted daemon reads."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from audiopolicyd.effects import Applied, Claim
from audiopolicyd.journal import Journal, JournalError

# a connection a test leaves open fails that test (Python 3.13 warns when one is freed open)
pytestmark = pytest.mark.usefixtures("collect_garbage")


def test_effects_round_trip_and_delete(tmp_path):
    path = tmp_path / "state" / "journal.sqlite3"
    j = Journal(path)
    a = Applied("sink-input:3", "sink-input-by-media.role:game", (45875, 39321), 0.2,
                (9175, 7864), True, False)
    b = Applied("sink-input:4", "x", (65536, 65536), 1.0, None, False, True)
    j.write([a, b])
    j.close()
    j = Journal(path)  # as after a crash and restart
    assert j.effects() == {a.key: a, b.key: b}
    j.write([], [a.key])
    assert list(j.effects()) == [b.key]
    j.close()


def test_lingering_by_restore_key():
    j = Journal(":memory:")
    a = Applied("sink-input:3", "role:game", (30000, 30000), 0.2, (6000, 6000), False)
    muted_only = Applied("sink-input:5", "role:music", (65536,), 1.0, None, True)
    untouched = Applied("sink-input:6", "role:event", (65536,), 1.0, None, False, True)
    j.write([a, muted_only, untouched])
    j.linger([a, muted_only, untouched])
    assert j.effects() == {}
    got = j.lingering("role:game")
    assert (got.base, got.gain, got.target, got.muted_by_us) == ((30000, 30000), 0.2,
                                                                  (6000, 6000), False)
    assert j.lingering("role:music").muted_by_us
    assert j.lingering("role:event") is None  # nothing of ours to undo
    j.forget_lingering("role:game")
    assert j.lingering("role:game") is None and j.has_lingering()
    j.close()


def test_pauses_are_replaced_and_cleared():
    j = Journal(":memory:")
    claims = {"org.mpris.MediaPlayer2.mpv": Claim(frozenset({"call"}), True, False)}
    j.write_pauses(claims)
    assert j.pauses() == claims
    j.write([Applied("k", "r", (1,), 0.5, (1,))])
    j.clear()
    assert j.pauses() == {} and j.effects() == {}
    j.close()


def test_a_ramp_under_way_round_trips(tmp_path):
    j = Journal(tmp_path / "j.sqlite3")
    a = Applied("sink-input:3", "k", (40000,), 0.2, (8000,), ramp_from=(40000,), ramp_ms=100)
    j.write([a])
    j.linger([a])
    assert j.lingering("k") == dataclasses.replace(a, key="")
    j.close()


def test_a_journal_of_the_first_release_gains_the_ramp_columns(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE effects (key TEXT PRIMARY KEY, restore_key TEXT NOT NULL, base TEXT NOT NULL,
            gain REAL NOT NULL, target TEXT, muted_by_us INTEGER NOT NULL,
            mute_waived INTEGER NOT NULL, updated REAL NOT NULL);
        CREATE TABLE lingering (restore_key TEXT PRIMARY KEY, base TEXT NOT NULL,
            gain REAL NOT NULL, target TEXT, muted_by_us INTEGER NOT NULL, since REAL NOT NULL);
        INSERT INTO effects VALUES ('sink-input:1', 'k', '[40000]', 0.2, '[8000]', 0, 0, 0);""")
    db.commit()
    db.close()
    j = Journal(path)
    assert j.effects() == {"sink-input:1": Applied("sink-input:1", "k", (40000,), 0.2, (8000,))}
    j.close()


def test_a_write_that_fails_returns_false_and_says_why_until_one_succeeds():
    j = Journal(":memory:")
    a = Applied("sink-input:1", "k", (40000,), 0.2, (8000,))
    j._db.execute("PRAGMA query_only = 1")  # as a full disk: every write fails
    assert j.write([a]) is False and j.linger([a]) is False and j.clear() is False
    assert "readonly" in j.failure and j.effects() == {}
    j._db.execute("PRAGMA query_only = 0")
    assert j.write([a]) is True and j.failure == ""
    j.close()


def test_a_state_directory_that_cannot_hold_a_journal_is_a_journal_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(JournalError, match="cannot open the effects journal .*file/j.sqlite3"):
        Journal(tmp_path / "file" / "j.sqlite3")
    (tmp_path / "garbage.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(JournalError, match="not a database"):
        Journal(tmp_path / "garbage.sqlite3")


def test_trusted_modules_are_kept_per_server_instance(tmp_path):
    path = tmp_path / "j.sqlite3"
    j = Journal(path)
    assert j.trusted_instance() is None  # never connected to a server
    assert j.trust_modules(7, {}) and j.trusted_instance() == (7, {})  # seen, no module
    assert j.trust_modules(8, {1: ("module-null-sink", "sink_name=speaker"),
                               4: ("module-loopback", "")})
    assert j.trusted_instance()[0] == 8  # one instance at a time: a new cookie replaces it
    assert j.forget_trusted_module(8, 4)
    assert j.trust_module(8, 9, "module-loopback", "source=mic")
    j.close()
    j = Journal(path)  # a restarted daemon finds them
    assert j.trusted_instance() == (8, {1: ("module-null-sink", "sink_name=speaker"),
                                        9: ("module-loopback", "source=mic")})
    j._db.execute("PRAGMA query_only = 1")  # as a full disk
    assert j.trust_modules(9, {1: ("module-null-sink", "")}) is False
    assert "readonly" in j.failure and j.trusted_instance()[0] == 8
    j.close()
