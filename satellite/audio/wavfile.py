"""Read WAV files of the kinds people have: PCM 8/16/24/32-bit, 32-bit float, and the
WAVE_FORMAT_EXTENSIBLE header that sox and most editors write for >16-bit or >2-channel
audio (Python 3.11's `wave` module refuses it)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satellite.audio.convert import AudioFormatError, FloatArray, pcm_to_float

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


@dataclass(frozen=True)
class WavAudio:
    rate: int
    channels: int
    samples: FloatArray
    """Mono float32 in [-1, 1] (channels averaged)."""


def read_wav(path: Path) -> WavAudio:
    """Decode `path`; AudioFormatError names the file and what is wrong with it."""
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise AudioFormatError(f"{path}: cannot read: {err.strerror}") from None
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise AudioFormatError(f"{path}: not a WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int, int] | None = None
    offset = 12
    while offset + 8 <= len(blob):
        chunk_id, size = blob[offset : offset + 4], struct.unpack_from("<I", blob, offset + 4)[0]
        body = blob[offset + 8 : offset + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise AudioFormatError(f"{path}: truncated fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioFormatError(f"{path}: data chunk before the fmt chunk")
            return _decode(path, fmt, body)
        offset += 8 + size + (size & 1)
    raise AudioFormatError(f"{path}: no audio data chunk")


def _decode(path: Path, fmt: tuple[int, int, int, int], data: bytes) -> WavAudio:
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise AudioFormatError(f"{path}: invalid header ({channels} channels at {rate} Hz)")
    usable = len(data) - len(data) % (channels * max(bits // 8, 1))
    if tag == _FLOAT and bits == 32:
        samples = np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels).mean(axis=1)
        return WavAudio(rate, channels, samples.astype(np.float32))
    if tag != _PCM:
        raise AudioFormatError(f"{path}: WAV encoding {tag} is not supported; use PCM or float")
    if bits not in (8, 16, 24, 32):
        raise AudioFormatError(f"{path}: {bits}-bit samples are not supported")
    return WavAudio(rate, channels, pcm_to_float(data[:usable], bits // 8, channels))
