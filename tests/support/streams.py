"""The streams of a real server as the tests see them, through pulsectl.

Each client's stream is identified by its process id (``application.process.id``); the helpers
read the server's real state (raw volumes, ``PA_VOLUME_NORM`` = 65536, and mute flags), wait for
it, and act as the user would in a mixer (:func:`set_user_volume`, :func:`set_user_mute`).
"""

from __future__ import annotations

import json
import logging
import subprocess
from typing import Any

import pulsectl

from .processes import log_tail, stop_process, wait_for
from .servers import AudioServer, pulse

logger = logging.getLogger(__name__)

#: Raw volume of 100 % (``PA_VOLUME_NORM``).
VOLUME_NORM = 0x10000


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
    recording started by :func:`~.clients.record` must be linked to the source it names (a
    server links a recording of a missing source to the default one instead).

    Linked matters on pipewire-pulse, which announces a stream corked and
    unlinked with volume 0 and links it, at its restored volume, a few ms later.
    """
    def probe() -> Any:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} (pid {proc.pid}) exited with "
                                 f"{proc.returncode}\n{log_tail(server.dir / 'clients.log')}")
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
