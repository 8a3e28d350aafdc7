"""Capture through the PulseAudio protocol: a libpulse record stream on the backend's own
connection (``pa_stream_connect_record``, what ``parec`` does), read in its callback on the
event loop.

Why not a ``parec`` subprocess: a stream of the daemon's own connection is the daemon's (its
client is ours, which the server vouches for), a subprocess would be one more app for the
microphone gate to tell apart by its claims; and there is no pipe to keep in step.

pulsectl declares ``pa_stream_peek`` with an ``int`` for its ``size_t *`` and no stream state
functions, so the few functions needed here are declared again, correctly, on libpulse itself
(another ``CDLL`` handle of the same library: pulsectl's declarations are not touched).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import AsyncGenerator, NoReturn

from pulsectl import _pulsectl as c

from .base import SAMPLE_BYTES, CaptureFailed, NoSuchDevice, ServerGone

logger = logging.getLogger(__name__)

#: How far a consumer may fall behind, in milliseconds of audio: older blocks are dropped.
MAX_BUFFERED_MS = 2000
#: Bounds of what a caller may ask for (rate in Hz, channels, block length in ms).
RATES, CHANNELS, BLOCK_MS = (8000, 192000), (1, 8), (5, 1000)
#: libpulse's PA_SAMPLE_S16LE and its stream states.
PA_SAMPLE_S16LE = 3
PA_STREAM_READY, PA_STREAM_FAILED, PA_STREAM_TERMINATED = 2, 3, 4

_lib = ctypes.CDLL(ctypes.util.find_library("pulse") or "libpulse.so.0")
_STREAM = ctypes.POINTER(c.PA_STREAM)
_peek = _lib.pa_stream_peek
_peek.argtypes = [_STREAM, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
_peek.restype = ctypes.c_int
_drop = _lib.pa_stream_drop
_drop.argtypes, _drop.restype = [_STREAM], ctypes.c_int
stream_state = _lib.pa_stream_get_state
stream_state.argtypes, stream_state.restype = [_STREAM], ctypes.c_int
set_state_callback = _lib.pa_stream_set_state_callback
set_state_callback.argtypes = [_STREAM, c.PA_STREAM_NOTIFY_CB_T, ctypes.c_void_p]
set_state_callback.restype = None
_context_index = _lib.pa_context_get_index
_context_index.argtypes, _context_index.restype = [ctypes.POINTER(c.PA_CONTEXT)], ctypes.c_uint32


def client_index(pulse) -> int:
    """The server's index of connection *pulse*'s client (``pa_context_get_index``): the
    ``client`` of every stream it makes; ``PA_INVALID_INDEX`` when not connected."""
    return _context_index(pulse._ctx)


def check_format(rate: int, channels: int, block_ms: int) -> int:
    """Validate a capture's shape; return the bytes of one block.

    :raises ValueError: for a value out of :data:`RATES`, :data:`CHANNELS`, :data:`BLOCK_MS`
    """
    for what, value, (low, high) in (("rate", rate, RATES), ("channels", channels, CHANNELS),
                                     ("block_ms", block_ms, BLOCK_MS)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"capture {what} must be an integer in {low}..{high}, "
                             f"not {value!r:.20}")
    if rate * block_ms % 1000:
        raise ValueError(f"a block of {block_ms} ms at {rate} Hz is not a whole number of frames")
    return rate * block_ms // 1000 * channels * SAMPLE_BYTES


async def record(pulse, source: str, rate: int, channels: int,
                 block_ms: int) -> AsyncGenerator[bytes, None]:
    """Blocks of *source* (a source's name; a monitor's for a sink) from connection *pulse*
    (a connected ``PulseAsync``), as :meth:`Backend.capture
    <audiopolicyd.backends.base.Backend.capture>` describes them."""
    block = check_format(rate, channels, block_ms)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    limit = max(1, MAX_BUFFERED_MS // block_ms)
    pending = bytearray()
    dropped = 0
    state = asyncio.get_running_loop().create_future()

    def read(s, nbytes, _userdata):
        nonlocal dropped
        data, size = ctypes.c_void_p(), ctypes.c_size_t(0)
        while _peek(s, ctypes.byref(data), ctypes.byref(size)) == 0 and size.value:
            # a hole (no data, a size) is audio the server lost: keep time with silence
            pending.extend(ctypes.string_at(data, size.value) if data else bytes(size.value))
            _drop(s)
        while len(pending) >= block:
            if queue.qsize() >= limit:
                queue.get_nowait()
                dropped += 1
                if dropped == 1:
                    logger.warning("a capture of %s fell %d ms behind: dropping its oldest "
                                   "blocks", source, MAX_BUFFERED_MS)
            queue.put_nowait(bytes(pending[:block]))
            del pending[:block]

    def changed(s, _userdata):
        now = stream_state(s)
        if now == PA_STREAM_READY and not state.done():
            state.set_result(True)
        elif now in (PA_STREAM_FAILED, PA_STREAM_TERMINATED):
            if not state.done():
                state.set_result(False)
            queue.put_nowait(None)

    read_cb, state_cb = c.PA_STREAM_REQUEST_CB_T(read), c.PA_STREAM_NOTIFY_CB_T(changed)
    stream = new_stream(pulse, "audiopolicyd capture", rate, channels)
    try:
        c.pa.stream_set_read_callback(stream, read_cb, None)
        set_state_callback(stream, state_cb, None)
        # DONT_MOVE: a capture of this device must end with it, never go on from another
        c.pa.stream_connect_record(stream, source.encode(), c.PA_BUFFER_ATTR(
            maxlength=0xFFFFFFFF, fragsize=block), c.PA_STREAM_DONT_MOVE
            | c.PA_STREAM_ADJUST_LATENCY)
        if not await state:
            _failed(pulse, source, starting=True)
        while True:
            data = await queue.get()
            if data is None:
                _failed(pulse, source, starting=False)
            yield data
    finally:
        c.pa.stream_set_read_callback(stream, c.PA_STREAM_REQUEST_CB_T(), None)
        release(stream)
        if dropped:
            logger.warning("a capture of %s dropped %d block(s) its reader was late for",
                           source, dropped)


def new_stream(pulse, name: str, rate: int, channels: int):
    """A new stream of connection *pulse* (a connected ``PulseAsync``), ``s16le`` at *rate*
    and *channels*, named *name* (``media.name``); not connected yet."""
    spec = c.PA_SAMPLE_SPEC(format=PA_SAMPLE_S16LE, rate=rate, channels=channels)
    proplist = c.pa.proplist_from_string(f"media.name='{name}'")
    try:
        return c.pa.stream_new_with_proplist(pulse._ctx, name.encode(), ctypes.byref(spec),
                                             None, proplist)
    finally:
        c.pa.proplist_free(proplist)


def release(stream) -> None:
    """Disconnect and free a stream (its state callback first: no call into a gone
    coroutine); a stream already failed or gone with its connection is no error."""
    set_state_callback(stream, c.PA_STREAM_NOTIFY_CB_T(), None)
    try:
        c.pa.stream_disconnect(stream)
    except c.pa.CallError:
        pass
    c.pa.stream_unref(stream)


def _failed(pulse, source: str, starting: bool) -> NoReturn:
    if not pulse.connected:
        raise ServerGone("the audio server went away")
    if starting:
        raise NoSuchDevice(f"no device {source!r:.80} to capture")
    raise CaptureFailed(f"the capture of {source!r:.80} ended: its device went away or the "
                        "stream was killed")
