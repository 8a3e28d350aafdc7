"""The agent's own calls: with a timeout, errors as :class:`~.prompter.AgentError`.

The agent calls the message bus, the daemon and the notification server; a call that does not
come back in time must not hang a prompt, so these wrap :meth:`MessageBus.call` with a timeout
(the client's :func:`audiopolicyd.client.call` waits as long as the bus does).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dbus_fast import Message, MessageType

from ..buswriter import MessageBus
from ..names import BUS_DAEMON
from ..names import NO_OWNER_ERRORS as _NO_OWNER
from .prompter import AgentError

logger = logging.getLogger(__name__)

#: How long a call waits for its answer by default, in s (libdbus's default method timeout).
CALL_TIMEOUT = 25.0


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
    reply = await _raw_call(bus, **BUS_DAEMON, member="GetNameOwner", signature="s", body=[name])
    if reply.message_type == MessageType.ERROR and reply.error_name in _NO_OWNER and activate:
        started = await _raw_call(bus, **BUS_DAEMON, member="StartServiceByName", signature="su",
                                  body=[name, 0])
        if started.message_type == MessageType.ERROR:
            logger.debug("activating %s: %s: %s", name, started.error_name,
                         _error_text(started))
            return None
        reply = await _raw_call(bus, **BUS_DAEMON, member="GetNameOwner", signature="s",
                                body=[name])
    if reply.message_type == MessageType.ERROR:
        if reply.error_name in _NO_OWNER:
            return None
        raise AgentError(f"GetNameOwner({name}) failed: {reply.error_name}: "
                         f"{_error_text(reply)}", reply.error_name or "")
    return reply.body[0]
