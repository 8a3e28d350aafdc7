"""Streaming encoders for a recording: WAV, MP3 and MP4 (AAC), as SWML's ``record`` verb offers.

Each block of 16-bit PCM is handed to the codec library as it comes and its output goes straight
to the file: nothing accumulates in memory, however long the recording (an hour of stereo WAV at
48 kHz is 660 MB on disk and a few kB in the writer). No codec or container code lives here:

* ``wav``: libsndfile (through soundfile), PCM_16. The header's RIFF and ``data`` sizes are
  rewritten by :meth:`Writer.flush` with libsndfile's ``SFC_UPDATE_HEADER_NOW``: soundfile's own
  ``flush()`` is ``sf_write_sync``, which only fsyncs and leaves the sizes stale (checked with
  libsndfile 1.2.2). A plain WAV holds at most 4 GiB: about 6 h 12 min of 48 kHz stereo.
* ``mp3``: libsndfile's MPEG encoder (LAME), constant bitrate :data:`MP3_BITRATE`. Constant
  because a file cut short then still has an exact length from its size, and because a VBR file
  cut short has no valid Xing header, so readers estimate its length from the first frame's
  bitrate (mpg123 gave 0.27 s for 1 s written). Blocks go in as int32: libsndfile 1.2.2 garbles
  stereo 16-bit input to MP3 (libsndfile PR 1106). libsndfile writes the LAME tag (encoder delay and
  padding, read back by mpg123 for a gapless, sample-exact length) when the writer closes.
* ``mp4``: FFmpeg (through PyAV), AAC-LC at :data:`AAC_BITRATE` in a *fragmented* MP4
  (``movflags=empty_moov+default_base_moof+frag_keyframe``, ``frag_duration``
  :data:`MP4_FRAGMENT_S`): the ``moov`` box is written first and empty, each fragment
  (``moof`` + ``mdat``) is complete on its own, so a file cut short plays up to its last whole
  fragment. ``frag_keyframe`` alone never cuts an audio-only track (every AAC packet is a key
  frame and FFmpeg then waits for the end), hence ``frag_duration``. PyAV converts the s16
  blocks to the encoder's planar float and 1024-sample frames (its ``AudioResampler`` and FIFO).

What a file keeps when the daemon is killed (SIGKILL) mid-recording, once :func:`repair` ran:

* ``wav``: every block :meth:`Writer.write` returned from when the target was a path (the file
  is opened unbuffered, so the data is in the kernel; a buffered file object passed in keeps
  what its last :meth:`Writer.flush` pushed); :func:`repair` rewrites the stale sizes from the
  file's length.
* ``mp3``: every block written except the encoder's look-ahead, at most
  :data:`MP3_LAG_FRAMES`; no gapless tag, so the length read back may include up to ~50 ms of the
  encoder's delay as leading silence. :func:`repair` changes nothing and counts the frames.
* ``mp4``: every whole fragment: all but the last :data:`MP4_FRAGMENT_S` plus the encoder's
  delay (:data:`MP4_LAG_FRAMES`) at most. :func:`repair` cuts a fragment written in part.

A non-seekable target (a pipe) takes ``mp4`` only: libsndfile seeks back to write the WAV
header and the MP3 LAME tag, so ``wav`` and ``mp3`` raise :class:`ValueError` at open.

Errors: :class:`ValueError` for an unknown format, rate, channel count or block; the
:class:`OSError` of the file (``ENOSPC`` on a full disk) propagates from :meth:`Writer.write`,
:meth:`Writer.flush` and :meth:`Writer.close` as it was raised, and :meth:`Writer.close` then
still finishes the file as far as the disk allows.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import struct
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

#: The formats of SWML's ``record`` verb.
FORMATS = ("wav", "mp3", "mp4")

#: Format -> MIME type of the file.
MIME = {"wav": "audio/wav", "mp3": "audio/mpeg", "mp4": "audio/mp4"}

#: Format -> file name extension.
EXTENSIONS = {"wav": ".wav", "mp3": ".mp3", "mp4": ".mp4"}

#: Sample rates (Hz) each format takes: MPEG-1/2/2.5 layer III's, FFmpeg's AAC encoder's; WAV
#: any rate in this range.
RATES = {
    "wav": range(1000, 384001),
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    "mp4": (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200,
            96000),
}

#: Channel counts each format takes (MP3 has no more than two; AAC is kept to the layouts a
#: capture gives here).
CHANNELS = {"wav": range(1, 9), "mp3": (1, 2), "mp4": (1, 2)}

#: MP3 bitrate in kbit/s (constant), mono or stereo.
MP3_BITRATE = 128

#: libsndfile's compression level for :data:`MP3_BITRATE` in constant mode: libsndfile maps
#: the level 0.0-1.0 onto LAME's bitrate table (measured with 1.2.2 at 48 kHz: 0.5 -> 160,
#: 0.65 -> 128, 0.75 -> 96 kbit/s).
MP3_COMPRESSION_LEVEL = 0.65

#: AAC bitrate in bit/s.
AAC_BITRATE = 128_000

#: Duration of an MP4 fragment in seconds: what a kill may lose at most, besides the encoder's
#: delay; each fragment costs about 200 bytes of boxes (1 % at :data:`AAC_BITRATE`).
MP4_FRAGMENT_S = 0.5

#: At most this many of the last frames written (samples per channel) are still inside LAME,
#: its look-ahead, when the daemon is killed (measured 2400 at 48 kHz, 50 ms).
MP3_LAG_FRAMES = 2400

#: At most this many of the last frames written are still inside the AAC encoder and PyAV's
#: FIFO (one 1024-sample frame of delay, one being filled) when the daemon is killed.
MP4_LAG_FRAMES = 2048

#: The AAC encoder's priming samples: an ``mp4`` file reads back this much longer than written
#: (fragmented MP4 from FFmpeg carries no edit list to hide it).
AAC_PRIMING = 1024

_LAYOUTS = {1: "mono", 2: "stereo"}
# libsndfile's sf_command() code (sndfile.h); soundfile exposes sf_command but not this name
_SFC_UPDATE_HEADER_NOW = 0x1060


class _Sink:
    """The file object handed to the library: counts bytes and keeps the file's OSError.

    libsndfile calls it through cffi callbacks, where an exception would only be printed and
    lost: with ``keep_errors`` the error is stored, the library sees a short write and fails,
    and the writer raises the stored error. PyAV stashes a callback's exception and raises it
    itself, so for PyAV errors are raised at once.
    """

    def __init__(self, file: Any, keep_errors: bool) -> None:
        self.file = file
        self.keep_errors = keep_errors
        self.error: OSError | None = None
        self._seekable = _seekable(file)
        self.pos = file.tell() if self._seekable else 0
        self.end = self.pos

    def seekable(self) -> bool:
        return self._seekable

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                n = self.file.write(view[done:])
                if n is None:  # a non-blocking raw file that would block: not ours to wait
                    raise BlockingIOError(errno.EAGAIN, "write would block")
                if n == 0:
                    raise OSError(errno.EIO, "write wrote nothing")
                done += n
        except Exception as exc:  # also ValueError: a file closed under us
            if not self.keep_errors:
                raise
            self.error = self.error or _as_oserror(exc)
        finally:
            self.pos += done
            self.end = max(self.end, self.pos)
        return done

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            self.pos = self.file.seek(offset, whence)
        except Exception as exc:
            if not self.keep_errors:
                raise
            self.error = self.error or _as_oserror(exc)
            return -1
        return self.pos

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        flush = getattr(self.file, "flush", None)
        if flush is not None:
            flush()


def _as_oserror(exc: Exception) -> OSError:
    if isinstance(exc, OSError):
        return exc
    error = OSError(errno.EIO, f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _seekable(file: Any) -> bool:
    try:
        return bool(file.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class Writer:
    """One file being written, block by block. Made by :func:`open_writer`.

    Not thread-safe; one writer per recording.
    """

    def __init__(self, fmt: str, rate: int, channels: int, sink: _Sink, owned: bool) -> None:
        self.format = fmt
        self.rate = rate
        self.channels = channels
        self.frames = 0
        self._sink = sink
        self._owned = owned
        self._closed = False
        self._error: OSError | None = None

    @property
    def duration(self) -> float:
        """Seconds of audio written so far (frames / rate)."""
        return self.frames / self.rate

    @property
    def size(self) -> int:
        """Bytes handed to the file so far: its size on disk once :meth:`flush` returned."""
        return self._sink.end

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, block: np.ndarray) -> None:
        """Encode one block and write what the encoder gives back.

        :param block: int16 samples, shape ``(n,)`` for mono or ``(n, channels)``
        :raises ValueError: wrong dtype or shape; the writer is closed
        :raises OSError: the file's error (``ENOSPC``...); the writer is then broken: later
            writes and flushes raise it again, :meth:`close` finishes the file
        """
        if self._closed:
            raise ValueError("write to a closed writer")
        if self._error is not None:
            raise self._error
        block = self._check(block)
        if len(block) == 0:
            return
        self._guard(self._write, block)
        self.frames += len(block)

    def flush(self, sync: bool = False) -> None:
        """Make the file on disk valid and readable up to what has been written.

        What that keeps exactly, per format, is in the module's docstring. The data is handed
        to the kernel (it survives a kill of the daemon); only ``sync`` makes it survive a
        power cut.

        :param sync: also fsync the file (may block for a disk's latency)
        :raises OSError: the file's error
        """
        if self._closed:
            raise ValueError("flush of a closed writer")
        if self._error is not None:
            raise self._error
        self._guard(self._flush)
        self._guard(self._sink.flush)
        if sync:
            self._guard(os.fsync, self._sink.file.fileno())

    def close(self) -> None:
        """Finish the file (trailer, header, LAME tag); idempotent.

        A path given to :func:`open_writer` is closed; a file object is flushed and left open
        (the caller owns it), as soundfile and PyAV do.

        :raises OSError: finishing the file failed (not raised again when write or flush
            raised it already); what the disk took is left as a valid file as far as it can be
        """
        if self._closed:
            return
        self._closed = True
        error: OSError | None = None
        try:
            self._guard(self._finish)
            self._guard(self._sink.flush)
        except OSError as exc:
            error = exc
        finally:
            if error is not None or self._error is not None:
                self._salvage()
            if self._owned:
                try:
                    self._sink.file.close()
                except OSError as exc:
                    error = error or exc
        if error is not None and error is not self._error:
            raise error

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Writer {self.format} {self.rate} Hz x{self.channels} "
                f"{self.duration:.2f} s {self.size} B{' closed' if self._closed else ''}>")

    # -- the format's part ----------------------------------------------------------------

    def _write(self, block: np.ndarray) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _salvage(self) -> None:
        """After an OSError: leave what the disk took as valid a file as possible."""

    # -- helpers --------------------------------------------------------------------------

    def _check(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block)
        if block.dtype != np.int16:
            raise ValueError(f"block dtype {block.dtype}: int16 expected")
        shape_ok = (block.ndim == 2 and block.shape[1] == self.channels) or (
            block.ndim == 1 and self.channels == 1)
        if not shape_ok:
            want = "(n,) or (n, 1)" if self.channels == 1 else f"(n, {self.channels})"
            raise ValueError(f"block shape {block.shape}: {want} expected")
        return np.ascontiguousarray(block)

    def _guard(self, call: Any, *args: Any) -> None:
        """Run a library call; turn its failure into the file's OSError when there is one."""
        try:
            call(*args)
        except OSError as exc:
            self._error = self._error or exc
            raise
        except Exception as exc:
            # the library's report of the file's error: LibsndfileError, FFmpegError, or
            # soundfile's ``assert written == len(data)`` on a short write
            if self._sink.error is None:
                raise
            self._error = self._sink.error
            raise self._sink.error from exc
        if self._sink.error is not None:  # a library that went on after a short write
            self._error = self._sink.error
            raise self._sink.error


class _SoundfileWriter(Writer):
    """WAV and MP3 through libsndfile's virtual I/O."""

    def __init__(self, fmt: str, rate: int, channels: int, sink: _Sink, owned: bool) -> None:
        super().__init__(fmt, rate, channels, sink, owned)
        if fmt == "wav":
            kwargs: dict[str, Any] = {"format": "WAV", "subtype": "PCM_16"}
        else:
            kwargs = {"format": "MP3", "subtype": "MPEG_LAYER_III",
                      "compression_level": MP3_COMPRESSION_LEVEL, "bitrate_mode": "CONSTANT"}
        self._sf: sf.SoundFile | None = None
        self._guard(self._open, rate, channels, kwargs)

    def _open(self, rate: int, channels: int, kwargs: dict[str, Any]) -> None:
        self._sf = sf.SoundFile(self._sink, "w", samplerate=rate, channels=channels, **kwargs)

    def _write(self, block: np.ndarray) -> None:
        assert self._sf is not None
        if self.format == "mp3":
            # libsndfile 1.2.2 copies half of each stereo short block to LAME (a byte count
            # taken for a sample count), the rest is noise; its int path is right.
            # Ref: https://github.com/libsndfile/libsndfile/pull/1106
            block = block.astype(np.int32) << 16
        self._sf.write(block)

    def _flush(self) -> None:
        assert self._sf is not None
        if self.format == "wav":
            # soundfile's flush() (sf_write_sync) leaves the header's sizes stale
            sf._snd.sf_command(self._sf._file, _SFC_UPDATE_HEADER_NOW, sf._ffi.NULL, 0)

    def _finish(self) -> None:
        if self._sf is not None:
            handle, self._sf = self._sf, None
            handle.close()

    def _salvage(self) -> None:
        if self._sf is not None:  # the close failed before libsndfile let go of the file
            handle, self._sf = self._sf, None
            try:
                handle.close()
            except (sf.LibsndfileError, OSError):
                logger.debug("closing %s after a write error", self.format, exc_info=True)


class _PyAVWriter(Writer):
    """MP4 (AAC) through PyAV."""

    def __init__(self, fmt: str, rate: int, channels: int, sink: _Sink, owned: bool) -> None:
        super().__init__(fmt, rate, channels, sink, owned)
        options = {"movflags": "empty_moov+default_base_moof+frag_keyframe",
                   "frag_duration": str(round(MP4_FRAGMENT_S * 1_000_000))}
        self._container = av.open(sink, "w", format="mp4", options=options)
        try:
            stream = self._container.add_stream("aac", rate=rate, layout=_LAYOUTS[channels])
            stream.bit_rate = AAC_BITRATE
        except BaseException:
            self._container.close()
            raise
        self._stream = stream
        self._layout = _LAYOUTS[channels]

    def _write(self, block: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16",
                                           layout=self._layout)
        frame.sample_rate = self.rate
        frame.pts = self.frames
        frame.time_base = Fraction(1, self.rate)
        self._container.mux(self._stream.encode(frame))

    def _flush(self) -> None:
        # Whole fragments reach the file as FFmpeg cuts them (a flush point of its I/O); the
        # fragment being built and the encoder's delay cannot be pushed out without ending the
        # stream: PyAV has no av_write_frame(NULL).
        pass

    def _finish(self) -> None:
        try:
            if self._error is None:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()

    def _salvage(self) -> None:
        try:
            self._container.close()
        except (av.FFmpegError, OSError):
            logger.debug("closing mp4 after a write error", exc_info=True)
        file = self._sink.file
        if _seekable(file) and hasattr(file, "truncate"):
            try:
                file.flush()
                end = _whole_boxes(file, self._sink.end)
                if end < self._sink.end:
                    file.truncate(end)
                    self._sink.end = end
            except OSError:
                logger.debug("trimming mp4 after a write error", exc_info=True)


def open_writer(target: str | os.PathLike[str] | BinaryIO, fmt: str, rate: int,
                channels: int) -> Writer:
    """Open a streaming writer of a recording.

    :param target: a path (created or truncated) or a writable binary file object, such as
        ``os.fdopen(fd, "wb")`` of a descriptor a D-Bus caller passed; a file object is
        written from its position, should be empty, and is left open by :meth:`Writer.close`.
        Non-seekable (a pipe): ``mp4`` only
    :param fmt: one of :data:`FORMATS`
    :param rate: sample rate in Hz, one of :data:`RATES` for the format
    :param channels: channel count, one of :data:`CHANNELS` for the format
    :returns: the writer; blocks go in with :meth:`Writer.write`
    :raises ValueError: unknown format, rate or channel count; a non-seekable file for a format
        that needs seeking
    :raises OSError: the file cannot be opened or written
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown recording format {fmt!r}: one of {', '.join(FORMATS)}")
    if isinstance(rate, bool) or not isinstance(rate, int) or rate not in RATES[fmt]:
        raise ValueError(f"sample rate {rate!r} Hz not supported by {fmt}")
    if isinstance(channels, bool) or not isinstance(channels, int) \
            or channels not in CHANNELS[fmt]:
        raise ValueError(f"channel count {channels!r} not supported by {fmt}")
    owned = isinstance(target, (str, os.PathLike))
    if isinstance(target, (str, os.PathLike)):
        # Unbuffered: every byte the library gives is in the kernel at once, and survives a kill
        file: Any = open(target, "wb", buffering=0)  # closed by the writer
    else:
        file = target
        if fmt != "mp4" and not _seekable(file):
            raise ValueError(f"{fmt} needs a seekable file (the header is written last); "
                             "a pipe takes mp4 only")
    sink = _Sink(file, keep_errors=fmt != "mp4")
    try:
        if fmt == "mp4":
            return _PyAVWriter(fmt, rate, channels, sink, owned)
        return _SoundfileWriter(fmt, rate, channels, sink, owned)
    except BaseException:
        if owned:
            file.close()
        raise


# -- repair ---------------------------------------------------------------------------------

def repair(path: str | os.PathLike, fmt: str) -> float | None:
    """Make a file left by a killed writer valid, and give its duration.

    ``wav``: the RIFF and ``data`` sizes are rewritten from the file's length and a partial
    frame at the end is cut. ``mp3``: nothing is changed (frames stand alone; a reader skips a
    cut last frame); the frames are decoded and counted. ``mp4``: the file is cut after its
    last whole top-level box (a fragment written in part goes). A file that is already valid
    is not changed.

    :param path: the file
    :param fmt: one of :data:`FORMATS`
    :returns: the duration in seconds that can be read from the file, None when nothing can
        be saved (no file, no audio in it, not the format)
    :raises ValueError: unknown format
    :raises OSError: the file cannot be read or rewritten
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown recording format {fmt!r}: one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.is_file():
        return None
    if fmt == "wav":
        return _repair_wav(path)
    if fmt == "mp3":
        return _mp3_duration(path)
    return _repair_mp4(path)


def _repair_wav(path: Path) -> float | None:
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos, block_align, data_at, declared = 12, 0, -1, 0
        while pos + 8 <= size:
            f.seek(pos)
            chunk, length = struct.unpack("<4sI", f.read(8))
            if chunk == b"fmt ":
                block_align = struct.unpack("<H", f.read(14)[12:14])[0]
            elif chunk == b"data":
                data_at, declared = pos + 8, length
                break
            pos += 8 + length + (length & 1)
        if data_at < 0 or block_align == 0:
            return None
        available = size - data_at
        length = available - available % block_align
        if declared != length or struct.unpack("<I", head[4:8])[0] != data_at + length - 8:
            logger.info("%s: data size %d in the header, %d in the file: rewritten", path,
                        declared, length)
            f.seek(4)
            f.write(struct.pack("<I", data_at + length - 8))
            f.seek(data_at - 4)
            f.write(struct.pack("<I", length))
            f.truncate(data_at + length)
    try:
        info = sf.info(str(path))
    except sf.LibsndfileError:
        return None
    return info.frames / info.samplerate if info.frames else None


def _mp3_duration(path: Path) -> float | None:
    frames = 0
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            # the length in the header is an estimate when the LAME tag is missing: decode
            for block in f.blocks(65536, dtype="int16", always_2d=True):
                frames += len(block)
    except sf.LibsndfileError:
        return None
    return frames / rate if frames else None


def _whole_boxes(file: Any, size: int) -> int:
    """The length of ``file`` up to its last whole top-level MP4 box (a ``moof`` without its
    ``mdat`` is not whole)."""
    pos = good = 0
    while pos + 8 <= size:
        file.seek(pos)
        head = file.read(16)
        length, kind = struct.unpack(">I4s", head[:8])
        if length == 1 and len(head) == 16:
            length = struct.unpack(">Q", head[8:16])[0]
        elif length == 0:
            length = size - pos
        if length < 8 or pos + length > size:
            break
        pos += length
        if kind != b"moof":
            good = pos
    file.seek(0, io.SEEK_END)
    return good


def _repair_mp4(path: Path) -> float | None:
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        end = _whole_boxes(f, size)
        if end < size:
            logger.info("%s: %d bytes of a fragment written in part: cut", path, size - end)
            f.truncate(end)
    samples = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                if packet.duration:
                    samples += packet.duration * stream.time_base * stream.rate
            rate = stream.rate
    except av.FFmpegError:
        return None
    return float(samples / rate) if samples else None
