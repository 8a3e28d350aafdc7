"""xdg-desktop-portal's permission store (``xdg-permission-store``), real, on a private bus."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

from .bus import PrivateBus, name_has_owner
from .processes import ServerStartError, child_env, log_tail, stop_process, wait_for

logger = logging.getLogger(__name__)

#: xdg-desktop-portal's permission store (Debian package ``xdg-desktop-portal``); not on PATH.
PERMISSION_STORE = "/usr/libexec/xdg-permission-store"
PERMISSION_STORE_NAME = "org.freedesktop.impl.portal.PermissionStore"


class PermissionStoreProcess:
    """A real ``xdg-permission-store`` on a private bus, with a private ``XDG_DATA_HOME``.

    Its database is ``data_home/flatpak/db/devices`` (a GVariant file). Started with
    ``--replace``; ready when it owns ``org.freedesktop.impl.portal.PermissionStore``.
    """

    def __init__(self, bus: PrivateBus, data_home: str | os.PathLike) -> None:
        self.bus = bus
        self.data_home = Path(data_home)
        self.log = self.data_home / "xdg-permission-store.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start the store and wait until its name is on the bus.

        :raises ServerStartError: when it exits or does not take its name within *timeout*
        """
        self.data_home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [PERMISSION_STORE, "--replace", "--verbose"], stdout=out, stderr=out,
                env=child_env({**self.bus.env, "XDG_DATA_HOME": str(self.data_home)}))
        deadline = time.monotonic() + timeout
        while not name_has_owner(self.bus.env, PERMISSION_STORE_NAME):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"xdg-permission-store did not take its name\n"
                                       f"{log_tail(self.log)}")
            time.sleep(0.05)
        logger.info("xdg-permission-store pid %d on %s", self.proc.pid, self.bus.address)

    def stop(self) -> None:
        """Stop the store (by pid) and wait until its name has left the bus."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
            if self.bus.proc is not None and self.bus.proc.poll() is None:
                wait_for(lambda: not name_has_owner(self.bus.env, PERMISSION_STORE_NAME), 5,
                         "the permission store's name to leave the bus")

    def __enter__(self) -> PermissionStoreProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
