"""``audiopolicyctl run``: a program inside an active audio session (see :mod:`audiopolicyd.ctl`).

Through :mod:`audiopolicyd.client`, as any app would: create a session, set the category,
activate, run COMMAND as a child, print interruptions, reactivate when told to resume, forward
signals, deactivate with ``notifyOthersOnDeactivation`` and pass the child's exit code on.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .. import client as apc
from .common import CtlError

logger = logging.getLogger(__name__)


def say(text: str) -> None:
    """A line of ``run`` on stderr (the child owns stdout)."""
    print(f"audiopolicyctl: {text}", file=sys.stderr, flush=True)


def _terminal_sent(sig: int) -> bool:
    """Whether ``sig`` probably came from our terminal, and so reached the child too: SIGINT
    while our process group is the terminal's foreground group."""
    if sig != signal.SIGINT:
        return False
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return True
        except OSError:
            continue
    return False


def _exit_code(returncode: int) -> int:
    """A child's exit status as a shell reports it: 128 + N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


async def cmd_run(args: argparse.Namespace) -> int:
    """Run COMMAND inside an active session; see the module docstring."""
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise CtlError("run: no COMMAND given (audiopolicyctl run --category C -- COMMAND...)")
    loop = asyncio.get_running_loop()
    stop = loop.create_future()  # a signal before the child exists: the signal number
    child: asyncio.subprocess.Process | None = None

    def on_signal(sig: int) -> None:
        if child is None:
            if not stop.done():
                stop.set_result(sig)
        elif child.returncode is None and not _terminal_sent(sig):
            child.send_signal(sig)

    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in forwarded:
        loop.add_signal_handler(sig, on_signal, sig)
    name = args.name or " ".join([os.path.basename(command[0]), *command[1:]])
    name = name if len(name) <= 40 else name[:39] + "…"
    try:
        async with apc.AudioSession.create(name=name, bus_address=args.bus,
                                           system=args.system) as session:
            await session.set_category(args.category, args.mode, args.option or [])
            resuming: set[asyncio.Task] = set()

            def began(info: dict) -> None:
                if child is None:
                    return  # not playing yet (the daemon also tells inactive sessions)
                say(f"interruption began: {info.get('interrupter_category', '?')} session "
                    f"{info.get('interrupter', '?')} (reason {info.get('reason', '?')})")

            async def resume() -> None:
                try:
                    state = await session.set_active(True, ["delayIfBusy"])
                    say("session reactivated" if state == "active" else
                        "reactivation delayed: a higher-priority session is active")
                except apc.AudioSessionError as exc:
                    say(f"cannot reactivate: {exc}")

            def ended(info: dict) -> None:
                if child is None:
                    return
                should = bool(info.get("should_resume"))
                say(f"interruption ended after {info.get('duration_ms', 0) / 1000:.1f} s; "
                    f"should resume: {'yes' if should else 'no'}")
                if should and child.returncode is None:
                    task = asyncio.ensure_future(resume())
                    resuming.add(task)
                    task.add_done_callback(resuming.discard)

            session.on("InterruptionBegan", began)
            session.on("InterruptionEnded", ended)
            session.on("MediaServicesWereLost", lambda _: say("audio server lost"))
            session.on("MediaServicesWereReset", lambda _: say("audio server back; session "
                                                              "re-applied"))
            session.on("SessionLost", lambda _: say("audiopolicyd left the bus; the command "
                                                     "runs on without a session"))
            options = ["delayIfBusy"] if args.delay_if_busy else []
            try:
                state = await session.set_active(True, options)
            except (apc.InsufficientPriority, apc.CannotInterruptOthers) as exc:
                say(f"{exc} (--delay-if-busy waits instead)")
                return 1
            if state == "delayed":
                say("activation delayed: a higher-priority session is active; waiting")
                waiter = asyncio.ensure_future(session.wait_until_active())
                await asyncio.wait([waiter, stop], return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                    return 128 + stop.result()
                waiter.result()
                say("session active")
            if stop.done():
                return 128 + stop.result()
            try:
                child = await asyncio.create_subprocess_exec(*command)
            except OSError as exc:
                say(f"{command[0]}: {exc.strerror or exc}")
                return 127 if isinstance(exc, FileNotFoundError) else 126
            code = _exit_code(await child.wait())
            try:
                await session.set_active(False, ["notifyOthersOnDeactivation"])
            except apc.AudioSessionError as exc:
                if not session.closed:
                    say(f"deactivating: {exc}")
            return code
    except apc.DaemonNotRunning as exc:
        raise CtlError(exc.message) from None
    except apc.AudioSessionError as exc:
        if child is None:
            say(str(exc))
            return 1
        raise
    finally:
        for sig in forwarded:
            loop.remove_signal_handler(sig)
