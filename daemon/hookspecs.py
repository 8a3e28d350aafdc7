"""Every hook a plugin can implement, grouped by lifecycle.

Hooks are called with keyword arguments only, so specs can grow without breaking plugins. They
are synchronous and run on the daemon's event loop: an implementation must not block, and an
``async def`` implementation is never awaited. Plugins see :mod:`audiopolicyd.model` and
:mod:`audiopolicyd.policy` objects only; they never touch the audio server.

If an implementation raises, the error is logged with the plugin's name and that plugin is
skipped for the call; the daemon goes on (see :func:`audiopolicyd.pluginmanager.call_hook`).
"""

from __future__ import annotations

from typing import Any, Mapping

import pluggy

from .model import Session, Stream
from .policy import Interaction, PolicySet

hookspec = pluggy.HookspecMarker("audiopolicyd")


# -- loading policies ------------------------------------------------------------------------

@hookspec
def register_policy_settings() -> Mapping[str, Mapping[str, Any]] | None:
    """Declare the ``[plugins.<name>]`` tables this plugin reads from policy files.

    Called once when the plugin manager is built, before any policy is parsed. Results of all
    plugins are merged; a name declared twice is an error at start-up.

    :returns: table name -> JSON Schema (draft 2020-12) of that table, or None for no settings.
        The schema should set ``additionalProperties = false`` so misspelt keys are errors.
    """


# -- deciding --------------------------------------------------------------------------------

@hookspec(firstresult=True)
def classify_stream(stream: Stream, policies: PolicySet) -> tuple[str, str] | None:
    """Choose the category of a stream before the policies' ``[[classify]]`` rules run.

    Called on the event loop for every new stream and whenever a stream's properties change;
    must not block. Stops at the first non-None result. Not called for a server module's stream
    (:attr:`Stream.module` set): only a ``[[classify]]`` rule naming the module classifies it.

    :param stream: the stream to classify (read-only)
    :param policies: the policy set in force (read-only)
    :returns: ``(category, rule description)`` with a category the set defines, or None to leave
        the choice to the next plugin and then to the ``[[classify]]`` rules. A category that
        does not handle the stream's direction (:attr:`Policy.directions`: a recording put in
        ``playback``) is ignored with a warning, as an unknown one is.
    """


@hookspec(firstresult=True)
def decide_interaction(trigger: Session, victim: Session, stream: Stream,
                       interaction: Interaction, policies: PolicySet) -> Interaction | None:
    """Change what an active session does to one stream of another session.

    Called inside the engine's pure decision for every (active trigger, victim stream) pair the
    policy makes act (never for ``mix``: a plugin can soften or change an action, not invent
    one between sessions that mix), i.e. whenever the snapshot or the sessions change; must be
    fast and must not block. Stops at the first non-None result.

    :param trigger: the active session that acts (read-only)
    :param victim: the session that is acted on (read-only)
    :param stream: the victim's stream concerned (read-only)
    :param interaction: what the policy decided (read-only): action, duck level, ramp, and the
        file and key that decided it
    :param policies: the policy set in force (read-only); plugin settings are in
        ``policies.policies[category].plugins[name]``
    :returns: the interaction to apply instead (build it with :func:`dataclasses.replace`), or
        None to keep the policy's decision
    """
