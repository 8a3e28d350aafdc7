"""An app's session and its route over D-Bus, on both real servers: ``CurrentRoute`` and
``RouteChanged`` when a USB headset comes and goes (``wakeFromSleep`` around a suspend),
``OverrideOutputAudioPort`` to the speaker
and back, ``SetPreferredInput`` moving the session's recording, and the refusals.

Each app is a separate process holding its own D-Bus connection
(``tests/support/programs/session_client.py``); its paplay / parecord children take the
session's category. Devices are fakes with a real device's properties
(``tests/support/devices.py``), plugged in and out while the streams run. The test servers
have ``speaker`` (no properties: ``virtual``), ``headphones`` (``device.form_factor=headphone``:
``headphones``) and ``mic`` (``virtual``); the shipped ``playAndRecord`` policy prefers
``bluetoothHFP``, ``usbAudio``, ``headphones`` (``headsetMic`` for inputs), ``builtInReceiver``,
then the user's default. Where a stream is, is read from the server (pulsectl), never taken
from the daemon's word; what the app is told is what its process received.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.integration.test_sessions import Apps, apps  # noqa: F401 (the client apps)
from tests.support.daemon import DaemonProcess
from tests.support.devices import LOUDSPEAKER, USB_HEADSET, USB_HEADSET_MIC, plugged
from tests.support.logind import prepare_for_sleep
from tests.support.microphone import ctl_ok, permissions
from tests.support.processes import wait_for
from tests.support.servers import MIC, AudioServer, pulse
from tests.support.sessions import Pid, SessionClient
from tests.support.streams import stream_of, wait_stream

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

WAIT = 10.0  # seconds: a bound on a wait, never an assertion on speed


def device_of(server: AudioServer, proc, kind: str = "sink-input") -> str:
    """The name of the sink (or source) *proc*'s stream is on now, per the server."""
    info = stream_of(server, proc, kind)
    if info is None:
        return ""
    with pulse(server) as p:
        if kind == "sink-input":
            return next((s.name for s in p.sink_list() if s.index == info.sink), "")
        return next((s.name for s in p.source_list() if s.index == info.source), "")


def wait_on(server: AudioServer, proc, name: str, kind: str = "sink-input") -> None:
    wait_for(lambda: device_of(server, proc, kind), WAIT,
             f"{kind} of pid {proc.pid} on {name}", until=lambda on: on == name)


def uids(route: dict, direction: str) -> list[str]:
    return [port["uid"] for port in route[direction]]


def call(apps: Apps, tone: Path) -> tuple[SessionClient, Pid]:
    """An active ``playAndRecord`` session playing a tone, on its first route."""
    app = apps("call")
    app.create("call", "playAndRecord")
    assert app.call("active", "1") == "active"
    player = app.play(tone)
    wait_for(lambda: uids(app.call("get", "CurrentRoute"), "outputs"), WAIT,
             "the call's first route")
    return app, player


def default_sink(server: AudioServer) -> str:
    with pulse(server) as p:
        return p.server_info().default_sink_name


def test_a_usb_headset_takes_the_call_and_gives_it_back_with_route_changed(
        server, apps, tone):
    app, player = call(apps, tone)
    before = app.call("get", "CurrentRoute")
    assert uids(before, "outputs") == ["headphones"]  # playAndRecord prefers headphones
    wait_on(server, player, "headphones")
    assert before["outputs"][0]["port_type"] == "headphones"
    mark = app.mark()
    with plugged(server, USB_HEADSET):
        changed = app.wait_signal("RouteChanged", after=mark,
                                  where=lambda body: body[0]["reason_value"] == 1)["body"][0]
        assert changed["reason"] == "newDeviceAvailable"
        assert changed["previous_route"] == before
        wait_on(server, player, USB_HEADSET.name)
        now = app.call("get", "CurrentRoute")
        assert now["outputs"] == [{"port_type": "usbAudio", "port_name": "USB Headset",
                                   "uid": USB_HEADSET.name}]
        # CurrentRoute was announced before the signal
        props = [e for e in app.events()[mark:] if e.get("signal") == "PropertiesChanged"
                 and "CurrentRoute" in e["body"][1]]
        assert props and props[0]["body"][1]["CurrentRoute"] == now
        mark = app.mark()
    gone = app.wait_signal("RouteChanged", after=mark,
                           where=lambda body: body[0]["reason_value"] == 2)["body"][0]
    assert gone["reason"] == "oldDeviceUnavailable"
    assert gone["previous_route"] == now
    wait_on(server, player, "headphones")
    assert app.call("get", "CurrentRoute") == before
    assert default_sink(server) == "speaker"  # the daemon never changes the default


def test_a_headset_that_goes_while_the_machine_sleeps_is_wake_from_sleep(
        server, apps, daemon, tone):
    # logind is stood in on the private bus (tests/support/logind.py): no systemd runs here
    app, player = call(apps, tone)
    with plugged(server, USB_HEADSET):
        wait_on(server, player, USB_HEADSET.name)
        now = app.call("get", "CurrentRoute")
        prepare_for_sleep(daemon.env, True)
        wait_for(daemon.log_text, WAIT, "the daemon told of the suspend",
                 until=lambda log: "the machine is going to sleep" in log)
        mark = app.mark()
    # the server sees the headset go (before logind says the machine woke)
    gone = app.wait_signal("RouteChanged", after=mark)["body"][0]
    assert (gone["reason"], gone["reason_value"]) == ("wakeFromSleep", 6)
    assert gone["previous_route"] == now
    wait_on(server, player, "headphones")
    prepare_for_sleep(daemon.env, False)
    wait_for(daemon.log_text, WAIT, "the daemon told of the resume",
             until=lambda log: "the machine woke from sleep" in log)
    mark = app.mark()
    with plugged(server, USB_HEADSET):  # back within seconds of the resume
        back = app.wait_signal("RouteChanged", after=mark)["body"][0]
        assert (back["reason"], back["reason_value"]) == ("wakeFromSleep", 6)
        wait_on(server, player, USB_HEADSET.name)


def test_override_to_the_speaker_and_back(server, apps, tone):
    with plugged(server, LOUDSPEAKER), plugged(server, USB_HEADSET):
        app, player = call(apps, tone)
        wait_on(server, player, USB_HEADSET.name)
        before = app.call("get", "CurrentRoute")
        mark = app.mark()
        app.call("override", "speaker")
        changed = app.wait_signal("RouteChanged", after=mark)["body"][0]
        assert (changed["reason"], changed["reason_value"]) == ("override", 4)
        assert changed["previous_route"] == before
        wait_on(server, player, LOUDSPEAKER.name)
        speaker = app.call("get", "CurrentRoute")
        assert speaker["outputs"] == [{"port_type": "builtInSpeaker",
                                       "port_name": "Loudspeaker", "uid": LOUDSPEAKER.name}]
        mark = app.mark()
        app.call("override", "none")
        back = app.wait_signal("RouteChanged", after=mark)["body"][0]
        assert (back["reason"], back["previous_route"]) == ("override", speaker)
        wait_on(server, player, USB_HEADSET.name)
        assert app.call("get", "CurrentRoute") == before


def granted_call(apps: Apps, daemon: DaemonProcess) -> SessionClient:
    """An active ``playAndRecord`` session whose app the user allowed the microphone (it asks
    on its first activation)."""
    app = apps("call")
    app.create("call", "playAndRecord")
    assert app.call("active", "1") == "active"
    asked = wait_for(lambda: [a for a, e in permissions(daemon).items() if e["Request"]], WAIT,
                     "the session's request for the microphone")
    ctl_ok(daemon, "grant", asked[0])
    app.wait_property("RecordPermission", "granted")
    return app


def test_a_preferred_input_takes_the_sessions_recording(server, apps, daemon, tmp_path):
    with plugged(server, USB_HEADSET_MIC):
        app = granted_call(apps, daemon)
        recorder = Pid(app.call("record", str(tmp_path / "take.raw")), "parecord")
        wait_stream(server, recorder, "source-output")
        # playAndRecord prefers the USB microphone over the default (mic)
        wait_on(server, recorder, USB_HEADSET_MIC.name, "source-output")
        inputs = app.call("get", "AvailableInputs")
        assert {p["uid"] for p in inputs} >= {MIC, USB_HEADSET_MIC.name}
        assert not any(p["uid"].endswith(".monitor") for p in inputs)
        mark = app.mark()
        app.call("prefer", MIC)
        wait_on(server, recorder, MIC, "source-output")
        changed = app.wait_signal("RouteChanged", after=mark)["body"][0]
        assert (changed["reason"], changed["reason_value"]) == ("unknown", 0)
        assert uids(changed["previous_route"], "inputs") == [USB_HEADSET_MIC.name]
        assert uids(app.call("get", "CurrentRoute"), "inputs") == [MIC]
        app.call("prefer", "-")  # cleared: the policy's choice again
        wait_on(server, recorder, USB_HEADSET_MIC.name, "source-output")
        error = app.error("prefer", "no_such_source")
        assert error.name == "InputUnavailable"


def test_route_calls_a_category_does_not_take_are_named_errors(server, apps, daemon):
    app = apps("music")
    app.create("music", "playback")
    assert app.error("override", "speaker").name == "IncompatibleCategoryOption"
    assert app.call("get", "AvailableInputs") == []  # playback does not record
    assert app.error("prefer", MIC).name == "InputUnavailable"
    app.call("category", "playAndRecord", "default")
    assert app.error("override", "earpiece").name == "UnknownPortOverride"
    assert app.error("prefer", "x" * 1025).name == "InvalidArgument"
    daemon.assert_running()


def test_a_silenced_recording_waits_for_permission_then_takes_its_route(
        server, apps, daemon, tmp_path):
    """The router leaves a recording the microphone gate holds where it is (a move gives a
    PulseAudio recording its volume back, which the gate took for the app's fight and killed
    the stream: found by these tests); once the app may record, it goes where the session's
    route says (``record`` prefers the USB microphone), never killed."""
    with plugged(server, USB_HEADSET_MIC):
        app = apps("rec")
        app.create("rec", "record")  # record asks on activation too; not answered yet
        assert app.call("active", "1") == "active"
        recorder = Pid(app.call("record", str(tmp_path / "take.raw")), "parecord")
        wait_stream(server, recorder, "source-output")
        asked = wait_for(lambda: [a for a, e in permissions(daemon).items() if e["Request"]],
                         WAIT, "the session's request for the microphone")
        app.call("ping")  # a round trip after the passes that saw the recording
        assert device_of(server, recorder, "source-output") == MIC  # held where it is
        assert uids(app.call("get", "CurrentRoute"), "inputs") == [USB_HEADSET_MIC.name]
        ctl_ok(daemon, "grant", asked[0])
        wait_on(server, recorder, USB_HEADSET_MIC.name, "source-output")
        wait_for(lambda: stream_of(server, recorder, "source-output"), WAIT,
                 "the recording audible", until=lambda info: info is not None and not info.mute)
        assert recorder.poll() is None, "the recording was killed"
