"""Latency and jitter statistics shared by the health reports, alerts and benchmarks.

- `Window`: the last N values of a measurement (e.g. time to first audio, ms) with their
  percentiles.
- `InterarrivalJitter`: RFC 3550 §6.4.1 interarrival jitter of an audio stream, comparing the
  media clock (samples / rate) with monotonic arrival times.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Percentiles of a window, in the unit of the values; None when the window is empty."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    maximum: float | None

    def as_dict(self, digits: int = 2) -> dict[str, float | int | None]:
        def rounded(x: float | None) -> float | None:
            return None if x is None else round(x, digits)

        return {
            "count": self.count,
            "p50": rounded(self.p50),
            "p95": rounded(self.p95),
            "p99": rounded(self.p99),
            "mean": rounded(self.mean),
            "max": rounded(self.maximum),
        }


class Window:
    """The most recent `size` values of one measurement."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self._values: deque[float] = deque(maxlen=size)
        self.total = 0
        """Values ever added, including those that fell out of the window."""

    def add(self, value: float) -> None:
        self._values.append(float(value))
        self.total += 1

    def __len__(self) -> int:
        return len(self._values)

    def summary(self) -> Summary:
        if not self._values:
            return Summary(0, None, None, None, None, None)
        values = np.fromiter(self._values, dtype=np.float64)
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return Summary(
            len(values),
            float(p50),
            float(p95),
            float(p99),
            float(values.mean()),
            float(values.max()),
        )


class InterarrivalJitter:
    """RFC 3550 §6.4.1 for a stream of audio chunks.

    For chunk i with media timestamp S_i (seconds of audio before it, from the sample count)
    and arrival time R_i (monotonic seconds), D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}) and
    J += (|D| - J) / 16. `jitter_ms` is J in milliseconds.
    """

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        self.rate = rate
        self._samples = 0
        self._last: tuple[float, float] | None = None
        self.jitter_s = 0.0
        self.peak_s = 0.0
        """The highest jitter since the last `take_peak` (a spike between two looks)."""
        self.chunks = 0

    def add(self, samples: int, arrival: float) -> None:
        """A chunk of `samples` samples arrived at monotonic time `arrival` (seconds)."""
        media = self._samples / self.rate
        if self._last is not None:
            last_media, last_arrival = self._last
            d = (arrival - last_arrival) - (media - last_media)
            self.jitter_s += (abs(d) - self.jitter_s) / 16.0
            self.peak_s = max(self.peak_s, self.jitter_s)
        self._last = (media, arrival)
        self._samples += samples
        self.chunks += 1

    def take_peak(self) -> float:
        """The peak jitter (ms) since the last call; the peak restarts from the current value."""
        peak, self.peak_s = self.peak_s, self.jitter_s
        return peak * 1000.0

    def restart(self) -> None:
        """A new stream begins (its clock starts at 0); the jitter estimate carries on."""
        self._samples = 0
        self._last = None

    @property
    def jitter_ms(self) -> float:
        return self.jitter_s * 1000.0
