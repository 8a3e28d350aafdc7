"""Every hook a plugin can implement, grouped by lifecycle.

Hooks are called with keyword arguments only, so specs can grow without breaking plugins. They
are synchronous and run on the daemon's event loop: an implementation must not block, and an
``async def`` implementation is never awaited. Plugins see :mod:`audiopolicyd.model` and
:mod:`audiopolicyd.policy` objects only; they never touch the audio server.

Which implementations are called (see :mod:`audiopolicyd.pluginmanager`): a plugin that
declares a settings table is called only for a category whose policy names that table
(``[plugins.<table>]``, possibly empty), and gets that table as ``settings``; each hook below
says which category's policy counts (the trigger's, the victim's, ...). A plugin that declares
no table is called for every category, with empty ``settings``. Every hook with a ``settings``
parameter may be implemented without it (pluggy passes only the arguments an implementation
names).

If an implementation raises, the error is logged with the plugin's name and that plugin is
skipped for the call; the daemon goes on (see :func:`audiopolicyd.pluginmanager.call_for`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pluggy

from .model import Session, Stream
from .policy import Interaction, Policy, PolicySet
from .route import PortChoice, RouteChange, RoutedStream, RouteReaction, RouteRequest

hookspec = pluggy.HookspecMarker("audiopolicyd")


# -- loading policies ------------------------------------------------------------------------

@hookspec
def register_policy_settings() -> Mapping[str, Mapping[str, Any]] | None:
    """Declare the ``[plugins.<name>]`` table this plugin reads from policy files.

    Called when the plugin manager's set of plugins is complete, before any policy is parsed;
    the result is kept until a plugin is registered or unregistered. Concerns no category: every
    plugin's implementation is called. Results of all plugins are merged; a table declared by
    two plugins, or several tables declared by one, is an error at start-up. Naming the table
    in a policy is what enables the plugin for that policy's category.

    :returns: table name -> JSON Schema (draft 2020-12) of that table (one entry), or None for
        a plugin with no table (called for every category). The schema should set
        ``additionalProperties = false`` so misspelt keys are errors; a plugin without
        settings declares ``{"type": "object", "additionalProperties": false}``, enabled by an
        empty table. If it raises, the plugin is never called.
    """


@hookspec
def register_session_options() -> tuple[str, ...] | None:
    """Name the category options this plugin gives meaning to.

    Options are Apple's identifiers (``duckOthers``, ``mixWithOthers``...). Called once, like :func:`register_policy_settings`; concerns no category. It changes no
    decision: it lets the daemon warn about a policy that lets sessions take an option (its
    ``options``) without naming the table of the plugin that acts on it, so that the option
    would be accepted and do nothing (a policy copied before the option became a plugin).

    :returns: the options, or None for none. If it raises, the error is logged and the
        plugin's options are not checked.
    """


# -- the microphone -------------------------------------------------------------------------

@hookspec(firstresult=True)
def ask_microphone_on_activation(session: Session, policy: Policy,
                                 settings: Mapping[str, Any]) -> bool | None:
    """Say whether an app's session asks for the microphone when it first becomes active.

    Called on the event loop once per explicit session, when an app's ``SetActive(true)``
    first leaves it active and its app's decision is not known yet; must not block. Stops at
    the first non-None result. The session's own category's policy counts. The daemon does
    the asking (one request per app, shown to the prompt agent); the plugin only decides.
    As Apple, which asks the first time an app's session attempts to record.

    :param session: the session that became active (read-only)
    :param policy: its category's policy (read-only)
    :param settings: the plugin's table in that policy (read-only)
    :returns: True to ask now, False not to, None to leave it to the next plugin (no plugin:
        not asked on activation; the app is still asked when one of its streams records)
    """


# -- deciding --------------------------------------------------------------------------------

@hookspec(firstresult=True)
def classify_stream(stream: Stream, policies: PolicySet,
                    settings_by_category: Mapping[str, Mapping[str, Any]]
                    ) -> tuple[str, str] | None:
    """Choose the category of a stream before the policies' ``[[classify]]`` rules run.

    Called on the event loop for every new stream and whenever a stream's properties change;
    must not block. Stops at the first non-None result. Not called for a server module's stream
    (:attr:`Stream.module` set): only a ``[[classify]]`` rule naming the module classifies it.
    The category that counts is the one the plugin answers: a plugin with a table is called
    when some policy names it, and may answer only a category whose policy does (another
    answer is ignored with a warning and the rules decide).

    :param stream: the stream to classify (read-only)
    :param policies: the policy set in force (read-only)
    :param settings_by_category: each category whose policy enables the plugin -> the
        plugin's table in that policy (read-only; empty for a plugin without a table)
    :returns: ``(category, rule description)`` with a category the set defines, or None to leave
        the choice to the next plugin and then to the ``[[classify]]`` rules. A category that
        does not handle the stream's direction (:attr:`Policy.directions`: a recording put in
        ``playback``) is ignored with a warning, as an unknown one is.
    """


@hookspec(firstresult=True)
def mixes_with_others(session: Session, policy: Policy,
                      settings: Mapping[str, Any]) -> bool | None:
    """Say whether a session mixes with others (AVAudioSession's mixability).

    Called inside the engine's pure decisions whenever a session's mixability matters: for a
    victim, to choose its acting session's ``activation.mixable_others`` over
    ``activation.others``; for AVAudioSession's ``secondaryAudioShouldBeSilencedHint`` (an
    active non-mixable session is primary audio); to name a refused activation
    (``CannotInterruptOthers`` for a mixable session). Must be fast and must not block. Stops
    at the first non-None result. The session's own category's policy counts.

    :param session: the session concerned (read-only)
    :param policy: its category's policy (read-only); ``policy.mixes_with_others`` is the
        answer when no plugin gives one
    :param settings: the plugin's table in that policy (read-only)
    :returns: True or False, or None to leave it to the next plugin and then to the policy
    """


@hookspec(firstresult=True)
def decide_session_interaction(trigger: Session, victim: Session, interaction: Interaction,
                               policies: PolicySet,
                               settings: Mapping[str, Any]) -> Interaction | None:
    """Change what a session does to another session, before any stream is considered.

    Called inside the engine's pure decisions for every pair in which ``trigger`` outranks
    ``victim`` (higher priority, or the same and a later activation; apps never act on
    themselves), whether or not the trigger is active: to decide the streams' effects, which
    explicit sessions are interrupted, and which active sessions block an activation. Called
    for every action, ``mix`` included (Apple's ``duckOthers`` ducks sessions the policy would
    mix with). Must be fast and must not block. Stops at the first non-None result; order among
    plugins is pluggy's (``tryfirst``, then the last registered, then ``trylast``). The
    trigger's category's policy counts.

    :param trigger: the session that acts (read-only)
    :param victim: the session acted on (read-only)
    :param interaction: what the trigger's policy decided (read-only): its
        ``overrides.<victim category>``, else ``activation.mixable_others`` for a mixable
        victim, else ``activation.others``
    :param policies: the policy set in force (read-only)
    :param settings: the plugin's table in the trigger's policy (read-only)
    :returns: the interaction to apply instead, or None to keep the policy's decision
    """


@hookspec(firstresult=True)
def decide_interaction(trigger: Session, victim: Session, stream: Stream,
                       interaction: Interaction, policies: PolicySet,
                       settings: Mapping[str, Any]) -> Interaction | None:
    """Change what an active session does to one stream of another session.

    Called inside the engine's pure decision for every (active trigger, victim stream) pair the
    session-level decision (policy, then :func:`decide_session_interaction`) makes act (never
    for ``mix``: a plugin can soften or change an action here, not invent one between sessions
    that mix), i.e. whenever the snapshot or the sessions change; must be fast and must not
    block. Stops at the first non-None result. The trigger's category's policy counts.

    :param trigger: the active session that acts (read-only)
    :param victim: the session that is acted on (read-only)
    :param stream: the victim's stream concerned (read-only)
    :param interaction: what the session-level decision gave (read-only): action, duck level,
        ramp, and the file and key that decided it
    :param policies: the policy set in force (read-only)
    :param settings: the plugin's table in the trigger's policy (read-only)
    :returns: the interaction to apply instead (build it with :func:`dataclasses.replace`), or
        None to keep the policy's decision
    """


# -- routing ---------------------------------------------------------------------------------

@hookspec(firstresult=True)
def choose_route(direction: str, request: RouteRequest, policy: Policy,
                 settings: Mapping[str, Any]) -> PortChoice | None:
    """Choose the output or the input of a category's route (or of one session's).

    Called inside the pure routing decision (:func:`audiopolicyd.routing.decide.decide_route`)
    once per direction the category uses, whenever the devices, the user's default devices or
    a session's mode, options, override or preferred input change; must be fast and must not
    block. Stops at the first non-None result. The category's own policy counts (the
    ``playAndRecord`` speaker override and ``defaultToSpeaker``: ``call_route``). With no
    answer the default rule decides: the preferred input, then the policy's ``[route]``
    preferences (:mod:`audiopolicyd.routing.choose`).

    :param direction: ``output`` or ``input``
    :param request: what the route is decided from: the ports present in both directions, the
        user's default devices (ids), the session's mode, options, override and preferred input
        (read-only)
    :param policy: the category's policy (read-only); ``policy.route`` holds its preferences
    :param settings: the plugin's table in that policy (read-only)
    :returns: the choice (a :class:`~audiopolicyd.route.PortChoice` whose port is one of
        ``request``'s ports of ``direction``, or None as the port for "nothing suitable"),
        with a short reason starting with the port type; or None to leave it to the next
        plugin and the default rule. An answer naming a port that is not present is ignored
        with a warning
    """


@hookspec
def react_to_route_change(change: RouteChange, streams: tuple[RoutedStream, ...],
                          policy: Policy, settings: Mapping[str, Any]
                          ) -> Iterable[RouteReaction] | None:
    """Decide what happens to a category's streams when its route changes.

    Called once per category whose route changed (:func:`audiopolicyd.routing.choose.
    route_change`), when the runtime learns of the change (the removal of a device, before
    the server has moved its streams elsewhere when it can); must be fast and must not block.
    Every enabled plugin is called and all reactions apply. The category's own policy counts
    (Apple's ``prefersInterruptionOnRouteDisconnect``: ``pause_on_route_disconnect``). The
    runtime applies the reactions (mute, pause through MPRIS) and the route change itself;
    plugins never touch the server.

    :param change: the category's previous and current decisions, the reason, the devices
        that went and appeared (read-only)
    :param streams: the category's streams, each with the device it was on before the change
        (read-only)
    :param policy: the category's policy (read-only)
    :param settings: the plugin's table in that policy (read-only)
    :returns: reactions for some of ``streams`` (those naming another stream are ignored), or
        None for none
    """


@hookspec(firstresult=True)
def propose_processing(session: Session, policy: Policy,
                       settings: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Propose the signal processing a session's streams get while it is active.

    Called when a session becomes active and when its category or mode changes (the runtime
    loads and removes the processing); must be fast and must not block. Stops at the
    first non-None result. Not called for a session in mode ``measurement``, which never gets
    processing (Apple's measurement mode minimises it). The session's own category's policy
    counts (``echo_cancel_for_chat`` in ``playAndRecord``).

    :param session: the session (read-only)
    :param policy: its category's policy (read-only)
    :param settings: the plugin's table in that policy (read-only)
    :returns: names from :data:`audiopolicyd.route.PROCESSING` (``("echo-cancel",)``), an
        empty tuple for "none" (later plugins are not asked), or None to leave it to the next
        plugin (no answer: none). Unknown names are ignored with a warning
    """
