"""The plugin host: a policy enables a plugin by naming its table, the host calls only the
implementations enabled for the category concerned and hands each its own settings; a bad
plugin is left out by name and the others load."""

from __future__ import annotations

import pytest

from audiopolicyd import hookimpl
from audiopolicyd.engine import (
    activation_blockers, audio_hints, classify, decide, interruptions, mixable,
)
from audiopolicyd.model import Session, Snapshot, StreamKind, freeze
from audiopolicyd.pluginmanager import make_plugin_manager, plugin_settings_schemas
from audiopolicyd.policy import PolicyError, build_policy_set, parse_policy, parse_toml
from audiopolicyd.policystore import shipped_dir

from .conftest import make_stream

OPEN_TABLE = {"type": "object", "additionalProperties": False,
              "properties": {"level": {"type": "integer"}}}


def shipped_with(pm, add=None, drop=()):
    """The shipped policy set, with ``add`` (category -> {table: settings}) added to and the
    ``(category, table)`` pairs of ``drop`` taken out of the files' ``[plugins]``."""
    schemas = plugin_settings_schemas(pm)
    out = []
    for path in sorted(shipped_dir().glob("*.toml")):
        doc = parse_toml(path.read_bytes(), path.name)
        tables = doc.setdefault("plugins", {})
        for category, table in drop:
            if doc["category"] == category:
                del tables[table]
        tables.update((add or {}).get(doc["category"], {}))
        out.append(parse_policy(doc, path.name, schemas))
    return build_policy_set(out)


def session(sid, category, streams=(), seq=1, active=True, options=(), mode="default"):
    return Session(id=sid, app_key=sid, category=category, mode=mode,
                   options=frozenset(options), active=active, seq=seq, streams=tuple(streams))


def snap(*streams):
    return Snapshot(freeze({s.key: s for s in streams}), freeze({}), freeze({}))


class Recorder:
    """A scoped plugin (table ``name``) that records every call and changes nothing."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    @hookimpl
    def register_policy_settings(self):
        return {self.table: OPEN_TABLE}

    @hookimpl
    def classify_stream(self, stream, settings_by_category):
        self.calls.append(("classify_stream", None, dict(settings_by_category)))

    @hookimpl
    def mixes_with_others(self, session, settings):
        self.calls.append(("mixes_with_others", session.category, dict(settings)))

    @hookimpl
    def decide_session_interaction(self, trigger, settings):
        self.calls.append(("decide_session_interaction", trigger.category, dict(settings)))

    @hookimpl
    def decide_interaction(self, trigger, settings):
        self.calls.append(("decide_interaction", trigger.category, dict(settings)))


def everything(policies, pm):
    """Run every engine function that calls plugins, on a call that ducks a game and mutes
    music, and a record session trying to activate."""
    music, call, game = make_stream(1, role="music"), make_stream(2, role="phone"), \
        make_stream(3, role="game")
    sessions = [session("m", "playback", [music.key], 1), session("c", "playAndRecord",
                                                                  [call.key], 3),
                session("g", "ambient", [game.key], 2)]
    s = snap(music, call, game)
    classify(s, policies, pm)
    effects = decide(s, sessions, policies, pm)
    interruptions(sessions, policies, pm)
    activation_blockers(session("r", "record"), sessions, policies, pm)
    audio_hints(sessions[0], sessions, policies, pm)
    return effects, music, game


def test_a_plugin_no_policy_names_is_loaded_but_never_called(policies):
    pm = make_plugin_manager(load_entry_points=False)
    quiet = Recorder("quiet")
    pm.register(quiet, name="quiet")
    pset = shipped_with(pm)
    assert "quiet" in plugin_settings_schemas(pm) and pm.get_plugin("quiet") is quiet
    effects, music, game = everything(pset, pm)
    assert quiet.calls == []
    assert effects[music.key].mute and effects[game.key].summary == "duck 0.20"  # as ever
    # named by one policy (an empty table enables it): called, for that category only
    pset = shipped_with(pm, add={"playAndRecord": {"quiet": {}}})
    everything(pset, pm)
    assert {(hook, category) for hook, category, _ in quiet.calls} == {
        ("classify_stream", None), ("decide_session_interaction", "playAndRecord"),
        ("decide_interaction", "playAndRecord"), ("mixes_with_others", "playAndRecord")}


def test_each_plugin_gets_its_own_settings_from_the_policy_that_counts(policies):
    pm = make_plugin_manager(load_entry_points=False)
    a, b = Recorder("a"), Recorder("b")
    pm.register(a, name="plugin_a")
    pm.register(b, name="plugin_b")
    pset = shipped_with(pm, add={"playAndRecord": {"a": {"level": 1}},
                                 "playback": {"b": {"level": 2}},
                                 "ambient": {"a": {"level": 3}}})
    everything(pset, pm)

    def seen(plugin, hook):
        return {(c[1], c[2]["level"]) for c in plugin.calls if c[0] == hook}

    # the trigger's policy for the interactions: the call acts (a), the music acts on the
    # game (b) but mixes with it, so nothing per stream; ambient outranks no one
    assert seen(a, "decide_session_interaction") == {("playAndRecord", 1)}
    assert seen(a, "decide_interaction") == {("playAndRecord", 1)}
    assert seen(b, "decide_session_interaction") == {("playback", 2)}
    assert seen(b, "decide_interaction") == set()
    # the session's own policy for its mixability
    assert seen(a, "mixes_with_others") == {("playAndRecord", 1), ("ambient", 3)}
    assert seen(b, "mixes_with_others") == {("playback", 2)}
    # classification: every category that names the plugin, with its table
    assert a.calls[0] == ("classify_stream", None, {"playAndRecord": {"level": 1},
                                                    "ambient": {"level": 3}})
    assert b.calls[0] == ("classify_stream", None, {"playback": {"level": 2}})


def test_the_keep_audible_rule_follows_the_table_that_enables_it(pm):
    # playAndRecord silencing (a site's choice) keeps a11y only once its policy names record
    rec = make_stream(1, StreamKind.SOURCE_OUTPUT, app="parecord")
    reader = make_stream(2, role="a11y", app="orca")
    music = make_stream(3, role="music")
    sessions = [session("a", "ambient", [reader.key], 1), session("m", "playback",
                                                                  [music.key], 2),
                session("r", "record", [rec.key], 3)]
    s = snap(rec, reader, music)
    assert decide(s, sessions, shipped_with(pm), pm)[reader.key].neutral
    unnamed = shipped_with(pm, drop=[("record", "record")])
    assert decide(s, sessions, unnamed, pm)[reader.key].mute
    wider = shipped_with(pm, drop=[("record", "record")],
                         add={"record": {"record": {"keep_audible_roles": ["a11y", "music"]}}})
    effects = decide(s, sessions, wider, pm)
    assert effects[reader.key].neutral and effects[music.key].neutral


@pytest.mark.parametrize("option, table, mode, enabled, disabled", [
    ("mixWithOthers", "mix_with_others", "default", "none", "mute"),
    ("duckOthers", "duck_others", "default", "duck 0.20", "mute"),
    ("interruptSpokenAudioAndMixWithOthers", "interrupt_spoken_audio", "default", "none",
     "mute"),
    ("interruptSpokenAudioAndMixWithOthers", "interrupt_spoken_audio", "spokenAudio", "mute",
     "mute"),
])
def test_apples_options_act_only_where_the_policy_enables_their_plugin(pm, option, table, mode,
                                                                         enabled, disabled):
    victim, trig = make_stream(1), make_stream(2)
    sessions = [session("v", "playback", [victim.key], 1, mode=mode),
                session("t", "playback", [trig.key], 2, options=[option])]
    on, off = shipped_with(pm), shipped_with(pm, drop=[("playback", table)])
    assert decide(snap(victim, trig), sessions, on, pm)[victim.key].summary == enabled
    assert decide(snap(victim, trig), sessions, off, pm)[victim.key].summary == disabled


def test_option_reasons_name_the_option_and_the_victims_policy_counts_for_mixability(pm):
    game, call = make_stream(1, role="game"), make_stream(2, role="phone")
    navigation = session("n", "playback", [game.key], 1, options=["duckOthers"])
    caller = session("c", "playAndRecord", [call.key], 2, options=["duckOthers"])
    effects = decide(snap(game, call), [navigation, caller], shipped_with(pm), pm)
    (reason,) = effects[game.key].reasons
    assert (reason.policy, reason.rule) == ("(session option)", "duckOthers")
    # the victim, playback with duckOthers, is mixable by its own policy's plugins only
    pset = shipped_with(pm)
    assert mixable(navigation, pset.policies["playback"], pm)
    off = shipped_with(pm, drop=[("playback", "duck_others")])
    assert not mixable(navigation, off.policies["playback"], pm)
    assert not mixable(navigation, pset.policies["playback"])  # no plugins: the policy alone


def test_a_scoped_classifier_may_only_choose_a_category_that_enables_it(pm, caplog):
    class Rooms:
        @hookimpl
        def register_policy_settings(self):
            return {"rooms": {"type": "object", "additionalProperties": False,
                              "properties": {"apps": {"type": "array"}}}}

        @hookimpl
        def classify_stream(self, stream, settings_by_category):
            for category, settings in settings_by_category.items():
                if stream.properties.get("application.name") in settings["apps"]:
                    return category, "rooms"
            if stream.properties.get("application.name") == "greedy":
                return "playAndRecord", "rooms"
            return None

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Rooms(), name="rooms")
    pset = shipped_with(pm, add={"ambient": {"rooms": {"apps": ["kiosk"]}}})
    kiosk, greedy = make_stream(1, app="kiosk"), make_stream(2, app="greedy")
    out = classify(snap(kiosk, greedy), pset, pm)
    assert out[kiosk.key] == ("ambient", "rooms")
    assert out[greedy.key][0] == "soloAmbient"  # the rules decide
    assert "plugin 'rooms' classified sink-input:2 as 'playAndRecord', whose policy does " \
           "not enable it ([plugins.rooms]); ignored" in caplog.text


def test_a_policy_naming_an_unknown_plugin_table_gets_the_clear_error(pm):
    doc = parse_toml((shipped_dir() / "playback.toml").read_bytes(), "playback.toml")
    doc["plugins"]["duck_other"] = {}
    with pytest.raises(PolicyError) as info:
        parse_policy(doc, "playback.toml", plugin_settings_schemas(pm))
    assert [str(p) for p in info.value.problems] == [
        "playback.toml: plugins.duck_other: unknown key (allowed: "
        "ask_microphone_on_activation, call_route, duck_others, echo_cancel_for_chat, "
        "interrupt_spoken_audio, mix_with_others, pause_on_route_disconnect, record)"]


def test_a_plugin_declaring_two_tables_is_an_error():
    class Two:
        @hookimpl
        def register_policy_settings(self):
            return {"one": {}, "two": {}}

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Two(), name="two_tables")
    with pytest.raises(ValueError, match="plugin 'two_tables' declares several settings "
                                         r"tables \(one, two\); a plugin has one"):
        plugin_settings_schemas(pm)


def test_a_plugin_whose_declaration_raises_is_never_called(caplog):
    calls = []

    class Broken:
        @hookimpl
        def register_policy_settings(self):
            raise RuntimeError("no schema today")

        @hookimpl
        def decide_session_interaction(self, trigger):
            calls.append(trigger.id)

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Broken(), name="broken")
    assert "record" in plugin_settings_schemas(pm)
    everything(shipped_with(pm), pm)
    assert calls == []
    assert "plugin 'broken' raised in hook register_policy_settings; it is not called" \
        in caplog.text


def test_a_plugin_without_a_table_is_called_for_every_category(policies):
    seen = set()

    class Everywhere:
        @hookimpl
        def decide_session_interaction(self, trigger, settings):
            seen.add((trigger.category, len(settings)))

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Everywhere(), name="everywhere")
    everything(policies, pm)
    assert seen == {("playAndRecord", 0), ("playback", 0)}


OPTION_PLUGINS = {"mixWithOthers": "mix_with_others", "duckOthers": "duck_others",
                  "interruptSpokenAudioAndMixWithOthers": "interrupt_spoken_audio"}


def test_every_shipped_policy_that_takes_an_option_enables_its_plugin(policies):
    taking = {}
    for category, policy in policies.policies.items():
        for option in policy.options & set(OPTION_PLUGINS):
            assert OPTION_PLUGINS[option] in policy.plugins, (category, option)
            taking.setdefault(option, set()).add(category)
    assert taking == {option: {"playback", "playAndRecord", "multiRoute"}
                      for option in OPTION_PLUGINS}


# -- a policy that accepts an option whose plugin it does not enable --------------------------

def test_an_option_accepted_without_its_plugin_is_a_warning_naming_file_option_and_table(
        tmp_path, caplog):
    """An admin's copy of playback.toml made before the options became plugins lists
    duckOthers in ``options`` but has no [plugins.duck_others]: sessions could take the option
    and it would do nothing. The store loads it (it is valid) and warns; the shipped set does
    not warn."""
    import functools
    import logging

    from audiopolicyd.pluginmanager import make_plugin_manager, plugin_settings_schemas, \
        unenabled_options
    from audiopolicyd.policystore import PolicyStore, check_policies, shipped_dir

    pm = make_plugin_manager(load_entry_points=False)
    warn = functools.partial(unenabled_options, pm)
    shipped = check_policies([shipped_dir()], (), plugin_settings_schemas(pm), warn)
    assert shipped.problems == [] and shipped.warnings == []

    admin = tmp_path / "policies"
    admin.mkdir()
    text = (shipped_dir() / "playback.toml").read_text()
    old = "\n".join(line for line in text.splitlines()
                    if line.strip() not in ("[plugins.duck_others]",))
    (admin / "playback.toml").write_text(old + "\n")
    store = PolicyStore([shipped_dir(), admin], plugin_settings_schemas(pm), warn=warn)
    with caplog.at_level(logging.WARNING, "audiopolicyd.policystore"):
        assert store.reload()
    assert store.warnings == [
        f"{admin / 'playback.toml'}: options: duckOthers does nothing: the policy names no "
        "[plugins.duck_others] table, which enables the plugin that acts on it"]
    assert store.warnings[0] in caplog.text


# -- asking for the microphone on activation --------------------------------------------------

def test_asking_on_activation_is_decided_by_the_plugin_the_category_enables(pm, tmp_path):
    """The shipped policies that record enable ask_microphone_on_activation and it says yes;
    a category that does not enable it is not asked for; one that enables it but does not
    record is not asked for either."""
    from audiopolicyd.pluginmanager import call_for
    from audiopolicyd.policystore import load_files

    policies = load_files(sorted(shipped_dir().glob("*.toml")),
                          plugin_settings_schemas(pm)).policies

    def asks(category: str) -> bool:
        session = Session(id="app:s1", app_key="exe:/x", category=category, mode="default",
                          options=frozenset(), active=True, seq=1, streams=(), explicit=True)
        return bool(call_for(pm, "ask_microphone_on_activation", policies[category],
                             session=session, policy=policies[category]))

    assert {c for c in policies if asks(c)} == {c for c, p in policies.items() if p.records}
    assert {c for c, p in policies.items() if p.records} >= {"record", "playAndRecord"}
    doc = parse_toml((shipped_dir() / "playback.toml").read_bytes(), "playback.toml")
    doc["plugins"]["ask_microphone_on_activation"] = {}
    playback = parse_policy(doc, "playback.toml", plugin_settings_schemas(pm))
    session = Session(id="app:s2", app_key="exe:/x", category="playback", mode="default",
                      options=frozenset(), active=True, seq=1, streams=(), explicit=True)
    assert call_for(pm, "ask_microphone_on_activation", playback, session=session,
                    policy=playback) is None  # enabled, but playback does not record
