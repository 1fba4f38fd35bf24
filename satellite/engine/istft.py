"""The detokenizer's last step in numpy: STFT frames (log-magnitude + phase) -> 24 kHz audio,
inverse FFT with a periodic Hann window, overlap-add, division by the summed squared window,
and "same" padding: (n_fft - hop) / 2 samples dropped at each end, so T frames give T * hop
samples.

`StreamingIstft` gives each sample out as soon as no later frame can change it; the
concatenated stream equals the one-shot `istft` of all frames (the same arithmetic, done in
pieces), which is what lets playback start on the first audio frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

N_FFT = 1280
HOP = 320


def periodic_hann(length: int) -> npt.NDArray[np.float64]:
    n = np.arange(length)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def frames_to_spectrum(features: npt.ArrayLike) -> npt.NDArray[np.complex128]:
    """[T, 2 * bins] = log-magnitude then phase -> complex [T, bins]."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] % 2:
        raise ValueError(f"expected [frames, 2 * bins] STFT features, got shape {x.shape}")
    log_abs, angle = np.split(x, 2, axis=1)
    spectrum: npt.NDArray[np.complex128] = np.exp(log_abs) * np.exp(1j * angle)
    return spectrum


class StreamingIstft:
    """Overlap-add state across calls. `push` returns the samples that are final; `finish`
    returns the rest."""

    def __init__(self, n_fft: int = N_FFT, hop: int = HOP) -> None:
        if n_fft % hop or (n_fft - hop) % 2:
            raise ValueError(f"n_fft {n_fft} must be a multiple of hop {hop} with even overlap")
        self.n_fft, self.hop = n_fft, hop
        self.window = periodic_hann(n_fft)
        self.trim = (n_fft - hop) // 2
        overlap = n_fft - hop
        self._signal = np.zeros(overlap)
        """Overlap-add sums of the samples not yet final (the tail of the last frame)."""
        self._envelope = np.zeros(overlap)
        self._frames = 0
        self._emitted = 0
        """Samples emitted so far, counted before the leading trim."""

    def push(self, features: npt.ArrayLike) -> FloatArray:
        """Add [T, 2 * bins] frames; return the newly final samples (float32)."""
        spectrum = frames_to_spectrum(features)
        if spectrum.shape[0] == 0:
            return np.zeros(0, np.float32)
        frames = np.fft.irfft(spectrum, n=self.n_fft, axis=1) * self.window
        count = frames.shape[0]
        length = (count - 1) * self.hop + self.n_fft
        signal = np.zeros(length)
        envelope = np.zeros(length)
        signal[: self._signal.size] = self._signal
        envelope[: self._envelope.size] = self._envelope
        square = self.window**2
        for i in range(count):
            start = i * self.hop
            signal[start : start + self.n_fft] += frames[i]
            envelope[start : start + self.n_fft] += square
        final = count * self.hop
        self._signal, self._envelope = signal[final:], envelope[final:]
        self._frames += count
        return self._emit(signal[:final], envelope[:final])

    def finish(self) -> FloatArray:
        """The last samples, up to the trailing trim; the stream is then spent."""
        total = self._frames * self.hop + self.trim
        keep = max(0, total - self._emitted)
        out = self._emit(self._signal[:keep], self._envelope[:keep])
        self._signal = np.zeros(0)
        self._envelope = np.zeros(0)
        return out

    def _emit(
        self, signal: npt.NDArray[np.float64], envelope: npt.NDArray[np.float64]
    ) -> FloatArray:
        start = self._emitted
        self._emitted += signal.size
        skip = max(0, self.trim - start)
        if skip >= signal.size:
            return np.zeros(0, np.float32)
        if (envelope[skip:] <= 1e-11).any():
            raise ValueError("window envelope vanished: the frames do not overlap enough")
        return (signal[skip:] / envelope[skip:]).astype(np.float32)


def istft(features: npt.ArrayLike, n_fft: int = N_FFT, hop: int = HOP) -> FloatArray:
    """One-shot inverse STFT of [T, 2 * bins] frames -> T * hop samples."""
    stream = StreamingIstft(n_fft, hop)
    return np.concatenate([stream.push(features), stream.finish()])
