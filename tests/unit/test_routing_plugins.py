"""The routing hooks and built-in plugins (pause_on_route_disconnect, echo_cancel_for_chat,
call_route through the decision), what the decision does with a plugin's bad answers, and a
third-party plugin replacing a built-in: registered here, and pip-installed with an entry
point."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audiopolicyd import hookimpl
from audiopolicyd.model import Device, Session
from audiopolicyd.pluginmanager import (
    make_plugin_manager, plugin_settings_schemas, replace_builtins,
)
from audiopolicyd.policy import parse_policy, parse_toml
from audiopolicyd.policystore import shipped_dir
from audiopolicyd.route import (
    PortChoice, RouteChangeReason, RoutedStream, RouteReaction,
)
from audiopolicyd.routing.choose import request, route_change
from audiopolicyd.routing.decide import decide_route, propose_processing, react_to_route_change

PACKAGE = Path(__file__).resolve().parents[1] / "data" / "replacing_plugin"

SPEAKER = Device("sink", 0, "builtin", "Speaker", form_factor="internal", id="sink:0")
MIC = Device("source", 0, "builtin-mic", "Mic", form_factor="internal", id="source:0")
PHONES = Device("sink", 5, "wired", "Headphones", form_factor="headphone", id="sink:5")
USB = Device("sink", 2, "usb", "USB headset", bus="usb", id="sink:2")


def session(category="playAndRecord", mode="voiceChat"):
    return Session("s1", "app:x", category, mode, active=True, explicit=True)


def unplugged(pm, policies, category="playback", streams=()):
    before, after = {d.id: d for d in (SPEAKER, PHONES)}, {SPEAKER.id: SPEAKER}
    policy = policies.policies[category]
    old = decide_route(pm, request(before.values(), category, default_output="sink:5"), policy)
    new = decide_route(pm, request(after.values(), category, default_output="sink:0"), policy)
    change = route_change(category, old, new, before, after)
    return change, react_to_route_change(pm, change, streams, policy)


STREAMS = (RoutedStream("sink-input:1", "sink:5", playing=True),
           RoutedStream("sink-input:2", "sink:5", playing=False),
           RoutedStream("sink-input:3", "sink:0", playing=True))


def test_music_on_headphones_that_go_is_muted_and_paused(pm, policies):
    change, reactions = unplugged(pm, policies, streams=STREAMS)
    assert change.reason is RouteChangeReason.oldDeviceUnavailable
    assert reactions == (RouteReaction("sink-input:1", mute=True, pause=True,
                                       reason="routeDisconnected: its device sink:5 went "
                                              "(oldDeviceUnavailable)"),)


def test_interrupt_on_disconnect_false_and_categories_without_the_plugin_do_nothing(
        pm, policies):
    assert unplugged(pm, policies, "soloAmbient", STREAMS)[1] == ()
    playback = policies.policies["playback"]
    off = dataclasses.replace(playback, route=dataclasses.replace(
        playback.route, interrupt_on_disconnect=False))
    change, _ = unplugged(pm, policies, streams=STREAMS)
    assert react_to_route_change(pm, change, STREAMS, off) == ()


@pytest.mark.parametrize("mode,expected", [("voiceChat", ("echo-cancel",)),
                                           ("videoChat", ("echo-cancel",)),
                                           ("gameChat", ("echo-cancel",)),
                                           ("measurement", ()), ("default", ())])
def test_echo_cancel_for_chat_modes_of_a_call_and_never_for_measurement(pm, policies, mode,
                                                                         expected):
    policy = policies.policies["playAndRecord"]
    assert propose_processing(pm, session(mode=mode), policy) == expected
    assert propose_processing(pm, session("playback", mode), policies.policies["playback"]) == ()


class Rogue:
    """A plugin enabled by its table, answering nonsense."""

    def __init__(self, choice=None, reactions=None, processing=None):
        self.choice, self.reactions, self.processing = choice, reactions, processing

    @hookimpl
    def register_policy_settings(self):
        return {"rogue": {"type": "object"}}

    @hookimpl(tryfirst=True)
    def choose_route(self, direction):
        if isinstance(self.choice, Exception):
            raise self.choice
        return self.choice

    @hookimpl
    def react_to_route_change(self):
        return self.reactions

    @hookimpl(tryfirst=True)
    def propose_processing(self):
        return self.processing


def rogue_policy(pm, category="playAndRecord"):
    doc = parse_toml((shipped_dir() / f"{category}.toml").read_bytes(), f"{category}.toml")
    doc["plugins"]["rogue"] = {}
    return parse_policy(doc, f"{category}.toml", plugin_settings_schemas(pm))


@pytest.mark.parametrize("answer", [
    PortChoice(None, "nothing"),  # a port None is an answer: nothing suitable
    "usbAudio",
    PortChoice(dataclasses.replace(request([USB], "x").outputs[0], device="sink:99"), "gone"),
    RuntimeError("boom"),
])
def test_a_plugin_answering_a_port_not_present_or_raising_leaves_it_to_the_default_rule(
        answer, caplog):
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Rogue(choice=answer), name="rogue")
    policy = rogue_policy(pm)
    got = decide_route(pm, request([SPEAKER, MIC, USB], "playAndRecord",
                                   default_output="sink:0"), policy)
    if isinstance(answer, PortChoice) and answer.port is None:
        assert got.output == answer
        return
    assert got.output.device == "sink:2" and got.output.reason.startswith("usbAudio: ")
    assert "rogue" in caplog.text or "not a port present" in caplog.text


def test_bad_reactions_and_unknown_processing_are_dropped_with_a_warning(caplog):
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(Rogue(reactions=[RouteReaction("sink-input:77", mute=True), "mute all",
                                 RouteReaction("sink-input:1", mute=True)],
                      processing=("echo-cancel", "reverb")), name="rogue")
    policy = rogue_policy(pm)
    change = route_change("playAndRecord", *(
        decide_route(pm, request(d, "playAndRecord", default_output="sink:0"), policy)
        for d in ([SPEAKER, USB], [SPEAKER])), {"sink:0": SPEAKER, "sink:2": USB},
        {"sink:0": SPEAKER})
    streams = (RoutedStream("sink-input:1", "sink:2"),)
    assert react_to_route_change(pm, change, streams, policy) == (
        RouteReaction("sink-input:1", mute=True),)
    assert propose_processing(pm, session(), policy) == ("echo-cancel",)
    assert "'reverb'" in caplog.text and "'mute all'" in caplog.text


# -- a third-party plugin replacing a built-in ------------------------------------------------

class SpeakerCalls:
    """Declares call_route's table: replaces the built-in."""

    @hookimpl
    def register_policy_settings(self):
        return {"call_route": {"type": "object", "additionalProperties": False}}

    @hookimpl
    def choose_route(self, direction, request):
        return PortChoice(request.outputs[0], "replaced") if direction == "output" else None


def test_a_plugin_declaring_a_builtins_table_replaces_it(caplog, policies):
    caplog.set_level(logging.INFO, "audiopolicyd.pluginmanager")
    pm = make_plugin_manager(load_entry_points=False)
    pm.register(SpeakerCalls(), name="speaker_calls")
    assert replace_builtins(pm, ["speaker_calls"]) == ["call_route"]
    assert pm.get_plugin("call_route") is None
    assert "plugin 'speaker_calls' replaces the built-in plugin 'call_route' " \
           "([plugins.call_route])" in caplog.text
    assert plugin_settings_schemas(pm)["call_route"]  # one table, no "declared twice"
    got = decide_route(pm, request([SPEAKER, USB], "playAndRecord"),
                       policies.policies["playAndRecord"])
    assert got.output.reason == "replaced"
    assert replace_builtins(pm, ["nobody"]) == []


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """The package in tests/data/replacing_plugin, pip-installed into a temporary directory
    put on sys.path (the venv stays as it was)."""
    source, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(PACKAGE, source)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--disable-pip-version-check",
                    "--target", str(target), str(source)], check=True, capture_output=True,
                   timeout=120)
    monkeypatch.syspath_prepend(str(target))
    yield target
    sys.modules.pop("speaker_calls", None)


def test_an_installed_entry_point_package_replaces_a_builtin(installed_plugin, caplog):
    caplog.set_level(logging.INFO, "audiopolicyd.pluginmanager")
    pm = make_plugin_manager()
    assert pm.get_plugin("call_route") is None
    assert pm.get_plugin("speaker_calls").__file__.startswith(str(installed_plugin))
    assert "plugin 'speaker_calls' replaces the built-in plugin 'call_route'" in caplog.text
    shipped = parse_toml((shipped_dir() / "playAndRecord.toml").read_bytes(), "p.toml")
    policy = parse_policy(shipped, "p.toml", plugin_settings_schemas(pm))
    got = decide_route(pm, request([USB, SPEAKER], "playAndRecord"), policy)
    assert got.output.device == "sink:0"  # the built-in would have taken the USB headset
    assert got.output.reason == "builtInSpeaker: speaker_calls sends every call here"
