"""record: keep a few kinds of sound audible while a recording silences everything else.

Apple's ``record`` category silences *virtually* all output while it is active. This plugin
decides what "virtually" leaves out: streams whose ``media.role`` is listed in
``keep_audible_roles`` are mixed instead of silenced (a screen reader must keep talking while
you record a voice memo).

Enabled by a ``[plugins.record]`` table in a category's policy; it then acts when a session of
that category (the trigger) silences another session's stream. The shipped ``record.toml``
enables it.

Settings, in the enabling category's policy file:

``keep_audible_roles``
    list of strings (``media.role`` values), default ``[]``, at most 64 entries. Streams with
    one of these roles are not silenced by an active ``record`` session.

Example::

    [plugins.record]
    keep_audible_roles = ["a11y"]
"""

from __future__ import annotations

import dataclasses
import logging

from audiopolicyd import hookimpl
from audiopolicyd.model import Action

logger = logging.getLogger(__name__)

SETTINGS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "keep_audible_roles": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 64},
            "maxItems": 64,
            "uniqueItems": True,
        },
    },
}


@hookimpl
def register_policy_settings():
    return {"record": SETTINGS_SCHEMA}


@hookimpl
def decide_interaction(stream, interaction, settings):
    if interaction.action is not Action.SILENCE:
        return None
    if stream.properties.get("media.role") in settings.get("keep_audible_roles", ()):
        return dataclasses.replace(interaction, action=Action.MIX,
                                   rule="plugins.record.keep_audible_roles")
    return None
