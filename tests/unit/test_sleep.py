"""Following logind's suspend and resume (daemon/sleep.py) on a private dbus-daemon, where a
stand-in owns ``org.freedesktop.login1`` and sends ``PrepareForSleep`` as logind does (no
logind runs here: no systemd is PID 1). What the router makes of a resume:
tests/unit/test_router.py."""

from __future__ import annotations

import asyncio
import logging

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from audiopolicyd.sleep import LOGIN1, LOGIN1_MANAGER, LOGIN1_PATH, SleepWatcher


def prepare_for_sleep(start: bool, path: str = LOGIN1_PATH,
                      interface: str = LOGIN1_MANAGER) -> Message:
    return Message.new_signal(path, interface, "PrepareForSleep", "b", [start])


async def until(predicate, what: str, seconds: float = 5.0) -> None:
    for _ in range(int(seconds * 100)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_resume_and_a_suspend_reach_the_listener_and_nobody_else_is_heard(
        bus_address: str) -> None:
    logind = await MessageBus(bus_address=bus_address).connect()
    await logind.request_name(LOGIN1)
    other = await MessageBus(bus_address=bus_address).connect()  # any other client
    heard: list[bool] = []
    watcher = await SleepWatcher.connect(heard.append, bus_address)
    assert watcher is not None
    try:
        run = asyncio.ensure_future(watcher.run())
        # another client's look-alike signals are not let through (the rule names logind)
        await other.send(prepare_for_sleep(False))
        # nor logind's on another path or interface
        await logind.send(prepare_for_sleep(False, path="/org/freedesktop/login1/seat/seat0"))
        await logind.send(prepare_for_sleep(False, interface="org.example.Manager"))
        await logind.send(prepare_for_sleep(True))
        await logind.send(prepare_for_sleep(False))
        await until(lambda: len(heard) >= 2, "both of logind's signals")
        await asyncio.sleep(0.1)  # anything else would have come by now
        assert heard == [True, False]
        assert not run.done()
    finally:
        watcher.close()
        logind.disconnect()
        other.disconnect()
    await asyncio.wait_for(run, 5)  # it returns once the connection is gone


async def test_a_listener_that_raises_is_logged_and_the_watcher_goes_on(
        bus_address: str, caplog) -> None:
    logind = await MessageBus(bus_address=bus_address).connect()
    await logind.request_name(LOGIN1)
    heard: list[bool] = []

    def listener(start: bool) -> None:
        heard.append(start)
        raise RuntimeError("a listener's bug")

    watcher = await SleepWatcher.connect(listener, bus_address)
    assert watcher is not None
    try:
        with caplog.at_level(logging.ERROR, "audiopolicyd.sleep"):
            await logind.send(prepare_for_sleep(True))
            await logind.send(prepare_for_sleep(False))
            await until(lambda: len(heard) == 2, "both signals despite the failure")
        assert "a sleep listener failed" in caplog.text
    finally:
        watcher.close()
        logind.disconnect()


async def test_without_a_system_bus_it_says_so_and_the_daemon_runs_on(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, "audiopolicyd.sleep"):
        watcher = await SleepWatcher.connect(lambda start: None,
                                             f"unix:path={tmp_path / 'no-bus'}")
    assert watcher is None
    assert "no system bus" in caplog.text and "wakeFromSleep" in caplog.text


async def test_only_signals_count(bus_address: str) -> None:
    # a method call to the watcher's connection with the same names is not a resume
    logind = await MessageBus(bus_address=bus_address).connect()
    await logind.request_name(LOGIN1)
    heard: list[bool] = []
    watcher = await SleepWatcher.connect(heard.append, bus_address)
    assert watcher is not None
    try:
        call = Message(destination=watcher.bus.unique_name, path=LOGIN1_PATH,
                       interface=LOGIN1_MANAGER, member="PrepareForSleep", signature="b",
                       body=[False])
        reply = await logind.call(call)
        assert reply.message_type is MessageType.ERROR
        await logind.send(prepare_for_sleep(False))
        await until(lambda: heard, "the signal")
        assert heard == [False]
    finally:
        watcher.close()
        logind.disconnect()


async def test_a_bus_that_refuses_the_match_rule_is_said_and_left(bus_address, monkeypatch,
                                                                  caplog) -> None:
    from audiopolicyd import sleep

    monkeypatch.setattr(sleep, "MATCH", "type='no-such-type'")  # dbus-daemon refuses it
    with caplog.at_level(logging.WARNING, "audiopolicyd.sleep"):
        watcher = await SleepWatcher.connect(lambda start: None, bus_address)
    assert watcher is None
    assert "refused to pass logind's PrepareForSleep" in caplog.text
    assert "MatchRuleInvalid" in caplog.text
