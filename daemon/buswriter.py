"""A dbus-fast asyncio ``MessageBus`` whose writer waits when the socket is full.

What is wrong upstream: in dbus-fast 5.2.0 (the newest release),
``dbus_fast.aio.message_bus._MessageWriter.write_callback`` sends on a non-blocking socket and
catches *every* exception from ``sock.send`` by finalizing the bus. A full socket
(``BlockingIOError``, EAGAIN) is no error: it only means "wait until writable". It happens as
soon as a message is larger than the socket's send buffer and another one is queued before the
first is out (``schedule_write`` then writes at once, because its queue looks empty while the
first message is still half sent): a big ``PropertiesChanged``, a large ``GetStreams`` reply, a
burst of replies. The whole connection is then closed, the bus name is lost, and nothing tells
the service, which runs on deaf. The same defect is python-dbus-next's open issue.
Ref: https://github.com/altdesktop/python-dbus-next/issues/153 (fix proposed in its pull
request #154, never merged; dbus-fast inherited the code). Reproduction with dbus-fast alone:
``tests/unit/test_buswriter.py``, whose upstream case fails as described.

Why this module: the fix belongs in dbus-fast, and dbus-fast is otherwise the right library
(maintained, the API of dbus-next, faster). So the correction is kept here, small and alone:
:class:`MessageBus` is ``dbus_fast.aio.MessageBus`` whose writer is :class:`_PatientWriter`, a
``_MessageWriter`` with a corrected ``write_callback`` (on EAGAIN or EINTR it keeps the rest of
the message and lets the loop call it again when the socket is writable). Nothing is patched
globally: other ``dbus_fast`` buses in the process keep upstream's behaviour.

``write_callback`` below is a copy of 5.2.0's with one clause added; it relies on that
version's writer attributes, so it is to be re-read against any other dbus-fast release.
``tests/unit/test_buswriter.py`` runs the same scenario on upstream's bus and expects it to
fail: the day that case fails because upstream stays connected, upstream is fixed.

When to delete it: once a dbus-fast release handles ``BlockingIOError`` in the writer (check
``write_callback`` in ``dbus_fast/aio/message_bus.py``) and ``pyproject.toml`` requires that
release; then replace ``from .buswriter import MessageBus`` with
``from dbus_fast.aio import MessageBus`` and make the test expect both buses to survive (keep
it: it guards the behaviour).
"""

from __future__ import annotations

import array
import logging
import socket

from dbus_fast.aio import MessageBus as _UpstreamMessageBus
from dbus_fast.aio.message_bus import (
    _future_set_exception, _future_set_result, _MessageWriter,
)

logger = logging.getLogger(__name__)

__all__ = ["MessageBus"]


class _PatientWriter(_MessageWriter):
    """dbus-fast's writer, except that a full socket makes it wait instead of disconnect.

    ``write_callback`` is upstream's (5.2.0) line for line but for the first ``except``
    clause; everything else (queue, partial writes, futures, fd passing) is inherited.
    """

    def write_callback(self, remove_writer: bool = True) -> None:
        """Write queued messages until the queue is empty or the socket is full.

        :param remove_writer: stop watching for writability once the queue is empty (False
            when called directly by ``schedule_write``, which registers the watch itself)
        """
        sock = self.sock
        try:
            while True:
                if self.buf is None:
                    if not self.messages:
                        if remove_writer:
                            self.loop.remove_writer(self.fd)
                        return
                    buf, unix_fds, fut = self.messages.popleft()
                    self.unix_fds = unix_fds
                    self.buf = memoryview(buf)
                    self.offset = 0
                    self.fut = fut

                if self.unix_fds and self.negotiate_unix_fd:
                    ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                array.array("i", self.unix_fds))]
                    self.offset += sock.sendmsg([self.buf[self.offset:]], ancdata)
                    self.unix_fds = None  # sent with the first bytes of the message
                else:
                    self.offset += sock.send(self.buf[self.offset:])

                if self.offset < len(self.buf):
                    return  # the loop calls again when the socket is writable

                self.buf = None
                _future_set_result(self.fut, None)
        except (BlockingIOError, InterruptedError):
            # The correction: EAGAIN/EINTR leave the message where it was (nothing of it was
            # sent, fds included); wait for the socket to be writable and go on from there.
            # schedule_write registers the watch after a direct call; from the loop it is
            # still registered. Ref: python-dbus-next issue #153.
            self.loop.add_writer(self.fd, self.write_callback)
        except Exception as e:
            if self.bus._user_disconnect:
                _future_set_result(self.fut, None)
            else:
                _future_set_exception(self.fut, e)
            self.bus._finalize(e)


class MessageBus(_UpstreamMessageBus):
    """``dbus_fast.aio.MessageBus`` (same constructor, same API) with :class:`_PatientWriter`.

    Upstream creates its writer in ``connect()`` (``self._writer = _MessageWriter(self)``,
    once the socket exists); the ``_writer`` property below turns that writer into a
    :class:`_PatientWriter` as it is stored, so the corrected writer handles every byte from
    the first one and no state has to be carried over afterwards.
    """

    __slots__ = ()

    @property
    def _writer(self) -> _MessageWriter | None:
        return _UpstreamMessageBus._writer.__get__(self, type(self))

    @_writer.setter
    def _writer(self, writer: _MessageWriter | None) -> None:
        if writer is not None and not isinstance(writer, _PatientWriter):
            writer = _PatientWriter(self)
        _UpstreamMessageBus._writer.__set__(self, writer)
