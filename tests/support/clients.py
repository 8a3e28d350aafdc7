"""Real client programs on a private server: paplay, parecord, mpv with MPRIS, playerctl.

Every client is started through :func:`~.servers.start_client` (or :func:`watch`), so the
server tracks it and ``server.close()`` stops it.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Mapping

from .processes import PROGRAMS, LineReader, child_env, wait_for
from .servers import MIC, AudioServer, start_client
from .streams import wait_stream

logger = logging.getLogger(__name__)

#: The hostile recorder that undoes the daemon's hold on its own stream (see its docstring).
MIC_FIGHTER = PROGRAMS / "mic_fighter.py"

#: Where Debian's ``mpv-mpris`` puts the MPRIS plugin (the second path is a
#: symlink to the first, auto-loaded from the system-wide scripts directory).
MPRIS_PLUGIN_PATHS = ("/usr/lib/mpv-mpris/mpris.so", "/etc/mpv/scripts/mpris.so")


def _props_args(role: str | None, props: Mapping[str, str] | None) -> list[str]:
    """Return ``--property=k=v`` arguments for *role* and *props*."""
    merged = dict(props or {})
    if role is not None:
        merged["media.role"] = role
    return [f"--property={key}={value}" for key, value in merged.items()]


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
    return start_client(server, [*argv, str(path)], env)


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
    stereo, see :data:`~.audio.RAW_FRAME_BYTES`).

    :param latency_ms: ``--latency-msec``: small fragments reach *path* sooner (parecord's
        default fragment is about 2 s)
    :returns: the ``parecord`` process (stopped by ``server.close()``).
    """
    latency = [f"--latency-msec={latency_ms}"] if latency_ms else []
    proc = start_client(server, ["parecord", f"--device={device}", "--raw", *latency,
                            *_props_args(role, props), str(path)])
    proc.device = device  # checked by wait_stream: a missing source fails, never falls back
    return proc


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
    return start_client(server, [
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


def watch(server: AudioServer, argv: list[str], env: Mapping[str, str] | None = None,
          ) -> tuple[subprocess.Popen, LineReader]:
    """Start *argv* with its stdout collected line by line (stderr to ``clients.log``).

    The process is tracked like a client, so ``server.close()`` stops it.

    :param env: the environment (default: the server's)
    :returns: the process and the :class:`~.processes.LineReader` of its stdout
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
