"""The systemd contract: Type=notify messages on a real NOTIFY_SOCKET, and unit files that
systemd-analyze accepts."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import child_env, stop_process

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = path
        self.messages: list[str] = []

    def wait_for(self, pattern: str, timeout: float = 10.0) -> str:
        """Read messages until one matches ``pattern`` (a regex); return it."""
        deadline = time.monotonic() + timeout
        for msg in self.messages:
            if re.search(pattern, msg):
                return msg
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = self.sock.recv(65536).decode()
            except socket.timeout:
                break
            self.messages.append(msg)
            if re.search(pattern, msg):
                return msg
        raise AssertionError(f"no notify message matching {pattern!r}; got {self.messages!r}")


@contextlib.contextmanager
def notifying_daemon(tmp_path: Path, env: dict):
    """The daemon under a stand-in notify socket: yields ``(process, socket)``."""
    notify = NotifySocket(tmp_path / "notify")
    env = child_env({**env, "NOTIFY_SOCKET": str(notify.path),
                     "XDG_STATE_HOME": str(tmp_path / "state"),
                     "XDG_CONFIG_HOME": str(tmp_path / "config")})
    with open(tmp_path / "daemon.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "audiopolicyd", "--log-target", "stderr"],
                                env=env, stderr=log)
        try:
            yield proc, notify
        finally:
            stop_process(proc)
            notify.sock.close()


def test_notify_ready_status_reloading_watchdog_stopping(server, tmp_path):
    with notifying_daemon(tmp_path, {**server.env, "WATCHDOG_USEC": "400000"}) as (proc, notify):
        ready = notify.wait_for(r"READY=1")
        assert re.search(r"STATUS=.*\d+ streams", ready)
        notify.wait_for(r"WATCHDOG=1")
        proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for(r"RELOADING=1")
        assert re.search(r"MONOTONIC_USEC=\d+", reloading)
        notify.messages.clear()
        notify.wait_for(r"READY=1")  # reload finished
        proc.send_signal(signal.SIGTERM)
        notify.wait_for(r"STOPPING=1")
        assert proc.wait(10) == 0


def test_ready_without_a_server_says_it_waits(bus, tmp_path):
    """No audio server: the daemon is up (READY) and says what it waits for; systemd must not
    time the unit out and restart it in a loop."""
    with notifying_daemon(tmp_path, {**bus.env, "PULSE_SERVER": f"unix:{tmp_path}/nothing"}) \
            as (proc, notify):
        ready = notify.wait_for(r"READY=1")
        assert "STATUS=no server" in ready
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert "cannot connect to the audio server" in (tmp_path / "daemon.log").read_text()


@pytest.fixture
def units(tmp_path):
    """The shipped units, with ExecStart pointing at this checkout's executable."""
    exe = shutil.which("audiopolicyd", path=os.path.dirname(sys.executable))
    assert exe, "audiopolicyd is not installed next to the test interpreter"
    out = {}
    for kind in ("user", "system"):
        text = (ROOT / "systemd" / kind / "audiopolicyd.service").read_text()
        path = tmp_path / kind / "audiopolicyd.service"
        path.parent.mkdir()
        path.write_text(text.replace("ExecStart=audiopolicyd", f"ExecStart={exe}")
                            .replace("ExecReload=kill", "ExecReload=/bin/kill"))
        out[kind] = path
    return out


@pytest.mark.parametrize("kind", ["user", "system"])
def test_units_verify_cleanly(units, kind):
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(units[kind])],
                            capture_output=True, text=True)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "audiopolicyd.service" in line]
    assert problems == [], "\n".join(problems)


def test_dbus_policy_and_activation_files(tmp_path):
    name = "io.github.audiopolicyd.AudioPolicy1"
    for kind in ("user", "system"):
        activation = (ROOT / "systemd" / kind / f"{name}.service").read_text()
        assert f"Name={name}" in activation and "SystemdService=audiopolicyd.service" in activation
    # A real dbus-daemon, configured as Debian's system bus plus our policy file, must accept
    # the file, let root own the name, and still deny other names.
    system = Path("/usr/share/dbus-1/system.conf").read_text()
    system = re.sub(r"<listen>.*?</listen>", f"<listen>unix:path={tmp_path}/bus</listen>", system)
    system = re.sub(r"\s*<(user|pidfile)>.*?</\1>|\s*<fork/>", "", system)
    policy = ROOT / "systemd/system" / f"{name}.conf"
    conf = tmp_path / "bus.conf"
    conf.write_text(system.replace("</busconfig>", f"<include>{policy}</include></busconfig>"))
    bus = subprocess.Popen(["dbus-daemon", "--config-file", str(conf), "--nofork",
                            "--print-address"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        address = bus.stdout.readline().strip()
        assert address.startswith("unix:"), bus.stderr.read()
        owned = subprocess.run(
            ["busctl", f"--address={address}", "call", "org.freedesktop.DBus",
             "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName", "su", name, "4"],
            capture_output=True, text=True)
        assert owned.stdout.strip() == "u 1", owned.stderr
        other = subprocess.run(
            ["busctl", f"--address={address}", "call", "org.freedesktop.DBus",
             "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName", "su",
             "io.github.someone.Else", "4"], capture_output=True, text=True)
        assert "Access denied" in other.stderr
    finally:
        stop_process(bus)
