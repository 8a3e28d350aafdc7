"""Asking on a terminal: :class:`TerminalPrompter` (``audiopolicyctl agent``)."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import stat
import sys
import threading
from typing import Any, TextIO

from .prompter import DENIED, GRANTED, UNDETERMINED, AgentError, Prompter, describe

logger = logging.getLogger(__name__)


class _Question:
    __slots__ = ("request_id", "app_id", "info", "future")

    def __init__(self, request_id: str, app_id: str, info: dict, future: asyncio.Future):
        self.request_id = request_id
        self.app_id = app_id
        self.info = info
        self.future = future


class TerminalPrompter(Prompter):
    """Asks on a terminal, one request at a time, as polkit's ``pkttyagent`` does.

    Prints ``Allow "parecord" (/usr/bin/pacat, pid 123) to use the microphone? [y]es / [n]o /
    [l]ater: `` and reads a line: ``y``/``yes`` grants, ``n``/``no`` denies, ``l``/``later``
    answers ``undetermined``; anything else asks again. Other requests wait in a queue and are
    shown in turn. A line only answers the prompt that was on screen when it arrived, so an
    answer typed ahead (or a stray Enter) never answers a prompt the user has not seen. A
    withdrawn request (``Cancel``) prints a line saying so and the next one is shown.
    End-of-file on the input answers ``undetermined`` for everything pending and ends the agent.

    Input is read without blocking the event loop: through ``loop.connect_read_pipe`` for a
    pipe or a socket, else (a terminal, a file, ``/dev/null``) by a daemon thread, because
    making a terminal's stdin non-blocking would also make its stdout non-blocking (they share
    one open file description) and leave the shell's terminal so after exit.

    :param inp: where answers come from: a binary or text file object with ``fileno()``, or a
        file descriptor; default ``sys.stdin``. It is never closed.
    :param out: where prompts go: anything with ``write(str)`` (and optionally ``flush()``);
        default ``sys.stdout``
    """

    ANSWERS = {"y": GRANTED, "yes": GRANTED, "n": DENIED, "no": DENIED,
               "l": UNDETERMINED, "later": UNDETERMINED}
    #: A line longer than this (bytes) is garbage: it is dropped rather than buffered.
    MAX_LINE = 4096

    def __init__(self, inp: Any = None, out: TextIO | None = None):
        super().__init__()
        self._inp = sys.stdin if inp is None else inp
        self._out = sys.stdout if out is None else out
        self._queue: collections.deque[_Question] = collections.deque()
        self._current: _Question | None = None
        self._buffer = b""
        self._fd: int | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    async def start(self) -> None:
        """Start reading the input.

        :raises AgentError: the input is closed or not a file
        """
        loop = asyncio.get_running_loop()
        try:
            self._fd = self._inp if isinstance(self._inp, int) else self._inp.fileno()
            mode = os.fstat(self._fd).st_mode
        except (OSError, ValueError, AttributeError) as exc:
            raise AgentError(f"cannot read answers from the input: {exc}") from None
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            # closefd=False: the transport closes this wrapper, never the caller's descriptor
            pipe = open(self._fd, "rb", buffering=0, closefd=False)
            self._transport, _ = await loop.connect_read_pipe(lambda: _Lines(self), pipe)
        else:
            self._thread = threading.Thread(target=self._read_thread, args=(self._fd, loop),
                                             name="agent-input", daemon=True)
            self._thread.start()

    async def close(self) -> None:
        """Stop reading (a reader thread ends at its next read); pending asks answer
        ``undetermined``."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            try:
                os.set_blocking(self._fd, True)  # connect_read_pipe made it non-blocking
            except OSError:
                pass
        self._settle_all()

    async def ask(self, request_id: str, app_id: str, info: dict) -> str:
        """See :meth:`Prompter.ask`: queue the question and wait for its answer."""
        if self.ended or self._closed:
            return UNDETERMINED
        question = _Question(request_id, app_id, info,
                             asyncio.get_running_loop().create_future())
        self._queue.append(question)
        if self._current is None:
            self._show_next()
        try:
            return await question.future
        finally:
            if self._current is question:  # cancelled while on screen
                self._current = None
                self._show_next()
            elif question in self._queue:
                self._queue.remove(question)

    async def cancel(self, request_id: str) -> None:
        """See :meth:`Prompter.cancel`: a prompt on screen is withdrawn with a line saying so;
        a queued one is dropped silently."""
        current = self._current
        if current is not None and current.request_id == request_id:
            self._current = None
            name, _ = describe(current.app_id, current.info)
            self._write(f"\nThe request for \"{name}\" was withdrawn (decided elsewhere, or it "
                        "stopped recording).\n")
            self._settle(current, UNDETERMINED)
            self._show_next()
            return
        for question in list(self._queue):
            if question.request_id == request_id:
                self._queue.remove(question)
                self._settle(question, UNDETERMINED)

    # -- internals ------------------------------------------------------------------------------

    def _prompt(self, question: _Question) -> str:
        """The prompt line for a question (no newline: the answer is typed after it)."""
        name, details = describe(question.app_id, question.info)
        return (f"Allow \"{name}\"{f' ({details})' if details else ''} to use the microphone? "
                "[y]es / [n]o / [l]ater: ")

    def _show_next(self) -> None:
        while self._queue and self._current is None:
            question = self._queue.popleft()
            if not question.future.done():
                self._current = question
                self._write(self._prompt(question))

    def _write(self, text: str) -> None:
        try:
            self._out.write(text)
            flush = getattr(self._out, "flush", None)
            if flush is not None:
                flush()
        except (OSError, ValueError) as exc:  # closed terminal or pipe
            logger.warning("cannot write the prompt: %s", exc)

    @staticmethod
    def _settle(question: _Question, decision: str) -> None:
        if not question.future.done():
            question.future.set_result(decision)

    def _settle_all(self) -> None:
        for question in [*([self._current] if self._current else []), *self._queue]:
            self._settle(question, UNDETERMINED)
        self._current = None
        self._queue.clear()

    def _on_data(self, data: bytes) -> None:
        if self._closed:
            return
        on_screen = self._current  # lines of this chunk may answer only this prompt
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        if len(self._buffer) > self.MAX_LINE:
            lines.append(b"")  # garbage: asks again
            self._buffer = b""
        for line in lines:
            self._on_line(line, on_screen)

    def _on_line(self, line: bytes, on_screen: _Question | None) -> None:
        if on_screen is None or self._current is not on_screen:
            logger.debug("input line discarded: no prompt was on screen when it was typed")
            return
        decision = self.ANSWERS.get(line.decode(errors="replace").strip().lower())
        if decision is None:
            self._write("Please answer y (yes), n (no) or l (later).\n")
            self._write(self._prompt(on_screen))
            return
        self._current = None
        self._settle(on_screen, decision)
        self._show_next()

    def _on_eof(self) -> None:
        if self._closed:
            return
        if self._buffer:
            line, self._buffer = self._buffer, b""
            self._on_line(line, self._current)
        if self._current is not None or self._queue:
            self._write("\nInput closed: pending requests are left undetermined.\n")
        self._settle_all()
        self._end()

    def _read_thread(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        """Blocking reads on a thread; every chunk is handed to the loop."""
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError as exc:
                logger.warning("reading the input failed: %s", exc)
                data = b""
            try:
                if data:
                    loop.call_soon_threadsafe(self._on_data, data)
                else:
                    loop.call_soon_threadsafe(self._on_eof)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return
            if not data or self._closed:
                return


class _Lines(asyncio.Protocol):
    """Feeds a :class:`TerminalPrompter` from ``connect_read_pipe``."""

    def __init__(self, prompter: TerminalPrompter):
        self.prompter = prompter

    def data_received(self, data: bytes) -> None:
        self.prompter._on_data(data)

    def eof_received(self) -> bool:
        self.prompter._on_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            logger.warning("reading the input failed: %s", exc)
            self.prompter._on_eof()
