"""The router on both real servers, with fake devices that carry a real device's properties
(tests/support/devices.py): a USB headset that appears takes the calls (a legacy
``media.role=phone`` stream and an explicit ``playAndRecord`` session's) and not the music; when
it goes the calls come back; a stream the user moves (``pactl move-sink-input``) stays there
across a route change and a daemon restart until ``audiopolicyctl route reset``; the user's
preference puts a category on a port; the server's default sink never changes. Every
assertion reads the server's own state (pulsectl), never the daemon's word, but for the CLI's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clients import play
from tests.support.daemon import DaemonProcess
from tests.support.devices import LOUDSPEAKER, USB_HEADSET, plug, plugged, unplug
from tests.support.processes import wait_for
from tests.support.servers import AudioServer, pulse
from tests.support.sessions import SessionClient
from tests.support.streams import stream_of, wait_stream

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

#: Seconds to wait for a move (a bound on a wait, never an assertion).
WAIT = 10.0
#: The test bed's headphones sink (tests/support/servers.py): ``device.form_factor=headphone``.
HEADPHONES = "headphones"


def sink_of(server: AudioServer, proc) -> str:
    """The name of the sink *proc*'s playback stream is on, per the server."""
    info = stream_of(server, proc)
    assert info is not None, f"{proc.args[0]} has no stream"
    with pulse(server) as p:
        return next((s.name for s in p.sink_list() if s.index == info.sink), "")


def default_sink(server: AudioServer) -> str:
    with pulse(server) as p:
        return p.server_info().default_sink_name


def wait_on(server: AudioServer, proc, sink: str, what: str) -> None:
    wait_for(lambda: sink_of(server, proc), WAIT, what, until=lambda name: name == sink)


def move(server: AudioServer, proc, sink: str) -> None:
    """The user moves *proc*'s stream (``pactl move-sink-input``)."""
    with pulse(server) as p:
        target = next(s for s in p.sink_list() if s.name == sink)
        p.sink_input_move(stream_of(server, proc).index, target.index)


def ctl_json(daemon: DaemonProcess, *args: str):
    done = daemon.ctl(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def caller(server: AudioServer, daemon: DaemonProcess) -> Iterator[SessionClient]:
    """A client app with an explicit, active ``playAndRecord`` (voiceChat) session."""
    client = SessionClient(server, "caller")
    try:
        client.create("caller", "playAndRecord", "voiceChat")
        assert client.call("active", 1) == "active"
        yield client
    finally:
        client.close()


def test_a_usb_headset_takes_the_calls_not_the_music_and_gives_them_back(
        server: AudioServer, daemon: DaemonProcess, caller: SessionClient, tone: Path) -> None:
    default = default_sink(server)
    call = play(server, tone, role="phone")
    music = play(server, tone, role="music")
    for proc in (call, music):
        wait_stream(server, proc)
    session_call = caller.play(tone)
    # the test bed's headphones: a call's place before the headset (playAndRecord's
    # route.output prefers headphones to the default)
    wait_on(server, call, HEADPHONES, "the legacy call on the headphones")
    wait_on(server, session_call, HEADPHONES, "the session's call on the headphones")
    with plugged(server, USB_HEADSET):
        wait_on(server, call, USB_HEADSET.name, "the legacy call on the headset")
        wait_on(server, session_call, USB_HEADSET.name, "the session's call on the headset")
        routes = ctl_json(daemon, "routes")
        assert sink_of(server, music) == default, "the music follows the default"
        assert default_sink(server) == default
    wait_on(server, call, HEADPHONES, "the legacy call back on the headphones")
    wait_on(server, session_call, HEADPHONES, "the session's call back on the headphones")
    assert sink_of(server, music) == default
    assert default_sink(server) == default, "the daemon never changes the default"
    usb = next(d for d in routes["Devices"] if d["Name"] == USB_HEADSET.name)
    assert (usb["PortType"], usb["Direction"]) == ("usbAudio", "output")
    call_route = next(c for c in routes["Categories"] if c["Category"] == "playAndRecord")
    assert (call_route["Output"], call_route["OutputType"]) == (USB_HEADSET.name, "usbAudio")
    assert ctl_json(daemon, "routes")["Pins"] == [], "the servers' rescues are no user moves"
    explained = ctl_json(daemon, "explain", f"sink-input:{stream_of(server, call).index}")
    assert explained["Route"] == "headphones: first of playAndRecord's route.output present"


def test_a_stream_the_user_moves_stays_there_across_a_route_change_and_a_restart(
        server: AudioServer, daemon: DaemonProcess, tone: Path) -> None:
    default = default_sink(server)
    plug(server, LOUDSPEAKER)
    call = play(server, tone, role="phone")
    wait_stream(server, call)
    wait_on(server, call, HEADPHONES, "the call routed to the headphones")
    # the daemon knows the loudspeaker for more than moves.HOTPLUG_WINDOW by now: a move onto
    # it is not taken for the server's own move onto a device that appeared
    wait_for(lambda: ctl_json(daemon, "routes")["Devices"], WAIT, "the loudspeaker seen",
             until=lambda devices: any(d["Name"] == LOUDSPEAKER.name for d in devices))
    move(server, call, LOUDSPEAKER.name)
    wait_for(lambda: ctl_json(daemon, "routes")["Pins"], WAIT, "the user's move remembered")
    (pin,) = ctl_json(daemon, "routes")["Pins"]
    assert (pin["Category"], pin["Direction"], pin["Device"]) == (
        "playAndRecord", "output", LOUDSPEAKER.name)
    headset = plug(server, USB_HEADSET)  # a route change: the call's category goes to it
    wait_for(lambda: ctl_json(daemon, "routes")["Categories"], WAIT, "the headset routed",
             until=lambda cats: any(c["Output"] == USB_HEADSET.name for c in cats))
    assert sink_of(server, call) == LOUDSPEAKER.name, "the user wins over the headset"
    daemon.restart()
    wait_for(lambda: ctl_json(daemon, "routes")["Sessions"], WAIT, "the call routed again")
    assert sink_of(server, call) == LOUDSPEAKER.name, "the pin survives a restart"
    forgot = ctl_json(daemon, "route", "reset", pin["Application"])
    assert forgot["Forgotten"] == 1
    wait_on(server, call, USB_HEADSET.name, "reset: the call follows its category again")
    assert ctl_json(daemon, "routes")["Pins"] == []
    unplug(server, headset)
    wait_on(server, call, HEADPHONES, "the call back on the headphones")
    assert default_sink(server) == default, "the daemon never changes the default"


def test_the_users_preference_puts_a_category_on_a_port(
        server: AudioServer, daemon: DaemonProcess, tone: Path) -> None:
    default = default_sink(server)
    music = play(server, tone, role="music")
    wait_stream(server, music)
    with plugged(server, LOUDSPEAKER):
        wait_for(lambda: ctl_json(daemon, "routes")["Devices"], WAIT, "the loudspeaker seen",
                 until=lambda devices: any(d["Uid"] == LOUDSPEAKER.name for d in devices))
        assert ctl_json(daemon, "route", "playback", LOUDSPEAKER.name)["Preference"] \
            == LOUDSPEAKER.name
        wait_on(server, music, LOUDSPEAKER.name, "the music on the preferred port")
        bad = daemon.ctl("route", "noSuchCategory", LOUDSPEAKER.name)
        assert bad.returncode == 2 and "Error.UnknownCategory" in bad.stderr
    wait_on(server, music, default, "the music back on the default when the port goes")
    ctl_json(daemon, "route", "playback", "default")
    assert ctl_json(daemon, "routes")["Pins"] == [], "the server's rescue is no user move"
    assert default_sink(server) == default
