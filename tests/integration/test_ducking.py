"""The duck layer on real servers: a call ducks ambient sound and gives it back exactly.

Shipped policies: a ``media.role=phone`` stream is ``playAndRecord``, which ducks mixable
streams (``ambient``: roles game, event...) and, by a per-pair override, ``soloAmbient``
(unclassified) streams to gain 0.2 with a 100 ms ramp; a ``media.role=production`` stream is
``multiRoute``, which ducks ambient streams to 0.3. A duck multiplies the user's raw volume
(rounded to the server's integer); several duckers multiply; the user's own change during a
duck is kept and is what comes back; the last trigger ending restores the user's integer
exactly. Every assertion reads the server (pulsectl), not the daemon.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.clients import play
from tests.support.daemon import DaemonProcess
from tests.support.processes import wait_for
from tests.support.servers import AudioServer
from tests.support.streams import (
    ducked, end_client, set_user_volume, stream_state, wait_muted, wait_stream, wait_volume,
)

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration

#: The user's volume of the victim stream (about 61 %); 0.2, 0.3 and 0.06 of it are integers.
USER = 40000
CALL = 0.2  # playAndRecord.toml: activation.duck_level
PRODUCTION = 0.3  # multiRoute.toml: activation.duck_level


def test_call_ducks_game_stream_and_restores_it_exactly(server: AudioServer,
                                                       daemon: DaemonProcess,
                                                       tone: Path) -> None:
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)

    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))
    assert stream_state(server, phone) == ([65536, 65536], False), "the trigger is untouched"

    end_client(server, phone)
    wait_volume(server, game, USER)
    assert stream_state(server, game) == ([USER, USER], False)


def test_user_volume_change_during_duck_survives_and_is_restored(server: AudioServer,
                                                                 daemon: DaemonProcess,
                                                                 tone: Path) -> None:
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)
    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))
    index = wait_stream(server, game).index

    set_user_volume(server, game, 30000)
    # Once the daemon has seen the user's change, it must leave it alone for the rest of the
    # call (the user's act wins) ...
    wait_for(lambda: daemon.stream_view(index), 10, "the daemon to see the user's volume",
             until=lambda v: v is not None and v["Volume"] == [30000, 30000])
    second = play(server, tone, role="event")  # one more event through the daemon's loop
    wait_volume(server, second, ducked(65536, CALL))
    assert stream_state(server, game) == ([30000, 30000], False)

    # ... and it is the value restored when the call ends (not 40000, not 30000 / 0.2).
    end_client(server, phone)
    wait_volume(server, second, 65536)
    wait_volume(server, game, 30000)
    wait_for(lambda: daemon.stream_view(index), 10, "the game stream's effect to end",
             until=lambda v: v is not None and v["Effect"] == "none")
    assert stream_state(server, game) == ([30000, 30000], False)


def test_two_duckers_multiply_and_ending_one_leaves_the_other(server: AudioServer,
                                                              daemon: DaemonProcess,
                                                              tone: Path) -> None:
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)

    phone = play(server, tone, role="phone")
    wait_volume(server, game, ducked(USER, CALL))
    production = play(server, tone, role="production")
    wait_volume(server, game, ducked(USER, CALL, PRODUCTION))
    # The call outranks multiRoute and interrupts it: no player, so it is muted.
    wait_muted(server, production, True)

    end_client(server, phone)
    wait_volume(server, game, ducked(USER, PRODUCTION))
    wait_muted(server, production, False)

    end_client(server, production)
    wait_volume(server, game, USER)


def test_call_ducks_unclassified_stream(server: AudioServer, daemon: DaemonProcess,
                                        tone: Path) -> None:
    """paplay without a role matches no rule: soloAmbient, which a call ducks (override)."""
    browser = play(server, tone)
    set_user_volume(server, browser, USER)
    index = wait_stream(server, browser).index

    phone = play(server, tone, role="phone")
    wait_volume(server, browser, ducked(USER, CALL))
    view = daemon.stream_view(index)
    assert view is not None and view["Category"] == "soloAmbient"
    assert stream_state(server, browser) == ([ducked(USER, CALL)] * 2, False)

    end_client(server, phone)
    wait_volume(server, browser, USER)
    assert stream_state(server, browser) == ([USER, USER], False)


def test_repeated_calls_restore_exactly_every_time(server: AudioServer, daemon: DaemonProcess,
                                                   tone: Path) -> None:
    """Call after call, the duck starts from and returns to the user's exact volume.

    On pipewire-pulse a new trigger stream shows up, links corked and only then runs, so the
    daemon may restore and duck again within a few ms, before the server has echoed its own
    writes: the duck must then start from the user's volume, not from a ramp step.
    """
    game = play(server, tone, role="game")
    set_user_volume(server, game, USER)
    for call in range(12):
        phone = play(server, tone, role="phone")
        wait_volume(server, game, ducked(USER, CALL), what=f"call {call}: game ducked")
        end_client(server, phone)
        wait_volume(server, game, USER, what=f"call {call}: game restored")
