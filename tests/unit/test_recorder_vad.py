"""Voice activity detection: WebRTC's VAD gated by an energy floor, both set by SWML's
``input_sensitivity``. The speech is real (espeak-ng, resampled by sox); a missing binary fails
the test, it does not skip it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audiopolicyd.recorder.vad import (
    RATES, VoiceDetector, aggressiveness, energy_floor, level_dbfs,
)
from tests.support.audio import espeak

RATE = 48000
SENTENCES = ("Please leave your message after the tone. "
             "Press the pound key when you are done, or simply hang up.")


def frames(x: np.ndarray, rate: int) -> list[np.ndarray]:
    """``x`` cut into whole 10 ms frames (a partial last frame is dropped)."""
    n = rate // 100
    return [x[i:i + n] for i in range(0, len(x) - n + 1, n)]


def spoken(x: np.ndarray, rate: int) -> slice:
    """The frames from the first to the last one at -40 dBFS or more: the spoken part, pauses
    between words included."""
    loud = [i for i, f in enumerate(frames(x, rate)) if level_dbfs(f) >= -40.0]
    return slice(loud[0], loud[-1] + 1)


def verdicts(x: np.ndarray, rate: int = RATE, sensitivity: float = 50.0) -> list[bool]:
    """Feed ``x`` to a new detector one 10 ms frame at a time, as the recorder does."""
    vad = VoiceDetector(rate, sensitivity)
    return [vad.feed(f) for f in frames(x, rate)]


def scaled_to_peak(x: np.ndarray, dbfs: float) -> np.ndarray:
    gain = 32768 * 10 ** (dbfs / 20) / np.max(np.abs(x.astype(np.int32)))
    return np.round(x * gain).astype(np.int16)


def white_noise(dbfs: float, seconds: float, rate: int = RATE) -> np.ndarray:
    noise = np.random.default_rng(12).standard_normal(int(seconds * rate))
    return np.round(noise * 32768 * 10 ** (dbfs / 20)).astype(np.int16)


@pytest.mark.parametrize(("sensitivity", "mode", "floor"), [
    (0.0, 3, -30.0), (24.9, 3, -39.96), (25.0, 2, -40.0), (49.9, 2, -49.96), (50.0, 1, -50.0),
    (74.9, 1, -59.96), (75.0, 0, -60.0), (100.0, 0, -70.0), (100, 0, -70.0),
])
def test_sensitivity_maps_to_aggressiveness_and_floor_as_the_table_says(sensitivity, mode,
                                                                        floor):
    assert aggressiveness(sensitivity) == mode
    assert energy_floor(sensitivity) == pytest.approx(floor)
    vad = VoiceDetector(RATE, sensitivity)
    assert (vad.aggressiveness, vad.floor_dbfs) == (mode, pytest.approx(floor))


def test_default_sensitivity_is_swml_s_50():
    vad = VoiceDetector(RATE)
    assert (vad.sensitivity, vad.aggressiveness, vad.floor_dbfs) == (50.0, 1, -50.0)
    assert vad.frame_ms == VoiceDetector.frame_ms == 10 and vad.frame_samples == 480


def test_level_is_rms_re_full_scale():
    t = np.arange(RATE) / RATE
    assert level_dbfs(np.full(480, -32768, dtype=np.int16)) == pytest.approx(0.0)
    sine = np.round(32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    assert level_dbfs(sine) == pytest.approx(-3.01, abs=0.01)
    assert level_dbfs(np.zeros(480, dtype=np.int16)) == -math.inf


@pytest.mark.parametrize("rate", RATES)
def test_speech_is_mostly_voiced(rate):
    speech = espeak(SENTENCES, rate)
    voiced = verdicts(speech, rate)[spoken(speech, rate)]
    assert len(voiced) > 300  # the sentences last over 3 s
    assert sum(voiced) / len(voiced) >= 0.6


@pytest.mark.parametrize("sensitivity", [0.0, 50.0, 100.0])
def test_digital_silence_is_never_voiced_even_right_after_speech(sensitivity):
    silence = np.zeros(RATE, dtype=np.int16)
    assert not any(verdicts(silence, sensitivity=sensitivity))
    speech = espeak(SENTENCES, RATE)
    voiced = verdicts(np.concatenate((speech, silence)), sensitivity=sensitivity)
    assert any(voiced[:len(speech) // 480])
    assert not any(voiced[-100:])


def test_low_white_noise_is_not_voiced_at_the_default_sensitivity():
    noise = white_noise(-60.0, 2.0)
    assert level_dbfs(noise) == pytest.approx(-60.0, abs=0.1)
    assert not any(verdicts(noise))
    # the floor is what keeps it out: below it (sensitivity 100, floor -70 dBFS) WebRTC's VAD
    # calls some of this hiss speech
    assert any(verdicts(noise, sensitivity=100.0))


def test_quiet_speech_is_voiced_at_sensitivity_100_and_not_at_0():
    speech = espeak(SENTENCES, RATE)
    quiet = scaled_to_peak(speech, -45.0)
    part = spoken(speech, RATE)
    sensitive = verdicts(quiet, sensitivity=100.0)[part]
    assert sum(sensitive) / len(sensitive) >= 0.3
    assert not any(verdicts(quiet, sensitivity=0.0))
    # and the loud original is voiced at sensitivity 0 all the same
    assert sum(verdicts(speech, sensitivity=0.0)[part]) / len(sensitive) >= 0.5


def test_a_block_of_several_frames_is_voiced_when_half_of_them_are():
    speech = espeak(SENTENCES, RATE)
    # two frames that WebRTC calls speech after the speech before them
    k = next(i for i in range(100, 200)
             if VoiceDetector(RATE).frames(speech[:480 * (i + 2)])[i:] == [True, True])
    voiced = speech[480 * k:480 * (k + 2)]

    def verdict(silent_frames: int) -> bool:
        vad = VoiceDetector(RATE)
        vad.frames(speech[:480 * k])
        return vad.feed(np.concatenate((voiced, np.zeros(480 * silent_frames, dtype=np.int16))))

    assert [verdict(n) for n in (0, 1, 2, 3, 4)] == [True, True, True, False, False]


@pytest.mark.parametrize("rate", [44100, 22050, 0, -8000, 8000.0, True, "48000", None])
def test_a_rate_webrtc_does_not_take_is_an_error_naming_it(rate):
    with pytest.raises(ValueError, match=f"not {rate!r}"):
        VoiceDetector(rate)


@pytest.mark.parametrize("sensitivity", [-0.1, 100.1, math.nan, math.inf, -math.inf, "50",
                                         None, True])
def test_a_sensitivity_out_of_range_or_not_finite_is_an_error_naming_it(sensitivity):
    with pytest.raises(ValueError, match=r"input_sensitivity must be a number from 0\.0 to "
                                         rf"100\.0, not {sensitivity!r}"):
        VoiceDetector(RATE, sensitivity)
    with pytest.raises(ValueError, match="input_sensitivity"):
        aggressiveness(sensitivity)
    with pytest.raises(ValueError, match="input_sensitivity"):
        energy_floor(sensitivity)


@pytest.mark.parametrize(("block", "message"), [
    (np.zeros(479, dtype=np.int16), "block of 479 samples is not a multiple of 10 ms "
                                    r"\(480 samples at 48000 Hz\)"),
    (np.zeros(0, dtype=np.int16), "block is empty"),
    (np.zeros(480, dtype=np.float32), "1-D numpy int16 array"),
    (np.zeros((480, 2), dtype=np.int16), r"1-D numpy int16 array .* shape \(480, 2\)"),
    ([0] * 480, "1-D numpy int16 array"),
])
def test_a_block_that_is_not_whole_mono_int16_frames_is_an_error(block, message):
    with pytest.raises(ValueError, match=message):
        VoiceDetector(RATE).feed(block)


def test_a_channel_of_a_stereo_block_is_taken_as_it_is():
    speech = espeak(SENTENCES, RATE)[:RATE]
    stereo = np.stack((speech, np.zeros_like(speech)), axis=1)  # the recorder's (n, 2) blocks
    assert not stereo[:, 0].flags.c_contiguous
    assert verdicts(stereo[:, 0]) == verdicts(speech.copy())
