"""Explicit audio sessions over D-Bus: client apps, each its own process on its own connection.

A :class:`SessionClient` runs ``programs/session_client.py`` (dbus-fast, a line protocol on
stdin/stdout) and waits for what it prints; :class:`Pid` follows the paplay children it starts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .daemon import BUS_NAME, OBJECT_PATH
from .processes import PROGRAMS, LineReader, child_env, log_tail, stop_process, wait_for
from .servers import AudioServer
from .streams import wait_stream

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The dbus-fast test app (see its docstring for the line protocol).
SESSION_CLIENT = PROGRAMS / "session_client.py"
SESSION_IFACE = BUS_NAME + ".Session"
SESSION_PATH_PREFIX = OBJECT_PATH + "/session/"
ERROR_PREFIX = BUS_NAME + ".Error."


class Pid:
    """A process we did not start (a client's child), by pid: quacks enough like
    :class:`subprocess.Popen` for :func:`~.streams.stream_of`, :func:`~.streams.wait_stream`,
    :func:`~.streams.wait_volume`, :func:`~.streams.wait_muted` and
    :func:`~.streams.set_user_volume`."""

    def __init__(self, pid: int, name: str) -> None:
        self.pid = pid
        self.args = [name]
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """None while the process runs (a zombie counts as gone)."""
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            state = "X"
        if state in ("Z", "X"):
            self.returncode = -1
            return -1
        return None

    def kill(self) -> None:
        """SIGKILL it if it still runs and is still ours (same program name)."""
        if self.poll() is not None:
            return
        try:
            comm = Path(f"/proc/{self.pid}/comm").read_text().strip()
            if comm == self.args[0][:15]:
                os.kill(self.pid, signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


class SessionCallFailed(AssertionError):
    """A session client's call answered a D-Bus error.

    :ivar name: the error name without :data:`ERROR_PREFIX` when it has it, else the full name
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.full_name = name
        self.name = name[len(ERROR_PREFIX):] if name.startswith(ERROR_PREFIX) else name
        self.message = message


class SessionClient:
    """A client app (:data:`SESSION_CLIENT`) in its own process, on its own D-Bus connection.

    Every client is a distinct app to the daemon (a process of an interpreter is known by its
    executable and pid). Stopped by :meth:`close`, or by ``server.close()`` (it is tracked as a
    client); the paplay children it starts die with it.

    :ivar unique_name: its connection's unique bus name
    :ivar session: the object path of the session it created last ('' before ``create``)
    """

    def __init__(self, server: AudioServer, name: str, timeout: float = 10.0) -> None:
        self.server = server
        self.name = name
        with open(server.dir / "clients.log", "ab") as err:
            self.proc = subprocess.Popen([sys.executable, str(SESSION_CLIENT)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, env=child_env(server.env))
        server.clients.append(self.proc)
        self.reader = LineReader(self.proc.stdout)
        self._parsed: list[dict[str, Any]] = []
        self._replies = 0
        self.children: list[Pid] = []
        self.session = ""
        self.unique_name = "(connecting)"
        ready = self._wait(lambda e: "ready" in e, timeout, f"{self.name} to connect")
        self.unique_name: str = ready["ready"]

    def __repr__(self) -> str:
        return f"<SessionClient {self.name} pid {self.proc.pid} {self.unique_name}>"

    # -- what it printed ----------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """Everything it printed so far, parsed."""
        lines = self.reader.lines
        while len(self._parsed) < len(lines):
            self._parsed.append(json.loads(lines[len(self._parsed)]))
        return list(self._parsed)

    def _wait(self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str,
              start: int = 0) -> dict[str, Any]:
        """The first event from index *start* on that *match* accepts (bounded wait)."""
        return self._wait_value(lambda: next((e for e in self.events()[start:] if match(e)),
                                             None), timeout, what)

    def _wait_value(self, probe: Callable[[], T], timeout: float, what: str) -> T:
        def alive_probe() -> T:
            found = probe()
            if not found and self.proc.poll() is not None:
                raise AssertionError(f"{self} exited with {self.proc.returncode} while waiting "
                                     f"for {what}\n{log_tail(self.server.dir / 'clients.log')}")
            return found
        return wait_for(alive_probe, timeout, f"{self}: {what}")

    def signals(self, member: str | None = None, path: str | None = None,
                ) -> list[dict[str, Any]]:
        """The signals received, optionally only *member* ones about object *path*
        (default: every path)."""
        return [e for e in self.events() if "signal" in e
                and (member is None or e["signal"] == member)
                and (path is None or e["path"] == path)]

    def wait_signal(self, member: str, path: str | None = None,
                    where: Callable[[Any], bool] = lambda body: True, timeout: float = 10.0,
                    after: int = 0) -> dict[str, Any]:
        """Wait for signal *member* about *path* (default: its session) whose body satisfies
        *where*, among the events printed from index *after* on; return the event."""
        path = path or self.session
        return self._wait(lambda e: e.get("signal") == member and e["path"] == path
                          and where(e["body"]), timeout, f"signal {member} on {path}", after)

    def mark(self) -> int:
        """The index of the next event: pass as ``after`` to wait only for later ones."""
        return len(self.events())

    def wait_property(self, name: str, value: Any, path: str | None = None,
                      timeout: float = 10.0) -> None:
        """Wait until property *name* of session *path* reads *value*."""
        path = path or self.session
        wait_for(lambda: self.call("get", name, path), timeout,
                 f"{self}: {name} of {path} to be {value!r}", until=lambda v: v == value)

    # -- commands -----------------------------------------------------------------------------

    def send(self, *words: str) -> int:
        """Send one command without waiting; returns its number for :meth:`reply`."""
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()
        self._replies += 1
        return self._replies

    def reply(self, number: int, timeout: float = 10.0) -> dict[str, Any] | None:
        """The reply event of command *number*, waiting up to *timeout* (0: None if none yet)."""
        def ours() -> dict[str, Any] | None:
            replies = [e for e in self.events() if "reply" in e]  # one per command, in order
            return replies[number - 1] if len(replies) >= number else None
        if timeout == 0:
            return ours()
        return self._wait_value(ours, timeout, f"the reply to command {number}")

    def request(self, *words: str, timeout: float = 10.0) -> dict[str, Any]:
        """Send one command and return its reply event."""
        return self.reply(self.send(*words), timeout)

    def call(self, *words: Any, timeout: float = 10.0) -> Any:
        """Send a command; return its result, or raise :class:`SessionCallFailed`."""
        reply = self.request(*words, timeout=timeout)
        if not reply["ok"]:
            raise SessionCallFailed(reply["error"], reply["message"])
        return reply["result"]

    def error(self, *words: Any) -> SessionCallFailed:
        """Send a command that must fail; return its error."""
        reply = self.request(*words)
        assert not reply["ok"], f"{self}: {' '.join(map(str, words))} succeeded: {reply}"
        return SessionCallFailed(reply["error"], reply["message"])

    def create(self, name: str, category: str = "", mode: str = "default",
               options: str = "-") -> str:
        """CreateSession (with a category when given); return the path, now its target."""
        words = ["create", name] + ([category, mode, options] if category else [])
        self.session = self.call(*words)
        return self.session

    def play(self, tone: str | os.PathLike) -> Pid:
        """Start paplay (no media.role) as its child; wait for its stream to run.

        Each stream has its own ``application.name`` (``<client>-<n>``): the servers restore a
        role-less stream's volume by application name, which would otherwise carry one
        client's (ducked) volume over to another's new stream.
        """
        name = f"{self.name}-{len(self.children) + 1}"
        child = Pid(self.call("play", str(tone), name), "paplay")
        self.children.append(child)
        wait_stream(self.server, child)
        return child

    # -- ending -------------------------------------------------------------------------------

    def kill(self) -> None:
        """``kill -9`` the client (by pid): a crash. Its paplay children die with it."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for child in self.children:
            wait_for(lambda c=child: c.poll() is not None, 5, f"paplay pid {child.pid} to die")

    def close(self) -> None:
        """Quit (or stop by pid), and make sure its children are gone."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc)
        if self.proc in self.server.clients:
            self.server.clients.remove(self.proc)
        for child in self.children:
            child.kill()
        self.reader.join()
