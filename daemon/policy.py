"""One TOML category policy -> a :class:`Policy`; a set of them -> a :class:`PolicySet`.

Pure: dicts and strings in, objects or a list of :class:`Problem` out. Validation uses
JSON Schema (the ``jsonschema`` library) so every problem in a document is reported in one pass,
as ``file: dotted.key.path: message``. Unknown keys are errors. ``schema = 1`` is checked first:
a document of another schema version is not interpreted further.

Stricter than JSON Schema where TOML and Python are lax (the same rules apply to the plugins'
settings schemas, which share the validator):

* a number anywhere in a document must be finite: TOML's ``nan``, ``+nan``, ``-nan``, ``inf``
  and ``-inf`` are errors wherever they appear;
* ``integer`` means a TOML integer: ``50.0``, ``-0.0`` and ``true`` are not integers (JSON
  Schema's ``integer`` accepts ``1.0``), and ``enum``/``const`` compare types too (``1.0`` is
  not ``1``);
* nothing nests deeper than :data:`MAX_DEPTH` tables and arrays;
* a problem quotes at most :data:`QUOTE_CHARS` characters of a bad value or key (a 1 MB string
  is not echoed into logs, D-Bus signals and properties).

A policy document (see ``policies/*.toml`` and docs/policies.md)::

    schema = 1
    category = "playAndRecord"
    priority = 80                 # 0..100; higher wins, equal: the later activation wins
    mixes_with_others = false     # Apple: whether the category mixes by default
    plays = true                  # False: the category's output is muted (never audible)
    records = true
    modes = ["default", "voiceChat"]
    options = ["mixWithOthers", "duckOthers"]
    default_for = []              # "playback" / "record": category of unmatched streams

    [activation]                  # what activating a session of this category does to others
    others = "interrupt"          # to non-mixable sessions: mix | duck | interrupt | silence
    mixable_others = "duck"       # to mixable sessions (ambient, mixWithOthers)
    duck_level = 0.2              # linear gain, 0.0..1.0 (Android's default duck is 0.2)
    duck_ramp_ms = 150            # ms

    [overrides.ambient]           # per-pair: what this category does to `ambient`
    others = "mix"

    [[classify]]                  # streams of apps that never call us
    media_role = ["phone"]

    [[classify]]                  # a server module's streams: only by naming the module
    module = ["module-loopback"]

    [route]                       # where the category's streams go (docs/routing.md)
    output = ["usbAudio", "headphones", "default"]   # port types, first present wins;
    input = ["headsetMic", "default"]                # "default": the user's default device
    interrupt_on_disconnect = true  # Apple's prefersInterruptionOnRouteDisconnect

    [plugins.record]              # settings of a plugin, validated by the plugin's schema

Directions: a category handles playback streams when ``plays`` is true, recording streams
(``record`` and ``monitor``) when ``records`` is true (:func:`handled_directions`); its
``[[classify]]`` rules never match a stream of another direction, and naming one in a rule's
``direction`` or in ``default_for`` is a problem.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import jsonschema

from .limits import QUOTE_CHARS, quote
from .model import CATEGORIES, MODES, OPTIONS, Action, Stream, StreamKind, freeze
from .route import DEFAULT, INPUT_ONLY, OUTPUT_ONLY, PORT_TYPES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: Deepest nesting of tables and arrays in a policy (a shipped file needs 3). Deeper documents
#: are reported, not validated: Python's parsers and validators recurse per level.
MAX_DEPTH = 32
#: Longest problem message; jsonschema's messages may embed schema values too.
MAX_MESSAGE_CHARS = 512

#: Directions a classify rule can name. ``monitor`` is a recording of a sink's monitor.
DIRECTIONS = ("playback", "record", "monitor")


def handled_directions(plays: bool, records: bool) -> frozenset[str]:
    """The directions of the streams a category handles, from its policy's ``plays`` and
    ``records``: ``playback`` when it plays, ``record`` and ``monitor`` when it records.

    A category's ``[[classify]]`` rules and ``default_for`` capture streams of these
    directions only: a category that does not record (``playback``) never takes a recording
    stream, whatever its properties claim (``pw-record`` sets ``media.role=music``), and one
    that does not play (``record``) never takes a playback stream. As AVAudioSession: an app
    in the playback category does not record, and an app that records picks a category that
    records.
    """
    return frozenset((("playback",) if plays else ()) + (("record", "monitor") if records else ()))

#: Classify keys -> stream property they match (glob patterns, any of the list).
MATCH_PROPERTIES = {
    "portal_app_id": "pipewire.access.portal.app_id",
    "application_id": "application.id",
    "process_binary": "application.process.binary",
    "application_name": "application.name",
    "media_role": "media.role",
}
#: Keys naming an application outrank ``media_role``, which outranks ``direction`` alone.
_APP_KEYS = ("portal_app_id", "application_id", "process_binary", "application_name")

#: The category of a server module's stream that no ``[[classify]]`` rule names by its
#: ``module`` key: infrastructure (``module-loopback``, ``module-echo-cancel``), in no session,
#: neither acting nor acted on.
INFRASTRUCTURE = ""

_ACTIONS = [a.value for a in Action]
_PATTERNS = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 256},
             "minItems": 1, "maxItems": 256}
_INTERACTION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "others": {"enum": _ACTIONS},
        "duck_level": {"type": "number", "minimum": 0.0, "maximum": 1.0},
        "duck_ramp_ms": {"type": "integer", "minimum": 0, "maximum": 10000},
    },
    "required": ["others"],
}


#: Most entries of a ``[route]`` preference list (one per port type, and ``default``).
_MAX_PREFERENCES = len(PORT_TYPES) + 1
_ROUTE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "output": {"type": "array", "uniqueItems": True, "minItems": 1,
                   "maxItems": _MAX_PREFERENCES,
                   "items": {"enum": [DEFAULT, *(t for t in PORT_TYPES if t not in INPUT_ONLY)]}},
        "input": {"type": "array", "uniqueItems": True, "minItems": 1,
                   "maxItems": _MAX_PREFERENCES,
                  "items": {"enum": [DEFAULT, *(t for t in PORT_TYPES if t not in OUTPUT_ONLY)]}},
        "interrupt_on_disconnect": {"type": "boolean"},
    },
}


def _is_integer(checker: Any, instance: Any) -> bool:
    """A TOML integer: not a float (``1.0``, ``-0.0``), not a boolean."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker: Any, instance: Any) -> bool:
    """An integer or a finite float (TOML's ``nan`` and ``inf`` are not numbers here)."""
    return _is_integer(checker, instance) or (isinstance(instance, float)
                                              and math.isfinite(instance))


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type all the way down: ``1.0`` is not ``1``, ``true`` is not ``1``
    (jsonschema's ``enum`` and ``const`` use Python's ``1.0 == 1``)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _enum(validator: Any, enums: Any, instance: Any, schema: Any) -> Iterable[Any]:
    if not any(_same(each, instance) for each in enums):
        yield jsonschema.ValidationError(f"{instance!r} is not one of {enums!r}")


def _const(validator: Any, const: Any, instance: Any, schema: Any) -> Iterable[Any]:
    if not _same(instance, const):
        yield jsonschema.ValidationError(f"{const!r} was expected")


#: Draft 2020-12 with TOML's types: strict ``integer``, finite ``number``, typed ``enum`` and
#: ``const``. Policies and the plugins' settings tables are validated by it alike.
PolicyValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"enum": _enum, "const": _const},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}),
)


def _schema(plugin_schemas: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON Schema of a policy document, with each plugin's settings table."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["schema", "category", "priority", "mixes_with_others", "activation"],
        "properties": {
            "schema": {"const": SCHEMA_VERSION},
            "category": {"enum": list(CATEGORIES)},
            "description": {"type": "string", "maxLength": 4096},
            "priority": {"type": "integer", "minimum": 0, "maximum": 100},
            "mixes_with_others": {"type": "boolean"},
            "plays": {"type": "boolean"},
            "records": {"type": "boolean"},
            "modes": {"type": "array", "items": {"enum": list(MODES)}, "uniqueItems": True},
            "options": {"type": "array", "items": {"enum": list(OPTIONS)}, "uniqueItems": True},
            "default_for": {"type": "array", "items": {"enum": ["playback", "record"]},
                            "uniqueItems": True},
            "activation": {
                "type": "object",
                "additionalProperties": False,
                "required": ["others"],
                "properties": {
                    "others": {"enum": _ACTIONS},
                    "mixable_others": {"enum": _ACTIONS},
                    "duck_level": {"type": "number", "minimum": 0.0, "maximum": 1.0},
                    "duck_ramp_ms": {"type": "integer", "minimum": 0, "maximum": 10000},
                },
            },
            "overrides": {
                "type": "object",
                "propertyNames": {"enum": list(CATEGORIES)},
                "additionalProperties": _INTERACTION,
            },
            "classify": {
                "type": "array",
                "maxItems": 1024,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "properties": {
                        **dict.fromkeys(MATCH_PROPERTIES, _PATTERNS),
                        "module": _PATTERNS,
                        "direction": {"type": "array", "items": {"enum": list(DIRECTIONS)},
                                      "minItems": 1, "uniqueItems": True},
                    },
                },
            },
            "route": _ROUTE,
            "plugins": {
                "type": "object",
                "additionalProperties": False,
                "properties": {name: dict(s) for name, s in plugin_schemas.items()},
            },
        },
    }


@dataclass(frozen=True)
class Problem:
    """One policy problem: ``file: path: message``.

    :param file: the policy file (or ``<policy set>`` for problems across files)
    :param path: dotted key path inside the document (``activation.duck_level``,
        ``classify[2].media_role``), or ``(toml)`` for a syntax error
    :param message: what is wrong, in words
    """

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class PolicyError(Exception):
    """A policy document or set is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Interaction:
    """What a category does to another session's audio, and where that was decided.

    :param action: mix | duck | interrupt | silence
    :param duck_level: linear gain applied by ``duck`` (0.0..1.0)
    :param ramp_ms: volume ramp duration in milliseconds
    :param file: policy file that decided it
    :param rule: key path that decided it (``activation.others``, ``overrides.playback``)
    """

    action: Action
    duck_level: float
    ramp_ms: int
    file: str
    rule: str


@dataclass(frozen=True)
class ClassifyRule:
    """A ``[[classify]]`` rule: all its keys must match, each by any of its glob patterns.

    A server module's stream (:attr:`Stream.module` not empty) is matched only by a rule whose
    ``module`` patterns name that module; a rule with ``module`` matches no client's stream.

    :param category: the category a matching stream gets
    :param match: property name -> glob patterns
    :param directions: directions the rule applies to (empty: all)
    :param file: the policy file
    :param index: position among the file's ``[[classify]]`` tables (0-based)
    :param priority: the category's priority (orders rules of the same tier)
    :param modules: glob patterns of the server modules whose streams the rule may match
        (``module-loopback``); empty: the rule matches clients' streams only
    :param handles: the directions the category handles (:func:`handled_directions`): the
        rule never matches a stream of another direction, whatever ``directions`` says
    """

    category: str
    match: Mapping[str, tuple[str, ...]]
    directions: frozenset[str]
    file: str
    index: int
    priority: int
    modules: tuple[str, ...] = ()
    handles: frozenset[str] = frozenset(DIRECTIONS)

    @property
    def tier(self) -> int:
        """0 for rules naming an application or a module, 1 for role rules, 2 for
        direction-only rules."""
        if self.modules or any(MATCH_PROPERTIES[k] in self.match for k in _APP_KEYS):
            return 0
        return 1 if self.match else 2

    @property
    def name(self) -> str:
        """``file: classify[i]`` for explanations."""
        return f"{self.file}: classify[{self.index}]"

    def matches(self, stream: Stream) -> bool:
        """True when every key of the rule matches the stream (case-sensitive globs)."""
        if stream.module:
            if not any(fnmatch.fnmatchcase(stream.module, p) for p in self.modules):
                return False  # infrastructure, unless the policy names the module
        elif self.modules:
            return False
        direction = direction_of(stream)
        if direction not in self.handles or (self.directions
                                             and direction not in self.directions):
            return False
        for prop, patterns in self.match.items():
            value = stream.properties.get(prop)
            if value is None or not any(fnmatch.fnmatchcase(value, p) for p in patterns):
                return False
        return True


def direction_of(stream: Stream) -> str:
    """``playback``, ``record`` or ``monitor`` (a recording of a sink's monitor)."""
    if stream.kind is StreamKind.SINK_INPUT:
        return "playback"
    return "monitor" if stream.monitor else "record"


@dataclass(frozen=True)
class RoutePolicy:
    """A category's ``[route]`` table: where its streams go (docs/routing.md).

    :param output: port types (:data:`audiopolicyd.route.PORT_TYPES`) and ``default`` (the
        user's default sink), in order of preference: the first present wins
    :param input: the same for inputs (``default``: the user's default source)
    :param interrupt_on_disconnect: Apple's ``prefersInterruptionOnRouteDisconnect``: when the
        device a playing stream of the category is on goes away, the stream is muted and its
        player paused (by the ``pause_on_route_disconnect`` plugin, where the policy enables it)
    """

    output: tuple[str, ...] = (DEFAULT,)
    input: tuple[str, ...] = (DEFAULT,)
    interrupt_on_disconnect: bool = True


@dataclass(frozen=True)
class Policy:
    """One validated category policy. Field meanings: see the module docstring."""

    category: str
    file: str
    priority: int
    mixes_with_others: bool
    plays: bool
    records: bool
    modes: frozenset[str]
    options: frozenset[str]
    default_for: frozenset[str]
    others: Interaction
    mixable_others: Interaction
    overrides: Mapping[str, Interaction]
    classify: tuple[ClassifyRule, ...]
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: freeze({}))
    description: str = ""
    route: RoutePolicy = field(default_factory=RoutePolicy)

    @property
    def directions(self) -> frozenset[str]:
        """The directions of the streams this category handles (:func:`handled_directions`)."""
        return handled_directions(self.plays, self.records)

    def interaction(self, victim_category: str, victim_mixable: bool) -> Interaction:
        """What activating this category does to a session of ``victim_category``.

        A per-pair override wins; otherwise ``activation.mixable_others`` applies to mixable
        victims and ``activation.others`` to the rest.
        """
        if victim_category in self.overrides:
            return self.overrides[victim_category]
        return self.mixable_others if victim_mixable else self.others


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters and ``…`` (messages of other libraries' errors)."""
    return text if len(text) <= limit else text[:limit] + "…"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: Longest key path in a problem (then ``…``).
_MAX_PATH_CHARS = 256


def _path(parts: Iterable[Any]) -> str:
    """``a.b[2].c``; a key that is not a bare TOML key is quoted as TOML quotes it (escapes
    included, so a key cannot forge a line), and cut to :data:`QUOTE_CHARS`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        key = str(part)
        if not _BARE_KEY.fullmatch(key):
            key = json.dumps(key, ensure_ascii=False)
        if len(key) > QUOTE_CHARS:
            key = key[:QUOTE_CHARS] + "…"
        out += f".{key}" if out else key
        if len(out) > _MAX_PATH_CHARS:
            return out[:_MAX_PATH_CHARS] + "…"
    return out or "(document)"


def _message(err: jsonschema.ValidationError) -> str:
    """jsonschema's message with the bad value quoted short (its messages embed the repr of the
    whole instance)."""
    message = err.message
    whole = repr(err.instance)
    if len(whole) > QUOTE_CHARS:
        message = message.replace(whole, quote(err.instance))
    return shorten(message)


def _problems(file: str, doc: Any, validator: jsonschema.protocols.Validator) -> list[Problem]:
    problems = []
    for err in validator.iter_errors(doc):
        path = list(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            schema = err.schema if isinstance(err.schema, Mapping) else {}
            allowed = sorted(schema.get("properties", {}))
            known = set(allowed)
            for key in sorted(k for k in err.instance if k not in known):
                hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
                problems.append(Problem(file, _path([*path, key]), f"unknown key{hint}"))
            continue
        if "propertyNames" in err.schema_path:
            problems.append(Problem(file, _path([*path, err.instance]),
                                    "not a category (one of: " + ", ".join(CATEGORIES) + ")"))
            continue
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else err.message
            problems.append(Problem(file, _path([*path, missing]), "required key is missing"))
            continue
        problems.append(Problem(file, _path(path), _message(err)))
    return sorted(problems, key=lambda p: (p.path, p.message))


#: TOML integers are 64-bit signed; tomllib reads any size.
_INT_RANGE = (-(1 << 63), (1 << 63) - 1)


def _value_problems(file: str, doc: Mapping[str, Any]) -> tuple[list[Problem], bool]:
    """What JSON Schema does not see: non-finite numbers anywhere, integers beyond TOML's 64
    bits, nesting deeper than :data:`MAX_DEPTH`. Iterative, so any depth is safe.

    :returns: the problems, and whether the document is unfit for schema validation (too deep
        or a huge integer, on which the validator would recurse or fail to format a message)
    """
    problems: list[Problem] = []
    fatal = False
    stack: list[tuple[tuple[Any, ...], Any, int]] = [((), doc, 0)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(Problem(file, _path(path), f"{value!r} is not a finite number"))
        elif isinstance(value, int) and not isinstance(value, bool) \
                and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            problems.append(Problem(file, _path(path), f"{quote(value)} is outside the 64-bit "
                                    "range of TOML integers"))
            fatal = True
        elif isinstance(value, (Mapping, list)):
            if depth > MAX_DEPTH:
                problems.append(Problem(file, _path(path),
                                        f"nested deeper than {MAX_DEPTH} tables and arrays"))
                fatal = True
                continue
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            stack.extend(((*path, key), item, depth + 1) for key, item in items)
    return sorted(problems, key=lambda p: (p.path, p.message)), fatal


#: What decides nesting in TOML text: strings and comments (skipped whole) and brackets.
_NESTING_TOKENS = re.compile(
    r'''"""(?:\\.|[^\\])*?"""|\'\'\'.*?\'\'\'|"(?:\\.|[^"\\\n])*"|'[^'\n]*'|#[^\n]*|[][{}]''',
    re.S)


def _too_deep_at(text: str) -> tuple[int, int] | None:
    """Line and column (1-based) of the first array or inline table nested deeper than
    :data:`MAX_DEPTH` in TOML text, or None."""
    depth = 0
    for token in _NESTING_TOKENS.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                start = token.start()
                return text.count("\n", 0, start) + 1, start - text.rfind("\n", 0, start)
        elif bracket in ("]", "}"):
            depth = max(0, depth - 1)
    return None


def _direction_problems(file: str, doc: Mapping[str, Any]) -> list[Problem]:
    """A ``direction`` or ``default_for`` naming a direction the category does not handle
    (:func:`handled_directions`), and a rule that could match no stream at all: contradictions
    that would otherwise mean a rule silently matching nothing, or every unmatched recording
    muted for good by ``records = false``. Values of the wrong type are the schema's problems.
    """
    plays, records = doc.get("plays", True), doc.get("records", False)
    if not isinstance(plays, bool) or not isinstance(records, bool):
        return []
    handles = handled_directions(plays, records)
    why = {"playback": "the category does not play (plays = false)",
           "record": "the category does not record (records = false)",
           "monitor": "the category does not record (records = false)"}
    problems = []
    defaults = doc.get("default_for", [])
    if isinstance(defaults, list):
        for direction in defaults:
            if isinstance(direction, str) and direction in why and direction not in handles:
                problems.append(Problem(file, "default_for", f"{direction!r}: {why[direction]}"))
    rules = doc.get("classify", [])
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, Mapping):
            continue
        directions = rule.get("direction")
        if not isinstance(directions, list):
            if not handles:
                problems.append(Problem(file, f"classify[{i}]", "matches no stream: the "
                                        "category neither plays nor records"))
            continue
        for direction in directions:
            if isinstance(direction, str) and direction in why and direction not in handles:
                problems.append(Problem(file, f"classify[{i}].direction",
                                        f"{direction!r}: {why[direction]}"))
    return problems


def parse_toml(text: str | bytes, file: str) -> dict[str, Any]:
    """Decode a TOML document.

    :raises PolicyError: for anything that stops decoding, path ``(toml)`` and the position
        where known: a syntax error, bytes that are not UTF-8, nesting too deep for the
        parser, an integer too long to convert
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise PolicyError([Problem(file, "(toml)",
                                   f"not UTF-8: {exc.reason} at byte {exc.start}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([Problem(file, "(toml)", str(exc))]) from None
    except RecursionError:
        # tomllib recurses per nested array or inline table (about 330 levels on CPython
        # 3.11) and says nowhere where; find it in the text.
        at = _too_deep_at(text) if isinstance(text, str) else None  # decoded above
        where = f" (at line {at[0]}, column {at[1]})" if at else ""
        raise PolicyError([Problem(file, "(toml)", f"nested deeper than {MAX_DEPTH} tables "
                                   f"and arrays{where}")]) from None
    except Exception as exc:  # e.g. ValueError: a decimal integer of over 4300 digits
        logger.debug("%s: TOML decoder failed", file, exc_info=True)
        raise PolicyError([Problem(file, "(toml)", f"cannot be decoded: "
                                   f"{type(exc).__name__}: {shorten(str(exc))}")]) from None


def parse_policy(doc: Mapping[str, Any], file: str,
                 plugin_schemas: Mapping[str, Mapping[str, Any]] | None = None) -> Policy:
    """Validate one decoded policy document and build its :class:`Policy`.

    :param doc: the decoded TOML document
    :param file: the file name, used in problems and explanations
    :param plugin_schemas: plugin name -> JSON Schema of its ``[plugins.<name>]`` table
    :raises PolicyError: listing every problem of the document
    """
    if not isinstance(doc, Mapping):
        raise PolicyError([Problem(file, "(document)", f"{quote(doc)} is not a table")])
    version = doc.get("schema", "missing")
    if not _is_integer(None, version) or version != SCHEMA_VERSION:
        raise PolicyError([Problem(file, "schema",
                                   f"must be {SCHEMA_VERSION} (got {quote(version)}); "
                                   "the rest of the file was not read")])
    problems, fatal = _value_problems(file, doc)
    if not fatal:
        validator = PolicyValidator(_schema(plugin_schemas or {}))
        seen = {p.path for p in problems}
        problems += [p for p in _problems(file, doc, validator) if p.path not in seen]
        seen = {p.path for p in problems}
        problems += [p for p in _direction_problems(file, doc) if p.path not in seen]
    if problems:
        raise PolicyError(sorted(problems, key=lambda p: (p.path, p.message)))

    category = doc["category"]
    act = doc["activation"]
    level = float(act.get("duck_level", 0.2))
    ramp = int(act.get("duck_ramp_ms", 0))

    def interaction(action: str, table: Mapping[str, Any], rule: str) -> Interaction:
        return Interaction(Action(action), float(table.get("duck_level", level)),
                           int(table.get("duck_ramp_ms", ramp)), file, rule)

    priority = doc["priority"]
    rules = tuple(
        ClassifyRule(
            category=category,
            match=freeze({MATCH_PROPERTIES[k]: tuple(v) for k, v in rule.items()
                          if k in MATCH_PROPERTIES}),
            directions=frozenset(rule.get("direction", ())),
            file=file,
            index=i,
            priority=priority,
            modules=tuple(rule.get("module", ())),
            handles=handled_directions(doc.get("plays", True), doc.get("records", False)),
        )
        for i, rule in enumerate(doc.get("classify", []))
    )
    return Policy(
        category=category,
        file=file,
        priority=priority,
        mixes_with_others=doc["mixes_with_others"],
        plays=doc.get("plays", True),
        records=doc.get("records", False),
        modes=frozenset(doc.get("modes", ["default"])) | {"default"},
        options=frozenset(doc.get("options", [])),
        default_for=frozenset(doc.get("default_for", [])),
        others=interaction(act["others"], act, "activation.others"),
        mixable_others=interaction(act.get("mixable_others", "mix"), act,
                                   "activation.mixable_others"),
        overrides=freeze({victim: interaction(t["others"], t, f"overrides.{victim}")
                          for victim, t in doc.get("overrides", {}).items()}),
        classify=rules,
        plugins=freeze({k: freeze(v) for k, v in doc.get("plugins", {}).items()}),
        description=doc.get("description", ""),
        route=_route_policy(doc.get("route", {})),
    )


def _route_policy(table: Mapping[str, Any]) -> RoutePolicy:
    """The validated ``[route]`` table; absent preferences are ``["default"]``."""
    return RoutePolicy(output=tuple(table.get("output", (DEFAULT,))),
                       input=tuple(table.get("input", (DEFAULT,))),
                       interrupt_on_disconnect=table.get("interrupt_on_disconnect", True))


@dataclass(frozen=True)
class PolicySet:
    """Every category policy in force, with classification ready to run.

    Build it with :func:`build_policy_set`.
    """

    policies: Mapping[str, Policy]
    rules: tuple[ClassifyRule, ...]
    defaults: Mapping[str, str]

    def classify(self, stream: Stream) -> tuple[str, str]:
        """The category of a stream and the rule that chose it.

        Rules naming an application win over role rules, which win over direction-only rules;
        within a tier the higher-priority category wins, then file and rule order. A rule
        matches only streams of a direction its category handles (:func:`handled_directions`):
        a recording stream claiming ``media.role=music`` is not ``playback``'s. A stream no
        rule matches gets the ``default_for`` category of its direction. A server module's
        stream that no rule names by ``module`` is infrastructure: :data:`INFRASTRUCTURE`.

        :returns: ``(category, rule name)``, e.g. ``("playback", "playback.toml: classify[0]")``
            or ``("", "module-loopback: server module (...)")``
        """
        for rule in self.rules:
            if rule.matches(stream):
                return rule.category, rule.name
        if stream.module:
            return INFRASTRUCTURE, f"{stream.module}: server module (no [[classify]] rule names it)"
        direction = "playback" if stream.kind is StreamKind.SINK_INPUT else "record"
        category = self.defaults[direction]
        return category, f"{self.policies[category].file}: default_for"


def build_policy_set(policies: Iterable[Policy]) -> PolicySet:
    """Check policies against each other and index them.

    :raises PolicyError: when two files define one category, or ``default_for`` of a direction
        is claimed by no policy or by several
    """
    problems: list[Problem] = []
    by_category: dict[str, Policy] = {}
    for policy in policies:
        if policy.category in by_category:
            problems.append(Problem(policy.file, "category",
                                    f"{policy.category!r} is already defined by "
                                    f"{by_category[policy.category].file}"))
            continue
        by_category[policy.category] = policy
    defaults: dict[str, str] = {}
    for direction in ("playback", "record"):
        claimers = [p for p in by_category.values() if direction in p.default_for]
        if len(claimers) != 1:
            names = ", ".join(p.file for p in claimers) or "no policy"
            problems.append(Problem("<policy set>", "default_for",
                                    f"exactly one policy must be default_for {direction!r} "
                                    f"(claimed by {names})"))
        else:
            defaults[direction] = claimers[0].category
    if problems:
        raise PolicyError(problems)
    rules = sorted((r for p in by_category.values() for r in p.classify),
                   key=lambda r: (r.tier, -r.priority, r.file, r.index))
    return PolicySet(policies=freeze(by_category), rules=tuple(rules), defaults=freeze(defaults))
