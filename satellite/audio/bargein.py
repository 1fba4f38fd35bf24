"""Barge-in by voice: the user speaking over what the satellite plays (`audio.barge_in:
voice`), heard in the echo canceller's output.

Through the canceller the satellite's own voice is not gone: a residue is left (11-25 dB
under the echo in the scripted rooms), and the VAD calls much of it speech. The user is
told from it by level: a 10 ms frame counts toward a barge-in when the VAD scores it speech
*and* it is `MARGIN_DB` louder than the residue has been (the 90th percentile of the levels
of the last 4 s of frames that did not count, since playback began) *and* the canceller took
no more than `REMOVED_DB` off it (more is a leak of the echo, not the user); `NEEDED` of
the last `WINDOW` frames must count (200 ms of the user in 300 ms; 120 ms heard the wake
word's vowels sooner in the scripted rooms, but on a real PulseAudio server it also fired on
the canceller's leaks, in 3 runs of 8 with nobody speaking). Nothing counts in the first
`SETTLE_SECONDS` of playback, while the canceller settles and the residue's level is being
learnt. When the canceller loses the echo for a moment (on PulseAudio, in the seconds after
its input opens) the residue is the echo itself; once it has the echo again and the last
second's residue is `RECONVERGED_DB` under the 4 s one, the older levels are forgotten, or
the user speaking then would not be 10 dB over them (and their frames would keep the level
up). Measured on the scripted rooms of `bench echo` (docs/PERFORMANCE.md).
"""

from __future__ import annotations

from collections import deque

import numpy as np
from pymicro_vad import MicroVad

from satellite.audio.convert import pcm16_rms, to_dbfs
from satellite.audio.framing import FRAME_BYTES, FrameSplitter

MARGIN_DB = 10.0
"""How much louder than the residue the user's speech frames must be."""
REMOVED_DB = 12.0
"""A frame the canceller took more than this off (its level in the microphone over its level
out of the canceller) is mostly echo it half-removed, not the user: when the echo's delay
moves (PulseAudio changes its latency), AEC3 leaks it for a moment, far over the residue."""
RESIDUE_FRAMES = 400
"""Frames (4 s) over which the residue's level is taken."""
RESIDUE_PERCENTILE = 90
RECENT_RESIDUE_FRAMES = 100
"""Frames (1 s): when the residue of the last second is `RECONVERGED_DB` under the last 4 s',
the canceller has found the echo again after losing it, and what it leaked meanwhile is
forgotten."""
RECONVERGED_DB = 15.0
WINDOW = 30
NEEDED = 20
SETTLE_SECONDS = 1.0
THRESHOLD = 0.5
"""The VAD's speech probability."""
ONSET_PROBABILITY = 0.2
"""A frame `MARGIN_DB` over the residue that the VAD scores over this (but not yet
`THRESHOLD`) is kept out of the residue's levels: the user's voice as the VAD catches up
with it (before, on PulseAudio, their first 0.3 s raised the residue's level by 30 dB and
the rest of their words did not clear it)."""


class VoiceBargeIn:
    """Feed it the cleaned capture while something plays (`process`); `restart` when a new
    spell of playing begins."""

    def __init__(self) -> None:
        self._vad = MicroVad()
        self._frames = FrameSplitter(FRAME_BYTES)
        self._raw_frames = FrameSplitter(FRAME_BYTES)
        self._residue: deque[float] = deque(maxlen=RESIDUE_FRAMES)
        self._recent: deque[bool] = deque(maxlen=WINDOW)
        self._margins: deque[float] = deque(maxlen=WINDOW)
        self._heard = 0
        """Frames heard since `restart`."""
        self.margin_db = 0.0
        """By how much the last barge-in's frames were louder than the residue (the median
        over its run), for the log."""

    def restart(self) -> None:
        """A new spell of playing: what was learnt of the residue, and any run of speech,
        are dropped (the VAD keeps its history: it needs 0.76 s of audio to score)."""
        self._residue.clear()
        self._recent.clear()
        self._margins.clear()
        self._heard = 0

    def process(self, pcm: bytes, raw: bytes) -> bool:
        """16 kHz 16-bit mono out of the canceller (`pcm`) and the same audio as the
        microphone gave it (`raw`); True when the user's voice has been heard over the
        playback (once per run of it: the run is dropped, so a later call can say so again)."""
        heard = False
        raws = self._raw_frames.split(raw)
        for index, frame in enumerate(self._frames.split(pcm)):
            probability = self._vad.process_10ms(frame)
            level = to_dbfs(pcm16_rms(frame))
            self._heard += 1
            settled = self._heard > SETTLE_SECONDS * 100 and len(self._residue) > WINDOW
            over = level - self._residue_level() if settled else None
            voice = (
                over is not None
                and over > MARGIN_DB
                and probability > THRESHOLD
                and self._removed(raws, index, level)
            )
            self._recent.append(voice)
            if voice and over is not None:
                self._margins.append(over)
            # a loud frame the VAD is only starting to call speech is not the residue: it
            # lags the user's first syllables by up to 0.3 s, and they would raise the bar
            onset = over is not None and over > MARGIN_DB and probability > ONSET_PROBABILITY
            if not voice and not onset:
                self._residue.append(level)
            if sum(self._recent) >= NEEDED:
                self.margin_db = float(np.median(self._margins))
                self._recent.clear()
                self._margins.clear()
                heard = True
        return heard

    def _residue_level(self) -> float:
        """The residue's level (dBFS): the `RESIDUE_PERCENTILE` of the last 4 s, or of the
        last second where that is `RECONVERGED_DB` lower (then the older levels go)."""
        levels = np.fromiter(self._residue, np.float64, len(self._residue))
        whole = float(np.percentile(levels, RESIDUE_PERCENTILE))
        recent = float(np.percentile(levels[-RECENT_RESIDUE_FRAMES:], RESIDUE_PERCENTILE))
        if recent < whole - RECONVERGED_DB:
            for _ in range(len(self._residue) - RECENT_RESIDUE_FRAMES):
                self._residue.popleft()
            return recent
        return whole

    @staticmethod
    def _removed(raws: list[bytes], index: int, level: float) -> bool:
        """Whether the canceller took at most `REMOVED_DB` off frame `index` (`level`: its
        level out of the canceller, dBFS)."""
        if index >= len(raws):
            return True
        return to_dbfs(pcm16_rms(raws[index])) - level <= REMOVED_DB
