"""Read and write WAV files.

Reading takes the kinds people have: PCM 8/16/24/32-bit, 32/64-bit float, and the
WAVE_FORMAT_EXTENSIBLE header that sox and most editors write for >16-bit or >2-channel audio
(Python 3.11's `wave` module refuses it). `wav_info` reads the header only (it seeks past other
chunks and never reads the samples), so a caller can refuse an hour-long file before reading
it. A truncated file (the data chunk declares more bytes than the file holds) is read as far as
it goes and marked `truncated`; a data size of 0xFFFFFFFF (written by streaming writers that
cannot seek back) means "to the end of the file". Every error is an AudioFormatError naming the
file and what is wrong; other audio formats (MP3, FLAC, Ogg, AIFF, RF64) are named as such.

Writing: `WavWriter` writes 16-bit mono PCM as samples arrive (the header's sizes are patched at
`close`), into a hidden sibling file that is renamed into place only when complete, so a failed
or interrupted run never leaves a half-written file under the asked-for name.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from satellite.audio.convert import AudioFormatError, FloatArray, float_to_pcm16, pcm_to_float

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
_UNKNOWN_SIZE = 0xFFFFFFFF
_MAX_CHUNKS = 4096
"""Chunks looked at before the data chunk (a bound on a malformed file's chunk walk)."""

_OTHER_FORMATS: tuple[tuple[bytes, int, str], ...] = (
    (b"ID3", 0, "an MP3 file"),
    (b"fLaC", 0, "a FLAC file"),
    (b"OggS", 0, "an Ogg file"),
    (b"FORM", 0, "an AIFF file"),
    (b"RF64", 0, "an RF64 (64-bit WAV) file"),
    (b"RIFX", 0, "a big-endian WAV (RIFX) file"),
    (b"ftyp", 4, "an MP4/M4A file"),
    (b"caff", 0, "a CAF file"),
)
CONVERT_HINT = "convert it to WAV, e.g. `sox IN -r 16000 -c 1 -b 16 OUT.wav`"


@dataclass(frozen=True)
class WavInfo:
    """What a WAV file's header says, and how much of its data the file really holds."""

    path: Path
    encoding: int
    """1 PCM, 3 IEEE float (WAVE_FORMAT_EXTENSIBLE resolved to its sub-format)."""
    channels: int
    rate: int
    bits: int
    data_offset: int
    """Byte offset of the first sample."""
    declared_bytes: int | None
    """The data chunk's size field; None when it says "unknown" (0xFFFFFFFF)."""
    available_bytes: int
    """Data bytes present in the file from `data_offset`."""

    @property
    def frame_bytes(self) -> int:
        return self.channels * (self.bits // 8)

    @property
    def frames(self) -> int:
        """Whole sample frames that can be read."""
        size = self.available_bytes
        if self.declared_bytes is not None:
            size = min(size, self.declared_bytes)
        return size // self.frame_bytes

    @property
    def seconds(self) -> float:
        """Length of the audio that can be read."""
        return self.frames / self.rate

    @property
    def truncated(self) -> bool:
        """The file ends before the data chunk does."""
        return self.declared_bytes is not None and self.available_bytes < self.declared_bytes

    @property
    def declared_seconds(self) -> float:
        """Length the header declares (the readable length when it declares none)."""
        if self.declared_bytes is None:
            return self.seconds
        return self.declared_bytes // self.frame_bytes / self.rate

    def describe(self) -> str:
        """e.g. `48000 Hz, 2 channels, 16-bit PCM`."""
        kind = "float" if self.encoding == _FLOAT else "PCM"
        channels = "1 channel" if self.channels == 1 else f"{self.channels} channels"
        return f"{self.rate} Hz, {channels}, {self.bits}-bit {kind}"


@dataclass(frozen=True)
class WavAudio:
    rate: int
    channels: int
    samples: FloatArray
    """Mono float32 in [-1, 1] (channels averaged)."""
    truncated: bool = False
    """The file ended before its data chunk did; `samples` holds what was there."""


def _not_wav(path: Path, head: bytes) -> AudioFormatError:
    if not head:
        return AudioFormatError(f"{path}: empty file (0 bytes), not a WAV file")
    for magic, at, name in _OTHER_FORMATS:
        if head[at : at + len(magic)] == magic:
            return AudioFormatError(f"{path}: {name}, not a WAV file; {CONVERT_HINT}")
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return AudioFormatError(f"{path}: an MP3 file, not a WAV file; {CONVERT_HINT}")
    if head[:4] == b"RIFF" and len(head) >= 12:
        kind = head[8:12].decode("latin-1")
        return AudioFormatError(f"{path}: a RIFF file of type {kind!r}, not a WAV file")
    if head[:4] == b"RIFF":
        return AudioFormatError(f"{path}: truncated WAV file: it ends inside the RIFF header")
    return AudioFormatError(f"{path}: not a WAV file (no RIFF/WAVE header)")


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise AudioFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AudioFormatError(f"{path}: is a directory, not a WAV file") from None
    except OSError as err:
        raise AudioFormatError(f"{path}: cannot read: {err.strerror}") from None


def wav_info(path: Path) -> WavInfo:
    """The header of the WAV file `path` (format, data offset and sizes), without reading its
    samples. Raises AudioFormatError naming the file: not a WAV, an encoding or width this
    reader does not decode, a header cut short, no data chunk."""
    with _open(path) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                raise _not_wav(path, head)
            fmt: tuple[int, int, int, int] | None = None
            offset = 12
            for _ in range(_MAX_CHUNKS):
                f.seek(offset)
                header = f.read(8)
                if len(header) < 8:
                    break
                chunk_id, chunk_size = header[:4], struct.unpack("<I", header[4:])[0]
                if chunk_id == b"fmt ":
                    body = f.read(min(chunk_size, 64))
                    if len(body) < 16 or chunk_size < 16:
                        raise AudioFormatError(
                            f"{path}: truncated WAV file: the fmt chunk is too short"
                        )
                    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
                    if tag == _EXTENSIBLE and len(body) >= 26:
                        tag = struct.unpack_from("<H", body, 24)[0]
                    fmt = (tag, channels, rate, bits)
                elif chunk_id == b"data":
                    if fmt is None:
                        raise AudioFormatError(f"{path}: data chunk before the fmt chunk")
                    start = offset + 8
                    declared = None if chunk_size == _UNKNOWN_SIZE else chunk_size
                    return _checked(path, fmt, start, declared, max(size - start, 0))
                offset += 8 + chunk_size + (chunk_size & 1)
        except OSError as err:
            raise AudioFormatError(f"{path}: cannot read: {err.strerror}") from None
    if fmt is None:
        raise AudioFormatError(f"{path}: truncated WAV file: no fmt chunk before the end")
    raise AudioFormatError(f"{path}: no audio data chunk (the file ends after {size} bytes)")


def _checked(
    path: Path, fmt: tuple[int, int, int, int], start: int, declared: int | None, available: int
) -> WavInfo:
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise AudioFormatError(f"{path}: invalid header ({channels} channels at {rate} Hz)")
    if tag == _FLOAT:
        if bits not in (32, 64):
            raise AudioFormatError(f"{path}: {bits}-bit float samples are not supported")
    elif tag == _PCM:
        if bits not in (8, 16, 24, 32):
            raise AudioFormatError(
                f"{path}: {bits}-bit PCM samples are not supported; use 8, 16, 24 or 32 bits"
            )
    else:
        names = {2: "MS ADPCM", 6: "A-law", 7: "mu-law", 0x11: "IMA ADPCM", 0x55: "MP3"}
        name = names.get(tag, f"format tag {tag}")
        raise AudioFormatError(
            f"{path}: WAV encoding {name} is not supported; use PCM or float ({CONVERT_HINT})"
        )
    return WavInfo(path, tag, channels, rate, bits, start, declared, available)


def read_wav(path: Path) -> WavAudio:
    """Decode `path` (see `wav_info`); a truncated file gives the whole frames it holds, with
    `truncated` set. Raises AudioFormatError naming the file."""
    info = wav_info(path)
    return read_samples(info)


def read_samples(info: WavInfo) -> WavAudio:
    """The samples of the file `info` describes, as mono float32."""
    count = info.frames * info.frame_bytes
    with _open(info.path) as f:
        try:
            f.seek(info.data_offset)
            data = f.read(count)
        except OSError as err:
            raise AudioFormatError(f"{info.path}: cannot read: {err.strerror}") from None
    usable = len(data) - len(data) % info.frame_bytes
    data = data[:usable]
    if info.encoding == _FLOAT:
        dtype = "<f4" if info.bits == 32 else "<f8"
        values = np.frombuffer(data, dtype=dtype).reshape(-1, info.channels)
        samples = values.mean(axis=1).astype(np.float32)
    else:
        samples = pcm_to_float(data, info.bits // 8, info.channels)
    return WavAudio(info.rate, info.channels, samples, truncated=info.truncated)


_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_MAX_DATA = 0xFFFFFFFF - (_HEADER.size - 8)


def _header(rate: int, data_bytes: int) -> bytes:
    return _HEADER.pack(
        b"RIFF",
        _HEADER.size - 8 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        _PCM,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        data_bytes,
    )


class WavWriter:
    """16-bit mono PCM WAV at `rate`, written as samples come (see the module docstring).

    Use as a context manager: leaving the block normally closes (completes) the file, leaving
    it by an exception aborts it (nothing is left behind)."""

    def __init__(self, path: Path, rate: int) -> None:
        if not 1 <= rate <= 0xFFFFFFFF // 2:
            raise ValueError(f"sample rate {rate} Hz is out of range")
        self.path = path
        self.rate = rate
        self.frames = 0
        """Samples written so far."""
        self.writes = 0
        """Calls of `write` that wrote samples."""
        self._partial = path.with_name(f".{path.name}.partial")
        try:
            self._file: BinaryIO | None = self._partial.open("wb")
        except OSError as err:
            raise AudioFormatError(f"{path}: cannot write: {err.strerror}") from None
        self._write(_header(rate, 0))

    def _write(self, blob: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(blob)
        except OSError as err:
            self.abort()
            raise AudioFormatError(f"{self.path}: cannot write: {err.strerror}") from None

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def write(self, samples: npt.ArrayLike) -> None:
        """Append mono float samples in [-1, 1] (clipped at full scale)."""
        if self._file is None:
            raise ValueError(f"{self.path}: the writer is closed")
        values = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not values.size:
            return
        if 2 * (self.frames + values.size) > _MAX_DATA:
            self.abort()
            raise AudioFormatError(f"{self.path}: more audio than a WAV file can hold (4 GB)")
        self._write(float_to_pcm16(values))
        self.frames += values.size
        self.writes += 1

    def close(self) -> None:
        """Write the final sizes and move the file into place."""
        if self._file is None:
            return
        try:
            self._file.seek(0)
            self._file.write(_header(self.rate, 2 * self.frames))
            self._file.close()
            self._file = None
            os.replace(self._partial, self.path)
        except OSError as err:
            self.abort()
            raise AudioFormatError(f"{self.path}: cannot write: {err.strerror}") from None

    def abort(self) -> None:
        """Drop the file being written."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def write_wav(path: Path, samples: npt.ArrayLike, rate: int) -> None:
    """Write `samples` (mono float in [-1, 1]) as a 16-bit mono PCM WAV file."""
    with WavWriter(path, rate) as writer:
        writer.write(samples)
