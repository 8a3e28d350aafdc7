"""The daemon's errors, one tree for the daemon, the client, ``audiopolicyctl`` and the agents.

Every leaf carries its D-Bus error name, ``io.github.audiopolicyd.AudioPolicy1.Error.<Name>``
(:data:`~audiopolicyd.names.ERROR_PREFIX` + the class's ``name``). The daemon raises a leaf and
the D-Bus adapter (:mod:`audiopolicyd.dbus`) sends it as that named error, never a traceback;
the client (:mod:`audiopolicyd.client`) raises the same leaf for an error reply of that name
(:func:`from_dbus`). The names are frozen with the API (``docs/dbus/*.xml``,
``docs/dbus-api.md``). As httpx draws its exceptions::

    AudioPolicyError                   any refused call, or the daemon not reachable
    ├── InvalidArgument                an argument beyond its bound or of the wrong type
    │                                  (audiopolicyd.limits; also a ValueError)
    ├── NotAllowed                     the caller may not do this (sandboxed, another user,
    │                                  not the registered agent; a grant nobody vouches for)
    ├── NotSupported                   the daemon runs without that feature
    │                                  (--no-microphone-permission)
    ├── StoreFailed                    the permission store could not be written
    ├── AgentExists                    another connection's prompt agent is registered
    ├── NoSuchAgent                    the caller has no agent registered at that path
    ├── UnknownTarget                  Explain: no stream or session of that name
    ├── Internal                       the daemon failed unexpectedly (its log says why)
    ├── SessionError                   a refused session call (audiopolicyd.appsessions)
    │   ├── UnknownCategory            not a category, or no policy defines it
    │   ├── UnknownMode                not a mode
    │   ├── UnknownOption              not an option of that call
    │   ├── IncompatibleCategoryOption the category does not take that option
    │   ├── InsufficientPriority       a higher-priority session is active
    │   │                              (AVAudioSession's insufficientPriority)
    │   ├── CannotInterruptOthers      the same, for a mixable session
    │   │                              (AVAudioSession's cannotInterruptOthers)
    │   ├── TooManySessions            the connection holds as many sessions as allowed
    │   ├── NoSuchSession              the session was removed
    │   ├── NotOwner                   only the connection that created a session may
    │   │                              change it
    │   ├── UnknownPortOverride        OverrideOutputAudioPort: neither speaker nor none
    │   └── InputUnavailable           SetPreferredInput: no such port in AvailableInputs
    └── DaemonNotRunning               (client side) nobody owns the bus name, or no bus

An error reply whose name the tree does not know (a newer daemon's, or the bus's own,
``org.freedesktop.DBus.Error.UnknownMethod``) becomes an :class:`AudioPolicyError` whose
``name`` is the D-Bus name (the last component for the daemon's prefix).

Pure: no D-Bus, no I/O.
"""

from __future__ import annotations

import logging

from .names import BUS_NAME, ERROR_PREFIX, NO_OWNER_ERRORS

logger = logging.getLogger(__name__)


class AudioPolicyError(Exception):
    """A call refused by the daemon, or the daemon not reachable.

    ``str()`` is ``"<name>: <message>"``, so a program printing it says which error it got
    (the D-Bus error carries the message alone); but for :class:`InvalidArgument` raised by
    the bounds checks, whose message is quoted inside other messages.

    :param message: what went wrong, written for people
    :param dbus_name: the full D-Bus error name; default: the class's (:attr:`dbus_name`)
    :param named: whether ``str()`` starts with the name (default: the class's ``named``)
    :ivar name: the D-Bus error name's last component for the daemon's errors
        (``InsufficientPriority``), else the full D-Bus error name
    :ivar dbus_name: the full D-Bus error name
    :ivar message: the message
    """

    #: The D-Bus error name's last component (a class attribute on every leaf).
    name = "AudioPolicyError"
    named = True

    def __init__(self, message: str, dbus_name: str = "", *, named: bool | None = None):
        super().__init__(message)
        self.message = message
        if named is not None:
            self.named = named
        self.dbus_name = dbus_name or ERROR_PREFIX + self.name
        if type(self) is AudioPolicyError and dbus_name:
            self.name = (dbus_name[len(ERROR_PREFIX):] if dbus_name.startswith(ERROR_PREFIX)
                         else dbus_name)

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.named else self.message


class InvalidArgument(AudioPolicyError, ValueError):
    """A client's argument beyond its bound, or of the wrong type (:mod:`audiopolicyd.limits`);
    the message names the argument and its bound and quotes at most a prefix of the value."""
    name = "InvalidArgument"
    named = False


class NotAllowed(AudioPolicyError):
    """The caller may not do this: deciding microphone permission from a sandbox or as another
    user, or granting an app id nobody vouches for."""
    name = "NotAllowed"


class NotSupported(AudioPolicyError):
    """The daemon runs without the feature asked for (``--no-microphone-permission``)."""
    name = "NotSupported"


class StoreFailed(AudioPolicyError):
    """The permission store could not be written; nothing changed."""
    name = "StoreFailed"


class AgentExists(AudioPolicyError):
    """Another connection's prompt agent is registered (one agent at a time, as polkit)."""
    name = "AgentExists"


class NoSuchAgent(AudioPolicyError):
    """``UnregisterPermissionAgent``: the caller has no agent registered at that path."""
    name = "NoSuchAgent"


class UnknownTarget(AudioPolicyError):
    """``Explain``: no stream or session of that name."""
    name = "UnknownTarget"


class Internal(AudioPolicyError):
    """The daemon failed unexpectedly (its log says why)."""
    name = "Internal"


class SessionError(AudioPolicyError):
    """A refused session call (:mod:`audiopolicyd.appsessions`); the leaves say why."""
    name = "SessionError"


class UnknownCategory(SessionError):
    """``SetCategory``: not a category, or no policy defines it."""
    name = "UnknownCategory"


class UnknownMode(SessionError):
    """``SetCategory``: not a mode (a mode the category does not take falls back to
    ``default`` instead, as Apple does)."""
    name = "UnknownMode"


class UnknownOption(SessionError):
    """``SetCategory`` or ``SetActive``: not an option of that call."""
    name = "UnknownOption"


class IncompatibleCategoryOption(SessionError):
    """``SetCategory``: the category does not take that option (``duckOthers`` on
    ``record``...)."""
    name = "IncompatibleCategoryOption"


class InsufficientPriority(SessionError):
    """``SetActive(true)``: a higher-priority session is active (AVAudioSession's
    ``insufficientPriority``); ``delayIfBusy`` waits instead."""
    name = "InsufficientPriority"


class CannotInterruptOthers(SessionError):
    """``SetActive(true)`` of a mixable session while a higher-priority one is active
    (AVAudioSession's ``cannotInterruptOthers``)."""
    name = "CannotInterruptOthers"


class TooManySessions(SessionError):
    """``CreateSession``: this connection holds as many sessions as the daemon allows."""
    name = "TooManySessions"


class NoSuchSession(SessionError):
    """The session was removed (closed, or the daemon restarted)."""
    name = "NoSuchSession"


class NotOwner(SessionError):
    """Only the connection that created a session may change it."""
    name = "NotOwner"


class UnknownPortOverride(SessionError):
    """``OverrideOutputAudioPort``: the value is not one of Apple's ``AVAudioSession.
    PortOverride`` (``speaker``, ``none``)."""
    name = "UnknownPortOverride"


class InputUnavailable(SessionError):
    """``SetPreferredInput``: no port of that uid is among the session's ``AvailableInputs``
    now (Apple's ``setPreferredInput(_:)`` rejects a port not in ``availableInputs``)."""
    name = "InputUnavailable"


class DaemonNotRunning(AudioPolicyError):
    """Nobody owns ``io.github.audiopolicyd.AudioPolicy1`` on the bus, or no bus (raised by
    the client, never sent by the daemon)."""
    name = "DaemonNotRunning"


#: Every error the daemon sends, by its name's last component.
DAEMON_ERRORS: dict[str, type[AudioPolicyError]] = {
    cls.name: cls for cls in (
        InvalidArgument, NotAllowed, NotSupported, StoreFailed, AgentExists, NoSuchAgent,
        UnknownTarget, Internal, UnknownCategory, UnknownMode, UnknownOption,
        IncompatibleCategoryOption, InsufficientPriority, CannotInterruptOthers,
        TooManySessions, NoSuchSession, NotOwner, UnknownPortOverride, InputUnavailable)}


def from_dbus(dbus_name: str, message: str) -> AudioPolicyError:
    """The exception for a D-Bus error reply, as a client raises it.

    :param dbus_name: the reply's error name
    :param message: the reply's message (its first ``s`` argument; ``""`` without one)
    :returns: the leaf named as the error when the daemon defines it, :class:`DaemonNotRunning`
        when nobody owns the name (``org.freedesktop.DBus.Error.ServiceUnknown`` or
        ``NameHasNoOwner``), else :class:`AudioPolicyError` with ``name`` set from the D-Bus
        name; ``str()`` names the error
    """
    if dbus_name in NO_OWNER_ERRORS:
        return DaemonNotRunning(
            f"audiopolicyd is not running ({BUS_NAME} has no owner on this bus)", dbus_name)
    cls = DAEMON_ERRORS.get(dbus_name[len(ERROR_PREFIX):]) \
        if dbus_name.startswith(ERROR_PREFIX) else AudioPolicyError
    return (cls or AudioPolicyError)(message, dbus_name, named=True)


__all__ = [
    "DAEMON_ERRORS",
    "AgentExists",
    "AudioPolicyError",
    "CannotInterruptOthers",
    "DaemonNotRunning",
    "IncompatibleCategoryOption",
    "InputUnavailable",
    "InsufficientPriority",
    "Internal",
    "InvalidArgument",
    "NoSuchAgent",
    "NoSuchSession",
    "NotAllowed",
    "NotOwner",
    "NotSupported",
    "SessionError",
    "StoreFailed",
    "TooManySessions",
    "UnknownCategory",
    "UnknownMode",
    "UnknownOption",
    "UnknownPortOverride",
    "UnknownTarget",
    "from_dbus",
]
