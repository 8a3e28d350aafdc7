"""A recording's audio: the backend's captures as the blocks a job reads.

``speak`` records the session's input (a source), ``listen`` the monitor of its output (a
sink): both through :meth:`Backend.capture <audiopolicyd.backends.base.Backend.capture>`, a
record stream of the daemon's own connection (the server lists it as a source-output of the
daemon's client: :attr:`Stream.own <audiopolicyd.model.Stream.own>`, infrastructure to the
engine and the microphone gate). Stereo is two captures side by side, block for block: left
the microphone, right the monitor (SWML's stereo: each party of a call on its channel).

The two captures of a stereo recording start apart and each keeps its own clock, the
server's, so neither drifts once both deliver (:func:`side_by_side`). They may start far
apart: a PulseAudio null sink with nothing playing renders 2 s at a time, and its monitor
delivers its first block only when that render ends, up to 2 s after the capture started. A
capture that has not delivered yet is silence on its channel (it heard nothing), and the other
is never held back for it by more than :data:`START_GRACE_MS`; when it starts, the two are
aligned by their newest blocks, so the channels agree within a block or two.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import numpy as np

from ..backends.base import Backend
from ..model import Device

logger = logging.getLogger(__name__)

#: How long (ms of audio) a stereo capture that has started waits for the other's first block
#: before its blocks go out with silence beside them.
START_GRACE_MS = 50
#: How long (ms of audio) a stereo capture may deliver before the other's first block: after
#: that the other is taken as dead (``ConnectionError``).
START_LIMIT_MS = 5000


async def _mono(backend: Backend, device: Device, rate: int,
                block_ms: int) -> AsyncIterator[np.ndarray]:
    source = backend.capture(device, rate=rate, channels=1, block_ms=block_ms)
    try:
        async for block in source:
            yield np.frombuffer(block, dtype="<i2")
    finally:
        await source.aclose()


async def _next(source: AsyncIterator[np.ndarray]) -> np.ndarray:
    return await anext(source)


async def side_by_side(left: AsyncIterator[np.ndarray], right: AsyncIterator[np.ndarray],
                       block_ms: int) -> AsyncIterator[np.ndarray]:
    """Two captures' mono blocks as ``(n, 2)`` blocks, left and right, on the captures' clock.

    Until both have delivered, the one that has is not held back by more than
    :data:`START_GRACE_MS`: its older blocks go out with silence beside them. When the other
    delivers its first blocks, the two are aligned by their newest blocks (the one that
    delivered more has its oldest ones paired with silence). From then on a pair goes out when
    both have a block: a capture that falls behind holds the other back (its blocks wait in
    the backend, which drops its oldest past its bound and logs it). Ends when either
    capture ends.

    :raises ConnectionError: when one capture delivered :data:`START_LIMIT_MS` of audio before
        the other's first block
    :raises: what either capture raises
    """
    sources = (left, right)
    buffered: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
    started = [False, False]
    in_step = False  # both have delivered
    alone = 0  # blocks that went out before the other capture's first
    grace, limit = max(1, START_GRACE_MS // block_ms), START_LIMIT_MS // block_ms
    reading = {asyncio.ensure_future(_next(source)): side for side, source in enumerate(sources)}
    try:
        while True:
            done, _ = await asyncio.wait(reading, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                side = reading.pop(task)
                try:
                    buffered[side].append(task.result())
                except StopAsyncIteration:
                    return
                started[side] = True
            if not in_step and all(started):  # the other's first block(s): align the newest
                in_step = True
                for side in (0, 1):
                    while len(buffered[side]) > len(buffered[1 - side]):
                        yield _alone(buffered[side].pop(0), side)
            elif not in_step:
                side = started.index(True)
                while len(buffered[side]) > grace:
                    alone += 1
                    if alone > limit:
                        raise ConnectionError(
                            f"the {('right', 'left')[side]} channel's capture delivered nothing "
                            f"in {START_LIMIT_MS} ms")
                    yield _alone(buffered[side].pop(0), side)
            while buffered[0] and buffered[1]:
                yield np.column_stack((buffered[0].pop(0), buffered[1].pop(0)))
            for side in (0, 1):
                # in step, a capture that is ahead is read no further until the other catches up
                if side not in reading.values() and not (in_step and len(buffered[side]) > grace):
                    reading[asyncio.ensure_future(_next(sources[side]))] = side
    finally:
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)


def _alone(block: np.ndarray, side: int) -> np.ndarray:
    """*block* on channel *side* (0 left, 1 right), silence on the other."""
    pair = np.zeros((len(block), 2), dtype=block.dtype)
    pair[:, side] = block
    return pair


async def blocks(backend: Backend, microphone: Device | None, monitor: Device | None,
                 rate: int, block_ms: int) -> AsyncIterator[np.ndarray]:
    """Blocks of int16 audio: shape ``(n,)`` from one device, ``(n, 2)`` from both (left the
    microphone, right the monitor: :func:`side_by_side`), ``n = rate * block_ms / 1000``.

    :param microphone: the source to record, or None
    :param monitor: the sink whose monitor to record, or None (not both None)
    :raises: what :meth:`Backend.capture` raises (``NoSuchDevice``, ``CaptureFailed``,
        ``ServerGone``); ``ConnectionError`` from :func:`side_by_side`
    """
    devices = [d for d in (microphone, monitor) if d is not None]
    if not devices:
        raise ValueError("a recording needs a microphone, a monitor or both")
    sources = [_mono(backend, d, rate, block_ms) for d in devices]
    try:
        merged = sources[0] if len(sources) == 1 else side_by_side(*sources, block_ms)
        async for block in merged:
            yield block
    finally:
        for source in sources:
            await source.aclose()
