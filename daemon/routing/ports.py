"""Apple's port type of a sink or source, from what the audio server says of it.

Six rules, in the routing issue's order; the first that matches wins (the table, with where
each fact comes from on PulseAudio and on PipeWire: docs/routing.md):

1. Bluetooth (``device.api`` ``bluez5`` on PipeWire, ``bluez`` on PulseAudio, or
   ``device.bus=bluetooth``): by its profile, ``bluetoothA2DP`` (A2DP), ``bluetoothHFP``
   (HSP/HFP, both directions), ``bluetoothLE`` (LE audio, BAP);
2. ``device.bus=usb``: ``usbAudio``;
3. HDMI / DisplayPort, from the active port's name or the device's profile
   (``device.profile.name``): ``HDMI``, ``displayPort``;
4. ``device.form_factor``: ``headphone`` -> ``headphones``; ``headset`` -> ``headphones``
   (output), ``headsetMic`` (input); ``handset`` -> ``builtInReceiver`` (output);
   ``internal`` / ``speaker`` -> ``builtInSpeaker`` (output), ``builtInMic`` (input);
   ``car`` -> ``carAudio``. One refinement: ``internal`` is the form factor of a whole card
   (a laptop's HDA card carries it on every sink), so when the active port names a jack
   (rule 5 gives ``headphones``, ``headsetMic``, ``lineOut`` or ``lineIn``) the jack wins;
5. the active port's name (``analog-output-headphones`` -> ``headphones``...);
6. otherwise ``virtual`` (null sinks, pipes, remaps, and anything the rules do not know).

Pure and total: a device with missing or absurd properties gets ``virtual``, never an error.
"""

from __future__ import annotations

import logging

from ..model import Device
from ..route import (
    BLUETOOTH_A2DP, BLUETOOTH_HFP, BLUETOOTH_LE, BUILT_IN_MIC, BUILT_IN_RECEIVER,
    BUILT_IN_SPEAKER, CAR_AUDIO, DISPLAY_PORT, HDMI, HEADPHONES, HEADSET_MIC, INPUT, LINE_IN,
    LINE_OUT, OUTPUT, UID_SEPARATOR, USB_AUDIO, VIRTUAL, RoutePort,
)

logger = logging.getLogger(__name__)

#: ``device.api`` of Bluetooth devices: PipeWire's ``bluez5``, PulseAudio's ``bluez``.
BLUETOOTH_APIS = ("bluez5", "bluez")
#: Bluetooth profile names (PulseAudio's ``bluetooth.protocol``, PipeWire's
#: ``api.bluez5.profile``) -> port type, by the first fragment found in the lowercased name.
BLUETOOTH_PROFILES = (
    ("a2dp", BLUETOOTH_A2DP),          # a2dp_sink, a2dp-sink, a2dp_source
    ("head_unit", BLUETOOTH_HFP),      # PulseAudio: headset_head_unit, handsfree_head_unit
    ("head-unit", BLUETOOTH_HFP),      # PipeWire: headset-head-unit
    ("audio_gateway", BLUETOOTH_HFP),  # PulseAudio: headset_audio_gateway
    ("audio-gateway", BLUETOOTH_HFP),  # PipeWire: headset-audio-gateway
    ("hsp", BLUETOOTH_HFP),
    ("hfp", BLUETOOTH_HFP),
    ("sco", BLUETOOTH_HFP),            # PulseAudio's SCO-over-PCM
    ("bap", BLUETOOTH_LE),             # PipeWire: bap-sink, bap-source, bap-duplex
)
#: ``device.form_factor`` -> (output type, input type); None: the rule does not match.
FORM_FACTORS = {
    "headphone": (HEADPHONES, None),
    "headset": (HEADPHONES, HEADSET_MIC),
    "handset": (BUILT_IN_RECEIVER, None),
    "internal": (BUILT_IN_SPEAKER, BUILT_IN_MIC),
    "speaker": (BUILT_IN_SPEAKER, BUILT_IN_MIC),
    "car": (CAR_AUDIO, CAR_AUDIO),
}
#: Active port name fragments (lowercased) -> (output type, input type), first match wins:
#: ALSA card profiles' port names (PulseAudio and PipeWire's ACP alike,
#: ``analog-output-headphones``, ``analog-input-headset-mic``) and UCM's (``[Out] Headphones``).
PORT_NAMES = (
    ("headphone", (HEADPHONES, None)),
    ("headset", (HEADPHONES, HEADSET_MIC)),
    ("speaker", (BUILT_IN_SPEAKER, None)),
    ("lineout", (LINE_OUT, None)),
    ("line-out", (LINE_OUT, None)),
    ("linein", (None, LINE_IN)),
    ("line-in", (None, LINE_IN)),
    ("mic", (None, BUILT_IN_MIC)),     # analog-input-mic, analog-input-internal-mic
)
#: Jacks: port types that rule 5 may give over rule 4's ``internal`` form factor.
JACKS = (HEADPHONES, HEADSET_MIC, LINE_OUT, LINE_IN)


def direction(device: Device) -> str | None:
    """:data:`OUTPUT` for a sink, :data:`INPUT` for a source, None for a sink's monitor (not
    an input a route offers) and for anything else."""
    if device.kind == "sink":
        return OUTPUT
    if device.kind == "source" and not device.monitor:
        return INPUT
    return None


def _text(value: object) -> str:
    """A property as lowercase text; anything that is not a string is ''."""
    return value.lower() if isinstance(value, str) else ""


def _pick(pair: tuple[str | None, str | None], way: str) -> str | None:
    return pair[0] if way == OUTPUT else pair[1]


def _by_port_name(name: str, way: str) -> str | None:
    for fragment, pair in PORT_NAMES:
        if fragment in name:
            return _pick(pair, way)
    return None


def port_type(device: Device) -> str:
    """Apple's port type of a sink or source, by the rules of this module's docstring.

    :param device: a sink or a source (a monitor is typed as a source, though it is never an
        input of a route: see :func:`direction`)
    :returns: one of :data:`audiopolicyd.route.PORT_TYPES`; ``virtual`` for anything unknown
    """
    way = OUTPUT if device.kind == "sink" else INPUT
    props = device.properties if hasattr(device.properties, "get") else {}
    api, bus = _text(device.api or props.get("device.api")), _text(device.bus or
                                                                   props.get("device.bus"))
    active = _text(device.active_port)
    # 1. Bluetooth, by profile
    if api in BLUETOOTH_APIS or bus == "bluetooth":
        profile = _text(device.bluetooth_profile or props.get("bluetooth.protocol")
                        or props.get("api.bluez5.profile"))
        for fragment, kind in BLUETOOTH_PROFILES:
            if fragment in profile:
                return kind
        # a profile we do not know: a sink plays music (A2DP), a source is a headset's mic
        return BLUETOOTH_A2DP if way == OUTPUT else BLUETOOTH_HFP
    # 2. USB
    if bus == "usb":
        return USB_AUDIO
    # 3. HDMI / DisplayPort, by the active port or the profile
    where = active + " " + _text(props.get("device.profile.name"))
    if "displayport" in where or "display-port" in where:
        return DISPLAY_PORT
    if "hdmi" in where or bus == "hdmi":
        return HDMI
    # 4. form factor (5. refines a whole card's ``internal`` with the jack in use)
    by_port = _by_port_name(active, way)
    pair = FORM_FACTORS.get(_text(device.form_factor or props.get("device.form_factor")))
    by_form = _pick(pair, way) if pair else None
    if by_form is not None:
        if by_form in (BUILT_IN_SPEAKER, BUILT_IN_MIC) and by_port in JACKS:
            return by_port
        return by_form
    # 5. the active port's name; 6. virtual
    return by_port or VIRTUAL


def uid(device: Device) -> str:
    """A port's uid: the device's name, ``/`` and its active port's name; the device's name
    alone when it has no active port."""
    if isinstance(device.active_port, str) and device.active_port:
        return f"{device.name}{UID_SEPARATOR}{device.active_port}"
    return device.name


def route_port(device: Device) -> RoutePort | None:
    """The :class:`RoutePort` a sink or source offers, None for a monitor (and anything that
    is neither a sink nor a source).

    :returns: the port: type by :func:`port_type`, name the device's description (its name
        when it has none), :func:`uid`, and the device's id
    """
    if direction(device) is None:
        return None
    return RoutePort(port_type=port_type(device), port_name=device.description or device.name,
                     uid=uid(device), device=device.id)
