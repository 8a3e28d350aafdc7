"""``audiopolicyctl``: the command-line client of audiopolicyd.

Read commands (``status``, ``streams``, ``sessions``, ``explain``, ``monitor``, ``routes``,
``policy check``) take ``--json``; so does ``route`` (:mod:`.routes`). ``policy check``
works offline; everything else talks to the daemon over D-Bus.

``run`` gives a program an audio session, as an iOS app has one::

    audiopolicyctl run --category playAndRecord --mode voiceChat -- linphone
    audiopolicyctl run --category playback --delay-if-busy -- mpv song.ogg

It creates a session (through :mod:`audiopolicyd.client`), sets the category, activates it, runs
COMMAND as its child (the child's streams, and its children's, belong to the session), prints
interruptions on stderr, reactivates after an interruption whose end says ``should_resume``,
forwards SIGINT, SIGTERM and SIGHUP to the child, and when the child exits deactivates with
``notifyOthersOnDeactivation`` (the apps it interrupted may resume) and exits with the child's
exit code (128 + N when signal N killed it). SIGINT is not forwarded when the terminal sent it:
the child, in the same foreground process group, got it already.

Exit codes: 0 success; 1 the answer is "no" (invalid policy, reload refused, activation refused
by ``run``); 2 usage error, unknown ``explain`` target, or the daemon is not reachable; for
``run`` once the command started, the command's exit code (127: command not found).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from dbus_fast import DBusError, Message, MessageType
from rich.table import Table

from .. import __version__
from .. import client as apc
from .. import simulate
from ..client import plain
from ..model import CATEGORIES, MODES, OPTIONS
from ..names import BUS_NAME, MANAGER_IFACE
from ..pluginmanager import make_plugin_manager, plugin_settings_schemas, unenabled_options
from ..policy import PolicyError
from ..policystore import check_policies, default_dirs, find_files, load_files, print_check
from . import record, routes, swml
from .common import CtlError, console
from .run import _exit_code, cmd_run  # noqa: F401  (_exit_code: part of the surface tests use)

logger = logging.getLogger(__name__)


class Client(apc.DaemonClient):
    """The daemon's Manager (:class:`audiopolicyd.client.DaemonClient`) for a command: an
    error is a :class:`CtlError` naming the D-Bus error in full, or saying that the daemon or
    the bus is not there."""

    def __init__(self, args: argparse.Namespace):
        super().__init__(args.bus, args.system)

    async def __aenter__(self) -> "Client":
        try:
            await super().__aenter__()
        except apc.DaemonNotRunning as exc:
            raise CtlError(exc.message) from None
        return self

    async def call(self, member: str, signature: str = "", body: list | None = None,
                   interface: str = MANAGER_IFACE) -> list:
        try:
            return await super().call(member, signature, body, interface)
        except apc.DaemonNotRunning as exc:
            raise CtlError(exc.message) from None
        except apc.AudioSessionError as exc:
            raise CtlError(f"{exc.dbus_name}: {exc.message}") from None


# -- commands ----------------------------------------------------------------------------------

async def fetch(args: argparse.Namespace, member: str) -> Any:
    """Call a Manager method without arguments; its single reply value as plain Python."""
    async with Client(args) as c:
        (value,) = await c.call(member)
    return value


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
        await c.follow(on_message)
        (streams,) = await c.call("GetStreams")
        for s in streams:
            emit("StreamAdded", s, stream_line("=", s))
        await done.wait()
    return 1


# -- sessions ------------------------------------------------------------------------------------

def _session_sort_key(session: dict) -> tuple:
    sid = session["Id"]
    return (0, int(sid[1:]), sid) if sid[1:].isdigit() else (1, 0, sid)


async def list_sessions(args: argparse.Namespace) -> list[dict]:
    """Every explicit session, from ``ObjectManager.GetManagedObjects`` on the Manager's path:
    ``{"Id", "Path", <every Session property>}``, oldest first."""
    async with Client(args) as c:
        sessions = await c.sessions()
    return sorted(sessions, key=_session_sort_key)


async def cmd_sessions(args: argparse.Namespace) -> int:
    sessions = await list_sessions(args)
    if args.json:
        print(json.dumps(sessions, indent=2, sort_keys=True))
        return 0
    if not sessions:
        console.print("no sessions")
        return 0
    table = Table("SESSION", "NAME", "CATEGORY", "MODE", "OPTIONS", "STATE", "OWNER", "PID",
                  "APP", box=None)
    for s in sessions:
        table.add_row(s["Id"], s["Name"] or "-", s["Category"], s["Mode"],
                      ",".join(s["Options"]) or "-", s["State"], s["Owner"],
                      str(s["ProcessID"] or "-"), s["AppID"])
    console.print(table, markup=False)
    return 0


async def cmd_explain(args: argparse.Namespace) -> int:
    """``Manager.Explain``: why a stream or session has its effect."""
    async with Client(args) as c:
        (answer,) = await c.call("Explain", "s", [args.target])
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    table = Table(show_header=False, box=None)
    first = [k for k in ("Target", "Kind", "Application", "Session", "Category", "Mode",
                         "Options", "Active", "State", "InterruptedBy", "ChosenBy", "Policy",
                         "Effect", "Streams") if k in answer]
    for key in first + sorted(k for k in answer if k not in first and k != "Reasons") + (
            ["Reasons"] if "Reasons" in answer else []):
        value = answer[key]
        if isinstance(value, list):
            value = "\n".join(map(str, value)) or "-"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        table.add_row(key, str(value) if value != "" else "-")
    console.print(table, markup=False)
    return 0


def cmd_policy_check(args: argparse.Namespace) -> int:
    """Validate policies offline: the search path in force, with FILEs overriding by name (an
    empty FILE masks its namesake, as in the daemon's search path)."""
    for f in args.files:
        if not f.exists():
            raise CtlError(f"{f}: no such file")
    pm = make_plugin_manager()
    check = check_policies(default_dirs(args.system), args.files, plugin_settings_schemas(pm),
                           functools.partial(unenabled_options, pm))
    return print_check(check, args.json)


def cmd_policy_simulate(args: argparse.Namespace) -> int:
    """A scenario through the policies in force (and --policy-dir), offline."""
    pm = make_plugin_manager()
    files = find_files(default_dirs(args.system) + args.policy_dir)
    try:
        scenario = simulate.load_scenario(args.file)
        result = simulate.simulate(scenario, load_files(files, plugin_settings_schemas(pm)), pm)
    except (PolicyError, simulate.ScenarioError) as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1 if isinstance(exc, PolicyError) else 2
    print(json.dumps(result.as_json(), indent=2) if args.json else simulate.render(result))
    return 0


# -- microphone permission ---------------------------------------------------------------------

async def cmd_permissions(args: argparse.Namespace) -> int:
    entries = await fetch(args, "GetRecordPermissions")
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return 0
    if not entries:
        console.print("no app has recorded or been decided yet")
        return 0
    table = Table("APP", "NAME", "DECISION", "REQUEST", "RECORDING", "STORED IN", box=None)
    for e in entries:
        recording = "-"
        if e["Recording"]:
            state = "audible"
            if e["Silenced"]:  # and why: permission, switch, policy, interruption, muted
                state = f"silenced: {', '.join(e.get('SilencedBy') or ['unknown'])}"
            recording = f"{', '.join(e['Streams'])} ({state})"
        if e.get("Fought"):  # streams killed for unmuting or raising themselves while silenced
            fought = f"fought {e['Fought']} (killed)"
            recording = fought if recording == "-" else f"{recording}; {fought}"
        request = f"{e['Request']} ({e['RequestID']})" if e["Request"] else "-"
        table.add_row(e["App"], e["Name"] or "-", e["Decision"], request, recording,
                      e["StoredIn"])
    console.print(table)
    return 0


async def _resolve_app(client: "Client", app: str) -> str:
    """APP as given when it is a known app id, or contains ':' or '.'; else the one known
    app whose name or executable is APP."""
    (entries,) = await client.call("GetRecordPermissions")
    if any(e["App"] == app for e in entries) or ":" in app or "." in app:
        return app
    matches = sorted({e["App"] for e in entries
                      if app in (e["Name"], os.path.basename(e["App"].split(":", 1)[-1]))})
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CtlError(f"{app!r} matches several apps: {', '.join(matches)}; name one")
    return app


async def cmd_decide(args: argparse.Namespace) -> int:
    decision = {"grant": "granted", "deny": "denied", "reset": "undetermined"}[args.command]
    async with Client(args) as c:
        app = await _resolve_app(c, args.app)
        await c.call("SetRecordPermission", "ss", [app, decision])
    console.print(f"{app}: {decision}" if decision != "undetermined"
                  else f"{app}: reset (asked again next time it records)", markup=False)
    return 0


async def cmd_agent(args: argparse.Namespace) -> int:
    from .. import agents
    return await agents.main(args.bus, args.notify)


# -- parsing -----------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def bus_options(defaults: bool) -> argparse.ArgumentParser:
        # accepted before and after the command; a subcommand's own default must not
        # overwrite a value given before it (argparse copies subparser defaults over)
        parser = argparse.ArgumentParser(add_help=False)
        default = {} if defaults else {"default": argparse.SUPPRESS}
        parser.add_argument("--system", action="store_true", **default,
                            help="talk to the system-mode daemon (system bus)")
        parser.add_argument("--bus", metavar="ADDRESS", **default,
                            help="D-Bus address to use")
        return parser

    top, common = bus_options(True), bus_options(False)
    reads = argparse.ArgumentParser(add_help=False)
    reads.add_argument("--json", action="store_true", help="print JSON instead of text")

    p = argparse.ArgumentParser(
        prog="audiopolicyctl", parents=[top],
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
    sub.add_parser("sessions", parents=[common, reads],
                   help="the apps' audio sessions: category, mode, options, state, owner",
                   description="List the explicit sessions (created over D-Bus by apps, "
                               "audiopolicyctl run and audiopolicyd.client) with their "
                               "category, mode, options, state, owner connection, pid and "
                               "app id.")
    explain = sub.add_parser("explain", parents=[common, reads],
                             help="why a stream or session has its effect",
                             description="Explain a stream's or a session's category and "
                                         "effect: the policy file, the rule and the session "
                                         "that caused it.")
    explain.add_argument("target", metavar="TARGET",
                         help="a stream key (sink-input:12, as 'streams' shows), a session id "
                              "(s1, as 'sessions' shows, or implicit:...) or a session path")
    run = sub.add_parser(
        "run", parents=[common], help="run a program inside an active audio session",
        usage="audiopolicyctl run --category CATEGORY [--mode MODE] [--option OPTION ...] "
              "[--delay-if-busy] [--name NAME] -- COMMAND [ARG...]",
        description="Run COMMAND inside an audio session with the given category, as if the "
                    "program had declared it (AVAudioSession.setCategory + setActive): its "
                    "streams, and its children's, take the session's category. The session is "
                    "activated before COMMAND starts and deactivated with "
                    "notifyOthersOnDeactivation when it exits. Interruptions are printed on "
                    "stderr; after one that ends with should_resume the session is activated "
                    "again. SIGINT, SIGTERM and SIGHUP are forwarded to COMMAND.",
        epilog="Exit status: COMMAND's (128+N when killed by signal N, 127 when not found); 1 "
               "when the session cannot be activated or the category is refused (the daemon's "
               "named error is printed); 2 when the daemon is not reachable.")
    run.add_argument("--category", required=True, choices=CATEGORIES, metavar="CATEGORY",
                     help="one of: " + ", ".join(CATEGORIES))
    run.add_argument("--mode", default="default", choices=MODES, metavar="MODE",
                     help="one of: " + ", ".join(MODES) + " (default: default; one the "
                          "category does not take falls back to default)")
    run.add_argument("--option", action="append", choices=OPTIONS, metavar="OPTION",
                     help="a category option, repeatable: " + ", ".join(OPTIONS))
    run.add_argument("--delay-if-busy", action="store_true",
                     help="when a higher-priority session is active, wait until it ends "
                          "instead of failing with InsufficientPriority")
    run.add_argument("--name", help="the session's name in 'sessions' (default: the command)")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND",
                     help="the program and its arguments, after --")
    sub.add_parser("permissions", parents=[common, reads],
                   help="microphone permission: every app's decision, requests, recordings",
                   description="List every app that has a microphone decision, a pending "
                               "request or a recording now: its decision (granted, denied, "
                               "undetermined), where it is stored, its request (pending: no "
                               "agent shows it; prompting: an agent does), and its recording "
                               "streams and whether they are silenced, and why (permission, "
                               "switch, policy, interruption, muted: see docs/microphone.md).")
    for name, text in (("grant", "let APP record the microphone (live, and remembered)"),
                       ("deny", "make APP record silence (live, and remembered)"),
                       ("reset", "forget APP's decision: it is asked again when it records")):
        decide = sub.add_parser(name, parents=[common], help=text, description=text[0].upper()
                                + text[1:] + ". APP is an app id as 'permissions' shows it "
                                "(org.gnome.Recorder, exe:/usr/bin/arecord...), or the name or "
                                "executable of one app listed there.")
        decide.add_argument("app", metavar="APP")
    agent = sub.add_parser(
        "agent", parents=[common],
        help="answer microphone permission prompts here (or as desktop notifications)",
        description="Register as the microphone permission agent and ask the user when an app "
                    "wants to record: in this terminal, or with --notify as desktop "
                    "notifications with Allow/Deny buttons. One agent per session; it stays "
                    "until interrupted.")
    agent.add_argument("--notify", action="store_true",
                       help="ask through desktop notifications (org.freedesktop.Notifications)")
    routes.add_parsers(sub, common, reads)
    record.add_parser(sub, common)
    swml.add_parser(sub, common)
    policy = sub.add_parser("policy", help="policy files")
    psub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    check = psub.add_parser("check", parents=[common, reads],
                            help="validate the policies in force, offline (exit 1 if invalid)",
                            description="Validate the policy files of the search path, with "
                                        "each FILE replacing the file of the same name.")
    check.add_argument("files", nargs="*", type=Path, metavar="FILE")
    simulating = psub.add_parser(
        "simulate", parents=[common, reads], help="run a scenario through the policies, offline",
        description="Run the streams and sessions of a scenario FILE (TOML, or JSON for *.json; "
                    "see docs/policies.md) through the daemon's classification and decision, "
                    "offline, and print what each stream would get and why.",
        epilog="Exit status: 0 simulated; 1 the policies are invalid; 2 the scenario is.")
    simulating.add_argument("file", type=Path, metavar="FILE")
    simulating.add_argument("--policy-dir", action="append", type=Path, default=[], metavar="DIR",
                          help="also read policies from DIR (highest precedence; repeatable), "
                               "as audiopolicyd --policy-dir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``audiopolicyctl``."""
    args = parse_args(argv)
    try:
        if args.command == "policy":
            if args.policy_command == "simulate":
                return cmd_policy_simulate(args)
            return cmd_policy_check(args)
        handler = {"status": cmd_status, "streams": cmd_streams, "reload": cmd_reload,
                   "monitor": cmd_monitor, "sessions": cmd_sessions, "explain": cmd_explain,
                   "run": cmd_run, "permissions": cmd_permissions, "grant": cmd_decide,
                   "deny": cmd_decide, "reset": cmd_decide, "agent": cmd_agent,
                   **routes.HANDLERS, **record.HANDLERS,
                   **swml.HANDLERS}[args.command]
        return asyncio.run(handler(args))
    except CtlError as exc:
        print(f"audiopolicyctl: {exc}", file=sys.stderr)
        return 2
    except DBusError as exc:
        print(f"audiopolicyctl: {exc.type}: {exc.text}", file=sys.stderr)
        return 2
    except apc.AudioSessionError as exc:
        print(f"audiopolicyctl: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
