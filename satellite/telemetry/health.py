"""The satellite's health: latency windows, jitter, audio counters, resources, and alerts.

`HealthMonitor` watches a daemon (its observer events and counters) and builds the health
report (`report()`, a JSON-able dict) that MQTT publishes. Alerts have hysteresis: an alert
is raised when its value goes above its threshold and cleared only when it falls below
threshold x `alert_clear_ratio`, so a value hovering at the threshold does not flap; each
change is passed to the `on_alert` callbacks.

- `latency`: p95 time to first audio above `health.ttfa_alert_ms`, or p95 turn latency above
  `health.turn_latency_alert_ms` (over the last `health.window` turns).
- `jitter`: input or playback jitter (RFC 3550 §6.4.1, see `satellite.telemetry.stats`)
  above `health.jitter_alert_ms`.
- `audio`: the last reply's audio had to be fixed before playback (invalid samples, heavy
  clipping, long silences: `satellite.safety.audio`); cleared by the next clean reply.

Each local reply's playback is in the report too: its underruns (`last_reply_underruns`,
and `replies_broken`: how many replies broke up at all), how long replies waited to start so
they would not break (`reply_start_delay_ms`), and the engine's real-time factor
(`generation_rtf`: above 1, the model makes audio more slowly than it plays on this machine).
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from satellite import __version__
from satellite.events import DaemonEvent, Failure, TurnFinished
from satellite.settings import HealthSettings
from satellite.telemetry.stats import InterarrivalJitter, Window

_LOG = logging.getLogger("satellite.health")

ALERTS = ("latency", "jitter", "audio")


@dataclass(frozen=True)
class AlertChange:
    name: str
    raised: bool
    value: float
    """The value that crossed (ms)."""
    threshold: float


class Watched(Protocol):
    """What the monitor reads from the daemon."""

    started: float
    input_jitter: InterarrivalJitter
    playback_jitter: InterarrivalJitter

    def counters(self) -> dict[str, Any]: ...


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


class HealthMonitor:
    def __init__(self, settings: HealthSettings, watched: Watched) -> None:
        self.settings = settings
        self.watched = watched
        self.ttfa = Window(settings.window)
        self.turn_latency = Window(settings.window)
        self.engine_step = Window(settings.window)
        self.start_delay = Window(settings.window)
        self.generation_rtf = Window(settings.window)
        self.last_reply_underruns = 0
        self.replies_broken = 0
        """Replies whose playback met at least one underrun."""
        self.turns = 0
        self.errors = 0
        self.alerts = dict.fromkeys(ALERTS, False)
        self.on_alert: list[Callable[[AlertChange], None]] = []
        self._cpu = (time.monotonic(), time.process_time())

    def observe(self, event: DaemonEvent) -> None:
        """A daemon observer: takes the figures of each finished turn."""
        if isinstance(event, TurnFinished):
            report = event.report
            self.turns += 1
            if report.time_to_first_audio is not None:
                self.ttfa.add(report.time_to_first_audio * 1000)
            self.turn_latency.add(report.total_seconds * 1000)
            if report.frames and report.engine_seconds:
                self.engine_step.add(report.engine_seconds * 1000 / report.frames)
            if report.start_delay is not None:
                self.start_delay.add(report.start_delay * 1000)
            if report.generation_rtf is not None:
                self.generation_rtf.add(report.generation_rtf)
            self.last_reply_underruns = report.underruns
            self.replies_broken += report.underruns > 0
            self.check()
            bad = bool(report.audio_problems)
            if bad != self.alerts["audio"]:
                self._change(AlertChange("audio", bad, float(len(report.audio_problems)), 0.0))
        elif isinstance(event, Failure):
            self.errors += 1

    def check(self) -> list[AlertChange]:
        """Re-evaluate the alerts; returns (and reports) the changes."""
        s = self.settings
        ttfa, turn = self.ttfa.summary().p95, self.turn_latency.summary().p95
        latency = [(ttfa, s.ttfa_alert_ms), (turn, s.turn_latency_alert_ms)]
        inputs, playback = self.watched.input_jitter, self.playback_jitter_source()
        peaks = (inputs.take_peak(), playback.take_peak())
        current = (inputs.jitter_ms, playback.jitter_ms)
        # a spike between two looks raises the alert; only the present value clears it
        jitter = [(p if not self.alerts["jitter"] else c, s.jitter_alert_ms)
                  for p, c in zip(peaks, current, strict=True)]  # fmt: skip
        changes = []
        for name, pairs in (("latency", latency), ("jitter", jitter)):
            known = [(v, t) for v, t in pairs if v is not None]
            if not known:
                continue
            if not self.alerts[name]:
                over = [(v, t) for v, t in known if v > t]
                if over:
                    changes.append(AlertChange(name, True, *max(over, key=lambda p: p[0] / p[1])))
            elif all(v < t * s.alert_clear_ratio for v, t in known):
                value, threshold = max(known, key=lambda p: p[0] / p[1])
                changes.append(AlertChange(name, False, value, threshold))
        for change in changes:
            self._change(change)
        return changes

    def _change(self, change: AlertChange) -> None:
        self.alerts[change.name] = change.raised
        verb = "raised" if change.raised else "cleared"
        _LOG.warning("%s alert %s: %.1f against %.1f", change.name, verb,
                     change.value, change.threshold)  # fmt: skip
        for callback in self.on_alert:
            callback(change)

    def playback_jitter_source(self) -> InterarrivalJitter:
        return self.watched.playback_jitter

    def report(self, check: bool = True) -> dict[str, Any]:
        """The health report (re-checking the alerts first, unless `check` is false)."""
        if check:
            self.check()
        now, cpu = time.monotonic(), time.process_time()
        last_wall, last_cpu = self._cpu
        self._cpu = (now, cpu)
        cpu_percent = 100.0 * (cpu - last_cpu) / max(1e-6, now - last_wall)
        return {
            "version": __version__,
            "uptime_s": round(now - self.watched.started, 1),
            "turns": self.turns,
            "errors": self.errors,
            "ttfa_ms": self.ttfa.summary().as_dict(1),
            "turn_latency_ms": self.turn_latency.summary().as_dict(1),
            "engine_step_ms": self.engine_step.summary().as_dict(2),
            "reply_start_delay_ms": self.start_delay.summary().as_dict(1),
            "generation_rtf": self.generation_rtf.summary().as_dict(2),
            "last_reply_underruns": self.last_reply_underruns,
            "replies_broken": self.replies_broken,
            "input_jitter_ms": round(self.watched.input_jitter.jitter_ms, 2),
            "playback_jitter_ms": round(self.watched.playback_jitter.jitter_ms, 2),
            "cpu_percent": round(cpu_percent, 1),
            "memory_mb": round(_rss_mb(), 1),
            "alerts": dict(self.alerts),
            **self.watched.counters(),
        }
