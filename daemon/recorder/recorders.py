"""The daemon's recordings: each ``Record`` call's job, its session, its file and its status.

What a recording does around its :class:`~.job.RecordJob` (the issue's policy, SWML's verb):

* **A session of its own**, owned by the caller's connection (it ends with it):
  ``record`` for a ``speak`` recording, so its policy silences other output as any
  recording app's does (a voicemail is recorded in quiet); ``playAndRecord`` with
  ``mixWithOthers`` for a ``listen`` or stereo one, which must not silence what it records.
  The session is activated once the recording starts (after the permission and the beep) and
  removed when it ends, so everything it silenced comes back.
* **The caller's microphone permission** (its app, as for its own recordings,
  :mod:`audiopolicyd.microphone`) for a recording of the microphone: a denied app's call fails
  with ``NotAllowed``; an undetermined app's recording waits in ``starting`` for the user's
  answer (``initial_timeout`` counts from the start of recording), and a denial ends it as
  ``error``. A ``listen`` recording needs no permission.
* **Devices**: the session's route (:class:`~audiopolicyd.sessionroutes.SessionRoutes`): its
  input for the microphone, its output's monitor for ``listen``; the server's default devices
  until the router has decided.
* **The beep**: on the session's output, before recording starts, so not in the recording
  (:mod:`.beep`).
* **The file**: the caller's (``RecordToFile``'s descriptor: a sandboxed app never names a path
  the daemon writes) or one in :attr:`Recorders.directory`
  (``$XDG_DATA_HOME/audiopolicyd/recordings``), ``record_url`` its ``file://`` URL.
* **Status**: every state reached goes to the job's listeners (the D-Bus object's
  ``StatusChanged``) and, with ``status_url``, to a :class:`~.status.StatusPoster`.
* **A kill**: each recording under way has a marker in the state directory
  (``recordings/<control_id>.json``: its file and format) from its start to its end; the
  next start repairs the files of the markers it finds (:meth:`Recorders.recover`,
  :func:`.encode.repair`: a WAV's header, an MP4's last fragment) and logs what each kept.
* **Bounds**: :data:`MAX_PER_CLIENT` recordings under way per connection,
  :data:`MAX_RECORDINGS` in all; :data:`KEEP_ENDED` ended ones kept per connection for their
  properties (the oldest goes first), all dropped when the connection leaves the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..backends.base import Backend
from ..errors import InvalidArgument, NotAllowed, NotOwner, NoSuchSession, TooManySessions
from ..microphone.stores import Decision
from ..model import Device
from .params import RecordParams

if TYPE_CHECKING:  # the parts that need numpy, libsndfile, FFmpeg, httpx are imported when
    # the first recording starts (or is repaired), not at the daemon's start: 0.25 s saved
    from . import status
    from .job import RecordJob, State

logger = logging.getLogger(__name__)

#: Recordings under way per client connection, and in all.
MAX_PER_CLIENT = 4
MAX_RECORDINGS = 16
#: Ended recordings a connection keeps (their objects) until it leaves the bus.
KEEP_ENDED = 8
CALLER_LEFT = "its caller left the bus"


def default_directory() -> Path:
    """``$XDG_DATA_HOME/audiopolicyd/recordings`` (``~/.local/share/...`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "audiopolicyd" / "recordings"


@dataclass
class Recording:
    """One recording: its job and what the daemon holds for it."""

    control_id: str
    recording_id: str
    owner: str
    job: RecordJob
    session: Any
    poster: status.StatusPoster | None = None
    #: The caller's file (``RecordToFile``), which the encoder leaves open: closed at the end.
    file: Any = None
    task: asyncio.Task | None = field(default=None, repr=False)


class Recorders:
    """Every recording of the daemon.

    :param backend: captures (:meth:`Backend.capture`)
    :param sessions: the apps' sessions (:class:`~audiopolicyd.appsessions.AppSessions`)
    :param access: microphone permission of callers
        (:class:`~audiopolicyd.microphone.access.MicrophoneAccess`)
    :param devices: ``() -> {id: Device}`` present (``Runtime.devices``)
    :param routes: the sessions' routes (:class:`~audiopolicyd.sessionroutes.SessionRoutes`),
        or None: the server's default devices
    :param directory: where recordings without a caller's file go
    :param daemon_id: the daemon's id in status payloads (``project_id``); default: a new
        uuid per run
    :param state_dir: where the markers of recordings under way live (None: no crash repair)
    """

    def __init__(self, backend: Backend, sessions, access, devices: Callable[[], dict],
                 routes=None, directory: Path | None = None, daemon_id: str = "",
                 state_dir: Path | None = None):
        self.backend = backend
        self.sessions = sessions
        self.access = access
        self.devices = devices
        self.routes = routes
        self.directory = directory or default_directory()
        self.markers = state_dir / "recordings" if state_dir is not None else None
        #: ``project_id`` and ``node_id`` of status payloads: this daemon's run, this machine
        self.daemon_id = daemon_id or str(uuid.uuid4())
        self.node_id = str(uuid.uuid5(uuid.NAMESPACE_DNS, socket.gethostname()))
        self.recordings: dict[str, Recording] = {}
        self._closing: set[asyncio.Task] = set()  # status posters delivering their last
        #: ``listener(recording)`` when a recording is created (the D-Bus adapter exports it)
        #: and ``gone(recording)`` when it is dropped.
        self.on_created: list[Callable[[Recording], None]] = []
        self.on_dropped: list[Callable[[Recording], None]] = []

    # -- a new recording ------------------------------------------------------------------

    async def record(self, owner: str, identity, params: RecordParams,
                     fd: int | None = None) -> Recording:
        """Start a recording for the caller *owner* (its unique bus name).

        :param identity: the caller's process identity (from the bus, never from arguments)
        :param fd: the caller's file (``RecordToFile``), owned by the recording from here on
            (closed when it ends, or now when the call fails); None: a file in
            :attr:`directory`
        :returns: the recording, started; with ``background`` false the caller awaits
            ``recording.job.done``
        :raises InvalidArgument: a file descriptor that is not a regular file open for reading
            and writing (``O_RDWR``), or one in append mode
        :raises NotAllowed: the caller's app is denied the microphone
        :raises TooManySessions: past :data:`MAX_PER_CLIENT` or :data:`MAX_RECORDINGS`
        """
        from . import encode, status
        from .job import RATE, RecordJob

        writer = session = target = None
        try:
            running = [r for r in self.recordings.values() if not r.job.state.final]
            if sum(r.owner == owner for r in running) >= MAX_PER_CLIENT:
                raise TooManySessions(f"a client may run at most {MAX_PER_CLIENT} recordings")
            if len(running) >= MAX_RECORDINGS:
                raise TooManySessions(f"the daemon runs at most {MAX_RECORDINGS} recordings")
            session = self._session(owner, identity, params)
            if params.microphone and self.access.broker is not None \
                    and self.access.decision(session) is Decision.DENIED:
                raise NotAllowed(f"{self.access.app_of(session).app_id} is denied the "
                                 "microphone (audiopolicyctl grant APP)")
            control_id = uuid.uuid4().hex
            target, url = self._target(control_id, params.format, fd)
            fd = None  # the file object owns it now
            writer = encode.open_writer(target, params.format, RATE, 2 if params.stereo else 1)
            self._mark(control_id, target, params.format)
        except BaseException:
            if fd is not None:
                os.close(fd)
            self._unwind(session, target, writer)
            raise
        poster = status.StatusPoster(params.status_url) if params.status_url else None
        # the job's callbacks read `recording`, bound below, when they are called
        job = RecordJob(params, writer, lambda: self._blocks(recording), url,
                        prepare=lambda: self._prepare(recording),
                        status=lambda job, state: self._payload(recording, state))
        recording = Recording(control_id, str(uuid.uuid4()), owner, job, session, poster,
                              None if isinstance(target, Path) else target)
        if poster is not None:
            job.listeners.append(poster.post)
        self.recordings[control_id] = recording
        for listener in self.on_created:
            listener(recording)
        recording.task = job.start()
        recording.task.add_done_callback(lambda _t: self._ended(recording))
        logger.info("recording %s for %s (%s): %s %s%s to %s", control_id, owner,
                    session.identity.key, params.format,
                    "stereo" if params.stereo else params.direction,
                    " in the background" if params.background else "", url)
        return recording

    def _unwind(self, session, target: Any, writer) -> None:
        """A recording that could not start leaves nothing: its session, its writer, the
        file it created (a caller's file is closed, never removed)."""
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        if isinstance(target, Path):
            target.unlink(missing_ok=True)
        elif target is not None:
            target.close()
        if session is not None:
            self.sessions.remove(session, "its recording could not start")

    def _session(self, owner: str, identity, params: RecordParams):
        # named for the caller's app: the name a permission prompt shows
        name = f"{os.path.basename(identity.exe or '') or identity.key} (recorder)"
        if params.direction == "speak" and not params.stereo:
            hints = {"Name": name, "Category": "record"}
        else:  # what it records must go on playing: it acts on nobody
            hints = {"Name": name, "Category": "playAndRecord", "Options": ["mixWithOthers"]}
        return self.sessions.create(owner, identity, hints)

    def _target(self, control_id: str, fmt: str, fd: int | None) -> tuple[Any, str]:
        """Where the file goes and its URL: the caller's descriptor, or a new file."""
        if fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{time.strftime('%Y%m%d-%H%M%S')}-{control_id[:8]}.{fmt}"
            return path, path.resolve().as_uri()
        info = os.fstat(fd)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidArgument("RecordToFile fd must be a regular file (a recording is "
                                  "written with seeks)")
        if flags & os.O_ACCMODE != os.O_RDWR:
            raise InvalidArgument("RecordToFile fd must be open for reading and writing "
                                  "(O_RDWR: an encoder reads back its headers)")
        if flags & os.O_APPEND:
            raise InvalidArgument("RecordToFile fd must not be open in append mode")
        where = _fd_path(fd)
        return os.fdopen(fd, "r+b"), Path(where).as_uri() if where else f"fd:{fd}"

    # -- the job's parts -------------------------------------------------------------------

    async def _prepare(self, recording: Recording) -> None:
        """Before recording: the permission (waiting for the user's answer), the beep, then
        the session's activation (its policy acts from here on)."""
        params, session = recording.job.params, recording.session
        if params.microphone and self.access.broker is not None \
                and self.access.decision(session) is not Decision.GRANTED:
            logger.info("recording %s waits for the user's microphone decision on %s",
                        recording.control_id, self.access.app_of(session).app_id)
            if not await self.access.request(session):
                raise NotAllowed(f"{self.access.app_of(session).app_id} was denied the "
                                 "microphone")
        if params.beep:
            from . import beep

            output = await self._output(recording)
            if output is None:
                raise ConnectionError("no output (sink) to beep on")
            await beep.play(self.backend, output)
        self.sessions.set_active(session, True, [])

    async def _blocks(self, recording: Recording):
        from . import capture
        from .job import BLOCK_MS, RATE

        microphone, monitor = await self._devices(recording)
        async for block in capture.blocks(self.backend, microphone, monitor, RATE, BLOCK_MS):
            yield block

    async def _devices(self, recording: Recording) -> tuple[Device | None, Device | None]:
        params = recording.job.params
        microphone = await self._input(recording) if params.microphone else None
        monitor = await self._output(recording) if params.monitor else None
        if params.microphone and microphone is None:
            raise ConnectionError("no microphone (source) to record")
        if params.monitor and monitor is None:
            raise ConnectionError("no output (sink) whose monitor to record")
        return microphone, monitor

    async def _input(self, recording: Recording) -> Device | None:
        return await self._routed(recording, "inputs", "source")

    async def _output(self, recording: Recording) -> Device | None:
        return await self._routed(recording, "outputs", "sink")

    async def _routed(self, recording: Recording, ports: str, kind: str) -> Device | None:
        """The session's routed device of a direction, else the server's default."""
        present = self.devices()
        if self.routes is not None:
            route = self.routes.current_route(recording.session)
            for port in getattr(route, ports):
                if port.device in present:
                    return present[port.device]
        default = getattr(await self.backend.default_devices(), kind)
        candidates = [d for d in present.values() if d.kind == kind and not d.monitor_of]
        for device in candidates:
            if device.name == default:
                return device
        return candidates[0] if candidates else None

    def _payload(self, recording: Recording, state: State) -> dict:
        from . import status
        from .job import State

        job = recording.job
        ended = state.final
        return status.payload(
            state=state.value, daemon_id=self.daemon_id, node_id=self.node_id,
            session_id=recording.session.id, control_id=recording.control_id,
            recording_id=recording.recording_id, url=job.url, format=job.params.format,
            direction=job.params.direction, stereo=job.params.stereo, timestamp=time.time(),
            behavior=job.behavior if state is State.PAUSED else None,
            duration=job.duration if ended else None, size=job.size if ended else None,
            # one that never recorded (a denial) started and ended at its end
            start_time=(job.start_time or job.end_time) if ended else None,
            end_time=job.end_time if ended else None)

    # -- control ------------------------------------------------------------------------------

    def get(self, control_id: str, caller: str | None = None) -> Recording:
        """A recording, for its owner only.

        :raises NoSuchSession: no such recording (any more)
        :raises NotOwner: *caller* is not the connection that started it
        """
        recording = self.recordings.get(control_id)
        if recording is None:
            raise NoSuchSession(f"no recording {control_id!r:.40}")
        if caller is not None and caller != recording.owner:
            raise NotOwner("only the connection that started a recording may control it")
        return recording

    def peer_gone(self, owner: str) -> None:
        """A connection left the bus: its recordings stop (each with a valid file) and are
        dropped once ended."""
        for recording in [r for r in self.recordings.values() if r.owner == owner]:
            if recording.job.state.final:
                self._drop(recording)
            else:
                recording.job.stop(CALLER_LEFT)

    async def close(self) -> None:
        """Stop every recording and wait for its file and last status (the daemon stops)."""
        for recording in list(self.recordings.values()):
            recording.job.stop("the daemon stops")
        tasks = [r.task for r in self.recordings.values() if r.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        posters = [r.poster.aclose() for r in self.recordings.values() if r.poster is not None]
        if posters:
            await asyncio.gather(*posters, return_exceptions=True)
        if self._closing:  # the last statuses of recordings dropped already
            await asyncio.wait(self._closing, timeout=10)

    def _ended(self, recording: Recording) -> None:
        """A job ended: its session goes (what it silenced comes back), its status poster
        delivers what is left; a gone caller's recording is dropped, and a caller keeps at
        most :data:`KEEP_ENDED` ended ones."""
        job = recording.job
        self._unmark(recording.control_id)
        logger.info("recording %s ended: %s%s (%.2f s, %d bytes)", recording.control_id,
                    job.state.value, f" ({job.error})" if job.error else "", job.duration,
                    job.size)
        # (a session its owner's leaving removed already is no error)
        self.sessions.remove(recording.session, f"its recording ended ({job.state.value})")
        if recording.file is not None:
            recording.file.close()
        if recording.poster is not None:
            self._closing.add(asyncio.ensure_future(recording.poster.aclose()))
            for task in [t for t in self._closing if t.done()]:
                self._closing.discard(task)
        if job.stop_reason == CALLER_LEFT:
            self._drop(recording)
            return
        ended = [r for r in self.recordings.values()
                 if r.owner == recording.owner and r.job.state.final]
        for old in ended[:-KEEP_ENDED]:
            self._drop(old)

    # -- crash repair ---------------------------------------------------------------------

    def _mark(self, control_id: str, target: Any, fmt: str) -> None:
        """The marker of a recording under way: where its file is (as far as the daemon
        knows a path: a caller's descriptor's path from /proc) and its format."""
        if self.markers is None:
            return
        path = str(target) if isinstance(target, Path) else _fd_path(target)
        try:
            self.markers.mkdir(parents=True, exist_ok=True)
            (self.markers / f"{control_id}.json").write_text(
                json.dumps({"path": path, "format": fmt}))
        except OSError as exc:  # a full disk: the recording goes on, unrepairable after a kill
            logger.warning("recording %s: no crash marker (%s)", control_id, exc)

    def _unmark(self, control_id: str) -> None:
        if self.markers is not None:
            with contextlib.suppress(OSError):
                (self.markers / f"{control_id}.json").unlink()

    def recover(self) -> None:
        """Repair the files of recordings a kill cut (their markers are left), once at start;
        each repaired file is logged with the seconds it kept. Never raises."""
        if self.markers is None or not self.markers.is_dir():
            return
        from . import encode

        for marker in sorted(self.markers.glob("*.json")):
            try:
                entry = json.loads(marker.read_text())
                path, fmt = str(entry["path"]), str(entry["format"])
                kept = encode.repair(path, fmt) if path else None
                if kept is None:
                    logger.warning("recording %s was cut by a crash; nothing of %s could be "
                                   "saved", marker.stem, path or "its file (no path known)")
                else:
                    logger.warning("recording %s was cut by a crash: %s repaired, %.2f s kept",
                                   marker.stem, path, kept)
            except Exception as exc:  # a bad marker or file must not stop the daemon
                logger.error("recording %s: could not repair after a crash: %s", marker.stem,
                             exc)
            with contextlib.suppress(OSError):
                marker.unlink()

    def _drop(self, recording: Recording) -> None:
        if self.recordings.pop(recording.control_id, None) is not None:
            for listener in self.on_dropped:
                listener(recording)


def _fd_path(file: Any) -> str:
    """The path a descriptor (or a file object's) names, from /proc; '' when it has none
    (deleted, a pipe)."""
    try:
        fd = file if isinstance(file, int) else file.fileno()
        where = os.readlink(f"/proc/self/fd/{fd}")
    except (OSError, ValueError):
        return ""
    return where if where.startswith("/") and not where.endswith(" (deleted)") else ""
