"""Short streams for the churn benchmark: N playback streams, each from its own client process.

Each stream is what a short sound from a real app is to the server and to the daemon: a new
process (its own ``application.process.id``), a new client connection, one playback stream of
silence on the default sink with ``media.role`` and ``application.name`` as given, connected
and written for ``--lifetime-ms``, then the stream and the client go.

Why not ``paplay`` of a short file: ``paplay`` drains before it exits, and on PulseAudio 16's
``module-null-sink`` (2 s maximum latency) the drain of a 50 ms file takes about 2 s, whatever
``--latency-msec`` or ``PULSE_LATENCY_MSEC`` ask for (on pipewire-pulse about 0.1 s): the
streams' lifetime, hence the load, would differ by server and be set by the null sink. Here every stream lives the same
time on both servers, and no drain is waited for (an app that closes its stream mid-sound does
the same).

A stream is one ``fork()`` of this (single-threaded) process, cheaper than starting a program:
the child plays through libpulse's own ``pa_mainloop`` (ctypes, the bindings of
``bench/victims.py``) and exits. ``--parallel`` children at a time.

Run, from the repository root: ``python -m bench.shorts N [--parallel 4] [--roles
event,music,phone] [--lifetime-ms 50] [--every K]``; uses ``PULSE_SERVER``. Prints ``ended K``
on stdout after every *K* streams ended and ``done N failed F`` at the end; each failed child's
reason goes to stderr. Exit 0 when every stream played, 1 otherwise.
"""

from __future__ import annotations

import argparse
import ctypes as C
import os
import sys
import time

from bench.victims import (PA_CONTEXT_READY, PA_SAMPLE_S16LE, PA_STREAM_FAILED,
                           PA_STREAM_TERMINATED, SampleSpec, connect, load, silence_writer)

PA_STREAM_READY = 2
#: Distinct ``application.name`` values, cycled (the daemon keeps state per app).
APPS = 16


def bind_more(pa: C.CDLL) -> None:
    """Signatures of the libpulse calls this program needs beyond :func:`victims.load`."""
    sigs = {
        "pa_mainloop_prepare": (C.c_int, [C.c_void_p, C.c_int]),
        "pa_mainloop_poll": (C.c_int, [C.c_void_p]),
        "pa_mainloop_dispatch": (C.c_int, [C.c_void_p]),
        "pa_stream_disconnect": (C.c_int, [C.c_void_p]),
        "pa_context_disconnect": (None, [C.c_void_p]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(pa, name)
        fn.restype, fn.argtypes = restype, argtypes


def play(pa: C.CDLL, role: str, name: str, spec: SampleSpec, lifetime: float) -> str:
    """One client, one stream, *lifetime* seconds from READY; returns '' or what failed."""
    ml = pa.pa_mainloop_new()
    ctx = connect(pa, ml, name)
    if ctx is None:
        return "cannot connect"
    write = silence_writer(pa)
    props = pa.pa_proplist_new()
    for key, value in (("media.role", role), ("application.name", name),
                       ("media.name", f"{name} short")):
        pa.pa_proplist_sets(props, key.encode(), value.encode())
    s = pa.pa_stream_new_with_proplist(ctx, f"{name} short".encode(), C.byref(spec), None,
                                       props)
    pa.pa_proplist_free(props)
    pa.pa_stream_set_write_callback(s, write, None)
    if pa.pa_stream_connect_playback(s, None, None, 0, None, None) < 0:
        return "pa_stream_connect_playback failed"
    while (state := pa.pa_stream_get_state(s)) != PA_STREAM_READY:
        if state in (PA_STREAM_FAILED, PA_STREAM_TERMINATED):
            return f"stream state {state}"
        if pa.pa_mainloop_iterate(ml, 1, None) < 0:
            return "mainloop failed"
    end = time.monotonic() + lifetime
    while (left := end - time.monotonic()) > 0:
        if pa.pa_context_get_state(ctx) != PA_CONTEXT_READY:
            return "the server went away"
        pa.pa_mainloop_prepare(ml, max(int(left * 1e6), 0))
        pa.pa_mainloop_poll(ml)
        pa.pa_mainloop_dispatch(ml)
    pa.pa_stream_disconnect(s)
    pa.pa_context_disconnect(ctx)
    return ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("count", type=int)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--roles", default="event,music,phone", help="media.role values, cycled")
    p.add_argument("--lifetime-ms", type=int, default=50)
    p.add_argument("--rate", type=int, default=44100)
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--every", type=int, default=0, help="print 'ended K' every K streams")
    args = p.parse_args()
    roles = [r for r in args.roles.split(",") if r]

    pa = load()
    bind_more(pa)
    spec = SampleSpec(PA_SAMPLE_S16LE, args.rate, args.channels)
    running: set[int] = set()
    ended = failed = 0

    def reap() -> None:
        nonlocal ended, failed
        pid, status = os.wait()
        running.discard(pid)
        ended += 1
        if os.waitstatus_to_exitcode(status) != 0:
            failed += 1
        if args.every and ended % args.every == 0:
            print(f"ended {ended}", flush=True)

    try:
        for k in range(args.count):
            while len(running) >= args.parallel:
                reap()
            sys.stdout.flush()  # nothing buffered is copied into the child
            pid = os.fork()
            if pid == 0:
                rc = 1
                try:
                    error = play(pa, roles[k % len(roles)], f"bench-churn-{k % APPS}", spec,
                                 args.lifetime_ms / 1000)
                    if error:
                        print(f"stream {k}: {error}", file=sys.stderr, flush=True)
                    else:
                        rc = 0
                finally:
                    os._exit(rc)  # no atexit handlers, no buffers of the parent flushed twice
            running.add(pid)
        while running:
            reap()
    except KeyboardInterrupt:
        return 130
    print(f"done {ended} failed {failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
