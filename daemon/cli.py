"""``audiopolicyctl``: the command-line client of audiopolicyd.

Read commands (``status``, ``streams``, ``monitor``, ``policy check``) take ``--json``.
``policy check`` works offline; everything else talks to the daemon over D-Bus.

Exit codes: 0 success; 1 the answer is "no" (invalid policy, reload refused); 2 usage error or
the daemon is not reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from rich.console import Console
from rich.table import Table

from . import __version__
from .dbus_api import BUS_NAME, MANAGER_IFACE, OBJECT_PATH
from .pluginmanager import make_plugin_manager, plugin_settings_schemas
from .policy import PolicyError
from .policystore import default_dirs, find_files, load_files

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


class CtlError(Exception):
    """A failure to report as ``audiopolicyctl: <message>`` with exit code 2."""


def plain(value: Any) -> Any:
    """D-Bus values (Variants, nested) as plain Python values for JSON."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class Client:
    """A D-Bus connection to the daemon's Manager."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.bus: MessageBus | None = None

    async def __aenter__(self) -> "Client":
        bus_type = BusType.SYSTEM if self.args.system else BusType.SESSION
        try:
            self.bus = await MessageBus(bus_address=self.args.bus, bus_type=bus_type).connect()
        except Exception as exc:
            raise CtlError(f"cannot connect to the {'system' if self.args.system else 'session'}"
                           f" bus: {exc}") from None
        return self

    async def __aexit__(self, *exc) -> None:
        if self.bus is not None:
            self.bus.disconnect()

    async def call(self, member: str, signature: str = "", body: list | None = None) -> list:
        reply = await self.bus.call(Message(destination=BUS_NAME, path=OBJECT_PATH,
                                            interface=MANAGER_IFACE, member=member,
                                            signature=signature, body=body or []))
        if reply.message_type == MessageType.ERROR:
            if reply.error_name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                                    "org.freedesktop.DBus.Error.NameHasNoOwner"):
                raise CtlError(f"audiopolicyd is not running ({BUS_NAME} has no owner on the "
                               f"{'system' if self.args.system else 'session'} bus)")
            raise CtlError(f"{reply.error_name}: {reply.body[0] if reply.body else ''}")
        return reply.body


# -- commands ----------------------------------------------------------------------------------

async def fetch(args: argparse.Namespace, member: str) -> Any:
    """Call a Manager method without arguments; its single reply value as plain Python."""
    async with Client(args) as c:
        (value,) = await c.call(member)
    return plain(value)


def stream_line(prefix: str, s: dict) -> str:
    """One stream on one line, for ``monitor``."""
    return (f"{prefix} {s['Key']} {s['Application']} role={s['Role'] or '-'} "
            f"category={s['Category']} effect={s['Effect']}")


async def cmd_status(args: argparse.Namespace) -> int:
    status = await fetch(args, "GetStatus")
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    table = Table(show_header=False, box=None)
    for key in sorted(status):
        value = status[key]
        if isinstance(value, list):
            value = "\n".join(map(str, value)) or "-"
        elif isinstance(value, float):
            value = f"{value:.1f}"
        table.add_row(key, str(value))
    console.print(table)
    return 0


def _streams_table(streams: list[dict]) -> Table:
    table = Table("STREAM", "APP", "ROLE", "CATEGORY", "EFFECT", "WHY", box=None)
    for s in streams:
        why = "\n".join(s["Reasons"]) or ("corked" if s["Corked"] else "-")
        table.add_row(s["Key"], s["Application"], s["Role"] or "-", s["Category"], s["Effect"],
                      why)
    return table


async def cmd_streams(args: argparse.Namespace) -> int:
    streams = await fetch(args, "GetStreams")
    if args.json:
        print(json.dumps(streams, indent=2, sort_keys=True))
    elif not streams:
        console.print("no streams")
    else:
        console.print(_streams_table(streams))
    return 0


async def cmd_reload(args: argparse.Namespace) -> int:
    applied, problems = await fetch(args, "Reload")
    if args.json:
        print(json.dumps({"applied": applied, "problems": problems}, indent=2))
    elif applied:
        console.print("policies reloaded")
    else:
        console.print("policies NOT reloaded; the last good set stays in force:")
        for p in problems:
            console.print(f"  {p}", markup=False)
    return 0 if applied else 1


async def cmd_monitor(args: argparse.Namespace) -> int:
    """Print stream and effect changes as the daemon signals them (no polling)."""
    done = asyncio.Event()

    def emit(kind: str, payload: Any, text: str) -> None:
        if args.json:
            print(json.dumps({"event": kind, "data": plain(payload)}), flush=True)
        else:
            console.print(text, markup=False)

    def on_message(msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.interface == MANAGER_IFACE:
            if msg.member == "StreamAdded":
                s = plain(msg.body[0])
                emit("StreamAdded", s, stream_line("+", s))
            elif msg.member == "StreamRemoved":
                emit("StreamRemoved", msg.body[0], f"- {msg.body[0]}")
            elif msg.member == "EffectsChanged":
                for s in plain(msg.body[0]):
                    why = "; ".join(s["Reasons"]) or "no session acts on it"
                    emit("EffectChanged", s, f"* {s['Key']} {s['Application']} -> {s['Effect']}"
                                             f" ({why})")
            elif msg.member == "PoliciesReloaded":
                emit("PoliciesReloaded", {"applied": msg.body[0], "problems": msg.body[1]},
                     "policies reloaded" if msg.body[0] else
                     "policy reload refused: " + "; ".join(msg.body[1]))
        elif msg.member == "NameOwnerChanged" and msg.body and msg.body[0] == BUS_NAME:
            if not msg.body[2]:
                emit("DaemonLeft", None, "audiopolicyd left the bus")
                done.set()

    async with Client(args) as c:
        c.bus.add_message_handler(on_message)
        for rule in (f"type='signal',sender='{BUS_NAME}',interface='{MANAGER_IFACE}'",
                     f"type='signal',member='NameOwnerChanged',arg0='{BUS_NAME}'"):
            await c.bus.call(Message(destination="org.freedesktop.DBus",
                                     path="/org/freedesktop/DBus",
                                     interface="org.freedesktop.DBus", member="AddMatch",
                                     signature="s", body=[rule]))
        (streams,) = await c.call("GetStreams")
        for s in plain(streams):
            emit("StreamAdded", s, stream_line("=", s))
        await done.wait()
    return 1


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate policies offline: the search path in force, with FILEs overriding by name."""
    dirs = default_dirs(args.system)
    files = {f.name: f for f in find_files(dirs)}
    for f in args.files:
        if not f.exists():
            raise CtlError(f"{f}: no such file")
        files[f.name] = f
    schemas = plugin_settings_schemas(make_plugin_manager())
    try:
        load_files(sorted(files.values()), schemas)
        problems = []
    except PolicyError as exc:
        problems = exc.problems
    if args.json:
        print(json.dumps({"valid": not problems, "files": [str(f) for f in files.values()],
                          "problems": [{"file": p.file, "path": p.path, "message": p.message}
                                       for p in problems]}, indent=2))
    elif problems:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s)", file=sys.stderr)
    else:
        print(f"valid: {len(files)} policy file(s)")
    return 1 if problems else 0


# -- parsing -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--system", action="store_true",
                        help="talk to the system-mode daemon (system bus)")
    common.add_argument("--bus", metavar="ADDRESS", help="D-Bus address to use")
    reads = argparse.ArgumentParser(add_help=False)
    reads.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = argparse.ArgumentParser(
        prog="audiopolicyctl", parents=[common],
        description="Inspect and control audiopolicyd, the audio policy daemon.")
    p.add_argument("--version", action="version", version=f"audiopolicyctl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", parents=[common, reads], help="daemon, server and policy status")
    sub.add_parser("streams", parents=[common, reads],
                   help="every stream with its category, effect and why")
    sub.add_parser("monitor", parents=[common, reads],
                   help="follow streams and effects live (Ctrl-C to stop)")
    sub.add_parser("reload", parents=[common, reads],
                   help="reload policies (exit 1 when refused; the last good set stays)")
    policy = sub.add_parser("policy", help="policy files")
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    check = psub.add_parser("check", parents=[common, reads],
                            help="validate the policies in force, offline (exit 1 if invalid)",
                            description="Validate the policy files of the search path, with "
                                        "each FILE replacing the file of the same name.")
    check.add_argument("files", nargs="*", type=Path, metavar="FILE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``audiopolicyctl``."""
    args = parse_args(argv)
    try:
        if args.command == "policy":
            return cmd_policy_check(args)
        handler = {"status": cmd_status, "streams": cmd_streams, "reload": cmd_reload,
                   "monitor": cmd_monitor}[args.command]
        return asyncio.run(handler(args))
    except CtlError as exc:
        print(f"audiopolicyctl: {exc}", file=sys.stderr)
        return 2
    except DBusError as exc:
        print(f"audiopolicyctl: {exc.type}: {exc.text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
