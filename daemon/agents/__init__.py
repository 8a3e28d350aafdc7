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

    from audiopolicyd.agents import Prompter, run_agent, GRANTED

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

The package, split by job: :mod:`.prompter` (the contract, the answers, :class:`AgentError`),
:mod:`.service` (the D-Bus object, the registration, :func:`run_agent`, :func:`main`),
:mod:`.terminal` (:class:`TerminalPrompter`), :mod:`.notify` (:class:`NotificationPrompter`).
Names and errors come from :mod:`audiopolicyd.names` and :mod:`audiopolicyd.errors`; the bus
connection from :mod:`audiopolicyd.client`.
"""

from __future__ import annotations

import logging

from ..names import AGENT_IFACE, AGENT_PATH, ERROR_PREFIX, MANAGER_IFACE
from ..names import BUS_NAME as MANAGER_NAME
from ..names import OBJECT_PATH as MANAGER_PATH
from .notify import NOTIFY_IFACE, NOTIFY_NAME, NOTIFY_PATH, NotificationPrompter
from .prompter import DECISIONS, DENIED, GRANTED, UNDETERMINED, AgentError, Prompter, describe
from .calls import CALL_TIMEOUT
from .service import PermissionAgentInterface, main, run_agent
from .terminal import TerminalPrompter

logger = logging.getLogger(__name__)

__all__ = [
    "AGENT_IFACE",
    "AGENT_PATH",
    "CALL_TIMEOUT",
    "DECISIONS",
    "DENIED",
    "ERROR_PREFIX",
    "GRANTED",
    "MANAGER_IFACE",
    "MANAGER_NAME",
    "MANAGER_PATH",
    "NOTIFY_IFACE",
    "NOTIFY_NAME",
    "NOTIFY_PATH",
    "UNDETERMINED",
    "AgentError",
    "NotificationPrompter",
    "PermissionAgentInterface",
    "Prompter",
    "TerminalPrompter",
    "describe",
    "main",
    "run_agent",
]
