"""Real private audio servers speaking the PulseAudio protocol: PulseAudio and PipeWire.

Both servers expose the same virtual devices:

* sink ``speaker`` (``device.description=Speaker``), the default sink;
* sink ``headphones`` (``device.form_factor=headphone``);
* source ``mic`` (``device.form_factor=microphone``), the default source: a
  ``module-pipe-source`` fed a 440 Hz sine (peak 16384) in real time, 10 ms at
  a time, by ``programs/mic_feeder.py`` (:data:`MIC_FEEDER`), on both servers.
  It behaves as a capture device does: a new recording gets blocks as they are
  captured, never a backlog at once.

Typical use::

    with PrivateBus() as bus, PipeWireServer(bus) as server:
        tone = make_tone("/tmp/tone.wav")
        player = play(server, tone, role="music")
        wait_for(lambda: sink_inputs(server), 5, "a sink-input")

Clients started through :func:`start_client` (and the helpers of :mod:`.clients` built on it)
are tracked by their server and stopped by :meth:`AudioServer.close`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pulsectl

from .bus import PrivateBus
from .processes import (
    PROGRAMS,
    ServerStartError,
    Service,
    child_env,
    log_tail,
    stop_process,
    wait_for,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Sink names every server provides.
SINKS = ("speaker", "headphones")
#: Source name every server provides (besides sink monitors).
MIC = "mic"
#: The program that feeds the ``mic`` pipe source (a sine, 10 ms blocks, real time).
MIC_FEEDER = PROGRAMS / "mic_feeder.py"
#: ``module-pipe-source`` arguments of ``mic`` but ``file=``, the same on both servers.
MIC_ARGS = ('source_name=mic format=s16le rate=48000 channels=2 '
            'source_properties="device.description=Mic device.form_factor=microphone"')


def _has_devices(devices: dict[str, Any]) -> bool:
    """Return whether *devices* (see ``AudioServer._devices``) has ours."""
    return set(SINKS) <= set(devices["sinks"]) and MIC in devices["sources"]


def _has_defaults(devices: dict[str, Any]) -> bool:
    """Return whether the defaults in *devices* are ``speaker`` and ``mic``."""
    return devices.get("default_sink") == "speaker" and devices.get("default_source") == MIC


class AudioServer(Service):
    """Base class of a private audio server speaking the PulseAudio protocol.

    Each instance has its own ``XDG_RUNTIME_DIR`` (mode 700) and ``HOME`` in a
    temporary directory, which survive :meth:`restart` (so saved state, like
    restored stream volumes, persists) and are removed by :meth:`close`.
    Clients started through :func:`~.clients.play`, :func:`~.clients.record` and
    :func:`~.clients.start_mpv` are stopped by :meth:`close`.

    :ivar name: ``"pulseaudio"`` or ``"pipewire"``.
    :ivar env: ``XDG_RUNTIME_DIR``, ``HOME``, ``PULSE_SERVER`` and
        ``DBUS_SESSION_BUS_ADDRESS`` for clients of this server.
    :ivar dir: the temporary directory, holding the server logs.
    """

    name = ""
    #: Seconds :meth:`start` waits for readiness.
    start_timeout = 15.0

    def __init__(self, bus: PrivateBus) -> None:
        """Prepare the directories; *bus* must be started."""
        self.bus = bus
        self.dir = Path(tempfile.mkdtemp(prefix=f"apd-{self.name}-"))
        self.runtime_dir = self.dir / "runtime"
        self.home = self.dir / "home"
        self.runtime_dir.mkdir(mode=0o700)
        self.runtime_dir.chmod(stat.S_IRWXU)
        self.home.mkdir()
        self.env = {
            "XDG_RUNTIME_DIR": str(self.runtime_dir),
            "HOME": str(self.home),
            "PULSE_SERVER": self.pulse_server,
            "DBUS_SESSION_BUS_ADDRESS": bus.address,
        }
        #: The FIFO ``module-pipe-source`` reads the ``mic`` signal from (the server makes it).
        self.mic_fifo = self.dir / "mic.fifo"
        self.procs: list[subprocess.Popen] = []
        self.clients: list[subprocess.Popen] = []
        #: Seconds the last :meth:`start` took until ready.
        self.startup_time = 0.0

    @property
    def pulse_server(self) -> str:
        """The ``PULSE_SERVER`` string, ``unix:<runtime>/pulse/native``."""
        return f"unix:{self.runtime_dir}/pulse/native"

    def _commands(self) -> list[list[str]]:
        """Return the server's command lines, in start order."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write the server's configuration (before every start)."""

    def _before_next(self, index: int, deadline: float) -> None:
        """Wait, if needed, before starting command number *index* (from 1)."""

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        """Start *argv* with this server's env, output appended to ``dir/log``."""
        with open(self.dir / log, "ab") as out:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=child_env(self.env))

    def logs(self) -> list[Path]:
        """Return the paths of the server's log files."""
        return [self.dir / f"{argv[0]}.log" for argv in self._commands()]

    def log_tails(self) -> str:
        """Return the tails of all server logs, for error messages."""
        return "\n".join(log_tail(path) for path in self.logs())

    def start(self) -> None:
        """Start the server and wait until it is ready.

        Ready means: ``pactl info`` answers, the devices exist and the
        defaults are ``speaker`` and ``mic``.

        :raises ServerStartError: if it is not ready in :attr:`start_timeout`
            seconds or a process exits; the message has the log tails.
        """
        if self.procs:
            raise RuntimeError(f"{self.name} already started")
        self._prepare()
        began = time.monotonic()
        deadline = began + self.start_timeout
        try:
            # first started, last stopped: the mic never runs dry while a server reads it
            self.procs.append(self._spawn([sys.executable, str(MIC_FEEDER), str(self.mic_fifo)],
                                          "mic_feeder.log"))
            for index, argv in enumerate(self._commands()):
                if index:
                    self._before_next(index, deadline)
                self.procs.append(self._spawn(argv, f"{argv[0]}.log"))
            self._wait_ready(deadline)
        except (AssertionError, ServerStartError, OSError, pulsectl.PulseError) as exc:
            self.stop()
            raise ServerStartError(
                f"{self.name} failed to start: {exc}\n{self.log_tails()}") from exc
        self.startup_time = time.monotonic() - began
        logger.info("%s ready in %.3fs in %s (pids %s)", self.name, self.startup_time,
                    self.dir, [p.pid for p in self.procs])

    def _check_alive(self) -> None:
        """:raises ServerStartError: if a server process has exited."""
        for proc in self.procs:
            if proc.poll() is not None:
                raise ServerStartError(f"{proc.args[0]} exited with {proc.returncode}")

    def _poll(self, probe: Callable[[], T], deadline: float, what: str,
              until: Callable[[T], bool] = bool) -> T:
        """:func:`~.processes.wait_for` until *deadline*, failing early if a process died."""
        def checked() -> T:
            self._check_alive()
            return probe()
        return wait_for(checked, max(deadline - time.monotonic(), 0.0), what, until=until)

    def _pactl_info(self) -> bool:
        """Return whether ``pactl info`` succeeds."""
        try:
            return subprocess.run(["pactl", "info"], env=child_env(self.env),
                                  capture_output=True, timeout=2).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _devices(self) -> dict[str, Any]:
        """Return sink and source names, and the defaults, as the server sees them.

        An unreachable server reads as no devices.
        """
        try:
            with pulse(self) as p:
                info = p.server_info()
                return {"sinks": sorted(s.name for s in p.sink_list()),
                        "sources": sorted(s.name for s in p.source_list()),
                        "default_sink": info.default_sink_name,
                        "default_source": info.default_source_name}
        except pulsectl.PulseError as exc:
            return {"sinks": [], "sources": [], "error": repr(exc)}

    def _set_defaults(self) -> dict[str, Any]:
        """Try to make ``speaker`` and ``mic`` the defaults; return :meth:`_devices`.

        On PipeWire this fails until WirePlumber has created the ``default``
        metadata, so success also tells that the session manager runs.
        """
        try:
            with pulse(self) as p:
                p.sink_default_set("speaker")
                p.source_default_set(MIC)
        except pulsectl.PulseError as exc:
            return {**self._devices(), "error": repr(exc)}
        return self._devices()

    def _wait_ready(self, deadline: float) -> None:
        """Wait until the server answers and its devices and defaults are set."""
        self._poll(self._pactl_info, deadline, "pactl info to succeed")
        self._poll(self._devices, deadline, f"sinks {SINKS} and source {MIC!r}",
                   until=_has_devices)
        self._poll(self._set_defaults, deadline, f"default sink 'speaker' and source {MIC!r}",
                   until=_has_defaults)

    def stop(self) -> None:
        """Stop the server processes (by pid, last started first)."""
        while self.procs:
            stop_process(self.procs.pop())

    def restart(self) -> None:
        """Stop and start again with the same runtime dir and home.

        Saved state survives, but WirePlumber writes its state to disk only
        1 s after a change: a change less than 1 s old is lost on PipeWire.
        """
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop tracked clients and the server, then remove the directory."""
        while self.clients:
            stop_process(self.clients.pop())
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PulseAudioServer(AudioServer):
    """A private PulseAudio 16 daemon configured by its own ``default.pa``.

    Loads ``module-native-protocol-unix``, the virtual devices, and
    ``module-stream-restore`` (which remembers volume and mute per role).
    """

    name = "pulseaudio"

    DEFAULT_PA = """\
load-module module-native-protocol-unix
load-module module-null-sink sink_name=speaker sink_properties=device.description=Speaker
load-module module-null-sink sink_name=headphones \
sink_properties="device.description=Headphones device.form_factor=headphone"
load-module module-stream-restore
"""

    def _prepare(self) -> None:
        """Write ``default.pa``."""
        (self.dir / "default.pa").write_text(
            self.DEFAULT_PA
            + f"load-module module-pipe-source file={self.mic_fifo} {MIC_ARGS}\n")

    def _commands(self) -> list[list[str]]:
        # --realtime=no: as root, PulseAudio schedules its threads SCHED_RR under an
        # RLIMIT_RTTIME budget, and the kernel kills it (SIGKILL) when a busy test machine makes
        # a burst of writes overrun it
        return [["pulseaudio", "-n", "-F", str(self.dir / "default.pa"),
                 "--daemonize=no", "--exit-idle-time=-1", "--log-target=stderr",
                 "--realtime=no", "--high-priority=no"]]


class PipeWireServer(AudioServer):
    """A private PipeWire 0.3: ``pipewire``, ``wireplumber``, ``pipewire-pulse``.

    The devices are declared in a drop-in file under the private
    ``HOME/.config/pipewire``: the null sinks and the ``mic`` pipe source as
    ``pulse.cmd`` ``load-module`` commands for ``pipewire-pulse``, so they come
    back after :meth:`restart`.
    WirePlumber does the stream restore; it keeps its state under
    ``HOME/.local/state/wireplumber``.
    """

    name = "pipewire"

    PULSE_CONF = """\
pulse.cmd = [
    { cmd = "load-module" args = "module-null-sink sink_name=speaker \
sink_properties=device.description=Speaker" }
    { cmd = "load-module" args = "module-null-sink sink_name=headphones \
sink_properties=\\"device.description=Headphones device.form_factor=headphone\\"" }
    { cmd = "load-module" args = "module-pipe-source file=@FIFO@ @MIC@" }
]
"""

    def _prepare(self) -> None:
        """Write the ``pipewire-pulse`` drop-in file."""
        conf = self.home / ".config" / "pipewire" / "pipewire-pulse.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "audiopolicyd-test.conf").write_text(
            self.PULSE_CONF.replace("@FIFO@", str(self.mic_fifo))
            .replace("@MIC@", MIC_ARGS.replace('"', '\\"')))

    def _commands(self) -> list[list[str]]:
        return [["pipewire"], ["wireplumber"], ["pipewire-pulse"]]

    def _before_next(self, index: int, deadline: float) -> None:
        """Before WirePlumber, wait for the PipeWire socket."""
        if index == 1:
            socket = self.runtime_dir / "pipewire-0"
            self._poll(socket.exists, deadline, f"{socket} to exist")


#: Connection attempts :func:`pulse` makes while the server's processes all run.
CONNECT_TRIES = 3


def pulse(server: AudioServer, name: str = "audiopolicyd-test") -> pulsectl.Pulse:
    """Return a connected sync :class:`pulsectl.Pulse` on *server* (a context manager).

    A refused connection is tried again (up to :data:`CONNECT_TRIES` in all) while every
    server process runs: pipewire-pulse 0.3.65 once refused one of a test's many short
    connections while it unloaded a module, and the test is about the daemon, not that.

    :raises ServerStartError: if a server process has exited (its exit status is named).
    :raises pulsectl.PulseError: if the last attempt is refused too.
    """
    for _ in range(CONNECT_TRIES - 1):
        try:
            return pulsectl.Pulse(name, server=server.pulse_server)
        except pulsectl.PulseError as exc:
            server._check_alive()
            logger.warning("%s refused a connection (%s); all its processes run: again",
                           server.name, exc)
            time.sleep(0.1)
    try:
        return pulsectl.Pulse(name, server=server.pulse_server)
    except pulsectl.PulseError:
        server._check_alive()
        raise


def start_client(server: AudioServer, argv: list[str],
            env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start a client of *server* (with *env* added), tracked so :meth:`AudioServer.close`
    stops it."""
    logger.debug("starting %s", argv)
    with open(server.dir / "clients.log", "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT,
                                env=child_env({**server.env, **(env or {})}))
    server.clients.append(proc)
    return proc


@contextlib.contextmanager
def running(server_cls: type[AudioServer]) -> Iterator[AudioServer]:
    """Run a private bus and a *server_cls* server for the ``with`` block."""
    with PrivateBus(service_dirs=[]) as bus, server_cls(bus) as server:
        yield server


#: Server classes by :attr:`AudioServer.name`.
SERVERS: dict[str, type[AudioServer]] = {
    cls.name: cls for cls in (PulseAudioServer, PipeWireServer)}


def add_microphone(server: AudioServer, name: str, scripted: bool = False) -> str:
    """Load a pipe source *name* fed by ``programs/mic_feeder.py`` (stopped with the server's
    clients): the sine, or, *scripted*, silence and what :func:`speak_into` hands it; returns
    its name."""
    fifo = server.dir / f"{name}.fifo"
    args = MIC_ARGS.replace("source_name=mic ", f"source_name={name} ")
    with pulse(server) as p:
        p.module_load("module-pipe-source", f"file={fifo} {args}")
    start_client(server, [sys.executable, str(MIC_FEEDER), str(fifo),
                          *(["--script"] if scripted else [])])
    return name


def speak_into(server: AudioServer, name: str, audio: bytes) -> None:
    """Feed *audio* (raw s16le, 48 kHz, stereo) into the scripted microphone *name*
    (:func:`add_microphone`) once, from its next 10 ms block on."""
    play = server.dir / f"{name}.fifo.play"
    part = play.with_suffix(".part")
    part.write_bytes(audio)
    part.rename(play)
