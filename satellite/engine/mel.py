"""The audio front end: 16 kHz mono waveform -> normalised 128-band log-mel features, the
input of the audio encoder, computed in numpy exactly as the reference preprocessor does.

The reference's quirks are kept on purpose, because the encoder was trained on them:
- pre-emphasis y[n] = x[n] - 0.97 x[n-1], keeping x[0];
- a centred STFT with zero padding of n_fft/2 at both ends, a symmetric Hann window of 400
  samples zero-padded to n_fft 512 in the middle, so N samples give 1 + N // 160 frames;
- power spectrum -> Slaney-scale, Slaney-normalised mel filters (0 Hz to 8 kHz);
- log(x + 2^-24);
- per-feature normalisation with mean and unbiased standard deviation (plus 1e-5) taken over
  the first N // 160 frames only, then every frame from N // 160 on set to zero (the last one).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class MelSettings:
    """Front-end parameters; the defaults are LFM2-Audio's."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    """Upper edge of the mel filters; None means half the sample rate."""
    preemphasis: float = 0.97
    log_guard: float = 2.0**-24
    std_guard: float = 1e-5


def hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_step = np.log(6.4) / 27.0
    return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step, linear)


def mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Inverse of `hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    log_step = np.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * (200.0 / 3))


def mel_filters(settings: MelSettings) -> npt.NDArray[np.float64]:
    """[n_mels, n_fft // 2 + 1] triangular filters on the Slaney scale, each scaled to unit
    area (2 / bandwidth in Hz)."""
    fmax = settings.fmax if settings.fmax is not None else settings.sample_rate / 2
    bins = np.linspace(0.0, settings.sample_rate / 2, settings.n_fft // 2 + 1)
    edges = mel_to_hz(
        np.linspace(
            hz_to_mel(np.array(settings.fmin)), hz_to_mel(np.array(fmax)), settings.n_mels + 2
        )
    )
    widths = np.diff(edges)
    distance = edges[:, None] - bins[None, :]
    rising = -distance[:-2] / widths[:-1, None]
    falling = distance[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return filters


class LogMel:
    """Computes features for one closed utterance at a time."""

    def __init__(self, settings: MelSettings | None = None) -> None:
        self.settings = settings or MelSettings()

    @cached_property
    def window(self) -> npt.NDArray[np.float64]:
        """Symmetric Hann of win_length, zero-padded to n_fft with the window centred."""
        s = self.settings
        n = np.arange(s.win_length)
        hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / (s.win_length - 1))
        left = (s.n_fft - s.win_length) // 2
        return np.pad(hann, (left, s.n_fft - s.win_length - left))

    @cached_property
    def filters(self) -> npt.NDArray[np.float64]:
        return mel_filters(self.settings)

    def frame_count(self, samples: int) -> int:
        """Frames produced for `samples` input samples (the last one is always zero)."""
        return 1 + samples // self.settings.hop_length

    def __call__(self, audio: npt.ArrayLike) -> FloatArray:
        """[samples] float waveform in [-1, 1] at the front end's rate -> [frames, n_mels]."""
        s = self.settings
        x = np.asarray(audio, dtype=np.float64).reshape(-1)
        if x.size < s.hop_length * 2:
            raise ValueError(
                f"audio too short for features: {x.size} samples; need at least {s.hop_length * 2}"
            )
        valid = x.size // s.hop_length
        emphasised = np.concatenate([x[:1], x[1:] - s.preemphasis * x[:-1]])
        half = s.n_fft // 2
        padded = np.pad(emphasised, (half, half))
        frames = self.frame_count(x.size)
        starts = np.arange(frames) * s.hop_length
        windows = padded[starts[:, None] + np.arange(s.n_fft)[None, :]]
        return self.normalise(self.log_mel(windows), valid)

    def log_mel(self, windows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """[frames, n_fft] slices of the emphasised, padded signal -> [frames, n_mels] log-mel
        (not normalised)."""
        s = self.settings
        spectrum = np.fft.rfft(windows * self.window, n=s.n_fft, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        mel: npt.NDArray[np.float64] = np.log(power @ self.filters.T + s.log_guard)
        return mel

    def normalise(self, mel: npt.NDArray[np.float64], valid: int) -> FloatArray:
        """Per-feature normalisation over the first `valid` frames; frames from `valid` on
        are zeroed."""
        s = self.settings
        mean = mel[:valid].mean(axis=0)
        std = np.sqrt(((mel[:valid] - mean) ** 2).sum(axis=0) / max(valid - 1, 1)) + s.std_guard
        features: FloatArray = ((mel - mean) / std).astype(np.float32)
        features[valid:] = 0.0
        return features


class StreamingLogMel:
    """`LogMel` of one utterance fed in pieces (live audio): each frame's log-mel is computed
    as soon as the samples it covers have arrived, so `finish()` has only the last few frames
    and the normalisation left (which needs the whole utterance). `finish()` returns the same
    features as `LogMel()(all samples)`."""

    def __init__(self, mel: LogMel | None = None) -> None:
        self.mel = mel or LogMel()
        self._last: float | None = None
        """The last raw sample (pre-emphasis of the next piece)."""
        self._buffer = np.zeros(0, np.float64)
        """Emphasised samples from index `_offset` on (what later frames still need)."""
        self._offset = 0
        self.samples = 0
        """Samples received."""
        self._rows: list[npt.NDArray[np.float64]] = []
        self.frames = 0
        """Frames computed so far."""

    def push(self, audio: npt.ArrayLike) -> None:
        """The next samples of the utterance (float, the front end's rate)."""
        s = self.mel.settings
        x = np.asarray(audio, dtype=np.float64).reshape(-1)
        if not x.size:
            return
        before = np.concatenate([[x[0] if self._last is None else self._last], x[:-1]])
        emphasised = x - s.preemphasis * before
        if self._last is None:
            emphasised[0] = x[0]
        self._last = float(x[-1])
        self._buffer = np.concatenate([self._buffer, emphasised])
        self.samples += x.size
        half = s.n_fft // 2
        if self.samples >= half:  # frame i needs emphasised samples up to i * hop + half
            self._compute((self.samples - half) // s.hop_length + 1)

    def _compute(self, upto: int) -> None:
        """Log-mel of frames `self.frames`..`upto - 1` (zeros past the samples received)."""
        s = self.mel.settings
        if upto <= self.frames:
            return
        half, hop = s.n_fft // 2, s.hop_length
        first = self.frames * hop - half  # signal index of the first window's first sample
        last = (upto - 1) * hop + half
        lead = max(0, -first)
        have = self._buffer[max(first, 0) - self._offset : last - self._offset]
        segment = np.concatenate([np.zeros(lead), have, np.zeros(last - first - lead - have.size)])
        starts = np.arange(upto - self.frames) * hop
        self._rows.append(self.mel.log_mel(segment[starts[:, None] + np.arange(s.n_fft)]))
        self.frames = upto
        keep = max(0, upto * hop - half)
        self._buffer = self._buffer[keep - self._offset :]
        self._offset = keep

    def finish(self) -> FloatArray:
        """[frames, n_mels] normalised features of everything pushed."""
        s = self.mel.settings
        if self.samples < s.hop_length * 2:
            raise ValueError(
                f"audio too short for features: {self.samples} samples; need at least "
                f"{s.hop_length * 2}"
            )
        self._compute(self.mel.frame_count(self.samples))
        return self.mel.normalise(np.concatenate(self._rows), self.samples // s.hop_length)
