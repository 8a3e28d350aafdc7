"""The duck layer and the pause claims: what the daemon has done, and what to do next. Pure.

Volume arithmetic, as PulseAudio's module-role-ducking composes its volume factor:

* a duck multiplies the user's volume (``base``) by the gain the engine decided; several duckers
  multiply (the engine already multiplied them);
* a volume the user sets while a duck holds becomes the new ``base``; it is left as the user set
  it, and it is the value restored when the last ducker ends;
* removing the last effect writes ``base`` back exactly: the server's own integer volume from
  before the duck, never a value recomputed from the gain;
* mute the daemon sets is lifted explicitly (both servers remember mute per app); a stream the
  user muted before us is not unmuted by us; a stream the user unmutes during our mute stays
  unmuted until that mute ends (the user's act wins).

Pauses go through MPRIS and are *claimed* per player, as Android's audio focus resumes only
what it paused: a player is resumed only if we paused it, nobody changed its state since, and
no session that interrupted it is still active.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Mapping

from .model import Effect, Player, Stream

#: Two volumes closer than this (raw units per channel) are the same value: pipewire-pulse
#: stores volumes as floats and may give back a neighbour of the integer written.
VOLUME_TOLERANCE = 2


#: The gain of a stream that started at a value the server remembered from one of our writes:
#: not known, so never equal to the gain wanted (the next plan writes base x that gain).
UNKNOWN_GAIN = -1.0

#: Interval between the volume steps of a ramp, in milliseconds.
RAMP_STEP_MS = 20


def scaled(volume: Iterable[int], gain: float) -> tuple[int, ...]:
    """Each channel of a raw volume times a linear gain, rounded to the server's integers."""
    return tuple(round(v * gain) for v in volume)


def same_volume(a: Iterable[int], b: Iterable[int]) -> bool:
    """True when two raw per-channel volumes are equal within :data:`VOLUME_TOLERANCE`."""
    a, b = tuple(a), tuple(b)
    return len(a) == len(b) and all(abs(x - y) <= VOLUME_TOLERANCE for x, y in zip(a, b))


def ramp_steps(start: tuple[int, ...], end: tuple[int, ...],
               ramp_ms: int) -> tuple[tuple[int, ...], ...]:
    """The raw volumes a ramp writes, one every :data:`RAMP_STEP_MS` ms; the last is ``end``.

    Linear in the raw (cubic) scale, as module-role-ducking's volume factor would be applied.

    :param start: the stream's raw volume when the ramp starts
    :param end: the raw volume the ramp ends at
    :param ramp_ms: the ramp's duration in milliseconds (at least one step)
    """
    steps = max(1, ramp_ms // RAMP_STEP_MS)
    return tuple(tuple(round(a + (b - a) * i / steps) for a, b in zip(start, end))
                 for i in range(1, steps + 1))


@dataclass(frozen=True)
class Applied:
    """What the daemon has done to one stream; one row of the effects journal.

    :param key: stream key (``sink-input:12``)
    :param restore_key: the server's restore key of the stream (see ``Stream.restore_key``)
    :param base: the user's raw volume, restored exactly when the last duck ends
    :param gain: linear gain in force (1.0 = not ducked)
    :param target: the raw volume the daemon last wrote, None when it has not touched volume
    :param muted_by_us: True when the mute in force was set by the daemon
    :param mute_waived: True when the user unmuted during our mute (not re-muted until the mute
        the engine wants ends)
    :param ramp_from: the raw volume the ramp towards ``target`` started from, None when no ramp
        is under way: every step of the ramp (:func:`ramp_steps`) is a value of ours, also
        after a crash in the middle of it
    :param ramp_ms: that ramp's duration in milliseconds
    """

    key: str
    restore_key: str
    base: tuple[int, ...]
    gain: float = 1.0
    target: tuple[int, ...] | None = None
    muted_by_us: bool = False
    mute_waived: bool = False
    ramp_from: tuple[int, ...] | None = None
    ramp_ms: int = 0

    @property
    def ours(self) -> tuple[tuple[int, ...], ...]:
        """Every raw volume of ours the stream may show: the target, and the volume the ramp
        under way started from and its steps (the server may hold any of them; the start may
        be a step of an earlier ramp)."""
        if self.target is None:
            return ()
        if self.ramp_from is None or len(self.ramp_from) != len(self.target):
            return (self.target,)
        return (self.ramp_from, *ramp_steps(self.ramp_from, self.target, self.ramp_ms))

    def at_ours(self, volume: tuple[int, ...], recent: Iterable[tuple[int, ...]] = ()) -> bool:
        """True when ``volume`` is one of :attr:`ours` or of ``recent`` (other writes of ours
        the server may still echo), within :data:`VOLUME_TOLERANCE`."""
        return any(same_volume(volume, v) for v in (*self.ours, *recent))

    @property
    def idle(self) -> bool:
        """True when nothing of ours remains on the stream (the row can be forgotten)."""
        return self.gain == 1.0 and not self.muted_by_us and not self.mute_waived


@dataclass(frozen=True)
class Ops:
    """Server writes for one stream.

    :param volume: raw per-channel volume to write, None for no change
    :param ramp_from: volume the ramp starts from (the stream's current volume), None to write
        at once
    :param ramp_ms: ramp duration in milliseconds (0: write at once)
    :param mute: True/False to set the mute flag, None for no change
    """

    volume: tuple[int, ...] | None = None
    ramp_from: tuple[int, ...] | None = None
    ramp_ms: int = 0
    mute: bool | None = None

    @property
    def empty(self) -> bool:
        return self.volume is None and self.mute is None


def observe(applied: Applied, stream: Stream, ours: Iterable[tuple[int, ...]] = ()) -> Applied:
    """Fold a fresh reading of the stream into what we have done: detect the user's acts.

    :param applied: our record for the stream
    :param stream: the stream as just read from the server
    :param ours: other volumes the daemon wrote recently, recognised as our own echoes (the
        target and the steps of the ramp under way always are)
    :returns: the updated record (the same object when nothing changed); a volume the user set
        ends the ramp under way (``ramp_from`` None)
    """
    if applied.target is not None and not applied.at_ours(stream.volume, ours):
        applied = replace(applied, base=stream.volume, target=stream.volume, ramp_from=None,
                          ramp_ms=0)
    if applied.muted_by_us and not stream.muted:
        applied = replace(applied, muted_by_us=False, mute_waived=True)
    return applied


def plan(applied: Applied | None, stream: Stream, desired: Effect) -> tuple[Applied | None, Ops]:
    """The writes that take a stream from what we have done to what the engine wants.

    :param applied: our record for the stream, None when we have done nothing to it
    :param stream: the stream as last read
    :param desired: the engine's decision for the stream
    :returns: ``(new record or None when nothing of ours remains, ops)``; the caller journals
        the record *before* applying the ops
    """
    if applied is None:
        if desired.gain == 1.0 and not desired.mute:
            return None, Ops()
        applied = Applied(stream.key, stream.restore_key, base=stream.volume)
    elif applied.gain == 1.0 and applied.base != stream.volume:
        # We hold no volume (only a mute): the stream's volume is the user's, changed or not.
        applied = replace(applied, base=stream.volume)
    volume = ramp_from = None
    ramp_ms = 0
    if desired.gain != applied.gain:
        volume = applied.base if desired.gain == 1.0 else scaled(applied.base, desired.gain)
        ramp_from, ramp_ms = stream.volume, desired.ramp_ms
        ramps = ramp_ms > 0 and len(ramp_from) == len(volume) and desired.gain != 1.0
        applied = replace(applied, gain=desired.gain,
                          target=None if desired.gain == 1.0 else volume,
                          ramp_from=ramp_from if ramps else None, ramp_ms=ramp_ms if ramps else 0)
        if not ramps:
            ramp_from, ramp_ms = None, 0
    mute = None
    if not desired.mute and applied.mute_waived:
        applied = replace(applied, mute_waived=False)
    want_mute = desired.mute and not applied.mute_waived
    if want_mute and not applied.muted_by_us and not stream.muted:
        mute, applied = True, replace(applied, muted_by_us=True)
    elif not want_mute and applied.muted_by_us:
        mute, applied = False, replace(applied, muted_by_us=False)
    return (None if applied.idle else applied), Ops(volume, ramp_from, ramp_ms, mute)


def restore_ops(applied: Applied) -> Ops:
    """The writes that undo everything of ours on a stream (shutdown, crash recovery)."""
    return Ops(volume=applied.base if applied.gain != 1.0 else None,
               mute=False if applied.muted_by_us else None)


# -- pauses --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    """A player the daemon paused.

    :param triggers: ids of the sessions that interrupted it
    :param confirmed: True once the player reported ``Paused`` after our Pause
    :param waived: True once the user changed its state (it will not be resumed by us)
    """

    triggers: frozenset[str]
    confirmed: bool = False
    waived: bool = False


@dataclass(frozen=True)
class PausePlan:
    """Result of :func:`plan_pauses`: new claims, players to pause, players to resume."""

    claims: Mapping[str, Claim]
    pause: tuple[str, ...] = ()
    resume: tuple[str, ...] = ()


def plan_pauses(claims: Mapping[str, Claim], want: Mapping[str, set[str]],
                players: Mapping[str, Player], active_sessions: set[str]) -> PausePlan:
    """Decide MPRIS Pause/Play calls.

    :param claims: player bus name -> our claim
    :param want: player bus name -> trigger session ids that want it paused now
    :param players: the players on the bus now
    :param active_sessions: ids of the active sessions
    """
    new: dict[str, Claim] = {}
    pause, resume = [], []
    for bus, triggers in want.items():
        player = players.get(bus)
        if player is None:
            continue
        if bus in claims:
            new[bus] = replace(claims[bus], triggers=claims[bus].triggers | frozenset(triggers))
        elif player.status == "Playing":
            new[bus] = Claim(frozenset(triggers))
            pause.append(bus)
    for bus, claim in claims.items():
        if bus in new or bus not in players:
            continue
        if claim.triggers & active_sessions:
            new[bus] = claim  # the stream may have gone with the pause; the trigger has not
        elif should_resume(claim, players[bus]):
            resume.append(bus)
    return PausePlan(new, tuple(pause), tuple(resume))


def should_resume(claim: Claim, player: Player) -> bool:
    """Whether a player we paused gets ``Play`` now that no trigger holds it.

    Yes when it reports ``Paused``, and also when it has not confirmed our pause yet: players
    may report a new PlaybackStatus late (mpv-mpris batches its PropertiesChanged), so after a
    short interruption a player still shown ``Playing`` may well be paused, and ``Play`` on a
    player that ignored our ``Pause`` changes nothing. Never when the user acted (waived).
    """
    return not claim.waived and (player.status == "Paused" or not claim.confirmed)


def observe_player(claims: Mapping[str, Claim], player: Player) -> Mapping[str, Claim]:
    """Fold a player's new PlaybackStatus into the claims: the user's act waives our claim."""
    claim = claims.get(player.bus_name)
    if claim is None or claim.waived:
        return claims
    if player.status == "Paused":
        updated = replace(claim, confirmed=True)
    elif claim.confirmed:
        updated = replace(claim, waived=True)  # Playing or Stopped after our pause: the user
    else:
        return claims
    return {**claims, player.bus_name: updated}
