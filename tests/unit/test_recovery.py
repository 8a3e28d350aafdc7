"""Recovery (:mod:`audiopolicyd.runtime.recovery`) on a scripted server: journal rows undone
after a crash, rows kept while the server is gone, lingering rows adopted (volume and mute),
and the restore at shutdown that clears the journal only when every write succeeded."""

from __future__ import annotations

import asyncio

import pytest

from audiopolicyd.effects import Applied, scaled
from audiopolicyd.journal import Journal

from .conftest import make_stream
from .test_runtime import GAME_KEY, USER, ducked_game, game, server, start, until  # noqa: F401

pytestmark = pytest.mark.usefixtures("collect_garbage")

DUCKED = scaled(USER, 0.2)


def journal_rows(tmp_path, *rows: Applied, linger: bool = False) -> None:
    """Write rows as a daemon killed earlier left them."""
    journal = Journal(tmp_path / "journal.sqlite3")
    if linger:
        journal.linger(rows)
    else:
        journal.write(rows)
    journal.close()


async def test_a_row_of_a_stream_still_there_is_undone_after_a_crash(server, start, tmp_path):
    server.add(game(1, DUCKED))  # left ducked by a daemon killed during a call
    journal_rows(tmp_path, Applied("sink-input:1", GAME_KEY, USER, 0.2, DUCKED))
    daemon = await start()
    await until(lambda: server.volume("sink-input:1") == USER, "the user's volume back")
    await until(lambda: daemon.journal.effects() == {}, "the row forgotten")
    assert daemon.journal.lingering(GAME_KEY) is None, "adopted as the stream's, not lingering"


async def test_a_row_of_another_stream_at_that_index_is_not_adopted(server, start, tmp_path):
    """The index was reused by another app's stream: its volume is the user's, and the row
    only lingers for the game's restore key."""
    server.add(make_stream(1, role="event", volume=DUCKED))
    journal_rows(tmp_path, Applied("sink-input:1", GAME_KEY, USER, 0.2, DUCKED))
    daemon = await start()
    await asyncio.sleep(0.05)
    assert server.volume("sink-input:1") == DUCKED
    assert daemon.journal.effects() == {}
    assert daemon.journal.lingering(GAME_KEY) is not None


async def test_rows_are_kept_while_the_server_is_gone(server, start):
    daemon = await ducked_game(server, start)
    server.die()
    await until(lambda: not daemon.reconciler.connected.is_set(), "the server gone")
    row = daemon.journal.lingering(GAME_KEY)
    assert row is not None and row.target == DUCKED and row.base == USER
    assert daemon.reconciler.applied == {}
    # the server comes back remembering our duck for the role: the game's new stream gets
    # the user's volume back
    server.start()
    await until(daemon.reconciler.connected.is_set, "reconnected")
    server.add(game(5, DUCKED))
    await until(lambda: server.volume("sink-input:5") == USER, "the user's volume back")


async def test_a_lingering_mute_is_adopted_and_lifted(server, start, tmp_path):
    """The server remembered our mute for the role: a new stream that starts muted gets the
    user's mute back (unmuted)."""
    journal_rows(tmp_path, Applied("sink-input:1", GAME_KEY, USER, muted_by_us=True),
                 linger=True)
    await start()
    server.add(make_stream(4, role="game", muted=True))
    await until(lambda: not server.state["sink-input:4"].muted, "the stream unmuted")


async def test_a_stream_that_starts_at_another_value_forgets_the_lingering_row(server, start,
                                                                              tmp_path):
    journal_rows(tmp_path, Applied("sink-input:1", GAME_KEY, USER, 0.2, DUCKED), linger=True)
    daemon = await start()
    server.add(game(6, (50000, 50000)))
    await until(lambda: daemon.journal.lingering(GAME_KEY) is None, "the row forgotten")
    assert server.volume("sink-input:6") == (50000, 50000)


async def test_restore_all_undoes_every_effect_and_clears_the_journal(server, start):
    daemon = await ducked_game(server, start)
    await daemon.reconciler.restore_all()
    assert server.volume("sink-input:1") == USER
    assert daemon.journal.effects() == {} and daemon.reconciler.applied == {}


async def test_restore_all_keeps_the_rows_when_a_write_fails(server, start):
    daemon = await ducked_game(server, start)
    server.hold()
    restoring = asyncio.ensure_future(daemon.reconciler.restore_all())
    await until(lambda: ("sink-input:1", "volume", USER) in server.writes, "the restore sent")
    server.drop()  # the write never arrives
    await restoring
    assert "sink-input:1" in daemon.journal.effects(), "the next start undoes it"
    assert "sink-input:1" in daemon.reconciler.applied
