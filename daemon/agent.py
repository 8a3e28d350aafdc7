"""Microphone-permission prompt agents: the process that asks the user on the daemon's behalf.

The daemon decides whether an app may record, but it has no user interface. As polkit does with
its authentication agents (``org.freedesktop.PolicyKit1.AuthenticationAgent``, registered with
``RegisterAuthenticationAgent``) and BlueZ with its pairing agents (``org.bluez.Agent1``,
registered with ``org.bluez.AgentManager1.RegisterAgent``), a program in the user's session
registers an object with the daemon, and the daemon calls that object when it needs an answer:

1. the agent exports :data:`AGENT_IFACE` at :data:`AGENT_PATH` on its connection;
2. it calls ``RegisterPermissionAgent(o path)`` on the daemon's Manager; the daemon refuses with
   ``io.github.audiopolicyd.AudioPolicy1.Error.AgentExists`` while another agent is registered
   and with ``...Error.NotAllowed`` for a sandboxed caller;
3. the daemon calls ``RequestRecordPermission(s request_id, s app_id, a{sv} info) ->
   (s decision, a{sv} details)`` for every app that wants the microphone (several may be in
   flight at once, one per app) and waits up to 120 s for the answer: ``granted``, ``denied`` or
   ``undetermined`` (the prompt was dismissed: ask again later); ``details`` is reserved and empty;
4. it calls ``Cancel(s request_id)`` when a request became moot (decided elsewhere, or the app
   stopped recording): the prompt is withdrawn and the pending ``RequestRecordPermission``
   returns ``undetermined``, as BlueZ's ``Agent1.Cancel`` and polkit's
   ``CancelAuthentication`` withdraw their dialogs;
5. on exit the agent calls ``UnregisterPermissionAgent(o path)``.

Only the connection that owns ``io.github.audiopolicyd.AudioPolicy1`` (the daemon we registered
with) may call the agent; any other caller gets ``org.freedesktop.DBus.Error.AccessDenied``, so
no app can put up a prompt that looks like the daemon's. When the daemon restarts, its pending
requests are withdrawn and the agent registers again with the new daemon.

Two prompters decide how the user is asked (both behind :class:`Prompter`):

* :class:`TerminalPrompter`: a text prompt, one request at a time, as ``pkttyagent`` asks for
  a password on its terminal (``audiopolicyctl agent``);
* :class:`NotificationPrompter`: a desktop notification with *Allow* and *Deny* buttons
  through ``org.freedesktop.Notifications`` (``audiopolicyctl agent --notify``, started by
  ``systemd/user/audiopolicyd-notify-agent.service`` with the graphical session).

Example: an agent of your own (a GUI dialog, an auto-answering kiosk)::

    from audiopolicyd.agent import Prompter, run_agent, GRANTED

    class Kiosk(Prompter):
        async def ask(self, request_id, app_id, info):
            return GRANTED if app_id == "app:org.example.Recorder" else "denied"

        async def cancel(self, request_id):
            pass

    await run_agent(bus, Kiosk())

Errors::

    AgentError      the agent cannot run: the daemon is not on the bus or refused the
                    registration (``dbus_name`` says why), no notification server, the bus
                    connection was lost

(No ``from __future__ import annotations`` here: dbus-fast reads D-Bus signatures from the
annotations at run time.)
"""

import abc
import asyncio
import collections
import logging
import os
import stat
import sys
import threading
from typing import Any, TextIO

from dbus_fast import BusType, DBusError, Message, MessageFlag, MessageType, Variant
from dbus_fast.service import ServiceInterface, method

from .buswriter import MessageBus
from .client import BUS_NAME as MANAGER_NAME
from .client import ERROR_PREFIX, MANAGER_IFACE, plain
from .client import OBJECT_PATH as MANAGER_PATH
from .microphone.stores import Decision

logger = logging.getLogger(__name__)

#: The interface an agent exports, and where :func:`run_agent` exports it by default.
AGENT_IFACE = MANAGER_NAME + ".PermissionAgent"
AGENT_PATH = "/io/github/audiopolicyd/PermissionAgent"

#: The three answers, named as ``AVAudioApplication.recordPermission`` names them.
GRANTED, DENIED, UNDETERMINED = (d.value for d in
                                 (Decision.GRANTED, Decision.DENIED, Decision.UNDETERMINED))
DECISIONS = (GRANTED, DENIED, UNDETERMINED)

#: The desktop notification service (Desktop Notifications Specification 1.2).
NOTIFY_NAME = "org.freedesktop.Notifications"
NOTIFY_PATH = "/org/freedesktop/Notifications"
NOTIFY_IFACE = "org.freedesktop.Notifications"

#: How long :func:`run_agent` waits for the daemon's answer to (Un)RegisterPermissionAgent, in s
#: (libdbus's default method timeout).
CALL_TIMEOUT = 25.0

_DBUS = dict(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
             interface="org.freedesktop.DBus")
_NO_OWNER = ("org.freedesktop.DBus.Error.NameHasNoOwner",
             "org.freedesktop.DBus.Error.ServiceUnknown")
_ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
# Standard interfaces anyone may call on the agent's object (busctl introspect).
_OPEN_IFACES = ("org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer",
                "org.freedesktop.DBus.Properties")


class AgentError(Exception):
    """The agent cannot run (see the module docstring for when).

    :ivar message: what went wrong, for people (``str(exc)`` is the same)
    :ivar dbus_name: the D-Bus error name behind it
        (``io.github.audiopolicyd.AudioPolicy1.Error.AgentExists``), or ``""``
    """

    def __init__(self, message: str, dbus_name: str = ""):
        super().__init__(message)
        self.message = message
        self.dbus_name = dbus_name


# -- the contract -------------------------------------------------------------------------------

class Prompter(abc.ABC):
    """How the user is asked: the contract behind :class:`PermissionAgentInterface`.

    The counterpart of the dialog behind a polkit authentication agent or a BlueZ
    ``org.bluez.Agent1``. Every method runs on the event loop and must not block it.

    Life cycle (driven by :func:`run_agent`): :meth:`start` once before the agent registers,
    then any number of concurrent :meth:`ask` and :meth:`cancel` calls, then :meth:`close`
    once. A prompter that can no longer ask (its input reached end-of-file) calls
    :meth:`_end`; :func:`run_agent` then unregisters and returns.
    """

    def __init__(self) -> None:
        self._ended = asyncio.Event()

    async def start(self) -> None:
        """Get ready to ask (connect to the UI). Default: nothing.

        :raises AgentError: when the prompter cannot ask at all (no notification server...);
            the agent does not register then
        """

    async def close(self) -> None:
        """Release the UI. Every :meth:`ask` still pending returns ``undetermined``. Default:
        nothing. Must not raise."""

    @abc.abstractmethod
    async def ask(self, request_id: str, app_id: str, info: dict) -> str:
        """Ask the user whether an app may use the microphone; return once they answered.

        Called once per ``RequestRecordPermission``; several may be pending at once (the
        prompter decides whether to show them together or one after the other).

        :param request_id: the daemon's id of this request (unique among pending ones)
        :param app_id: the daemon's app key: ``flatpak:<id>``, ``app:<id>``, ``exe:<path>`` or
            ``pid:<n>``
        :param info: plain values (read-only), every key optional, unknown keys to be ignored:
            ``AppName`` str (for people), ``Executable`` str (path), ``Pid`` int (0: unknown),
            ``Sandboxed`` bool, ``Streams`` int (recording streams waiting), ``Requester`` str
            (``stream`` or ``session``)
        :returns: ``granted``, ``denied`` or ``undetermined`` (dismissed: ask again later)
        If it raises, the error is logged and the daemon is answered ``undetermined``. The task
        running it is cancelled after :meth:`cancel` for its request.
        """

    @abc.abstractmethod
    async def cancel(self, request_id: str) -> None:
        """Withdraw the prompt of a pending :meth:`ask` (the daemon's ``Cancel``).

        The daemon is answered ``undetermined`` for it whatever happens here; afterwards the
        task running that :meth:`ask` is cancelled. Unknown ids are ignored. Must not raise
        (an exception is logged).
        """

    @property
    def ended(self) -> bool:
        """Whether the prompter can no longer ask (it called :meth:`_end`)."""
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        """Return once the prompter can no longer ask."""
        await self._ended.wait()

    def _end(self) -> None:
        """For subclasses: no more answers will come (input closed); :func:`run_agent` stops."""
        self._ended.set()


# -- the D-Bus object ---------------------------------------------------------------------------

class PermissionAgentInterface(ServiceInterface):
    """``io.github.audiopolicyd.AudioPolicy1.PermissionAgent``: the object the daemon calls.

    As ``org.bluez.Agent1`` (``RequestConfirmation`` + ``Cancel``) and polkit's
    ``AuthenticationAgent`` (``BeginAuthentication`` + ``CancelAuthentication``): each call
    waits for the user, ``Cancel`` withdraws one. Never answers with a traceback: a prompter
    failure answers ``undetermined`` and is logged. Who may call is checked by
    :func:`run_agent`, not here (dbus-fast handlers do not see the sender).

    :param prompter: the :class:`Prompter` that asks the user
    """

    def __init__(self, prompter: Prompter):
        super().__init__(AGENT_IFACE)
        self.prompter = prompter
        # request id -> (task running prompter.ask, future set when the request is withdrawn)
        self._pending: dict[str, tuple[asyncio.Task, asyncio.Future]] = {}

    @method(name="RequestRecordPermission")
    async def request_record_permission(self, request_id: "s", app_id: "s",
                                        info: "a{sv}") -> "sa{sv}":
        """``RequestRecordPermission(s request_id, s app_id, a{sv} info) -> (s, a{sv})``.

        :raises DBusError: ``org.freedesktop.DBus.Error.InvalidArgs`` when ``request_id`` is
            already pending
        """
        if request_id in self._pending:
            raise DBusError("org.freedesktop.DBus.Error.InvalidArgs",
                            f"request {request_id!r} is already pending")
        return [await self.ask(request_id, app_id, plain(info)), {}]

    @method(name="Cancel")
    async def cancel_request(self, request_id: "s"):
        """``Cancel(s request_id)``: withdraw a pending request; unknown ids are ignored."""
        await self.withdraw(request_id)

    @property
    def pending(self) -> list[str]:
        """Ids of the requests being asked, oldest first."""
        return list(self._pending)

    async def ask(self, request_id: str, app_id: str, info: dict) -> str:
        """Ask the prompter, as ``RequestRecordPermission`` does.

        :returns: one of :data:`DECISIONS`; ``undetermined`` when withdrawn, when the prompter
            raised or returned something else
        """
        task = asyncio.ensure_future(self.prompter.ask(request_id, app_id, info))
        withdrawn = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (task, withdrawn)
        try:
            await asyncio.wait({task, withdrawn}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._pending.get(request_id, (None,))[0] is task:
                del self._pending[request_id]
            if not withdrawn.done() and not task.done():  # we were cancelled ourselves
                task.cancel()
        if withdrawn.done():
            logger.info("request %s for %s withdrawn", request_id, app_id)
            return UNDETERMINED
        try:
            decision = task.result()
        except (Exception, asyncio.CancelledError):
            logger.exception("asking about %s (request %s) failed; answering %s", app_id,
                             request_id, UNDETERMINED)
            return UNDETERMINED
        if decision not in DECISIONS:
            logger.error("prompter answered %r for %s; answering %s", decision, app_id,
                         UNDETERMINED)
            return UNDETERMINED
        logger.info("request %s: %s %s", request_id, app_id, decision)
        return decision

    async def withdraw(self, request_id: str) -> None:
        """Withdraw one pending request, as ``Cancel`` does: its call answers ``undetermined``,
        the prompter's :meth:`Prompter.cancel` runs, then its ask task is cancelled. Unknown ids
        are ignored."""
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        task, withdrawn = entry
        if not withdrawn.done():
            withdrawn.set_result(None)
        try:
            await self.prompter.cancel(request_id)
        except Exception:
            logger.exception("withdrawing request %s failed", request_id)
        finally:
            task.cancel()
            task.add_done_callback(_log_late_failure)

    async def withdraw_all(self) -> None:
        """Withdraw every pending request (the daemon that asked left the bus)."""
        for request_id in list(self._pending):
            await self.withdraw(request_id)


def _log_late_failure(task: asyncio.Task) -> None:
    """Done callback of a withdrawn ask: nobody awaits it any more, so log what it raised."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("a withdrawn request's prompt failed", exc_info=task.exception())


# -- text prompts -------------------------------------------------------------------------------

def _printable(text: Any, limit: int = 200) -> str:
    """``text`` safe to show: control characters (terminal escapes an app could put in its
    name) escaped, at most ``limit`` characters."""
    text = str(text)
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return safe if len(safe) <= limit else safe[:limit - 1] + "…"


def describe(app_id: str, info: dict) -> tuple[str, str]:
    """The name and the details to show for a request.

    :returns: ``(name, details)``: ``("parecord", "/usr/bin/pacat, pid 123")``; the name is
        ``AppName`` or else ``app_id``; details list the executable (or the app id when the
        name hides it), ``sandboxed`` and the pid when known; both are :func:`_printable`
    """
    name = info.get("AppName") or app_id
    parts = []
    if info.get("Executable"):
        parts.append(info["Executable"])
    elif info.get("AppName") and app_id and app_id != info["AppName"]:
        parts.append(app_id)
    if info.get("Sandboxed"):
        parts.append("sandboxed")
    if isinstance(info.get("Pid"), int) and info["Pid"] > 0:
        parts.append(f"pid {info['Pid']}")
    return _printable(name), _printable(", ".join(str(p) for p in parts))


class _Question:
    __slots__ = ("request_id", "app_id", "info", "future")

    def __init__(self, request_id: str, app_id: str, info: dict, future: asyncio.Future):
        self.request_id = request_id
        self.app_id = app_id
        self.info = info
        self.future = future


class TerminalPrompter(Prompter):
    """Asks on a terminal, one request at a time, as polkit's ``pkttyagent`` does.

    Prints ``Allow "parecord" (/usr/bin/pacat, pid 123) to use the microphone? [y]es / [n]o /
    [l]ater: `` and reads a line: ``y``/``yes`` grants, ``n``/``no`` denies, ``l``/``later``
    answers ``undetermined``; anything else asks again. Other requests wait in a queue and are
    shown in turn. A line only answers the prompt that was on screen when it arrived, so an
    answer typed ahead (or a stray Enter) never answers a prompt the user has not seen. A
    withdrawn request (``Cancel``) prints a line saying so and the next one is shown.
    End-of-file on the input answers ``undetermined`` for everything pending and ends the agent.

    Input is read without blocking the event loop: through ``loop.connect_read_pipe`` for a
    pipe or a socket, else (a terminal, a file, ``/dev/null``) by a daemon thread, because
    making a terminal's stdin non-blocking would also make its stdout non-blocking (they share
    one open file description) and leave the shell's terminal so after exit.

    :param inp: where answers come from: a binary or text file object with ``fileno()``, or a
        file descriptor; default ``sys.stdin``. It is never closed.
    :param out: where prompts go: anything with ``write(str)`` (and optionally ``flush()``);
        default ``sys.stdout``
    """

    ANSWERS = {"y": GRANTED, "yes": GRANTED, "n": DENIED, "no": DENIED,
               "l": UNDETERMINED, "later": UNDETERMINED}
    #: A line longer than this (bytes) is garbage: it is dropped rather than buffered.
    MAX_LINE = 4096

    def __init__(self, inp: Any = None, out: TextIO | None = None):
        super().__init__()
        self._inp = sys.stdin if inp is None else inp
        self._out = sys.stdout if out is None else out
        self._queue: collections.deque[_Question] = collections.deque()
        self._current: _Question | None = None
        self._buffer = b""
        self._fd: int | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    async def start(self) -> None:
        """Start reading the input.

        :raises AgentError: the input is closed or not a file
        """
        loop = asyncio.get_running_loop()
        try:
            self._fd = self._inp if isinstance(self._inp, int) else self._inp.fileno()
            mode = os.fstat(self._fd).st_mode
        except (OSError, ValueError, AttributeError) as exc:
            raise AgentError(f"cannot read answers from the input: {exc}") from None
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            # closefd=False: the transport closes this wrapper, never the caller's descriptor
            pipe = open(self._fd, "rb", buffering=0, closefd=False)
            self._transport, _ = await loop.connect_read_pipe(lambda: _Lines(self), pipe)
        else:
            self._thread = threading.Thread(target=self._read_thread, args=(self._fd, loop),
                                             name="agent-input", daemon=True)
            self._thread.start()

    async def close(self) -> None:
        """Stop reading (a reader thread ends at its next read); pending asks answer
        ``undetermined``."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            try:
                os.set_blocking(self._fd, True)  # connect_read_pipe made it non-blocking
            except OSError:
                pass
        self._settle_all()

    async def ask(self, request_id: str, app_id: str, info: dict) -> str:
        """See :meth:`Prompter.ask`: queue the question and wait for its answer."""
        if self.ended or self._closed:
            return UNDETERMINED
        question = _Question(request_id, app_id, info,
                             asyncio.get_running_loop().create_future())
        self._queue.append(question)
        if self._current is None:
            self._show_next()
        try:
            return await question.future
        finally:
            if self._current is question:  # cancelled while on screen
                self._current = None
                self._show_next()
            elif question in self._queue:
                self._queue.remove(question)

    async def cancel(self, request_id: str) -> None:
        """See :meth:`Prompter.cancel`: a prompt on screen is withdrawn with a line saying so;
        a queued one is dropped silently."""
        current = self._current
        if current is not None and current.request_id == request_id:
            self._current = None
            name, _ = describe(current.app_id, current.info)
            self._write(f"\nThe request for \"{name}\" was withdrawn (decided elsewhere, or it "
                        "stopped recording).\n")
            self._settle(current, UNDETERMINED)
            self._show_next()
            return
        for question in list(self._queue):
            if question.request_id == request_id:
                self._queue.remove(question)
                self._settle(question, UNDETERMINED)

    # -- internals ------------------------------------------------------------------------------

    def _prompt(self, question: _Question) -> str:
        """The prompt line for a question (no newline: the answer is typed after it)."""
        name, details = describe(question.app_id, question.info)
        return (f"Allow \"{name}\"{f' ({details})' if details else ''} to use the microphone? "
                "[y]es / [n]o / [l]ater: ")

    def _show_next(self) -> None:
        while self._queue and self._current is None:
            question = self._queue.popleft()
            if not question.future.done():
                self._current = question
                self._write(self._prompt(question))

    def _write(self, text: str) -> None:
        try:
            self._out.write(text)
            flush = getattr(self._out, "flush", None)
            if flush is not None:
                flush()
        except (OSError, ValueError) as exc:  # closed terminal or pipe
            logger.warning("cannot write the prompt: %s", exc)

    @staticmethod
    def _settle(question: _Question, decision: str) -> None:
        if not question.future.done():
            question.future.set_result(decision)

    def _settle_all(self) -> None:
        for question in [*([self._current] if self._current else []), *self._queue]:
            self._settle(question, UNDETERMINED)
        self._current = None
        self._queue.clear()

    def _on_data(self, data: bytes) -> None:
        if self._closed:
            return
        on_screen = self._current  # lines of this chunk may answer only this prompt
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        if len(self._buffer) > self.MAX_LINE:
            lines.append(b"")  # garbage: asks again
            self._buffer = b""
        for line in lines:
            self._on_line(line, on_screen)

    def _on_line(self, line: bytes, on_screen: _Question | None) -> None:
        if on_screen is None or self._current is not on_screen:
            logger.debug("input line discarded: no prompt was on screen when it was typed")
            return
        decision = self.ANSWERS.get(line.decode(errors="replace").strip().lower())
        if decision is None:
            self._write("Please answer y (yes), n (no) or l (later).\n")
            self._write(self._prompt(on_screen))
            return
        self._current = None
        self._settle(on_screen, decision)
        self._show_next()

    def _on_eof(self) -> None:
        if self._closed:
            return
        if self._buffer:
            line, self._buffer = self._buffer, b""
            self._on_line(line, self._current)
        if self._current is not None or self._queue:
            self._write("\nInput closed: pending requests are left undetermined.\n")
        self._settle_all()
        self._end()

    def _read_thread(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        """Blocking reads on a thread; every chunk is handed to the loop."""
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError as exc:
                logger.warning("reading the input failed: %s", exc)
                data = b""
            try:
                if data:
                    loop.call_soon_threadsafe(self._on_data, data)
                else:
                    loop.call_soon_threadsafe(self._on_eof)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return
            if not data or self._closed:
                return


class _Lines(asyncio.Protocol):
    """Feeds a :class:`TerminalPrompter` from ``connect_read_pipe``."""

    def __init__(self, prompter: TerminalPrompter):
        self.prompter = prompter

    def data_received(self, data: bytes) -> None:
        self.prompter._on_data(data)

    def eof_received(self) -> bool:
        self.prompter._on_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            logger.warning("reading the input failed: %s", exc)
            self.prompter._on_eof()


# -- desktop notifications ----------------------------------------------------------------------

def _markup_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class _Note:
    __slots__ = ("request_id", "future", "id", "open")

    def __init__(self, request_id: str, future: asyncio.Future):
        self.request_id = request_id
        self.future = future
        self.id = 0  # the server's notification id, once Notify answered
        self.open = True  # shown and not closed yet (by the server or by us)


class NotificationPrompter(Prompter):
    """Asks with a desktop notification, as GNOME Shell's polkit agent asks with a dialog.

    One notification per request (all shown at once; the server stacks them): summary ``Allow
    "parecord" to use the microphone?``, body the details (executable, pid), icon
    ``audio-input-microphone``, actions ``["allow", "Allow", "deny", "Deny"]``, hints
    ``urgency`` = 2 (critical: it stays until answered) and ``resident`` = true, no expiry.
    ``ActionInvoked(id, "allow")`` grants, ``"deny"`` denies; ``NotificationClosed`` before any
    action (dismissed, or the server went away) answers ``undetermined``. A withdrawn request
    closes its notification with ``CloseNotification``, as does an answered one (resident
    notifications stay otherwise). Only signals sent by the current owner of
    ``org.freedesktop.Notifications`` count: any connection can emit (or send us directly) an
    ``ActionInvoked`` with a guessed id.

    :param bus: the session bus connection (the agent's own: signals are received on it)
    :param app_name: the ``app_name`` given to ``Notify``
    """

    ACTIONS = ["allow", "Allow", "deny", "Deny"]
    ICON = "audio-input-microphone"

    def __init__(self, bus: MessageBus, app_name: str = "audiopolicyd"):
        super().__init__()
        self.bus = bus
        self.app_name = app_name
        self._owner: str | None = None
        self._markup = False
        self._notes: dict[str, _Note] = {}  # request id -> note
        self._by_id: dict[int, _Note] = {}  # notification id -> note
        # Signals for ids whose Notify reply we have received but not read yet: dbus-fast
        # dispatches the signals of one read before the awaiting coroutine resumes.
        self._early: dict[int, tuple[str, bool]] = {}
        self._notifying = 0
        self._rules = [
            f"type='signal',interface='{NOTIFY_IFACE}',path='{NOTIFY_PATH}',"
            "member='ActionInvoked'",
            f"type='signal',interface='{NOTIFY_IFACE}',path='{NOTIFY_PATH}',"
            "member='NotificationClosed'",
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
            f"member='NameOwnerChanged',arg0='{NOTIFY_NAME}'",
        ]
        self._started = False

    async def start(self) -> None:
        """Find the notification server (D-Bus-activating it when it is activatable) and check
        that it shows actions.

        :raises AgentError: no notification server, or one without the ``actions`` capability
        """
        self.bus.add_message_handler(self._on_message)
        self._started = True
        try:
            for rule in self._rules:
                await _call(self.bus, **_DBUS, member="AddMatch", signature="s", body=[rule])
            self._owner = await _name_owner(self.bus, NOTIFY_NAME, activate=True)
            if self._owner is None:
                raise AgentError(f"no notification server on the bus ({NOTIFY_NAME} has no "
                                 "owner and cannot be activated)")
            reply = await _call(self.bus, destination=self._owner, path=NOTIFY_PATH,
                                interface=NOTIFY_IFACE, member="GetCapabilities")
            capabilities = reply.body[0]
            if "actions" not in capabilities:
                raise AgentError(f"the notification server ({self._owner}) cannot show buttons "
                                 "(no 'actions' capability)")
            self._markup = "body-markup" in capabilities
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every open notification (pending asks answer ``undetermined``) and stop
        listening."""
        for note in list(self._notes.values()):
            self._settle(note, UNDETERMINED)
            await self._close_note(note)
        if not self._started:
            return
        self._started = False
        self.bus.remove_message_handler(self._on_message)
        if self.bus.connected:
            for rule in self._rules:
                try:
                    await _call(self.bus, **_DBUS, member="RemoveMatch", signature="s",
                                body=[rule])
                except (AgentError, OSError, EOFError) as exc:
                    logger.debug("RemoveMatch: %s", exc)

    async def ask(self, request_id: str, app_id: str, info: dict) -> str:
        """See :meth:`Prompter.ask`: show a notification and wait for its outcome.

        :raises AgentError: when ``Notify`` fails (answered ``undetermined`` by the agent)
        """
        if self._owner is None:
            raise AgentError(f"no notification server on the bus ({NOTIFY_NAME} has no owner)")
        note = _Note(request_id, asyncio.get_running_loop().create_future())
        self._notes[request_id] = note
        name, details = describe(app_id, info)
        body = _markup_escape(details) if self._markup else details
        hints = {"urgency": Variant("y", 2), "resident": Variant("b", True)}
        notify = asyncio.ensure_future(_call(
            self.bus, destination=self._owner, path=NOTIFY_PATH, interface=NOTIFY_IFACE,
            member="Notify", signature="susssasa{sv}i",
            body=[self.app_name, 0, self.ICON, f"Allow \"{name}\" to use the microphone?", body,
                  self.ACTIONS, hints, 0]))
        try:
            self._notifying += 1
            try:
                # Shielded: when this task is cancelled (Cancel, shutdown) before Notify answered,
                # the notification is still shown, and must be closed once its id is known.
                reply = await asyncio.shield(notify)
            except asyncio.CancelledError:
                notify.add_done_callback(self._close_when_shown)
                raise
            finally:
                self._notifying -= 1
            note.id = reply.body[0]
            early = self._early.pop(note.id, None)
            if not self._notifying:
                self._early.clear()
            if note.future.done():  # withdrawn while Notify was on its way
                await self._close_note(note)
                return UNDETERMINED
            self._by_id[note.id] = note
            if early is not None:
                self._on_outcome(note, *early)
            return await note.future
        finally:
            self._notes.pop(request_id, None)
            self._by_id.pop(note.id, None)
            if note.open and note.id:
                # answered (resident notifications stay after an action) or cancelled task
                note.open = False
                self._send_close(note.id)

    async def cancel(self, request_id: str) -> None:
        """See :meth:`Prompter.cancel`: ``CloseNotification`` for its notification."""
        note = self._notes.get(request_id)
        if note is None:
            return
        self._settle(note, UNDETERMINED)
        await self._close_note(note)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _settle(note: _Note, decision: str) -> None:
        if not note.future.done():
            note.future.set_result(decision)

    async def _close_note(self, note: _Note) -> None:
        if not (note.open and note.id and self._owner and self.bus.connected):
            return
        note.open = False
        try:
            await _call(self.bus, destination=self._owner, path=NOTIFY_PATH,
                        interface=NOTIFY_IFACE, member="CloseNotification", signature="u",
                        body=[note.id])
        except (AgentError, OSError, EOFError) as exc:
            logger.debug("CloseNotification(%d): %s", note.id, exc)

    def _send_close(self, notification_id: int) -> None:
        """CloseNotification without waiting (from a ``finally`` that may be cancelled)."""
        if self.bus.connected and self._owner:
            sent = self.bus.send(Message(destination=self._owner, path=NOTIFY_PATH,
                                         interface=NOTIFY_IFACE, member="CloseNotification",
                                         signature="u", body=[notification_id],
                                         flags=MessageFlag.NO_REPLY_EXPECTED))
            sent.add_done_callback(lambda f: f.cancelled() or f.exception())  # no GC warning

    def _close_when_shown(self, notify: asyncio.Future) -> None:
        """Done callback of a Notify whose ask was cancelled: close what it showed."""
        if not notify.cancelled() and notify.exception() is None:
            self._send_close(notify.result().body[0])

    def _on_outcome(self, note: _Note, decision: str, closed: bool) -> None:
        if closed:
            note.open = False
        self._settle(note, decision)

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return None
        if (msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus"
                and msg.signature == "sss" and msg.body[0] == NOTIFY_NAME):
            self._owner_changed(msg.body[1], msg.body[2])
            return None
        if msg.interface != NOTIFY_IFACE or msg.path != NOTIFY_PATH:
            return None
        if self._owner is None or msg.sender != self._owner:
            logger.debug("%s from %s ignored: %s is owned by %s", msg.member, msg.sender,
                         NOTIFY_NAME, self._owner)
            return None
        if msg.member == "ActionInvoked" and msg.signature == "us":
            outcome = {"allow": GRANTED, "deny": DENIED}.get(msg.body[1])
            if outcome is None:  # "default" (a click on the body) and the like
                return None
            event = (outcome, False)
        elif msg.member == "NotificationClosed" and msg.signature == "uu":
            event = (UNDETERMINED, True)
        else:
            return None
        note = self._by_id.get(msg.body[0])
        if note is not None:
            self._on_outcome(note, *event)
        elif self._notifying:
            self._early.setdefault(msg.body[0], event)
        return None

    def _owner_changed(self, old: str, new: str) -> None:
        if old and old == self._owner:
            # the server left (or was replaced): its notifications are gone with it
            logger.warning("the notification server %s left the bus", old)
            for note in list(self._notes.values()):
                note.open = False
                self._settle(note, UNDETERMINED)
        self._owner = new or None


# -- registration ------------------------------------------------------------------------------

async def _raw_call(bus: MessageBus, *, destination: str, path: str, interface: str,
                    member: str, signature: str = "", body: list | None = None,
                    timeout: float = CALL_TIMEOUT) -> Message:
    """A method call; its reply, error replies included. A timeout or a lost connection raise
    :class:`AgentError`."""
    # asyncio.wait, not wait_for: on Python < 3.12 wait_for loses a cancellation that arrives
    # as the reply does (Ref: https://github.com/python/cpython/issues/86296), and the agent
    # would keep running after its task was cancelled.
    reply = asyncio.ensure_future(bus.call(Message(
        destination=destination, path=path, interface=interface, member=member,
        signature=signature, body=body or [])))
    try:
        await asyncio.wait({reply}, timeout=timeout)
    finally:
        if not reply.done():
            reply.cancel()
    if reply.cancelled():
        raise AgentError(f"{destination} did not answer {member} within {timeout:g} s")
    try:
        return reply.result()
    except (EOFError, ConnectionError, OSError) as exc:
        raise AgentError(f"the bus connection is gone: {exc}") from None


def _error_text(reply: Message) -> str:
    return str(reply.body[0]) if reply.body else ""


async def _call(bus: MessageBus, **call: Any) -> Message:
    """:func:`_raw_call`, an error reply raising :class:`AgentError` with its ``dbus_name``."""
    reply = await _raw_call(bus, **call)
    if reply.message_type == MessageType.ERROR:
        raise AgentError(f"{call['member']} failed: {reply.error_name}: {_error_text(reply)}",
                         reply.error_name or "")
    return reply


async def _name_owner(bus: MessageBus, name: str, activate: bool = False) -> str | None:
    """The unique name owning ``name``; None when nobody does (after trying D-Bus activation
    with ``activate``)."""
    reply = await _raw_call(bus, **_DBUS, member="GetNameOwner", signature="s", body=[name])
    if reply.message_type == MessageType.ERROR and reply.error_name in _NO_OWNER and activate:
        started = await _raw_call(bus, **_DBUS, member="StartServiceByName", signature="su",
                                  body=[name, 0])
        if started.message_type == MessageType.ERROR:
            logger.debug("activating %s: %s: %s", name, started.error_name,
                         _error_text(started))
            return None
        reply = await _raw_call(bus, **_DBUS, member="GetNameOwner", signature="s", body=[name])
    if reply.message_type == MessageType.ERROR:
        if reply.error_name in _NO_OWNER:
            return None
        raise AgentError(f"GetNameOwner({name}) failed: {reply.error_name}: "
                         f"{_error_text(reply)}", reply.error_name or "")
    return reply.body[0]


class _Registration:
    """The agent's side of the registration with one daemon after another."""

    def __init__(self, bus: MessageBus, interface: PermissionAgentInterface, path: str):
        self.bus = bus
        self.interface = interface
        self.path = path
        self.owner: str | None = None  # the daemon allowed to call us (registered or about to)
        self.registered = False
        self.latest: str | None = None  # the daemon name's latest owner, from NameOwnerChanged
        self.changed = asyncio.Event()
        self.rule = ("type='signal',sender='org.freedesktop.DBus',"
                     "interface='org.freedesktop.DBus',member='NameOwnerChanged',"
                     f"arg0='{MANAGER_NAME}'")

    def on_message(self, msg: Message) -> Message | None:
        if msg.message_type == MessageType.SIGNAL:
            if (msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus"
                    and msg.signature == "sss" and msg.body[0] == MANAGER_NAME):
                self.latest = msg.body[2] or None
                self.changed.set()
            return None
        if (msg.message_type == MessageType.METHOD_CALL and msg.path == self.path
                and msg.interface not in _OPEN_IFACES
                and (self.owner is None or msg.sender != self.owner)):
            logger.warning("call %s from %s refused: only audiopolicyd (%s) may ask", msg.member,
                           msg.sender, self.owner or "not on the bus")
            return Message.new_error(msg, _ACCESS_DENIED,
                                     f"only {MANAGER_NAME} may call the permission agent")
        return None

    async def register(self, owner: str) -> None:
        # Both before the call: the daemon may ask as soon as it registered us, and a task
        # cancelled while waiting for the answer must still unregister.
        self.owner = owner
        self.registered = True
        reply = await _raw_call(self.bus, destination=owner, path=MANAGER_PATH,
                                interface=MANAGER_IFACE, member="RegisterPermissionAgent",
                                signature="o", body=[self.path])
        if reply.message_type == MessageType.ERROR:
            self.owner = None
            self.registered = False
            if reply.error_name in _NO_OWNER:
                raise AgentError(f"audiopolicyd is not running ({MANAGER_NAME} has no owner on "
                                 "this bus)", reply.error_name)
            raise AgentError(f"audiopolicyd refused the agent: {reply.error_name}: "
                             f"{_error_text(reply)}", reply.error_name or "")
        logger.info("registered as the microphone permission agent at %s with %s", self.path,
                    owner)

    async def unregister(self) -> None:
        if not (self.registered and self.owner and self.bus.connected):
            return
        self.registered = False
        try:
            await _call(self.bus, destination=self.owner, path=MANAGER_PATH,
                        interface=MANAGER_IFACE, member="UnregisterPermissionAgent",
                        signature="o", body=[self.path], timeout=5.0)
        except AgentError as exc:
            logger.debug("UnregisterPermissionAgent: %s", exc)

    async def daemon_left(self) -> None:
        logger.warning("audiopolicyd (%s) left the bus; waiting for it to come back", self.owner)
        self.registered = False
        self.owner = None
        await self.interface.withdraw_all()


# Tasks watching a bus for its disconnection, kept until it disconnects: cancelling one would
# cancel the bus's own disconnect future, and other code may be waiting on it.
_watches: set[asyncio.Task] = set()


async def run_agent(bus: MessageBus, prompter: Prompter, path: str = AGENT_PATH) -> None:
    """Be the daemon's microphone permission agent until told to stop.

    Starts the prompter, exports :class:`PermissionAgentInterface` at ``path``, calls
    ``RegisterPermissionAgent(path)`` on the daemon (D-Bus-activating it when it is
    activatable) and answers its requests, refusing calls from anyone else with
    ``org.freedesktop.DBus.Error.AccessDenied``. When the daemon leaves the bus (restart), its
    pending requests are withdrawn and the agent registers again with the next owner of
    ``io.github.audiopolicyd.AudioPolicy1`` once it appears, as BlueZ agents do after
    ``bluetoothd`` restarts.

    Returns when the prompter ends (end of input) or the bus is disconnected by its owner;
    cancelling the task also stops it. On the way out it calls
    ``UnregisterPermissionAgent(path)`` if still connected and registered, unexports the object
    and closes the prompter.

    :param bus: a connection to the bus the daemon is on (the session bus in user mode); not
        closed here
    :param prompter: how the user is asked; :func:`run_agent` calls its ``start`` and ``close``
    :param path: the object path to export the agent at
    :raises AgentError: the prompter cannot start; the daemon is not on the bus; the daemon
        refused the registration (``dbus_name``: ``...Error.AgentExists``, ``...Error.NotAllowed``,
        or ``org.freedesktop.DBus.Error.UnknownMethod`` from a daemon without agents), also when
        registering again after a restart; the bus connection was lost
    """
    await prompter.start()
    interface = PermissionAgentInterface(prompter)
    reg = _Registration(bus, interface, path)
    disconnected = asyncio.ensure_future(bus.wait_for_disconnect())
    _watches.add(disconnected)
    disconnected.add_done_callback(_watches.discard)
    waiters: list[asyncio.Task] = []
    try:
        bus.add_message_handler(reg.on_message)
        bus.export(path, interface)
        await _call(bus, **_DBUS, member="AddMatch", signature="s", body=[reg.rule])
        owner = await _name_owner(bus, MANAGER_NAME, activate=True)
        if owner is None:
            raise AgentError(f"audiopolicyd is not running ({MANAGER_NAME} has no owner on this "
                             "bus)")
        await reg.register(owner)

        ended = asyncio.ensure_future(prompter.wait_ended())
        waiters.append(ended)
        while True:
            changed = asyncio.ensure_future(reg.changed.wait())
            waiters.append(changed)
            await asyncio.wait({disconnected, ended, changed}, return_when=asyncio.FIRST_COMPLETED)
            if disconnected.done():
                reg.registered = False
                error = None if disconnected.cancelled() else disconnected.exception()
                if error is not None:
                    raise AgentError(f"the bus connection was lost: {error}")
                logger.info("the bus connection was closed; the agent stops")
                return
            if ended.done():
                logger.info("the prompter ended; the agent stops")
                return
            reg.changed.clear()
            if reg.owner is not None and reg.latest != reg.owner:
                await reg.daemon_left()
            if reg.latest is not None and reg.owner is None:
                try:
                    await reg.register(reg.latest)
                except AgentError as exc:
                    if exc.dbus_name not in _NO_OWNER:
                        raise
                    # gone again before it answered: wait for the next owner
                    logger.warning("audiopolicyd left again before the agent registered")
    except AgentError:
        # dbus-fast fails the calls in flight before it resolves the disconnect future, in the
        # same step: a call that failed because the bus's owner closed it is not an error.
        if (disconnected.done() and not disconnected.cancelled()
                and disconnected.exception() is None):
            logger.info("the bus connection was closed; the agent stops")
            return
        raise
    finally:
        for task in waiters:
            task.cancel()
        try:
            await reg.unregister()
        finally:
            bus.remove_message_handler(reg.on_message)
            bus.unexport(path, interface)
            if bus.connected:
                try:
                    await _call(bus, **_DBUS, member="RemoveMatch", signature="s",
                                body=[reg.rule], timeout=5.0)
                except AgentError as exc:
                    logger.debug("RemoveMatch: %s", exc)
            await prompter.close()


async def main(bus_address: str | None, notify: bool, inp: Any = None,
               out: TextIO | None = None) -> int:
    """``audiopolicyctl agent [--notify]``: run an agent on the session bus until end of input
    (terminal) or until stopped, as ``pkttyagent`` (polkit) and ``bluetoothctl``'s ``agent on``
    (BlueZ) do.

    :param bus_address: a D-Bus address; None: the session bus
    :param notify: ask with desktop notifications (:class:`NotificationPrompter`) instead of on
        the terminal (:class:`TerminalPrompter`)
    :param inp: the terminal prompter's input (default stdin)
    :param out: the terminal prompter's output (default stdout)
    :returns: exit code: 0 the agent ended normally, 1 it could not run (one line on stderr,
        ``audiopolicyctl agent: <why>``)
    """
    try:
        bus = await MessageBus(bus_address=bus_address, bus_type=BusType.SESSION).connect()
    except Exception as exc:
        print(f"audiopolicyctl agent: cannot connect to the session bus: {exc}", file=sys.stderr)
        return 1
    try:
        prompter: Prompter = NotificationPrompter(bus) if notify else TerminalPrompter(inp, out)
        await run_agent(bus, prompter)
        return 0
    except AgentError as exc:
        print(f"audiopolicyctl agent: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        if bus.connected:
            bus.disconnect()
            try:
                await bus.wait_for_disconnect()
            except Exception:
                pass


__all__ = [
    "AGENT_IFACE", "AGENT_PATH", "AgentError", "CALL_TIMEOUT", "DECISIONS", "DENIED",
    "ERROR_PREFIX", "GRANTED", "MANAGER_IFACE", "MANAGER_NAME", "MANAGER_PATH",
    "NOTIFY_IFACE", "NOTIFY_NAME", "NOTIFY_PATH", "NotificationPrompter",
    "PermissionAgentInterface", "Prompter", "TerminalPrompter", "UNDETERMINED", "describe",
    "main", "run_agent",
]
