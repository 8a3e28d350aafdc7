"""Microphone permission on real servers: an app records silence until the user grants it.

The test source ``mic`` is a pipe source fed a 440 Hz sine in real time (peak near 16000:
``tests.support.servers.MIC_FEEDER``); ``parecord`` records it raw into a file, and every
assertion about what an app hears measures that file (digital silence is peak 0; on
pipewire-pulse a new stream may get its first processing cycle before the daemon's mute holds,
up to the 50 ms the gate allows: ``tests.support.audio.START_LEAK_MS``). Mute flags are read
from the server (pulsectl). Decisions go through the real CLI
(``audiopolicyctl grant/deny/reset``), the real terminal agent (``audiopolicyctl agent``) and,
in test_permission_store-like setups, a real ``xdg-permission-store``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.audio import assert_silenced_from_start, wait_recorded
from tests.support.bus import PrivateBus
from tests.support.clients import record, start_in_batches
from tests.support.daemon import AUDIOPOLICYCTL, DaemonProcess
from tests.support.microphone import PACAT, ctl_ok, permissions, start_recording
from tests.support.portal import PermissionStoreProcess
from tests.support.processes import LineReader, stop_process, wait_for
from tests.support.servers import AudioServer, pulse
from tests.support.sessions import SessionClient
from tests.support.streams import source_outputs, stream_state, wait_muted, wait_stream

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

def test_undecided_app_records_silence_until_granted_and_revoked_live(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    take = tmp_path / "take.raw"
    recorder = start_recording(server, take)
    wait_muted(server, recorder, True, kind="source-output")
    wait_for(lambda: permissions(daemon).get(PACAT), 10, "a pending request for pacat",
             until=lambda e: e is not None and e["Request"] == "pending")
    wait_recorded(take, audible=False)
    assert_silenced_from_start(server, take)  # an undecided app records silence

    assert "granted" in ctl_ok(daemon, "grant", "parecord")  # resolved by name
    wait_muted(server, recorder, False, kind="source-output")
    wait_recorded(take, audible=True)
    entry = permissions(daemon)[PACAT]
    assert entry["Decision"] == "granted" and entry["Request"] == ""
    assert entry["Recording"] == 1 and entry["Silenced"] is False

    ctl_ok(daemon, "deny", PACAT)
    wait_muted(server, recorder, True, kind="source-output")
    wait_recorded(take, audible=False)
    assert permissions(daemon)[PACAT]["Silenced"] is True


def test_an_app_that_unmutes_itself_is_killed(server: AudioServer, daemon: DaemonProcess,
                                              tmp_path: Path) -> None:
    """Re-muting after the fact cannot win a race (test_mic_race.py): a stream unmuted against
    the gate is killed, and its recording holds no microphone audio."""
    take = tmp_path / "take.raw"
    recorder = start_recording(server, take)
    wait_muted(server, recorder, True, kind="source-output")
    index = wait_stream(server, recorder, kind="source-output").index
    with pulse(server) as p:
        p.source_output_mute(index, False)
    assert recorder.wait(10) == 1, "parecord's stream was not killed"
    assert_silenced_from_start(server, take)
    assert permissions(daemon)[PACAT]["Fought"] == 1


def test_decisions_survive_a_restart_and_apply_to_new_streams(server: AudioServer,
                                                               daemon: DaemonProcess,
                                                               tmp_path: Path) -> None:
    ctl_ok(daemon, "grant", PACAT)
    daemon.restart()
    take = tmp_path / "take.raw"
    recorder = start_recording(server, take)
    wait_recorded(take, audible=True)
    assert stream_state(server, recorder, kind="source-output")[1] is False


def test_monitor_recordings_are_not_microphones(server: AudioServer, daemon: DaemonProcess,
                                                tmp_path: Path) -> None:
    take = tmp_path / "monitor.raw"
    recorder = record(server, device="speaker.monitor", path=take, latency_ms=20)
    wait_stream(server, recorder, kind="source-output")
    wait_for(lambda: take.exists() and take.stat().st_size > 0, 10, f"{take} to fill")
    wait_muted(server, recorder, False, kind="source-output")
    assert PACAT not in permissions(daemon), "a monitor recording asked for the microphone"


def test_a_session_asks_on_activation_and_request_record_permission_answers_when_granted(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    client = SessionClient(server, "caller")
    # mode default: no echo canceller in the path (this test is about the permission; the
    # canceller's is test_echo_cancel's). Through the canceller, once in CI on pipewire-pulse,
    # the granted recording of the test's steady tone stayed silent for 10 s: WebRTC's noise
    # suppression learning the tone away, most likely (not proven)
    client.create("call", "playAndRecord", "default")
    assert client.call("get", "RecordPermission") == "undetermined"
    take = tmp_path / "call.raw"
    client.call("record", take)  # a child: its stream is the session's app's
    wait_for(lambda: take.exists() and take.stat().st_size > 0, 10, f"{take} to fill")
    client.call("active", 1)  # playAndRecord records: asks by itself
    app = wait_for(lambda: [a for a, e in permissions(daemon).items() if e["Request"]], 10,
                   "the session's request")
    assert len(app) == 1 and app[0].startswith("exe:"), app
    entry = permissions(daemon)[app[0]]
    assert entry["Recording"] == 1 and entry["Silenced"], entry  # the child's stream joined
    wait_recorded(take, audible=False)

    asking = client.send("askmic")  # joins the pending request
    assert client.reply(asking, timeout=0) is None, "answered before anyone decided"
    ctl_ok(daemon, "grant", app[0])
    assert client.reply(asking)["result"] == [True]
    client.wait_property("RecordPermission", "granted")
    wait_recorded(take, audible=True)
    assert client.call("askmic") == [True]  # decided: at once


def test_a_flood_of_streams_from_one_app_makes_one_request(server: AudioServer,
                                                            daemon: DaemonProcess,
                                                            tmp_path: Path) -> None:
    takes = [tmp_path / f"take{i}.raw" for i in range(6)]
    recorders = start_in_batches(server, len(takes), lambda i: record(
        server, path=takes[i], latency_ms=20), kind="source-output")
    entry = wait_for(lambda: permissions(daemon).get(PACAT), 10, "six silenced streams",
                     until=lambda e: e is not None and e["Recording"] == 6)
    assert entry["Request"] == "pending" and entry["Silenced"]
    assert entry["RequestID"] == "r1", "one request for one app"
    for proc in recorders:
        wait_muted(server, proc, True, kind="source-output")
    for take in takes:
        assert_silenced_from_start(server, take)


def test_a_stream_whose_process_is_gone_is_named_unverified_and_cannot_be_granted(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    take = tmp_path / "take.raw"
    # claims a pid that does not exist (the process exited, or lies)
    recorder = record(server, path=take, latency_ms=20,
                      props={"application.process.id": "999999999"})
    wait_for(lambda: [so for so in source_outputs(server)
                      if so.proplist.get("application.process.id") == "999999999"],
             10, "the stream")
    entry = wait_for(lambda: permissions(daemon).get("unverified:pacat"), 10,
                     "unverified:pacat recording")
    # nobody vouches for it: silenced, never asked about, and it cannot be granted
    assert entry["Silenced"] and entry["SilencedBy"] == ["unverified"]
    assert entry["Request"] == ""
    done = daemon.ctl("grant", "unverified:pacat")
    assert done.returncode != 0 and "cannot be granted" in done.stderr, done
    wait_recorded(take, audible=False)
    assert_silenced_from_start(server, take)
    assert recorder.poll() is None


# -- the desktop's permission store ----------------------------------------------------------

STORE_CALL = ("org.freedesktop.impl.portal.PermissionStore",
              "/org/freedesktop/impl/portal/PermissionStore",
              "org.freedesktop.impl.portal.PermissionStore")


def busctl(bus: PrivateBus, *args: str) -> dict:
    done = subprocess.run(["busctl", f"--address={bus.address}", "--json=short", "call",
                           *STORE_CALL, *args], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


def test_decisions_live_in_xdg_permission_store_and_its_changes_apply_live(
        server: AudioServer, bus: PrivateBus, tmp_path: Path) -> None:
    with PermissionStoreProcess(bus, tmp_path / "data"), \
            DaemonProcess(server, tmp_path / "daemon") as daemon:
        daemon.start()
        assert daemon.status()["PermissionStore"].startswith("xdg-permission-store")
        take = tmp_path / "take.raw"
        recorder = start_recording(server, take)
        wait_muted(server, recorder, True, kind="source-output")

        ctl_ok(daemon, "grant", PACAT)
        wait_recorded(take, audible=True)
        table = busctl(bus, "Lookup", "ss", "devices", "microphone")["data"][0]
        assert table[PACAT] == ["yes"], table

        # GNOME Settings (or flatpak permission-set) turns it off: applies to the running stream
        busctl(bus, "SetPermission", "sbssas", "devices", "true", "microphone", PACAT, "1", "no")
        wait_muted(server, recorder, True, kind="source-output")
        wait_recorded(take, audible=False)
        assert permissions(daemon)[PACAT]["Decision"] == "denied"

        busctl(bus, "SetPermission", "sbssas", "devices", "true", "microphone", PACAT, "1",
               "garbage")  # reads as undetermined: silent, asked again
        wait_for(lambda: permissions(daemon)[PACAT], 10, "the garbage read as undetermined",
                 until=lambda e: e["Decision"] == "undetermined")
        assert stream_state(server, recorder, kind="source-output")[1] is True


# -- prompt agents ---------------------------------------------------------------------------

class Agent:
    """``audiopolicyctl agent`` (the terminal agent) as a process: its answers go to stdin."""

    def __init__(self, daemon: DaemonProcess, *args: str) -> None:
        self.proc = subprocess.Popen([*AUDIOPOLICYCTL, "agent", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=daemon.env, text=True)
        self.output = LineReader(self.proc.stdout)

    def answer(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        stop_process(self.proc)
        self.output.join()
        self.proc.stdin.close()
        self.proc.stdout.close()


def registered(daemon: DaemonProcess) -> str:
    return wait_for(lambda: daemon.status()["PermissionAgent"], 10, "an agent to register")


def prompting(daemon: DaemonProcess, app: str = PACAT) -> dict:
    return wait_for(lambda: permissions(daemon).get(app), 10, f"{app}'s request at the agent",
                    until=lambda e: e is not None and e["Request"] == "prompting")


def test_the_terminal_agent_asks_and_the_answer_unmutes_the_running_stream(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    agent = Agent(daemon)
    try:
        registered(daemon)
        take = tmp_path / "take.raw"
        recorder = start_recording(server, take)
        prompting(daemon)
        wait_recorded(take, audible=False)
        agent.answer("y")
        wait_muted(server, recorder, False, kind="source-output")
        wait_recorded(take, audible=True)
        assert permissions(daemon)[PACAT]["Decision"] == "granted"

        second = Agent(daemon)  # one agent per session
        assert second.proc.wait(15) != 0
        second.close()
        assert any("AgentExists" in line for line in second.output.lines), second.output.lines
    finally:
        agent.close()


def test_an_agent_that_never_answers_times_out_and_the_app_can_ask_again(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.restart("--prompt-timeout", "4")
    agent = Agent(daemon)  # asks, and nobody types anything
    try:
        registered(daemon)
        take = tmp_path / "take.raw"
        recorder = start_recording(server, take)
        first = prompting(daemon)["RequestID"]
        wait_for(lambda: permissions(daemon)[PACAT], 10, "the request to time out",
                 until=lambda e: e["Request"] == "")
        assert permissions(daemon)[PACAT]["Decision"] == "undetermined"
        assert stream_state(server, recorder, kind="source-output")[1] is True
        wait_recorded(take, audible=False)

        record(server, path=os.devnull, latency_ms=20)  # it records again: asked again
        assert prompting(daemon)["RequestID"] != first
    finally:
        agent.close()


def test_an_agent_that_crashes_mid_prompt_leaves_the_request_pending(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    agent = Agent(daemon)
    try:
        registered(daemon)
        take = tmp_path / "take.raw"
        recorder = start_recording(server, take)
        prompting(daemon)
        agent.proc.kill()
        wait_for(lambda: permissions(daemon)[PACAT], 10, "the request back to pending",
                 until=lambda e: e["Request"] == "pending")
        assert daemon.status()["PermissionAgent"] == ""
        assert stream_state(server, recorder, kind="source-output")[1] is True
        wait_recorded(take, audible=False)

        again = Agent(daemon)  # the next agent gets it
        try:
            prompting(daemon)
            again.answer("n")
            wait_for(lambda: permissions(daemon)[PACAT], 10, "denied",
                     until=lambda e: e["Decision"] == "denied")
            wait_recorded(take, audible=False)
        finally:
            again.close()
    finally:
        agent.close()


def test_the_desktops_global_switch_silences_granted_apps_live(server: AudioServer,
                                                                daemon: DaemonProcess,
                                                                tmp_path: Path) -> None:
    env = daemon.env  # dconf keeps the key under the daemon's XDG_CONFIG_HOME
    dconf = subprocess.Popen(["/usr/libexec/dconf-service"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def switch(value: str) -> None:
        done = subprocess.run(["gsettings", "set", "org.gnome.desktop.privacy",
                               "disable-microphone", value], env=env, capture_output=True,
                              text=True, timeout=10)
        assert done.returncode == 0, done.stderr
    try:
        ctl_ok(daemon, "grant", PACAT)
        take = tmp_path / "take.raw"
        recorder = start_recording(server, take)
        wait_recorded(take, audible=True)
        switch("true")
        wait_muted(server, recorder, True, kind="source-output")
        wait_recorded(take, audible=False)
        assert daemon.status()["MicrophoneDisabled"] is True
        assert permissions(daemon)[PACAT]["Decision"] == "granted"  # the decision is kept
        switch("false")
        wait_muted(server, recorder, False, kind="source-output")
        wait_recorded(take, audible=True)
    finally:
        stop_process(dconf)
