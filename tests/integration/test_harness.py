"""Smoke test of the test support (tests/support: servers, clients, audio) on both real servers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.audio import peak, wait_recorded
from tests.support.clients import play, record
from tests.support.processes import wait_for
from tests.support.servers import MIC, AudioServer
from tests.support.streams import raw_volumes, set_raw_volume, sink_inputs, wait_stream

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


def test_mic_is_a_real_time_sine_and_a_missing_source_fails(server: AudioServer,
                                                           tmp_path: Path) -> None:
    """The test microphone (a pipe source fed in real time) is heard on both servers; a
    recording of a source that does not exist fails instead of recording the default one."""
    take = tmp_path / "mic.raw"
    wait_stream(server, record(server, MIC, path=take, latency_ms=20), "source-output")
    start = wait_recorded(take, audible=True)
    assert 12000 < peak(take, start) < 20000  # the feeder's sine, amplitude 0.5

    ghost = record(server, "no-such-mic", path=tmp_path / "ghost.raw", latency_ms=20)
    with pytest.raises(AssertionError):  # PulseAudio: parecord exits; PipeWire: another source
        wait_stream(server, ghost, "source-output", timeout=5)
