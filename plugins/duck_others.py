"""duck_others: Apple's ``duckOthers`` category option.

An explicit session (sessions API) created with the option ``duckOthers`` ducks the audio of
every session it outranks, whatever its policy says it does to them (a navigation prompt
lowers the music instead of pausing it), and mixes with others itself: sessions that outrank
it treat it as mixable (``activation.mixable_others``). The duck level and ramp are the
trigger's ``[activation]`` ``duck_level`` and ``duck_ramp_ms``; explanations name the option
(``(session option): duckOthers``). As AVAudioSession.CategoryOptions.duckOthers, which
implies ``mixWithOthers``.

It wins over the other option plugins (``tryfirst``): a session with ``duckOthers`` and
``interruptSpokenAudioAndMixWithOthers`` ducks everyone.

Enabled by a ``[plugins.duck_others]`` table in a category's policy: it acts for sessions of
that category (as the acting session, and as the one whose mixability is asked). The category
must also list ``duckOthers`` in its ``options`` for sessions to take it. The shipped
``playback``, ``playAndRecord`` and ``multiRoute`` policies enable it.

Settings: none (the table is empty).

Example::

    [plugins.duck_others]
"""

from __future__ import annotations

import logging

from audiopolicyd import hookimpl
from audiopolicyd.model import Action

from ._session_option import interaction, mixability_hook, options_hook, settings_hook

logger = logging.getLogger(__name__)

OPTION = "duckOthers"
TABLE = "duck_others"

register_policy_settings = settings_hook(TABLE)
mixes_with_others = mixability_hook(OPTION)
register_session_options = options_hook(OPTION)


@hookimpl(tryfirst=True)
def decide_session_interaction(trigger, policies):
    return interaction(OPTION, Action.DUCK, trigger, policies)
