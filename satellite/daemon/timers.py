"""Home Assistant's timers on the satellite: `timer-started/updated/cancelled/finished` keep
a list; a finished timer rings its chime until the wake word is heard, Home Assistant cancels
it, or `audio.timer_ring_seconds` pass."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wyoming.event import Event
from wyoming.timer import TimerCancelled, TimerFinished, TimerStarted, TimerUpdated

from satellite import events
from satellite.audio.sounds import Sound
from satellite.daemon.playback import Playback

_LOG = logging.getLogger("satellite.daemon")

MAX_RINGS = 1000
"""Upper bound on chime repetitions of one finished timer (besides the ring time)."""


@dataclass
class Timer:
    id: str
    name: str | None
    total_seconds: int
    started: float = field(default_factory=time.monotonic)
    active: bool = True


class TimerBell:
    """The timers Home Assistant keeps on this satellite, and the ring of a finished one."""

    def __init__(
        self,
        playback: Playback,
        sound: Sound,
        ring_seconds: float,
        notify: Callable[[events.DaemonEvent], None],
    ) -> None:
        self.playback = playback
        self.sound = sound
        self.ring_seconds = ring_seconds
        self.notify = notify
        self.timers: dict[str, Timer] = {}
        self._ring: asyncio.Task[None] | None = None
        self._ringing_id = ""

    @property
    def ringing(self) -> bool:
        return self._ring is not None and not self._ring.done()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The ring, while one rings."""
        return self._ring

    def silence(self) -> None:
        """Stop the ring (its chime with it); other sound plays on."""
        if self._ring is not None and not self._ring.done():
            self._ring.cancel()

    def on_event(self, event: Event) -> None:
        """A `timer-*` event (ValueError naming the field of a malformed one)."""
        kind = event.type
        check_timer(kind, event.data)
        if TimerStarted.is_type(kind):
            started = TimerStarted.from_event(event)
            self.timers[started.id] = Timer(started.id, started.name, started.total_seconds)
            _LOG.info("timer %s started: %d s", started.name or started.id, started.total_seconds)
        elif TimerUpdated.is_type(kind):
            updated = TimerUpdated.from_event(event)
            timer = self.timers.get(updated.id)
            if timer is not None:
                timer.active, timer.total_seconds = updated.is_active, updated.total_seconds
        elif TimerCancelled.is_type(kind):
            cancelled = TimerCancelled.from_event(event)
            self.timers.pop(cancelled.id, None)
            if self.ringing and self._ringing_id == cancelled.id:
                self.silence()
        elif TimerFinished.is_type(kind):
            finished = TimerFinished.from_event(event)
            timer = self.timers.pop(finished.id, None)
            name = timer.name if timer is not None and timer.name else finished.id
            _LOG.info("timer %s finished; ringing until the wake word is heard", name)
            self.notify(events.TimerRinging(id=finished.id, name=name))
            self.silence()
            self._ring = asyncio.create_task(self._ring_loop())
            self._ringing_id = finished.id

    async def _ring_loop(self) -> None:
        """The chime, once per its own length, until cancelled, or until it has rung for
        `ring_seconds` or MAX_RINGS times (paced by the clock, so a backend that plays
        faster than real time does not ring any more often). A ring waits for whatever else
        plays to end; something that starts playing cuts the ring playing then
        (`Playback.start`), and the ring after it comes once that has played."""
        period = max(self.sound.seconds, 0.1)
        rung = 0.0
        try:
            for _ in range(MAX_RINGS):
                if rung >= self.ring_seconds:
                    _LOG.info("the timer rang for %.0f s; stopping", self.ring_seconds)
                    break
                if self.playback.playing:
                    _LOG.info("the timer's chime waits for the %s to end", self.playback.kind)
                    await self.playback.wait()
                    continue
                started = time.monotonic()
                await self.playback.chime(self.sound)
                rung += period
                await asyncio.sleep(max(0.0, started + period - time.monotonic()))
        finally:
            self.playback.cut_chime()
            self.notify(events.TimerSilenced())


def check_timer(kind: str, data: dict[str, Any]) -> None:
    """A timer event's `id` is text and its `total_seconds` (where it has one) a whole number
    of seconds; ValueError naming the field if not (the server answers with an `error`)."""
    timer_id = data.get("id")
    if not isinstance(timer_id, str) or not 0 < len(timer_id) <= 200:
        raise ValueError(f"{kind}: id must be text (1 to 200 characters), "
                         f"not {str(timer_id)[:40]!r}")  # fmt: skip
    if kind in ("timer-started", "timer-updated"):
        value = data.get("total_seconds")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**9:
            raise ValueError(f"{kind}: total_seconds must be a whole number of seconds, "
                             f"not {str(value)[:40]!r}")  # fmt: skip
