"""One recording's state machine: SWML's ``record`` verb, block by block.

A :class:`RecordJob` reads 10 ms blocks of audio, judges them and writes them, and ends by
the first of these rules (SWML's, on audio time: the samples recorded, not the wall clock, so
a slow event loop shifts no rule):

* **a terminator** (a DTMF digit of ``terminators``, :mod:`.dtmf`): ``finished``; the tone is
  cut from the file (writing lags :data:`HOLD_MS` behind the capture, so what the detector
  needed to recognise the tone is dropped, not written);
* **no speech** within ``initial_timeout`` of the start (:mod:`.vad`): ``no_input``;
* **silence** for ``end_silence_timeout`` after the last voiced block: ``finished``;
* **``max_length``** of recorded audio: ``finished``;
* **Stop()** (or the caller leaving the bus, or the daemon stopping): ``finished``;
* **a fault** (the device goes, the server goes, the disk fills): ``error``; what was written
  stays a valid file.

While paused (``Pause(behavior)``) blocks are judged by nobody and written as silence
(``silence``: the recording keeps its length) or dropped (``skip``); the timeouts do not run.

States (``State`` on D-Bus): ``starting`` (waiting for the microphone permission, the beep),
then SWML's ``recording``, ``paused``, and the end states ``finished``, ``no_input``, ``error``.
``record_result`` is ``success`` for ``finished`` and ``failed`` otherwise (SWML's).

Each change of state is a status (:mod:`.status`'s payload), given to :attr:`RecordJob.listeners`
(the D-Bus object's ``StatusChanged``) and to the ``status_url`` poster.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import AsyncIterator, Awaitable, Callable

import numpy as np

from .dtmf import DtmfDetector
from .params import RecordParams
from .status import State
from .vad import VoiceDetector

logger = logging.getLogger(__name__)

#: Frames per second of every recording (what the captures are asked for).
RATE = 48000
#: Milliseconds of one block.
BLOCK_MS = 10
#: Milliseconds the writing lags the capture: a terminator's tone, recognised at most ~60 ms
#: after it began (:mod:`.dtmf`), is cut before it is written.
HOLD_MS = 100
#: How often the file is made whole on disk while recording (ms of audio): what a kill leaves.
FLUSH_MS = 1000
#: Seconds without a block after which the capture has stalled (an error).
STALL_S = 5.0


class RecordJob:
    """One recording, from its start to a valid file.

    :param params: the checked parameters
    :param writer: an open encoder (:func:`.encode.open_writer`) at :data:`RATE`, 2 channels
        in stereo, else 1; closed by the job
    :param blocks: ``() -> async iterator`` of int16 blocks of :data:`BLOCK_MS` at :data:`RATE`,
        shape ``(n,)`` or ``(n, 2)`` (left: the microphone, right: the monitor); opened once
        the job starts recording, closed when it ends
    :param url: the file's ``file://`` URL (``record_url``)
    :param prepare: awaited before recording starts (the permission wait, the beep); what it
        raises ends the job as ``error``
    :param status: ``(job, state) -> payload`` (:mod:`.status`), for every state reached
    """

    def __init__(self, params: RecordParams, writer, blocks: Callable[[], AsyncIterator],
                 url: str, *, prepare: Callable[[], Awaitable[None]] | None = None,
                 status: Callable[[RecordJob, State], dict] | None = None):
        self.params = params
        self.url = url
        self.state = State.STARTING
        self.behavior = ""  # the pause's, while paused
        self.error = ""  # why it ended as error
        self.start_time = 0.0  # unix time recording started
        self.end_time = 0.0
        #: ``listener(payload)`` for every status (a state reached).
        self.listeners: list[Callable[[dict], None]] = []
        self._writer = writer
        self._blocks = blocks
        self._prepare = prepare
        self._status = status
        self._vad = VoiceDetector(RATE, params.input_sensitivity)
        self._dtmf = DtmfDetector(RATE)
        self._held: list[tuple[np.ndarray, int]] = []  # not written yet (HOLD_MS), see _hold
        self._held_frames = 0
        self._position = 0  # frames captured since recording started (the DTMF clock)
        self._judged = 0  # frames of audio judged (paused time not counted)
        self._voiced_at = -1  # frame of the end of the last voiced block; -1: no speech yet
        self._flushed = 0
        #: The level of the last block recorded, dBFS (RMS over all channels; -120 for digital
        #: silence): a live meter's.
        self.level_dbfs = -120.0
        #: Why :meth:`stop` was called ('' when it was not).
        self.stop_reason = ""
        self._task: asyncio.Task | None = None
        self.done = asyncio.Event()

    # -- what the D-Bus object reads ------------------------------------------------------

    @property
    def result(self) -> str:
        """SWML's ``record_result``: ``success`` | ``failed``; '' until the job ends."""
        if not self.state.final:
            return ""
        return "success" if self.state is State.FINISHED else "failed"

    @property
    def duration(self) -> float:
        """Seconds of audio in the file so far."""
        return self._writer.duration

    @property
    def size(self) -> int:
        """Bytes of the file on disk so far."""
        try:
            return self._writer.size
        except OSError:
            return 0

    # -- control ----------------------------------------------------------------------------

    def start(self) -> asyncio.Task:
        """Run the job in a task of its own; the task ends when the job does (never raises)."""
        self._task = asyncio.ensure_future(self.run())
        return self._task

    def stop(self, why: str = "stopped") -> None:
        """End the recording as ``finished`` (``Stop()``; the caller left; the daemon
        stops). Nothing when it has ended."""
        if self.state.final or self.stop_reason:
            return
        self.stop_reason = why
        if self._task is not None:
            self._task.cancel()  # the block awaited is dropped (at most one: 10 ms)

    def pause(self, behavior: str) -> None:
        """SWML's pause: ``silence`` (the paused time is written as silence) or ``skip``.

        :raises ValueError: for another behaviour, or a job that is not recording
        """
        if behavior not in ("silence", "skip"):
            raise ValueError(f"a pause's behavior is silence or skip, not {behavior!r:.20}")
        if self.state is not State.RECORDING:
            raise ValueError(f"only a recording can pause; this one is {self.state.value}")
        self.behavior = behavior
        self._set(State.PAUSED)

    def resume(self) -> None:
        """Record again after :meth:`pause`.

        :raises ValueError: for a job that is not paused
        """
        if self.state is not State.PAUSED:
            raise ValueError(f"only a paused recording resumes; this one is {self.state.value}")
        self.behavior = ""
        self._set(State.RECORDING)

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> State:
        """Prepare, record until a rule ends it, close the file; the end state."""
        blocks = None
        end = State.ERROR
        try:
            if self._prepare is not None:
                await self._prepare()
            blocks = self._blocks()
            self.start_time = time.time()
            self._set(State.RECORDING)
            while True:
                try:
                    block = await asyncio.wait_for(anext(blocks), STALL_S)
                except StopAsyncIteration:
                    raise ConnectionError("the capture ended") from None
                except asyncio.TimeoutError:
                    raise ConnectionError(f"no audio came for {STALL_S:g} s") from None
                outcome = self._feed(block)
                if outcome is not None:
                    end = outcome
                    break
                if self.stop_reason:  # stop() without a task to cancel (run() awaited)
                    end = State.FINISHED
                    break
        except asyncio.CancelledError:
            if not self.stop_reason:
                end, self.error = State.ERROR, "cancelled"
            else:  # stopped before it recorded (the user's answer, the beep): nothing came
                end = State.FINISHED if self.start_time else State.NO_INPUT
        except Exception as exc:  # a fault ends the recording, never the daemon
            end = State.ERROR
            # (the daemon's own errors name themselves: NotAllowed: ...)
            self.error = str(exc) if getattr(exc, "named", False) \
                else f"{type(exc).__name__}: {exc}"
            logger.warning("recording %s failed: %s", self.url, self.error)
        finally:
            if blocks is not None and hasattr(blocks, "aclose"):
                await _quietly(blocks.aclose())
            end = self._close(end)
            self.end_time = time.time()
            self._set(end)
            self.done.set()
        return end

    def _feed(self, block: np.ndarray) -> State | None:
        """Judge and keep one block; the end state when a rule ends the recording."""
        if self.state is State.PAUSED:
            if self.behavior == "silence":
                self._hold(np.zeros_like(block), -1)
            return None
        mono = block if block.ndim == 1 else block[:, 0 if self.params.microphone else 1]
        power = float(np.mean(np.square(block, dtype=np.float64)))
        self.level_dbfs = 10 * math.log10(power / 32768 ** 2) if power else -120.0
        self._hold(block, self._position)
        self._position += len(block)
        for tone in self._dtmf.feed(mono):
            if tone.digit in self.params.terminators:
                self._cut(tone.start)
                logger.info("recording %s: terminator %s", self.url, tone.digit)
                return State.FINISHED
        self._judged += len(block)
        if self._vad.feed(mono):
            self._voiced_at = self._judged
        p = self.params
        if self._voiced_at < 0:
            if p.initial_timeout_s and self._judged >= p.initial_timeout_s * RATE:
                return State.NO_INPUT
        elif p.end_silence_timeout_s and \
                self._judged - self._voiced_at >= p.end_silence_timeout_s * RATE:
            return State.FINISHED
        if (self._writer.frames + self._held_frames) / RATE >= p.max_length_s:
            return State.FINISHED
        return None

    def _hold(self, block: np.ndarray, at: int) -> None:
        """Keep a block back :data:`HOLD_MS` (*at*: its first frame on the detector's clock,
        -1 for a pause's silence), writing what is older."""
        self._held.append((block, at))
        self._held_frames += len(block)
        while self._held_frames - len(self._held[0][0]) >= HOLD_MS * RATE // 1000:
            older = self._held.pop(0)[0]
            self._held_frames -= len(older)
            self._write(older)

    def _cut(self, at: int) -> None:
        """Write the held audio from before detector frame *at* (a terminator's tone began
        there) and drop the rest."""
        held, self._held, self._held_frames = self._held, [], 0
        for block, start in held:
            if start < 0:
                self._write(block)
            elif start < at:
                self._write(block[:at - start])

    def _write(self, block: np.ndarray) -> None:
        self._writer.write(block)
        if self._writer.frames - self._flushed >= FLUSH_MS * RATE // 1000:
            self._writer.flush()
            self._flushed = self._writer.frames

    def _close(self, end: State) -> State:
        """Write what is held and close the file; ``error`` when the disk says no (or an
        encoder fails otherwise: the job ends all the same, its ``done`` set)."""
        try:
            if end is not State.ERROR or not self.error.startswith("OSError"):
                for block, _ in self._held:
                    self._writer.write(block)
            self._held, self._held_frames = [], 0
        except Exception as exc:
            end, self.error = State.ERROR, f"{type(exc).__name__}: {exc}"
        try:
            self._writer.close()
        except Exception as exc:
            end, self.error = State.ERROR, f"{type(exc).__name__}: {exc}"
        return end

    def _set(self, state: State) -> None:
        self.state = state
        if self._status is None:
            return
        try:
            payload = self._status(self, state)
        except Exception:  # a bug of ours: the recording goes on, its status is lost (logged)
            logger.exception("recording %s: no status for %s", self.url, state.value)
            return
        for listener in list(self.listeners):
            try:
                listener(payload)
            except Exception:
                logger.exception("a recording's status listener failed")


async def _quietly(awaitable: Awaitable) -> None:
    try:
        await awaitable
    except Exception as exc:  # the capture's end after a fault: already reported
        logger.debug("closing a capture: %s", exc)
