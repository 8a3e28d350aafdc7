"""The recorder's streaming encoders: real files through soundfile (libsndfile) and PyAV (FFmpeg).

Each file written is read back by the library of its format and checked for length, channels
and content (a 440 Hz sine on the left, silence on the right). Measured tolerances (48 kHz):
``wav`` exact; ``mp3`` exact once closed (mpg123 reads the LAME tag's delay and padding);
``mp4`` reads back :data:`~audiopolicyd.recorder.encode.AAC_PRIMING` samples (21.3 ms) longer.
"""

from __future__ import annotations

import errno
import gc
import io
import itertools
import os
import shutil
import threading
import tracemalloc

import av
import numpy as np
import pytest
import soundfile as sf

from audiopolicyd.recorder import encode
from audiopolicyd.recorder.encode import FORMATS, open_writer, repair

RATE = 48000
BLOCK = RATE // 100  # 10 ms
TONE = 440.0



def decoded_frames(fmt: str, written: int) -> int:
    """The frames a closed file decodes to: all written, and for mp4 the AAC encoder's priming
    and the padding of its last 1024-sample frame (FFmpeg's fragmented MP4 has no edit list)."""
    if fmt != "mp4":
        return written
    return -(-(written + encode.AAC_PRIMING) // 1024) * 1024

#: How much of what was flushed a killed writer may lose (frames), per format.
KILL_LOSS = {"wav": 0, "mp3": encode.MP3_LAG_FRAMES,
             "mp4": round(encode.MP4_FRAGMENT_S * RATE) + encode.MP4_LAG_FRAMES}


def sine(seconds: float, channels: int) -> np.ndarray:
    """A 440 Hz sine at half scale on the first channel, silence on the others."""
    t = np.arange(round(seconds * RATE)) / RATE
    tone = (np.sin(2 * np.pi * TONE * t) * 16000).astype(np.int16)
    if channels == 1:
        return tone
    out = np.zeros((len(tone), channels), np.int16)
    out[:, 0] = tone
    return out


def write_blocks(writer: encode.Writer, data: np.ndarray) -> None:
    for i in range(0, len(data), BLOCK):
        writer.write(data[i:i + BLOCK])


def read_back(path, fmt: str) -> tuple[np.ndarray, int]:
    """``(samples as float (n, channels), rate)`` by the library of the format."""
    if fmt != "mp4":
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return data, rate
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        planes = [frame.to_ndarray() for frame in container.decode(stream)]
        return np.concatenate(planes, axis=1).T, stream.rate


def dominant_hz(signal: np.ndarray, rate: int) -> float:
    """The strongest frequency (to 0.25 Hz) of up to one second of the middle of ``signal``."""
    width = min(rate, len(signal) // 2)
    mid = len(signal) // 2
    window = signal[mid - width // 2: mid + width // 2]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window)), n=4 * rate))
    return float(np.argmax(spectrum) / 4)


def rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(signal, dtype=np.float64))))


# -- round trips ------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("fmt", FORMATS)
def test_written_file_reads_back_as_the_sine(tmp_path, fmt, channels):
    path = tmp_path / f"rec{encode.EXTENSIONS[fmt]}"
    writer = open_writer(path, fmt, RATE, channels)
    write_blocks(writer, sine(2.5, channels))
    assert writer.frames == 120000
    assert writer.duration == 2.5
    writer.close()
    writer.close()  # idempotent

    assert writer.size == os.path.getsize(path)
    data, rate = read_back(path, fmt)
    assert rate == RATE
    assert data.shape[1] == channels
    assert len(data) == decoded_frames(fmt, 120000)
    assert abs(len(data) / RATE - 2.5) <= 0.05  # mp4: 38.7 ms more
    if fmt == "mp4":  # the length the container gives: the priming only (21.3 ms more)
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            assert stream.duration * stream.time_base * RATE == 120000 + encode.AAC_PRIMING
    assert dominant_hz(data[:, 0], RATE) == pytest.approx(TONE, abs=2)
    # the level (measured: wav exact, mp3 0.95, mp4 within 1 %)
    assert rms(data[:, 0]) == pytest.approx(16000 / 32768 / np.sqrt(2), rel=0.08)
    if channels == 2:
        assert rms(data[:, 1]) < rms(data[:, 0]) / 100
    assert repair(path, fmt) == pytest.approx(len(data) / RATE, abs=0.025)


def test_mp3_is_constant_bitrate():
    out = io.BytesIO()
    with open_writer(out, "mp3", RATE, 2) as writer:
        write_blocks(writer, sine(2.5, 2))
    assert len(out.getvalue()) * 8 / 2.5 == pytest.approx(encode.MP3_BITRATE * 1000, rel=0.03)


@pytest.mark.parametrize("mode", ["wb", "r+b"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_passed_descriptor_is_written_and_left_open(tmp_path, fmt, mode):
    path = tmp_path / f"rec{encode.EXTENSIONS[fmt]}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, mode, closefd=True) as f:
        writer = open_writer(f, fmt, RATE, 1)
        write_blocks(writer, sine(1.0, 1))
        writer.close()
        assert not f.closed
    assert writer.size == os.path.getsize(path)
    data, _ = read_back(path, fmt)
    assert dominant_hz(data[:, 0], RATE) == pytest.approx(TONE, abs=2)


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_a_pipe_takes_no_format_that_seeks(fmt):
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb") as f:
        with pytest.raises(ValueError, match=f"{fmt} needs a seekable file"):
            open_writer(f, fmt, RATE, 1)


def test_mp4_streams_into_a_pipe():
    read_fd, write_fd = os.pipe()
    received = bytearray()

    def drain():
        with os.fdopen(read_fd, "rb") as r:
            while chunk := r.read(65536):
                received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_fd, "wb") as f:
        writer = open_writer(f, "mp4", RATE, 2)
        write_blocks(writer, sine(1.0, 2))
        writer.close()
    reader.join(10)
    assert len(received) == writer.size
    with av.open(io.BytesIO(bytes(received))) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
    assert samples == RATE + encode.AAC_PRIMING + (-RATE) % 1024


# -- crash safety -----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_a_killed_writer_leaves_what_it_flushed(tmp_path, fmt):
    path = tmp_path / f"rec{encode.EXTENSIONS[fmt]}"
    killed = tmp_path / f"killed{encode.EXTENSIONS[fmt]}"
    writer = open_writer(path, fmt, RATE, 2)
    data = sine(2.0, 2)
    write_blocks(writer, data[:RATE * 3 // 2])
    writer.flush()
    flushed = writer.frames
    assert writer.size == os.path.getsize(path)
    write_blocks(writer, data[RATE * 3 // 2:])  # after the last flush: a header left stale
    shutil.copyfile(path, killed)  # what SIGKILL would leave: the writer is not closed
    if fmt == "wav":
        assert sf.info(str(killed)).frames == flushed
    seconds = repair(killed, fmt)

    assert seconds is not None
    assert seconds >= (flushed - KILL_LOSS[fmt]) / RATE
    if fmt == "wav":  # the unbuffered file holds every block written, the header now says so
        assert seconds == 2.0
    back, _ = read_back(killed, fmt)
    assert len(back) / RATE == pytest.approx(seconds, abs=0.03)
    assert dominant_hz(back[:, 0], RATE) == pytest.approx(TONE, abs=2)
    writer.close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_repair_leaves_a_complete_file_as_it_is(tmp_path, fmt):
    path = tmp_path / f"rec{encode.EXTENSIONS[fmt]}"
    with open_writer(path, fmt, RATE, 1) as writer:
        write_blocks(writer, sine(1.0, 1))
    before = path.read_bytes()
    assert repair(path, fmt) == pytest.approx(decoded_frames(fmt, RATE) / RATE, abs=0.025)
    assert path.read_bytes() == before


def test_repair_cuts_a_wav_partial_frame_and_a_stale_header(tmp_path):
    path = tmp_path / "rec.wav"
    with open_writer(path, "wav", RATE, 2) as writer:
        write_blocks(writer, sine(0.5, 2))
    raw = bytearray(path.read_bytes())
    raw[4:8] = raw[40:44] = bytes(4)  # as left before the first flush
    path.write_bytes(bytes(raw) + b"\x01\x02")  # and half a frame more
    assert repair(path, "wav") == 0.5
    assert path.read_bytes()[:len(raw)] == path.read_bytes() and len(path.read_bytes()) == 96044
    assert sf.info(str(path)).frames == 24000


def test_repair_cuts_an_mp4_fragment_written_in_part(tmp_path):
    path = tmp_path / "rec.mp4"
    with open_writer(path, "mp4", RATE, 1) as writer:
        write_blocks(writer, sine(2.0, 1))
    whole = path.read_bytes()
    path.write_bytes(whole[:-len(whole) // 5])
    seconds = repair(path, "mp4")
    assert seconds is not None and 0.5 <= seconds < 2.0
    assert len(path.read_bytes()) < len(whole) * 4 // 5
    back, _ = read_back(path, "mp4")
    assert len(back) / RATE == pytest.approx(seconds, abs=0.03)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("content", [None, b"", b"not audio at all" * 100])
def test_repair_of_nothing_saves_nothing(tmp_path, fmt, content):
    path = tmp_path / "rec"
    if content is not None:
        path.write_bytes(content)
    assert repair(path, fmt) is None


# -- a full disk ------------------------------------------------------------------------------

class FullDisk(io.RawIOBase):
    """A file on a disk with ``room`` bytes: writes past it are cut, then fail with ENOSPC;
    rewriting what is there (a header) still works."""

    def __init__(self, path, room: int) -> None:
        self.file = open(path, "w+b", buffering=0)  # closed by close()
        self.room = room

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        pos = self.file.tell()
        fits = max(0, min(len(data), self.room - pos))
        if fits == 0 and len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.file.write(memoryview(data)[:fits])

    def readinto(self, buffer) -> int:
        return self.file.readinto(buffer)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def truncate(self, size=None) -> int:
        return self.file.truncate(size)

    def close(self) -> None:
        self.file.close()
        super().close()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_raises_enospc_and_keeps_what_fitted(tmp_path, fmt):
    path = tmp_path / f"rec{encode.EXTENSIONS[fmt]}"
    room = {"wav": 96044 + 1001, "mp3": 16000, "mp4": 20000}[fmt]
    disk = FullDisk(path, room)
    writer = open_writer(disk, fmt, RATE, 1)
    data = sine(10.0, 1)
    with pytest.raises(OSError) as raised:
        write_blocks(writer, data)
        writer.flush()
    assert raised.value.errno == errno.ENOSPC
    with pytest.raises(OSError):  # broken: the same error again
        writer.write(data[:BLOCK])
    try:
        writer.close()
    except OSError as exc:  # finishing may need room too (the MP4 trailer)
        assert exc.errno == errno.ENOSPC
    writer.close()
    disk.close()

    assert os.path.getsize(path) <= room
    back, _ = read_back(path, fmt)
    assert dominant_hz(back[:, 0], RATE) == pytest.approx(TONE, abs=2)
    if fmt == "wav":  # every whole frame that fitted, and a header that says so
        assert sf.info(str(path)).frames == (room - 44) // 2
        assert os.path.getsize(path) == 44 + (room - 44) // 2 * 2 + 1
    else:
        assert len(back) / RATE > 0.5


# -- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "rate", "channels", "message"), [
    ("ogg", RATE, 1, "unknown recording format 'ogg': one of wav, mp3, mp4"),
    ("wav", 0, 1, "sample rate 0 Hz not supported by wav"),
    ("wav", 48000.0, 1, "sample rate 48000.0 Hz not supported by wav"),
    ("mp3", 96000, 1, "sample rate 96000 Hz not supported by mp3"),
    ("mp4", 12345, 1, "sample rate 12345 Hz not supported by mp4"),
    ("wav", RATE, 0, "channel count 0 not supported by wav"),
    ("mp3", RATE, 3, "channel count 3 not supported by mp3"),
    ("mp4", RATE, True, "channel count True not supported by mp4"),
])
def test_bad_parameters_are_named(tmp_path, fmt, rate, channels, message):
    with pytest.raises(ValueError) as raised:
        open_writer(tmp_path / "rec", fmt, rate, channels)
    assert str(raised.value) == message
    assert not (tmp_path / "rec").exists()


@pytest.mark.parametrize(("block", "message"), [
    (np.zeros(480, np.float32), "block dtype float32: int16 expected"),
    (np.zeros(480, np.int16), r"block shape \(480,\): \(n, 2\) expected"),
    (np.zeros((480, 1), np.int16), r"block shape \(480, 1\): \(n, 2\) expected"),
])
def test_a_bad_block_is_named(block, message):
    with open_writer(io.BytesIO(), "wav", RATE, 2) as writer:
        with pytest.raises(ValueError, match=message):
            writer.write(block)
        assert writer.frames == 0


def test_a_closed_writer_takes_no_more():
    writer = open_writer(io.BytesIO(), "wav", RATE, 1)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(np.zeros(480, np.int16))


def test_repair_of_an_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown recording format 'flac'"):
        repair(tmp_path / "rec", "flac")


# -- memory -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_memory_stays_flat(tmp_path, fmt):
    """A minute in 10 ms blocks: what the writer's calls allocate on the Python side (numpy's
    arrays included) does not grow with the length; it holds no list or buffer of the data.

    Two halves are measured: a buffer that grows does so in both, while a one-off allocation
    (seen once: 1.8 MiB at soundfile's ``ffi.cast``, only when the whole file runs) is in one.
    """
    block = sine(BLOCK / RATE, 1)
    writer = open_writer(tmp_path / f"rec{encode.EXTENSIONS[fmt]}", fmt, RATE, 1)
    ours = [tracemalloc.Filter(True, encode.__file__, all_frames=True)]
    gc.collect()  # finalizers of earlier tests' objects would run, and allocate, in the loop
    tracemalloc.start(4)  # deep enough to reach encode.py under soundfile's calls
    try:
        snapshots = []
        for second in range(60):
            if second % 30 == 1:  # after a second of warm-up, then half-way
                snapshots.append(tracemalloc.take_snapshot().filter_traces(ours))
            for _ in range(100):
                writer.write(block)
            writer.flush()
        snapshots.append(tracemalloc.take_snapshot().filter_traces(ours))
    finally:
        tracemalloc.stop()
    writer.close()
    assert writer.duration == 60.0
    grown = [sum(stat.size_diff for stat in later.compare_to(earlier, "filename"))
             for earlier, later in itertools.pairwise(snapshots)]
    assert min(grown) < 16 * 1024, grown
    assert max(grown) < 4 * 1024 * 1024, grown  # 2/3 of the 5.8 MB of PCM written
