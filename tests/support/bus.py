"""A private D-Bus session bus, and stateless D-Bus tools on it (busctl).

:class:`PrivateBus` runs a ``dbus-daemon`` in a temporary directory, so tests never touch the
user's session bus; :func:`busctl` and the helpers after it make one short-lived connection per
call, as a command-line client would.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .processes import ServerStartError, Service, child_env, log_tail, stop_process

logger = logging.getLogger(__name__)

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={dir}/bus</listen>
  <auth>EXTERNAL</auth>
  {servicedirs}
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class PrivateBus(Service):
    """A private D-Bus session bus in a temporary directory.

    :param service_dirs: None (the default): the system's session configuration, so every
        service installed in the standard directories is D-Bus-activatable (for example
        xdg-desktop-portal's permission store, which would then run with the user's real
        data directory). A sequence: only the services in these directories are activatable
        (none when empty).
    :ivar address: the bus address, for ``DBUS_SESSION_BUS_ADDRESS``.
    """

    def __init__(self, service_dirs: Sequence[str | os.PathLike] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="apd-bus-"))
        self.address = ""
        self.proc: subprocess.Popen | None = None
        self.service_dirs = None if service_dirs is None else [Path(d) for d in service_dirs]

    @property
    def env(self) -> dict[str, str]:
        """``{"DBUS_SESSION_BUS_ADDRESS": address}``."""
        return {"DBUS_SESSION_BUS_ADDRESS": self.address}

    def start(self, timeout: float = 5.0) -> None:
        """Start ``dbus-daemon`` and read the address it prints.

        :raises ServerStartError: if no address is printed within *timeout*.
        """
        log = self.dir / "dbus-daemon.log"
        if self.service_dirs is None:
            config = ["--session", f"--address=unix:path={self.dir}/bus"]
        else:
            conf = self.dir / "bus.conf"
            conf.write_text(_BUS_CONFIG.format(dir=self.dir, servicedirs="".join(
                f"<servicedir>{d}</servicedir>" for d in self.service_dirs)))
            config = [f"--config-file={conf}"]
        with open(log, "ab") as stderr:
            self.proc = subprocess.Popen(
                ["dbus-daemon", *config, "--nofork", "--print-address"],
                stdout=subprocess.PIPE, stderr=stderr, env=child_env({}))
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line:
            self.stop()
            raise ServerStartError(f"dbus-daemon printed no address\n{log_tail(log)}")
        self.address = line
        logger.info("private bus at %s (pid %d)", self.address, self.proc.pid)

    def stop(self) -> None:
        """Stop ``dbus-daemon`` (by pid)."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def close(self) -> None:
        """Stop the bus and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def address_of(env: Mapping[str, str]) -> str:
    """The bus address of *env* (its ``DBUS_SESSION_BUS_ADDRESS``; KeyError without one)."""
    return env["DBUS_SESSION_BUS_ADDRESS"]


def busctl(env: Mapping[str, str], *args: str, timeout: float = 10.0,
           ) -> subprocess.CompletedProcess:
    """``busctl --address=<the bus of env> *args`` (systemd's sd-bus client): each run is one
    short-lived connection. Runs with ``SYSTEMD_LOG_LEVEL=debug``, whose stderr names the
    D-Bus error of a failed call (see :func:`busctl_error`)."""
    return subprocess.run(["busctl", f"--address={address_of(env)}", *args],
                          env=child_env({**env, "SYSTEMD_LOG_LEVEL": "debug"}),
                          capture_output=True, text=True, timeout=timeout)


def busctl_error(done: subprocess.CompletedProcess) -> str:
    """The D-Bus error name a failed :func:`busctl` call received ('' when none)."""
    for line in done.stderr.splitlines():
        if line.startswith("Got message type=error "):
            for word in line.split():
                if word.startswith("error-name="):
                    return word[len("error-name="):]
    return ""


def busctl_json(done: subprocess.CompletedProcess) -> list[Any]:
    """The reply values of a ``busctl --json=short call`` as plain Python (variants
    unwrapped)."""
    assert done.returncode == 0, f"busctl failed ({done.returncode}): {done.stderr[-2000:]}"

    def plain(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"type", "data"}:
            return plain(value["data"])
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value
    return plain(json.loads(done.stdout)["data"])


def name_has_owner(env: Mapping[str, str], name: str) -> bool:
    """Whether *name* is owned on the bus of *env* (``NameHasOwner``, through busctl)."""
    done = busctl(env, "--json=short", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                  "org.freedesktop.DBus", "NameHasOwner", "s", name)
    return bool(busctl_json(done)[0])


def name_owner_pid(env: Mapping[str, str], name: str) -> int:
    """The process id of *name*'s owner (``GetConnectionUnixProcessID``)."""
    done = busctl(env, "--json=short", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                  "org.freedesktop.DBus", "GetConnectionUnixProcessID", "s", name)
    return int(busctl_json(done)[0])
