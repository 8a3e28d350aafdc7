"""The composition root's supervision: a long-running task that ends or fails, or an internal
error the reconciler reports, stops the daemon with exit status 1 (after the restore), and the
watchdog is pinged only while a decision pass answers. No server and no bus: the daemon is
built, not run."""

from __future__ import annotations

import asyncio

import pytest

from audiopolicyd import app
from audiopolicyd.app import Daemon, parse_args

# a connection a test leaves open fails that test (Python 3.13 warns when one is freed open)
pytestmark = pytest.mark.usefixtures("collect_garbage")


@pytest.fixture
async def daemon(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    built = Daemon(parse_args(["--state-dir", str(tmp_path / "state"), "--server",
                               f"unix:{tmp_path}/no-server"]))
    yield built
    built.journal.close()


async def test_a_supervised_task_that_fails_stops_the_daemon_with_status_1(daemon):
    async def broken():
        raise RuntimeError("boom")
    daemon._supervise(broken(), "the thing")
    await asyncio.wait_for(daemon._stop.wait(), 5)
    assert daemon._exit == 1


async def test_a_supervised_task_that_ends_stops_the_daemon_with_status_1(daemon):
    async def done():
        return None
    daemon._supervise(done(), "the thing")
    await asyncio.wait_for(daemon._stop.wait(), 5)
    assert daemon._exit == 1


async def test_a_task_ended_by_the_stop_itself_is_not_a_failure(daemon):
    task = daemon._supervise(asyncio.sleep(60), "the thing")
    daemon._stop.set()
    task.cancel()
    await asyncio.sleep(0)
    assert daemon._exit == 0


async def test_an_internal_error_of_the_reconciler_stops_the_daemon(daemon):
    daemon.runtime._fail(ZeroDivisionError("bug"))
    assert daemon._stop.is_set() and daemon._exit == 1


async def test_the_watchdog_is_pinged_only_while_a_decision_pass_answers(daemon, monkeypatch):
    sent = []
    monkeypatch.setattr(app.sd, "notify", sent.append)
    monkeypatch.setenv("WATCHDOG_USEC", "40000")  # 40 ms: pings every 20 ms
    monkeypatch.setattr(app.sd, "watchdog_enabled", lambda: 40000, raising=False)
    pinger = asyncio.ensure_future(daemon._start_watchdog())
    await asyncio.sleep(0.2)
    assert "WATCHDOG=1" in sent
    daemon.runtime.failed = ZeroDivisionError("bug")  # the runtime no longer answers
    await asyncio.sleep(0.05)
    sent.clear()
    await asyncio.sleep(0.2)
    pinger.cancel()
    assert "WATCHDOG=1" not in sent
