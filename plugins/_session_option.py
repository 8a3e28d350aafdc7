"""What the plugins of Apple's category options share (not a plugin itself).

Each option (``mixWithOthers``, ``duckOthers``, ``interruptSpokenAudioAndMixWithOthers``) is a
plugin of its own, enabled by an empty table; all three make the session that takes them
mixable, and explain their decisions as ``(session option): <option>``. Other plugins without
settings (the routing ones) take :func:`settings_hook` and :func:`options_hook` too.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from audiopolicyd import hookimpl
from audiopolicyd.model import Action, Session
from audiopolicyd.policy import Interaction, PolicySet

logger = logging.getLogger(__name__)

#: The settings of an option plugin: none (an empty table enables it).
NO_SETTINGS_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {}}
#: The "file" of an option's decision in explanations (``audiopolicyctl explain``).
SOURCE = "(session option)"


def settings_hook(table: str) -> Callable[[], dict[str, Any]]:
    """The plugin's ``register_policy_settings``: ``table``, with no settings."""
    @hookimpl
    def register_policy_settings() -> dict[str, Any]:
        return {table: NO_SETTINGS_SCHEMA}
    return register_policy_settings


def options_hook(option: str) -> Callable[[], tuple[str, ...]]:
    """The plugin's ``register_session_options``: ``option``."""
    @hookimpl
    def register_session_options() -> tuple[str, ...]:
        return (option,)
    return register_session_options


def mixability_hook(option: str) -> Callable[[Session], bool | None]:
    """The plugin's ``mixes_with_others``: a session that takes ``option`` mixes (Apple: each
    of these options implies ``mixWithOthers``)."""
    @hookimpl
    def mixes_with_others(session: Session) -> bool | None:
        return True if option in session.options else None
    return mixes_with_others


def interaction(option: str, action: Action, trigger: Session,
                policies: PolicySet) -> Interaction | None:
    """The option's decision for a session-level interaction: ``action``, with the trigger
    policy's ``[activation]`` duck level and ramp; None when the trigger does not take
    ``option``."""
    if option not in trigger.options:
        return None
    base = policies.policies[trigger.category].others
    return Interaction(action, base.duck_level, base.ramp_ms, SOURCE, option)
