"""Helpers of the microphone-gate tests: recordings, permission entries, server modules.

What an app hears is measured in its recording (:func:`start_recording`, raw as
:func:`~.clients.record` writes it); decisions and pending requests are read through the real
``audiopolicyctl permissions --json`` (:func:`permissions`); modules are loaded and unloaded as
a client would with ``pactl`` (:func:`load`, :func:`unload`), and their own recordings found by
owner module.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

from .audio import RAW_FRAME_BYTES, RAW_RATE
from .clients import record
from .daemon import DaemonProcess
from .processes import wait_for
from .servers import AudioServer, pulse
from .streams import source_outputs, wait_stream

logger = logging.getLogger(__name__)

#: parecord's executable (parecord is a link to pacat, which names itself in its properties).
PACAT = "exe:" + os.path.realpath("/usr/bin/pacat")
#: The app id of a ``module-loopback`` the server loaded after the daemon connected.
LOOPBACK = "module:module-loopback"


def permissions(daemon: DaemonProcess) -> dict[str, dict]:
    """``audiopolicyctl permissions --json`` by app id."""
    done = daemon.ctl("permissions", "--json")
    assert done.returncode == 0, done.stderr
    return {e["App"]: e for e in json.loads(done.stdout)}


def ctl_ok(daemon: DaemonProcess, *args: str) -> str:
    """``audiopolicyctl *args``, which must succeed; its stdout."""
    done = daemon.ctl(*args)
    assert done.returncode == 0, f"audiopolicyctl {' '.join(args)}: {done.stderr}"
    return done.stdout


def start_recording(server: AudioServer, path: Path, **kw) -> subprocess.Popen:
    """:func:`~.clients.record` into *path* (20 ms fragments, *kw* passed on) until its stream
    is linked and *path* has data; the ``parecord`` process."""
    proc = record(server, path=path, latency_ms=20, **kw)
    wait_stream(server, proc, kind="source-output")
    wait_for(lambda: path.exists() and path.stat().st_size > 0, 10, f"{path} to fill")
    return proc


def load(server: AudioServer, name: str, argument: str) -> int:
    """Load a module as a client would (``pactl load-module``); its index."""
    with pulse(server) as p:
        index = p.module_load(name, argument)
    logger.info("%s %s loaded as #%d", name, argument, index)
    return index


def unload(server: AudioServer, index: int) -> None:
    """Unload module *index* as a client would (``pactl unload-module``)."""
    with pulse(server) as p:
        p.module_unload(index)


def module_outputs(server: AudioServer, index: int) -> list:
    """The module's source-outputs (its recordings), once it has one."""
    return wait_for(lambda: [so for so in source_outputs(server) if so.owner_module == index],
                    10, f"module #{index}'s source-output")


def wait_module_muted(server: AudioServer, index: int, muted: bool) -> None:
    """Wait until every recording of module *index* has the mute flag *muted*."""
    wait_for(lambda: [so.mute for so in module_outputs(server, index)], 10,
             f"module #{index}'s recording {'muted' if muted else 'unmuted'}",
             until=lambda mutes: all(bool(m) is muted for m in mutes))


def recorded_for(path: Path, seconds: float) -> None:
    """Wait until *path* holds *seconds* of recording."""
    size = int(seconds * RAW_RATE) * RAW_FRAME_BYTES
    wait_for(lambda: os.path.getsize(path), 20, f"{seconds} s in {path}",
             until=lambda n: n >= size)


def wait_pending(daemon: DaemonProcess, *apps: str) -> dict[str, dict]:
    """The permission entries once each of *apps* has a pending request."""
    return wait_for(lambda: permissions(daemon), 10, f"pending requests for {apps}",
                    until=lambda e: all(e.get(a, {}).get("Request") == "pending" for a in apps))
