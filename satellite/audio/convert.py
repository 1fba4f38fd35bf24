"""PCM conversions: raw little-endian PCM bytes of any width and channel count <-> float32
mono, and sample-rate conversion (soxr). Used wherever audio enters or leaves the model."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

FloatArray = npt.NDArray[np.float32]

SUPPORTED_WIDTHS = (1, 2, 3, 4)
"""Sample widths in bytes: 8-bit unsigned, 16/24/32-bit signed (WAV conventions)."""


class AudioFormatError(ValueError):
    """Audio whose declared format does not fit its bytes; the message says how."""


def pcm_to_float(data: bytes, width: int, channels: int) -> FloatArray:
    """Interleaved PCM -> float32 mono in [-1, 1] (channels averaged)."""
    if width not in SUPPORTED_WIDTHS:
        raise AudioFormatError(f"sample width {width} bytes is not supported; use 1, 2, 3 or 4")
    if channels < 1:
        raise AudioFormatError(f"channel count {channels} must be at least 1")
    frame = width * channels
    if len(data) % frame:
        raise AudioFormatError(
            f"{len(data)} bytes is not a whole number of frames of {channels} channel(s) x "
            f"{width} byte(s)"
        )
    if width == 1:
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        samples = value.astype(np.float32) / float(1 << 23)
    else:
        samples = (np.frombuffer(data, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(
            np.float32
        )
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


def pcm16_rms(frame: bytes) -> float:
    """The RMS of 16-bit little-endian PCM, full scale 1.0."""
    samples = np.frombuffer(frame, dtype="<i2").astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(samples * samples)))


def to_dbfs(rms: float) -> float:
    """An RMS (full scale 1.0) in dBFS, at least -120."""
    return float(20 * np.log10(max(rms, 1e-6)))


def float_to_pcm16(samples: npt.ArrayLike) -> bytes:
    """float audio in [-1, 1] -> 16-bit little-endian PCM, clipped at full scale."""
    values = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 32767.0 / 32768.0)
    return (np.round(values * 32768.0)).astype("<i2").tobytes()


def resample(samples: npt.ArrayLike, rate_in: int, rate_out: int) -> FloatArray:
    """One closed buffer from `rate_in` to `rate_out` Hz (soxr, high quality)."""
    audio = np.asarray(samples, dtype=np.float32)
    if rate_in <= 0 or rate_out <= 0:
        raise AudioFormatError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
    if rate_in == rate_out or audio.size == 0:
        return audio
    return np.asarray(soxr.resample(audio, rate_in, rate_out, quality="HQ"), dtype=np.float32)


class StreamResampler:
    """Chunk-by-chunk resampling with state carried across chunks, for live audio."""

    def __init__(self, rate_in: int, rate_out: int, quality: str = "HQ") -> None:
        """`quality`: soxr's ("QQ", "LQ", "MQ", "HQ", "VHQ"); the higher, the longer its
        filter and the more it holds back (HQ about 21 ms at 24 -> 16 kHz, LQ about 6 ms)."""
        if rate_in <= 0 or rate_out <= 0:
            raise AudioFormatError(f"sample rates must be positive, got {rate_in} -> {rate_out}")
        self.rate_in, self.rate_out = rate_in, rate_out
        self._stream = (
            None
            if rate_in == rate_out
            else soxr.ResampleStream(rate_in, rate_out, 1, np.float32, quality=quality)
        )

    def process(self, chunk: npt.ArrayLike, last: bool = False) -> FloatArray:
        audio = np.asarray(chunk, dtype=np.float32)
        if self._stream is None:
            return audio
        return np.asarray(self._stream.resample_chunk(audio, last=last), dtype=np.float32)


def to_model_input(
    data: bytes, rate: int, width: int, channels: int, model_rate: int = 16000
) -> FloatArray:
    """Client PCM of any rate, width and channel count -> float32 mono at the model's rate."""
    return resample(pcm_to_float(data, width, channels), rate, model_rate)
