"""``audiopolicyctl policy simulate``: a scenario through the real decision, offline.

A *scenario* names streams (their properties, as a PulseAudio or PipeWire client sets them),
explicit sessions (an app's category, mode and options, as it would declare them over D-Bus)
and the order in which they start. :func:`simulate` runs it through the daemon's own code, with
no audio server and no bus: classification (:func:`audiopolicyd.engine.classify`), implicit
sessions (:class:`audiopolicyd.sessions.ImplicitSessions`), explicit sessions with their
activation rules (:class:`audiopolicyd.appsessions.AppSessions`: ``InsufficientPriority``,
interruptions), the plugins, and :func:`audiopolicyd.engine.decide`. Every stream and session
is explained with :mod:`audiopolicyd.explain`, the words of ``audiopolicyctl explain``.

The format (TOML, or JSON for a file ending in ``.json``; docs/policies.md, "Simulating a
scenario", and examples/scenario.toml)::

    schema = 1
    description = "a call while music and a game play"    # optional
    activate = ["music", "game", "call"]   # in this order: a stream starts playing, a
                                           # session is activated (SetActive(true))

    [streams.music]                        # a stream named "music"
    kind = "playback"                      # playback (default) | record | monitor
    properties = { "media.role" = "music", "application.process.binary" = "mpv" }
    player = true                          # its app has an MPRIS player (is paused, not muted)

    [streams.game]
    properties = { "media.role" = "game" }

    [streams.voice]
    properties = { "application.name" = "linphone" }

    [sessions.call]                        # an explicit session, as an app creates it
    category = "playAndRecord"
    mode = "voiceChat"                     # default: "default"
    options = []                           # AVAudioSession category options
    app = "org.linphone.Linphone"          # its app id (default: the session's name)
    streams = ["voice"]                    # the streams of its app

A stream that ``activate`` does not name is there but paused (corked): it is classified and
acted on, and activates nothing. What is not simulated: the microphone permission (every
recording is taken as allowed, as with ``--no-microphone-permission``), devices and routing,
volume ramps, and time (an interruption's end and ``should_resume``).

Bounds: :data:`MAX_FILE_BYTES`, :data:`MAX_STREAMS`, :data:`MAX_SESSIONS`,
:data:`MAX_PROPERTIES` per stream, :data:`MAX_VALUE_CHARS` per property value, names of
:data:`NAME` form. A scenario that breaks any rule raises :class:`ScenarioError` listing every
problem as ``file: key.path: message``, as policies do (:mod:`audiopolicyd.policy`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .appsessions import AppSession, AppSessions
from .engine import classify, decide
from .errors import NoSuchSession, SessionError
from .explain import session_explanation, stream_explanation
from .identity import Identity
from .limits import quote
from .model import (
    CATEGORIES, MODES, OPTIONS, Effect, Player, Session, Snapshot, Stream, StreamKind, freeze,
)
from .pluginmanager import PluginManager
from .policy import (
    DIRECTIONS, PolicyError, PolicySet, PolicyValidator, Problem, _path, _problems,
    _value_problems, parse_toml,
)
from .sessions import ImplicitSessions

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: Largest scenario file read, in bytes.
MAX_FILE_BYTES = 1 << 20
#: Streams, sessions and steps of ``activate`` in one scenario.
MAX_STREAMS = 256
MAX_SESSIONS = 64
#: Properties of one stream, characters of one property's name and of its value.
MAX_PROPERTIES = 64
MAX_KEY_CHARS = 256
MAX_VALUE_CHARS = 4096
#: A stream's or session's name: what the output and ``activate`` call it.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: Decision passes after one step at most (an interruption deactivates an explicit session,
#: which is decided again; this settles in two or three).
MAX_PASSES = 16

_KINDS = {"playback": (StreamKind.SINK_INPUT, False), "record": (StreamKind.SOURCE_OUTPUT, False),
          "monitor": (StreamKind.SOURCE_OUTPUT, True)}
#: The device a simulated stream is linked to, by kind: devices are not simulated, so every
#: playback stream is on one sink and every recording on one source, with the ids the
#: PulseAudio backend gives a server's first sink and source.
_LINKED_TO = {StreamKind.SINK_INPUT: "sink:0", StreamKind.SOURCE_OUTPUT: "source:0"}
_NAMES = {"type": "string", "minLength": 1, "maxLength": 64}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schema", "streams"],
    "properties": {
        "schema": {"const": SCHEMA_VERSION},
        "description": {"type": "string", "maxLength": 4096},
        "activate": {"type": "array", "items": _NAMES, "maxItems": MAX_STREAMS + MAX_SESSIONS,
                     "uniqueItems": True},
        "streams": {
            "type": "object", "minProperties": 1, "maxProperties": MAX_STREAMS,
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "kind": {"enum": list(DIRECTIONS)},
                    "properties": {"type": "object", "maxProperties": MAX_PROPERTIES,
                                   "additionalProperties": {"type": "string",
                                                            "maxLength": MAX_VALUE_CHARS}},
                    "player": {"type": "boolean"},
                    "module": {"type": "string", "minLength": 1, "maxLength": 256},
                },
            },
        },
        "sessions": {
            "type": "object", "maxProperties": MAX_SESSIONS,
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["category"],
                "properties": {
                    "category": {"enum": list(CATEGORIES)},
                    "mode": {"enum": list(MODES)},
                    "options": {"type": "array", "items": {"enum": list(OPTIONS)},
                                "uniqueItems": True},
                    "app": {"type": "string", "minLength": 1, "maxLength": 256},
                    "streams": {"type": "array", "items": _NAMES, "maxItems": MAX_STREAMS,
                                "uniqueItems": True},
                },
            },
        },
    },
}

#: Stream properties through which the daemon finds a stream's MPRIS player
#: (:meth:`audiopolicyd.model.Snapshot.player_for`), most trusted first.
_PLAYER_KEYS = ("application.process.id", "application.id", "pipewire.access.portal.app_id",
                "application.process.binary")


class ScenarioError(Exception):
    """A scenario file is unreadable or invalid; ``problems`` lists every problem found
    (:class:`~audiopolicyd.policy.Problem`: ``file: key.path: message``)."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class ScenarioStream:
    """One stream of a scenario.

    :param name: its name in the scenario
    :param stream: the stream as the server would report it, corked (paused) and linked
    :param player: the MPRIS player of its app, or None
    """

    name: str
    stream: Stream
    player: Player | None = None


@dataclass(frozen=True)
class ScenarioSession:
    """One explicit session of a scenario: ``CreateSession`` with these hints.

    :param name: its name in the scenario
    :param app: its app id (the session's app is ``app:<app>``)
    :param streams: names of the scenario's streams that belong to it
    """

    name: str
    category: str
    mode: str = "default"
    options: tuple[str, ...] = ()
    app: str = ""
    streams: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """A validated scenario (build it with :func:`parse_scenario` or :func:`load_scenario`).

    :param activate: names of streams and sessions, in the order they start
    """

    file: str
    streams: tuple[ScenarioStream, ...]
    sessions: tuple[ScenarioSession, ...] = ()
    activate: tuple[str, ...] = ()
    description: str = ""


@dataclass
class Simulation:
    """What the daemon would decide at the end of a scenario.

    :param events: one per step, in order: ``Target`` (a name), ``Event`` (``create`` for
        each session first, then ``start`` or ``activate``), ``Result`` (``created``,
        ``started``, ``active``, ``delayed`` or ``refused``), and for a refusal ``Error``
        (the D-Bus error's last component, ``InsufficientPriority``...) and ``Message``
    :param streams: :func:`~audiopolicyd.explain.stream_explanation` of every stream, in the
        scenario's order (``Target`` is the stream's name)
    :param sessions: :func:`~audiopolicyd.explain.session_explanation` of every session
        (an explicit session's ``Target`` is its name, an implicit one's its id)
    :param effects: stream name -> its effect
    """

    events: list[dict[str, Any]] = field(default_factory=list)
    streams: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    effects: dict[str, Effect] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """``{"events": [...], "streams": [...], "sessions": [...]}``, for ``--json``."""
        return {"events": self.events, "streams": self.streams, "sessions": self.sessions}


# -- reading ---------------------------------------------------------------------------------

def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file: JSON when its name ends in ``.json``, else TOML.

    :raises ScenarioError: the file cannot be read (``(file)``), decoded (``(toml)``,
        ``(json)``) or is invalid (a key path)
    """
    file = str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ScenarioError([Problem(file, "(file)", "not a regular file")])
        if info.st_size > MAX_FILE_BYTES:
            raise ScenarioError([Problem(file, "(file)", f"{info.st_size} bytes is larger "
                                                         f"than {MAX_FILE_BYTES}")])
        data = path.read_bytes()
    except OSError as exc:
        raise ScenarioError([Problem(file, "(file)", exc.strerror or str(exc))]) from None
    if path.suffix == ".json":
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
            raise ScenarioError([Problem(file, "(json)", str(exc)[:512] or
                                         type(exc).__name__)]) from None
    else:
        try:
            doc = parse_toml(data, file)
        except PolicyError as exc:
            raise ScenarioError(exc.problems) from None
    return parse_scenario(doc, file)


def parse_scenario(doc: Any, file: str) -> Scenario:
    """Validate a decoded scenario document and build its :class:`Scenario`.

    :raises ScenarioError: listing every problem of the document
    """
    if not isinstance(doc, Mapping):
        raise ScenarioError([Problem(file, "(document)", f"{quote(doc)} is not a table")])
    version = doc.get("schema", "missing")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ScenarioError([Problem(file, "schema", f"must be {SCHEMA_VERSION} (got "
                                     f"{quote(version)}); the rest of the file was not read")])
    problems, fatal = _value_problems(file, doc)
    if not fatal:
        seen = {p.path for p in problems}
        problems += [p for p in _problems(file, doc, PolicyValidator(SCHEMA))
                     if p.path not in seen]
    if not problems:
        problems = _reference_problems(file, doc)
    if problems:
        raise ScenarioError(sorted(problems, key=lambda p: (p.path, p.message)))
    return _build(file, doc)


def _reference_problems(file: str, doc: Mapping[str, Any]) -> list[Problem]:
    """What the schema does not say: names, property names, references between tables. Key
    paths are quoted and cut as policy problems' are (a name cannot forge a line)."""
    problems = []
    streams, sessions = doc["streams"], doc.get("sessions", {})
    for table, names in (("streams", streams), ("sessions", sessions)):
        for name in names:
            if not NAME.fullmatch(name):
                problems.append(Problem(file, _path([table, name]),
                                        "a name is 1 to 64 letters, digits, '_', '.', ':' or "
                                        "'-', starting with a letter or digit"))
    for name in set(streams) & set(sessions):
        problems.append(Problem(file, _path(["sessions", name]), "a stream has that name too"))
    for name, stream in streams.items():
        properties = stream.get("properties", {})
        for key in properties:
            if not 0 < len(key) <= MAX_KEY_CHARS:
                problems.append(Problem(file, _path(["streams", name, "properties"]),
                                        f"property name {quote(key)} is not 1 to "
                                        f"{MAX_KEY_CHARS} characters"))
        if stream.get("player") and not any(properties.get(k) for k in _PLAYER_KEYS):
            problems.append(Problem(file, _path(["streams", name, "player"]), "the daemon "
                                    "finds a stream's player by one of these properties; set "
                                    "one: " + ", ".join(_PLAYER_KEYS)))
        if stream.get("player") and stream.get("module"):
            problems.append(Problem(file, _path(["streams", name, "player"]),
                                    "a server module's stream has no player"))
    owner: dict[str, str] = {}
    for name, session in sessions.items():
        for i, member in enumerate(session.get("streams", [])):
            where = _path(["sessions", name, "streams", i])
            if member not in streams:
                problems.append(Problem(file, where, f"no stream {quote(member)}"))
            elif member in owner:
                problems.append(Problem(file, where, f"{quote(member)} is already a stream of "
                                                     f"session {quote(owner[member])}"))
            elif streams[member].get("module"):
                problems.append(Problem(file, where, f"{quote(member)} is a server module's "
                                                     "stream, no app's"))
            else:
                owner[member] = name
    for i, target in enumerate(doc.get("activate", [])):
        if target not in streams and target not in sessions:
            problems.append(Problem(file, f"activate[{i}]",
                                    f"no stream or session {quote(target)}"))
    return problems


def _build(file: str, doc: Mapping[str, Any]) -> Scenario:
    streams = []
    for index, (name, table) in enumerate(doc["streams"].items(), start=1):
        kind, monitor = _KINDS[table.get("kind", "playback")]
        module = table.get("module", "")
        properties = freeze(table.get("properties", {}))
        # corked and linked (to _LINKED_TO's device): present, not playing until `activate`
        # starts it. The id has the shape the PulseAudio backend gives (simulated output reads
        # as live output does); no server remembers a simulated stream's volume: no restore key
        stream = Stream(kind, index, properties, corked=True, device=_LINKED_TO[kind],
                        monitor=monitor, module=module, owner_module=index if module else -1,
                        id=f"{kind.value}:{index}", restore_key="")
        player = None
        if table.get("player"):
            pid = stream.pid
            entry = "" if pid is not None else next(
                properties[k] for k in _PLAYER_KEYS[1:] if properties.get(k))
            player = Player(f"org.mpris.MediaPlayer2.{name}", pid=pid, desktop_entry=entry,
                            identity=name, status="Playing")
        streams.append(ScenarioStream(name, stream, player))
    sessions = tuple(
        ScenarioSession(name, table["category"], table.get("mode", "default"),
                        tuple(table.get("options", ())), table.get("app", name),
                        tuple(table.get("streams", ())))
        for name, table in doc.get("sessions", {}).items())
    return Scenario(file, tuple(streams), sessions, tuple(doc.get("activate", ())),
                    doc.get("description", ""))


# -- running ---------------------------------------------------------------------------------

class _Run:
    """The daemon's decision pass without a server: the scenario's graph, the implicit and the
    explicit sessions, decided again until the explicit sessions settle."""

    def __init__(self, scenario: Scenario, policies: PolicySet, pm: PluginManager | None):
        self.policies, self.pm = policies, pm
        self.streams = {s.name: s.stream for s in scenario.streams}
        self.players = {p.bus_name: p for s in scenario.streams if (p := s.player)}
        seq = itertools.count(1)  # shared by implicit and explicit sessions, as in the daemon
        self.implicit = ImplicitSessions(seq)
        self.explicit = AppSessions(lambda: policies, seq, on_change=self._changed, pm=pm)
        self.dirty = False
        self.owned: dict[str, AppSession] = {}  # stream key -> its explicit session
        self.classified: dict[str, tuple[str, str]] = {}
        self.sessions: list[Session] = []
        self.effects: dict[str, Effect] = {}

    def _changed(self) -> None:
        self.dirty = True

    def settle(self) -> None:
        """Decide until no explicit session changes (an interruption deactivates one)."""
        for _ in range(MAX_PASSES):
            self.dirty = False
            self._pass()
            if not self.dirty:
                return
        logger.warning("the sessions did not settle in %d passes", MAX_PASSES)

    def _pass(self) -> None:
        graph = {s.key: s for s in self.streams.values()}
        snap = Snapshot(freeze(graph), freeze({}), freeze(self.players))
        legacy = Snapshot(freeze({k: s for k, s in graph.items() if k not in self.owned}),
                          snap.devices, snap.players)
        self.classified = classify(legacy, self.policies, self.pm)
        self.sessions = self.implicit.update(legacy, self.classified)
        for app in self.explicit.sessions.values():
            members = sorted(k for k, owner in self.owned.items() if owner is app)
            self.sessions.append(app.model(members))
            self.classified.update((k, (app.category, f"session {app.id}")) for k in members)
        self.effects = decide(snap, self.sessions, self.policies, self.pm)
        self.explicit.update(self.sessions, now=0.0)


def simulate(scenario: Scenario, policies: PolicySet,
             pm: PluginManager | None = None) -> Simulation:
    """Run a scenario through classification, sessions and :func:`~audiopolicyd.engine.decide`.

    Each session is created first (``CreateSession`` with its category, mode and options: a
    refusal such as ``IncompatibleCategoryOption`` leaves its streams to the ``[[classify]]``
    rules, as for an app whose call failed); then each name of ``activate`` in order: a
    stream starts playing (uncorks), a session is activated (``SetActive(true)``, refused with
    ``InsufficientPriority`` as the daemon refuses it); after each step the daemon decides.

    :param scenario: the scenario
    :param policies: the policy set to simulate
    :param pm: the plugin manager (:func:`~audiopolicyd.pluginmanager.make_plugin_manager`),
        or None for no plugins
    :returns: the events and the final explanations, see :class:`Simulation`
    """
    run = _Run(scenario, policies, pm)
    out = Simulation()
    by_name: dict[str, AppSession] = {}
    for spec in scenario.sessions:
        hints = {"Name": spec.name, "Category": spec.category, "Mode": spec.mode,
                 "Options": list(spec.options)}
        try:
            app = run.explicit.create(f":simulated.{spec.name}", Identity(app_id=spec.app),
                                      hints)
        except SessionError as exc:
            out.events.append(_event(spec.name, "create", exc))
            continue
        by_name[spec.name] = app
        run.owned.update((run.streams[s].key, app) for s in spec.streams)
        out.events.append(_event(spec.name, "create", "created"))
    run.settle()
    for name in scenario.activate:
        if name in run.streams:
            stream = run.streams[name]
            run.streams[name] = dataclasses.replace(stream, corked=False)
            out.events.append(_event(name, "start", "started"))
        elif name in by_name:
            try:
                out.events.append(_event(name, "activate",
                                         run.explicit.set_active(by_name[name], True, [])))
            except SessionError as exc:
                out.events.append(_event(name, "activate", exc))
        else:
            out.events.append(_event(name, "activate", NoSuchSession(
                "the session was not created")))
        run.settle()

    in_force = policies.policies
    session_of = {k: s.id for s in run.sessions for k in s.streams}
    for each in scenario.streams:
        stream = run.streams[each.name]
        category, rule = run.classified.get(stream.key, ("", ""))
        effect = run.effects[stream.key]
        out.effects[each.name] = effect
        out.streams.append(stream_explanation(each.name, stream, category, rule,
                                              session_of.get(stream.key, ""), effect,
                                              in_force))
    names = {app.session_id: name for name, app in by_name.items()}
    stream_names = {s.stream.key: s.name for s in scenario.streams}
    for session in run.sessions:
        host = run.explicit.sessions.get(session.id.split(":", 1)[1]) if session.explicit \
            else None
        explained = session_explanation(
            names.get(session.id, session.id), session, run.effects, in_force,
            host.state if host else None, host.interrupted_by if host else ())
        explained["Streams"] = [stream_names[k] for k in session.streams]  # the scenario's
        out.sessions.append(explained)
    return out


def _event(target: str, event: str, result: str | SessionError) -> dict[str, Any]:
    if isinstance(result, SessionError):
        return {"Target": target, "Event": event, "Result": "refused", "Error": result.name,
                "Message": result.message}
    return {"Target": target, "Event": event, "Result": result}


# -- output ----------------------------------------------------------------------------------

def render(result: Simulation) -> str:
    """The text of ``audiopolicyctl policy simulate``: the steps, then every stream with its
    category, effect and reasons (as ``explain`` words them), then every session."""
    lines = ["steps:"]
    for i, e in enumerate(result.events, start=1):
        refused = f": {e['Error']}: {e['Message']}" if e["Result"] == "refused" else ""
        lines.append(f"  {i}. {e['Event']} {e['Target']}: {e['Result']}{refused}")
    lines.append("streams:")
    for s in result.streams:
        lines.append(f"  {s['Target']} ({s['Kind']}, {s['Application']}): "
                     f"{s['Category'] or 'infrastructure'}, effect {s['Effect']}")
        lines.append(f"    chosen by {s['ChosenBy']}"
                     + (f"; session {s['Session']}" if s["Session"] else ""))
        lines.extend(f"    {reason}" for reason in s["Reasons"])
    lines.append("sessions:" if result.sessions else "sessions: none")
    for s in result.sessions:
        extra = ", ".join([s["Mode"]] + s["Options"])
        by = f" by {', '.join(s['InterruptedBy'])}" if s["InterruptedBy"] else ""
        lines.append(f"  {s['Target']}: {s['Category']} ({extra}), {s['State']}{by}; "
                     f"streams {', '.join(s['Streams']) or 'none'}")
    return "\n".join(lines)
