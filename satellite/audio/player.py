"""Plays a reply while the engine is still making it, without a break.

The daemon puts the reply's items on a queue as they come: ready sounds (a chime, played at
once), generated audio with the time the engine made it, the reply's text progress, and None
at the end. Generated audio waits in the player until the `Pacer` says that what follows will
keep up (`satellite.audio.pacing`): on a machine that generates faster than real time that
is at once; on a slower one the start waits just long enough. If the rate turns out worse
than expected while it plays, the player stops handing audio to the speaker and holds it once
(the backend counts that gap as a hold, not an underrun) until the rest will keep up. A reply
that starts on its first chunk, on the previous reply's rate alone, starts on that guess: if
the second chunk comes late, the gap is that one hold.
Cancelling the task (barge-in) drops what is held; the daemon stops the backend's playback.

On a backend that does not play at real time (`file` or `null` with `audio.realtime: false`)
there is nothing to wait for: audio is handed on as it comes.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import numpy as np

from satellite.audio.backends import AudioBackend
from satellite.audio.convert import FloatArray
from satellite.audio.pacing import Pacer
from satellite.telemetry.stats import InterarrivalJitter

TOLERANCE_SECONDS = 0.001
"""Held audio goes when its start time is this close (timers wake up a little early)."""


@dataclass(frozen=True)
class Generated:
    """Audio the engine made."""

    samples: FloatArray
    """float32 mono at the player's rate. It counts as made when the player takes it (the
    hop from the engine's thread is the daemon's overhead, not a wait; audio made ahead of
    the reply, speculatively, arrives when the reply is asked for)."""


@dataclass(frozen=True)
class TextProgress:
    """The reply's text so far."""

    chars: int
    complete: bool = False
    """All of the reply's text is in (the model closed its text)."""


Item = FloatArray | Generated | TextProgress | None
"""A ready sound (a float32 array at the player's rate), generated audio, text progress, or
None: the reply is complete."""


@dataclass
class PlaybackReport:
    """How one reply played."""

    first_arrived: float | None = None
    """When the engine made the first audio (`time.monotonic()`; None: no audio)."""
    first_played: float | None = None
    """When the first generated audio went to the speaker."""
    holds: int = 0
    """Deliberate gaps (the start held, or the middle held once), counted by the backend."""
    underruns: int = 0
    """Breaks the speaker met that were not deliberate (counted by the backend)."""
    rtf: float | None = None
    """The generation's real-time factor over the reply (wall seconds per audio second)."""
    arrivals: list[tuple[float, float]] = field(default_factory=list)
    """(time, seconds) of each generated chunk, for checks against the least start delay."""

    @property
    def start_delay(self) -> float | None:
        """Seconds the first generated audio waited so that the rest would keep up."""
        if self.first_arrived is None or self.first_played is None:
            return None
        return max(0.0, self.first_played - self.first_arrived)


class ReplyPlayer:
    """One reply's playback through `backend` (see the module docstring)."""

    def __init__(
        self,
        backend: AudioBackend,
        rate: int,
        pacer: Pacer,
        *,
        at_most: float | None = None,
        chunk: float = 0.0,
        jitter: InterarrivalJitter | None = None,
    ) -> None:
        self.backend = backend
        self.rate = rate
        self.pacer = pacer
        self.at_most = at_most
        self.chunk = chunk
        """Seconds of audio the engine hands over at a time, at most (0: as they come)."""
        self.jitter = jitter
        self.report = PlaybackReport()
        self._pending: list[FloatArray] = []
        self._committed = 0.0
        """Seconds of generated audio handed to the backend."""
        self._holding = False
        self._clock: float | None = None
        self._media = 0.0

    async def run(self, queue: asyncio.Queue[Item]) -> PlaybackReport:
        """Play the queue's items until None, then wait until the speaker has played them."""
        self.pacer.begin(self.at_most, self.chunk)
        if self.jitter is not None:
            self.jitter.restart()
        before = self.backend.stats()
        while True:
            wait = self._wait()
            try:
                item = await (queue.get() if wait is None else asyncio.wait_for(queue.get(), wait))
            except TimeoutError:
                await self._release()
                continue
            if item is None:
                break
            await self._take(item)
            await self._release()
        self.pacer.finished(self.report.first_played if self.backend.realtime else None)
        await self._release()
        await self.backend.drain()
        after = self.backend.stats()
        self.report.holds = after.holds - before.holds
        self.report.underruns = after.underruns - before.underruns
        self.report.rtf = self.pacer.rtf(full=True)
        return self.report

    async def _take(self, item: FloatArray | Generated | TextProgress) -> None:
        if isinstance(item, TextProgress):
            self.pacer.text(item.chars, item.complete)
            return
        if not isinstance(item, Generated):
            await self._write(item)  # a ready sound: at once, the gap after it is meant
            self.backend.hold_playback()
            return
        seconds = item.samples.shape[0] / self.rate
        if seconds <= 0:
            return
        made = time.monotonic()
        if self.report.first_arrived is None:
            self.report.first_arrived = made
        self.report.arrivals.append((made, seconds))
        self.pacer.arrived(made, seconds)
        self._pending.append(item.samples)
        if self._playing and self._start_time() > self._runs_dry() and self.backend.realtime:
            self._holding = True  # the rest would not keep up: hold here, once
            self.pacer.hold()
            self.backend.hold_playback()

    def _runs_dry(self) -> float:
        """When the speaker will have played all it holds."""
        return time.monotonic() + self.backend.queued / self.backend.output_rate

    @property
    def _playing(self) -> bool:
        """Started and not holding."""
        return self.report.first_played is not None and not self._holding

    def _start_time(self) -> float:
        """When held audio may go: for a start (or a resume) with room for late chunks; while
        playing, what the speaker holds is that room."""
        return self.pacer.start_time(
            self._committed, self.backend.lead_seconds, starting=not self._playing
        )

    def _wait(self) -> float | None:
        """Seconds until held audio may go (None: wait for the next item)."""
        if not self._pending:
            return None
        start = self._start_time()
        if math.isinf(start):
            return None if start > 0 else 0.0
        return max(0.0, start - self._runs_dry())

    async def _release(self) -> None:
        """Hand held audio on if it may go now."""
        if not self._pending:
            return
        if self.backend.realtime and self._start_time() > self._runs_dry() + TOLERANCE_SECONDS:
            return
        now = time.monotonic()
        if self.report.first_played is None:
            self.report.first_played = now
        if self._holding or self._clock is None:
            self._clock = now - self._media  # the media clock restarts after a hold
        if self._holding:
            self.pacer.hold(False)
        self._holding = False
        pending, self._pending = self._pending, []
        for samples in pending:
            self._committed += samples.shape[0] / self.rate
            await self._write(samples)
        if not self.pacer.measured:  # started on the last reply's rate: a guess
            self._holding = True
            self.pacer.hold()
            self.backend.hold_playback()

    async def _write(self, samples: FloatArray) -> None:
        if self.jitter is not None:
            now = time.monotonic()
            clock = now if self._clock is None else self._clock
            jitter = self.jitter
            blocks = round(samples.shape[0] * jitter.rate / self.rate)
            jitter.add(blocks, max(now, clock + self._media))
        self._media += samples.shape[0] / self.rate
        await self.backend.play(np.asarray(samples, np.float32), self.rate)
