"""Per-frame acoustic integrity of generated audio: the detectors behind `safety.audio_action`.

`FrameChecks` follows one reply's mono audio as it is handed over (blocks of any length, cut
into pieces of at most a frame, 80 ms) and says which detectors each piece fails:

- `click`: a click or discontinuity at a join between blocks (where one detokenizer call's
  audio meets the next): the step into the block, measured as the error of extrapolating the
  last two samples in a straight line, against the largest such step in the 10 ms either side;
- `dc_offset`: a frame's mean far from 0, for itself and against its RMS, held for 0.24 s;
- `loudness_jump`: a frame much louder than the loudest speech of the last 2 s;
- `dropout`: a stretch of digital silence next to speech (audible right before or right
  after it), ended before it becomes a silence run (`satellite.safety.audio`); the model's audio is never digitally
  silent (its detokenizer's inverse STFT gives no exact zeros), so a stretch of it is audio
  lost on the way (a zeroed frame, a frame of NaNs zeroed);
- `loop`: the model looping: a frame nearly identical (normalized correlation) to one of the
  last four frames, that is, the same frame or a pattern of up to four frames repeating;
- `format` (`format_mismatch`): a block whose sample rate or channel count is not what the
  player plays.

The thresholds were tuned on `lfm-satellite bench integrity`'s clean speech (espeak-ng in
several voices and rates, docs/PERFORMANCE.md): each is a margin over the worst clean frame.
Loops are found on the samples only: the reply's audio blocks carry no audio codes
(`satellite.reply.ReplyAudio`).
"""

from __future__ import annotations

from collections import deque
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from satellite.engine.events import FRAME_SECONDS

FloatArray = npt.NDArray[np.float32]
Detector = Literal["click", "dc_offset", "loudness_jump", "dropout", "loop", "format"]
DETECTORS: tuple[Detector, ...] = get_args(Detector)

ACTIVE_DBFS = -50.0
"""A frame quieter than this is not speech: the loudness and loop detectors skip it (a
repeated or sudden near-silence is harmless), and it is no reference for the loudness."""

CLICK_RATIO = 2.0
"""A join's step must be this many times the largest step near it. In 20 minutes of clean
speech no join reached 1.75 (espeak-ng's sharp glottal pulses come close); a click that 2
misses is one the loud speech around it masks."""
CLICK_MIN_STEP = 0.02
"""Smallest step that counts as a click (-34 dBFS): below, a step is not heard over speech."""
CLICK_CONTEXT_SECONDS = 0.01
"""How far either side of a join its steps are compared with: 10 ms holds a pitch period of a
voice down to 100 Hz, so the largest natural step (at a glottal pulse) is among them; a wider
context finds fewer clicks (20 ms: 90% instead of 95%) and no fewer false ones."""

DC_LEVEL = 0.02
"""A frame's mean must be at least this (-34 dBFS) to be an offset: clean speech at full level
held a mean of at most 0.007 over three frames in a row (0.013 in a single frame)."""
DC_SHARE = 0.2
"""... and at least this share of the frame's RMS, so that a loud low sound is no offset."""
DC_HOLD_SECONDS = 0.24
"""... for this long (three frames): one frame of a plosive or a low vowel can lean to one
side, a fault stays."""

LOUDNESS_JUMP_DB = 12.0
"""A frame this much louder than the running level is a jump. Clean speech rose at most 8-9 dB
over it (a stressed syllable after quiet ones), so 12 keeps a margin; it finds 97% of +20 dB
jumps (the rest begin on sounds far quieter than the speech before)."""
LOUDNESS_WINDOW_SECONDS = 2.0
"""The running level: the loudest speech frame of the 2 s before (several words)."""
LOUDNESS_GUARD_SECONDS = 0.32
"""The newest 0.32 s (four frames) are left out of the running level: a jump that begins on
a quiet sound is still measured against the speech before it."""
LOUDNESS_REFERENCE_SECONDS = 0.4
"""Speech needed in the window before the running level is trusted: the first words of a
reply, or the first after a pause of 2 s, are never a jump."""

SILENCE_RUN_SECONDS = 2.0
"""Silence this long inside a reply is a silence run (`satellite.safety.audio`: a stalled or
broken generation), not a dropout."""

DROPOUT_LEVEL = 2.0**-15
"""Digital silence: below one step of 16-bit audio, nothing a speaker would play."""
DROPOUT_MIN_SECONDS = 0.01
"""Shortest stretch of digital silence that is a dropout (240 samples; a few zeroed samples
are counted as invalid or pass at a zero crossing)."""
DROPOUT_EDGE_SECONDS = 0.005
DROPOUT_EDGE_DBFS = -60.0
"""The 5 ms before or after the silence must be louder than this (the silence-run rule's
level): speech cut off or cut into, not a pause in it."""

LOOP_CORRELATION = 0.98
"""A frame whose correlation coefficient with one of the last `LOOP_FRAMES` frames reaches this
is a repeat. Clean speech stayed under 0.8-0.9 (a held vowel): 0.98 is far from it and still
finds a loop that is near-identical rather than bit-identical."""
LOOP_FRAMES = 4
"""Repeats are looked for at lags of 1 to 4 frames: one frame repeating, or a pattern of up
to four (320 ms)."""


def level_dbfs(samples: npt.NDArray[np.float64]) -> float:
    power = float(np.mean(samples * samples)) if samples.size else 0.0
    return float(10.0 * np.log10(max(power, 1e-24)))


class FrameChecks:
    """One reply's detectors (see the module docstring); `reset` for the next reply."""

    def __init__(self, rate: int, channels: int = 1) -> None:
        self.rate = rate
        """The sample rate the player plays the reply at."""
        self.channels = channels
        """The channels the player takes (1: mono)."""
        self.frame = max(1, round(FRAME_SECONDS * rate))
        self._context = max(1, round(CLICK_CONTEXT_SECONDS * rate))
        self._dc_hold = round(DC_HOLD_SECONDS * rate)
        self._dropout_min = max(1, round(DROPOUT_MIN_SECONDS * rate))
        self._edge = max(1, round(DROPOUT_EDGE_SECONDS * rate))
        self._edge_power = 10 ** (DROPOUT_EDGE_DBFS / 10)
        self._silence_run = round(SILENCE_RUN_SECONDS * rate)
        self._window = round((LOUDNESS_WINDOW_SECONDS + LOUDNESS_GUARD_SECONDS) * rate)
        self._reference = round(LOUDNESS_REFERENCE_SECONDS * rate)
        self._guard = round(LOUDNESS_GUARD_SECONDS * rate)
        self._kept = (LOOP_FRAMES + 1) * self.frame
        self.reset()

    def reset(self) -> None:
        self._history = np.zeros(0, np.float64)
        """The last `(LOOP_FRAMES + 1)` frames of the reply."""
        self._dc_held = 0
        self._levels: deque[tuple[int, float]] = deque()
        """(samples, dBFS) of the last pieces, newest last, as far back as the window."""
        self._levels_samples = 0
        self._zeros = 0
        """Samples of the digital silence running at the end of the history."""
        self._zeros_cut_in = False
        """That silence began right after audible audio."""
        self._joined = True
        """The next block follows the history (no block was left out in between)."""

    def skip_block(self) -> None:
        """A block was left out (one the detectors cannot read): the next one is no join."""
        self._joined = False

    def format_problem(self, shape: tuple[int, ...], rate: int | None) -> bool:
        """A block of `shape` (samples, or samples x channels) declared at `rate` (None: the
        player's) is not what the player plays."""
        channels = 1 if len(shape) == 1 else shape[1] if len(shape) == 2 else 0
        return channels != self.channels or (rate is not None and rate != self.rate)

    def check(self, piece: FloatArray, join: bool) -> set[Detector]:
        """The detectors a mono piece of at most a frame fails; `join`: it starts a block."""
        audio = piece.astype(np.float64)
        history = self._history
        heard = np.concatenate([history, audio])[-self._kept :]
        window = heard[-max(self.frame, audio.size) :]
        db = level_dbfs(window)
        failed: set[Detector] = set()
        if join and self._joined and history.size >= 2 and self._click(history, audio):
            failed.add("click")
        self._joined = True
        if self._dc(window, audio.size):
            failed.add("dc_offset")
        if self._dropout(history, audio):
            failed.add("dropout")
        if db >= ACTIVE_DBFS and self._jump(db):
            failed.add("loudness_jump")
        if db >= ACTIVE_DBFS and self._loop(heard, window.size):
            failed.add("loop")
        # a jump is no reference for what follows
        self._levels.append((audio.size, -np.inf if "loudness_jump" in failed else db))
        self._levels_samples += audio.size
        while self._levels_samples - self._levels[0][0] >= self._window:
            self._levels_samples -= self._levels.popleft()[0]
        self._history = heard
        return failed

    def _click(self, history: npt.NDArray[np.float64], audio: npt.NDArray[np.float64]) -> bool:
        before = history[-(self._context + 2) :]
        joined = np.concatenate([before, audio[: self._context + 3]])
        step = np.abs(joined[2:] - 2 * joined[1:-1] + joined[:-2])
        at = before.size - 2  # the step that predicts the block's first sample
        jump = float(step[at : at + 3].max())
        around = np.concatenate([step[:at], step[at + 3 :]])
        largest = float(around.max()) if around.size else 0.0
        return jump >= CLICK_MIN_STEP and jump >= CLICK_RATIO * largest

    def _dc(self, window: npt.NDArray[np.float64], new: int) -> bool:
        mean = abs(float(window.mean()))
        rms = float(np.sqrt(np.mean(window * window)))
        if mean >= DC_LEVEL and mean >= DC_SHARE * rms:
            self._dc_held += new
        else:
            self._dc_held = 0
        return self._dc_held >= self._dc_hold

    def _jump(self, db: float) -> bool:
        skipped = heard = 0
        loudest = -np.inf
        for n, level in reversed(self._levels):
            if skipped < self._guard:  # the newest frames may be the jump's beginning
                skipped += n
            elif level >= ACTIVE_DBFS:
                heard += n
                loudest = max(loudest, level)
        return heard >= self._reference and db > loudest + LOUDNESS_JUMP_DB

    def _dropout(self, history: npt.NDArray[np.float64], audio: npt.NDArray[np.float64]) -> bool:
        """A stretch of digital silence that ends in this piece (or where it starts), long
        enough, shorter than a silence run, with audible audio right before or after it."""
        quiet = np.abs(audio) <= DROPOUT_LEVEL
        edges = np.diff(np.concatenate([[False], quiet, [False]]).astype(np.int8))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        carried, carried_cut_in = self._zeros, self._zeros_cut_in
        self._zeros = 0
        found = False
        if carried and (not starts.size or starts[0] > 0):  # it ended where this piece starts
            found = self._is_dropout(carried, carried_cut_in, audio, 0)
            carried = 0
        # most runs are a sample or two at a zero crossing: look only at those that matter
        keep = (ends - starts >= self._dropout_min) | (ends == audio.size) | (starts == 0)
        for start, end in zip(starts[keep].tolist(), ends[keep].tolist(), strict=True):
            if start == 0 and carried:
                length, cut_in = carried + end, carried_cut_in
            else:
                before = np.concatenate([history[-self._edge :], audio[:start]])[-self._edge :]
                length, cut_in = end - start, self._audible(before)
            if end == audio.size:
                self._zeros, self._zeros_cut_in = length, cut_in
            elif self._is_dropout(length, cut_in, audio, end):
                found = True
        return found

    def _is_dropout(
        self, length: int, cut_in: bool, audio: npt.NDArray[np.float64], end: int
    ) -> bool:
        if not self._dropout_min <= length < self._silence_run:
            return False
        return cut_in or self._audible(audio[end : end + self._edge])

    def _audible(self, samples: npt.NDArray[np.float64]) -> bool:
        return samples.size > 0 and float(np.mean(samples * samples)) >= self._edge_power

    def _loop(self, audio: npt.NDArray[np.float64], length: int) -> bool:
        """Correlation of the frame with each of the last frames, means removed (a DC offset
        is the same in every frame)."""
        current = audio[-length:] - audio[-length:].mean()
        energy = float(current @ current)
        floor = length * 10 ** (ACTIVE_DBFS / 10)
        if energy < floor:  # a steady level is no sound that repeats
            return False
        for lag in range(1, LOOP_FRAMES + 1):
            end = audio.size - lag * self.frame
            if end - length < 0:
                break
            earlier = audio[end - length : end] - audio[end - length : end].mean()
            other = float(earlier @ earlier)
            if other < floor:
                continue
            if float(current @ earlier) >= LOOP_CORRELATION * np.sqrt(energy * other):
                return True
        return False
