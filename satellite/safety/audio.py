"""Acoustic integrity of generated audio before it is played (`safety.audio_integrity`).

`AudioCheck.inspect(block)` returns the block made safe to play and counts what it fixed:

- invalid samples (NaN or infinite) become 0;
- samples beyond full scale (|x| > 1) are clipped to it;
- silence runs: stretches of at least `SILENCE_RUN_SECONDS` below -60 dBFS inside a reply
  (a stalled or broken generation), counted once each.

`reply_problems()` says what the current reply had (for the log, the health report and the
audio alert); `start_reply()` begins the next one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
SILENCE_LEVEL = 10 ** (-60 / 20)
SILENCE_RUN_SECONDS = 2.0
CLIPPED_SHARE = 0.01
"""A reply with more than this share of clipped samples is a problem."""


@dataclass
class Counts:
    samples: int = 0
    invalid: int = 0
    clipped: int = 0
    silence_runs: int = 0


class AudioCheck:
    def __init__(self, rate: int, enabled: bool = True) -> None:
        self.rate = rate
        self.enabled = enabled
        self.total = Counts()
        """Since start."""
        self.reply = Counts()
        """The current reply."""
        self._quiet = 0
        self._in_run = False

    def start_reply(self) -> None:
        self.reply = Counts()
        self._quiet = 0
        self._in_run = False

    def inspect(self, block: FloatArray) -> FloatArray:
        if not self.enabled or block.size == 0:
            return block
        audio = np.asarray(block, np.float32)
        bad = ~np.isfinite(audio)
        invalid = int(bad.sum())
        if invalid:
            audio = np.where(bad, np.float32(0.0), audio)
        over = np.abs(audio) > 1.0
        clipped = int(over.sum())
        if clipped:
            audio = np.clip(audio, -1.0, 1.0)
        runs = self._silence(audio)
        for counts in (self.total, self.reply):
            counts.samples += audio.size
            counts.invalid += invalid
            counts.clipped += clipped
            counts.silence_runs += runs
        return audio

    def _silence(self, audio: FloatArray) -> int:
        """Silence runs completed or begun in this block (a running count across blocks)."""
        runs = 0
        quiet = np.abs(audio) < SILENCE_LEVEL
        if quiet.all():
            self._quiet += audio.size
        else:
            loud = np.flatnonzero(~quiet)
            self._quiet += int(loud[0])  # the quiet head continues the run before it
            if self._quiet >= SILENCE_RUN_SECONDS * self.rate and not self._in_run:
                runs += 1
            self._in_run = False
            self._quiet = audio.size - 1 - int(loud[-1])
        if self._quiet >= SILENCE_RUN_SECONDS * self.rate and not self._in_run:
            runs += 1
            self._in_run = True
        return runs

    def reply_problems(self) -> list[str]:
        r = self.reply
        problems = []
        if r.invalid:
            problems.append(f"{r.invalid} invalid samples (NaN or infinite) set to 0")
        if r.samples and r.clipped / r.samples > CLIPPED_SHARE:
            problems.append(f"{100 * r.clipped / r.samples:.1f}% of samples clipped")
        if r.silence_runs:
            problems.append(f"{r.silence_runs} silence runs of {SILENCE_RUN_SECONDS:g} s or more")
        return problems
