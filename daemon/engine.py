"""The decision: snapshot + sessions + policies -> the desired effect on every stream.

Pure and synchronous: no I/O, no clock. The runtime (:mod:`audiopolicyd.runtime`) applies the
difference between two decisions to the server.

Rules, in AVAudioSession terms (see docs/policies.md):

* Only an *active* session acts, and only on sessions it outranks: higher ``priority``, or the
  same priority and a later activation (the last app to activate wins, as on iOS). Sessions of
  the same app never act on each other.
* What it does comes from its policy: a per-pair ``overrides.<victim category>``, else
  ``activation.others`` for non-mixable victims and ``activation.mixable_others`` for mixable
  ones (a session is mixable when its policy says ``mixes_with_others``, or a plugin its policy
  enables says so: :func:`~audiopolicyd.hookspecs.mixes_with_others`). The plugins the
  trigger's policy enables may then change it per session
  (:func:`~audiopolicyd.hookspecs.decide_session_interaction`: Apple's category options
  ``duckOthers``, ``interruptSpokenAudioAndMixWithOthers``, ``mixWithOthers`` are such
  plugins, see ``plugins/``) and per stream
  (:func:`~audiopolicyd.hookspecs.decide_interaction`).
* ``duck`` multiplies the victim's output gain by the duck level (several duckers multiply);
  ``silence`` mutes its output; ``interrupt`` pauses the stream's MPRIS player, or mutes the
  stream when its app has no player.
* A category whose policy says ``plays = false`` is never audible; ``records = false`` gets no
  microphone input (monitor recordings excepted).
* A server module's stream (``module-loopback``, ``module-echo-cancel``) is infrastructure: it
  is in no session, so it neither acts nor is acted on, unless a ``[[classify]]`` rule names
  its module (``module = [...]``). Plugins do not classify module streams. Nor is the
  daemon's own stream (:attr:`~audiopolicyd.model.Stream.own`: the recorder's capture): the
  recording's explicit session acts for it (:mod:`audiopolicyd.recorder`).

Every function takes the plugin manager as ``pm``; without one (None) no plugin is called and
the policies alone decide.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .model import NEUTRAL, Action, Effect, Reason, Session, Snapshot, Stream, StreamKind
from .pluginmanager import PluginManager, call_for, classify_with_plugins
from .policy import INFRASTRUCTURE, Interaction, Policy, PolicySet, direction_of

logger = logging.getLogger(__name__)


def classify(snapshot: Snapshot, policies: PolicySet,
             pm: PluginManager | None = None,
             cache: dict[str, tuple[Stream, tuple[str, str]]] | None = None,
             ) -> dict[str, tuple[str, str]]:
    """Classify every stream of a snapshot: plugins first, then ``[[classify]]`` rules.

    A server module's stream goes to the rules only: only a rule naming its module classifies
    it; otherwise its category is :data:`~audiopolicyd.policy.INFRASTRUCTURE` (``""``). A
    category never takes a stream of a direction it does not handle
    (:func:`~audiopolicyd.policy.handled_directions`): a plugin's answer that says otherwise is
    ignored, with a warning, as the rules ignore such streams.

    :param cache: optional memo of ``key -> (stream properties seen, result)``; entries whose
        properties are unchanged are reused, entries of vanished streams are dropped. The caller
        clears it when the policy set changes.
    :returns: stream key -> ``(category, rule)``
    """
    out: dict[str, tuple[str, str]] = {}
    for key, stream in snapshot.streams.items():
        hit = cache.get(key) if cache is not None else None
        if hit is not None and hit[0].properties == stream.properties \
                and hit[0].monitor == stream.monitor and hit[0].module == stream.module:
            out[key] = hit[1]
            continue
        result = None
        if stream.own:
            out[key] = (INFRASTRUCTURE, "the daemon's own stream (a recorder's capture)")
            continue
        if pm is not None and not stream.module:
            result = classify_with_plugins(pm, stream, policies)
            if result is not None and result[0] not in policies.policies:
                logger.warning("plugin classified %s as unknown category %r; ignored",
                               key, result[0])
                result = None
            elif result is not None \
                    and direction_of(stream) not in policies.policies[result[0]].directions:
                # as for the rules: a category never takes a stream of a direction it does
                # not handle (a recording is not playback's, whoever says so)
                logger.warning("plugin classified %s (%s) as %r, which does not handle %s "
                               "streams; ignored", key, stream.label, result[0],
                               direction_of(stream))
                result = None
        out[key] = result or policies.classify(stream)
        if cache is not None:
            cache[key] = (stream, out[key])
    if cache is not None:
        for gone in set(cache) - set(out):
            del cache[gone]
    return out


def mixable(session: Session, policy: Policy, pm: PluginManager | None = None) -> bool:
    """True when the session mixes with others: a plugin its policy enables says so
    (:func:`~audiopolicyd.hookspecs.mixes_with_others`), else its policy's
    ``mixes_with_others``."""
    if pm is not None:
        said = call_for(pm, "mixes_with_others", policy, session=session, policy=policy)
        if said is not None:
            return bool(said)
    return policy.mixes_with_others


def _rank(session: Session, policy: Policy) -> tuple[int, int]:
    return (policy.priority, session.seq)


def interaction_for(trigger: Session, victim: Session, policies: PolicySet,
                    pm: PluginManager | None = None,
                    victim_mixes: bool | None = None) -> Interaction:
    """What ``trigger`` does to ``victim`` at the session level (before per-stream plugins).

    The trigger's policy decides for the victim's category and mixability; then the
    :func:`~audiopolicyd.hookspecs.decide_session_interaction` plugins the trigger's policy
    enables may change it (the shipped ones are Apple's option semantics: ``duckOthers``
    ducks everyone; ``interruptSpokenAudioAndMixWithOthers`` interrupts sessions in
    ``spokenAudio`` mode and mixes with the rest; ``mixWithOthers`` mixes).

    :param victim_mixes: the victim's :func:`mixable`, when the caller has it already
    """
    tpolicy = policies.policies[trigger.category]
    if victim_mixes is None:
        victim_mixes = mixable(victim, policies.policies[victim.category], pm)
    base = tpolicy.interaction(victim.category, victim_mixes)
    if pm is None:
        return base
    return call_for(pm, "decide_session_interaction", tpolicy, trigger=trigger, victim=victim,
                    interaction=base, policies=policies) or base


@dataclass
class _Acc:
    gain: float = 1.0
    ramp_ms: int = 0
    mute: bool = False
    pause: bool = False
    reasons: list[Reason] = field(default_factory=list)

    def add(self, action: Action, stream: Stream, has_player: bool, reason: Reason,
            level: float = 1.0, ramp_ms: int = 0) -> None:
        if action is Action.DUCK:
            if stream.kind is not StreamKind.SINK_INPUT:
                return
            self.gain *= level
            self.ramp_ms = max(self.ramp_ms, ramp_ms)
        elif action is Action.SILENCE:
            if stream.kind is not StreamKind.SINK_INPUT:
                return
            self.mute = True
        elif action is Action.INTERRUPT:
            if has_player:
                self.pause = True
            else:
                self.mute = True
        else:
            return
        self.reasons.append(reason)

    def effect(self) -> Effect:
        if not self.reasons:
            return NEUTRAL
        return Effect(gain=self.gain, ramp_ms=self.ramp_ms, mute=self.mute, pause=self.pause,
                      reasons=tuple(self.reasons))


def decide(snapshot: Snapshot, sessions: Iterable[Session], policies: PolicySet,
           pm: PluginManager | None = None) -> dict[str, Effect]:
    """The desired effect on every stream of ``snapshot``.

    :param snapshot: the audio graph (read-only)
    :param sessions: every session, implicit and explicit, each listing its streams
    :param policies: the policy set in force
    :param pm: plugin manager for the interaction hooks (None: the policies alone)
    :returns: stream key -> :class:`~audiopolicyd.model.Effect` for every stream of the
        snapshot (the neutral effect for streams nothing acts on)
    """
    sessions = list(sessions)
    acc: dict[str, _Acc] = {key: _Acc() for key in snapshot.streams}
    has_player = {key: snapshot.player_for(s) is not None for key, s in snapshot.streams.items()}

    for session in sessions:
        policy = policies.policies[session.category]
        for key in session.streams:
            stream = snapshot.streams.get(key)
            if stream is None:
                continue
            if stream.kind is StreamKind.SINK_INPUT and not policy.plays:
                acc[key].add(Action.SILENCE, stream, False,
                             Reason("mute", session.id, session.category, policy.file, "plays"))
            elif (stream.kind is StreamKind.SOURCE_OUTPUT and not stream.monitor
                  and not policy.records):
                acc[key].mute = True
                acc[key].reasons.append(
                    Reason("mute", session.id, session.category, policy.file, "records"))

    triggers = [s for s in sessions if s.active]
    for victim in sessions:
        vpolicy = policies.policies[victim.category]
        victim_mixes = None
        for trigger in triggers:
            if trigger.app_key == victim.app_key:
                continue
            tpolicy = policies.policies[trigger.category]
            if _rank(trigger, tpolicy) <= _rank(victim, vpolicy):
                continue
            if victim_mixes is None:
                victim_mixes = mixable(victim, vpolicy, pm)
            base = interaction_for(trigger, victim, policies, pm, victim_mixes)
            if base.action is Action.MIX:
                continue  # nothing to do, and nothing for plugins to change
            for key in victim.streams:
                stream = snapshot.streams.get(key)
                if stream is None:
                    continue
                inter = base
                if pm is not None:
                    inter = call_for(pm, "decide_interaction", tpolicy, trigger=trigger,
                                     victim=victim, stream=stream, interaction=base,
                                     policies=policies) or base
                reason = Reason(inter.action.value, trigger.id, trigger.category, inter.file,
                                inter.rule)
                acc[key].add(inter.action, stream, has_player[key], reason,
                             inter.duck_level, inter.ramp_ms)
    return {key: a.effect() for key, a in acc.items()}


def players_to_pause(snapshot: Snapshot, effects: Mapping[str, Effect]) -> dict[str, set[str]]:
    """MPRIS players that the effects want paused.

    :returns: player bus name -> ids of the trigger sessions that interrupt it
    """
    out: dict[str, set[str]] = {}
    for key, effect in effects.items():
        if not effect.pause:
            continue
        player = snapshot.player_for(snapshot.streams[key])
        if player is not None:
            out.setdefault(player.bus_name, set()).update(
                r.session for r in effect.reasons if r.action == Action.INTERRUPT.value)
    return out


# -- session-level rules (explicit sessions: interruptions, activation, hints) -------------------

#: Actions that interrupt an explicit session (it is told, and deactivated, as on iOS).
_INTERRUPTING = (Action.INTERRUPT, Action.SILENCE)


def _acts_on(trigger: Session, victim: Session, policies: PolicySet,
             pm: PluginManager | None) -> Interaction | None:
    """What ``trigger`` does to ``victim`` if it outranks it (regardless of activity)."""
    if trigger.app_key == victim.app_key or trigger.id == victim.id:
        return None
    tpolicy, vpolicy = policies.policies[trigger.category], policies.policies[victim.category]
    if _rank(trigger, tpolicy) <= _rank(victim, vpolicy):
        return None
    return interaction_for(trigger, victim, policies, pm)


def interruptions(sessions: Iterable[Session], policies: PolicySet,
                  pm: PluginManager | None = None) -> dict[str, set[str]]:
    """Which sessions are interrupted, and by whom.

    A session is interrupted by every active session that outranks it and whose interaction
    with it is ``interrupt`` or ``silence`` (AVAudioSession's interruption; ``duck`` and
    ``mix`` are not interruptions).

    :returns: victim session id -> ids of the active sessions interrupting it
    """
    sessions = list(sessions)
    out: dict[str, set[str]] = {}
    for trigger in sessions:
        if not trigger.active:
            continue
        for victim in sessions:
            inter = _acts_on(trigger, victim, policies, pm)
            if inter is not None and inter.action in _INTERRUPTING:
                out.setdefault(victim.id, set()).add(trigger.id)
    return out


def activation_blockers(candidate: Session, sessions: Iterable[Session],
                        policies: PolicySet, pm: PluginManager | None = None) -> list[Session]:
    """Active sessions of higher priority that would interrupt ``candidate`` if it activated.

    Activation below them fails (``InsufficientPriority``, or ``CannotInterruptOthers`` for a
    mixable candidate, as Apple names it) unless the caller asked to be delayed. Sessions of
    equal priority never block: the later activation wins, as on iOS.

    :param candidate: the session about to activate (its ``active`` and ``seq`` are ignored)
    """
    cpolicy = policies.policies[candidate.category]
    out = []
    for other in sessions:
        if not other.active or other.app_key == candidate.app_key or other.id == candidate.id:
            continue
        opolicy = policies.policies[other.category]
        if opolicy.priority <= cpolicy.priority:
            continue
        if interaction_for(other, candidate, policies, pm).action in _INTERRUPTING:
            out.append(other)
    return out


def audio_hints(session: Session, sessions: Iterable[Session], policies: PolicySet,
                pm: PluginManager | None = None) -> tuple[bool, bool]:
    """AVAudioSession's ``isOtherAudioPlaying`` and ``secondaryAudioShouldBeSilencedHint``.

    :returns: ``(other audio playing, secondary audio should be silenced)``: another app has an
        active session; another app has an active non-mixable session (primary audio)
    """
    other = [s for s in sessions if s.active and s.app_key != session.app_key]
    primary = [s for s in other if not mixable(s, policies.policies[s.category], pm)]
    return bool(other), bool(primary)
