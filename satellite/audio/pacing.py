"""When a reply that is still being generated may start (or resume) playing without a break.

The engine makes a reply's audio in chunks while it plays. Where it makes audio more slowly
than the speaker plays it (a real-time factor `rtf` above 1: wall seconds per second of
audio), playing the first chunk at once runs the speaker dry again and again: a stutter. The
`Pacer` keeps each chunk's arrival (its time and position in the reply), the generation rate
and the reply's expected length, and answers one question: from what time on may the audio
from position `committed` play, so that every chunk still to come arrives before its turn?

With the last arrival at time `a`, the audio up to position `e` in, `x` seconds expected
after it, and chunks of at most `b` seconds (`b`: the longest chunk of the reply so far, or
the engine's batch when it decodes several frames a call, `satellite.engine.framebatch`),
the chunk that ends at `e + y` is expected at `a + y * rtf`, and its start, `e + y - b`
at the latest, plays at `start + e + y - b - committed`; so (worst at `y = x` when
`rtf > 1`):

    start >= committed + a - e + b + x * (rtf - 1) * (1 + MARGIN) + CUSHION + lead + late

(and never before `committed + a - e + b * rtf + CUSHION`, for the next chunk), and with
`rtf <= 1` `start >= committed + a - e + b * rtf + CUSHION + lead + late`, which is soon
past: play at once.
With `rtf > 1` the first bound is taken from every chunk so far, not only the last, and the
latest wins: the first chunks of an interleaved reply come faster than the rest (no text run
among them yet), and foreseen from those alone the end came 46 ms after the start allowed
(measured on the full-size model, `tests/daemon/test_reply_pacing.py`). `late` is learnt: after
each reply that played without a hold, the room that would have let it start just in time
(the room it had, plus how much too early it started, less how much too late), the most
over the last replies (an engine near real time makes some chunks later than others, in no
pattern a rate foresees: without it, a reply it keeps up with on average still ran dry now
and then). Both count for a start or a resume, not while playing, when what the speaker
holds is that room and the chunks so far came in time.
MARGIN covers a rate that drifts; CUSHION the hop from the engine's thread to the speaker;
`lead` is how far ahead of the sound the backend takes audio (a sound card's callback takes
a block at a time). With nothing left to come, any time will do.

- **Rate**: the worst of the rates over the last RATE_WINDOW arrivals, the last
  RECENT_WINDOW arrivals (it sees a rate that drops mid-reply soon; it spans one
  interleaved audio run, so the text runs between audio runs do not bias it) and the whole
  reply so far (a window that begins at a late chunk, one the engine was slow to make
  before it caught up, sees the rate too low; the whole reply dilutes that); while the
  player holds (`hold`), never below the rate since the hold began, so that it resumes
  once; early in a reply, never below the previous reply's rate (the first chunks of an
  interleaved reply come faster than its average: the text runs between them have not
  happened yet). With one arrival and no earlier reply the rate is unknown and nothing
  starts until the second arrival (or the end); the daemon gives a slow machine's first
  reply the rate the cost model foresees (`satellite.engine.costmodel`).
- **Expected length**: once the reply's text is complete, its characters times the seconds
  of audio per character of earlier replies (plus ESTIMATE_MARGIN); before that, the
  longest of the last LENGTHS_KEPT replies; with neither, the bound (`at_most`, the longest
  reply the engine may make). An estimate that arrivals pass is replaced by the bound (the
  only length still certain: the player holds once, and long, rather than break up again),
  except that a text that completes later gives a new estimate. Never below what has
  arrived, never above the bound.

A `Pacer` lives across replies (it learns the rate, the lengths and the seconds per
character); `begin` starts each reply. All times are `time.monotonic()` seconds; all
lengths are seconds of audio.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

MARGIN = 0.04
"""Relative margin on the predicted shortfall (the rate may drift by this much)."""
CUSHION_SECONDS = 0.02
"""Fixed lead on top, when anything is waited for at all."""
RATE_WINDOW = 25
"""Arrivals the generation rate is measured over (about 2 s of audio in 80 ms frames)."""
RECENT_WINDOW = 12
"""Arrivals of the short window: one interleaved audio run (`GenerationConfig.n_audio`)."""
ESTIMATE_MARGIN = 0.15
"""Added to a length estimated from the text (speech rates vary that much)."""
SECONDS_PER_CHAR = 0.075
"""Seconds of speech per character of text before any reply has been measured."""
LENGTHS_KEPT = 5
"""Replies whose lengths make the estimate before a reply's text is complete."""


@dataclass(frozen=True)
class Arrival:
    time: float
    position: float
    seconds: float


class Pacer:
    """See the module docstring."""

    def __init__(self) -> None:
        self.last_rtf: float | None = None
        """The previous reply's real-time factor (None: none measured)."""
        self.lengths: deque[float] = deque(maxlen=LENGTHS_KEPT)
        self.seconds_per_char = SECONDS_PER_CHAR
        self._arrivals: list[Arrival] = []
        self._at_most = math.inf
        self._chars = 0
        self._text_complete = False
        self._estimate_passed = False
        self._generated = 0.0
        self._held_from: int | None = None
        self._chunk = 0.0
        self.lateness: deque[float] = deque(maxlen=LENGTHS_KEPT)
        """For each of the last replies that played, the room for late chunks that would have
        let it start just in time: the room it had, plus how much too early it started (less
        how much too late; never below 0)."""
        self._held = False

    def begin(self, at_most: float | None = None, chunk: float = 0.0) -> None:
        """A new reply, at most `at_most` seconds long (None: no bound known), whose audio
        comes in chunks of up to `chunk` seconds (0: as long as the longest that arrives)."""
        self._arrivals = []
        self._at_most = math.inf if at_most is None else at_most
        self._chunk = chunk
        self._held = False
        self._chars = 0
        self._text_complete = False
        self._estimate_passed = False
        self._generated = 0.0
        self._held_from = None

    def arrived(self, time: float, seconds: float) -> None:
        """`seconds` of audio arrived at `time`."""
        if seconds <= 0:
            return
        if self._generated + seconds > self._estimate() + 1e-9:
            self._estimate_passed = True
        self._chunk = max(self._chunk, seconds)
        self._arrivals.append(Arrival(time, self._generated, seconds))
        self._generated += seconds

    def hold(self, holding: bool = True) -> None:
        """The player holds the reply mid-way (False: it resumed)."""
        self._held_from = max(0, len(self._arrivals) - 1) if holding else None
        self._held = self._held or holding

    def text(self, chars: int, complete: bool = False) -> None:
        """The reply's text so far has `chars` characters (`complete`: all of it)."""
        self._chars = chars
        if complete and not self._text_complete:
            self._text_complete = True
            self._estimate_passed = False  # a new estimate, from the whole text

    def finished(self, started: float | None = None) -> None:
        """Everything has arrived (nothing more is waited for): learn the reply's rate,
        length and seconds per character, and, when it started playing at `started`, the
        room for late chunks it would have needed."""
        rtf = self.rtf(full=True)
        if rtf is not None:
            self.last_rtf = rtf
        if started is not None and self._arrivals and not self._held:
            # (a reply that held met a rate it had not foreseen: the hold was its room)
            first = self._arrivals[0].time
            need = least_start_delay([(a.time, a.seconds) for a in self._arrivals])
            room = self._late()  # what this reply had: only `finished` changes it
            self.lateness.append(max(0.0, room + need - (started - first)))
        if self._generated > 0:
            self.lengths.append(self._generated)
            if self._text_complete and self._chars > 0:
                self.seconds_per_char = self._generated / self._chars
        self._at_most = self._generated

    @property
    def generated(self) -> float:
        return self._generated

    @property
    def measured(self) -> bool:
        """This reply's own rate is known (two arrivals or more)."""
        return len(self._arrivals) >= 2

    def rtf(self, full: bool = False) -> float | None:
        """Wall seconds per second of audio over the last RATE_WINDOW arrivals (`full`: over
        the whole reply); None while unknown."""
        arrivals = self._arrivals
        if len(arrivals) < 2:
            return None if full else self.last_rtf
        if full:
            return _rate(arrivals[0], arrivals[-1])
        windows = (RATE_WINDOW, RECENT_WINDOW, len(arrivals) - 1)
        firsts = [arrivals[max(0, len(arrivals) - 1 - n)] for n in windows]
        if self._held_from is not None and len(arrivals) - self._held_from >= 2:
            firsts.append(arrivals[self._held_from])
        measured = max(_rate(first, arrivals[-1]) or 0.0 for first in firsts)
        if len(arrivals) <= RATE_WINDOW and self.last_rtf is not None:
            return max(measured, self.last_rtf)
        return measured

    def expected(self) -> float:
        """The reply's expected length (see the module docstring); inf: unbounded."""
        return min(self._at_most, max(self._estimate(), self._generated))

    def _estimate(self) -> float:
        if self._estimate_passed:
            return self._at_most
        if self._text_complete and self._chars > 0:
            return self._chars * self.seconds_per_char * (1.0 + ESTIMATE_MARGIN)
        if self.lengths:
            return max(self.lengths)
        return self._at_most

    def _late(self) -> float:
        """Room for late chunks: the most the last replies needed (replies vary: with the
        median, one in ten still ran dry on the full-size model near real time)."""
        return max(self.lateness, default=0.0)

    def start_time(self, committed: float, lead: float = 0.0, starting: bool = True) -> float:
        """The earliest time the audio from position `committed` on may play without a
        break, with a backend taking audio `lead` seconds ahead (-inf: any time; inf: not
        yet known). `starting`: for a start or a resume, with room for late chunks and the
        end foreseen from every chunk so far; for a reply that is playing (may it go on?),
        from the last chunk alone and without that room: what it holds is the room, and the
        chunks so far came in time (foreseen from the first chunk over the whole reply, a
        rate read 0.1 % higher moved the end by more than the margin: a needless hold)."""
        if not self._arrivals:
            return math.inf
        last = self._arrivals[-1]
        end = last.position + last.seconds
        expected = self.expected()
        if expected - end <= 1e-9:
            return -math.inf
        rtf = self.rtf()
        if rtf is None:
            return math.inf
        base = committed + lead + (self._late() if starting else 0.0)
        chunk = self._chunk
        next_chunk = base + last.time - end + chunk * rtf + CUSHION_SECONDS
        if rtf <= 1.0:
            return next_chunk
        # the end's arrival as foreseen from every chunk so far, not only the last: the first
        # chunks of an interleaved reply come faster than the rest (no text run among them)
        stretch = (rtf - 1.0) * (1.0 + MARGIN)
        behind = max(
            a.time - (a.position + a.seconds) + (expected - a.position - a.seconds) * stretch
            for a in (self._arrivals if starting else self._arrivals[-1:])
        )
        return max(next_chunk, base + behind + chunk + CUSHION_SECONDS)


def _rate(first: Arrival, last: Arrival) -> float | None:
    """Wall seconds per audio second from `first` to `last` (None: no audio between): the
    audio made in between is what ends between their ends (the chunks after `first`, `last`
    included), whatever their lengths."""
    spent = (last.position + last.seconds) - (first.position + first.seconds)
    return (last.time - first.time) / spent if spent > 0 else None


def least_start_delay(arrivals: list[tuple[float, float]]) -> float:
    """The shortest wait after the first arrival that plays `arrivals` ((time, seconds) in
    order) without a break: what a player that knew the future would wait."""
    if not arrivals:
        return 0.0
    first = arrivals[0][0]
    position = 0.0
    need = 0.0
    for time, seconds in arrivals:
        need = max(need, time - first - position)
        position += seconds
    return need
