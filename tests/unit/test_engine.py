"""The pure decision: every category pair, options, priority, plugins, classification."""

from __future__ import annotations

import dataclasses

import pytest

from audiopolicyd import hookimpl
from audiopolicyd.engine import classify, decide, players_to_pause
from audiopolicyd.model import Player, Session, Snapshot, StreamKind, freeze
from audiopolicyd.pluginmanager import make_plugin_manager
from audiopolicyd.sessions import ImplicitSessions

from .conftest import make_stream

CATS = ["ambient", "soloAmbient", "playback", "record", "playAndRecord", "multiRoute",
        "audioProcessing"]

# What a later-activated trigger (row) does to an earlier victim's playback stream (column),
# with the shipped policies and no MPRIS player (interrupt = mute). Written from Apple's
# category semantics and the shipped files, not from the code: record and audioProcessing never
# play (their own output is always muted).
N, M = "none", "mute"
EXPECTED = {
    #                ambient       soloAmbient   playback record playAndRecord multiRoute audioProcessing
    "ambient":       [N,           N,            N,       M,     N,            N,         M],
    "soloAmbient":   [N,           M,            M,       M,     N,            N,         M],
    "playback":      [N,           M,            M,       M,     N,            N,         M],
    "record":        [M,           M,            M,       M,     N,            N,         M],
    "playAndRecord": ["duck 0.20", "duck 0.20",  M,       M,     M,            M,         "mute+duck 0.20"],
    "multiRoute":    ["duck 0.30", N,            N,       M,     N,            N,         "mute+duck 0.30"],
    "audioProcessing": [N,         N,            N,       M,     N,            N,         M],
}


def session(sid, category, streams, seq, active=True, app=None, mode="default", options=()):
    return Session(id=sid, app_key=app or sid, category=category, mode=mode,
                   options=frozenset(options), active=active, seq=seq, streams=tuple(streams))


def snap(*streams, players=()):
    return Snapshot(freeze({s.key: s for s in streams}), freeze({}),
                    freeze({p.bus_name: p for p in players}))


@pytest.mark.parametrize("trigger", CATS)
@pytest.mark.parametrize("victim", CATS)
def test_every_category_pair(policies, pm, trigger, victim):
    v, t = make_stream(1, app="victim"), make_stream(2, app="trigger")
    sessions = [session("v", victim, [v.key], seq=1), session("t", trigger, [t.key], seq=2)]
    effects = decide(snap(v, t), sessions, policies, pm)
    assert effects[v.key].summary == EXPECTED[trigger][CATS.index(victim)]


def test_higher_priority_acts_even_when_activated_first(policies):
    call, music = make_stream(1, role="phone"), make_stream(2, role="music")
    sessions = [session("call", "playAndRecord", [call.key], seq=1),
                session("music", "playback", [music.key], seq=2)]
    effects = decide(snap(call, music), sessions, policies)
    assert effects[music.key].mute and effects[call.key].neutral


def test_inactive_sessions_do_not_act_but_can_be_acted_on(policies):
    call, music = make_stream(1, corked=True), make_stream(2, corked=True)
    effects = decide(snap(call, music), [session("call", "playAndRecord", [call.key], 2,
                                                 active=False),
                                         session("music", "playback", [music.key], 1)],
                     policies)
    assert effects[music.key].neutral
    effects = decide(snap(call, music), [session("call", "playAndRecord", [call.key], 2),
                                         session("music", "playback", [music.key], 1,
                                                 active=False)], policies)
    assert effects[music.key].mute


def test_same_app_never_acts_on_itself(policies):
    ring, music = make_stream(1), make_stream(2)
    sessions = [session("a", "playAndRecord", [ring.key], 2, app="voip"),
                session("b", "playback", [music.key], 1, app="voip")]
    assert decide(snap(ring, music), sessions, policies)[music.key].neutral


def test_interrupt_pauses_a_stream_with_a_player_instead_of_muting(policies):
    music = make_stream(1, role="music", pid=4242)
    call = make_stream(2, role="phone")
    player = Player("org.mpris.MediaPlayer2.mpv", pid=4242, status="Playing")
    s = snap(music, call, players=[player])
    effects = decide(s, [session("m", "playback", [music.key], 1),
                         session("c", "playAndRecord", [call.key], 2)], policies)
    assert effects[music.key].pause and not effects[music.key].mute
    assert players_to_pause(s, effects) == {"org.mpris.MediaPlayer2.mpv": {"c"}}


def test_player_matched_by_desktop_entry_when_pids_differ(policies):
    music = make_stream(1, extra={"application.id": "org.gnome.Rhythmbox3"}, pid=10)
    player = Player("org.mpris.MediaPlayer2.rhythmbox", pid=99,
                    desktop_entry="org.gnome.Rhythmbox3")
    assert snap(music, players=[player]).player_for(music) is player
    assert snap(music).player_for(music) is None


def test_several_duckers_multiply(policies):
    victim = make_stream(1, role="game")
    calls = [make_stream(2, app="a"), make_stream(3, app="b")]
    sessions = [session("v", "ambient", [victim.key], 1),
                session("c1", "playAndRecord", [calls[0].key], 2),
                session("c2", "multiRoute", [calls[1].key], 3)]
    effect = decide(snap(victim, *calls), sessions, policies)[victim.key]
    assert effect.gain == pytest.approx(0.2 * 0.3)
    assert effect.ramp_ms == 200
    assert {r.session for r in effect.reasons} == {"c1", "c2"}


def test_reasons_name_the_policy_file_and_key(policies):
    game, call = make_stream(1), make_stream(2)
    effects = decide(snap(game, call), [session("g", "soloAmbient", [game.key], 1),
                                        session("c", "playAndRecord", [call.key], 2)], policies)
    (reason,) = effects[game.key].reasons
    assert reason.policy.endswith("playAndRecord.toml")
    assert (reason.rule, reason.action, reason.session) == ("overrides.soloAmbient", "duck", "c")


@pytest.mark.parametrize("options, mode, expected", [
    (["mixWithOthers"], "default", "none"),
    (["duckOthers"], "default", "duck 0.20"),
    (["mixWithOthers", "duckOthers"], "default", "duck 0.20"),
    (["interruptSpokenAudioAndMixWithOthers"], "default", "none"),
    (["interruptSpokenAudioAndMixWithOthers"], "spokenAudio", "mute"),
])
def test_trigger_options(policies, pm, options, mode, expected):
    victim, trig = make_stream(1), make_stream(2)
    sessions = [session("v", "playback", [victim.key], 1, mode=mode),
                session("t", "playback", [trig.key], 2, options=options)]
    assert decide(snap(victim, trig), sessions, policies, pm)[victim.key].summary == expected


def test_record_silences_output_but_keeps_a11y_through_the_plugin(policies, pm):
    rec = make_stream(1, StreamKind.SOURCE_OUTPUT, app="parecord")
    music, reader = make_stream(2, role="music"), make_stream(3, role="a11y", app="orca")
    s = snap(rec, music, reader)
    sessions = [session("r", "record", [rec.key], 3),
                session("m", "playback", [music.key], 1),
                session("a", "ambient", [reader.key], 2)]
    effects = decide(s, sessions, policies, pm)
    assert effects[music.key].mute
    assert effects[reader.key].neutral
    assert effects[rec.key].neutral  # the recording itself is not touched
    assert decide(s, sessions, policies)[reader.key].mute  # without the plugin


def test_source_output_of_a_non_recording_category_is_muted(policies):
    mic = make_stream(1, StreamKind.SOURCE_OUTPUT)
    monitor = make_stream(2, StreamKind.SOURCE_OUTPUT, monitor=True)
    sessions = [session("p", "playback", [mic.key, monitor.key], 1)]
    effects = decide(snap(mic, monitor), sessions, policies)
    assert effects[mic.key].mute and effects[monitor.key].neutral


def test_duck_does_not_touch_recordings(policies):
    mic = make_stream(1, StreamKind.SOURCE_OUTPUT, role="game")
    call = make_stream(2, role="phone")
    sessions = [session("g", "ambient", [mic.key], 1), session("c", "playAndRecord",
                                                               [call.key], 2)]
    assert decide(snap(mic, call), sessions, policies)[mic.key].mute  # ambient does not record


class Raising:
    @hookimpl
    def decide_interaction(self, trigger, victim, stream, interaction, policies):
        raise RuntimeError("plugin bug")

    @hookimpl
    def classify_stream(self, stream, policies):
        raise RuntimeError("plugin bug")


class Classifier:
    @hookimpl
    def classify_stream(self, stream, policies):
        if stream.properties.get("application.name") == "special":
            return ("playAndRecord", "test plugin")
        if stream.properties.get("application.name") == "bogus":
            return ("noSuchCategory", "test plugin")
        return None


def test_a_raising_plugin_is_logged_and_skipped(policies, caplog):
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Raising(), name="raising")
    music, call = make_stream(1, role="music"), make_stream(2, role="phone")
    sessions = [session("m", "playback", [music.key], 1),
                session("c", "playAndRecord", [call.key], 2)]
    assert decide(snap(music, call), sessions, policies, pm)[music.key].mute
    assert classify(snap(music), policies, pm)[music.key][0] == "playback"
    assert "plugin 'raising' raised in hook decide_interaction" in caplog.text


def test_classify_plugin_first_then_rules_and_cache(policies):
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Classifier(), name="classifier")
    special, bogus, music = (make_stream(1, app="special"), make_stream(2, app="bogus"),
                             make_stream(3, role="music"))
    cache = {}
    out = classify(snap(special, bogus, music), policies, pm, cache)
    assert out == {special.key: ("playAndRecord", "test plugin"),
                   bogus.key: ("soloAmbient", out[bogus.key][1]),
                   music.key: ("playback", out[music.key][1])}
    assert set(cache) == {special.key, bogus.key, music.key}
    changed = dataclasses.replace(music, properties=freeze({"media.role": "phone"}))
    out = classify(snap(changed), policies, pm, cache)
    assert out[music.key][0] == "playAndRecord" and set(cache) == {music.key}


def test_implicit_sessions_group_by_app_and_category_and_order_activations(policies):
    tracker = ImplicitSessions()
    a1 = make_stream(1, role="music", app="mpv", pid=1)
    a2 = make_stream(2, role="music", app="mpv", pid=1)
    b = make_stream(3, role="phone", app="linphone", pid=2, corked=True)
    s = snap(a1, a2, b)
    sessions = {x.id: x for x in tracker.update(s, classify(s, policies))}
    music = sessions["implicit:exe:mpv:1:playback"]
    call = sessions["implicit:exe:linphone:2:playAndRecord"]
    assert music.streams == (a1.key, a2.key) and music.active and music.seq == 1
    assert not call.active and call.seq == 0
    b = dataclasses.replace(b, corked=False)
    s = snap(a1, a2, b)
    sessions = {x.id: x for x in tracker.update(s, classify(s, policies))}
    assert sessions["implicit:exe:linphone:2:playAndRecord"].seq == 2
    assert sessions["implicit:exe:mpv:1:playback"].seq == 1
    s = snap(b)
    assert [x.id for x in tracker.update(s, classify(s, policies))] == [
        "implicit:exe:linphone:2:playAndRecord"]


def test_playing_rules_for_streams_being_set_up():
    unlinked = dict(corked=True)
    out = dataclasses.replace(make_stream(1, **unlinked), device="")
    rec = dataclasses.replace(make_stream(2, StreamKind.SOURCE_OUTPUT, **unlinked),
                              device="", corked=False)
    assert out.playing and not out.linked  # pipewire-pulse's new stream: react at once
    assert not rec.playing  # a recording counts once we know what it records
    assert not make_stream(3, corked=True).playing
    assert make_stream(4, StreamKind.SOURCE_OUTPUT).playing


def test_a_held_stream_keeps_its_session_active_without_a_new_activation(policies):
    tracker = ImplicitSessions()
    call = make_stream(1, role="phone", app="linphone", pid=2)
    s = snap(call)
    (first,) = tracker.update(s, classify(s, policies))
    corked = snap(dataclasses.replace(call, corked=True))
    (held,) = tracker.update(corked, classify(corked, policies), {call.key})
    assert held.active and held.seq == first.seq
    (ended,) = tracker.update(corked, classify(corked, policies))
    assert not ended.active


def test_label_is_bounded():
    assert len(make_stream(1, app="x" * 10_000).label) == 64


# -- server modules' streams (issue 8, D12) -------------------------------------------------------

def module_stream(index, kind=StreamKind.SINK_INPUT, module="module-loopback", **props):
    return dataclasses.replace(make_stream(index, kind, **props), module=module)


def pass_(snapshot, policies, pm=None, tracker=None):
    """classify -> implicit sessions -> decide, as the reconciler runs them."""
    classified = classify(snapshot, policies, pm)
    sessions = (tracker or ImplicitSessions()).update(snapshot, classified)
    return classified, sessions, decide(snapshot, sessions, policies, pm)


def test_module_streams_neither_act_nor_are_acted_on(policies, pm):
    # A mic loopback (or echo-cancel): a recording and a playback stream of the server's own.
    # Before: the recording formed a `record` session that silenced every output.
    loop_rec = module_stream(1, StreamKind.SOURCE_OUTPUT)
    loop_play = module_stream(2)
    echo_play = module_stream(3, module="module-echo-cancel", role="phone")
    music = make_stream(4, role="music", app="mpv")
    call = make_stream(5, role="phone", app="linphone")
    classified, sessions, effects = pass_(snap(loop_rec, loop_play, echo_play, music), policies,
                                          pm)
    assert classified[loop_rec.key] == (
        "", "module-loopback: server module (no [[classify]] rule names it)")
    assert classified[echo_play.key][0] == ""
    assert [s.id for s in sessions] == ["implicit:exe:mpv::playback"]
    assert all(e.neutral for e in effects.values())
    # a call mutes the music but leaves the modules' streams alone
    classified, sessions, effects = pass_(snap(loop_rec, loop_play, echo_play, music, call),
                                          policies, pm)
    assert effects[music.key].mute
    assert effects[loop_play.key].neutral and effects[echo_play.key].neutral
    assert effects[loop_rec.key].neutral


def test_a_policy_opts_a_module_in_by_name(policies, pm):
    pset = with_rule(policies, "record", {"module": ["module-loopback"], "direction": ["record"]})
    loop_rec = module_stream(1, StreamKind.SOURCE_OUTPUT)
    echo_rec = module_stream(2, StreamKind.SOURCE_OUTPUT, module="module-echo-cancel")
    music = make_stream(3, role="music", app="mpv")
    classified, sessions, effects = pass_(snap(loop_rec, echo_rec, music), pset, pm)
    assert classified[loop_rec.key][0] == "record"
    assert classified[echo_rec.key][0] == ""
    assert effects[music.key].mute  # the opted-in loopback records: output is silenced
    (reason,) = effects[music.key].reasons
    assert (reason.session, reason.action) == ("implicit:stream:source-output:1:record",
                                               "silence")


def test_plugins_do_not_classify_module_streams(policies):
    class Everything:
        @hookimpl
        def classify_stream(self, stream, policies):
            return ("playAndRecord", "greedy plugin")

    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Everything(), name="everything")
    loop, client = module_stream(1), make_stream(2)
    out = classify(snap(loop, client), policies, pm)
    assert out[loop.key][0] == "" and out[client.key] == ("playAndRecord", "greedy plugin")


def with_rule(policies, category, rule):
    """The shipped set with one more ``[[classify]]`` rule in ``category``'s file."""
    from audiopolicyd.policy import build_policy_set, parse_policy, parse_toml
    from audiopolicyd.pluginmanager import plugin_settings_schemas
    from audiopolicyd.policystore import shipped_dir
    schemas = plugin_settings_schemas(make_plugin_manager(load_entry_points=False))
    out = []
    for path in sorted(shipped_dir().glob("*.toml")):
        doc = parse_toml(path.read_bytes(), path.name)
        if doc["category"] == category:
            doc.setdefault("classify", []).append(rule)
        out.append(parse_policy(doc, path.name, schemas))
    return build_policy_set(out)
