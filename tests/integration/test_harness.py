"""Smoke test of the harness on both real servers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from harness import AudioServer, play, raw_volumes, set_raw_volume, sink_inputs, wait_for

logger = logging.getLogger(__name__)

pytestmark = pytest.mark.integration


def _music_streams(server: AudioServer) -> list:
    """Return the sink-inputs of *server* with ``media.role=music``."""
    return [s for s in sink_inputs(server) if s.proplist.get("media.role") == "music"]


def test_music_stream_has_role_and_raw_volume_round_trips(server: AudioServer,
                                                          tone: Path) -> None:
    play(server, tone, role="music")
    (stream,) = wait_for(lambda: _music_streams(server), 10, "a media.role=music sink-input")

    set_raw_volume(server, stream, 13107)

    wait_for(lambda: [raw_volumes(s) for s in _music_streams(server)], 5,
             "the music stream at raw volume 13107",
             until=lambda volumes: volumes == [[13107, 13107]])
