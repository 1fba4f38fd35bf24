"""Acoustic integrity of generated audio before it is played (`safety.audio_integrity`).

`AudioCheck.inspect(block)` returns the block made safe to play and counts what it found:

- invalid samples (NaN or infinite) become 0;
- samples beyond full scale (|x| > 1) are clipped to it;
- silence runs: stretches of at least `SILENCE_RUN_SECONDS` below -60 dBFS inside a reply
  (a stalled or broken generation), counted once each;
- per frame (`satellite.safety.integrity`): clicks at block joins, DC offset, sudden
  loudness jumps, dropouts, the model looping, and a block at the wrong sample rate or
  channel count. A failure is counted per detector (once per run of failing frames) and
  handled as `safety.audio_action` says: `mute` silences the rest of the reply, `drop`
  only the failing frame (the next fades in), `report` changes nothing.

A reply begun with its voice (`start_reply(voice)`) is also fingerprinted as it streams
(`satellite.safety.voiceprint`); `finish_reply()` compares it with that voice's history, and a
reply that drifted beyond the threshold is one of its problems.

`reply_problems()` says what the current reply had (for the log, the health report and the
audio alert); `start_reply()` begins the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from satellite.safety.integrity import DETECTORS, SILENCE_RUN_SECONDS, Detector, FrameChecks
from satellite.safety.voiceprint import Verdict, VoiceHistory, VoicePrint

FloatArray = npt.NDArray[np.float32]
AudioAction = Literal["mute", "drop", "report"]
SILENCE_LEVEL = 10 ** (-60 / 20)
CLIPPED_SHARE = 0.01
"""A reply with more than this share of clipped samples is a problem."""
SAME_FAILURE_SECONDS = 0.5
"""Failures of one detector less than this apart count as one (a jump or a loop that some
frames in its middle pass)."""
FADE_SECONDS = 0.005
"""Audio silenced by the action fades out from the last sample played (and, after a dropped
frame, the next fades in) over 5 ms, so that the cut is no click of its own."""
DESCRIPTIONS: dict[Detector, str] = {
    "click": "clicks at frame joins",
    "dc_offset": "DC offset",
    "loudness_jump": "sudden loudness jumps",
    "dropout": "dropouts (digital silence inside speech)",
    "loop": "looping (repeated frames)",
    "format": "blocks at the wrong sample rate or channel count",
}


def _no_failures() -> dict[Detector, int]:
    return dict.fromkeys(DETECTORS, 0)


@dataclass
class Counts:
    samples: int = 0
    invalid: int = 0
    clipped: int = 0
    silence_runs: int = 0
    failures: dict[Detector, int] = field(default_factory=_no_failures)
    """Per detector: its failures (those less than `SAME_FAILURE_SECONDS` apart count once)."""
    silenced: int = 0
    """Samples the action replaced with silence."""


class AudioCheck:
    def __init__(
        self, rate: int, enabled: bool = True, action: AudioAction = "mute", channels: int = 1
    ) -> None:
        """`rate` and `channels`: what the player plays the reply at."""
        self.rate = rate
        self.enabled = enabled
        self.action = action
        self.frames = FrameChecks(rate, channels)
        self.total = Counts()
        """Since start."""
        self.reply = Counts()
        """The current reply."""
        self._fade = max(1, round(FADE_SECONDS * rate))
        self.voices = VoiceHistory()
        """Per voice, its replies' fingerprints (this run)."""
        self.start_reply()

    def start_reply(self, voice: str | None = None) -> None:
        """Begin the next reply; with `voice` (the voice it should have), fingerprint it."""
        self.reply = Counts()
        self._voice = voice
        self._print = VoicePrint(self.rate) if voice and self.enabled else None
        self.verdict: Verdict | None = None
        """The reply's voice against its history (`finish_reply`)."""
        self.frames.reset()
        self._quiet = 0
        self._in_run = False
        self._heard = 0
        """Samples of this reply inspected so far."""
        self._last_failed: dict[Detector, int] = {}
        """Where each detector last failed (in `_heard` samples)."""
        self.muted = False
        """The action muted the rest of this reply."""
        self._last = 0.0
        """The last sample handed on (where a fade out starts)."""
        self._fade_in = False

    def counts(self) -> dict[Detector, int]:
        """Failures per detector since start (for the health report)."""
        return dict(self.total.failures)

    def inspect(self, block: npt.ArrayLike, rate: int | None = None) -> FloatArray:
        """`block` (float32 mono, at `rate` Hz; None: the player's rate) made safe to play."""
        if not self.enabled:
            return np.asarray(block, np.float32)
        audio = np.asarray(block, np.float32)
        if audio.size == 0:
            return audio
        bad = ~np.isfinite(audio)
        invalid = int(bad.sum())
        if invalid:
            audio = np.where(bad, np.float32(0.0), audio)
        made = audio  # as the model made it, invalid samples aside: what the detectors read
        over = np.abs(audio) > 1.0
        clipped = int(over.sum())
        if clipped:
            audio = np.clip(audio, -1.0, 1.0)
        for counts in (self.total, self.reply):
            counts.samples += audio.size
            counts.invalid += invalid
            counts.clipped += clipped
        if self.frames.format_problem(audio.shape, rate):
            length = round(audio.shape[0] * self.rate / (rate or self.rate))  # as played
            self._failed({"format"}, length)
            self.frames.skip_block()
            if self.action == "report":
                return audio
            self.muted = self.muted or self.action == "mute"
            self._fade_in = True
            return self._silenced(np.zeros(length, np.float32))
        audio = audio.reshape(-1)
        if self._print is not None:
            self._print.update(made.reshape(-1))
        runs = self._silence(audio)
        self.total.silence_runs += runs
        self.reply.silence_runs += runs
        return self._frames(audio, made.reshape(-1))

    def _frames(self, audio: FloatArray, made: FloatArray) -> FloatArray:
        """Each piece of at most a frame of `made` through the detectors, and the action on
        failures applied to `audio`."""
        out = audio.copy() if self.action != "report" else audio
        size = self.frames.frame
        for start in range(0, audio.size, size):
            piece = slice(start, start + size)
            failed = self.frames.check(made[piece], join=start == 0)
            self._failed(failed, out[piece].size)
            if self.action == "report":
                continue
            self.muted = self.muted or (bool(failed) and self.action == "mute")
            if failed or self.muted:
                self._last = float(out[start - 1]) if start else self._last
                out[piece] = self._silenced(np.zeros(out[piece].size, np.float32))
                self._fade_in = True
            elif self._fade_in:
                ramp = min(self._fade, out[piece].size)
                out[start : start + ramp] *= np.linspace(0.0, 1.0, ramp, dtype=np.float32)
                self._fade_in = False
        self._last = float(out[-1])
        return out

    def _silenced(self, silence: FloatArray) -> FloatArray:
        """`silence` counted, beginning with a fade from the last sample handed on."""
        ramp = min(self._fade, silence.size)
        if ramp and self._last:
            silence[:ramp] = self._last * np.linspace(1.0, 0.0, ramp, dtype=np.float32)
            self._last = 0.0
        for counts in (self.total, self.reply):
            counts.silenced += silence.size
        return silence

    def _failed(self, failed: set[Detector], samples: int) -> None:
        """Count the detectors that failed the next `samples`; failures of one detector
        closer than `SAME_FAILURE_SECONDS` are one."""
        for detector in failed:
            last = self._last_failed.get(detector)
            if last is None or self._heard - last > SAME_FAILURE_SECONDS * self.rate:
                self.total.failures[detector] += 1
                self.reply.failures[detector] += 1
            self._last_failed[detector] = self._heard
        self._heard += samples

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

    def finish_reply(self) -> Verdict | None:
        """Compare the reply's voice with its history (once; None: not fingerprinted)."""
        if self._print is not None and self._voice:
            self.verdict = self.voices.judge(self._voice, self._print.fingerprint())
            self._print = None
        return self.verdict

    def reply_problems(self) -> list[str]:
        r = self.reply
        problems = []
        if r.invalid:
            problems.append(f"{r.invalid} invalid samples (NaN or infinite) set to 0")
        if r.samples and r.clipped / r.samples > CLIPPED_SHARE:
            problems.append(f"{100 * r.clipped / r.samples:.1f}% of samples clipped")
        if r.silence_runs:
            problems.append(f"{r.silence_runs} silence runs of {SILENCE_RUN_SECONDS:g} s or more")
        for detector, count in r.failures.items():
            if count:
                problems.append(f"{DESCRIPTIONS[detector]}: {count}")
        if r.silenced:
            done = "the rest of the reply muted" if self.muted else "the failing frames dropped"
            problems.append(f"{done} ({r.silenced / self.rate:.2f} s of audio silenced)")
        drift = None if self.verdict is None else self.verdict.problem()
        if drift:
            problems.append(drift)
        return problems
