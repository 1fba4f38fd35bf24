"""Feedback sounds: the awake, done and listening sounds from WAV files, the timer chime and
the built-in listening tone.

A sound is loaded once at start, so a missing or unreadable file is reported then (naming the
config key), not when it is first needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from satellite.audio.convert import AudioFormatError, FloatArray
from satellite.audio.wavfile import read_wav
from satellite.errors import UserError

CHIME_RATE = 24_000
MAX_SOUND_SECONDS = 10.0
"""Feedback sounds longer than this are refused: they would hold up every turn."""


class SoundError(UserError):
    """A sound file that cannot be used; the message names the key and the file."""


@dataclass(frozen=True)
class Sound:
    samples: FloatArray
    rate: int

    @property
    def seconds(self) -> float:
        return float(self.samples.shape[0]) / self.rate


def load_sound(path: str | None, key: str) -> Sound | None:
    """The WAV file `path` as mono float32; None when `path` is empty."""
    if not path:
        return None
    file = Path(path).expanduser()
    try:
        wav = read_wav(file)
    except AudioFormatError as err:
        raise SoundError(f"{key}: {err}") from None
    sound = Sound(np.asarray(wav.samples, np.float32), wav.rate)
    if sound.seconds > MAX_SOUND_SECONDS:
        raise SoundError(
            f"{key}: {file}: {sound.seconds:.1f} s long; feedback sounds must be at most "
            f"{MAX_SOUND_SECONDS:g} s"
        )
    return sound


def chime(rate: int = CHIME_RATE) -> Sound:
    """The built-in timer chime: two soft bell tones (880 Hz, then 660 Hz) and a pause, 1.2 s."""
    parts = []
    for frequency, seconds in ((880.0, 0.25), (660.0, 0.45)):
        t = np.arange(round(seconds * rate)) / rate
        envelope = np.exp(-6.0 * t / seconds) * np.minimum(1.0, t * 200.0)
        tone = (
            0.3
            * envelope
            * (np.sin(2 * np.pi * frequency * t) + 0.3 * np.sin(4 * np.pi * frequency * t))
        )
        parts.append(tone)
    parts.append(np.zeros(round(0.5 * rate)))
    return Sound(np.concatenate(parts).astype(np.float32), rate)


def listen_tone(rate: int = CHIME_RATE) -> Sound:
    """The built-in listening tone: two short rising notes (523 Hz, then 784 Hz), 0.3 s, softer
    than the chime: "go on, I am listening"."""
    parts = []
    for frequency, seconds in ((523.25, 0.12), (783.99, 0.18)):
        t = np.arange(round(seconds * rate)) / rate
        envelope = np.exp(-4.0 * t / seconds) * np.minimum(1.0, t * 300.0)
        parts.append(0.2 * envelope * np.sin(2 * np.pi * frequency * t))
    return Sound(np.concatenate(parts).astype(np.float32), rate)
