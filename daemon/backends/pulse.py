"""The PulseAudio-protocol backend (PulseAudio 16 and pipewire-pulse), on pulsectl-asyncio.

Event-driven: one subscription to sink-input, source-output, sink, source and server events.
Requests are pipelined: callers issue many writes concurrently and libpulse sends them without
waiting for each reply. Property values are bounded (:data:`MAX_PROPERTY_CHARS`) so a hostile
client's 10 KB names cannot bloat logs or D-Bus replies; values libpulse cannot give as UTF-8
text are dropped.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator, Sequence

import pulsectl
import pulsectl_asyncio
from pulsectl import _pulsectl as c

from ..model import VOLUME_NORM, Device, Stream, StreamKind, freeze
from .base import Backend, Event, ServerGone, ServerInfo

logger = logging.getLogger(__name__)

#: Longest property value kept, in characters; longer values are cut and end in an ellipsis.
MAX_PROPERTY_CHARS = 1024
#: libpulse's PA_INVALID_INDEX.
INVALID_INDEX = 0xFFFFFFFF

_FACILITIES = {"sink_input": "sink-input", "source_output": "source-output", "sink": "sink",
               "source": "source", "server": "server"}


def _props(proplist: dict) -> dict[str, str]:
    out = {}
    for key, value in (proplist or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        if len(value) > MAX_PROPERTY_CHARS:
            value = value[:MAX_PROPERTY_CHARS - 1] + "\u2026"
        out[key[:MAX_PROPERTY_CHARS]] = value
    return out


class _RawVolume:
    """A per-channel raw volume for pulsectl's setters, without its clamp at
    PA_VOLUME_UI_MAX (153 %): a user's 200 % must be restored as 200 %."""

    def __init__(self, volume: Sequence[int]):
        self.volume = tuple(volume)

    def to_struct(self):
        return c.PA_CVOLUME(len(self.volume), self.volume)


def _volume(info) -> tuple[int, ...]:
    return tuple(int(round(v * VOLUME_NORM)) for v in info.volume.values)


class PulseBackend(Backend):
    """:class:`~audiopolicyd.backends.base.Backend` over the PulseAudio native protocol.

    :param server: server address (``unix:/run/user/1000/pulse/native``), None for libpulse's
        default lookup (``$PULSE_SERVER``, then the user's runtime dir)
    :param client_name: the ``application.name`` we show the server
    """

    def __init__(self, server: str | None = None, client_name: str = "audiopolicyd"):
        self.server = server
        self.client_name = client_name
        self._pulse: pulsectl_asyncio.PulseAsync | None = None
        self._monitors: set[int] = set()
        self._modules: dict[int, str] = {}  # module index -> name, for stream owners

    async def connect(self) -> ServerInfo:
        self.close()
        self._pulse = pulsectl_asyncio.PulseAsync(self.client_name, server=self.server)
        try:
            await self._pulse.connect()
            info = await self._pulse.server_info()
        except (pulsectl.PulseError, OSError) as exc:
            self.close()
            raise ServerGone(f"cannot connect to the audio server: {exc}") from None
        return ServerInfo(info.server_name, info.server_version,
                          info.default_sink_name or "", info.default_source_name or "")

    def close(self) -> None:
        if self._pulse is not None:
            try:
                self._pulse.close()
            except Exception:  # closing a dead context must never take the daemon down
                logger.debug("closing the pulse context failed", exc_info=True)
            self._pulse = None

    @property
    def _p(self) -> pulsectl_asyncio.PulseAsync:
        if self._pulse is None:
            raise ServerGone("not connected")
        return self._pulse

    async def events(self) -> AsyncIterator[Event]:
        try:
            async for ev in self._p.subscribe_events(*_FACILITIES):
                # pulsectl's EnumValue compares equal to its name but does not str() to it
                facility = next((v for k, v in _FACILITIES.items() if ev.facility == k), None)
                if facility is not None:
                    etype = next(t for t in ("new", "change", "remove") if ev.t == t)
                    yield Event(etype, facility, ev.index)
        except pulsectl.PulseDisconnected:
            raise ServerGone("the audio server went away") from None

    async def _call(self, coro):
        try:
            return await coro
        except pulsectl.PulseDisconnected:
            raise ServerGone("the audio server went away") from None

    def _stream(self, kind: StreamKind, info) -> Stream:
        device = info.sink if kind is StreamKind.SINK_INPUT else info.source
        props = _props(info.proplist)
        # pipewire-pulse marks a capture of a sink with stream.capture.sink before linking it
        monitor = kind is StreamKind.SOURCE_OUTPUT and (
            device in self._monitors or props.get("stream.capture.sink") == "true")
        return Stream(kind, info.index, freeze(props), _volume(info), bool(info.mute),
                      bool(getattr(info, "corked", False)), device, monitor,
                      self._module_name(info))

    def _module_name(self, info) -> str:
        """The owning server module's name, '' for a client's stream. PulseAudio names the
        native-protocol module as the owner of every client stream; pipewire-pulse none."""
        name = self._modules.get(getattr(info, "owner_module", INVALID_INDEX), "")
        return "" if name.startswith("module-native-protocol") else name

    async def _learn_module(self, info) -> None:
        """Fetch the name of a stream's owner module when it is not known yet."""
        index = getattr(info, "owner_module", None)
        if index is None or index == INVALID_INDEX or index in self._modules:
            return
        try:
            module = await self._call(self._p.module_info(index))
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            return
        self._modules[index] = module.name

    async def streams(self) -> list[Stream]:
        await self.devices()  # monitor flags of source-outputs need the source list
        self._modules = {m.index: m.name for m in await self._call(self._p.module_list())}
        sinks_in = await self._call(self._p.sink_input_list())
        sources_out = await self._call(self._p.source_output_list())
        return ([self._stream(StreamKind.SINK_INPUT, i) for i in sinks_in]
                + [self._stream(StreamKind.SOURCE_OUTPUT, i) for i in sources_out])

    async def devices(self) -> list[Device]:
        sinks = await self._call(self._p.sink_list())
        sources = await self._call(self._p.source_list())
        self._monitors = {s.index for s in sources
                          if getattr(s, "monitor_of_sink", INVALID_INDEX) != INVALID_INDEX}
        return ([Device("sink", s.index, s.name, s.description, freeze(_props(s.proplist)))
                 for s in sinks]
                + [Device("source", s.index, s.name, s.description,
                          freeze({**_props(s.proplist),
                                  **({"device.class": "monitor"}
                                     if s.index in self._monitors else {})}))
                   for s in sources])

    async def stream(self, kind: StreamKind, index: int) -> Stream | None:
        getter = (self._p.sink_input_info if kind is StreamKind.SINK_INPUT
                  else self._p.source_output_info)
        try:
            info = await self._call(getter(index))
        except pulsectl.PulseIndexError:
            return None
        except pulsectl.PulseOperationFailed:
            return None
        await self._learn_module(info)
        return self._stream(kind, info)

    async def set_volume(self, kind: StreamKind, index: int, volume: Sequence[int]) -> None:
        setter = (self._p.sink_input_volume_set if kind is StreamKind.SINK_INPUT
                  else self._p.source_output_volume_set)
        try:
            await self._call(setter(index, _RawVolume(volume)))
        except pulsectl.PulseOperationFailed:
            logger.debug("%s:%d vanished before its volume was set", kind.value, index)

    async def set_mute(self, kind: StreamKind, index: int, mute: bool) -> None:
        setter = (self._p.sink_input_mute if kind is StreamKind.SINK_INPUT
                  else self._p.source_output_mute)
        try:
            await self._call(setter(index, mute))
        except pulsectl.PulseOperationFailed:
            logger.debug("%s:%d vanished before its mute was set", kind.value, index)
