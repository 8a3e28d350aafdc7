"""Moving streams, card profiles, default devices, modules and capture over the PulseAudio
protocol (a part of :class:`~audiopolicyd.backends.pulse.PulseBackend`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, TypeVar

import pulsectl
import pulsectl_asyncio

from ..model import Card, Device, Stream, StreamKind
from . import pulse_capture, pulse_playback
from .base import DefaultDevices, Module, ModuleLoadFailed, NoSuchDevice, ProfileUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


class PulseRouting:
    """The routing part of :class:`~audiopolicyd.backends.pulse.PulseBackend` (a mixin: it
    uses the backend's connection, ``_p`` and ``_call``, and its module names, ``_modules``).
    """

    if TYPE_CHECKING:  # what the backend it is mixed into provides
        _modules: dict[int, str]

        @property
        def _p(self) -> pulsectl_asyncio.PulseAsync: ...

        async def _call(self, coro: Awaitable[T]) -> T: ...

    async def move_stream(self, stream: Stream, device: Device) -> None:
        want = "sink" if stream.kind is StreamKind.SINK_INPUT else "source"
        if device.kind != want:
            raise ValueError(f"a {stream.kind.value} moves to a {want}, not to a {device.kind}")
        mover = (self._p.sink_input_move if stream.kind is StreamKind.SINK_INPUT
                 else self._p.source_output_move)
        try:
            await self._call(mover(stream.index, device.index))
        except pulsectl.PulseOperationFailed:
            # the stream or the device vanished: only the device's absence is the caller's
            # (a stream its client made unmovable, PA_STREAM_DONT_MOVE, fails the same way)
            await self._device_info(device)
            logger.debug("%s vanished (or refuses to move) before it was moved to %s",
                         stream.id, device.id)

    async def _device_info(self, device: Device):
        """The server's info of *device* (by index, and the name must still be its).

        :raises NoSuchDevice: when there is no such device any more
        """
        getter = self._p.sink_info if device.kind == "sink" else self._p.source_info
        try:
            info = await self._call(getter(device.index))
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            info = None
        if info is None or info.name != device.name:
            raise NoSuchDevice(f"no {device.kind} {device.name!r:.80} (#{device.index})")
        return info

    async def set_card_profile(self, card: Card, profile: str) -> None:
        info = await self._card_info(card)
        if profile not in {p.name for p in info.profile_list}:
            raise ProfileUnavailable(f"the card {card.name!r:.80} has no profile {profile!r:.80}")
        try:
            await self._call(self._p.card_profile_set_by_index(card.index, profile))
        except pulsectl.PulseOperationFailed:
            await self._card_info(card)  # gone meanwhile: NoSuchDevice
            raise ProfileUnavailable(f"the audio server refused the profile {profile!r:.80} "
                                     f"of the card {card.name!r:.80}") from None

    async def _card_info(self, card: Card):
        """The server's info of *card* (by index, and the name must still be its).

        :raises NoSuchDevice: when there is no such card any more
        """
        try:
            info = await self._call(self._p.card_info(card.index))
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            info = None
        if info is None or info.name != card.name:
            raise NoSuchDevice(f"no card {card.name!r:.80} (#{card.index})")
        return info

    async def default_devices(self) -> DefaultDevices:
        info = await self._call(self._p.server_info())
        return DefaultDevices(info.default_sink_name or "", info.default_source_name or "")

    async def set_default_device(self, direction: str, device: Device) -> None:
        if direction not in ("sink", "source") or direction != device.kind:
            raise ValueError(f"the default {direction!r:.20} cannot be the {device.kind} "
                             f"{device.name!r:.80}")
        await self._device_info(device)
        setter = self._p.sink_default_set if direction == "sink" else self._p.source_default_set
        try:
            await self._call(setter(device.name))
        except pulsectl.PulseOperationFailed:
            await self._device_info(device)  # gone meanwhile: NoSuchDevice
            raise

    async def load_module(self, name: str, args: str = "") -> Module:
        try:
            index = await self._call(self._p.module_load(name, args))
        except pulsectl.PulseError:
            raise ModuleLoadFailed(f"the audio server refused to load {name!r:.80}") from None
        self._modules[index] = name
        return Module(index, name, args)

    async def unload_module(self, module: Module) -> None:
        try:
            await self._call(self._p.module_unload(module.index))
        except pulsectl.PulseOperationFailed:
            logger.debug("module #%d (%s) was gone before it was unloaded", module.index,
                         module.name)

    async def capture(self, device: Device, *, rate: int = 48000, channels: int = 1,
                      block_ms: int = 20) -> AsyncIterator[bytes]:
        pulse_capture.check_format(rate, channels, block_ms)
        info = await self._device_info(device)
        source = info.monitor_source_name if device.kind == "sink" else info.name
        blocks = pulse_capture.record(self._p, source, rate, channels, block_ms)
        # until its first block, a new source-output may be this capture (Event.maybe_own)
        self._starting_captures += 1
        starting = True
        try:
            async for block in blocks:
                if starting:
                    starting = False
                    self._starting_captures -= 1
                yield block
        finally:
            if starting:
                self._starting_captures -= 1
            await blocks.aclose()

    async def play(self, device: Device, pcm: bytes, *, rate: int = 48000,
                   channels: int = 1) -> None:
        if device.kind != "sink":
            raise ValueError(f"{device.id} is no sink to play on")
        info = await self._device_info(device)
        await pulse_playback.play(self._p, info.name, pcm, rate, channels)
