"""Audio waits for its text: each audio frame of a reply is released (to the speaker, to
Wyoming, to any stream) only after the text generated before it has passed the policy.

The model writes its reply's text ahead of the audio that speaks it, so a frame's text is the
reply's text as it stood when the frame arrived. `SpeechGate.text()` judges the text so far
with the built-in rules at once (microseconds: they are regular expressions) and starts the
external judges (commands, plugins) on it, one request in flight per judge, the newest text
next; `audio()` queues the frame with the length of the text before it, and frames are
released, in order, as soon as every rule has passed a text at least that long. A `hold`
(allow-only topics before a topic is named, an external judge asking for more) keeps the
frames waiting. On a block nothing more is released: the queued frames are dropped and
`blocked` says which rule fired. `finish()` judges the complete text and releases or drops
what is left.

The gate measures what it adds to a reply's start: the time from the first frame's arrival
to its release (`first_audio_wait`), and the time spent judging text before that release
(`judging_before_first_audio`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from satellite.safety.policy import ExternalRule, Policy
from satellite.safety.rules import Finding

T = TypeVar("T")


class SpeechGate(Generic[T]):
    """See the module docstring. `release` gets each frame that may be played."""

    def __init__(self, policy: Policy, release: Callable[[T], None]) -> None:
        self.policy = policy
        self.release = release
        self.said = ""
        self.final = False
        self.blocked: Finding | None = None
        self.on_block: Callable[[Finding], None] | None = None
        self._queue: deque[tuple[int, T, float]] = deque()
        self._local_passed = -1
        """Length of the text the built-in rules passed (-1: not even the empty text, a hold)."""
        self._external = {rule.name: _Judge(rule) for rule in policy.external_rules}
        self._tasks: set[asyncio.Task[None]] = set()
        self.first_audio_wait: float | None = None
        self.judging_before_first_audio = 0.0
        self.released = 0
        self._judge_local(time.perf_counter())

    @property
    def passed(self) -> int:
        """Length of the text every rule has passed."""
        marks = [self._local_passed, *(j.passed for j in self._external.values())]
        return min(marks)

    def text(self, delta: str, final: bool = False) -> None:
        """More of the reply's text (`final`: it is all in)."""
        if self.blocked is not None or not self.policy.enabled:
            return
        self.said += delta
        self.final = self.final or final
        self._judge_local(time.perf_counter())
        for judge in self._external.values():
            self._ask(judge)
        self._flush()

    def audio(self, frame: T) -> None:
        """A frame of the reply's audio, made after the text so far."""
        if self.blocked is not None:
            return
        if not self.policy.enabled:
            self._release(frame, time.perf_counter())
            return
        self._queue.append((len(self.said), frame, time.perf_counter()))
        self._flush()

    async def finish(self) -> Finding | None:
        """The text is complete: judge it whole, wait for the external judges, release what
        passes; returns the block, if any."""
        if self.blocked is None and self.policy.enabled:
            if not self.final:
                self.text("", final=True)
            while self._tasks and self.blocked is None:
                await asyncio.wait(set(self._tasks))
            holding = [j.rule.name for j in self._external.values() if j.passed < len(self.said)]
            if self.blocked is None and holding:  # a judge still waiting for more: none comes
                self._block(Finding(holding[0], "block", "held to the end of the reply"))
        if self.blocked is None:
            self._flush()
        self._queue.clear()
        return self.blocked

    def cancel(self) -> None:
        """Stop the external judges (the reply was cancelled)."""
        for task in self._tasks:
            task.cancel()

    # -- internals ---------------------------------------------------------------------------

    def _judge_local(self, started: float) -> None:
        found = self.policy.check_local(self.said, self.final)
        if self.released == 0:
            self.judging_before_first_audio += time.perf_counter() - started
        if found is None:
            self._local_passed = len(self.said)
        elif found.verdict == "block":
            self._block(found)

    def _ask(self, judge: _Judge) -> None:
        if judge.busy or judge.asked == (len(self.said), self.final):
            return
        judge.busy = True
        judge.asked = (len(self.said), self.final)
        task = asyncio.get_running_loop().create_task(self._run(judge, self.said, self.final))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, judge: _Judge, text: str, final: bool) -> None:
        try:
            found = await judge.rule.judge(text, final)
        finally:
            judge.busy = False
        if self.blocked is not None:
            return
        if found is None:
            judge.passed = max(judge.passed, len(text))
        elif found.verdict == "block":
            self._block(found)
            return
        if judge.asked != (len(self.said), self.final):
            self._ask(judge)  # more text came meanwhile
        self._flush()

    def _block(self, found: Finding) -> None:
        self.blocked = found
        self._queue.clear()
        self.cancel()
        self.policy.count(found)
        if self.on_block is not None:
            self.on_block(found)

    def _flush(self) -> None:
        if self.blocked is not None:
            return
        passed = self.passed
        complete = self.final and passed >= len(self.said)
        while self._queue and (self._queue[0][0] <= passed or complete):
            _, frame, arrived = self._queue.popleft()
            self._release(frame, arrived)

    def _release(self, frame: T, arrived: float) -> None:
        if self.released == 0:
            self.first_audio_wait = time.perf_counter() - arrived
        self.released += 1
        self.release(frame)


class _Judge:
    def __init__(self, rule: ExternalRule) -> None:
        self.rule = rule
        self.passed = 0
        self.busy = False
        self.asked: tuple[int, bool] | None = None
