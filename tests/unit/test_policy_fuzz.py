"""Property-based tests of the policy parser (Hypothesis) over mutated shipped policies.

Whatever an administrator (or an attacker with write access to a policy directory) puts in a
file: wrong types, unknown keys, NaN and infinities, huge and non-UTF-8 strings, huge integers,
deep nesting, random byte and TOML mutations; the parser either builds a usable policy or raises
:class:`~audiopolicyd.policy.PolicyError`, whose every problem names the file and a key path or
a ``(toml)``/``(file)``/``(document)`` position and quotes only a short prefix of a bad value.

Derandomized and without an example database, so CI runs the same examples every time and
the suite stays fast; raise ``max_examples`` locally to search harder.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiopolicyd.pluginmanager import make_plugin_manager, plugin_settings_schemas
from audiopolicyd.policy import Policy, PolicyError, PolicySet, parse_policy, parse_toml
from audiopolicyd.policystore import load_files, shipped_dir

logger = logging.getLogger(__name__)

FUZZ = settings(max_examples=100, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SCHEMAS = plugin_settings_schemas(make_plugin_manager(load_entry_points=False))
SHIPPED_TEXT = {p.name: p.read_bytes() for p in sorted(shipped_dir().glob("*.toml"))}
SHIPPED_DOCS = {name: parse_toml(text, name) for name, text in SHIPPED_TEXT.items()}

POSITIONS = ("(toml)", "(file)", "(document)")
#: A key path: bare or quoted keys joined by dots, with [i] indexes; long ones end in "…".
KEY_PATH = re.compile(r'^([A-Za-z0-9_-]+|".*")')
#: Longest problem line: a file name, a key path of at most 256 characters and a message of at
#: most 512 (values quoted to 64), whatever the size of the bad value.
MAX_LINE = 5000


def check_outcome(parse, file: str) -> object:
    """Run ``parse``; it must return a result or raise PolicyError with well-formed problems."""
    try:
        return parse()
    except PolicyError as exc:
        assert exc.problems, "a PolicyError lists its problems"
        for problem in exc.problems:
            line = str(problem)
            assert problem.file == file or problem.file == "<policy set>" \
                or problem.file.endswith(".toml"), line
            assert problem.path in POSITIONS or KEY_PATH.match(problem.path), line
            assert problem.message, line
            assert len(line) <= MAX_LINE, f"a {len(line)}-character problem"
            line.encode("utf-8")  # goes out over D-Bus: must be valid UTF-8
        return None


def check_policy(policy: Policy) -> None:
    """A policy that validated is usable by the engine: finite levels, integer ramps."""
    for inter in (policy.others, policy.mixable_others, *policy.overrides.values()):
        assert math.isfinite(inter.duck_level) and 0.0 <= inter.duck_level <= 1.0
        assert type(inter.ramp_ms) is int and 0 <= inter.ramp_ms <= 10_000
    assert type(policy.priority) is int and 0 <= policy.priority <= 100


# -- strategies ----------------------------------------------------------------------------------

def nest(depth: int, kind: str, leaf: object) -> object:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "array" else {"a": value}
    return value


HUGE_TEXT = st.integers(5_000, 100_000).map(lambda n: "x" * n)
SCALARS = st.one_of(
    st.integers(-(2 ** 70), 2 ** 70),
    st.integers(-(2 ** 20000), 2 ** 20000),  # beyond what Python prints in decimal
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1.0, 50.0, 0.2]),
    st.booleans(),
    st.text(max_size=40),
    st.sampled_from(["", "duck", "mix", "playback", "record", "phone", "voiceChat",
                     "mixWithOthers", "a11y", "module-loopback", "*"]),
    HUGE_TEXT,
    st.datetimes(), st.dates(), st.times(),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
DEEP = st.builds(nest, st.integers(20, 1500), st.sampled_from(["array", "table"]), SCALARS)
HOSTILE = st.one_of(VALUES, DEEP)
KEYS = st.one_of(st.text(max_size=20), HUGE_TEXT,
                 st.sampled_from(["duck_levle", "modes", "priority", "plugins", "module",
                                  "a.b", "evil\nline", ""]))


def node_paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value of a document (the document itself included)."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += node_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += node_paths(item, (*prefix, i))
    return out


def get(doc: object, path: tuple) -> object:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutated_documents(draw: st.DrawFn) -> tuple[str, dict]:
    """A shipped document with 1-4 mutations: a value replaced by a hostile one, an unknown
    key added, a key removed or renamed."""
    name = draw(st.sampled_from(sorted(SHIPPED_DOCS)))
    doc = copy.deepcopy(SHIPPED_DOCS[name])
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(node_paths(doc)))
        target = get(doc, path)
        op = draw(st.sampled_from(["replace", "add", "remove", "rename"]))
        if op == "replace" and path:
            get(doc, path[:-1])[path[-1]] = draw(HOSTILE)
        elif isinstance(target, dict) and op in ("add", "replace"):
            target[draw(KEYS)] = draw(HOSTILE)
        elif isinstance(target, dict) and target and op in ("remove", "rename"):
            key = draw(st.sampled_from(sorted(target)))
            value = target.pop(key)
            if op == "rename":
                target[draw(KEYS)] = value
        elif isinstance(target, list):
            target.append(draw(HOSTILE))
    return name, doc


FRAGMENTS = st.one_of(
    st.sampled_from([
        "nan", "+nan", "-nan", "inf", "-inf", "1.0", "-0.0", "true", "0x" + "f" * 5000,
        "1" * 5000, "1e400", "\n[activation]\n", "\n[[classify]]\nmodule = ['x']\n",
        "\nduck_level = nan\n", "\npriority = 50.0\n", "\nschema = 1.0\n", '"""', "'''",
        "\n[overrides.ambient]\nothers = 'duck'\nduck_level = inf\n", "=", "[", "{", "]", "}",
        "\nx = " + "{a = " * 400, "\nx = " + "[" * 600, "\ndescription = '" + "x" * 100_000 + "'\n",
        "\nmodes = [" + "[" * 40 + "]" * 40 + "]\n", "\\u0000", "\\uD800", "#",
    ]).map(str.encode),
    st.binary(max_size=24),
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf"]),
)


@st.composite
def mutated_texts(draw: st.DrawFn) -> tuple[str, bytes]:
    """A shipped file's bytes with 1-5 edits: fragments inserted, bytes deleted or replaced,
    lines duplicated."""
    name = draw(st.sampled_from(sorted(SHIPPED_TEXT)))
    data = SHIPPED_TEXT[name]
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "insert", "delete", "replace", "duplicate"]))
        if op == "insert":
            data = data[:at] + draw(FRAGMENTS) + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 40)):]
        elif op == "replace" and at < len(data):
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
        else:
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            line = data[start:end + 1 if end >= 0 else len(data)]
            data = data[:start] + line + line + data[start:]
    return name, data


# -- properties ----------------------------------------------------------------------------------

def test_shipped_documents_are_valid():
    for name, doc in SHIPPED_DOCS.items():
        check_policy(parse_policy(doc, name, SCHEMAS))


@FUZZ
@given(mutated_documents())
def test_mutated_documents_give_a_policy_or_named_problems(case):
    name, doc = case
    policy = check_outcome(lambda: parse_policy(doc, name, SCHEMAS), name)
    if policy is not None:
        check_policy(policy)


@FUZZ
@given(mutated_texts())
def test_mutated_files_give_a_policy_or_named_problems(case):
    name, data = case
    policy = check_outcome(lambda: parse_policy(parse_toml(data, name), name, SCHEMAS), name)
    if policy is not None:
        check_policy(policy)


@settings(FUZZ, max_examples=30)
@given(st.lists(mutated_texts(), min_size=1, max_size=3))
def test_a_directory_of_mutated_files_gives_a_set_or_named_problems(cases):
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in cases:
            path = Path(tmp) / name
            path.write_bytes(data)
            paths.append(path)
        shipped = [p for p in sorted(shipped_dir().glob("*.toml"))
                   if p.name not in {c[0] for c in cases}]
        result = check_outcome(lambda: load_files([*shipped, *paths], SCHEMAS), "")
        assert result is None or isinstance(result, PolicySet)
