"""The daemon under test: the real ``audiopolicyd`` executable, and ``audiopolicyctl``.

:class:`DaemonProcess` runs it beside a server with private state and config directories, a
debug log to a file, SIGTERM / ``kill -9`` / restart with the same journal. The daemon's D-Bus
names are here too, with :func:`gdbus_call` (GLib's client) for calls on its objects.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .bus import address_of
from .processes import child_env, log_tail, stop_process, wait_for
from .servers import AudioServer

logger = logging.getLogger(__name__)

def _console_script(name: str, module: str) -> list[str]:
    """The command line of console script *name* of this interpreter's environment.

    Falls back to ``python -m module`` when the script is not installed beside
    :data:`sys.executable` (a source checkout run without an install).
    """
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", module]


#: Command line of the daemon and of its client.
AUDIOPOLICYD = _console_script("audiopolicyd", "audiopolicyd")
AUDIOPOLICYCTL = _console_script("audiopolicyctl", "audiopolicyd.ctl")

#: D-Bus names of the daemon (fixed by the contract in DESIGN.md).
BUS_NAME = "io.github.audiopolicyd.AudioPolicy1"
OBJECT_PATH = "/io/github/audiopolicyd/AudioPolicy1"
MANAGER_IFACE = BUS_NAME + ".Manager"


def run_ctl(env: Mapping[str, str], *args: str, timeout: float = 15.0,
            ) -> subprocess.CompletedProcess:
    """Run ``audiopolicyctl *args`` with exactly the environment *env*."""
    return subprocess.run([*AUDIOPOLICYCTL, *args], env=dict(env), capture_output=True,
                          text=True, timeout=timeout)


class DaemonProcess:
    """The real ``audiopolicyd`` started as a subprocess beside *server*.

    It gets the server's environment (``PULSE_SERVER``, the private bus), a
    private ``XDG_STATE_HOME`` and ``XDG_CONFIG_HOME`` under *root* (so the
    effects journal and the user policy directory survive :meth:`restart`),
    ``--log-level debug --log-target stderr``, and appends stdout and stderr
    to :attr:`log`.

    :ivar policy_dir: ``$XDG_CONFIG_HOME/audiopolicyd/policies`` (created, so
        the daemon watches it from the start, as for a user who has one).
    """

    #: Seconds :meth:`start` waits for ``ServerConnected``.
    start_timeout = 20.0

    def __init__(self, server: AudioServer, root: str | os.PathLike) -> None:
        self.server = server
        self.root = Path(root)
        self.state_home = self.root / "state"
        self.config_home = self.root / "config"
        #: ``XDG_DATA_HOME``: recordings without a file of their own go under it
        self.data_home = self.root / "data"
        self.policy_dir = self.config_home / "audiopolicyd" / "policies"
        self.policy_dir.mkdir(parents=True, exist_ok=True)
        self.state_home.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "audiopolicyd.log"
        self.proc: subprocess.Popen | None = None
        #: Every process started (restarts included), for the cleanup.
        self.history: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        """The environment of the daemon and of ``audiopolicyctl``."""
        # the private bus stands in for the system bus too: logind there is
        # tests/support/logind.py's stand-in, never the machine's
        return child_env({**self.server.env, "XDG_STATE_HOME": str(self.state_home),
                          "DBUS_SYSTEM_BUS_ADDRESS": address_of(self.server.env),
                          "XDG_CONFIG_HOME": str(self.config_home),
                          "XDG_DATA_HOME": str(self.data_home)})

    @property
    def journal(self) -> Path:
        """The effects journal file."""
        return self.state_home / "audiopolicyd" / "journal.sqlite3"

    def start(self, *extra: str, wait: bool = True) -> None:
        """Start the daemon; with *wait*, until it reports ``ServerConnected`` true.

        :raises AssertionError: if it exits or is not connected in time (with its log).
        """
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("audiopolicyd already running")
        with open(self.log, "ab") as out:
            out.write(f"==== starting {' '.join(AUDIOPOLICYD)} ====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [*AUDIOPOLICYD, "--log-level", "debug", "--log-target", "stderr", *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.history.append(self.proc)
        logger.info("audiopolicyd started (pid %d), log %s", self.proc.pid, self.log)
        if wait:
            self.wait_connected(self.start_timeout)

    def wait_connected(self, timeout: float = 20.0) -> dict[str, Any]:
        """Wait until ``status --json`` says ``ServerConnected``; return the status.

        :raises AssertionError: at the deadline or when the daemon exits, with its log.
        """
        try:
            return wait_for(self._status_if_alive, timeout, "audiopolicyd ServerConnected true",
                            until=lambda s: bool(s) and s.get("ServerConnected") is True,
                            interval=0.1)
        except AssertionError as exc:
            if "audiopolicyd is not running" in str(exc):
                raise
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def _status_if_alive(self) -> dict[str, Any] | None:
        self.assert_running()
        return self.status(check=False)

    def assert_running(self) -> None:
        """:raises AssertionError: if the daemon has exited (with its log tail)."""
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise AssertionError(f"audiopolicyd is not running (exit code {code})\n"
                                 f"{self.log_tail()}")

    def ctl(self, *args: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
        """Run ``audiopolicyctl *args`` against this daemon; return the completed process."""
        return run_ctl(self.env, *args, timeout=timeout)

    def status(self, check: bool = True) -> dict[str, Any] | None:
        """``audiopolicyctl status --json`` as a dict (None, unless *check*, on failure)."""
        done = self.ctl("status", "--json")
        if done.returncode != 0:
            if check:
                raise AssertionError(f"audiopolicyctl status failed ({done.returncode}): "
                                     f"{done.stderr}")
            return None
        return json.loads(done.stdout)

    def streams(self) -> list[dict[str, Any]]:
        """``audiopolicyctl streams --json``: what the daemon says of every stream."""
        done = self.ctl("streams", "--json")
        assert done.returncode == 0, f"audiopolicyctl streams failed: {done.stderr}"
        return json.loads(done.stdout)

    def stream_view(self, index: int, kind: str = "sink-input") -> dict[str, Any] | None:
        """The daemon's view of stream *kind*:*index*, None when it does not list it."""
        key = f"{kind}:{index}"
        return next((s for s in self.streams() if s["Key"] == key), None)

    def signal(self, sig: int) -> None:
        """Send *sig* to the daemon (by pid)."""
        self.assert_running()
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the daemon and wait for it to exit; return its exit code."""
        proc = self.proc
        if proc is None:
            raise RuntimeError("audiopolicyd not started")
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
                raise AssertionError(f"audiopolicyd ignored SIGTERM for {timeout}s\n"
                                     f"{self.log_tail()}") from None
        return proc.returncode

    def kill(self) -> None:
        """``kill -9`` the daemon (by pid) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self, *extra: str) -> None:
        """Stop the daemon if it runs (SIGTERM) and start it again with the same state."""
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        self.start(*extra)

    def log_text(self) -> str:
        """The whole daemon log so far."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        """The last *lines* lines of the daemon log, headed by its name."""
        return log_tail(self.log, lines)

    def close(self) -> None:
        """Kill every daemon process still running (SIGTERM, then SIGKILL)."""
        for proc in self.history:
            stop_process(proc, timeout=10)
        self.history.clear()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def gdbus_call(env: Mapping[str, str], path: str, method: str, *args: str,
               timeout: float = 10.0) -> subprocess.CompletedProcess:
    """``gdbus call`` (GLib's GDBus client) of *method* (``interface.Member``) on the daemon's
    object *path*; its errors name the D-Bus error (``GDBus.Error:<name>: message``)."""
    return subprocess.run(["gdbus", "call", "--address", address_of(env), "--dest", BUS_NAME,
                           "--object-path", path, "--method", method, *args],
                          env=child_env(env), capture_output=True, text=True, timeout=timeout)
