"""Policy parsing and validation: every problem, with its exact message."""

from __future__ import annotations

import copy

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
        "direction, media_role, portal_app_id, process_binary)",
        "p.toml: colour: unknown key (allowed: activation, category, classify, default_for, "
        "description, mixes_with_others, modes, options, overrides, plays, plugins, priority, "
        "records, schema)",
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
        "p.toml: plugins.nope: unknown key (allowed: record)",
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
