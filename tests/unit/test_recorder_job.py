"""A recording's state machine on real audio (espeak-ng speech, DTMF tones, silence), with the
real detectors and encoder; only the capture is a list of blocks here (the capture on real
servers: tests/integration/test_recorder.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile

from audiopolicyd.backends.base import CaptureFailed
from audiopolicyd.recorder import encode
from audiopolicyd.recorder.job import BLOCK_MS, RATE, RecordJob, State
from audiopolicyd.recorder.params import parse
from tests.support.audio import espeak

BLOCK = RATE * BLOCK_MS // 1000
ROWS, COLS = (697, 770, 852, 941), (1209, 1336, 1477, 1633)
KEYS = ("123A", "456B", "789C", "*0#D")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 4 s of espeak-ng speech at 48 kHz, peak-normalised to -6 dBFS."""
    return espeak("Hello, this is a message for the recorder test. Please call me back.", RATE,
                  16384)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def dtmf(key: str, seconds: float = 0.2) -> np.ndarray:
    row = next(i for i, r in enumerate(KEYS) if key in r)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = np.sin(2 * np.pi * ROWS[row] * t) + np.sin(2 * np.pi * COLS[KEYS[row].index(key)] * t)
    return (wave * 8000).astype(np.int16)


def blocks_of(audio: np.ndarray, during=None):
    """A capture: *audio* in 10 ms blocks; ``during(i)`` is called before block i."""

    async def capture():
        for i in range(0, len(audio) - BLOCK + 1, BLOCK):
            if during is not None:
                during(i // BLOCK)
            await asyncio.sleep(0)
            yield audio[i:i + BLOCK]

    return capture


async def record(tmp_path, audio, during=None, fmt="wav", **params):
    path = tmp_path / f"r.{fmt}"
    statuses = []
    job = RecordJob(parse(params), encode.open_writer(path, fmt, RATE, 1),
                    blocks_of(audio, during), path.as_uri(),
                    status=lambda job, state: {"state": state.value})
    job.listeners.append(statuses.append)
    state = await job.run()
    return job, state, path, [s["state"] for s in statuses]


def level(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if len(audio) else 0.0


async def test_no_speech_within_initial_timeout_is_no_input(tmp_path):
    job, state, path, states = await record(tmp_path, silence(3), initial_timeout=1.0)
    assert state is State.NO_INPUT and job.result == "failed"
    assert states == ["recording", "no_input"]
    data, rate = soundfile.read(path, dtype="int16")
    assert rate == RATE and len(data) == RATE  # the one second judged, all of it kept


async def test_speech_then_silence_finishes_by_the_silence_rule(tmp_path, speech):
    audio = np.concatenate((silence(0.5), speech, silence(5)))
    job, state, path, _ = await record(tmp_path, audio, end_silence_timeout=1.5,
                                       max_length=60)
    assert state is State.FINISHED and job.result == "success"
    data, _ = soundfile.read(path, dtype="int16")
    # it ended 1.5 s after the last voiced block: within the speech's tail and 1.5 s after it
    speech_end = (0.5 + len(speech) / RATE)
    assert speech_end + 1.0 <= len(data) / RATE <= speech_end + 1.6
    # and the file holds the speech, where it was
    kept = data[int(0.5 * RATE):int(0.5 * RATE) + len(speech)]
    assert np.array_equal(kept, speech)


async def test_max_length_ends_it_to_the_block(tmp_path, speech):
    audio = np.concatenate([speech] * 3)
    job, state, path, _ = await record(tmp_path, audio, max_length=2.5, end_silence_timeout=0)
    assert state is State.FINISHED
    data, _ = soundfile.read(path, dtype="int16")
    assert abs(len(data) / RATE - 2.5) <= BLOCK_MS / 1000


async def test_a_terminator_ends_it_and_its_tone_is_not_in_the_file(tmp_path, speech):
    audio = np.concatenate((speech[:RATE * 2], silence(0.1), dtmf("#"), silence(3)))
    job, state, path, _ = await record(tmp_path, audio, terminators="#",
                                       end_silence_timeout=0)
    assert state is State.FINISHED and job.result == "success"
    data, _ = soundfile.read(path, dtype="int16")
    tone_start = 2.1 * RATE
    assert abs(len(data) - tone_start) <= RATE * 0.015  # cut where the tone began
    assert level(data[-int(0.1 * RATE):]) < 10  # the silence before it, no tone


async def test_a_digit_that_is_no_terminator_is_recorded(tmp_path, speech):
    audio = np.concatenate((speech[:RATE], dtmf("5"), speech[:RATE], silence(2)))
    job, state, path, _ = await record(tmp_path, audio, terminators="#",
                                       end_silence_timeout=1.0)
    assert state is State.FINISHED
    data, _ = soundfile.read(path, dtype="int16")
    assert len(data) > 2.2 * RATE
    assert np.array_equal(data[RATE:RATE + int(0.2 * RATE)], dtmf("5"))


@pytest.mark.parametrize("behavior, kept", [("silence", 3.0), ("skip", 2.0)])
async def test_pause_keeps_the_length_as_silence_or_skips_it(tmp_path, behavior, kept):
    """Blocks 100-199 of 300 come while paused."""
    tone = dtmf("1", 3.0) // 4  # steady: never a terminator ("#" only); no timeout runs
    holder = {}

    def during(i):
        if i == 100:
            holder["job"].pause(behavior)
        elif i == 200:
            holder["job"].resume()
        elif i == 299:
            holder["job"].stop("test")

    path = tmp_path / "p.wav"
    job = RecordJob(parse({"initial_timeout": 0, "end_silence_timeout": 0}),
                    encode.open_writer(path, "wav", RATE, 1), blocks_of(tone, during),
                    path.as_uri(), status=lambda job, state: {"state": state.value,
                                                              "behavior": job.behavior})
    holder["job"] = job
    statuses = []
    job.listeners.append(statuses.append)
    assert await job.run() is State.FINISHED
    assert [s["state"] for s in statuses] == ["recording", "paused", "recording", "finished"]
    assert statuses[1]["behavior"] == behavior
    data, _ = soundfile.read(path, dtype="int16")
    assert abs(len(data) / RATE - kept) <= 0.011
    if behavior == "silence":
        assert level(data[RATE + BLOCK:2 * RATE - BLOCK]) == 0 < level(data[:RATE])


async def test_stop_finishes_with_a_valid_file(tmp_path, speech):
    holder = {}
    path = tmp_path / "s.mp3"
    job = RecordJob(parse({"initial_timeout": 0}), encode.open_writer(path, "mp3", RATE, 1),
                    blocks_of(np.concatenate([speech] * 2), lambda i: i == 150 and
                              holder["job"].stop("test")), path.as_uri())
    holder["job"] = job
    assert await job.run() is State.FINISHED and job.stop_reason == "test"
    info = soundfile.info(path)
    assert 1.3 <= info.duration <= 1.7  # 1.5 s captured, held audio written at the end


async def test_a_capture_that_fails_ends_as_error_with_what_was_recorded(tmp_path, speech):
    def during(i):
        if i == 120:
            raise CaptureFailed("the device went away")

    job, state, path, states = await record(tmp_path, speech, during, initial_timeout=0)
    assert state is State.ERROR and job.result == "failed" and "went away" in job.error
    assert states == ["recording", "error"]
    data, _ = soundfile.read(path, dtype="int16")
    assert len(data) == 120 * BLOCK and np.array_equal(data, speech[:len(data)])


async def test_a_failing_preparation_ends_as_error_before_recording(tmp_path):
    async def refuse():
        raise PermissionError("denied the microphone")

    path = tmp_path / "d.wav"
    job = RecordJob(parse({}), encode.open_writer(path, "wav", RATE, 1),
                    blocks_of(silence(1)), path.as_uri(), prepare=refuse)
    assert await job.run() is State.ERROR and "denied" in job.error
    assert soundfile.info(path).frames == 0


async def test_stereo_judges_the_microphone_channel(tmp_path, speech):
    """Left: the microphone (speech, judged); right: the monitor (loud music-like tone, not
    judged): the silence rule follows the left channel."""
    n = len(speech) + 3 * RATE
    left = np.concatenate((speech, silence(3)))
    right = (np.sin(2 * np.pi * 440 * np.arange(n) / RATE) * 12000).astype(np.int16)
    stereo = np.column_stack((left, right))
    path = tmp_path / "st.wav"

    async def capture():
        for i in range(0, n - BLOCK + 1, BLOCK):
            await asyncio.sleep(0)
            yield stereo[i:i + BLOCK]

    job = RecordJob(parse({"stereo": True, "end_silence_timeout": 1.0}),
                    encode.open_writer(path, "wav", RATE, 2), capture, path.as_uri())
    assert await job.run() is State.FINISHED
    data, _ = soundfile.read(path, dtype="int16")
    assert data.shape[1] == 2 and len(data) < n - RATE
    assert np.array_equal(data[:, 0], left[:len(data)])
    assert np.array_equal(data[:, 1], right[:len(data)])


def stalling(blocks_first: int):
    """A capture that gives some blocks of silence, then nothing (a stalled device)."""

    async def capture():
        for _ in range(blocks_first):
            await asyncio.sleep(0)
            yield silence(BLOCK_MS / 1000)
        await asyncio.Event().wait()
        yield silence(0)  # never reached

    return capture


async def test_a_stalled_capture_ends_as_error(tmp_path, monkeypatch):
    monkeypatch.setattr("audiopolicyd.recorder.job.STALL_S", 0.2)
    path = tmp_path / "stall.wav"
    job = RecordJob(parse({"initial_timeout": 0}), encode.open_writer(path, "wav", RATE, 1),
                    stalling(50), path.as_uri())
    assert await job.run() is State.ERROR and "no audio came" in job.error
    assert soundfile.info(path).frames == 50 * BLOCK


async def test_stop_before_it_records_is_no_input(tmp_path):
    # stopped while it waits for the user's answer or beeps: nothing was recorded
    path = tmp_path / "never.wav"
    waiting = asyncio.Event()

    async def prepare() -> None:
        waiting.set()
        await asyncio.Event().wait()  # the user never answers

    job = RecordJob(parse({}), encode.open_writer(path, "wav", RATE, 1), blocks_of(silence(1)),
                    path.as_uri(), prepare=prepare)
    task = job.start()
    await waiting.wait()
    assert job.state is State.STARTING
    job.stop("its caller left the bus")
    assert await task is State.NO_INPUT and job.result == "failed"
    assert soundfile.info(path).frames == 0


async def test_stop_ends_a_recording_waiting_for_audio_as_finished(tmp_path):
    path = tmp_path / "wait.wav"
    job = RecordJob(parse({"initial_timeout": 0}), encode.open_writer(path, "wav", RATE, 1),
                    stalling(30), path.as_uri())
    task = job.start()
    while job._judged < 30 * BLOCK:  # the 30 blocks are in
        await asyncio.sleep(0.01)
    job.stop("Stop()")
    assert await task is State.FINISHED and job.result == "success"
    assert soundfile.info(path).frames == 30 * BLOCK
