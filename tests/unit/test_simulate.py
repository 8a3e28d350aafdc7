"""``audiopolicyctl policy simulate``: scenarios through the real classification and decision.

The scenario format's rules and its errors (``file: key.path: message``), the simulation of
implicit and explicit sessions (activation refused, interruptions), and the command line.
The README's behaviour table is checked in test_readme_table.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audiopolicyd import ctl as cli
from audiopolicyd import simulate as sim
from audiopolicyd.model import Reason

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "scenario.toml"


def write(tmp_path: Path, text: str, name: str = "scenario.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run(policies, pm, text: str) -> sim.Simulation:
    return sim.simulate(sim.parse_scenario(sim.parse_toml(text, "s.toml"), "s.toml"), policies, pm)


def problems(doc, file: str = "s.toml") -> list[str]:
    with pytest.raises(sim.ScenarioError) as caught:
        sim.parse_scenario(doc, file)
    return [str(p) for p in caught.value.problems]


# -- the example and the simulation ----------------------------------------------------------

def test_example_scenario_gives_what_its_comment_says(policies, pm) -> None:
    result = sim.simulate(sim.load_scenario(EXAMPLE), policies, pm)
    assert {k: e.summary for k, e in result.effects.items()} == {
        "music": "pause", "game": "duck 0.20", "browser": "mute+duck 0.20", "voice": "none",
        "microphone": "none"}
    assert [(e["Event"], e["Target"], e["Result"]) for e in result.events] == [
        ("create", "call", "created"), ("start", "music", "started"),
        ("start", "game", "started"), ("activate", "call", "active")]
    music = next(s for s in result.streams if s["Target"] == "music")
    call_policy = policies.policies["playAndRecord"].file
    assert music["Reasons"] == [f"interrupt by playAndRecord session session:s1 "
                                f"({call_policy}: activation.others)"]
    assert music["Category"] == "playback" and music["ChosenBy"].endswith("classify[1]")
    call = next(s for s in result.sessions if s["Target"] == "call")
    assert (call["Session"], call["State"], call["Streams"]) == (
        "session:s1", "active", ["voice", "microphone"])


def test_streams_are_explained_in_explains_words(policies, pm) -> None:
    result = run(policies, pm, """
        schema = 1
        activate = ["game", "call"]
        [streams.game]
        properties = { "media.role" = "game" }
        [streams.call]
        properties = { "media.role" = "phone" }
        """)
    game = result.streams[0]
    file = policies.policies["playAndRecord"].file
    reason = Reason("duck", "implicit:stream:sink-input:2:playAndRecord", "playAndRecord", file,
                    "activation.mixable_others")
    assert game["Reasons"] == [str(reason)]
    assert game["Effect"] == "duck 0.20"
    # the keys of Manager.Explain for a stream (docs/dbus-api.md)
    assert list(game) == ["Target", "Kind", "Application", "Category", "ChosenBy", "Session",
                          "Policy", "Effect", "Reasons"]


def test_a_stream_not_started_is_acted_on_and_acts_on_nobody(policies, pm) -> None:
    result = run(policies, pm, """
        schema = 1
        activate = ["music"]
        [streams.music]
        properties = { "media.role" = "music" }
        [streams.call]
        properties = { "media.role" = "phone" }
        """)
    assert result.effects["music"].summary == "none"
    assert [s["State"] for s in result.sessions if s["Category"] == "playAndRecord"] == [
        "inactive"]


def test_later_activation_wins_among_equals(policies, pm) -> None:
    text = """
        schema = 1
        activate = [{order}]
        [streams.a]
        properties = {{ "media.role" = "music", "application.name" = "a" }}
        [streams.b]
        properties = {{ "media.role" = "music", "application.name" = "b" }}
        """
    first = run(policies, pm, text.format(order='"a", "b"')).effects
    second = run(policies, pm, text.format(order='"b", "a"')).effects
    assert (first["a"].summary, first["b"].summary) == ("mute", "none")
    assert (second["a"].summary, second["b"].summary) == ("none", "mute")


def test_explicit_session_refused_below_an_active_call(policies, pm) -> None:
    result = run(policies, pm, """
        schema = 1
        activate = ["call", "player", "notes"]
        [streams.call]
        properties = { "media.role" = "phone" }
        [streams.song]
        properties = { "application.name" = "player" }
        [sessions.player]
        category = "playback"
        streams = ["song"]
        [sessions.notes]
        category = "playback"
        options = ["mixWithOthers"]
        """)
    assert [(e["Target"], e["Result"], e.get("Error")) for e in result.events[2:]] == [
        ("call", "started", None), ("player", "refused", "InsufficientPriority"),
        ("notes", "active", None)]  # mixable: the call ducks it, so it may activate
    player = next(s for s in result.sessions if s["Target"] == "player")
    assert player["State"] == "inactive"
    assert result.effects["song"].summary == "mute"  # the call interrupts it, active or not


def test_mixable_session_refused_while_a_recording_silences_it(policies, pm) -> None:
    result = run(policies, pm, """
        schema = 1
        activate = ["take", "chime"]
        [streams.take]
        kind = "record"
        properties = { "application.name" = "recorder" }
        [sessions.chime]
        category = "ambient"
        """)
    refused = result.events[-1]
    assert (refused["Result"], refused["Error"]) == ("refused", "CannotInterruptOthers")
    assert refused["Message"] == (
        "ambient cannot become active while record session "
        "implicit:name:recorder:record of higher priority is active; pass delayIfBusy to wait")


def test_explicit_session_interrupted_by_a_later_call(policies, pm) -> None:
    result = run(policies, pm, """
        schema = 1
        activate = ["player", "call"]
        [streams.call]
        properties = { "media.role" = "phone" }
        [streams.song]
        properties = { "application.name" = "player", "application.id" = "org.example.Player" }
        player = true
        [sessions.player]
        category = "playback"
        app = "org.example.Player"
        streams = ["song"]
        """)
    player = next(s for s in result.sessions if s["Target"] == "player")
    assert (player["State"], player["Active"]) == ("interrupted", False)
    assert player["InterruptedBy"] == ["implicit:stream:sink-input:1:playAndRecord"]
    assert result.effects["song"].summary == "pause"


def test_a_refused_session_leaves_its_streams_to_the_rules(policies, pm) -> None:
    result = run(policies, pm, """
        schema = 1
        activate = ["s"]
        [streams.tune]
        properties = { "media.role" = "game" }
        [sessions.s]
        category = "ambient"
        options = ["duckOthers"]
        streams = ["tune"]
        """)
    assert [(e["Event"], e["Result"], e.get("Error")) for e in result.events] == [
        ("create", "refused", "IncompatibleCategoryOption"),
        ("activate", "refused", "NoSuchSession")]
    tune = result.streams[0]
    assert (tune["Category"], tune["ChosenBy"]) == (
        "ambient", f"{policies.policies['ambient'].file}: classify[0]")


def test_monitor_and_module_streams(policies, pm) -> None:
    result = run(policies, pm, """
        schema = 1
        activate = ["meter", "loop"]
        [streams.meter]
        kind = "monitor"
        [streams.loop]
        module = "module-loopback"
        """)
    meter, loop = result.streams
    assert (meter["Kind"], meter["Category"]) == ("source-output", "audioProcessing")
    assert (loop["Category"], loop["Session"]) == ("", "")
    assert "server module" in loop["ChosenBy"]
    assert "infrastructure" in sim.render(result)


def test_render_lists_steps_streams_and_sessions(policies, pm) -> None:
    text = sim.render(sim.simulate(sim.load_scenario(EXAMPLE), policies, pm))
    lines = text.splitlines()
    assert lines[:5] == ["steps:", "  1. create call: created", "  2. start music: started",
                         "  3. start game: started", "  4. activate call: active"]
    assert "  music (sink-input, mpv): playback, effect pause" in lines
    assert "  call: playAndRecord (voiceChat), active; streams voice, microphone" in lines


# -- the format's errors ---------------------------------------------------------------------

def test_schema_version_is_checked_first() -> None:
    assert problems({"schema": 2, "streams": 3}) == [
        "s.toml: schema: must be 1 (got 2); the rest of the file was not read"]
    assert problems({"streams": {}}) == [
        "s.toml: schema: must be 1 (got 'missing'); the rest of the file was not read"]
    assert problems([1]) == ["s.toml: (document): [1] is not a table"]


def test_every_schema_problem_in_one_pass() -> None:
    found = problems({"schema": 1, "colour": 1, "streams": {
        "a": {"kind": "sideways", "properties": {"media.role": 3}, "volume": 1}},
        "sessions": {"s": {"mode": "karaoke"}}})
    assert found == [
        "s.toml: colour: unknown key (allowed: activate, description, schema, sessions, "
        "streams)",
        "s.toml: sessions.s.category: required key is missing",
        "s.toml: sessions.s.mode: 'karaoke' is not one of " + repr(list(sim.MODES)),
        "s.toml: streams.a.kind: 'sideways' is not one of ['playback', 'record', 'monitor']",
        "s.toml: streams.a.properties.\"media.role\": 3 is not of type 'string'",
        "s.toml: streams.a.volume: unknown key (allowed: kind, module, player, properties)",
    ]


def test_names_and_references_are_checked() -> None:
    found = problems({"schema": 1, "activate": ["a", "ghost"],
                      "streams": {"a": {}, "b c": {}, "m": {"module": "module-loopback"},
                                  "p": {"player": True, "properties": {"media.role": "x"}},
                                  "dup": {}},
                      "sessions": {"s": {"category": "playback", "streams": ["a", "nope", "m"]},
                                   "t": {"category": "playback", "streams": ["a"]},
                                   "dup": {"category": "ambient"}}})
    assert found == [
        "s.toml: activate[1]: no stream or session 'ghost'",
        "s.toml: sessions.dup: a stream has that name too",
        "s.toml: sessions.s.streams[1]: no stream 'nope'",
        "s.toml: sessions.s.streams[2]: 'm' is a server module's stream, no app's",
        "s.toml: sessions.t.streams[0]: 'a' is already a stream of session 's'",
        "s.toml: streams.\"b c\": a name is 1 to 64 letters, digits, '_', '.', ':' or '-', "
        "starting with a letter or digit",
        "s.toml: streams.p.player: the daemon finds a stream's player by one of these "
        "properties; set one: application.process.id, application.id, "
        "pipewire.access.portal.app_id, application.process.binary",
    ]


def test_sizes_are_bounded() -> None:
    many = {f"s{i}": {} for i in range(sim.MAX_STREAMS + 1)}
    assert any("streams: " in p and "too many properties" in p
               for p in problems({"schema": 1, "streams": many}))
    props = {f"k{i}": "v" for i in range(sim.MAX_PROPERTIES + 1)}
    assert any(p.startswith("s.toml: streams.a.properties: ")
               for p in problems({"schema": 1, "streams": {"a": {"properties": props}}}))
    long_value = {"media.role": "x" * (sim.MAX_VALUE_CHARS + 1)}
    assert any(p.startswith('s.toml: streams.a.properties."media.role": ') and "is too long" in p
               for p in problems({"schema": 1, "streams": {"a": {"properties": long_value}}}))
    assert problems({"schema": 1, "streams": {"a": {"properties": {"": "v"}}}}) == [
        "s.toml: streams.a.properties: property name '' is not 1 to 256 characters"]


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    def load(path: Path) -> list[str]:
        with pytest.raises(sim.ScenarioError) as caught:
            sim.load_scenario(path)
        return [str(p) for p in caught.value.problems]

    assert load(tmp_path / "none.toml") == [f"{tmp_path}/none.toml: (file): No such file or "
                                            "directory"]
    assert load(tmp_path) == [f"{tmp_path}: (file): not a regular file"]
    big = write(tmp_path, "#" * (sim.MAX_FILE_BYTES + 1), "big.toml")
    assert load(big) == [f"{big}: (file): {sim.MAX_FILE_BYTES + 1} bytes is larger than "
                         f"{sim.MAX_FILE_BYTES}"]
    (bad_toml,) = load(write(tmp_path, "schema = = 1", "bad.toml"))
    assert bad_toml.startswith(f"{tmp_path}/bad.toml: (toml): ")
    (bad_json,) = load(write(tmp_path, '{"schema": 1,', "bad.json"))
    assert bad_json.startswith(f"{tmp_path}/bad.json: (json): ")
    deep = write(tmp_path, "[" * 100000 + "]" * 100000, "deep.json")
    (too_deep,) = load(deep)
    assert too_deep.startswith(f"{deep}: (json): ")
    (nan,) = load(write(tmp_path, '{"schema": 1, "streams": {"a": {"player": NaN}}}', "n.json"))
    assert nan == f"{tmp_path}/n.json: streams.a.player: nan is not a finite number"


def test_json_scenario_simulates_as_toml(tmp_path: Path, policies, pm) -> None:
    doc = {"schema": 1, "activate": ["m", "c"],
           "streams": {"m": {"properties": {"media.role": "music"}},
                       "c": {"properties": {"media.role": "phone"}}}}
    result = sim.simulate(sim.load_scenario(write(tmp_path, json.dumps(doc), "s.json")),
                          policies, pm)
    assert result.effects["m"].summary == "mute"


# -- the command line --------------------------------------------------------------------------

@pytest.fixture
def no_admin_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own policies out of the way: the shipped ones (and /etc's, if any)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.mark.usefixtures("no_admin_policies")
def test_cli_prints_the_simulation(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["policy", "simulate", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "  music (sink-input, mpv): playback, effect pause" in out.splitlines()
    assert cli.main(["policy", "simulate", "--json", str(EXAMPLE)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == {"events", "streams", "sessions"}
    assert [s["Effect"] for s in answer["streams"]] == [
        "pause", "duck 0.20", "mute+duck 0.20", "none", "none"]


@pytest.mark.usefixtures("no_admin_policies")
def test_cli_policy_dir_takes_precedence(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    shipped = (ROOT / "policies" / "playAndRecord.toml").read_text()
    admin = tmp_path / "admin"
    admin.mkdir()
    (admin / "playAndRecord.toml").write_text(
        shipped + "\n[overrides.playback]\nothers = \"duck\"\nduck_level = 0.3\n")
    assert cli.main(["policy", "simulate", "--json", "--policy-dir", str(admin),
                     str(EXAMPLE)]) == 0
    music = json.loads(capsys.readouterr().out)["streams"][0]
    assert music["Effect"] == "duck 0.30"
    assert music["Reasons"] == [f"duck by playAndRecord session session:s1 "
                                f"({admin}/playAndRecord.toml: overrides.playback)"]


@pytest.mark.usefixtures("no_admin_policies")
def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin = tmp_path / "admin"
    admin.mkdir()
    (admin / "ambient.toml").write_text("schema = 1\ncategory = \"ambient\"\n")
    assert cli.main(["policy", "simulate", "--policy-dir", str(admin), str(EXAMPLE)]) == 1
    err = capsys.readouterr().err
    assert f"{admin}/ambient.toml: priority: required key is missing" in err.splitlines()
    bad = write(tmp_path, "schema = 1\n[streams.a]\nkind = \"up\"\n")
    assert cli.main(["policy", "simulate", str(bad)]) == 2
    assert capsys.readouterr().err == (f"{bad}: streams.a.kind: 'up' is not one of "
                                       "['playback', 'record', 'monitor']\n")


def test_docs_name_every_key_of_the_format() -> None:
    """docs/policies.md's scenario block shows every key the schema takes, and cites the
    example file."""
    doc = (ROOT / "docs" / "policies.md").read_text()
    section = doc[doc.index("## Simulating a scenario"):]
    section = section[:section.index("\n## ", 1)]
    block = section[section.index("```toml\n") + 8:]
    shown = sim.parse_toml(block[:block.index("```")], "docs")
    props = sim.SCHEMA["properties"]
    assert set(shown) == set(props)
    (stream,) = shown["streams"].values()
    assert set(stream) == set(props["streams"]["additionalProperties"]["properties"])
    (session,) = shown["sessions"].values()
    assert set(session) == set(props["sessions"]["additionalProperties"]["properties"])
    assert "examples/scenario.toml" in section
    assert EXAMPLE.is_file()


def test_a_name_cannot_forge_a_line() -> None:
    (found,) = problems({"schema": 1, "streams": {"a\nb: forged": {}}})
    assert "\n" not in found and found.startswith('s.toml: streams."a\\nb: forged": ')
