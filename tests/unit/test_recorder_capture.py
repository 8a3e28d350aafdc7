"""Stereo captures side by side (recorder/capture.py): aligned when one starts late, in step
after, bounded both ways. The captures are queues here; on real servers:
tests/integration/test_recorder.py and bench/recording.py."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from audiopolicyd.recorder import capture
from audiopolicyd.recorder.capture import START_GRACE_MS, START_LIMIT_MS, side_by_side

BLOCK_MS = 10
GRACE = START_GRACE_MS // BLOCK_MS


class Feed:
    """A capture whose blocks the test hands it: ``put(value)`` is a block of that value,
    ``end()`` ends it, ``fail(exc)`` raises *exc* from it; ``taken`` counts blocks read."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.taken = 0

    def put(self, *values: int) -> None:
        for value in values:
            self.queue.put_nowait(np.full(4, value, dtype="<i2"))

    def end(self) -> None:
        self.queue.put_nowait(None)

    def fail(self, exc: Exception) -> None:
        self.queue.put_nowait(exc)

    async def blocks(self):
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            self.taken += 1
            yield item


class Stereo:
    """``side_by_side`` of two feeds, read by a task into ``out`` as (left, right) values."""

    def __init__(self) -> None:
        self.left, self.right = Feed(), Feed()
        self.out: list[tuple[int, int]] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for block in side_by_side(self.left.blocks(), self.right.blocks(), BLOCK_MS):
            assert block.shape == (4, 2)
            assert (block == block[0]).all()  # one value per channel
            self.out.append((int(block[0, 0]), int(block[0, 1])))

    async def settle(self) -> list[tuple[int, int]]:
        for _ in range(2000):  # every block read and judged (no timer runs here)
            await asyncio.sleep(0)
        return self.out


async def test_in_step_pairs_block_for_block() -> None:
    s = Stereo()
    s.left.put(1, 2, 3)
    s.right.put(11, 12, 13)
    assert await s.settle() == [(1, 11), (2, 12), (3, 13)]
    s.task.cancel()


async def test_a_late_capture_is_silence_until_it_starts_then_aligned_by_the_newest() -> None:
    # A PulseAudio null sink's monitor delivers its first block up to 2 s late: the microphone
    # goes on with silence beside it, never held back by more than the grace.
    s = Stereo()
    s.left.put(*range(1, 21))
    out = await s.settle()
    assert out == [(v, 0) for v in range(1, 21 - GRACE)]
    s.right.put(100)  # its first block: beside the left's newest
    out = await s.settle()
    assert out[-1] == (20, 100)
    assert out[:-1] == [(v, 0) for v in range(1, 20)]
    s.left.put(21)
    s.right.put(101)
    assert (await s.settle())[-1] == (21, 101)
    s.task.cancel()


async def test_a_late_left_is_aligned_the_same_way() -> None:
    s = Stereo()
    s.right.put(*range(101, 104))  # within the grace: nothing goes out yet
    assert await s.settle() == []
    s.left.put(1)
    assert await s.settle() == [(0, 101), (0, 102), (1, 103)]
    s.task.cancel()


async def test_in_step_a_capture_ahead_is_not_read_further() -> None:
    # it waits in the backend, whose bound drops its oldest and logs it
    s = Stereo()
    s.left.put(1)
    s.right.put(11)
    await s.settle()
    s.left.put(*range(2, 30))
    await s.settle()
    assert s.left.taken == 1 + GRACE + 1
    assert s.out == [(1, 11)]
    s.right.put(*range(12, 40))
    out = await s.settle()
    assert out == [(v, v + 10) for v in range(1, 30)]
    s.task.cancel()


async def test_a_capture_that_never_starts_fails_the_recording() -> None:
    s = Stereo()
    s.left.put(*range(1, START_LIMIT_MS // BLOCK_MS + GRACE + 2))
    await s.settle()
    with pytest.raises(ConnectionError, match="right channel's capture delivered nothing"):
        await s.task
    assert len(s.out) == START_LIMIT_MS // BLOCK_MS


async def test_the_end_or_a_fault_of_either_capture_ends_it() -> None:
    s = Stereo()
    s.left.put(1)
    s.right.put(11)
    s.right.end()
    await s.settle()
    assert s.task.done() and s.task.exception() is None and s.out == [(1, 11)]
    s = Stereo()
    s.left.fail(RuntimeError("the source went"))
    with pytest.raises(RuntimeError, match="the source went"):
        await s.task


async def test_closing_it_closes_both_captures() -> None:
    closed = []

    async def source(name: str):
        try:
            while True:
                await asyncio.sleep(0.001)
                yield np.zeros(4, dtype="<i2")
        finally:
            closed.append(name)

    # the caller closes the captures (blocks() does); no read of them is left running, or
    # closing one would raise "asynchronous generator is already running"
    left, right = source("left"), source("right")
    merged = side_by_side(left, right, BLOCK_MS)
    for _ in range(3):
        await anext(merged)
    await merged.aclose()
    await left.aclose()
    await right.aclose()
    assert sorted(closed) == ["left", "right"]


async def test_a_recording_needs_a_device() -> None:
    with pytest.raises(ValueError, match="needs a microphone, a monitor or both"):
        await anext(capture.blocks(None, None, None, 48000, BLOCK_MS))  # type: ignore[arg-type]
