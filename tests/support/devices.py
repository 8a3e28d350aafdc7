"""A test bed of devices with a real device's properties, plugged in and out of a real server.

The test servers have no sound hardware. A headset, a USB DAC or a Bluetooth speaker is faked
with a server module whose device carries the properties a real one has (``device.api``,
``device.bus``, ``device.form_factor``, ``device.description`` and, for Bluetooth, the
profile property of the server the test runs: PulseAudio's ``bluetooth.protocol``, PipeWire's
``api.bluez5.profile``). Loading the module is the plug, unloading it the unplug, while streams
play: the server sends the same ``new`` / ``remove`` events and rescues the streams as it does
for real hardware (measured in docs/routing.md, "What the servers do").

What works on both PulseAudio 16 and pipewire-pulse 0.3.65 (tried, see docs/routing.md):

* a sink: ``module-null-sink sink_name=N sink_properties='k=v k="v w"'``: the property list
  in single quotes, a value with spaces in double quotes inside it (a backslash-escaped space
  fails on PulseAudio and is kept literally, backslash and all, by pipewire-pulse);
* a source: ``module-pipe-source`` with ``source_properties=`` quoted the same way, fed by
  ``programs/mic_feeder.py`` as the test microphone is (``module-null-source`` does not exist
  on pipewire-pulse 0.3.65, and PulseAudio's null sink refuses ``media.class=``).

Typical use::

    with plugged(server, USB_HEADSET) as loaded:
        ...  # loaded.name is the sink's name; the module goes at the end of the block
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import subprocess
import sys
from collections.abc import Iterator

from .processes import stop_process, wait_for
from .servers import MIC_FEEDER, AudioServer, pulse, start_client

logger = logging.getLogger(__name__)

#: Seconds to wait for a device to appear or go (a bound on a wait, never an assertion).
WAIT = 10.0

#: A Bluetooth profile's name on each server, by the PipeWire name (the device property the
#: server's Bluetooth module gives, see tests/data/bluetooth/).
BLUETOOTH_PROFILES = {
    "pulseaudio": {"a2dp-sink": "a2dp_sink", "headset-head-unit": "headset_head_unit"},
    "pipewire": {"a2dp-sink": "a2dp-sink", "headset-head-unit": "headset-head-unit"},
}
#: The property naming the Bluetooth profile on each server.
BLUETOOTH_PROFILE_KEY = {"pulseaudio": "bluetooth.protocol", "pipewire": "api.bluez5.profile"}


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """What a fake device is: its kind, name and the properties of the real device it plays.

    :param kind: ``sink`` or ``source``
    :param name: the device's name on the server (``sink_name=`` / ``source_name=``)
    :param description: ``device.description``, spaces allowed (no quotes)
    :param form_factor: ``device.form_factor`` (``headset``, ``headphone``, ``speaker``,
        ``handset``, ``car``)
    :param bus: ``device.bus`` (``usb``, ``pci``, ``bluetooth``)
    :param api: ``device.api`` (``alsa``, ``bluez5``)
    :param bluetooth_profile: PipeWire's name of the Bluetooth profile (``a2dp-sink``,
        ``headset-head-unit``; :data:`BLUETOOTH_PROFILES`), '' for a wired device
    """

    kind: str
    name: str
    description: str
    form_factor: str
    bus: str
    api: str = "alsa"
    bluetooth_profile: str = ""

    def properties(self, server: str) -> dict[str, str]:
        """The device properties as the server *server* (``pulseaudio`` | ``pipewire``) sets
        them on a real device of this kind."""
        out = {"device.description": self.description, "device.form_factor": self.form_factor,
               "device.bus": self.bus, "device.api": self.api}
        if self.bluetooth_profile:
            out[BLUETOOTH_PROFILE_KEY[server]] = BLUETOOTH_PROFILES[server][
                self.bluetooth_profile]
        return out

    def expected_profile(self, server: str) -> str:
        """What the backend's :attr:`Device.bluetooth_profile
        <audiopolicyd.model.Device.bluetooth_profile>` is for this device on *server*."""
        return BLUETOOTH_PROFILES[server][self.bluetooth_profile] if self.bluetooth_profile \
            else ""


USB_HEADSET = FakeDevice("sink", "usb_headset", "USB Headset", "headset", "usb")
USB_HEADSET_MIC = FakeDevice("source", "usb_headset_mic", "USB Headset Mic", "headset", "usb")
WIRED_HEADPHONES = FakeDevice("sink", "wired_headphones", "Wired Headphones", "headphone",
                              "pci")
PHONE_RECEIVER = FakeDevice("sink", "receiver", "Receiver", "handset", "pci")
LOUDSPEAKER = FakeDevice("sink", "loudspeaker", "Loudspeaker", "speaker", "pci")
CAR_KIT = FakeDevice("sink", "car_kit", "Car Audio", "car", "usb")
BT_A2DP = FakeDevice("sink", "bt_headset_a2dp", "BT Headset", "headset", "bluetooth",
                     "bluez5", "a2dp-sink")
BT_HFP_SINK = FakeDevice("sink", "bt_headset_hfp", "BT Headset (call)", "headset",
                         "bluetooth", "bluez5", "headset-head-unit")
BT_HFP_SOURCE = FakeDevice("source", "bt_headset_hfp_mic", "BT Headset Mic", "headset",
                           "bluetooth", "bluez5", "headset-head-unit")
#: Every kind of fake device.
ALL = (USB_HEADSET, USB_HEADSET_MIC, WIRED_HEADPHONES, PHONE_RECEIVER, LOUDSPEAKER, CAR_KIT,
       BT_A2DP, BT_HFP_SINK, BT_HFP_SOURCE)


def property_list(properties: dict[str, str]) -> str:
    """``sink_properties=`` / ``source_properties=``'s value as both servers parse it: the
    list in single quotes, each value in double quotes (no value may hold a quote)."""
    for key, value in properties.items():
        if any(c in key + value for c in "'\"\\"):
            raise ValueError(f"a quote or backslash in a device property: {key}={value!r}")
    inner = " ".join(f'{key}="{value}"' for key, value in properties.items())
    return f"'{inner}'"


def module_args(server: AudioServer, device: FakeDevice, fifo: str = "") -> tuple[str, str]:
    """The module and its arguments that make *device* on *server* (a source reads *fifo*)."""
    properties = property_list(device.properties(server.name))
    if device.kind == "sink":
        return "module-null-sink", f"sink_name={device.name} sink_properties={properties}"
    if device.kind == "source":
        return "module-pipe-source", (f"source_name={device.name} file={fifo} format=s16le "
                                      f"rate=48000 channels=2 source_properties={properties}")
    raise ValueError(f"a device is a sink or a source, not {device.kind!r}")


@dataclasses.dataclass
class LoadedDevice:
    """A fake device plugged in: the module behind it and, for a source, its feeder."""

    device: FakeDevice
    module: int
    feeder: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        """The device's name on the server."""
        return self.device.name


def device_names(server: AudioServer, kind: str) -> set[str]:
    """The names of the sinks (*kind* ``sink``) or sources on *server* now."""
    with pulse(server) as p:
        return {d.name for d in (p.sink_list() if kind == "sink" else p.source_list())}


def plug(server: AudioServer, device: FakeDevice) -> LoadedDevice:
    """Load *device* on *server* and wait until the server lists it."""
    fifo = str(server.dir / f"{device.name}.fifo")
    module, args = module_args(server, device, fifo)
    with pulse(server) as p:
        index = p.module_load(module, args)
    feeder = (start_client(server, [sys.executable, str(MIC_FEEDER), fifo])
              if device.kind == "source" else None)
    wait_for(lambda: device.name in device_names(server, device.kind), WAIT,
             f"{device.kind} {device.name} to appear")
    logger.debug("plugged %s (module #%d)", device.name, index)
    return LoadedDevice(device, index, feeder)


def unplug(server: AudioServer, loaded: LoadedDevice) -> None:
    """Unload the module of *loaded* and wait until its device is gone."""
    with pulse(server) as p:
        p.module_unload(loaded.module)
    wait_for(lambda: loaded.name not in device_names(server, loaded.device.kind), WAIT,
             f"{loaded.device.kind} {loaded.name} to go")
    if loaded.feeder is not None:
        stop_process(loaded.feeder)
        if loaded.feeder in server.clients:
            server.clients.remove(loaded.feeder)
    logger.debug("unplugged %s", loaded.name)


@contextlib.contextmanager
def plugged(server: AudioServer, device: FakeDevice) -> Iterator[LoadedDevice]:
    """*device* plugged in for the ``with`` block, unplugged after (unless gone already)."""
    loaded = plug(server, device)
    try:
        yield loaded
    finally:
        if loaded.name in device_names(server, device.kind):
            unplug(server, loaded)
