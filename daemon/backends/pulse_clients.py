"""What the PulseAudio-protocol server vouches for about a stream's client (a part of
:class:`~audiopolicyd.backends.pulse.PulseBackend`).

Who a stream's client is. Each stream carries what the server vouches for about its client
(:attr:`Stream.vouched <audiopolicyd.model.Stream.vouched>`), read from the client's property
list and decided per server: nothing on PulseAudio, where the whole list is the client's word; on
pipewire-pulse, the ``pipewire.sec.*`` keys PipeWire takes from the kernel, for a native
PipeWire client only (a PulseAudio-protocol client's are pipewire-pulse's own: its
``pipewire.sec.pid`` listens on the socket we talk to). docs/microphone.md says what was
verified on each server.

Client events are followed on pipewire-pulse only (PulseAudio vouches for nothing). A client's
properties are read as soon as it appears or changes, cached by client index and dropped on
its ``remove`` event: a client connects before it makes a stream, so the read of its first
stream finds them, or waits for a read already on its way, instead of costing a second round
trip after the stream's own read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Awaitable, Mapping, TypeVar

import pulsectl
import pulsectl_asyncio

from ..identity import listens_on
from ..model import Stream, freeze
from .base import ServerGone
from .pulse_convert import INVALID_INDEX, props

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The keys of a client's properties PipeWire sets itself, from the kernel (``SO_PEERCRED``),
#: when the client connects, and never lets the client change (``pipewire.sec.*``): what
#: :attr:`Stream.vouched <audiopolicyd.model.Stream.vouched>` may hold (docs/microphone.md).
VOUCHED_KEYS = ("pipewire.sec.pid", "pipewire.sec.uid", "pipewire.sec.gid")


class ClientVouching:
    """The client part of :class:`~audiopolicyd.backends.pulse.PulseBackend` (a mixin: it
    uses the backend's connection, ``_p`` and ``_call``).

    :ivar _pipewire: the server is pipewire-pulse
    """

    server: str | None

    if TYPE_CHECKING:  # what the backend it is mixed into provides
        @property
        def _p(self) -> pulsectl_asyncio.PulseAsync: ...

        async def _call(self, coro: Awaitable[T]) -> T: ...

    def _reset_clients(self, pipewire: bool) -> None:
        """Forget every client (a new connection); *pipewire*: the server is pipewire-pulse."""
        self._pipewire = pipewire
        #: What the server vouches for about each client (:meth:`_vouch`), by client index;
        #: dropped on the client's change and remove events.
        self._clients: dict[int, Mapping[str, str]] = {}
        self._client_ids: dict[str, int] = {}  # PipeWire object.id -> client index
        #: The read of each client on its way (:meth:`client_event`), by client index.
        self._client_reads: dict[int, asyncio.Future] = {}
        self._pulse_server_pids: dict[int, bool] = {}  # pid -> serves our pulse socket

    def client_facilities(self) -> tuple[str, ...]:
        """The event facilities this part follows: ``client`` on pipewire-pulse, none on
        PulseAudio (nothing there is vouched for)."""
        return ("client",) if self._pipewire else ()

    def client_event(self, etype: str, index: int) -> None:
        """A client's ``new``, ``change`` or ``remove`` event (pipewire-pulse): forget what was
        read of it; read a new or changed client at once, ahead of its streams."""
        self._clients.pop(index, None)
        self._client_reads.pop(index, None)
        if etype != "remove" and self._pipewire:
            read = asyncio.ensure_future(self._read_client(index))
            read.add_done_callback(_log_failure)
            self._client_reads[index] = read

    async def _read_client(self, index: int) -> None:
        """Read client *index* and cache what the server vouches for about it, unless a later
        event made this read stale (the client changed again or went)."""
        this = asyncio.current_task()
        try:
            client = await self._call(self._p.client_info(index))
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed, ServerGone):
            return
        if self._client_reads.get(index) is this:
            self._remember(index, client.proplist)

    def _remember(self, index: int, proplist: dict) -> None:
        self._clients[index] = self._vouch(proplist)
        if isinstance((proplist or {}).get("object.id"), str):
            self._client_ids[proplist["object.id"]] = index

    def _pulse_socket(self) -> str:
        """The path of the PulseAudio-protocol socket we talk to ('' when not a Unix socket):
        :attr:`server`, else ``PULSE_SERVER``, else libpulse's default in the runtime dir."""
        spec = self.server or os.environ.get("PULSE_SERVER", "")
        if spec:
            first = spec.split()[0]
            if first.startswith("unix:"):
                return first[len("unix:"):]
            return first if first.startswith("/") else ""
        runtime = os.environ.get("PULSE_RUNTIME_PATH") or os.path.join(
            os.environ.get("XDG_RUNTIME_DIR", ""), "pulse")
        return os.path.join(runtime, "native") if os.path.isabs(runtime) else ""

    def _vouch(self, proplist: dict) -> Mapping[str, str]:
        """What the server vouches for about a client, from its property list.

        PulseAudio: nothing (a client's property list is the client's word, ``pipewire.*``
        keys included). pipewire-pulse: the ``pipewire.sec.*`` keys (:data:`VOUCHED_KEYS`) of a
        native PipeWire client; nothing for a PulseAudio-protocol client, whose connection to
        PipeWire is pipewire-pulse's own (its ``pipewire.sec.pid`` serves our socket) and whose
        other keys are its own property list merged over pipewire-pulse's. Nothing when the
        socket we talk to is not a Unix socket (a pulse client could not be told apart).
        """
        socket = self._pulse_socket() if self._pipewire else ""
        if not socket:
            return freeze({})
        properties = props(proplist)
        try:
            pid = int(properties.get("pipewire.sec.pid", ""))
        except ValueError:
            return freeze({})
        if pid not in self._pulse_server_pids:
            self._pulse_server_pids[pid] = listens_on(pid, socket)
        if self._pulse_server_pids[pid]:
            return freeze({})
        return freeze({k: properties[k] for k in VOUCHED_KEYS if k in properties})

    def _learn_clients(self, clients: list) -> None:
        self._clients, self._client_ids = {}, {}
        for client in clients:
            self._remember(client.index, client.proplist)

    def _client_index(self, info) -> int | None:
        """The index of a stream's client: the server's ``client`` field; on pipewire-pulse,
        for a stream it shows without one (a stream of the PipeWire daemon's own modules,
        such as ``libpipewire-module-echo-cancel``), the client named by the node's
        ``client.id``, which PipeWire sets itself (a client's own ``client.id`` is
        overwritten)."""
        index = getattr(info, "client", INVALID_INDEX)
        if index not in (None, INVALID_INDEX):
            return index
        if not self._pipewire or getattr(info, "owner_module", INVALID_INDEX) != INVALID_INDEX:
            return None
        object_id = (info.proplist or {}).get("client.id")
        return self._client_ids.get(object_id) if isinstance(object_id, str) else None

    async def _learn_client(self, info) -> None:
        """Read what the server vouches for about a stream's client when it is not cached (or
        wait for the read of it on its way)."""
        if not self._pipewire:
            return
        index = self._client_index(info)
        if index is None and (info.proplist or {}).get("client.id") is not None \
                and getattr(info, "owner_module", INVALID_INDEX) == INVALID_INDEX \
                and getattr(info, "client", INVALID_INDEX) == INVALID_INDEX:
            try:  # a client we have not listed yet
                self._learn_clients(await self._call(self._p.client_list()))
            except pulsectl.PulseOperationFailed:
                return
            return
        if index is None or index in self._clients:
            return
        pending = self._client_reads.get(index)
        if pending is not None:
            # shielded: a libpulse operation is never cancelled from outside
            await asyncio.shield(pending)
            if index in self._clients:
                return
        try:
            client = await self._call(self._p.client_info(index))
        except (pulsectl.PulseIndexError, pulsectl.PulseOperationFailed):
            return
        self._remember(index, client.proplist)

    def _vouched(self, stream: Stream, info) -> Stream:
        """*stream* with what the server vouches for about its client (cached reads only)."""
        index = self._client_index(info)
        vouched = self._clients.get(index) if index is not None else None
        return dataclasses.replace(stream, vouched=vouched) if vouched else stream


def _log_failure(read: asyncio.Future) -> None:
    """A client read that failed otherwise than by the client or the server going is a bug:
    logged here (a stream's read that waits for it gets the error too)."""
    if not read.cancelled() and read.exception() is not None:
        logger.error("reading a client failed", exc_info=read.exception())
