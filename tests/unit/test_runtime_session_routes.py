"""An app's session and its route with the real runtime and router on a scripted server
(:mod:`tests.support.fake_backend`): a ``playAndRecord`` session's stream moves to a USB
headset that appears and comes back when it goes, with ``RouteChanged`` (Apple's reason, the
previous route) after ``CurrentRoute``; the speaker override moves it to the built-in speaker
and back; a preferred input moves its recording; ``AvailableInputs`` follows the devices."""

from __future__ import annotations

import dataclasses
import itertools
import os

import pytest

from audiopolicyd.appsessions import AppSessions
from audiopolicyd.identity import Identity
from audiopolicyd.model import Device, StreamKind
from audiopolicyd.route import Route, RouteChangeReason
from audiopolicyd.sessionroutes import SessionRoutes

from .conftest import make_stream
from .test_router import USB, on, plug, server, start, unplug  # noqa: F401 (fixtures)
from .test_runtime import Daemon, until

pytestmark = pytest.mark.usefixtures("collect_garbage")

LAPTOP = Device("sink", 5, "laptop", "Laptop speaker", form_factor="speaker")
USB_MIC = Device("source", 7, "usb_mic", "USB Headset", bus="usb", form_factor="headset")
CALL, RECORDING = "sink-input:1", "source-output:2"


class Wired:
    """A started runtime given explicit sessions and their routes, wired as app.py wires them;
    the sessions' events in :attr:`events` as ``(session id, what, payload)``."""

    def __init__(self, daemon: Daemon, policies, pm):
        self.daemon = daemon
        runtime = daemon.reconciler
        self.sessions = AppSessions(lambda: policies, itertools.count(1),
                                    runtime.request_reconcile, pm=pm)
        runtime.app_sessions = self.sessions
        self.routes = SessionRoutes(self.sessions, lambda: policies)
        self.routes.attach(runtime)
        self.events: list[tuple[str, str, dict]] = []
        self.sessions.listeners.append(
            lambda s, what, payload: self.events.append((s.id, what, dict(payload))))

    def call(self):
        """A session of this process in ``playAndRecord``, active."""
        session = self.sessions.create(":1.5", Identity(pid=os.getpid(), exe="/usr/bin/call"),
                                       {"Name": "call"})
        self.sessions.set_category(session, "playAndRecord", "default", [])
        self.sessions.set_active(session, True, [])
        return session

    def route_changes(self, session) -> list[dict]:
        return [p for sid, what, p in self.events if sid == session.id and what == "RouteChanged"]


@pytest.fixture
async def wired(server, start, policies, pm):
    server.devices.append(LAPTOP)
    return Wired(await start(), policies, pm)


async def a_call(server, wired):
    session = wired.call()
    server.add(make_stream(1, pid=os.getpid(), app="call"))
    await until(lambda: wired.routes.current_route(session).outputs, "the call's first route")
    await wired.daemon.reconciler.answers(5.0)
    return session


async def test_a_usb_headset_takes_the_sessions_call_with_route_changed(server, wired):
    session = await a_call(server, wired)
    before = wired.routes.current_route(session)
    assert [p.port_type for p in before.outputs] == ["virtual"]  # the default: speaker
    plug(server, USB)
    await until(lambda: on(server, CALL) == server.device(USB.name).id, "the call on USB")
    await until(lambda: wired.route_changes(session), "RouteChanged")
    (changed,) = wired.route_changes(session)
    assert changed == {"reason": RouteChangeReason.newDeviceAvailable, "previous_route": before}
    now = wired.routes.current_route(session)
    assert [p.uid for p in now.outputs] == ["usb_headset"]
    announced = [p for sid, what, p in wired.events
                 if what == "PropertiesChanged" and "CurrentRoute" in p]
    assert announced[-1]["CurrentRoute"] == now  # before RouteChanged
    assert wired.events.index((session.id, "PropertiesChanged", announced[-1])) < \
        wired.events.index((session.id, "RouteChanged", changed))
    unplug(server, USB)
    await until(lambda: len(wired.route_changes(session)) == 2, "the headset's going")
    gone = wired.route_changes(session)[1]
    assert gone == {"reason": RouteChangeReason.oldDeviceUnavailable, "previous_route": now}
    await wired.daemon.reconciler.answers(5.0)
    assert on(server, CALL) == server.device("speaker").id
    assert wired.routes.current_route(session) == before


async def test_the_speaker_override_moves_the_call_and_back(server, wired):
    session = await a_call(server, wired)
    plug(server, USB)
    await until(lambda: on(server, CALL) == server.device(USB.name).id, "the call on USB")
    await until(lambda: wired.route_changes(session), "newDeviceAvailable")
    headset = wired.routes.current_route(session)
    wired.routes.override_output(session, "speaker")
    await until(lambda: on(server, CALL) == server.device(LAPTOP.name).id, "on the laptop")
    await until(lambda: len(wired.route_changes(session)) == 2, "RouteChanged override")
    changed = wired.route_changes(session)[1]
    assert changed == {"reason": RouteChangeReason.override, "previous_route": headset}
    assert [p.port_type for p in wired.routes.current_route(session).outputs] == [
        "builtInSpeaker"]
    wired.routes.override_output(session, "none")
    await until(lambda: on(server, CALL) == server.device(USB.name).id, "back on USB")
    await until(lambda: len(wired.route_changes(session)) == 3, "RouteChanged override")
    assert wired.route_changes(session)[2]["reason"] is RouteChangeReason.override


async def test_a_preferred_input_moves_the_sessions_recording(server, wired):
    session = wired.call()
    mic = server.device("mic")
    server.add(dataclasses.replace(  # recording the fake's mic
        make_stream(2, StreamKind.SOURCE_OUTPUT, pid=os.getpid(), app="call"), device=mic.id))
    await until(lambda: RECORDING in wired.daemon.reconciler.router.reasons, "routed")
    plug(server, USB_MIC)
    usb = server.device(USB_MIC.name).id
    await until(lambda: on(server, RECORDING) == usb, "the recording on the USB mic")
    assert [p.uid for p in wired.routes.available_inputs(session)] == ["mic", "usb_mic"]
    await until(lambda: available(wired, session) == ["mic", "usb_mic"],
                "AvailableInputs announced with the USB mic")
    wired.routes.set_preferred_input(session, "mic")
    await until(lambda: on(server, RECORDING) == mic.id, "back on mic")
    await until(lambda: [p.uid for p in wired.routes.current_route(session).inputs] == ["mic"],
                "the route's input")
    wired.routes.set_preferred_input(session, "")
    await until(lambda: on(server, RECORDING) == usb, "the policy's choice again")
    unplug(server, USB_MIC)
    await until(lambda: available(wired, session) == ["mic"], "AvailableInputs without it")
    await until(lambda: on(server, RECORDING) == mic.id, "rescued to mic")


def available(wired, session) -> list[str] | None:
    """The uids of the last ``AvailableInputs`` announced to *session*, None before any."""
    announced = [p["AvailableInputs"] for sid, what, p in wired.events
                 if sid == session.id and what == "PropertiesChanged" and "AvailableInputs" in p]
    return [port.uid for port in announced[-1]] if announced else None


async def test_a_listener_that_raises_after_a_pass_does_not_stop_the_runtime(server, wired):
    def broken() -> None:
        raise RuntimeError("a bug in a listener")
    wired.daemon.reconciler.on_pass.insert(0, broken)
    session = await a_call(server, wired)
    assert wired.routes.current_route(session) != Route()
    assert wired.daemon.failures == []
