"""Victim streams for the reaction benchmark: N playback streams of silence from one client.

PulseAudio 16 accepts at most 64 clients on its native protocol (``MAX_CONNECTIONS`` in
``protocol-native.c``, not configurable: the 65th ``pacat`` is dropped with "Too many
connections"), so 200 victims cannot be 200 ``pacat`` processes. This program opens one
connection and plays N streams of silence on the default sink through libpulse's own
``pa_mainloop`` (ctypes; pulsectl binds no playback API), each with ``media.role`` and
``application.name`` as given. ``bench/reaction.py`` spreads its victims over several of these
processes, so the daemon still sees several apps.

Run: ``python bench/victims.py N --role game --name bench-victim-1 [--rate 44100 --channels 2]
[--device SINK]``;
uses ``PULSE_SERVER``. Runs until killed (SIGTERM) or the server goes away (exit 1).
"""

from __future__ import annotations

import argparse
import ctypes as C
import os
import sys
import time

PA_SAMPLE_S16LE = 3
PA_CONTEXT_READY, PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED = 4, 5, 6
PA_STREAM_FAILED, PA_STREAM_TERMINATED = 3, 4
PA_SEEK_RELATIVE = 0


class SampleSpec(C.Structure):
    _fields_ = [("format", C.c_int), ("rate", C.c_uint32), ("channels", C.c_uint8)]


WRITE_CB = C.CFUNCTYPE(None, C.c_void_p, C.c_size_t, C.c_void_p)


def load() -> C.CDLL:
    pa = C.CDLL("libpulse.so.0")
    sigs = {
        "pa_mainloop_new": (C.c_void_p, []),
        "pa_mainloop_get_api": (C.c_void_p, [C.c_void_p]),
        "pa_mainloop_iterate": (C.c_int, [C.c_void_p, C.c_int, C.c_void_p]),
        "pa_context_new": (C.c_void_p, [C.c_void_p, C.c_char_p]),
        "pa_context_connect": (C.c_int, [C.c_void_p, C.c_char_p, C.c_int, C.c_void_p]),
        "pa_context_get_state": (C.c_int, [C.c_void_p]),
        "pa_context_unref": (None, [C.c_void_p]),
        "pa_proplist_new": (C.c_void_p, []),
        "pa_proplist_sets": (C.c_int, [C.c_void_p, C.c_char_p, C.c_char_p]),
        "pa_proplist_free": (None, [C.c_void_p]),
        "pa_stream_new_with_proplist": (C.c_void_p, [C.c_void_p, C.c_char_p,
                                                     C.POINTER(SampleSpec), C.c_void_p,
                                                     C.c_void_p]),
        "pa_stream_set_write_callback": (None, [C.c_void_p, WRITE_CB, C.c_void_p]),
        "pa_stream_connect_playback": (C.c_int, [C.c_void_p, C.c_char_p, C.c_void_p, C.c_int,
                                                 C.c_void_p, C.c_void_p]),
        "pa_stream_get_state": (C.c_int, [C.c_void_p]),
        "pa_stream_write": (C.c_int, [C.c_void_p, C.c_void_p, C.c_size_t, C.c_void_p,
                                      C.c_int64, C.c_int]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(pa, name)
        fn.restype, fn.argtypes = restype, argtypes
    return pa


def silence_writer(pa: C.CDLL):
    """A libpulse write callback that fills every request of a playback stream with silence
    (keep a reference to it as long as the stream lives)."""
    zeros = C.create_string_buffer(1 << 16)

    @WRITE_CB
    def write(stream, nbytes, _userdata):
        while nbytes > 0:
            n = min(nbytes, len(zeros))
            pa.pa_stream_write(stream, zeros, n, None, 0, PA_SEEK_RELATIVE)
            nbytes -= n
    return write


def connect(pa: C.CDLL, ml, name: str, attempts: int = 50):
    """A ready context, or None. Retries: when many victims connect at once, a busy server's
    listen backlog overflows and the non-blocking connect is refused."""
    server = os.environ.get("PULSE_SERVER")
    for _ in range(attempts):
        ctx = pa.pa_context_new(pa.pa_mainloop_get_api(ml), name.encode())
        if pa.pa_context_connect(ctx, server.encode() if server else None, 0, None) >= 0:
            while (state := pa.pa_context_get_state(ctx)) not in (
                    PA_CONTEXT_READY, PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED):
                pa.pa_mainloop_iterate(ml, 1, None)
            if state == PA_CONTEXT_READY:
                return ctx
        pa.pa_context_unref(ctx)
        time.sleep(0.1)
    print(f"{name}: cannot connect to {server}", file=sys.stderr)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("count", type=int)
    p.add_argument("--role", default="game")
    p.add_argument("--name", default="bench-victim")
    p.add_argument("--rate", type=int, default=44100)
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--device", help="sink name (default: the default sink)")
    args = p.parse_args()

    pa = load()
    ml = pa.pa_mainloop_new()
    ctx = connect(pa, ml, args.name)
    if ctx is None:
        return 1

    write = silence_writer(pa)
    spec = SampleSpec(PA_SAMPLE_S16LE, args.rate, args.channels)
    streams = []
    for k in range(args.count):
        props = pa.pa_proplist_new()
        for key, value in (("media.role", args.role), ("application.name", args.name),
                           ("media.name", f"{args.name} {k}")):
            pa.pa_proplist_sets(props, key.encode(), value.encode())
        s = pa.pa_stream_new_with_proplist(ctx, f"{args.name} {k}".encode(), C.byref(spec),
                                           None, props)
        pa.pa_proplist_free(props)
        pa.pa_stream_set_write_callback(s, write, None)
        device = args.device.encode() if args.device else None
        if pa.pa_stream_connect_playback(s, device, None, 0, None, None) < 0:
            print(f"stream {k} did not connect", file=sys.stderr)
            return 1
        streams.append(s)

    while True:
        if pa.pa_mainloop_iterate(ml, 1, None) < 0:
            return 1
        if pa.pa_context_get_state(ctx) != PA_CONTEXT_READY:
            print("the server went away", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
