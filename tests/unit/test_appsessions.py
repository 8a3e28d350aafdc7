"""Explicit sessions: Apple's validity rules, activation, interruptions, hints (no D-Bus)."""

from __future__ import annotations

import itertools

import pytest

from audiopolicyd.appsessions import AppSessions, SessionError
from audiopolicyd.engine import activation_blockers, audio_hints, interruptions
from audiopolicyd.identity import Identity
from audiopolicyd.model import Session


@pytest.fixture
def core(policies, pm):
    sessions = AppSessions(lambda: policies, itertools.count(1), pm=pm)
    events = []
    sessions.listeners.append(lambda s, what, payload: events.append((s.id, what, dict(payload))))
    sessions.events = events
    return sessions


def app(core, owner, pid, category=None, mode="default", options=()):
    s = core.create(owner, Identity(pid=pid, exe=f"/usr/bin/app{pid}"), {"Name": owner})
    if category:
        core.set_category(s, category, mode, options)
    return s


def signals(core, sid):
    return [(what, p) for s, what, p in core.events if s == sid and what != "PropertiesChanged"]


def last(core, sid, name):
    """Payload of the last ``name`` signal of session ``sid``."""
    return [p for what, p in signals(core, sid) if what == name][-1]


def decide_again(core, *implicit):
    core.update([*implicit, *(s.model() for s in core.sessions.values())])


@pytest.mark.parametrize("category, mode, options, error", [
    ("karaoke", "default", [], "UnknownCategory"),
    ("playback", "loud", [], "UnknownMode"),
    ("playback", "default", ["duckEveryone"], "UnknownOption"),
    ("ambient", "default", ["defaultToSpeaker"], "IncompatibleCategoryOption"),
    ("soloAmbient", "default", ["mixWithOthers"], "IncompatibleCategoryOption"),
])
def test_category_errors(core, category, mode, options, error):
    s = app(core, ":1.1", 10)
    with pytest.raises(SessionError) as info:
        core.set_category(s, category, mode, options)
    assert info.value.name == error
    assert s.category == "soloAmbient"  # unchanged, Apple's default


@pytest.mark.parametrize("hints, error", [
    ({"Options": ["bogus"]}, "UnknownOption"),
    ({"Mode": "karaoke"}, "UnknownMode"),
    ({"Options": ["mixWithOthers"]}, "IncompatibleCategoryOption"),
    ({"Category": "karaoke"}, "UnknownCategory"),
    ({"Category": "ambient", "Options": ["defaultToSpeaker"]}, "IncompatibleCategoryOption"),
])
def test_creation_hints_fail_as_set_category_would(core, hints, error):
    """Issue 8 D13: hints without Category are applied to the default category (soloAmbient),
    with SetCategory's errors; no session is created."""
    s = app(core, ":1.1", 10)
    category = hints.get("Category", "soloAmbient")
    with pytest.raises(SessionError) as by_set_category:
        core.set_category(s, category, hints.get("Mode", "default"), hints.get("Options", []))
    with pytest.raises(SessionError) as by_hints:
        core.create(":1.1", Identity(pid=10), {"Name": "x", **hints})
    assert (by_hints.value.name, str(by_hints.value)) == \
        (error, str(by_set_category.value))
    assert list(core.sessions) == [s.id]


@pytest.mark.parametrize("hints, expected", [
    ({}, ("soloAmbient", "default", set())),
    ({"Mode": "voiceChat"}, ("soloAmbient", "default", set())),  # Apple's fallback
    ({"Options": []}, ("soloAmbient", "default", set())),
    ({"Category": "playback", "Options": ["mixWithOthers"]},
     ("playback", "default", {"mixWithOthers"})),
    ({"Category": "playAndRecord", "Mode": "voiceChat"}, ("playAndRecord", "voiceChat", set())),
])
def test_creation_hints_set_the_category(core, hints, expected):
    s = core.create(":1.1", Identity(pid=10), {"Name": "x", **hints})
    assert (s.category, s.mode, set(s.options)) == expected
    assert not s.active


def test_errors_quote_a_short_prefix_of_what_the_client_sent(core):
    s = app(core, ":1.1", 10)
    huge = "x" * (1 << 20)
    for call in (lambda: core.set_category(s, huge, "default", []),
                 lambda: core.set_category(s, "playback", huge, []),
                 lambda: core.set_category(s, "playback", "default", [huge]),
                 lambda: core.set_category(s, "playback", "default", ["mixWithOthers", huge]),
                 lambda: core.set_active(s, True, [huge]),
                 lambda: core.get(huge),
                 lambda: core.create(":1.1", Identity(pid=10), {"Category": huge})):
        with pytest.raises(SessionError) as info:
            call()
        assert "'" + "x" * 64 + "\u2026'" in str(info.value)
        assert len(str(info.value)) < 400, info.value.name


def test_mode_the_category_does_not_take_falls_back_to_default(core):
    s = app(core, ":1.1", 10, "ambient", "voiceChat")
    assert (s.category, s.mode) == ("ambient", "default")
    s = app(core, ":1.2", 11, "playAndRecord", "voiceChat", ["duckOthers"])
    assert (s.mode, s.options) == ("voiceChat", {"duckOthers"})


def test_ownership_and_bounds(core):
    s = app(core, ":1.1", 10)
    assert core.get(s.id, ":1.1") is s
    with pytest.raises(SessionError, match="belongs to :1.1") as info:
        core.get(s.id, ":1.2")
    assert info.value.name == "NotOwner"
    for _ in range(15):
        app(core, ":1.1", 10)
    with pytest.raises(SessionError) as info:
        app(core, ":1.1", 10)
    assert info.value.name == "TooManySessions"
    app(core, ":1.2", 11)  # other clients are unaffected
    core.drop_owner(":1.1")
    assert [x.owner for x in core.sessions.values()] == [":1.2"]
    with pytest.raises(SessionError) as info:
        core.get(s.id)
    assert info.value.name == "NoSuchSession"


def test_call_interrupts_music_and_notified_end_says_resume(core):
    music = app(core, ":1.1", 10, "playback")
    call = app(core, ":1.2", 11, "playAndRecord")
    assert core.set_active(music, True, []) == "active"
    decide_again(core)
    assert core.set_active(call, True, []) == "active"
    decide_again(core)
    assert music.state == "interrupted" and not music.active
    names = [w for w, _ in signals(core, music.id)]
    assert names.index("InterruptionBegan") < names.index("DidBecomeInactive")
    assert last(core, music.id, "DidBecomeInactive") == {"source": "system",
                                                         "reason": "interruption"}
    assert core.set_active(call, False, ["notifyOthersOnDeactivation"]) == "inactive"
    decide_again(core)
    payload = last(core, music.id, "InterruptionEnded")
    assert payload["should_resume"] is True and payload["options"] == ["shouldResume"]


def test_end_without_notification_or_too_late_does_not_resume(core):
    music = app(core, ":1.1", 10, "playback")
    call = app(core, ":1.2", 11, "playAndRecord")
    core.set_active(music, True, [])
    core.set_active(call, True, [])
    decide_again(core)
    core.set_active(call, False, [])
    decide_again(core)
    assert last(core, music.id, "InterruptionEnded")["should_resume"] is False
    core.set_active(music, True, [])
    core.set_active(call, True, ["notifyOthersOnDeactivation"])
    core.update([s.model() for s in core.sessions.values()], now=100.0)
    core.set_active(call, False, ["notifyOthersOnDeactivation"])
    core.update([s.model() for s in core.sessions.values()], now=100.0 + core.resume_limit + 1)
    ended = [p for w, p in signals(core, music.id) if w == "InterruptionEnded"]
    assert len(ended) == 2 and ended[-1]["should_resume"] is False


def test_implicit_interrupter_ending_means_resume(core, policies):
    music = app(core, ":1.1", 10, "playback")
    core.set_active(music, True, [])
    phone = Session("implicit:exe:linphone:3:playAndRecord", "exe:linphone:3", "playAndRecord",
                    active=True, seq=99)
    decide_again(core, phone)
    assert last(core, music.id, "InterruptionBegan")["interrupter"] == phone.id
    decide_again(core)  # the phone app's streams are gone
    assert last(core, music.id, "InterruptionEnded")["should_resume"] is True


def test_insufficient_priority_and_delayed_activation(core):
    call = app(core, ":1.2", 11, "playAndRecord")
    core.set_active(call, True, [])
    decide_again(core)
    music = app(core, ":1.1", 10, "playback")
    with pytest.raises(SessionError) as info:
        core.set_active(music, True, [])
    assert info.value.name == "InsufficientPriority"
    game = app(core, ":1.3", 12, "ambient")
    assert core.set_active(game, True, []) == "active"  # a call ducks ambient: not blocked
    assert core.set_active(music, True, ["delayIfBusy"]) == "delayed"
    assert music.state == "delayed"
    core.set_active(call, False, [])
    decide_again(core)
    assert music.active and music.state == "active"
    assert ("DidBecomeActive", {"source": "system", "reason": "delayedActivation"}) in \
        signals(core, music.id)


def test_record_blocks_a_mixable_session_with_cannot_interrupt_others(core):
    rec = app(core, ":1.2", 11, "record")
    core.set_active(rec, True, [])
    decide_again(core)
    game = app(core, ":1.1", 10, "ambient")
    with pytest.raises(SessionError) as info:
        core.set_active(game, True, [])
    assert info.value.name == "CannotInterruptOthers"


def test_hints_follow_other_apps(core):
    mine = app(core, ":1.1", 10, "ambient")
    other = app(core, ":1.2", 11, "playback")
    decide_again(core)
    assert (mine.other_audio_playing, mine.secondary_hint) == (False, False)
    core.set_active(other, True, [])
    decide_again(core)
    assert (mine.other_audio_playing, mine.secondary_hint) == (True, True)
    assert ("SilenceSecondaryAudioHint", {"type": "begin"}) in signals(core, mine.id)
    core.set_category(other, "playback", "default", ["mixWithOthers"])
    decide_again(core)
    assert (mine.other_audio_playing, mine.secondary_hint) == (True, False)
    assert signals(core, mine.id)[-1] == ("SilenceSecondaryAudioHint", {"type": "end"})


def test_session_level_rules_are_pure(policies):
    music = Session("m", "a", "playback", active=True, seq=1)
    call = Session("c", "b", "playAndRecord", active=True, seq=2)
    game = Session("g", "d", "ambient", active=True, seq=3)
    assert interruptions([music, call, game], policies) == {"m": {"c"}}
    assert [s.id for s in activation_blockers(Session("x", "e", "playback"), [call], policies)] \
        == ["c"]
    assert activation_blockers(Session("x", "e", "playAndRecord"), [call], policies) == []
    assert audio_hints(game, [music, call, game], policies) == (True, True)


def test_identity_keys_and_stream_membership(tmp_path):
    import os

    from audiopolicyd.identity import identify, stream_belongs
    me = identify(os.getpid(), os.getuid())
    assert me.exe and me.key == f"exe:{me.exe}:{os.getpid()}" or me.app_id
    assert Identity(pid=1, exe="/usr/bin/python3").key != Identity(pid=2,
                                                                   exe="/usr/bin/python3").key
    assert Identity(pid=1, app_id="org.gnome.Lollypop", flatpak=True).key == \
        "flatpak:org.gnome.Lollypop"
    # our own process belongs to our session; a child's stream too; pid 1's does not
    assert stream_belongs({}, os.getpid(), me)
    assert not stream_belongs({}, 1, me)
    assert not stream_belongs({}, None, me)
    flatpak = Identity(pid=os.getpid(), app_id="org.example.App", flatpak=True)
    assert stream_belongs({"pipewire.access.portal.app_id": "org.example.App"}, None, flatpak)
    assert not stream_belongs({"pipewire.access.portal.app_id": "org.other.App"},
                              os.getpid(), flatpak)


@pytest.mark.parametrize("unit, app_id", [
    ("app-gnome-org.gnome.Lollypop-12345.scope", "org.gnome.Lollypop"),
    ("app-org.gnome.Terminal-2311.scope", "org.gnome.Terminal"),
    ("app-kde-org.kde.elisa-a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6.scope", "org.kde.elisa"),
    ("app-gnome-firefox-4567.scope", "firefox"),
    ("app-flatpak-org.mozilla.firefox-1234.scope", "org.mozilla.firefox"),
    ("app-spotify@8d9e.service", "spotify"),
    ("session-2.scope", None),
    ("user@1000.service", None),
])
def test_app_id_from_systemd_app_unit_names(unit, app_id):
    from audiopolicyd.identity import _UNIT_APP
    match = _UNIT_APP.match(unit)
    assert (match.group("id") if match else None) == app_id


def test_a_session_that_never_activated_is_not_told_of_interruptions(core):
    idle = app(core, ":1.1", 10, "playback")
    call = app(core, ":1.2", 11, "playAndRecord")
    core.set_active(call, True, [])
    decide_again(core)
    core.set_active(call, False, ["notifyOthersOnDeactivation"])
    decide_again(core)
    assert not [w for w, _ in signals(core, idle.id) if w.startswith("Interruption")]
    assert idle.state == "inactive"


@pytest.mark.parametrize("category, options", [
    ("ambient", []), ("soloAmbient", []), ("audioProcessing", []), ("record", ["allowBluetooth"]),
    ("playback", ["duckOthers", "interruptSpokenAudioAndMixWithOthers", "mixWithOthers"]),
    ("multiRoute", ["duckOthers", "interruptSpokenAudioAndMixWithOthers", "mixWithOthers"]),
])
def test_shipped_options_follow_apples_rules(policies, category, options):
    assert sorted(policies.policies[category].options) == options
    assert "defaultToSpeaker" in policies.policies["playAndRecord"].options
