"""The backend contract: what the daemon needs from an audio server, nothing more.

One implementation exists (:mod:`audiopolicyd.backends.pulse`, the PulseAudio protocol, which
drives PulseAudio and PipeWire through pipewire-pulse); a native PipeWire backend can come
later and say what it lacks in :attr:`Backend.capabilities`. The contract keeps the engine and
the runtime free of any server library: ids of streams, devices and cards are opaque strings
the backend mints (:attr:`Stream.id <audiopolicyd.model.Stream.id>`), and the server's rule of
what it remembers per stream is the backend's (:attr:`Stream.restore_key
<audiopolicyd.model.Stream.restore_key>`). Plugins never see a backend.

Errors (every method may raise them)::

    BackendError
     +-- ServerGone        the server went away or refused us: reconnect
     +-- Unsupported       this backend lacks the capability (see Capability)
     +-- NoSuchDevice      a device (or card) named in the call does not exist (any more)
     +-- ModuleLoadFailed  the server refused to load a module
     +-- CaptureFailed     the server ended a capture under way
     +-- ProfileUnavailable  a card has no such profile, or the server refused to switch to it
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import AsyncIterator, Sequence

from ..model import Card, Device, Stream, StreamKind

#: The sample format of :meth:`Backend.capture` blocks: signed 16-bit little-endian PCM,
#: channels interleaved (``s16le``, as ``parec --format=s16le``).
SAMPLE_FORMAT = "s16le"
#: Bytes per sample of :data:`SAMPLE_FORMAT`.
SAMPLE_BYTES = 2


class BackendError(Exception):
    """The root of the backend's errors (see the module docstring)."""


class ServerGone(BackendError):
    """The audio server went away (or refused us); every stream and device is gone with it."""


class Unsupported(BackendError):
    """The backend cannot do this (its :attr:`Backend.capabilities` lack the capability)."""


class NoSuchDevice(BackendError):
    """A device (or, for :meth:`Backend.set_card_profile`, a card) named in the call does not
    exist (any more)."""


class ModuleLoadFailed(BackendError):
    """The server refused to load a module (unknown name, bad arguments, a module that may be
    loaded once). The message names the module, never the server's full answer."""


class Capability(enum.Flag):
    """What a backend can do beyond reading streams and setting their volume and mute.

    A method whose capability a backend lacks raises :class:`Unsupported`.
    """

    CARDS = enum.auto()  #: :meth:`Backend.cards`, card events, device ports
    MOVE_STREAMS = enum.auto()  #: :meth:`Backend.move_stream`
    DEFAULT_DEVICES = enum.auto()  #: :meth:`Backend.default_devices` and its setter
    MODULES = enum.auto()  #: :meth:`Backend.load_module`, :meth:`Backend.unload_module`
    CAPTURE = enum.auto()  #: :meth:`Backend.capture`
    KILL_RECORDINGS = enum.auto()  #: :meth:`Backend.kill` of a recording stream
    CARD_PROFILES = enum.auto()  #: :meth:`Backend.set_card_profile`
    PLAYBACK = enum.auto()  #: :meth:`Backend.play`


class CaptureFailed(BackendError):
    """The server ended a capture under way: its device went away, or a client killed the
    recording stream."""


class ProfileUnavailable(BackendError):
    """A card has no profile of that name, or the server refused to switch to it (a Bluetooth
    headset that does not offer HFP now; PulseAudio answers such a switch with an error)."""


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

    @property
    def pipewire(self) -> bool:
        """Whether this is pipewire-pulse (PipeWire's PulseAudio server; WirePlumber, not the
        server, links and moves its streams) rather than PulseAudio itself."""
        return "PipeWire" in self.server_name


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
    :param facility: ``sink-input`` | ``source-output`` | ``sink`` | ``source`` | ``card`` |
        ``module`` | ``server``
    :param index: the object's index
    :param id: the object's opaque id, as :attr:`Stream.id <audiopolicyd.model.Stream.id>`,
        :attr:`Device.id <audiopolicyd.model.Device.id>` and :attr:`Card.id
        <audiopolicyd.model.Card.id>` carry it; '' for a module or the server
    :param maybe_own: a ``new`` source-output that may be the backend's own capture, starting
        (:meth:`Backend.capture`; which one is ours shows only in its first read): it must not
        be written to before that read. pipewire-pulse 0.3.65 never starts a record stream
        whose own client sets its mute before the stream is ready: its format negotiation
        stays at ``negotiating`` (seen: ``pw-dump`` shows the links stuck there, no audio ever
        comes); a write from another client does no harm.
    """

    type: str
    facility: str
    index: int
    id: str = ""
    maybe_own: bool = False


@dataclass(frozen=True)
class DefaultDevices:
    """The server's default devices, where new streams go: device names ('' when none)."""

    sink: str = ""
    source: str = ""


class Backend(abc.ABC):
    """An audio server connection. Every method may raise :class:`ServerGone`.

    :ivar unreadable: streams the server cannot describe without breaking the connection, by
        kind and server index (the backend's own bookkeeping): :meth:`streams` and
        :meth:`stream` skip them while they exist; :meth:`unreadable_ids` names them
    :ivar capabilities: what this backend can do (:class:`Capability`)
    """

    unreadable: dict[StreamKind, set[int]]
    capabilities: Capability = Capability(0)

    def require(self, capability: Capability) -> None:
        """Raise :class:`Unsupported` unless :attr:`capabilities` hold *capability*."""
        if capability not in self.capabilities:
            raise Unsupported(f"the {type(self).__name__} cannot do this: "
                              f"{str(capability.name).lower().replace('_', ' ')}")

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
        """Graph changes as they happen (subscription, never polling), in the server's order:
        every change of a stream; a new, changed or removed sink, source or card; a module
        or server change.

        A device's or card's ``change`` events are coalesced: at most one at once and one more
        at the end of every :data:`~audiopolicyd.backends.coalesce.DEVICE_CHANGE_WINDOW` per
        object, however many the server sends (a stream moving itself in a tight loop makes
        two per move), so a flood of them never starves stream events. A ``remove`` drops the
        object's pending ``change``.

        Ends by raising :class:`ServerGone` when the server goes away.
        """

    @abc.abstractmethod
    async def streams(self) -> list[Stream]:
        """Every sink-input and source-output now, but the :attr:`unreadable` ones; a
        stream's :attr:`~audiopolicyd.model.Stream.device` is the id its device has in
        :meth:`devices` ('' while not linked)."""

    @abc.abstractmethod
    async def devices(self) -> list[Device]:
        """Every sink and source now, with their ports and cards; a monitor's
        :attr:`~audiopolicyd.model.Device.monitor_of` is its sink's id."""

    @abc.abstractmethod
    async def device(self, device_id: str) -> Device | None:
        """One sink or source by its id (:attr:`Device.id <audiopolicyd.model.Device.id>`, the
        :attr:`Event.id` of its ``sink`` or ``source`` event), as :meth:`devices` would list
        it, or None when it no longer exists. The mirror reads a device this way on each of
        its events: one server round trip (two for a device with a card), where the lists of
        every sink, source and card take several on a busy server.

        :raises ValueError: for an id this backend did not mint
        """

    @abc.abstractmethod
    async def modules(self) -> list[Module]:
        """Every module loaded in the server now."""

    @abc.abstractmethod
    def unreadable_ids(self, kind: StreamKind) -> set[str]:
        """The ids of the :attr:`unreadable` streams of *kind* (as their :attr:`Stream.id
        <audiopolicyd.model.Stream.id>` would be)."""

    @abc.abstractmethod
    async def stream(self, stream_id: str) -> Stream | None:
        """One stream by its id (:attr:`Stream.id <audiopolicyd.model.Stream.id>`,
        :attr:`Event.id`), or None when it no longer exists.

        :raises ValueError: for an id this backend did not mint
        """

    @abc.abstractmethod
    async def set_volume(self, stream_id: str, volume: Sequence[int]) -> None:
        """Set a stream's raw per-channel volume, on the model's scale
        (:data:`~audiopolicyd.model.VOLUME_NORM`: ``pa_volume_t``, 65536 = 100 %; a backend
        whose server counts otherwise converts).

        A stream that vanished meanwhile is not an error.

        :raises ValueError: for an id this backend did not mint
        """

    @abc.abstractmethod
    async def set_mute(self, stream_id: str, mute: bool) -> None:
        """Set a stream's mute flag. A stream that vanished meanwhile is not an error.

        :raises ValueError: for an id this backend did not mint
        """

    @abc.abstractmethod
    async def kill(self, stream_id: str) -> None:
        """End a stream for good: the server disconnects it from its client (libpulse's
        ``pa_context_kill_source_output``, as ``pactl kill-source-output``; the client sees
        its stream fail, ``parecord`` exits with status 1). Verified on PulseAudio 16 and
        pipewire-pulse 0.3.65. The daemon kills microphone streams that fight the permission
        gate (:mod:`audiopolicyd.microphone.gate`). Needs :attr:`Capability.KILL_RECORDINGS`.

        A stream that vanished meanwhile is not an error.

        :raises ValueError: for a sink-input (the daemon kills only source-outputs; pulsectl
            declares no ``pa_context_kill_sink_input``), or an id this backend did not mint
        """

    # -- cards, routing, modules, capture --------------------------------------------------------

    @abc.abstractmethod
    async def cards(self) -> list[Card]:
        """Every card now, with its profiles and ports (``pactl list cards``; libpulse's
        ``pa_context_get_card_info_list``). A machine without sound hardware has none.

        :raises Unsupported: without :attr:`Capability.CARDS`
        """

    @abc.abstractmethod
    async def set_card_profile(self, card: Card, profile: str) -> None:
        """Switch a card to another of its profiles (``pactl set-card-profile CARD PROFILE``;
        libpulse's ``pa_context_set_card_profile_by_index``). The server replaces the card's
        devices: a Bluetooth headset's card going from A2DP (PulseAudio ``a2dp_sink``,
        PipeWire ``a2dp-sink``) to HSP/HFP (``headset_head_unit`` or ``handsfree_head_unit``,
        PipeWire ``headset-head-unit``) loses its A2DP sink and gets a headset sink and source,
        with their ``remove`` and ``new`` events, then a ``change`` of the card; streams on a
        device that goes are moved by the server, as when a device is unplugged. The call
        returns when the server has answered, not when every event has arrived.

        :param card: the card, as :meth:`cards` gives it (its index and name must still be a
            card's)
        :param profile: the name of one of the card's :attr:`Card.profiles
            <audiopolicyd.model.Card.profiles>` (``a2dp-sink``, ``off``...); the active one is
            no error (nothing changes)
        :raises NoSuchDevice: when the card does not exist (any more), or another card has its
            index now
        :raises ProfileUnavailable: when the card has no such profile, or the server refuses
            the switch (an unavailable profile)
        :raises Unsupported: without :attr:`Capability.CARD_PROFILES`
        """

    @abc.abstractmethod
    async def move_stream(self, stream: Stream, device: Device) -> None:
        """Move a stream to another device: a playback stream to a sink, a recording to a
        source (libpulse's ``pa_context_move_sink_input_by_index`` /
        ``pa_context_move_source_output_by_index``, as ``pactl move-sink-input``). The server
        may remember the choice for the stream's app (module-stream-restore, WirePlumber).

        A stream that vanished meanwhile is not an error.

        :raises ValueError: when the device's direction is not the stream's (a sink-input onto
            a source)
        :raises NoSuchDevice: when the device does not exist (any more)
        :raises Unsupported: without :attr:`Capability.MOVE_STREAMS`
        """

    @abc.abstractmethod
    async def default_devices(self) -> DefaultDevices:
        """The default sink and source now (``pactl get-default-sink``; libpulse's
        ``pa_context_get_server_info``).

        :raises Unsupported: without :attr:`Capability.DEFAULT_DEVICES`
        """

    @abc.abstractmethod
    async def set_default_device(self, direction: str, device: Device) -> None:
        """Make a device the default of its direction: where new streams go and, on both
        servers, where streams without a chosen device move (``pactl set-default-sink``;
        libpulse's ``pa_context_set_default_sink`` / ``_source``). The server remembers it.
        pipewire-pulse 0.3.65 reports the new default (:meth:`default_devices`) a moment
        after the call returns: WirePlumber picks it from the one configured.

        :param direction: ``sink`` (output) or ``source`` (input): the device's kind
        :raises ValueError: for another direction, or one that is not the device's kind
        :raises NoSuchDevice: when the device does not exist (any more)
        :raises Unsupported: without :attr:`Capability.DEFAULT_DEVICES`
        """

    @abc.abstractmethod
    async def load_module(self, name: str, args: str = "") -> Module:
        """Load a server module (``pactl load-module``; libpulse's ``pa_context_load_module``).
        pipewire-pulse implements a subset (``module-null-sink``, ``module-loopback``,
        ``module-remap-sink``...).

        :param name: ``module-null-sink``...
        :param args: its arguments, ``sink_name=x rate=48000``
        :returns: the loaded module, with the index the server gave it
        :raises ModuleLoadFailed: when the server refuses
        :raises Unsupported: without :attr:`Capability.MODULES`
        """

    @abc.abstractmethod
    async def unload_module(self, module: Module) -> None:
        """Unload a module (``pactl unload-module``; libpulse's ``pa_context_unload_module``).
        Its devices and streams go with it. A module that is gone already is not an error.

        :raises Unsupported: without :attr:`Capability.MODULES`
        """

    @abc.abstractmethod
    def capture(self, device: Device, *, rate: int = 48000, channels: int = 1,
                block_ms: int = 20) -> AsyncIterator[bytes]:
        """Record a source, or a sink's monitor when *device* is a sink: PCM blocks as they
        come, in :data:`SAMPLE_FORMAT` (``s16le``, channels interleaved), each exactly
        ``rate * block_ms / 1000`` frames (``* channels * 2`` bytes), the server resampling
        and remixing to the rate and channels asked for. A record stream of the backend's own
        connection (libpulse's ``pa_stream_connect_record``, as ``parec``), which the server
        lists as a source-output; it ends when the caller stops iterating (``aclose()``, or
        ``break`` out of ``async for``). Gaps the server reports are filled with silence; a
        consumer more than :data:`~audiopolicyd.backends.pulse_capture.MAX_BUFFERED_MS`
        behind loses the oldest blocks (logged), so memory stays bounded.

        :param device: the source to record, or a sink whose monitor to record
        :param rate: frames per second, 8000-192000
        :param channels: 1-8
        :param block_ms: the length of one block in milliseconds, 5-1000
        :raises ValueError: for a rate, channel count or block length out of bounds (before
            anything is sent)
        :raises NoSuchDevice: when the device does not exist (any more)
        :raises CaptureFailed: when the device goes away or the stream is killed while
            recording
        :raises ServerGone: when the server goes away while recording
        :raises Unsupported: without :attr:`Capability.CAPTURE`
        """

    @abc.abstractmethod
    async def play(self, device: Device, pcm: bytes, *, rate: int = 48000,
                   channels: int = 1) -> None:
        """Play *pcm* on a sink and return once the server has played it (drained): a
        playback stream of the backend's own connection (libpulse's
        ``pa_stream_connect_playback``, as ``paplay``), which the server lists as a sink-input
        of the daemon's client (:attr:`Stream.own <audiopolicyd.model.Stream.own>`: no policy
        acts on it, no route moves it). A recording's beep.

        :param device: the sink
        :param pcm: :data:`SAMPLE_FORMAT` (``s16le``), channels interleaved
        :param rate: frames per second, 8000-192000
        :param channels: 1-8
        :raises ValueError: for a rate or channel count out of bounds
        :raises NoSuchDevice: when the sink does not exist (any more)
        :raises ServerGone: when the server goes away
        :raises Unsupported: without :attr:`Capability.PLAYBACK`
        """
