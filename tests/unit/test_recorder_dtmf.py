"""DTMF detection: every key at 8 and 48 kHz, where its tone starts and how soon it is known,
and what must not count as a key (speech, one sine, a too short tone). Tones are made by numpy
and by sox, speech by espeak-ng; a missing binary fails the test, it does not skip it."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from audiopolicyd.recorder.dtmf import (
    COLS, DIGITS, KEYS, MAX_LATENCY_MS, ROWS, DtmfDetector, Tone, goertzel,
)

from tests.support.audio import espeak

RATES = (8000, 48000)
SENTENCES = ("Thank you for calling. Press one for sales, two for support, or stay on the line. "
             "She sells sea shells by the sea shore; the quick brown fox jumps over the lazy dog. "
             "Hello? Is anyone there? Beep, beep, beep.")


def ms(rate: int, milliseconds: float) -> int:
    return round(rate * milliseconds / 1000)


def silence(rate: int, milliseconds: float) -> np.ndarray:
    return np.zeros(ms(rate, milliseconds), dtype=np.int16)


def key(digit: str, milliseconds: float, rate: int, *, amplitude: float = 8000.0,
        row_gain_db: float = 0.0, detune: float = 1.0) -> np.ndarray:
    """The two sines of ``digit``, each of ``amplitude`` (the row one ``row_gain_db`` louder),
    both frequencies times ``detune``: int16, shape (n,)."""
    row = next(i for i, keys in enumerate(KEYS) if digit in keys)
    col = KEYS[row].index(digit)
    t = np.arange(ms(rate, milliseconds)) / rate
    x = (amplitude * 10 ** (row_gain_db / 20) * np.sin(2 * np.pi * ROWS[row] * detune * t + 0.3)
         + amplitude * np.sin(2 * np.pi * COLS[col] * detune * t))
    return np.round(x).astype(np.int16)


def detect(x: np.ndarray, rate: int, block: int | None = None) -> list[tuple[Tone, int]]:
    """Feed ``x`` in blocks (10 ms by default, as the recorder does); each tone reported, with
    the number of samples fed when it was."""
    detector = DtmfDetector(rate)
    block = block or rate // 100
    found = []
    for i in range(0, len(x), block):
        found += [(tone, detector.samples) for tone in detector.feed(x[i:i + block])]
    return found


def digits(x: np.ndarray, rate: int) -> str:
    return "".join(tone.digit for tone, _ in detect(x, rate))


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("digit", DIGITS)
def test_every_key_is_recognised_once_soon_after_its_start(rate, digit):
    lead = ms(rate, 123.7)  # not on a 10 ms boundary
    x = np.concatenate((silence(rate, 123.7), key(digit, 70, rate), silence(rate, 100)))
    [(tone, reported_at)] = detect(x, rate)
    assert tone.digit == digit and tone.end is None
    assert abs(tone.start - lead) <= ms(rate, 10)
    assert reported_at - lead <= ms(rate, 60)


@pytest.mark.parametrize("rate", RATES)
def test_latency_and_start_wherever_the_tone_starts_within_a_hop(rate):
    latencies, errors = [], []
    for offset in np.arange(0.0, 10.0, 0.5):
        lead = ms(rate, 50 + offset)
        x = np.concatenate((silence(rate, 50 + offset), key("0", 50, rate), silence(rate, 50)))
        [(tone, reported_at)] = detect(x, rate)
        latencies.append((reported_at - lead) * 1000 / rate)
        errors.append((tone.start - lead) * 1000 / rate)
    # 28 ms at best (3 hops, the first one almost full), 38 ms at worst (its first hop too
    # short to count: 79 % of a hop)
    assert 27.5 < min(latencies) and max(latencies) <= 38.5 < MAX_LATENCY_MS
    assert max(abs(e) for e in errors) <= 2.0


@pytest.mark.parametrize("rate", RATES)
def test_a_key_made_by_sox_is_recognised(rate):
    raw = subprocess.run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed",
                          "-t", "raw", "-", "synth", "0.1", "sine", "941", "sine", "1477",
                          "remix", "-", "gain", "-6"],
                         check=True, capture_output=True).stdout
    tone = np.frombuffer(raw, dtype=np.int16)
    assert len(tone) == ms(rate, 100)
    x = np.concatenate((silence(rate, 55), tone, silence(rate, 50)))
    [(found, reported_at)] = detect(x, rate)
    assert found.digit == "#"
    assert abs(found.start - ms(rate, 55)) <= ms(rate, 10)
    assert reported_at - ms(rate, 55) <= ms(rate, 60)


@pytest.mark.parametrize("rate", RATES)
def test_a_key_after_speech_and_silence(rate):
    speech = espeak("Please enter your account number, then press the pound key.", rate)
    lead = len(speech) + ms(rate, 300)
    x = np.concatenate((speech, silence(rate, 300), key("5", 80, rate), silence(rate, 200)))
    [(tone, reported_at)] = detect(x, rate)
    assert tone.digit == "5"
    assert abs(tone.start - lead) <= ms(rate, 10)
    assert reported_at - lead <= ms(rate, 60)


@pytest.mark.parametrize("rate", RATES)
def test_speech_alone_is_no_key(rate):
    speech = espeak(SENTENCES, rate)
    assert len(speech) > 8 * rate
    assert detect(speech, rate) == []


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("frequency", [1000.0, 697.0, 1209.0])
def test_a_single_sine_is_no_key(rate, frequency):
    t = np.arange(rate) / rate
    sine = np.round(16000 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
    assert detect(sine, rate) == []


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("duration", [20, 23])
def test_a_tone_too_short_is_no_key(rate, duration):
    for offset in np.arange(0.0, 10.0, 1.0):
        x = np.concatenate((silence(rate, 30 + offset), key("8", duration, rate),
                            silence(rate, 50)))
        assert detect(x, rate) == [], offset


@pytest.mark.parametrize("rate", RATES)
def test_a_tone_of_40_ms_is_a_key_wherever_it_starts(rate):
    for offset in np.arange(0.0, 10.0, 1.0):
        x = np.concatenate((silence(rate, 30 + offset), key("8", 40, rate), silence(rate, 50)))
        assert digits(x, rate) == "8", offset


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize(("first", "second"), [("1", "9"), ("4", "4")])
def test_two_keys_50_ms_apart_are_two_tones(rate, first, second):
    x = np.concatenate((silence(rate, 30), key(first, 60, rate), silence(rate, 50),
                        key(second, 60, rate), silence(rate, 50)))
    found = detect(x, rate)
    assert [tone.digit for tone, _ in found] == [first, second]
    assert abs(found[1][0].start - ms(rate, 140)) <= ms(rate, 10)


@pytest.mark.parametrize("rate", RATES)
def test_an_interruption_of_10_ms_is_bridged(rate):
    x = np.concatenate((silence(rate, 30), key("6", 60, rate), silence(rate, 10),
                        key("6", 60, rate), silence(rate, 50)))
    assert digits(x, rate) == "6"


@pytest.mark.parametrize("rate", RATES)
def test_a_key_follows_another_with_no_pause(rate):
    x = np.concatenate((silence(rate, 30), key("2", 60, rate), key("C", 60, rate),
                        silence(rate, 50)))
    found = detect(x, rate)
    assert [tone.digit for tone, _ in found] == ["2", "C"]
    assert abs(found[1][0].start - ms(rate, 90)) <= ms(rate, 10)


def test_the_end_is_known_when_the_whole_press_is_in_one_block():
    rate = 48000
    x = np.concatenate((silence(rate, 30), key("7", 60, rate), silence(rate, 50),
                        key("3", 60, rate), silence(rate, 50)))
    [(first, _), (second, _)] = detect(x, rate, block=len(x))
    assert (first.digit, second.digit) == ("7", "3")
    for tone, (start, end) in zip((first, second), ((30, 90), (140, 200))):
        assert abs(tone.start - ms(rate, start)) <= ms(rate, 2)
        assert tone.end is not None and abs(tone.end - ms(rate, end)) <= ms(rate, 2)


@pytest.mark.parametrize("block", [1, 137, 480, 1000, 4800])
def test_blocks_of_any_length_find_the_same_tones(block):
    rate = 48000
    x = np.concatenate((silence(rate, 33), key("*", 60, rate), silence(rate, 50),
                        key("D", 60, rate), silence(rate, 50)))
    found = [(tone.digit, tone.start) for tone, _ in detect(x, rate, block=block)]
    assert found == [(tone.digit, tone.start) for tone, _ in detect(x, rate)]
    assert [d for d, _ in found] == ["*", "D"]


@pytest.mark.parametrize(("row_gain_db", "found"), [
    (7.5, "5"), (8.5, ""),     # the row tone louder: normal twist, up to 8 dB
    (-3.5, "5"), (-4.5, ""),   # the column tone louder: reverse twist, up to 4 dB
])
def test_twist_limits(row_gain_db, found):
    x = np.concatenate((silence(8000, 20), key("5", 80, 8000, row_gain_db=row_gain_db)))
    assert digits(x, 8000) == found


@pytest.mark.parametrize(("detune", "found"), [
    (0.985, "1"), (1.015, "1"),  # Q.24: operate within +-1.5 %
    (0.965, ""), (1.035, ""),    # and not at +-3.5 %
])
@pytest.mark.parametrize("rate", RATES)
def test_frequency_tolerance(rate, detune, found):
    x = np.concatenate((silence(rate, 20), key("1", 80, rate, detune=detune)))
    assert digits(x, rate) == found


@pytest.mark.parametrize(("amplitude", "found"), [(800.0, "9"), (400.0, "")])
def test_each_tone_needs_minus_40_dbfs(amplitude, found):
    # a sine of amplitude 800 is at -35.3 dBFS, of 400 at -41.3 dBFS
    x = np.concatenate((silence(8000, 20), key("9", 80, 8000, amplitude=amplitude)))
    assert digits(x, 8000) == found


@pytest.mark.parametrize("rate", RATES)
def test_a_key_in_white_noise_15_db_below_it(rate):
    tone = key("9", 80, rate, amplitude=5000).astype(np.float64)
    x = np.concatenate((silence(rate, 30), tone, silence(rate, 50)))
    noise = np.random.default_rng(3).standard_normal(len(x))
    x = np.round(x + noise * np.sqrt(np.mean(tone**2) / 10**1.5)).astype(np.int16)
    [(found, _)] = detect(x, rate)
    assert found.digit == "9" and abs(found.start - ms(rate, 30)) <= ms(rate, 3)


def test_goertzel_is_the_textbook_recursion():
    rate, x = 8000, np.random.default_rng(5).integers(-3000, 3000, 205).astype(np.int16)
    freqs = np.array([697.0, 941.0, 1633.0, 1000.5])
    powers = []
    for f in freqs:  # Goertzel's recursion, as telephony stacks write it
        coeff, s1, s2 = 2 * np.cos(2 * np.pi * f / rate), 0.0, 0.0
        for sample in x:
            s1, s2 = float(sample) + coeff * s1 - s2, s1
        powers.append(s1 * s1 + s2 * s2 - coeff * s1 * s2)
    assert np.abs(goertzel(x, freqs, rate)) ** 2 == pytest.approx(powers, rel=1e-9)


def test_samples_counts_what_was_fed():
    detector = DtmfDetector(8000)
    detector.feed(np.zeros(125, dtype=np.int16))
    detector.feed(np.zeros(0, dtype=np.int16))
    assert detector.samples == 125 and detector.hop_ms == 10 and detector.hop == 80


@pytest.mark.parametrize("rate", [7900, 0, 8050, 44150, 8000.0, True, "8000", None])
def test_a_rate_that_is_not_whole_hops_is_an_error_naming_it(rate):
    with pytest.raises(ValueError, match=f"not {rate!r}"):
        DtmfDetector(rate)


def test_rates_of_whole_hops_are_taken():
    assert [DtmfDetector(r).hop for r in (8000, 16000, 32000, 44100, 48000)] == [
        80, 160, 320, 441, 480]


@pytest.mark.parametrize("block", [
    np.zeros(80, dtype=np.float64), np.zeros((80, 2), dtype=np.int16), [0] * 80,
])
def test_a_block_that_is_not_mono_int16_is_an_error(block):
    with pytest.raises(ValueError, match="1-D numpy int16 array"):
        DtmfDetector(8000).feed(block)


def test_a_channel_of_a_stereo_block_is_taken_as_it_is():
    rate = 48000
    x = np.concatenate((silence(rate, 30), key("A", 60, rate), silence(rate, 50)))
    stereo = np.stack((np.zeros_like(x), x), axis=1)  # the recorder's (n, 2) blocks
    [(tone, _)] = detect(stereo[:, 1], rate)
    assert tone.digit == "A" and abs(tone.start - ms(rate, 30)) <= ms(rate, 2)
