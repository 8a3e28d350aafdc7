"""A hostile recorder: it records a source and undoes the daemon's hold on its own stream
(unmute, volume up, move to another source and back) in a loop, and counts the microphone
audio it received. A real libpulse client (ctypes, the threaded-mainloop API), as an attacker
would write it.

    python mic_fighter.py [--device mic] [--interval MS] [--attack unmute,volume,move]
                          [--move-to SOURCE] [--via own|other] [--streams N] [--seconds S]

``--interval 0`` is a tight loop: the next write goes as soon as the server answered the last
(as fast as one connection can go). ``--via other`` sends the writes from a second connection
(another client acting on the stream). ``--streams N``: when a stream is killed, open a new one,
up to N streams in all. Each stream is recorded for at most ``--seconds``.

Prints one JSON line per stream: ``{"stream": i, "index": source-output index, "audible_ms":
ms of frames with a non-zero sample, "recorded_ms": ms received in all, "writes": attacks
sent, "killed": whether the server ended the stream, "first_audible_at_ms" and "ended_at_ms":
from the stream's READY}``. s16le, 44100 Hz, stereo.
"""

import argparse
import array
import ctypes as C
import json
import sys
import time

PA_CONTEXT_READY, PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED = 4, 5, 6
PA_STREAM_READY, PA_STREAM_FAILED, PA_STREAM_TERMINATED = 2, 3, 4
PA_OPERATION_RUNNING = 0
PA_SAMPLE_S16LE = 3
PA_STREAM_ADJUST_LATENCY = 0x2000
PA_VOLUME_NORM = 0x10000
RATE, CHANNELS, FRAME = 44100, 2, 4

parser = argparse.ArgumentParser()
parser.add_argument("--device", default="mic")
parser.add_argument("--name", default="mic-fighter", help="application.name")
parser.add_argument("--interval", type=float, default=0.0, help="ms between attacks; 0: tight")
parser.add_argument("--attack", default="unmute,volume")
parser.add_argument("--move-to", default="", help="source to move the stream to and back")
parser.add_argument("--via", choices=("own", "other"), default="own")
parser.add_argument("--streams", type=int, default=1)
parser.add_argument("--seconds", type=float, default=2.0)
args = parser.parse_args()
attacks = set(args.attack.split(","))

pa = C.CDLL("libpulse.so.0")
vp = C.c_void_p
for name in ("pa_threaded_mainloop_new", "pa_threaded_mainloop_get_api", "pa_context_new",
             "pa_stream_new", "pa_context_set_source_output_mute",
             "pa_context_set_source_output_volume", "pa_context_move_source_output_by_name"):
    getattr(pa, name).restype = vp
pa.pa_cvolume_set.restype = vp
pa.pa_stream_get_index.restype = C.c_uint32


class SampleSpec(C.Structure):
    _fields_ = [("format", C.c_int), ("rate", C.c_uint32), ("channels", C.c_uint8)]


class BufferAttr(C.Structure):
    _fields_ = [("maxlength", C.c_uint32), ("tlength", C.c_uint32), ("prebuf", C.c_uint32),
                ("minreq", C.c_uint32), ("fragsize", C.c_uint32)]


class CVolume(C.Structure):
    _fields_ = [("channels", C.c_uint8), ("values", C.c_uint32 * 32)]


loop = pa.pa_threaded_mainloop_new()
pa.pa_threaded_mainloop_start(vp(loop))


def locked(call, *a):
    pa.pa_threaded_mainloop_lock(vp(loop))
    try:
        return call(*a)
    finally:
        pa.pa_threaded_mainloop_unlock(vp(loop))


def connect(name: bytes):
    ctx = locked(pa.pa_context_new, vp(pa.pa_threaded_mainloop_get_api(vp(loop))), name)
    locked(pa.pa_context_connect, vp(ctx), None, 0, None)
    while (state := locked(pa.pa_context_get_state, vp(ctx))) != PA_CONTEXT_READY:
        if state in (PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED):
            sys.exit("mic_fighter: cannot connect")
        time.sleep(0.002)
    return ctx


ctx = connect(args.name.encode())
writer = ctx if args.via == "own" else connect(b"mic-fighter-helper")
spec = SampleSpec(PA_SAMPLE_S16LE, RATE, CHANNELS)
attr = BufferAttr(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, RATE * FRAME // 100)  # 10 ms
full = CVolume()
pa.pa_cvolume_set(C.byref(full), CHANNELS, PA_VOLUME_NORM)


def attack(index: int, step: int) -> list:
    """Send one round of attacks on source-output ``index``; the operations sent."""
    ops = []
    if "unmute" in attacks:
        ops.append(pa.pa_context_set_source_output_mute(vp(writer), index, 0, None, None))
    if "volume" in attacks:
        ops.append(pa.pa_context_set_source_output_volume(vp(writer), index, C.byref(full),
                                                          None, None))
    if "move" in attacks and args.move_to:
        target = (args.move_to if step % 2 == 0 else args.device).encode()
        ops.append(pa.pa_context_move_source_output_by_name(vp(writer), index, target, None,
                                                            None))
    return [op for op in ops if op]


def record_one(number: int) -> dict:
    stream = locked(pa.pa_stream_new, vp(ctx), b"fighter", C.byref(spec), None)
    locked(pa.pa_stream_connect_record, vp(stream), args.device.encode(), C.byref(attr),
           PA_STREAM_ADJUST_LATENCY)
    while (state := locked(pa.pa_stream_get_state, vp(stream))) != PA_STREAM_READY:
        if state in (PA_STREAM_FAILED, PA_STREAM_TERMINATED):
            return {"stream": number, "index": -1, "audible_ms": 0.0, "recorded_ms": 0.0,
                    "writes": 0, "killed": True}
        time.sleep(0.001)
    index = locked(pa.pa_stream_get_index, vp(stream))
    ready = time.monotonic()
    first_audible = None
    audible = recorded = writes = 0
    pending: list = []
    next_attack = time.monotonic()
    end = time.monotonic() + args.seconds
    killed = False
    data, size = vp(), C.c_size_t()
    while time.monotonic() < end:
        pa.pa_threaded_mainloop_lock(vp(loop))
        try:
            state = pa.pa_stream_get_state(vp(stream))
            while state == PA_STREAM_READY and pa.pa_stream_peek(
                    vp(stream), C.byref(data), C.byref(size)) == 0 and size.value:
                if data.value:
                    frames = array.array("I", C.string_at(data.value,
                                                          size.value // FRAME * FRAME))
                    recorded += len(frames)
                    loud = len(frames) - frames.count(0)  # frames with a non-zero sample
                    if loud and first_audible is None:
                        first_audible = time.monotonic() - ready
                    audible += loud
                else:
                    recorded += size.value // FRAME  # a hole: silence
                pa.pa_stream_drop(vp(stream))
            if state != PA_STREAM_READY:
                killed = True
            now = time.monotonic()
            # tight: the next round as soon as the last was answered
            running = []
            for op in pending:
                if pa.pa_operation_get_state(vp(op)) == PA_OPERATION_RUNNING:
                    running.append(op)
                else:
                    pa.pa_operation_unref(vp(op))
            pending = running
            if not killed and (now >= next_attack if args.interval else not pending):
                pending = attack(index, writes)
                writes += 1
                next_attack = now + args.interval / 1000
        finally:
            pa.pa_threaded_mainloop_unlock(vp(loop))
        if killed:
            break
        time.sleep(0.0002 if not args.interval else min(0.001, args.interval / 2000))
    locked(pa.pa_stream_disconnect, vp(stream))
    locked(pa.pa_stream_unref, vp(stream))
    return {"stream": number, "index": index, "audible_ms": audible * 1000 / RATE,
            "recorded_ms": recorded * 1000 / RATE, "writes": writes, "killed": killed,
            "first_audible_at_ms": None if first_audible is None else first_audible * 1000,
            "ended_at_ms": (time.monotonic() - ready) * 1000}


for n in range(args.streams):
    print(json.dumps(record_one(n)), flush=True)
