"""Policy parsing and validation: every problem, with its exact message."""

from __future__ import annotations

import copy
import json
import os

import pytest

from audiopolicyd.model import Action, StreamKind
from audiopolicyd.pluginmanager import make_plugin_manager, plugin_settings_schemas
from audiopolicyd.policy import PolicyError, build_policy_set, parse_policy, parse_toml
from audiopolicyd.policystore import PolicyStore, find_files, load_files, shipped_dir

from .conftest import make_stream

GOOD = {
    "schema": 1,
    "category": "playback",
    "priority": 50,
    "mixes_with_others": False,
    "activation": {"others": "interrupt", "duck_level": 0.3, "duck_ramp_ms": 40},
    "overrides": {"ambient": {"others": "duck"}},
    "classify": [{"media_role": ["music"]}],
    "records": True,
    "default_for": ["playback", "record"],
}
SCHEMAS = plugin_settings_schemas(make_plugin_manager(load_entry_points=False))


def problems(doc, file="p.toml"):
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, file, SCHEMAS)
    return [str(p) for p in info.value.problems]


def with_(**changes):
    doc = copy.deepcopy(GOOD)
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value
    return doc


def test_good_document_builds_a_policy():
    policy = parse_policy(GOOD, "p.toml", SCHEMAS)
    assert policy.category == "playback"
    assert policy.others.action is Action.INTERRUPT
    assert policy.others.duck_level == 0.3 and policy.others.ramp_ms == 40
    assert policy.mixable_others.action is Action.MIX
    ambient = policy.interaction("ambient", True)
    assert (ambient.action, ambient.duck_level, ambient.rule) == (Action.DUCK, 0.3,
                                                                  "overrides.ambient")
    assert policy.interaction("soloAmbient", False).rule == "activation.others"
    assert policy.interaction("multiRoute", True).rule == "activation.mixable_others"
    assert policy.modes == {"default"}


def test_schema_is_checked_first_and_stops_there():
    assert problems({"schema": 2, "bogus": 1}) == [
        "p.toml: schema: must be 1 (got 2); the rest of the file was not read"]
    assert problems({"category": "playback"}) == [
        "p.toml: schema: must be 1 (got 'missing'); the rest of the file was not read"]


def test_every_problem_is_reported_in_one_pass():
    doc = with_(priority=101, activation__duck_level=1.5, activation__others="duk",
                colour="red")
    doc["classify"][0]["media_rol"] = ["x"]
    assert problems(doc) == [
        "p.toml: activation.duck_level: 1.5 is greater than the maximum of 1.0",
        "p.toml: activation.others: 'duk' is not one of ['mix', 'duck', 'interrupt', 'silence']",
        "p.toml: classify[0].media_rol: unknown key (allowed: application_id, application_name, "
        "direction, media_role, module, portal_app_id, process_binary)",
        "p.toml: colour: unknown key (allowed: activation, category, classify, default_for, "
        "description, mixes_with_others, modes, options, overrides, plays, plugins, priority, "
        "records, route, schema)",
        "p.toml: priority: 101 is greater than the maximum of 100",
    ]


def test_missing_keys_and_wrong_types():
    doc = with_(mixes_with_others="no")
    del doc["priority"]
    assert problems(doc) == [
        "p.toml: mixes_with_others: 'no' is not of type 'boolean'",
        "p.toml: priority: required key is missing",
    ]


def test_unknown_category_mode_option_and_override():
    doc = with_(category="karaoke", modes=["voiceChat", "loud"], options=["duckEveryone"],
                overrides={"jazz": {"others": "mix"}})
    assert problems(doc) == [
        "p.toml: category: 'karaoke' is not one of ['ambient', 'soloAmbient', 'playback', "
        "'record', 'playAndRecord', 'multiRoute', 'audioProcessing']",
        "p.toml: modes[1]: 'loud' is not one of ['default', 'gameChat', 'measurement', "
        "'moviePlayback', 'spokenAudio', 'videoChat', 'videoRecording', 'voiceChat', "
        "'voicePrompt']",
        "p.toml: options[0]: 'duckEveryone' is not one of ['mixWithOthers', 'duckOthers', "
        "'interruptSpokenAudioAndMixWithOthers', 'allowBluetooth', 'allowBluetoothA2DP', "
        "'allowAirPlay', 'defaultToSpeaker', 'overrideMutedMicrophoneInterruption']",
        "p.toml: overrides.jazz: not a category (one of: ambient, soloAmbient, playback, record, "
        "playAndRecord, multiRoute, audioProcessing)",
    ]


def test_empty_classify_rule_and_empty_pattern():
    doc = with_(classify=[{}, {"media_role": [""]}, {"direction": ["sideways"]}])
    assert problems(doc) == [
        "p.toml: classify[0]: {} should be non-empty",
        "p.toml: classify[1].media_role[0]: '' should be non-empty",
        "p.toml: classify[2].direction[0]: 'sideways' is not one of ['playback', 'record', "
        "'monitor']",
    ]


def test_plugin_settings_are_validated_by_the_plugin_schema():
    ok = with_(plugins={"record": {"keep_audible_roles": ["a11y"]}})
    assert parse_policy(ok, "p.toml", SCHEMAS).plugins["record"]["keep_audible_roles"] == ["a11y"]
    assert problems(with_(plugins={"record": {"keep": 1}, "nope": {}})) == [
        "p.toml: plugins.nope: unknown key (allowed: ask_microphone_on_activation, call_route, "
        "duck_others, echo_cancel_for_chat, interrupt_spoken_audio, mix_with_others, "
        "pause_on_route_disconnect, record)",
        "p.toml: plugins.record.keep: unknown key (allowed: keep_audible_roles)",
    ]


def test_toml_syntax_and_encoding_errors():
    with pytest.raises(PolicyError) as info:
        parse_toml("schema = = 1", "bad.toml")
    assert str(info.value).startswith("bad.toml: (toml): Invalid value (at line 1, column 10)")
    with pytest.raises(PolicyError) as info:
        parse_toml(b"schema = 1\ncategory = '\xff'", "bin.toml")
    assert str(info.value) == "bin.toml: (toml): not UTF-8: invalid start byte at byte 23"


def test_set_rejects_duplicate_category_and_unclaimed_defaults():
    a = parse_policy(GOOD, "a.toml", SCHEMAS)
    b = parse_policy({**GOOD, "default_for": []}, "b.toml", SCHEMAS)
    with pytest.raises(PolicyError) as info:
        build_policy_set([a, b])
    assert [str(p) for p in info.value.problems] == [
        "b.toml: category: 'playback' is already defined by a.toml"]
    with pytest.raises(PolicyError) as info:
        build_policy_set([b])
    assert [str(p) for p in info.value.problems] == [
        "<policy set>: default_for: exactly one policy must be default_for 'playback' "
        "(claimed by no policy)",
        "<policy set>: default_for: exactly one policy must be default_for 'record' "
        "(claimed by no policy)",
    ]


def test_all_seven_categories_ship_and_validate(policies):
    assert set(policies.policies) == {"ambient", "soloAmbient", "playback", "record",
                                      "playAndRecord", "multiRoute", "audioProcessing"}
    assert dict(policies.defaults) == {"playback": "soloAmbient", "record": "record"}
    p = policies.policies
    assert p["ambient"].mixes_with_others and p["ambient"].others.action is Action.MIX
    assert p["record"].others.action is Action.SILENCE
    assert p["record"].mixable_others.action is Action.SILENCE
    assert not p["audioProcessing"].plays
    assert p["playAndRecord"].others.duck_level == 0.2


@pytest.mark.parametrize("props, kind, expected", [
    ({"role": "phone"}, StreamKind.SINK_INPUT, "playAndRecord"),
    ({"role": "communication"}, StreamKind.SOURCE_OUTPUT, "playAndRecord"),
    ({"role": "music"}, StreamKind.SINK_INPUT, "playback"),
    ({"role": "video"}, StreamKind.SINK_INPUT, "playback"),
    ({"role": "game"}, StreamKind.SINK_INPUT, "ambient"),
    ({"role": "event"}, StreamKind.SINK_INPUT, "ambient"),
    ({"role": "a11y"}, StreamKind.SINK_INPUT, "ambient"),
    ({"role": "production"}, StreamKind.SINK_INPUT, "multiRoute"),
    ({"app": "mpv"}, StreamKind.SINK_INPUT, "playback"),
    ({"app": "firefox"}, StreamKind.SINK_INPUT, "soloAmbient"),
    ({}, StreamKind.SINK_INPUT, "soloAmbient"),
    ({}, StreamKind.SOURCE_OUTPUT, "record"),
    ({"app": "parecord"}, StreamKind.SOURCE_OUTPUT, "record"),
    ({"app": "obs", "monitor": True}, StreamKind.SOURCE_OUTPUT, "audioProcessing"),
    # a rule naming the app beats a role rule: mpv's 'event' stream stays playback
    ({"app": "mpv", "role": "event"}, StreamKind.SINK_INPUT, "playback"),
    ({"extra": {"application.id": "org.PulseAudio.pavucontrol"}}, StreamKind.SOURCE_OUTPUT,
     "audioProcessing"),
    ({"extra": {"pipewire.access.portal.app_id": "us.zoom.Zoom"}}, StreamKind.SINK_INPUT, "playAndRecord"),
])
def test_shipped_classification(policies, props, kind, expected):
    stream = make_stream(1, kind, **props)
    category, rule = policies.classify(stream)
    assert category == expected, rule


def test_absurd_properties_classify_without_error(policies):
    stream = make_stream(1, role="x" * 10_000, app="\ufffd\ufffd" * 5000)
    assert policies.classify(stream)[0] == "soloAmbient"


def test_later_directory_overrides_and_masks_by_file_name(tmp_path):
    admin = tmp_path / "etc"
    admin.mkdir()
    text = (shipped_dir() / "ambient.toml").read_text().replace("priority = 10", "priority = 15")
    (admin / "ambient.toml").write_text(text)
    (admin / "multiRoute.toml").write_text("")  # masks the shipped file
    files = find_files([shipped_dir(), admin])
    assert admin / "ambient.toml" in files
    assert not any(f.name == "multiRoute.toml" for f in files)
    pset = load_files(files, SCHEMAS)
    assert pset.policies["ambient"].priority == 15
    assert "multiRoute" not in pset.policies


def test_bad_reload_keeps_last_good_set(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    store = PolicyStore([shipped_dir(), user], SCHEMAS)
    assert store.reload()
    good = store.current
    (user / "playback.toml").write_text("schema = 1\ncategory = 'playback'\npriority = -3\n")
    assert store.reload() is False
    assert store.current is good
    assert [str(p) for p in store.problems] == [
        f"{user}/playback.toml: activation: required key is missing",
        f"{user}/playback.toml: mixes_with_others: required key is missing",
        f"{user}/playback.toml: priority: -3 is less than the minimum of 0",
    ]


# -- C9: numbers TOML has and a policy must not -------------------------------------------------

def toml_problems(text, file="p.toml"):
    """Problems of a policy given as TOML text (what an administrator writes)."""
    with pytest.raises(PolicyError) as info:
        parse_policy(parse_toml(text, file), file, SCHEMAS)
    return [str(p) for p in info.value.problems]


POLICY_TOML = """\
schema = 1
category = "playback"
priority = 50
mixes_with_others = false
records = true
default_for = ["playback", "record"]

[activation]
others = "interrupt"
duck_level = 0.3
duck_ramp_ms = 40

[overrides.ambient]
others = "duck"
duck_level = 0.5
"""


def top(lines):
    """POLICY_TOML with top-level ``lines`` added (before its tables)."""
    return POLICY_TOML.replace("schema = 1\n", "schema = 1\n" + lines, 1)


def edit(text, old, new):
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize("literal", ["nan", "+nan", "-nan", "inf", "+inf", "-inf"])
def test_non_finite_duck_levels_are_errors(literal):
    # Before: nan passed validation and every reconcile raised in effects.scaled.
    text = edit(POLICY_TOML, "duck_level = 0.3", f"duck_level = {literal}")
    text = edit(text, "duck_level = 0.5", f"duck_level = {literal}")
    value = repr(float(literal))
    assert toml_problems(text) == [
        f"p.toml: activation.duck_level: {value} is not a finite number",
        f"p.toml: overrides.ambient.duck_level: {value} is not a finite number",
    ]


def test_non_finite_numbers_are_errors_anywhere():
    text = top("description = nan\nmodes = [inf]\n") + "[plugins.record]\n" \
        "keep_audible_roles = [-inf]\n"
    text = edit(text, 'category = "playback"', "category = nan")
    assert toml_problems(text) == [
        "p.toml: category: nan is not a finite number",
        "p.toml: description: nan is not a finite number",
        "p.toml: modes[0]: inf is not a finite number",
        "p.toml: plugins.record.keep_audible_roles[0]: -inf is not a finite number",
    ]


@pytest.mark.parametrize("old, new, expected", [
    ("priority = 50", "priority = -0.0", "priority: -0.0 is not of type 'integer'"),
    ("priority = 50", "priority = 50.0", "priority: 50.0 is not of type 'integer'"),
    ("priority = 50", "priority = true", "priority: True is not of type 'integer'"),
    ("duck_ramp_ms = 40", "duck_ramp_ms = 100.0",
     "activation.duck_ramp_ms: 100.0 is not of type 'integer'"),
    ("duck_level = 0.3", "duck_level = true",
     "activation.duck_level: True is not of type 'number'"),
    ("schema = 1", "schema = 1.0",
     "schema: must be 1 (got 1.0); the rest of the file was not read"),
    ("schema = 1", "schema = true",
     "schema: must be 1 (got True); the rest of the file was not read"),
])
def test_integral_floats_and_booleans_are_not_integers(old, new, expected):
    assert toml_problems(edit(POLICY_TOML, old, new)) == [f"p.toml: {expected}"]


def test_integers_and_integral_numbers_where_numbers_are_expected_are_fine():
    text = edit(POLICY_TOML, "duck_level = 0.3", "duck_level = 0")
    text = edit(text, "duck_level = 0.5", "duck_level = 1")
    policy = parse_policy(parse_toml(text, "p.toml"), "p.toml", SCHEMAS)
    assert policy.others.duck_level == 0.0 and policy.overrides["ambient"].duck_level == 1.0
    assert type(policy.others.duck_level) is float


def test_plugin_settings_schemas_get_the_same_strict_types():
    schemas = {"strict": {
        "type": "object", "additionalProperties": False,
        "properties": {"count": {"type": "integer"}, "gain": {"type": "number"},
                       "level": {"enum": [1, 2]}, "version": {"const": 1}, "anything": {}},
    }}
    doc = parse_toml(POLICY_TOML + "[plugins.strict]\ncount = 3.0\ngain = nan\nlevel = 1.0\n"
                                   "version = true\nanything = [1, {x = -inf}]\n", "p.toml")
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, "p.toml", schemas)
    assert [str(p) for p in info.value.problems] == [
        "p.toml: plugins.strict.anything[1].x: -inf is not a finite number",
        "p.toml: plugins.strict.count: 3.0 is not of type 'integer'",
        "p.toml: plugins.strict.gain: nan is not a finite number",
        "p.toml: plugins.strict.level: 1.0 is not one of [1, 2]",
        "p.toml: plugins.strict.version: 1 was expected",
    ]
    good = parse_toml(POLICY_TOML + "[plugins.strict]\ncount = 3\ngain = 0.5\nlevel = 2\n"
                                    "version = 1\nanything = [1, {x = 2.5}]\n", "p.toml")
    assert parse_policy(good, "p.toml", schemas).plugins["strict"]["count"] == 3


def test_integers_beyond_64_bits_are_errors_not_tracebacks():
    # tomllib reads hex integers of any size; Python cannot even print them in decimal.
    text = edit(POLICY_TOML, "priority = 50", "priority = 0x" + "f" * 5000)
    assert toml_problems(text) == [
        "p.toml: priority: <integer of 20000 bits> is outside the 64-bit range of TOML integers"]
    with pytest.raises(PolicyError) as info:
        parse_toml("priority = " + "1" * 5000, "p.toml")
    assert str(info.value).startswith("p.toml: (toml): cannot be decoded: ValueError: Exceeds "
                                      "the limit (4300")  # the rest's wording varies by Python


# -- C10: every failure to read a policy is a policy problem ------------------------------------

def deep_tables(depth):
    return "x = " + "{a = " * depth + "1" + "}" * depth + "\n"


def deep_arrays(depth):
    return "x = " + "[" * depth + "1" + "]" * depth + "\n"


@pytest.mark.parametrize("text", [POLICY_TOML + deep_tables(330), POLICY_TOML + deep_arrays(500),
                                  POLICY_TOML + deep_tables(2000)],
                         ids=["tables-330", "arrays-500", "tables-2000"])
def test_toml_nested_too_deep_for_the_parser_is_a_toml_problem_with_its_position(tmp_path, text):
    path = tmp_path / "playback.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_files([path], SCHEMAS)
    line = POLICY_TOML.count("\n") + 1
    last = text.splitlines()[-1]
    column = [i for i, c in enumerate(last) if c in "[{"][32] + 1  # the 33rd bracket
    assert [str(p) for p in info.value.problems] == [
        f"{path}: (toml): nested deeper than 32 tables and arrays (at line {line}, "
        f"column {column})"]


def test_nesting_the_parser_survives_is_reported_at_its_key_path():
    text = top("description = " + "[" * 100 + "'x'" + "]" * 100 + "\n")
    assert toml_problems(text) == [
        "p.toml: description" + "[0]" * 32 + ": nested deeper than 32 tables and arrays"]
    assert toml_problems(POLICY_TOML + "[plugins.record]\nkeep_audible_roles = "
                         + "[" * 30 + "'x'" + "]" * 30 + "\n")[0].startswith(
        "p.toml: plugins.record.keep_audible_roles[0]: ")  # 32 deep: validated as usual


def test_nesting_position_skips_strings_and_comments():
    text = ('a = "[[[[{{{{\\"[["  # [[[[[[[[\nb = \'\'\'\n[[[[[[\n\'\'\'\nc = """[[[\\"""[[[["""\n'
            + "d = " + "[" * 40 + "]" * 40 + "\n")
    from audiopolicyd.policy import _too_deep_at
    assert _too_deep_at(text) == (6, 5 + 32)
    assert _too_deep_at(POLICY_TOML) is None


def test_any_failure_while_reading_one_file_is_a_problem_of_that_file(tmp_path, monkeypatch):
    import audiopolicyd.policystore as store

    def broken(doc, file, schemas=None):
        raise RuntimeError("x" * 10_000)

    monkeypatch.setattr(store, "parse_policy", broken)
    path = tmp_path / "playback.toml"
    path.write_text(POLICY_TOML)
    with pytest.raises(PolicyError) as info:
        load_files([path], SCHEMAS)
    (problem,) = info.value.problems
    assert (problem.file, problem.path) == (str(path), "(file)")
    assert problem.message.startswith("cannot be read: RuntimeError: xxx")
    assert len(problem.message) < 600


def test_a_live_reload_of_a_deep_file_keeps_the_last_good_set(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    store = PolicyStore([shipped_dir(), user], SCHEMAS)
    assert store.reload()
    good = store.current
    (user / "playback.toml").write_text(POLICY_TOML + deep_arrays(500))
    (user / "ambient.toml").write_text(edit(POLICY_TOML, "duck_level = 0.3", "duck_level = nan"))
    assert store.reload() is False
    assert store.current is good
    assert [(p.file, p.path) for p in store.problems] == [
        (f"{user}/ambient.toml", "activation.duck_level"), (f"{user}/playback.toml", "(toml)")]


def test_problems_quote_only_a_short_prefix_of_a_bad_value():
    huge = "x" * (1 << 20)
    doc = with_(description=huge, category=huge, activation__others=huge, modes=[huge],
                classify=[{"media_role": [huge]}])
    doc[huge] = 1
    doc["overrides"] = {huge: {"others": "mix"}}
    found = problems(doc)
    assert all(len(p) < 700 for p in found), [len(p) for p in found]
    prefix = repr("x" * 64 + "\u2026")  # the string cut, then quoted
    assert f"p.toml: description: {prefix} is too long" in found
    assert f"p.toml: activation.others: {prefix} is not one of ['mix', 'duck', 'interrupt', " \
           "'silence']" in found
    assert "p.toml: " + "x" * 64 + "…: unknown key" in [p.split(" (allowed")[0] for p in found]
    assert problems({"schema": huge}) == [
        f"p.toml: schema: must be 1 (got {prefix}); the rest of the file was not read"]


def test_keys_in_paths_are_quoted_so_they_cannot_forge_lines():
    assert problems(with_(**{"evil\nother.toml: x": 1})) == [
        'p.toml: "evil\\nother.toml: x": unknown key (allowed: activation, category, classify, '
        "default_for, description, mixes_with_others, modes, options, overrides, plays, plugins, "
        "priority, records, route, schema)"]


def test_policy_check_reports_deep_toml_without_a_traceback(tmp_path, capsys):
    from audiopolicyd import ctl as cli
    bad = tmp_path / "playback.toml"
    bad.write_text(POLICY_TOML + deep_tables(330))
    assert cli.main(["policy", "check", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert f"{bad}: (toml): nested deeper than 32 tables and arrays (at line" in out
    assert "Traceback" not in out + err


def test_policy_check_treats_an_empty_file_as_a_mask(tmp_path, capsys):
    from audiopolicyd import ctl as cli
    mask = tmp_path / "multiRoute.toml"
    mask.write_bytes(b"")
    assert cli.main(["policy", "check", "--json", str(mask)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True and report["problems"] == []
    assert not any(f.endswith("multiRoute.toml") for f in report["files"])
    devnull = tmp_path / "link" / "ambient.toml"
    devnull.parent.mkdir()
    devnull.symlink_to("/dev/null")
    assert cli.main(["policy", "check", str(devnull)]) == 0
    assert capsys.readouterr().out == "valid: 6 policy file(s)\n"



def test_check_config_and_policy_check_are_one_validation(tmp_path):
    """``audiopolicyd --check-config`` and ``audiopolicyctl policy check`` run the same check
    and print the same: the daemon adds the list of files in force, which scripts read."""
    import subprocess
    import sys
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}

    def run(*argv):
        done = subprocess.run([sys.executable, "-m", *argv], env=env, capture_output=True,
                              text=True, timeout=60)
        return done.returncode, done.stdout, done.stderr

    code, out, _ = run("audiopolicyd", "--check-config")
    ctl_code, ctl_out, _ = run("audiopolicyd.ctl", "policy", "check")
    assert code == ctl_code == 0
    assert out.startswith(ctl_out) and ctl_out == "valid: 7 policy file(s)\n"
    assert out[len(ctl_out):].startswith("policies valid: ")

    bad = tmp_path / "policies" / "playback.toml"
    bad.parent.mkdir()
    bad.write_text(POLICY_TOML.replace("duck_level = 0.3", "duck_level = 3.0"))
    code, out, err = run("audiopolicyd", "--check-config", "--policy-dir", str(bad.parent))
    ctl_code, ctl_out, ctl_err = run("audiopolicyd.ctl", "policy", "check", str(bad))
    assert code == ctl_code == 1
    assert out == ctl_out and f"{bad}: activation.duck_level: " in out
    assert err == ctl_err == "1 problem(s)\n"

# -- D12: classify rules and server modules ------------------------------------------------------

def test_module_key_is_validated_and_built():
    policy = parse_policy(with_(classify=[{"module": ["module-loopback"]}]), "p.toml", SCHEMAS)
    (rule,) = policy.classify
    assert rule.modules == ("module-loopback",) and rule.tier == 0
    assert problems(with_(classify=[{"module": "module-loopback"}, {"module": []}])) == [
        "p.toml: classify[0].module: 'module-loopback' is not of type 'array'",
        "p.toml: classify[1].module: [] should be non-empty",
    ]


def test_module_streams_are_infrastructure_unless_a_rule_names_the_module(policies):
    import dataclasses
    loop_in = dataclasses.replace(make_stream(1, StreamKind.SOURCE_OUTPUT, role="phone"),
                                  module="module-loopback")
    loop_out = dataclasses.replace(make_stream(2, role="music"), module="module-loopback")
    assert policies.classify(loop_in) == (
        "", "module-loopback: server module (no [[classify]] rule names it)")
    assert policies.classify(loop_out)[0] == ""

    doc = parse_toml((shipped_dir() / "playAndRecord.toml").read_text(), "pr.toml")
    doc["classify"].append({"module": ["module-loop*"], "direction": ["record"]})
    others = [parse_policy(parse_toml(f.read_text(), f.name), f.name, SCHEMAS)
              for f in sorted(shipped_dir().glob("*.toml")) if f.name != "playAndRecord.toml"]
    pset = build_policy_set([*others, parse_policy(doc, "pr.toml", SCHEMAS)])
    last = len(doc["classify"]) - 1
    assert pset.classify(loop_in) == ("playAndRecord", f"pr.toml: classify[{last}]")
    assert pset.classify(loop_out)[0] == ""  # the rule names direction record only
    echo = dataclasses.replace(loop_in, module="module-echo-cancel")
    assert pset.classify(echo)[0] == ""
    # a module rule never matches a client's stream
    client = make_stream(3, StreamKind.SOURCE_OUTPUT, app="parecord")
    assert pset.classify(client)[0] == "record"


def test_a_file_name_that_is_not_utf8_is_named_in_valid_utf8(tmp_path):
    # Problems go out as D-Bus strings, which must be UTF-8; a name from the file system may
    # hold any bytes.
    user = tmp_path / "user"
    user.mkdir()
    store = PolicyStore([shipped_dir(), user], SCHEMAS)
    assert store.reload()
    (user / os.fsdecode(b"bad\xff.toml")).write_text("schema = 2\n")
    assert store.reload() is False
    (problem,) = store.problems
    assert problem.file == f"{user}/bad\\xff.toml"
    str(problem).encode("utf-8")


def test_a_symlink_loop_in_a_policy_directory_is_a_problem_of_that_file(tmp_path):
    # Before: Path.resolve() raised RuntimeError out of find_files, so a reload (and the
    # daemon's policy watcher) died.
    user = tmp_path / "user"
    user.mkdir()
    store = PolicyStore([shipped_dir(), user], SCHEMAS)
    assert store.reload()
    (user / "loop.toml").symlink_to("loop.toml")
    assert store.reload() is False
    assert [str(p) for p in store.problems] == [
        f"{user}/loop.toml: (file): Too many levels of symbolic links"]


def test_special_files_named_like_a_policy_are_never_read(tmp_path):
    # A FIFO, /dev/zero or /dev/urandom would block or never end a read (in the daemon: its
    # event loop). They have size 0: masks, as an empty file. A directory is reported.
    user = tmp_path / "user"
    user.mkdir()
    os.mkfifo(user / "fifo.toml")
    (user / "zero.toml").symlink_to("/dev/zero")
    (user / "dir.toml").mkdir()
    (user / "block.toml").symlink_to(tmp_path / "no-such-file")
    files = find_files([shipped_dir(), user])
    assert {f.name for f in files} >= {"dir.toml", "block.toml"}
    assert not {"fifo.toml", "zero.toml"} & {f.name for f in files}
    with pytest.raises(PolicyError) as info:
        load_files(files, SCHEMAS)
    assert [str(p) for p in info.value.problems] == [
        f"{user}/block.toml: (file): No such file or directory",
        f"{user}/dir.toml: (file): not a regular file",
    ]


# -- issue 9 item 5: a category takes only the directions it handles -----------------------------

def test_a_category_handles_playback_when_it_plays_and_recordings_when_it_records(policies):
    from audiopolicyd.policy import handled_directions
    assert handled_directions(True, False) == {"playback"}
    assert handled_directions(False, True) == {"record", "monitor"}
    assert handled_directions(True, True) == {"playback", "record", "monitor"}
    assert handled_directions(False, False) == frozenset()
    for policy in policies.policies.values():  # every shipped rule knows its category's
        assert all(rule.handles == policy.directions for rule in policy.classify), policy.file


@pytest.mark.parametrize("props, kind, expected", [
    # pw-record's default role: a recording is not playback's, whatever its role says
    ({"role": "music", "app": "pw-record"}, StreamKind.SOURCE_OUTPUT, "record"),
    ({"role": "music"}, StreamKind.SOURCE_OUTPUT, "record"),
    ({"role": "video", "app": "hostile"}, StreamKind.SOURCE_OUTPUT, "record"),
    ({"role": "game"}, StreamKind.SOURCE_OUTPUT, "record"),  # nor ambient's
    ({"role": "a11y"}, StreamKind.SOURCE_OUTPUT, "record"),
    # an app rule of a playback-only category does not take its recordings either
    ({"app": "mpv"}, StreamKind.SOURCE_OUTPUT, "record"),
    ({"extra": {"application.id": "org.videolan.VLC"}}, StreamKind.SOURCE_OUTPUT, "record"),
    # a monitor recording with a playback role is a meter, not a player
    ({"role": "music", "monitor": True}, StreamKind.SOURCE_OUTPUT, "audioProcessing"),
    # categories that play and record take both
    ({"role": "phone"}, StreamKind.SOURCE_OUTPUT, "playAndRecord"),
    ({"role": "production"}, StreamKind.SOURCE_OUTPUT, "multiRoute"),
    # and a category that does not play never takes a playback stream
    ({"app": "parecord"}, StreamKind.SINK_INPUT, "soloAmbient"),
    ({"role": "record"}, StreamKind.SINK_INPUT, "soloAmbient"),
    ({"role": "test"}, StreamKind.SINK_INPUT, "soloAmbient"),
])
def test_classification_takes_the_direction_into_account(policies, props, kind, expected):
    category, rule = policies.classify(make_stream(1, kind, **props))
    assert category == expected, rule


def test_a_rule_without_direction_takes_only_its_categorys_directions():
    record = with_(category="record", plays=False, default_for=["record"],
                   classify=[{"process_binary": ["audacity"]}])
    playback = with_(default_for=["playback"], records=False)
    pset = build_policy_set([parse_policy(record, "record.toml", SCHEMAS),
                             parse_policy(playback, "playback.toml", SCHEMAS)])
    audacity_plays = make_stream(1, app="audacity")
    audacity_records = make_stream(2, StreamKind.SOURCE_OUTPUT, app="audacity")
    assert pset.classify(audacity_plays) == ("playback", "playback.toml: default_for")
    assert pset.classify(audacity_records) == ("record", "record.toml: classify[0]")
    music_recording = make_stream(3, StreamKind.SOURCE_OUTPUT, role="music")
    assert pset.classify(music_recording) == ("record", "record.toml: default_for")


def test_naming_a_direction_the_category_does_not_handle_is_a_problem():
    doc = with_(records=False, classify=[{"media_role": ["music"], "direction": ["record"]},
                                         {"direction": ["playback", "monitor"]}])
    assert problems(doc) == [
        "p.toml: classify[0].direction: 'record': the category does not record "
        "(records = false)",
        "p.toml: classify[1].direction: 'monitor': the category does not record "
        "(records = false)",
        "p.toml: default_for: 'record': the category does not record (records = false)",
    ]
    assert problems(with_(plays=False, default_for=["playback"])) == [
        "p.toml: default_for: 'playback': the category does not play (plays = false)"]
    assert problems(with_(plays=False, records=False, default_for=[])) == [
        "p.toml: classify[0]: matches no stream: the category neither plays nor records"]
    # a direction of the wrong type is the schema's problem, never a crash (found by the fuzzer)
    for bad in (["record"], {"a": 1}):
        assert all(p.startswith("p.toml: ") for p in problems(
            with_(records=False, default_for=[bad],
                  classify=[{"media_role": ["music"], "direction": [bad]}])))


def test_a_plugin_cannot_put_a_stream_in_a_category_of_the_other_direction(policies, caplog):
    from audiopolicyd.engine import classify
    from audiopolicyd.model import Snapshot, freeze
    from audiopolicyd import hookimpl

    class Everything:
        @hookimpl
        def classify_stream(self, stream, policies):
            return ("playback", "plugin: everything is music")

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Everything())
    played, recorded = make_stream(1), make_stream(2, StreamKind.SOURCE_OUTPUT, app="pw-record")
    snap = Snapshot(freeze({s.key: s for s in (played, recorded)}), freeze({}), freeze({}))
    out = classify(snap, policies, pm)
    assert out[played.key] == ("playback", "plugin: everything is music")
    assert out[recorded.key][0] == "record"
    assert out[recorded.key][1].endswith("record.toml: classify[1]")
    assert "which does not handle record streams; ignored" in caplog.text
