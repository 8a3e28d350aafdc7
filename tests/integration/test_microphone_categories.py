"""Issue 9 items 5 and 6 on real servers: a recorder's category never mutes it for good, the
indicator says why an app records silence, and an app that may not record silences nobody.

Every claim about what an app hears measures its recording (``parecord --raw``, or
``pw-record`` writing raw s16 stereo at 44.1 kHz to its stdout, the same format): digital
silence is peak 0 (``tests.support.audio.assert_silenced_from_start`` allows pipewire-pulse's first
processing cycle). Decisions go through the real CLI; the indicator is read through the CLI
(``GetRecordPermissions``), the Manager's properties (``busctl``) and its signals (``gdbus
monitor``).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.audio import assert_silenced_from_start, wait_recorded
from tests.support.clients import play, watch
from tests.support.daemon import DaemonProcess
from tests.support.microphone import PACAT, ctl_ok, permissions, start_recording
from tests.support.processes import child_env, wait_for
from tests.support.servers import MIC, AudioServer
from tests.support.sessions import SessionClient
from tests.support.streams import raw_volumes, stream_state, wait_muted, wait_stream

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

NAME = "io.github.audiopolicyd.AudioPolicy1"
ROOT = "/io/github/audiopolicyd/AudioPolicy1"


def manager_property(daemon: DaemonProcess, name: str):
    """A property of the Manager, as busctl's JSON gives it (``{"type": .., "data": ..}``)."""
    done = subprocess.run(["busctl", f"--address={daemon.env['DBUS_SESSION_BUS_ADDRESS']}",
                           "--json=short", "get-property", NAME, ROOT, NAME + ".Manager", name],
                          capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def indicator(daemon: DaemonProcess) -> tuple[list, dict]:
    """``Recording`` (``a(ssbu)``) and ``SilencedBy`` (``a{sas}``), as busctl reads them."""
    return (manager_property(daemon, "Recording")["data"],
            manager_property(daemon, "SilencedBy")["data"])


def recording_entry(daemon: DaemonProcess, app: str, silenced: bool) -> dict:
    """Wait until ``audiopolicyctl permissions`` lists *app* recording, (not) silenced."""
    return wait_for(lambda: permissions(daemon).get(app), 10,
                    f"{app} recording, {'silenced' if silenced else 'audible'}",
                    until=lambda e: e is not None and e["Recording"] >= 1
                    and e["Silenced"] is silenced)


def assert_recorded_as(daemon: DaemonProcess, index: int, category: str) -> None:
    view = wait_for(lambda: daemon.stream_view(index, "source-output"), 10,
                    f"source-output:{index} in the daemon's streams")
    assert view["Category"] == category, view


def test_a_recorder_claiming_a_playback_role_is_silent_until_granted_then_hears(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    # Before: media.role=music made the recording `playback`, whose policy has
    # records = false: granted, it stayed silent while the indicator said it was not.
    _monitor, signals = watch(server, [
        "gdbus", "monitor", "--session", "--dest", NAME, "--object-path", ROOT], daemon.env)
    take = tmp_path / "take.raw"
    recorder = start_recording(server, take, role="music")
    index = wait_stream(server, recorder, kind="source-output").index
    assert_recorded_as(daemon, index, "record")
    entry = recording_entry(daemon, PACAT, silenced=True)
    assert entry["SilencedBy"] == ["permission"], entry
    recording, silenced_by = indicator(daemon)
    assert [r[0] for r in recording] == [PACAT] and recording[0][2] is True
    assert silenced_by == {PACAT: ["permission"]}
    wait_recorded(take, audible=False)
    assert_silenced_from_start(server, take)

    ctl_ok(daemon, "grant", PACAT)
    wait_muted(server, recorder, False, kind="source-output")
    wait_recorded(take, audible=True)
    entry = recording_entry(daemon, PACAT, silenced=False)
    assert entry["SilencedBy"] == [], entry
    recording, silenced_by = indicator(daemon)
    assert recording[0][2] is False and silenced_by == {}

    ctl_ok(daemon, "deny", PACAT)
    wait_recorded(take, audible=False)
    assert recording_entry(daemon, PACAT, silenced=True)["SilencedBy"] == ["permission"]
    shown = daemon.ctl("permissions")
    assert shown.returncode == 0 and "(silenced: permission)" in shown.stdout, shown.stdout

    # an indicator following the signals saw: silenced (permission), audible, silenced again
    def said(line: str) -> str:
        if "RecordingChanged" in line:
            return "silenced" if f"'{PACAT}', 'parecord', true" in line else "audible"
        if "'SilencedBy'" in line:
            return "why: permission" if f"'{PACAT}': ['permission']" in line else "why: none"
        return ""
    wait_for(lambda: [w for w in map(said, signals.lines) if w], 10, "the signals",
             until=lambda seen: seen[-2:] == ["silenced", "why: permission"])
    seen = [w for w in map(said, signals.lines) if w]
    assert seen[:2] == ["silenced", "why: permission"], signals.lines
    assert "audible" in seen and "why: none" in seen, signals.lines


def pw_record(server: AudioServer, path: Path, *args: str) -> subprocess.Popen:
    """``pw-record`` (a native PipeWire client: not a libpulse one) from ``mic`` into *path*,
    raw s16 stereo at 44.1 kHz (:func:`~tests.support.clients.record`'s format), with its own
    defaults otherwise: ``media.role=music``."""
    assert shutil.which("pw-record"), "pw-record is missing: apt-get install pipewire-bin"
    with open(path, "wb") as out:
        proc = subprocess.Popen(["pw-record", "--target", MIC, "--rate", "44100",
                                 "--channels", "2", "--format", "s16", "--latency", "20ms",
                                 *args, "-"], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.DEVNULL, env=child_env(server.env))
    server.clients.append(proc)
    return proc


@pytest.mark.parametrize("server", ["pipewire"], indirect=True)
def test_pw_record_is_silent_until_granted_then_hears(server: AudioServer,
                                                       daemon: DaemonProcess,
                                                       tmp_path: Path) -> None:
    # pw-record speaks PipeWire's native protocol; pipewire-pulse shows its stream as a
    # source-output with media.role=music (there is no PulseAudio equivalent of this client).
    take = tmp_path / "take.raw"
    recorder = pw_record(server, take)
    wait_for(lambda: take.exists() and take.stat().st_size > 0, 10, f"{take} to fill")
    listed = wait_for(lambda: [e for e in permissions(daemon).values() if e["Recording"]], 10,
                      "pw-record in the indicator")
    (entry,) = listed
    app = entry["App"]
    (key,) = entry["Streams"]
    assert_recorded_as(daemon, int(key.split(":")[1]), "record")  # before: playback
    assert entry["Silenced"] and entry["SilencedBy"] == ["permission"], entry
    wait_recorded(take, audible=False)
    assert_silenced_from_start(server, take)

    ctl_ok(daemon, "grant", app)
    wait_recorded(take, audible=True)
    assert recording_entry(daemon, app, silenced=False)["SilencedBy"] == []
    assert recorder.poll() is None


def test_an_ungranted_recording_silences_nobody_and_a_granted_one_does_what_record_says(
        server: AudioServer, daemon: DaemonProcess, tone: Path, tmp_path: Path) -> None:
    music = play(server, tone, role="music")
    wait_stream(server, music)
    take = tmp_path / "take.raw"
    recorder = start_recording(server, take)  # parecord: `record`, which silences others
    index = wait_stream(server, recorder, kind="source-output").index
    assert_recorded_as(daemon, index, "record")
    recording_entry(daemon, PACAT, silenced=True)
    wait_recorded(take, audible=False)
    # The pass that listed the recording decided the music's effect: none. Before: its
    # implicit record session was active and muted every other output.
    view = wait_stream(server, music)
    assert daemon.stream_view(view.index)["Effect"] == "none"
    assert stream_state(server, music) == (raw_volumes(view), False)
    session = daemon.stream_view(index, "source-output")["Session"]
    assert "record" in session, session

    ctl_ok(daemon, "grant", PACAT)  # now it records, and its session silences the music
    wait_recorded(take, audible=True)
    wait_muted(server, music, True)
    assert daemon.stream_view(view.index)["Effect"] == "mute"

    ctl_ok(daemon, "deny", PACAT)  # silent again: it acts on nobody again
    wait_recorded(take, audible=False)
    wait_muted(server, music, False)


def test_an_explicit_session_that_does_not_record_is_shown_silenced_by_its_policy(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    # An app declares `playback` (AVAudioSession: it does not record) and records anyway: its
    # recording is muted by the policy, granted or not. Before: granted, the indicator said
    # Silenced false while it recorded silence.
    client = SessionClient(server, "player")
    client.create("music", "playback")
    take = tmp_path / "take.raw"
    client.call("record", take)  # a child: its stream is the session's app's
    wait_for(lambda: take.exists() and take.stat().st_size > 0, 10, f"{take} to fill")
    (app,) = wait_for(lambda: [a for a, e in permissions(daemon).items() if e["Recording"]],
                      10, "the session's recording")
    entry = recording_entry(daemon, app, silenced=True)
    assert entry["SilencedBy"] == ["permission", "policy"], entry
    ctl_ok(daemon, "grant", app)
    wait_for(lambda: permissions(daemon)[app], 10, "granted, still silenced by the policy",
             until=lambda e: e["Decision"] == "granted" and e["Silenced"]
             and e["SilencedBy"] == ["policy"])
    wait_recorded(take, audible=False)
    assert_silenced_from_start(server, take)
