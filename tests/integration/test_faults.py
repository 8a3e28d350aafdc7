"""Faults around the daemon: a full or read-only state directory, the session bus dying, and a
stream the server cannot describe. The daemon never runs on deaf, and never leaves a stream
altered by it.

* Disk full: the journal cannot record a new effect, so none is applied (a crash would leave
  it for good); effects already in force are still undone, ``status`` says why, and SIGTERM
  restores everything. Once the disk has room, effects apply again.
* A read-only state directory at start: one clear line, exit status 1.
* The session bus dies: the daemon restores every effect and exits with status 1 (systemd
  restarts it, ``Restart=on-failure``); it never runs on without its name.
* A stream with a 64 KiB binary property: pipewire-pulse describes it in a reply libpulse
  rejects, which costs any client its connection. The daemon skips that stream and keeps
  enforcing, with a bounded number of reconnects.

Assertions read the servers (pulsectl) and the daemon's status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bus import PrivateBus, name_has_owner
from tests.support.clients import play, record
from tests.support.daemon import AUDIOPOLICYD, DaemonProcess
from tests.support.processes import PROGRAMS, wait_for
from tests.support.servers import AudioServer, pulse
from tests.support.streams import (
    ducked, end_client, raw_volumes, set_user_volume, stream_state, wait_muted, wait_stream,
    wait_volume,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

USER = 40000
CALL = 0.2


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "2m", options: str = "") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (needs root, or sudo without a password: CI
    runs as root), unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    done = subprocess.run([*sudo, "mount", "-t", "tmpfs", "-o", f"size={size}{options}",
                           "tmpfs", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, ("this test mounts a small tmpfs (as root or with sudo -n): "
                                  f"{done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run([*sudo, "umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; return the ballast file."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return ballast


def test_disk_full_applies_no_new_effect_and_still_undoes(server: AudioServer, tmp_path: Path,
                                                          tone: Path) -> None:
    with small_filesystem(tmp_path / "state") as state, \
            DaemonProcess(server, tmp_path / "daemon") as daemon:
        daemon.start("--state-dir", str(state))
        game = play(server, tone, role="game")
        set_user_volume(server, game, USER)
        phone = play(server, tone, role="phone")
        wait_volume(server, game, ducked(USER, CALL))

        ballast = fill(state)
        end_client(server, phone)
        wait_volume(server, game, USER)  # an effect in force is undone, disk full or not

        phone = play(server, tone, role="phone")
        problem = wait_for(lambda: daemon.status()["JournalProblem"], 10,
                           "status to say the journal cannot be written")
        assert "full" in problem, problem
        time.sleep(0.5)
        assert stream_state(server, game) == ([USER, USER], False), \
            "no effect the journal cannot record"

        ballast.unlink()  # room again: the daemon tries again by itself
        wait_volume(server, game, ducked(USER, CALL), timeout=15)
        assert daemon.status()["JournalProblem"] == ""

        fill(state)
        assert daemon.stop() == 0
        assert stream_state(server, game) == ([USER, USER], False), "SIGTERM restored it"


def test_a_read_only_state_directory_is_one_clear_line(server: AudioServer, tmp_path: Path
                                                       ) -> None:
    with small_filesystem(tmp_path / "state", options=",ro") as state:
        daemon = DaemonProcess(server, tmp_path / "daemon")
        done = subprocess.run([*AUDIOPOLICYD, "--log-level", "warning",
                               "--state-dir", str(state / "audiopolicyd")],
                              env=daemon.env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("audiopolicyd: cannot open the effects journal ")
    assert "Read-only file system" in lines[0] and "--state-dir" in lines[0], lines[0]


def test_losing_the_bus_restores_everything_and_exits_1(server: AudioServer, bus: PrivateBus,
                                                        daemon: DaemonProcess,
                                                        tone: Path) -> None:
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)
    music = play(server, tone, role="music")  # no MPRIS player: muted by the call
    wait_stream(server, music)
    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))
    wait_muted(server, music, True)

    bus.stop()  # the session bus dies
    assert daemon.proc.wait(15) == 1
    assert stream_state(server, game) == ([USER, USER], False)
    assert stream_state(server, music) == ([65536, 65536], False)
    assert "lost the D-Bus connection" in daemon.log_text()

    bus.start()  # the session comes back (a new bus: a new guid in its address), and
    server.env["DBUS_SESSION_BUS_ADDRESS"] = bus.address  # systemd starts the daemon again
    daemon.start()
    assert name_has_owner(daemon.env, "io.github.audiopolicyd.AudioPolicy1")
    wait_volume(server, game, ducked(USER, CALL))
    end_client(server, phone)
    wait_volume(server, game, USER)


def volume_at(server: AudioServer, index: int) -> list[int]:
    """The raw volume of sink-input ``index``, read by index: on pipewire-pulse, listing the
    sink-inputs costs any client its connection while the undescribable stream exists."""
    with pulse(server) as p:
        return raw_volumes(p.sink_input_info(index))


def test_a_stream_the_server_cannot_describe_is_skipped_and_enforcement_goes_on(
        server: AudioServer, daemon: DaemonProcess, tone: Path) -> None:
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)
    index = wait_stream(server, game).index
    binary = subprocess.Popen([sys.executable, str(PROGRAMS / "binary_property.py"), "65536"],
                              env=daemon.env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    server.clients.append(binary)
    time.sleep(2)  # long enough for a reconnect loop to show
    connects = daemon.log_text().count("connected to ")
    assert connects <= 3, f"{connects} connections in 2 s"
    if server.name == "pipewire":
        assert "cannot be read" in daemon.log_text()

    phone = play(server, tone, role="phone")
    wait_for(lambda: volume_at(server, index), 10, "the game ducked",
             until=lambda v: v == [ducked(USER, CALL)] * 2)
    recorder = record(server)  # an app nobody allowed the microphone: silenced
    wait_muted(server, recorder, True, kind="source-output")
    phone.kill()
    wait_for(lambda: volume_at(server, index), 10, "the game restored",
             until=lambda v: v == [USER, USER])
    assert daemon.log_text().count("connected to ") == connects, "no reconnect meanwhile"
    assert daemon.status()["ServerConnected"] is True
