"""Caller-aware dispatch: D-Bus methods that are told who calls, each declared once.

dbus-fast's method handlers do not see the sender. The methods whose caller matters
(``CreateSession``, the Session methods, the microphone permission calls) are declared with
:func:`caller_method`: one definition gives dbus-fast the member's name and signature (so
introspection shows it, frozen in ``docs/dbus/``) and gives :class:`CallerDispatch` the
implementation, which it calls with a :class:`BusCaller` before dbus-fast would. A call of a
wrong signature is left to dbus-fast, which answers ``org.freedesktop.DBus.Error.UnknownMethod``.

An implementation may be a plain function (answered at once, in order with the signals it
emits) or a coroutine function (answered when it returns). Whatever it raises becomes a named
error: a leaf of :mod:`audiopolicyd.errors` as its D-Bus name, any other exception as
``Error.Internal`` (logged), never a traceback.

(No ``from __future__ import annotations`` here: dbus-fast reads D-Bus signatures from the
annotations at run time.)
"""

import asyncio
import functools
import inspect
import logging
import os
from typing import Any, Callable

from dbus_fast import DBusError, Message, MessageType, SignatureTree
from dbus_fast.service import ServiceInterface, method

from ..errors import AudioPolicyError, Internal, InvalidArgument
from ..identity import Identity
from ..names import BUS_DAEMON, ERROR_PREFIX

logger = logging.getLogger(__name__)

#: Attribute of a declared method: ``(D-Bus name, in signature, out signature, implementation)``.
_CALLER_AWARE = "__audiopolicyd_caller_aware__"


def caller_method(name: str) -> Callable[[Callable], Callable]:
    """Declare a D-Bus method whose implementation receives the caller.

    The implementation is ``def impl(self, caller, *arguments) -> result`` (or ``async def``),
    its arguments and result annotated with D-Bus signatures as dbus-fast's ``@method`` wants
    them; ``caller`` (a :class:`BusCaller`) is left out of the D-Bus signature.

    :param name: the member's D-Bus name (``CreateSession``)
    :returns: a decorator giving a dbus-fast method whose own body only answers
        ``Error.Internal`` (reached only before :class:`CallerDispatch` is installed: the
        dispatcher answers first)
    """

    def decorate(impl: Callable) -> Callable:
        signature = inspect.signature(impl)
        params = list(signature.parameters.values())

        def declared(self, *args):  # only reached before the dispatcher is installed
            raise DBusError(ERROR_PREFIX + Internal.name,
                            f"{name} is answered by the caller-aware dispatcher")

        # dbus-fast sees (self, *arguments): the caller is no D-Bus argument
        declared.__signature__ = signature.replace(parameters=[params[0], *params[2:]])
        declared.__module__ = impl.__module__
        declared.__name__ = declared.__qualname__ = impl.__name__
        declared = method(name=name)(declared)
        # the signatures as dbus-fast parsed them for its own dispatch and introspection (its
        # _Method record, read once here: a dbus-fast release that renames it fails at import)
        parsed = declared.__dict__["__DBUS_METHOD"]
        setattr(declared, _CALLER_AWARE, (name, parsed.in_signature, parsed.out_signature, impl))
        return declared

    return decorate


@functools.cache
def caller_methods(cls: type) -> dict[str, tuple[str, str, Callable]]:
    """The caller-aware methods of an interface class: ``{D-Bus name: (in signature, out
    signature, implementation)}``."""
    out = {}
    for attr in dir(cls):
        spec = getattr(getattr(cls, attr), _CALLER_AWARE, None)
        if spec is not None:
            out[spec[0]] = spec[1:]
    return out


def guarded(func: Callable) -> Callable:
    """Turn what a plain dbus-fast method raises into a named D-Bus error: a leaf of
    :mod:`audiopolicyd.errors` as its name, anything else as ``Error.Internal`` (logged)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DBusError:
            raise
        except AudioPolicyError as exc:
            raise DBusError(exc.dbus_name, exc.message) from None
        except Exception as exc:
            logger.exception("D-Bus method %s failed", func.__name__)
            raise DBusError(ERROR_PREFIX + Internal.name, f"{type(exc).__name__}: {exc}") from None

    return wrapper


class BusCaller:
    """The sender of a method call, as the bus knows it.

    :param bus: the daemon's connection
    :param name: the sender's unique name
    :param identify: ``(pid, uid) -> Identity`` (:func:`audiopolicyd.identity.identify`)
    """

    def __init__(self, bus, name: str,
                 identify: Callable[[int | None, int | None], Identity]):
        self.bus = bus
        self.name = name
        self._identify = identify

    async def identity(self) -> Identity:
        """The caller's identity, from the bus's credentials for its connection
        (``GetConnectionCredentials``), never from arguments."""
        reply = await self.bus.call(Message(**BUS_DAEMON, member="GetConnectionCredentials",
                                            signature="s", body=[self.name]))
        creds = reply.body[0] if reply.message_type == MessageType.METHOD_RETURN else {}
        pid = creds["ProcessID"].value if "ProcessID" in creds else None
        uid = creds["UnixUserID"].value if "UnixUserID" in creds else None
        return self._identify(pid, uid)


#: ``(path, sender) -> the interface object that answers there``, or None when it is not ours.
Resolver = Callable[[str, str], ServiceInterface | None]


class CallerDispatch:
    """Answers the caller-aware methods (:func:`caller_method`) of the exported interfaces.

    :param bus: the daemon's connection
    :param identify: ``(pid, uid) -> Identity`` for :class:`BusCaller`
    """

    def __init__(self, bus, identify: Callable):
        self.bus = bus
        self.identify = identify
        self._routes: dict[str, tuple[type, Resolver]] = {}
        self._tasks: set[asyncio.Task] = set()

    def route(self, interface: str, cls: type, resolve: Resolver) -> None:
        """Answer *interface*'s caller-aware methods on the object *resolve* gives.

        :param resolve: may raise a leaf of :mod:`audiopolicyd.errors` (the session layer's
            ``NoSuchSession``, ``NotOwner``), answered as that error
        """
        self._routes[interface] = (cls, resolve)

    def handle(self, msg: Message) -> Any:
        """The bus's message handler: a reply, True (answered later) or None (not ours)."""
        route = self._routes.get(msg.interface or "")
        if route is None:
            return None
        spec = caller_methods(route[0]).get(msg.member)
        if spec is None or spec[0] != msg.signature:
            return None
        _, out_sig, impl = spec
        try:
            target = route[1](msg.path or "", msg.sender)
            if target is None:
                return None
            caller = BusCaller(self.bus, msg.sender, self.identify)
            body = _with_fds(msg)
            if inspect.iscoroutinefunction(impl):
                self.spawn(self._answer_later(msg, out_sig, impl(target, caller, *body)))
                return True
            return self._reply(msg, out_sig, impl(target, caller, *body))
        except Exception as exc:
            return self._error(msg, exc)

    def spawn(self, coro) -> None:
        """Run *coro* as a task kept until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_later(self, msg: Message, out_sig: str, coro) -> None:
        try:
            reply = self._reply(msg, out_sig, await coro)
        except Exception as exc:
            reply = self._error(msg, exc)
        if self.bus.connected:
            self.bus.send(reply)

    @staticmethod
    def _reply(msg: Message, out_sig: str, result: Any) -> Message:
        return Message.new_method_return(msg, out_sig, [result] if out_sig else [])

    @staticmethod
    def _error(msg: Message, exc: Exception) -> Message:
        if isinstance(exc, AudioPolicyError):
            return Message.new_error(msg, exc.dbus_name, exc.message)
        if isinstance(exc, DBusError):
            return Message.new_error(msg, exc.type, exc.text)
        logger.error("%s failed", msg.member, exc_info=exc)
        return Message.new_error(msg, ERROR_PREFIX + Internal.name, f"{type(exc).__name__}: {exc}")


def _with_fds(msg: Message) -> list:
    """*msg*'s arguments, each ``h`` (a file descriptor: an index into the message's
    descriptors on the wire) as a descriptor of the implementation's own (a duplicate, which it
    closes; the message's own are closed by :func:`close_fds`). A missing one is
    ``Error.InvalidArgument``."""
    if "h" not in msg.signature:
        return msg.body
    body = list(msg.body)
    for i, kind in enumerate(SignatureTree(msg.signature).types):
        if kind.token == "h":
            index = body[i]
            if not isinstance(index, int) or not 0 <= index < len(msg.unix_fds or ()):
                raise InvalidArgument(f"{msg.member}: argument {i} names no file descriptor")
            body[i] = os.dup(msg.unix_fds[index])
    return body


def close_fds(msg: Message) -> None:
    """Close the file descriptors *msg* brought (every message's, after it is handled: a
    method that takes one works on a duplicate, :func:`_with_fds`); a client cannot make the
    daemon keep descriptors by sending them."""
    for fd in msg.unix_fds or ():
        try:
            os.close(fd)
        except OSError:
            pass
