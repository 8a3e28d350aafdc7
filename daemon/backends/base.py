"""The backend contract: what the daemon needs from an audio server, nothing more.

One implementation exists (:mod:`audiopolicyd.backends.pulse`, the PulseAudio protocol, which
drives PulseAudio and PipeWire through pipewire-pulse); the contract keeps the engine and the
runtime free of any server library. Plugins never see a backend.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import AsyncIterator, Sequence

from ..model import Device, Stream, StreamKind


class ServerGone(Exception):
    """The audio server went away (or refused us); every stream and device is gone with it."""


@dataclass(frozen=True)
class ServerInfo:
    """Who we talk to: ``server_name`` as the server reports it (``pulseaudio``,
    ``PulseAudio (on PipeWire 0.3.65)``), its version, the default sink and source names, and
    ``cookie``: the server's random number for this run of it (``pa_server_info.cookie``; a
    restarted server has another), 0 when unknown."""

    server_name: str
    server_version: str
    default_sink: str = ""
    default_source: str = ""
    cookie: int = 0


@dataclass(frozen=True)
class Module:
    """A module loaded in the server (``pactl list modules``).

    :param index: the server's index (pipewire-pulse reuses the index of an unloaded module)
    :param name: ``module-loopback``, ``module-null-sink``...
    :param argument: its arguments as loaded (``source=mic sink=speaker``), '' for none
    """

    index: int
    name: str
    argument: str = ""


@dataclass(frozen=True)
class Event:
    """A change in the audio graph.

    :param type: ``new`` | ``change`` | ``remove``
    :param facility: ``sink-input`` | ``source-output`` | ``sink`` | ``source`` | ``module`` |
        ``server``
    :param index: the object's index
    """

    type: str
    facility: str
    index: int


class Backend(abc.ABC):
    """An audio server connection. Every method may raise :class:`ServerGone`.

    :ivar unreadable: streams the server cannot describe without breaking the connection, by
        kind: :meth:`streams` and :meth:`stream` skip them while they exist
    """

    unreadable: dict[StreamKind, set[int]]

    @abc.abstractmethod
    async def connect(self) -> ServerInfo:
        """Connect (once; call :meth:`close` before connecting again).

        :raises ServerGone: when no server answers
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Drop the connection; safe to call when not connected."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[Event]:
        """Graph changes as they happen (subscription, never polling): every change of a
        stream, a new or removed device, module or server change (a device's ``change`` events
        are not delivered: nothing uses them yet).

        Ends by raising :class:`ServerGone` when the server goes away.
        """

    @abc.abstractmethod
    async def streams(self) -> list[Stream]:
        """Every sink-input and source-output now, but the :attr:`unreadable` ones."""

    @abc.abstractmethod
    async def devices(self) -> list[Device]:
        """Every sink and source now."""

    @abc.abstractmethod
    async def modules(self) -> list[Module]:
        """Every module loaded in the server now."""

    @abc.abstractmethod
    async def stream(self, kind: StreamKind, index: int) -> Stream | None:
        """One stream, or None when it no longer exists."""

    @abc.abstractmethod
    async def set_volume(self, kind: StreamKind, index: int, volume: Sequence[int]) -> None:
        """Set a stream's raw per-channel volume (``pa_volume_t``, 65536 = 100 %).

        A stream that vanished meanwhile is not an error.
        """

    @abc.abstractmethod
    async def set_mute(self, kind: StreamKind, index: int, mute: bool) -> None:
        """Set a stream's mute flag. A stream that vanished meanwhile is not an error."""

    @abc.abstractmethod
    async def kill(self, kind: StreamKind, index: int) -> None:
        """End a stream for good: the server disconnects it from its client (libpulse's
        ``pa_context_kill_source_output``, as ``pactl kill-source-output``; the client sees
        its stream fail, ``parecord`` exits with status 1). Verified on PulseAudio 16 and
        pipewire-pulse 0.3.65. The daemon kills microphone streams that fight the permission
        gate (:mod:`audiopolicyd.microphone.gate`).

        A stream that vanished meanwhile is not an error.

        :raises ValueError: for a sink-input (the daemon kills only source-outputs; pulsectl
            declares no ``pa_context_kill_sink_input``)
        """
