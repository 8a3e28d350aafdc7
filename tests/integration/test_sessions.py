"""Explicit sessions over D-Bus on real servers: AVAudioSession's semantics, end to end.

Each app is a separate process holding its own D-Bus connection (sessions belong to the
connection that created them): ``tests/support/programs/session_client.py``, written with
dbus-fast, driven over stdin and printing every signal it receives. Its paplay children play
without a ``media.role``, so only their session gives their streams a category. The second
implementation on the wire is systemd's ``busctl`` (stateless: each call is a connection that
ends with the call, which is also the crash-cleanup case for the session it created) and
GLib's ``gdbus``, whose errors name the D-Bus error.

Shipped policies: ``playAndRecord`` (priority 80) interrupts ``playback`` (50) and ducks
mixable sessions to 0.2; between two ``playback`` sessions the later activation wins. An
interrupted stream without an MPRIS player is muted. Every assertion on audio reads the
server (pulsectl); signals are the ones the client processes received. Absence of a signal is
checked only after a later event of the same decision was seen (or after a round trip of the
client that would have received it), never after a delay.

The last tests pin daemon bugs that were found by this module and fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.bus import busctl, busctl_error, busctl_json
from tests.support.clients import play
from tests.support.daemon import BUS_NAME, MANAGER_IFACE, OBJECT_PATH, DaemonProcess, gdbus_call
from tests.support.processes import wait_for
from tests.support.servers import AudioServer
from tests.support.sessions import SESSION_IFACE, SessionClient
from tests.support.streams import (
    ducked, end_client, set_user_volume, stream_state, wait_muted, wait_stream, wait_volume,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

#: The user's volume of the victim streams (about 61 %); 0.2 of it is an integer.
USER = 40000
CALL = 0.2  # playAndRecord.toml: activation.duck_level
ERROR = BUS_NAME + ".Error."
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"

Apps = Callable[[str], SessionClient]


@pytest.fixture
def apps(server: AudioServer, daemon: DaemonProcess) -> Iterator[Apps]:
    """Start client apps (each its own process and connection); all closed after the test,
    before the daemon and the server stop."""
    started: list[SessionClient] = []

    def start(name: str) -> SessionClient:
        client = SessionClient(server, name)
        started.append(client)
        return client
    try:
        yield start
    finally:
        for client in started:
            client.close()


def sid(path: str) -> str:
    """The engine's id of the session at *path*: ``session:s3``."""
    return "session:" + path.rsplit("/", 1)[-1]


def key(server: AudioServer, proc) -> str:
    """The daemon's key of *proc*'s playback stream."""
    return f"sink-input:{wait_stream(server, proc).index}"


def managed(server: AudioServer) -> set[str]:
    """The session paths ``GetManagedObjects`` lists, asked through busctl."""
    (objects,) = busctl_json(busctl(server.env, "--json=short", "call", BUS_NAME, OBJECT_PATH,
                                    OBJECT_MANAGER, "GetManagedObjects"))
    assert all(SESSION_IFACE in ifaces for ifaces in objects.values()), objects
    return set(objects)


def explain(server: AudioServer, target: str) -> dict:
    """``Manager.Explain(target)`` through busctl."""
    (info,) = busctl_json(busctl(server.env, "--json=short", "call", BUS_NAME, OBJECT_PATH,
                                 MANAGER_IFACE, "Explain", "s", target))
    return info


def effects(daemon: DaemonProcess) -> dict[str, str]:
    """The daemon's effect on every stream: key -> ``none`` / ``mute`` / ``duck 0.20``..."""
    return {v["Key"]: v["Effect"] for v in daemon.streams()}


def first(client: SessionClient, member: str, path: str | None = None, after: int = 0) -> dict:
    """The body (first argument) of a signal the client received (waits for it)."""
    return client.wait_signal(member, path, after=after)["body"][0]


def playing_app(apps: Apps, server: AudioServer, tone: Path, name: str, category: str,
                mode: str = "default", options: str = "-"):
    """A client with an active session of *category* and a paplay child at the user's volume:
    ``(client, child)``."""
    app = apps(name)
    app.create(name, category, mode, options)
    assert app.call("active", 1) == "active"
    child = app.play(tone)
    set_user_volume(server, child, USER)
    return app, child


# -- interruptions -------------------------------------------------------------------------------

def test_interruption_ends_with_should_resume_only_when_notified(
        server: AudioServer, apps: Apps, tone: Path) -> None:
    a, music = playing_app(apps, server, tone, "A", "playback")
    b = apps("B")
    b.create("B", "playAndRecord", "voiceChat")

    # 1. B's call interrupts A; B ends it with notifyOthersOnDeactivation: resume.
    mark = a.mark()
    assert b.call("active", 1) == "active"
    began = first(a, "InterruptionBegan", after=mark)
    assert (began["interrupter"], began["interrupter_category"]) == (sid(b.session),
                                                                     "playAndRecord")
    inactive = first(a, "DidBecomeInactive", after=mark)
    assert (inactive["source"], inactive["reason"]) == ("system", "interruption")
    wait_muted(server, music, True)
    assert stream_state(server, music) == ([USER, USER], True), "muted, volume kept"
    assert (a.call("get", "Active"), a.call("get", "State")) == (False, "interrupted")

    assert b.call("active", 0, "notifyOthersOnDeactivation") == "inactive"
    ended = first(a, "InterruptionEnded", after=mark)
    assert ended["should_resume"] is True and ended["options"] == ["shouldResume"]
    wait_muted(server, music, False)
    assert stream_state(server, music) == ([USER, USER], False)
    assert a.call("get", "State") == "inactive"

    # 2. The app resumes; B's next call ends without notification: told, but not to resume.
    assert a.call("active", 1) == "active"
    mark = a.mark()
    assert b.call("active", 1) == "active"
    first(a, "InterruptionBegan", after=mark)
    wait_muted(server, music, True)
    assert b.call("active", 0) == "inactive"
    ended = first(a, "InterruptionEnded", after=mark)
    assert ended["should_resume"] is False and ended["options"] == []
    wait_muted(server, music, False)
    assert stream_state(server, music) == ([USER, USER], False)
    assert len(a.signals("InterruptionBegan", a.session)) == 2
    assert len(a.signals("InterruptionEnded", a.session)) == 2


def test_duck_others_ducks_exactly_and_restores_exactly(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path) -> None:
    a, music = playing_app(apps, server, tone, "A", "playback")
    b = apps("B")
    b.create("B", "playAndRecord", "voiceChat", "duckOthers")
    mark = a.mark()
    assert b.call("active", 1) == "active"
    voice = b.play(tone)

    wait_volume(server, music, ducked(USER, CALL))
    assert stream_state(server, music) == ([ducked(USER, CALL)] * 2, False)
    assert stream_state(server, voice) == ([65536, 65536], False), "the ducker is untouched"
    a.wait_signal("PropertiesChanged", after=mark,
                  where=lambda body: body[1].get("OtherAudioPlaying") is True)
    assert a.signals("InterruptionBegan", a.session) == [], "a duck is not an interruption"
    assert (a.call("get", "Active"), a.call("get", "SecondaryAudioShouldBeSilencedHint")) == \
        (True, False)
    assert effects(daemon)[key(server, music)] == "duck 0.20"

    assert b.call("active", 0) == "inactive"
    wait_volume(server, music, USER)
    assert stream_state(server, music) == ([USER, USER], False)
    wait_for(lambda: effects(daemon)[key(server, music)], 10, "the duck to end",
             until=lambda e: e == "none")


def test_mix_with_others_leaves_the_other_session_alone(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path) -> None:
    a, music = playing_app(apps, server, tone, "A", "playback")
    mark = a.mark()
    b, other = playing_app(apps, server, tone, "B", "playback", options="mixWithOthers")

    # B is the later playback session (it outranks A) but mixes: A is told other audio plays
    # (the decision that would have interrupted it is taken), and nothing else happens.
    a.wait_signal("PropertiesChanged", after=mark,
                  where=lambda body: body[1].get("OtherAudioPlaying") is True)
    assert effects(daemon)[key(server, music)] == "none"
    assert stream_state(server, music) == ([USER, USER], False)
    assert stream_state(server, other) == ([USER, USER], False)
    assert a.signals("InterruptionBegan", a.session) == []
    assert (a.call("get", "Active"), a.call("get", "SecondaryAudioShouldBeSilencedHint")) == \
        (True, False)
    assert b.call("get", "Active") is True


def test_interrupt_spoken_audio_pauses_spoken_audio_and_mixes_with_the_rest(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path) -> None:
    # A podcast (spokenAudio; it mixes, so that it can play beside C) and C, plain playback.
    a, podcast = playing_app(apps, server, tone, "A", "playback", "spokenAudio",
                             "mixWithOthers")
    c, music = playing_app(apps, server, tone, "C", "playback")
    assert effects(daemon)[key(server, podcast)] == "none"
    assert a.call("get", "Mode") == "spokenAudio"

    b = apps("B")  # a navigation app
    b.create("B", "playback", "voicePrompt", "interruptSpokenAudioAndMixWithOthers")
    assert b.call("get", "Mode") == "default", "voicePrompt is not a playback mode"
    mark_a, mark_c = a.mark(), c.mark()
    assert b.call("active", 1) == "active"
    prompt = b.play(tone)

    began = first(a, "InterruptionBegan", after=mark_a)
    assert began["interrupter"] == sid(b.session)
    wait_muted(server, podcast, True)
    # C was decided on in the same pass as A: mixed, not interrupted. (The daemon answers
    # C's ping after every signal it sent before: C has seen them all.)
    c.call("ping")
    assert [e for e in c.events()[mark_c:] if e.get("signal") == "InterruptionBegan"
            and e["path"] == c.session] == []
    assert c.call("get", "Active") is True
    assert effects(daemon)[key(server, music)] == "none"
    assert stream_state(server, music) == ([USER, USER], False)
    assert stream_state(server, prompt) == ([65536, 65536], False)

    assert b.call("active", 0, "notifyOthersOnDeactivation") == "inactive"
    assert first(a, "InterruptionEnded", after=mark_a)["should_resume"] is True
    wait_muted(server, podcast, False)
    assert stream_state(server, podcast) == ([USER, USER], False)


# -- priority ------------------------------------------------------------------------------------

def test_insufficient_priority_then_delayed_activation(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path) -> None:
    b = apps("B")
    b.create("B", "playAndRecord", "voiceChat")
    assert b.call("active", 1) == "active"
    a = apps("A")
    a.create("A", "playback")

    refused = a.error("active", 1)
    assert refused.full_name == ERROR + "InsufficientPriority", refused
    assert "delayIfBusy" in refused.message
    assert (a.call("get", "Active"), a.call("get", "State")) == (False, "inactive")

    mark = a.mark()
    assert a.call("active", 1, "delayIfBusy") == "delayed"
    assert (a.call("get", "Active"), a.call("get", "State")) == (False, "delayed")
    assert a.signals("DidBecomeActive", a.session) == []

    assert b.call("active", 0) == "inactive"
    became = first(a, "DidBecomeActive", after=mark)
    assert (became["source"], became["reason"]) == ("system", "delayedActivation")
    a.wait_property("State", "active")
    assert a.call("get", "Active") is True

    music = a.play(tone)  # the delayed session is in force: its stream plays untouched
    set_user_volume(server, music, USER)
    wait_for(lambda: effects(daemon)[key(server, music)], 10, "A's stream to be decided on",
             until=lambda e: e == "none")
    assert stream_state(server, music) == ([USER, USER], False)


# -- ownership and lifetime ----------------------------------------------------------------------

def test_crashed_client_is_removed_and_its_effects_undone(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path) -> None:
    a, music = playing_app(apps, server, tone, "A", "playback")
    game = play(server, tone, role="game")  # an app without a session: ambient
    set_user_volume(server, game, USER)
    b = apps("B")
    b.create("B", "playAndRecord", "voiceChat")
    mark = a.mark()
    assert b.call("active", 1) == "active"
    voice = b.play(tone)
    first(a, "InterruptionBegan", after=mark)
    wait_muted(server, music, True)
    wait_volume(server, game, ducked(USER, CALL))
    assert managed(server) == {a.session, b.session}

    b.kill()  # kill -9: no Close, no SetActive(false); the bus tells the daemon
    assert voice.poll() is not None, "its paplay died with it"

    a.wait_signal("InterfacesRemoved", b.session, after=mark)
    wait_muted(server, music, False)
    wait_volume(server, game, USER)
    assert stream_state(server, music) == ([USER, USER], False)
    assert stream_state(server, game) == ([USER, USER], False)
    # a removed session holds nobody: A may resume
    assert first(a, "InterruptionEnded", after=mark)["should_resume"] is True
    assert managed(server) == {a.session}
    assert a.call("managed") == [a.session]
    wait_for(lambda: effects(daemon), 10, "no effect left anywhere",
             until=lambda e: set(e.values()) == {"none"})
    gone = busctl(server.env, "call", BUS_NAME, b.session, "org.freedesktop.DBus.Properties",
                  "Get", "ss", SESSION_IFACE, "Active")
    assert gone.returncode != 0 and busctl_error(gone).startswith("org.freedesktop.DBus.Error.")
    daemon.assert_running()


def test_busctl_session_vanishes_when_its_connection_ends(
        server: AudioServer, daemon: DaemonProcess, apps: Apps) -> None:
    watcher = apps("W")  # sees the object come and go
    done = busctl(server.env, "--json=short", "call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE,
                  "CreateSession", "a{sv}", "2", "Name", "s", "busctl", "Category", "s",
                  "playAndRecord")
    (path,) = busctl_json(done)
    added = watcher.wait_signal("InterfacesAdded", path)["body"][1][SESSION_IFACE]
    assert (added["Name"], added["Category"], added["State"]) == ("busctl", "playAndRecord",
                                                                  "inactive")
    watcher.wait_signal("InterfacesRemoved", path)
    assert managed(server) == set()
    daemon.assert_running()


def test_only_the_owner_may_change_a_session(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path) -> None:
    a, music = playing_app(apps, server, tone, "A", "playback")
    b = apps("B")
    b.create("B", "soloAmbient")
    mark = a.mark()

    b.call("use", a.session)
    for words in (("active", 0), ("active", 1), ("category", "ambient", "default", "-"),
                  ("close",)):
        refused = b.error(*words)
        assert refused.full_name == ERROR + "NotOwner", (words, refused)
        assert a.unique_name in refused.message
    done = gdbus_call(server.env, a.session, SESSION_IFACE + ".SetActive", "false", "@as []")
    assert done.returncode != 0 and f"GDBus.Error:{ERROR}NotOwner:" in done.stderr
    done = busctl(server.env, "call", BUS_NAME, a.session, SESSION_IFACE, "Close")
    assert busctl_error(done) == ERROR + "NotOwner", done.stderr[-1000:]

    b.call("use", b.session)
    b.call("ping")  # every refused call above was answered before this one
    assert (a.call("get", "Active"), a.call("get", "Category")) == (True, "playback")
    later = [e["signal"] for e in a.events()[mark:] if e.get("path") == a.session]
    assert not {"DidBecomeInactive", "InterruptionBegan", "InterfacesRemoved"} & set(later), later
    assert a.session in managed(server)
    assert effects(daemon)[key(server, music)] == "none"
    assert stream_state(server, music) == ([USER, USER], False)


# -- the audio server restarting -----------------------------------------------------------------

def test_server_restart_sessions_survive_and_are_applied_again(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path) -> None:
    a = apps("A")
    a.create("A", "playback")
    assert a.call("active", 1) == "active"
    b = apps("B")
    b.create("B", "playAndRecord", "voiceChat", "duckOthers")
    assert b.call("active", 1) == "active"
    before = a.play(tone)
    wait_volume(server, before, ducked(65536, CALL))
    mark_a, mark_b = a.mark(), b.mark()

    server.restart()

    for client, mark in ((a, mark_a), (b, mark_b)):
        lost = client.wait_signal("MediaServicesWereLost", after=mark, timeout=20)
        client.wait_signal("MediaServicesWereReset", after=client.events().index(lost) + 1,
                           timeout=30)  # Reset after Lost
        assert client.call("get", "Active") is True, "sessions survive"
    daemon.wait_connected()
    assert managed(server) == {a.session, b.session}

    # B's duck is in force again: A's new stream (after the restart) is ducked ...
    after = a.play(tone)
    wait_volume(server, after, ducked(65536, CALL))
    assert stream_state(server, after) == ([ducked(65536, CALL)] * 2, False)
    # ... and given back exactly when B ends.
    assert b.call("active", 0) == "inactive"
    wait_volume(server, after, 65536)
    assert stream_state(server, after) == ([65536, 65536], False)


# -- Explain -------------------------------------------------------------------------------------

def test_explain_names_the_policy_file_and_the_interrupting_session(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path) -> None:
    a, music = playing_app(apps, server, tone, "A", "playback")
    b = apps("B")
    b.create("B", "playAndRecord", "voiceChat")
    assert b.call("active", 1) == "active"
    first(a, "InterruptionBegan")
    wait_muted(server, music, True)

    session = explain(server, a.session)
    assert (session["Kind"], session["Session"], session["Category"], session["State"]) == \
        ("session", sid(a.session), "playback", "interrupted")
    assert session["Policy"].endswith("/playback.toml")
    assert session["InterruptedBy"] == [sid(b.session)]
    assert session["Streams"] == [key(server, music)]
    assert any(sid(b.session) in r and "playAndRecord.toml" in r for r in session["Reasons"])

    stream = explain(server, key(server, music))
    assert (stream["Category"], stream["Session"], stream["Effect"]) == \
        ("playback", sid(a.session), "mute")
    assert stream["ChosenBy"].startswith(f"session {a.session.rsplit('/', 1)[-1]}")
    assert stream["Policy"].endswith("/playback.toml")
    (reason,) = stream["Reasons"]
    assert reason.startswith(f"interrupt by playAndRecord session {sid(b.session)} ")
    assert "playAndRecord.toml: activation.others" in reason

    trigger = explain(server, sid(b.session))
    assert (trigger["Category"], trigger["Mode"], trigger["Active"]) == \
        ("playAndRecord", "voiceChat", True)
    assert trigger["Policy"].endswith("/playAndRecord.toml")

    unknown = gdbus_call(server.env, OBJECT_PATH, MANAGER_IFACE + ".Explain", "'s999'")
    assert unknown.returncode != 0 and f"GDBus.Error:{ERROR}UnknownTarget:" in unknown.stderr


# -- bad input -----------------------------------------------------------------------------------

def test_unknown_and_unsuitable_names_are_named_errors_and_change_nothing(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path) -> None:
    game = play(server, tone, role="game")  # a witness: nothing may touch it
    set_user_volume(server, game, USER)
    a = apps("A")
    a.create("A")
    assert (a.call("get", "Category"), a.call("get", "Mode")) == ("soloAmbient", "default")

    for words, name in ((("category", "bogus", "default", "-"), "UnknownCategory"),
                        (("category", "playback", "bogusMode", "-"), "UnknownMode"),
                        (("category", "playback", "default", "bogusOption"), "UnknownOption"),
                        (("category", "playback", "default", "mixWithOthers,defaultToSpeaker"),
                         "IncompatibleCategoryOption"),
                        (("active", 1, "bogusOption"), "UnknownOption")):
        refused = a.error(*words)
        assert refused.full_name == ERROR + name, (words, refused)
        assert "Traceback" not in refused.message
    assert (a.call("get", "Category"), a.call("get", "Options"), a.call("get", "Active")) == \
        ("soloAmbient", [], False), "a refused call changes nothing"

    # A mode the category does not take falls back to default, as Apple does.
    a.call("category", "playback", "voiceChat", "-")
    assert (a.call("get", "Category"), a.call("get", "Mode")) == ("playback", "default")

    # The same rules through another implementation, on CreateSession's hints.
    before = managed(server)
    for hints, name in (("{'Category': <'bogus'>}", "UnknownCategory"),
                        ("{'Category': <'playback'>, 'Mode': <'bogus'>}", "UnknownMode"),
                        ("{'Category': <'playback'>, 'Options': <['defaultToSpeaker']>}",
                         "IncompatibleCategoryOption")):
        done = gdbus_call(server.env, OBJECT_PATH, MANAGER_IFACE + ".CreateSession", hints)
        assert done.returncode != 0 and f"GDBus.Error:{ERROR}{name}:" in done.stderr, \
            (hints, done.stderr)
    assert managed(server) == before, "a refused CreateSession leaves no session"

    # Wrong signatures: dbus-fast's standard error, nothing dispatched.
    for path, iface, member, args in (
            (OBJECT_PATH, MANAGER_IFACE, "CreateSession", ("s", "x")),
            (OBJECT_PATH, MANAGER_IFACE, "CreateSession", ("a{ss}", "1", "Name", "x")),
            (a.session, SESSION_IFACE, "SetActive", ("s", "yes")),
            (a.session, SESSION_IFACE, "SetCategory", ("ss", "playback", "default")),
            (a.session, SESSION_IFACE, "Close", ("b", "true"))):
        done = busctl(server.env, "call", BUS_NAME, path, iface, member, *args)
        assert done.returncode != 0
        assert busctl_error(done) in ("org.freedesktop.DBus.Error.UnknownMethod",
                                      "org.freedesktop.DBus.Error.InvalidArgs"), \
            (member, args, done.stderr[-1000:])

    daemon.assert_running()
    assert daemon.status()["ServerConnected"] is True
    assert managed(server) == {a.session}
    assert (a.call("get", "Category"), a.call("get", "Active")) == ("playback", False)
    assert set(effects(daemon).values()) == {"none"}
    assert stream_state(server, game) == ([USER, USER], False)


def test_create_session_flood_is_bounded_per_client(
        server: AudioServer, daemon: DaemonProcess, apps: Apps) -> None:
    flood = apps("F")
    paths = [flood.call("create", f"f{i}") for i in range(16)]
    assert len(set(paths)) == 16
    for _ in range(3):
        refused = flood.error("create", "one-too-many")
        assert refused.full_name == ERROR + "TooManySessions", refused
        assert "16" in refused.message
    assert managed(server) == set(paths)

    # others are still served
    other = apps("O")
    other.create("O", "playback")
    assert other.call("active", 1) == "active"
    done = busctl(server.env, "call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE, "CreateSession",
                  "a{sv}", "0")
    assert done.returncode == 0, done.stderr[-1000:]

    # a closed session frees its slot
    flood.call("use", paths[0])
    flood.call("close")
    paths[0] = flood.call("create", "again")
    assert flood.error("create", "one-too-many").full_name == ERROR + "TooManySessions"

    # the flooder leaves: every one of its sessions goes, the others' stay
    mark = other.mark()
    flood.close()
    for path in paths:
        other.wait_signal("InterfacesRemoved", path, after=mark)
    assert managed(server) == {other.session}
    assert other.call("get", "Active") is True
    daemon.assert_running()


def test_calls_on_a_closed_session_are_named_errors(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path) -> None:
    a, music = playing_app(apps, server, tone, "A", "playAndRecord", "voiceChat")
    game = play(server, tone, role="game")
    wait_volume(server, game, ducked(65536, CALL))  # the session is in force

    closed = a.session
    a.call("close")
    wait_volume(server, game, 65536)  # ... and its effects are gone with it
    for words in (("active", 1), ("active", 0), ("category", "playback", "default", "-"),
                  ("close",)):
        refused = a.error(*words)
        assert refused.full_name in (ERROR + "NoSuchSession",
                                     "org.freedesktop.DBus.Error.UnknownObject"), \
            (words, refused)
    done = gdbus_call(server.env, closed, SESSION_IFACE + ".SetActive", "true", "@as []")
    assert done.returncode != 0 and (f"GDBus.Error:{ERROR}NoSuchSession:" in done.stderr
                                     or "UnknownObject" in done.stderr), done.stderr
    assert managed(server) == set()

    # The stream of the app keeps playing, now as an unclassified stream, and the app may
    # start over with a new session.
    wait_for(lambda: explain(server, key(server, music))["Category"], 10,
             "the stream to leave the closed session", until=lambda c: c == "soloAmbient")
    a.create("A2", "playAndRecord", "voiceChat")
    assert a.session != closed
    assert a.call("active", 1) == "active"
    wait_volume(server, game, ducked(65536, CALL))
    assert stream_state(server, music) == ([USER, USER], False)
    daemon.assert_running()


# -- regressions: daemon bugs this module found ---------------------------------------------------

def test_a_new_session_knows_at_once_that_other_audio_plays(
        server: AudioServer, apps: Apps) -> None:
    b = apps("B")
    b.create("B", "playAndRecord", "voiceChat")
    assert b.call("active", 1) == "active"
    a = apps("A")
    a.create("A", "playback")
    # isOtherAudioPlaying / secondaryAudioShouldBeSilencedHint hold whenever an app asks
    a.wait_property("OtherAudioPlaying", True, timeout=5)
    assert a.call("get", "SecondaryAudioShouldBeSilencedHint") is True


@pytest.mark.parametrize("how", ["notify", "close", "crash"])
def test_interruption_ends_with_resume_when_every_interrupter_ended_with_notice(
        server: AudioServer, daemon: DaemonProcess, apps: Apps, tone: Path, how: str) -> None:
    """A is interrupted by B's call and by a music app (no session); B ends with notice
    (SetActive(false, notifyOthersOnDeactivation), Close, or its app crashing: a removed
    session holds nobody), then the music stops (an app without a session whose streams
    stopped counts as notice): A should resume."""
    a, podcast = playing_app(apps, server, tone, "A", "playback")
    b = apps("B")
    b.create("B", "playAndRecord", "voiceChat")
    mark = a.mark()
    assert b.call("active", 1) == "active"
    first(a, "InterruptionBegan", after=mark)
    music = play(server, tone, role="music")  # later playback: interrupts A too
    wait_muted(server, music, True)  # ... and is interrupted by B (no MPRIS player: muted)

    if how == "notify":
        assert b.call("active", 0, "notifyOthersOnDeactivation") == "inactive"
    elif how == "close":
        b.call("close")
    else:
        b.kill()
    wait_muted(server, music, False)
    assert a.signals("InterruptionEnded", a.session) == [], "the music still interrupts A"
    wait_muted(server, podcast, True)

    end_client(server, music)
    ended = first(a, "InterruptionEnded", after=mark)
    wait_muted(server, podcast, False)
    assert ended["should_resume"] is True, ended


def test_interrupt_spoken_audio_session_is_not_primary_audio(
        server: AudioServer, apps: Apps) -> None:
    """Apple: secondaryAudioShouldBeSilencedHint is true while another app's *non-mixable*
    session is active; interruptSpokenAudioAndMixWithOthers implies mixWithOthers, as
    duckOthers does (which the daemon already treats as mixable)."""
    game = apps("G")
    game.create("G", "ambient")
    assert game.call("active", 1) == "active"
    mark = game.mark()
    nav = apps("N")
    nav.create("N", "playback", "default", "interruptSpokenAudioAndMixWithOthers")
    assert nav.call("active", 1) == "active"
    game.wait_signal("PropertiesChanged", after=mark,
                     where=lambda body: body[1].get("OtherAudioPlaying") is True)
    assert game.call("get", "SecondaryAudioShouldBeSilencedHint") is False
    assert game.signals("SilenceSecondaryAudioHint", game.session) == []
