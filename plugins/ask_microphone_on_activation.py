"""ask_microphone_on_activation: ask for the microphone when a recording session starts.

An app that creates a session in a category that records (its policy says ``records =
true``) and activates it is asked for the microphone then, once per session, without waiting
for its first recording stream: the user's answer is usually in before the app opens the
microphone. As Apple, which asks the first time an app's session attempts to record
(``AVAudioApplication.requestRecordPermission``). Without it, an app is still asked, when a
stream of it records; apps the user has decided about are never asked.

Enabled by an ``[plugins.ask_microphone_on_activation]`` table in a category's policy; it acts
for that category's sessions, and only when the policy records. The shipped ``record``,
``playAndRecord``, ``multiRoute`` and ``audioProcessing`` policies enable it.

Settings: none (the table is empty).

Example::

    [plugins.ask_microphone_on_activation]
"""

from __future__ import annotations

import logging

from audiopolicyd import hookimpl

logger = logging.getLogger(__name__)

TABLE = "ask_microphone_on_activation"


@hookimpl
def register_policy_settings():
    return {TABLE: {"type": "object", "additionalProperties": False, "properties": {}}}


@hookimpl
def ask_microphone_on_activation(policy):
    return True if policy.records else None
