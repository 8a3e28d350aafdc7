"""The daemon's side of the prompt-agent protocol: calling a registered agent.

Implements :class:`audiopolicyd.microphone.broker.AgentCaller` over D-Bus: the agent's
``RequestRecordPermission`` and ``Cancel`` (``io.github.audiopolicyd.AudioPolicy1
.PermissionAgent``, implemented by :mod:`audiopolicyd.agents`). An agent is a client like any
other: its reply is checked against its bounds (:mod:`audiopolicyd.limits`) before the broker
sees it.
"""

from __future__ import annotations

import logging

from dbus_fast import Message, MessageType, Variant

from ..errors import InvalidArgument
from ..limits import AGENT_DETAILS_ITEMS, IDENTIFIER_CHARS, check_text, quote
from ..microphone.broker import Agent, AgentFailed
from ..names import AGENT_IFACE, GONE_ERRORS

logger = logging.getLogger(__name__)


class AgentClient:
    """Calls prompt agents on the daemon's connection.

    :param bus: the daemon's connection
    """

    def __init__(self, bus):
        self.bus = bus

    async def ask(self, agent: Agent, request_id: str, app_id: str, info: dict) -> str:
        """Call the agent's ``RequestRecordPermission``; its decision string.

        :param info: ``{key: bool | int | str-able}``, sent as ``a{sv}`` (b, u, s)
        :raises AgentFailed: on an error reply (``gone`` when its connection is), a reply of
            another signature or beyond its bounds
        """
        body_info = {k: Variant({bool: "b", int: "u"}.get(type(v), "s"),
                                v if isinstance(v, (bool, int)) else str(v))
                     for k, v in info.items()}
        try:
            reply = await self.bus.call(Message(
                destination=agent.owner, path=agent.path, interface=AGENT_IFACE,
                member="RequestRecordPermission", signature="ssa{sv}",
                body=[request_id, app_id, body_info]))
        except (OSError, EOFError) as exc:
            raise AgentFailed(str(exc), gone=True) from None
        if reply is None:
            raise AgentFailed("no reply", gone=True)
        if reply.message_type == MessageType.ERROR:
            detail = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise AgentFailed(f"{reply.error_name}: {quote(detail)}",
                              gone=reply.error_name in GONE_ERRORS)
        if reply.signature != "sa{sv}":
            raise AgentFailed(f"reply of signature {quote(reply.signature)}, not 'sa{{sv}}'")
        try:
            check_text("the agent's decision", reply.body[0], IDENTIFIER_CHARS)
            if len(reply.body[1]) > AGENT_DETAILS_ITEMS:
                raise InvalidArgument(f"the agent's details has {len(reply.body[1])} entries; "
                                      f"the limit is {AGENT_DETAILS_ITEMS}")
        except InvalidArgument as exc:
            raise AgentFailed(str(exc)) from None
        return reply.body[0]

    def cancel(self, agent: Agent, request_id: str) -> None:
        """Send the agent ``Cancel(request_id)`` (its reply is not awaited)."""
        if self.bus.connected:
            self.bus.send(Message(destination=agent.owner, path=agent.path,
                                  interface=AGENT_IFACE, member="Cancel", signature="s",
                                  body=[request_id]))
