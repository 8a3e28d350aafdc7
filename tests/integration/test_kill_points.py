"""Kill points: the daemon killed inside a duck ramp, right after a call ends, the audio server
killed mid-duck; each followed by a restart and an exact-restore check on the server's state.

Both servers remember volume and mute per role, so anything left behind would stay. The journal
holds every effect (and the path of a ramp under way) before it is applied, and forgets it only
after the server has answered the write that undoes it. Assertions read the servers (pulsectl).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import pytest

from tests.support.clients import play, start_in_batches
from tests.support.daemon import DaemonProcess
from tests.support.processes import wait_for
from tests.support.servers import AudioServer
from tests.support.streams import (
    ducked, end_client, remembered_volume, set_raw_volume, set_user_volume, stream_state,
    wait_muted, wait_stream, wait_volume,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
USER = 40000
CALL = 0.2


def ramp_policy(daemon: DaemonProcess, ramp_ms: int) -> None:
    """Calls duck the mixable rest over ``ramp_ms`` (the shipped playAndRecord, but the ramp);
    wait until the daemon has it in force."""
    shipped = (ROOT / "policies" / "playAndRecord.toml").read_text()
    assert "duck_ramp_ms = 100" in shipped
    path = daemon.policy_dir / "playAndRecord.toml"
    before = daemon.log_text().count("policies loaded:")
    path.write_text(shipped.replace("duck_ramp_ms = 100", f"duck_ramp_ms = {ramp_ms}"))
    wait_for(lambda: daemon.log_text().count("policies loaded:"), 10,
             "the daemon to load the long-ramp policy", until=lambda n: n > before)


def games(server: AudioServer, tone: Path, n: int) -> list:
    """``n`` game streams at the user's volume :data:`USER`."""
    procs = start_in_batches(server, n, lambda _: play(server, tone, role="game"))
    for proc in procs:
        set_user_volume(server, proc, USER)
    return procs


def players(server: AudioServer, tone: Path, n: int) -> list:
    """``n`` music streams of one app (one ``application.id``: they do not interrupt each
    other) without an MPRIS player: a call mutes them."""
    return start_in_batches(server, n, lambda _: play(
        server, tone, role="music", props={"application.id": "org.example.Player"}))


def all_at(server: AudioServer, procs: list, volume: int, muted: bool = False) -> None:
    for proc in procs:
        wait_volume(server, proc, volume)
        wait_muted(server, proc, muted)


def test_killed_inside_a_duck_ramp_the_restart_restores_every_stream(
        server: AudioServer, daemon: DaemonProcess, tone: Path) -> None:
    ramp_policy(daemon, 3000)
    victims = games(server, tone, 4)
    phone = play(server, tone, role="phone")
    first = victims[0]
    wait_for(lambda: stream_state(server, first)[0][0], 10, "the first stream inside the ramp",
             until=lambda v: ducked(USER, CALL) < v < USER - 1000, interval=0.01)
    daemon.kill()
    steps = [stream_state(server, proc)[0] for proc in victims]
    assert any(v != [USER, USER] for v in steps), steps
    end_client(server, phone)

    daemon.start()
    all_at(server, victims, USER)


def test_killed_at_random_in_the_first_250_ms_of_a_call(server: AudioServer,
                                                        daemon: DaemonProcess,
                                                        tone: Path) -> None:
    victims = games(server, tone, 4)
    rng = random.Random(8)
    for trial in range(4):
        phone = play(server, tone, role="phone")
        wait_stream(server, phone)
        time.sleep(rng.uniform(0, 0.25))
        daemon.kill()
        end_client(server, phone)
        daemon.start()
        try:
            all_at(server, victims, USER)
        except AssertionError as exc:
            raise AssertionError(f"trial {trial}: {exc}") from None


def test_killed_right_after_a_call_ends_the_restart_restores_every_stream(
        server: AudioServer, daemon: DaemonProcess, tone: Path) -> None:
    ducked_games = games(server, tone, 5)
    music = players(server, tone, 5)
    rng = random.Random(6)
    for trial in range(3):
        phone = play(server, tone, role="phone")
        all_at(server, ducked_games, ducked(USER, CALL))
        for proc in music:
            wait_muted(server, proc, True)
        phone.kill()  # the call ends; the daemon dies 0-6 ms after it sees so
        wait_for(lambda: daemon.log_text().count("event remove sink-input"), 10,
                 "the daemon to see the call end", until=bool, interval=0.001)
        time.sleep(rng.uniform(0, 0.006))
        daemon.kill()
        phone.wait()
        daemon.start()
        try:
            all_at(server, ducked_games, USER)
            all_at(server, music, 65536)
        except AssertionError as exc:
            raise AssertionError(f"trial {trial}: {exc}") from None
        daemon.log.write_text("")


def test_a_user_volume_during_a_ramp_is_kept_and_restored(server: AudioServer,
                                                          daemon: DaemonProcess,
                                                          tone: Path) -> None:
    ramp_policy(daemon, 3000)
    (game,) = games(server, tone, 1)
    phone = play(server, tone, role="phone")
    wait_for(lambda: stream_state(server, game)[0][0], 10, "the ramp under way",
             until=lambda v: v < USER - 1000, interval=0.01)
    info = wait_stream(server, game)
    set_raw_volume(server, info, 50000)
    time.sleep(0.005)
    if stream_state(server, game)[0] != [50000, 50000]:
        # a step sent before the daemon could see the user's change landed after it: the
        # user sees the slider jump and moves it again (the daemon saw the first move)
        set_raw_volume(server, wait_stream(server, game), 50000)
    time.sleep(3.5)  # longer than the ramp: no later step overwrote it
    assert stream_state(server, game) == ([50000, 50000], False)
    end_client(server, phone)
    time.sleep(0.3)
    assert stream_state(server, game) == ([50000, 50000], False)


def test_audio_server_killed_mid_duck_every_respawned_stream_gets_the_users_values(
        server: AudioServer, daemon: DaemonProcess, tone: Path) -> None:
    games(server, tone, 6)
    players(server, tone, 6)
    play(server, tone, role="phone")
    wait_for(lambda: remembered_volume(server, "game"), 10,
             "the server to remember the ducked game volume",
             until=lambda v: v == [ducked(USER, CALL)] * 2)
    if server.name == "pipewire":
        time.sleep(1.5)  # WirePlumber saves the music mute 1 s after it changes

    server.restart()  # every client goes with the old server; the apps come back
    wait_for(lambda: daemon.log_text().count("connected to "), 20,
             "the daemon to connect a second time", until=lambda n: n >= 2)
    daemon.wait_connected()
    respawned = start_in_batches(server, 6, lambda _: play(server, tone, role="game"))
    respawned_music = players(server, tone, 6)
    all_at(server, respawned, USER)
    all_at(server, respawned_music, 65536)

    phone = play(server, tone, role="phone")  # ducked from the user's value, once
    all_at(server, respawned, ducked(USER, CALL))
    end_client(server, phone)
    all_at(server, respawned, USER)
    all_at(server, respawned_music, 65536)


def test_ramps_replanned_under_way_by_overlapping_calls(server: AudioServer,
                                                       daemon: DaemonProcess,
                                                       tone: Path) -> None:
    """Calls that start and end while a ramp runs re-plan it; the ramp waits on libpulse
    operations, and cancelling one of those (not the ramp) freed its callback under libpulse:
    the daemon died of a segmentation fault within a few dozen such calls."""
    victims = games(server, tone, 2)
    for _ in range(12):
        calls = [play(server, tone, role="phone") for _ in range(3)]
        time.sleep(0.03)
        for call in calls:
            call.kill()
        for call in calls:
            call.wait()
        daemon.assert_running()
    all_at(server, victims, USER)
    daemon.assert_running()
