"""A recording's parameters: SWML's names, defaults and bounds; every bad one named."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiopolicyd.errors import InvalidArgument
from audiopolicyd.recorder.params import MAX_LENGTH_BOUND_S, PARAMS, RecordParams, parse


def test_defaults_are_swmls():
    p = parse({})
    assert p == RecordParams()
    assert (p.stereo, p.format, p.direction, p.terminators, p.beep) == \
        (False, "wav", "speak", "#", False)
    assert (p.input_sensitivity, p.initial_timeout_s, p.end_silence_timeout_s) == (50.0, 4.0, 1.0)
    assert p.max_length_s == MAX_LENGTH_BOUND_S and not p.background and p.status_url == ""
    assert p.microphone and not p.monitor


def test_every_param_is_read():
    p = parse({"stereo": True, "format": "mp3", "direction": "listen", "terminators": "*#1",
               "beep": True, "input_sensitivity": 80.5, "initial_timeout": 2,
               "end_silence_timeout": 0.5, "max_length": 30.0,
               "status_url": "https://example.org/cb?x=1", "background": True})
    assert p == RecordParams(True, "mp3", "listen", "*#1", True, 80.5, 2.0, 0.5, 30.0,
                             "https://example.org/cb?x=1", True)
    assert p.microphone and p.monitor  # stereo records both
    assert p.audio() == {"format": "mp3", "direction": "listen", "stereo": True}


def test_max_length_zero_means_the_bound_and_listen_needs_no_microphone():
    p = parse({"max_length": 0, "direction": "listen"})
    assert p.max_length_s == MAX_LENGTH_BOUND_S
    assert p.monitor and not p.microphone


@pytest.mark.parametrize("params, named", [
    ({"stereo": 1}, "stereo must be a boolean"),
    ({"format": "ogg"}, "format must be one of wav, mp3, mp4"),
    ({"format": 3}, "format must be a string"),
    ({"direction": "both"}, "direction must be one of speak, listen"),
    ({"terminators": "#x"}, "terminators takes DTMF digits"),
    ({"terminators": "#" * 17}, "terminators is 17 characters long"),
    ({"input_sensitivity": 100.5}, "input_sensitivity must be in 0..100"),
    ({"input_sensitivity": True}, "input_sensitivity must be a number"),
    ({"input_sensitivity": "50"}, "input_sensitivity must be a number"),
    ({"initial_timeout": -1.0}, "initial_timeout must be in 0..3600"),
    ({"end_silence_timeout": math.nan}, "end_silence_timeout must be in 0..3600"),
    ({"max_length": math.inf}, "max_length must be in 0..86400"),
    ({"max_length": 10 ** 400}, "max_length must be in 0..86400"),
    ({"status_url": "ftp://example.org/"}, "status_url"),
    ({"status_url": "file:///etc/passwd"}, "status_url"),
    ({"status_url": "http://"}, "status_url"),
    ({"status_url": "http://x/" + "a" * 3000}, "status_url"),
    ({"max_lenght": 3.0}, "'max_lenght' is not one of"),
    ({f"k{i}": 1 for i in range(33)}, "33 entries; the limit is 32"),
])
def test_a_bad_param_is_named(params, named):
    with pytest.raises(InvalidArgument) as info:
        parse(params)
    assert named in str(info.value)


def test_a_huge_unknown_key_is_quoted_cut():
    with pytest.raises(InvalidArgument) as info:
        parse({"x" * 100000: 1})
    assert len(str(info.value)) < 400


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(PARAMS + ("bogus",)),
                       st.one_of(st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                                 st.none(), st.lists(st.integers(), max_size=3)),
                       max_size=12))
def test_anything_parses_or_is_named(params):
    try:
        p = parse(params)
    except InvalidArgument as exc:
        assert "Record param" in str(exc)
    else:
        assert isinstance(p, RecordParams)
        assert 0 < p.max_length_s <= MAX_LENGTH_BOUND_S
        assert 0 <= p.input_sensitivity <= 100
