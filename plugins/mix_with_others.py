"""mix_with_others: Apple's ``mixWithOthers`` category option.

An explicit session (sessions API) created with the option ``mixWithOthers`` mixes with every
session it outranks, whatever its policy says it does to them (a non-mixable ``playback``
session that plays beside the music instead of interrupting it), and is mixable itself:
sessions that outrank it treat it as mixable (``activation.mixable_others``: a call ducks it
instead of interrupting it), and it is not primary audio for
``secondaryAudioShouldBeSilencedHint``. Explanations name the option (``(session option):
mixWithOthers``). As AVAudioSession.CategoryOptions.mixWithOthers.

The other option plugins win over it (``trylast``): ``duckOthers`` and
``interruptSpokenAudioAndMixWithOthers`` both imply mixing and say more.

Enabled by a ``[plugins.mix_with_others]`` table in a category's policy: it acts for sessions
of that category (as the acting session, and as the one whose mixability is asked). The
category must also list ``mixWithOthers`` in its ``options`` for sessions to take it. The
shipped ``playback``, ``playAndRecord`` and ``multiRoute`` policies enable it.

Settings: none (the table is empty).

Example::

    [plugins.mix_with_others]
"""

from __future__ import annotations

import logging

from audiopolicyd import hookimpl
from audiopolicyd.model import Action

from ._session_option import interaction, mixability_hook, options_hook, settings_hook

logger = logging.getLogger(__name__)

OPTION = "mixWithOthers"
TABLE = "mix_with_others"

register_policy_settings = settings_hook(TABLE)
mixes_with_others = mixability_hook(OPTION)
register_session_options = options_hook(OPTION)


@hookimpl(trylast=True)
def decide_session_interaction(trigger, policies):
    return interaction(OPTION, Action.MIX, trigger, policies)
