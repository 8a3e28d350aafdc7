"""The vocabulary every layer shares: frozen dataclasses, no I/O.

Audio-graph terms follow PulseAudio/PipeWire (sink-input, source-output, ``media.role``);
session terms follow AVAudioSession (category, mode, options).

Volumes are the server's raw integer per-channel volumes (``pa_volume_t``: 0 = silence,
65536 = 100 % = 0 dB, software scale is cubic). Gains are linear factors in 0.0..1.0 applied to
those integers, as PulseAudio's module-role-ducking applies its volume factor.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, TypeVar

#: The model's volume scale, for every backend: PulseAudio's ``pa_volume_t``, an integer per
#: channel, VOLUME_NORM (PA_VOLUME_NORM, 65536) = 100 % = 0 dB, cubic (linear gain =
#: (v / 65536) ** 3; PulseAudio's ``pa_sw_volume_to_linear``). pipewire-pulse maps PipeWire's
#: linear ``channelVolumes`` to it the same way; a native PipeWire backend converts with the
#: cube root. Ducking multiplies this value (a duck level of 0.2 is 20 % of it).
VOLUME_NORM = 65536

#: The seven AVAudioSession categories, with Apple's identifiers.
CATEGORIES = (
    "ambient",
    "soloAmbient",
    "playback",
    "record",
    "playAndRecord",
    "multiRoute",
    "audioProcessing",
)

#: AVAudioSession modes.
MODES = (
    "default",
    "gameChat",
    "measurement",
    "moviePlayback",
    "spokenAudio",
    "videoChat",
    "videoRecording",
    "voiceChat",
    "voicePrompt",
)

#: AVAudioSession.CategoryOptions.
OPTIONS = (
    "mixWithOthers",
    "duckOthers",
    "interruptSpokenAudioAndMixWithOthers",
    "allowBluetooth",
    "allowBluetoothA2DP",
    "allowAirPlay",
    "defaultToSpeaker",
    "overrideMutedMicrophoneInterruption",
)


class StreamKind(str, enum.Enum):
    """Direction of a stream in the audio graph (PulseAudio object names)."""

    SINK_INPUT = "sink-input"  #: playback stream
    SOURCE_OUTPUT = "source-output"  #: recording stream


class Action(str, enum.Enum):
    """What an active session does to another session's audio (the policy's ``others``)."""

    MIX = "mix"  #: nothing: both are heard
    DUCK = "duck"  #: the other's output volume is multiplied by the duck level
    INTERRUPT = "interrupt"  #: the other is paused (MPRIS) or, with no player, muted
    SILENCE = "silence"  #: the other's output is muted


K = TypeVar("K")
V = TypeVar("V")


def freeze(props: Mapping[K, V] | None) -> Mapping[K, V]:
    """Return a read-only copy of a property mapping (for frozen dataclasses)."""
    return MappingProxyType(dict(props or {}))


@dataclass(frozen=True)
class Stream:
    """One sink-input or source-output as the server reports it.

    :param kind: playback (sink-input) or recording (source-output)
    :param index: the server's object index (unique per kind while the server runs)
    :param properties: the stream's property list (``media.role``, ``application.name``...),
        values decoded as UTF-8 with replacement; never trusted for identity
    :param volume: raw per-channel volume on the model's scale (:data:`VOLUME_NORM`)
    :param muted: the server's mute flag
    :param corked: True while the client has paused (corked) the stream
    :param device: the :attr:`Device.id` of the sink (playback) or source (recording) the
        stream is connected to, as the backend minted it (a key of :attr:`Snapshot.devices`
        once the device list is read); '' while the stream is not linked to any (pipewire-pulse
        announces a new stream before linking it). Opaque: the core compares it, never parses it
    :param monitor: True for a source-output connected to a sink's monitor, as the server's
        source list says (``monitor_of_sink``), never as the client claims
        (``stream.capture.sink``); whether that monitor carries a microphone is
        :func:`audiopolicyd.microphone.broker.quiet_monitors`'s question
    :param module: the name of the server module that owns the stream (``module-loopback``,
        ``module-echo-cancel``), '' for a client's stream
    :param owner_module: the server's index of that module (``owner_module``; pipewire-pulse's
        carry a flag bit, 0x20000000), -1 for a client's stream
    :param vouched: what the audio server itself says about the stream's client, which the
        client cannot set or change: on pipewire-pulse, for a native PipeWire client,
        ``pipewire.sec.pid``, ``pipewire.sec.uid`` and ``pipewire.sec.gid`` (PipeWire takes them
        from the kernel, ``SO_PEERCRED``, and refuses a client's change to them). Empty for a
        PulseAudio-protocol client (PulseAudio takes a client's whole property list from the
        client; pipewire-pulse merges it over its own keys, and its clients' ``pipewire.sec.pid``
        is pipewire-pulse's) and for every stream on PulseAudio. See docs/microphone.md
    :param id: the backend's opaque id of the stream, unique among streams while the server
        runs and public (D-Bus, logs, the CLI); the core compares it and never parses it. The
        PulseAudio backend mints ``sink-input:42`` / ``source-output:7``
    :param restore_key: the key under which the server remembers the stream's volume and mute
        (module-stream-restore, WirePlumber's restore-stream): two streams with one key start
        at one remembered value. The backend fills it in with its server's rule; '' when the
        server remembers nothing per stream
    :param own: True for a stream of the backend's own connection (a capture of the daemon's,
        see :meth:`Backend.capture <audiopolicyd.backends.base.Backend.capture>`), as the
        server says (the stream's client is ours), never from the stream's properties
    """

    kind: StreamKind
    index: int
    properties: Mapping[str, str] = field(default_factory=lambda: freeze({}))
    volume: tuple[int, ...] = (VOLUME_NORM, VOLUME_NORM)
    muted: bool = False
    corked: bool = False
    device: str = ""
    monitor: bool = False
    module: str = ""
    owner_module: int = -1
    vouched: Mapping[str, str] = field(default_factory=lambda: freeze({}))
    # keyword-only and required: only a backend can mint them (see the docstring)
    id: str = field(kw_only=True)
    restore_key: str = field(kw_only=True)
    own: bool = field(default=False, kw_only=True)

    @property
    def linked(self) -> bool:
        """True once the stream is connected to a sink or source.

        pipewire-pulse announces a new stream before linking it (device ``PA_INVALID_INDEX``,
        which the backend gives as :attr:`device` '', volume 0, corked) and links it a few ms
        later with its restored volume; until then its volume is not the user's.
        """
        return bool(self.device)

    @property
    def settled(self) -> bool:
        """True once the stream's volume can be taken for the user's: linked, and not at 0.

        pipewire-pulse shows a new stream linked at volume 0, corked or already started, for
        a moment before WirePlumber's restored volume arrives. Taking that 0 for the user's
        volume would duck from 0 and "restore" 0, and our write could land over the restore:
        silent for good. A stream at volume 0 is inaudible anyway; it settles when it gets a
        volume. (A stream the daemon itself took to 0 is still followed: see the microphone gate.)
        """
        return self.linked and any(self.volume)

    @property
    def playing(self) -> bool:
        """True while the stream holds its session active.

        A playback stream plays while uncorked, and also while still being set up (not linked
        yet), so a policy reacts on its ``new`` event on both servers. A recording counts only
        once linked: before that it is not known whether it records a microphone or a monitor.
        """
        if self.kind is StreamKind.SOURCE_OUTPUT:
            return self.linked and not self.corked
        return not self.corked or not self.linked

    @property
    def key(self) -> str:
        """The stream's :attr:`id` (the name the runtime, D-Bus and the journal use)."""
        return self.id

    @property
    def pid(self) -> int | None:
        """``application.process.id`` as a hint (self-reported by the client)."""
        try:
            return int(self.properties.get("application.process.id", ""))
        except ValueError:
            return None

    @property
    def app_key(self) -> str:
        """The app this stream belongs to, most trusted identity first.

        Flatpak portal app id, then ``application.id``, then binary + pid, then
        ``application.name``; a stream with none of them is its own app.
        """
        p = self.properties
        if p.get("pipewire.access.portal.app_id"):
            return "flatpak:" + p["pipewire.access.portal.app_id"]
        if p.get("application.id"):
            return "app:" + p["application.id"]
        if p.get("application.process.binary"):
            return f"exe:{p['application.process.binary']}:{p.get('application.process.id', '')}"
        if p.get("application.name"):
            return "name:" + p["application.name"]
        return "stream:" + self.key

    @property
    def app_name(self) -> str:
        """``application.name``, else the binary, else the stream key."""
        p = self.properties
        return p.get("application.name") or p.get("application.process.binary") or self.key

    @property
    def label(self) -> str:
        """:attr:`app_name` cut to 64 characters, for logs: a hostile client's long name must
        not flood the log."""
        name = self.app_name
        return name if len(name) <= 64 else name[:63] + "\u2026"


#: A port's availability as the servers report it (``pa_port_available_t``, PipeWire's
#: ``SPA_PARAM_AVAILABILITY``): plugged in, unplugged, or not detectable.
AVAILABILITY = ("yes", "no", "unknown")


@dataclass(frozen=True)
class Profile:
    """One profile of a card (``pactl list cards``: ``output:analog-stereo``, ``a2dp-sink``,
    ``off``).

    :param name: the server's name of the profile
    :param description: human name
    :param available: False when the server says it cannot be used now (a jack unplugged, a
        Bluetooth profile the headset does not offer)
    :param priority: the server's preference, higher first
    """

    name: str
    description: str = ""
    available: bool = True
    priority: int = 0


@dataclass(frozen=True)
class Port:
    """One port of a card or a device: a jack, a speaker, a headset's microphone.

    :param name: the server's name (``analog-output-headphones``)
    :param description: human name (``Headphones``)
    :param direction: ``output`` | ``input`` | ``unknown``
    :param available: one of :data:`AVAILABILITY`: ``yes`` (plugged in), ``no`` (unplugged),
        ``unknown`` (the hardware cannot tell)
    :param priority: the server's preference, higher first
    :param profiles: names of the card profiles that offer the port (empty for a device's port
        whose card is unknown)
    :param properties: the port's property list as the server gives it (``port.type``,
        ``device.icon_name``...): what the routing issue needs to tell a port's type; values
        bounded as a stream's
    """

    name: str
    description: str = ""
    direction: str = "unknown"
    available: str = "unknown"
    priority: int = 0
    profiles: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=lambda: freeze({}))


@dataclass(frozen=True)
class Card:
    """A card: the hardware (or Bluetooth device) behind sinks and sources, with its profiles
    and ports (``pactl list cards``; a PipeWire ``Audio/Device``).

    :param id: the backend's opaque id (PulseAudio backend: ``card:3``)
    :param index: the server's index
    :param name: the server's name (``alsa_card.pci-0000_00_1f.3``, ``bluez_card.00_11_...``)
    :param profiles: every profile, as the server lists them
    :param active_profile: the name of the profile in use, '' when none is reported
    :param ports: every port of the card, both directions
    :param properties: the card's property list (``device.bus``, ``device.form_factor``,
        ``device.description``...)
    """

    id: str
    index: int
    name: str
    profiles: tuple[Profile, ...] = ()
    active_profile: str = ""
    ports: tuple[Port, ...] = ()
    properties: Mapping[str, str] = field(default_factory=lambda: freeze({}))


@dataclass(frozen=True)
class Device:
    """A sink or source.

    :param kind: ``sink`` or ``source``
    :param index: server index
    :param name: server name (``alsa_output...``, ``speaker``)
    :param description: human name
    :param properties: the device's property list (``device.form_factor``, ``device.bus``...)
    :param monitor_of: for a sink's monitor source, the :attr:`id` of that sink (from the
        server's ``monitor_of_sink``); '' for a sink and for any other source. Opaque, as
        :attr:`id` (on pipewire-pulse a sink and its monitor share one server index; their ids
        differ: ``sink:57``, ``source:57``)
    :param id: the backend's opaque id, unique among devices while the server runs (PulseAudio
        backend: ``sink:3``, ``source:5``); '' only for a device no backend made
    :param card: the name of the device's :class:`Card`, None for a device without one (a
        null sink, a pipe source, a virtual device)
    :param ports: the device's ports (a null sink has none); :attr:`Port.direction` is the
        device's, :attr:`Port.profiles` and :attr:`Port.properties` come from the card's port
        of that name
    :param active_port: the name of the port in use, None when the device has no port
    :param api: ``device.api`` (``alsa``, ``bluez5``...), '' when the server gives none
    :param bus: ``device.bus`` (``pci``, ``usb``, ``bluetooth``), '' when unknown
    :param form_factor: ``device.form_factor`` (``internal``, ``headset``, ``headphone``,
        ``speaker``, ``car``...), '' when unknown
    :param bluetooth_profile: the Bluetooth profile the device runs (PulseAudio's
        ``bluetooth.protocol``: ``a2dp_sink``, ``handsfree_head_unit``; PipeWire's
        ``api.bluez5.profile``: ``a2dp-sink``, ``headset-head-unit``), '' for other devices
    """

    kind: str
    index: int
    name: str
    description: str = ""
    properties: Mapping[str, str] = field(default_factory=lambda: freeze({}))
    monitor_of: str = ""
    id: str = field(default="", kw_only=True)
    card: str | None = field(default=None, kw_only=True)
    ports: tuple[Port, ...] = field(default=(), kw_only=True)
    active_port: str | None = field(default=None, kw_only=True)
    api: str = field(default="", kw_only=True)
    bus: str = field(default="", kw_only=True)
    form_factor: str = field(default="", kw_only=True)
    bluetooth_profile: str = field(default="", kw_only=True)

    @property
    def monitor(self) -> bool:
        """True for a sink's monitor source, as the server's graph says: never from a name
        or a ``device.class`` property, which whoever loads a module may set
        (``module-remap-source source_properties=device.class=monitor``)."""
        return self.kind == "source" and bool(self.monitor_of)


@dataclass(frozen=True)
class Player:
    """An MPRIS media player on the session bus.

    :param bus_name: ``org.mpris.MediaPlayer2.<name>``
    :param pid: the process id owning the bus name (from the bus, trusted)
    :param desktop_entry: the player's ``DesktopEntry`` property, '' if none
    :param identity: the player's ``Identity`` property
    :param status: ``Playing`` | ``Paused`` | ``Stopped``
    """

    bus_name: str
    pid: int | None = None
    desktop_entry: str = ""
    identity: str = ""
    status: str = "Stopped"


@dataclass(frozen=True)
class Snapshot:
    """The audio graph at one instant.

    :param streams: every sink-input and source-output, by :attr:`Stream.key`
    :param devices: every sink and source, by their id (:attr:`Device.id`)
    :param players: MPRIS players, by bus name
    """

    streams: Mapping[str, Stream] = field(default_factory=lambda: freeze({}))
    devices: Mapping[str, Device] = field(default_factory=lambda: freeze({}))
    players: Mapping[str, Player] = field(default_factory=lambda: freeze({}))

    def player_for(self, stream: Stream) -> Player | None:
        """The MPRIS player of a stream's app: by process id first, then by app id.

        :returns: the player, or None when the app has none (it will be muted instead of paused)
        """
        pid = stream.pid
        if pid is not None:
            for player in self.players.values():
                if player.pid == pid:
                    return player
        app_ids = {
            stream.properties.get("application.id", ""),
            stream.properties.get("pipewire.access.portal.app_id", ""),
            stream.properties.get("application.process.binary", ""),
        } - {""}
        for player in self.players.values():
            if player.desktop_entry and player.desktop_entry in app_ids:
                return player
        return None


@dataclass(frozen=True)
class Session:
    """An app's declared (explicit) or inferred (implicit) audio intent.

    :param id: unique id (``implicit:<app_key>:<category>`` for implicit sessions)
    :param app_key: the owning app (see :attr:`Stream.app_key`)
    :param category: one of :data:`CATEGORIES`
    :param mode: one of :data:`MODES`
    :param options: a subset of :data:`OPTIONS`
    :param active: True while the session is active
    :param seq: activation order; a later activation has a larger number
    :param streams: keys of the streams that belong to the session
    :param explicit: True when a D-Bus client created it
    :param rule: for implicit sessions, the classification rule that chose the category
    """

    id: str
    app_key: str
    category: str
    mode: str = "default"
    options: frozenset[str] = frozenset()
    active: bool = False
    seq: int = 0
    streams: tuple[str, ...] = ()
    explicit: bool = False
    rule: str = ""


@dataclass(frozen=True)
class Reason:
    """Why an effect applies: which session, which policy and which rule caused it.

    :param action: the action taken (:class:`Action` value)
    :param session: the id of the session causing it
    :param category: that session's category
    :param policy: the policy file that decided it (``/usr/.../playAndRecord.toml``)
    :param rule: the policy key that decided it (``activation.others``, ``overrides.playback``)
    """

    action: str
    session: str
    category: str
    policy: str = ""
    rule: str = ""

    def __str__(self) -> str:
        where = f" ({self.policy}: {self.rule})" if self.policy else ""
        return f"{self.action} by {self.category} session {self.session}{where}"


@dataclass(frozen=True)
class Effect:
    """The desired state of one stream, as the engine decides it.

    :param gain: linear duck factor, 0.0..1.0 (1.0 = no duck); several duckers multiply
    :param ramp_ms: duration of the volume ramp towards ``gain``, in milliseconds
    :param mute: True when the daemon must mute the stream
    :param pause: True when the stream's player must be paused through MPRIS
    :param reasons: why; empty for the neutral effect
    """

    gain: float = 1.0
    ramp_ms: int = 0
    mute: bool = False
    pause: bool = False
    reasons: tuple[Reason, ...] = ()

    @property
    def neutral(self) -> bool:
        """True when the effect leaves the stream as the user set it."""
        return self.gain == 1.0 and not self.mute and not self.pause

    @property
    def summary(self) -> str:
        """``none``, ``duck 0.20``, ``mute``, ``pause`` or a combination, for logs and CLI."""
        parts = []
        if self.pause:
            parts.append("pause")
        if self.mute:
            parts.append("mute")
        if self.gain != 1.0:
            parts.append(f"duck {self.gain:.2f}")
        return "+".join(parts) or "none"


NEUTRAL = Effect()
