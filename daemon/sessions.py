"""Implicit sessions: the sessions of apps that never call the daemon.

Every stream is classified into a category; an app's streams of one category form its implicit
session of that category. A server module's stream that no rule classified
(:data:`~audiopolicyd.policy.INFRASTRUCTURE`) is in no session: it neither acts nor is acted on.

The session is active while at least one of its streams plays (:attr:`Stream.playing`: a paused
player's corked stream does not hold its session active) and is not *inert*. Inert streams are
the microphone streams the permission gate silences (undetermined, denied, or the desktop's
switch on): an app that may not record cannot silence the desktop by opening a capture stream.
Its session is still listed (inactive) and still gets its own policy's effects; its streams
still show in the recording indicator, silenced. Each activation gets a new sequence number, so
among equal priorities the later activation wins, as the last app to activate its
AVAudioSession does on iOS.

No I/O: the tracker only remembers activation order between snapshots.
"""

from __future__ import annotations

import itertools
import logging
from typing import AbstractSet as Set, Callable, Mapping

from .model import Session, Snapshot, Stream
from .policy import INFRASTRUCTURE

logger = logging.getLogger(__name__)

Classifier = Callable[[Stream], tuple[str, str]]


class ImplicitSessions:
    """Derives implicit :class:`~audiopolicyd.model.Session` objects from snapshots.

    :param seq: shared counter of activations (explicit sessions draw from the same one)
    """

    def __init__(self, seq: itertools.count | None = None):
        self._seq = seq or itertools.count(1)
        self._last_seq: dict[str, int] = {}
        self._active: set[str] = set()

    def update(self, snapshot: Snapshot, classified: Mapping[str, tuple[str, str]],
               held: Set[str] = frozenset(), inert: Set[str] = frozenset()) -> list[Session]:
        """Sessions for the streams of ``snapshot``.

        :param snapshot: the audio graph now
        :param classified: stream key -> (category, rule) for every stream of the snapshot
        :param held: keys of streams that stopped playing a moment ago and still count as
            playing (the caller's deactivation hold)
        :param inert: keys of streams that never hold their session active, playing or held:
            the microphone streams the permission gate silences
        :returns: one session per (app, category), in a stable order; infrastructure streams
            are in none
        """
        groups: dict[str, list[Stream]] = {}
        rules: dict[str, str] = {}
        for key, stream in snapshot.streams.items():
            category, rule = classified[key]
            if category == INFRASTRUCTURE:
                continue
            sid = f"implicit:{stream.app_key}:{category}"
            groups.setdefault(sid, []).append(stream)
            rules.setdefault(sid, rule)
        active = {sid for sid, streams in groups.items()
                  if any((s.playing or s.key in held) and s.key not in inert
                         for s in streams)}
        # Sessions activating together (at start-up) are ordered by their oldest stream.
        activating = sorted(active - self._active,
                            key=lambda sid: min(s.index for s in groups[sid]))
        for sid in activating:
            self._last_seq[sid] = next(self._seq)
            logger.debug("implicit session %s activated (seq %d)", sid, self._last_seq[sid])
        sessions = []
        for sid, streams in sorted(groups.items()):
            first = streams[0]
            category = classified[first.key][0]
            sessions.append(Session(
                id=sid, app_key=first.app_key, category=category, active=sid in active,
                seq=self._last_seq.get(sid, 0), streams=tuple(s.key for s in streams),
                rule=rules[sid]))
        self._active = active
        for gone in set(self._last_seq) - set(groups):
            del self._last_seq[gone]
        return sessions
