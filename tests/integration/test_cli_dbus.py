"""The read side and the controls, through the real clients: audiopolicyctl, busctl, dbus-send.

What the daemon reports (``streams --json``, ``monitor --json``, ``status --json``) is checked
against the servers' real state; policy reloads (file change, SIGHUP, a bad file keeping the
last good set) are checked by what they do to real streams.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
from pathlib import Path

import pytest

from audiopolicyd.policystore import shipped_dir
from tests.support.clients import play, watch
from tests.support.daemon import (
    AUDIOPOLICYCTL, BUS_NAME, MANAGER_IFACE, OBJECT_PATH, DaemonProcess, run_ctl,
)
from tests.support.processes import child_env, wait_for
from tests.support.servers import AudioServer
from tests.support.streams import (
    ducked, end_client, raw_volumes, set_user_volume, sink_inputs, wait_stream, wait_volume,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

USER = 40000
CALL = 0.2


def _policy(duck_level: str = "0.2") -> str:
    """The shipped playAndRecord.toml with another ``duck_level`` (same length for 0.x)."""
    text = (shipped_dir() / "playAndRecord.toml").read_text()
    assert "duck_level = 0.2\n" in text
    return text.replace("duck_level = 0.2\n", f"duck_level = {duck_level}\n")


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """No audio server, no bus: ``policy check`` must not need them."""
    return child_env({"XDG_CONFIG_HOME": str(tmp_path / "config"),
                      "DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus",
                      "PULSE_SERVER": f"unix:{tmp_path}/no-server"})


# -- streams ----------------------------------------------------------------------------------

def test_streams_json_matches_the_server(server: AudioServer, daemon: DaemonProcess,
                                         tone: Path) -> None:
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)
    browser = play(server, tone)  # no role: soloAmbient
    set_user_volume(server, browser, USER)
    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))
    wait_volume(server, browser, ducked(USER, CALL))
    indexes = {name: wait_stream(server, proc).index
               for name, proc in (("game", game), ("browser", browser), ("phone", phone))}

    listed = {s["Key"]: s for s in daemon.streams()}
    real = {f"sink-input:{s.index}": s for s in sink_inputs(server)}
    assert set(listed) == set(real)
    for key, info in real.items():
        view = listed[key]
        assert view["Kind"] == "sink-input" and view["Index"] == info.index
        assert view["Volume"] == raw_volumes(info), key
        assert view["Muted"] is bool(info.mute), key
        assert view["Corked"] is bool(info.corked), key
        assert view["Role"] == info.proplist.get("media.role", "")

    game_view = listed[f"sink-input:{indexes['game']}"]
    assert (game_view["Category"], game_view["Effect"], game_view["Gain"]) == \
        ("ambient", "duck 0.20", pytest.approx(CALL))
    (reason,) = game_view["Reasons"]
    assert reason.startswith("duck by playAndRecord session ") and \
        "playAndRecord.toml: activation.mixable_others" in reason
    browser_view = listed[f"sink-input:{indexes['browser']}"]
    assert (browser_view["Category"], browser_view["Effect"]) == ("soloAmbient", "duck 0.20")
    assert "playAndRecord.toml: overrides.soloAmbient" in browser_view["Reasons"][0]
    phone_view = listed[f"sink-input:{indexes['phone']}"]
    assert (phone_view["Category"], phone_view["Effect"], phone_view["Reasons"]) == \
        ("playAndRecord", "none", [])
    assert game_view["Session"] != phone_view["Session"]


# -- policy check (offline) -------------------------------------------------------------------

def test_policy_check_exit_codes(tmp_path: Path) -> None:
    env = _offline_env(tmp_path)
    valid = run_ctl(env, "policy", "check")
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.strip() == "valid: 7 policy file(s)"

    bad = tmp_path / "playAndRecord.toml"
    bad.write_text(_policy("2.0"))
    checked = run_ctl(env, "policy", "check", str(bad))
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert re.search(rf"^{re.escape(str(bad))}: activation\.duck_level: \S.*$",
                     checked.stdout, re.M), checked.stdout

    as_json = run_ctl(env, "policy", "check", "--json", str(bad))
    assert as_json.returncode == 1


# -- reloads ------------------------------------------------------------------------------------

def test_bad_policy_keeps_last_good_set(server: AudioServer, daemon: DaemonProcess,
                                        tone: Path) -> None:
    bad = daemon.policy_dir / "playAndRecord.toml"
    bad.write_text(_policy("2.0"))
    status = wait_for(daemon.status, 10, "PolicyProblems to name the bad file",
                      until=lambda s: any(p.startswith(f"{bad}: activation.duck_level: ")
                                          for p in s["PolicyProblems"]))
    assert str(bad) not in status["PolicyFiles"]
    refused = daemon.ctl("reload")
    assert refused.returncode == 1 and f"{bad}: activation.duck_level:" in refused.stdout

    game = play(server, tone, role="game")  # behaviour unchanged: the shipped 0.2 duck
    set_user_volume(server, game, USER)
    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))
    end_client(server, phone)
    wait_volume(server, game, USER)

    bad.unlink()
    wait_for(daemon.status, 10, "the problems to clear once the file is gone",
             until=lambda s: s["PolicyProblems"] == [])
    daemon.assert_running()


def test_override_takes_effect_on_file_change(server: AudioServer, daemon: DaemonProcess,
                                              tone: Path) -> None:
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)
    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))

    override = daemon.policy_dir / "playAndRecord.toml"
    override.write_text(_policy("0.5"))
    wait_volume(server, game, ducked(USER, 0.5))  # the duck in force follows the new level
    status = daemon.status()
    assert str(override) in status["PolicyFiles"] and status["PolicyProblems"] == []

    end_client(server, phone)
    wait_volume(server, game, USER)


def test_override_takes_effect_on_sighup(server: AudioServer, daemon: DaemonProcess,
                                         tone: Path) -> None:
    override = daemon.policy_dir / "playAndRecord.toml"
    override.write_text(_policy("0.2"))
    wait_for(daemon.status, 10, "the override (same content) to be in force",
             until=lambda s: str(override) in s["PolicyFiles"])
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)
    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))

    # Rewrite in place and keep the file open: no close-after-write yet, so the file watcher
    # does not fire; only SIGHUP can make the daemon read the new level.
    with open(override, "r+") as f:
        f.write(_policy("0.5"))
        f.flush()
        daemon.signal(signal.SIGHUP)
        wait_volume(server, game, ducked(USER, 0.5))
    end_client(server, phone)
    wait_volume(server, game, USER)


# -- monitor ------------------------------------------------------------------------------------

def _events(lines: list[str]) -> list[tuple[str, object]]:
    """``(event, data)`` of every JSON line ``monitor --json`` printed."""
    out = []
    for line in lines:
        event = json.loads(line)
        out.append((event["event"], event["data"]))
    return out


def test_monitor_json_follows_streams_and_effects(server: AudioServer, daemon: DaemonProcess,
                                                  tone: Path) -> None:
    game = play(server, tone, role="game")
    game_key = f"sink-input:{wait_stream(server, game).index}"
    monitor, out = watch(server, [*AUDIOPOLICYCTL, "monitor", "--json"], env=daemon.env)

    def seen(kind: str, pred=lambda data: True) -> list:
        return [d for e, d in _events(out.lines) if e == kind and pred(d)]

    # The listing of existing streams comes after the subscription: from here nothing is missed.
    wait_for(lambda: seen("StreamAdded", lambda d: d["Key"] == game_key), 10,
             "the monitor to list the game stream")

    phone = play(server, tone, role="phone")
    phone_key = f"sink-input:{wait_stream(server, phone).index}"
    wait_for(lambda: seen("StreamAdded", lambda d: d["Key"] == phone_key), 10,
             "StreamAdded for the phone stream")
    added = seen("StreamAdded", lambda d: d["Key"] == phone_key)[-1]
    assert added["Category"] == "playAndRecord" and added["Role"] == "phone"
    wait_for(lambda: seen("EffectChanged", lambda d: d["Key"] == game_key
                          and d["Effect"] == "duck 0.20"), 10, "EffectChanged: game ducked")

    end_client(server, phone)
    wait_for(lambda: seen("StreamRemoved", lambda d: d == phone_key), 10,
             "StreamRemoved for the phone stream")
    wait_for(lambda: seen("EffectChanged", lambda d: d["Key"] == game_key
                          and d["Effect"] == "none"), 10, "EffectChanged: game restored")

    assert daemon.stop() == 0
    wait_for(lambda: [e for e, _ in _events(out.lines)], 10, "DaemonLeft",
             until=lambda events: "DaemonLeft" in events)
    assert monitor.wait(10) == 1


# -- D-Bus with wrong arguments ------------------------------------------------------------------

def test_wrong_dbus_call_gets_named_error_and_daemon_keeps_running(
        server: AudioServer, daemon: DaemonProcess, tone: Path) -> None:
    address = server.bus.address
    busctl = subprocess.run(
        ["busctl", f"--address={address}", "call", BUS_NAME, OBJECT_PATH, MANAGER_IFACE,
         "GetStreams", "s", "x"], capture_output=True, text=True, timeout=10)
    assert busctl.returncode != 0
    assert "GetStreams" in busctl.stderr and "signature" in busctl.stderr, busctl.stderr

    for call, args in ((".GetStreams", ["string:x"]), (".GetStatus", ["int32:7", "string:y"]),
                       (".NoSuchMethod", [])):
        sent = subprocess.run(
            ["dbus-send", f"--bus={address}", "--print-reply", f"--dest={BUS_NAME}",
             OBJECT_PATH, MANAGER_IFACE + call, *args],
            capture_output=True, text=True, timeout=10)
        assert sent.returncode != 0
        assert re.match(r"Error org\.freedesktop\.DBus\.Error\.(UnknownMethod|InvalidArgs): ",
                        sent.stderr), sent.stderr

    daemon.assert_running()
    game = play(server, tone, role="game")  # and still enforcing
    set_user_volume(server, game, USER)
    play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))
    assert daemon.status()["ServerConnected"] is True
