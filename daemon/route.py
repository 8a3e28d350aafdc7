"""The vocabulary of routing, with Apple's names: port types, ports, routes, route-change
reasons, and the decisions routing makes. Frozen dataclasses, no I/O.

As AVAudioSession: a :class:`Route` (``AVAudioSessionRouteDescription``) has input and output
:class:`RoutePort` s (``AVAudioSessionPortDescription``), each of a port type
(``AVAudioSession.Port``); a route changes for a :class:`RouteChangeReason`
(``AVAudioSession.RouteChangeReason``, Apple's numbers). Devices are named by their backend's
opaque id (:attr:`audiopolicyd.model.Device.id`), never by a server index.

Which port type a device is: :mod:`audiopolicyd.routing.ports`; which device a category's
streams go to and why: :mod:`audiopolicyd.routing.choose`.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Port types (AVAudioSession.Port), the one place they are spelt.
BLUETOOTH_A2DP = "bluetoothA2DP"
BLUETOOTH_HFP = "bluetoothHFP"
BLUETOOTH_LE = "bluetoothLE"
USB_AUDIO = "usbAudio"
HDMI = "HDMI"
DISPLAY_PORT = "displayPort"
HEADPHONES = "headphones"
HEADSET_MIC = "headsetMic"
BUILT_IN_RECEIVER = "builtInReceiver"
BUILT_IN_SPEAKER = "builtInSpeaker"
BUILT_IN_MIC = "builtInMic"
CAR_AUDIO = "carAudio"
LINE_OUT = "lineOut"
LINE_IN = "lineIn"
VIRTUAL = "virtual"

#: Every port type, Apple's identifiers.
PORT_TYPES = (BLUETOOTH_A2DP, BLUETOOTH_HFP, BLUETOOTH_LE, USB_AUDIO, HDMI, DISPLAY_PORT,
              HEADPHONES, HEADSET_MIC, BUILT_IN_RECEIVER, BUILT_IN_SPEAKER, BUILT_IN_MIC,
              CAR_AUDIO, LINE_OUT, LINE_IN, VIRTUAL)

#: Port types that are only ever outputs, and only ever inputs (a policy's ``route.input``
#: cannot name the former, nor ``route.output`` the latter).
OUTPUT_ONLY = (BUILT_IN_RECEIVER, BUILT_IN_SPEAKER, HEADPHONES, LINE_OUT)
INPUT_ONLY = (HEADSET_MIC, BUILT_IN_MIC, LINE_IN)

#: In a policy's ``[route]`` preferences: the user's default sink (output) or source (input).
DEFAULT = "default"

#: Directions of a route: a sink is an ``output``, a source (not a monitor) an ``input``.
OUTPUT = "output"
INPUT = "input"
DIRECTIONS = (OUTPUT, INPUT)

#: Apple's ``overrideOutputAudioPort`` values (``AVAudioSession.PortOverride``).
OVERRIDE_NONE = "none"
OVERRIDE_SPEAKER = "speaker"
OVERRIDES = (OVERRIDE_NONE, OVERRIDE_SPEAKER)

#: Processing a plugin may propose for a session's mode (``propose_processing``):
#: ``module-echo-cancel`` on PulseAudio, PipeWire's echo canceller through pipewire-pulse.
ECHO_CANCEL = "echo-cancel"
PROCESSING = (ECHO_CANCEL,)

#: Between a device's name and its active port's name in a port's :attr:`RoutePort.uid`.
UID_SEPARATOR = "/"


class RouteChangeReason(enum.IntEnum):
    """Why a route changed: ``AVAudioSession.RouteChangeReason``, Apple's names and numbers
    (Apple defines no 5)."""

    unknown = 0
    newDeviceAvailable = 1
    oldDeviceUnavailable = 2
    categoryChange = 3
    override = 4
    wakeFromSleep = 6
    noSuitableRouteForCategory = 7
    routeConfigurationChange = 8


@dataclass(frozen=True)
class RoutePort:
    """One input or output of a route: Apple's ``AVAudioSessionPortDescription``.

    :param port_type: one of :data:`PORT_TYPES`
    :param port_name: human name: the device's description (the server's name when it has
        none)
    :param uid: the device's name, :data:`UID_SEPARATOR` and its active port's name
        (``alsa_output.pci-0000_00_1f.3.analog-stereo/analog-output-headphones``); the device's
        name alone when it has no active port (a null sink, most Bluetooth and virtual
        devices). Stable while the server keeps the name, so an app may store it
        (``SetPreferredInput``); a port that moves to another jack gets another uid
    :param device: the id of the sink or source it stands for (:attr:`Device.id
        <audiopolicyd.model.Device.id>`)
    """

    port_type: str
    port_name: str
    uid: str
    device: str


@dataclass(frozen=True)
class Route:
    """Apple's ``AVAudioSessionRouteDescription``: the ports a session's audio uses.

    :param inputs: the input ports (empty when the category does not record or has none)
    :param outputs: the output ports (empty when the category does not play or has none)
    """

    inputs: tuple[RoutePort, ...] = ()
    outputs: tuple[RoutePort, ...] = ()


@dataclass(frozen=True)
class PortChoice:
    """One direction of a route decision: the port chosen, and why.

    :param port: the port, or None when nothing suitable is present (the streams stay where
        they are: ``noSuitableRouteForCategory``)
    :param reason: a short sentence for ``audiopolicyctl explain``, starting with the port
        type or ``none``: ``usbAudio: first of playAndRecord's route.output present``
    """

    port: RoutePort | None
    reason: str

    @property
    def device(self) -> str | None:
        """The chosen device's id, None when nothing was chosen."""
        return None if self.port is None else self.port.device


@dataclass(frozen=True)
class RouteDecision:
    """Where a category's (or a session's) output and input go, and why.

    :param output: the output choice
    :param input: the input choice
    """

    output: PortChoice
    input: PortChoice

    @property
    def route(self) -> Route:
        """The decision as Apple's route description."""
        return Route(inputs=() if self.input.port is None else (self.input.port,),
                     outputs=() if self.output.port is None else (self.output.port,))

    def choice(self, direction: str) -> PortChoice:
        """The choice of ``direction`` (:data:`OUTPUT` or :data:`INPUT`)."""
        return self.output if direction == OUTPUT else self.input


@dataclass(frozen=True)
class RouteRequest:
    """What a route is decided from (built by :func:`audiopolicyd.routing.choose.request`).

    :param category: the category whose route is decided
    :param outputs: every output port present (sinks), in the server's order
    :param inputs: every input port present (sources; never a monitor)
    :param default_output: the id of the user's default sink, '' when unknown
    :param default_input: the id of the user's default source, '' when unknown
    :param mode: the session's mode (``default`` for a legacy app's streams)
    :param options: the session's category options (empty for a legacy app's streams)
    :param override: the session's output override, one of :data:`OVERRIDES`
    :param preferred_input: the uid of the session's preferred input, '' for none
    """

    category: str
    outputs: tuple[RoutePort, ...] = ()
    inputs: tuple[RoutePort, ...] = ()
    default_output: str = ""
    default_input: str = ""
    mode: str = "default"
    options: frozenset[str] = frozenset()
    override: str = OVERRIDE_NONE
    preferred_input: str = ""

    def ports(self, direction: str) -> tuple[RoutePort, ...]:
        """The ports present in ``direction``."""
        return self.outputs if direction == OUTPUT else self.inputs

    def default(self, direction: str) -> str:
        """The id of the user's default device in ``direction``, '' when unknown."""
        return self.default_output if direction == OUTPUT else self.default_input


@dataclass(frozen=True)
class RoutedStream:
    """A stream as a route-change reaction sees it (``react_to_route_change``).

    :param key: the stream's id (:attr:`Stream.id <audiopolicyd.model.Stream.id>`)
    :param device: the id of the device it was on before the change, '' when unknown
    :param playing: True while it plays (not corked)
    """

    key: str
    device: str
    playing: bool = True


@dataclass(frozen=True)
class RouteChange:
    """A category's route changed (the argument of ``react_to_route_change``).

    :param category: the category whose route changed
    :param reason: why (:func:`audiopolicyd.routing.choose.change_reason`)
    :param previous: the decision before
    :param current: the decision now
    :param gone: ids of the devices that went away with this change, or whose port in use was
        unplugged (a laptop's headphones jack: the sink stays, its port changes)
    :param appeared: ids of the devices that appeared with it
    """

    category: str
    reason: RouteChangeReason
    previous: RouteDecision
    current: RouteDecision
    gone: frozenset[str] = frozenset()
    appeared: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RouteReaction:
    """What a plugin decides for one stream after a route change; the runtime applies it.

    :param stream: the stream's id
    :param mute: mute it at once
    :param pause: pause its player through MPRIS (a stream without one stays muted)
    :param reason: why, for logs and ``explain`` (``routeDisconnected: ...``)
    """

    stream: str
    mute: bool = False
    pause: bool = False
    reason: str = ""
