"""call_route: where a call's audio goes: Apple's speaker override and ``defaultToSpeaker``.

A ``playAndRecord`` session's route is its policy's ``[route]`` preferences (a Bluetooth
headset, a USB headset, wired headphones, then the receiver, then the user's default). This
plugin adds, as AVAudioSession:

* ``OverrideOutputAudioPort("speaker")`` (``overrideOutputAudioPort(.speaker)``): the output
  is the built-in speaker and the input the built-in microphone, whatever is plugged in, when
  they are present (when not, the preferences decide); ``none`` ends the override;
* the option ``defaultToSpeaker``: a call without a headset (no port listed before
  ``builtInReceiver`` in ``route.output`` is present) goes to the built-in speaker instead of
  the receiver. A policy without ``builtInReceiver`` in ``route.output`` is not changed by it.

Enabled by a ``[plugins.call_route]`` table in a category's policy; it decides that
category's routes. The shipped ``playAndRecord`` policy enables it. Other categories do not
take the override (the D-Bus API answers ``Error.IncompatibleCategoryOption``).

Settings: none (the table is empty).

Example::

    [plugins.call_route]
"""

from __future__ import annotations

import logging

from audiopolicyd import hookimpl
from audiopolicyd.route import (
    BUILT_IN_MIC, BUILT_IN_RECEIVER, BUILT_IN_SPEAKER, OUTPUT, OVERRIDE_SPEAKER, PortChoice,
)
from audiopolicyd.routing.choose import by_preference, first_of_type

from ._session_option import options_hook, settings_hook

logger = logging.getLogger(__name__)

TABLE = "call_route"
OPTION = "defaultToSpeaker"

register_policy_settings = settings_hook(TABLE)
register_session_options = options_hook(OPTION)


@hookimpl(tryfirst=True)
def choose_route(direction, request, policy):
    if request.override == OVERRIDE_SPEAKER:
        wanted = BUILT_IN_SPEAKER if direction == OUTPUT else BUILT_IN_MIC
        port = first_of_type(request, direction, wanted)
        if port is not None:
            return PortChoice(port, f"{wanted}: the session's output override (speaker)")
        return None
    preferences = policy.route.output
    if direction != OUTPUT or OPTION not in request.options \
            or BUILT_IN_RECEIVER not in preferences:
        return None
    headset = preferences[:preferences.index(BUILT_IN_RECEIVER)]
    if by_preference(direction, request, policy, headset).port is not None:
        return None  # a headset is present: the preferences decide
    speaker = first_of_type(request, direction, BUILT_IN_SPEAKER)
    if speaker is None:
        return None
    return PortChoice(speaker, f"{BUILT_IN_SPEAKER}: defaultToSpeaker, no port before "
                               f"{BUILT_IN_RECEIVER} in {policy.category}'s route.output "
                               "present")
