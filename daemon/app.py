"""The composition root: config -> plugins -> policies -> journal -> backend -> engine -> D-Bus.

The only module that wires things together, owns the event loop and handles signals:
SIGHUP reloads the policies (so does a change to a policy file, and the D-Bus ``Reload``
method); SIGTERM and SIGINT restore every effect and exit. systemd is told READY, STATUS,
RELOADING, STOPPING and fed WATCHDOG pings through systemd-python when it asked for them.

Supervision: every long-running task (the reconcile loop, the policy watcher, the D-Bus
connection) is watched; when one ends or fails, or the runtime reports an internal error,
the daemon restores every effect it can and exits with status 1, so systemd restarts it
(``Restart=on-failure``). It never runs on deaf: without the audio server's events, without
its bus name, or with a runtime in an unknown state. The watchdog is pinged only while a
decision pass answers (:meth:`audiopolicyd.runtime.Runtime.answers`).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import logging
import os
import signal
import sys
import time
from pathlib import Path

from asyncinotify import Inotify, Mask
from dbus_fast import BusType
from systemd import daemon as sd

from . import __version__, backends
from .appsessions import RESUME_LIMIT, AppSession, AppSessions
from .buswriter import MessageBus
from .dbus import DBusApi, ManagerInterface
from .errors import UnknownTarget
from .identity import identify
from .journal import Journal, JournalError
from .limits import quote
from .logsetup import setup_logging
from .microphone.access import MicrophoneAccess
from .microphone.broker import PROMPT_TIMEOUT, MicrophoneBroker
from .mpris import MprisWatcher
from .names import BUS_NAME
from .microphone.stores import PermissionStoreError, SqlitePermissionStore, open_store
from .pluginmanager import (
    call_for, make_plugin_manager, plugin_settings_schemas, unenabled_options,
)
from .policy import PolicyError
from .policystore import PolicyStore, check_policies, default_dirs, print_check
from .microphone.privacy import MicrophoneSwitch
from .runtime import Runtime
from .sleep import SleepWatcher
from .recorder.recorders import Recorders
from .sessionroutes import SessionRoutes

logger = logging.getLogger(__name__)

#: Quiet period after a policy file changes before reloading, in seconds (editors write twice).
RELOAD_DEBOUNCE = 0.2


def default_state_dir(system: bool) -> Path:
    """``$XDG_STATE_HOME/audiopolicyd`` (user mode) or ``/var/lib/audiopolicyd`` (system)."""
    if system:
        return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/audiopolicyd"))
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "audiopolicyd"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="audiopolicyd",
        description="Audio policy daemon: enforces AVAudioSession-style category policies "
                    "(ducking, interrupting, silencing) on PulseAudio or PipeWire.",
        epilog="Policies are read from the shipped defaults, /etc/audiopolicyd/policies and "
               "$XDG_CONFIG_HOME/audiopolicyd/policies (later wins per file name). "
               "SIGHUP or a file change reloads them. See README.md.")
    p.add_argument("--version", action="version", version=f"audiopolicyd {__version__}")
    p.add_argument("--system", action="store_true",
                   help="system mode: system bus, no per-user policy directory, state in "
                        "/var/lib/audiopolicyd (for a system-wide PulseAudio)")
    p.add_argument("--policy-dir", action="append", type=Path, default=[], metavar="DIR",
                   help="also read policies from DIR, after the standard directories "
                        "(repeatable; the last wins per file name)")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help="where the effects journal lives (default: $XDG_STATE_HOME/audiopolicyd)")
    p.add_argument("--server", metavar="ADDRESS",
                   help="PulseAudio server address (default: $PULSE_SERVER or libpulse's "
                        "default; pipewire-pulse answers there too)")
    p.add_argument("--backend", default="auto", choices=backends.NAMES,
                   help="how to talk to the audio server: pulse (the PulseAudio protocol, "
                        "PulseAudio and pipewire-pulse); auto picks the best (pulse today)")
    p.add_argument("--bus", metavar="ADDRESS",
                   help="D-Bus address (default: the session bus, or the system bus with "
                        "--system)")
    p.add_argument("--resume-limit", type=float, default=RESUME_LIMIT, metavar="SECONDS",
                   help="an interruption longer than this ends with should_resume false "
                        f"(default: {RESUME_LIMIT:.0f})")
    p.add_argument("--no-mpris", action="store_true",
                   help="never pause players through MPRIS; interrupted streams are muted")
    p.add_argument("--no-microphone-permission", action="store_true",
                   help="do not broker microphone permission: every app records (by default "
                        "an app records silence until the user grants it)")
    p.add_argument("--prompt-timeout", type=float, default=PROMPT_TIMEOUT, metavar="SECONDS",
                   help="how long a permission agent gets to answer before the request ends "
                        f"unanswered (the app stays silent and may ask again; default: "
                        f"{PROMPT_TIMEOUT:.0f})")
    p.add_argument("--check-config", action="store_true",
                   help="validate the policies in force, print problems, exit 0 (valid) or 1")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="default: info")
    p.add_argument("--log-target", default="auto", choices=["auto", "journal", "stderr"],
                   help="auto: journald when started by systemd, else stderr")
    return p.parse_args(argv)


class Daemon:
    """Builds every object and runs them until a stop signal.

    :param args: parsed command line (:func:`parse_args`)
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.pm = make_plugin_manager()
        dirs = default_dirs(args.system) + list(args.policy_dir)
        if not args.system:
            # the user's directory exists from the start, so a file added later is watched
            dirs[2].mkdir(parents=True, exist_ok=True)
        self.store = PolicyStore(dirs, plugin_settings_schemas(self.pm),
                                 warn=functools.partial(unenabled_options, self.pm))
        self.store.reload()  # raises PolicyError when no valid set exists: caller reports
        state_dir = self.state_dir = args.state_dir or default_state_dir(args.system)
        self.journal = Journal(state_dir / "journal.sqlite3")
        self.backend = backends.choose(args.backend, args.server)
        self.bus: MessageBus | None = None
        self.manager: ManagerInterface | None = None
        self.mpris: MprisWatcher | None = None
        seq = itertools.count(1)
        self.runtime = Runtime(self.backend, self.journal, lambda: self.store.current, self.pm,
                               seq=seq)
        self.app_sessions = AppSessions(lambda: self.store.current, seq,
                                        self.runtime.request_reconcile, pm=self.pm)
        self.app_sessions.resume_limit = args.resume_limit
        self.runtime.app_sessions = self.app_sessions
        self.runtime.on_server.append(self.app_sessions.media_services)
        # what apps with sessions see of their routes (the router decides them)
        self.session_routes = SessionRoutes(self.app_sessions, lambda: self.store.current)
        self.session_routes.attach(self.runtime)
        self.microphone: MicrophoneBroker | None = None
        if not args.no_microphone_permission:
            self.microphone = MicrophoneBroker(prompt_timeout=args.prompt_timeout)
            self.microphone.on_decisions.append(self.runtime.request_reconcile)
            self.runtime.microphone = self.microphone
        # who may decide, and asking on a recording session's first activation
        self.access = MicrophoneAccess(self.microphone, self._asks_on_activation)
        self.app_sessions.on_app_activated.append(self.access.activated)
        self.app_sessions.listeners.append(self.access.session_event)
        # recordings (SWML's record verb): in sessions of their own, on the sessions' routes
        self.recorders = Recorders(self.backend, self.app_sessions, self.access,
                                   lambda: self.runtime.devices, self.session_routes,
                                   state_dir=state_dir)
        self.recorders.recover()  # files a kill cut short
        self.switch: MicrophoneSwitch | None = None
        self.sleep: SleepWatcher | None = None  # logind's suspend and resume
        self.started = time.monotonic()
        self._stop = asyncio.Event()
        self._exit = 0
        self._reload_timer: asyncio.TimerHandle | None = None
        self.runtime.on_failure = lambda exc: self._fatal(
            f"the runtime failed ({type(exc).__name__}: {exc})")

    def _asks_on_activation(self, session: AppSession) -> bool:
        """Whether an app's session asks for the microphone on its first activation: the
        plugins its category's policy enables decide (``ask_microphone_on_activation``)."""
        policy = self.store.current.policies.get(session.category)
        return policy is not None and bool(call_for(
            self.pm, "ask_microphone_on_activation", policy, session=session.model(),
            policy=policy))

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit status 0) or a supervised task's end (status 1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self.reload("SIGHUP"))
        await self._connect_bus()
        await self._open_permissions()
        tasks = [self._supervise(self._watch_policies(), "the policy file watcher"),
                 self._supervise(self.runtime.run(self._ready), "the reconcile loop")]
        if self.bus is not None:
            tasks.append(self._supervise(self._watch_bus(), "the D-Bus connection"))
        self.sleep = await SleepWatcher.connect(self.runtime.sleep_changed)
        if self.sleep is not None:
            tasks.append(self._supervise(self.sleep.run(), "the system bus connection (logind)"))
        watchdog = self._start_watchdog()
        if watchdog is not None:
            tasks.append(self._supervise(watchdog, "the watchdog"))
        try:
            await self._stop.wait()
        finally:
            logger.info("stopping: restoring every effect")
            sd.notify("STOPPING=1")
            self.runtime.stop()
            for task in tasks:
                task.cancel()
            await self._shutdown()
        return self._exit

    async def _shutdown(self) -> None:
        """Restore every effect, then close everything; a step that fails does not stop the
        next (and makes the exit status 1)."""
        steps = [("end every recording", self.recorders.close),
                 ("restore every effect", self._restore)]
        if self.mpris is not None:
            steps.append(("stop following players", self.mpris.stop))
        if self.switch is not None:
            steps.append(("stop following the microphone switch", self.switch.close))
        if self.microphone is not None and self.microphone.store is not None:
            steps.append(("close the permission store", self.microphone.store.close))
        if self.bus is not None:
            steps.append(("leave the bus", self.bus.disconnect))
        if self.sleep is not None:
            steps.append(("leave the system bus (logind)", self.sleep.close))
        steps += [("close the audio server connection", self.backend.close),
                  ("close the journal", self.journal.close)]
        for what, step in steps:
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                logger.exception("stopping: could not %s", what)
                self._exit = 1

    async def _restore(self) -> None:
        if self.runtime.connected.is_set():
            await self.runtime.restore_all()
        elif self.runtime.applied:
            logger.warning("stopping without the audio server: the journal keeps %d effect(s) "
                           "for the next start", len(self.runtime.applied))

    def _supervise(self, coro, what: str) -> asyncio.Task:
        """Run a task whose end, while the daemon is not stopping, is fatal."""
        task = asyncio.ensure_future(coro)

        def done(task: asyncio.Task) -> None:
            if self._stop.is_set():
                return
            if task.cancelled():
                self._fatal(f"{what} was cancelled")
            elif task.exception() is not None:
                exc = task.exception()
                logger.critical("%s failed", what, exc_info=exc)
                self._fatal(f"{what} failed ({type(exc).__name__}: {exc})")
            else:
                self._fatal(f"{what} ended")

        task.add_done_callback(done)
        return task

    def _fatal(self, why: str) -> None:
        """Stop with exit status 1 (systemd restarts the daemon) after restoring everything."""
        if self._stop.is_set():
            return
        logger.critical("%s: restoring every effect and exiting with status 1", why)
        sd.notify(f"STATUS=failed: {why}")
        self._exit = 1
        self._stop.set()

    async def _watch_bus(self) -> None:
        """Return when the D-Bus connection is gone (the bus daemon died or dropped us): the
        daemon cannot run on without its name (supervised: ending is fatal)."""
        try:
            await self.bus.wait_for_disconnect()
        except Exception as exc:
            logger.error("the D-Bus connection failed: %s", exc)
        logger.error("lost the D-Bus connection (and the name %s)", BUS_NAME)

    async def _connect_bus(self) -> None:
        bus_type = BusType.SYSTEM if self.args.system else BusType.SESSION
        try:
            # file descriptors: RecordToFile's (every one a message brings is closed after it)
            self.bus = await MessageBus(bus_address=self.args.bus, bus_type=bus_type,
                                        negotiate_unix_fd=True).connect()
        except Exception as exc:  # no bus: enforce policies anyway, say what is missing
            logger.error("no D-Bus connection (%s): running without the D-Bus API and without "
                         "MPRIS pausing (interrupted streams are muted)", exc)
            return
        api = DBusApi(self.bus, self, self.app_sessions, self.access, identify,
                      self.session_routes, self.recorders)
        self.manager = api.manager
        api.export()
        reply = await self.bus.request_name(BUS_NAME)
        if reply.value != 1:  # 1 = primary owner
            raise SystemExit(f"audiopolicyd: {BUS_NAME} is already owned on this bus: "
                             "another audiopolicyd is running")
        await api.start()
        if self.microphone is not None:
            self.microphone.on_recording.append(self.manager.notify_recording)
        self.runtime.on_effects.append(self.manager.notify_effects)
        self.runtime.on_streams.append(self.manager.notify_streams)
        self.runtime.on_server.append(self.manager.notify_server)
        if not self.args.system and not self.args.no_mpris:
            self.mpris = MprisWatcher(self.bus, lambda player: self.runtime.players_changed(
                self.mpris.players, player))
            self.runtime.pauser = self.mpris
            await self.mpris.start()
        logger.info("owning %s on the %s bus", BUS_NAME, "system" if self.args.system
                    else "session")

    async def _open_permissions(self) -> None:
        """Open where microphone decisions live (the desktop's permission store on the session
        bus, else SQLite in the state directory) and follow the desktop's global switch.
        Until this is done, and if it fails, every microphone stream stays silent."""
        if self.microphone is None:
            logger.info("microphone permission not brokered (--no-microphone-permission)")
            return
        try:
            if self.bus is not None and not self.args.system:
                store = await open_store(self.bus, self.state_dir)
            else:
                store = SqlitePermissionStore(self.state_dir / "permissions.sqlite3")
            await self.microphone.start(store)
        except PermissionStoreError as exc:
            logger.error("microphone permission store unavailable (%s): every app records "
                         "silence", exc)
            return
        if self.bus is not None and not self.args.system:
            self.switch = MicrophoneSwitch(self.bus, self.microphone.set_disabled)
            try:
                await self.switch.start()
            except Exception as exc:  # the switch is optional
                logger.warning("cannot follow the desktop's microphone switch: %s", exc)

    def record_permissions(self) -> list[dict[str, tuple[str, object]]]:
        """``GetRecordPermissions``: see :meth:`MicrophoneAccess.record_permissions
        <audiopolicyd.microphone.access.MicrophoneAccess.record_permissions>`."""
        return self.access.record_permissions()

    def _ready(self) -> None:
        sd.notify(f"READY=1\nSTATUS={self._status_line()}")
        logger.info("ready: %s", self._status_line())
        self.runtime.on_effects.append(lambda _views: sd.notify(
            f"STATUS={self._status_line()}"))

    def _start_watchdog(self):
        """The watchdog pinger (a coroutine), None when systemd asked for no watchdog: then no
        timer at all, and the daemon does not wake up while idle.

        Every half period, a decision pass must answer within a quarter period
        (:meth:`~audiopolicyd.runtime.Runtime.answers`); only then is systemd pinged.
        """
        usec = sd.watchdog_enabled() if hasattr(sd, "watchdog_enabled") else None
        usec = usec or int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if not usec:
            return None

        async def ping() -> None:
            while True:
                if await self.runtime.answers(usec / 4e6):
                    sd.notify("WATCHDOG=1")
                else:
                    logger.error("no decision pass answered within %.1f s: the watchdog is not "
                                 "pinged", usec / 4e6)
                await asyncio.sleep(usec / 2e6)

        return ping()

    # -- reload -------------------------------------------------------------------------------

    def reload(self, why: str) -> bool:
        """Reload the policies; keep the last good set when any file is bad.

        :returns: True when the new set is in force
        """
        sd.notify(f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}")
        logger.info("reloading policies (%s)", why)
        try:
            applied = self.store.reload()
        except Exception as exc:  # a bug: PolicyStore reports every problem of a file
            logger.critical("reloading policies failed", exc_info=exc)
            self._fatal(f"reloading policies failed ({type(exc).__name__}: {exc})")
            return False
        if applied:
            self.runtime.policies_changed()
        if self.manager is not None:
            self.manager.notify_reload(applied)
        sd.notify(f"READY=1\nSTATUS={self._status_line()}")
        return applied

    async def _watch_policies(self) -> None:
        """Reload when a policy file is written, created, moved or deleted (inotify)."""
        loop = asyncio.get_running_loop()
        mask = (Mask.CLOSE_WRITE | Mask.CREATE | Mask.DELETE | Mask.MOVED_FROM | Mask.MOVED_TO)
        with Inotify() as inotify:
            for d in self.store.dirs:
                if d.is_dir():
                    inotify.add_watch(d, mask)
            async for event in inotify:
                if event.name is None or not str(event.name).endswith(".toml"):
                    continue
                if self._reload_timer is not None:
                    self._reload_timer.cancel()
                self._reload_timer = loop.call_later(
                    RELOAD_DEBOUNCE, lambda n=event.name: self.reload(f"{n} changed"))

    # -- read side ------------------------------------------------------------------------------

    def _status_line(self) -> str:
        r = self.runtime
        acting = sum(1 for e in r.effects.values() if not e.neutral)
        server = r.server.server_name if r.server and r.connected.is_set() else "no server"
        return f"{server}; {len(r.streams)} streams, {acting} with effects"

    def explain(self, target: str) -> dict:
        """``Explain``: see :meth:`audiopolicyd.runtime.Runtime.explain`.

        :raises UnknownTarget: when nothing has that name
        """
        try:
            return self.runtime.explain(target)
        except KeyError:
            raise UnknownTarget(f"no stream or session {quote(target)} (see "
                                "audiopolicyctl streams / sessions)") from None

    def status(self) -> dict[str, tuple[str, object]]:
        """Status as ``name -> (D-Bus signature, value)`` for ``GetStatus``."""
        r = self.runtime
        server = r.server
        return {
            "Version": ("s", __version__),
            "Mode": ("s", "system" if self.args.system else "user"),
            "ServerConnected": ("b", r.connected.is_set()),
            "ServerName": ("s", server.server_name if server else ""),
            "ServerVersion": ("s", server.server_version if server else ""),
            "Streams": ("u", len(r.streams)),
            "StreamsWithEffects": ("u", sum(1 for e in r.effects.values() if not e.neutral)),
            "ActiveSessions": ("as", [s.id for s in r.sessions if s.active]),
            "Players": ("as", sorted(r.players)),
            "PolicyFiles": ("as", [str(f) for f in self.store.files]),
            "PolicyProblems": ("as", [str(p) for p in self.store.problems]),
            "Journal": ("s", self.journal.path),
            "JournalProblem": ("s", self.journal.failure),
            **self.access.status(),
            "UptimeSeconds": ("d", time.monotonic() - self.started),
        }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``audiopolicyd``."""
    args = parse_args(argv)
    setup_logging(getattr(logging, args.log_level.upper()), args.log_target)
    if args.check_config:
        pm = make_plugin_manager()
        check = check_policies(default_dirs(args.system) + list(args.policy_dir),
                               plugin_schemas=plugin_settings_schemas(pm),
                               warn=functools.partial(unenabled_options, pm))
        return print_check(check, list_files=True)
    try:
        return asyncio.run(_run(args))
    except PolicyError as exc:
        print(f"audiopolicyd: no valid policy set, not starting:\n{exc}", file=sys.stderr)
        return 2
    except JournalError as exc:
        print(f"audiopolicyd: {exc} (choose another directory with --state-dir)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace) -> int:
    return await Daemon(args).run()


if __name__ == "__main__":
    sys.exit(main())
