"""``audiopolicyctl run`` gives a legacy program a session; the shipped examples interrupt and
resume each other through the real daemon (both servers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.audio import make_tone
from tests.support.clients import play
from tests.support.daemon import AUDIOPOLICYCTL, DaemonProcess
from tests.support.processes import child_env, stop_process, wait_for
from tests.support.servers import AudioServer
from tests.support.sessions import Pid
from tests.support.streams import ducked, set_user_volume, wait_muted, wait_stream, wait_volume

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER = 40000
CALL = 0.2  # playAndRecord.toml: activation.mixable_others duck level


def children(pid: int) -> list[int]:
    """Child pids of a process (Linux /proc)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    out = open(log, "w")
    proc = subprocess.Popen(args, env=child_env(env), stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    out.close()
    return proc


def test_run_gives_a_legacy_program_a_session(server: AudioServer, daemon: DaemonProcess,
                                              tone: Path, tmp_path: Path) -> None:
    short = make_tone(tmp_path / "short.wav", seconds=4)
    music = play(server, tone, role="music")
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)
    wait_stream(server, music)
    run = spawn([*AUDIOPOLICYCTL, "run", "--category", "playAndRecord", "--mode", "voiceChat",
                 "--", "paplay", "--property=media.role=game", str(short)],
                daemon.env, tmp_path / "run.log")
    try:
        (child_pid,) = wait_for(lambda: children(run.pid), 10, "run to start its command")
        child = Pid(child_pid, "paplay")
        # its 'game' stream now is a call: music (no MPRIS player) is muted, games duck
        wait_muted(server, music, True)
        wait_volume(server, game, ducked(USER, CALL))
        index = wait_stream(server, child).index
        view = wait_for(lambda: daemon.stream_view(index), 10, "the daemon to list it",
                        until=lambda v: v is not None and v["Category"] == "playAndRecord")
        assert view["Session"].startswith("session:") and view["Effect"] == "none"
        sessions = json.loads(daemon.ctl("sessions", "--json").stdout)
        (session,) = sessions
        assert (session["Category"], session["Mode"], session["State"]) == (
            "playAndRecord", "voiceChat", "active")
        music_index = wait_stream(server, music).index
        explained = json.loads(daemon.ctl("explain", f"sink-input:{music_index}",
                                          "--json").stdout)
        assert explained["Effect"] == "mute"
        assert any("playAndRecord.toml" in r and view["Session"] in r
                   for r in explained["Reasons"])
        assert run.wait(30) == 0, (tmp_path / "run.log").read_text()
    finally:
        stop_process(run)
    wait_muted(server, music, False)
    wait_volume(server, game, USER)
    assert json.loads(daemon.ctl("sessions", "--json").stdout) == []


def test_run_is_refused_during_a_call_and_waits_with_delay_if_busy(
        server: AudioServer, daemon: DaemonProcess, tone: Path, tmp_path: Path) -> None:
    phone = play(server, tone, role="phone")  # a legacy app's call: an implicit session
    wait_stream(server, phone)
    refused = daemon.ctl("run", "--category", "playback", "--", "true")
    assert refused.returncode == 1
    assert "InsufficientPriority" in refused.stderr
    waiting = spawn([*AUDIOPOLICYCTL, "run", "--category", "playback", "--delay-if-busy", "--",
                     sys.executable, "-c", "raise SystemExit(5)"], daemon.env,
                    tmp_path / "wait.log")
    try:
        wait_for(lambda: json.loads(daemon.ctl("sessions", "--json").stdout), 10,
                 "the delayed session", until=lambda s: s and s[0]["State"] == "delayed")
        assert waiting.poll() is None  # its command has not run
        stop_process(phone)
        assert waiting.wait(30) == 5, (tmp_path / "wait.log").read_text()  # exit code passed
    finally:
        stop_process(waiting)


def test_the_examples_interrupt_and_resume_each_other(server: AudioServer,
                                                      daemon: DaemonProcess,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "music.log"
    music = spawn([sys.executable, str(ROOT / "examples/music_player.py"), "--seconds", "30"],
                  daemon.env, log)
    try:
        wait_for(log.read_text, 15, "the music player to play", until=lambda t: "playing" in t)
        call = subprocess.run([sys.executable, str(ROOT / "examples/voip_call.py"),
                               "--seconds", "1"], env=child_env(daemon.env),
                              capture_output=True, text=True, timeout=30)
        assert call.returncode == 0, call.stderr + call.stdout
        text = wait_for(log.read_text, 15, "the music player to resume",
                        until=lambda t: "resumed" in t)
        assert text.index("interrupted") < text.index("resumed")
    finally:
        stop_process(music)
