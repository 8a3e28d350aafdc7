"""Who a process is: executable, Flatpak app id, systemd app scope, parents. Reads /proc.

Used for D-Bus callers (whose pid and uid come from the bus, so they are trusted) and to match
streams to the sessions of their apps (a stream's ``application.process.id`` is self-reported:
a hint, used only to find which session's process tree it claims to be part of).

App ids follow xdg-desktop-portal's rules: ``[Application] name=`` of
``/proc/<pid>/root/.flatpak-info`` for Flatpak apps; for other apps launched by a desktop, the
systemd scope or service the launcher put them in (``app-<launcher>-<app id>-<random>.scope``,
``app-<launcher>-<app id>@<random>.service``, as systemd's desktop-environment conventions
name them).
"""

from __future__ import annotations

import configparser
import logging
import os
import re
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Parent chains are followed this far at most.
MAX_DEPTH = 64

_UNIT_APP = re.compile(
    r"^app-(?:(?:gnome|kde|flatpak|snap|dbus|systemd|xfce|sway|cosmic|lxqt|mate|cinnamon)-)?"
    r"(?P<id>[\w.\-]+?)(?:-(?:\d+|[0-9a-f]{32}))?(?:@[\w]+)?\.(?:scope|service)$")


@dataclass(frozen=True)
class Identity:
    """A process's identity, most trusted part first.

    :param pid: process id (from the bus for callers)
    :param uid: user id (from the bus for callers)
    :param app_id: Flatpak app id, else the app id of its systemd app unit, else ''
    :param flatpak: True when ``app_id`` comes from Flatpak (a sandboxed app)
    :param unit: the systemd unit (``app-...scope``) it runs in, '' if not an app unit
    :param exe: the executable's path, '' when unreadable
    """

    pid: int | None = None
    uid: int | None = None
    app_id: str = ""
    flatpak: bool = False
    unit: str = ""
    exe: str = ""

    @property
    def key(self) -> str:
        """The app: ``flatpak:<id>`` or ``app:<id>`` when an app id is known, else
        ``exe:<path>:<pid>`` (two processes of one interpreter are two apps), else
        ``pid:<n>``."""
        if self.app_id:
            return ("flatpak:" if self.flatpak else "app:") + self.app_id
        if self.exe:
            return f"exe:{self.exe}:{self.pid}"
        return f"pid:{self.pid}"


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def flatpak_app_id(pid: int) -> str:
    """The Flatpak app id of a process, '' for unsandboxed processes."""
    text = _read(f"/proc/{pid}/root/.flatpak-info")
    if not text:
        return ""
    info = configparser.ConfigParser(interpolation=None)
    try:
        info.read_string(text)
        return info.get("Application", "name", fallback="")
    except configparser.Error:
        return ""


def app_unit(pid: int) -> tuple[str, str]:
    """The systemd app unit of a process and the app id in its name: ``(unit, app id)``."""
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        unit = line.rsplit("/", 1)[-1]
        match = _UNIT_APP.match(unit)
        if match:
            return unit, match.group("id")
    return "", ""


def parent(pid: int) -> int | None:
    """The parent pid, None when the process is gone."""
    stat = _read(f"/proc/{pid}/stat")
    try:
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (IndexError, ValueError):
        return None


def ancestors(pid: int) -> list[int]:
    """The pid itself and its parents up to init (at most :data:`MAX_DEPTH`)."""
    out = []
    while pid and pid > 1 and len(out) < MAX_DEPTH:
        out.append(pid)
        pid = parent(pid) or 0
    return out


def identify(pid: int | None, uid: int | None = None) -> Identity:
    """Everything /proc tells about a process (empty fields where it is gone)."""
    if not pid:
        return Identity(uid=uid)
    flatpak = flatpak_app_id(pid)
    unit, unit_app = app_unit(pid)
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    return Identity(pid=pid, uid=uid, app_id=flatpak or unit_app, flatpak=bool(flatpak),
                    unit=unit, exe=exe)


def stream_belongs(properties: dict | None, pid: int | None, owner: Identity) -> bool:
    """Whether a stream belongs to the app of ``owner``: the same Flatpak app, a process in the
    owner's process tree (the owner or its children), or the same systemd app unit.

    :param properties: the stream's properties (``pipewire.access.portal.app_id``)
    :param pid: the stream's self-reported ``application.process.id`` (a hint)
    """
    portal = (properties or {}).get("pipewire.access.portal.app_id", "")
    if owner.flatpak and portal:
        return portal == owner.app_id
    if not pid:
        return False
    if owner.pid and owner.pid in ancestors(pid):
        return True
    return bool(owner.unit) and app_unit(pid)[0] == owner.unit
