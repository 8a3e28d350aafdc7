"""Integration-test harness: a private D-Bus, real audio servers, real clients.

Everything here runs real programs (``dbus-daemon``, ``pulseaudio``,
``pipewire`` + ``wireplumber`` + ``pipewire-pulse``, ``paplay``, ``mpv``,
``playerctl``, ``sox``) in private temporary directories, so tests never touch
the user's session.  Every process is started with :class:`subprocess.Popen`,
its handle is kept, and it is stopped by pid (never by name).

Both servers expose the same virtual devices:

* sink ``speaker`` (``device.description=Speaker``), the default sink;
* sink ``headphones`` (``device.form_factor=headphone``);
* source ``mic`` (``device.form_factor=microphone``), the default source: a
  ``module-pipe-source`` fed a 440 Hz sine (peak 16384) in real time, 10 ms at
  a time, by ``clients/mic_feeder.py`` (:data:`MIC_FEEDER`), on both servers.
  It behaves as a capture device does: a new recording gets blocks as they are
  captured, never a backlog at once.

Typical use::

    with PrivateBus() as bus, PipeWireServer(bus) as server:
        tone = make_tone("/tmp/tone.wav")
        player = play(server, tone, role="music")
        wait_for(lambda: sink_inputs(server), 5, "a sink-input")

The daemon under test runs as the real ``audiopolicyd`` executable
(:class:`DaemonProcess`: private state and config directories, debug log to a
file, SIGTERM / ``kill -9`` / restart with the same journal), and the helpers
after it (:func:`wait_stream`, :func:`wait_volume`, :func:`wait_muted`,
:func:`set_user_volume`, :func:`end_client`...) read the server's real state
through pulsectl, identifying each client's stream by its process id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pulsectl

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Programs the integration tests need.
REQUIRED_BINARIES = (
    "dbus-daemon", "pulseaudio", "pipewire", "wireplumber", "pipewire-pulse",
    "paplay", "parecord", "pactl", "mpv", "playerctl", "sox", "busctl", "dbus-send",
    "gdbus", "gsettings", "mount", "pw-record", "pw-play", "bwrap",
)

#: Sink names every server provides.
SINKS = ("speaker", "headphones")
#: Source name every server provides (besides sink monitors).
MIC = "mic"
#: The program that feeds the ``mic`` pipe source (a sine, 10 ms blocks, real time).
MIC_FEEDER = Path(__file__).parent / "clients" / "mic_feeder.py"
#: ``module-pipe-source`` arguments of ``mic`` but ``file=``, the same on both servers.
MIC_ARGS = ('source_name=mic format=s16le rate=48000 channels=2 '
            'source_properties="device.description=Mic device.form_factor=microphone"')

#: Raw volume of 100 % (``PA_VOLUME_NORM``).
VOLUME_NORM = 0x10000

#: Where Debian's ``mpv-mpris`` puts the MPRIS plugin (the second path is a
#: symlink to the first, auto-loaded from the system-wide scripts directory).
MPRIS_PLUGIN_PATHS = ("/usr/lib/mpv-mpris/mpris.so", "/etc/mpv/scripts/mpris.so")

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


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last *lines* lines of the log at *path*, headed by its name."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as exc:
        text = [f"<unreadable: {exc}>"]
    return f"--- {path} ---\n" + "\n".join(text)


def _has_devices(devices: dict[str, Any]) -> bool:
    """Return whether *devices* (see ``AudioServer._devices``) has ours."""
    return set(SINKS) <= set(devices["sinks"]) and MIC in devices["sources"]


def _has_defaults(devices: dict[str, Any]) -> bool:
    """Return whether the defaults in *devices* are ``speaker`` and ``mic``."""
    return devices.get("default_sink") == "speaker" and devices.get("default_source") == MIC


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


class PrivateBus:
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
            raise ServerStartError(f"dbus-daemon printed no address\n{_log_tail(log)}")
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

    def __enter__(self) -> PrivateBus:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AudioServer:
    """Base class of a private audio server speaking the PulseAudio protocol.

    Each instance has its own ``XDG_RUNTIME_DIR`` (mode 700) and ``HOME`` in a
    temporary directory, which survive :meth:`restart` (so saved state, like
    restored stream volumes, persists) and are removed by :meth:`close`.
    Clients started through :func:`play`, :func:`record` and
    :func:`start_mpv` are stopped by :meth:`close`.

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
        return "\n".join(_log_tail(path) for path in self.logs())

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
        """:func:`wait_for` until *deadline*, failing early if a process died."""
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

    def __enter__(self) -> AudioServer:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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


def pulse(server: AudioServer, name: str = "audiopolicyd-test") -> pulsectl.Pulse:
    """Return a connected sync :class:`pulsectl.Pulse` on *server* (a context manager)."""
    return pulsectl.Pulse(name, server=server.pulse_server)


def sink_inputs(server: AudioServer) -> list[pulsectl.PulseSinkInputInfo]:
    """Return the sink-inputs (playback streams) on *server* now."""
    with pulse(server) as p:
        return p.sink_input_list()


def source_outputs(server: AudioServer) -> list[pulsectl.PulseSourceOutputInfo]:
    """Return the source-outputs (recording streams) on *server* now."""
    with pulse(server) as p:
        return p.source_output_list()


def raw_volumes(info: Any) -> list[int]:
    """Return the per-channel raw volumes (``PA_VOLUME_NORM`` = 65536) of a pulsectl object."""
    return [round(v * VOLUME_NORM) for v in info.volume.values]


def set_raw_volume(server: AudioServer, info: pulsectl.PulseSinkInputInfo,
                   raw: int) -> None:
    """Set every channel of sink-input *info* to the raw volume *raw*."""
    volume = pulsectl.PulseVolumeInfo(raw / VOLUME_NORM, len(info.volume.values))
    with pulse(server) as p:
        p.volume_set(info, volume)


def make_tone(path: str | os.PathLike, seconds: float = 60, freq: int = 440) -> Path:
    """Write a 48 kHz stereo sine wav of *seconds* at *path* with sox; return the path."""
    path = Path(path)
    subprocess.run(["sox", "-n", "-r", "48000", "-c", "2", str(path), "synth", str(seconds),
                    "sine", str(freq), "vol", "0.3"], check=True, capture_output=True)
    return path


def _props_args(role: str | None, props: Mapping[str, str] | None) -> list[str]:
    """Return ``--property=k=v`` arguments for *role* and *props*."""
    merged = dict(props or {})
    if role is not None:
        merged["media.role"] = role
    return [f"--property={key}={value}" for key, value in merged.items()]


def _client(server: AudioServer, argv: list[str],
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


def play(server: AudioServer, path: str | os.PathLike, role: str | None = None,
         props: Mapping[str, str] | None = None, device: str | None = None,
         env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Play *path* with ``paplay`` on *server*.

    :param role: ``media.role`` of the stream.
    :param props: more stream properties.
    :param device: sink name; the default sink when ``None``.
    :param env: more environment, e.g. ``PULSE_PROP`` (which, unlike ``--property``, takes
        binary values: ``media.role=hex:c328ff00``).
    :returns: the ``paplay`` process (stopped by ``server.close()``).
    """
    argv = ["paplay", *_props_args(role, props)]
    if device is not None:
        argv.append(f"--device={device}")
    return _client(server, [*argv, str(path)], env)


#: PulseAudio 16 listens with a backlog of 5: more clients connecting at once than that, while
#: a busy server is slow to accept, are refused ("Connection refused"). Tests that start many
#: clients start them in batches of this many (:func:`start_in_batches`).
CONNECT_BATCH = 4


def start_in_batches(server: AudioServer, n: int, start: Callable[[int], subprocess.Popen],
                     kind: str = "sink-input") -> list[subprocess.Popen]:
    """Start ``n`` clients, ``start(i)`` each, :data:`CONNECT_BATCH` at a time, each batch's
    streams linked before the next batch starts; returns the processes in order."""
    procs: list[subprocess.Popen] = []
    for first in range(0, n, CONNECT_BATCH):
        batch = [start(i) for i in range(first, min(first + CONNECT_BATCH, n))]
        for proc in batch:
            wait_stream(server, proc, kind)
        procs += batch
    return procs


def record(server: AudioServer, device: str = MIC, role: str | None = None,
           props: Mapping[str, str] | None = None, path: str | os.PathLike = os.devnull,
           latency_ms: int | None = None) -> subprocess.Popen:
    """Record from source *device* with ``parecord`` into *path* (raw: s16le, 44.1 kHz,
    stereo, see :data:`RAW_FRAME_BYTES`).

    :param latency_ms: ``--latency-msec``: small fragments reach *path* sooner (parecord's
        default fragment is about 2 s)
    :returns: the ``parecord`` process (stopped by ``server.close()``).
    """
    latency = [f"--latency-msec={latency_ms}"] if latency_ms else []
    proc = _client(server, ["parecord", f"--device={device}", "--raw", *latency,
                            *_props_args(role, props), str(path)])
    proc.device = device  # checked by wait_stream: a missing source fails, never falls back
    return proc


#: Bytes per frame of :func:`record`'s raw output (s16le stereo), and frames per second.
RAW_FRAME_BYTES, RAW_RATE = 4, 44100


def peak(path: str | os.PathLike, start: int = 0, end: int | None = None) -> int:
    """The largest absolute sample value in bytes ``[start, end)`` of a raw recording
    (0: digital silence; the test mic's sine peaks near 16000)."""
    import array
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(None if end is None else end - start)
    data = data[:len(data) - len(data) % 2]
    samples = array.array("h", data)
    return max((abs(v) for v in samples), default=0)


#: Milliseconds of microphone audio a new recording of an app that may not record can get
#: before the daemon's mute (sent on the stream's ``new`` event) takes hold, by server: the
#: bound the microphone gate promises for any stream (docs/microphone.md, "Limits").
#: PulseAudio posts each block the source captures to every stream linked by then: when the
#: daemon is slow (a flood of streams, a loaded machine) the first block after the ``new``
#: event can come before the mute (one 10 ms block of the test mic seen). pipewire-pulse
#: 0.3.65 sometimes runs a new stream's first processing cycle unmuted (11 ms seen, about 1
#: run in 20).
START_LEAK_MS = {"pulseaudio": 50.0, "pipewire": 50.0}


def audible_until_ms(path: str | os.PathLike) -> float:
    """Where the last non-silent frame of a raw recording (:func:`record`) ends, in ms from its
    start: 0.0 for a recording that is digital silence throughout."""
    import array
    samples = array.array("h", Path(path).read_bytes()[:os.path.getsize(path) // 4 * 4])
    last = max((i for i, v in enumerate(samples) if v), default=-1)
    frames = last // (RAW_FRAME_BYTES // 2) + 1 if last >= 0 else 0
    return frames * 1000 / RAW_RATE


def assert_silenced_from_start(server: AudioServer, path: str | os.PathLike) -> None:
    """A recording of an app that may not record is silence, but for at most
    :data:`START_LEAK_MS` of the server at its very start."""
    leak = audible_until_ms(path)
    assert leak <= START_LEAK_MS[server.name], (
        f"{path}: microphone audio until {leak:.1f} ms (allowed on {server.name}: "
        f"{START_LEAK_MS[server.name]:.0f} ms at the start)")


def wait_recorded(path: str | os.PathLike, audible: bool, seconds: float = 0.2,
                  timeout: float = 10.0) -> int:
    """Wait until *seconds* of recording written after now are all audible (peak > 1000) or
    all silent (peak 0); returns the file offset where that stretch starts."""
    chunk = int(seconds * RAW_RATE) * RAW_FRAME_BYTES

    def probe() -> tuple[int, int] | None:
        start = os.path.getsize(path)
        wait_for(lambda: os.path.getsize(path) >= start + chunk, timeout,
                 f"{chunk} more bytes in {path}")
        return start, peak(path, start, start + chunk)

    start, _ = wait_for(probe, timeout, f"{path} {'audible' if audible else 'silent'}",
                        until=lambda r: (r[1] > 1000) if audible else (r[1] == 0))
    return start


def mpris_plugin() -> str:
    """Return the path of the mpv MPRIS plugin.

    :raises FileNotFoundError: if ``mpv-mpris`` is not installed.
    """
    for path in MPRIS_PLUGIN_PATHS:
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"mpv MPRIS plugin not found in {MPRIS_PLUGIN_PATHS}")


def start_mpv(server: AudioServer, path: str | os.PathLike) -> subprocess.Popen:
    """Play *path* in a loop with mpv (no video, ``--ao=pulse``) and its MPRIS plugin.

    mpv runs with ``--no-config`` and loads the plugin with ``--script``:
    without ``--no-config`` it also auto-loads ``/etc/mpv/scripts/mpris.so``
    and registers twice (``...mpv`` and ``...mpv.instance<pid>``).  It owns
    ``org.mpris.MediaPlayer2.mpv`` on the server's private bus.

    :returns: the mpv process (stopped by ``server.close()``).
    """
    return _client(server, [
        "mpv", "--no-config", "--no-video", "--ao=pulse", "--loop-file=inf",
        "--no-terminal", f"--script={mpris_plugin()}",
        f"--log-file={server.dir / 'mpv.log'}", str(path)])


def playerctl(env: Mapping[str, str], *args: str, timeout: float = 5.0,
              ) -> subprocess.CompletedProcess:
    """Run ``playerctl *args`` on the bus of *env*; return the completed process."""
    return subprocess.run(["playerctl", *args], env=child_env(env), capture_output=True,
                          text=True, timeout=timeout)


def wait_mpris_player(bus_env: Mapping[str, str], timeout: float = 10.0,
                      player: str = "mpv") -> str:
    """Wait until an MPRIS player named *player* answers on the bus of *bus_env*.

    :param bus_env: an env with ``DBUS_SESSION_BUS_ADDRESS`` (``bus.env``,
        ``server.env``).
    :returns: its bus name, e.g. ``org.mpris.MediaPlayer2.mpv``.
    :raises AssertionError: if none answers ``playerctl status`` in time.
    """
    def ready() -> str:
        names = playerctl(bus_env, "-l").stdout.split()
        for name in names:
            if (name == player or name.startswith(player + ".")) and \
                    playerctl(bus_env, "-p", name, "status").returncode == 0:
                return name
        return ""
    return "org.mpris.MediaPlayer2." + wait_for(ready, timeout, f"MPRIS player {player!r}")


@contextlib.contextmanager
def running(server_cls: type[AudioServer]) -> Iterator[AudioServer]:
    """Run a private bus and a *server_cls* server for the ``with`` block."""
    with PrivateBus(service_dirs=[]) as bus, server_cls(bus) as server:
        yield server


#: Server classes by :attr:`AudioServer.name`.
SERVERS: dict[str, type[AudioServer]] = {
    cls.name: cls for cls in (PulseAudioServer, PipeWireServer)}


# -- the daemon under test -----------------------------------------------------------------------

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
AUDIOPOLICYCTL = _console_script("audiopolicyctl", "audiopolicyd.cli")

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
        return child_env({**self.server.env, "XDG_STATE_HOME": str(self.state_home),
                          "XDG_CONFIG_HOME": str(self.config_home)})

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
        return _log_tail(self.log, lines)

    def close(self) -> None:
        """Kill every daemon process still running (SIGTERM, then SIGKILL)."""
        for proc in self.history:
            stop_process(proc, timeout=10)
        self.history.clear()

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- stream helpers for the daemon tests --------------------------------------------------------

#: libpulse's ``PA_INVALID_INDEX``: a pipewire-pulse stream not linked to a device yet.
INVALID_INDEX = 0xFFFFFFFF


def stream_of(server: AudioServer, proc: subprocess.Popen,
              kind: str = "sink-input") -> pulsectl.PulseSinkInputInfo | None:
    """The stream of client *proc* on *server* (by ``application.process.id``), or None."""
    listing = sink_inputs(server) if kind == "sink-input" else source_outputs(server)
    return next((s for s in listing
                 if s.proplist.get("application.process.id") == str(proc.pid)), None)


def _linked(info: Any) -> bool:
    device = info.sink if hasattr(info, "sink") else info.source
    return device != INVALID_INDEX and not info.corked


def wait_stream(server: AudioServer, proc: subprocess.Popen, kind: str = "sink-input",
                timeout: float = 10.0) -> Any:
    """Wait until client *proc* has a linked, running stream on *server*; return it. A
    recording started by :func:`record` must be linked to the source it names (a server links
    a recording of a missing source to the default one instead).

    Linked matters on pipewire-pulse, which announces a stream corked and
    unlinked with volume 0 and links it, at its restored volume, a few ms later.
    """
    def probe() -> Any:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} (pid {proc.pid}) exited with "
                                 f"{proc.returncode}\n{_log_tail(server.dir / 'clients.log')}")
        return stream_of(server, proc, kind)
    info = wait_for(probe, timeout, f"a linked {kind} of {proc.args[0]} pid {proc.pid}",
                    until=lambda s: s is not None and _linked(s))
    device = getattr(proc, "device", None)  # set by record()
    if device is not None and kind == "source-output":
        with pulse(server) as p:
            linked = p.source_info(info.source).name
        assert linked == device, (f"{proc.args[0]} (pid {proc.pid}) records {linked!r}, not "
                                  f"{device!r}: is the source missing?")
    return info


def stream_state(server: AudioServer, proc: subprocess.Popen,
                 kind: str = "sink-input") -> tuple[list[int], bool] | None:
    """``(raw volumes, muted)`` of client *proc*'s stream now, None when it has none."""
    info = stream_of(server, proc, kind)
    return None if info is None else (raw_volumes(info), bool(info.mute))


def wait_volume(server: AudioServer, proc: subprocess.Popen, raw: int | list[int],
                timeout: float = 10.0, what: str = "") -> list[int]:
    """Wait until every channel of *proc*'s stream is at raw volume *raw* exactly."""
    info = wait_stream(server, proc, timeout=timeout)
    want = list(raw) if isinstance(raw, list) else [raw] * len(info.volume.values)
    return wait_for(lambda: (stream_state(server, proc) or ([], None))[0], timeout,
                    what or f"{proc.args[0]} pid {proc.pid} at raw volume {want}",
                    until=lambda v: v == want)


def wait_muted(server: AudioServer, proc: subprocess.Popen, muted: bool,
               kind: str = "sink-input", timeout: float = 10.0) -> None:
    """Wait until *proc*'s stream has the mute flag *muted*."""
    wait_for(lambda: stream_state(server, proc, kind), timeout,
             f"{proc.args[0]} pid {proc.pid} {'muted' if muted else 'unmuted'}",
             until=lambda s: s is not None and s[1] is muted)


def set_user_volume(server: AudioServer, proc: subprocess.Popen, raw: int) -> None:
    """Act as the user: set *proc*'s stream to raw volume *raw* and wait until it reads so."""
    info = wait_stream(server, proc)
    set_raw_volume(server, info, raw)
    wait_volume(server, proc, raw, what=f"the user's volume {raw} on {proc.args[0]}")


def set_user_mute(server: AudioServer, proc: subprocess.Popen, muted: bool) -> None:
    """Act as the user: set *proc*'s stream mute flag and wait until it reads so."""
    info = wait_stream(server, proc)
    with pulse(server) as p:
        p.mute(info, muted)
    wait_muted(server, proc, muted)


def end_client(server: AudioServer, proc: subprocess.Popen, kind: str = "sink-input") -> None:
    """Stop client *proc* (by pid) and wait until its stream is gone from *server*."""
    stop_process(proc)
    if proc in server.clients:
        server.clients.remove(proc)
    wait_for(lambda: stream_of(server, proc, kind) is None, 10,
             f"the {kind} of {proc.args[0]} pid {proc.pid} to go")


def watch(server: AudioServer, argv: list[str], env: Mapping[str, str] | None = None,
          ) -> tuple[subprocess.Popen, LineReader]:
    """Start *argv* with its stdout collected line by line (stderr to ``clients.log``).

    The process is tracked like a client, so ``server.close()`` stops it.

    :param env: the environment (default: the server's)
    :returns: the process and the :class:`LineReader` of its stdout
    """
    with open(server.dir / "clients.log", "ab") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=err, text=True,
                                env=dict(env) if env is not None else child_env(server.env))
    server.clients.append(proc)
    return proc, LineReader(proc.stdout)


def follow_player(server: AudioServer, player: str = "mpv",
                  ) -> tuple[subprocess.Popen, LineReader]:
    """``playerctl --follow status`` of *player*: every PlaybackStatus it goes through."""
    return watch(server, ["playerctl", "-p", player, "--follow", "status"])


def player_status(server: AudioServer, player: str = "mpv") -> str:
    """``playerctl -p player status``: ``Playing``, ``Paused``, ``Stopped`` or '' on error."""
    return playerctl(server.env, "-p", player, "status").stdout.strip()


def wait_player(server: AudioServer, status: str, player: str = "mpv",
                timeout: float = 10.0) -> None:
    """Wait until MPRIS *player* reports PlaybackStatus *status* (read with playerctl)."""
    wait_for(lambda: player_status(server, player), timeout, f"{player} {status}",
             until=lambda s: s == status)


def collapse(lines: list[str]) -> list[str]:
    """*lines* without consecutive repeats (``playerctl --follow`` may print a state twice)."""
    return [line for i, line in enumerate(lines) if not i or line != lines[i - 1]]


def remembered_volume(server: AudioServer, role: str) -> list[int] | None:
    """The raw volume *server* remembers for new playback streams of ``media.role`` *role*.

    PulseAudio: module-stream-restore's database (``ext-stream-restore``).
    PipeWire: WirePlumber's state file (cubic linear volumes, role names capitalised;
    written about 1 s after a change): ``restore-stream`` with ``KEY:channelVolumes=v;v;``
    lines (WirePlumber 0.4, Debian 12) or ``stream-properties`` with ``KEY={JSON}`` lines
    holding ``channelVolumes`` (0.5, Debian 13).
    """
    if server.name == "pulseaudio":
        try:
            with pulse(server) as p:
                for entry in p.stream_restore_list():
                    if entry.name == f"sink-input-by-media-role:{role}":
                        return raw_volumes(entry)
        except pulsectl.PulseError:  # a busy server may refuse one connection: ask again
            pass
        return None
    key = f"Output/Audio:media.role:{role.capitalize()}"
    state = server.home / ".local" / "state" / "wireplumber"
    values = None
    for name, prefix in (("restore-stream", f"{key}:channelVolumes="),
                         ("stream-properties", f"{key}=")):
        try:
            text = (state / name).read_text()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            if not line.startswith(prefix):
                continue
            value = line[len(prefix):]
            values = (json.loads(value).get("channelVolumes") if value.startswith("{")
                      else [float(v) for v in value.split(";") if v])
    if not values:
        return None
    return [round(v ** (1 / 3) * VOLUME_NORM) for v in values]


def ducked(raw: int, *gains: float) -> int:
    """The raw volume of *raw* ducked by *gains*: the gains multiplied first, as the
    engine composes several duckers, then applied to the user's integer and rounded."""
    gain = 1.0
    for g in gains:
        gain *= g
    return int(round(raw * gain))


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


# -- explicit sessions: client processes and stateless D-Bus tools ----------------------------

#: The dbus-fast test app (see its docstring for the line protocol).
SESSION_CLIENT = Path(__file__).with_name("session_client.py")
SESSION_IFACE = BUS_NAME + ".Session"
SESSION_PATH_PREFIX = OBJECT_PATH + "/session/"
ERROR_PREFIX = BUS_NAME + ".Error."


class Pid:
    """A process we did not start (a client's child), by pid: quacks enough like
    :class:`subprocess.Popen` for :func:`stream_of`, :func:`wait_stream`, :func:`wait_volume`,
    :func:`wait_muted` and :func:`set_user_volume`."""

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
                                     f"for {what}\n{_log_tail(self.server.dir / 'clients.log')}")
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


def _bus_address(env: Mapping[str, str]) -> str:
    return env["DBUS_SESSION_BUS_ADDRESS"]


def busctl(env: Mapping[str, str], *args: str, timeout: float = 10.0,
           ) -> subprocess.CompletedProcess:
    """``busctl --address=<the bus of env> *args`` (systemd's sd-bus client): each run is one
    short-lived connection. Runs with ``SYSTEMD_LOG_LEVEL=debug``, whose stderr names the
    D-Bus error of a failed call (see :func:`busctl_error`)."""
    return subprocess.run(["busctl", f"--address={_bus_address(env)}", *args],
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


def gdbus_call(env: Mapping[str, str], path: str, method: str, *args: str,
               timeout: float = 10.0) -> subprocess.CompletedProcess:
    """``gdbus call`` (GLib's GDBus client) of *method* (``interface.Member``) on the daemon's
    object *path*; its errors name the D-Bus error (``GDBus.Error:<name>: message``)."""
    return subprocess.run(["gdbus", "call", "--address", _bus_address(env), "--dest", BUS_NAME,
                           "--object-path", path, "--method", method, *args],
                          env=child_env(env), capture_output=True, text=True, timeout=timeout)


#: xdg-desktop-portal's permission store (Debian package ``xdg-desktop-portal``); not on PATH.
PERMISSION_STORE = "/usr/libexec/xdg-permission-store"
PERMISSION_STORE_NAME = "org.freedesktop.impl.portal.PermissionStore"


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
                                       f"{_log_tail(self.log)}")
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
