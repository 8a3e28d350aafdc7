"""The prompt agent's contract: how the user is asked (:class:`Prompter`), the three answers,
and :class:`AgentError`. See :mod:`audiopolicyd.agents`."""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Any

from ..microphone.stores import Decision

logger = logging.getLogger(__name__)

#: The three answers, named as ``AVAudioApplication.recordPermission`` names them.
GRANTED, DENIED, UNDETERMINED = (d.value for d in
                                 (Decision.GRANTED, Decision.DENIED, Decision.UNDETERMINED))
DECISIONS = (GRANTED, DENIED, UNDETERMINED)


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


def _log_late_failure(task: asyncio.Task) -> None:
    """Done callback of a withdrawn ask: nobody awaits it any more, so log what it raised."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("a withdrawn request's prompt failed", exc_info=task.exception())


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
