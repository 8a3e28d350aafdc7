"""Microphone permission: who may record, asking the user once, and who is recording now.

Apple's model (``AVAudioApplication.requestRecordPermission``): the first time an app records,
the user is asked; the answer is remembered; until the app is granted it records only silence;
a later change applies to streams already running. The enforcement (muting source-outputs) is
the gate's (:mod:`audiopolicyd.microphone.gate`); this module holds the decisions and the
requests:

* decisions live in a :class:`~audiopolicyd.microphone.stores.PermissionStore` (the desktop's
  permission store, or SQLite), read once at start and followed live;
* the global switch (``org.gnome.desktop.privacy disable-microphone``,
  :mod:`audiopolicyd.microphone.privacy`) silences every app while on, and nobody is asked meanwhile;
* one :class:`Request` per app at a time, however many streams and sessions wait for it; it is
  shown to the registered prompt agent (polkit's authentication-agent pattern, BlueZ's
  ``RegisterAgent``); with no agent it stays pending, and the app records silence;
* an agent that does not answer within :data:`PROMPT_TIMEOUT`, or dismisses the prompt, ends
  the request with no decision: the app stays silent and can ask again (a new stream or
  ``RequestRecordPermission``); an agent that leaves the bus mid-prompt leaves the request
  pending for the next agent;
* an app whose silenced stream was unmuted, or its volume raised, by anyone (the app itself or
  another client) *fought the gate*: the gate kills that stream, and the broker counts
  the app's fights (:meth:`MicrophoneBroker.fought_gate`, shown by ``GetRecordPermissions`` and
  ``audiopolicyctl permissions``) and logs a warning naming the app and the stream.

Errors::

    PermissionStoreError   (from the store) a decision could not be written: the caller is told;
                           an agent's answer is applied anyway, for this run of the daemon
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import itertools
import logging
from typing import Callable, Mapping, Protocol

from ..errors import AgentExists, NotAllowed
from ..identity import RecordingApp, audio_server_process
from ..model import Action, Effect, Snapshot, Stream, StreamKind
from .stores import Decision, PermissionStore

logger = logging.getLogger(__name__)

#: How long a prompt agent gets to answer one request, in seconds.
PROMPT_TIMEOUT = 120.0
#: Apps whose fights are counted (``Fought``), the most recent first kept: each is an entry of
#: ``GetRecordPermissions``, and a fighter can claim a new ``unverified:<binary>`` per stream.
MAX_FOUGHT_APPS = 256


class Gate(str, enum.Enum):
    """What microphone permission does to one source-output."""

    EXEMPT = "exempt"  #: not a microphone path, a trusted module's or the server's own stream
    ALLOWED = "allowed"  #: its app is granted (and the global switch is off)
    BLOCKED = "blocked"  #: muted: undetermined, denied, or the global switch is on


class Silenced(str, enum.Enum):
    """Why a microphone stream records silence: every reason the daemon knows of, by name (the
    values of ``SilencedBy`` on D-Bus and of ``audiopolicyctl permissions``)."""

    PERMISSION = "permission"  #: its app is not granted: undetermined or denied
    SWITCH = "switch"  #: the desktop's microphone switch is off (``disable-microphone``)
    POLICY = "policy"  #: its category's policy says ``records = false`` (an explicit session's)
    INTERRUPTION = "interruption"  #: its session is interrupted by another (a call), no player
    MUTED = "muted"  #: muted outside the daemon: by the user (pavucontrol) or the app itself
    #: nobody vouches for who it is (``unverified:<binary>``): it cannot be granted
    UNVERIFIED = "unverified"


#: The app ids of recordings whose process nobody could check (:mod:`audiopolicyd.identity`).
UNVERIFIED_PREFIX = "unverified:"


def grantable(app_id: str) -> bool:
    """Whether *app_id* may ever be granted: not an ``unverified:`` id. A grant to an identity
    that neither the server nor /proc vouches for would be a grant to every client that
    claims it (any local app can claim any binary and an uncheckable pid)."""
    return not app_id.startswith(UNVERIFIED_PREFIX)


class NotGrantable(NotAllowed, ValueError):
    """A grant for an app id that cannot be granted (:func:`grantable`)."""


def quiet_monitors(snapshot: Snapshot) -> frozenset[str]:
    """The sources of the graph that are not a *microphone path*: the ids of the monitors of
    sinks that no microphone path feeds.

    A microphone path is a source that is not a sink's monitor (a capture device, a
    ``module-remap-source``, an echo canceller's source...), or the monitor of a sink fed by
    a stream that captures a microphone path: a server module's sink-input whose module also
    has a source-output connected to a microphone path (``module-loopback source=mic
    sink=trap`` makes ``trap.monitor`` one). Computed to a fixed point, so chains of loopbacks
    through null sinks count. Only the server's graph is used (``monitor_of_sink``, each
    stream's source or sink, ``owner_module``): no property a client sets. Devices are
    compared by their opaque ids (:attr:`Device.id`, :attr:`Stream.device`), never parsed.

    Fail closed: a source-output not linked yet, or connected to a source the mirror does not
    know yet, captures a microphone path; so does every source not in the result.

    :param snapshot: the mirror: :attr:`Device.monitor_of`, :attr:`Stream.device` and
        :attr:`Stream.owner_module` are read
    :returns: source ids (:attr:`Device.id`); never '' (a stream not linked is no monitor's)
    """
    monitors = {d.id: d.monitor_of for d in snapshot.devices.values() if d.monitor and d.id}
    modules: dict[int, list[Stream]] = {}
    for stream in snapshot.streams.values():
        if stream.owner_module >= 0:
            modules.setdefault(stream.owner_module, []).append(stream)
    fed: set[str] = set()  # sinks fed by a microphone path
    while True:
        quiet = frozenset(i for i, sink in monitors.items() if sink not in fed)
        feeding = {s.device for streams in modules.values()
                   if any(s.kind is StreamKind.SOURCE_OUTPUT and s.device not in quiet
                          for s in streams)
                   for s in streams if s.kind is StreamKind.SINK_INPUT and s.linked}
        if feeding <= fed:
            return quiet
        fed |= feeding


def is_microphone(stream: Stream, quiet: frozenset[str]) -> bool:
    """Whether permission applies to *stream*: a source-output that records a microphone path
    (its :attr:`Stream.device` is not the id of one of the *quiet* monitors,
    :func:`quiet_monitors`), and is not the audio server's own: not one whose client is the
    PipeWire daemon's own process (``libpipewire-module-echo-cancel`` loaded in
    ``pipewire.conf``), as the server vouches (:attr:`Stream.vouched` ``pipewire.sec.pid``)
    and /proc confirms (:func:`~audiopolicyd.identity.audio_server_process`); and not the
    daemon's own (:attr:`Stream.own`: its recorder's capture, whose caller's permission the
    recorder checks itself, :mod:`audiopolicyd.recorder`). A stream not
    linked yet counts (fail closed). Whether a pulse module's stream is trusted is the
    caller's question (the gate's :class:`~audiopolicyd.microphone.gate.ModuleTrust` keeps the
    trusted modules)."""
    return (stream.kind is StreamKind.SOURCE_OUTPUT
            and (not stream.linked or stream.device not in quiet)
            and not server_stream(stream) and not stream.own)


def server_stream(stream: Stream) -> bool:
    """Whether *stream*'s client is the PipeWire daemon itself (infrastructure, as a server
    module's stream on PulseAudio): the client's ``pipewire.sec.pid``, which the server
    vouches for, is the process listening on PipeWire's socket."""
    try:
        pid = int(stream.vouched.get("pipewire.sec.pid", ""))
    except ValueError:
        return False
    return audio_server_process(pid)


def silenced_by(broker: "MicrophoneBroker", app_id: str, gate: Gate,
                effect: Effect) -> tuple[str, ...]:
    """Why one microphone stream records silence, as far as the daemon's decisions go.

    :param broker: the permission broker (decisions, the desktop's switch)
    :param app_id: the stream's app
    :param gate: what the gate enforces on the stream now
    :param effect: the effect the engine decided for the stream now
    :returns: :class:`Silenced` values, in that order, without ``muted`` (a mute nobody of
        ours explains is the caller's to see, on the stream); empty: it hears the microphone
    """
    out = []
    if gate is Gate.BLOCKED:
        if not grantable(app_id):
            out.append(Silenced.UNVERIFIED.value)
        elif broker.decision(app_id) is not Decision.GRANTED or not broker._ready:
            out.append(Silenced.PERMISSION.value)
        if broker.disabled:
            out.append(Silenced.SWITCH.value)
        if not out:  # blocked for a reason the broker no longer gives: still the gate's
            out.append(Silenced.PERMISSION.value)
    if effect.mute:
        if any(r.rule == "records" for r in effect.reasons):
            out.append(Silenced.POLICY.value)
        if any(r.action == Action.INTERRUPT.value for r in effect.reasons):
            out.append(Silenced.INTERRUPTION.value)
    return tuple(out)


class AgentFailed(Exception):
    """A prompt agent could not be asked, or answered with a D-Bus error.

    :param gone: True when the agent's connection is gone (crashed mid-prompt): the request
        waits for the next agent instead of ending
    """

    def __init__(self, message: str, gone: bool = False):
        super().__init__(message)
        self.gone = gone


@dataclasses.dataclass(frozen=True)
class Agent:
    """A registered prompt agent: its connection's unique name and object path."""

    owner: str
    path: str


class AgentCaller(Protocol):
    """How the broker reaches an agent (the D-Bus adapter implements it)."""

    async def ask(self, agent: Agent, request_id: str, app_id: str,
                  info: dict) -> str:
        """``RequestRecordPermission``: the agent's decision string.

        :raises AgentFailed: on a D-Bus error or a lost connection
        """

    def cancel(self, agent: Agent, request_id: str) -> None:
        """``Cancel``: withdraw a prompt (no reply awaited)."""


@dataclasses.dataclass(eq=False)
class Request:
    """One app's pending question.

    :ivar id: the request id agents see (``r1``, ``r2``...)
    :ivar app: the app asked about
    :ivar requester: ``stream`` (a recording appeared) or ``session``
        (``RequestRecordPermission`` or activation of a recording category)
    :ivar streams: keys of the app's streams waiting for the answer
    :ivar waiters: futures resolved with the outcome (a :class:`Decision`)
    :ivar agent: the agent asked now, None while pending
    """

    id: str
    app: RecordingApp
    requester: str
    streams: set[str] = dataclasses.field(default_factory=set)
    waiters: list[asyncio.Future] = dataclasses.field(default_factory=list)
    agent: Agent | None = None
    task: asyncio.Task | None = None

    @property
    def state(self) -> str:
        """``prompting`` (an agent shows it) or ``pending`` (no agent has it)."""
        return "prompting" if self.agent is not None else "pending"


@dataclasses.dataclass(frozen=True)
class Recording:
    """An app recording a microphone now (for privacy indicators).

    :param app_id: the permission app id
    :param name: a human name
    :param silenced: True while every one of its streams records silence, for any reason
        (``reasons``); False while at least one of them hears the microphone
    :param streams: how many of its streams record now
    :param keys: those streams' keys (``source-output:7``)
    :param reasons: why it is silenced (:class:`Silenced` values, sorted; every reason of
        every stream); empty while not silenced
    """

    app_id: str
    name: str
    silenced: bool
    streams: int
    keys: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


class MicrophoneBroker:
    """Decisions, requests, the agent and the recording list.

    :param store: where decisions live; None until :meth:`start` (every app is blocked
        meanwhile: fail closed)
    :param caller: how agents are reached (set by the D-Bus adapter); None: no agent can be
        registered
    :param prompt_timeout: seconds an agent gets to answer one request
    """

    def __init__(self, store: PermissionStore | None = None, caller: AgentCaller | None = None,
                 prompt_timeout: float = PROMPT_TIMEOUT):
        self.store = store
        self.caller = caller
        #: Seconds an agent gets to answer a request.
        self.prompt_timeout = prompt_timeout
        self.decisions: dict[str, Decision] = {}
        #: True while the desktop's global switch disables the microphone.
        self.disabled = False
        self.agent: Agent | None = None
        self.requests: dict[str, Request] = {}  # app id -> request
        self.recording: tuple[Recording, ...] = ()
        #: Streams killed for fighting the gate, by app id (for this run of the daemon).
        self.fought: dict[str, int] = {}
        #: Listeners: ``on_decisions()`` (decisions or the switch changed: enforce again),
        #: ``on_recording(recording)``, ``on_requests()``. Must not block.
        self.on_decisions: list[Callable[[], None]] = []
        self.on_recording: list[Callable[[tuple[Recording, ...]], None]] = []
        self.on_requests: list[Callable[[], None]] = []
        self._ids = itertools.count(1)
        self._triggered: set[str] = set()  # stream keys that already caused a request
        self._ready = store is not None

    async def start(self, store: PermissionStore) -> None:
        """Read every decision from *store* and follow its changes.

        :raises PermissionStoreError: when the store cannot be read (the caller decides
            whether to run with every app blocked)
        """
        self.store = store
        store.on_change(self._changed)
        self.decisions = dict(await store.all())
        self._ready = True
        logger.info("microphone permission: %d decision(s) in %s", len(self.decisions),
                    store.where)
        self._notify(self.on_decisions)

    # -- decisions ----------------------------------------------------------------------------

    def decision(self, app_id: str) -> Decision:
        """The stored decision for *app_id* (``undetermined`` when none)."""
        return self.decisions.get(app_id, Decision.UNDETERMINED)

    def allowed(self, app_id: str) -> bool:
        """Whether *app_id* may record now: granted, the store read, the switch off, and an
        app id that can be granted at all (:func:`grantable`: a grant of an ``unverified:`` id
        found in the store counts for nothing)."""
        return self._ready and not self.disabled and grantable(app_id) and \
            self.decisions.get(app_id) is Decision.GRANTED

    def set_disabled(self, disabled: bool) -> None:
        """The global switch changed (:mod:`audiopolicyd.microphone.privacy`)."""
        if disabled != self.disabled:
            self.disabled = disabled
            logger.info("the desktop's microphone switch is %s: %s", "off" if disabled else "on",
                        "every app records silence" if disabled else "granted apps record")
            self._notify(self.on_decisions)

    async def decide(self, app_id: str, decision: Decision, by: str) -> None:
        """Store a decision (``undetermined`` forgets the app's entry) and apply it live.

        :param by: who decided, for the log (``audiopolicyctl (pid 42)``, ``agent :1.9``)
        :raises PermissionStoreError: when the store cannot be written; nothing changes
        :raises NotGrantable: on a grant of an ``unverified:`` app id (:func:`grantable`)
        :raises ValueError: on an empty app id or an unknown decision
        """
        decision = Decision(decision)
        if decision is Decision.GRANTED and not grantable(app_id):
            raise NotGrantable(
                f"{app_id[:80]} cannot be granted: neither the audio server nor /proc vouches "
                "for who it is, and any client can claim it (see docs/microphone.md, 'Who an "
                "app is')")
        if self.store is None:
            raise ValueError("the permission store is not open yet")
        if decision is Decision.UNDETERMINED:
            await self.store.reset(app_id)
        else:
            await self.store.set(app_id, decision)
        logger.info("microphone permission of %s set to %s by %s", app_id, decision, by)
        self._changed(app_id, decision)

    def _changed(self, app_id: str, decision: Decision) -> None:
        """A decision changed (ours, or another client's through the store)."""
        if self.decisions.get(app_id, Decision.UNDETERMINED) == decision \
                and decision is not Decision.UNDETERMINED:
            self._finish_request(app_id, decision)
            return
        if decision is Decision.UNDETERMINED:
            self.decisions.pop(app_id, None)
            # streams already running ask again
            self._triggered.clear()
        else:
            self.decisions[app_id] = decision
            self._finish_request(app_id, decision)
        self._notify(self.on_decisions)

    # -- requests -----------------------------------------------------------------------------

    def sync_streams(self, waiting: Mapping[str, RecordingApp]) -> None:
        """The microphone streams now silenced for want of a decision (stream key -> app).

        A stream asks once: its app gets a request the first time it is seen waiting (one
        request per app, however many streams); an app that cannot be granted
        (:func:`grantable`) is never asked for. A request whose streams all went and that no
        session waits for is moot: withdrawn from the agent.
        """
        if not self.disabled:
            for key, app in waiting.items():
                if not grantable(app.app_id):
                    continue  # nobody can grant it: asking would be a question without answer
                if key not in self._triggered:
                    self._triggered.add(key)
                    self._request(app, "stream").streams.add(key)
        self._triggered &= set(waiting)
        for request in list(self.requests.values()):
            if request.streams - set(waiting):
                request.streams &= set(waiting)
                if not request.streams and not request.waiters:
                    logger.info("request %s for %s is moot: its streams are gone", request.id,
                                request.app.app_id)
                    self._end(request)

    async def request(self, app: RecordingApp) -> Decision:
        """Ask for *app* (a session's ``RequestRecordPermission``) and wait for the outcome.

        :returns: the decision at once when there is one (``denied`` while the global switch
            is on, and for an app that cannot be granted); otherwise when the user answers: ``granted``/``denied``, or
            ``undetermined`` when the agent timed out or the prompt was dismissed
        """
        if self.disabled or not grantable(app.app_id):
            return Decision.DENIED
        decided = self.decision(app.app_id)
        if decided is not Decision.UNDETERMINED:
            return decided
        request = self._request(app, "session")
        waiter = asyncio.get_running_loop().create_future()
        request.waiters.append(waiter)
        try:
            return await waiter
        finally:
            if waiter in request.waiters:
                request.waiters.remove(waiter)
            if not request.waiters and not request.streams \
                    and self.requests.get(app.app_id) is request:
                self._end(request)  # the caller went away

    def _request(self, app: RecordingApp, requester: str) -> Request:
        request = self.requests.get(app.app_id)
        if request is None:
            request = Request(f"r{next(self._ids)}", app, requester)
            self.requests[app.app_id] = request
            logger.info("microphone permission request %s: %s (%s, %s) asks to record%s",
                        request.id, app.app_id, app.name, app.source,
                        "" if self.agent else "; no prompt agent is registered, it stays "
                        "pending and silent")
            self._prompt(request)
            self._notify(self.on_requests)
        return request

    def _prompt(self, request: Request) -> None:
        if self.agent is None or self.caller is None or request.agent is not None:
            return
        request.agent = self.agent
        request.task = asyncio.ensure_future(self._ask(request, self.agent))

    async def _ask(self, request: Request, agent: Agent) -> None:
        app = request.app
        info = {"AppName": app.name, "Executable": app.exe, "Pid": app.pid,
                "Sandboxed": app.sandboxed, "Streams": len(request.streams),
                "Requester": request.requester}
        try:
            answer = await asyncio.wait_for(
                self.caller.ask(agent, request.id, app.app_id, info), self.prompt_timeout)
        except asyncio.TimeoutError:
            logger.warning("prompt agent %s did not answer request %s (%s) in %.0f s; the app "
                           "stays silent and may ask again", agent.owner, request.id,
                           app.app_id, self.prompt_timeout)
            self.caller.cancel(agent, request.id)
            self._end(request, notify_agent=False)
            return
        except AgentFailed as exc:
            if exc.gone or self.agent != agent:
                logger.warning("prompt agent %s left during request %s (%s): %s; it waits for "
                               "the next agent", agent.owner, request.id, app.app_id, exc)
                request.agent = request.task = None
                self._prompt(request)
            else:
                logger.warning("prompt agent %s failed request %s (%s): %s", agent.owner,
                               request.id, app.app_id, exc)
                self._end(request, notify_agent=False)
            return
        try:
            decision = Decision(answer)
        except ValueError:
            logger.warning("prompt agent %s answered %r to request %s; read as no answer",
                           agent.owner, str(answer)[:32], request.id)
            decision = Decision.UNDETERMINED
        request.task = None
        if decision is Decision.UNDETERMINED:
            logger.info("request %s (%s) dismissed; the app stays silent and may ask again",
                        request.id, app.app_id)
            self._end(request, notify_agent=False)
            return
        try:
            await self.decide(app.app_id, decision, f"agent {agent.owner}")
        except Exception as exc:  # a store failure must not lose the user's answer
            logger.error("cannot store the answer to request %s (%s: %s): %s; applied until "
                         "the daemon stops", request.id, app.app_id, decision, exc)
            self.decisions[app.app_id] = decision
            self._finish_request(app.app_id, decision)
            self._notify(self.on_decisions)

    def _finish_request(self, app_id: str, decision: Decision) -> None:
        request = self.requests.get(app_id)
        if request is not None:
            self._end(request, decision)

    def _end(self, request: Request, outcome: Decision = Decision.UNDETERMINED,
             notify_agent: bool = True) -> None:
        if self.requests.get(request.app.app_id) is not request:
            return
        del self.requests[request.app.app_id]
        if request.task is not None and not request.task.done() \
                and request.task is not asyncio.current_task():
            request.task.cancel()
            if notify_agent and request.agent is not None and self.caller is not None:
                self.caller.cancel(request.agent, request.id)
        for waiter in request.waiters:
            if not waiter.done():
                waiter.set_result(outcome)
        self._notify(self.on_requests)

    # -- agents -------------------------------------------------------------------------------

    def register_agent(self, owner: str, path: str) -> None:
        """Make ``owner``'s object at ``path`` the prompt agent; pending requests go to it.

        :raises AgentExists: when another connection's agent is registered
        """
        if self.agent is not None and self.agent.owner != owner:
            raise AgentExists(f"a prompt agent is already registered ({self.agent.owner} "
                              f"{self.agent.path})")
        self.agent = Agent(owner, path)
        logger.info("prompt agent registered: %s %s; %d request(s) pending", owner, path,
                    sum(r.agent is None for r in self.requests.values()))
        for request in list(self.requests.values()):
            self._prompt(request)

    def unregister_agent(self, owner: str, path: str | None = None) -> bool:
        """Drop the agent of ``owner`` (at ``path`` when given); its prompts return to pending.

        :returns: whether an agent was dropped
        """
        if self.agent is None or self.agent.owner != owner or \
                (path is not None and self.agent.path != path):
            return False
        agent, self.agent = self.agent, None
        logger.info("prompt agent %s %s unregistered", agent.owner, agent.path)
        for request in self.requests.values():
            if request.agent == agent:
                if request.task is not None:
                    request.task.cancel()
                request.agent = request.task = None
        return True

    # -- who fights the gate ------------------------------------------------------------------

    def fought_gate(self, app: RecordingApp, key: str, label: str, what: str) -> int:
        """Record that a silenced stream of *app* was unmuted or raised against the gate (and
        was killed for it); a warning names the app and the stream.

        :param key: the stream's key (``source-output:7``)
        :param label: the stream's name for the log (:attr:`~audiopolicyd.model.Stream.label`)
        :param what: what was done to it (``unmuted``, ``volume raised to 65536``)
        :returns: how many of the app's streams fought the gate so far, this one included (the
            counts of at most :data:`MAX_FOUGHT_APPS` apps are kept)
        """
        count = self.fought.pop(app.app_id, 0) + 1  # re-inserted: the most recent is last
        self.fought[app.app_id] = count
        while len(self.fought) > MAX_FOUGHT_APPS:
            del self.fought[next(iter(self.fought))]  # the app that fought longest ago
        logger.warning("%s (%s) fought the microphone gate: %s, silenced for %s (%s), was %s; "
                       "killed (%d stream(s) of this app so far)", key, label, app.app_id,
                       self.decision(app.app_id), app.name, what, count)
        return count

    # -- who records --------------------------------------------------------------------------

    def set_recording(self, recording: tuple[Recording, ...]) -> None:
        """The apps recording a microphone now (from the gate); listeners hear changes."""
        if recording != self.recording:
            self.recording = recording
            for cb in list(self.on_recording):
                cb(recording)

    def _notify(self, listeners: list[Callable[[], None]]) -> None:
        for cb in list(listeners):
            cb()

