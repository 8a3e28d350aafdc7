"""The microphone gate's enforcement: hold, fight, kill, lift, module trust, who records.

It enforces the broker's decisions (:mod:`audiopolicyd.microphone.broker`) on the server,
failing closed: a new source-output is muted on its ``new`` event, in the same flush as the
first read of it, before its app is known; once read, a microphone stream of an app that is not
granted is *held*: muted and at volume 0 (two writes to undo, not one), and one whose app is
granted is unmuted and gets its volume back (both servers remember mute and volume per app, so
a stale hold is cleared). The hold is not an effect: it is not journalled and not undone at
shutdown.

A held stream that a read shows unmuted or louder than 0 *fights the gate* (its app, or any
client, undid the hold): it is killed at once (:meth:`Backend.kill
<audiopolicyd.backends.base.Backend.kill>`) and its app is recorded
(:meth:`~audiopolicyd.microphone.broker.MicrophoneBroker.fought_gate`). Re-muting after the fact
cannot win: a stream that unmutes itself in a tight loop kept 62-89 % of the microphone that
way. The hold starts with the mute on ``new``; what proves a fight is a *fresh* read (sent
after every write of ours to the stream was answered, none scheduled since: see
:mod:`audiopolicyd.runtime.mirror`) that differs from the hold, or a read showing unmuted
(above 0) a stream that an earlier read, sent after our last write lifting it, showed muted (at
0). So the daemon's own writes (a mute on ``new`` read back as the old state) and the server's
restore (pipewire-pulse links a new stream at the volume WirePlumber restores) are never taken
for a fight, and a stream whose app may record is never killed. While a stream is held, it is
read on every change event, also while our writes are in flight (a fighter undoes our writes
before they are answered).

A microphone stream is a source-output recording a microphone path (:func:`quiet_monitors`: a
source that is not a sink's monitor, or the monitor of a sink a module feeds from one). A
*trusted* module's stream is infrastructure, never gated (:class:`ModuleTrust`). Any other
module's stream that records a microphone path is gated like an app's, as ``module:<name>``.

The gate talks to the runtime through narrow parts: the mirror's streams and devices, and the
actuator's ``mute``, ``volume``, ``kill`` and ``applied`` (:class:`MicrophoneGate`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Callable

from ..identity import RecordingApp, caller_app, recording_app, recording_member
from ..model import NEUTRAL, Effect, Snapshot, Stream, StreamKind
from .broker import (
    Gate, MicrophoneBroker, Recording, Silenced, is_microphone, quiet_monitors, server_stream,
    silenced_by,
)
from .stores import Decision

if TYPE_CHECKING:  # the runtime builds the gate; the gate only calls what it is handed
    from ..appsessions import AppSessions
    from ..backends.base import Module
    from ..journal import Journal
    from ..runtime.actuator import Actuator
    from ..runtime.mirror import Mirror

logger = logging.getLogger(__name__)

#: A held microphone stream changed more than :data:`FLOOD_EVENTS` times within
#: :data:`FLOOD_WINDOW` seconds is flooded with writes: a fight, whatever the reads show. A
#: fighter in a loop makes the server answer our reads 50-1500 ms late (pipewire-pulse, and
#: PulseAudio under a flood of moves), while its change events keep coming; the daemon's hold
#: is 2 writes, a new stream's setup about 5 events, a mixer's slider about 30 per second.
FLOOD_EVENTS, FLOOD_WINDOW = 16, 0.1


class ModuleTrust:
    """Which of the server's modules are trusted: their streams that record a microphone path
    are infrastructure, never gated.

    Trusted: the modules the server instance (its cookie) had when the daemon first connected
    to it, recorded in the journal so a restarted daemon does not trust a module loaded while
    it was down, and the modules the daemon loads itself (:meth:`trust_own_module`).

    :param journal: where the trusted modules of a server instance are recorded
    """

    def __init__(self, journal: Journal):
        self.journal = journal
        #: Indices of the server's trusted modules.
        self.trusted: set[int] = set()
        self._logged: dict[int, bool] = {}  # module index -> trusted, once logged
        # own modules whose ``new`` event may still come (PulseAudio sends it after
        # load_module has returned, 0.4-2.4 ms later: docs/routing.md)
        self._own_unseen: set[int] = set()
        self._own: set[int] = set()  # the trusted modules the daemon loaded itself
        self._cookie = 0

    def reset(self) -> None:
        """The connection is gone."""
        self.trusted.clear()
        self._logged.clear()
        self._own_unseen.clear()
        self._own.clear()

    def load(self, cookie: int, modules: list[Module]) -> None:
        """Decide which modules are trusted at a (re)connection, recorded per server instance:

        * at the first connection to an instance: the modules it has; but when the journal
          holds a previous instance (the server restarted), only those that instance trusted
          too (same name and arguments). Any PulseAudio client can make the server exit
          (``pactl exit``), and the client that connects first starts the next instance
          (socket activation, autospawn): a module it loads before the daemon reconnects must
          not be trusted;
        * at a later connection to the same instance (the daemon restarted): those recorded
          (same index, name and arguments).

        A module list that cannot be recorded trusts none (fail closed, as an effect the
        journal cannot record is not applied).

        :param cookie: the server instance's cookie
        :param modules: the modules the server lists now
        """
        self._cookie = cookie
        found = {m.index: (m.name, m.argument) for m in modules}
        instance = self.journal.trusted_instance()
        if instance is None or instance[0] != cookie:
            if instance is None:
                trusted = set(found)
            else:
                known = set(instance[1].values())
                trusted = {i for i, m in found.items() if m in known}
            if self.journal.trust_modules(cookie, {i: found[i] for i in trusted}):
                self.trusted = trusted
                new = sorted(f"{found[i][0]} #{i}" for i in set(found) - trusted)
                logger.info("first connection to this server instance (cookie %d): %d "
                            "module(s) trusted%s", cookie, len(trusted),
                            f"; not in the previous instance, not trusted: {', '.join(new)}"
                            if new else "")
            else:
                self.trusted = set()
                logger.error("the server's modules cannot be recorded in the journal: none is "
                             "trusted; a module recording the microphone is gated as an app")
            return
        recorded = instance[1]
        self.trusted = {i for i, m in found.items() if recorded.get(i) == m}
        later = sorted(f"{found[i][0]} #{i}" for i in set(found) - self.trusted)
        logger.info("server instance seen before (cookie %d): %d module(s) trusted as recorded "
                    "at the first connection%s", cookie, len(self.trusted),
                    f"; loaded since, not trusted: {', '.join(later)}" if later else "")

    def trust_own_module(self, module: Module) -> None:
        """Trust a module the daemon loaded itself (the echo canceller of a call,
        :mod:`audiopolicyd.runtime.processing`), for this server instance, also after a
        restart of the daemon. Call it with the index the server returned, before the module's
        streams are read. The trust holds across the module's own ``new`` event, whichever
        side of the reply it arrives on (PulseAudio 16: 0.4-2.4 ms after it; pipewire-pulse:
        before it), and ends with its ``remove`` event."""
        self.trusted.add(module.index)
        self._own.add(module.index)
        self._own_unseen.add(module.index)
        self.journal.trust_module(self._cookie, module.index, module.name, module.argument)

    def module_event(self, index: int, etype: str = "remove") -> None:
        """A module was loaded (*etype* ``new``) or unloaded (``remove``) at *index*:
        pipewire-pulse gives a new module an unloaded one's index, which is never trusted. The
        first ``new`` event of a module the daemon trusted as its own
        (:meth:`trust_own_module`) is that module's own and keeps the trust; a later ``new``
        at its index can only follow its ``remove``."""
        self._logged.pop(index, None)
        if etype == "new" and index in self._own_unseen:
            self._own_unseen.discard(index)
            return
        self._own_unseen.discard(index)
        self._own.discard(index)
        if index in self.trusted:
            self.trusted.discard(index)
            self.journal.forget_trusted_module(self._cookie, index)
            logger.info("trusted module #%d was unloaded; a module at its index is not "
                        "trusted", index)

    def trusts(self, stream: Stream, source: str) -> bool:
        """Whether the module owning *stream* (which records a microphone path, *source*) is
        trusted; the decision is logged once per module, once the stream is linked
        (pipewire-pulse announces it before it knows the source)."""
        index = stream.owner_module
        trusted = index in self.trusted
        if self._logged.get(index) is not trusted and stream.linked:
            self._logged[index] = trusted
            if trusted:
                logger.info("%s #%d (%s) captures %s: trusted, not gated", stream.module,
                            index, "loaded by the daemon" if index in self._own
                            else "a module of the server's own configuration", source)
            else:
                logger.warning("%s #%d loaded at run time captures %s: gated as module:%s",
                               stream.module, index, source, stream.module)
        return trusted


class FightWatch:
    """The evidence that a held stream fights the gate (see the module docstring).

    :param mirror: the streams as read (read only)
    :param kill: ``kill(stream, what)``: kill a fighter unless its app may record now; True
        when it is being killed
    """

    def __init__(self, mirror: Mirror, kill: Callable[[Stream, str], bool]):
        self.mirror = mirror
        self.kill = kill
        # The hold: stream key -> the volume it had before (the user's, given back on a grant;
        # empty until a volume 0 was written). Streams killed for fighting, until removed.
        self.held: dict[str, tuple[int, ...]] = {}
        self.killing: set[str] = set()
        # What reads of a source-output showed since our last write that lifted its mute or
        # volume (key -> [seen muted, seen at volume 0]), and that write's generation.
        self._seen: dict[str, list[bool]] = {}
        self._lift_gen: dict[str, int] = {}
        self.zero_gen: dict[str, int] = {}  # key -> generation of our volume-0 write
        self._changes: dict[str, collections.deque] = {}  # held stream -> loop times

    def forget(self, key: str) -> None:
        for table in (self.held, self._seen, self._lift_gen, self.zero_gen, self._changes):
            table.pop(key, None)
        self.killing.discard(key)

    def reset(self) -> None:
        for table in (self.held, self._seen, self._lift_gen, self.zero_gen, self._changes):
            table.clear()
        self.killing.clear()

    def written(self, key: str, gen: int, values: dict) -> None:
        """A write of ours: one that lifts the mute or the volume makes what reads showed
        before it no proof of a fight any more."""
        if values.get("muted") is False or any(values.get("volume", ())):
            self._lift_gen[key] = gen
            self._seen.pop(key, None)
            self.zero_gen.pop(key, None)

    def screen(self, stream: Stream, fresh: bool, gen: int) -> bool:
        """Look at a read of a source-output before the mirror takes it; True when it proved
        a fight (the stream is being killed)."""
        key = stream.key
        if stream.kind is not StreamKind.SOURCE_OUTPUT or gen < self._lift_gen.get(key, 0):
            return False
        if key in self.held and self._fights(stream, fresh):
            return True
        # pipewire-pulse starts a stream at volume 0 and WirePlumber then restores its
        # volume and mute: only what a read shows after that is a hold to defend
        zeroed = gen >= self.zero_gen.get(key, gen + 1)
        seen = self._seen.setdefault(key, [False, False])
        seen[0] |= stream.muted and (stream.settled or zeroed)
        seen[1] |= zeroed and not any(stream.volume)
        return False

    def flooded(self, key: str) -> bool:
        """Count a change event of a held stream; kill it when it changed more than
        :data:`FLOOD_EVENTS` times in :data:`FLOOD_WINDOW` while its app may not record. True
        when it is being killed."""
        if key in self.killing:
            return True
        now = asyncio.get_running_loop().time()
        times = self._changes.setdefault(key, collections.deque(maxlen=FLOOD_EVENTS + 1))
        times.append(now)
        stream = self.mirror.streams.get(key)
        if len(times) <= FLOOD_EVENTS or now - times[0] > FLOOD_WINDOW or stream is None:
            return False
        return self.kill(stream, f"changed {len(times)} times in "
                                 f"{(now - times[0]) * 1000:.0f} ms (a flood of writes)")

    def _fights(self, stream: Stream, fresh: bool) -> bool:
        """Kill a held microphone stream that someone else unmuted or raised, unless its app
        may record now; True when it is being killed.

        A read proves a fight when it is fresh (every write of ours to the stream was answered
        before it went out, none since: what differs from our hold was done by someone else),
        or when it shows unmuted (above 0) a stream that an earlier read, scheduled after our
        last write that lifted its mute (volume), showed muted (at 0): replies on one
        connection come in order, and nobody but the stream's fighter lifted it since. Only
        reads scheduled after that write of ours get here (see :meth:`screen`), so a read
        answering the state before our mute on ``new`` never counts.
        """
        key = stream.key
        if key in self.killing:
            return True
        seen = self._seen.get(key, (False, False))
        # settled: pipewire-pulse has linked it and WirePlumber's restore (volume and mute)
        # has arrived; a volume above 0 is a fight only once we wrote 0
        unmuted = not stream.muted and ((fresh and stream.settled) or seen[0])
        raised = any(stream.volume) and key in self.zero_gen and (fresh or seen[1])
        if not (unmuted or raised):
            return False
        return self.kill(stream, " and ".join(w for w in (
            "unmuted" if unmuted else "",
            f"volume raised to {max(stream.volume)}" if raised else "") if w))


class MicrophoneGate:
    """Holds, lifts and kills microphone streams as the broker decides; tells the broker who
    records. The mirror's :class:`~audiopolicyd.runtime.mirror.Guard`.

    :param broker: the decisions, and who waits for one
    :param mirror: the streams and devices as read (read only)
    :param actuator: ``mute``, ``volume``, ``kill`` and ``applied`` (a mute that is an effect
        of ours is not the gate's to lift)
    :param trust: the trusted modules
    :param app_sessions: returns the explicit sessions, if any (a stream of a session records
        for its app)
    :param restores_late: whether the server links a new stream at volume 0 before its
        restored volume arrives (pipewire-pulse with WirePlumber; PulseAudio restores before
        announcing)
    """

    def __init__(self, broker: MicrophoneBroker, mirror: Mirror, actuator: Actuator,
                 trust: ModuleTrust, app_sessions: Callable[[], AppSessions | None],
                 restores_late: Callable[[], bool]):
        self.broker = broker
        self.mirror = mirror
        self.actuator = actuator
        self.trust = trust
        self.app_sessions = app_sessions
        self.restores_late = restores_late
        self.fights = FightWatch(mirror, self._kill_fighter)
        self.gates: dict[str, Gate] = {}  # source-output key -> gate last enforced
        self._apps: dict[str, tuple] = {}  # key -> (properties, session, RecordingApp)
        self._muted_on_new: set[str] = set()
        # by restore key: the volume an app had before a hold, for a new stream the server
        # starts at the remembered 0
        self._held_volumes: dict[str, tuple[int, ...]] = {}
        self._unmute: set[str] = set()  # allowed streams the gate muted, unmuted after decide

    # -- the mirror's guard -------------------------------------------------------------------

    def holds(self, key: str) -> bool:
        return key in self.fights.held

    def flooded(self, key: str) -> bool:
        return self.fights.flooded(key)

    def killing(self, key: str) -> bool:
        return key in self.fights.killing

    def screen(self, stream: Stream, fresh: bool, gen: int) -> bool:
        return self.fights.screen(stream, fresh, gen)

    def written(self, key: str, gen: int, values: dict) -> None:
        self.fights.written(key, gen, values)

    def new_stream(self, kind: StreamKind, key: str) -> None:
        """Fail closed: a new source-output is silent before anything is known about it (same
        flush, and ahead of the read: a stream whose read breaks the connection is muted)."""
        if kind is not StreamKind.SOURCE_OUTPUT:
            return
        self._muted_on_new.add(key)
        self.fights.held.setdefault(key, ())  # the hold starts here
        self.actuator.mute(key, True)

    def mute_unreadable(self, keys) -> None:
        """Source-outputs the backend could not read: their app and source are unknowable,
        so they are muted (fail closed)."""
        for key in keys:
            self.actuator.mute(key, True)

    def forget(self, key: str) -> None:
        """A stream went."""
        self.gates.pop(key, None)
        self._apps.pop(key, None)
        self._muted_on_new.discard(key)
        self._unmute.discard(key)
        self.fights.forget(key)

    def lost(self) -> None:
        """The connection is gone."""
        self.gates.clear()
        self._apps.clear()
        self._muted_on_new.clear()
        self._unmute.clear()
        self.fights.reset()

    # -- a decision pass ----------------------------------------------------------------------

    def enforce(self, owned: dict[str, str]) -> None:
        """Mute every microphone stream whose app may not record; unmute the ones that became
        allowed; tell the broker who waits for a decision.

        :param owned: stream key -> explicit session id
        """
        broker = self.broker
        streams = self.mirror.streams
        waiting: dict[str, RecordingApp] = {}
        quiet = quiet_monitors(Snapshot(streams, self.mirror.devices))
        for key, stream in streams.items():
            if stream.kind is not StreamKind.SOURCE_OUTPUT or key in self.fights.killing:
                continue
            before = self.gates.get(key)
            applied = self.actuator.applied.get(key)
            mine = applied is not None and applied.muted_by_us
            microphone = is_microphone(stream, quiet)
            if microphone and stream.owner_module >= 0:
                microphone = not self.trust.trusts(stream, self._source_name(stream))
            if not microphone:
                # (the daemon's own capture is never left muted: the server may start it
                # muted, remembering an earlier capture of ours that was muted on `new`)
                if stream.muted and (key in self._muted_on_new or before is Gate.BLOCKED
                                     or stream.own) and not mine:
                    self._muted_on_new.discard(key)
                    self.actuator.mute(stream.key, False)
                    logger.info("%s (%s) records %s: %s, unmuted", key, stream.label,
                                self._source_name(stream),
                                "a trusted module's stream" if stream.module
                                else "the PipeWire daemon's own stream" if server_stream(stream)
                                else "the recorder's own capture" if stream.own
                                else "not a microphone path")
                    self._release(stream)  # its volume too, if held at 0
                self.gates[key] = Gate.EXEMPT
                continue
            app = self._gated_app(stream, owned.get(key))
            gate = Gate.ALLOWED if broker.allowed(app.app_id) else Gate.BLOCKED
            if gate is Gate.BLOCKED:
                again = bool(self.fights.held.get(key))
                if self._hold(stream):
                    logger.info("%s (%s) silenced: microphone permission of %s is %s%s", key,
                                stream.label, app.app_id, broker.decision(app.app_id),
                                " (held again)" if again else "")
            elif gate is Gate.ALLOWED:
                if before is not Gate.ALLOWED and stream.muted and not mine:
                    self._unmute.add(key)  # once the effects are decided: see lift
                self._release(stream)
            self._muted_on_new.discard(key)
            if gate is not Gate.ALLOWED:
                self._unmute.discard(key)
            self.gates[key] = gate
            if gate is Gate.BLOCKED and broker.decision(app.app_id) is Decision.UNDETERMINED:
                waiting[key] = app
        broker.sync_streams(waiting)

    def lift(self, desired: dict[str, Effect]) -> None:
        """Unmute the microphone streams whose app may record now and that the gate had muted,
        unless the effect just decided mutes them too (a policy with ``records = false``, an
        interruption): then the mute stays, and is lifted in the first pass that no longer
        wants it. Unmuting first and letting the effect mute again would hand the stream the
        microphone between the two writes (seen on pipewire-pulse: about 2 ms of audio).
        *desired* is the engine's decision, also for a stream not settled yet (held at volume
        0), whose effect is applied only once it settles."""
        for key in list(self._unmute):
            stream = self.mirror.streams.get(key)
            if stream is None or not stream.muted:
                self._unmute.discard(key)
            elif not desired.get(key, NEUTRAL).mute:
                self._unmute.discard(key)
                self.actuator.mute(stream.key, False)
                logger.info("%s (%s) unmuted: its app may record", key, stream.label)

    def publish(self, owned: dict[str, str], decided: dict[str, Effect]) -> None:
        """Tell the broker who records a microphone now, and for each app whether it hears it
        and, if not, every reason the daemon knows
        (:class:`~audiopolicyd.microphone.broker.Silenced`): the gate's (permission, the
        desktop's switch), the effects just decided (a policy that
        does not record, an interruption) and a mute nobody of ours explains."""
        broker = self.broker
        recording: dict[str, list] = {}  # app id -> [name, keys, reasons of each stream]
        for key, stream in self.mirror.streams.items():
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

    # -- inside -------------------------------------------------------------------------------

    def _kill_fighter(self, stream: Stream, what: str) -> bool:
        """Kill a held stream that fights the gate, unless its app may record now; True when
        it is being killed."""
        key = stream.key
        cached = self._apps.get(key)
        if self.gates.get(key) is not Gate.BLOCKED or cached is None \
                or self.broker.allowed(cached[2].app_id):
            return False  # granted meanwhile: the next pass lifts the hold
        self.fights.killing.add(key)
        self.actuator.kill(stream)
        self.broker.fought_gate(cached[2], key, stream.label, what)
        return True

    def _hold(self, stream: Stream) -> bool:
        """Hold a microphone stream whose app may not record: muted and at volume 0; True
        when something was written.

        Its mute is held from the mute on ``new``; its volume 0 once written over a volume the
        server had given it (:attr:`~audiopolicyd.model.Stream.settled`), or found linked at 0
        (see below): pipewire-pulse shows a new stream at volume 0 until WirePlumber's restored
        volume arrives, which is the server's write, not a fight.
        """
        key = stream.key
        fights = self.fights
        wrote = False
        if not stream.muted:
            self.actuator.mute(stream.key, True)
            wrote = True
        if stream.settled:
            self._held_volumes[stream.restore_key] = stream.volume
            if not fights.held.get(key):
                fights.held[key] = stream.volume  # given back on a grant
            self.actuator.volume(stream, (0,) * len(stream.volume))
            fights.zero_gen[key] = self.mirror.generation(key)
            wrote = True
        elif stream.linked and key not in fights.zero_gen and not self.restores_late():
            # at 0 already: PulseAudio started it at the 0 it remembers from an earlier hold
            # of its app (module-stream-restore); a volume above 0 from now on is a fight. Not
            # on pipewire-pulse: a stream linked at 0 may still get WirePlumber's restored
            # volume (seen: a new stream of an app held earlier, linked at 0, then restored to
            # 100 %), which is no fight
            fights.zero_gen[key] = self.mirror.generation(key)
        return wrote

    def _release(self, stream: Stream) -> None:
        """Give a microphone stream whose app may record the volume it had before a hold:
        its own, or, for a stream the server starts at the 0 it remembers from an earlier hold
        of its app (restore key), the volume the app had then. Runs on every pass while the
        app is granted, until a stream of that restore key is linked above 0 (the server
        remembers a volume of its own again)."""
        before = self.fights.held.pop(stream.key, None)
        if any(stream.volume):
            if stream.linked:
                self._held_volumes.pop(stream.restore_key, None)
            return
        volume = before or self._held_volumes.get(stream.restore_key)
        if not volume or not stream.linked:
            return
        self.actuator.volume(stream, volume)
        logger.info("%s (%s) gets its volume back: %s", stream.key, stream.label, volume)

    def _source_name(self, stream: Stream) -> str:
        device = self.mirror.devices.get(stream.device)
        return device.name if device is not None else f"source {stream.device or '(none yet)'}"

    def _gated_app(self, stream: Stream, session_id: str | None) -> RecordingApp:
        """The app the gate decides for: ``module:<name>`` for a server module's stream that
        is gated (loaded at run time), else the app it records for: its explicit session's app
        when it has one and its process is that app's as the server or /proc confirm
        (:func:`audiopolicyd.identity.recording_member`; streams of one session share its
        decision), else named from the stream (:func:`audiopolicyd.identity.recording_app`).
        Cached per stream."""
        if stream.owner_module >= 0:
            return RecordingApp(f"module:{stream.module}", stream.module, "module")
        cached = self._apps.get(stream.key)
        if cached is not None and cached[0] == (stream.properties, stream.vouched) \
                and cached[1] == session_id:
            return cached[2]
        sessions = self.app_sessions()
        session = (sessions.sessions.get(session_id)
                   if session_id and sessions is not None else None)
        if session is not None and not recording_member(stream.properties, stream.vouched,
                                                        session.identity):
            session = None  # joined by a claim /proc does not confirm: named from the stream
        if session is not None:
            app = caller_app(session.identity, session.name or stream.app_name)
        else:
            app = recording_app(stream.properties, vouched=stream.vouched)
        self._apps[stream.key] = ((stream.properties, stream.vouched), session_id, app)
        return app
