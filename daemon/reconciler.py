"""Keep the server's real state equal to the engine's decision, writing only the difference.

The reconciler owns the mirror of the audio graph (fed by backend events, never polled), runs
classification, the implicit-session tracker and :func:`audiopolicyd.engine.decide` whenever
something that matters changed, plans the writes with :mod:`audiopolicyd.effects`, journals
them, then sends them all at once (pipelined). When the server goes away it records what was
in force as *lingering*, reconnects with backoff, re-reads the graph and re-applies.

It also enforces microphone permission (:mod:`audiopolicyd.microphone.broker`), failing closed: a new
source-output is muted on its ``new`` event, in the same flush as the first read of it, before
its app is known; once read, a microphone stream of an app that is not granted is *held*: muted
and at volume 0 (two writes to undo, not one), and one whose app is granted is unmuted and gets
its volume back (both servers remember mute and volume per app, so a stale hold is cleared).
The hold is not an effect: it is not journalled and not undone at shutdown.

A held stream that a read shows unmuted or louder than 0 *fights the gate* (its app, or any
client, undid the hold): it is killed at once (:meth:`Backend.kill
<audiopolicyd.backends.base.Backend.kill>`) and its app is recorded
(:meth:`~audiopolicyd.microphone.broker.MicrophoneBroker.fought_gate`). Re-muting after the fact
cannot win: a stream that unmutes itself in a tight loop kept 62-89 % of the microphone that
way. The hold starts with the mute on ``new``; what proves a fight is a *fresh* read (sent
after every write of ours to the stream was answered, none scheduled since: see
:meth:`Reconciler._refresh`) that differs from the hold, or a read showing unmuted (above 0) a
stream that an earlier read, sent after our last write lifting it, showed muted (at 0). So the
daemon's own writes (a mute on ``new`` read back as the old state) and the server's restore
(pipewire-pulse links a new stream at the volume WirePlumber restores) are never taken for a
fight, and a stream whose app may record is never killed. While a stream is held, it is read
on every change event, also while our writes are in flight (a fighter undoes our writes before
they are answered).

A microphone stream is a source-output recording a microphone path
(:func:`audiopolicyd.microphone.broker.quiet_monitors`: a source that is not a sink's monitor, or the
monitor of a sink a module feeds from one). A *trusted* module's stream is infrastructure, never
gated: the modules the server instance (its cookie) had when the daemon first connected to it,
recorded in the journal so a restarted daemon does not trust a module loaded while it was down,
and the modules the daemon loads itself (:meth:`Reconciler.trust_own_module`). Any other
module's stream that records a microphone path is gated like an app's, as ``module:<name>``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import logging
from typing import Callable

import pluggy

from . import effects as fx
from .backends.base import Backend, Event, Module, ServerGone, ServerInfo
from .appsessions import AppSessions
from .engine import classify, decide, players_to_pause
from .journal import Journal
from .identity import RecordingApp, caller_app, recording_app, recording_member
from .logsetup import log_effect
from .microphone.broker import (
    Gate, MicrophoneBroker, Recording, Silenced, is_microphone, quiet_monitors, server_stream,
    silenced_by,
)
from .microphone.stores import Decision
from .model import (
    NEUTRAL, Device, Effect, Player, Session, Snapshot, Stream, StreamKind, freeze,
)
from .policy import PolicySet
from .sessions import ImplicitSessions

logger = logging.getLogger(__name__)

#: How long a stream that stops playing (corks) still holds its session active, in seconds;
#: also how long a new stream that pipewire-pulse shows linked but not started yet (corked at
#: volume 0) counts as playing. pipewire-pulse shows a new stream corked for a moment between
#: linking and starting it: without the hold a call would end and start again within
#: milliseconds (an unduck, and Pause, Play, Pause on the music player), or start late.
DEACTIVATION_HOLD = 0.1
#: How long the streams of a session that closed stay out of the implicit sessions, in seconds
#: (their removal usually follows the Close call by a few ms).
GHOST_SECONDS = 1.0
#: How long a read of one stream may take before it is sent again, in seconds.
READ_TIMEOUT = 2.0
#: Reconnect backoff: first delay and ceiling, in seconds. The delay starts again from the
#: first only after a connection that lasted :data:`STABLE_SECONDS`: a server that accepts us
#: and drops us at once (an object that breaks the protocol) is not hammered.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
STABLE_SECONDS = 10.0
#: A held microphone stream changed more than :data:`FLOOD_EVENTS` times within
#: :data:`FLOOD_WINDOW` seconds is flooded with writes: a fight, whatever the reads show. A
#: fighter in a loop makes the server answer our reads 50-1500 ms late (pipewire-pulse, and
#: PulseAudio under a flood of moves), while its change events keep coming; the daemon's hold
#: is 2 writes, a new stream's setup about 5 events, a mixer's slider about 30 per second.
FLOOD_EVENTS, FLOOD_WINDOW = 16, 0.1
#: While the journal cannot be written, how often a decision is tried again, in seconds.
JOURNAL_RETRY = 5.0

_KINDS = {"sink-input": StreamKind.SINK_INPUT, "source-output": StreamKind.SOURCE_OUTPUT}


class Backoff:
    """Reconnect delays, in seconds: doubling from :data:`BACKOFF_FIRST` to
    :data:`BACKOFF_MAX`, back to the first only after a connection that lasted
    :data:`STABLE_SECONDS` (a server that drops us at once is not hammered)."""

    def __init__(self) -> None:
        self._delay = BACKOFF_FIRST

    def next(self) -> float:
        """The delay before the next attempt (each call doubles the following one)."""
        delay, self._delay = self._delay, min(self._delay * 2, BACKOFF_MAX)
        return delay

    def lasted(self, seconds: float) -> None:
        """A connection ended after ``seconds``."""
        if seconds >= STABLE_SECONDS:
            self._delay = BACKOFF_FIRST


@dataclasses.dataclass(frozen=True)
class StreamView:
    """What the read side (D-Bus, CLI) shows of one stream.

    :param stream: the stream as last read
    :param category: its category
    :param rule: the classification rule that chose it
    :param session: the id of its session
    :param effect: the effect in force
    """

    stream: Stream
    category: str
    rule: str
    session: str
    effect: Effect


class Reconciler:
    """The daemon's runtime state and the loop that enforces it.

    :param backend: the audio server connection
    :param journal: the effects journal
    :param policies: a callable returning the policy set in force
    :param pm: plugin manager (classification and interaction hooks)
    :param pauser: object with async ``pause(bus_name)`` / ``play(bus_name)``
        (:class:`~audiopolicyd.mpris.MprisWatcher`), or None where no session bus is reachable
    :param seq: the activation counter, shared with the explicit sessions
    """

    def __init__(self, backend: Backend, journal: Journal, policies: Callable[[], PolicySet],
                 pm: pluggy.PluginManager | None = None, pauser=None,
                 seq: itertools.count | None = None):
        self.backend = backend
        self.journal = journal
        self.policies = policies
        self.pm = pm
        self.pauser = pauser
        self.server: ServerInfo | None = None
        self.streams: dict[str, Stream] = {}
        self.devices: dict[str, Device] = {}
        self.players: dict[str, Player] = {}
        self.applied: dict[str, fx.Applied] = {}
        self.claims: dict[str, fx.Claim] = {}
        self.effects: dict[str, Effect] = {}
        self.sessions: list[Session] = []
        self.classified: dict[str, tuple[str, str]] = {}
        #: Listeners: ``on_effects(changed: list[StreamView])``, ``on_streams(added, removed)``,
        #: ``on_server(connected: bool)``. Called on the event loop; must not block.
        self.on_effects: list[Callable[[list[StreamView]], None]] = []
        self.on_streams: list[Callable[[list[StreamView], list[str]], None]] = []
        self.on_server: list[Callable[[bool], None]] = []
        #: ``on_failure(exc)``: an internal error stopped enforcement (a bug): the daemon must
        #: restore what it can and exit non-zero. Called once, on the event loop.
        self.on_failure: Callable[[BaseException], None] | None = None
        self.failed: BaseException | None = None
        #: True once the daemon stops (:meth:`stop`): the loop ends instead of reconnecting.
        self.stopping = False
        self._tracker = ImplicitSessions(seq or itertools.count(1))
        #: The explicit sessions (:class:`~audiopolicyd.appsessions.AppSessions`), if any.
        self.app_sessions: AppSessions | None = None
        #: Microphone permission (:class:`~audiopolicyd.microphone.broker.MicrophoneBroker`); None:
        #: recordings are not brokered.
        self.microphone: MicrophoneBroker | None = None
        self.gates: dict[str, Gate] = {}  # source-output key -> gate last enforced
        #: Indices of the server's trusted modules (see the module docstring).
        self.trusted_modules: set[int] = set()
        self._module_gates: dict[int, bool] = {}  # module index -> trusted, once logged
        self._mic_apps: dict[str, tuple] = {}  # key -> (properties, session, RecordingApp)
        self._muted_on_new: set[str] = set()
        # The gate's hold (see the module docstring): stream key -> the volume it had before
        # (the user's, given back on a grant); by restore key too, for a new stream the server
        # starts at the remembered 0. Streams killed for fighting it, until their removal.
        self._held: dict[str, tuple[int, ...]] = {}
        self._held_volumes: dict[str, tuple[int, ...]] = {}
        self._killing: set[str] = set()
        # What reads of a source-output showed since our last write that lifted its mute or
        # volume (key -> [seen muted, seen at volume 0]), and that write's generation.
        self._hold_seen: dict[str, list[bool]] = {}
        self._lift_gen: dict[str, int] = {}
        self._reread: set[str] = set()  # held streams to read again once their read answers
        self._changes: dict[str, collections.deque] = {}  # held stream -> loop times of changes
        self._zero_gen: dict[str, int] = {}  # key -> generation of our volume-0 write
        self._unmute: set[str] = set()  # allowed streams the gate muted, unmuted after decide
        self._owners: dict[str, tuple[int, str | None]] = {}  # stream -> (version, session)
        self._ghosts: dict[str, float] = {}  # streams of a closed session -> loop time
        self._owners_version = 0  # AppSessions.version of the last ownership pass
        self._class_cache: dict = {}
        self._reads: collections.Counter[str] = collections.Counter()  # reads in flight
        self._removals: dict[str, int] = {}  # key -> removals seen while reads were in flight
        self._recent: dict[str, collections.deque] = {}
        # streams we gave the user's values back, until they go: what we had set on them is
        # still ours if the server hands it to them again (see _adopt_lingering)
        self._restored: dict[str, fx.Applied] = {}
        # Mirror consistency (see _send and _refresh): writes scheduled per stream, writes not
        # answered yet, and streams whose last read was discarded as older than our writes.
        self._wgen: dict[str, int] = {}
        self._inflight: collections.Counter[str] = collections.Counter()
        self._stale: set[str] = set()
        self._ramps: dict[str, asyncio.Task] = {}
        # Streams whose journal row waits for the server to acknowledge the writes that undo
        # it (a row is forgotten only then): key -> [writes not answered yet, the row].
        self._undoing: dict[str, list] = {}
        self._journal_retry: asyncio.TimerHandle | None = None
        self._probes: list[asyncio.Future] = []  # answers() waiting for the next pass
        self._hold_until: dict[str, float] = {}  # stream key -> loop time
        self._tasks: set[asyncio.Task] = set()
        self._scheduled = False
        self._added: list[str] = []
        self._changed: set[str] = set()
        self._notify_scheduled = False
        self.connected = asyncio.Event()

    # -- running ------------------------------------------------------------------------------

    async def run(self, on_first_attempt: Callable[[], None] | None = None) -> None:
        """Connect, follow events, reconnect with backoff when the server goes away. Forever.

        :param on_first_attempt: called once, after the first connection attempt succeeded
            (and the graph was read) or failed: the daemon is up either way (systemd READY)
        """
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        announced_wait = False
        while not self.stopping:
            try:
                self.server = await self.backend.connect()
            except ServerGone as exc:
                if not announced_wait:
                    logger.warning("%s; retrying with backoff up to %.0f s", exc, BACKOFF_MAX)
                    announced_wait = True
                if on_first_attempt is not None:
                    on_first_attempt()
                    on_first_attempt = None
                await asyncio.sleep(backoff.next())
                continue
            announced_wait = False
            since = loop.time()
            logger.info("connected to %s %s", self.server.server_name, self.server.server_version)
            events = self.backend.events()
            first = asyncio.ensure_future(events.__anext__())  # subscribe before reading
            try:
                await asyncio.sleep(0)
                await self.resync()
                self.connected.set()
                for cb in self.on_server:
                    cb(True)
                if on_first_attempt is not None:
                    on_first_attempt()
                    on_first_attempt = None
                self.handle(await first)
                async for event in events:
                    self.handle(event)
            except ServerGone as exc:
                if self.stopping:
                    return  # the daemon closed the connection after restoring everything
                logger.warning("%s; effects recorded as lingering, reconnecting", exc)
            finally:
                self.connected.clear()
                first.cancel()
            self._lost()
            for cb in self.on_server:
                cb(False)
            lasted = loop.time() - since
            backoff.lasted(lasted)
            if lasted < STABLE_SECONDS:
                delay = backoff.next()
                logger.info("the connection lasted %.1f s; reconnecting in %.1f s", lasted,
                            delay)
                await asyncio.sleep(delay)

    def _lost(self) -> None:
        for task in self._ramps.values():
            task.cancel()
        self._ramps.clear()
        self._undoing.clear()  # unanswered: their rows stay, and linger below
        self._reads.clear()
        self._removals.clear()
        self.journal.linger(self.applied.values())
        gone = list(self.streams)
        self.applied.clear()
        self.streams.clear()
        self._recent.clear()
        self._restored.clear()
        self._hold_until.clear()
        self._wgen.clear()
        self._stale.clear()
        self.gates.clear()
        self.trusted_modules.clear()
        self._module_gates.clear()
        self._mic_apps.clear()
        self._muted_on_new.clear()
        self._held.clear()
        self._killing.clear()
        self._hold_seen.clear()
        self._lift_gen.clear()
        self._zero_gen.clear()
        self._reread.clear()
        self._changes.clear()
        self._unmute.clear()
        self.devices.clear()
        self.effects.clear()
        self.classified.clear()
        self._class_cache.clear()
        self.sessions = []
        self.backend.close()
        if gone:
            for cb in self.on_streams:
                cb([], gone)

    async def resync(self) -> None:
        """Re-read the whole graph, adopt the journal, and reconcile."""
        await self._trust_modules()
        devices = await self.backend.devices()
        streams = await self.backend.streams()
        self.devices = {f"{d.kind}:{d.index}": d for d in devices}
        self.streams = {s.key: s for s in streams}
        journalled = self.journal.effects()
        for key, applied in journalled.items():
            stream = self.streams.get(key)
            if stream is not None and stream.restore_key == applied.restore_key:
                self.applied[key] = fx.observe(applied, stream)
                logger.info("recovered journalled state of %s (%s)", key, stream.label)
            else:
                self.journal.linger([applied])
        for stream in self.streams.values():
            if stream.key not in self.applied:
                self._adopt_lingering(stream)
        self.claims = dict(self.journal.pauses())
        if self.microphone is not None:
            for index in self.backend.unreadable.get(StreamKind.SOURCE_OUTPUT, ()):
                # its app and source are unknowable: fail closed
                key = f"{StreamKind.SOURCE_OUTPUT.value}:{index}"
                self._send(key, self.backend.set_mute(StreamKind.SOURCE_OUTPUT, index, True),
                           muted=True)
        self.reconcile()

    async def _trust_modules(self) -> None:
        """Which of the server's modules are trusted (see the module docstring), recorded in
        the journal per server instance (its cookie):

        * at the first connection to an instance: the modules it has; but when the journal
          holds a previous instance (the server restarted), only those that instance trusted
          too (same name and arguments). Any PulseAudio client can make the server exit
          (``pactl exit``), and the client that connects first starts the next instance
          (socket activation, autospawn): a module it loads before the daemon reconnects must
          not be trusted;
        * at a later connection to the same instance (the daemon restarted): those recorded
          (same index, name and arguments).

        A module list that cannot be recorded trusts none (fail closed, as an effect the
        journal cannot record is not applied)."""
        cookie = self.server.cookie if self.server is not None else 0
        modules = {m.index: (m.name, m.argument) for m in await self.backend.modules()}
        instance = self.journal.trusted_instance()
        if instance is None or instance[0] != cookie:
            if instance is None:
                trusted = set(modules)
            else:
                known = set(instance[1].values())
                trusted = {i for i, m in modules.items() if m in known}
            if self.journal.trust_modules(cookie, {i: modules[i] for i in trusted}):
                self.trusted_modules = trusted
                new = sorted(f"{modules[i][0]} #{i}" for i in set(modules) - trusted)
                logger.info("first connection to this server instance (cookie %d): %d "
                            "module(s) trusted%s", cookie, len(trusted),
                            f"; not in the previous instance, not trusted: {', '.join(new)}"
                            if new else "")
            else:
                self.trusted_modules = set()
                logger.error("the server's modules cannot be recorded in the journal: none is "
                             "trusted; a module recording the microphone is gated as an app")
            return
        recorded = instance[1]
        self.trusted_modules = {i for i, m in modules.items() if recorded.get(i) == m}
        later = sorted(f"{modules[i][0]} #{i}" for i in set(modules) - self.trusted_modules)
        logger.info("server instance seen before (cookie %d): %d module(s) trusted as recorded "
                    "at the first connection%s", cookie, len(self.trusted_modules),
                    f"; loaded since, not trusted: {', '.join(later)}" if later else "")

    def trust_own_module(self, module: Module) -> None:
        """Trust a module the daemon loaded itself (none yet: for routing), for this server
        instance, also after a restart of the daemon. Call it with the index the server
        returned, before the module's streams are read."""
        self.trusted_modules.add(module.index)
        cookie = self.server.cookie if self.server is not None else 0
        self.journal.trust_module(cookie, module.index, module.name, module.argument)

    def handle(self, event: Event) -> None:
        """Fold one server event into the mirror (fetching what it names, concurrently)."""
        kind = _KINDS.get(event.facility)
        logger.debug("event %s %s %d", event.type, event.facility, event.index)
        if kind is not None:
            key = f"{event.facility}:{event.index}"
            if event.type == "remove":
                if self._reads[key]:
                    self._removals[key] = self._removals.get(key, 0) + 1
                self._remove(key)
            elif key in self._held and self._flooded(key):
                pass  # killed
            elif key in self._held and self._reads[key]:
                # a fighter floods us with change events: one read of a held stream at a time,
                # and one more once it is answered (a read queued behind hundreds of others
                # would see the fight late)
                self._reread.add(key)
                if self._inflight[key]:
                    self._stale.add(key)
            elif self._inflight[key]:
                # a read now would be answered before our write: read once it is answered
                self._stale.add(key)
                if key in self._held:
                    # but a fight shows in any read (see _fights_gate): read now too; a
                    # server flooded by the fighter can take 0.5 s to answer our writes
                    self._spawn(self._refresh(kind, event.index, key, self._wgen.get(key, 0)))
            else:
                if (event.type == "new" and kind is StreamKind.SOURCE_OUTPUT
                        and self.microphone is not None):
                    # fail closed: silent before anything is known about it (same flush, and
                    # ahead of the read: a stream whose read breaks the connection is muted)
                    self._muted_on_new.add(key)
                    self._held.setdefault(key, ())  # the hold starts here (see _fights_gate)
                    self._send(key, self.backend.set_mute(kind, event.index, True), muted=True)
                self._spawn(self._refresh(kind, event.index, key, self._wgen.get(key, 0)))
        elif event.facility in ("sink", "source", "card"):  # changes come coalesced
            self._spawn(self._refresh_devices())
        elif event.facility == "module" and event.type in ("new", "remove"):
            # pipewire-pulse gives a new module an unloaded one's index: never trusted
            self._module_gates.pop(event.index, None)
            if event.index in self.trusted_modules:
                self.trusted_modules.discard(event.index)
                self.journal.forget_trusted_module(
                    self.server.cookie if self.server is not None else 0, event.index)
                logger.info("trusted module #%d was unloaded; a module at its index is not "
                            "trusted", event.index)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, ServerGone):
                logger.debug("write or read lost with the server: %s", exc)
            else:
                self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """An internal error: enforcement cannot be trusted any more (see :attr:`on_failure`)."""
        logger.critical("internal error in the reconciler; stopping", exc_info=exc)
        if self.failed is None:
            self.failed = exc
            if self.on_failure is not None:
                self.on_failure(exc)

    async def _refresh_devices(self) -> None:
        devices = await self.backend.devices()
        self.devices = {f"{d.kind}:{d.index}": d for d in devices}
        self._schedule()  # which sources are microphone paths may have changed

    async def _refresh(self, kind: StreamKind, index: int, key: str, gen: int) -> None:
        """Read one stream and fold it into the mirror.

        The read shows the stream's volume and mute as they are after our writes only if every
        write to the stream scheduled before it was answered when it was sent (pipewire-pulse
        answers a read pipelined behind a volume write with the old volume) and no write was
        scheduled after it. Otherwise those two values are older than the mirror's.

        Every answer is folded in, in order (one connection answers in order): during a burst
        of events (pipewire-pulse announces, links and starts a new stream within ~7 ms) the
        first answer already lets a policy act. An answer for a stream removed meanwhile is
        dropped.

        :param gen: the stream's write count when the read was scheduled (tasks start in the
            order they are created, so a read goes out after the writes scheduled before it)
        """
        removals = self._removals.get(key, 0)
        self._reads[key] += 1
        writes_answered = not self._inflight[key]
        overdue: list[bool] = []

        def read_again() -> None:
            # never cancel a libpulse operation from outside: read again, ignore this one
            overdue.append(True)
            logger.warning("reading %s got no answer in %.0f s; reading it again",
                           key, READ_TIMEOUT)
            self._spawn(self._refresh(kind, index, key, self._wgen.get(key, 0)))

        timer = asyncio.get_running_loop().call_later(READ_TIMEOUT, read_again)
        try:
            stream = await self.backend.stream(kind, index)
            if overdue:
                return
            if logger.isEnabledFor(logging.DEBUG):
                if stream is None:
                    logger.debug("read %s: no such stream", key)
                else:
                    logger.debug("read %s: volume %s, muted %s, corked %s, device %d", key,
                                 stream.volume, stream.muted, stream.corked, stream.device)
        finally:
            timer.cancel()
            self._reads[key] -= 1
            removed = self._removals.get(key, 0) != removals
            if not self._reads[key]:
                del self._reads[key]
                self._removals.pop(key, None)
        if removed:
            return
        if stream is None:
            self._remove(key)
            return
        self._update(stream, writes_answered and self._wgen.get(key, 0) == gen, gen)
        if key in self._reread and not self._reads[key] and key in self.streams \
                and self.connected.is_set():
            self._reread.discard(key)
            self._spawn(self._refresh(kind, index, key, self._wgen.get(key, 0)))

    def _update(self, stream: Stream, fresh: bool, gen: int = 0) -> None:
        """Fold a read into the mirror.

        :param fresh: False when the read's volume and mute may predate our writes: the
            mirror keeps its own (our writes), and the stream is read again once they are
            answered.
        :param gen: the stream's write count when the read was scheduled
        """
        key = stream.key
        if stream.kind is StreamKind.SOURCE_OUTPUT and gen >= self._lift_gen.get(key, 0):
            if key in self._held and self._fights_gate(stream, fresh):
                return
            # pipewire-pulse starts a stream at volume 0 and WirePlumber then restores its
            # volume and mute: only what a read shows after that is a hold to defend
            zeroed = gen >= self._zero_gen.get(key, gen + 1)
            seen = self._hold_seen.setdefault(key, [False, False])
            seen[0] |= stream.muted and (stream.settled or zeroed)
            seen[1] |= zeroed and not any(stream.volume)
        old = self.streams.get(key)
        if old is not None and not fresh:
            stream = dataclasses.replace(stream, volume=old.volume, muted=old.muted)
            self._stale.add(key)
        elif old is None and not fresh:
            if key in self._muted_on_new:  # read before our mute-on-new was answered
                stream = dataclasses.replace(stream, muted=True)
            self._stale.add(key)
        self.streams[key] = stream
        if old is None:
            if stream.kind is StreamKind.SINK_INPUT and stream.linked and not stream.settled:
                self._hold(key)  # pipewire-pulse: linked, not started yet; react now
            if key not in self.applied and stream.settled:
                self._adopt_lingering(stream)
            self._added.append(key)
            self._schedule()
            return
        applied = self.applied.get(key)
        if applied is not None and fresh:
            seen = fx.observe(applied, stream, self._recent.get(key, ()))
            if seen is not applied:
                logger.info("user changed %s (%s) during an effect: volume %s, muted %s; "
                            "kept, and restored at the end", key, stream.label, stream.volume,
                            stream.muted)
                if seen.ramp_from is None and applied.ramp_from is not None:
                    self._stop_ramp(key)  # the user's volume is not overwritten by later steps
                self.applied[key] = seen
                self.journal.write([seen])
        if old.playing and not stream.playing:
            self._hold(key)
        elif stream.playing:
            self._hold_until.pop(key, None)
        if not old.settled and stream.settled:
            # its volume is the user's now (pipewire-pulse delivers it after linking): decide
            if key not in self.applied:
                self._adopt_lingering(stream)
            self._schedule()
        if (old.corked != stream.corked or old.properties != stream.properties
                or old.muted != stream.muted or old.device != stream.device
                or (stream.kind is StreamKind.SOURCE_OUTPUT and old.volume != stream.volume)):
            self._schedule()

    def _flooded(self, key: str) -> bool:
        """Count a change event of a held stream; kill it when it changed more than
        :data:`FLOOD_EVENTS` times in :data:`FLOOD_WINDOW` while its app may not record. True
        when it is being killed."""
        if key in self._killing:
            return True
        now = asyncio.get_running_loop().time()
        times = self._changes.setdefault(key, collections.deque(maxlen=FLOOD_EVENTS + 1))
        times.append(now)
        stream = self.streams.get(key)
        if len(times) <= FLOOD_EVENTS or now - times[0] > FLOOD_WINDOW or stream is None:
            return False
        return self._kill_fighter(stream, f"changed {len(times)} times in "
                                          f"{(now - times[0]) * 1000:.0f} ms (a flood of writes)")

    def _fights_gate(self, stream: Stream, fresh: bool) -> bool:
        """Kill a held microphone stream that someone else unmuted or raised, unless its app
        may record now; True when it is being killed.

        A read proves a fight when it is fresh (every write of ours to the stream was answered
        before it went out, none since: what differs from our hold was done by someone else),
        or when it shows unmuted (above 0) a stream that an earlier read, scheduled after our
        last write that lifted its mute (volume), showed muted (at 0): replies on one
        connection come in order, and nobody but the stream's fighter lifted it since. Only
        reads scheduled after that write of ours get here (see :meth:`_update`), so a read
        answering the state before our mute on ``new`` never counts.
        """
        key = stream.key
        if key in self._killing:
            return True
        seen = self._hold_seen.get(key, (False, False))
        # settled: pipewire-pulse has linked it and WirePlumber's restore (volume and mute)
        # has arrived; a volume above 0 is a fight only once we wrote 0
        unmuted = not stream.muted and ((fresh and stream.settled) or seen[0])
        raised = any(stream.volume) and key in self._zero_gen and (fresh or seen[1])
        if not (unmuted or raised):
            return False
        return self._kill_fighter(stream, " and ".join(w for w in (
            "unmuted" if unmuted else "",
            f"volume raised to {max(stream.volume)}" if raised else "") if w))

    def _kill_fighter(self, stream: Stream, what: str) -> bool:
        """Kill a held stream that fights the gate, unless its app may record now; True when
        it is being killed."""
        key = stream.key
        cached = self._mic_apps.get(key)
        if self.gates.get(key) is not Gate.BLOCKED or cached is None \
                or self.microphone.allowed(cached[2].app_id):
            return False  # granted meanwhile: the next pass lifts the hold
        self._killing.add(key)
        self._spawn(self.backend.kill(stream.kind, stream.index))
        self.microphone.fought_gate(cached[2], key, stream.label, what)
        return True

    def _hold(self, key: str) -> None:
        """Count a stream that is not playing as playing for :data:`DEACTIVATION_HOLD`."""
        loop = asyncio.get_running_loop()
        self._hold_until[key] = loop.time() + DEACTIVATION_HOLD
        loop.call_later(DEACTIVATION_HOLD, self._schedule)

    def _adopt_lingering(self, stream: Stream) -> None:
        """A new stream the server started at a volume or mute we had set gets the user's back.

        Both servers remember volume and mute per role or app, so every new stream of a role we
        are ducking (or ducked when its streams vanished, or when the server went away) starts
        at our value. The values of ours are those of the live streams of that restore key we
        act on, and those of its lingering journal row (our target, every step of a ramp, our
        mute). The row is kept while the server may still hand our value out, so every stream
        of the key gets the user's value back, and is forgotten when a stream of the key starts
        at none of them (the server remembers another value now).
        """
        sources = [(a, self._recent.get(a.key, ())) for a in self.applied.values()
                   if a.restore_key == stream.restore_key and a.key != stream.key]
        restored = self._restored.pop(stream.key, None)
        if restored is not None and restored.restore_key == stream.restore_key:
            # pipewire-pulse shows a stream it sets up unlinked again for a moment, and
            # WirePlumber hands it the value it remembers (ours) when it links again, over the
            # user's value we had given back (seen right after a restart of the server)
            sources.append((restored, ()))
        lingering = (self.journal.lingering(stream.restore_key)
                     if self.journal.has_lingering() else None)
        if lingering is not None:
            sources.append((lingering, ()))
        for source, recent in sources:
            at_ours = source.target is not None and source.at_ours(stream.volume, recent)
            muted = source.muted_by_us and stream.muted
            if not (at_ours or muted):
                continue
            # the gain in force is unknown (a ramp step may have been remembered): the next
            # plan writes base x the gain wanted now
            applied = fx.Applied(stream.key, stream.restore_key,
                                 base=source.base if at_ours else stream.volume,
                                 gain=fx.UNKNOWN_GAIN if at_ours else 1.0,
                                 target=stream.volume if at_ours else None,
                                 muted_by_us=muted)
            self.applied[stream.key] = applied
            self.journal.write([applied])
            logger.info("%s (%s) started with a value we had set on %s; it gets the user's back",
                        stream.key, stream.label, stream.restore_key)
            return
        if lingering is not None:
            self.journal.forget_lingering(stream.restore_key)
            logger.info("%s (%s) started at a value that is not ours: the server no longer "
                        "remembers our value for %s", stream.key, stream.label,
                        stream.restore_key)

    def _remove(self, key: str) -> None:
        if self.streams.pop(key, None) is None:
            return
        self._hold_until.pop(key, None)
        self._stop_ramp(key)
        applied = self.applied.pop(key, None)
        undoing = self._undoing.pop(key, None)
        if applied is not None or undoing is not None:
            # the server may remember our value (our undoing write may not have landed)
            self.journal.linger([applied if applied is not None else undoing[1]])
        self._recent.pop(key, None)
        self._restored.pop(key, None)
        self._wgen.pop(key, None)
        self._stale.discard(key)
        self.effects.pop(key, None)
        self.gates.pop(key, None)
        self._mic_apps.pop(key, None)
        self._muted_on_new.discard(key)
        self._held.pop(key, None)
        self._killing.discard(key)
        self._hold_seen.pop(key, None)
        self._lift_gen.pop(key, None)
        self._zero_gen.pop(key, None)
        self._reread.discard(key)
        self._changes.pop(key, None)
        self._unmute.discard(key)
        self._schedule()
        for cb in self.on_streams:
            cb([], [key])

    def players_changed(self, players: dict[str, Player], changed: Player | None) -> None:
        """MPRIS watcher callback: a player came, went or changed status."""
        self.players = dict(players)
        if changed is not None:
            claims = fx.observe_player(self.claims, changed)
            if claims is not self.claims:
                if claims[changed.bus_name].waived:
                    logger.info("user changed %s to %s during an interruption; "
                                "it will not be paused or resumed by us", changed.bus_name,
                                changed.status)
                self.claims = dict(claims)
                self.journal.write_pauses(self.claims)
        self._schedule()

    def policies_changed(self) -> None:
        """The policy set in force changed: classify everything again."""
        self._class_cache.clear()
        self._schedule()

    # -- deciding and applying ----------------------------------------------------------------

    def _schedule(self) -> None:
        """Reconcile once on the next loop iteration, however many changes come before it."""
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_reconcile)

    def request_reconcile(self) -> None:
        """Decide again soon (sessions changed)."""
        self._schedule()

    def _scheduled_reconcile(self) -> None:
        self._scheduled = False
        if self.connected.is_set() or self.streams:
            try:
                self.reconcile()
            except Exception as exc:  # a bug: never go on half-enforcing
                self._fail(exc)
                return
        probes, self._probes = self._probes, []
        for probe in probes:
            if not probe.done():
                probe.set_result(True)

    async def answers(self, timeout: float) -> bool:
        """Whether a decision pass runs, and succeeds, within ``timeout`` seconds: the
        systemd watchdog is pinged only then (a loop blocked or a reconciler that failed is
        not alive, whatever timers still fire).

        :param timeout: seconds
        """
        if self.failed is not None:
            return False
        probe = asyncio.get_running_loop().create_future()
        self._probes.append(probe)
        self._schedule()
        try:
            return await asyncio.wait_for(probe, timeout)
        except asyncio.TimeoutError:
            return False

    def snapshot(self) -> Snapshot:
        return Snapshot(freeze(self.streams), freeze(self.devices), freeze(self.players))

    def reconcile(self) -> None:
        """Decide, journal, then send every write at once."""
        policies = self.policies()
        owned = self._stream_owners()
        if self.microphone is not None:
            self._enforce_microphone(owned)
        snap = self.snapshot()
        legacy = Snapshot(freeze({k: s for k, s in self.streams.items() if k not in owned}),
                          snap.devices, snap.players) if owned else snap
        self.classified = classify(legacy, policies, self.pm, self._class_cache)
        now = asyncio.get_running_loop().time()
        self._hold_until = {k: t for k, t in self._hold_until.items() if t > now}
        # a microphone stream the gate silences does not act on others (issue 9 item 6)
        inert = {k for k, gate in self.gates.items() if gate is Gate.BLOCKED}
        self.sessions = self._tracker.update(legacy, self.classified, set(self._hold_until),
                                             inert)
        if self.app_sessions is not None:
            members: dict[str, list[str]] = {}
            for key, sid in owned.items():
                if sid:
                    members.setdefault(sid, []).append(key)
            for sid, session in self.app_sessions.sessions.items():
                self.sessions.append(session.model(sorted(members.get(sid, ()))))
                for key in members.get(sid, ()):
                    self.classified[key] = (session.category, f"session {sid}")
        decided = decide(snap, self.sessions, policies, self.pm)
        desired = dict(decided)  # what is applied now (below: not before a stream settles)
        if self._unmute:
            self._lift_gate(decided)

        plans: dict[str, tuple[fx.Applied | None, fx.Applied | None, fx.Ops]] = {}
        for key, effect in desired.items():
            stream = snap.streams[key]
            before = self.applied.get(key)
            if before is None and not stream.settled:
                # its volume is not the user's yet: planned, and reported, once settled
                desired[key] = NEUTRAL
                continue
            after, ops = fx.plan(before, stream, effect)
            if ops.mute is False and self.gates.get(key) is Gate.BLOCKED:
                ops = dataclasses.replace(ops, mute=None)  # permission keeps it muted
            if after != before or not ops.empty:
                plans[key] = (before, after, ops)
        upserts = {k: after for k, (before, after, _) in plans.items()
                   if after is not None and after != before}
        if upserts and not self.journal.write(upserts.values()):
            # Fail safe: what the journal cannot record is not applied (a crash would leave it
            # for good); undoing goes on. Tried again by the next decision.
            for key in upserts:
                del plans[key]
                desired[key] = self.effects.get(key, NEUTRAL)
            self._retry_journal()
        for key, (before, after, ops) in plans.items():
            stream = snap.streams[key]
            if after is None:
                self.applied.pop(key, None)
            else:
                self.applied[key] = after
            writes = self._apply(stream, ops)
            if after is None and before is not None:
                self._forget_when_answered(before, writes)
                self._restored[key] = before
        changed = [k for k, e in desired.items() if self.effects.get(k, NEUTRAL) != e]
        self.effects = desired
        if self.microphone is not None:
            self._publish_recording(owned, decided)
        self._reconcile_pauses(snap, desired)
        if self.app_sessions is not None:
            self.app_sessions.update(self.sessions)
        self._changed.update(changed)
        if (self._added or self._changed) and not self._notify_scheduled:
            # Two loop turns later: the write tasks created above run on the next turn and
            # queue their requests, which libpulse flushes from a deferred callback on the turn
            # after; signals and logs must not hold up that flush.
            self._notify_scheduled = True
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._notify)

    def _enforce_microphone(self, owned: dict[str, str]) -> None:
        """Mute every microphone stream whose app may not record; unmute the ones that became
        allowed; tell the broker who waits for a decision."""
        broker = self.microphone
        waiting: dict[str, RecordingApp] = {}
        quiet = quiet_monitors(Snapshot(self.streams, self.devices))
        for key, stream in self.streams.items():
            if stream.kind is not StreamKind.SOURCE_OUTPUT or key in self._killing:
                continue
            before = self.gates.get(key)
            applied = self.applied.get(key)
            microphone = is_microphone(stream, quiet)
            if microphone and stream.owner_module >= 0:
                microphone = not self._module_trusted(stream)
            if not microphone:
                if stream.muted and (key in self._muted_on_new or before is Gate.BLOCKED) \
                        and not (applied is not None and applied.muted_by_us):
                    self._muted_on_new.discard(key)
                    self._send(key, self.backend.set_mute(stream.kind, stream.index, False),
                               muted=False)
                    logger.info("%s (%s) records %s: %s, unmuted", key, stream.label,
                                self._source_name(stream),
                                "a trusted module's stream" if stream.module
                                else "the PipeWire daemon's own stream" if server_stream(stream)
                                else "not a microphone path")
                    self._release_microphone(stream)  # its volume too, if held at 0
                self.gates[key] = Gate.EXEMPT
                continue
            app = self._gated_app(stream, owned.get(key))
            gate = Gate.ALLOWED if broker.allowed(app.app_id) else Gate.BLOCKED
            if gate is Gate.BLOCKED:
                again = bool(self._held.get(key))
                if self._hold_microphone(stream):
                    logger.info("%s (%s) silenced: microphone permission of %s is %s%s", key,
                                stream.label, app.app_id, broker.decision(app.app_id),
                                " (held again)" if again else "")
            elif gate is Gate.ALLOWED:
                if before is not Gate.ALLOWED and stream.muted \
                        and not (applied is not None and applied.muted_by_us):
                    self._unmute.add(key)  # once the effects are decided: see _lift_gate
                self._release_microphone(stream)
            self._muted_on_new.discard(key)
            if gate is not Gate.ALLOWED:
                self._unmute.discard(key)
            self.gates[key] = gate
            if gate is Gate.BLOCKED and broker.decision(app.app_id) is Decision.UNDETERMINED:
                waiting[key] = app
        broker.sync_streams(waiting)

    def _lift_gate(self, desired: dict[str, Effect]) -> None:
        """Unmute the microphone streams whose app may record now and that the gate had muted,
        unless the effect just decided mutes them too (a policy with ``records = false``, an
        interruption): then the mute stays, and is lifted in the first pass that no longer
        wants it. Unmuting first and letting the effect mute again would hand the stream the
        microphone between the two writes (seen on pipewire-pulse: about 2 ms of audio).
        *desired* is the engine's decision, also for a stream not settled yet (held at volume
        0), whose effect is applied only once it settles."""
        for key in list(self._unmute):
            stream = self.streams.get(key)
            if stream is None or not stream.muted:
                self._unmute.discard(key)
            elif not desired.get(key, NEUTRAL).mute:
                self._unmute.discard(key)
                self._send(key, self.backend.set_mute(stream.kind, stream.index, False),
                           muted=False)
                logger.info("%s (%s) unmuted: its app may record", key, stream.label)

    def _publish_recording(self, owned: dict[str, str], decided: dict[str, Effect]) -> None:
        """Tell the broker who records a microphone now, and for each app whether it hears it
        and, if not, every reason the daemon knows (:class:`~audiopolicyd.microphone.broker.Silenced`):
        the gate's (permission, the desktop's switch), the effects just decided (a policy that
        does not record, an interruption) and a mute nobody of ours explains."""
        broker = self.microphone
        recording: dict[str, list] = {}  # app id -> [name, keys, reasons of each stream]
        for key, stream in self.streams.items():
            gate = self.gates.get(key)
            if gate not in (Gate.ALLOWED, Gate.BLOCKED) or not stream.playing:
                continue
            app = self._gated_app(stream, owned.get(key))
            reasons = set(silenced_by(broker, app.app_id, gate, decided.get(key, NEUTRAL)))
            if stream.muted and not reasons:
                reasons.add(Silenced.MUTED.value)
            entry = recording.setdefault(app.app_id, [app.name, [], []])
            entry[1].append(key)
            entry[2].append(reasons)
        out = []
        for app_id, (name, keys, reasons) in sorted(recording.items()):
            silenced = all(reasons)  # no stream hears the microphone
            why = tuple(sorted(set().union(*reasons))) if silenced else ()
            out.append(Recording(app_id, name, silenced, len(keys), tuple(keys), why))
        broker.set_recording(tuple(out))

    def _gated_app(self, stream: Stream, session_id: str | None) -> RecordingApp:
        """The app the gate decides for: ``module:<name>`` for a server module's stream that
        is gated (loaded at run time), else :meth:`_recording_app`."""
        if stream.owner_module >= 0:
            return RecordingApp(f"module:{stream.module}", stream.module, "module")
        return self._recording_app(stream, session_id)

    def _hold_microphone(self, stream: Stream) -> bool:
        """Hold a microphone stream whose app may not record: muted and at volume 0; True
        when something was written.

        Its mute is held from the mute on ``new``; its volume 0 once written over a volume the
        server had given it (:attr:`~audiopolicyd.model.Stream.settled`), or found linked at 0
        (see below): pipewire-pulse shows a new stream at volume 0 until WirePlumber's restored
        volume arrives, which is the server's write, not a fight (:meth:`_fights_gate`).
        """
        key = stream.key
        wrote = False
        if not stream.muted:
            self._send(key, self.backend.set_mute(stream.kind, stream.index, True), muted=True)
            wrote = True
        if stream.settled:
            self._held_volumes[stream.restore_key] = stream.volume
            if not self._held.get(key):
                self._held[key] = stream.volume  # given back on a grant
            zero = (0,) * len(stream.volume)
            self._send(key, self.backend.set_volume(stream.kind, stream.index, zero),
                       volume=zero)
            self._zero_gen[key] = self._wgen[key]
            wrote = True
        elif stream.linked and key not in self._zero_gen and not self._restores_late():
            # at 0 already: PulseAudio started it at the 0 it remembers from an earlier hold
            # of its app (module-stream-restore); a volume above 0 from now on is a fight. Not
            # on pipewire-pulse: a stream linked at 0 may still get WirePlumber's restored
            # volume (seen: a new stream of an app held earlier, linked at 0, then restored to
            # 100 %), which is no fight
            self._zero_gen[key] = self._wgen.get(key, 0)
        return wrote

    def _restores_late(self) -> bool:
        """Whether the server links a new stream at volume 0 before its restored volume
        arrives (pipewire-pulse with WirePlumber; PulseAudio restores before announcing)."""
        return "PipeWire" in (self.server.server_name if self.server else "")

    def _release_microphone(self, stream: Stream) -> None:
        """Give a microphone stream whose app may record the volume it had before a hold:
        its own, or, for a stream the server starts at the 0 it remembers from an earlier hold
        of its app (restore key), the volume the app had then. Runs on every pass while the
        app is granted, until a stream of that restore key is linked above 0 (the server
        remembers a volume of its own again)."""
        before = self._held.pop(stream.key, None)
        if any(stream.volume):
            if stream.linked:
                self._held_volumes.pop(stream.restore_key, None)
            return
        volume = before or self._held_volumes.get(stream.restore_key)
        if not volume or not stream.linked:
            return
        self._send(stream.key, self.backend.set_volume(stream.kind, stream.index, volume),
                   volume=volume)
        logger.info("%s (%s) gets its volume back: %s", stream.key, stream.label, volume)

    def _source_name(self, stream: Stream) -> str:
        device = self.devices.get(f"source:{stream.device}")
        return device.name if device is not None else f"source #{stream.device}"

    def _module_trusted(self, stream: Stream) -> bool:
        """Whether the module owning *stream* (which records a microphone path) is trusted;
        the decision is logged once per module, once the stream is linked (pipewire-pulse
        announces it before it knows the source)."""
        index = stream.owner_module
        trusted = index in self.trusted_modules
        if self._module_gates.get(index) is not trusted and stream.linked:
            self._module_gates[index] = trusted
            if trusted:
                logger.info("%s #%d (a module of the server's own configuration) captures %s: "
                            "trusted, not gated", stream.module, index, self._source_name(stream))
            else:
                logger.warning("%s #%d loaded at run time captures %s: gated as module:%s",
                               stream.module, index, self._source_name(stream), stream.module)
        return trusted

    def _recording_app(self, stream: Stream, session_id: str | None) -> RecordingApp:
        """The app a microphone stream records for: its explicit session's app when it has
        one and its process is that app's as the server or /proc confirm
        (:func:`audiopolicyd.identity.recording_member`; streams of one session share its
        decision), else named from the stream (:func:`audiopolicyd.identity.recording_app`).
        Cached per stream."""
        cached = self._mic_apps.get(stream.key)
        if cached is not None and cached[0] == (stream.properties, stream.vouched) \
                and cached[1] == session_id:
            return cached[2]
        session = (self.app_sessions.sessions.get(session_id)
                   if session_id and self.app_sessions is not None else None)
        if session is not None and not recording_member(stream.properties, stream.vouched,
                                                        session.identity):
            session = None  # joined by a claim /proc does not confirm: named from the stream
        if session is not None:
            app = caller_app(session.identity, session.name or stream.app_name)
        else:
            app = recording_app(stream.properties, vouched=stream.vouched)
        self._mic_apps[stream.key] = ((stream.properties, stream.vouched), session_id, app)
        return app

    def _stream_owners(self) -> dict[str, str]:
        """Streams that belong to an explicit session: stream key -> session id (cached per
        stream until sessions are created or removed)."""
        if self.app_sessions is None:
            return {}
        version = self.app_sessions.version
        if not self.app_sessions.sessions and not self._ghosts \
                and version == self._owners_version:
            return {}  # no session, and none closed since the last pass
        self._owners_version = version
        loop = asyncio.get_running_loop()
        out = {}
        for key, stream in self.streams.items():
            cached = self._owners.get(key)
            if cached is None or cached[0] != version:
                owner = self.app_sessions.owner_of(stream.properties, stream.pid)
                if owner is None and cached is not None and cached[1] is not None:
                    # its session just closed; the stream is probably going too: do not let
                    # it act as a legacy app meanwhile
                    self._ghosts[key] = loop.time() + GHOST_SECONDS
                    loop.call_later(GHOST_SECONDS, self._schedule)
                cached = self._owners[key] = (version, owner.id if owner else None)
            if cached[1] is not None:
                out[key] = cached[1]
            elif self._ghosts.get(key, 0) > loop.time():
                out[key] = ""  # owned by no session, and no implicit session either
        for gone in set(self._owners) - set(self.streams):
            del self._owners[gone]
        self._ghosts = {k: t for k, t in self._ghosts.items() if k in self.streams}
        return out

    def _notify(self) -> None:
        """Tell listeners (D-Bus signals, logs, systemd status) what the last reconciles did."""
        self._notify_scheduled = False
        added = [self.view(k) for k in self._added if k in self.streams]
        changed = [self.view(k) for k in sorted(self._changed) if k in self.streams]
        self._added.clear()
        self._changed.clear()
        if added:
            for cb in self.on_streams:
                cb(added, [])
        if changed:
            for view in changed:
                log_effect(logger, view)
            for cb in self.on_effects:
                cb(changed)

    def _reconcile_pauses(self, snap: Snapshot, desired: dict[str, Effect]) -> None:
        if self.pauser is None:
            return
        active = {s.id for s in self.sessions if s.active}
        plan = fx.plan_pauses(self.claims, players_to_pause(snap, desired), self.players, active)
        if plan.claims != self.claims:
            if not self.journal.write_pauses(plan.claims):
                # fail safe, as for effects: no pause the journal cannot record
                plan = fx.PausePlan({b: c for b, c in plan.claims.items() if b not in plan.pause},
                                    (), plan.resume)
                self._retry_journal()
            self.claims = dict(plan.claims)
        for bus in plan.pause:
            self._spawn(self.pauser.pause(bus))
        for bus in plan.resume:
            self._spawn(self.pauser.play(bus))

    def _retry_journal(self) -> None:
        """Decide again in :data:`JOURNAL_RETRY` s (the journal may be writable by then)."""
        if self._journal_retry is None:
            def retry() -> None:
                self._journal_retry = None
                self._schedule()
            self._journal_retry = asyncio.get_running_loop().call_later(JOURNAL_RETRY, retry)

    def _forget_when_answered(self, row: fx.Applied, writes: list[asyncio.Task]) -> None:
        """Delete the journal row of a stream once the server has answered every write that
        undoes it: a crash before then finds the row and undoes it again (killed 0-6 ms after
        a call ended, a row deleted first left the streams ducked for good)."""
        key = row.key
        if not writes:
            if key not in self.applied:
                self.journal.write([], [key])
            return
        self._undoing[key] = [len(writes), row]

        def answered(task: asyncio.Task) -> None:
            pending = self._undoing.get(key)
            if pending is None or pending[1] is not row:
                return  # the stream or the connection went meanwhile: the row lingers
            if task.cancelled() or task.exception() is not None:
                del self._undoing[key]
                return  # not undone: the row stays for recovery
            pending[0] -= 1
            if pending[0]:
                return
            del self._undoing[key]
            if key not in self.applied:  # no new effect meanwhile (its row replaced this one)
                self.journal.write([], [key])

        for write in writes:
            write.add_done_callback(answered)

    def _apply(self, stream: Stream, ops: fx.Ops) -> list[asyncio.Task]:
        """Start the writes of ``ops``; the tasks of the ones sent at once (a ramp's steps
        follow on their own)."""
        self._stop_ramp(stream.key)
        writes = []
        if ops.volume is not None:
            if ops.ramp_ms > 0 and ops.ramp_from is not None:
                self._ramps[stream.key] = self._spawn(self._ramp(stream, ops))
            else:
                writes.append(self._write_volume(stream, ops.volume))
        if ops.mute is not None:
            writes.append(self._send(stream.key, self.backend.set_mute(
                stream.kind, stream.index, ops.mute), muted=ops.mute))
        return writes

    def _stop_ramp(self, key: str) -> None:
        ramp = self._ramps.pop(key, None)
        if ramp is not None:
            ramp.cancel()

    def _write_volume(self, stream: Stream, volume: tuple[int, ...]) -> asyncio.Task:
        self._recent.setdefault(stream.key, collections.deque(maxlen=16)).append(volume)
        return self._send(stream.key, self.backend.set_volume(stream.kind, stream.index, volume),
                          volume=volume)

    def _send(self, key: str, write, **values) -> asyncio.Task:
        """Schedule a write to a stream, and make the mirror hold the written values at once.

        A decision taken before the server echoes the write must start from it, not from the
        value it replaces: a duck planned right after a restore (one trigger ending as another
        starts, or pipewire-pulse showing a new trigger stream corked for a moment) would
        otherwise take a ramp step or the ducked volume for the user's volume, and "restore" it.

        :param key: the stream's key (it may not be in the mirror yet: a mute on ``new``)
        :param write: the backend coroutine
        :param values: the :class:`~audiopolicyd.model.Stream` fields it sets
        :returns: the write's task
        """
        current = self.streams.get(key)
        if current is not None:
            self.streams[key] = dataclasses.replace(current, **values)
        self._wgen[key] = self._wgen.get(key, 0) + 1
        if values.get("muted") is False or any(values.get("volume", ())):
            # what reads showed before this write no longer proves a fight (_fights_gate)
            self._lift_gen[key] = self._wgen[key]
            self._hold_seen.pop(key, None)
            self._zero_gen.pop(key, None)
        self._inflight[key] += 1
        task = self._spawn(write)
        task.add_done_callback(lambda _task: self._answered(key))
        return task

    def _answered(self, key: str) -> None:
        """A write to ``key`` was answered: once none is pending, re-read a stream whose
        last read was discarded, so a change the user made meanwhile is not missed."""
        self._inflight[key] -= 1
        if self._inflight[key] > 0:
            return
        del self._inflight[key]
        stream = self.streams.get(key)
        if key in self._stale and stream is not None and self.connected.is_set():
            self._stale.discard(key)
            self._spawn(self._refresh(stream.kind, stream.index, key, self._wgen.get(key, 0)))

    async def _ramp(self, stream: Stream, ops: fx.Ops) -> None:
        """Write the steps of a ramp (:func:`~audiopolicyd.effects.ramp_steps`), then record
        that it ended: the journal holds its path while it runs, so a crash in the middle of
        it finds every step to be ours.

        Before each step after the first, the stream is read once the previous step was
        answered (pipewire-pulse answers a read sent behind a write with the old volume): a
        volume the user set meanwhile is seen there, which ends the ramp (see :meth:`_update`)
        before a later step could overwrite it.
        """
        key = stream.key
        steps = fx.ramp_steps(ops.ramp_from, ops.volume, ops.ramp_ms)
        for i, step in enumerate(steps):
            if i:
                await asyncio.sleep(ops.ramp_ms / len(steps) / 1000)
                # shielded, as every libpulse operation the ramp waits for: cancelling one
                # from outside frees its callback while libpulse still holds it (a crash)
                await asyncio.shield(self._spawn(self._refresh(
                    stream.kind, stream.index, key, self._wgen.get(key, 0))))
            last = self._write_volume(stream, step)
            await asyncio.shield(last)
        self._ramps.pop(key, None)
        applied = self.applied.get(stream.key)
        if applied is not None and applied.ramp_from is not None \
                and applied.target == ops.volume:
            self.applied[stream.key] = dataclasses.replace(applied, ramp_from=None, ramp_ms=0)
            self.journal.write([self.applied[stream.key]])

    # -- stopping -----------------------------------------------------------------------------

    def stop(self) -> None:
        """The daemon is stopping: :meth:`run` ends rather than reconnect when the connection
        closes."""
        self.stopping = True

    async def restore_all(self) -> None:
        """Undo every effect and resume every player we paused (daemon shutdown).

        Waits for the writes in flight first (an undo sent just before must be answered before
        its journal row goes). The journal is cleared only when every write succeeded; a row
        kept is undone again at the next start.
        """
        for task in self._ramps.values():
            task.cancel()
        self._ramps.clear()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=READ_TIMEOUT)
        writes = []
        for key, applied in self.applied.items():
            stream = self.streams.get(key)
            ops = fx.restore_ops(applied)
            if stream is None:
                continue
            if ops.volume is not None:
                writes.append(self.backend.set_volume(stream.kind, stream.index, ops.volume))
            if ops.mute is not None:
                writes.append(self.backend.set_mute(stream.kind, stream.index, ops.mute))
        if self.pauser is not None:
            for bus, claim in self.claims.items():
                player = self.players.get(bus)
                if player is not None and fx.should_resume(claim, player):
                    writes.append(self.pauser.play(bus))
        results = await asyncio.gather(*writes, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            logger.warning("%d restore write(s) failed at shutdown (%s); the journal keeps them "
                           "for the next start", len(failed), failed[0])
            return
        self.applied.clear()
        self.claims.clear()
        if self.journal.clear():
            logger.info("every effect restored (%d write(s))", len(writes))
        else:
            logger.warning("every effect restored (%d write(s)); the journal could not be "
                           "cleared: the next start finds the streams as the user had them",
                           len(writes))

    # -- read side ------------------------------------------------------------------------------

    def view(self, key: str) -> StreamView:
        """The read-side view of one stream."""
        stream = self.streams[key]
        category, rule = self.classified.get(key, ("", ""))
        session = next((s.id for s in self.sessions if key in s.streams), "")
        return StreamView(stream, category, rule, session, self.effects.get(key, NEUTRAL))

    def explain(self, target: str) -> dict:
        """Why a stream or a session is as it is.

        :param target: a stream key (``sink-input:12``), a session id (``s1``,
            ``session:s1``, ``implicit:...``) or a session object path
        :returns: a flat dictionary: what it is, its category and the rule or session that chose
            it, its effect, and every reason (session, policy file, key)
        :raises KeyError: when nothing has that name
        """
        policies = self.policies().policies
        if target in self.streams:
            view = self.view(target)
            return {"Target": target, "Kind": view.stream.kind.value,
                    "Application": view.stream.app_name, "Category": view.category,
                    "ChosenBy": view.rule, "Session": view.session,
                    "Policy": policies[view.category].file if view.category in policies else "",
                    "Effect": view.effect.summary,
                    "Reasons": [str(r) for r in view.effect.reasons]}
        sid = target.rsplit("/", 1)[-1]
        sid = sid if sid.startswith(("implicit:", "session:")) else f"session:{sid}"
        session = next((s for s in self.sessions if s.id == sid), None)
        if session is None:
            raise KeyError(target)
        app = (self.app_sessions.sessions.get(sid.split(":", 1)[1])
               if self.app_sessions is not None and session.explicit else None)
        reasons = sorted({str(r) for k in session.streams
                          for r in self.effects.get(k, NEUTRAL).reasons})
        return {"Target": target, "Kind": "session", "Session": session.id,
                "Category": session.category, "Mode": session.mode,
                "Options": sorted(session.options), "Active": session.active,
                "State": app.state if app else ("active" if session.active else "inactive"),
                "InterruptedBy": sorted(app.interrupted_by) if app else [],
                "ChosenBy": session.rule, "Policy": policies[session.category].file,
                "Streams": list(session.streams), "Reasons": reasons}

    def views(self) -> list[StreamView]:
        """Every stream, ordered by kind and index."""
        return [self.view(k) for k in sorted(self.streams, key=lambda k: (
            self.streams[k].kind.value, self.streams[k].index))]
