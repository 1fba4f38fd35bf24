"""The wake word in the satellite's own voice: told from the user's by listening to what the
satellite plays.

With echo cancellation the wake word hears the linear canceller's output
(`satellite.audio.linear_echo`), which keeps the user's voice whole while the satellite talks
but leaves enough of the satellite's own voice to wake on: a reply or announcement that says
"okay nabu" woke it in 8 scripted rooms of 8. The satellite knows exactly what it plays, so a
second detector of the same model hears the reference (the played audio paired with the
capture, clean, before any room) and, for `HOLD_SECONDS` after it fires, a detection in the
capture is the satellite's own. It listens at sensitivity 1.0 (half the model's cutoff): the
reference is cleaner than its echo, and holding a few extra seconds an hour while something
plays costs nothing, where missing one wakes the satellite on itself.
"""

from __future__ import annotations

from dataclasses import replace

from satellite.audio.wake import WakeWordDetector
from satellite.settings import WakeSettings

HOLD_SECONDS = 1.5
"""How long after the reference says the wake word a detection in the capture is taken for
its echo: the echo comes 20-200 ms later (the reference's wait for its capture, the room's
delay), and the capture's detector, hearing it through a room, fires up to a few hundred ms
after the clean reference's (60-180 ms measured)."""
SENSITIVITY = 1.0
STOP_SETTLE_SECONDS = 1.0
"""With the echo canceller, a stop word heard in the first second of a spell of playing is
not taken: the stop-word model fired there on what the cancellers had not yet taken out (in
2 of `bench echo`'s 9 rooms, one through each canceller), and the user has hardly heard
anything yet."""
QUIET_SECONDS = 0.5
"""Silence in the reference that ends a spell of playing (`sounding_seconds` starts anew)."""


class OwnWakeWord:
    """Feed it the reference frames as they are paired with the capture (`hear`), before the
    capture's wake-word detector gets the same frames; `covers` then says whether a detection
    now is the satellite's own voice. Any microWakeWord model: the stop word has one too."""

    def __init__(self, settings: WakeSettings, settle_seconds: float = 0.0) -> None:
        """`settle_seconds`: also cover the first this many seconds of each spell of playing
        (the stop word's `STOP_SETTLE_SECONDS`)."""
        self._settle = settle_seconds
        self._detector = WakeWordDetector(replace(settings, sensitivity=SENSITIVITY))
        self._heard = 0
        """Reference samples heard."""
        self._until = -1
        """The sample up to which capture detections are the satellite's own."""
        self.detections = 0
        """Times the wake word was heard in what the satellite played."""
        self._quiet = round(QUIET_SECONDS * 16_000)
        self._sounding = 0

    def hear(self, reference: bytes) -> None:
        """16 kHz 16-bit mono reference."""
        found = self._detector.process(reference)
        samples = len(reference) // 2
        self._heard += samples
        if reference.strip(b"\0"):  # (in C: this runs on every capture chunk)
            if self._quiet >= QUIET_SECONDS * 16_000:
                self._sounding = 0
            self._sounding += samples
            self._quiet = 0
        else:
            self._quiet += samples
            if self._quiet >= QUIET_SECONDS * 16_000:
                self._sounding = 0
        if found:
            self.detections += len(found)
            self._until = self._heard + round(HOLD_SECONDS * 16_000)

    def covers(self) -> bool:
        """Whether a wake word heard in the capture up to now is the satellite's own: the
        reference said it lately, or playing began less than `settle_seconds` ago."""
        return self._heard <= self._until or 0.0 < self.sounding_seconds < self._settle

    @property
    def sounding_seconds(self) -> float:
        """How long the satellite has been playing, this spell (0 when it is not): the
        cancellers are still finding the echo in the first second."""
        return self._sounding / 16_000

    def close(self) -> None:
        self._detector.close()
