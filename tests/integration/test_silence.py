"""``record`` silences other output on real servers, and gives it back.

Shipped policies: a recording no rule matches (``parecord`` from the mic) is in the ``record``
category, which silences (mutes) every other output while it records; the record plugin keeps
``media.role=a11y`` audible (``keep_audible_roles``). When the recording ends the daemon lifts
the mute it set, and only that one: a stream the user had muted stays muted. Every assertion
reads the server (pulsectl). ``parecord`` is granted the microphone first (see
test_microphone.py): a recording silenced for want of permission still records.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.support.clients import play, record
from tests.support.daemon import DaemonProcess
from tests.support.processes import wait_for
from tests.support.servers import AudioServer
from tests.support.streams import end_client, set_user_mute, stream_state, wait_muted, wait_stream

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _parecord_granted(daemon: DaemonProcess) -> None:
    done = daemon.ctl("grant", "exe:" + os.path.realpath("/usr/bin/pacat"))
    assert done.returncode == 0, done.stderr


def _effect(daemon: DaemonProcess, index: int, effect: str) -> None:
    """Wait until the daemon shows *effect* on sink-input *index* (its decision is made)."""
    wait_for(lambda: daemon.stream_view(index), 10, f"sink-input:{index} effect {effect!r}",
             until=lambda v: v is not None and v["Effect"] == effect)


def test_recording_mutes_music_but_not_a11y_and_unmutes_after(server: AudioServer,
                                                              daemon: DaemonProcess,
                                                              tone: Path) -> None:
    music = play(server, tone, role="music")
    a11y = play(server, tone, role="a11y")
    a11y_index = wait_stream(server, a11y).index
    assert stream_state(server, music)[1] is False

    recorder = record(server)
    wait_stream(server, recorder, kind="source-output")
    wait_muted(server, music, True)
    _effect(daemon, a11y_index, "none")  # decided in the same pass as the music's mute
    assert stream_state(server, a11y)[1] is False, "a11y must stay audible while recording"
    assert stream_state(server, recorder, kind="source-output")[1] is False, \
        "the recording itself is not silenced"

    end_client(server, recorder, kind="source-output")
    wait_muted(server, music, False)
    assert stream_state(server, a11y)[1] is False


def test_stream_the_user_muted_stays_muted_after_recording(server: AudioServer,
                                                           daemon: DaemonProcess,
                                                           tone: Path) -> None:
    music = play(server, tone, role="music")
    music_index = wait_stream(server, music).index
    set_user_mute(server, music, True)
    game = play(server, tone, role="game")  # control: muted by us, so unmuted by us
    game_index = wait_stream(server, game).index

    recorder = record(server)
    wait_muted(server, game, True)
    _effect(daemon, music_index, "mute")
    assert stream_state(server, music)[1] is True

    end_client(server, recorder, kind="source-output")
    wait_muted(server, game, False)
    _effect(daemon, music_index, "none")
    _effect(daemon, game_index, "none")
    assert stream_state(server, music)[1] is True, "the user's mute is not ours to lift"
