"""One TOML category policy -> a :class:`Policy`; a set of them -> a :class:`PolicySet`.

Pure: dicts and strings in, objects or a list of :class:`Problem` out. Validation uses
JSON Schema (the ``jsonschema`` library) so every problem in a document is reported in one pass,
as ``file: dotted.key.path: message``. Unknown keys are errors. ``schema = 1`` is checked first:
a document of another schema version is not interpreted further.

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

    [plugins.record]              # settings of a plugin, validated by the plugin's schema
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import jsonschema

from .model import CATEGORIES, MODES, OPTIONS, Action, Stream, StreamKind, freeze

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SCHEMA_VERSION = 1

#: Directions a classify rule can name. ``monitor`` is a recording of a sink's monitor.
DIRECTIONS = ("playback", "record", "monitor")

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
                        **{key: _PATTERNS for key in MATCH_PROPERTIES},
                        "direction": {"type": "array", "items": {"enum": list(DIRECTIONS)},
                                      "minItems": 1, "uniqueItems": True},
                    },
                },
            },
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

    :param category: the category a matching stream gets
    :param match: property name -> glob patterns
    :param directions: directions the rule applies to (empty: all)
    :param file: the policy file
    :param index: position among the file's ``[[classify]]`` tables (0-based)
    :param priority: the category's priority (orders rules of the same tier)
    """

    category: str
    match: Mapping[str, tuple[str, ...]]
    directions: frozenset[str]
    file: str
    index: int
    priority: int

    @property
    def tier(self) -> int:
        """0 for rules naming an application, 1 for role rules, 2 for direction-only rules."""
        if any(MATCH_PROPERTIES[k] in self.match for k in _APP_KEYS):
            return 0
        return 1 if self.match else 2

    @property
    def name(self) -> str:
        """``file: classify[i]`` for explanations."""
        return f"{self.file}: classify[{self.index}]"

    def matches(self, stream: Stream) -> bool:
        """True when every key of the rule matches the stream (case-sensitive globs)."""
        if self.directions and direction_of(stream) not in self.directions:
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

    def interaction(self, victim_category: str, victim_mixable: bool) -> Interaction:
        """What activating this category does to a session of ``victim_category``.

        A per-pair override wins; otherwise ``activation.mixable_others`` applies to mixable
        victims and ``activation.others`` to the rest.
        """
        if victim_category in self.overrides:
            return self.overrides[victim_category]
        return self.mixable_others if victim_mixable else self.others


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _problems(file: str, doc: Any, validator: jsonschema.protocols.Validator) -> list[Problem]:
    problems = []
    for err in validator.iter_errors(doc):
        path = list(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = sorted(err.schema.get("properties", {}))
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
        problems.append(Problem(file, _path(path), err.message))
    return sorted(problems, key=lambda p: (p.path, p.message))


def parse_toml(text: str | bytes, file: str) -> dict[str, Any]:
    """Decode a TOML document.

    :raises PolicyError: for a syntax error or bytes that are not UTF-8, path ``(toml)``
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise PolicyError([Problem(file, "(toml)", f"not UTF-8: {exc.reason} at byte {exc.start}")])
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([Problem(file, "(toml)", str(exc))]) from None


def parse_policy(doc: Mapping[str, Any], file: str,
                 plugin_schemas: Mapping[str, Mapping[str, Any]] | None = None) -> Policy:
    """Validate one decoded policy document and build its :class:`Policy`.

    :param doc: the decoded TOML document
    :param file: the file name, used in problems and explanations
    :param plugin_schemas: plugin name -> JSON Schema of its ``[plugins.<name>]`` table
    :raises PolicyError: listing every problem of the document
    """
    if doc.get("schema") != SCHEMA_VERSION:
        got = doc.get("schema", "missing")
        raise PolicyError([Problem(file, "schema",
                                   f"must be {SCHEMA_VERSION} (got {got!r}); "
                                   "the rest of the file was not read")])
    validator = jsonschema.Draft202012Validator(_schema(plugin_schemas or {}))
    problems = _problems(file, doc, validator)
    if problems:
        raise PolicyError(problems)

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
    )


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
        within a tier the higher-priority category wins, then file and rule order. A stream no
        rule matches gets the ``default_for`` category of its direction.

        :returns: ``(category, rule name)``, e.g. ``("playback", "playback.toml: classify[0]")``
        """
        for rule in self.rules:
            if rule.matches(stream):
                return rule.category, rule.name
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
