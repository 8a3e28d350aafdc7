"""``audiopolicyctl record``: SWML's ``record`` verb in the foreground (``Manager.Record``,
docs/recording.md).

It asks the daemon for a background recording (so that it can stop it), follows its
``StatusChanged`` until an end state, and returns as SWML's verb does: exit 0 for
``record_result`` ``success``, 1 for ``failed``, printing ``record_url: <url>`` and
``record_result: <result>`` on two lines. With ``--json``, each status payload is one JSON line
as it comes, then ``{"record_url": ..., "record_result": ...}``.

It stops the recording (``Stop()``, a ``finished`` recording) on Ctrl-C, and on a terminal on a
typed terminator digit, as a phone's keypad would. With FILE, the daemon writes that file
(``RecordToFile``: the file is opened here, the descriptor passed), else a file in its
recordings directory. On a terminal, stderr shows the state, the elapsed time and the size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import termios
import time
import tty
from pathlib import Path

from dbus_fast import Message, MessageType, Variant

from .. import client as apc
from ..client.bus import add_match, plain
from ..names import BUS_NAME, MANAGER_IFACE, OBJECT_PATH, PROPERTIES_IFACE, RECORDER_IFACE
from .common import CtlError

logger = logging.getLogger(__name__)

#: File name extensions that choose ``--format`` when it is not given.
EXTENSIONS = {".wav": "wav", ".mp3": "mp3", ".mp4": "mp4", ".m4a": "mp4"}
ENDS = ("finished", "no_input", "error")


def params_of(args: argparse.Namespace) -> dict[str, Variant]:
    """The ``Record`` params (``a{sv}``) from the command line; always ``background`` (the
    command itself waits, and can stop it)."""
    fmt = args.format or EXTENSIONS.get(Path(args.file or "").suffix.lower(), "wav")
    params = {"format": Variant("s", fmt), "direction": Variant("s", args.direction),
              "stereo": Variant("b", args.stereo), "beep": Variant("b", args.beep),
              "background": Variant("b", True)}
    for name in ("terminators", "status_url"):
        if getattr(args, name) is not None:
            params[name] = Variant("s", getattr(args, name))
    for name in ("input_sensitivity", "initial_timeout", "end_silence_timeout", "max_length"):
        if getattr(args, name) is not None:
            params[name] = Variant("d", float(getattr(args, name)))
    return params


def variants(params: dict) -> dict[str, Variant]:
    """Plain params (an SWML document's ``record``) as ``a{sv}``: a bool ``b``, a number ``d``,
    a string ``s``; ``background`` always true (the caller waits, and can stop it)."""
    out = {}
    for key, value in params.items():
        if isinstance(value, bool):
            out[key] = Variant("b", value)
        elif isinstance(value, (int, float)):
            out[key] = Variant("d", float(value))
        else:
            out[key] = Variant("s", str(value))
    out["background"] = Variant("b", True)
    return out


async def cmd_record(args: argparse.Namespace) -> int:
    """Record until the recording ends; the exit code of its ``record_result``."""
    url, result = await record(args.bus, args.system, params_of(args), args.file,
                               json_lines=args.json, terminators=args.terminators)
    if args.json:
        print(json.dumps({"record_url": url, "record_result": result}), flush=True)
    else:
        print(f"record_url: {url}\nrecord_result: {result}", flush=True)
    return 0 if result == "success" else 1


async def record(bus_address: str | None, system: bool, params: dict[str, Variant],
                 file: str | None = None, *, json_lines: bool = False,
                 terminators: str | None = None) -> tuple[str, str]:
    """One recording, followed to its end (``Record``/``RecordToFile`` with ``background``,
    then ``StatusChanged``; ``Stop()`` on Ctrl-C or a typed terminator).

    :param params: the ``a{sv}`` params (``background`` true)
    :param file: the file the daemon writes through a descriptor passed from here, or None
    :param json_lines: print each status payload as a JSON line
    :param terminators: the digits a key on the terminal stops it with (default ``#``)
    :returns: ``(record_url, record_result)``
    :raises CtlError: the daemon is not there, refused the call, or left meanwhile
    """
    try:
        bus = await apc.bus.connect(bus_address, system, negotiate_unix_fd=True)
    except apc.DaemonNotRunning as exc:
        raise CtlError(exc.message) from None
    statuses: asyncio.Queue = asyncio.Queue()
    early: list[tuple[str, dict]] = []
    path = ""
    gone = asyncio.Event()

    def on_message(msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "StatusChanged" and msg.interface == RECORDER_IFACE:
            payload = plain(msg.body[0])
            if path:
                if msg.path == path:
                    statuses.put_nowait(payload)
            else:
                early.append((msg.path, payload))
        elif msg.member == "NameOwnerChanged" and msg.body[0] == BUS_NAME and not msg.body[2]:
            gone.set()

    try:
        bus.add_message_handler(on_message)
        await add_match(bus, f"type='signal',sender='{BUS_NAME}',interface='{RECORDER_IFACE}',"
                             "member='StatusChanged'")
        await add_match(bus, f"type='signal',member='NameOwnerChanged',arg0='{BUS_NAME}'")
        path = await _start(bus, params, file)
        for where, payload in early:
            if where == path:
                statuses.put_nowait(payload)
        last = await _follow(bus, path, statuses, gone, json_lines,
                             terminators if terminators is not None else "#")
    finally:
        bus.disconnect()
    final = last.get("params", {})
    return final.get("url", ""), "success" if final.get("state") == "finished" else "failed"


async def _start(bus, params: dict[str, Variant], file: str | None) -> str:
    fds: list[int] = []
    if file:
        try:
            fds.append(os.open(file, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            raise CtlError(f"cannot open {file}: {exc.strerror}") from None
    try:
        member, signature, body = ("RecordToFile", "a{sv}h", [params, 0]) if fds \
            else ("Record", "a{sv}", [params])
        reply = await bus.call(Message(destination=BUS_NAME, path=OBJECT_PATH,
                                       interface=MANAGER_IFACE, member=member,
                                       signature=signature, body=body, unix_fds=fds))
    finally:
        for fd in fds:
            os.close(fd)
    if reply.message_type == MessageType.ERROR:
        error = apc.bus.error_from_reply(reply)
        raise CtlError(f"{error.dbus_name}: {error.message}")
    return reply.body[0]


async def _follow(bus, path: str, statuses: asyncio.Queue, gone: asyncio.Event,
                  json_lines: bool, terminators: str) -> dict:
    """Print statuses until the end one; stop on Ctrl-C or a typed terminator. The last
    status."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    terminal = sys.stdin.isatty() and sys.stderr.isatty() and not json_lines
    keys = _Keys(terminators, stopping) if sys.stdin.isatty() else None
    started, last, stopped = time.monotonic(), {}, False
    try:
        while True:
            waits = {asyncio.ensure_future(statuses.get()), asyncio.ensure_future(gone.wait())}
            if not stopped:
                waits.add(asyncio.ensure_future(stopping.wait()))
            done, pending = await asyncio.wait(waits, timeout=0.25 if terminal else None,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                value = task.result()
                if isinstance(value, dict):
                    last = value
                    if json_lines:
                        print(json.dumps(value), flush=True)
            if last.get("params", {}).get("state") in ENDS:
                break
            if gone.is_set():
                raise CtlError("audiopolicyd left the bus during the recording")
            if stopping.is_set() and not stopped:
                stopped = True
                await apc.bus.call(bus, path, RECORDER_IFACE, "Stop")
            if terminal:
                _progress(last, time.monotonic() - started,
                          await _level(bus, path) if not stopped else None)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        if keys is not None:
            keys.close()
        if terminal:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    return last


async def _level(bus, path: str) -> float | None:
    """The recorder's ``Level`` (dBFS), None when it cannot be read."""
    try:
        reply = await apc.bus.call(bus, path, PROPERTIES_IFACE, "Get", "ss",
                                   [RECORDER_IFACE, "Level"])
    except apc.AudioPolicyError:
        return None
    return float(reply.body[0].value)


#: The meter's width in characters, and the level it starts at (dBFS).
METER_CHARS, METER_FLOOR_DB = 30, -60.0


def _progress(last: dict, elapsed: float, level: float | None) -> None:
    """One terminal line: the state, the elapsed time and a level meter."""
    state = last.get("params", {}).get("state", "starting")
    meter = ""
    if level is not None and state == "recording":
        filled = round(METER_CHARS * min(1.0, max(0.0, 1 - level / METER_FLOOR_DB)))
        meter = f" [{'#' * filled}{' ' * (METER_CHARS - filled)}] {max(level, -99):5.1f} dBFS"
    print(f"\r\033[K{state} {elapsed:6.1f} s{meter}", end="", file=sys.stderr, flush=True)


class _Keys:
    """A terminal's keys, read without waiting for Enter: a terminator digit stops the
    recording (the keypad of a phone)."""

    def __init__(self, terminators: str, stopping: asyncio.Event):
        self.fd = sys.stdin.fileno()
        self.saved = termios.tcgetattr(self.fd)
        self.terminators = terminators.upper()
        self.stopping = stopping
        tty.setcbreak(self.fd)
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def _read(self) -> None:
        key = os.read(self.fd, 16).decode(errors="replace").upper()
        if any(k in self.terminators for k in key):
            self.stopping.set()

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        with contextlib.suppress(termios.error):
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    """The ``record`` command."""
    p = sub.add_parser(
        "record", parents=[common],
        help="record (SWML's record verb): beep, wait for speech, stop on silence or a digit",
        description="Record what you say (the microphone) or what you hear (the output), in "
                    "the foreground as SWML's record verb: it returns when the recording ends, "
                    "printing record_url and record_result; exit 0 for success, 1 for failed. "
                    "Ctrl-C, or a typed terminator digit on a terminal, stops it. Seconds are "
                    "seconds; the bounds are the daemon's (docs/recording.md).")
    p.add_argument("file", nargs="?", metavar="FILE",
                   help="the file to write (the daemon writes it through a descriptor passed "
                        "from here); default: a new file in the daemon's recordings directory")
    p.add_argument("--stereo", action="store_true",
                   help="left: what you say, right: what you hear")
    p.add_argument("--format", choices=("wav", "mp3", "mp4"),
                   help="default: from FILE's extension, else wav")
    p.add_argument("--direction", choices=("speak", "listen"), default="speak",
                   help="speak: the microphone (default); listen: the output's monitor")
    p.add_argument("--terminators", metavar="DIGITS",
                   help="DTMF digits that end the recording (default: #)")
    p.add_argument("--beep", action="store_true", help="beep before recording")
    p.add_argument("--input-sensitivity", type=float, metavar="N",
                   help="0-100, larger: quieter sound counts as voice (default 50)")
    p.add_argument("--initial-timeout", type=float, metavar="S",
                   help="seconds to wait for speech, 0: forever (default 4)")
    p.add_argument("--end-silence-timeout", type=float, metavar="S",
                   help="seconds of silence after speech that end it, 0: never (default 1)")
    p.add_argument("--max-length", type=float, metavar="S",
                   help="the longest recording in seconds (default: the bound, one day)")
    p.add_argument("--status-url", metavar="URL",
                   help="http(s) URL the daemon POSTs each status to (SWML's JSON)")
    p.add_argument("--json", action="store_true",
                   help="each status as a JSON line, then record_url and record_result")


HANDLERS = {"record": cmd_record}
