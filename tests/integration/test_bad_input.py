"""Bad input is reported or ignored; the daemon keeps running and keeps enforcing.

Streams with absurd properties (10 KB names, no role, non-ASCII names, values that are not
UTF-8 at all) are listed and handled like any other; a 2 MB policy file, binary garbage, a
``duck_level = nan`` or TOML nested 500 deep is reported as a policy problem while the last good
set stays in force.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.clients import play
from tests.support.daemon import DaemonProcess, run_ctl
from tests.support.processes import wait_for
from tests.support.servers import AudioServer
from tests.support.streams import ducked, end_client, set_user_volume, wait_stream, wait_volume

from audiopolicyd.policystore import shipped_dir

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

LONG = 10 * 1024
INTL = "Ñandú 音楽 🎵 — naïve ☃"


def test_streams_with_absurd_properties_are_listed_and_handled(server: AudioServer,
                                                               daemon: DaemonProcess,
                                                               tone: Path) -> None:
    huge = play(server, tone, props={"application.name": "A" * LONG, "media.name": "M" * LONG})
    intl = play(server, tone, props={"application.name": INTL, "media.name": INTL})
    # Not UTF-8: a binary media.role and icon name (libpulse's hex: syntax of PULSE_PROP).
    binary = play(server, tone, env={
        "PULSE_PROP": "media.role=hex:c328ff00 application.icon_name=hex:fffe80"})
    streams = {name: wait_stream(server, proc)
               for name, proc in (("huge", huge), ("intl", intl), ("binary", binary))}
    assert len(streams["huge"].proplist["application.name"]) == LONG  # the server has it all

    views = wait_for(lambda: {v["Key"]: v for v in daemon.streams()}, 10,
                     "the daemon to list all three streams",
                     until=lambda vs: all(f"sink-input:{s.index}" in vs
                                          for s in streams.values()))
    huge_view = views[f"sink-input:{streams['huge'].index}"]
    assert huge_view["Application"].startswith("A" * 1000)
    assert len(huge_view["Application"]) <= 1024, "a 10 KB name is cut, not carried around"
    assert views[f"sink-input:{streams['intl'].index}"]["Application"] == INTL
    binary_view = views[f"sink-input:{streams['binary'].index}"]
    assert isinstance(binary_view["Role"], str)
    for name, info in streams.items():
        assert views[f"sink-input:{info.index}"]["Category"] == "soloAmbient", name

    # Handled like any unclassified stream: a call ducks all three and gives them back.
    phone = play(server, tone, role="phone")
    for proc in (huge, intl, binary):
        wait_volume(server, proc, ducked(65536, 0.2))
    end_client(server, phone)
    for proc in (huge, intl, binary):
        wait_volume(server, proc, 65536)
    for proc in (huge, intl, binary):
        end_client(server, proc)
    wait_for(daemon.streams, 10, "the daemon to list no stream", until=lambda s: s == [])
    assert daemon.status()["ServerConnected"] is True
    daemon.assert_running()


def test_huge_and_binary_policy_files_are_reported_not_fatal(server: AudioServer,
                                                             daemon: DaemonProcess,
                                                             tone: Path) -> None:
    huge = daemon.policy_dir / "huge.toml"
    huge.write_text("# padding\n" * (2 * 1024 * 1024 // 10))
    garbage = daemon.policy_dir / "garbage.toml"
    garbage.write_bytes(bytes(range(256)) * 64)

    def problems() -> list[str]:
        return daemon.status()["PolicyProblems"]
    found = wait_for(problems, 10, "both files reported",
                     until=lambda ps: any(p.startswith(f"{huge}: (file): ") for p in ps)
                     and any(p.startswith(f"{garbage}: (toml): ") for p in ps))
    assert any("larger than" in p for p in found), found
    daemon.assert_running()

    game = play(server, tone, role="game")  # the last good set is still in force
    set_user_volume(server, game, 40000)
    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(40000, 0.2))
    end_client(server, phone)
    wait_volume(server, game, 40000)

    checked = run_ctl(daemon.env, "policy", "check", str(garbage))
    assert checked.returncode == 1 and f"{garbage}: (toml): " in checked.stdout

    huge.unlink()
    garbage.unlink()
    wait_for(problems, 10, "the problems to clear", until=lambda ps: ps == [])
    daemon.assert_running()


def test_nan_and_deep_toml_dropped_in_live_keep_the_last_good_set(server: AudioServer,
                                                                  daemon: DaemonProcess,
                                                                  tone: Path) -> None:
    # Before: duck_level = nan was loaded and every reconcile then raised (no call ducked
    # anything); a TOML file nested 500 deep killed the policy watcher (no problem reported,
    # later reloads never happened).
    nan = daemon.policy_dir / "playAndRecord.toml"
    nan.write_text((shipped_dir() / "playAndRecord.toml").read_text()
                   .replace("duck_level = 0.2", "duck_level = nan"))
    deep = daemon.policy_dir / "ambient.toml"
    deep.write_text((shipped_dir() / "ambient.toml").read_text()
                    + "\nx = " + "[" * 500 + "]" * 500 + "\n")

    def problems() -> list[str]:
        return daemon.status()["PolicyProblems"]
    found = wait_for(problems, 10, "both files reported",
                     until=lambda ps: f"{nan}: activation.duck_level: nan is not a finite number"
                     in ps and any(p.startswith(f"{deep}: (toml): nested deeper than 32 tables "
                                                "and arrays (at line ") for p in ps))
    assert len(found) == 2, found
    daemon.assert_running()

    game = play(server, tone, role="game")  # the shipped duck level 0.2 is still in force
    set_user_volume(server, game, 40000)
    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(40000, 0.2))
    end_client(server, phone)
    wait_volume(server, game, 40000)

    checked = run_ctl(daemon.env, "policy", "check", str(nan), str(deep))
    assert checked.returncode == 1 and "Traceback" not in checked.stdout + checked.stderr
    assert f"{nan}: activation.duck_level: nan is not a finite number" in checked.stdout

    # the watcher is alive: fixing the files is noticed
    nan.unlink()
    deep.unlink()
    wait_for(problems, 10, "the problems to clear", until=lambda ps: ps == [])
    daemon.assert_running()
