"""A recording's audio: the backend's captures as the blocks a job reads.

``speak`` records the session's input (a source), ``listen`` the monitor of its output (a
sink): both through :meth:`Backend.capture <audiopolicyd.backends.base.Backend.capture>`, a
record stream of the daemon's own connection (the server lists it as a source-output of the
daemon's client: :attr:`Stream.own <audiopolicyd.model.Stream.own>`, infrastructure to the
engine and the microphone gate). Stereo is two captures side by side, block for block: left
the microphone, right the monitor (SWML's stereo: each party of a call on its channel).

The two captures of a stereo recording start a few milliseconds apart and each keeps its own
clock: the right channel may lead or lag the left by that much (one block at most, the
capture's buffering), and neither drifts, since both run on the server's clock.
"""

from __future__ import annotations

import logging
from typing import AsyncIterator

import numpy as np

from ..backends.base import Backend
from ..model import Device

logger = logging.getLogger(__name__)


async def _mono(backend: Backend, device: Device, rate: int,
                block_ms: int) -> AsyncIterator[np.ndarray]:
    source = backend.capture(device, rate=rate, channels=1, block_ms=block_ms)
    try:
        async for block in source:
            yield np.frombuffer(block, dtype="<i2")
    finally:
        await source.aclose()


async def blocks(backend: Backend, microphone: Device | None, monitor: Device | None,
                 rate: int, block_ms: int) -> AsyncIterator[np.ndarray]:
    """Blocks of int16 audio: shape ``(n,)`` from one device, ``(n, 2)`` from both (left the
    microphone, right the monitor), ``n = rate * block_ms / 1000``.

    :param microphone: the source to record, or None
    :param monitor: the sink whose monitor to record, or None (not both None)
    :raises: what :meth:`Backend.capture` raises (``NoSuchDevice``, ``CaptureFailed``,
        ``ServerGone``)
    """
    devices = [d for d in (microphone, monitor) if d is not None]
    if not devices:
        raise ValueError("a recording needs a microphone, a monitor or both")
    sources = [_mono(backend, d, rate, block_ms) for d in devices]
    try:
        if len(sources) == 1:
            async for block in sources[0]:
                yield block
            return
        left, right = sources
        async for block in left:
            other = await anext(right)
            yield np.column_stack((block, other))
    finally:
        for source in sources:
            await source.aclose()
