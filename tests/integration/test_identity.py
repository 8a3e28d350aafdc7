"""Who records, as the servers vouch for it (issue 9, items 4, 7 and 8), on real servers.

A stream's properties are its client's claims. These tests record the test source ``mic`` (a
sine, peak near 16000) into raw files (s16le stereo 44.1 kHz) and measure them: an app that may
not record gets digital silence, but for :data:`~tests.support.audio.START_LEAK_MS` at its start.

A "Flatpak-like" client runs under bubblewrap (``bwrap``, as Flatpak runs apps) in a new root
holding a ``/.flatpak-info`` and in its own pid namespace, so the pid it claims cannot be
checked from outside: only what the server vouches for (PipeWire's ``pipewire.sec.pid`` of a
native client, from ``SO_PEERCRED``) can name it. See docs/microphone.md, "Who an app is".
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.audio import assert_silenced_from_start, audible_until_ms, wait_recorded
from tests.support.bus import PrivateBus
from tests.support.clients import play
from tests.support.daemon import DaemonProcess
from tests.support.processes import log_tail, wait_for
from tests.support.servers import MIC, AudioServer, PipeWireServer, start_client
from tests.support.sessions import SessionClient
from tests.support.streams import (
    ducked, end_client, raw_volumes, set_raw_volume, sink_inputs, source_outputs,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

GRANTED = "org.example.Granted"  # an app the user granted
#: The app ids of parecord (a link to pacat) and pw-record (a link to pw-cat) on the host.
PACAT = "exe:" + os.path.realpath("/usr/bin/pacat")
PW_CAT = "exe:" + os.path.realpath("/usr/bin/pw-cat")
SANDBOXED = "org.example.Sandboxed"  # the Flatpak-like test app


def permissions(daemon: DaemonProcess) -> dict[str, dict]:
    """``audiopolicyctl permissions --json`` by app id."""
    done = daemon.ctl("permissions", "--json")
    assert done.returncode == 0, done.stderr
    return {e["App"]: e for e in json.loads(done.stdout)}


def grant(daemon: DaemonProcess, app_id: str) -> None:
    done = daemon.ctl("grant", app_id)
    assert done.returncode == 0, f"audiopolicyctl grant {app_id}: {done.stderr}"


def stream_named(server: AudioServer, name: str) -> object | None:
    """The source-output whose ``media.name`` is *name* (a recording's file path: the pid
    a sandboxed client claims is not its pid outside its namespace)."""
    return next((so for so in source_outputs(server) if so.proplist.get("media.name") == name),
                None)


def wait_recording(server: AudioServer, proc: subprocess.Popen, path: Path) -> object:
    """Wait until *proc* records into *path* (its stream linked, the file filling)."""
    def linked() -> object | None:
        assert proc.poll() is None, (f"{proc.args[0]} exited with {proc.returncode}\n"
                                     f"{log_tail(server.dir / 'clients.log')}")
        so = stream_named(server, str(path))
        return so if so is not None and 0 <= so.source < 0xFFFFFFFF else None
    stream = wait_for(linked, 10, f"the recording into {path}")
    wait_for(lambda: path.exists() and path.stat().st_size > 0, 10, f"{path} to fill")
    return stream


def sandbox(app_id: str, root: Path, binds: Sequence[Path], argv: Sequence[str]) -> list[str]:
    """*argv* under bubblewrap as Flatpak runs an app: a new root (the host's ``/usr`` and
    ``/etc`` read-only, *binds* read-write) with ``/.flatpak-info`` naming *app_id*, and its
    own pid namespace."""
    info = root / f"{app_id}.flatpak-info"
    info.write_text(f"[Application]\nname={app_id}\n")
    argv = ["bwrap", "--tmpfs", "/", "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev", "--unshare-pid", "--die-with-parent",
            *(arg for path in binds for arg in ("--bind", str(path), str(path))),
            "--ro-bind", str(info), "/.flatpak-info", *argv]
    return argv


def parecord(path: Path, props: Mapping[str, str] | None = None) -> list[str]:
    return ["parecord", f"--device={MIC}", "--raw", "--latency-msec=20",
            *(f"--property={k}={v}" for k, v in (props or {}).items()), str(path)]


def pw_record(path: Path, role: str | None = None, target: str = MIC) -> list[str]:
    """``pw-record`` (a native PipeWire client) writing raw s16le stereo 44.1 kHz, as
    :func:`~tests.support.clients.record`. *role*: ``--media-role`` (pw-record's default is
    ``Music``)."""
    return ["pw-record", f"--target={target}", "--rate=44100", "--channels=2", "--format=s16",
            "--latency=20ms", *([f"--media-role={role}"] if role is not None else []),
            str(path)]


def start(server: AudioServer, argv: list[str], env: Mapping[str, str] | None = None,
          ) -> subprocess.Popen:
    return start_client(server, argv, env)


def test_a_borrowed_portal_app_id_is_unverified_and_silent(server: AudioServer,
                                                            daemon: DaemonProcess,
                                                            tmp_path: Path) -> None:
    # issue 9 item 4: the portal app id of a granted app, with a pid that cannot be checked
    grant(daemon, GRANTED)
    # and a running process of a granted executable, whose pid a claimer passes off as the one
    # PipeWire vouches for (PulseAudio shows a client's pipewire.sec.pid as claimed)
    sleeper = start(server, ["sleep", "600"])
    grant(daemon, "exe:" + os.path.realpath("/usr/bin/sleep"))
    takes = {pid: tmp_path / f"claims-{pid}.raw" for pid in ("999999999", "1", "abc")}
    for pid, take in takes.items():
        start(server, parecord(take, {"pipewire.access.portal.app_id": GRANTED,
                                      "pipewire.access": "flatpak",
                                      "pipewire.sec.pid": str(sleeper.pid),
                                      "application.process.id": pid}))
    entry = wait_for(lambda: permissions(daemon).get("unverified:pacat"), 10,
                     "three streams of unverified:pacat",
                     until=lambda e: e is not None and e["Recording"] == 3)
    assert entry["Silenced"] is True
    recording = {app for app, e in permissions(daemon).items() if e["Recording"]}
    assert recording == {"unverified:pacat"}, recording
    for take in takes.values():
        wait_recorded(take, audible=False)
        assert_silenced_from_start(server, take)


def test_a_stream_claiming_a_granted_session_owners_pid_is_not_its_app(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    # a session's owner is known by the bus; a stream joined its session by claiming the
    # owner's pid, and recorded with the owner's grant
    owner = SessionClient(server, "owner")
    try:
        owner.create("rec", "record")
        own = tmp_path / "own.raw"
        owner.call("record", own)  # its child: the session's app's stream
        owner.call("active", 1)  # a recording category asks by itself
        app = wait_for(lambda: [a for a, e in permissions(daemon).items() if e["Request"]], 10,
                       "the session's request")
        grant(daemon, app[0])
        wait_recorded(own, audible=True)
        take = tmp_path / "claimer.raw"
        start(server, parecord(take, {"application.process.id": str(owner.proc.pid)}))
        entry = wait_for(lambda: permissions(daemon).get("unverified:pacat"), 10,
                         "the claimer named as itself",
                         until=lambda e: e is not None and e["Recording"] == 1)
        assert entry["Silenced"] is True
        wait_recorded(take, audible=False)
        assert_silenced_from_start(server, take)
    finally:
        owner.close()


def test_a_sandboxed_pulse_client_is_not_vouched_for(server: AudioServer,
                                                     daemon: DaemonProcess,
                                                     tmp_path: Path) -> None:
    # The limit on the PulseAudio protocol: PulseAudio sets nothing for a sandboxed client,
    # and pipewire-pulse 0.3.65 lets the client overwrite the app id it sets, so a Flatpak
    # app's pulse stream cannot be named by its app id: unverified, and silent even granted.
    grant(daemon, SANDBOXED)
    take = tmp_path / "sandboxed-pulse.raw"
    proc = start(server, sandbox(SANDBOXED, tmp_path, [server.dir, tmp_path], parecord(take)))
    wait_recording(server, proc, take)
    entry = wait_for(lambda: permissions(daemon).get("unverified:pacat"), 10,
                     "unverified:pacat recording",
                     until=lambda e: e is not None and e["Recording"] == 1)
    assert entry["Silenced"] is True and entry["SilencedBy"] == ["unverified"]
    assert entry["Request"] == ""  # nobody is asked about an app nobody can grant
    # nor can the user grant it: a grant to an identity nobody vouches for would let every
    # client that claims the binary record
    done = daemon.ctl("grant", "unverified:pacat")
    assert done.returncode != 0 and "cannot be granted" in done.stderr, done
    wait_recorded(take, audible=False)
    assert_silenced_from_start(server, take)


@pytest.mark.parametrize("server", ["pipewire"], indirect=True)
def test_a_flatpak_like_native_client_is_named_by_what_pipewire_vouches_for(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    binds = [server.dir, tmp_path]
    # ungranted: silent from its start, asked for under its Flatpak app id
    take = tmp_path / "sandboxed.raw"
    proc = start(server, sandbox(SANDBOXED, tmp_path, binds, pw_record(take, role="")))
    wait_recording(server, proc, take)
    entry = wait_for(lambda: permissions(daemon).get(SANDBOXED), 10, f"{SANDBOXED} asking",
                     until=lambda e: e is not None and e["Request"] == "pending")
    assert entry["Recording"] == 1 and entry["Silenced"] is True
    wait_recorded(take, audible=False)
    assert_silenced_from_start(server, take)

    # another client claiming its app id (and a pid of a pid namespace) is not it
    claimer = tmp_path / "claimer.raw"
    start(server, parecord(claimer, {"pipewire.access.portal.app_id": SANDBOXED,
                                     "application.process.id": "2"}))
    # another sandboxed app claiming it in its client and stream properties is itself
    other = tmp_path / "other.raw"
    conf = tmp_path / "claims"
    (conf / "client-rt.conf.d").mkdir(parents=True)
    (conf / "client-rt.conf").write_text(Path("/usr/share/pipewire/client-rt.conf").read_text())
    (conf / "client-rt.conf.d" / "claim.conf").write_text(
        f"context.properties = {{ pipewire.access.portal.app_id = {SANDBOXED} }}\n")
    start(server, sandbox("org.example.Other", tmp_path, [*binds, conf],
                          [*pw_record(other, role="")[:-1], "-P",
                           f"{{ pipewire.access.portal.app_id = {SANDBOXED} }}", str(other)]),
          env={"PIPEWIRE_CONFIG_DIR": str(conf)})

    grant(daemon, SANDBOXED)  # granted: it records
    wait_recorded(take, audible=True)
    wait_for(lambda: permissions(daemon), 10, "the claimers named as themselves",
             until=lambda p: p.get("unverified:pacat", {}).get("Recording") == 1
             and p.get("org.example.Other", {}).get("Recording") == 1)
    assert permissions(daemon)[SANDBOXED]["Recording"] == 1
    for path in (claimer, other):
        wait_recorded(path, audible=False)
        assert_silenced_from_start(server, path)


# -- native PipeWire clients (issue 9 item 8) -------------------------------------------------

@pytest.mark.parametrize("server", ["pipewire"], indirect=True)
def test_pw_record_is_silent_from_its_start_until_granted(server: AudioServer,
                                                          daemon: DaemonProcess,
                                                          tmp_path: Path) -> None:
    take = tmp_path / "pw-record.raw"
    # pw-record's default media.role=Music makes it a playback stream, which the playback
    # policy keeps silent whatever the grant (issue 9 item 5, another change); an empty role
    # lets it be classified as a recorder
    proc = start(server, pw_record(take, role=""))
    wait_recording(server, proc, take)
    app = PW_CAT
    wait_for(lambda: permissions(daemon).get(app), 10, f"{app} asking",
             until=lambda e: e is not None and e["Request"] == "pending")
    wait_recorded(take, audible=False)
    assert_silenced_from_start(server, take)
    grant(daemon, app)
    wait_recorded(take, audible=True)


@pytest.mark.parametrize("server", ["pipewire"], indirect=True)
def test_pw_play_is_ducked_like_paplay(server: AudioServer, daemon: DaemonProcess,
                                       tone: Path) -> None:
    game = start(server, ["pw-play", "--media-role=game", str(tone)])
    user = 40000

    def game_stream() -> object | None:
        return next((si for si in sink_inputs(server)
                     if si.proplist.get("application.name") == "pw-play"
                     and 0 <= si.sink < 0xFFFFFFFF), None)
    stream = wait_for(game_stream, 10, "pw-play's stream")
    set_raw_volume(server, stream, user)
    wait_for(lambda: raw_volumes(game_stream()), 10, "the user's volume",
             until=lambda v: v == [user, user])
    phone = play(server, tone, role="phone")
    wait_for(lambda: raw_volumes(game_stream()), 10, "pw-play ducked",
             until=lambda v: v == [ducked(user, 0.2)] * 2)
    end_client(server, phone)
    wait_for(lambda: raw_volumes(game_stream()), 10, "pw-play restored",
             until=lambda v: v == [user, user])


# -- PipeWire's own echo canceller (issue 9 item 7) -------------------------------------------

class EchoCancelPipeWire(PipeWireServer):
    """The test PipeWire with ``libpipewire-module-echo-cancel`` in ``pipewire.conf`` (as a
    desktop configures it): its capture stream records ``mic`` in the PipeWire daemon's own
    process; ``ec_source`` is the cancelled microphone apps record."""

    PIPEWIRE_CONF = """\
context.modules = [
    { name = libpipewire-module-echo-cancel
      args = {
          library.name = aec/libspa-aec-null
          capture.props = { node.name = ec_capture node.target = mic }
          source.props = { node.name = ec_source }
          sink.props = { node.name = ec_sink }
          playback.props = { node.name = ec_playback node.target = speaker }
      } }
]
"""

    def _prepare(self) -> None:
        """The test server's drop-ins, and one for ``pipewire`` loading the echo canceller."""
        super()._prepare()
        conf = self.home / ".config" / "pipewire" / "pipewire.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "echo-cancel.conf").write_text(self.PIPEWIRE_CONF)


@pytest.fixture
def echo_cancel(bus: PrivateBus) -> Iterator[EchoCancelPipeWire]:
    instance = EchoCancelPipeWire(bus)
    try:
        instance.start()
        yield instance
    finally:
        instance.close()


def test_pipewires_echo_canceller_is_infrastructure(echo_cancel: EchoCancelPipeWire,
                                                   tmp_path: Path) -> None:
    server = echo_cancel
    with DaemonProcess(server, tmp_path / "daemon") as daemon:
        daemon.start()
        take = tmp_path / "cancelled.raw"
        proc = start(server, parecord(take)[:1] + ["--device=ec_source"] + parecord(take)[2:])
        wait_recording(server, proc, take)
        wait_recorded(take, audible=False)  # an app recording the cancelled mic is gated
        grant(daemon, PACAT)
        wait_recorded(take, audible=True)  # and hears it once granted: the canceller is not deaf
        capture = [so for so in source_outputs(server)
                   if so.proplist.get("node.name") == "ec_capture"]
        assert capture and not any(so.mute for so in capture), capture
        assert not any(a.startswith("unverified:") for a in permissions(daemon)), \
            permissions(daemon)
        assert audible_until_ms(take) > 0


#: A user's own PipeWire process (``pipewire -c``, a client of the session's PipeWire) with a
#: loopback from the microphone to the speaker: a path to the microphone, not the server's.
USER_LOOPBACK_CONF = """\
context.spa-libs = {
    audio.convert.* = audioconvert/libspa-audioconvert
    support.* = support/libspa-support
}
context.modules = [
    { name = libpipewire-module-protocol-native }
    { name = libpipewire-module-client-node }
    { name = libpipewire-module-adapter }
    { name = libpipewire-module-loopback
      args = {
          capture.props = { node.name = user_loop_capture node.target = mic }
          playback.props = { node.name = user_loop_playback node.target = speaker }
      } }
]
"""


@pytest.mark.parametrize("server", ["pipewire"], indirect=True)
def test_a_users_own_pipewire_process_is_a_client_like_any_other(
        server: AudioServer, daemon: DaemonProcess, tmp_path: Path) -> None:
    conf = tmp_path / "loopback.conf"
    conf.write_text(USER_LOOPBACK_CONF)
    start(server, ["pipewire", "-c", str(conf)])
    capture = wait_for(lambda: next((so for so in source_outputs(server)
                                     if so.proplist.get("node.name") == "user_loop_capture"),
                                    None), 10, "the user's loopback capture",
                       until=lambda so: so is not None and so.mute)
    assert capture.owner_module == 0xFFFFFFFF  # like the server's own: no owner module
    take = tmp_path / "speaker.raw"
    proc = start(server, parecord(take)[:1] + ["--device=speaker.monitor"] + parecord(take)[2:])
    wait_recording(server, proc, take)
    wait_recorded(take, audible=False)
    assert audible_until_ms(take) == 0.0, "the microphone reached the speaker"
    entry = permissions(daemon).get("exe:" + os.path.realpath("/usr/bin/pipewire"))
    assert entry is not None and entry["Silenced"] is True, permissions(daemon)
