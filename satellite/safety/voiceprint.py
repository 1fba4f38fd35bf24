"""The voice stays the voice: a compact fingerprint of each reply's voice, compared with the
history of the voice it was meant to have.

`VoicePrint` is fed the reply's audio as it streams (any block sizes: the windows run across
block joins, so the result equals the whole reply's). Each `WINDOW_SECONDS` window, every
`HOP_SECONDS`, gives a log-mel envelope (`BANDS` bands, dB) from numpy's FFT; windows quieter
than `VOICED_DBFS`, or more than `VOICED_BELOW_PEAK_DB` below the loudest window so far (pauses,
silence, the tails of sounds), are skipped, so the reply's level hardly matters. The fingerprint is each band's mean and
standard deviation over the voiced windows (`Fingerprint`). `distance(a, b)` is the mean
absolute difference, in dB, of the two band-mean envelopes once each is taken relative to its
own average level (so a louder or quieter reply is the same voice).

`VoiceHistory` keeps, per configured voice, the last `HISTORY` replies' fingerprints and
compares a new reply with their running mean; the first `LEARNING` replies of a voice only
build the history. Nothing is persisted: the history is per daemon run.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

WINDOW_SECONDS = 512 / 24_000
"""About 21 ms (512 samples at 24 kHz)."""
HOP_SECONDS = 480 / 24_000
"""20 ms: four windows per 80 ms frame."""
BANDS = 24
LOW_HZ, HIGH_HZ = 80.0, 8_000.0
"""The bands' span: speech's envelope, above mains hum and below the codec's top."""
VOICED_DBFS = -60.0
"""A window whose RMS is below this is silence and is not part of the fingerprint."""
VOICED_BELOW_PEAK_DB = 25.0
"""Nor is one this far below the reply's loudest window so far (a pause)."""
MIN_VOICED_SECONDS = 0.5
"""A reply with less voiced audio than this has no fingerprint (too little to judge)."""
HISTORY = 20
"""Replies per voice whose fingerprints make the voice's history."""
LEARNING = 3
"""A voice's first replies only build its history."""
THRESHOLD_DB = 3.5
"""A reply further than this from its voice's history has drifted. Measured on espeak-ng
replies at 24 kHz (`python -m satellite.bench.voiceprint`, docs/PERFORMANCE.md), each judged
against a history of 5 other replies: replies of the same voice lie 1.0 to 2.7 dB from it, the
female voice (en+f3) 4.4 to 6.1 dB from the male voices' histories and they from hers; 3.5 dB
sits between. espeak-ng's male voices (en-us, en-gb, en+m3) share one formant model and lie as
close to each other as to themselves (1.1 to 3.0 dB): the envelope tells a voice that changed
character (sex, formants, a filter, a pitch shift), not two near-identical voices apart."""


def _mel(hz: F64) -> F64:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def mel_matrix(rate: int, size: int, bands: int = BANDS) -> F64:
    """Triangular mel filters: (size // 2 + 1, bands), from `LOW_HZ` to `HIGH_HZ` (or Nyquist)."""
    high = min(HIGH_HZ, rate / 2)
    edges_mel = np.linspace(_mel(np.array(LOW_HZ)), _mel(np.array(high)), bands + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(size, 1.0 / rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).T


@dataclass(frozen=True)
class Fingerprint:
    """A reply's voice: per band, the mean and standard deviation of its level (dB) over
    the voiced windows."""

    mean: F64
    std: F64
    windows: int
    """Voiced windows it was made from."""


def distance(a: Fingerprint, b: Fingerprint) -> float:
    """Mean absolute difference (dB) of the band means, each relative to its own average
    level."""
    return float(np.mean(np.abs((a.mean - a.mean.mean()) - (b.mean - b.mean.mean()))))


def average(prints: list[Fingerprint]) -> Fingerprint:
    """The running mean of `prints` (at least one)."""
    return Fingerprint(
        np.mean([p.mean for p in prints], axis=0),
        np.mean([p.std for p in prints], axis=0),
        sum(p.windows for p in prints),
    )


class VoicePrint:
    """One reply's fingerprint, built as its audio streams (`update`)."""

    def __init__(self, rate: int = 24_000) -> None:
        self.rate = rate
        self.size = round(WINDOW_SECONDS * rate)
        self.hop = round(HOP_SECONDS * rate)
        self._window = np.hanning(self.size).astype(np.float32)
        self._filters = mel_matrix(rate, self.size).astype(np.float32)
        self._floor = np.float32(self.size * 10 ** (VOICED_DBFS / 10))
        """A window's sum of squares at `VOICED_DBFS`."""
        self._below_peak = np.float32(10 ** (-VOICED_BELOW_PEAK_DB / 10))
        self._peak = np.float32(0.0)
        """The loudest window's sum of squares so far."""
        self._carry = np.zeros(0, np.float32)
        self._sum = np.zeros(BANDS)
        self._squares = np.zeros(BANDS)
        self.windows = 0

    def update(self, block: npt.ArrayLike) -> None:
        """Feed the next samples of the reply (float32 mono)."""
        audio = np.concatenate([self._carry, np.asarray(block, np.float32).reshape(-1)])
        count = 0 if audio.size < self.size else 1 + (audio.size - self.size) // self.hop
        self._carry = audio[count * self.hop :]
        if not count:
            return
        frames = np.lib.stride_tricks.sliding_window_view(audio, self.size)[:: self.hop][:count]
        energy = np.einsum("ij,ij->i", frames, frames)
        peaks = np.maximum.accumulate(np.maximum(energy, self._peak))
        self._peak = peaks[-1]
        voiced = frames[(energy >= self._floor) & (energy >= peaks * self._below_peak)]
        if not voiced.shape[0]:
            return
        power = np.abs(np.fft.rfft(voiced * self._window, axis=1)) ** 2
        level = 10.0 * np.log10(power @ self._filters + 1e-10)
        self._sum += level.sum(axis=0)
        self._squares += (level.astype(np.float64) ** 2).sum(axis=0)
        self.windows += voiced.shape[0]

    def fingerprint(self) -> Fingerprint | None:
        """The reply's fingerprint so far (None: under `MIN_VOICED_SECONDS` voiced)."""
        if self.windows * HOP_SECONDS < MIN_VOICED_SECONDS:
            return None
        mean = self._sum / self.windows
        std = np.sqrt(np.maximum(self._squares / self.windows - mean**2, 0.0))
        return Fingerprint(mean, std, self.windows)


@dataclass(frozen=True)
class Verdict:
    voice: str
    distance: float | None
    """dB from the voice's history (None: still learning it)."""
    replies: int
    """Replies in the history it was compared with."""
    drifted: bool

    def problem(self) -> str | None:
        """The audio alert's line for a drifted reply."""
        if not self.drifted or self.distance is None:
            return None
        return (
            f"voice drifted: {self.distance:.1f} dB from {self.voice}'s last "
            f"{self.replies} replies (threshold {THRESHOLD_DB:g} dB)"
        )


class VoiceHistory:
    """Per voice, the last `HISTORY` replies' fingerprints; `judge` compares a reply with
    them and adds it. Every reply joins its voice's history (drifted or not), so a lasting
    change of voice stops alerting after some replies rather than forever."""

    def __init__(
        self, threshold: float = THRESHOLD_DB, history: int = HISTORY, learning: int = LEARNING
    ) -> None:
        self.threshold = threshold
        self.learning = learning
        self._history = history
        self._voices: dict[str, deque[Fingerprint]] = {}
        self.drifts = 0
        """Replies that drifted, since start."""
        self.last_distance: float | None = None
        """The last judged reply's distance (dB)."""

    def judge(self, voice: str, print_: Fingerprint | None) -> Verdict:
        """Compare a reply of `voice` (its fingerprint; None: too short) with the voice's
        history, then add it to the history."""
        past = self._voices.setdefault(voice, deque(maxlen=self._history))
        if print_ is None:
            return Verdict(voice, None, len(past), False)
        if len(past) < self.learning:
            past.append(print_)
            return Verdict(voice, None, len(past) - 1, False)
        gap = distance(print_, average(list(past)))
        verdict = Verdict(voice, gap, len(past), gap > self.threshold)
        past.append(print_)
        self.last_distance = gap
        self.drifts += verdict.drifted
        return verdict
