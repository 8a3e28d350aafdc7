"""Playback through the PulseAudio protocol: a libpulse playback stream on the backend's own
connection (``pa_stream_connect_playback``, what ``paplay`` does), written from the event loop.

Why the backend's own connection, as for capture (:mod:`.pulse_capture`): a stream of the
daemon's own client is the daemon's (:attr:`Stream.own <audiopolicyd.model.Stream.own>`), which
the engine and the router leave alone, so a recording's beep plays on the device the recording
chose and no category's route moves it, nor does any policy silence it.

pulsectl declares none of libpulse's playback functions; the few needed are declared here on
libpulse itself (another ``CDLL`` handle of the same library, as :mod:`.pulse_capture` does).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging

from pulsectl import _pulsectl as c

from .base import NoSuchDevice, ServerGone
from .pulse_capture import (
    PA_STREAM_FAILED, PA_STREAM_READY, PA_STREAM_TERMINATED, check_format, new_stream, release,
    set_state_callback, stream_state,
)

logger = logging.getLogger(__name__)

#: Seconds a playback may take beyond its length before it is given up (a stalled sink).
SLACK_S = 5.0

_lib = ctypes.CDLL(ctypes.util.find_library("pulse") or "libpulse.so.0")
_STREAM = ctypes.POINTER(c.PA_STREAM)
_SUCCESS_CB = ctypes.CFUNCTYPE(None, _STREAM, ctypes.c_int, ctypes.c_void_p)
_connect = _lib.pa_stream_connect_playback
_connect.argtypes = [_STREAM, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                     _STREAM]
_connect.restype = ctypes.c_int
_write = _lib.pa_stream_write
_write.argtypes = [_STREAM, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int]
_write.restype = ctypes.c_int
_writable = _lib.pa_stream_writable_size
_writable.argtypes, _writable.restype = [_STREAM], ctypes.c_size_t
_set_write_callback = _lib.pa_stream_set_write_callback
_set_write_callback.argtypes = [_STREAM, c.PA_STREAM_REQUEST_CB_T, ctypes.c_void_p]
_set_write_callback.restype = None
_drain = _lib.pa_stream_drain
_drain.argtypes, _drain.restype = [_STREAM, _SUCCESS_CB, ctypes.c_void_p], ctypes.c_void_p
_unref_op = _lib.pa_operation_unref
_unref_op.argtypes, _unref_op.restype = [ctypes.c_void_p], None
PA_SEEK_RELATIVE = 0


async def play(pulse, sink: str, pcm: bytes, rate: int, channels: int,
               name: str = "audiopolicyd") -> None:
    """Play *pcm* (s16le, channels interleaved) on *sink* (a sink's name) from connection
    *pulse* and return once the server has played it (drained), as :meth:`Backend.play
    <audiopolicyd.backends.base.Backend.play>` describes."""
    check_format(rate, channels, 10)
    loop = asyncio.get_running_loop()
    state = loop.create_future()
    drained = loop.create_future()
    offset, asked = 0, False

    def write(s, _nbytes, _userdata):
        nonlocal offset, asked
        size = min(_writable(s), len(pcm) - offset)
        if size > 0:
            chunk = ctypes.create_string_buffer(pcm[offset:offset + size], size)
            _write(s, chunk, size, None, 0, PA_SEEK_RELATIVE)
            offset += size
        if offset >= len(pcm) and not asked:
            asked = True
            op = _drain(s, drain_cb, None)
            if op:
                _unref_op(op)

    def on_drained(_s, success, _userdata):
        if not drained.done():
            drained.set_result(bool(success))

    def changed(s, _userdata):
        now = stream_state(s)
        if now == PA_STREAM_READY and not state.done():
            state.set_result(True)
        elif now in (PA_STREAM_FAILED, PA_STREAM_TERMINATED):
            if not state.done():
                state.set_result(False)
            if not drained.done():
                drained.set_result(False)

    write_cb, state_cb = c.PA_STREAM_REQUEST_CB_T(write), c.PA_STREAM_NOTIFY_CB_T(changed)
    drain_cb = _SUCCESS_CB(on_drained)
    stream = new_stream(pulse, name, rate, channels)
    try:
        _set_write_callback(stream, write_cb, None)
        set_state_callback(stream, state_cb, None)
        # DONT_MOVE: it plays where it was put, or not at all
        _connect(stream, sink.encode() if sink else None, None, c.PA_STREAM_DONT_MOVE, None,
                 None)
        if not await state:
            if not pulse.connected:
                raise ServerGone("the audio server went away")
            raise NoSuchDevice(f"no sink {sink!r:.80} to play on")
        length_s = len(pcm) / (rate * channels * 2)
        try:
            ok = await asyncio.wait_for(drained, length_s + SLACK_S)
        except asyncio.TimeoutError:
            ok = False
        if not ok:
            logger.warning("a playback on %s did not play to its end", sink or "the default")
    finally:
        _set_write_callback(stream, c.PA_STREAM_REQUEST_CB_T(), None)
        release(stream)
