"""Processing a session's mode asks for: the echo canceller of a call (issue 11, "Modes drive
processing").

A session's processing is what the ``propose_processing`` plugins its category's policy enables
answer (:func:`audiopolicyd.routing.decide.propose_processing`; the shipped ``playAndRecord``
enables ``echo_cancel_for_chat``: modes ``voiceChat``, ``videoChat``, ``gameChat``; mode
``measurement`` never gets any). As AVAudioSession, whose chat modes turn on the
voice-processing I/O unit. Only explicit sessions have a mode: a legacy app's streams (implicit
sessions, mode ``default``) get none.

While such a session is active, :class:`EchoCancel` keeps one ``module-echo-cancel`` loaded for
it, with the arguments that work on both servers (docs/routing.md, "Echo cancellation")::

    source_master=<input> sink_master=<output> aec_method=webrtc source_name=<x> sink_name=<y>

the masters being the session's route (the devices its streams would use without processing),
the names made for this load (``audiopolicyd_ec_<random>_sink``): nobody can have a device of
that name before the load, and the journal record of the load (below) names it alone. The
session's playback and capture go through the canceller's sink and source
(:meth:`EchoCancel.processing`, the router's ``processing``). It is unloaded when the session
stops wanting it: inactive, another category or mode, its client gone (the session goes),
another route (loaded again on the new masters), the daemon stopping (:meth:`EchoCancel.stop`).
The server then moves the session's streams to its default devices (both servers' rescue), and
the route puts them where they belong.

Never left loaded by us: every load is recorded in the journal (server instance, name,
arguments) **before** it is sent, and forgotten once unloaded. A daemon killed with one loaded
finds the record at its next connection (:meth:`EchoCancel.recover`): on the same server
instance (its cookie) the module with those arguments is unloaded; on another instance it died
with the server, and the record is dropped.

The canceller's own streams are server-module streams: never gated by the microphone gate,
never classified (they neither act nor are acted on). On PulseAudio the server says so
(``owner_module``; the module is trusted with
:meth:`~audiopolicyd.microphone.gate.ModuleTrust.trust_own_module`). pipewire-pulse 0.3.65
runs the canceller as PipeWire's own echo-cancel module on a PipeWire client of its own, and
shows its streams with no owner module (docs/routing.md); what ties them to our module is the
**``client.id``** PipeWire sets on every node it creates for a client (a client's own claim of
``client.id`` is overwritten: verified with ``parecord`` and ``pw-record``): the canceller's
streams carry the ``client.id`` of the canceller's devices, which we named. That id is pinned
the first time our two devices are seen (exactly one device of each name, both of one
``client.id``), and a stream with no owner module and no client of its own that carries it is
shown to the rest of the daemon as our module's stream (:meth:`EchoCancel.annotate`). The
``node.link-group`` the streams share with the devices is **not** used: any client may set it
on its own stream. docs/microphone.md's paths table says the same.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from typing import Callable, Iterable

from ..backends.base import Backend, Module, ModuleLoadFailed, NoSuchDevice, Unsupported
from ..journal import Journal
from ..microphone.gate import ModuleTrust
from ..model import Device, Session, Stream, freeze
from ..pluginmanager import PluginManager
from ..policy import PolicySet
from ..route import ECHO_CANCEL
from ..routing.decide import propose_processing
from .mirror import Mirror
from .router import Router
from .tasks import Tasks

logger = logging.getLogger(__name__)

#: The module loaded for a call's echo cancellation (pipewire-pulse maps it to PipeWire's echo
#: canceller).
ECHO_CANCEL_MODULE = "module-echo-cancel"
#: The start of the device names made for a load (``<prefix><random>_sink`` / ``_source``).
NAME_PREFIX = "audiopolicyd_ec_"


def echo_cancel_args(sink_master: Device, source_master: Device, name: str) -> str:
    """The arguments of ``module-echo-cancel`` that work on both servers (docs/routing.md).

    :param sink_master: the output the canceller plays into
    :param source_master: the input it records from
    :param name: the start of its device names (``<name>_sink``, ``<name>_source``)
    """
    return (f"source_master={source_master.name} sink_master={sink_master.name} "
            f"aec_method=webrtc source_name={name}_source sink_name={name}_sink")


@dataclasses.dataclass(eq=False)
class Canceller:
    """One echo canceller, for one session.

    :param session: the session's id
    :param masters: the ids of its sink master and source master (the session's route)
    :param name: the start of its device names
    :param argument: the module's arguments (unique to this load)
    :param module: the loaded module, None until the server answered
    :param client: pipewire-pulse: the ``client.id`` of its devices, once pinned ('' before,
        and always on PulseAudio, whose devices carry none)
    :param busy: a load or unload is under way
    """

    session: str
    masters: tuple[str, str]
    name: str
    argument: str
    module: Module | None = None
    client: str = ""
    busy: bool = False

    def device_names(self) -> tuple[str, str]:
        """The names of its sink and source."""
        return f"{self.name}_sink", f"{self.name}_source"


class EchoCancel:
    """Loads, routes through and unloads the echo canceller of each session that wants one
    (see the module docstring).

    :param backend: the connection (``load_module``, ``unload_module``, ``devices``)
    :param mirror: the graph as read (devices, streams)
    :param trust: the microphone gate's module trust (our module is trusted as our own)
    :param journal: where every load is recorded before it is sent
    :param tasks: where loads and unloads run
    :param schedule: asks for another decision pass (a canceller came or went)
    :param cookie: returns the server instance's cookie (0 when unknown)
    """

    def __init__(self, backend: Backend, mirror: Mirror, trust: ModuleTrust, journal: Journal,
                 tasks: Tasks, schedule: Callable[[], None], cookie: Callable[[], int]):
        self.backend = backend
        self.mirror = mirror
        self.trust = trust
        self.journal = journal
        self.tasks = tasks
        self.schedule = schedule
        self.cookie = cookie
        #: The cancellers loaded or being loaded, by session id.
        self.cancellers: dict[str, Canceller] = {}
        #: ``wants(session) -> bool``: whether the session's processing has echo cancellation
        #: (set by the runtime: the ``propose_processing`` plugins).
        self.wants: Callable[[Session], bool] = lambda session: False
        #: ``masters(session) -> (sink id, source id) | None``: the session's route without
        #: processing (set by the runtime); None when it has no output or no input.
        self.masters: Callable[[Session], tuple[str, str] | None] = lambda session: None
        self._failed: dict[str, tuple] = {}  # session -> (masters) a load failed for
        self._stopping = False  # the daemon stops: nothing is loaded any more

    # -- what the rest of the daemon asks ------------------------------------------------------

    def processing(self, session: Session) -> tuple[str, str] | None:
        """The router's ``processing``: the ids of the sink and source of *session*'s echo
        canceller while it is loaded and both are present, else None."""
        canceller = self.cancellers.get(session.id)
        if canceller is None or canceller.module is None:
            return None
        sink, source = (self._device(n) for n in canceller.device_names())
        return (sink.id, source.id) if sink is not None and source is not None else None

    def annotate(self, stream: Stream) -> Stream:
        """The mirror's ``annotate``: a stream pipewire-pulse shows without an owner module
        and without a client, carrying the pinned ``client.id`` of one of our cancellers'
        devices, is that canceller's (module and owner filled in as PulseAudio gives them)."""
        if stream.owner_module >= 0 or stream.module or stream.own:
            return stream
        client = stream.properties.get("client.id", "")
        if not client:
            return stream
        for canceller in self.cancellers.values():
            if canceller.client == client and canceller.module is not None:
                return dataclasses.replace(stream, module=ECHO_CANCEL_MODULE,
                                           owner_module=canceller.module.index)
        return stream

    # -- after each decision pass --------------------------------------------------------------

    def update(self, sessions: list[Session]) -> None:
        """Load a canceller for each active explicit session that wants one (on its route),
        unload the ones no session wants any more; pin our devices' client. The router moves
        the sessions' streams onto their cancellers (:meth:`processing`).

        :param sessions: every session of the pass (implicit ones never get processing)
        """
        if self._stopping:
            return
        wanted: dict[str, tuple[str, str]] = {}
        for session in sessions:
            if session.explicit and session.active and self.wants(session):
                masters = self.masters(session)
                if masters is not None and self._failed.get(session.id) != masters:
                    wanted[session.id] = masters
        for session_id in list(self._failed):
            if session_id not in {s.id for s in sessions}:
                del self._failed[session_id]
        for session_id, canceller in list(self.cancellers.items()):
            if not canceller.busy and wanted.get(session_id) != canceller.masters:
                self._spawn(self._unload(canceller))
        for session_id, masters in wanted.items():
            if session_id not in self.cancellers:
                self._load(session_id, masters)
        self._pin()

    def _spawn(self, coro) -> None:
        self.tasks.spawn(coro)

    def _load(self, session_id: str, masters: tuple[str, str]) -> None:
        sink, source = (self.mirror.devices.get(i) for i in masters)
        if sink is None or source is None:
            return
        name = NAME_PREFIX + secrets.token_hex(4)
        canceller = Canceller(session_id, masters, name, echo_cancel_args(sink, source, name),
                              busy=True)
        self.cancellers[session_id] = canceller
        self._spawn(self._loading(canceller))

    async def _loading(self, canceller: Canceller) -> None:
        try:
            if not self.journal.record_own_module(self.cookie(), ECHO_CANCEL_MODULE,
                                                  canceller.argument):
                logger.error("no echo canceller for session %s: the journal cannot record it "
                             "(a crash would leave it loaded)", canceller.session)
                self._give_up(canceller)
                return
            try:
                module = await self.backend.load_module(ECHO_CANCEL_MODULE, canceller.argument)
            except (ModuleLoadFailed, NoSuchDevice, Unsupported) as exc:
                logger.warning("no echo canceller for session %s: %s", canceller.session, exc)
                self.journal.forget_own_module(canceller.argument)
                self._give_up(canceller)
                return
            canceller.module = module
            self.trust.trust_own_module(module)
            logger.info("echo canceller #%d loaded for session %s (%s)", module.index,
                        canceller.session, canceller.argument)
        finally:
            canceller.busy = False
        if self.cancellers.get(canceller.session) is not canceller:  # stopped meanwhile
            await self._unload(canceller)
            return
        # pipewire-pulse announces the canceller's streams before the reply: read its devices
        # now rather than wait for the mirror's next read of them, so that its capture is
        # held (as any new recording) for one round trip at most
        self._pin(await self.backend.devices())
        self.schedule()

    def _give_up(self, canceller: Canceller) -> None:
        """A load that failed is not tried again for the same session and route."""
        self._failed[canceller.session] = canceller.masters
        if self.cancellers.get(canceller.session) is canceller:
            del self.cancellers[canceller.session]
        self.schedule()

    async def _unload(self, canceller: Canceller) -> None:
        canceller.busy = True
        try:
            if canceller.module is not None:
                await self.backend.unload_module(canceller.module)
                logger.info("echo canceller #%d unloaded (session %s)", canceller.module.index,
                            canceller.session)
            self.journal.forget_own_module(canceller.argument)
        finally:
            canceller.busy = False
            if self.cancellers.get(canceller.session) is canceller:
                del self.cancellers[canceller.session]
            self.schedule()

    def _device(self, name: str, devices: Iterable[Device] | None = None) -> Device | None:
        """The device called *name* (in *devices*, else in the mirror), None unless exactly
        one has that name."""
        found = [d for d in (self.mirror.devices.values() if devices is None else devices)
                 if d.name == name]
        return found[0] if len(found) == 1 else None

    def _pin(self, devices: list[Device] | None = None) -> None:
        """Pin the ``client.id`` of each loaded canceller's devices the first time both are
        seen, alone under their names and of one client (pipewire-pulse; PulseAudio's carry
        none), and show the streams already read with it as our module's."""
        pinned = False
        for canceller in self.cancellers.values():
            if canceller.client or canceller.module is None:
                continue
            found = [self._device(n, devices) for n in canceller.device_names()]
            if any(d is None for d in found):
                continue
            clients = {d.properties.get("client.id", "") for d in found if d is not None}
            if len(clients) == 1 and "" not in clients:
                canceller.client = clients.pop()
                pinned = True
                logger.info("echo canceller #%d: its devices are PipeWire client %s's; its "
                            "streams are known by it", canceller.module.index, canceller.client)
        if pinned:
            for key, stream in list(self.mirror.streams.items()):
                self.mirror.streams[key] = self.annotate(stream)
            self.schedule()

    # -- connection, start and stop ------------------------------------------------------------

    def lost(self) -> None:
        """The connection is gone: what is loaded is left to :meth:`recover` at the next
        connection (the module died with the server, or is found and unloaded)."""
        self.cancellers.clear()

    async def recover(self, cookie: int) -> None:
        """At a (re)connection: unload every module a previous run (or connection) of the
        daemon loaded and did not unload, if this is the same server instance; forget the
        records of other instances (their modules died with them)."""
        records = self.journal.own_modules()
        if not records:
            return
        loaded = await self.backend.modules() if any(c == cookie for c, _, _ in records) else []
        for record_cookie, name, argument in records:
            if record_cookie == cookie:
                for module in loaded:
                    if module.name == name and module.argument == argument:
                        await self.backend.unload_module(module)
                        logger.warning("unloaded %s #%d, loaded by an earlier run of the "
                                       "daemon and left behind (%s)", name, module.index,
                                       argument)
            self.journal.forget_own_module(argument)

    async def stop(self) -> None:
        """The daemon is stopping: unload every canceller (the server rescues the streams);
        none is loaded any more, and one whose load is under way is unloaded when it
        returns."""
        self._stopping = True
        for canceller in list(self.cancellers.values()):
            if canceller.module is not None:
                await self._unload(canceller)
        self.cancellers.clear()


def wants_echo_cancel(pm: PluginManager | None,
                      policies: Callable[[], PolicySet]) -> Callable[[Session], bool]:
    """:attr:`EchoCancel.wants` from the ``propose_processing`` plugins each category's policy
    enables (none without a plugin manager). The plugins are asked when a session is first
    seen active, or its category, mode or options changed, or the policies did (the hook's
    contract), not on every pass."""
    asked: dict[tuple, bool] = {}
    seen: list[PolicySet | None] = [None]  # the policy set the answers are of

    def wants(session: Session) -> bool:
        current = policies()
        if current is not seen[0] or len(asked) > 256:  # bounded: sessions come and go
            asked.clear()
            seen[0] = current
        key = (session.id, session.category, session.mode, session.options)
        if key not in asked:
            policy = current.policies.get(session.category)
            asked[key] = pm is not None and policy is not None and \
                ECHO_CANCEL in propose_processing(pm, session, policy)
        return asked[key]
    return wants


def route_masters(router: Router) -> Callable[[Session], tuple[str, str] | None]:
    """:attr:`EchoCancel.masters`: the session's route as the router decides it without its
    processing (:meth:`Router.decide <audiopolicyd.runtime.router.Router.decide>` on the last
    pass's graph: the user's preference, override and preferred input count), our cancellers'
    devices left out."""
    def masters(session: Session) -> tuple[str, str] | None:
        snap = router.snapshot
        devices = {i: d for i, d in snap.devices.items() if not d.name.startswith(NAME_PREFIX)}
        decision = router.decide(dataclasses.replace(snap, devices=freeze(devices)), session,
                                 processing=False)
        if decision is None or decision.output.device is None or decision.input.device is None:
            return None
        return decision.output.device, decision.input.device
    return masters
