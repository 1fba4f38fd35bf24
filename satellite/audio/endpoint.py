"""End of speech after the wake word, on pymicro-vad.

`Endpointer` takes 16 kHz 16-bit mono PCM in chunks of any length, cuts it into the VAD's
10 ms frames (a partial frame waits for the next chunk, so no audio is lost and the result
does not depend on chunk size), and reports:

A frame is speech when the VAD's probability is above `threshold` and the frame is louder
than the quiet level (6 dB over the noise floor, the quietest frame of the last second heard
before speech, and at least -60 dBFS). The energy test is there because pymicro-vad lags: on
espeak-ng speech its probability crosses 0.5 about 0.3 s after the first sound and falls back
about 0.65 s after the last, which would add 0.65 s to every reply's latency. The VAD also
answers -1 (not speech) for its first 0.76 s of audio, so feed the endpointer continuously
(e.g. the audio around the wake word too) rather than resetting it per utterance.

In a room that was loud before the user spoke (a TV talking, people further away), the VAD
hears speech that is not the user's and would hold the utterance open. With
`voice_gate_db`, a speech frame of the utterance counts only when it is within that many dB
of the user's voice (the 75th percentile of their speech frames' levels, the last 3 s) or
more than 3 dB over the room's loud level (the 90th percentile of the 4 s of levels before
they spoke, the wake word left out). In a quiet room every sound the user makes is over the
room's level, so nothing changes there.

- `SpeechStarted` once `min_speech_ms` of speech frames have been seen with no gap longer
  than 50 ms; shorter bursts are ignored. The start is moved back over the loud frames just
  before the VAD noticed (bounded by the ring), so it marks the first syllable.
- `PauseStarted` (with the utterance so far) once speech has stopped for `PAUSE_MS`, and
  `PauseEnded` if speech comes back before the trailing silence is complete: a listener can
  start work on the utterance during the trailing silence and drop it if the user goes on.
- `UtteranceEnded` when `trailing_silence_ms` of consecutive non-speech frames follow the
  speech (`reason="silence"`), or when the utterance has lasted `max_utterance_seconds` from
  the start of speech (`reason="max_length"`). Its audio runs from `preroll_ms` before the
  first speech frame (kept in a ring of recent frames) to the frame that ended it, trailing
  silence included.

For the health report it also measures what it hears: the noise (`noise_dbfs`, the median
level of the frames that are not speech, the last 30 s of them) and each utterance's voice
(`UtteranceEnded.voice_dbfs`, the median level of its speech frames). Both are levels of
the stream the models hear: after echo cancellation, noise suppression and gain.

After an utterance ends the endpointer listens for the next one. Times are audio seconds since
the endpointer was made or reset.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pymicro_vad import MicroVad

from satellite.audio.convert import pcm16_rms, to_dbfs
from satellite.audio.framing import FRAME_BYTES, FrameSplitter
from satellite.settings import VadSettings

SAMPLE_RATE = 16000
FRAME_MS = 10
GAP_FRAMES = 5
"""Non-speech frames a run of speech may contain and still count as one run (50 ms)."""
PAUSE_MS = 100
"""Non-speech after speech that counts as a pause (`PauseStarted`)."""
HISTORY_FRAMES = 200
"""Frames (2 s) `recent_audio` keeps."""
LOOKBACK_FRAMES = 50
"""How far the speech start may be moved back over loud frames before the VAD noticed."""
NOISE_FRAMES = 100
"""Frames (1 s) over which the noise floor is the quietest frame's level."""
ABSOLUTE_QUIET = 10 ** (-60 / 20)
"""Frame RMS (full scale 1.0) below which a frame is always quiet (-60 dBFS)."""
QUIET_MARGIN = 10 ** (6 / 20)
"""A frame is loud when its RMS is over the noise floor by this factor (6 dB)."""
VOICE_FRAMES = 300
"""Speech frames (3 s) over which the user's voice level is taken (`voice_gate_db`)."""
VOICE_PERCENTILE = 75
"""The user's voice: this percentile of the levels of their speech frames."""
ROOM_FRAMES = 400
"""Frames (4 s) before speech over which the room's loud level is taken (`voice_gate_db`)."""
WAKE_WORD_FRAMES = 120
"""The newest room frames `restart` forgets: the wake word just said (1.2 s at most)."""
ROOM_PERCENTILE = 90
"""The room's loud level: this percentile of the levels heard before the user spoke."""
ROOM_MARGIN_DB = 3.0
"""A frame this far over the room's loud level is the user's, however far below their voice
(in a quiet room, every sound the user makes)."""
NOISE_LEVEL_FRAMES = 3000
"""Frames that were not speech (30 s of them) over which `noise_dbfs` is taken."""


@dataclass(frozen=True)
class SpeechStarted:
    """Speech has begun (seen for at least `min_speech_ms`)."""

    seconds: float
    """Audio time of the first speech frame."""


@dataclass(frozen=True)
class UtteranceEnded:
    """The utterance is over."""

    reason: Literal["silence", "max_length"]
    """`silence`: trailing silence reached; `max_length`: `max_utterance_seconds` reached."""
    start_seconds: float
    """Audio time of the first byte of `audio` (preroll included)."""
    speech_seconds: float
    """Audio time of the first speech frame."""
    end_seconds: float
    """Audio time of the end of `audio`."""
    audio: bytes
    """16 kHz 16-bit mono PCM of the utterance, preroll included."""
    voice_dbfs: float | None = None
    """The median level (dBFS) of the utterance's speech frames; None: none counted."""


@dataclass(frozen=True)
class PauseStarted:
    """Speech has stopped for `PAUSE_MS` (the utterance may be ending): a chance to start
    on it before the trailing silence is over."""

    audio: bytes
    """The utterance so far (preroll included), as `UtteranceEnded.audio` would begin."""


@dataclass(frozen=True)
class PauseEnded:
    """Speech came back after a `PauseStarted`: the utterance goes on."""


EndpointEvent = SpeechStarted | UtteranceEnded | PauseStarted | PauseEnded


def _frames(ms: float) -> int:
    return max(0, round(ms / FRAME_MS))


class Endpointer:
    """Speech start and end in a stream of 16 kHz 16-bit mono PCM (see the module docs)."""

    def __init__(self, settings: VadSettings) -> None:
        self.settings = settings
        self._vad = MicroVad()
        self._preroll = _frames(settings.preroll_ms)
        self._min_speech = max(1, _frames(settings.min_speech_ms))
        self._trailing = max(1, _frames(settings.trailing_silence_ms))
        self._pause = max(1, _frames(PAUSE_MS))
        self._max_frames = max(1, _frames(settings.max_utterance_seconds * 1000))
        self._frames = FrameSplitter(FRAME_BYTES)
        self._frame = 0
        ring = self._preroll + self._min_speech + GAP_FRAMES + LOOKBACK_FRAMES
        self._ring: deque[tuple[bytes, bool]] = deque(maxlen=ring)
        self._history: deque[bytes] = deque(maxlen=HISTORY_FRAMES)
        self._levels: deque[float] = deque(maxlen=NOISE_FRAMES)
        self._room: deque[float] = deque(maxlen=ROOM_FRAMES)
        """Levels (dBFS) of the latest `ROOM_FRAMES` frames since the last utterance ended
        (speech the VAD heard that was not the user's, a TV's, included)."""
        self._room_db = -120.0
        """The room's loud level when this utterance started."""
        self._run = 0
        self._gap = 0
        self._run_start = 0
        self._speaking = False
        self._utterance: list[bytes] = []
        self._start_frame = 0
        self._speech_frame = 0
        self._silence = 0
        self._voice: deque[float] = deque(maxlen=VOICE_FRAMES)
        """Levels (dBFS) of this utterance's speech frames, the latest `VOICE_FRAMES`."""
        self._gate = settings.voice_gate_db
        self._voice_levels: list[float] = []
        """Levels (dBFS) of all this utterance's speech frames (`UtteranceEnded.voice_dbfs`)."""
        self._noise_levels: deque[float] = deque(maxlen=NOISE_LEVEL_FRAMES)
        """Levels (dBFS) of the latest frames that were not speech (`noise_dbfs`)."""

    def process(self, chunk: bytes) -> list[EndpointEvent]:
        """Feed PCM of any length; returns the events it completes, oldest first."""
        events: list[EndpointEvent] = []
        for frame in self._frames.split(chunk):
            event = self._step(frame)
            if event is not None:
                events.append(event)
        return events

    def _quiet_level(self) -> float:
        floor = min(self._levels) if self._levels else 0.0
        return max(ABSOLUTE_QUIET, floor * QUIET_MARGIN)

    def _step(self, frame: bytes) -> EndpointEvent | None:
        probability = self._vad.process_10ms(frame)
        self._history.append(frame)
        level = pcm16_rms(frame)
        loud = level > self._quiet_level()
        speech = loud and probability > self.settings.threshold
        self._frame += 1
        db = to_dbfs(level)
        self._room.append(db)
        if not speech:
            self._noise_levels.append(db)
        if not self._speaking:
            self._levels.append(level)
            return self._listen(frame, speech, loud)
        self._utterance.append(frame)
        if speech and self._gate:
            speech = self._near_the_voice(level)
        if speech:
            self._voice_levels.append(db)
            paused = self._silence >= self._pause
            self._silence = 0
            if paused:
                return PauseEnded()
        else:
            self._silence += 1
        if self._silence >= self._trailing:
            return self._end("silence")
        if self._silence == self._pause:
            return PauseStarted(b"".join(self._utterance))
        if self._frame - self._speech_frame >= self._max_frames:
            return self._end("max_length")
        return None

    def _near_the_voice(self, level: float) -> bool:
        """Whether a speech frame is the user's: within the gate of their voice, or clearly
        louder than the room was before they spoke (if it is, it joins the voice's levels)."""
        db = to_dbfs(level)
        # the room's level first: in a quiet room no frame needs the percentile
        if (
            len(self._voice) >= self._min_speech
            and db < self._room_db + ROOM_MARGIN_DB
            and db < float(np.percentile(self._voice, VOICE_PERCENTILE)) - self._gate
        ):
            return False
        self._voice.append(db)
        return True

    def _listen(self, frame: bytes, speech: bool, loud: bool) -> SpeechStarted | None:
        self._ring.append((frame, loud))
        if speech:
            if self._run == 0:
                self._run_start = self._frame - 1
            self._run += 1
            self._gap = 0
        elif self._run:
            self._gap += 1
            if self._gap > GAP_FRAMES:
                self._run = self._gap = 0
        if self._run < self._min_speech or self._gap:
            return None
        frames = list(self._ring)
        first = run = max(0, len(frames) - (self._frame - self._run_start))
        while first > max(0, run - LOOKBACK_FRAMES) and frames[first - 1][1]:
            first -= 1
        start = max(0, first - self._preroll)
        self._speaking = True
        self._voice.clear()
        self._speech_frame = self._frame - (len(frames) - first)
        before = list(self._room)[: max(0, len(self._room) - (self._frame - self._speech_frame))]
        self._room_db = float(np.percentile(before, ROOM_PERCENTILE)) if before else -120.0
        self._start_frame = self._frame - (len(frames) - start)
        self._utterance = [data for data, _ in frames[start:]]
        self._silence = 0
        self._ring.clear()
        self._run = self._gap = 0
        return SpeechStarted(self._speech_frame * FRAME_MS / 1000)

    def _end(self, reason: Literal["silence", "max_length"]) -> UtteranceEnded:
        event = UtteranceEnded(
            reason=reason,
            start_seconds=self._start_frame * FRAME_MS / 1000,
            speech_seconds=self._speech_frame * FRAME_MS / 1000,
            end_seconds=self._frame * FRAME_MS / 1000,
            audio=b"".join(self._utterance),
            voice_dbfs=float(np.median(self._voice_levels)) if self._voice_levels else None,
        )
        self._speaking = False
        self._utterance = []
        self._voice_levels = []
        self._silence = 0
        self._room.clear()
        return event

    def restart(self, keep_recent: bool = False) -> None:
        """Look for a new utterance from here on (after the wake word): any utterance or run
        of speech in progress is dropped, and so is the preroll ring (it holds the wake word),
        and the wake word's levels from the room's. The VAD's state, the noise floor and the
        clock are kept. `keep_recent`: the user is already speaking their question (a
        barge-in by voice), so the ring keeps the last second heard, from the utterance in
        progress if there is one: the next utterance's start can reach back into it."""
        recent: list[tuple[bytes, bool]] = []
        if keep_recent and self._speaking:
            quiet = self._quiet_level()
            kept = self._utterance[-(self._ring.maxlen or 0) :]
            recent = [(frame, pcm16_rms(frame) > quiet) for frame in kept]
        elif keep_recent:
            recent = list(self._ring)
        self._ring.clear()
        self._ring.extend(recent)
        for _ in range(min(WAKE_WORD_FRAMES, len(self._room))):
            self._room.pop()
        self._run = self._gap = 0
        self._speaking = False
        self._utterance = []
        self._voice_levels = []
        self._silence = 0

    @property
    def noise_dbfs(self) -> float | None:
        """The noise the models hear: the median level (dBFS) of the latest frames that
        were not speech (`NOISE_LEVEL_FRAMES`); None before any."""
        return float(np.median(self._noise_levels)) if self._noise_levels else None

    def recent_audio(self) -> bytes:
        """The last `HISTORY_FRAMES` frames heard (2 s), oldest first: after a barge-in by
        voice, what the user said before it fired (on a real PulseAudio server it fired 1.3 s
        into their words, more than the preroll ring holds)."""
        return b"".join(self._history)

    def reset(self) -> None:
        """Forget all audio (the VAD's state, the ring, any utterance) and restart the clock.
        The noise level is kept: it is the room's, not the stream's."""
        self._vad.reset()
        self._frames.clear()
        self._frame = 0
        self._ring.clear()
        self._history.clear()
        self._levels.clear()
        self._room.clear()
        self._run = self._gap = 0
        self._speaking = False
        self._utterance = []
        self._voice_levels = []
        self._silence = 0
