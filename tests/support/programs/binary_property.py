"""A real libpulse client (ctypes, the asynchronous API) whose playback stream carries one
binary property of N bytes, then plays silence until killed.

    python binary_property.py N [ROLE]

Over 64 KiB, pipewire-pulse 0.3.65 describes the stream in a reply libpulse rejects ("Protocol
error"): any client that reads the stream, or lists the streams, loses its connection (``pactl
list sink-inputs`` fails). libpulse-simple cannot set a binary property, hence the ctypes.
"""

import ctypes as C
import sys
import time

SIZE = int(sys.argv[1])
ROLE = sys.argv[2].encode() if len(sys.argv) > 2 else b"game"
PA_CONTEXT_READY, PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED = 4, 5, 6
PA_STREAM_READY, PA_STREAM_FAILED, PA_STREAM_TERMINATED = 2, 3, 4
PA_SAMPLE_S16LE = 3

pa = C.CDLL("libpulse.so.0")
vp = C.c_void_p
for name in ("pa_threaded_mainloop_new", "pa_threaded_mainloop_get_api", "pa_context_new",
             "pa_proplist_new", "pa_stream_new_with_proplist"):
    getattr(pa, name).restype = vp


class SampleSpec(C.Structure):
    _fields_ = [("format", C.c_int), ("rate", C.c_uint32), ("channels", C.c_uint8)]


def locked(call, *args):
    pa.pa_threaded_mainloop_lock(vp(loop))
    try:
        return call(*args)
    finally:
        pa.pa_threaded_mainloop_unlock(vp(loop))


loop = pa.pa_threaded_mainloop_new()
pa.pa_threaded_mainloop_start(vp(loop))
ctx = locked(pa.pa_context_new, vp(pa.pa_threaded_mainloop_get_api(vp(loop))), b"binary-property")
locked(pa.pa_context_connect, vp(ctx), None, 0, None)
while (state := locked(pa.pa_context_get_state, vp(ctx))) != PA_CONTEXT_READY:
    if state in (PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED):
        sys.exit("binary_property: cannot connect")
    time.sleep(0.01)

props = pa.pa_proplist_new()
pa.pa_proplist_sets(vp(props), b"media.role", ROLE)
data = bytes([0xFF, 0xFE] * (SIZE // 2))
pa.pa_proplist_set(vp(props), b"application.icon", data, C.c_size_t(len(data)))
spec = SampleSpec(PA_SAMPLE_S16LE, 44100, 2)
stream = locked(pa.pa_stream_new_with_proplist, vp(ctx), b"binary", C.byref(spec), None,
                vp(props))
locked(pa.pa_stream_connect_playback, vp(stream), None, None, 0, None, None)
silence = bytes(4410 * 4)
while True:
    state = locked(pa.pa_stream_get_state, vp(stream))
    if state in (PA_STREAM_FAILED, PA_STREAM_TERMINATED):
        sys.exit("binary_property: the stream failed")
    if state == PA_STREAM_READY:
        size = locked(pa.pa_stream_writable_size, vp(stream))
        if size:
            locked(pa.pa_stream_write, vp(stream), silence, C.c_size_t(min(size, len(silence))),
                   None, C.c_int64(0), 0)
    time.sleep(0.02)
