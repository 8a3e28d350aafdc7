"""interrupt_spoken_audio: Apple's ``interruptSpokenAudioAndMixWithOthers`` category option.

An explicit session (sessions API) created with the option
``interruptSpokenAudioAndMixWithOthers`` interrupts the sessions it outranks that are in mode
``spokenAudio`` (a podcast or an audiobook pauses while a navigation prompt speaks, so that
no word is missed) and mixes with every other session, whatever its policy says it does to
them; it mixes with others itself too: sessions that outrank it treat it as mixable
(``activation.mixable_others``). Explanations name the option (``(session option):
interruptSpokenAudioAndMixWithOthers``). As
AVAudioSession.CategoryOptions.interruptSpokenAudioAndMixWithOthers, which implies
``mixWithOthers``.

``duckOthers`` wins over it; it wins over ``mixWithOthers``.

Enabled by a ``[plugins.interrupt_spoken_audio]`` table in a category's policy: it acts for
sessions of that category (as the acting session, and as the one whose mixability is asked).
The category must also list ``interruptSpokenAudioAndMixWithOthers`` in its ``options`` for
sessions to take it. The shipped ``playback``, ``playAndRecord`` and ``multiRoute`` policies
enable it.

Settings: none (the table is empty).

Example::

    [plugins.interrupt_spoken_audio]
"""

from __future__ import annotations

import logging

from audiopolicyd import hookimpl
from audiopolicyd.model import Action

from ._session_option import interaction, mixability_hook, options_hook, settings_hook

logger = logging.getLogger(__name__)

OPTION = "interruptSpokenAudioAndMixWithOthers"
TABLE = "interrupt_spoken_audio"
#: The mode whose sessions are interrupted (Apple's ``AVAudioSession.Mode.spokenAudio``).
SPOKEN_AUDIO = "spokenAudio"

register_policy_settings = settings_hook(TABLE)
mixes_with_others = mixability_hook(OPTION)
register_session_options = options_hook(OPTION)


@hookimpl
def decide_session_interaction(trigger, victim, policies):
    action = Action.INTERRUPT if victim.mode == SPOKEN_AUDIO else Action.MIX
    return interaction(OPTION, action, trigger, policies)
