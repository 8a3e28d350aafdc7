"""``audiopolicyd.client``: AVAudioSession for Python apps on Linux (asyncio, dbus-fast).

An app declares what its audio is for (a *category*, a *mode*, *options*), activates its
session while it plays or records, and is told when another app interrupts it and whether to
resume afterwards. The daemon applies the policy to every stream of the app's process tree
(the process that created the session and its children), so a player that plays through a
``paplay`` child is covered too. The vocabulary is Apple's AVAudioSession; see
``docs/dbus-api.md`` for the D-Bus interface underneath.

Example: a player that pauses when a call comes in and resumes when told to::

    import asyncio
    from audiopolicyd.client import AudioSession, InsufficientPriority

    async def main():
        async with AudioSession.create(name="My player") as session:
            await session.set_category("playback")
            session.on("InterruptionBegan", lambda info: player.pause())
            session.on("InterruptionEnded",
                       lambda info: info["should_resume"] and player.resume())
            try:
                await session.set_active(True)
            except InsufficientPriority as exc:  # a call is going on
                print(f"not now: {exc}")
                return
            player.play()
            await player.finished()
            await session.set_active(False, options=["notifyOthersOnDeactivation"])

    asyncio.run(main())

Or as a stream of events instead of callbacks::

    with session.events() as events:
        await session.set_active(True)
        async for name, info in events:
            if name == "InterruptionBegan":
                ...

Rules worth knowing:

* A session belongs to the D-Bus connection that created it. When the connection closes (the
  ``async with`` block ends, the process exits or crashes), the daemon deactivates and removes
  the session and undoes everything it caused.
* Activation can be refused: :class:`InsufficientPriority` (or :class:`CannotInterruptOthers`
  for a mixable session) while a session of higher priority (a call) is active. Pass
  ``options=["delayIfBusy"]`` to be activated as soon as possible instead: ``set_active``
  returns ``"delayed"``, and :meth:`AudioSession.wait_until_active` (or the
  ``DidBecomeActive`` event) tells when it happened.
* After an interruption the session is inactive. ``InterruptionEnded`` is always delivered;
  resume (call ``set_active(True)`` again) only when its ``should_resume`` is true.
* Deactivate with ``options=["notifyOthersOnDeactivation"]`` when you are done, so the apps you
  interrupted are told they may resume.
* The daemon routes the session's streams (the policy of its category); the app sees where
  (:meth:`AudioSession.current_route`, Apple's port types), is told why it changed (the
  ``RouteChanged`` event: ``reason`` ``newDeviceAvailable``, ``oldDeviceUnavailable``,
  ``override``..., and ``previous_route``), may prefer one of
  :meth:`AudioSession.available_inputs` (:meth:`AudioSession.set_preferred_input`) and, in
  ``playAndRecord``, put a call on the speaker
  (:meth:`AudioSession.override_output_audio_port`).

Every refused call raises a leaf of :mod:`audiopolicyd.errors` named as the D-Bus error
(``io.github.audiopolicyd.AudioPolicy1.Error.InsufficientPriority`` raises
:class:`InsufficientPriority`), with ``.name`` and the daemon's message; all of them are
:class:`AudioSessionError` (:class:`audiopolicyd.errors.AudioPolicyError` under the name this
client has always given it).

The package: :mod:`.session` (:class:`AudioSession`, its events), :mod:`.routes` (its route
calls), :mod:`.bus` (connecting, calling, :class:`DaemonClient` for tools). It is the
project's only D-Bus client code: ``audiopolicyctl`` and the prompt agents use it too.
"""

from __future__ import annotations

import logging

from ..errors import (
    AudioPolicyError, CannotInterruptOthers, DaemonNotRunning, IncompatibleCategoryOption,
    InputUnavailable, InsufficientPriority, Internal, NoSuchSession, NotOwner, TooManySessions,
    UnknownCategory, UnknownMode, UnknownOption, UnknownPortOverride,
)
from ..names import BUS_NAME, ERROR_PREFIX, MANAGER_IFACE, OBJECT_PATH, SESSION_IFACE
from .bus import DaemonClient, call, connect, error_from_reply, plain
from .session import EVENTS, AudioSession

logger = logging.getLogger(__name__)

#: Every error of the daemon (the root of :mod:`audiopolicyd.errors`, by its client name).
AudioSessionError = AudioPolicyError

__all__ = [
    "BUS_NAME",
    "ERROR_PREFIX",
    "EVENTS",
    "MANAGER_IFACE",
    "OBJECT_PATH",
    "SESSION_IFACE",
    "AudioSession",
    "AudioSessionError",
    "CannotInterruptOthers",
    "DaemonClient",
    "DaemonNotRunning",
    "IncompatibleCategoryOption",
    "InputUnavailable",
    "InsufficientPriority",
    "Internal",
    "NoSuchSession",
    "NotOwner",
    "TooManySessions",
    "UnknownCategory",
    "UnknownMode",
    "UnknownOption",
    "UnknownPortOverride",
    "call",
    "connect",
    "error_from_reply",
    "plain",
]
