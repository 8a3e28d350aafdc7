"""Microphone decisions: the value mapping and the SQLite store."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from audiopolicyd.microphone.stores import (Decision, PermissionStoreError, SqlitePermissionStore,
                                      decision_from_store, store_value)

# a connection a test leaves open fails that test (Python 3.13 warns when one is freed open)
pytestmark = pytest.mark.usefixtures("collect_garbage")


@pytest.mark.parametrize("value, decision", [
    (["yes"], Decision.GRANTED), (["no"], Decision.DENIED), (["ask"], Decision.UNDETERMINED),
    (("yes",), Decision.GRANTED),
])
def test_store_values_map_to_apple_names(value, decision):
    assert decision_from_store(value) is decision


@pytest.mark.parametrize("garbage", [
    ["maybe"], [], ["yes", "no"], [1], "yes", None, 1, [b"yes"], [["yes"]], ["YES"],
])
def test_garbage_store_values_are_unknown(garbage):
    assert decision_from_store(garbage) is None


def test_decisions_map_to_store_values():
    assert store_value(Decision.GRANTED) == ["yes"]
    assert store_value(Decision.DENIED) == ["no"]
    assert store_value(Decision.UNDETERMINED) == ["ask"]
    assert store_value("granted") == ["yes"]
    with pytest.raises(ValueError):
        store_value("yes")


def test_decision_values_are_apple_names():
    assert [d.value for d in Decision] == ["granted", "denied", "undetermined"]
    assert str(Decision.GRANTED) == "granted"


async def test_sqlite_round_trip_and_reset(tmp_path):
    store = SqlitePermissionStore(tmp_path / "state" / "permissions.sqlite3")
    await store.start()
    changes = []
    store.on_change(lambda app, d: changes.append((app, d)))
    assert await store.get("org.example.Rec") is Decision.UNDETERMINED
    assert await store.all() == {}
    await store.set("org.example.Rec", Decision.GRANTED)
    await store.set("exe:/usr/bin/arecord", Decision.DENIED)
    await store.set("org.example.Rec", Decision.GRANTED)  # no change: no callback
    assert await store.get("org.example.Rec") is Decision.GRANTED
    assert await store.all() == {"exe:/usr/bin/arecord": Decision.DENIED,
                                 "org.example.Rec": Decision.GRANTED}
    await store.reset("org.example.Rec")
    await store.reset("org.example.Rec")  # already gone: no callback
    assert await store.get("org.example.Rec") is Decision.UNDETERMINED
    assert await store.all() == {"exe:/usr/bin/arecord": Decision.DENIED}
    await store.set("exe:/usr/bin/arecord", Decision.UNDETERMINED)
    assert await store.all() == {"exe:/usr/bin/arecord": Decision.UNDETERMINED}
    assert changes == [("org.example.Rec", Decision.GRANTED),
                       ("exe:/usr/bin/arecord", Decision.DENIED),
                       ("org.example.Rec", Decision.UNDETERMINED),
                       ("exe:/usr/bin/arecord", Decision.UNDETERMINED)]
    assert store.where == str(tmp_path / "state" / "permissions.sqlite3")
    await store.close()


async def test_sqlite_is_wal_with_the_documented_table(tmp_path):
    path = tmp_path / "permissions.sqlite3"
    store = SqlitePermissionStore(path)
    await store.set("a", Decision.GRANTED)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    columns = [(r[1], r[2]) for r in db.execute("PRAGMA table_info(microphone)")]
    assert columns == [("app_id", "TEXT"), ("decision", "TEXT"), ("updated", "REAL")]
    assert db.execute("SELECT app_id, decision FROM microphone").fetchall() == [("a", "granted")]
    db.close()
    await store.close()


async def test_sqlite_second_instance_sees_the_first_ones_writes(tmp_path):
    path = tmp_path / "permissions.sqlite3"
    first, second = SqlitePermissionStore(path), SqlitePermissionStore(path)
    await first.set("org.example.Rec", Decision.DENIED)
    assert await second.get("org.example.Rec") is Decision.DENIED
    await second.set("org.example.Rec", Decision.GRANTED)
    assert await first.get("org.example.Rec") is Decision.GRANTED
    await first.close()
    await second.close()
    reopened = SqlitePermissionStore(path)  # as after a restart
    assert await reopened.all() == {"org.example.Rec": Decision.GRANTED}
    await reopened.close()


async def test_sqlite_garbage_rows_read_undetermined_with_a_warning(tmp_path, caplog):
    path = tmp_path / "permissions.sqlite3"
    store = SqlitePermissionStore(path)
    db = sqlite3.connect(path)
    db.executemany("INSERT INTO microphone VALUES (?,?,?)",
                   [("maybe", "maybe", 0), ("yes", "yes", 0), ("null", None, None),
                    ("int", 7, "x"), ("blob", b"granted", 0), ("ok", "denied", 0),
                    (b"blob-app-id", "granted", 0)])
    db.commit()
    db.close()
    with caplog.at_level(logging.WARNING, logger="audiopolicyd.microphone.stores"):
        assert await store.get("maybe") is Decision.UNDETERMINED
        assert await store.all() == {
            "maybe": Decision.UNDETERMINED, "yes": Decision.UNDETERMINED,
            "null": Decision.UNDETERMINED, "int": Decision.UNDETERMINED,
            "blob": Decision.UNDETERMINED, "ok": Decision.DENIED}
    assert "garbage decision 'maybe' for maybe" in caplog.text
    # a garbage row is overwritten like any other
    await store.set("maybe", Decision.GRANTED)
    assert await store.get("maybe") is Decision.GRANTED
    await store.close()


async def test_sqlite_rejects_bad_arguments(tmp_path):
    store = SqlitePermissionStore(":memory:")
    with pytest.raises(ValueError):
        await store.get("")
    with pytest.raises(ValueError):
        await store.set("a", "yes")
    await store.close()


def test_sqlite_not_a_database_is_a_store_error_and_left_closed(tmp_path):
    path = tmp_path / "permissions.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(PermissionStoreError, match="cannot open the permission store"):
        SqlitePermissionStore(path)


async def test_a_failing_callback_does_not_stop_the_others(caplog):
    store = SqlitePermissionStore(":memory:")
    seen = []

    def broken(app, decision):
        raise RuntimeError("boom")
    store.on_change(broken)
    remove = store.on_change(lambda app, d: seen.append((app, d)))
    await store.set("a", Decision.GRANTED)
    assert seen == [("a", Decision.GRANTED)]
    assert "permission change callback" in caplog.text
    remove()
    await store.set("a", Decision.DENIED)
    assert seen == [("a", Decision.GRANTED)]
    await store.close()
