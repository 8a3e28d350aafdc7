"""A test app holding audiopolicyd sessions on its own D-Bus connection (dbus-fast).

Sessions belong to the connection that created them, so each test client is a separate,
long-lived process. It is driven over stdin, one command a line, and answers on stdout, one
JSON object a line:

* every command gets exactly one ``{"reply": CMD, "ok": true, "result": ...}`` or
  ``{"reply": CMD, "ok": false, "error": "<D-Bus error name>", "message": ...}``;
* every signal the daemon sends about sessions (``...Session`` signals, ``PropertiesChanged``,
  ``InterfacesAdded``/``InterfacesRemoved``) is printed as ``{"signal": MEMBER, "path": ...,
  "interface": ..., "body": [...]}`` (variants unwrapped), in the order received.

Commands (``-`` stands for an empty list, lists are comma-separated)::

    create NAME [CATEGORY [MODE [OPT,OPT]]]   CreateSession; the new path becomes the target
    use PATH                    make PATH the target (any session, even another client's)
    category CATEGORY MODE OPTS SetCategory on the target
    active 1|0 [OPTS]           SetActive on the target -> active | inactive | delayed
    get PROPERTY [PATH]         Properties.Get on the target (or on PATH)
    close                       Close the target
    managed                     GetManagedObjects on the daemon's root -> the object paths
    play FILE [APPNAME]         start paplay FILE (no media.role; application.name APPNAME)
                                as this process's child -> its pid; its stream follows this
                                client's session
    record FILE                 start parecord from the mic into FILE (raw, 20 ms latency) as
                                a child, like play -> its pid
    askmic                      RequestRecordPermission on the target -> true | false (the
                                reply waits for the user's answer; later commands wait too)
    prefer UID                  SetPreferredInput on the target (``-``: the empty uid, which
                                clears)
    override PORT               OverrideOutputAudioPort on the target (``speaker``, ``none``)
    stop                        stop the children started by play
    ping                        round trip to the daemon (Peer.Ping)
    quit                        stop the children, disconnect, exit

The children started by ``play`` get ``PR_SET_PDEATHSIG`` SIGKILL: they die with this process,
even when it is killed with SIGKILL (the crash test).

Usage: ``session_client.py`` with ``DBUS_SESSION_BUS_ADDRESS`` (and ``PULSE_SERVER`` for play).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import signal
import subprocess
import sys
import threading
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

BUS_NAME = "io.github.audiopolicyd.AudioPolicy1"
OBJECT_PATH = "/io/github/audiopolicyd/AudioPolicy1"
MANAGER_IFACE = BUS_NAME + ".Manager"
SESSION_IFACE = BUS_NAME + ".Session"
SIGNAL_IFACES = (SESSION_IFACE, "org.freedesktop.DBus.Properties",
                 "org.freedesktop.DBus.ObjectManager")

_PR_SET_PDEATHSIG = 1


def plain(value: Any) -> Any:
    """A D-Bus value with every Variant unwrapped, as JSON-friendly Python."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _list(text: str) -> list[str]:
    return [] if text in ("", "-") else text.split(",")


class CallFailed(Exception):
    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


class Client:
    def __init__(self, bus: MessageBus):
        self.bus = bus
        self.target = ""
        self.children: list[subprocess.Popen] = []

    def on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL or msg.interface not in SIGNAL_IFACES:
            return
        if not (msg.path or "").startswith(OBJECT_PATH):
            return
        out({"signal": msg.member, "path": msg.path, "interface": msg.interface,
             "body": plain(msg.body)})

    async def call(self, path: str, interface: str, member: str, signature: str = "",
                   body: list | None = None) -> list:
        reply = await self.bus.call(Message(destination=BUS_NAME, path=path,
                                            interface=interface, member=member,
                                            signature=signature, body=body or []))
        if reply.message_type == MessageType.ERROR:
            raise CallFailed(reply.error_name or "", str(reply.body[0]) if reply.body else "")
        return reply.body

    async def run(self, words: list[str]) -> Any:
        cmd, args = words[0], words[1:]
        if cmd == "create":
            hints: dict[str, Variant] = {"Name": Variant("s", args[0] if args else "")}
            if len(args) > 1:
                hints["Category"] = Variant("s", args[1])
            if len(args) > 2:
                hints["Mode"] = Variant("s", args[2])
            if len(args) > 3:
                hints["Options"] = Variant("as", _list(args[3]))
            (path,) = await self.call(OBJECT_PATH, MANAGER_IFACE, "CreateSession", "a{sv}",
                                      [hints])
            self.target = path
            return path
        if cmd == "use":
            self.target = args[0]
            return self.target
        if cmd == "category":
            await self.call(self.target, SESSION_IFACE, "SetCategory", "ssas",
                            [args[0], args[1], _list(args[2] if len(args) > 2 else "-")])
            return None
        if cmd == "active":
            (state,) = await self.call(self.target, SESSION_IFACE, "SetActive", "bas",
                                       [args[0] == "1", _list(args[1] if len(args) > 1 else "-")])
            return state
        if cmd == "get":
            path = args[1] if len(args) > 1 else self.target
            (value,) = await self.call(path, "org.freedesktop.DBus.Properties", "Get",
                                       "ss", [SESSION_IFACE, args[0]])
            return plain(value)
        if cmd == "close":
            await self.call(self.target, SESSION_IFACE, "Close")
            return None
        if cmd == "managed":
            (objects,) = await self.call(OBJECT_PATH, "org.freedesktop.DBus.ObjectManager",
                                         "GetManagedObjects")
            return sorted(objects)
        if cmd == "play":
            names = [f"--client-name={args[1]}"] if len(args) > 1 else []
            child = subprocess.Popen(["paplay", *names, args[0]], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=sys.stderr,
                                     preexec_fn=_die_with_parent)
            self.children.append(child)
            return child.pid
        if cmd == "record":
            child = subprocess.Popen(["parecord", "--device=mic", "--raw", "--latency-msec=20",
                                      args[0]], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=sys.stderr,
                                     preexec_fn=_die_with_parent)
            self.children.append(child)
            return child.pid
        if cmd == "askmic":
            return await self.call(self.target, SESSION_IFACE, "RequestRecordPermission")
        if cmd == "prefer":
            await self.call(self.target, SESSION_IFACE, "SetPreferredInput", "s",
                            ["" if args[0] == "-" else args[0]])
            return None
        if cmd == "override":
            await self.call(self.target, SESSION_IFACE, "OverrideOutputAudioPort", "s",
                            [args[0]])
            return None
        if cmd == "stop":
            self.stop_children()
            return None
        if cmd == "ping":
            await self.call(OBJECT_PATH, "org.freedesktop.DBus.Peer", "Ping")
            return None
        raise CallFailed("client.UnknownCommand", f"unknown command {cmd!r}")

    def stop_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        self.children.clear()


async def main() -> int:
    bus = await MessageBus().connect()
    client = Client(bus)
    bus.add_message_handler(client.on_message)
    await bus.call(Message(
        destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus", member="AddMatch", signature="s",
        body=[f"type='signal',path_namespace='{OBJECT_PATH}'"]))
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop.add_signal_handler(signal.SIGTERM, lines.put_nowait, None)

    def read_stdin() -> None:  # a daemon thread: never holds up the exit
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, None)
        except RuntimeError:  # the loop is closed: the client is exiting anyway
            pass

    threading.Thread(target=read_stdin, daemon=True).start()
    out({"ready": bus.unique_name})
    try:
        while True:
            line = await lines.get()
            if line is None:
                break
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                out({"reply": "quit", "ok": True, "result": None})
                break
            try:
                result = await client.run(words)
                out({"reply": words[0], "ok": True, "result": result})
            except CallFailed as exc:
                out({"reply": words[0], "ok": False, "error": exc.name, "message": str(exc)})
            except Exception as exc:  # a broken command must not kill the client
                out({"reply": words[0], "ok": False, "error": f"client.{type(exc).__name__}",
                     "message": str(exc)})
    finally:
        client.stop_children()
        bus.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
