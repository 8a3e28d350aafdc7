"""A test microphone that behaves as a capture device on both servers: ``module-pipe-source``
fed a 440 Hz sine (peak 8000) in 10 ms blocks, in real time, from a thread.

PulseAudio 16's ``module-sine-source`` hands a new recorder a 2 s block at once (a recorder
killed within 2 s gets nothing, whatever the gate did), and pipewire-pulse 0.3.65 cannot load
it (/work/shared/recipes/audio-servers.md). Issue 9 item 9 makes the harness's own ``mic`` such
a source; until then the tests and the bench of the gate's race (item 3) use this one.
"""

from __future__ import annotations

import array
import fcntl
import math
import os
import threading
import time

import harness

RATE, CHANNELS = 44100, 2
#: Frames per block written to the pipe (10 ms).
BLOCK = RATE // 100
#: The pipe's capacity, in bytes (the least Linux allows: one page, 23 ms): while the source
#: does not read (suspended, no recorder), the blocks that do not fit are dropped, as a capture
#: device drops what nobody reads; a 64 KiB pipe would hand the next recorder 371 ms at once.
PIPE_BYTES = 4096


class PipeMic:
    """``with PipeMic(server, "pipemic") as name:`` a fed pipe source named *name*.

    :raises AssertionError: when the server cannot load the module
    """

    def __init__(self, server: harness.AudioServer, name: str = "pipemic") -> None:
        self.server = server
        self.name = name
        self.fifo = server.dir / f"{name}.fifo"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._module: int | None = None

    def __enter__(self) -> str:
        with harness.pulse(self.server) as p:
            self._module = p.module_load(
                "module-pipe-source", f"source_name={self.name} file={self.fifo} "
                f"format=s16le rate={RATE} channels={CHANNELS}")
        assert self.fifo.exists(), f"module-pipe-source made no {self.fifo}"
        self._thread = threading.Thread(target=self._feed, name=f"feed {self.name}",
                                        daemon=True)
        self._thread.start()
        return self.name

    def _feed(self) -> None:
        block = array.array("h", [int(8000 * math.sin(2 * math.pi * 440 * i / RATE))
                                  for i in range(BLOCK) for _ in range(CHANNELS)]).tobytes()
        fd = os.open(self.fifo, os.O_WRONLY)
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(fd, False)
        try:
            due = time.monotonic()
            while not self._stop.is_set():
                try:
                    os.write(fd, block)
                except BlockingIOError:
                    pass  # nobody reads: dropped
                due += BLOCK / RATE
                time.sleep(max(0.0, due - time.monotonic()))
        except OSError:
            pass  # the server closed the pipe (the module was unloaded, the server stopped)
        finally:
            os.close(fd)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._module is not None:
            try:
                with harness.pulse(self.server) as p:
                    p.module_unload(self._module)
            except Exception:  # the server is already gone: nothing to unload
                pass
