"""Issue 11, "Modes drive processing", on both real servers: a ``voiceChat`` call (an explicit
session with a ``paplay`` and a ``parecord``) gets an echo canceller (``module-echo-cancel``) on
its route, its streams go through it, the canceller's own capture is not gated while the
session's app is granted and hears the microphone through it, a client claiming to be the
canceller stays gated, and the canceller is gone when the call ends; a ``measurement`` call
gets none.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from audiopolicyd.runtime.processing import ECHO_CANCEL_MODULE, NAME_PREFIX
from tests.support.audio import RAW_FRAME_BYTES, RAW_RATE, peak, wait_recorded
from tests.support.clients import record
from tests.support.daemon import DaemonProcess
from tests.support.microphone import PACAT, ctl_ok, permissions
from tests.support.processes import wait_for
from tests.support.servers import MIC, AudioServer, pulse
from tests.support.sessions import SessionClient
from tests.support.streams import wait_stream

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

WAIT = 20.0


def cancellers(server: AudioServer) -> list:
    with pulse(server) as p:
        return [m for m in p.module_list() if m.name == ECHO_CANCEL_MODULE]


def ours(server: AudioServer) -> dict[str, int]:
    """Our canceller's devices present: name -> index."""
    with pulse(server) as p:
        return {d.name: d.index for d in [*p.sink_list(), *p.source_list()]
                if d.name.startswith(NAME_PREFIX) and not d.name.endswith(".monitor")}


def streams_on(server: AudioServer, kind: str, device: int) -> list:
    with pulse(server) as p:
        listed = p.sink_input_list() if kind == "sink-input" else p.source_output_list()
        return [s for s in listed if (s.sink if kind == "sink-input" else s.source) == device]


def call(server: AudioServer, daemon: DaemonProcess, tone: Path, take: Path,
         mode: str) -> SessionClient:
    """A call in *mode* that plays and records, its app granted before it records (so its
    recording is routed from its start; a held one waits for the grant, docs/routing.md)."""
    ctl_ok(daemon, "grant", SESSION_APP)
    client = SessionClient(server, f"talk-{mode}")
    client.create("call", "playAndRecord", mode)
    assert client.call("active", 1) == "active"
    client.play(tone)
    client.call("record", take)
    wait_for(lambda: take.exists() and take.stat().st_size > 0, 10, f"{take} to fill")
    return client


#: The app id of the session client (:class:`SessionClient` runs this interpreter).
SESSION_APP = "exe:" + os.path.realpath(sys.executable)


def test_a_voice_chat_call_records_through_an_echo_canceller_that_goes_with_it(
        server: AudioServer, daemon: DaemonProcess, tone: Path, tmp_path: Path) -> None:
    take = tmp_path / "take.raw"
    client = call(server, daemon, tone, take, "voiceChat")
    (module,) = wait_for(lambda: cancellers(server) or None, WAIT, "the echo canceller")
    args = dict(a.split("=", 1) for a in module.argument.split())
    assert (args["source_master"], args["aec_method"]) == (MIC, "webrtc"), args
    devices = wait_for(lambda: ours(server) if len(ours(server)) == 2 else None, WAIT,
                       "the canceller's sink and source")
    sink, source = devices[args["sink_name"]], devices[args["source_name"]]
    # the session's paplay and parecord go through it; the canceller's own capture records
    # the microphone, never gated: the granted app hears the microphone through it
    wait_for(lambda: [s for s in streams_on(server, "sink-input", sink)
                      if "talk" in s.proplist.get("application.name", "")] or None, WAIT,
             "the call's paplay on the canceller's sink")
    wait_for(lambda: [s for s in streams_on(server, "source-output", source)
                      if s.proplist.get("application.name") == "parecord"] or None, WAIT,
             "the call's parecord on the canceller's source")
    hears(take)
    with pulse(server) as p:
        mic = p.get_source_by_name(MIC).index
    capture = [s for s in streams_on(server, "source-output", mic)
               if s.proplist.get("client.id") == p_client(server, source)
               or s.owner_module == module.index]
    assert capture and not any(s.mute for s in capture), capture
    assert not [a for a in permissions(daemon) if "echo" in a.lower()], permissions(daemon)
    # a client claiming to be the canceller (its link group, PipeWire client, owner module
    # and node name) is a recording of its own app, silent until granted
    claims = {"node.name": "echo-cancel-capture", "media.name": "Echo-Cancel Capture",
              "pulse.module.id": str(module.index)}
    link = p_link_group(server, source)
    if link:
        claims.update({"node.link-group": link, "node.group": link,
                       "client.id": p_client(server, source)})
    claimer = record(server, MIC, props=claims)
    index = wait_stream(server, claimer, kind="source-output").index
    wait_for(lambda: permissions(daemon).get(PACAT), WAIT, "the claimer gated as its app",
             until=lambda e: e is not None and e["Recording"] >= 1 and e["Silenced"])
    assert stream_muted(server, index), "the claimer passes as the canceller"
    # the call ends: the canceller and its devices are gone
    assert client.call("active", 0) == "inactive"
    wait_for(lambda: not cancellers(server) and not ours(server), WAIT,
             "the echo canceller unloaded")
    client.close()


def test_a_measurement_call_gets_no_echo_canceller(
        server: AudioServer, daemon: DaemonProcess, tone: Path, tmp_path: Path) -> None:
    take = tmp_path / "take.raw"
    measuring = call(server, daemon, tone, take, "measurement")
    wait_recorded(take, audible=True, timeout=WAIT)  # the daemon decided on the call
    # proof that the daemon does load one in this state: a voiceChat call beside it
    chatting = call(server, daemon, tone, tmp_path / "chat.raw", "voiceChat")
    (module,) = wait_for(lambda: cancellers(server) or None, WAIT, "the chat's canceller")
    args = dict(a.split("=", 1) for a in module.argument.split())
    assert len(cancellers(server)) == 1
    assert len(ours(server)) == 2 and args["sink_name"] in ours(server)
    chatting.close()  # its client gone: the canceller goes with its session
    wait_for(lambda: not cancellers(server), WAIT, "the chat's canceller unloaded")
    measuring.close()


def hears(take: Path) -> None:
    """Wait until the last 0.2 s written to *take* are not digital silence. Not
    :func:`~tests.support.audio.wait_recorded`'s audible (peak > 1000): the canceller's
    processing (webrtc's gain control and noise suppression) takes the test microphone's
    tone down to a peak of a few hundred; a gated recording is peak 0."""
    chunk = int(0.2 * RAW_RATE) * RAW_FRAME_BYTES

    def last_chunk_peak() -> int:
        size = take.stat().st_size
        return peak(take, size - chunk, size) if size >= chunk else 0
    wait_for(last_chunk_peak, WAIT, f"{take} not silent")


def stream_muted(server: AudioServer, index: int) -> bool:
    with pulse(server) as p:
        return bool(p.source_output_info(index).mute)


def p_client(server: AudioServer, source: int) -> str:
    """The ``client.id`` of our canceller's source ('' on PulseAudio, which sets none)."""
    with pulse(server) as p:
        return p.source_info(source).proplist.get("client.id", "")


def p_link_group(server: AudioServer, source: int) -> str:
    with pulse(server) as p:
        return p.source_info(source).proplist.get("node.link-group", "")


@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
def test_a_daemon_that_stops_or_dies_during_a_call_leaves_no_echo_canceller(
        server: AudioServer, daemon: DaemonProcess, tone: Path, tmp_path: Path,
        how: str) -> None:
    client = call(server, daemon, tone, tmp_path / "take.raw", "voiceChat")
    (module,) = wait_for(lambda: cancellers(server) or None, WAIT, "the echo canceller")
    if how == "SIGTERM":
        assert daemon.stop() == 0
        assert not cancellers(server), "unloaded before the daemon exited"
    else:
        daemon.kill()
        assert [(m.index, m.argument) for m in cancellers(server)] == \
            [(module.index, module.argument)], "killed: nothing unloaded it"
        daemon.start()  # the same server instance: the journal names what it left
        wait_for(lambda: not cancellers(server) and not ours(server), WAIT,
                 "the canceller a killed daemon left unloaded by the next start")
        assert "left behind" in daemon.log_text()
    client.close()
