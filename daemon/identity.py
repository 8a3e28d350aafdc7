"""Who a process is: executable, Flatpak app id, systemd app scope, parents. Reads /proc.

Used for D-Bus callers (whose pid and uid come from the bus, so they are trusted), to match
streams to the sessions of their apps (a stream's ``application.process.id`` is self-reported:
a hint, used only to find which session's process tree it claims to be part of), and to name
the app a recording stream belongs to for microphone permission (:func:`recording_app`).

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
import shlex
import shutil
from dataclasses import dataclass
from typing import Mapping

logger = logging.getLogger(__name__)

#: Parent chains are followed this far at most.
MAX_DEPTH = 64

_SNAP = re.compile(r"^snap\.(?P<name>[a-z0-9][a-z0-9-]*)\.[\w.\-]+\.(?:scope|service)$")
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


def permission_app_id(identity: Identity) -> str:
    """The microphone-permission app id of a D-Bus caller: its Flatpak or app-unit id, else
    ``exe:<path>`` (one decision for every process of one executable), else ''."""
    if identity.app_id:
        return identity.app_id
    return f"exe:{identity.exe}" if identity.exe else ""


def caller_app(identity: Identity, name: str = "") -> "RecordingApp":
    """The :class:`RecordingApp` of a D-Bus caller (a session's owner), whose pid the bus
    vouches for. An unknown process gets ``unverified:<identity key>``."""
    app_id = permission_app_id(identity)
    source = "flatpak" if identity.flatpak else "scope" if identity.app_id else "exe"
    if not app_id:
        app_id, source = f"unverified:{identity.key}", "unverified"
    snap = snap_name(identity.pid) if identity.pid and not identity.flatpak else ""
    if snap:
        app_id, source = f"snap.{snap}", "snap"
    return RecordingApp(app_id, name or os.path.basename(identity.exe) or app_id, source,
                        identity.pid or 0, identity.exe, source in ("flatpak", "snap"))


@dataclass(frozen=True)
class RecordingApp:
    """The app a recording stream belongs to, for microphone permission.

    :param app_id: the permission key: a Flatpak, snap (``snap.<name>``), systemd-scope or
        desktop-file app id; else ``exe:<path>`` of the verified process; else
        ``unverified:<binary>`` when the stream's claimed process cannot be checked
    :param name: a human name (``application.name``, else the binary)
    :param source: where ``app_id`` came from: ``flatpak``, ``snap``, ``scope``,
        ``desktop``, ``exe`` or ``unverified``
    :param pid: the verified process id, 0 when none could be verified
    :param exe: the verified executable's path, '' when none
    :param sandboxed: True for Flatpak and snap apps (they may ask but never grant)
    """

    app_id: str
    name: str
    source: str
    pid: int = 0
    exe: str = ""
    sandboxed: bool = False


def _owner_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def verified_pid(properties: Mapping[str, str], uid: int | None = None) -> tuple[int, str]:
    """The stream's claimed process, if /proc confirms the claim: ``(pid, exe path)``.

    A PulseAudio-protocol client reports its own ``application.process.id`` (neither server
    checks it; pipewire-pulse's ``pipewire.sec.pid`` is its own pid). The claim holds when the
    process exists, belongs to *uid* (default: ours), and its executable's name is the claimed
    ``application.process.binary`` (when one is claimed). ``(0, '')`` otherwise: gone, another
    user's, another binary, or a pid from another pid namespace (a Flatpak app's).
    """
    try:
        pid = int(properties.get("application.process.id", ""))
    except ValueError:
        return 0, ""
    if pid <= 1:
        return 0, ""
    if _owner_uid(pid) != (os.getuid() if uid is None else uid):
        return 0, ""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return 0, ""
    binary = properties.get("application.process.binary", "")
    if exe.endswith(" (deleted)"):
        exe = exe[:-len(" (deleted)")]
    if binary and os.path.basename(exe) != binary:
        return 0, ""
    return pid, exe


def _start_time(pid: int) -> str:
    """The start time of a process (field 22 of ``/proc/<pid>/stat``), '' when it is gone:
    with the pid, it names one process even after the pid is reused."""
    stat = _read(f"/proc/{pid}/stat")
    try:
        return stat.rsplit(")", 1)[1].split()[19]
    except IndexError:
        return ""


#: The PipeWire socket's default name (``PIPEWIRE_REMOTE`` overrides it), as libpipewire.
PIPEWIRE_SOCKET = "pipewire-0"
#: ``__SO_ACCEPTCON`` in ``/proc/net/unix``'s flags: a listening socket.
_ACCEPTCON = 0x10000
_server_cache: dict[tuple[int, str, str], bool] = {}


def pipewire_socket() -> str:
    """The path of the PipeWire daemon's socket, as libpipewire finds it: ``PIPEWIRE_REMOTE``
    (a path, or a name) in ``PIPEWIRE_RUNTIME_DIR``, else ``XDG_RUNTIME_DIR``; '' when
    neither is set."""
    remote = os.environ.get("PIPEWIRE_REMOTE") or PIPEWIRE_SOCKET
    if os.path.isabs(remote):
        return remote
    base = os.environ.get("PIPEWIRE_RUNTIME_DIR") or os.environ.get("XDG_RUNTIME_DIR") or ""
    return os.path.join(base, remote) if base else ""


def listens_on(pid: int, path: str) -> bool:
    """Whether process *pid* holds a listening Unix socket bound at *path*: the inode of a
    listening socket at *path* in ``/proc/net/unix`` is among ``/proc/<pid>/fd``'s sockets.
    False when anything cannot be read (another user's process, gone)."""
    if not path:
        return False
    inodes = set()
    for line in _read("/proc/net/unix").splitlines()[1:]:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode Path
        if len(fields) >= 8 and fields[7] == path:
            try:
                if int(fields[3], 16) & _ACCEPTCON:
                    inodes.add(fields[6])
            except ValueError:
                continue
    if not inodes:
        return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def audio_server_process(pid: int) -> bool:
    """Whether *pid* is the PipeWire daemon this session's clients connect to: it listens
    on :func:`pipewire_socket`. Checked through /proc, never taken from a property; a
    user's own ``pipewire -c filter.conf`` is a client of that socket, not its listener, and
    pipewire-pulse listens on the PulseAudio socket, not on PipeWire's. Cached per process
    (pid and start time)."""
    if pid <= 1:
        return False
    key = (pid, _start_time(pid), pipewire_socket())
    if not key[1]:
        return False
    if key not in _server_cache:
        if len(_server_cache) > 256:
            _server_cache.clear()
        _server_cache[key] = listens_on(pid, key[2])
    return _server_cache[key]


def vouched_pid(vouched: Mapping[str, str], uid: int | None = None) -> tuple[int, str]:
    """The process the audio server vouches for as a stream's client (PipeWire's
    ``pipewire.sec.pid``, which it takes from the kernel, ``SO_PEERCRED``), if it still runs
    as *uid* (default: ours): ``(pid, exe path)``, ``(0, '')`` otherwise."""
    try:
        pid = int(vouched.get("pipewire.sec.pid", ""))
    except ValueError:
        return 0, ""
    if pid <= 1 or _owner_uid(pid) != (os.getuid() if uid is None else uid):
        return 0, ""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return 0, ""
    return pid, exe[:-len(" (deleted)")] if exe.endswith(" (deleted)") else exe


def recording_member(properties: Mapping[str, str], vouched: Mapping[str, str] | None,
                     owner: Identity, uid: int | None = None) -> bool:
    """Whether a recording stream comes from the app of session owner *owner* (whose pid the
    bus vouches for), for microphone permission: the stream's process, as the server vouches
    for it (:func:`vouched_pid`) or as /proc confirms its claim (:func:`verified_pid`: pid,
    user and binary), is the owner or a descendant of it, runs in the owner's systemd app unit,
    or, for a Flatpak owner, is of the same Flatpak app (its ``/.flatpak-info``). A claimed
    ``pipewire.access.portal.app_id`` never counts (:func:`stream_belongs` takes it as a
    hint for grouping, which grants nothing).

    :param properties: the stream's properties (claims)
    :param vouched: :attr:`audiopolicyd.model.Stream.vouched`
    :param owner: the session owner's identity
    """
    pid, _ = vouched_pid(vouched or {}, uid)
    if not pid:
        pid, _ = verified_pid(properties, uid)
    if not pid:
        return False
    if owner.flatpak:
        return flatpak_app_id(pid) == owner.app_id
    if owner.pid and owner.pid in ancestors(pid):
        return True
    return bool(owner.unit) and app_unit(pid)[0] == owner.unit


def snap_name(pid: int) -> str:
    """The snap a process runs in (from its cgroup, ``snap.<name>.<app>-<id>.scope``), or ''."""
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        match = _SNAP.match(line.rsplit("/", 1)[-1])
        if match:
            return match.group("name")
    return ""


def desktop_file(app_id: str) -> str:
    """The path of ``<app_id>.desktop`` in the XDG applications directories, or ''."""
    if not app_id or "/" in app_id or app_id.startswith("."):
        return ""
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    dirs = [data_home, *(os.environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
                         ).split(":")]
    for base in dirs:
        path = os.path.join(base, "applications", app_id + ".desktop")
        if base and os.path.isfile(path):
            return path
    return ""


def _desktop_runs(path: str, exe: str) -> bool:
    """Whether the desktop file at *path* launches *exe* (its ``TryExec`` or ``Exec``
    program has *exe*'s name, or resolves to it)."""
    entry = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        entry.read_string(_read(path))
        section = entry["Desktop Entry"]
        argv = shlex.split(section.get("TryExec") or section.get("Exec", ""))
    except (configparser.Error, KeyError, ValueError):
        return False
    while argv and (argv[0] == "env" or "=" in argv[0]):
        argv = argv[1:]
    if not argv:
        return False
    program = argv[0]
    if os.path.basename(program) == os.path.basename(exe):
        return True
    found = program if os.path.isabs(program) else (shutil.which(program) or "")
    return bool(found) and os.path.realpath(found) == os.path.realpath(exe)


def recording_app(properties: Mapping[str, str], uid: int | None = None,
                  vouched: Mapping[str, str] | None = None) -> RecordingApp:
    """Name the app of a recording stream, most trusted source first.

    1. The process the audio server vouches for (*vouched*: PipeWire's ``pipewire.sec.pid``
       of a native PipeWire client, :func:`vouched_pid`), else the process the stream claims
       (``application.process.id``) if /proc confirms the claim (:func:`verified_pid`); of
       that process: its Flatpak app id (``/proc/<pid>/root/.flatpak-info``), its snap, or
       the app id of its systemd app scope.
    2. ``application.id`` when ``<id>.desktop`` exists and launches that executable.
    3. ``exe:<path>`` of that executable.
    4. ``unverified:<binary>`` when no process could be checked, whatever the stream claims:
       a ``pipewire.access.portal.app_id`` property is the client's word on both servers
       (PulseAudio takes a client's whole property list from it; pipewire-pulse 0.3.65 merges
       the client's list over the keys it set itself, and PipeWire keeps a native client's own
       ``pipewire.access*`` keys), so it never names the app.

    Mirrors xdg-desktop-portal's app ids (Flatpak, snap, systemd scope), so a decision stored
    in the permission store applies to what the desktop shows. See docs/microphone.md ("Who
    an app is") for what each server vouches for and what this does not stop.

    :param properties: the stream's properties (claims)
    :param uid: the user the process must belong to (default: ours)
    :param vouched: what the server itself says about the stream's client
        (:attr:`audiopolicyd.model.Stream.vouched`); None or empty: nothing
    """
    p = properties
    name = p.get("application.name") or p.get("application.process.binary") or "unknown"
    pid, exe = vouched_pid(vouched or {}, uid)
    if not pid:
        pid, exe = verified_pid(p, uid)
    if pid:
        flatpak = flatpak_app_id(pid)
        if flatpak:
            return RecordingApp(flatpak, name, "flatpak", pid, exe, True)
        snap = snap_name(pid)
        if snap:
            return RecordingApp(f"snap.{snap}", name, "snap", pid, exe, True)
        portal = p.get("pipewire.access.portal.app_id", "")
        if portal:
            logger.warning("a stream of %s (pid %d, not sandboxed) claims the portal app id %r; "
                           "ignored", exe, pid, portal[:64])
        unit_app = app_unit(pid)[1]
        if unit_app:
            return RecordingApp(unit_app, name, "scope", pid, exe)
        desktop = desktop_file(p.get("application.id", ""))
        if desktop and _desktop_runs(desktop, exe):
            return RecordingApp(p["application.id"], name, "desktop", pid, exe)
        return RecordingApp(f"exe:{exe}", name, "exe", pid, exe)
    binary = p.get("application.process.binary") or p.get("application.name") or "unknown"
    return RecordingApp(f"unverified:{binary[:128]}", name, "unverified")
