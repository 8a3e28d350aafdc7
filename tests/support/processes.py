"""Processes of the integration tests and benchmarks: environment, polling, stopping, logs.

Every process the support modules start is a :class:`subprocess.Popen` whose handle is kept;
it is stopped by pid (:func:`stop_process`), never by name. Its environment is ours minus
whatever would point it at the user's session (:func:`child_env`). :func:`wait_for` is the one
polling helper for waiting on the system under test. The client programs the tests run
(a session app, the microphone feeder and fighter) are in :data:`PROGRAMS`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

#: The directory of the programs the tests start as clients (``session_client.py``,
#: ``mic_feeder.py``, ``mic_fighter.py``, ``binary_property.py``).
PROGRAMS = Path(__file__).with_name("programs")

T = TypeVar("T")

#: Programs the integration tests need.
REQUIRED_BINARIES = (
    "dbus-daemon", "pulseaudio", "pipewire", "wireplumber", "pipewire-pulse",
    "paplay", "parecord", "pactl", "mpv", "playerctl", "sox", "busctl", "dbus-send",
    "gdbus", "gsettings", "mount", "pw-record", "pw-play", "bwrap",
)


#: Inherited variables that would point our processes at another session.
_LEAKY_ENV = (
    "PULSE_SERVER", "PULSE_RUNTIME_PATH", "PULSE_STATE_PATH", "PULSE_COOKIE",
    "PIPEWIRE_RUNTIME_DIR", "PIPEWIRE_REMOTE", "PIPEWIRE_CONFIG_DIR",
    "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME",
    "DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY",
)

_LOG_TAIL_LINES = 30


class ServerStartError(RuntimeError):
    """A server did not become ready; the message carries its log tails."""


S = TypeVar("S", bound="Service")


class Service:
    """Base of what runs for a ``with`` block (a bus, a server).

    Entering calls ``start()``, and ``close()`` when that fails, so a half-started service
    leaves no process and no directory behind; leaving calls ``close()``. Subclasses define
    both.
    """

    def __enter__(self: S) -> S:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def missing_binaries(names: tuple[str, ...] = REQUIRED_BINARIES) -> list[str]:
    """Return the programs of *names* that are not on ``PATH``."""
    return [name for name in names if shutil.which(name) is None]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Return the environment for a child: ours, minus session leaks, plus *extra*."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    env.update(extra)
    return env


def wait_for(
    probe: Callable[[], T],
    timeout: float,
    what: str,
    *,
    until: Callable[[T], bool] = bool,
    interval: float = 0.05,
) -> T:
    """Poll *probe* until ``until(value)`` holds, and return that value.

    This is the one polling helper: for waiting on the system under test.

    :param probe: called every *interval* seconds; returns the observed value.
    :param timeout: deadline in seconds.
    :param what: what is awaited, for the error message.
    :param until: predicate on the observed value (default: truthiness).
    :raises AssertionError: at the deadline, naming *what* and the last value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.1f}s waiting for {what}; last observed: {value!r}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Stop *proc* by pid: SIGTERM, then SIGKILL after *timeout* seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("pid %d ignored SIGTERM, killing it", proc.pid)
            proc.kill()
            proc.wait(timeout)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last *lines* lines of the log at *path*, headed by its name."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        text = [f"<unreadable: {exc}>"]
    return f"--- {path} ---\n" + "\n".join(text)


class LineReader:
    """Collects the lines of a pipe on a thread, so tests can wait for them."""

    def __init__(self, pipe: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self._thread.start()

    def _run(self, pipe: Any) -> None:
        try:
            for line in pipe:
                self.lines.append(line.rstrip("\n"))
        except (OSError, ValueError):  # the pipe was closed under us: the process is gone
            pass

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
