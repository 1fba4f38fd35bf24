"""Telemetry statistics: window percentiles and RFC 3550 interarrival jitter."""

from __future__ import annotations

import numpy as np
import pytest

from satellite.telemetry.stats import InterarrivalJitter, Window


def test_window_keeps_the_last_values() -> None:
    window = Window(100)
    assert window.summary().p50 is None
    for value in range(1, 251):
        window.add(value)
    summary = window.summary()
    assert (summary.count, window.total) == (100, 250)
    assert summary.maximum == 250 and summary.mean == pytest.approx(200.5)
    assert summary.p50 == pytest.approx(200.5)
    assert summary.p95 == pytest.approx(np.percentile(np.arange(151, 251), 95))
    assert summary.as_dict()["p99"] == round(float(np.percentile(np.arange(151, 251), 99)), 2)


def test_jitter_is_zero_for_a_steady_stream() -> None:
    jitter = InterarrivalJitter(16000)
    for i in range(100):
        jitter.add(320, 10.0 + i * 0.020)  # 20 ms chunks arriving every 20 ms
    assert jitter.jitter_ms == pytest.approx(0.0, abs=1e-9)


def test_jitter_follows_rfc3550() -> None:
    """Alternating early/late arrivals of +-5 ms: |D| is 10 ms after the first pair, and J
    converges to it with gain 1/16, exactly as the recurrence says."""
    jitter = InterarrivalJitter(16000)
    expected = 0.0
    previous = None
    for i in range(400):
        arrival = i * 0.020 + (0.005 if i % 2 else -0.005)
        jitter.add(320, arrival)
        if previous is not None:
            d = (arrival - previous) - 0.020
            expected += (abs(d) - expected) / 16
        previous = arrival
    assert jitter.jitter_ms == pytest.approx(expected * 1000, rel=1e-9)
    assert jitter.jitter_ms == pytest.approx(10.0, rel=1e-3)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="window size"):
        Window(0)
    with pytest.raises(ValueError, match="sample rate"):
        InterarrivalJitter(0)
