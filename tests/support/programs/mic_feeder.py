"""The test microphone's signal: a 440 Hz sine written into a FIFO in 10 ms blocks, in real time.

    python mic_feeder.py FIFO            # the sine
    python mic_feeder.py FIFO --script   # silence, and what a test hands it (below)

The test servers read the FIFO with ``module-pipe-source`` (source ``mic``), which behaves as a
capture device does: a new recording gets the source's blocks as they are captured, never a
backlog rendered at once (PulseAudio's ``module-sine-source`` hands a new recorder up to 2 s in
one block; pipewire-pulse 0.3.65 cannot load it at all). Format: s16le, 48 kHz, stereo,
amplitude 0.5 (peak 16384). Nothing else sounds on ``mic``: every non-zero sample a recording of
it holds is microphone audio.

The server makes the FIFO (PulseAudio's module refuses one that exists, and removes it when
unloaded), so the feeder waits for it and opens it again whenever the path names a new one (a
server restart). It is opened read-write (opening never blocks, and a reader going away never
ends the feeder with EPIPE).

While nobody records ``mic``, the servers do not read the FIFO, and what waited in it would
reach the next recording at once: a capture device never hands out what it captured before a
stream started. So the feeder drops what the server left unread for two blocks: a new
recording finds at most 20 ms waiting. Runs until killed.

With ``--script`` it feeds digital silence, and whenever a file ``FIFO.play`` appears (raw
s16le, 48 kHz, stereo; a test writes it elsewhere and renames it there, so it appears whole) it
feeds that file's content once, from the next block on, removes the file, and goes back to
silence: the recorder's tests speak into the microphone when they choose.
"""

import array
import fcntl
import math
import os
import sys
import termios
import time

RATE, CHANNELS, FREQ, BLOCK_MS = 48000, 2, 440, 10


def sine_period() -> bytes:
    """One second of the sine, s16le interleaved: 440 whole periods, so blocks join seamlessly."""
    out = bytearray()
    for i in range(RATE):
        value = int(16384 * math.sin(2 * math.pi * FREQ * i / RATE))
        out += value.to_bytes(2, "little", signed=True) * CHANNELS
    return bytes(out)


def reopen(path: str, fd: int | None, inode: int | None) -> tuple[int | None, int | None]:
    """The FIFO at *path* open for writing: *fd* while the path still names the same FIFO,
    else the new one (None while there is none)."""
    try:
        now = os.stat(path).st_ino
    except FileNotFoundError:
        now = None
    if now == inode:
        return fd, inode
    if fd is not None:
        os.close(fd)
    if now is None:
        return None, None
    return os.open(path, os.O_RDWR | os.O_NONBLOCK), now


def drop_unread(fd: int, limit: int) -> None:
    """Read back what waits in the FIFO when it is *limit* bytes or more (nobody reads it)."""
    waiting = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, waiting)
    while waiting[0] >= limit:
        try:
            waiting[0] -= len(os.read(fd, waiting[0]))
        except BlockingIOError:
            return


class Script:
    """``--script``'s signal: silence, or the content of ``FIFO.play`` once it appears."""

    def __init__(self, play: str, block: int):
        self.play, self.block = play, block
        self.data, self.offset = b"", 0

    def next(self) -> bytes:
        if self.offset >= len(self.data) and os.path.exists(self.play):
            with open(self.play, "rb") as f:
                self.data, self.offset = f.read(), 0
            os.unlink(self.play)
        chunk = self.data[self.offset:self.offset + self.block]
        self.offset += self.block
        return chunk + bytes(self.block - len(chunk))


def main() -> None:
    second = sine_period()
    block = RATE * BLOCK_MS // 1000 * CHANNELS * 2
    script = Script(sys.argv[1] + ".play", block) if "--script" in sys.argv[2:] else None
    fd = inode = None
    offset, due = 0, time.monotonic()
    while True:
        fd, inode = reopen(sys.argv[1], fd, inode)
        chunk = script.next() if script is not None else second[offset:offset + block]
        if fd is not None:
            drop_unread(fd, 2 * block)
            try:
                os.write(fd, chunk)
            except BlockingIOError:
                pass  # full: the server is not reading; dropped next time
        offset = (offset + block) % len(second)
        due += BLOCK_MS / 1000
        time.sleep(max(0.0, due - time.monotonic()))


if __name__ == "__main__":
    main()
