"""A recording's parameters: SWML's ``record`` verb, checked (the ``record`` seed in
shared/seeds/, SignalWire's reference).

Names and meanings are SWML's; the D-Bus types are the issue's (``Manager.Record``'s
``a{sv}``). Each parameter, its type, default and bound:

====================== ===== ========== =====================================================
param                  type  default    bound and meaning
====================== ===== ========== =====================================================
``stereo``             b     false      left: what the user says, right: what they hear
``format``             s     ``wav``    ``wav`` | ``mp3`` | ``mp4``
``direction``          s     ``speak``  ``speak`` (the microphone) | ``listen`` (the output's
                                        monitor); ignored in stereo, which records both
``terminators``        s     ``#``      DTMF digits (``0-9 * # A-D``) that end the recording;
                                        at most 16; empty: none (SWML's default is ``#``:
                                        its voicemail example says "press hash to end")
``beep``               b     false      a beep on the output before recording starts
``input_sensitivity``  d     50.0       0.0-100.0; larger: quieter sound counts as voice
``initial_timeout``    d     4.0        seconds, 0-3600, to wait for speech; 0: wait forever
``end_silence_timeout``d     1.0        seconds, 0-3600, of silence after speech that end it;
                                        0: silence never ends it
``max_length``         d     0          seconds, 0-86400; 0: the bound, 86400 (one day)
``status_url``         s     ''         http or https URL for status POSTs, at most 2048
                                        characters; '': none
``background``         b     false      SWML's ``record_call``: the call returns at once
====================== ===== ========== =====================================================

A D-Bus ``d`` parameter also takes an integer (``i``, ``u``, ``x``, ``t``: a client that
sends ``3`` means 3.0 s); nothing else is converted. Unknown keys are errors (a misspelt
``max_lenght`` must not record for a day).

Pure: no D-Bus, no I/O. Errors are :class:`~audiopolicyd.errors.InvalidArgument` naming the
parameter, which the D-Bus adapter answers as ``Error.InvalidArgument``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InvalidArgument
from ..limits import quote
from .status import DIRECTIONS, FORMATS, check_status_url

#: DTMF's sixteen digits (ITU-T Q.23).
DTMF_DIGITS = "0123456789*#ABCD"
TERMINATORS_CHARS = 16
#: Seconds: the bound of both timeouts, and of ``max_length`` (also its meaning when 0).
TIMEOUT_BOUND_S = 3600.0
MAX_LENGTH_BOUND_S = 86400.0
#: Entries a params dictionary may have (there are 12 parameters).
PARAMS_ITEMS = 32


@dataclass(frozen=True)
class RecordParams:
    """One recording's parameters, checked (see the module docstring for each).

    Seconds are seconds (floats); ``max_length_s`` is never 0 (0 was given as the bound).
    """

    stereo: bool = False
    format: str = "wav"
    direction: str = "speak"
    terminators: str = "#"
    beep: bool = False
    input_sensitivity: float = 50.0
    initial_timeout_s: float = 4.0
    end_silence_timeout_s: float = 1.0
    max_length_s: float = MAX_LENGTH_BOUND_S
    status_url: str = ""
    background: bool = False

    @property
    def microphone(self) -> bool:
        """Whether it records the microphone (``speak``, or stereo's left channel)."""
        return self.stereo or self.direction == "speak"

    @property
    def monitor(self) -> bool:
        """Whether it records what the user hears (``listen``, or stereo's right channel)."""
        return self.stereo or self.direction == "listen"

    def audio(self) -> dict[str, Any]:
        """The status payload's ``record.audio``: format, direction, stereo."""
        return {"format": self.format, "direction": self.direction, "stereo": self.stereo}


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"Record param {name} must be a boolean, not "
                              f"{type(value).__name__}")
    return value


def _text(name: str, value: Any, chars: int) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"Record param {name} must be a string, not "
                              f"{type(value).__name__}")
    if len(value) > chars:
        raise InvalidArgument(f"Record param {name} is {len(value)} characters long; the "
                              f"limit is {chars}")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    value = _text(name, value, 16)
    if value not in choices:
        raise InvalidArgument(f"Record param {name} must be one of {', '.join(choices)}, not "
                              f"{quote(value)}")
    return value


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgument(f"Record param {name} must be a number (d), not "
                              f"{type(value).__name__}")
    number = float(value) if abs(value) < 1e300 else math.inf
    if not math.isfinite(number) or not low <= number <= high:
        raise InvalidArgument(f"Record param {name} must be in {low:g}..{high:g}, not "
                              f"{quote(value)}")
    return number


def _terminators(value: Any) -> str:
    value = _text("terminators", value, TERMINATORS_CHARS)
    wrong = sorted(set(value) - set(DTMF_DIGITS))
    if wrong:
        raise InvalidArgument(f"Record param terminators takes DTMF digits ({DTMF_DIGITS}), "
                              f"not {quote(''.join(wrong))}")
    return value


def _status_url(value: Any) -> str:
    if value == "":
        return value
    try:
        return check_status_url(value)
    except ValueError as exc:
        raise InvalidArgument(f"Record param {exc}") from None


#: param -> (field of RecordParams, checker)
_CHECKS: dict[str, tuple[str, Any]] = {
    "stereo": ("stereo", lambda v: _bool("stereo", v)),
    "format": ("format", lambda v: _choice("format", v, FORMATS)),
    "direction": ("direction", lambda v: _choice("direction", v, DIRECTIONS)),
    "terminators": ("terminators", _terminators),
    "beep": ("beep", lambda v: _bool("beep", v)),
    "input_sensitivity": ("input_sensitivity",
                          lambda v: _number("input_sensitivity", v, 0.0, 100.0)),
    "initial_timeout": ("initial_timeout_s",
                        lambda v: _number("initial_timeout", v, 0.0, TIMEOUT_BOUND_S)),
    "end_silence_timeout": ("end_silence_timeout_s",
                            lambda v: _number("end_silence_timeout", v, 0.0, TIMEOUT_BOUND_S)),
    "max_length": ("max_length_s",
                   lambda v: _number("max_length", v, 0.0, MAX_LENGTH_BOUND_S)
                   or MAX_LENGTH_BOUND_S),
    "status_url": ("status_url", _status_url),
    "background": ("background", lambda v: _bool("background", v)),
}

#: Every parameter's name, as SWML spells it.
PARAMS = tuple(_CHECKS)


def parse(params: Mapping[str, Any]) -> RecordParams:
    """Check a recording's parameters (plain values: D-Bus variants already unwrapped).

    :param params: SWML's names (:data:`PARAMS`); missing ones take their default
    :returns: the checked parameters
    :raises InvalidArgument: an unknown name, a value of the wrong type or out of its bound,
        more than :data:`PARAMS_ITEMS` entries; the message names the parameter
    """
    if not isinstance(params, Mapping):
        raise InvalidArgument(f"Record params must be a dictionary, not {type(params).__name__}")
    if len(params) > PARAMS_ITEMS:
        raise InvalidArgument(f"Record params has {len(params)} entries; the limit is "
                              f"{PARAMS_ITEMS}")
    fields: dict[str, Any] = {}
    for name, value in params.items():
        check = _CHECKS.get(name) if isinstance(name, str) else None
        if check is None:
            raise InvalidArgument(f"Record param {quote(name)} is not one of "
                                  f"{', '.join(PARAMS)}")
        fields[check[0]] = check[1](value)
    return RecordParams(**fields)
