"""The effects journal: what is written is what a restarted daemon reads."""

from __future__ import annotations

import sqlite3

import pytest

from audiopolicyd.effects import Applied, Claim
from audiopolicyd.journal import Journal

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


def test_a_file_that_is_not_a_journal_is_an_error_and_left_closed(tmp_path):
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        Journal(path)
